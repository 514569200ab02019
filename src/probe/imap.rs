//! The IMAP side of the ladder: greeting (OK, PREAUTH, BYE), CAPABILITY, STARTTLS, then
//! AUTHENTICATE CRAM-MD5, AUTHENTICATE PLAIN (with SASL-IR when offered) and LOGIN unless
//! LOGINDISABLED, strongest first.

use tokio::time::Instant;

use crate::proto::imap::{self, Capabilities, Code, Response, Status};
use crate::proto::sasl;
use crate::verdict::{Method, Phase, TlsMode};

use super::{Conn, Dialect, Link, ProbeError, RungEnd, Session, oauth};

/// Most untagged lines accepted while waiting for one tagged answer.
const MAX_UNTAGGED: usize = 1000;

pub(crate) struct Imap;

pub(crate) struct Caps {
    caps: Capabilities,
    /// The greeting was PREAUTH: the server logged us in without credentials.
    preauth: bool,
    next_tag: u32,
}

impl Caps {
    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("a{}", self.next_tag)
    }
}

/// A tagged completion.
#[derive(Clone)]
struct Done {
    status: Status,
    code: Option<Code>,
    text: String,
}

enum Step {
    Continue(String),
    Done(Done),
}

async fn read_response(conn: &mut Conn) -> Result<Response, ProbeError> {
    let line = conn.read_line().await?;
    imap::parse_response(&line).map_err(|e| ProbeError::Protocol(e.to_string()))
}

/// Reads until a continuation or the completion of `tag`, picking up capabilities on the way.
async fn step(
    conn: &mut Conn,
    tag: &str,
    caps: &mut Option<Capabilities>,
) -> Result<Step, ProbeError> {
    for _ in 0..MAX_UNTAGGED {
        match read_response(conn).await? {
            Response::Continuation(text) => return Ok(Step::Continue(text)),
            Response::Tagged {
                tag: t,
                status,
                code,
                text,
            } if t == tag => {
                if let Some(Code::Capability(atoms)) = &code {
                    *caps = Some(Capabilities::new(atoms.clone()));
                }
                return Ok(Step::Done(Done { status, code, text }));
            }
            Response::Tagged { tag: t, .. } => {
                return Err(ProbeError::Protocol(format!(
                    "the server answered tag {t:?} while {tag:?} was pending"
                )));
            }
            Response::Capability(atoms) => *caps = Some(Capabilities::new(atoms)),
            Response::Condition {
                status: Status::Bye,
                text,
                ..
            } => {
                return Err(ProbeError::Closed(format!("the server said BYE: {text}")));
            }
            Response::Condition { .. } | Response::Data => {}
        }
    }
    Err(ProbeError::Protocol(format!(
        "more than {MAX_UNTAGGED} untagged lines while waiting for {tag}"
    )))
}

async fn done(conn: &mut Conn, tag: &str) -> Result<Done, ProbeError> {
    let mut ignored = None;
    match step(conn, tag, &mut ignored).await? {
        Step::Done(d) => Ok(d),
        Step::Continue(_) => Err(ProbeError::Protocol(format!(
            "unexpected continuation while waiting for {tag}"
        ))),
    }
}

async fn capability(conn: &mut Conn, tag: &str) -> Result<Capabilities, ProbeError> {
    conn.send(&format!("{tag} CAPABILITY")).await?;
    let mut caps = None;
    match step(conn, tag, &mut caps).await? {
        Step::Done(Done {
            status: Status::Ok, ..
        }) => Ok(caps.unwrap_or_default()),
        Step::Done(d) => Err(ProbeError::Protocol(format!(
            "CAPABILITY failed: {}",
            d.text
        ))),
        Step::Continue(_) => Err(ProbeError::Protocol(
            "unexpected continuation after CAPABILITY".into(),
        )),
    }
}

fn said(d: &Done) -> String {
    let status = match d.status {
        Status::Ok => "OK",
        Status::No => "NO",
        Status::Bad => "BAD",
        Status::Bye => "BYE",
        Status::Preauth => "PREAUTH",
    };
    let code = match &d.code {
        None => String::new(),
        Some(Code::AuthenticationFailed) => "[AUTHENTICATIONFAILED] ".into(),
        Some(Code::AuthorizationFailed) => "[AUTHORIZATIONFAILED] ".into(),
        Some(Code::Expired) => "[EXPIRED] ".into(),
        Some(Code::PrivacyRequired) => "[PRIVACYREQUIRED] ".into(),
        Some(Code::Unavailable) => "[UNAVAILABLE] ".into(),
        Some(Code::ContactAdmin) => "[CONTACTADMIN] ".into(),
        Some(Code::ServerBug) => "[SERVERBUG] ".into(),
        Some(Code::Alert) => "[ALERT] ".into(),
        Some(Code::Capability(_)) => "[CAPABILITY ...] ".into(),
        Some(Code::Other(c)) => format!("[{c}] "),
    };
    format!("{status} {code}{}", d.text)
}

