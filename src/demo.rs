//! `mailbox_exporter demo`: the exporter against simulated mail servers started in-process,
//! one per interesting case, so that every metric and the landing page can be seen within
//! seconds without any mail server or config of one's own.
//!
//! The config is an ordinary YAML file written to a temporary directory and loaded through the
//! normal path, so what the demo shows is exactly what that config would do in production.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::app::{self, AppError, RunOptions};
use crate::sim::{Behavior, SimServer, SimSpec, sim_certificate};
use crate::verdict::{Protocol, TlsMode};
use crate::web::ListenAddress;

/// Often enough that every account is probed within seconds of starting (the first probes
/// are spread over one interval), rarely enough to read the page between two.
pub const DEMO_INTERVAL: Duration = Duration::from_secs(15);
/// Generous for loopback; the dead server fails at once anyway.
pub const DEMO_TIMEOUT: Duration = Duration::from_secs(3);
/// The password every simulated mailbox has; the wrong-password account is configured with
/// another.
const PASSWORD: &str = "demo-password";
/// The OAuth2 access token the OAuth2-only server accepts, kept in a token file as a sidecar
/// would keep it fresh.
const TOKEN: &str = "demo-oauth2-token";

/// What `demo` needs besides the simulated servers.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen_address: ListenAddress,
    pub web_config_file: Option<PathBuf>,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the simulated mail servers: {0}")]
    Lab(#[from] io::Error),
    #[error(transparent)]
    App(#[from] AppError),
}

/// One case of the demo: an account and the server it logs in to.
struct Case {
    group: &'static str,
    name: &'static str,
    protocol: Protocol,
    tls: TlsMode,
    /// `None`: nothing listens on the account's port.
    behavior: Option<Behavior>,
    /// POP3: the greeting carries an APOP timestamp.
    apop: bool,
    password: &'static str,
    /// Logs in with the token in the lab's token file instead of the password.
    oauth2: bool,
}

fn cases() -> Vec<Case> {
    let case = |group, name, protocol, tls, behavior| Case {
        group,
        name,
        protocol,
        tls,
        behavior: Some(behavior),
        apop: true,
        password: PASSWORD,
        oauth2: false,
    };
    vec![
        // BEST logs in with APOP: the digest check works on this server.
        case(
            "support",
            "support-apop",
            Protocol::Pop3,
            TlsMode::Implicit,
            Behavior::Healthy,
        ),
        // IMAP picks CRAM-MD5, the strongest mechanism offered.
        case(
            "support",
            "support-imap-cram-md5",
            Protocol::Imap,
            TlsMode::Implicit,
            Behavior::Healthy,
        ),
        // The trap: APOP is advertised but cannot be verified (hashed passwords); BEST falls
        // back to PASS and the exporter advises pinning auth_mode: PASS.
        case(
            "sales",
            "sales-apop-trap",
            Protocol::Pop3,
            TlsMode::Implicit,
            Behavior::UnverifiableDigests,
        ),
        Case {
            password: "not-the-password",
            ..case(
                "sales",
                "sales-wrong-password",
                Protocol::Pop3,
                TlsMode::Implicit,
                Behavior::Healthy,
            )
        },
        // No APOP timestamp: BEST uses CRAM-MD5 from CAPA.
        Case {
            apop: false,
            ..case(
                "billing",
                "billing-pop3-cram-md5",
                Protocol::Pop3,
                TlsMode::Implicit,
                Behavior::Healthy,
            )
        },
        // Logs in, but the password crosses the network unencrypted.
        case(
            "billing",
            "billing-cleartext",
            Protocol::Pop3,
            TlsMode::None,
            Behavior::CleartextOnly,
        ),
        Case {
            behavior: None,
            ..case(
                "billing",
                "billing-server-down",
                Protocol::Pop3,
                TlsMode::Implicit,
                Behavior::Healthy,
            )
        },
        // A Microsoft 365 style server that takes only OAuth2: the token comes from a file.
        Case {
            oauth2: true,
            ..case(
                "m365",
                "m365-imap-oauth2",
                Protocol::Imap,
                TlsMode::Implicit,
                Behavior::OAuthOnly,
            )
        },
    ]
}

/// The simulated servers and the config that points at them. Dropping it stops the servers
/// and removes the files.
pub struct Lab {
    servers: Vec<SimServer>,
    dir: PathBuf,
    config_file: PathBuf,
}

impl Lab {
    /// Starts one server per case on `127.0.0.1` and writes the config and the servers'
    /// certificate to a fresh temporary directory.
    pub async fn start() -> io::Result<Lab> {
        let dir = temp_dir()?;
        let ca_file = dir.join("demo-ca.pem");
        std::fs::write(&ca_file, &sim_certificate().cert_pem)?;
        let mut servers = Vec::new();
        let mut ports = Vec::new();
        for case in cases() {
            let port = match &case.behavior {
                Some(behavior) => {
                    let mut spec = SimSpec::new(case.protocol, case.tls, behavior.clone())
                        .user(user(&case), PASSWORD);
                    spec.apop = case.apop;
                    if case.oauth2 {
                        spec.oauth2_token = Some(TOKEN.into());
                    }
                    let server = SimServer::start(spec).await?;
                    let port = server.port();
                    servers.push(server);
                    port
                }
                None => dead_port()?,
            };
            ports.push(port);
        }
        let token_file = dir.join("demo-token");
        std::fs::write(&token_file, TOKEN)?;
        let config_file = dir.join("demo.yaml");
        std::fs::write(&config_file, config_yaml(&ports, &ca_file, &token_file))?;
        Ok(Lab {
            servers,
            dir,
            config_file,
        })
    }

    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// The simulated servers that are running (the dead one has none).
    pub fn servers(&self) -> &[SimServer] {
        &self.servers
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn user(case: &Case) -> String {
    format!("{}@demo.example", case.name)
}

/// A port on which nothing listens: bound, then released.
fn dead_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

fn temp_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "mailbox_exporter-demo-{}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary directory name",
    ))
}

