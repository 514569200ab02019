//! What one probe found: the vocabulary shared by probes, metrics, the CLI and the web page.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The mail protocol an account is reached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Pop3,
    Imap,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
        }
    }

    /// The methods this protocol can negotiate, strongest first.
    pub fn methods(self) -> &'static [Method] {
        match self {
            Protocol::Pop3 => &[Method::Apop, Method::CramMd5, Method::Pass],
            Protocol::Imap => &[Method::CramMd5, Method::Plain, Method::Login],
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pop3" => Ok(Protocol::Pop3),
            "imap" => Ok(Protocol::Imap),
            _ => Err(format!("unknown protocol {s:?}: expected pop3 or imap")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (POP3S 995, IMAPS 993).
    Implicit,
    /// Plain connection upgraded with STLS (POP3) or STARTTLS (IMAP).
    Starttls,
    /// No TLS at all.
    None,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit",
            TlsMode::Starttls => "starttls",
            TlsMode::None => "none",
        }
    }

    pub fn default_port(self, protocol: Protocol) -> u16 {
        match (protocol, self) {
            (Protocol::Pop3, TlsMode::Implicit) => 995,
            (Protocol::Pop3, _) => 110,
            (Protocol::Imap, TlsMode::Implicit) => 993,
            (Protocol::Imap, _) => 143,
        }
    }
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "implicit" => Ok(TlsMode::Implicit),
            "starttls" => Ok(TlsMode::Starttls),
            "none" => Ok(TlsMode::None),
            _ => Err(format!(
                "unknown tls mode {s:?}: expected implicit, starttls or none"
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The POP3 auth mode, named as VICIdial and Mail::POP3Client name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AuthMode {
    #[serde(rename = "BEST")]
    Best,
    #[serde(rename = "APOP")]
    Apop,
    #[serde(rename = "CRAM-MD5")]
    CramMd5,
    #[serde(rename = "PASS")]
    Pass,
    /// An account with OAuth2 credentials, limited to XOAUTH2.
    #[serde(rename = "XOAUTH2")]
    Xoauth2,
    /// An account with OAuth2 credentials, limited to OAUTHBEARER.
    #[serde(rename = "OAUTHBEARER")]
    Oauthbearer,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Best => "BEST",
            AuthMode::Apop => "APOP",
            AuthMode::CramMd5 => "CRAM-MD5",
            AuthMode::Pass => "PASS",
            AuthMode::Xoauth2 => "XOAUTH2",
            AuthMode::Oauthbearer => "OAUTHBEARER",
        }
    }

    /// The method a pinned mode is limited to; `None` for BEST.
    pub fn pinned(self) -> Option<Method> {
        match self {
            AuthMode::Best => None,
            AuthMode::Apop => Some(Method::Apop),
            AuthMode::CramMd5 => Some(Method::CramMd5),
            AuthMode::Pass => Some(Method::Pass),
            AuthMode::Xoauth2 => Some(Method::Xoauth2),
            AuthMode::Oauthbearer => Some(Method::Oauthbearer),
        }
    }
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "BEST" => Ok(AuthMode::Best),
            "APOP" => Ok(AuthMode::Apop),
            "CRAM-MD5" | "CRAM_MD5" | "CRAMMD5" => Ok(AuthMode::CramMd5),
            "PASS" => Ok(AuthMode::Pass),
            "XOAUTH2" => Ok(AuthMode::Xoauth2),
            "OAUTHBEARER" => Ok(AuthMode::Oauthbearer),
            _ => Err(format!(
                "unknown auth mode {s:?}: expected one of BEST, APOP, CRAM-MD5, PASS, XOAUTH2, \
                 OAUTHBEARER"
            )),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authentication method, as it appears in the `method` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Method {
    #[serde(rename = "APOP")]
    Apop,
    #[serde(rename = "CRAM-MD5")]
    CramMd5,
    /// POP3 USER/PASS.
    #[serde(rename = "PASS")]
    Pass,
    /// IMAP AUTHENTICATE PLAIN.
    #[serde(rename = "PLAIN")]
    Plain,
    /// IMAP LOGIN.
    #[serde(rename = "LOGIN")]
    Login,
    /// SASL XOAUTH2 (Google's, also Microsoft's): an OAuth2 bearer token.
    #[serde(rename = "XOAUTH2")]
    Xoauth2,
    /// SASL OAUTHBEARER (RFC 7628): an OAuth2 bearer token.
    #[serde(rename = "OAUTHBEARER")]
    Oauthbearer,
}

/// The OAuth2 methods, strongest first: what an account with OAuth2 credentials may use, on
/// either protocol.
pub const OAUTH2_METHODS: [Method; 2] = [Method::Oauthbearer, Method::Xoauth2];

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Apop,
        Method::CramMd5,
        Method::Pass,
        Method::Plain,
        Method::Login,
        Method::Xoauth2,
        Method::Oauthbearer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Apop => "APOP",
            Method::CramMd5 => "CRAM-MD5",
            Method::Pass => "PASS",
            Method::Plain => "PLAIN",
            Method::Login => "LOGIN",
            Method::Xoauth2 => "XOAUTH2",
            Method::Oauthbearer => "OAUTHBEARER",
        }
    }

    /// Whether the password itself crosses the wire (only hidden by TLS, if any).
    pub fn sends_password(self) -> bool {
        matches!(self, Method::Pass | Method::Plain | Method::Login)
    }

    /// Whether the method logs in with an OAuth2 token rather than a password.
    pub fn is_oauth2(self) -> bool {
        matches!(self, Method::Xoauth2 | Method::Oauthbearer)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one rung of the login ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptResult {
    /// The server accepted the credentials.
    Success,
    /// The server refused the credentials (or could not verify them).
    Rejected,
    /// The rung ended without a verdict on the credentials: server busy, timeout, broken
    /// connection, protocol violation.
    Error,
}

impl AttemptResult {
    pub const ALL: [AttemptResult; 3] = [
        AttemptResult::Success,
        AttemptResult::Rejected,
        AttemptResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Success => "success",
            AttemptResult::Rejected => "rejected",
            AttemptResult::Error => "error",
        }
    }
}

