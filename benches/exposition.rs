//! What a scrape costs at 10,000 accounts: the time to render /metrics, its size, its series
//! (per account, for a healthy, a trap, a failing and a backing-off account) and the memory
//! it takes, for the exposition `/metrics` serves (the `prometheus` crate's registry for the
//! exporter-wide families, the per-account families written by hand) and for the same
//! families built entirely through the crate's data model and encoder.
//!
//! `cargo bench --bench exposition` runs the full measurement; under `cargo test` it runs a
//! short smoke version so that it keeps working. It also measures how long probes wait to
//! record their verdicts while scrapes run. Budgets for 10,000 accounts: render under 50 ms,
//! under 8 MB, the exporter's RSS under 64 MiB, a verdict never kept waiting for more than a
//! few milliseconds.

#[path = "common/proc.rs"]
mod proc;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;

use mailbox_exporter::config::{Config, Format};
use mailbox_exporter::metrics::{Exposition, Store};
use mailbox_exporter::schedule::Ledger;
use mailbox_exporter::verdict::{Attempt, AttemptResult, Method, Phases, Reason, Verdict};

/// The exporter's allocator, as in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GROUPS: usize = 50;
const SERVERS: usize = 100;

/// What an account's probes found; every tenth account of each kind in [`kind`]'s order.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Healthy,
    Trap,
    /// auth_rejected, three in a row: in backoff.
    Rejected,
    Timeout,
}

