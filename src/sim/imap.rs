//! The IMAP dialogue of the simulator: the not-authenticated state of RFC 3501 (CAPABILITY,
//! STARTTLS, LOGIN with quoted strings and literals, AUTHENTICATE), SASL-IR (RFC 4959) and the
//! response codes of RFC 5530.

use std::io;

use super::wire::Wire;
use super::{
    Attempt, Behavior, Judgement, MAX_BAD_COMMANDS, MAX_LINE, Shared, TlsDemand, known_verb,
};
use crate::proto::sasl;
use crate::verdict::TlsMode;

const VERBS: &[&str] = &[
    "CAPABILITY",
    "NOOP",
    "LOGOUT",
    "STARTTLS",
    "LOGIN",
    "AUTHENTICATE",
    "SELECT",
    "EXAMINE",
    "ID",
    "ENABLE",
    "LIST",
    "STATUS",
];
/// `AUTHENTICATE` is recorded with its mechanism, which is no secret.
const AUTHENTICATE_VERBS: &[&str] = &[
    "AUTHENTICATE CRAM-MD5",
    "AUTHENTICATE PLAIN",
    "AUTHENTICATE LOGIN",
    "AUTHENTICATE XOAUTH2",
    "AUTHENTICATE OAUTHBEARER",
];

const AUTHENTICATION_FAILED: &str = "NO [AUTHENTICATIONFAILED] Authentication failed.";
const PRIVACY_REQUIRED: &str =
    "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";
const UNAVAILABLE: &str = "NO [UNAVAILABLE] Temporary authentication failure.";
/// Capabilities once logged in: the simulator serves no mail, so it claims nothing more.
const AUTHENTICATED_CAPABILITIES: &str = "IMAP4rev1";

/// What the server offers before login, fixed by the spec and whether TLS is active yet.
struct Offer {
    mechanisms: Vec<&'static str>,
    /// LOGIN and AUTHENTICATE PLAIN would be accepted now.
    plaintext: bool,
    starttls: bool,
    sasl_ir: bool,
    /// The refusal every login meets on this connection, if TLS is demanded.
    demand: Option<TlsDemand>,
}

impl Offer {
    fn of(shared: &Shared, tls_active: bool) -> Offer {
        let spec = &shared.spec;
        let behavior = &spec.behavior;
        let full = behavior.offers_everything();
        let demand = behavior.tls_demand(tls_active);
        // Dovecot's default: no cleartext passwords before STARTTLS when STARTTLS is offered.
        let plaintext = match demand {
            Some(TlsDemand::Layer | TlsDemand::Capability) => false,
            Some(TlsDemand::Text) => true,
            None if full => spec.tls != TlsMode::Starttls || tls_active,
            None => *behavior == Behavior::CleartextOnly,
        };
        let mut mechanisms = Vec::new();
        match demand {
            // Advertised, as Cyrus and Mailutils do, though every attempt is refused.
            Some(TlsDemand::Layer) => mechanisms.extend(["PLAIN", "CRAM-MD5"]),
            Some(TlsDemand::Capability) => mechanisms.push("PLAIN"),
            _ => {
                if (full && spec.cram_md5) || *behavior == Behavior::CramMd5Only {
                    mechanisms.push("CRAM-MD5");
                }
                if full && spec.plain && plaintext {
                    mechanisms.push("PLAIN");
                }
            }
        }
        mechanisms.extend(spec.oauth_mechanisms());
        let starttls = spec.tls == TlsMode::Starttls
            && !tls_active
            && !matches!(behavior, Behavior::CleartextOnly | Behavior::LoginDisabled);
        let sasl_ir = spec.sasl_ir && !mechanisms.is_empty();
        Offer {
            mechanisms,
            plaintext,
            starttls,
            sasl_ir,
            demand,
        }
    }

