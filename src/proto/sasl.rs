//! Credential computations, pure: APOP (RFC 1939), CRAM-MD5 (RFC 2195), PLAIN (RFC 4616).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};

/// The APOP digest: lowercase hex MD5 of the greeting's timestamp (angle brackets included)
/// followed by the password.
pub fn apop_digest(timestamp: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(password.as_bytes());
    hex(&h.finalize())
}

/// Lowercase hex HMAC-MD5 of `challenge` keyed with the password: the digest part of a
/// CRAM-MD5 answer.
pub fn cram_md5_digest(password: &str, challenge: &[u8]) -> String {
    let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(password.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(challenge);
    hex(&mac.finalize().into_bytes())
}

/// The CRAM-MD5 answer to a decoded challenge: base64("user hexdigest").
pub fn cram_md5_response(username: &str, password: &str, challenge: &[u8]) -> String {
    let answer = format!("{username} {}", cram_md5_digest(password, challenge));
    STANDARD.encode(answer)
}

/// The PLAIN initial response with an empty authorization identity: base64("\0user\0pass").
pub fn plain_response(username: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(username.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(username.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    STANDARD.encode(raw)
}

/// Decodes a server challenge (the text after `+ `). An empty challenge is valid.
pub fn decode_challenge(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text.trim()).ok()
}

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apop_rfc1939_vector() {
        assert_eq!(
            apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn cram_md5_rfc2195_vector() {
        let challenge = decode_challenge("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
            .unwrap();
        assert_eq!(
            challenge,
            b"<1896.697170952@postoffice.reston.mci.net>".to_vec()
        );
        assert_eq!(
            cram_md5_digest("tanstaaftanstaaf", &challenge),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
        assert_eq!(
            cram_md5_response("tim", "tanstaaftanstaaf", &challenge),
            "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
        );
    }

    #[test]
    fn plain_rfc4616_shape() {
        // RFC 4616 section 4: "\0tim\0tanstaaftanstaaf"
        assert_eq!(
            plain_response("tim", "tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
    }

    #[test]
    fn bad_base64_is_none() {
        assert!(decode_challenge("***").is_none());
        assert_eq!(decode_challenge("").unwrap(), Vec::<u8>::new());
    }
}
