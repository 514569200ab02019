//! The POP3 dialogue of the simulator: RFC 1939 (USER/PASS, APOP), CAPA and response codes
//! (RFC 2449, RFC 3206), AUTH (RFC 5034) and STLS (RFC 2595).

use std::io;

use super::wire::Wire;
use super::{
    Attempt, Behavior, Judgement, MAX_BAD_COMMANDS, Shared, TlsDemand, known_verb, split_word,
};
use crate::proto::sasl;
use crate::verdict::TlsMode;

const VERBS: &[&str] = &[
    "CAPA", "APOP", "USER", "PASS", "AUTH", "STLS", "NOOP", "STAT", "LIST", "RETR", "UIDL", "TOP",
    "DELE", "RSET", "QUIT",
];
/// `AUTH` is recorded with its mechanism, which is no secret.
const AUTH_VERBS: &[&str] = &[
    "AUTH CRAM-MD5",
    "AUTH PLAIN",
    "AUTH LOGIN",
    "AUTH XOAUTH2",
    "AUTH OAUTHBEARER",
];

const AUTH_FAILED: &str = "-ERR [AUTH] Authentication failed.\r\n";
const PLAINTEXT_DISALLOWED: &str =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
const UNSUPPORTED_MECHANISM: &str = "-ERR Unsupported authentication mechanism.\r\n";
const NOT_LOGGED_IN: &str = "-ERR Unknown command or not logged in.\r\n";

/// What the server offers, fixed by the spec and whether TLS is active yet.
struct Offer {
    apop: bool,
    /// CRAM-MD5 listed in CAPA.
    cram_md5: bool,
    /// CRAM-MD5 accepted though not listed.
    unlisted_cram_md5: bool,
    plain: bool,
    oauth: Vec<&'static str>,
    user: bool,
    stls: bool,
    /// The refusal every login meets on this connection, if TLS is demanded.
    demand: Option<TlsDemand>,
}

impl Offer {
    fn of(shared: &Shared, tls_active: bool) -> Offer {
        let spec = &shared.spec;
        let demand = spec.behavior.tls_demand(tls_active);
        let layer = demand == Some(TlsDemand::Layer);
        let full = spec.behavior.offers_everything() && !layer;
        let cram_md5_only = spec.behavior == Behavior::CramMd5Only;
        let stls = spec.tls == TlsMode::Starttls
            && !tls_active
            && !matches!(
                spec.behavior,
                Behavior::CleartextOnly | Behavior::LoginDisabled
            );
        Offer {
            apop: full && spec.apop,
            cram_md5: ((full && spec.cram_md5) || cram_md5_only) && !spec.unlisted_cram_md5,
            unlisted_cram_md5: spec.unlisted_cram_md5,
            plain: full && spec.plain,
            oauth: spec.oauth_mechanisms(),
            user: !layer
                && !matches!(
                    spec.behavior,
                    Behavior::CramMd5Only | Behavior::LoginDisabled
                ),
            stls,
            demand,
        }
    }

    /// Whether `AUTH mechanism` is taken, listed or not.
    fn accepts(&self, mechanism: &str) -> bool {
        self.mechanisms().contains(&mechanism)
            || (mechanism == "CRAM-MD5" && self.unlisted_cram_md5)
    }

    /// The answer to a login command (`USER`, `PASS`, `APOP`, `AUTH ...`) while TLS is demanded.
    fn demand_reply(&self, verb: &str) -> Option<&'static str> {
        match (self.demand?, verb) {
            (TlsDemand::Layer, "USER" | "PASS") => {
                Some("-ERR [AUTH] USER command only available under a layer\r\n")
            }
            (TlsDemand::Layer, _) => None,
            (TlsDemand::Text, _) => Some("-ERR TLS required to log in.\r\n"),
            (TlsDemand::Capability, _) => Some("-ERR Incorrect state\r\n"),
        }
    }

    fn mechanisms(&self) -> Vec<&'static str> {
        let mut mechanisms = Vec::new();
        if self.cram_md5 {
            mechanisms.push("CRAM-MD5");
        }
        if self.plain {
            mechanisms.push("PLAIN");
        }
        mechanisms.extend(self.oauth.iter().copied());
        mechanisms
    }

    fn capa(&self) -> String {
        let mut capa = String::from("+OK Capability list follows\r\nTOP\r\nUIDL\r\n");
        capa.push_str("RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if self.user {
            capa.push_str("USER\r\n");
        }
        let mechanisms = self.mechanisms();
        if !mechanisms.is_empty() {
            capa.push_str(&format!("SASL {}\r\n", mechanisms.join(" ")));
        }
        if self.stls {
            capa.push_str("STLS\r\n");
        }
        if self.demand == Some(TlsDemand::Capability) {
            capa.push_str("XTLSREQUIRED\r\n");
        }
        capa.push_str(".\r\n");
        capa
    }
}

