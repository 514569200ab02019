//! Logging in to one mailbox and coming back with a [`Verdict`].

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Password;
use crate::verdict::{AuthMode, Method, Protocol, TlsMode, Verdict};

/// Default deadline for a whole probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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
}

impl Target {
    /// `host:port` as shown to operators.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Runs one probe. `preferred` is the method that worked last time: BEST tries it first and
/// walks the whole ladder only when it no longer works.
pub async fn probe(target: &Target, preferred: Option<Method>) -> Verdict {
    let _ = (target, preferred);
    todo!()
}
