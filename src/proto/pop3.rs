//! POP3 replies, greeting timestamps, CAPA and response codes (RFC 1939, 2449, 3206, 5034).

/// A status line: `+OK ...` or `-ERR ...`, with its optional `[CODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    /// The response code without brackets, upper-cased (`AUTH`, `IN-USE`, `SYS/TEMP`).
    pub code: Option<String>,
    pub text: String,
}

/// A line that is neither `+OK` nor `-ERR` where a status was due.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected +OK or -ERR, got {0:?}")]
pub struct NotAStatus(pub String);

/// How a `-ERR` to an authentication command should be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The credentials were refused (`[AUTH]`, or no code at all).
    Credentials,
    /// The server takes logins only over TLS, and this connection has none.
    TlsRequired,
    /// The server will not serve this login now (`[IN-USE]`, `[LOGIN-DELAY]`, `[SYS/TEMP]`).
    Busy,
    /// A permanent fault of the server (`[SYS/PERM]`).
    ServerFault,
}

pub fn parse_reply(line: &str) -> Result<Reply, NotAStatus> {
    let (ok, rest) = if let Some(rest) = strip_prefix_ci(line, "+OK") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ci(line, "-ERR") {
        (false, rest)
    } else {
        return Err(NotAStatus(line.to_string()));
    };
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return Err(NotAStatus(line.to_string()));
    }
    let rest = rest.trim_start();
    let (code, text) = split_code(rest);
    Ok(Reply {
        ok,
        code,
        text: text.to_string(),
    })
}

fn strip_prefix_ci<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &line[prefix.len()..])
}

fn split_code(text: &str) -> (Option<String>, &str) {
    if let Some(inner) = text.strip_prefix('[')
        && let Some(end) = inner.find(']')
    {
        let code = inner[..end].trim();
        if !code.is_empty() && code.len() <= 64 && !code.contains(' ') {
            return (
                Some(code.to_ascii_uppercase()),
                inner[end + 1..].trim_start(),
            );
        }
    }
    (None, text)
}

impl Reply {
    /// Reads a refusal: the response code first (RFC 2449, RFC 3206), then, on an unencrypted
    /// connection only, whether the text demands TLS (POP3 has no code for that), else the
    /// credentials. `[AUTH]` does not settle it: Cyrus says `-ERR [AUTH] USER command only
    /// available under a layer`.
    pub fn refusal(&self, encrypted: bool) -> Refusal {
        match self.code.as_deref() {
            Some("IN-USE") | Some("LOGIN-DELAY") => Refusal::Busy,
            Some(code) if code.starts_with("SYS/TEMP") => Refusal::Busy,
            Some(code) if code.starts_with("SYS/PERM") => Refusal::ServerFault,
            _ if !encrypted && super::says_tls_required(&self.text) => Refusal::TlsRequired,
            _ => Refusal::Credentials,
        }
    }
}

/// The APOP timestamp of a greeting (`<...@...>`, brackets included), if it carries one.
pub fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let len = greeting[start..].find('>')?;
    let stamp = &greeting[start..=start + len];
    let valid = stamp.len() > 4
        && stamp.len() <= 256
        && stamp.contains('@')
        && stamp.bytes().all(|b| b.is_ascii_graphic());
    valid.then_some(stamp)
}

/// What `CAPA` advertised (RFC 2449).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub user: bool,
    pub stls: bool,
    /// SASL mechanisms, upper-cased.
    pub sasl: Vec<String>,
    pub resp_codes: bool,
    pub auth_resp_code: bool,
    /// `XTLSREQUIRED` (GNU Mailutils): no login before STLS.
    pub tls_required: bool,
}

impl Capabilities {
    pub fn parse(lines: &[String]) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            let Some(name) = words.next() else { continue };
            match name.to_ascii_uppercase().as_str() {
                "USER" => caps.user = true,
                "STLS" => caps.stls = true,
                "RESP-CODES" => caps.resp_codes = true,
                "AUTH-RESP-CODE" => caps.auth_resp_code = true,
                "XTLSREQUIRED" => caps.tls_required = true,
                "SASL" => caps
                    .sasl
                    .extend(words.map(|m| m.to_ascii_uppercase()).take(64)),
                _ => {}
            }
        }
        caps
    }

    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