/// Reads the completion of a credential command on a connection with or without TLS.
fn judge(m: Method, d: Done, encrypted: bool) -> RungEnd {
    let text = said(&d);
    // About the connection, not the credentials: no further rung is tried on it (the next
    // might carry the password in the clear to a server that said it wants TLS).
    if imap::demands_tls(d.status, d.code.as_ref(), &d.text, encrypted) {
        return RungEnd::Failed(ProbeError::PlaintextDisallowed(format!(
            "{m}: the server takes logins only over TLS: {text}"
        )));
    }
    match (d.status, &d.code) {
        (Status::Ok, _) => RungEnd::Success,
        (Status::No, Some(Code::Unavailable)) => RungEnd::Failed(ProbeError::ServerBusy(format!(
            "{m}: the server cannot serve logins now: {text}"
        ))),
        (Status::No, Some(Code::ServerBug)) => RungEnd::Failed(ProbeError::ServerError(format!(
            "{m}: the server reports a fault: {text}"
        ))),
        (Status::No, _) => RungEnd::Rejected(ProbeError::AuthRejected(text)),
        _ => RungEnd::Failed(ProbeError::Protocol(format!(
            "{m}: the server did not accept the command: {text}"
        ))),
    }
}

/// Reads an `AUTHENTICATE` refused before any credential went out: a TLS demand (or a busy
/// or broken server) is read as such, anything else means the mechanism is not available.
fn refused_command(m: Method, d: Done, encrypted: bool) -> RungEnd {
    if d.status == Status::Ok {
        // No credential was checked: as little a login as a PREAUTH greeting.
        return RungEnd::Failed(ProbeError::Protocol(format!(
            "the server completed AUTHENTICATE {m} without taking a credential: {}",
            said(&d)
        )));
    }
    match judge(m, d.clone(), encrypted) {
        end @ RungEnd::Failed(
            ProbeError::PlaintextDisallowed(_)
            | ProbeError::ServerBusy(_)
            | ProbeError::ServerError(_),
        ) => end,
        _ => RungEnd::Failed(ProbeError::MechanismUnavailable(format!(
            "the server refused AUTHENTICATE {m}: {}",
            said(&d)
        ))),
    }
}

impl Dialect for Imap {
    type Caps = Caps;

    async fn open(&self, s: &mut Session<'_>) -> Result<Link<Caps>, ProbeError> {
        let (mut conn, mut tls) = s.connect().await?;
        let mut state = Caps {
            caps: Capabilities::default(),
            preauth: false,
            next_tag: 0,
        };
        let starttls = s.target.tls.mode == TlsMode::Starttls;
        let greeted = async {
            negotiate(s, &mut conn, &mut state).await?;
            if !starttls || state.preauth {
                return Ok(false);
            }
            if !state.caps.starttls() {
                return Err(ProbeError::Tls(
                    "tls: starttls, but the server does not advertise STARTTLS".into(),
                ));
            }
            let tag = state.tag();
            let d = s
                .timed(Phase::Tls, async {
                    conn.send(&format!("{tag} STARTTLS")).await?;
                    done(&mut conn, &tag).await
                })
                .await?;
            if d.status != Status::Ok {
                return Err(ProbeError::Tls(format!(
                    "the server refused STARTTLS: {}",
                    said(&d)
                )));
            }
            Ok(true)
        }
        .await;
        match greeted {
            Ok(false) => {}
            Ok(true) => {
                conn = s.upgrade(conn).await?;
                tls = true;
                // Capabilities from before TLS are not to be trusted.
                let tag = state.tag();
                match s.timed(Phase::Tls, capability(&mut conn, &tag)).await {
                    Ok(caps) => state.caps = caps,
                    Err(e) => return Err(s.abandon(conn, e)),
                }
            }
            Err(e) => return Err(s.abandon(conn, e)),
        }
        s.oauth_offered |= state.caps.oauth();
        Ok(Link {
            conn,
            tls,
            caps: state,
            used: false,
        })
    }

