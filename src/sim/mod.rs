//! In-process POP3 and IMAP servers that speak the real protocols, with the misbehaviours met
//! in the field, for tests, the `demo` command and benchmarks.
//!
//! A [`SimServer`] listens on `127.0.0.1:0` and serves every connection in its own tokio task,
//! so thousands of probes cost thousands of small tasks, not threads. Credentials are checked
//! for real (APOP and CRAM-MD5 digests are recomputed from the stored password), so a client
//! that computes them wrongly fails here as it would against Dovecot.
//!
//! Layout: `cert` (the TLS identity, [`sim_certificate`]), `wire` (the server end of a
//! connection), `pop3` and `imap` (the dialogues).
//!
//! A connection lives until the client leaves or the server is dropped; there is no idle
//! timeout, since measuring the client's own timeouts is much of the point.

mod cert;
mod imap;
mod pop3;
mod wire;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_native_tls::TlsAcceptor;

pub use cert::{SimCertificate, sim_certificate};

use crate::proto::sasl;
use crate::verdict::{Protocol, TlsMode};
use wire::{Stream, Wire};

/// Host name in APOP timestamps and CRAM-MD5 challenges unless the spec names another.
pub const DEFAULT_HOSTNAME: &str = "sim.example";
/// Longest command line (or IMAP command with its literals) the simulator buffers; a client
/// that sends more is disconnected, as real servers do.
pub const MAX_LINE: usize = 8 * 1024;
/// Most verbs kept in [`SimStats::commands`], so a long benchmark cannot grow them unboundedly.
pub const MAX_RECORDED_COMMANDS: usize = 100_000;
/// Unknown or malformed commands tolerated per connection before the server hangs up
/// (Dovecot's limit too).
pub const MAX_BAD_COMMANDS: u32 = 10;
/// Pending connections the listener queues: benchmarks open thousands at once.
const LISTEN_BACKLOG: u32 = 4096;
/// Verb recorded for a command the protocol does not know; its text is never recorded since a
/// confused client may have sent a password where a command belongs.
const UNKNOWN_VERB: &str = "UNKNOWN";

/// The temporary condition a [`Behavior::Busy`] server reports on every login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyCode {
    /// POP3 `[IN-USE]`: another client holds the maildrop lock (RFC 2449).
    InUse,
    /// POP3 `[SYS/TEMP]`: a temporary system failure, e.g. the user database is down (RFC 3206).
    SysTemp,
    /// POP3 `[LOGIN-DELAY]`: the user logged in too recently (RFC 2449).
    LoginDelay,
}

impl BusyCode {
    fn pop3_reply(self) -> &'static str {
        match self {
            BusyCode::InUse => "-ERR [IN-USE] Mailbox is locked by another POP3 client.",
            BusyCode::SysTemp => "-ERR [SYS/TEMP] Temporary authentication failure.",
            BusyCode::LoginDelay => "-ERR [LOGIN-DELAY] Logged in too recently, try again later.",
        }
    }
}

/// How a server that takes logins only over TLS says so on an unencrypted connection, as
/// real servers do. Over TLS (implicit, or after STLS/STARTTLS) such a server behaves as
/// [`Behavior::Healthy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsDemand {
    /// Cyrus with `allowplaintext: 0`: POP3 CAPA lists no USER (and STLS where offered), and
    /// USER is answered `-ERR [AUTH] USER command only available under a layer`; IMAP greets
    /// with `STARTTLS LOGINDISABLED AUTH=PLAIN AUTH=CRAM-MD5` and answers every AUTHENTICATE
    /// and LOGIN `NO STARTTLS required`.
    Layer,
    /// Everything advertised as over TLS, and every login command (POP3 USER, APOP, AUTH;
    /// IMAP LOGIN, AUTHENTICATE) answered `-ERR TLS required to log in.` or
    /// `NO TLS required to log in.`, before any credential is taken.
    Text,
    /// GNU Mailutils with `tls-required`: POP3 CAPA lists `XTLSREQUIRED` beside USER, and every
    /// login command is answered `-ERR Incorrect state`; IMAP greets with `STARTTLS
    /// LOGINDISABLED AUTH=PLAIN` and answers `NO STARTTLS required`.
    Capability,
}

