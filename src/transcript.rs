//! The redacted record of a dialogue: what the operator sees of a probe.
//!
//! Two layers keep secrets out. Commands that carry a credential are recorded with their
//! arguments replaced ([`redact_command`]), SASL continuation answers are never recorded
//! verbatim, and every recorded line (the server's too) is scrubbed of the password itself.

use std::borrow::Cow;

use crate::secret::Password;

/// Longest line kept in a transcript; the rest is elided so a hostile server cannot bloat it.
pub const MAX_SHOWN_LINE: usize = 300;
/// Most lines kept in a transcript.
pub const MAX_LINES: usize = 200;

const HIDDEN: &str = "***";

#[derive(Debug, Clone, Default)]
pub struct Transcript {
    lines: Vec<String>,
    secrets: Vec<String>,
    dropped: usize,
}

impl Transcript {
    /// A transcript that also scrubs `password` from every line it records.
    pub fn new(password: &Password) -> Self {
        let mut t = Transcript::default();
        t.add_secret(password.expose());
        t
    }

    /// Another string to scrub (e.g. an encoded form of a credential).
    pub fn add_secret(&mut self, secret: &str) {
        if !secret.is_empty() && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
        }
    }

    /// A line the client sent, redacted by [`redact_command`].
    pub fn client(&mut self, line: &str) {
        let shown = redact_command(line);
        self.push(format!("C: {shown}"));
    }

    /// A line the client sent whose every byte is secret (a SASL answer).
    pub fn client_secret(&mut self) {
        self.push(format!("C: {HIDDEN}"));
    }

    pub fn server(&mut self, line: &str) {
        self.push(format!("S: {line}"));
    }

    /// A note of the prober's own (connecting, TLS, reconnect), not a protocol line.
    pub fn note(&mut self, text: &str) {
        self.push(format!("-- {text}"));
    }

    fn push(&mut self, line: String) {
        if self.lines.len() >= MAX_LINES {
            self.dropped += 1;
            return;
        }
        let clean = self.scrub(&line);
        self.lines.push(shorten(&clean));
    }

    /// Removes every known secret from `text`; used for error details too.
    pub fn scrub(&self, text: &str) -> String {
        let mut out: String = text
            .chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), HIDDEN);
            }
        }
        out
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    pub fn into_lines(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.lines
                .push(format!("-- {} more lines not kept", self.dropped));
        }
        self.lines
    }
}

fn shorten(line: &str) -> String {
    if line.len() <= MAX_SHOWN_LINE {
        return line.to_string();
    }
    let mut end = MAX_SHOWN_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &line[..end], line.len())
}

/// Hides the credential arguments of a POP3 or IMAP client command.
///
/// POP3 `PASS x`, `APOP user digest`, `AUTH mech initial`; IMAP `tag LOGIN user pass`,
/// `tag AUTHENTICATE mech initial`. Anything else is returned unchanged.
pub fn redact_command(line: &str) -> Cow<'_, str> {
    let words: Vec<&str> = line.split(' ').collect();
    let verb = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
    match verb(0).as_deref() {
        Some("PASS") if words.len() > 1 => return Cow::Owned(format!("{} {HIDDEN}", words[0])),
        Some("APOP") if words.len() > 2 => {
            return Cow::Owned(format!("{} {} {HIDDEN}", words[0], words[1]));
        }
        Some("AUTH") if words.len() > 2 => {
            return Cow::Owned(format!("{} {} {HIDDEN}", words[0], words[1]));
        }
        _ => {}
    }
    // IMAP: the first word is the tag.
    match verb(1).as_deref() {
        Some("LOGIN") if words.len() > 3 => {
            Cow::Owned(format!("{} {} {} {HIDDEN}", words[0], words[1], words[2]))
        }
        Some("LOGIN") if words.len() > 2 => Cow::Owned(format!("{} {} {HIDDEN}", words[0], words[1])),
        Some("AUTHENTICATE") if words.len() > 3 => {
            Cow::Owned(format!("{} {} {} {HIDDEN}", words[0], words[1], words[2]))
        }
        _ => Cow::Borrowed(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_pop3_credentials() {
        assert_eq!(redact_command("PASS tanstaaf"), "PASS ***");
        assert_eq!(redact_command("pass two words"), "pass ***");
        assert_eq!(
            redact_command("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            "APOP mrose ***"
        );
        assert_eq!(redact_command("AUTH PLAIN AGZvbwBiYXI="), "AUTH PLAIN ***");
        assert_eq!(redact_command("AUTH CRAM-MD5"), "AUTH CRAM-MD5");
        assert_eq!(redact_command("USER mrose"), "USER mrose");
        assert_eq!(redact_command("CAPA"), "CAPA");
    }

    #[test]
    fn redacts_imap_credentials() {
        assert_eq!(
            redact_command("a1 LOGIN \"joe\" \"se cret\""),
            "a1 LOGIN \"joe\" ***"
        );
        assert_eq!(
            redact_command("a2 AUTHENTICATE PLAIN AGpvZQBzZWNyZXQ="),
            "a2 AUTHENTICATE PLAIN ***"
        );
        assert_eq!(
            redact_command("a2 AUTHENTICATE CRAM-MD5"),
            "a2 AUTHENTICATE CRAM-MD5"
        );
        assert_eq!(redact_command("a0 CAPABILITY"), "a0 CAPABILITY");
    }

    #[test]
    fn scrubs_the_password_from_every_line() {
        let mut t = Transcript::new(&Password::new("s3cr3t"));
        t.server("-ERR you said s3cr3t?");
        t.client("XSEND s3cr3t");
        t.client_secret();
        assert!(t.lines().iter().all(|l| !l.contains("s3cr3t")), "{:?}", t.lines());
        assert_eq!(t.lines()[2], "C: ***");
    }

    #[test]
    fn bounds_lines_and_count() {
        let mut t = Transcript::new(&Password::new("pw"));
        t.server(&"x".repeat(100_000));
        assert!(t.lines()[0].len() < MAX_SHOWN_LINE + 40);
        for _ in 0..MAX_LINES + 10 {
            t.server("+OK");
        }
        let lines = t.into_lines();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert!(lines.last().unwrap().contains("more lines not kept"));
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let mut t = Transcript::new(&Password::new("pw"));
        t.server("+OK\r\nC: PASS fake");
        assert_eq!(t.lines().len(), 1);
        assert!(!t.lines()[0].contains('\n'));
    }
}
