//! What one probe found: the vocabulary shared by probes, metrics, the CLI and the web page.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Names compare ignoring case, with `_` and `-` alike (`cram_md5` is `CRAM-MD5`).
fn same_name(name: &str, given: &str) -> bool {
    let norm = |c: u8| match c {
        b'_' => b'-',
        c => c.to_ascii_lowercase(),
    };
    name.len() == given.len() && name.bytes().map(norm).eq(given.bytes().map(norm))
}

/// A fixed vocabulary: an enum whose every variant has one name, the name used in labels,
/// config values, JSON and messages. Generates `ALL` (in declaration order), `as_str`,
/// `Display`, `Serialize` and a `FromStr` that ignores case and, on a miss, lists the names.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .into_iter()
                    .find(|v| same_name(v.as_str(), s))
                    .ok_or_else(|| {
                        let names: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                        format!("unknown {} {s:?}: expected one of {}", $what, names.join(", "))
                    })
            }
        }
    };
}

names! {
    /// The mail protocol an account is reached with.
    pub enum Protocol ("protocol") {
        Pop3 = "pop3",
        Imap = "imap",
    }
}

impl Protocol {
    /// The methods this protocol can negotiate, strongest first.
    pub fn methods(self) -> &'static [Method] {
        match self {
            Protocol::Pop3 => &[Method::Apop, Method::CramMd5, Method::Pass],
            Protocol::Imap => &[Method::CramMd5, Method::Plain, Method::Login],
        }
    }
}

names! {
    /// How the connection is secured.
    pub enum TlsMode ("tls mode") {
        /// TLS from the first byte (POP3S 995, IMAPS 993).
        Implicit = "implicit",
        /// Plain connection upgraded with STLS (POP3) or STARTTLS (IMAP).
        Starttls = "starttls",
        /// No TLS at all.
        None = "none",
    }
}

impl TlsMode {
    pub fn default_port(self, protocol: Protocol) -> u16 {
        match (protocol, self) {
            (Protocol::Pop3, TlsMode::Implicit) => 995,
            (Protocol::Pop3, _) => 110,
            (Protocol::Imap, TlsMode::Implicit) => 993,
            (Protocol::Imap, _) => 143,
        }
    }
}

names! {
    /// The POP3 auth mode, named as VICIdial and Mail::POP3Client name it.
    pub enum AuthMode ("auth mode") {
        Best = "BEST",
        Apop = "APOP",
        CramMd5 = "CRAM-MD5",
        Pass = "PASS",
        /// An account with OAuth2 credentials, limited to XOAUTH2.
        Xoauth2 = "XOAUTH2",
        /// An account with OAuth2 credentials, limited to OAUTHBEARER.
        Oauthbearer = "OAUTHBEARER",
    }
}

impl AuthMode {
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

names! {
    /// An authentication method, as it appears in the `method` label.
    pub enum Method ("method") {
        Apop = "APOP",
        CramMd5 = "CRAM-MD5",
        /// POP3 USER/PASS.
        Pass = "PASS",
        /// IMAP AUTHENTICATE PLAIN.
        Plain = "PLAIN",
        /// IMAP LOGIN.
        Login = "LOGIN",
        /// SASL XOAUTH2 (Google's, also Microsoft's): an OAuth2 bearer token.
        Xoauth2 = "XOAUTH2",
        /// SASL OAUTHBEARER (RFC 7628): an OAuth2 bearer token.
        Oauthbearer = "OAUTHBEARER",
    }
}

/// The OAuth2 methods, strongest first: what an account with OAuth2 credentials may use, on
/// either protocol.
pub const OAUTH2_METHODS: [Method; 2] = [Method::Oauthbearer, Method::Xoauth2];

impl Method {
    /// Whether the password itself crosses the wire (only hidden by TLS, if any).
    pub fn sends_password(self) -> bool {
        matches!(self, Method::Pass | Method::Plain | Method::Login)
    }

    /// Whether the method logs in with an OAuth2 token rather than a password.
    pub fn is_oauth2(self) -> bool {
        matches!(self, Method::Xoauth2 | Method::Oauthbearer)
    }
}

names! {
    /// The outcome of one rung of the login ladder.
    pub enum AttemptResult ("attempt result") {
        /// The server accepted the credentials.
        Success = "success",
        /// The server refused the credentials (or could not verify them).
        Rejected = "rejected",
        /// The rung ended without a verdict on the credentials: server busy, timeout, broken
        /// connection, protocol violation.
        Error = "error",
    }
}

/// One rung tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub method: Method,
    pub result: AttemptResult,
}

names! {
    /// Why a probe failed: the fixed set behind the `reason` label. Never free text.
    pub enum Reason ("reason") {
        /// The server refused the credentials (`[AUTH]`, `AUTHENTICATIONFAILED`, or no code).
        AuthRejected = "auth_rejected",
        /// No method that the mode allows is offered by the server.
        MechanismUnavailable = "mechanism_unavailable",
        /// The server takes logins only over TLS and this connection has none (`LOGINDISABLED`,
        /// `XTLSREQUIRED`, `PRIVACYREQUIRED`, "TLS required"): a configuration matter, no backoff.
        PlaintextDisallowed = "plaintext_disallowed",
        /// The server is up but will not serve the login now (`[IN-USE]`, `[SYS/TEMP]`,
        /// `[LOGIN-DELAY]`, `UNAVAILABLE`, a `BYE` greeting).
        ServerBusy = "server_busy",
        /// The server reports a permanent fault of its own (`[SYS/PERM]`, `SERVERBUG`).
        ServerError = "server_error",
        /// A phase ran past its deadline.
        Timeout = "timeout",
        /// The TCP connection could not be made.
        Connect = "connect",
        /// The server name did not resolve.
        Dns = "dns",
        /// TLS handshake or certificate verification failed, or STARTTLS was unavailable.
        Tls = "tls",
        /// The server spoke something other than the protocol, or hung up mid-dialogue.
        Protocol = "protocol",
        /// An IMAP `PREAUTH` greeting: the server logged the session in without checking any
        /// credential, so nothing was learnt about them (with STARTTLS: the known bypass attack).
        Preauth = "preauth",
        /// An OAuth2 token was had, but the server refused it (revoked, expired, wrong scope, no
        /// mailbox permission for the app).
        TokenRejected = "token_rejected",
        /// No OAuth2 token could be had from the account's token source; no login was tried.
        TokenUnavailable = "token_unavailable",
    }
}

names! {
    /// The phases a probe is timed by.
    pub enum Phase ("phase") {
        Connect = "connect",
        Tls = "tls",
        Greeting = "greeting",
        Auth = "auth",
        Total = "total",
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
    fn names_parse_back_ignoring_case_and_dashes() {
        for m in Method::ALL {
            assert_eq!(m.as_str().to_ascii_lowercase().parse::<Method>(), Ok(m));
        }
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
        }
        assert_eq!("cram_md5".parse::<AuthMode>(), Ok(AuthMode::CramMd5));
        assert_eq!(
            "smtp".parse::<Protocol>(),
            Err("unknown protocol \"smtp\": expected one of pop3, imap".to_string())
        );
        assert_eq!(
            serde_json::to_string(&Reason::AuthRejected).unwrap(),
            "\"auth_rejected\""
        );
        assert!(Method::Apop < Method::Oauthbearer);
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
