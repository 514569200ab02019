//! Private, real Dovecot instances for integration tests, one per test, started from a
//! temporary directory with `dovecot -F -c CONF` and stopped when dropped.
//!
//! Nothing of the system's Dovecot is used: the configuration includes no system file, and
//! `instance_name`, `base_dir`, `state_dir` and the log live in the temporary directory, so
//! several instances (and a packaged Dovecot) run side by side.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use super::OAuth2Provider;

/// How long Dovecot may take to come up before the test fails with its log.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Dovecot's children may take to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports are picked this many times when another process grabs one first.
const START_ATTEMPTS: u32 = 5;

/// The loopback address a client connects from and to by default. Dovecot treats a plain
/// connection whose two ends share an IP as secure.
pub const LOCAL_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// A second loopback address (Linux routes all of 127/8 to `lo`). A server listening here
/// sees clients arrive from 127.0.0.1, a different IP, so plain connections are insecure.
pub const OTHER_LOCAL_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// The mailbox user every instance knows. Its password has a space, a double quote and an
/// `@`, so IMAP quoting and POP3 argument handling are exercised. (A `:` would end the field
/// in Dovecot's passwd-file.)
const USER: &str = "alice";
const PASSWORD: &str = "p@ss word\"1";
/// A second user, with a backslash (quoted as `\\` in IMAP) in its password.
const OTHER_USER: &str = "bob";
const OTHER_PASSWORD: &str = "b\\ck-slash 2";

/// Uid/gid the mailbox processes run as. As root Dovecot refuses uids below
/// `first_valid_uid` (500), and 65534 ("nobody") exists everywhere.
const MAIL_UID: u32 = 65534;

/// The behaviour a test needs from Dovecot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Passwords stored in clear text: APOP, CRAM-MD5, USER/PASS, PLAIN and LOGIN all work,
    /// over plain connections, STLS/STARTTLS and implicit TLS.
    Plaintext,
    /// The trap: passwords stored hashed while APOP and CRAM-MD5 stay enabled. The greeting
    /// carries an APOP timestamp and CAPA lists `SASL ... CRAM-MD5`, yet both are rejected
    /// exactly like a wrong password; USER/PASS, PLAIN and LOGIN work.
    Hashed,
    /// Listens on [`OTHER_LOCAL_IP`] with `disable_plaintext_auth = yes` and only PLAIN and
    /// LOGIN: plain connections advertise LOGINDISABLED / refuse USER; after STARTTLS/STLS (or
    /// on the implicit-TLS ports) logins work.
    Insecure,
    /// Like [`Flavor::Plaintext`] for PLAIN and LOGIN, plus XOAUTH2 and OAUTHBEARER checked
    /// by Dovecot's `oauth2` passdb against an [`OAuth2Provider`]'s introspection endpoint
    /// (see [`Dovecot::oauth2_or_skip`]).
    OAuth2,
}

impl Flavor {
    fn tag(self) -> &'static str {
        match self {
            Flavor::Plaintext => "plain",
            Flavor::Hashed => "hashed",
            Flavor::Insecure => "insecure",
            Flavor::OAuth2 => "oauth2",
        }
    }

    fn host(self) -> IpAddr {
        match self {
            Flavor::Plaintext | Flavor::Hashed | Flavor::OAuth2 => LOCAL_IP,
            Flavor::Insecure => OTHER_LOCAL_IP,
        }
    }
}

/// A running Dovecot; stopped, and its directory removed, on drop.
#[derive(Debug)]
pub struct Dovecot {
    flavor: Flavor,
    instance_name: String,
    child: Child,
    host: IpAddr,
    ports: Ports,
    ca_file: PathBuf,
    ca_pem: String,
    log_path: PathBuf,
    // Last, so it is removed after the process that uses it is gone.
    dir: TempDir,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    pop3: u16,
    pop3s: u16,
    imap: u16,
    imaps: u16,
}

impl Dovecot {
    /// Instance A: every method works. Panics if Dovecot is missing or does not start.
    pub fn plaintext() -> Self {
        Self::start(Flavor::Plaintext)
    }

    /// Instance B, the trap: APOP and CRAM-MD5 advertised but rejected.
    pub fn hashed() -> Self {
        Self::start(Flavor::Hashed)
    }

    /// Instance C: plaintext logins refused until the connection is TLS.
    pub fn insecure() -> Self {
        Self::start(Flavor::Insecure)
    }