/// How a simulated server behaves. The features a well-behaved server offers (APOP timestamp,
/// SASL mechanisms, SASL-IR, capabilities in the IMAP greeting) are switched in [`SimSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Dovecot with a plaintext passdb: every advertised method works for the right password.
    Healthy,
    /// Dovecot with hashed passwords and `apop`/`cram-md5` still enabled: APOP and CRAM-MD5
    /// are advertised but always fail as a wrong password would; USER/PASS, PLAIN and LOGIN work.
    UnverifiableDigests,
    /// As [`Behavior::UnverifiableDigests`], but like servers that hang up on a failed login:
    /// the rejected APOP or CRAM-MD5 is answered and the connection closed.
    UnverifiableDigestsThenClose,
    /// A server configured for CRAM-MD5 alone: POP3 has no APOP timestamp and no USER (USER
    /// answers `-ERR`); IMAP advertises `AUTH=CRAM-MD5 LOGINDISABLED`.
    CramMd5Only,
    /// An old cleartext-only server: no STLS/STARTTLS, no APOP, no SASL; USER/PASS or LOGIN.
    CleartextOnly,
    /// A server that cannot serve the mailbox right now: every login is answered with the
    /// POP3 code given, or IMAP `NO [UNAVAILABLE]`.
    Busy(BusyCode),
    /// A server refusing service: POP3 `-ERR` greeting, IMAP `* BYE` greeting, then close.
    RejectGreeting,
    /// Dovecot with `disable_plaintext_auth` and no TLS to offer: IMAP `LOGINDISABLED` with no
    /// password mechanism, LOGIN answered `NO [PRIVACYREQUIRED]`; POP3 without USER, USER/PASS
    /// answered `-ERR [AUTH] Plaintext authentication disallowed`.
    LoginDisabled,
    /// A provider that dropped passwords (Microsoft 365, Google): only XOAUTH2 and OAUTHBEARER
    /// are advertised (as [`SimSpec::xoauth2`] and [`SimSpec::oauthbearer`] say; IMAP adds
    /// LOGINDISABLED); passwords sent anyway fail as wrong ones. A known user presenting
    /// [`SimSpec::oauth2_token`] is logged in; any other token is answered with the base64
    /// JSON error challenge (RFC 7628), and, once the client has answered it as the
    /// mechanism requires (`AQ==` for OAUTHBEARER, an empty line for XOAUTH2), refused.
    OAuthOnly,
    /// IMAP only: a `* PREAUTH` greeting (e.g. imapd run over ssh), already authenticated.
    Preauth,
    /// A server that takes logins only over TLS, refusing them on an unencrypted connection
    /// in the way given.
    TlsRequired(TlsDemand),
    /// A careless server that refuses every login and echoes every line the client sent for
    /// it (the USER line, APOP digest, SASL answers, LOGIN with its quoted or literal
    /// password) back in its `-ERR` or `NO`. Offers everything, as [`Behavior::Healthy`].
    EchoRefusals,
    /// A host that accepts TCP connections and never sends a byte (firewall, hung daemon);
    /// with implicit TLS it never answers the handshake either.
    Silent,
    /// A server so slow it sends its greeting one byte per interval (after the handshake, with
    /// implicit TLS), then behaves as [`Behavior::Healthy`].
    Drip(Duration),
    /// A broken peer that sends the start of a greeting and then bytes without a newline
    /// forever (after the handshake, with implicit TLS), until the client hangs up.
    EndlessLine,
    /// Something that is not a mail server on the mail port (an HTTP server): answers
    /// `HTTP/1.1 400 Bad Request` before any TLS handshake, then closes.
    Garbage,
    /// A port whose service closes every connection right after accepting it (before any TLS).
    CloseOnAccept,
}

