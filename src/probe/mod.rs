//! Logging in to one mailbox and coming back with a [`Verdict`].
//!
//! A probe opens a connection (DNS, TCP, TLS), reads the greeting and capabilities, then walks
//! a ladder of methods: the pinned one, or for BEST every advertised one, strongest first,
//! starting with the method that worked last time. A rejected rung moves on to the next on
//! the same connection while the server keeps it open, and on a fresh one when it hangs up.
//! Every step runs under the probe's deadline.
//!
//! An account with OAuth2 credentials takes another path ([`oauth`]): a token first, then the
//! strongest OAuth2 mechanism the server offers, never a password.

mod advice;
mod imap;
mod oauth;
mod pop3;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::{ConnError, Connection};
use crate::proto::sasl;
use crate::secret::Password;
use crate::tls::{self, Connectors, TlsError};
use crate::token::{AccessToken, OAuth2Login};
use crate::transcript::Transcript;
use crate::verdict::{
    Attempt, AttemptResult, AuthMode, Method, OAUTH2_METHODS, Phase, Phases, Protocol, Reason,
    TlsMode, Verdict,
};

/// Default deadline for a whole probe. Dovecot delays each failed login by up to 15 s, and a
/// BEST ladder may meet two such failures before the method that works.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a polite QUIT/LOGOUT may take once the verdict is known.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// A small set of methods, e.g. the rungs an account had rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MethodSet(u8);

impl MethodSet {
    pub const EMPTY: MethodSet = MethodSet(0);

    fn bit(m: Method) -> u8 {
        1 << Method::ALL.iter().position(|&x| x == m).unwrap_or(0)
    }

    pub fn contains(self, m: Method) -> bool {
        self.0 & Self::bit(m) != 0
    }

    pub fn insert(&mut self, m: Method) {
        self.0 |= Self::bit(m);
    }

    pub fn remove(&mut self, m: Method) {
        self.0 &= !Self::bit(m);
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Method::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Method> {
        Method::ALL.into_iter().filter(move |&m| self.contains(m))
    }
}

impl FromIterator<Method> for MethodSet {
    fn from_iter<I: IntoIterator<Item = Method>>(iter: I) -> Self {
        let mut set = MethodSet::EMPTY;
        for m in iter {
            set.insert(m);
        }
        set
    }
}

/// How many rungs a probe has started so far, readable from outside while it runs: a probe
/// dropped under way (a reload cancelled it) leaves no verdict, and what it may have cost the
/// server's failed-login budget is read from here instead.
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<AtomicU32>);

impl Meter {
    /// Rungs started: each sent, or was about to send, a credential.
    pub fn rungs_started(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }

    pub(crate) fn start_rung(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// How a probe walks its ladder, decided from the account's history and the server's
/// failure budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps {
    /// The method that worked last time: tried first.
    pub preferred: Option<Method>,
    /// Rungs rejected by earlier probes: tried only after every other rung, so a server that
    /// delays each rejection cannot keep the ladder from the rung that works.
    pub last: MethodSet,
    /// How many rungs besides a first `preferred` one the probe may try (each may cost a
    /// failed login); `None`: every rung.
    pub others: Option<usize>,
}

impl Steps {
    /// The whole ladder, `preferred` first.
    pub fn preferring(preferred: Option<Method>) -> Steps {
        Steps {
            preferred,
            ..Steps::default()
        }
    }
}

/// TLS settings of one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// Verify the server certificate and host name (the default).
    pub verify: bool,
    /// An extra PEM CA certificate to trust, besides the system roots.
    pub ca_file: Option<PathBuf>,
}

/// Everything needed to log in to one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub tls: TlsSettings,
    pub username: String,
    pub password: Password,
    /// POP3 only; IMAP picks its mechanism itself and ignores this.
    pub auth_mode: AuthMode,
    /// Deadline for the whole probe; each phase is also bounded by it.
    pub timeout: Duration,
    /// Log in with OAuth2 (XOAUTH2/OAUTHBEARER) and this token source instead of the password.
    /// The configuration fills it for accounts with OAuth2 credentials.
    pub oauth2: Option<OAuth2Login>,
}

