//! What the probe tests against real mail servers share: the servers' common face, a target
//! for their test account, and a probe that must neither hang nor leak the password.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mailbox_exporter::probe::{self, Target, TlsSettings};
use mailbox_exporter::secret::Password;
use mailbox_exporter::verdict::{
    Attempt, AttemptResult, AuthMode, Method, Protocol, TlsMode, Verdict,
};

use super::{Cyrus, Dovecot};

/// Far beyond any probe's own timeout: reaching it means the probe hung.
const HANG: Duration = Duration::from_secs(60);

/// A real mail server started by a test, with one account.
pub trait MailServer {
    fn tls_domain(&self) -> String;
    fn pop3_addr(&self) -> SocketAddr;
    fn pop3s_addr(&self) -> SocketAddr;
    fn imap_addr(&self) -> SocketAddr;
    fn imaps_addr(&self) -> SocketAddr;
    fn user(&self) -> &'static str;
    fn password(&self) -> &'static str;
    fn ca_file(&self) -> &Path;
}

macro_rules! mail_server {
    ($server:ty) => {
        impl MailServer for $server {
            fn tls_domain(&self) -> String {
                <$server>::tls_domain(self)
            }
            fn pop3_addr(&self) -> SocketAddr {
                <$server>::pop3_addr(self)
            }
            fn pop3s_addr(&self) -> SocketAddr {
                <$server>::pop3s_addr(self)
            }
            fn imap_addr(&self) -> SocketAddr {
                <$server>::imap_addr(self)
            }
            fn imaps_addr(&self) -> SocketAddr {
                <$server>::imaps_addr(self)
            }
            fn user(&self) -> &'static str {
                <$server>::user(self)
            }
            fn password(&self) -> &'static str {
                <$server>::password(self)
            }
            fn ca_file(&self) -> &Path {
                <$server>::ca_file(self)
            }
        }
    };
}

mail_server!(Dovecot);
mail_server!(Cyrus);

/// The port that serves `protocol` with `tls`.
pub fn addr(server: &impl MailServer, protocol: Protocol, tls: TlsMode) -> SocketAddr {
    match (protocol, tls) {
        (Protocol::Pop3, TlsMode::Implicit) => server.pop3s_addr(),
        (Protocol::Pop3, _) => server.pop3_addr(),
        (Protocol::Imap, TlsMode::Implicit) => server.imaps_addr(),
        (Protocol::Imap, _) => server.imap_addr(),
    }
}

/// The server's test account, its certificate verified against the server's test CA.
pub fn target(
    server: &impl MailServer,
    protocol: Protocol,
    tls: TlsMode,
    auth_mode: AuthMode,
) -> Target {
    Target {
        protocol,
        host: server.tls_domain(),
        port: addr(server, protocol, tls).port(),
        tls: TlsSettings {
            mode: tls,
            verify: true,
            ca_file: Some(server.ca_file().to_path_buf()),
        },
        username: server.user().into(),
        password: Password::new(server.password()),
        auth_mode,
        timeout: Duration::from_secs(20),
        oauth2: None,
    }
}

/// One probe of `t`; fails the test if it hangs or its verdict shows the password.
pub async fn run(t: &Target, preferred: Option<Method>) -> Verdict {
    let v = tokio::time::timeout(HANG, probe::probe(t, preferred))
        .await
        .expect("the probe hung");
    let dump = format!("{v:?}");
    assert!(
        !dump.contains(t.password.expose()),
        "password leaked: {dump}"
    );
    v
}

pub fn attempts(list: &[(Method, AttemptResult)]) -> Vec<Attempt> {
    list.iter()
        .map(|&(method, result)| Attempt { method, result })
        .collect()
}