    /// The completion of LOGIN or AUTHENTICATE while TLS is demanded.
    fn demand_reply(&self) -> Option<&'static str> {
        Some(match self.demand? {
            TlsDemand::Layer | TlsDemand::Capability => "NO STARTTLS required",
            TlsDemand::Text => "NO TLS required to log in.",
        })
    }

    fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1");
        if self.sasl_ir {
            caps.push_str(" SASL-IR");
        }
        if self.starttls {
            caps.push_str(" STARTTLS");
        }
        if !self.plaintext {
            caps.push_str(" LOGINDISABLED");
        }
        for mechanism in &self.mechanisms {
            caps.push_str(" AUTH=");
            caps.push_str(mechanism);
        }
        caps
    }
}

/// What the loop does after a command.
enum Flow {
    Continue,
    Close,
    StartTls,
}

/// One command as read off the wire, literals included.
enum Read {
    Command(Vec<u8>),
    /// A synchronizing literal too large to accept was refused; its bytes never come.
    Refused,
    Closed,
}

pub(super) async fn serve(mut wire: Wire, shared: &Shared) -> io::Result<()> {
    let spec = &shared.spec;
    let mut imap = Imap {
        shared,
        authenticated: false,
        bad_commands: 0,
        heard: Vec::new(),
    };
    let greeting = match &spec.behavior {
        Behavior::RejectGreeting => {
            wire.send("* BYE [UNAVAILABLE] Server is not accepting connections.\r\n")
                .await?;
            return wire.shutdown().await;
        }
        Behavior::Preauth => {
            imap.authenticated = true;
            let user = spec.users.first().map_or("user", |(name, _)| name.as_str());
            format!("* PREAUTH [CAPABILITY {AUTHENTICATED_CAPABILITIES}] Logged in as {user}.\r\n")
        }
        _ if spec.greeting_capabilities => {
            let caps = Offer::of(shared, wire.is_tls()).capabilities();
            format!("* OK [CAPABILITY {caps}] IMAP ready.\r\n")
        }
        _ => "* OK IMAP ready.\r\n".to_string(),
    };
    match spec.behavior {
        Behavior::Drip(interval) => wire.drip(&greeting, interval).await?,
        _ => wire.send(&greeting).await?,
    }
    loop {
        let command = match read_command(&mut wire).await? {
            Read::Command(command) => command,
            Read::Refused => continue,
            Read::Closed => return Ok(()),
        };
        imap.hear(&command);
        match imap.command(&mut wire, &command).await? {
            Flow::Continue => {}
            Flow::Close => return wire.shutdown().await,
            Flow::StartTls => {
                let Some(acceptor) = &shared.acceptor else {
                    return Ok(());
                };
                wire = wire.upgrade(acceptor).await?;
            }
        }
    }
}

/// Reads one command: a line, plus for each line ending in a literal `{n}` (or `{n+}`) the
/// continuation, the `n` bytes and the rest of the command. The whole is bounded by
/// [`MAX_LINE`].
async fn read_command(wire: &mut Wire) -> io::Result<Read> {
    let mut command = Vec::new();
    loop {
        let Some(line) = wire.read_line().await? else {
            return Ok(Read::Closed);
        };
        command.extend_from_slice(&line);
        if command.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "command too long",
            ));
        }
        let Some((size, synchronizing)) = literal_suffix(&line) else {
            return Ok(Read::Command(command));
        };
        if size > MAX_LINE.saturating_sub(command.len() + 2) {
            if !synchronizing {
                // The bytes are already on their way and cannot be refused: hang up.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "literal too large",
                ));
            }
            let tag = String::from_utf8_lossy(split_at_space(&command).0).into_owned();
            wire.send(&format!("{tag} BAD Literal too large.\r\n"))
                .await?;
            return Ok(Read::Refused);
        }
        if synchronizing {
            wire.send("+ go ahead\r\n").await?;
        }
        let Some(literal) = wire.read_exact(size).await? else {
            return Ok(Read::Closed);
        };
        command.extend_from_slice(b"\r\n");
        command.extend_from_slice(&literal);
    }
}

