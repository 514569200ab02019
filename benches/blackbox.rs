//! Side by side with Debian's `prometheus-blackbox-exporter`: CPU per 1,000 successful logins
//! of each exporter, paced at the same login rate against the same accounts on one real
//! Dovecot, for POP3, POP3S, IMAP and IMAPS.
//!
//! `cargo bench --bench blackbox` runs the full measurement (200 logins a second, 20 s per
//! exporter and protocol); under `cargo test` it runs a short smoke version so that it keeps
//! working. Both exporters run as separate processes (`mailbox_exporter` is this package's
//! binary, built with the bench's profile) and only their CPU is counted, read from
//! `/proc/PID/stat` at the start and end of each window. Logins are counted on the server
//! side, from Dovecot's `Login:` log lines in the same window. The two exporters are measured
//! one after the other, never at the same time, so they do not compete for the cores.
//!
//! blackbox_exporter probes only when asked: a driver in this process (its CPU is not
//! counted) sends `GET /probe?module=...&target=...` at the paced rate, one module per account
//! with a `tcp` prober whose `query_response` logs in (USER/PASS, `a LOGIN`). The
//! mailbox_exporter paces itself: one account per login a second, probed every second.

#[path = "common/proc.rs"]
mod proc;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REQUIRE_PEERS_ENV: &str = "MAILBOX_EXPORTER_REQUIRE_PEERS";
/// The password of every bench account: nothing an IMAP `LOGIN` would have to quote.
const PASSWORD: &str = "bench-password-1";
/// The uid Dovecot's mail processes run as when the bench runs as root (Dovecot refuses uids
/// below 500 there; 65534 is "nobody" everywhere).
const MAIL_UID: u32 = 65534;
/// How long a smoke-run window may wait for its first login.
const SMOKE_LOGIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a peer may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What one run measures.
struct Settings {
    /// Logins a second asked of each exporter; also the number of accounts, since the
    /// mailbox_exporter probes each account once a second.
    rate: usize,
    /// Before each window: lets the exporter reach its steady state.
    warmup: Duration,
    window: Duration,
    /// Smoke run: a window lasts until a login is counted (up to [`SMOKE_LOGIN_DEADLINE`]).
    wait_for_a_login: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pop3,
    Pop3s,
    Imap,
    Imaps,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Pop3, Kind::Pop3s, Kind::Imap, Kind::Imaps];

    fn name(self) -> &'static str {
        match self {
            Kind::Pop3 => "pop3",
            Kind::Pop3s => "pop3s",
            Kind::Imap => "imap",
            Kind::Imaps => "imaps",
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            Kind::Pop3 | Kind::Pop3s => "pop3",
            Kind::Imap | Kind::Imaps => "imap",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Kind::Pop3s | Kind::Imaps)
    }
}

/// One exporter's figures for one protocol.
#[derive(Debug, Clone, Copy)]
struct Sample {
    logins: u64,
    seconds: f64,
    cpu_seconds: f64,
}

impl Sample {
    fn cpu_ms_per_1000(&self) -> f64 {
        if self.logins == 0 {
            return f64::NAN;
        }
        self.cpu_seconds * 1000.0 / self.logins as f64 * 1000.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    // `cargo bench --bench blackbox -- pop3s imaps` measures only those protocols.
    let chosen: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| args.iter().any(|a| a == k.name()))
        .collect();
    let kinds = if chosen.is_empty() {
        Kind::ALL.to_vec()
    } else {
        chosen
    };
    let Some(peers) = Peers::find_or_skip() else {
        return;
    };
    let settings = if full {
        Settings {
            rate: 200,
            warmup: Duration::from_secs(4),
            window: Duration::from_secs(20),
            wait_for_a_login: false,
        }
    } else {
        Settings {
            rate: 10,
            warmup: Duration::from_millis(1500),
            window: Duration::from_secs(1),
            wait_for_a_login: true,
        }
    };
    println!("== mailbox_exporter vs blackbox_exporter, CPU per 1,000 successful logins ==");
    println!("machine: {}", machine());
    println!(
        "paced at {} logins/s over {} accounts, {:?} window per exporter and protocol",
        settings.rate, settings.rate, settings.window
    );
    let dovecot = Dovecot::start(&peers.dovecot, settings.rate);
    let mut rows = Vec::new();
    for kind in kinds {
        let ours = measure_ours(&dovecot, kind, &settings);
        let theirs = measure_blackbox(&peers.blackbox, &dovecot, kind, &settings);
        rows.push((kind, ours, theirs));
    }
    println!("{}", table(&rows));
    let trouble = dovecot.trouble();
    if !trouble.is_empty() {
        println!("Dovecot's warnings and errors (first of each kind):\n{trouble}");
    }
    // The smoke run proves the bench works end to end; no timing is asserted.
    for (kind, ours, theirs) in &rows {
        assert!(
            ours.logins > 0 && theirs.logins > 0,
            "{}: no logins counted (mailbox_exporter {}, blackbox_exporter {})\n--- dovecot log ---\n{}",
            kind.name(),
            ours.logins,
            theirs.logins,
            dovecot.log_tail()
        );
    }
}