/// One rung tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub method: Method,
    pub result: AttemptResult,
}

/// Why a probe failed: the fixed set behind the `reason` label. Never free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The server refused the credentials (`[AUTH]`, `AUTHENTICATIONFAILED`, or no code).
    AuthRejected,
    /// No method that the mode allows is offered by the server.
    MechanismUnavailable,
    /// The server takes logins only over TLS and this connection has none (`LOGINDISABLED`,
    /// `XTLSREQUIRED`, `PRIVACYREQUIRED`, "TLS required"): a configuration matter, no backoff.
    PlaintextDisallowed,
    /// The server is up but will not serve the login now (`[IN-USE]`, `[SYS/TEMP]`,
    /// `[LOGIN-DELAY]`, `UNAVAILABLE`, a `BYE` greeting).
    ServerBusy,
    /// The server reports a permanent fault of its own (`[SYS/PERM]`, `SERVERBUG`).
    ServerError,
    /// A phase ran past its deadline.
    Timeout,
    /// The TCP connection could not be made.
    Connect,
    /// The server name did not resolve.
    Dns,
    /// TLS handshake or certificate verification failed, or STARTTLS was unavailable.
    Tls,
    /// The server spoke something other than the protocol, or hung up mid-dialogue.
    Protocol,
    /// An IMAP `PREAUTH` greeting: the server logged the session in without checking any
    /// credential, so nothing was learnt about them (with STARTTLS: the known bypass attack).
    Preauth,
    /// An OAuth2 token was had, but the server refused it (revoked, expired, wrong scope, no
    /// mailbox permission for the app).
    TokenRejected,
    /// No OAuth2 token could be had from the account's token source; no login was tried.
    TokenUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::AuthRejected,
        Reason::MechanismUnavailable,
        Reason::PlaintextDisallowed,
        Reason::ServerBusy,
        Reason::ServerError,
        Reason::Timeout,
        Reason::Connect,
        Reason::Dns,
        Reason::Tls,
        Reason::Protocol,
        Reason::Preauth,
        Reason::TokenRejected,
        Reason::TokenUnavailable,
    ];

    /// The reasons a password account can fail with: every one but the token reasons.
    pub const PASSWORD: [Reason; 11] = [
        Reason::AuthRejected,
        Reason::MechanismUnavailable,
        Reason::PlaintextDisallowed,
        Reason::ServerBusy,
        Reason::ServerError,
        Reason::Timeout,
        Reason::Connect,
        Reason::Dns,
        Reason::Tls,
        Reason::Protocol,
        Reason::Preauth,
    ];

    /// The reasons an OAuth2 account can fail with: a refused token is `token_rejected`,
    /// never `auth_rejected`.
    pub const OAUTH2: [Reason; 12] = [
        Reason::TokenRejected,
        Reason::TokenUnavailable,
        Reason::MechanismUnavailable,
        Reason::PlaintextDisallowed,
        Reason::ServerBusy,
        Reason::ServerError,
        Reason::Timeout,
        Reason::Connect,
        Reason::Dns,
        Reason::Tls,
        Reason::Protocol,
        Reason::Preauth,
    ];

    /// The reasons an account that logs in with a password (`oauth2: false`) or with OAuth2
    /// can fail with: the `reason` series it gets, so that no account carries series for
    /// failures it cannot have.
    pub fn for_login(oauth2: bool) -> &'static [Reason] {
        if oauth2 {
            &Reason::OAUTH2
        } else {
            &Reason::PASSWORD
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AuthRejected => "auth_rejected",
            Reason::MechanismUnavailable => "mechanism_unavailable",
            Reason::PlaintextDisallowed => "plaintext_disallowed",
            Reason::ServerBusy => "server_busy",
            Reason::ServerError => "server_error",
            Reason::Timeout => "timeout",
            Reason::Connect => "connect",
            Reason::Dns => "dns",
            Reason::Tls => "tls",
            Reason::Protocol => "protocol",
            Reason::Preauth => "preauth",
            Reason::TokenRejected => "token_rejected",
            Reason::TokenUnavailable => "token_unavailable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The phases a probe is timed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Connect,
    Tls,
    Greeting,
    Auth,
    Total,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Connect,
        Phase::Tls,
        Phase::Greeting,
        Phase::Auth,
        Phase::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Greeting => "greeting",
            Phase::Auth => "auth",
            Phase::Total => "total",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Time spent per phase, summed over every connection the probe opened.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    pub connect: Duration,
    pub tls: Duration,
    pub greeting: Duration,
    pub auth: Duration,
    pub total: Duration,
}

