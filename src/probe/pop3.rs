//! The POP3 side of the ladder: greeting and APOP timestamp, CAPA, STLS, then APOP,
//! AUTH CRAM-MD5 and USER/PASS. Nothing but CAPA and STLS is sent before a login: a NOOP there
//! is an error that some clients take for a dead connection.

use tokio::time::Instant;

use crate::conn::DEFAULT_MAX_RESPONSE;
use crate::proto::pop3::{self, Capabilities, Refusal, Reply};
use crate::proto::sasl;
use crate::verdict::{AuthMode, Method, Phase, TlsMode};

use super::{Conn, Dialect, Link, ProbeError, RungEnd, Session, oauth};

/// Longest AUTH command that may carry its initial response (RFC 5034 section 4: 255 octets
/// without the CRLF); a longer one (most OAuth2 tokens) goes after an empty challenge.
const MAX_AUTH_LINE: usize = 255;

pub(crate) struct Pop3;

pub(crate) struct Caps {
    /// The greeting's APOP timestamp.
    timestamp: Option<String>,
    /// `None` when the server does not know CAPA.
    capa: Option<Capabilities>,
}

async fn read_reply(conn: &mut Conn) -> Result<Reply, ProbeError> {
    let line = conn.read_line().await?;
    pop3::parse_reply(&line).map_err(|e| ProbeError::Protocol(e.to_string()))
}

async fn capa(conn: &mut Conn) -> Result<Option<Capabilities>, ProbeError> {
    conn.send("CAPA").await?;
    let reply = read_reply(conn).await?;
    if !reply.ok {
        return Ok(None);
    }
    let lines = conn.read_multiline(DEFAULT_MAX_RESPONSE).await?;
    Ok(Some(Capabilities::parse(&lines)))
}

impl Dialect for Pop3 {
    type Caps = Caps;

    async fn open(&self, s: &mut Session<'_>) -> Result<Link<Caps>, ProbeError> {
        let (mut conn, mut tls) = s.connect().await?;
        let starttls = s.target.tls.mode == TlsMode::Starttls;
        let greeted = async {
            let greeting = s.timed(Phase::Greeting, read_reply(&mut conn)).await?;
            if !greeting.ok {
                return Err(ProbeError::ServerBusy(format!(
                    "the server refused the connection: -ERR {}",
                    greeting.text
                )));
            }
            let timestamp = pop3::apop_timestamp(&greeting.text).map(str::to_string);
            let capa = s.timed(Phase::Greeting, capa(&mut conn)).await?;
            if starttls {
                let reply = s
                    .timed(Phase::Tls, async {
                        conn.send("STLS").await?;
                        read_reply(&mut conn).await
                    })
                    .await?;
                if !reply.ok {
                    return Err(ProbeError::Tls(format!(
                        "the server refused STLS: -ERR {}",
                        reply.text
                    )));
                }
            }
            Ok((timestamp, capa))
        }
        .await;
        let (timestamp, mut capa_found) = match greeted {
            Ok(found) => found,
            Err(e) => return Err(s.abandon(conn, e)),
        };
        let mut timestamp = timestamp;
        if starttls {
            // POP3 sends no greeting after STLS, so no timestamp was read over TLS; the one
            // from before may have been chosen by whoever sat in between.
            if timestamp.take().is_some() {
                conn.note("the APOP timestamp of the greeting before STLS is not trusted; no APOP");
            }
            conn = s.upgrade(conn).await?;
            tls = true;
            // Capabilities from before TLS are not to be trusted.
            capa_found = match s.timed(Phase::Tls, capa(&mut conn)).await {
                Ok(caps) => caps,
                Err(e) => return Err(s.abandon(conn, e)),
            };
        }
        s.oauth_offered |= capa_found
            .as_ref()
            .is_some_and(|c| c.has_sasl("XOAUTH2") || c.has_sasl("OAUTHBEARER"));
        Ok(Link {
            conn,
            tls,
            caps: Caps {
                timestamp,
                capa: capa_found,
            },
            used: false,
        })
    }