fn table(rows: &[(Kind, Sample, Sample)]) -> String {
    let mut out = String::from(
        "| protocol | logins/s (ours / blackbox) | mailbox_exporter CPU ms per 1,000 logins | \
         blackbox_exporter CPU ms per 1,000 logins | ratio (ours / blackbox) |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for (kind, ours, theirs) in rows {
        let (a, b) = (ours.cpu_ms_per_1000(), theirs.cpu_ms_per_1000());
        let _ = writeln!(
            out,
            "| {} | {:.0} / {:.0} | {:.0} | {:.0} | {:.2} (1/{:.1}) |",
            kind.name().to_uppercase(),
            ours.logins as f64 / ours.seconds,
            theirs.logins as f64 / theirs.seconds,
            a,
            b,
            a / b,
            b / a
        );
    }
    out
}

/// The mailbox_exporter binary with one account per login a second, each probed every second.
fn measure_ours(dovecot: &Dovecot, kind: Kind, settings: &Settings) -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    let tls = if kind.tls() { "implicit" } else { "none" };
    let auth_mode = if kind.protocol() == "pop3" {
        ", auth_mode: PASS"
    } else {
        ""
    };
    let mut text = String::from(
        "interval: 1s\ntimeout: 900ms\nconcurrency: 64\nper_server_concurrency: 64\n\
         groups:\n  - name: bench\n    accounts:\n",
    );
    for i in 0..settings.rate {
        let _ = writeln!(
            text,
            "      - {{ name: {kind}-{i:04}, protocol: {protocol}, tls: {tls}, server: \"{addr}\", \
             username: {user}, password: {PASSWORD}, ca_file: {ca}{auth_mode} }}",
            kind = kind.name(),
            protocol = kind.protocol(),
            addr = dovecot.addr(kind),
            user = Dovecot::user(i),
            ca = dovecot.ca_file.display(),
        );
    }
    fs::write(&config, text).unwrap();
    let (child, _) = serve(
        Path::new(env!("CARGO_BIN_EXE_mailbox_exporter")),
        &config,
        dir.path(),
    );
    thread::sleep(settings.warmup);
    let sample = window(dovecot, kind, child.0.id(), settings);
    drop(child);
    sample
}

/// Starts an exporter (`binary`: ours or blackbox_exporter, which take the same two flags)
/// on `config`, its stderr in `dir`, and waits until it listens.
fn serve(binary: &Path, config: &Path, dir: &Path) -> (Running, SocketAddr) {
    let listen = free_port();
    let name = binary.file_name().unwrap_or_default().to_string_lossy();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let mut child = Running(child);
    wait_for_port(listen, &mut child.0, &name);
    (child, listen)
}