    fn plan(&self, s: &Session<'_>, link: &Link<Caps>) -> Result<Vec<Method>, ProbeError> {
        if link.caps.preauth {
            return Err(ProbeError::Preauth(preauth_detail(s.target.tls.mode)));
        }
        let caps = &link.caps.caps;
        if s.target.oauth2.is_some() {
            return oauth::plan(s.target, |m| caps.auth(m.as_str()));
        }
        // LOGINDISABLED forbids the password in the clear on this connection: AUTHENTICATE
        // PLAIN carries it as plainly as LOGIN does (base64 is no encryption).
        let cleartext_forbidden = caps.login_disabled() && !link.tls;
        let mut rungs = Vec::new();
        if caps.auth("CRAM-MD5") {
            rungs.push(Method::CramMd5);
        }
        if caps.auth("PLAIN") && !cleartext_forbidden {
            rungs.push(Method::Plain);
        }
        if !caps.login_disabled() && imap::quoted(&s.target.username).is_some() {
            rungs.push(Method::Login);
        }
        if let Some(p) = s.preferred
            && let Some(at) = rungs.iter().position(|&m| m == p)
        {
            rungs.remove(at);
            rungs.insert(0, p);
        }
        if rungs.is_empty() {
            if cleartext_forbidden {
                return Err(ProbeError::PlaintextDisallowed(
                    "the server advertises LOGINDISABLED on this unencrypted connection and no \
                     mechanism that keeps the password secret; the password was not sent"
                        .into(),
                ));
            }
            if caps.oauth() {
                return Err(ProbeError::MechanismUnavailable(
                    "the server offers only OAuth2 (XOAUTH2/OAUTHBEARER), no password login".into(),
                ));
            }
            return Err(ProbeError::MechanismUnavailable(
                "the server offers none of CRAM-MD5, PLAIN or LOGIN".into(),
            ));
        }
        Ok(rungs)
    }

    async fn attempt(&self, s: &mut Session<'_>, link: &mut Link<Caps>, m: Method) -> RungEnd {
        let user = s.target.username.clone();
        let password = s.target.password.clone();
        let tag = link.caps.tag();
        let sasl_ir = link.caps.caps.sasl_ir();
        let tls = link.tls;
        let conn = &mut link.conn;
        let mut caps_seen = None;
        match m {
            Method::CramMd5 => {
                let first = s
                    .timed(Phase::Auth, async {
                        conn.send(&format!("{tag} AUTHENTICATE CRAM-MD5")).await?;
                        step(conn, &tag, &mut caps_seen).await
                    })
                    .await;
                let challenge = match first {
                    Ok(Step::Continue(text)) => text,
                    Ok(Step::Done(d)) => return refused_command(m, d, tls),
                    Err(e) => return RungEnd::from_error(e),
                };
                let Some(challenge) = sasl::decode_challenge(&challenge) else {
                    let _ = s
                        .timed(Phase::Auth, async {
                            conn.send("*").await?;
                            done(conn, &tag).await
                        })
                        .await;
                    return RungEnd::Failed(ProbeError::Protocol(
                        "the CRAM-MD5 challenge is not valid base64".into(),
                    ));
                };
                let answer = super::cram_md5_answer(conn, &user, &password, &challenge);
                let result = s
                    .timed(Phase::Auth, async {
                        conn.send_secret(&answer).await?;
                        done(conn, &tag).await
                    })
                    .await;
                finish_rung(m, result, tls).stay_on_connection()
            }
            Method::Plain => {
                let blob = sasl::plain_response(&user, password.expose());
                conn.transcript_mut().add_secret(&blob);
                let result = s
                    .timed(Phase::Auth, async {
                        if sasl_ir {
                            conn.send(&format!("{tag} AUTHENTICATE PLAIN {blob}"))
                                .await?;
                        } else {
                            conn.send(&format!("{tag} AUTHENTICATE PLAIN")).await?;
                            match step(conn, &tag, &mut None).await? {
                                Step::Continue(_) => {}
                                Step::Done(d) => return Ok((d, false)),
                            }
                            conn.send_secret(&blob).await?;
                        }
                        Ok::<_, ProbeError>((done(conn, &tag).await?, true))
                    })
                    .await;
                // Refused before the blob went out, the password stayed home; after an error
                // it may have left.
                if !tls && !matches!(result, Ok((_, false))) {
                    s.cleartext = true;
                }
                match result {
                    Ok((d, false)) => refused_command(m, d, tls),
                    Ok((d, true)) => finish_rung(m, Ok(d), tls),
                    Err(e) => finish_rung(m, Err(e), tls),
                }
            }
            Method::Login => {
                let Some(quoted_user) = imap::quoted(&user) else {
                    return RungEnd::Failed(ProbeError::MechanismUnavailable(
                        "LOGIN cannot carry this username".into(),
                    ));
                };
                if !tls {
                    s.cleartext = true;
                }
                let result = s
                    .timed(Phase::Auth, async {
                        match imap::quoted(password.expose()) {
                            Some(quoted_password) => {
                                // The quoted form, escapes and all, and its inside, which a
                                // server may echo without the quotes.
                                let inside = &quoted_password[1..quoted_password.len() - 1];
                                conn.transcript_mut().add_secret(inside);
                                conn.transcript_mut().add_secret(&quoted_password);
                                conn.send(&format!("{tag} LOGIN {quoted_user} {quoted_password}"))
                                    .await?;
                            }
                            None => {
                                // 8-bit password: a synchronizing literal.
                                let bytes = password.expose().as_bytes();
                                conn.send(&format!(
                                    "{tag} LOGIN {quoted_user} {{{}}}",
                                    bytes.len()
                                ))
                                .await?;
                                match step(conn, &tag, &mut None).await? {
                                    Step::Continue(_) => {}
                                    Step::Done(d) => return Ok(d),
                                }
                                let mut line = bytes.to_vec();
                                line.extend_from_slice(b"\r\n");
                                conn.send_secret_bytes(&line).await?;
                            }
                        }
                        done(conn, &tag).await
                    })
                    .await;
                finish_rung(m, result, tls)
            }
            Method::Xoauth2 | Method::Oauthbearer => oauth_rung(s, link, m, tag).await,
            Method::Apop | Method::Pass => RungEnd::Failed(ProbeError::MechanismUnavailable(
                format!("{m} is not an IMAP method"),
            )),
        }
    }