    fn plan(&self, s: &Session<'_>, link: &Link<Caps>) -> Result<Vec<Method>, ProbeError> {
        let caps = &link.caps;
        let capa = caps.capa.as_ref();
        let cram_offered = capa.map(|c| c.has_sasl("CRAM-MD5"));
        let user_offered = capa.map(|c| c.user);
        let plain = !link.tls;
        // Capabilities decide first: nothing is sent to a server that said it will refuse it.
        if plain && capa.is_some_and(|c| c.tls_required) {
            return Err(ProbeError::PlaintextDisallowed(
                "the server's CAPA lists XTLSREQUIRED: it takes logins only over TLS, and this \
                 connection is unencrypted; nothing was sent"
                    .into(),
            ));
        }
        if s.target.oauth2.is_some() {
            return oauth::plan(s.target, |m| capa.is_some_and(|c| c.has_sasl(m.as_str())));
        }
        match s.target.auth_mode {
            AuthMode::Apop if caps.timestamp.is_none() => {
                Err(ProbeError::MechanismUnavailable(match s.target.tls.mode {
                    TlsMode::Starttls => "auth_mode APOP with tls: starttls: POP3 sends no \
                        greeting after STLS, so there is no APOP timestamp read over TLS, and \
                        the one from before STLS is not trusted (whoever sat in between could \
                        have chosen it); APOP needs tls: implicit"
                        .into(),
                    _ => "auth_mode APOP needs a timestamp <...@...> in the greeting, and this \
                          server sent none"
                        .into(),
                }))
            }
            AuthMode::Pass if plain && capa.is_some_and(|c| c.stls && !c.user) => {
                Err(ProbeError::PlaintextDisallowed(
                    "the server's CAPA offers STLS but not USER on this unencrypted connection: \
                     it takes USER/PASS only over TLS; USER was not sent"
                        .into(),
                ))
            }
            // A pinned mode is what the operator asked for: tried even when CAPA does not list
            // it (Courier takes an unadvertised AUTH CRAM-MD5); only the server's refusal of
            // the command makes it unavailable.
            AuthMode::Apop | AuthMode::CramMd5 | AuthMode::Pass => {
                Ok(vec![s.target.auth_mode.pinned().expect("pinned mode")])
            }
            AuthMode::Xoauth2 | AuthMode::Oauthbearer => {
                Err(ProbeError::MechanismUnavailable(format!(
                    "auth_mode {} needs OAuth2 credentials, and this account has a password only",
                    s.target.auth_mode
                )))
            }
            AuthMode::Best => {
                let mut rungs = Vec::new();
                if caps.timestamp.is_some() {
                    rungs.push(Method::Apop);
                }
                if cram_offered == Some(true) {
                    rungs.push(Method::CramMd5);
                }
                if user_offered != Some(false) {
                    rungs.push(Method::Pass);
                }
                if let Some(p) = s.preferred
                    && let Some(at) = rungs.iter().position(|&m| m == p)
                {
                    rungs.remove(at);
                    rungs.insert(0, p);
                }
                if rungs.is_empty() {
                    // Servers drop USER from CAPA when they refuse plaintext logins on an
                    // unencrypted connection (Dovecot's disable_plaintext_auth).
                    if plain && user_offered == Some(false) {
                        return Err(ProbeError::PlaintextDisallowed(
                            "the server offers no login method on this unencrypted connection \
                             (CAPA does not list USER); the password was not sent"
                                .into(),
                        ));
                    }
                    return Err(ProbeError::MechanismUnavailable(
                        "the server offers none of APOP, CRAM-MD5 or USER/PASS".into(),
                    ));
                }
                Ok(rungs)
            }
        }
    }