/// The demo config, `ports[i]` serving `cases()[i]`.
fn config_yaml(ports: &[u16], ca_file: &Path, token_file: &Path) -> String {
    let mut yaml = format!(
        "interval: {}s\ntimeout: {}s\n\
         # The simulated servers share 127.0.0.1 and ban no one: a budget that holds no probe back.\n\
         failure_budget: {{failures: 1000, window: 1m}}\n\
         defaults:\n  ca_file: {:?}\ngroups:\n",
        DEMO_INTERVAL.as_secs(),
        DEMO_TIMEOUT.as_secs(),
        ca_file.display().to_string(),
    );
    let mut group = "";
    for (case, port) in cases().iter().zip(ports) {
        if case.group != group {
            group = case.group;
            let _ = writeln!(yaml, "  - name: {group}\n    accounts:");
        }
        let (protocol, tls) = (case.protocol, case.tls);
        let _ = write!(
            yaml,
            "      - name: {}\n        server: 127.0.0.1:{port}\n        protocol: {protocol}\n        \
             tls: {tls}\n        username: {}\n",
            case.name,
            user(case),
        );
        let _ = if case.oauth2 {
            writeln!(
                yaml,
                "        oauth2:\n          grant: token_file\n          token_file: {:?}",
                token_file.display().to_string()
            )
        } else {
            writeln!(yaml, "        password: {}", case.password)
        };
    }
    yaml
}

/// Runs the demo until `shutdown` completes.
pub async fn run(
    options: DemoOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let lab = Lab::start().await?;
    let running = app::start(RunOptions {
        config_file: lab.config_file().to_path_buf(),
        listen_address: options.listen_address.clone(),
        web_config_file: options.web_config_file,
        shard: None,
        enable_lifecycle: false,
    })
    .await?;
    let host = match options.listen_address.host.as_deref() {
        None | Some("0.0.0.0") | Some("::") => "localhost".to_string(),
        Some(host) if host.contains(':') => format!("[{host}]"),
        Some(host) => host.to_string(),
    };
    println!(
        "mailbox_exporter demo: {} simulated accounts; open {}://{host}:{}/ (metrics at /metrics); \
         every account is probed within {} s",
        cases().len(),
        running.scheme,
        running.addr.port(),
        DEMO_INTERVAL.as_secs()
    );
    shutdown.await;
    running.shutdown().await;
    drop(lab);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::verdict::{Method, Reason};

    /// Each case shows what it is there to show, through the real probe.
    #[tokio::test]
    async fn every_case_shows_its_point() {
        let lab = Lab::start().await.unwrap();
        let mut config = Config::load(lab.config_file()).unwrap();
        config
            .resolve_oauth2(&crate::oauth2::Tokens::default())
            .unwrap();
        assert_eq!(config.account_count(), cases().len());
        let groups: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(groups, ["support", "sales", "billing", "m365"]);
        assert!(config.accounts().all(|a| a.interval == DEMO_INTERVAL));

        let mut verdicts = std::collections::BTreeMap::new();
        for account in config.accounts() {
            let verdict = crate::probe::probe(&account.target, None).await;
            verdicts.insert(account.name.clone(), verdict);
        }
        let v = |name: &str| &verdicts[name];

        assert!(v("support-apop").success);
        assert_eq!(v("support-apop").method, Some(Method::Apop));
        assert!(v("support-imap-cram-md5").success);
        assert_eq!(v("support-imap-cram-md5").method, Some(Method::CramMd5));
        assert!(v("billing-pop3-cram-md5").success);
        assert_eq!(v("billing-pop3-cram-md5").method, Some(Method::CramMd5));

        let trap = v("sales-apop-trap");
        assert!(trap.success && trap.fallback, "{trap:?}");
        assert_eq!(trap.method, Some(Method::Pass));
        let advice = trap.advice.as_deref().unwrap_or_default();
        assert!(advice.contains("auth_mode: PASS"), "{advice}");

        let wrong = v("sales-wrong-password");
        assert!(!wrong.success);
        assert_eq!(wrong.reason, Some(Reason::AuthRejected));

        let cleartext = v("billing-cleartext");
        assert!(cleartext.success && cleartext.cleartext, "{cleartext:?}");

        let dead = v("billing-server-down");
        assert!(!dead.success);
        assert_eq!(dead.reason, Some(Reason::Connect));

        let oauth2 = v("m365-imap-oauth2");
        assert!(oauth2.success, "{oauth2:?}");
        assert_eq!(oauth2.method, Some(Method::Oauthbearer));

        let dir = lab.dir.clone();
        drop(lab);
        assert!(!dir.exists(), "the demo files are removed");
    }
}
