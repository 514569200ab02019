//! Private, real Cyrus IMAP instances (its `master` with `imapd` and `pop3d`) for integration
//! tests, one per test, started from a temporary directory and stopped when dropped.
//!
//! Debian's Cyrus packages conflict with Dovecot's, so `scripts/install-cyrus` unpacks them
//! into `target/peers/cyrus/root` instead of installing them; the programs run from there with
//! Cyrus's own shared libraries on `LD_LIBRARY_PATH`. Every file an instance uses (its
//! `imapd.conf`, `cyrus.conf`, SASL database, spool, sockets) lives in its temporary directory,
//! and every program gets the configuration on its command line, so nothing of a system Cyrus
//! is read.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::dovecot::{certificates, set_mode, signal, wait_until};

/// Where the unpacked Debian packages are looked for unless this variable names another root.
pub const ROOT_ENV: &str = "MAILBOX_EXPORTER_CYRUS_ROOT";

/// How long Cyrus may take to come up before the test fails with its output. Generous: each
/// readiness check forks a service process, slow on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Cyrus's master may take to stop its children after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports are picked this many times when another process grabs one first.
const START_ATTEMPTS: u32 = 3;
/// Bound on one readiness check (connect, TLS handshake, greeting).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Cyrus sees clients arrive from this address; it has no notion of a "secure" loopback, so
/// one address serves every flavor.
pub const LOCAL_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// The mailbox users, as in the Dovecot harness: a space, a double quote and an `@` in one
/// password, a backslash in the other.
const USER: &str = "alice";
const PASSWORD: &str = "p@ss word\"1";
const OTHER_USER: &str = "bob";
const OTHER_PASSWORD: &str = "b\\ck-slash 2";

/// The behaviour a test needs from Cyrus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Secrets in clear text in the SASL database (auxprop): the greeting carries an APOP
    /// timestamp, CAPA lists `SASL ... CRAM-MD5`, and APOP, CRAM-MD5, USER/PASS, PLAIN and
    /// LOGIN all work, over plain connections, STLS/STARTTLS and implicit TLS.
    Plaintext,
    /// Passwords checked by `saslauthd` (`sasl_pwcheck_method: saslauthd`), which can only
    /// say yes or no to a password, the way Cyrus runs against PAM, LDAP or shadow. Cyrus
    /// still puts an APOP timestamp in the greeting and lists CRAM-MD5, but has no secret to
    /// check them with: both are rejected exactly like a wrong password, while USER/PASS,
    /// PLAIN and LOGIN work. (`saslauthd` checks the password by logging in to a private IMAP
    /// service of the same instance that holds the clear-text secrets; clients never see it.)
    Saslauthd,
    /// Cyrus's defaults on top of [`Flavor::Plaintext`]'s secrets: `allowplaintext: 0`, so a
    /// plain connection hides PLAIN, LOGIN and USER (IMAP advertises LOGINDISABLED) but still
    /// offers APOP and CRAM-MD5, which never reveal the password.
    Defaults,
    /// `allowplaintext: 0`, no APOP and only PLAIN and LOGIN: a plain connection offers no way
    /// to log in (POP3 `USER` is refused, IMAP advertises LOGINDISABLED); after STLS/STARTTLS,
    /// or on the implicit-TLS ports, logins work.
    NoPlaintext,
}

impl Flavor {
    fn tag(self) -> &'static str {
        match self {
            Flavor::Plaintext => "plain",
            Flavor::Saslauthd => "saslauthd",
            Flavor::Defaults => "defaults",
            Flavor::NoPlaintext => "noplain",
        }
    }
}

/// A running Cyrus; stopped, and its directory removed, on drop.
#[derive(Debug)]
pub struct Cyrus {
    flavor: Flavor,
    servername: String,
    master: Child,
    saslauthd: Option<Child>,
    ports: Ports,
    ca_file: PathBuf,
    stderr: PathBuf,
    // Last, so it is removed after the processes that use it are gone.
    dir: TempDir,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    pop3: u16,
    pop3s: u16,
    imap: u16,
    imaps: u16,
    /// The private IMAP service `saslauthd` checks passwords against.
    secrets: u16,
}

