//! The POP3 side of the ladder: greeting and APOP timestamp, CAPA, STLS, then APOP,
//! AUTH CRAM-MD5 and USER/PASS. Nothing but CAPA and STLS is sent before a login: a NOOP there
//! is an error that some clients take for a dead connection.

use tokio::time::Instant;

use crate::conn::DEFAULT_MAX_RESPONSE;
use crate::proto::pop3::{self, Capabilities, Refusal, Reply};
use crate::proto::sasl;
use crate::verdict::{AuthMode, Method, Phase, TlsMode};

use super::{Conn, Dialect, Link, ProbeError, RungEnd, Session};

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
        if starttls {
            conn = s.upgrade(conn).await?;
            tls = true;
            // Capabilities from before TLS are not to be trusted.
            capa_found = match s.timed(Phase::Tls, capa(&mut conn)).await {
                Ok(caps) => caps,
                Err(e) => return Err(s.abandon(conn, e)),
            };
        }
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
        let cram_offered = caps.capa.as_ref().map(|c| c.has_sasl("CRAM-MD5"));
        let user_offered = caps.capa.as_ref().map(|c| c.user);
        match s.target.auth_mode {
            AuthMode::Apop if caps.timestamp.is_none() => Err(ProbeError::MechanismUnavailable(
                "auth_mode APOP needs a timestamp <...@...> in the greeting, and this server sent none"
                    .into(),
            )),
            AuthMode::CramMd5 if cram_offered == Some(false) => {
                Err(ProbeError::MechanismUnavailable(
                    "auth_mode CRAM-MD5, but the server's CAPA does not list SASL CRAM-MD5".into(),
                ))
            }
            AuthMode::Apop | AuthMode::CramMd5 | AuthMode::Pass => {
                Ok(vec![s.target.auth_mode.pinned().expect("pinned mode")])
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
                    if !link.tls && user_offered == Some(false) {
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
                let sent = s
                    .timed(Phase::Auth, async {
                        conn.send(&format!("APOP {user} {digest}")).await?;
                        read_reply(conn).await
                    })
                    .await;
                judge(m, sent)
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
                        Ok(reply) if !reply.ok => {
                            RungEnd::Failed(ProbeError::MechanismUnavailable(format!(
                                "the server refused AUTH CRAM-MD5: -ERR {}",
                                reply.text
                            )))
                        }
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
                let answer = sasl::cram_md5_response(&user, password.expose(), &challenge);
                let sent = s
                    .timed(Phase::Auth, async {
                        conn.send_secret(&answer).await?;
                        read_reply(conn).await
                    })
                    .await;
                judge(m, sent).stay_on_connection()
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
                        if reply.says_plaintext_disallowed() {
                            return RungEnd::Rejected(ProbeError::PlaintextDisallowed(format!(
                                "the server refuses USER/PASS on this unencrypted connection: -ERR {}{}; the password was not sent",
                                code_prefix(&reply),
                                reply.text
                            )));
                        }
                        return judge(m, Ok(reply));
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
                judge(m, sent).stay_on_connection()
            }
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
        conn.shutdown().await;
    }
}

fn code_prefix(reply: &Reply) -> String {
    reply
        .code
        .as_ref()
        .map(|c| format!("[{c}] "))
        .unwrap_or_default()
}

/// Reads a reply to a credential command.
fn judge(m: Method, reply: Result<Reply, ProbeError>) -> RungEnd {
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return RungEnd::from_error(e),
    };
    if reply.ok {
        return RungEnd::Success;
    }
    let said = format!("-ERR {}{}", code_prefix(&reply), reply.text);
    match reply.refusal() {
        Refusal::Credentials => RungEnd::Rejected(ProbeError::AuthRejected(said)),
        Refusal::Busy => RungEnd::Failed(ProbeError::ServerBusy(format!(
            "{m}: the server is busy or the mailbox is locked: {said}"
        ))),
        Refusal::ServerFault => RungEnd::Failed(ProbeError::ServerError(format!(
            "{m}: the server reports a permanent fault: {said}"
        ))),
    }
}