    /// Starts an instance of `flavor` for `test`, or returns `None` after the loud skip message
    /// of [`super::dovecot_or_skip`] when Dovecot is not installed.
    pub fn start_or_skip(flavor: Flavor, test: &str) -> Option<Self> {
        assert_ne!(flavor, Flavor::OAuth2, "use Dovecot::oauth2_or_skip");
        let binary = super::dovecot_or_skip(test)?;
        Some(Self::start_with(&binary, flavor, None))
    }

    /// Starts a [`Flavor::OAuth2`] instance whose tokens `provider` vouches for, or returns
    /// `None` after the loud skip message when Dovecot is not installed.
    pub fn oauth2_or_skip(provider: &OAuth2Provider, test: &str) -> Option<Self> {
        Self::oauth2_mechanisms_or_skip(provider, "xoauth2 oauthbearer", test)
    }

    /// [`Dovecot::oauth2_or_skip`] offering only `mechanisms` for tokens (e.g. `"xoauth2"`:
    /// a client that prefers OAUTHBEARER must then use XOAUTH2).
    pub fn oauth2_mechanisms_or_skip(
        provider: &OAuth2Provider,
        mechanisms: &'static str,
        test: &str,
    ) -> Option<Self> {
        let binary = super::dovecot_or_skip(test)?;
        let backend = OAuth2Backend {
            introspection_url: provider.introspection_url(),
            ca_pem: provider.ca_pem().to_owned(),
            mechanisms,
        };
        Some(Self::start_with(&binary, Flavor::OAuth2, Some(&backend)))
    }

    /// Starts an instance of `flavor`. Panics if Dovecot is missing or does not start.
    pub fn start(flavor: Flavor) -> Self {
        assert_ne!(flavor, Flavor::OAuth2, "use Dovecot::oauth2_or_skip");
        let binary = super::find_binary(super::DOVECOT.binary).unwrap_or_else(|| {
            panic!(
                "{}",
                super::missing_peer_message(&super::DOVECOT, "this test")
            )
        });
        Self::start_with(&binary, flavor, None)
    }

    fn start_with(binary: &Path, flavor: Flavor, oauth2: Option<&OAuth2Backend>) -> Self {
        let layout = Layout::create(flavor, oauth2);
        let host = flavor.host();
        let mut failures = String::new();
        let mut config = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(host);
            let instance_name = instance_name(flavor);
            config = layout.config_text(flavor, &instance_name, host, ports);
            fs::write(&layout.config, &config).expect("write dovecot.conf");
            let log_offset = fs::metadata(&layout.log).map_or(0, |m| m.len());
            let mut child = Command::new(binary)
                .arg("-F")
                .arg("-c")
                .arg(&layout.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                // Errors found before the log is set up (a bad configuration) only reach stderr.
                .stderr(File::create(&layout.stderr).expect("create stderr file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            match wait_until_ready(&mut child, &layout.log, log_offset, host, ports) {
                Ok(()) => {
                    return Dovecot {
                        flavor,
                        instance_name,
                        child,
                        host,
                        ports,
                        ca_file: layout.ca_file.clone(),
                        ca_pem: layout.ca_pem.clone(),
                        log_path: layout.log.clone(),
                        dir: layout.dir,
                    };
                }
                Err(why) => {
                    stop(&mut child, &instance_name);
                    let log = read_from(&layout.log, log_offset);
                    let stderr = fs::read_to_string(&layout.stderr).unwrap_or_default();
                    let _ = write!(
                        failures,
                        "attempt {attempt}: {why}\n--- log ---\n{log}--- stderr ---\n{stderr}\n"
                    );
                    // Only a port taken between picking and binding is worth another try.
                    if !(log + &stderr).contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        // The temporary directory goes away with the panic, so show what was in it.
        panic!(
            "dovecot ({}) did not start\n{failures}--- {} ---\n{config}",
            flavor.tag(),
            layout.config.display()
        );
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Unique per instance; Dovecot's child processes are titled `dovecot-<instance_name>/...`.
    pub fn instance_name(&self) -> &str {
        &self.instance_name
    }

    /// The IP the instance listens on (also the name its certificate is valid for).
    pub fn host(&self) -> IpAddr {
        self.host
    }

    /// The name to verify the certificate against: the listening IP, as text.
    pub fn tls_domain(&self) -> String {
        self.host.to_string()
    }

    /// POP3 without TLS; STLS is offered.
    pub fn pop3_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.ports.pop3)
    }

    /// POP3 over implicit TLS.
    pub fn pop3s_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.ports.pop3s)
    }

    /// IMAP without TLS; STARTTLS is offered.
    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.ports.imap)
    }

    /// IMAP over implicit TLS.
    pub fn imaps_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.ports.imaps)
    }

    pub fn user(&self) -> &'static str {
        USER
    }

    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    pub fn other_user(&self) -> &'static str {
        OTHER_USER
    }

    pub fn other_password(&self) -> &'static str {
        OTHER_PASSWORD
    }

    /// PEM file of the CA that signed the server certificate (for "localhost", 127.0.0.1 and
    /// 127.0.0.3); a client trusts it as its only root.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A connector that trusts [`Self::ca_file`] and nothing else.
    pub fn tls_connector(&self) -> tokio_native_tls::TlsConnector {
        let ca = native_tls::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM");
        native_tls::TlsConnector::builder()
            .disable_built_in_roots(true)
            .add_root_certificate(ca)
            .build()
            .expect("TLS connector")
            .into()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The instance's log so far, for assertions and failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The temporary directory holding configuration, sockets, log and mail.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        stop(&mut self.child, &self.instance_name);
        // The log explains most failures ("auth failed", "Permission denied") and is deleted
        // with the directory; the test harness shows a failing test's output.
        if thread::panicking() {
            eprintln!(
                "--- dovecot ({}) log ---\n{}",
                self.flavor.tag(),
                self.log()
            );
        }
    }
}