/// The unpacked packages: programs and Cyrus's own shared libraries.
#[derive(Debug, Clone)]
struct Install {
    bin: PathBuf,
    libdir: PathBuf,
    saslpasswd2: PathBuf,
    saslauthd: PathBuf,
}

impl Install {
    /// The unpacked tree and the SASL tools, or a description of what is missing.
    fn find() -> Result<Self, String> {
        let root = std::env::var_os(ROOT_ENV).map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/cyrus/root"),
            PathBuf::from,
        );
        let bin = root.join("usr/lib/cyrus/bin");
        if !["master", "imapd", "pop3d"]
            .iter()
            .all(|p| bin.join(p).is_file())
        {
            return Err(format!("Cyrus IMAP unpacked in {}", root.display()));
        }
        let libdir = find_file(&root.join("usr/lib"), "libcyrus_min.so.0", 2)
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| format!("libcyrus_min.so.0 under {}", root.display()))?;
        let tool = |name: &str| {
            super::find_binary(name).ok_or_else(|| format!("{name} (apt-get install sasl2-bin)"))
        };
        Ok(Install {
            bin,
            libdir,
            saslpasswd2: tool("saslpasswd2")?,
            saslauthd: tool("saslauthd")?,
        })
    }
}

impl Cyrus {
    /// Starts an instance of `flavor` for `test`, or returns `None` after a loud skip message
    /// when Cyrus is not unpacked (a panic when peers are required).
    pub fn start_or_skip(flavor: Flavor, test: &str) -> Option<Self> {
        match Install::find() {
            Ok(install) => Some(Self::start_with(&install, flavor)),
            Err(missing) => {
                super::skip_or_panic(&missing_message(test, &missing));
                None
            }
        }
    }

    /// Starts an instance of `flavor`. Panics if Cyrus is missing or does not start.
    pub fn start(flavor: Flavor) -> Self {
        let install = Install::find()
            .unwrap_or_else(|missing| panic!("{}", missing_message("this test", &missing)));
        Self::start_with(&install, flavor)
    }