fn kind(i: usize) -> Kind {
    match i % 10 {
        7 => Kind::Trap,
        8 => Kind::Rejected,
        9 => Kind::Timeout,
        _ => Kind::Healthy,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (accounts, runs) = if full { (10_000, 20) } else { (500, 2) };
    let rss_start = proc::status_kib("VmRSS:");
    let (store, config) = fleet(accounts);
    let exposition = Exposition::new(Arc::clone(&store));
    let rss_store = proc::status_kib("VmRSS:");
    println!(
        "{accounts} accounts in {GROUPS} groups on {SERVERS} servers (70% healthy, 10% trap, \
         10% auth_rejected in backoff, 10% timeout); store: {:.1} MiB RSS ({:.1} MiB before)",
        rss_store / 1024.0,
        rss_start / 1024.0
    );

    let text = exposition.render();
    for (i, kind) in [
        (0, Kind::Healthy),
        (7, Kind::Trap),
        (8, Kind::Rejected),
        (9, Kind::Timeout),
    ] {
        let label = format!("account=\"inbox-{i:05}\"");
        let n = text.lines().filter(|l| l.contains(&label)).count();
        println!("series per account, {kind:?}: {n}");
        assert!(n <= 12, "{kind:?} has {n} series, over the budget of 12");
    }
    assert_eq!(config.account_count(), accounts);
    drop(text);

    // The served exposition is written a buffer at a time to the connection; here to a sink
    // that counts. Everything through the crate is one string, as the crate encodes it.
    let served = |e: &Exposition| {
        let mut sink = Counting::default();
        e.write(&mut sink).expect("a counting sink never fails");
        sink
    };
    let through_crate = |e: &Exposition| {
        let mut sink = Counting::default();
        sink.write_all(e.render_through_crate().as_bytes()).unwrap();
        sink
    };
    for (name, render) in [
        (
            "served: registry + hand-written accounts, streamed",
            &served as &dyn Fn(&Exposition) -> Counting,
        ),
        (
            "all through the prometheus crate, one string",
            &through_crate,
        ),
    ] {
        // The first render's growth is the one that counts: the allocator keeps what a render
        // freed for the next one, so later renders grow the RSS less.
        let before = proc::reset_peak();
        let text = render(&exposition);
        let first_growth = proc::status_kib("VmHWM:") - before;
        let mut times = Vec::with_capacity(runs);
        let mut growth: f64 = 0.0;
        for _ in 0..runs {
            let before = proc::reset_peak();
            let started = Instant::now();
            std::hint::black_box(render(&exposition));
            times.push(started.elapsed());
            growth = growth.max(proc::status_kib("VmHWM:") - before);
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "{name}: render {} (median of {runs}, min {}), {:.2} MB ({} bytes per account), {} \
             series; RSS growth during the first render {:.1} MiB, during later ones {:.1} MiB; \
             RSS after {:.1} MiB",
            ms(median),
            ms(times[0]),
            text.bytes as f64 / 1e6,
            text.bytes / accounts,
            text.series,
            first_growth / 1024.0,
            growth / 1024.0,
            proc::status_kib("VmRSS:") / 1024.0
        );
    }
    // What a scrape moves when the client takes gzip, as Prometheus does.
    let mut gzipped = GzEncoder::new(Counting::default(), Compression::fast());
    exposition.write(&mut gzipped).unwrap();
    let gzipped = gzipped.finish().unwrap();
    println!(
        "served gzipped (Accept-Encoding: gzip): {:.2} MB ({} bytes per account)",
        gzipped.bytes as f64 / 1e6,
        gzipped.bytes / accounts
    );
    println!(
        "peak RSS of the whole run: {:.1} MiB",
        proc::status_kib("VmHWM:") / 1024.0
    );
    landing_page(&store);
    recording_during_scrapes(&store, &exposition, &config, runs);
}

/// The landing page lists every account: its time and size at this many accounts.
fn landing_page(store: &Store) {
    let info = mailbox_exporter::page::PageInfo {
        version: "bench",
        config_file: None,
        shard: None,
        last_reload_ok: true,
        now: SystemTime::now(),
        sources: Vec::new(),
    };
    let before = proc::reset_peak();
    let started = Instant::now();
    let page = mailbox_exporter::page::landing(&store.accounts(), &info);
    let took = started.elapsed();
    println!(
        "landing page: {} to render, {:.2} MB, RSS growth {:.1} MiB",
        ms(took),
        page.len() as f64 / 1e6,
        (proc::status_kib("VmHWM:") - before) / 1024.0
    );
}

/// How long a probe's verdict waits to be recorded while scrapes run back to back on another
/// thread: a scrape holds the store's lock only while it copies the accounts' values.
fn recording_during_scrapes(store: &Store, exposition: &Exposition, config: &Config, runs: usize) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let account = config.accounts().next().expect("an account");
    let mut waits = Vec::new();
    std::thread::scope(|scope| {
        let scraper = scope.spawn(|| {
            for _ in 0..runs {
                std::hint::black_box(exposition.render());
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            at += Duration::from_millis(1);
            let v = verdict(true, Some(Method::Apop), None, false);
            let started = Instant::now();
            store.record(account, v, at);
            waits.push(started.elapsed());
            std::thread::sleep(Duration::from_micros(200));
        }
        scraper.join().expect("the scraper");
    });
    waits.sort();
    println!(
        "recording a verdict during {runs} back-to-back scrapes: median {}, 99th percentile {}, \
         longest {} ({} recorded)",
        ms(waits[waits.len() / 2]),
        ms(waits[waits.len() * 99 / 100]),
        ms(*waits.last().expect("a wait")),
        waits.len()
    );
}

/// `accounts` accounts configured and probed once (three times for the rejected ones).
fn fleet(accounts: usize) -> (Arc<Store>, Config) {
    let mut yaml = String::from("interval: 5m\ngroups:\n");
    for g in 0..GROUPS {
        yaml.push_str(&format!("  - name: group-{g:02}\n    accounts:\n"));
        for i in (g..accounts).step_by(GROUPS) {
            let protocol = if i % 2 == 0 { "pop3" } else { "imap" };
            yaml.push_str(&format!(
                "      - {{ name: inbox-{i:05}, protocol: {protocol}, tls: implicit, server: \
                 \"mail-{:03}.example.com\", username: \"inbox-{i:05}@example.com\", \
                 password_env: BENCH_PASSWORD }}\n",
                i % SERVERS
            ));
        }
    }
    let env = [("BENCH_PASSWORD".to_string(), "bench-password".to_string())];
    let config = Config::from_str_with_env(&yaml, Format::Yaml, std::path::Path::new(""), env)
        .unwrap_or_else(|e| panic!("the benchmark's config: {e}"));
    let store = Arc::new(Store::new());
    store.apply_config(&config);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (i, account) in config.accounts().enumerate() {
        let n: usize = account.name["inbox-".len()..].parse().unwrap();
        let at = start + Duration::from_millis(i as u64 * 7);
        match kind(n) {
            Kind::Healthy => {
                let method = if n.is_multiple_of(2) {
                    Method::Apop
                } else {
                    Method::CramMd5
                };
                store.record(account, verdict(true, Some(method), None, false), at);
            }
            Kind::Trap => {
                let v = verdict(true, Some(Method::Pass), None, true);
                store.record(account, v, at);
            }
            Kind::Rejected => {
                for k in 0..3 {
                    let v = verdict(false, None, Some(Reason::AuthRejected), false);
                    store.record(account, v, at + Duration::from_secs(k));
                }
            }
            Kind::Timeout => {
                let v = verdict(false, None, Some(Reason::Timeout), false);
                store.record(account, v, at);
            }
        }
    }
    (store, config)
}

fn verdict(
    success: bool,
    method: Option<Method>,
    reason: Option<Reason>,
    fallback: bool,
) -> Verdict {
    let mut attempts = Vec::new();
    if fallback {
        attempts.push(Attempt {
            method: Method::Apop,
            result: AttemptResult::Rejected,
        });
    }
    if let Some(method) = method {
        attempts.push(Attempt {
            method,
            result: AttemptResult::Success,
        });
    }
    let ms = Duration::from_millis;
    Verdict {
        success,
        method,
        reason,
        detail: None,
        fallback,
        cleartext: false,
        attempts,
        phases: Phases {
            connect: ms(3),
            tls: ms(21),
            greeting: ms(2),
            auth: ms(37),
            total: ms(63),
        },
        cert_expiry: Some(1_800_000_000),
        advice: None,
        transcript: vec!["C: USER inbox".into(), "S: +OK".into()],
    }
}

/// Counts what is written to it: bytes, and lines that are series (not `#` comments).
#[derive(Default)]
struct Counting {
    bytes: usize,
    series: usize,
    /// Whether the next byte starts a line.
    mid_line: bool,
}

impl Write for Counting {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        for &b in data {
            if !self.mid_line && b != b'#' {
                self.series += 1;
            }
            self.mid_line = b != b'\n';
        }
        self.bytes += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
