//! Credential computations, pure: APOP (RFC 1939), CRAM-MD5 (RFC 2195), PLAIN (RFC 4616),
//! XOAUTH2 and OAUTHBEARER (RFC 7628) with the server's JSON error challenge.

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

/// The XOAUTH2 initial response: base64("user=USER\x01auth=Bearer TOKEN\x01\x01").
pub fn xoauth2_response(username: &str, token: &str) -> String {
    STANDARD.encode(format!("user={username}\x01auth=Bearer {token}\x01\x01"))
}

/// The OAUTHBEARER initial response (RFC 7628 section 3.1): the GS2 header naming the
/// authorization identity, then the host, port and bearer token key/value pairs.
pub fn oauthbearer_response(username: &str, host: &str, port: u16, token: &str) -> String {
    let user = gs2_saslname(username);
    STANDARD.encode(format!(
        "n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    ))
}

/// The OAUTHBEARER answer to an error challenge (RFC 7628 section 3.2.3): a lone %x01, so
/// that the server ends the exchange with its failure.
pub const OAUTHBEARER_ABORT: &str = "AQ==";

/// RFC 5801 saslname: `,` and `=` escaped as `=2C` and `=3D`.
fn gs2_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Largest error challenge read as JSON; anything longer is not an OAuth2 error report.
const MAX_ERROR_CHALLENGE: usize = 4096;
/// Longest value kept of each field of the error.
const MAX_ERROR_FIELD: usize = 100;

/// What the server said when it refused a token (RFC 7628 section 3.2.2; Google sends the
/// same shape for XOAUTH2). Each field is short, printable text, or absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthError {
    /// `invalid_token`, `invalid_request`, `insufficient_scope`, or an HTTP-like code.
    pub status: Option<String>,
    pub schemes: Option<String>,
    pub scope: Option<String>,
}

impl OAuthError {
    /// `status=... scope=...` for people, or `None` when the server said nothing usable.
    pub fn summary(&self) -> Option<String> {
        let parts: Vec<String> = [
            ("status", &self.status),
            ("schemes", &self.schemes),
            ("scope", &self.scope),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// Reads a server's error challenge (the base64 text after `+ `): `None` unless it is base64
/// of a JSON object of bounded size. Fields that are not strings (some servers send numbers)
/// are kept as their JSON text.
pub fn parse_oauth_error(challenge: &str) -> Option<OAuthError> {
    let challenge = challenge.trim();
    if challenge.len() > MAX_ERROR_CHALLENGE * 4 / 3 + 4 {
        return None;
    }
    let raw = STANDARD.decode(challenge).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let object = value.as_object()?;
    let field = |name: &str| {
        let v = object.get(name)?;
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let clean: String = text
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_ERROR_FIELD)
            .collect();
        (!clean.is_empty()).then_some(clean)
    };
    Some(OAuthError {
        status: field("status"),
        schemes: field("schemes"),
        scope: field("scope"),
    })
}

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
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
        let challenge =
            decode_challenge("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+").unwrap();
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

    #[test]
    fn oauthbearer_rfc7628_example() {
        // RFC 7628 section 4.1, IMAP with SASL-IR.
        assert_eq!(
            oauthbearer_response(
                "user@example.com",
                "server.example.com",
                143,
                "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
            ),
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
        );
    }

    #[test]
    fn oauthbearer_escapes_the_authorization_identity() {
        let raw = STANDARD
            .decode(oauthbearer_response("a,b=c", "h", 993, "t"))
            .unwrap();
        assert_eq!(
            raw,
            b"n,a=a=2Cb=3Dc,\x01host=h\x01port=993\x01auth=Bearer t\x01\x01".to_vec()
        );
    }

    #[test]
    fn xoauth2_google_shape() {
        // Google's documented example of the XOAUTH2 initial client response.
        assert_eq!(
            xoauth2_response(
                "someuser@example.com",
                "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
            ),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
        assert_eq!(STANDARD.decode(OAUTHBEARER_ABORT).unwrap(), vec![1]);
    }

    #[test]
    fn oauth_error_rfc7628_example() {
        // RFC 7628 section 4.3.
        let e = parse_oauth_error(
            "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0=",
        )
        .unwrap();
        assert_eq!(e.status.as_deref(), Some("invalid_token"));
        assert_eq!(e.scope.as_deref(), Some("example_scope"));
        assert_eq!(e.schemes, None);
        assert_eq!(
            e.summary().as_deref(),
            Some("status=invalid_token scope=example_scope")
        );
    }

    #[test]
    fn oauth_error_google_shape_with_a_numeric_status() {
        let json = br#"{"status":400,"schemes":"Bearer","scope":"https://mail.google.com/"}"#;
        let e = parse_oauth_error(&encode(json)).unwrap();
        assert_eq!(e.status.as_deref(), Some("400"));
        assert_eq!(e.schemes.as_deref(), Some("Bearer"));
    }

    #[test]
    fn oauth_error_garbage_is_none_and_fields_are_bounded() {
        for bad in [
            "",
            "***",
            "AQ==",
            "bm90IGpzb24=",
            &encode(b"[1,2]"),
            &encode(b"\xff\xfe"),
        ] {
            assert_eq!(parse_oauth_error(bad), None, "{bad}");
        }
        let huge = encode(format!("{{\"status\":\"{}\"}}", "x".repeat(10_000)).as_bytes());
        assert_eq!(parse_oauth_error(&huge), None);
        let long = encode(format!("{{\"status\":\"a\\r\\n{}\"}}", "y".repeat(500)).as_bytes());
        let e = parse_oauth_error(&long).unwrap();
        let status = e.status.unwrap();
        assert_eq!(status.chars().count(), MAX_ERROR_FIELD);
        assert!(!status.contains('\r') && !status.contains('\n'));
        let nothing = parse_oauth_error(&encode(b"{\"status\":{}}")).unwrap();
        assert_eq!(nothing.summary(), None);
    }
}