impl Behavior {
    /// Behaviours that offer the full set of methods the spec switches on.
    fn offers_everything(&self) -> bool {
        matches!(
            self,
            Behavior::Healthy
                | Behavior::UnverifiableDigests
                | Behavior::UnverifiableDigestsThenClose
                | Behavior::Busy(_)
                | Behavior::Preauth
                | Behavior::Drip(_)
                | Behavior::TlsRequired(_)
                | Behavior::EchoRefusals
        )
    }

    /// The TLS demand this server makes on a connection in this state, if any.
    fn tls_demand(&self, tls_active: bool) -> Option<TlsDemand> {
        match self {
            Behavior::TlsRequired(demand) if !tls_active => Some(*demand),
            _ => None,
        }
    }
}

/// What to simulate.
#[derive(Clone)]
pub struct SimSpec {
    pub protocol: Protocol,
    /// `Implicit`: TLS from the first byte; `Starttls`: STLS/STARTTLS offered; `None`: not offered.
    pub tls: TlsMode,
    /// Accounts as (user name, password).
    pub users: Vec<(String, String)>,
    pub behavior: Behavior,
    /// For APOP timestamps and CRAM-MD5 challenges.
    pub hostname: String,
    /// POP3: the greeting carries an APOP timestamp (where the behaviour offers APOP).
    pub apop: bool,
    /// SASL CRAM-MD5 advertised (where the behaviour offers SASL).
    pub cram_md5: bool,
    /// SASL PLAIN advertised (where the behaviour offers SASL).
    pub plain: bool,
    /// IMAP: the greeting carries `[CAPABILITY ...]`; otherwise the client must ask.
    pub greeting_capabilities: bool,
    /// IMAP: `SASL-IR` advertised, so AUTHENTICATE may carry an initial response.
    pub sasl_ir: bool,
    /// POP3: AUTH CRAM-MD5 works but CAPA does not list it (Courier does this).
    pub unlisted_cram_md5: bool,
    /// The APOP timestamp and CRAM-MD5 challenge of every connection, for tests that must
    /// know the digests a client sends; by default each is fresh, as on real servers.
    pub fixed_stamp: Option<String>,
    /// Every refused login is answered this long after the credential arrived, as Dovecot's
    /// failure delay and per-address penalty (up to 15 s) do. Zero: at once.
    pub rejection_delay: Duration,
    /// [`Behavior::OAuthOnly`]: the bearer token accepted for every known user; `None`: none.
    /// With [`Behavior::EchoRefusals`], set to anything: XOAUTH2/OAUTHBEARER are offered too
    /// (and refused with the echo like every login).
    pub oauth2_token: Option<String>,
    /// [`Behavior::OAuthOnly`]: XOAUTH2 advertised.
    pub xoauth2: bool,
    /// [`Behavior::OAuthOnly`]: OAUTHBEARER advertised.
    pub oauthbearer: bool,
}

impl SimSpec {
    /// A spec with no users, every optional feature on and [`DEFAULT_HOSTNAME`].
    pub fn new(protocol: Protocol, tls: TlsMode, behavior: Behavior) -> Self {
        SimSpec {
            protocol,
            tls,
            users: Vec::new(),
            behavior,
            hostname: DEFAULT_HOSTNAME.to_string(),
            apop: true,
            cram_md5: true,
            plain: true,
            greeting_capabilities: true,
            sasl_ir: true,
            unlisted_cram_md5: false,
            fixed_stamp: None,
            rejection_delay: Duration::ZERO,
            oauth2_token: None,
            xoauth2: true,
            oauthbearer: true,
        }
    }