impl Target {
    /// The methods this account can log in with, strongest first: the OAuth2 ones for an
    /// account with a token source, the protocol's password methods otherwise.
    pub fn methods(&self) -> &'static [Method] {
        if self.oauth2.is_some() {
            &OAUTH2_METHODS
        } else {
            self.protocol.methods()
        }
    }

    /// `host:port` as shown to operators.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a probe did not log in. The variants map to the fixed `reason` label in
/// [`ProbeError::reason`]; the text is for people and never becomes a label.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {host}: {detail}")]
    Dns { host: String, detail: String },
    #[error("cannot connect to {server}: {detail}")]
    Connect { server: String, detail: String },
    #[error("{0}")]
    Tls(String),
    #[error("no answer within the probe timeout during the {0} phase")]
    Timeout(Phase),
    #[error("{0}")]
    Protocol(String),
    /// The server hung up (or reset) the connection mid-dialogue.
    #[error("{0}")]
    Closed(String),
    #[error("{0}")]
    ServerBusy(String),
    #[error("{0}")]
    ServerError(String),
    #[error("{0}")]
    AuthRejected(String),
    #[error("{0}")]
    MechanismUnavailable(String),
    #[error("{0}")]
    PlaintextDisallowed(String),
    /// An IMAP `PREAUTH` greeting: logged in without any credential being checked.
    #[error("{0}")]
    Preauth(String),
    /// The server refused the OAuth2 token.
    #[error("{0}")]
    TokenRejected(String),
    /// No OAuth2 token could be had; no login was tried.
    #[error("{0}")]
    TokenUnavailable(String),
}

impl ProbeError {
    /// The one place errors become `reason` label values.
    pub fn reason(&self) -> Reason {
        match self {
            ProbeError::Dns { .. } => Reason::Dns,
            ProbeError::Connect { .. } => Reason::Connect,
            ProbeError::Tls(_) => Reason::Tls,
            ProbeError::Timeout(_) => Reason::Timeout,
            ProbeError::Protocol(_) | ProbeError::Closed(_) => Reason::Protocol,
            ProbeError::ServerBusy(_) => Reason::ServerBusy,
            ProbeError::ServerError(_) => Reason::ServerError,
            ProbeError::AuthRejected(_) => Reason::AuthRejected,
            ProbeError::MechanismUnavailable(_) => Reason::MechanismUnavailable,
            ProbeError::PlaintextDisallowed(_) => Reason::PlaintextDisallowed,
            ProbeError::Preauth(_) => Reason::Preauth,
            ProbeError::TokenRejected(_) => Reason::TokenRejected,
            ProbeError::TokenUnavailable(_) => Reason::TokenUnavailable,
        }
    }
}

impl From<ConnError> for ProbeError {
    fn from(e: ConnError) -> Self {
        match e {
            ConnError::BufferedBeforeUpgrade(_) => ProbeError::Tls(e.to_string()),
            ConnError::Closed => ProbeError::Closed(e.to_string()),
            ConnError::Io(ref io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                ProbeError::Closed(format!("the server closed the connection ({io})"))
            }
            other => ProbeError::Protocol(other.to_string()),
        }
    }
}

impl RungEnd {
    /// A broken connection before any answer may only mean the server hung up after an earlier
    /// rejection; a timeout or garbage is a failure.
    pub fn from_error(e: ProbeError) -> RungEnd {
        match e {
            ProbeError::Closed(_) => RungEnd::Lost(e),
            other => RungEnd::Failed(other),
        }
    }

    /// Once the credentials went out, a hang-up is the server's answer, not a reason to retry.
    pub fn stay_on_connection(self) -> RungEnd {
        match self {
            RungEnd::Lost(e) => RungEnd::Failed(e),
            other => other,
        }
    }
}

impl From<TlsError> for ProbeError {
    fn from(e: TlsError) -> Self {
        ProbeError::Tls(e.to_string())
    }
}

/// A byte stream of any kind: TCP, TLS over TCP, or a test double.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) type Conn = Connection<Box<dyn Stream>>;

/// An open, greeted connection and what the server advertised on it.
pub(crate) struct Link<C> {
    pub conn: Conn,
    /// TLS is active on this connection.
    pub tls: bool,
    pub caps: C,
    /// A rung has been tried on this connection already.
    pub used: bool,
}

