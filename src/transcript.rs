//! The redacted record of a dialogue: what the operator sees of a probe.
//!
//! Two layers keep secrets out. Commands that carry a credential are recorded with their
//! arguments replaced ([`redact_command`]), SASL continuation answers are never recorded
//! verbatim, and every recorded line (the server's too, which may echo the client's) and every
//! error detail is scrubbed of the password and of every form of it the client sent: the
//! prober registers each form ([`Transcript::add_secret`], [`Transcript::add_digest`]) before
//! the line that carries it goes out.

use std::borrow::Cow;

use crate::secret::Password;

/// Longest line kept in a transcript; the rest is elided so a hostile server cannot bloat it.
pub const MAX_SHOWN_LINE: usize = 300;
/// Most lines kept in a transcript.
pub const MAX_LINES: usize = 200;

const HIDDEN: &str = "***";

/// Distinct secrets kept at most: a probe registers a handful; the bound keeps a runaway
/// ladder from making every scrub slower.
const MAX_SECRETS: usize = 64;

/// A string to scrub, and whether its case carries no meaning (hex digests).
#[derive(Clone, PartialEq, Eq)]
struct Secret {
    text: String,
    any_case: bool,
}

#[derive(Clone, Default)]
pub struct Transcript {
    lines: Vec<String>,
    /// Longest first, so that no shorter secret can break up a longer one before it is found.
    secrets: Vec<Secret>,
    dropped: usize,
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcript")
            .field("lines", &self.lines)
            .field("secrets", &self.secrets.len())
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Transcript {
    /// A transcript that also scrubs `password`, and its base64, from every line it records.
    pub fn new(password: &Password) -> Self {
        let mut t = Transcript::default();
        t.add_secret(password.expose());
        t.add_secret(&crate::proto::sasl::encode(password.expose().as_bytes()));
        t
    }

    /// Another string to scrub, exactly as written (an encoded form of a credential: a
    /// base64 SASL answer, an IMAP-quoted password).
    pub fn add_secret(&mut self, secret: &str) {
        self.insert(secret, false);
    }

    /// A hex digest to scrub in upper, lower or mixed case (APOP, CRAM-MD5).
    pub fn add_digest(&mut self, digest: &str) {
        self.insert(digest, true);
    }

    fn insert(&mut self, text: &str, any_case: bool) {
        // Errors quote what a server sent with `{:?}`, which escapes quotes and backslashes:
        // the escaped form is a form of the secret too.
        let escaped = text.escape_debug().to_string();
        if escaped != text {
            self.insert_one(&escaped, any_case);
        }
        self.insert_one(text, any_case);
    }

    fn insert_one(&mut self, text: &str, any_case: bool) {
        if text.is_empty() || self.secrets.len() >= MAX_SECRETS {
            return;
        }
        let secret = Secret {
            text: text.to_string(),
            any_case,
        };
        if self.secrets.contains(&secret) {
            return;
        }
        let at = self
            .secrets
            .iter()
            .position(|s| s.text.len() < secret.text.len())
            .unwrap_or(self.secrets.len());
        self.secrets.insert(at, secret);
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
        let clean = self.scrub_owned(line);
        self.lines.push(shorten(clean));
    }

    /// Removes every known secret from `text`; used for error details too.
    pub fn scrub(&self, text: &str) -> String {
        self.scrub_owned(text.to_owned())
    }

    /// [`Self::scrub`] reusing `text`'s allocation when there is nothing to replace, which is
    /// every line of a healthy probe.
    fn scrub_owned(&self, text: String) -> String {
        let mut out = if text.chars().any(char::is_control) {
            text.chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect()
        } else {
            text
        };
        for secret in &self.secrets {
            out = if secret.any_case {
                replace_any_case(&out, &secret.text)
            } else if out.contains(secret.text.as_str()) {
                out.replace(secret.text.as_str(), HIDDEN)
            } else {
                out
            };
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

/// `text` with every ASCII-case-insensitive occurrence of `needle` hidden.
fn replace_any_case(text: &str, needle: &str) -> String {
    // ASCII lower-casing keeps byte offsets, so matches in the copy are matches in `text`.
    let lower = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(at) = lower[from..].find(&needle) {
        out.push_str(&text[from..from + at]);
        out.push_str(HIDDEN);
        from += at + needle.len();
    }
    out.push_str(&text[from..]);
    out
}

fn shorten(line: String) -> String {
    if line.len() <= MAX_SHOWN_LINE {
        return line;
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
        Some("LOGIN") if words.len() > 2 => {
            Cow::Owned(format!("{} {} {HIDDEN}", words[0], words[1]))
        }
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
        assert!(
            t.lines().iter().all(|l| !l.contains("s3cr3t")),
            "{:?}",
            t.lines()
        );
        assert_eq!(t.lines()[2], "C: ***");
    }

    #[test]
    fn scrubs_every_registered_form() {
        let mut t = Transcript::new(&Password::new("tanstaaf"));
        t.add_secret("\"tan\\\"staaf\"");
        t.add_digest("c4c9334bac560ecc979e58001b3e22fb");
        t.server(
            "-ERR you said C4C9334BAC560ECC979E58001B3E22FB and c4C9334bac560ecc979e58001b3e22fB",
        );
        t.server("-ERR base64 dGFuc3RhYWY= and quoted \"tan\\\"staaf\"");
        for line in t.lines() {
            for leak in ["c4c9", "C4C9", "dGFuc3RhYWY", "staaf"] {
                assert!(!line.contains(leak), "{leak} in {line}");
            }
        }
        assert_eq!(t.lines()[0], "S: -ERR you said *** and ***");
        // A digest's letters elsewhere are left alone.
        assert_eq!(t.scrub("CAPA"), "CAPA");
    }

    #[test]
    fn scrubs_secrets_quoted_by_debug_formatting() {
        let t = Transcript::new(&Password::new("pa\"ss\\wörd"));
        let error = format!(
            "expected +OK or -ERR, got {:?}",
            "you said PASS pa\"ss\\wörd"
        );
        assert!(error.contains("pa\\\"ss\\\\wörd"), "{error}");
        let shown = t.scrub(&error);
        assert!(!shown.contains("ss"), "{shown}");
    }

    #[test]
    fn a_shorter_secret_cannot_break_up_a_longer_one() {
        let mut t = Transcript::new(&Password::new("pw"));
        // Were "pw" hidden first, "x***y-longer" would show most of the longer secret and
        // no longer match it; the longer one goes first and disappears whole.
        t.add_secret("pw");
        t.add_secret("xpwy-longer");
        assert_eq!(t.scrub("a xpwy-longer b"), "a *** b");
        assert!(!format!("{t:?}").contains("xpwy"), "Debug shows no secret");
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