    /// The OAuth2 mechanisms a [`Behavior::OAuthOnly`] server advertises (and an echoing one
    /// given a token).
    fn oauth_mechanisms(&self) -> Vec<&'static str> {
        let mut mechanisms = Vec::new();
        let echo = self.behavior == Behavior::EchoRefusals && self.oauth2_token.is_some();
        if self.behavior == Behavior::OAuthOnly || echo {
            if self.xoauth2 {
                mechanisms.push("XOAUTH2");
            }
            if self.oauthbearer {
                mechanisms.push("OAUTHBEARER");
            }
        }
        mechanisms
    }

    /// Adds an account.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// An APOP timestamp or CRAM-MD5 challenge for a new connection or exchange.
    fn stamp(&self) -> String {
        self.fixed_stamp
            .clone()
            .unwrap_or_else(|| unique_stamp(&self.hostname))
    }

    fn password(&self, user: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(name, _)| name == user)
            .map(|(_, password)| password.as_str())
    }

    fn validate(&self) -> io::Result<()> {
        if self.behavior == Behavior::Preauth && self.protocol != Protocol::Imap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the PREAUTH behaviour exists only for IMAP",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for SimSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<(&str, &str)> = self
            .users
            .iter()
            .map(|(name, _)| (name.as_str(), "***"))
            .collect();
        f.debug_struct("SimSpec")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls)
            .field("users", &users)
            .field("behavior", &self.behavior)
            .field("hostname", &self.hostname)
            .field("apop", &self.apop)
            .field("cram_md5", &self.cram_md5)
            .field("plain", &self.plain)
            .field("greeting_capabilities", &self.greeting_capabilities)
            .field("sasl_ir", &self.sasl_ir)
            .field("unlisted_cram_md5", &self.unlisted_cram_md5)
            .field("fixed_stamp", &self.fixed_stamp)
            .field("rejection_delay", &self.rejection_delay)
            .field("oauth2_token", &self.oauth2_token.as_ref().map(|_| "***"))
            .field("xoauth2", &self.xoauth2)
            .field("oauthbearer", &self.oauthbearer)
            .finish()
    }
}

/// A snapshot of what a simulator has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Connections accepted.
    pub connections: u64,
    /// Command verbs in arrival order, never their arguments: `"CAPA"`, `"APOP"`,
    /// `"AUTH CRAM-MD5"`, `"LOGIN"` (IMAP tags dropped), `"AUTHENTICATE PLAIN"`, ...
    /// Anything unrecognised is recorded as `"UNKNOWN"`. At most [`MAX_RECORDED_COMMANDS`].
    pub commands: Vec<String>,
    /// Logins accepted.
    pub logins_ok: u64,
    /// Logins that presented a credential and were refused, whatever the reason.
    pub logins_rejected: u64,
}

#[derive(Default)]
struct Recorder {
    connections: AtomicU64,
    logins_ok: AtomicU64,
    logins_rejected: AtomicU64,
    commands: Mutex<Vec<&'static str>>,
}

impl Recorder {
    fn command(&self, verb: &'static str) {
        // A poisoned lock only means another connection task panicked mid-push; the list is
        // still a list.
        let mut commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        if commands.len() < MAX_RECORDED_COMMANDS {
            commands.push(verb);
        }
    }

    fn snapshot(&self) -> SimStats {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        SimStats {
            connections: self.connections.load(Ordering::Relaxed),
            commands: commands.iter().map(|v| v.to_string()).collect(),
            logins_ok: self.logins_ok.load(Ordering::Relaxed),
            logins_rejected: self.logins_rejected.load(Ordering::Relaxed),
        }
    }
}

/// A login attempt, by method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Apop,
    CramMd5,
    Plain,
    Pass,
    Login,
    OAuth,
}

impl Attempt {
    fn is_digest(self) -> bool {
        matches!(self, Attempt::Apop | Attempt::CramMd5)
    }
}

/// The server's answer to a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    Accept,
    /// Wrong credential, or one the server cannot verify: indistinguishable to the client.
    Fail,
    FailAndClose,
    Busy(BusyCode),
}

/// Everything the connection tasks of one server share.
struct Shared {
    spec: SimSpec,
    acceptor: Option<TlsAcceptor>,
    stats: Recorder,
}