    async fn attempt(&self, s: &mut Session<'_>, link: &mut Link<Caps>, m: Method) -> RungEnd {
        let user = s.target.username.clone();
        let password = s.target.password.clone();
        let conn = &mut link.conn;
        match m {
            Method::Apop => {
                let Some(stamp) = link.caps.timestamp.clone() else {
                    return RungEnd::Failed(ProbeError::MechanismUnavailable(
                        "no APOP timestamp".into(),
                    ));
                };
                let digest = sasl::apop_digest(&stamp, password.expose());
                conn.transcript_mut().add_digest(&digest);
                let sent = s
                    .timed(Phase::Auth, async {
                        conn.send(&format!("APOP {user} {digest}")).await?;
                        read_reply(conn).await
                    })
                    .await;
                judge(m, sent, link.tls)
            }
            Method::CramMd5 => {
                let first = s
                    .timed(Phase::Auth, async {
                        conn.send("AUTH CRAM-MD5").await?;
                        Ok::<_, ProbeError>(conn.read_line().await?)
                    })
                    .await;
                let line = match first {
                    Ok(line) => line,
                    Err(e) => return RungEnd::from_error(e),
                };
                let Some(challenge) = pop3::continuation(&line) else {
                    return match pop3::parse_reply(&line) {
                        // Refused before any challenge: the command, not a credential.
                        Ok(reply) if !reply.ok => match reply.refusal(link.tls) {
                            Refusal::Credentials => {
                                RungEnd::Failed(ProbeError::MechanismUnavailable(format!(
                                    "the server refused AUTH CRAM-MD5: -ERR {}{}",
                                    code_prefix(&reply),
                                    reply.text
                                )))
                            }
                            _ => judge(m, Ok(reply), link.tls),
                        },
                        _ => RungEnd::Failed(ProbeError::Protocol(format!(
                            "expected a CRAM-MD5 challenge, got {line:?}"
                        ))),
                    };
                };
                let Some(challenge) = sasl::decode_challenge(challenge) else {
                    // Cancel the exchange (RFC 5034) so the server is left in a sane state.
                    let _ = s
                        .timed(Phase::Auth, async {
                            conn.send("*").await?;
                            read_reply(conn).await
                        })
                        .await;
                    return RungEnd::Failed(ProbeError::Protocol(
                        "the CRAM-MD5 challenge is not valid base64".into(),
                    ));
                };
                let answer = super::cram_md5_answer(conn, &user, &password, &challenge);
                let sent = s
                    .timed(Phase::Auth, async {
                        conn.send_secret(&answer).await?;
                        read_reply(conn).await
                    })
                    .await;
                judge(m, sent, link.tls).stay_on_connection()
            }
            Method::Pass => {
                let tls = link.tls;
                let told = s
                    .timed(Phase::Auth, async {
                        conn.send(&format!("USER {user}")).await?;
                        read_reply(conn).await
                    })
                    .await;
                match told {
                    Ok(reply) if !reply.ok => {
                        return match judge(m, Ok(reply), tls) {
                            RungEnd::Failed(ProbeError::PlaintextDisallowed(d)) => {
                                RungEnd::Failed(ProbeError::PlaintextDisallowed(format!(
                                    "{d}; USER was refused, the password was not sent"
                                )))
                            }
                            other => other,
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return RungEnd::from_error(e),
                }
                if !tls {
                    s.cleartext = true;
                }
                let sent = s
                    .timed(Phase::Auth, async {
                        conn.send(&format!("PASS {}", password.expose())).await?;
                        read_reply(conn).await
                    })
                    .await;
                judge(m, sent, tls).stay_on_connection()
            }
            Method::Xoauth2 | Method::Oauthbearer => oauth_rung(s, link, m).await,
            Method::Plain | Method::Login => RungEnd::Failed(ProbeError::MechanismUnavailable(
                format!("{m} is not a POP3 method"),
            )),
        }
    }

    async fn goodbye(&self, link: &mut Link<Caps>, until: Instant) {
        let conn = &mut link.conn;
        let _ = tokio::time::timeout_at(until, async {
            conn.send("QUIT").await?;
            read_reply(conn).await
        })
        .await;
        link.close().await;
    }
}

/// How an OAuth2 `AUTH` ended.
enum OAuthEnd {
    /// Refused before the token went out.
    Refused(Reply),
    /// Answered after the token went out, with what the server's error challenge said.
    Done(Reply, Option<String>),
}

/// `AUTH XOAUTH2|OAUTHBEARER` with the token as initial response (RFC 5034), or after an
/// empty challenge when the command would be too long or the mechanism is not listed. A refusal comes as a base64 JSON
/// challenge, answered as the mechanism requires, then `-ERR`.
async fn oauth_rung(s: &mut Session<'_>, link: &mut Link<Caps>, m: Method) -> RungEnd {
    let blob = match oauth::response_for(s, m) {
        Ok(blob) => blob,
        Err(e) => return RungEnd::Failed(e),
    };
    let tls = link.tls;
    let conn = &mut link.conn;
    conn.transcript_mut().add_secret(&blob);
    let command = format!("AUTH {m} {blob}");
    // A pinned mechanism the server does not list may be refused as a command: asked for
    // without the token, the refusal comes before the token goes out.
    let listed = link
        .caps
        .capa
        .as_ref()
        .is_some_and(|c| c.has_sasl(m.as_str()));
    let result = s
        .timed(Phase::Auth, async {
            if listed && command.len() <= MAX_AUTH_LINE {
                conn.send(&command).await?;
            } else {
                conn.send(&format!("AUTH {m}")).await?;
                let line = conn.read_line().await?;
                if pop3::continuation(&line).is_none() {
                    return match pop3::parse_reply(&line) {
                        Ok(reply) => Ok(OAuthEnd::Refused(reply)),
                        Err(e) => Err(ProbeError::Protocol(e.to_string())),
                    };
                }
                conn.send_secret(&blob).await?;
            }
            let line = conn.read_line().await?;
            match pop3::continuation(&line) {
                None => Ok(OAuthEnd::Done(parse(&line)?, None)),
                Some(challenge) => {
                    let said = oauth::challenge_said(challenge);
                    conn.note(&said);
                    conn.send(oauth::abort_line(m)).await?;
                    Ok::<_, ProbeError>(OAuthEnd::Done(read_reply(conn).await?, Some(said)))
                }
            }
        })
        .await;
    // Refused before the token went out, it stayed home; after an error it may have left.
    if !tls && !matches!(result, Ok(OAuthEnd::Refused(_))) {
        s.cleartext = true;
    }
    match result {
        Ok(OAuthEnd::Refused(reply)) if !reply.ok => match reply.refusal(tls) {
            Refusal::Credentials => RungEnd::Failed(ProbeError::MechanismUnavailable(format!(
                "the server refused AUTH {m}: -ERR {}{}",
                code_prefix(&reply),
                reply.text
            ))),
            _ => judge(m, Ok(reply), tls),
        },
        Ok(OAuthEnd::Refused(_)) => RungEnd::Failed(ProbeError::Protocol(format!(
            "the server completed AUTH {m} without taking a credential"
        ))),
        Ok(OAuthEnd::Done(reply, said)) => match judge(m, Ok(reply), tls) {
            RungEnd::Rejected(ProbeError::AuthRejected(text)) => {
                let text = match said {
                    Some(said) => format!("{m}: the server refused the token: {text} ({said})"),
                    None => format!("{m}: the server refused the token: {text}"),
                };
                RungEnd::Rejected(ProbeError::TokenRejected(text))
            }
            other => other.stay_on_connection(),
        },
        Err(e) => RungEnd::from_error(e).stay_on_connection(),
    }
}

fn parse(line: &str) -> Result<Reply, ProbeError> {
    pop3::parse_reply(line).map_err(|e| ProbeError::Protocol(e.to_string()))
}

fn code_prefix(reply: &Reply) -> String {
    reply
        .code
        .as_ref()
        .map(|c| format!("[{c}] "))
        .unwrap_or_default()
}

/// Reads a reply to a credential command (or to USER) on a connection with or without TLS.
fn judge(m: Method, reply: Result<Reply, ProbeError>, encrypted: bool) -> RungEnd {
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return RungEnd::from_error(e),
    };
    if reply.ok {
        return RungEnd::Success;
    }
    let said = format!("-ERR {}{}", code_prefix(&reply), reply.text);
    match reply.refusal(encrypted) {
        Refusal::Credentials => RungEnd::Rejected(ProbeError::AuthRejected(said)),
        // About the connection, not the credentials: no further rung is tried on it (the
        // next might carry the password in the clear to a server that said it wants TLS).
        Refusal::TlsRequired => RungEnd::Failed(ProbeError::PlaintextDisallowed(format!(
            "{m}: the server takes logins only over TLS and this connection is unencrypted: \
             {said}"
        ))),
        Refusal::Busy => RungEnd::Failed(ProbeError::ServerBusy(format!(
            "{m}: the server is busy or the mailbox is locked: {said}"
        ))),
        Refusal::ServerFault => RungEnd::Failed(ProbeError::ServerError(format!(
            "{m}: the server reports a permanent fault: {said}"
        ))),
    }
}