    fn start_with(install: &Install, flavor: Flavor) -> Self {
        let servername = servername(flavor);
        let layout = Layout::create(install, &servername);
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports();
            let imapd_conf = layout.imapd_conf(flavor, &servername);
            fs::write(&layout.imapd_conf, &imapd_conf).expect("write imapd.conf");
            fs::write(
                &layout.cyrus_conf,
                layout.cyrus_conf(install, flavor, ports),
            )
            .expect("write cyrus.conf");
            let mut saslauthd =
                (flavor == Flavor::Saslauthd).then(|| layout.start_saslauthd(install, ports));
            let mut master = Command::new(install.bin.join("master"))
                .arg("-C")
                .arg(&layout.imapd_conf)
                .arg("-M")
                .arg(&layout.cyrus_conf)
                .arg("-p")
                .arg(layout.dir.path().join("master.pid"))
                // Keeps stderr open: without a syslog daemon it is where fatal errors go.
                .arg("-D")
                // Its own process group: on SIGTERM the master signals its whole group, which
                // would otherwise be the test process and its parents.
                .process_group(0)
                .env("LD_LIBRARY_PATH", &install.libdir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&layout.stderr).expect("create stderr file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run Cyrus's master: {e}"));
            let ready =
                wait_until_ready(&mut master, saslauthd.as_mut(), &layout, &servername, ports);
            match ready {
                Ok(()) => {
                    return Cyrus {
                        flavor,
                        servername,
                        master,
                        saslauthd,
                        ports,
                        ca_file: layout.ca_file.clone(),
                        stderr: layout.stderr.clone(),
                        dir: layout.dir,
                    };
                }
                Err(why) => {
                    stop(&mut master, saslauthd.as_mut(), layout.dir.path());
                    let stderr = fs::read_to_string(&layout.stderr).unwrap_or_default();
                    let _ = write!(
                        failures,
                        "attempt {attempt}: {why}\n--- stderr ---\n{stderr}\n--- imapd.conf ---\n{imapd_conf}\n"
                    );
                    // Only a port taken between picking and binding is worth another try.
                    if !why.contains("not ours") && !why.contains("not ready") {
                        break;
                    }
                }
            }
        }
        panic!("Cyrus ({}) did not start\n{failures}", flavor.tag());
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The name Cyrus greets with, unique per instance (and its SASL realm).
    pub fn servername(&self) -> &str {
        &self.servername
    }

    /// The name to verify the certificate against: the listening IP, as text.
    pub fn tls_domain(&self) -> String {
        LOCAL_IP.to_string()
    }

    /// POP3 without TLS; STLS is offered.
    pub fn pop3_addr(&self) -> SocketAddr {
        SocketAddr::new(LOCAL_IP, self.ports.pop3)
    }

    /// POP3 over implicit TLS.
    pub fn pop3s_addr(&self) -> SocketAddr {
        SocketAddr::new(LOCAL_IP, self.ports.pop3s)
    }

    /// IMAP without TLS; STARTTLS is offered.
    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::new(LOCAL_IP, self.ports.imap)
    }

    /// IMAP over implicit TLS.
    pub fn imaps_addr(&self) -> SocketAddr {
        SocketAddr::new(LOCAL_IP, self.ports.imaps)
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

    /// PEM file of the CA that signed the server certificate (for 127.0.0.1).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// What Cyrus wrote to stderr so far (its log goes to syslog, when there is one).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The temporary directory holding configuration, SASL database, sockets and mail.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        stop(&mut self.master, self.saslauthd.as_mut(), self.dir.path());
        if thread::panicking() {
            eprintln!(
                "--- cyrus ({}) stderr ---\n{}",
                self.flavor.tag(),
                self.stderr()
            );
        }
    }
}

fn missing_message(test: &str, missing: &str) -> String {
    format!(
        "SKIPPED (real peer missing): {test} needs {missing}; \
         scripts/install-cyrus sets it up (scripts/test does too)"
    )
}

/// A greeting name no other instance, in this or a concurrent test process, uses.
fn servername(flavor: Flavor) -> String {
    static INSTANCES: AtomicU32 = AtomicU32::new(0);
    format!(
        "mbxt-cyrus-{}-{}-{}",
        flavor.tag(),
        std::process::id(),
        INSTANCES.fetch_add(1, Ordering::Relaxed)
    )
}

/// Files of one instance, all inside its temporary directory.
struct Layout {
    dir: TempDir,
    imapd_conf: PathBuf,
    cyrus_conf: PathBuf,
    stderr: PathBuf,
    sasldb: PathBuf,
    saslauthd_dir: PathBuf,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    /// Who Cyrus's services run as: as root, "nobody"; otherwise the current user.
    cyrus_user: String,
    cyrus_group: String,
}