impl Shared {
    /// Decides a login attempt whose credential checked out (`valid`) or not, and counts it.
    fn judge(&self, attempt: Attempt, valid: bool) -> Judgement {
        let judgement = match &self.spec.behavior {
            Behavior::Busy(code) => Judgement::Busy(*code),
            Behavior::UnverifiableDigests if attempt.is_digest() => Judgement::Fail,
            Behavior::UnverifiableDigestsThenClose if attempt.is_digest() => {
                Judgement::FailAndClose
            }
            Behavior::OAuthOnly if attempt == Attempt::OAuth && valid => Judgement::Accept,
            Behavior::OAuthOnly | Behavior::EchoRefusals => Judgement::Fail,
            // No token is ever valid here: the simulator knows passwords only.
            _ if attempt == Attempt::OAuth => Judgement::Fail,
            _ if valid => Judgement::Accept,
            _ => Judgement::Fail,
        };
        self.count(judgement == Judgement::Accept);
        judgement
    }

    /// [`Shared::judge`], with a refusal held back for the spec's `rejection_delay`.
    async fn judge_after_delay(&self, attempt: Attempt, valid: bool) -> Judgement {
        let judgement = self.judge(attempt, valid);
        let refused = matches!(judgement, Judgement::Fail | Judgement::FailAndClose);
        if refused && !self.spec.rejection_delay.is_zero() {
            tokio::time::sleep(self.spec.rejection_delay).await;
        }
        judgement
    }