/// Debian's blackbox_exporter, asked for one login per account in turn at the paced rate.
fn measure_blackbox(binary: &Path, dovecot: &Dovecot, kind: Kind, settings: &Settings) -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blackbox.yml");
    let mut text = String::from("modules:\n");
    for i in 0..settings.rate {
        let user = Dovecot::user(i);
        // The dialogue: what to expect, what to send (blackbox_exporter adds the newline).
        let steps = match kind.protocol() {
            "pop3" => vec![
                ("expect", "^\\\\+OK".to_owned()),
                ("send", format!("USER {user}")),
                ("expect", "^\\\\+OK".to_owned()),
                ("send", format!("PASS {PASSWORD}")),
                ("expect", "^\\\\+OK".to_owned()),
                ("send", "QUIT".to_owned()),
            ],
            _ => vec![
                ("expect", "^\\\\* OK".to_owned()),
                ("send", format!("a LOGIN {user} {PASSWORD}")),
                ("expect", "^a OK".to_owned()),
                ("send", "b LOGOUT".to_owned()),
            ],
        };
        let _ = write!(
            text,
            "  {}_{i}:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      query_response:\n",
            kind.name()
        );
        for (verb, value) in steps {
            let _ = writeln!(text, "        - {verb}: \"{value}\"");
        }
        if kind.tls() {
            let _ = write!(
                text,
                "      tls: true\n      tls_config:\n        ca_file: {}\n",
                dovecot.ca_file.display()
            );
        }
    }
    fs::write(&config, text).unwrap();
    let (child, listen) = serve(binary, &config, dir.path());
    let modules = (0..settings.rate)
        .map(|i| format!("{}_{i}", kind.name()))
        .collect();
    let driver = Driver::start(listen, modules, dovecot.addr(kind), settings.rate);
    thread::sleep(settings.warmup);
    let sample = window(dovecot, kind, child.0.id(), settings);
    let (ok, failed, failed_seconds) = driver.stop();
    if failed > 0 {
        println!(
            "blackbox_exporter {}: {failed} of {} probes failed (mean probe_duration_seconds \
             of a failed probe: {:.2})",
            kind.name(),
            ok + failed,
            failed_seconds / failed as f64,
        );
    }
    drop(child);
    sample
}