impl Layout {
    fn create(install: &Install, servername: &str) -> Self {
        // Unix socket paths are limited to ~108 bytes, so stay near the root.
        let parent = std::env::temp_dir();
        let parent = if parent.as_os_str().len() <= 40 {
            parent
        } else {
            PathBuf::from("/tmp")
        };
        let dir = tempfile::Builder::new()
            .prefix("cyt")
            .tempdir_in(parent)
            .expect("create temp dir");
        let path = dir.path().to_path_buf();
        let (cyrus_user, cyrus_group, owner) = cyrus_identity();
        let layout = Layout {
            imapd_conf: path.join("imapd.conf"),
            cyrus_conf: path.join("cyrus.conf"),
            stderr: path.join("master.stderr"),
            sasldb: path.join("sasldb2"),
            saslauthd_dir: path.join("saslauthd"),
            ca_file: path.join("ca.pem"),
            cert_file: path.join("cert.pem"),
            key_file: path.join("key.pem"),
            cyrus_user,
            cyrus_group,
            dir,
        };

        let (ca_pem, cert_pem, key_pem) = certificates();
        fs::write(&layout.ca_file, ca_pem).expect("write CA");
        fs::write(&layout.cert_file, cert_pem).expect("write certificate");
        fs::write(&layout.key_file, key_pem).expect("write key");
        set_mode(&layout.key_file, 0o600);

        for user in [(USER, PASSWORD), (OTHER_USER, OTHER_PASSWORD)] {
            set_sasl_password(install, &layout.sasldb, servername, user.0, user.1);
        }
        for sub in [
            "conf",
            "conf/db",
            "conf/socket",
            "spool",
            "run/proc",
            "run/lock",
        ] {
            fs::create_dir_all(path.join(sub)).expect("create Cyrus directory");
        }
        fs::create_dir(&layout.saslauthd_dir).expect("create saslauthd directory");
        // Cyrus's services run as `cyrus_user` and own everything they write; saslauthd runs
        // as the caller and only needs its own directory.
        set_mode(&path, 0o755);
        if let Some((uid, gid)) = owner {
            chown_tree(&path, uid, gid);
        }
        layout
    }

    fn imapd_conf(&self, flavor: Flavor, servername: &str) -> String {
        let dir = self.dir.path().display();
        let mut conf = format!(
            r#"# Written by the integration tests; nothing of a system Cyrus is read.
servername: {servername}
configdirectory: {dir}/conf
proc_path: {dir}/run/proc
mboxname_lockpath: {dir}/run/lock
defaultpartition: default
partition-default: {dir}/spool
lmtpsocket: {dir}/run/lmtp
idlesocket: {dir}/run/idle
notifysocket: {dir}/run/notify
syslog_prefix: {servername}
cyrus_user: {user}
cyrus_group: {group}
# A login creates the user's INBOX; POP3 refuses a user without one.
autocreate_quota: 0
# Tests only: a rejected login is answered at once instead of after 3 s.
failedloginpause: 0
tls_server_cert: {cert}
tls_server_key: {key}
# Cyrus's default is 0: no password over a connection without TLS. Flavors other than
# NoPlaintext, and the private service saslauthd logs in to, take them, as Debian's
# imapd.conf does.
allowplaintext: 1
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {sasldb}
"#,
            user = self.cyrus_user,
            group = self.cyrus_group,
            cert = self.cert_file.display(),
            key = self.key_file.display(),
            sasldb = self.sasldb.display(),
        );
        // Settings for the client-facing services only, by Cyrus's `<service>_<option>` rule;
        // the private `secrets` service keeps the defaults above.
        let client_services = ["pop3", "pop3s", "imap", "imaps"];
        let overrides: &[(&str, String)] = match flavor {
            Flavor::Plaintext => &[],
            Flavor::Saslauthd => &[
                ("sasl_pwcheck_method", "saslauthd".into()),
                (
                    "sasl_saslauthd_path",
                    self.saslauthd_dir.join("mux").display().to_string(),
                ),
                // No SASL database: nothing holds a secret CRAM-MD5 or APOP could use.
                (
                    "sasl_sasldb_path",
                    self.dir.path().join("no-sasldb").display().to_string(),
                ),
            ],
            Flavor::Defaults => &[("allowplaintext", "0".into())],
            Flavor::NoPlaintext => &[
                ("allowplaintext", "0".into()),
                ("allowapop", "0".into()),
                ("sasl_mech_list", "PLAIN LOGIN".into()),
            ],
        };
        for service in client_services {
            for (option, value) in overrides {
                writeln!(conf, "{service}_{option}: {value}").expect("write to String");
            }
        }
        conf
    }