/// The state of one POP3 connection.
struct Pop3<'a> {
    shared: &'a Shared,
    offer: Offer,
    /// The greeting's APOP timestamp, if it had one.
    timestamp: Option<String>,
    /// The name given by USER, waiting for PASS.
    user: Option<String>,
    logged_in: bool,
    bad_commands: u32,
    /// The last lines the client sent, for [`Behavior::EchoRefusals`].
    heard: Vec<String>,
}

/// Lines [`Behavior::EchoRefusals`] keeps to echo.
const ECHOED_LINES: usize = 8;

/// What the loop does after a command.
enum Flow {
    Continue,
    Close,
    StartTls,
}

pub(super) async fn serve(mut wire: Wire, shared: &Shared) -> io::Result<()> {
    let spec = &shared.spec;
    if spec.behavior == Behavior::RejectGreeting {
        wire.send("-ERR [SYS/TEMP] Service unavailable, try again later.\r\n")
            .await?;
        return wire.shutdown().await;
    }
    let offer = Offer::of(shared, wire.is_tls());
    let timestamp = offer.apop.then(|| spec.stamp());
    let greeting = match &timestamp {
        Some(timestamp) => format!("+OK POP3 ready {timestamp}\r\n"),
        None => "+OK POP3 ready.\r\n".to_string(),
    };
    match spec.behavior {
        Behavior::Drip(interval) => wire.drip(&greeting, interval).await?,
        _ => wire.send(&greeting).await?,
    }
    let mut pop3 = Pop3 {
        shared,
        offer,
        timestamp,
        user: None,
        logged_in: false,
        bad_commands: 0,
        heard: Vec::new(),
    };
    loop {
        let Some(line) = wire.read_line().await? else {
            return Ok(());
        };
        let line = String::from_utf8_lossy(&line);
        pop3.hear(&line);
        match pop3.command(&mut wire, &line).await? {
            Flow::Continue => {}
            Flow::Close => return wire.shutdown().await,
            Flow::StartTls => {
                let Some(acceptor) = &shared.acceptor else {
                    return Ok(());
                };
                wire = wire.upgrade(acceptor).await?;
                // RFC 2595: after STLS the client must forget what it learnt, and so do we;
                // the APOP timestamp stays, it belongs to the greeting.
                pop3.offer = Offer::of(shared, true);
                pop3.user = None;
            }
        }
    }
}