/// Where the `oauth2` passdb checks tokens.
struct OAuth2Backend {
    introspection_url: String,
    ca_pem: String,
    /// The SASL mechanisms the oauth2 passdb serves, as Dovecot spells them.
    mechanisms: &'static str,
}

/// Files of one instance, all inside its temporary directory.
struct Layout {
    dir: TempDir,
    config: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
    passwd: PathBuf,
    ca_file: PathBuf,
    ca_pem: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    /// The `oauth2` passdb's settings file, for [`Flavor::OAuth2`].
    oauth2_conf: Option<PathBuf>,
    /// The token mechanisms, for [`Flavor::OAuth2`].
    oauth2_mechanisms: &'static str,
}

impl Layout {
    fn create(flavor: Flavor, oauth2: Option<&OAuth2Backend>) -> Self {
        // Unix socket paths are limited to ~108 bytes and Dovecot's live under base_dir,
        // so stay near the root when TMPDIR is deep.
        let parent = std::env::temp_dir();
        let parent = if parent.as_os_str().len() <= 40 {
            parent
        } else {
            PathBuf::from("/tmp")
        };
        let dir = tempfile::Builder::new()
            .prefix("dvt")
            .tempdir_in(parent)
            .expect("create temp dir");
        // Dovecot's auth process runs as its own unprivileged user and must reach the passwd
        // file; the mail processes run as MAIL_UID and create the maildirs.
        set_mode(dir.path(), 0o755);
        let mail = dir.path().join("mail");
        fs::create_dir(&mail).expect("create mail dir");
        set_mode(&mail, 0o1777);

        let (ca_pem, cert_pem, key_pem) = certificates();
        let layout = Layout {
            config: dir.path().join("dovecot.conf"),
            log: dir.path().join("dovecot.log"),
            stderr: dir.path().join("dovecot.stderr"),
            passwd: dir.path().join("passwd"),
            ca_file: dir.path().join("ca.pem"),
            ca_pem,
            cert_file: dir.path().join("cert.pem"),
            key_file: dir.path().join("key.pem"),
            oauth2_conf: oauth2.map(|_| dir.path().join("dovecot-oauth2.conf.ext")),
            oauth2_mechanisms: oauth2.map_or("", |b| b.mechanisms),
            dir,
        };
        fs::write(&layout.ca_file, &layout.ca_pem).expect("write CA");
        fs::write(&layout.cert_file, cert_pem).expect("write certificate");
        fs::write(&layout.key_file, key_pem).expect("write key");
        set_mode(&layout.key_file, 0o600);

        let mut passwd = String::new();
        for (user, password) in [(USER, PASSWORD), (OTHER_USER, OTHER_PASSWORD)] {
            let stored = match flavor {
                Flavor::Plaintext | Flavor::Insecure | Flavor::OAuth2 => {
                    format!("{{PLAIN}}{password}")
                }
                Flavor::Hashed => hash_password(password),
            };
            writeln!(passwd, "{user}:{stored}").expect("write to String");
        }
        fs::write(&layout.passwd, passwd).expect("write passwd");
        set_mode(&layout.passwd, 0o644);
        if let (Some(backend), Some(conf)) = (oauth2, &layout.oauth2_conf) {
            layout.write_oauth2(backend, conf);
        }
        layout
    }