    fn cyrus_conf(&self, install: &Install, flavor: Flavor, ports: Ports) -> String {
        let conf = self.imapd_conf.display();
        let program = |name: &str| install.bin.join(name).display().to_string();
        let (pop3d, imapd) = (program("pop3d"), program("imapd"));
        let Ports {
            pop3,
            pop3s,
            imap,
            imaps,
            secrets,
        } = ports;
        let mut services = format!(
            r#"  pop3 cmd="{pop3d} -C {conf}" listen="{LOCAL_IP}:{pop3}" prefork=0
  pop3s cmd="{pop3d} -s -C {conf}" listen="{LOCAL_IP}:{pop3s}" prefork=0
  imap cmd="{imapd} -C {conf}" listen="{LOCAL_IP}:{imap}" prefork=0
  imaps cmd="{imapd} -s -C {conf}" listen="{LOCAL_IP}:{imaps}" prefork=0
"#
        );
        if flavor == Flavor::Saslauthd {
            writeln!(
                services,
                r#"  secrets cmd="{imapd} -C {conf}" listen="{LOCAL_IP}:{secrets}" prefork=0"#
            )
            .expect("write to String");
        }
        format!("START {{\n}}\nSERVICES {{\n{services}}}\nEVENTS {{\n}}\n")
    }

    /// `saslauthd` in the foreground (`-d`), answering on `<dir>/mux` by logging in to the
    /// instance's private `secrets` IMAP service (`rimap`).
    fn start_saslauthd(&self, install: &Install, ports: Ports) -> Child {
        Command::new(&install.saslauthd)
            .args(["-d", "-n", "0", "-a", "rimap", "-O"])
            .process_group(0)
            .arg(format!("{LOCAL_IP}/{}", ports.secrets))
            .arg("-m")
            .arg(&self.saslauthd_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.dir.path().join("saslauthd.stderr")).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", install.saslauthd.display()))
    }
}

/// Stores `password` for `user@realm` in clear text in the SASL database at `db`.
fn set_sasl_password(install: &Install, db: &Path, realm: &str, user: &str, password: &str) {
    let mut child = Command::new(&install.saslpasswd2)
        .arg("-p")
        .arg("-c")
        .arg("-f")
        .arg(db)
        .args(["-u", realm, user])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run saslpasswd2: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(password.as_bytes())
        .expect("write password to saslpasswd2");
    let out = child.wait_with_output().expect("wait for saslpasswd2");
    assert!(
        out.status.success(),
        "saslpasswd2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// As root: "nobody"/"nogroup" (uid 65534), which own the instance's files. Otherwise Cyrus
/// runs everything as the current user, who already owns them.
fn cyrus_identity() -> (String, String, Option<(u32, u32)>) {
    let me = fs::metadata("/proc/self").expect("/proc/self");
    let id = |flag: &str| {
        Command::new("id")
            .arg(flag)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| panic!("`id {flag}` failed"))
    };
    if me.uid() == 0 {
        let nobody = 65534;
        let group = group_name(nobody).unwrap_or_else(|| "nogroup".into());
        return ("nobody".into(), group, Some((nobody, nobody)));
    }
    (id("-un"), id("-gn"), None)
}

/// The name of group `gid` in /etc/group ("nogroup" on Debian, "nobody" elsewhere).
fn group_name(gid: u32) -> Option<String> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == gid).then(|| name.to_owned())
    })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// The first file called `name` at most `depth` directories below `dir`.
fn find_file(dir: &Path, name: &str, depth: u32) -> Option<PathBuf> {
    let candidate = dir.join(name);
    if candidate.exists() {
        return Some(candidate);
    }
    if depth == 0 {
        return None;
    }
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| find_file(&e.path(), name, depth - 1))
}

