//! IMAP responses, capabilities and response codes (RFC 3501, 4959, 5530), and the quoting of
//! LOGIN arguments. Only what a login needs: no FETCH parsing.

/// The status of a tagged or untagged condition response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

/// A response code (`[...]` after the status), those a login cares about named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    Capability(Vec<String>),
    AuthenticationFailed,
    AuthorizationFailed,
    Expired,
    PrivacyRequired,
    Unavailable,
    ContactAdmin,
    ServerBug,
    Alert,
    Other(String),
}

/// One line of server output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `+ text`: the server waits for more from the client.
    Continuation(String),
    /// `* OK/NO/BAD/BYE/PREAUTH [code] text`.
    Condition {
        status: Status,
        code: Option<Code>,
        text: String,
    },
    /// `* CAPABILITY atoms...`.
    Capability(Vec<String>),
    /// Any other untagged data (`* 3 EXISTS`, `* FLAGS ...`); irrelevant to a login.
    Data,
    /// `tag OK/NO/BAD [code] text`.
    Tagged {
        tag: String,
        status: Status,
        code: Option<Code>,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IMAP response: {0:?}")]
pub struct Unparsable(pub String);

const MAX_CAPABILITIES: usize = 256;

pub fn parse_response(line: &str) -> Result<Response, Unparsable> {
    let bad = || Unparsable(line.to_string());
    if line == "+" {
        return Ok(Response::Continuation(String::new()));
    }
    if let Some(rest) = line.strip_prefix("+ ") {
        return Ok(Response::Continuation(rest.to_string()));
    }
    let (first, rest) = line.split_once(' ').ok_or_else(bad)?;
    if first == "*" {
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        if word.eq_ignore_ascii_case("CAPABILITY") {
            return Ok(Response::Capability(atoms(after)));
        }
        return match status(word) {
            Some(status) => {
                let (code, text) = split_code(after);
                Ok(Response::Condition { status, code, text })
            }
            None => Ok(Response::Data),
        };
    }
    if first.is_empty() || !first.bytes().all(is_tag_char) {
        return Err(bad());
    }
    let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
    match status(word) {
        Some(status @ (Status::Ok | Status::No | Status::Bad)) => {
            let (code, text) = split_code(after);
            Ok(Response::Tagged {
                tag: first.to_string(),
                status,
                code,
                text,
            })
        }
        _ => Err(bad()),
    }
}

fn is_tag_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
}

fn status(word: &str) -> Option<Status> {
    Some(match word.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        "BYE" => Status::Bye,
        "PREAUTH" => Status::Preauth,
        _ => return None,
    })
}

fn atoms(text: &str) -> Vec<String> {
    text.split_ascii_whitespace()
        .take(MAX_CAPABILITIES)
        .map(|a| a.to_ascii_uppercase())
        .collect()
}

fn split_code(text: &str) -> (Option<Code>, String) {
    if let Some(inner) = text.strip_prefix('[')
        && let Some(end) = inner.find(']')
    {
        let body = &inner[..end];
        let (name, args) = body.split_once(' ').unwrap_or((body, ""));
        let code = match name.to_ascii_uppercase().as_str() {
            "CAPABILITY" => Code::Capability(atoms(args)),
            "AUTHENTICATIONFAILED" => Code::AuthenticationFailed,
            "AUTHORIZATIONFAILED" => Code::AuthorizationFailed,
            "EXPIRED" => Code::Expired,
            "PRIVACYREQUIRED" => Code::PrivacyRequired,
            "UNAVAILABLE" => Code::Unavailable,
            "CONTACTADMIN" => Code::ContactAdmin,
            "SERVERBUG" => Code::ServerBug,
            "ALERT" => Code::Alert,
            other => Code::Other(other.chars().take(64).collect()),
        };
        return (Some(code), inner[end + 1..].trim_start().to_string());
    }
    (None, text.to_string())
}

/// Whether a `NO` or `BAD` completion says the server takes logins only over TLS:
/// `[PRIVACYREQUIRED]` (RFC 5530) always; otherwise, on an unencrypted connection only, the
/// text (`NO STARTTLS required`), unless another code already explains the refusal.
pub fn demands_tls(status: Status, code: Option<&Code>, text: &str, encrypted: bool) -> bool {
    if !matches!(status, Status::No | Status::Bad) {
        return false;
    }
    match code {
        Some(Code::PrivacyRequired) => true,
        None | Some(Code::Alert) | Some(Code::Other(_)) | Some(Code::Capability(_)) => {
            !encrypted && super::says_tls_required(text)
        }
        Some(_) => false,
    }
}

/// What CAPABILITY advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    atoms: Vec<String>,
}

impl Capabilities {
    pub fn new(atoms: Vec<String>) -> Self {
        Capabilities {
            atoms: atoms.into_iter().map(|a| a.to_ascii_uppercase()).collect(),
        }
    }

    pub fn has(&self, atom: &str) -> bool {
        self.atoms.iter().any(|a| a.eq_ignore_ascii_case(atom))
    }