impl Phases {
    pub fn get(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Connect => self.connect,
            Phase::Tls => self.tls,
            Phase::Greeting => self.greeting,
            Phase::Auth => self.auth,
            Phase::Total => self.total,
        }
    }

    pub fn add(&mut self, phase: Phase, spent: Duration) {
        let slot = match phase {
            Phase::Connect => &mut self.connect,
            Phase::Tls => &mut self.tls,
            Phase::Greeting => &mut self.greeting,
            Phase::Auth => &mut self.auth,
            Phase::Total => &mut self.total,
        };
        *slot += spent;
    }
}

impl Serialize for Phases {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(Phase::ALL.len()))?;
        for phase in Phase::ALL {
            map.serialize_entry(phase.as_str(), &self.get(phase).as_secs_f64())?;
        }
        map.end()
    }
}

/// A certificate expiry (seconds since the epoch, as in [`Verdict::cert_expiry`]) as a time;
/// `None` for one before the epoch or beyond what the clock can represent.
pub fn expiry_time(seconds: i64) -> Option<SystemTime> {
    let seconds = u64::try_from(seconds).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Everything one probe found out.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub success: bool,
    /// The method that logged in.
    pub method: Option<Method>,
    /// Why the probe failed; `None` on success.
    pub reason: Option<Reason>,
    /// A one-line, password-free account of the failure for people (never a label).
    pub detail: Option<String>,
    /// The login succeeded only after a method the server advertised was rejected.
    pub fallback: bool,
    /// The password crossed the wire without TLS, whatever the outcome.
    pub cleartext: bool,
    pub attempts: Vec<Attempt>,
    pub phases: Phases,
    /// The leaf certificate's notAfter, seconds since the epoch, when TLS was used.
    pub cert_expiry: Option<i64>,
    /// What the operator should change, when there is something to say.
    pub advice: Option<String>,
    /// The dialogue, `C:`/`S:`-prefixed, every secret redacted.
    pub transcript: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_belongs_to_a_kind_of_login_and_none_gets_more_than_twelve() {
        for r in Reason::ALL {
            assert!(
                Reason::PASSWORD.contains(&r) || Reason::OAUTH2.contains(&r),
                "{r}"
            );
        }
        assert!(!Reason::PASSWORD.contains(&Reason::TokenRejected));
        assert!(!Reason::OAUTH2.contains(&Reason::AuthRejected));
        assert!(Reason::for_login(true).len() <= 12);
        assert!(Reason::for_login(false).len() <= 12);
    }

    #[test]
    fn oauth2_names() {
        for (text, mode, method) in [
            ("XOAUTH2", AuthMode::Xoauth2, Method::Xoauth2),
            ("oauthbearer", AuthMode::Oauthbearer, Method::Oauthbearer),
        ] {
            let parsed: AuthMode = text.parse().unwrap();
            assert_eq!(parsed, mode);
            assert_eq!(mode.pinned(), Some(method));
            assert_eq!(method.as_str(), text.to_ascii_uppercase());
            assert!(method.is_oauth2() && !method.sends_password());
        }
        assert_eq!(Reason::TokenRejected.as_str(), "token_rejected");
        assert_eq!(Reason::TokenUnavailable.as_str(), "token_unavailable");
    }
}