/// Five distinct ports free on [`LOCAL_IP`] right now. They are released before Cyrus binds
/// them, so another process can win the race; the caller then retries.
fn free_ports() -> Ports {
    let listeners: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind((LOCAL_IP, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("local addr").port();
    Ports {
        pop3: port(0),
        pop3s: port(1),
        imap: port(2),
        imaps: port(3),
        secrets: port(4),
    }
}

/// Ready means every service greets with this instance's name (over TLS on the implicit-TLS
/// ports), which also proves the port is ours and not a stranger's, and `saslauthd`, when
/// there is one, accepts connections on its socket.
fn wait_until_ready(
    master: &mut Child,
    mut saslauthd: Option<&mut Child>,
    layout: &Layout,
    servername: &str,
    ports: Ports,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pending = vec![
        (ports.pop3, false),
        (ports.pop3s, true),
        (ports.imap, false),
        (ports.imaps, true),
    ];
    if saslauthd.is_some() {
        pending.push((ports.secrets, false));
    }
    let tls = tls_connector(&layout.ca_file);
    let mux = layout.saslauthd_dir.join("mux");
    let mut mux_ready = saslauthd.is_none();
    loop {
        if let Some(status) = master.try_wait().expect("try_wait master") {
            return Err(format!("Cyrus's master exited with {status}"));
        }
        if let Some(child) = saslauthd.as_deref_mut()
            && let Some(status) = child.try_wait().expect("try_wait saslauthd")
        {
            let log = fs::read_to_string(layout.dir.path().join("saslauthd.stderr"));
            return Err(format!(
                "saslauthd exited with {status}: {}",
                log.unwrap_or_default()
            ));
        }
        let mut still = Vec::new();
        for (port, implicit_tls) in pending {
            match greeting(port, implicit_tls.then_some(&tls)) {
                Some(line) if line.contains(servername) => {}
                Some(line) => {
                    return Err(format!("port {port} is not ours, it greets with {line:?}"));
                }
                None => still.push((port, implicit_tls)),
            }
        }
        pending = still;
        mux_ready = mux_ready || UnixStream::connect(&mux).is_ok();
        if pending.is_empty() && mux_ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not ready after {START_TIMEOUT:?}: ports {pending:?} silent, saslauthd ready: {mux_ready}"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn tls_connector(ca_file: &Path) -> native_tls::TlsConnector {
    let pem = fs::read(ca_file).expect("read CA");
    native_tls::TlsConnector::builder()
        .disable_built_in_roots(true)
        .add_root_certificate(native_tls::Certificate::from_pem(&pem).expect("CA PEM"))
        .build()
        .expect("TLS connector")
}

/// The first line a service sends, or `None` when it does not (yet) answer.
fn greeting(port: u16, tls: Option<&native_tls::TlsConnector>) -> Option<String> {
    let stream =
        TcpStream::connect_timeout(&SocketAddr::new(LOCAL_IP, port), PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let reader: Box<dyn Read> = match tls {
        Some(tls) => Box::new(tls.connect(&LOCAL_IP.to_string(), stream).ok()?),
        None => Box::new(stream),
    };
    let mut line = String::new();
    BufReader::new(reader.take(4096))
        .read_line(&mut line)
        .ok()?;
    (!line.is_empty()).then_some(line)
}

/// SIGTERM to the master, which stops its services; SIGKILL to whatever of the instance is
/// left after [`STOP_TIMEOUT`]. Every process of an instance names its directory on its
/// command line (the configuration file, saslauthd's socket directory).
fn stop(master: &mut Child, saslauthd: Option<&mut Child>, dir: &Path) {
    signal("TERM", &[master.id()]);
    if let Some(child) = saslauthd {
        signal("TERM", &[child.id()]);
        if !wait_until(STOP_TIMEOUT, || child.try_wait().ok().flatten().is_some()) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
    if !wait_until(STOP_TIMEOUT, || master.try_wait().ok().flatten().is_some()) {
        let _ = master.kill();
    }
    let _ = master.wait();
    if !wait_until(STOP_TIMEOUT, || processes_mentioning(dir).is_empty()) {
        signal("KILL", &processes_mentioning(dir));
    }
}

/// Pids of the processes whose command line mentions `dir`.
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    super::proc::pids_where(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
}
