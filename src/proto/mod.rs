//! Sans-IO protocol code: reply and capability parsing for POP3 and IMAP, and the SASL
//! computations. Pure functions over lines, tested with byte literals and RFC vectors.

pub mod imap;
pub mod pop3;
pub mod sasl;

#[cfg(test)]
mod tests {
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
            let _ = super::pop3::parse_reply(&line)
                .map(|r| (r.refusal(), r.says_plaintext_disallowed()));
            let _ = super::pop3::apop_timestamp(&line);
            let _ = super::pop3::continuation(&line);
            let _ = super::pop3::Capabilities::parse(std::slice::from_ref(&line));
            let _ = super::imap::parse_response(&line);
            let _ = super::imap::quoted(&line);
            let _ = super::sasl::decode_challenge(&line);
        }
    }
}