/// The size of the literal a line ends with, and whether it is synchronizing (`{n}`) rather
/// than non-synchronizing (`{n+}`, RFC 7888).
fn literal_suffix(line: &[u8]) -> Option<(usize, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let (digits, synchronizing) = match digits.strip_suffix(b"+") {
        Some(digits) => (digits, false),
        None => (digits, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Too many digits to fit is simply too large.
    let size = std::str::from_utf8(digits)
        .ok()?
        .parse()
        .unwrap_or(usize::MAX);
    Some((size, synchronizing))
}

fn split_at_space(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

/// Parses space-separated astrings: atoms, quoted strings (with `\"` and `\\` escapes) and
/// literals as [`read_command`] assembled them (`{n}` CRLF and n bytes). `None` if malformed.
fn parse_astrings(mut input: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut strings = Vec::new();
    loop {
        match input.first() {
            None => return Some(strings),
            Some(b' ') if !strings.is_empty() => input = &input[1..],
            Some(_) if !strings.is_empty() => return None,
            Some(_) => {}
        }
        let (string, rest) = match input.first()? {
            b'"' => parse_quoted(&input[1..])?,
            b'{' => parse_literal(input)?,
            _ => {
                let end = input.iter().position(|&b| b == b' ').unwrap_or(input.len());
                let atom = &input[..end];
                if atom.is_empty() || atom.iter().any(|b| b"(){%*\"\\".contains(b) || *b < 0x20) {
                    return None;
                }
                (atom.to_vec(), &input[end..])
            }
        };
        strings.push(string);
        input = rest;
    }
}

/// The rest of a quoted string after its opening quote, and what follows its closing quote.
fn parse_quoted(input: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut string = Vec::new();
    let mut bytes = input.iter().enumerate();
    while let Some((i, &b)) = bytes.next() {
        match b {
            b'"' => return Some((string, &input[i + 1..])),
            b'\\' => match bytes.next() {
                Some((_, &escaped @ (b'"' | b'\\'))) => string.push(escaped),
                _ => return None,
            },
            b'\r' | b'\n' => return None,
            _ => string.push(b),
        }
    }
    None
}

fn parse_literal(input: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let close = input.iter().position(|&b| b == b'}')?;
    let digits = input[1..close]
        .strip_suffix(b"+")
        .unwrap_or(&input[1..close]);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let body = input[close + 1..].strip_prefix(b"\r\n")?;
    if body.len() < size {
        return None;
    }
    Some((body[..size].to_vec(), &body[size..]))
}

/// The state of one IMAP connection.
struct Imap<'a> {
    shared: &'a Shared,
    authenticated: bool,
    bad_commands: u32,
    /// The last commands and SASL answers the client sent, for [`Behavior::EchoRefusals`].
    heard: Vec<String>,
}

/// Lines [`Behavior::EchoRefusals`] keeps to echo.
const ECHOED_LINES: usize = 8;

impl Imap<'_> {
    fn hear(&mut self, line: &[u8]) {
        if self.shared.spec.behavior == Behavior::EchoRefusals {
            if self.heard.len() >= ECHOED_LINES {
                self.heard.remove(0);
            }
            // A literal's CRLF would end the echo line early.
            let line = String::from_utf8_lossy(line).replace(['\r', '\n'], " ");
            self.heard.push(line);
        }
    }

    async fn command(&mut self, wire: &mut Wire, command: &[u8]) -> io::Result<Flow> {
        let (tag, rest) = split_at_space(command);
        let (word, args) = split_at_space(rest);
        let tag = String::from_utf8_lossy(tag).into_owned();
        let word = String::from_utf8_lossy(word);
        let verb = match known_verb(VERBS, &word) {
            "AUTHENTICATE" => {
                let mechanism = String::from_utf8_lossy(split_at_space(args).0);
                match known_verb(AUTHENTICATE_VERBS, &format!("AUTHENTICATE {mechanism}")) {
                    super::UNKNOWN_VERB => "AUTHENTICATE",
                    known => known,
                }
            }
            verb => verb,
        };
        if tag.is_empty() || word.is_empty() || tag.contains(['*', '+']) {
            self.shared.record(super::UNKNOWN_VERB);
            return self
                .bad_command(wire, "* BAD Error in IMAP command received by server.")
                .await;
        }
        self.shared.record(verb);
        let offer = Offer::of(self.shared, wire.is_tls());
        let login = verb == "LOGIN" || verb.starts_with("AUTHENTICATE");
        if login
            && !self.authenticated
            && let Some(reply) = offer.demand_reply()
        {
            // LOGIN, or AUTHENTICATE with an initial response, has sent its credential.
            if verb == "LOGIN" || split_at_space(args).1.iter().any(|&b| b != b' ') {
                self.shared.count(false);
            }
            wire.send(&format!("{tag} {reply}\r\n")).await?;
            return Ok(Flow::Continue);
        }

        match (verb, self.authenticated) {
            ("CAPABILITY", _) => {
                let caps = if self.authenticated {
                    AUTHENTICATED_CAPABILITIES.to_string()
                } else {
                    offer.capabilities()
                };
                wire.send(&format!(
                    "* CAPABILITY {caps}\r\n{tag} OK Capability completed.\r\n"
                ))
                .await?;
            }
            ("NOOP", _) => wire.send(&format!("{tag} OK NOOP completed.\r\n")).await?,
            ("LOGOUT", _) => {
                wire.send(&format!(
                    "* BYE Logging out\r\n{tag} OK Logout completed.\r\n"
                ))
                .await?;
                return Ok(Flow::Close);
            }
            ("STARTTLS", false) if offer.starttls => {
                wire.send(&format!("{tag} OK Begin TLS negotiation now.\r\n"))
                    .await?;
                return Ok(Flow::StartTls);
            }
            ("STARTTLS", _) if wire.is_tls() => {
                wire.send(&format!("{tag} BAD TLS is already active.\r\n"))
                    .await?;
            }
            ("LOGIN", false) => return self.login(wire, &tag, args, &offer).await,
            (verb, false) if verb.starts_with("AUTHENTICATE") => {
                return self.authenticate(wire, &tag, args, &offer).await;
            }
            (verb, true) if verb == "LOGIN" || verb.starts_with("AUTHENTICATE") => {
                wire.send(&format!("{tag} BAD Already authenticated.\r\n"))
                    .await?;
            }
            ("SELECT" | "EXAMINE", true) => {
                let access = if verb == "SELECT" {
                    "READ-WRITE"
                } else {
                    "READ-ONLY"
                };
                wire.send(&format!(
                    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* 0 EXISTS\r\n\
                     * 0 RECENT\r\n{tag} OK [{access}] {verb} completed.\r\n"
                ))
                .await?;
            }
            ("SELECT" | "EXAMINE", false) => {
                return self
                    .bad_command(wire, &format!("{tag} BAD Not authenticated."))
                    .await;
            }
            _ => {
                return self
                    .bad_command(
                        wire,
                        &format!("{tag} BAD Error in IMAP command: Unknown command."),
                    )
                    .await;
            }
        }
        Ok(Flow::Continue)
    }

    async fn bad_command(&mut self, wire: &mut Wire, reply: &str) -> io::Result<Flow> {
        self.bad_commands += 1;
        if self.bad_commands >= MAX_BAD_COMMANDS {
            wire.send("* BYE Too many invalid IMAP commands.\r\n")
                .await?;
            return Ok(Flow::Close);
        }
        wire.send(&format!("{reply}\r\n")).await?;
        Ok(Flow::Continue)
    }

    async fn login(
        &mut self,
        wire: &mut Wire,
        tag: &str,
        args: &[u8],
        offer: &Offer,
    ) -> io::Result<Flow> {
        let credentials = parse_astrings(args).filter(|strings| strings.len() == 2);
        let Some([user, password]) = credentials.as_deref() else {
            return self
                .bad_command(
                    wire,
                    &format!("{tag} BAD Error in IMAP command LOGIN: Invalid arguments."),
                )
                .await;
        };
        if !offer.plaintext {
            self.shared.count(false);
            let reply = match self.shared.spec.behavior {
                Behavior::OAuthOnly => AUTHENTICATION_FAILED,
                Behavior::CramMd5Only => "NO [CANNOT] LOGIN is disabled on this server.",
                _ => PRIVACY_REQUIRED,
            };
            wire.send(&format!("{tag} {reply}\r\n")).await?;
            return Ok(Flow::Continue);
        }
        let valid = match (std::str::from_utf8(user), std::str::from_utf8(password)) {
            (Ok(user), Ok(password)) => self.shared.check_password(user, password),
            _ => false,
        };
        self.conclude(wire, tag, Attempt::Login, valid).await
    }

    async fn authenticate(
        &mut self,
        wire: &mut Wire,
        tag: &str,
        args: &[u8],
        offer: &Offer,
    ) -> io::Result<Flow> {
        let args = String::from_utf8_lossy(args);
        let mut words = args.split(' ');
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next();
        if mechanism.is_empty() || words.next().is_some() {
            return self
                .bad_command(
                    wire,
                    &format!("{tag} BAD Error in IMAP command AUTHENTICATE: Invalid arguments."),
                )
                .await;
        }
        let behavior = &self.shared.spec.behavior;
        let advertised = offer.mechanisms.contains(&mechanism.as_str());
        // Passwords sent to a provider that dropped them fail as wrong ones.
        let tolerated = mechanism == "PLAIN" && *behavior == Behavior::OAuthOnly;
        if !advertised && !tolerated {
            let plain_withheld = mechanism == "PLAIN"
                && (behavior.offers_everything() || *behavior == Behavior::LoginDisabled);
            let reply = if plain_withheld {
                if initial.is_some() {
                    self.shared.count(false);
                }
                PRIVACY_REQUIRED
            } else {
                "NO Unsupported authentication mechanism."
            };
            wire.send(&format!("{tag} {reply}\r\n")).await?;
            return Ok(Flow::Continue);
        }
        if initial.is_some() && !offer.sasl_ir {
            wire.send(&format!(
                "{tag} BAD Initial response not allowed: SASL-IR is not advertised.\r\n"
            ))
            .await?;
            return Ok(Flow::Continue);
        }
        match mechanism.as_str() {
            "CRAM-MD5" => {
                if initial.is_some() {
                    // CRAM-MD5 is server-first: an initial response is a protocol error.
                    wire.send(&format!(
                        "{tag} BAD Initial response not allowed for CRAM-MD5.\r\n"
                    ))
                    .await?;
                    return Ok(Flow::Continue);
                }
                let challenge = self.shared.spec.stamp();
                let prompt = format!("+ {}\r\n", sasl::encode(challenge.as_bytes()));
                let Some(answer) = self.sasl_answer(wire, tag, &prompt).await? else {
                    return Ok(Flow::Continue);
                };
                let valid = self.shared.check_cram_md5(&challenge, &answer);
                self.conclude(wire, tag, Attempt::CramMd5, valid).await
            }
            "PLAIN" => {
                let answer = match initial {
                    Some(initial) => self.decode(wire, tag, initial).await?,
                    None => self.sasl_answer(wire, tag, "+ \r\n").await?,
                };
                let Some(answer) = answer else {
                    return Ok(Flow::Continue);
                };
                let valid = self.shared.check_plain(&answer);
                self.conclude(wire, tag, Attempt::Plain, valid).await
            }
            _ => {
                // XOAUTH2 / OAUTHBEARER.
                let answer = match initial {
                    Some(initial) => self.decode(wire, tag, initial).await?,
                    None => self.sasl_answer(wire, tag, "+ \r\n").await?,
                };
                let Some(answer) = answer else {
                    return Ok(Flow::Continue);
                };
                let valid = self.shared.check_oauth(&mechanism, &answer);
                if !valid && *behavior == Behavior::OAuthOnly {
                    let challenge = format!("+ {}\r\n", super::oauth_error_challenge());
                    wire.send(&challenge).await?;
                    let Some(line) = wire.read_line().await? else {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    };
                    self.hear(&line);
                    if !super::oauth_error_answered(&mechanism, &line) {
                        self.shared.count(false);
                        wire.send(&format!(
                            "{tag} BAD Invalid answer to the error challenge.\r\n"
                        ))
                        .await?;
                        return Ok(Flow::Continue);
                    }
                }
                self.conclude(wire, tag, Attempt::OAuth, valid).await
            }
        }
    }

    /// Sends a SASL continuation and reads the decoded answer. `None` when the client
    /// cancelled or sent bad base64; the tagged answer has then been sent.
    async fn sasl_answer(
        &mut self,
        wire: &mut Wire,
        tag: &str,
        prompt: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        wire.send(prompt).await?;
        let Some(line) = wire.read_line().await? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        self.hear(&line);
        let line = String::from_utf8_lossy(&line);
        self.decode(wire, tag, &line).await
    }

    async fn decode(
        &mut self,
        wire: &mut Wire,
        tag: &str,
        text: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        match text.trim() {
            "*" => {
                wire.send(&format!("{tag} BAD Authentication cancelled.\r\n"))
                    .await?;
                Ok(None)
            }
            // RFC 4959: "=" is an empty initial response.
            "=" => Ok(Some(Vec::new())),
            text => match sasl::decode_challenge(text) {
                Some(bytes) => Ok(Some(bytes)),
                None => {
                    wire.send(&format!(
                        "{tag} BAD Invalid base64 data in continued response.\r\n"
                    ))
                    .await?;
                    Ok(None)
                }
            },
        }
    }

    async fn conclude(
        &mut self,
        wire: &mut Wire,
        tag: &str,
        attempt: Attempt,
        valid: bool,
    ) -> io::Result<Flow> {
        match self.shared.judge_after_delay(attempt, valid).await {
            Judgement::Accept => {
                self.authenticated = true;
                wire.send(&format!(
                    "{tag} OK [CAPABILITY {AUTHENTICATED_CAPABILITIES}] Logged in\r\n"
                ))
                .await?;
                Ok(Flow::Continue)
            }
            Judgement::Fail if self.shared.spec.behavior == Behavior::EchoRefusals => {
                let heard = std::mem::take(&mut self.heard).join(" / ");
                wire.send(&format!(
                    "{tag} NO [AUTHENTICATIONFAILED] Authentication failed; you said: {heard}\r\n"
                ))
                .await?;
                Ok(Flow::Continue)
            }
            Judgement::Fail => {
                wire.send(&format!("{tag} {AUTHENTICATION_FAILED}\r\n"))
                    .await?;
                Ok(Flow::Continue)
            }
            Judgement::FailAndClose => {
                wire.send(&format!("{tag} {AUTHENTICATION_FAILED}\r\n"))
                    .await?;
                Ok(Flow::Close)
            }
            Judgement::Busy(_) => {
                wire.send(&format!("{tag} {UNAVAILABLE}\r\n")).await?;
                Ok(Flow::Continue)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_suffixes() {
        assert_eq!(literal_suffix(b"a LOGIN {5}"), Some((5, true)));
        assert_eq!(literal_suffix(b"a LOGIN {12+}"), Some((12, false)));
        assert_eq!(literal_suffix(b"a LOGIN \"x\""), None);
        assert_eq!(literal_suffix(b"a LOGIN {}"), None);
        assert_eq!(literal_suffix(b"a LOGIN {x}"), None);
        assert_eq!(
            literal_suffix(b"a LOGIN {99999999999999999999999}"),
            Some((usize::MAX, true))
        );
    }

    #[test]
    fn astrings_atoms_quoted_literals() {
        assert_eq!(
            parse_astrings(b"tim \"tan \\\"st\\\\aaf\"").unwrap(),
            vec![b"tim".to_vec(), b"tan \"st\\aaf".to_vec()]
        );
        assert_eq!(
            parse_astrings(b"{3}\r\ntim {4}\r\na b\"").unwrap(),
            vec![b"tim".to_vec(), b"a b\"".to_vec()]
        );
        assert_eq!(parse_astrings(b"").unwrap(), Vec::<Vec<u8>>::new());
        assert!(parse_astrings(b"\"unterminated").is_none());
        assert!(parse_astrings(b"\"bad \\x escape\"").is_none());
        assert!(parse_astrings(b"{10}\r\nshort").is_none());
        assert!(parse_astrings(b"\"a\"\"b\"").is_none());
    }
}
