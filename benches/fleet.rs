//! The exporter against 10,000 simulated mailboxes: probes per second, CPU seconds per 1,000
//! probes, peak RSS, schedule lag and the time to render /metrics.
//!
//! `cargo bench --bench fleet` runs the full measurement; under `cargo test` it runs a short
//! smoke version so that it keeps working. The simulated servers run in a child process (this
//! binary again) so that the CPU and memory figures are the exporter's own, and the exporter
//! runs on a single-threaded runtime: the figures are for one core.

#[path = "common/proc.rs"]
mod proc;

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailbox_exporter::app::{self, RunOptions};
use mailbox_exporter::sim::{Behavior, SimServer, SimSpec, sim_certificate};
use mailbox_exporter::verdict::{Protocol, TlsMode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// The exporter's allocator, as in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLE_ENV: &str = "MAILBOX_EXPORTER_BENCH_ROLE";
const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

/// One measured configuration.
struct Scenario {
    /// What `cargo bench --bench fleet -- KEY` selects it by.
    key: &'static str,
    name: &'static str,
    accounts: usize,
    servers: usize,
    interval: &'static str,
    /// How long to measure.
    window: Duration,
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("sims") {
        return serve_sims();
    }
    let full = std::env::args().any(|a| a == "--bench");
    let scenarios = if full {
        vec![
            // 10,000 accounts on a 5-minute interval: the first probes of every account are
            // spread over the 60 s start-up window, about 167 logins a second.
            Scenario {
                key: "startup",
                name: "10k accounts, start-up window (demand ~167 probes/s)",
                accounts: 10_000,
                servers: 100,
                interval: "5m",
                window: Duration::from_secs(65),
            },
            // Every account due every second: far more than one core can do, so the figure
            // is the pool's capacity.
            Scenario {
                key: "saturated",
                name: "10k accounts, saturated (interval 1s)",
                accounts: 10_000,
                servers: 100,
                interval: "1s",
                window: Duration::from_secs(20),
            },
        ]
    } else {
        vec![Scenario {
            key: "smoke",
            name: "smoke (run by cargo test)",
            accounts: 100,
            servers: 4,
            interval: "1s",
            window: Duration::from_secs(4),
        }]
    };
    // Arguments other than cargo's flags select scenarios by key; none selects all.
    let keys: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen = |s: &Scenario| keys.is_empty() || keys.iter().any(|k| k == s.key);
    for scenario in scenarios.into_iter().filter(chosen) {
        let report = run(&scenario);
        println!("{}", report);
        if !full {
            assert!(report.probes > 0, "the smoke run probed nothing");
        }
    }
}

struct Report {
    name: &'static str,
    accounts: usize,
    probes: u64,
    failures: u64,
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    /// At the end of the window, after the last scrapes.
    end_rss_mib: f64,
    /// The benchmark's process before the exporter started.
    start_rss_mib: f64,
    max_lag: f64,
    render_ms: Vec<f64>,
    metrics_bytes: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.probes as f64 / self.seconds;
        let cpu_per_k = if self.probes > 0 {
            self.cpu_seconds / self.probes as f64 * 1000.0
        } else {
            f64::NAN
        };
        let mut render = self.render_ms.clone();
        render.sort_by(f64::total_cmp);
        let median = render.get(render.len() / 2).copied().unwrap_or(f64::NAN);
        writeln!(f, "== {} ==", self.name)?;
        writeln!(f, "accounts:                {}", self.accounts)?;
        writeln!(
            f,
            "probes:                  {} in {:.1} s = {:.1} probes/s ({} failed)",
            self.probes, self.seconds, rate, self.failures
        )?;
        writeln!(
            f,
            "exporter CPU:            {:.2} s = {:.3} CPU s per 1,000 probes",
            self.cpu_seconds, cpu_per_k
        )?;
        writeln!(
            f,
            "RSS:                     peak {:.1} MiB (loading the config included), {:.1} MiB \
             at the end, {:.1} MiB before the exporter started",
            self.peak_rss_mib, self.end_rss_mib, self.start_rss_mib
        )?;
        writeln!(f, "max schedule lag:        {:.3} s", self.max_lag)?;
        write!(
            f,
            "GET /metrics:            median {:.1} ms over {} scrapes, {:.1} MiB of text",
            median,
            render.len(),
            self.metrics_bytes as f64 / 1_048_576.0
        )
    }
}