    /// The `oauth2` passdb's settings: every token is introspected (RFC 7662, `token=...` in a
    /// POST), and only an answer with `"active": true` whose `username` is the login name
    /// lets the user in.
    fn write_oauth2(&self, backend: &OAuth2Backend, conf: &Path) {
        let ca_file = self.dir.path().join("oauth2-ca.pem");
        fs::write(&ca_file, &backend.ca_pem).expect("write OAuth2 CA");
        set_mode(&ca_file, 0o644);
        let text = format!(
            "# Written by the integration tests.\n\
             introspection_mode = post\n\
             introspection_url = {url}\n\
             username_attribute = username\n\
             active_attribute = active\n\
             active_value = true\n\
             tls_ca_cert_file = {ca}\n",
            url = backend.introspection_url,
            ca = ca_file.display(),
        );
        fs::write(conf, text).expect("write dovecot-oauth2.conf.ext");
        set_mode(conf, 0o644);
    }

    fn config_text(&self, flavor: Flavor, instance: &str, host: IpAddr, ports: Ports) -> String {
        let dir = self.dir.path().display();
        let (mechanisms, plaintext_disabled) = match flavor {
            Flavor::Plaintext | Flavor::Hashed => ("plain login apop cram-md5", "no"),
            Flavor::Insecure => ("plain login", "yes"),
            Flavor::OAuth2 => ("plain login", "no"),
        };
        let mechanisms = format!("{mechanisms} {}", self.oauth2_mechanisms);
        let mechanisms = mechanisms.trim_end();
        // Tokens go to the oauth2 passdb only, passwords to the passwd-file only.
        let (oauth2_passdb, password_mechanisms) = match &self.oauth2_conf {
            Some(conf) => (
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = {}\n  \
                     args = {}\n}}\n",
                    self.oauth2_mechanisms,
                    conf.display()
                ),
                "  mechanisms = plain login\n",
            ),
            None => (String::new(), ""),
        };
        let Ports {
            pop3,
            pop3s,
            imap,
            imaps,
        } = ports;
        let Identity {
            uid,
            gid,
            settings: users,
        } = process_identity();
        format!(
            r#"# Written by the integration tests; includes nothing from the system configuration.
instance_name = {instance}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {log}
auth_verbose = yes
{users}
protocols = pop3 imap
listen = {host}
login_greeting = Dovecot ready.
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = {plaintext_disabled}
auth_mechanisms = {mechanisms}
# Tests only: a rejected login is answered on the next tick of Dovecot's 500 ms failure
# timer instead of after 2 s.
auth_failure_delay = 0
first_valid_uid = {uid}
mail_location = maildir:{dir}/mail/%u
{oauth2_passdb}passdb {{
  driver = passwd-file
{password_mechanisms}  args = {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/mail/%u
}}
# Tests only: without its socket the auth process cannot reach anvil and skips the per-IP
# penalty (2, 4, 8, 15 s delays after failures), which would make tests that fail on purpose
# slow and order-dependent.
# No chroot: only root may chroot, and a non-root developer runs these tests too.
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
"#,
            log = self.log.display(),
            cert = self.cert_file.display(),
            key = self.key_file.display(),
            passwd = self.passwd.display(),
        )
    }
}

/// A name no other instance, in this or a concurrent test process, uses.
fn instance_name(flavor: Flavor) -> String {
    static INSTANCES: AtomicU32 = AtomicU32::new(0);
    format!(
        "mbxt-{}-{}-{}",
        flavor.tag(),
        std::process::id(),
        INSTANCES.fetch_add(1, Ordering::Relaxed)
    )
}

/// Who Dovecot's processes run as.
struct Identity {
    uid: u32,
    gid: u32,
    /// Settings naming the unprivileged users and group.
    settings: String,
}