impl Pop3<'_> {
    fn hear(&mut self, line: &str) {
        if self.shared.spec.behavior == Behavior::EchoRefusals {
            if self.heard.len() >= ECHOED_LINES {
                self.heard.remove(0);
            }
            self.heard.push(line.to_string());
        }
    }

    async fn command(&mut self, wire: &mut Wire, line: &str) -> io::Result<Flow> {
        let (word, rest) = split_word(line);
        let verb = known_verb(VERBS, word);
        let verb = match verb {
            "AUTH" => match split_word(rest).0 {
                "" => "AUTH",
                mechanism => match known_verb(AUTH_VERBS, &format!("AUTH {mechanism}")) {
                    super::UNKNOWN_VERB => "AUTH",
                    known => known,
                },
            },
            other => other,
        };
        self.shared.record(verb);

        let login = matches!(verb, "USER" | "PASS" | "APOP") || verb.starts_with("AUTH ");
        if login
            && !self.logged_in
            && let Some(reply) = self.offer.demand_reply(verb)
        {
            if matches!(verb, "PASS" | "APOP") {
                self.shared.count(false);
            }
            wire.send(reply).await?;
            return Ok(Flow::Continue);
        }

        match (verb, self.logged_in) {
            ("CAPA", _) => {
                let capa = self.offer.capa();
                wire.send(&capa).await?;
            }
            ("QUIT", _) => {
                wire.send("+OK Logging out.\r\n").await?;
                return Ok(Flow::Close);
            }
            ("STLS", false) if self.offer.stls => {
                wire.send("+OK Begin TLS negotiation now.\r\n").await?;
                return Ok(Flow::StartTls);
            }
            ("STLS", _) if wire.is_tls() => wire.send("-ERR TLS is already active.\r\n").await?,
            ("USER", false) => self.user(wire, rest).await?,
            ("PASS", false) => return self.pass(wire, rest).await,
            ("APOP", false) => return self.apop(wire, rest).await,
            ("AUTH", false) if rest.is_empty() => {
                let mut list = String::from("+OK\r\n");
                for mechanism in self.offer.mechanisms() {
                    list.push_str(mechanism);
                    list.push_str("\r\n");
                }
                list.push_str(".\r\n");
                wire.send(&list).await?;
            }
            (verb, false) if verb.starts_with("AUTH") => return self.auth(wire, rest).await,
            ("NOOP" | "RSET", true) => wire.send("+OK\r\n").await?,
            ("STAT", true) => wire.send("+OK 0 0\r\n").await?,
            ("LIST", true) => wire.send("+OK 0 messages:\r\n.\r\n").await?,
            ("UIDL", true) => wire.send("+OK\r\n.\r\n").await?,
            ("RETR" | "TOP" | "DELE", true) => wire.send("-ERR There's no message 1.\r\n").await?,
            (verb, true)
                if matches!(verb, "USER" | "PASS" | "APOP") || verb.starts_with("AUTH") =>
            {
                wire.send("-ERR Already logged in.\r\n").await?;
            }
            _ => return self.bad_command(wire, NOT_LOGGED_IN).await,
        }
        Ok(Flow::Continue)
    }

    async fn bad_command(&mut self, wire: &mut Wire, reply: &str) -> io::Result<Flow> {
        self.bad_commands += 1;
        if self.bad_commands >= MAX_BAD_COMMANDS {
            wire.send("-ERR Too many bad commands.\r\n").await?;
            return Ok(Flow::Close);
        }
        wire.send(reply).await?;
        Ok(Flow::Continue)
    }

    async fn user(&mut self, wire: &mut Wire, name: &str) -> io::Result<()> {
        if !self.offer.user {
            let reply = if self.shared.spec.behavior == Behavior::LoginDisabled {
                PLAINTEXT_DISALLOWED
            } else {
                "-ERR [AUTH] USER/PASS is not enabled on this server.\r\n"
            };
            return wire.send(reply).await;
        }
        if name.is_empty() {
            return wire.send("-ERR USER: Missing argument.\r\n").await;
        }
        self.user = Some(name.to_string());
        wire.send("+OK\r\n").await
    }

    async fn pass(&mut self, wire: &mut Wire, password: &str) -> io::Result<Flow> {
        if !self.offer.user {
            self.shared.count(false);
            let reply = if self.shared.spec.behavior == Behavior::LoginDisabled {
                PLAINTEXT_DISALLOWED
            } else {
                AUTH_FAILED
            };
            wire.send(reply).await?;
            return Ok(Flow::Continue);
        }
        let Some(user) = self.user.take() else {
            wire.send("-ERR No username given.\r\n").await?;
            return Ok(Flow::Continue);
        };
        let valid = self.shared.check_password(&user, password);
        self.conclude(wire, Attempt::Pass, valid).await
    }

    async fn apop(&mut self, wire: &mut Wire, args: &str) -> io::Result<Flow> {
        let Some(timestamp) = self.timestamp.clone() else {
            return self
                .bad_command(wire, "-ERR APOP is not supported.\r\n")
                .await;
        };
        let Some((user, digest)) = args.rsplit_once(' ') else {
            return self
                .bad_command(wire, "-ERR APOP: Invalid arguments.\r\n")
                .await;
        };
        let valid = self.shared.check_apop(user, &timestamp, digest);
        self.conclude(wire, Attempt::Apop, valid).await
    }

    async fn auth(&mut self, wire: &mut Wire, args: &str) -> io::Result<Flow> {
        let (mechanism, initial) = split_word(args);
        let mechanism = mechanism.to_ascii_uppercase();
        if !self.offer.accepts(&mechanism) {
            wire.send(UNSUPPORTED_MECHANISM).await?;
            return Ok(Flow::Continue);
        }
        match mechanism.as_str() {
            "CRAM-MD5" => {
                if !initial.is_empty() {
                    // CRAM-MD5 is server-first: an initial response is a protocol error.
                    wire.send("-ERR Initial response not allowed for CRAM-MD5.\r\n")
                        .await?;
                    return Ok(Flow::Continue);
                }
                let challenge = self.shared.spec.stamp();
                let prompt = format!("+ {}\r\n", sasl::encode(challenge.as_bytes()));
                let Some(answer) = self.sasl_answer(wire, &prompt).await? else {
                    return Ok(Flow::Continue);
                };
                let valid = self.shared.check_cram_md5(&challenge, &answer);
                self.conclude(wire, Attempt::CramMd5, valid).await
            }
            "PLAIN" => {
                let answer = if initial.is_empty() {
                    self.sasl_answer(wire, "+ \r\n").await?
                } else {
                    self.decode(wire, initial).await?
                };
                let Some(answer) = answer else {
                    return Ok(Flow::Continue);
                };
                let valid = self.shared.check_plain(&answer);
                self.conclude(wire, Attempt::Plain, valid).await
            }
            _ => {
                // XOAUTH2 / OAUTHBEARER.
                let answer = if initial.is_empty() {
                    self.sasl_answer(wire, "+ \r\n").await?
                } else {
                    self.decode(wire, initial).await?
                };
                let Some(answer) = answer else {
                    return Ok(Flow::Continue);
                };
                let valid = self.shared.check_oauth(&mechanism, &answer);
                if !valid && self.shared.spec.behavior == Behavior::OAuthOnly {
                    let challenge = format!("+ {}\r\n", super::oauth_error_challenge());
                    wire.send(&challenge).await?;
                    let Some(line) = wire.read_line().await? else {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    };
                    let text = String::from_utf8_lossy(&line).into_owned();
                    self.hear(&text);
                    if !super::oauth_error_answered(&mechanism, &line) {
                        self.shared.count(false);
                        wire.send("-ERR Invalid answer to the error challenge.\r\n")
                            .await?;
                        return Ok(Flow::Continue);
                    }
                }
                self.conclude(wire, Attempt::OAuth, valid).await
            }
        }
    }

    /// Sends a SASL continuation and reads the decoded answer. `None` when the client
    /// cancelled or sent bad base64; the refusal has then been sent.
    async fn sasl_answer(&mut self, wire: &mut Wire, prompt: &str) -> io::Result<Option<Vec<u8>>> {
        wire.send(prompt).await?;
        let Some(line) = wire.read_line().await? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let line = String::from_utf8_lossy(&line);
        self.hear(&line);
        self.decode(wire, &line).await
    }

    async fn decode(&mut self, wire: &mut Wire, text: &str) -> io::Result<Option<Vec<u8>>> {
        if text.trim() == "*" {
            wire.send("-ERR Authentication cancelled.\r\n").await?;
            return Ok(None);
        }
        if text.trim() == "=" {
            return Ok(Some(Vec::new()));
        }
        match sasl::decode_challenge(text) {
            Some(bytes) => Ok(Some(bytes)),
            None => {
                wire.send("-ERR Invalid base64 data in continued response.\r\n")
                    .await?;
                Ok(None)
            }
        }
    }

    async fn conclude(
        &mut self,
        wire: &mut Wire,
        attempt: Attempt,
        valid: bool,
    ) -> io::Result<Flow> {
        match self.shared.judge_after_delay(attempt, valid).await {
            Judgement::Accept => {
                self.logged_in = true;
                wire.send("+OK Logged in.\r\n").await?;
                Ok(Flow::Continue)
            }
            Judgement::Fail if self.shared.spec.behavior == Behavior::EchoRefusals => {
                let heard = std::mem::take(&mut self.heard).join(" / ");
                wire.send(&format!(
                    "-ERR [AUTH] Authentication failed; you said: {heard}\r\n"
                ))
                .await?;
                Ok(Flow::Continue)
            }
            Judgement::Fail => {
                wire.send(AUTH_FAILED).await?;
                Ok(Flow::Continue)
            }
            Judgement::FailAndClose => {
                wire.send(AUTH_FAILED).await?;
                Ok(Flow::Close)
            }
            Judgement::Busy(code) => {
                wire.send(&format!("{}\r\n", code.pop3_reply())).await?;
                Ok(Flow::Continue)
            }
        }
    }
}