/// The text of a SASL continuation line (`+ challenge`, or a bare `+`), if `line` is one.
pub fn continuation(line: &str) -> Option<&str> {
    if line == "+" {
        return Some("");
    }
    line.strip_prefix("+ ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(
            parse_reply("+OK Dovecot ready.").unwrap(),
            Reply {
                ok: true,
                code: None,
                text: "Dovecot ready.".into()
            }
        );
        let r = parse_reply("-ERR [IN-USE] Mailbox is locked").unwrap();
        assert!(!r.ok);
        assert_eq!(r.code.as_deref(), Some("IN-USE"));
        assert_eq!(r.text, "Mailbox is locked");
        assert_eq!(r.refusal(false), Refusal::Busy);
        assert_eq!(parse_reply("+OK").unwrap().text, "");
        assert!(!parse_reply("-err lower case").unwrap().ok);
        assert!(parse_reply("+OKAY").is_err());
        assert!(parse_reply("* OK imap").is_err());
        assert!(parse_reply("").is_err());
        assert!(parse_reply("+ challenge").is_err());
    }

    #[test]
    fn reads_rfc3206_codes() {
        let code = |l: &str| parse_reply(l).unwrap().refusal(true);
        assert_eq!(
            code("-ERR [AUTH] Authentication failed."),
            Refusal::Credentials
        );
        assert_eq!(code("-ERR Authentication failed."), Refusal::Credentials);
        assert_eq!(code("-ERR [SYS/TEMP] try later"), Refusal::Busy);
        assert_eq!(code("-ERR [SYS/TEMP/DB] try later"), Refusal::Busy);
        assert_eq!(code("-ERR [LOGIN-DELAY] wait"), Refusal::Busy);
        assert_eq!(code("-ERR [SYS/PERM] broken"), Refusal::ServerFault);
        assert_eq!(code("-ERR [] empty"), Refusal::Credentials);
        assert_eq!(parse_reply("-ERR [unterminated").unwrap().code, None);
    }

    #[test]
    fn tls_demands_count_only_without_tls_and_after_codes() {
        let read = |l: &str, encrypted: bool| parse_reply(l).unwrap().refusal(encrypted);
        for line in [
            "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            "-ERR [AUTH] USER command only available under a layer",
            "-ERR TLS required to log in.",
        ] {
            assert_eq!(read(line, false), Refusal::TlsRequired, "{line}");
            // Over TLS the text cannot mean this connection: read as the credentials.
            assert_eq!(read(line, true), Refusal::Credentials, "{line}");
        }
        assert_eq!(
            read("-ERR [AUTH] Authentication failed.", false),
            Refusal::Credentials
        );
        assert_eq!(read("-ERR Incorrect state", false), Refusal::Credentials);
        // A code decides before the text.
        assert_eq!(
            read("-ERR [SYS/TEMP] TLS layer required but broken", false),
            Refusal::Busy
        );
        assert_eq!(read("-ERR [IN-USE] TLS required", false), Refusal::Busy);
    }

    #[test]
    fn finds_apop_timestamps() {
        assert_eq!(
            apop_timestamp("POP3 server ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(
            apop_timestamp("Dovecot ready. <1a2b.1.5f@mail>"),
            Some("<1a2b.1.5f@mail>")
        );
        assert_eq!(apop_timestamp("Dovecot ready."), None);
        assert_eq!(apop_timestamp("ready <no-at-sign>"), None);
        assert_eq!(apop_timestamp("ready <a b@c>"), None);
        assert_eq!(apop_timestamp("ready <unterminated@x"), None);
        assert_eq!(apop_timestamp("><@>"), None);
    }

    #[test]
    fn parses_capa() {
        let lines: Vec<String> = [
            "TOP",
            "UIDL",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "USER",
            "SASL PLAIN cram-md5",
            "STLS",
            "XTLSREQUIRED",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let caps = Capabilities::parse(&lines);
        assert!(caps.user && caps.stls && caps.resp_codes && caps.auth_resp_code);
        assert!(caps.tls_required);
        assert!(!Capabilities::parse(&["STLS".into()]).tls_required);
        assert_eq!(caps.sasl, vec!["PLAIN", "CRAM-MD5"]);
        assert!(caps.has_sasl("CRAM-MD5"));
        assert!(!Capabilities::parse(&["SASL".into()]).has_sasl("PLAIN"));
    }

    #[test]
    fn recognises_continuations() {
        assert_eq!(continuation("+ PDEyMz4="), Some("PDEyMz4="));
        assert_eq!(continuation("+"), Some(""));
        assert_eq!(continuation("+ "), Some(""));
        assert_eq!(continuation("+OK"), None);
        assert_eq!(continuation("-ERR"), None);
    }
}