impl<C> Link<C> {
    /// Ends the connection once the goodbye is done. Over TLS that is the close_notify; a
    /// plain socket sends its FIN when it is dropped, and a shutdown before that would only
    /// be one more system call per probe.
    pub async fn close(&mut self) {
        if self.tls {
            self.conn.shutdown().await;
        }
    }
}

/// The end of one rung.
pub(crate) enum RungEnd {
    Success,
    /// The server refused the login; the next rung may still work.
    Rejected(ProbeError),
    /// The rung ended without a verdict on the credentials; the ladder stops.
    Failed(ProbeError),
    /// The connection was gone before the server answered; worth a fresh connection when an
    /// earlier rung on it was rejected (some servers hang up after a failed login).
    Lost(ProbeError),
}

/// A protocol's side of the ladder.
pub(crate) trait Dialect {
    type Caps;

    /// Connects, greets, negotiates TLS and reads the capabilities.
    async fn open(&self, s: &mut Session<'_>) -> Result<Link<Self::Caps>, ProbeError>;

    /// The rungs to try, in order; an error when none can be tried.
    fn plan(&self, s: &Session<'_>, link: &Link<Self::Caps>) -> Result<Vec<Method>, ProbeError>;

    async fn attempt(&self, s: &mut Session<'_>, link: &mut Link<Self::Caps>, m: Method)
    -> RungEnd;

    /// QUIT or LOGOUT, politely and briefly: the answer is awaited until `until` at most.
    async fn goodbye(&self, link: &mut Link<Self::Caps>, until: Instant);
}

/// The state of one probe across its connections.
pub(crate) struct Session<'a> {
    pub target: &'a Target,
    /// Where TLS connectors come from: the prober's cache, shared by its probes.
    connectors: &'a Connectors,
    meter: &'a Meter,
    pub preferred: Option<Method>,
    /// See [`Steps::last`].
    last: MethodSet,
    /// See [`Steps::others`].
    others: Option<usize>,
    deadline: Instant,
    pub phases: Phases,
    pub attempts: Vec<Attempt>,
    pub cleartext: bool,
    pub cert_expiry: Option<i64>,
    /// The server offered OAuth2 mechanisms (a hint for the advice when passwords fail).
    pub oauth_offered: bool,
    /// Offered rungs moved to the end because earlier probes saw them rejected.
    held_back: Vec<Method>,
    /// The OAuth2 token this probe logs in with, once fetched.
    pub token: Option<AccessToken>,
    /// Held here while no connection is open.
    transcript: Transcript,
}

impl<'a> Session<'a> {
    fn new(target: &'a Target, steps: Steps, connectors: &'a Connectors, meter: &'a Meter) -> Self {
        Session {
            target,
            connectors,
            meter,
            preferred: steps.preferred,
            last: steps.last,
            others: steps.others,
            deadline: Instant::now() + target.timeout,
            phases: Phases::default(),
            attempts: Vec::new(),
            cleartext: false,
            cert_expiry: None,
            oauth_offered: false,
            held_back: Vec::new(),
            token: None,
            transcript: Transcript::new(&target.password),
        }
    }

    /// Runs `fut` under the probe deadline, adding its time to `phase`.
    pub async fn timed<T, E>(
        &mut self,
        phase: Phase,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ProbeError>
    where
        E: Into<ProbeError>,
    {
        let start = Instant::now();
        let result = tokio::time::timeout_at(self.deadline, fut).await;
        self.phases.add(phase, start.elapsed());
        match result {
            Ok(inner) => inner.map_err(Into::into),
            Err(_) => Err(ProbeError::Timeout(phase)),
        }
    }

    pub fn note(&mut self, text: &str) {
        self.transcript.note(text);
    }

    fn record(&mut self, method: Method, result: AttemptResult) {
        self.attempts.push(Attempt { method, result });
    }

    /// DNS, TCP and, for implicit TLS, the handshake.
    pub async fn connect(&mut self) -> Result<(Conn, bool), ProbeError> {
        let target = self.target;
        let server = target.server();
        self.note(&format!(
            "connecting to {server} ({}, tls {})",
            target.protocol, target.tls.mode
        ));
        let host = target.host.clone();
        let port = target.port;
        let addrs: Vec<_> = self
            .timed(Phase::Connect, async {
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(|a| a.collect::<Vec<_>>())
                    .map_err(|e| ProbeError::Dns {
                        host: host.clone(),
                        detail: e.to_string(),
                    })
            })
            .await?;
        let tcp = self
            .timed(Phase::Connect, async {
                let mut last = None;
                for addr in &addrs {
                    match TcpStream::connect(addr).await {
                        Ok(tcp) => return Ok(tcp),
                        Err(e) => {
                            last = Some(if addrs.len() > 1 {
                                format!("{addr}: {e}")
                            } else {
                                e.to_string()
                            })
                        }
                    }
                }
                Err(ProbeError::Connect {
                    server: server.clone(),
                    detail: last.unwrap_or_else(|| "no address".into()),
                })
            })
            .await?;
        let _ = tcp.set_nodelay(true);
        if target.tls.mode == TlsMode::Implicit {
            let stream = self.handshake(Box::new(tcp)).await?;
            return Ok((Connection::new(stream, self.take_transcript()), true));
        }
        Ok((
            Connection::new(Box::new(tcp), self.take_transcript()),
            false,
        ))
    }

    async fn handshake(&mut self, stream: Box<dyn Stream>) -> Result<Box<dyn Stream>, ProbeError> {
        let settings = &self.target.tls;
        let host = self.target.host.clone();
        let connectors = self.connectors;
        // Building the connector (the trust store) happens once per setting and cache, on
        // first use; it is counted as TLS time.
        let tls_stream = self
            .timed(Phase::Tls, async {
                let connector = connectors.get(settings.verify, settings.ca_file.as_deref())?;
                tls::handshake(&connector, &host, stream)
                    .await
                    .map_err(ProbeError::from)
            })
            .await?;
        self.cert_expiry = tls::cert_expiry(&tls_stream);
        self.note(if settings.verify {
            "TLS established, certificate verified"
        } else {
            "TLS established, certificate NOT verified (tls_verify: false)"
        });
        Ok(Box::new(tls_stream))
    }

    /// STLS/STARTTLS after the server said go ahead: the handshake on the same socket.
    pub async fn upgrade(&mut self, conn: Conn) -> Result<Conn, ProbeError> {
        let (stream, transcript) = match conn.into_parts() {
            Ok(parts) => parts,
            Err((e, transcript)) => {
                self.transcript = transcript;
                return Err(e.into());
            }
        };
        self.transcript = transcript;
        let stream = self.handshake(stream).await?;
        Ok(Connection::new(stream, self.take_transcript()))
    }

    /// How long a goodbye may wait for its answer: briefly, and never past the probe's
    /// deadline (a server that made the probe time out gets no further grace).
    pub fn goodbye_deadline(&self) -> Instant {
        self.deadline.min(Instant::now() + GOODBYE_TIMEOUT)
    }

    fn take_transcript(&mut self) -> Transcript {
        std::mem::take(&mut self.transcript)
    }

    /// Takes the transcript back from a connection that is done.
    pub fn release(&mut self, conn: Conn) {
        self.transcript = conn.into_transcript();
    }

    /// Gives up on a connection after `e`: takes its transcript back and passes `e` on.
    pub fn abandon(&mut self, conn: Conn, e: ProbeError) -> ProbeError {
        self.release(conn);
        e
    }
}

/// The CRAM-MD5 answer to `challenge`, its every form (the base64 line and the hex digest
/// inside it) registered as secret on `conn` first, so that a server echoing it is scrubbed.
pub(crate) fn cram_md5_answer(
    conn: &mut Conn,
    user: &str,
    password: &Password,
    challenge: &[u8],
) -> String {
    let transcript = conn.transcript_mut();
    transcript.add_digest(&sasl::cram_md5_digest(password.expose(), challenge));
    let answer = sasl::cram_md5_response(user, password.expose(), challenge);
    transcript.add_secret(&answer);
    answer
}

/// Runs one probe with TLS connectors of its own, built for it alone: for a probe on its
/// own (the `probe` command). Whatever probes repeatedly keeps a cache and calls
/// [`probe_with`].
pub async fn probe(target: &Target, preferred: Option<Method>) -> Verdict {
    probe_with(target, Steps::preferring(preferred), &Connectors::new()).await
}

/// Runs one probe that walks its ladder as `steps` say, taking TLS connectors from
/// `connectors`: for whatever probes repeatedly.
pub async fn probe_with(target: &Target, steps: Steps, connectors: &Connectors) -> Verdict {
    probe_metered(target, steps, connectors, &Meter::default()).await
}

/// [`probe_with`], counting the rungs it starts on `meter`.
pub async fn probe_metered(
    target: &Target,
    steps: Steps,
    connectors: &Connectors,
    meter: &Meter,
) -> Verdict {
    let started = Instant::now();
    let mut s = Session::new(target, steps, connectors, meter);
    let outcome = match (credentials_problem(target), &target.oauth2) {
        (Some(e), _) => Err(e),
        (None, Some(login)) => oauth::login(&mut s, login).await,
        (None, None) => walk(&mut s).await,
    };
    s.phases.total = started.elapsed();
    finish(s, outcome)
}

/// The protocol's ladder, on a connection of its own.
async fn walk(s: &mut Session<'_>) -> Result<Method, ProbeError> {
    match s.target.protocol {
        Protocol::Pop3 => ladder(s, &pop3::Pop3).await,
        Protocol::Imap => ladder(s, &imap::Imap).await,
    }
}

/// Credentials no command can carry are refused before any command is built.
fn credentials_problem(target: &Target) -> Option<ProbeError> {
    let bad = |v: &str| v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
    // An OAuth2 account sends no password: only the username goes into a command, and into
    // a SASL message whose fields %x01 separates.
    let password_bad = target.oauth2.is_none() && bad(target.password.expose());
    let user_bad =
        bad(&target.username) || (target.oauth2.is_some() && target.username.contains('\x01'));
    if user_bad || password_bad {
        return Some(ProbeError::MechanismUnavailable(
            "the username or password contains CR, LF or NUL, which no login command can carry"
                .into(),
        ));
    }
    None
}

async fn ladder<D: Dialect>(s: &mut Session<'_>, d: &D) -> Result<Method, ProbeError> {
    let mut link = d.open(s).await?;
    let rungs = match d.plan(s, &link).and_then(|rungs| order(s, rungs)) {
        Ok(rungs) => rungs,
        Err(e) => {
            d.goodbye(&mut link, s.goodbye_deadline()).await;
            s.release(link.conn);
            return Err(e);
        }
    };
    let mut rejections: Vec<(Method, ProbeError)> = Vec::new();
    let mut reconnected = false;
    let mut i = 0;
    while i < rungs.len() {
        let method = rungs[i];
        s.meter.start_rung();
        match d.attempt(s, &mut link, method).await {
            RungEnd::Success => {
                s.record(method, AttemptResult::Success);
                d.goodbye(&mut link, s.goodbye_deadline()).await;
                s.release(link.conn);
                return Ok(method);
            }
            RungEnd::Rejected(e) => {
                s.record(method, AttemptResult::Rejected);
                rejections.push((method, e));
                link.used = true;
                reconnected = false;
                i += 1;
            }
            RungEnd::Lost(e) if link.used && !reconnected => {
                s.release(link.conn);
                s.note("the server closed the connection after the rejection; reconnecting");
                let _ = e;
                link = d.open(s).await?;
                reconnected = true;
            }
            RungEnd::Failed(e) | RungEnd::Lost(e) => {
                s.record(method, AttemptResult::Error);
                d.goodbye(&mut link, s.goodbye_deadline()).await;
                s.release(link.conn);
                return Err(e);
            }
        }
    }
    d.goodbye(&mut link, s.goodbye_deadline()).await;
    s.release(link.conn);
    Err(combine(rejections))
}

/// The dialect's rungs as the account's history and the failure budget want them: rungs
/// rejected before go last, and past a first preferred rung at most `others` rungs are tried.
fn order(s: &mut Session<'_>, rungs: Vec<Method>) -> Result<Vec<Method>, ProbeError> {
    let offered = rungs.len();
    let keep_first = |i: usize, m: Method| i == 0 && Some(m) == s.preferred;
    let mut last = Vec::new();
    let mut ordered = Vec::with_capacity(offered);
    for (i, m) in rungs.into_iter().enumerate() {
        if s.last.contains(m) && !keep_first(i, m) {
            last.push(m);
        } else {
            ordered.push(m);
        }
    }
    let mut rungs = ordered;
    if !rungs.is_empty() {
        s.held_back.clone_from(&last);
    }
    rungs.extend(last);
    let Some(others) = s.others else {
        return Ok(rungs);
    };
    let free = usize::from(rungs.first().is_some_and(|&m| Some(m) == s.preferred));
    rungs.truncate(free + others);
    // A method known to work is tried alone by design; a note is for a ladder the budget cut.
    if free == 0 && rungs.len() < offered {
        let skipped = offered - rungs.len();
        s.note(&format!(
            "{skipped} more method(s) not tried: the server's failed-login budget does not cover them"
        ));
    }
    if rungs.is_empty() && offered > 0 {
        let detail = match s.preferred {
            Some(p) => format!(
                "{p}, the method that worked before, is not offered now; the other methods \
                 are tried by a later probe, within the server's failed-login budget"
            ),
            None => "no method tried: the server's failed-login budget is spent".into(),
        };
        return Err(ProbeError::MechanismUnavailable(detail));
    }
    Ok(rungs)
}

/// One error for a ladder whose every rung was refused: refused tokens when only tokens were
/// refused, otherwise the credentials. A TLS demand ends the ladder and is never a rejection.
fn combine(rejections: Vec<(Method, ProbeError)>) -> ProbeError {
    let all_tokens = rejections
        .iter()
        .all(|(_, e)| matches!(e, ProbeError::TokenRejected(_)));
    let detail = rejections
        .iter()
        .map(|(m, e)| format!("{m} rejected: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    if all_tokens {
        ProbeError::TokenRejected(detail)
    } else {
        ProbeError::AuthRejected(detail)
    }
}

fn finish(s: Session<'_>, outcome: Result<Method, ProbeError>) -> Verdict {
    let Session {
        target,
        phases,
        attempts,
        cleartext,
        cert_expiry,
        oauth_offered,
        held_back,
        transcript,
        ..
    } = s;
    let (success, method, error) = match outcome {
        Ok(method) => (true, Some(method), None),
        Err(e) => (false, None, Some(e)),
    };
    // Logging in past rungs held back because earlier probes saw them rejected is falling
    // back too, although this probe did not try them: the advice names them as rejected.
    let held_back: Vec<Attempt> = held_back
        .into_iter()
        .filter(|&m| success && Some(m) != method)
        .map(|m| Attempt {
            method: m,
            result: AttemptResult::Rejected,
        })
        .collect();
    // A token refused and replaced by a fresh one is no fallback: the method was the same.
    let fallback = success
        && (!held_back.is_empty()
            || attempts
                .iter()
                .any(|a| a.result == AttemptResult::Rejected && !a.method.is_oauth2()));
    let advice_attempts: Vec<Attempt> = held_back.iter().chain(&attempts).copied().collect();
    let reason = error.as_ref().map(ProbeError::reason);
    let detail = error.as_ref().map(|e| transcript.scrub(&e.to_string()));
    let facts = advice::Facts {
        target,
        success,
        method,
        reason,
        fallback,
        cleartext,
        attempts: &advice_attempts,
        oauth_offered,
    };
    let advice = advice::advise(&facts);
    let mut transcript = transcript;
    if let Some(m) = method {
        transcript.note(&format!("logged in with {m}"));
    } else if let Some(d) = &detail {
        transcript.note(&format!("failed: {d}"));
    }
    Verdict {
        success,
        method,
        reason,
        detail,
        fallback,
        cleartext,
        attempts,
        phases,
        cert_expiry,
        advice,
        transcript: transcript.into_lines(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens on port 1 of the loopback.
    fn target() -> Target {
        let mut target = crate::config::Account::for_test("g", "u", Protocol::Pop3).target;
        target.host = "127.0.0.1".into();
        target.port = 1;
        target.tls.mode = TlsMode::None;
        target.password = Password::new("pw");
        target.timeout = Duration::from_secs(5);
        target
    }

    #[test]
    fn the_probe_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let t = target();
        let fut = probe(&t, None);
        assert_send(&fut);
    }

    #[tokio::test]
    async fn refuses_credentials_no_command_can_carry() {
        let mut t = target();
        t.password = Password::new("pw\r\nDELE 1");
        let v = probe(&t, None).await;
        assert!(!v.success);
        assert_eq!(v.reason, Some(Reason::MechanismUnavailable));
        assert!(v.attempts.is_empty());
        assert!(v.transcript.iter().all(|l| !l.contains("DELE")));
    }

    #[test]
    fn every_error_maps_to_one_reason() {
        let cases = [
            (
                ProbeError::Dns {
                    host: "h".into(),
                    detail: "d".into(),
                },
                Reason::Dns,
            ),
            (
                ProbeError::Connect {
                    server: "s".into(),
                    detail: "d".into(),
                },
                Reason::Connect,
            ),
            (ProbeError::Tls("x".into()), Reason::Tls),
            (ProbeError::Timeout(Phase::Greeting), Reason::Timeout),
            (ProbeError::Protocol("x".into()), Reason::Protocol),
            (ProbeError::Closed("x".into()), Reason::Protocol),
            (ProbeError::ServerBusy("x".into()), Reason::ServerBusy),
            (ProbeError::ServerError("x".into()), Reason::ServerError),
            (ProbeError::AuthRejected("x".into()), Reason::AuthRejected),
            (
                ProbeError::MechanismUnavailable("x".into()),
                Reason::MechanismUnavailable,
            ),
            (
                ProbeError::PlaintextDisallowed("x".into()),
                Reason::PlaintextDisallowed,
            ),
            (ProbeError::Preauth("x".into()), Reason::Preauth),
            (ProbeError::TokenRejected("x".into()), Reason::TokenRejected),
            (
                ProbeError::TokenUnavailable("x".into()),
                Reason::TokenUnavailable,
            ),
        ];
        for (e, r) in cases {
            assert_eq!(e.reason(), r, "{e:?}");
        }
    }

    #[test]
    fn a_mixed_ladder_is_a_credentials_failure() {
        let e = combine(vec![
            (
                Method::Apop,
                ProbeError::AuthRejected("-ERR [AUTH] no".into()),
            ),
            (
                Method::Pass,
                ProbeError::PlaintextDisallowed("-ERR plaintext".into()),
            ),
        ]);
        assert_eq!(e.reason(), Reason::AuthRejected);
        assert!(e.to_string().contains("APOP rejected") && e.to_string().contains("PASS rejected"));
        let e = combine(vec![(
            Method::Xoauth2,
            ProbeError::TokenRejected("t".into()),
        )]);
        assert_eq!(e.reason(), Reason::TokenRejected);
    }

    fn ordered(steps: Steps, rungs: &[Method]) -> Result<Vec<Method>, Reason> {
        let t = target();
        let connectors = Connectors::new();
        let meter = Meter::default();
        let mut s = Session::new(&t, steps, &connectors, &meter);
        order(&mut s, rungs.to_vec()).map_err(|e| e.reason())
    }

    #[test]
    fn rejected_rungs_go_last_and_the_budget_cuts_the_ladder() {
        use Method::{Apop, CramMd5, Pass};
        let all = [Apop, CramMd5, Pass];
        let last: MethodSet = [Apop, CramMd5].into_iter().collect();
        let steps = Steps {
            last,
            ..Steps::default()
        };
        assert_eq!(ordered(steps, &all), Ok(vec![Pass, Apop, CramMd5]));
        assert_eq!(ordered(Steps::default(), &all), Ok(all.to_vec()));
        // A preferred rung stays first even if it was rejected once.
        let steps = Steps {
            preferred: Some(Apop),
            last,
            others: None,
        };
        assert_eq!(ordered(steps, &all), Ok(vec![Apop, Pass, CramMd5]));
        // A method known to work is free; the others are what the budget covers.
        let steps = Steps {
            preferred: Some(Pass),
            last,
            others: Some(0),
        };
        assert_eq!(ordered(steps, &[Pass, Apop, CramMd5]), Ok(vec![Pass]));
        let steps = Steps {
            others: Some(1),
            ..Steps::default()
        };
        assert_eq!(ordered(steps, &all), Ok(vec![Apop]));
        // The known method is no longer offered, and nothing else is covered.
        let steps = Steps {
            preferred: Some(CramMd5),
            last: MethodSet::EMPTY,
            others: Some(0),
        };
        assert_eq!(
            ordered(steps, &[Apop, Pass]),
            Err(Reason::MechanismUnavailable)
        );
        // Nothing offered at all stays that way.
        assert_eq!(ordered(steps, &[]), Ok(vec![]));
    }
}