/// Measures one window: the process's CPU and Dovecot's logins of this kind in it. The window
/// lasts `settings.window`, and in the smoke run longer if need be, until a login is counted
/// (a slow debug build on a busy machine may need a while for its first).
fn window(dovecot: &Dovecot, kind: Kind, pid: u32, settings: &Settings) -> Sample {
    let log_start = dovecot.log_len();
    let cpu_start = proc::cpu_seconds(&pid.to_string());
    let start = Instant::now();
    thread::sleep(settings.window);
    let deadline = start + SMOKE_LOGIN_DEADLINE;
    while settings.wait_for_a_login
        && dovecot.logins(kind, log_start, dovecot.log_len()) == 0
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(100));
    }
    let cpu = proc::cpu_seconds(&pid.to_string()) - cpu_start;
    let seconds = start.elapsed().as_secs_f64();
    let log_end = dovecot.log_len();
    Sample {
        logins: dovecot.logins(kind, log_start, log_end),
        seconds,
        cpu_seconds: cpu,
    }
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends blackbox_exporter one probe request per tick, cycling through the modules.
struct Driver {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Sum of the failed probes' `probe_duration_seconds`, in microseconds.
    failed_micros: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl Driver {
    fn start(listen: SocketAddr, modules: Vec<String>, target: SocketAddr, rate: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failed_micros = Arc::new(AtomicU64::new(0));
        let (s, o, f, m) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            failed_micros.clone(),
        );
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
                let mut tasks = tokio::task::JoinSet::new();
                for module in modules.iter().cycle() {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    tick.tick().await;
                    let request = format!(
                        "GET /probe?module={module}&target={target} HTTP/1.1\r\n\
                         Host: bench\r\nConnection: close\r\n\r\n"
                    );
                    let (o, f, m) = (o.clone(), f.clone(), m.clone());
                    tasks.spawn(async move {
                        match probe(listen, &request).await {
                            Ok(()) => o.fetch_add(1, Ordering::Relaxed),
                            Err(seconds) => {
                                m.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
                                f.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    });
                    while tasks.try_join_next().is_some() {}
                }
                while tasks.join_next().await.is_some() {}
            });
        });
        Driver {
            stop,
            ok,
            failed,
            failed_micros,
            thread,
        }
    }

    /// Stops sending and waits for the probes in flight; returns the successful and failed
    /// probes, and the failed ones' total duration in seconds.
    fn stop(self) -> (u64, u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.failed_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// One `/probe` request: `Ok` when blackbox_exporter reports `probe_success 1`, else the
/// `probe_duration_seconds` it reported (0 without an answer).
async fn probe(listen: SocketAddr, request: &str) -> Result<(), f64> {
    let Ok(mut stream) = tokio::net::TcpStream::connect(listen).await else {
        return Err(0.0);
    };
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Err(0.0);
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    if response.lines().any(|l| l == "probe_success 1") {
        return Ok(());
    }
    Err(response
        .lines()
        .find_map(|l| l.strip_prefix("probe_duration_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// The programs compared; `None` after a loud skip message when one is missing, unless
/// peers are required, which turns the skip into a failure.
struct Peers {
    dovecot: PathBuf,
    blackbox: PathBuf,
}

impl Peers {
    fn find_or_skip() -> Option<Self> {
        let dovecot = find_binary(&["dovecot"]);
        let blackbox = find_binary(&["prometheus-blackbox-exporter", "blackbox_exporter"]);
        let missing: Vec<&str> = [
            (
                dovecot.is_none(),
                "dovecot (dovecot-core dovecot-pop3d dovecot-imapd)",
            ),
            (
                blackbox.is_none(),
                "blackbox_exporter (prometheus-blackbox-exporter)",
            ),
        ]
        .into_iter()
        .filter_map(|(gone, what)| gone.then_some(what))
        .collect();
        if missing.is_empty() {
            return Some(Peers {
                dovecot: dovecot?,
                blackbox: blackbox?,
            });
        }
        let message = format!(
            "SKIPPED (real peer missing): the blackbox bench needs {} (apt-get install); \
             run scripts/test to run it",
            missing.join(" and ")
        );
        if std::env::var(REQUIRE_PEERS_ENV).is_ok_and(|v| v == "1") {
            panic!("{message} ({REQUIRE_PEERS_ENV}=1 makes a missing peer an error)");
        }
        let banner = "!".repeat(78);
        eprintln!("\n{banner}\n{message}\n{banner}");
        None
    }
}

/// Looks in `PATH`, then in the sbin directories (Debian puts dovecot there).
fn find_binary(names: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .collect();
    names.iter().find_map(|name| {
        dirs.iter().map(|d| d.join(name)).find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// A private Dovecot with `accounts` users in a plaintext passdb, listening on 127.0.0.1 for
/// POP3, POP3S, IMAP and IMAPS; stopped when dropped.
struct Dovecot {
    child: Child,
    instance: String,
    ports: [u16; 4],
    ca_file: PathBuf,
    log: PathBuf,
    // Last, so it is removed after the processes that use it are gone.
    _dir: TempDir,
}

impl Dovecot {
    fn user(i: usize) -> String {
        format!("bench{i:04}")
    }

    fn start(binary: &Path, accounts: usize) -> Self {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        // Dovecot's socket paths must stay short: stay near the root.
        let dir = tempfile::Builder::new()
            .prefix("dvb")
            .tempdir_in("/tmp")
            .unwrap();
        let path = dir.path();
        let chmod = |p: &Path, mode| fs::set_permissions(p, fs::Permissions::from_mode(mode));
        chmod(path, 0o755).unwrap();
        fs::create_dir(path.join("mail")).unwrap();
        chmod(&path.join("mail"), 0o1777).unwrap();
        let cert = mailbox_exporter::sim::sim_certificate();
        // The certificate is self-signed: it is its own CA.
        let ca_file = path.join("ca.pem");
        fs::write(&ca_file, &cert.cert_pem).unwrap();
        fs::write(path.join("key.pem"), &cert.key_pem).unwrap();
        chmod(&path.join("key.pem"), 0o600).unwrap();
        let passwd: String = (0..accounts)
            .map(|i| format!("{}:{{PLAIN}}{PASSWORD}\n", Self::user(i)))
            .collect();
        fs::write(path.join("passwd"), passwd).unwrap();
        chmod(&path.join("passwd"), 0o644).unwrap();

        let me = fs::metadata("/proc/self").unwrap();
        let (uid, gid, users) = if me.uid() == 0 {
            (MAIL_UID, MAIL_UID, String::new())
        } else {
            let id = |flag| {
                let out = Command::new("id").arg(flag).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            };
            let (user, group) = (id("-un"), id("-gn"));
            (
                me.uid(),
                me.gid(),
                format!(
                    "default_login_user = {user}\ndefault_internal_user = {user}\n\
                     default_internal_group = {group}\n"
                ),
            )
        };
        let instance = format!("mbxb-{}", std::process::id());
        let ports = [free_port(), free_port(), free_port(), free_port()].map(|a| a.port());
        let dir_text = path.display();
        let log = path.join("dovecot.log");
        // Only PLAIN and LOGIN, so that both exporters send the password the same way. The
        // login and mail processes serve many connections each (Dovecot's "high-performance"
        // mode) instead of a fork per login: Dovecot's own CPU is not measured, but it must
        // keep up on a small machine shared with both exporters.
        let config = format!(
            "instance_name = {instance}\nbase_dir = {dir_text}/run\nstate_dir = {dir_text}/state\n\
             log_path = {log}\n{users}protocols = pop3 imap\nlisten = 127.0.0.1\n\
             ssl = yes\nssl_cert = <{dir_text}/ca.pem\nssl_key = <{dir_text}/key.pem\n\
             disable_plaintext_auth = no\nauth_mechanisms = plain login\n\
             first_valid_uid = {uid}\nmail_location = maildir:{dir_text}/mail/%u\n\
             passdb {{\n  driver = passwd-file\n  args = {dir_text}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={dir_text}/mail/%u\n}}\n\
             service anvil {{\n  chroot =\n}}\n\
             service auth {{\n  client_limit = 4096\n}}\n\
             service pop3-login {{\n  chroot =\n  service_count = 0\n  process_min_avail = 2\n\
             \x20 inet_listener pop3 {{\n    port = {}\n  }}\n\
             \x20 inet_listener pop3s {{\n    port = {}\n    ssl = yes\n  }}\n}}\n\
             service imap-login {{\n  chroot =\n  service_count = 0\n  process_min_avail = 2\n\
             \x20 inet_listener imap {{\n    port = {}\n  }}\n\
             \x20 inet_listener imaps {{\n    port = {}\n    ssl = yes\n  }}\n}}\n\
             service pop3 {{\n  service_count = 0\n  process_min_avail = 4\n}}\n\
             service imap {{\n  service_count = 0\n  process_min_avail = 4\n}}\n",
            ports[0],
            ports[1],
            ports[2],
            ports[3],
            log = log.display(),
        );
        fs::write(path.join("dovecot.conf"), &config).unwrap();
        let child = Command::new(binary)
            .args(["-F", "-c"])
            .arg(path.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(path.join("stderr")).unwrap())
            .spawn()
            .expect("run dovecot");
        let mut dovecot = Dovecot {
            child,
            instance,
            ports,
            ca_file,
            log,
            _dir: dir,
        };
        for port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_for_port(addr, &mut dovecot.child, "dovecot");
        }
        dovecot
    }

    fn addr(&self, kind: Kind) -> SocketAddr {
        let port = self.ports[Kind::ALL.iter().position(|&k| k == kind).unwrap()];
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn log_len(&self) -> u64 {
        fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Successful logins of `kind` logged between two offsets of the log. Dovecot logs
    /// `<protocol>-login: Info: Login: user=<...>, ...` once per login, with `TLS` among the
    /// fields when the connection is TLS.
    fn logins(&self, kind: Kind, from: u64, to: u64) -> u64 {
        let mut file = File::open(&self.log).unwrap();
        let mut text = Vec::new();
        file.read_to_end(&mut text).unwrap();
        let end = (to as usize).min(text.len());
        let text = String::from_utf8_lossy(&text[(from as usize).min(end)..end]);
        let tag = format!("{}-login: Info: Login: user=<", kind.protocol());
        text.lines()
            .filter(|l| l.contains(&tag))
            .filter(|l| l.contains(", TLS") == kind.tls())
            .count() as u64
    }

    /// The first line of each kind of warning or error Dovecot logged: a server that cannot
    /// keep up shows here, and the figures then measure it rather than the exporters.
    fn trouble(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        let mut out = String::new();
        for line in text.lines().filter(|l| {
            l.contains(": Warning: ") || l.contains(": Error: ") || l.contains(": Fatal: ")
        }) {
            // The kind: the text after the level, up to the first digit or `<`.
            let kind: String = line
                .split_once(": Warning: ")
                .or_else(|| line.split_once(": Error: "))
                .map_or(line, |(_, rest)| rest)
                .chars()
                .take_while(|c| !c.is_ascii_digit() && *c != '<')
                .collect();
            if seen.insert(kind) && seen.len() <= 10 {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Children that outlive the master (log, mail processes) are titled
        // `dovecot-<instance>/...`.
        let title = format!("dovecot-{}/", self.instance);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = proc::pids_where(|cmdline| cmdline.starts_with(title.as_bytes()));
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            let _ = Command::new("sh")
                .args(["-c", "kill -TERM \"$@\"", "sh"])
                .args(pids.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until `addr` accepts connections; panics if `child` exits or it takes too long.
fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status} before listening on {addr}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {addr} after {START_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Core count and CPU model.
fn machine() -> String {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    format!("{cores} cores (nproc), {model}")
}