    /// Counts a login refused before the credential could be judged (e.g. plaintext disabled).
    fn count(&self, accepted: bool) {
        let counter = if accepted {
            &self.stats.logins_ok
        } else {
            &self.stats.logins_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, verb: &'static str) {
        self.stats.command(verb);
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        self.spec.password(user) == Some(password)
    }

    fn check_apop(&self, user: &str, timestamp: &str, digest: &str) -> bool {
        self.spec.password(user).is_some_and(|password| {
            sasl::apop_digest(timestamp, password).eq_ignore_ascii_case(digest)
        })
    }

    /// Checks a decoded CRAM-MD5 answer, "user hexdigest" (RFC 2195).
    fn check_cram_md5(&self, challenge: &str, answer: &[u8]) -> bool {
        let Ok(answer) = std::str::from_utf8(answer) else {
            return false;
        };
        let Some((user, digest)) = answer.rsplit_once(' ') else {
            return false;
        };
        self.spec.password(user).is_some_and(|password| {
            sasl::cram_md5_digest(password, challenge.as_bytes()).eq_ignore_ascii_case(digest)
        })
    }

    /// Checks a decoded XOAUTH2 (`user=U\x01auth=Bearer T\x01\x01`) or OAUTHBEARER (RFC 7628:
    /// `n,a=U,\x01...auth=Bearer T\x01\x01`) message: a known user and the spec's token.
    fn check_oauth(&self, mechanism: &str, message: &[u8]) -> bool {
        let Some(token) = self.spec.oauth2_token.as_deref() else {
            return false;
        };
        let Ok(message) = std::str::from_utf8(message) else {
            return false;
        };
        let Some(pairs) = message.strip_suffix("\x01\x01") else {
            return false;
        };
        let (user, pairs) = match mechanism {
            "OAUTHBEARER" => {
                let Some((header, pairs)) = message.split_once('\x01') else {
                    return false;
                };
                let Some(user) = header
                    .strip_prefix("n,a=")
                    .and_then(|rest| rest.strip_suffix(','))
                else {
                    return false;
                };
                let pairs = pairs.strip_suffix("\x01\x01").unwrap_or(pairs);
                (
                    user.replace("=2C", ",").replace("=3D", "="),
                    pairs.to_string(),
                )
            }
            _ => {
                let mut fields = pairs.splitn(2, '\x01');
                let Some(user) = fields.next().and_then(|f| f.strip_prefix("user=")) else {
                    return false;
                };
                (
                    user.to_string(),
                    fields.next().unwrap_or_default().to_string(),
                )
            }
        };
        let presented = pairs
            .split('\x01')
            .find_map(|kv| kv.strip_prefix("auth=Bearer "));
        self.spec.password(&user).is_some() && presented == Some(token)
    }

    /// Checks a decoded PLAIN message, "authzid\0authcid\0passwd" (RFC 4616). Acting as
    /// another user (a different authzid) is never allowed.
    fn check_plain(&self, message: &[u8]) -> bool {
        let mut parts = message.split(|&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        if !authzid.is_empty() && authzid != authcid {
            return false;
        }
        match (std::str::from_utf8(authcid), std::str::from_utf8(password)) {
            (Ok(user), Ok(password)) => self.check_password(user, password),
            _ => false,
        }
    }
}

/// The base64 JSON error challenge an OAuth2 server sends for a token it refuses (RFC 7628
/// section 3.2.2).
fn oauth_error_challenge() -> String {
    sasl::encode(
        br#"{"status":"invalid_token","schemes":"bearer","scope":"https://sim.example/mail"}"#,
    )
}

/// Whether `line` is the answer `mechanism` requires to an error challenge: `AQ==` (a lone
/// %x01) for OAUTHBEARER, an empty line for XOAUTH2.
fn oauth_error_answered(mechanism: &str, line: &[u8]) -> bool {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches(['\r', '\n']);
    match mechanism {
        "OAUTHBEARER" => line == sasl::OAUTHBEARER_ABORT,
        _ => line.is_empty(),
    }
}

/// A running simulated mail server. Dropping it stops the listener and every connection.
pub struct SimServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl SimServer {
    /// Starts listening on `127.0.0.1:0`.
    pub async fn start(spec: SimSpec) -> io::Result<SimServer> {
        spec.validate()?;
        let acceptor = match spec.tls {
            TlsMode::None => None,
            TlsMode::Implicit | TlsMode::Starttls => Some(cert::acceptor()?),
        };
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            spec,
            acceptor,
            stats: Recorder::default(),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(SimServer { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What this server simulates.
    pub fn spec(&self) -> &SimSpec {
        &self.shared.spec
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// Stops the listener and every connection, and waits until the listener is closed.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it aborts them all.
        self.task.abort();
    }
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("addr", &self.addr)
            .field("protocol", &self.shared.spec.protocol)
            .field("tls", &self.shared.spec.tls)
            .field("behavior", &self.shared.spec.behavior)
            .finish()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: give the clients a moment to let go.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow with every one ever served.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    match shared.spec.behavior {
        Behavior::CloseOnAccept => return,
        Behavior::Silent => {
            // Read and discard until the client goes: nothing is ever sent or kept.
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        Behavior::Garbage => {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
            return;
        }
        _ => {}
    }
    let stream = match (&shared.spec.tls, &shared.acceptor) {
        (TlsMode::Implicit, Some(acceptor)) => match acceptor.accept(stream).await {
            Ok(tls) => Stream::Tls(Box::new(tls)),
            Err(_) => return,
        },
        _ => Stream::Plain(stream),
    };
    let mut wire = Wire::new(stream);
    if shared.spec.behavior == Behavior::EndlessLine {
        let prefix = match shared.spec.protocol {
            Protocol::Pop3 => "+OK ",
            Protocol::Imap => "* OK ",
        };
        let _ = wire.endless(prefix).await;
        return;
    }
    // Errors here are the client's doing (reset, over-long line) or its going away: either
    // way the connection is over and there is no one to tell.
    let _ = match shared.spec.protocol {
        Protocol::Pop3 => pop3::serve(wire, &shared).await,
        Protocol::Imap => imap::serve(wire, &shared).await,
    };
}

/// A fresh `<pid.nanos@hostname>` string: APOP timestamps and CRAM-MD5 challenges. Strictly
/// increasing within the process, so no two connections ever share one.
fn unique_stamp(hostname: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    let nanos = now.max(previous + 1);
    format!("<{}.{}@{}>", std::process::id(), nanos, hostname)
}

/// The verb in `table` matching `word` case-insensitively, else [`UNKNOWN_VERB`].
fn known_verb(table: &[&'static str], word: &str) -> &'static str {
    table
        .iter()
        .find(|verb| verb.eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or(UNKNOWN_VERB)
}

/// Splits off the first space-separated word.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(' ') {
        Some((word, rest)) => (word, rest),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests;