    /// Whether `AUTH=<mechanism>` is advertised.
    pub fn auth(&self, mechanism: &str) -> bool {
        self.atoms.iter().any(|a| {
            a.strip_prefix("AUTH=")
                .is_some_and(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }

    pub fn login_disabled(&self) -> bool {
        self.has("LOGINDISABLED")
    }

    pub fn starttls(&self) -> bool {
        self.has("STARTTLS")
    }

    pub fn sasl_ir(&self) -> bool {
        self.has("SASL-IR")
    }

    /// Whether the server offers OAuth2 (the only way into Microsoft 365 and Google).
    pub fn oauth(&self) -> bool {
        self.auth("XOAUTH2") || self.auth("OAUTHBEARER")
    }

    pub fn is_empty(&self) -> bool {
        self.atoms.is_empty()
    }
}

/// An argument of LOGIN as an IMAP quoted string, or `None` when it needs a literal
/// (8-bit bytes). Callers refuse CR, LF and NUL before this: no form can carry them.
pub fn quoted(value: &str) -> Option<String> {
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_greetings() {
        assert_eq!(
            parse_response("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Dovecot ready.")
                .unwrap(),
            Response::Condition {
                status: Status::Ok,
                code: Some(Code::Capability(vec![
                    "IMAP4REV1".into(),
                    "SASL-IR".into(),
                    "AUTH=PLAIN".into()
                ])),
                text: "Dovecot ready.".into()
            }
        );
        assert!(matches!(
            parse_response("* PREAUTH welcome").unwrap(),
            Response::Condition {
                status: Status::Preauth,
                code: None,
                ..
            }
        ));
        assert!(matches!(
            parse_response("* BYE too many connections").unwrap(),
            Response::Condition {
                status: Status::Bye,
                ..
            }
        ));
        assert!(matches!(
            parse_response("* OK").unwrap(),
            Response::Condition {
                status: Status::Ok,
                ..
            }
        ));
    }

    #[test]
    fn parses_tagged_and_codes() {
        let r = parse_response("a1 NO [AUTHENTICATIONFAILED] Authentication failed.").unwrap();
        assert_eq!(
            r,
            Response::Tagged {
                tag: "a1".into(),
                status: Status::No,
                code: Some(Code::AuthenticationFailed),
                text: "Authentication failed.".into()
            }
        );
        let code = |l: &str| match parse_response(l).unwrap() {
            Response::Tagged { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code("a2 NO [PRIVACYREQUIRED] Use TLS"),
            Some(Code::PrivacyRequired)
        );
        assert_eq!(code("a2 NO [UNAVAILABLE] later"), Some(Code::Unavailable));
        assert_eq!(code("a2 ok [alert] hi"), Some(Code::Alert));
        assert_eq!(
            code("a2 BAD [X-FOO bar] hi"),
            Some(Code::Other("X-FOO".into()))
        );
        assert_eq!(code("a2 NO plain"), None);
    }

    #[test]
    fn parses_capability_and_continuations() {
        assert_eq!(
            parse_response("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED").unwrap(),
            Response::Capability(vec![
                "IMAP4REV1".into(),
                "STARTTLS".into(),
                "LOGINDISABLED".into()
            ])
        );
        assert_eq!(
            parse_response("+ PDEyMz4=").unwrap(),
            Response::Continuation("PDEyMz4=".into())
        );
        assert_eq!(
            parse_response("+").unwrap(),
            Response::Continuation(String::new())
        );
        assert_eq!(parse_response("* 3 EXISTS").unwrap(), Response::Data);
    }

    #[test]
    fn rejects_garbage() {
        for line in [
            "",
            "HTTP/1.1 400 Bad Request",
            "a1 MAYBE",
            "garbage",
            "* ",
            "+OK pop3",
        ] {
            let parsed = parse_response(line);
            assert!(
                !matches!(
                    parsed,
                    Ok(Response::Tagged { .. }) | Ok(Response::Condition { .. })
                ),
                "{line:?} -> {parsed:?}"
            );
        }
    }

    #[test]
    fn capabilities() {
        let caps = Capabilities::new(vec![
            "IMAP4rev1".into(),
            "AUTH=CRAM-MD5".into(),
            "auth=plain".into(),
            "LOGINDISABLED".into(),
            "AUTH=XOAUTH2".into(),
        ]);
        assert!(caps.auth("CRAM-MD5") && caps.auth("PLAIN") && !caps.auth("LOGIN"));
        assert!(caps.login_disabled() && !caps.starttls() && !caps.sasl_ir() && caps.oauth());
    }

    #[test]
    fn tls_demands() {
        let demands = |line: &str, encrypted: bool| match parse_response(line).unwrap() {
            Response::Tagged {
                status, code, text, ..
            } => demands_tls(status, code.as_ref(), &text, encrypted),
            other => panic!("{other:?}"),
        };
        assert!(demands("a1 NO STARTTLS required", false));
        assert!(!demands("a1 NO STARTTLS required", true));
        assert!(demands("a1 BAD TLS required to log in.", false));
        assert!(demands("a1 NO [PRIVACYREQUIRED] Use TLS", false));
        assert!(demands("a1 NO [PRIVACYREQUIRED] Use TLS", true));
        assert!(!demands(
            "a1 NO [AUTHENTICATIONFAILED] Authentication failed.",
            false
        ));
        assert!(!demands(
            "a1 NO [UNAVAILABLE] TLS backend required but down",
            false
        ));
        assert!(!demands("a1 NO Authentication failed.", false));
        assert!(!demands("a1 OK STARTTLS required? no", false));
    }

    #[test]
    fn quotes_login_arguments() {
        assert_eq!(quoted("alice").unwrap(), "\"alice\"");
        assert_eq!(quoted(r#"p@ss word"1\"#).unwrap(), r#""p@ss word\"1\\""#);
        assert_eq!(quoted("pässword"), None);
    }
}
