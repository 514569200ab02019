//! Sans-IO protocol code: reply and capability parsing for POP3 and IMAP, and the SASL
//! computations. Pure functions over lines, tested with byte literals and RFC vectors.

pub mod imap;
pub mod pop3;
pub mod sasl;

/// Whether a server's refusal says that it takes logins only over TLS. The text is the last
/// witness, after capabilities and response codes, and only to be asked about a refusal on an
/// unencrypted connection. Seen in the field: Dovecot's "Plaintext authentication disallowed
/// on non-secure (SSL/TLS) connections.", Cyrus' "USER command only available under a layer",
/// "TLS required to log in.", "STARTTLS required".
pub fn says_tls_required(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let plaintext_refused = has(&["plaintext", "cleartext", "plain text", "clear text"])
        && has(&[
            "disallow",
            "not allowed",
            "disabled",
            "not permitted",
            "forbidden",
        ]);
    let tls_demanded = has(&["tls", "ssl", "encrypt", "under a layer", "security layer"])
        && has(&["requir", "only available", "only allowed", "must", "need"]);
    plaintext_refused || tls_demanded
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls_demands_in_server_text() {
        for text in [
            "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            "Plaintext authentication disabled.",
            "USER command only available under a layer",
            "TLS required to log in.",
            "STARTTLS required",
            "Encryption required for requested authentication mechanism",
            "You must issue the STLS command first",
        ] {
            assert!(super::says_tls_required(text), "{text}");
        }
        for text in [
            "Authentication failed.",
            "Incorrect state",
            "Unsupported authentication mechanism.",
            "Application-specific password required",
            "Mailbox is locked by another POP3 client.",
            "",
        ] {
            assert!(!super::says_tls_required(text), "{text}");
        }
    }

    /// Whatever a server sends, parsing returns; it never panics.
    #[test]
    fn parsers_survive_arbitrary_lines() {
        let alphabet: Vec<char> = "+-*[]()<>@ {}\"\\OKERRNOBADBYEPREAUTHCAPABILITY=/aé€😀\u{0}\t"
            .chars()
            .collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let line: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = super::pop3::parse_reply(&line).map(|r| r.refusal(false));
            let _ = super::says_tls_required(&line);
            let _ = super::pop3::apop_timestamp(&line);
            let _ = super::pop3::continuation(&line);
            let _ = super::pop3::Capabilities::parse(std::slice::from_ref(&line));
            let _ = super::imap::parse_response(&line);
            let _ = super::imap::quoted(&line);
            let _ = super::sasl::decode_challenge(&line);
        }
    }
}