    async fn goodbye(&self, link: &mut Link<Caps>, until: Instant) {
        let tag = link.caps.tag();
        let conn = &mut link.conn;
        let _ = tokio::time::timeout_at(until, async {
            conn.send(&format!("{tag} LOGOUT")).await?;
            done(conn, &tag).await
        })
        .await;
        link.close().await;
    }
}

/// How an OAuth2 `AUTHENTICATE` ended.
enum OAuthEnd {
    /// Refused before the token went out.
    Refused(Done),
    /// Completed after the token went out, with what the server's error challenge said.
    Done(Done, Option<String>),
}

/// `AUTHENTICATE XOAUTH2|OAUTHBEARER` with the token (SASL-IR when offered). A refusal comes
/// as a base64 JSON challenge, answered as the mechanism requires, then `NO`.
async fn oauth_rung(s: &mut Session<'_>, link: &mut Link<Caps>, m: Method, tag: String) -> RungEnd {
    let blob = match oauth::response_for(s, m) {
        Ok(blob) => blob,
        Err(e) => return RungEnd::Failed(e),
    };
    let sasl_ir = link.caps.caps.sasl_ir();
    let tls = link.tls;
    let conn = &mut link.conn;
    conn.transcript_mut().add_secret(&blob);
    let result = s
        .timed(Phase::Auth, async {
            if sasl_ir {
                conn.send(&format!("{tag} AUTHENTICATE {m} {blob}")).await?;
            } else {
                conn.send(&format!("{tag} AUTHENTICATE {m}")).await?;
                match step(conn, &tag, &mut None).await? {
                    Step::Continue(_) => {}
                    Step::Done(d) => return Ok(OAuthEnd::Refused(d)),
                }
                conn.send_secret(&blob).await?;
            }
            match step(conn, &tag, &mut None).await? {
                Step::Done(d) => Ok(OAuthEnd::Done(d, None)),
                Step::Continue(challenge) => {
                    let said = oauth::challenge_said(&challenge);
                    conn.note(&said);
                    conn.send(oauth::abort_line(m)).await?;
                    Ok::<_, ProbeError>(OAuthEnd::Done(done(conn, &tag).await?, Some(said)))
                }
            }
        })
        .await;
    // Refused before the token went out, it stayed home; after an error it may have left.
    if !tls && !matches!(result, Ok(OAuthEnd::Refused(_))) {
        s.cleartext = true;
    }
    match result {
        Ok(OAuthEnd::Refused(d)) => refused_command(m, d, tls),
        Ok(OAuthEnd::Done(d, said)) => match judge(m, d, tls) {
            RungEnd::Rejected(ProbeError::AuthRejected(text)) => {
                let text = match said {
                    Some(said) => format!("{m}: the server refused the token: {text} ({said})"),
                    None => format!("{m}: the server refused the token: {text}"),
                };
                RungEnd::Rejected(ProbeError::TokenRejected(text))
            }
            other => other,
        },
        Err(e) => RungEnd::from_error(e),
    }
}