fn run(scenario: &Scenario) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, ports) = start_sims(scenario.servers, &dir.path().join("ca.pem"));
    let config = dir.path().join("config.yml");
    write_config(&config, dir.path(), scenario, &ports);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(measure(scenario, &config));
    drop(child.stdin.take());
    let _ = child.wait();
    report
}

async fn measure(scenario: &Scenario, config: &Path) -> Report {
    // The peak from here on: loading the config, probing and serving, not an earlier
    // scenario's.
    let start_rss_mib = proc::reset_peak() / 1024.0;
    let running = app::start(RunOptions {
        config_file: config.to_path_buf(),
        listen_address: "127.0.0.1:0".parse().unwrap(),
        web_config_file: None,
        shard: None,
        enable_lifecycle: false,
    })
    .await
    .expect("the exporter starts");
    let addr = running.addr;
    let cpu_start = proc::cpu_seconds("self");
    let start = Instant::now();
    let mut max_lag: f64 = 0.0;
    let mut last = Scrape::default();
    // Scraped every 5 s, as a (busy) Prometheus would: the lag gauge keeps the largest lag
    // of the last minute, so nothing is missed between scrapes.
    while start.elapsed() < scenario.window {
        tokio::time::sleep(Duration::from_secs(5)).await;
        last = scrape(addr).await;
        max_lag = max_lag.max(last.lag);
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = proc::cpu_seconds("self") - cpu_start;
    let probes = last.probes as u64;
    let failures = last.failures as u64;
    // The time to serve /metrics, measured on its own while probes go on.
    let mut render_ms = Vec::new();
    let mut metrics_bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        metrics_bytes = scrape(addr).await.bytes;
        render_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let end_rss_mib = proc::status_kib("VmRSS:") / 1024.0;
    running.shutdown().await;
    Report {
        name: scenario.name,
        accounts: scenario.accounts,
        probes,
        failures,
        seconds,
        cpu_seconds: cpu,
        peak_rss_mib: proc::status_kib("VmHWM:") / 1024.0,
        end_rss_mib,
        start_rss_mib,
        max_lag,
        render_ms,
        metrics_bytes,
    }
}

/// What the benchmark reads from one scrape. The sums are taken as the text streams in, so
/// that the whole exposition is never held here: the peak RSS stays the exporter's.
#[derive(Default)]
struct Scrape {
    /// The length of the exposition.
    bytes: usize,
    /// `mailbox_exporter_schedule_lag_seconds`.
    lag: f64,
    /// The sum of `mailbox_probe_duration_seconds_count` over the groups.
    probes: f64,
    /// The sum of `mailbox_auth_failures_total` over the accounts.
    failures: f64,
}

impl Scrape {
    fn line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let Some((series, value)) = line.rsplit_once(' ') else {
            return;
        };
        let Ok(value) = value.parse::<f64>() else {
            return;
        };
        let name = series.split(['{', ' ']).next().unwrap_or("");
        match name {
            "mailbox_exporter_schedule_lag_seconds" => self.lag += value,
            "mailbox_probe_duration_seconds_count" => self.probes += value,
            "mailbox_auth_failures_total" => self.failures += value,
            _ => {}
        }
    }

    /// Takes the complete lines off the front of `pending`.
    fn lines(&mut self, pending: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            self.line(&pending[start..start + end]);
            start += end + 1;
        }
        pending.drain(..start);
    }
}