/// As root: the packaged `dovecot`/`dovenull` users, and [`MAIL_UID`] for mail. Otherwise
/// Dovecot can only run everything as the current user and group.
fn process_identity() -> Identity {
    let me = fs::metadata("/proc/self").expect("/proc/self");
    if me.uid() == 0 {
        return Identity {
            uid: MAIL_UID,
            gid: MAIL_UID,
            settings: String::new(),
        };
    }
    let id = |flag: &str| {
        Command::new("id")
            .arg(flag)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| panic!("`id {flag}` failed"))
    };
    let (user, group) = (id("-un"), id("-gn"));
    Identity {
        uid: me.uid(),
        gid: me.gid(),
        settings: format!(
            "default_login_user = {user}\ndefault_internal_user = {user}\n\
             default_internal_group = {group}"
        ),
    }
}

/// A CA, and a server certificate it signed for every name a test connects to.
/// Returns (CA PEM, server certificate PEM, server key PEM).
pub(super) fn certificates() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mailbox_exporter test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let names = ["localhost", "127.0.0.1", "127.0.0.3"].map(String::from);
    let mut params = CertificateParams::new(names.to_vec()).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// `{SHA512-CRYPT}...` for `password`, made by Dovecot's own tool so the scheme is one this
/// Dovecot verifies. `-O` keeps doveadm away from the system configuration.
fn hash_password(password: &str) -> String {
    let doveadm = super::find_binary("doveadm").expect("doveadm is installed with dovecot-core");
    let out = Command::new(doveadm)
        .args(["-O", "pw", "-s", "SHA512-CRYPT", "-p", password])
        .stdin(Stdio::null())
        .output()
        .expect("run doveadm pw");
    let hash = String::from_utf8(out.stdout).expect("UTF-8 hash");
    let hash = hash.trim();
    assert!(
        out.status.success() && hash.starts_with("{SHA512-CRYPT}$6$"),
        "doveadm pw failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    hash.to_owned()
}

/// Four distinct ports free on `host` right now. They are released before Dovecot binds
/// them, so another process can win the race; the caller retries on "Address already in use".
fn free_ports(host: IpAddr) -> Ports {
    // Held together so the kernel hands out four different ports.
    let listeners: Vec<TcpListener> = (0..4)
        .map(|_| {
            TcpListener::bind((host, 0))
                .unwrap_or_else(|e| panic!("cannot bind {host}:0 ({e}); is {host} on lo?"))
        })
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("local addr").port();
    Ports {
        pop3: port(0),
        pop3s: port(1),
        imap: port(2),
        imaps: port(3),
    }
}

/// Ready means the master logged "starting up" (it binds every listener before that, so
/// the ports are ours, not a stranger's) and every port accepts connections.
fn wait_until_ready(
    child: &mut Child,
    log: &Path,
    log_offset: u64,
    host: IpAddr,
    ports: Ports,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addrs =
        [ports.pop3, ports.pop3s, ports.imap, ports.imaps].map(|p| SocketAddr::new(host, p));
    loop {
        if let Some(status) = child.try_wait().expect("try_wait dovecot") {
            return Err(format!("dovecot exited with {status}"));
        }
        let started = read_from(log, log_offset).contains("starting up");
        if started
            && addrs
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready after {START_TIMEOUT:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the master, then its children. A graceful SIGTERM would cost a second per
/// instance and still leave children behind for a moment; instead the children that do not
/// exit on their own when the master dies (a mail process serving an open session, and the
/// log process it writes to) get SIGTERM, and SIGKILL if that hangs.
fn stop(child: &mut Child, instance: &str) {
    let _ = child.kill();
    let _ = child.wait();
    if wait_until(Duration::from_millis(100), || {
        processes_titled(instance).is_empty()
    }) {
        return;
    }
    signal("TERM", &processes_titled(instance));
    if !wait_until(STOP_TIMEOUT, || processes_titled(instance).is_empty()) {
        signal("KILL", &processes_titled(instance));
    }
}

/// Polls `done` until it holds (true) or `timeout` passes (false).
pub(super) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Sends `signal` through the shell's builtin `kill`, which needs neither unsafe code nor a
/// dependency, nor a `kill` binary (absent from slim images).
pub(super) fn signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -{signal} \"$@\""), "sh"])
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pids of the processes Dovecot titled `dovecot-<instance>/<service>`, which is how every
/// child of this instance's master names itself.
fn processes_titled(instance: &str) -> Vec<u32> {
    let title = format!("dovecot-{instance}/");
    super::proc::pids_where(|cmdline| cmdline.starts_with(title.as_bytes()))
}

fn read_from(path: &Path, offset: u64) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

pub(super) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