/// Why a `PREAUTH` greeting is no login: nothing checked the credentials, and before
/// STARTTLS it is how a man in the middle keeps the session unencrypted.
fn preauth_detail(mode: TlsMode) -> String {
    let why = match mode {
        TlsMode::Starttls => {
            "with tls: starttls this is the STARTTLS-bypass attack (a PREAUTH greeting \
             before STARTTLS keeps the session unencrypted, e.g. a man in the middle), so \
             STARTTLS was not sent and the session was not used"
        }
        TlsMode::Implicit | TlsMode::None => {
            "the server logs every connection in (e.g. an imapd run over ssh or behind a \
             trusted-network rule), so this probe cannot tell whether the password works"
        }
    };
    format!(
        "the server greeted with PREAUTH: no credentials were checked; {why}; the password \
         was not sent"
    )
}

/// PLAIN with SASL-IR and LOGIN carry the credentials in their first line, so a hang-up
/// there is as likely the server closing after the previous rejection as an answer to this
/// one: such a rung may be tried once more on a fresh connection.
fn finish_rung(m: Method, result: Result<Done, ProbeError>, encrypted: bool) -> RungEnd {
    match result {
        Ok(d) => judge(m, d, encrypted),
        Err(e) => RungEnd::from_error(e),
    }
}

/// Reads the greeting and, if it did not carry them, asks for the capabilities.
async fn negotiate(
    s: &mut Session<'_>,
    conn: &mut Conn,
    state: &mut Caps,
) -> Result<(), ProbeError> {
    let greeting = s.timed(Phase::Greeting, read_response(conn)).await?;
    let caps = match greeting {
        Response::Condition {
            status: Status::Ok,
            code,
            ..
        } => match code {
            Some(Code::Capability(atoms)) => Some(Capabilities::new(atoms)),
            _ => None,
        },
        Response::Condition {
            status: Status::Preauth,
            ..
        } => {
            state.preauth = true;
            return Ok(());
        }
        Response::Condition {
            status: Status::Bye,
            text,
            ..
        } => {
            return Err(ProbeError::ServerBusy(format!(
                "the server refused the connection: BYE {text}"
            )));
        }
        other => {
            return Err(ProbeError::Protocol(format!(
                "not an IMAP greeting: {other:?}"
            )));
        }
    };
    state.caps = match caps {
        Some(caps) if !caps.is_empty() => caps,
        _ => {
            let tag = state.tag();
            s.timed(Phase::Greeting, capability(conn, &tag)).await?
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Reason;

    fn done(status: Status, code: Option<Code>, text: &str) -> Done {
        Done {
            status,
            code,
            text: text.into(),
        }
    }

    #[test]
    fn an_authenticate_refused_before_any_credential() {
        let reason = |end: RungEnd| match end {
            RungEnd::Failed(e) => e.reason(),
            _ => panic!("a refused command ends the ladder"),
        };
        let refused = |d, encrypted| reason(refused_command(Method::CramMd5, d, encrypted));
        let starttls = || done(Status::No, None, "STARTTLS required");
        assert_eq!(refused(starttls(), false), Reason::PlaintextDisallowed);
        assert_eq!(refused(starttls(), true), Reason::MechanismUnavailable);
        let unsupported = done(Status::No, None, "Unsupported authentication mechanism.");
        assert_eq!(refused(unsupported, false), Reason::MechanismUnavailable);
        let busy = done(Status::No, Some(Code::Unavailable), "later");
        assert_eq!(refused(busy, true), Reason::ServerBusy);
        // Completed without a credential: no login, whatever the server says.
        assert_eq!(
            refused(done(Status::Ok, None, "ok"), true),
            Reason::Protocol
        );
    }
}