/// Reads /metrics over HTTP as Prometheus would (plain or chunked body), summing as it goes.
async fn scrape(addr: SocketAddr) -> Scrape {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    stream
        .get_mut()
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut chunked = false;
    let mut header = String::new();
    loop {
        header.clear();
        stream.read_line(&mut header).await.unwrap();
        if header.trim().is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    let mut scrape = Scrape::default();
    let mut pending = Vec::new();
    let mut block = vec![0; 64 * 1024];
    loop {
        let mut take = block.len();
        if chunked {
            header.clear();
            stream.read_line(&mut header).await.unwrap();
            take = usize::from_str_radix(header.trim(), 16).unwrap();
            if take == 0 {
                break;
            }
        }
        let mut left = take;
        while left > 0 {
            let want = left.min(block.len());
            let n = stream.read(&mut block[..want]).await.unwrap();
            if n == 0 {
                break;
            }
            scrape.bytes += n;
            pending.extend_from_slice(&block[..n]);
            scrape.lines(&mut pending);
            left = if chunked { left - n } else { block.len() };
        }
        if !chunked {
            break;
        }
        header.clear();
        stream.read_line(&mut header).await.unwrap();
    }
    scrape.lines(&mut pending);
    scrape
}

fn write_config(path: &Path, dir: &Path, scenario: &Scenario, ports: &[(u16, Protocol, TlsMode)]) {
    std::fs::write(dir.join("secret"), PASSWORD).unwrap();
    let mut text = format!(
        "interval: {}\ntimeout: 900ms\nconcurrency: 64\nper_server_concurrency: 4\ngroups:\n",
        scenario.interval
    );
    let per_group = 100;
    for (i, chunk) in (0..scenario.accounts)
        .collect::<Vec<_>>()
        .chunks(per_group)
        .enumerate()
    {
        text.push_str(&format!("  - name: group-{i:03}\n    accounts:\n"));
        for &n in chunk {
            let (port, protocol, tls) = ports[n % ports.len()];
            text.push_str(&format!(
                "      - {{ name: mailbox-{n:05}, protocol: {protocol}, tls: {tls}, server: \
                 \"127.0.0.1:{port}\", username: {USER}, password_file: secret, ca_file: ca.pem }}\n"
            ));
        }
    }
    std::fs::write(path, text).unwrap();
}

/// The servers: a quarter each of POP3 and IMAP, with and without implicit TLS.
fn kinds(count: usize) -> Vec<(Protocol, TlsMode)> {
    (0..count)
        .map(|i| match i % 4 {
            0 => (Protocol::Pop3, TlsMode::Implicit),
            1 => (Protocol::Imap, TlsMode::Implicit),
            2 => (Protocol::Pop3, TlsMode::None),
            _ => (Protocol::Imap, TlsMode::None),
        })
        .collect()
}

/// Starts the simulator process; it writes its certificate (the CA the exporter must trust)
/// to `ca_file` and prints one port per server.
fn start_sims(servers: usize, ca_file: &Path) -> (Child, Vec<(u16, Protocol, TlsMode)>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, "sims")
        .arg(servers.to_string())
        .arg(ca_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the simulator process starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ports = kinds(servers)
        .into_iter()
        .map(|(protocol, tls)| {
            let line = lines.next().expect("a port").unwrap();
            (line.trim().parse().unwrap(), protocol, tls)
        })
        .collect();
    (child, ports)
}

/// The child: runs the simulated servers until its stdin closes.
fn serve_sims() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4);
    let ca_file = std::env::args()
        .nth(2)
        .expect("where to write the certificate");
    std::fs::write(ca_file, &sim_certificate().cert_pem).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut servers = Vec::new();
        let mut out = std::io::stdout();
        for (protocol, tls) in kinds(count) {
            let server = SimServer::start(
                SimSpec::new(protocol, tls, Behavior::Healthy).user(USER, PASSWORD),
            )
            .await
            .unwrap();
            writeln!(out, "{}", server.port()).unwrap();
            servers.push(server);
        }
        out.flush().unwrap();
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 16];
        while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
        drop(servers);
    });
}
