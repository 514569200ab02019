//! The service lifecycle with a fake exporter state and a fake prober: start, readiness,
//! reloads (good, bad, concurrent), shutdown.

use std::sync::{Condvar, Mutex as StdMutex};
use std::time::Duration;

use super::*;
use crate::web::tests::{basic, get, request};

#[derive(Default)]
struct FakeExporter {
    /// Account names of every applied config.
    applied: StdMutex<Vec<Vec<String>>>,
    /// Every `config_reload(ok, _)`: one per load of the file.
    reloads: StdMutex<Vec<bool>>,
    gate: Gate,
}

impl FakeExporter {
    fn current(&self) -> Vec<String> {
        self.applied
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// Holds an `apply_config` on request and sees whether two ever run at once.
#[derive(Default)]
struct Gate {
    state: StdMutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// The next `apply_config` is held until released (or until another one overlaps it).
    armed: bool,
    holding: bool,
    open: bool,
    applying: usize,
    overlapped: bool,
}

impl Gate {
    fn hold_next(&self) {
        let mut state = self.state.lock().unwrap();
        state.armed = true;
        state.open = false;
    }

    fn release(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    fn holding(&self) -> bool {
        self.state.lock().unwrap().holding
    }

    fn overlapped(&self) -> bool {
        self.state.lock().unwrap().overlapped
    }

    /// Runs `apply` as one `apply_config`, held if armed.
    fn pass(&self, apply: impl FnOnce()) {
        let mut state = self.state.lock().unwrap();
        state.applying += 1;
        if state.applying > 1 {
            state.overlapped = true;
            self.changed.notify_all();
        }
        if std::mem::take(&mut state.armed) {
            state.holding = true;
            // Blocks this runtime worker, as a slow apply would; the tests run several.
            while !state.open && !state.overlapped {
                state = self.changed.wait(state).unwrap();
            }
            state.holding = false;
        }
        drop(state);
        apply();
        self.state.lock().unwrap().applying -= 1;
    }
}

impl Exporter for FakeExporter {
    fn apply_config(&self, config: &Config) {
        self.gate.pass(|| {
            let names = config.accounts().map(|a| a.name.clone()).collect();
            self.applied.lock().unwrap().push(names);
        });
    }

    fn config_reload(&self, ok: bool, _at: SystemTime) {
        self.reloads.lock().unwrap().push(ok);
    }
}

impl web::Pages for FakeExporter {
    fn write_metrics(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(out, "fake_accounts {}", self.current().len())
    }

    fn landing_page(&self) -> String {
        format!("<p>{}</p>", self.current().join(" "))
    }

    fn account_page(&self, name: &str) -> Option<String> {
        self.current()
            .contains(&name.to_string())
            .then(|| format!("<p>{name}</p>"))
    }
}

/// Records the account count of every config it is handed, and when it stopped.
#[derive(Clone, Default)]
struct FakeProbing {
    seen: Arc<StdMutex<Vec<usize>>>,
    stopped: Arc<AtomicBool>,
}

impl Probing for FakeProbing {
    async fn run(
        self,
        mut config: watch::Receiver<Arc<Config>>,
        applied: watch::Sender<Arc<Config>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let current = Arc::clone(&config.borrow_and_update());
            self.seen.lock().unwrap().push(current.account_count());
            applied.send_replace(current);
            tokio::select! {
                changed = config.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        self.stopped.store(true, Ordering::SeqCst);
    }
}

fn config_text(names: &[&str]) -> String {
    let mut text = String::from("groups:\n  - name: support\n    accounts:\n");
    for name in names {
        text.push_str(&format!(
            "      - {{name: {name}, server: mail.example.invalid, username: u, password: p}}\n"
        ));
    }
    text
}

const BAD_CONFIG: &str = "timeout: 0s\nconcurrency: 0\n";

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    options: RunOptions,
    exporter: Arc<FakeExporter>,
    probing: FakeProbing,
}

fn fixture(text: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    Fixture {
        options: RunOptions {
            config_file: path.clone(),
            listen_address: "127.0.0.1:0".parse().unwrap(),
            web_config_file: None,
            shard: None,
            enable_lifecycle: true,
        },
        path,
        _dir: dir,
        exporter: Arc::new(FakeExporter::default()),
        probing: FakeProbing::default(),
    }
}

async fn start_fixture(f: &Fixture) -> Running {
    let config = load(&f.options.config_file, None).unwrap();
    start_with(
        f.options.clone(),
        config,
        WebConfig::default(),
        Arc::clone(&f.exporter),
        f.probing.clone(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn starts_ready_and_serves_the_exporter_state() {
    let f = fixture(&config_text(&["a", "b"]));
    let running = start_fixture(&f).await;
    assert!(running.addr.ip().is_loopback());
    assert_ne!(running.addr.port(), 0);

    assert_eq!(get(running.addr, "/-/ready").await.status, 200);
    assert_eq!(
        get(running.addr, "/metrics").await.text(),
        "fake_accounts 2\n"
    );
    assert_eq!(get(running.addr, "/").await.text(), "<p>a b</p>");
    assert_eq!(get(running.addr, "/accounts/b").await.text(), "<p>b</p>");
    assert_eq!(get(running.addr, "/accounts/c").await.status, 404);
    assert_eq!(*f.exporter.reloads.lock().unwrap(), [true]);
    assert_eq!(*f.probing.seen.lock().unwrap(), [2]);
    running.shutdown().await;
}

#[test]
fn an_invalid_config_is_refused_with_every_error() {
    let f = fixture(BAD_CONFIG);
    let e = load(&f.path, None).unwrap_err();
    let AppError::Config { errors, .. } = &e else {
        panic!("not a config error: {e}")
    };
    assert_eq!(errors.len(), 2);
    let text = e.to_string();
    assert!(
        text.contains("timeout: must be greater than zero\n"),
        "{text}"
    );
    assert!(text.contains("concurrency: must be at least 1\n"), "{text}");
    assert!(text.ends_with("rejected: 2 errors"), "{text}");
}

#[tokio::test]
async fn reload_applies_a_good_config_and_keeps_the_old_one_on_errors() {
    let f = fixture(&config_text(&["a", "b"]));
    let running = start_fixture(&f).await;

    std::fs::write(&f.path, config_text(&["a", "b", "c"])).unwrap();
    assert_eq!(running.reload().await.unwrap(), 3);
    assert_eq!(f.exporter.current(), ["a", "b", "c"]);

    std::fs::write(&f.path, BAD_CONFIG).unwrap();
    assert_eq!(running.reload().await.unwrap_err().len(), 2);
    assert_eq!(
        f.exporter.current(),
        ["a", "b", "c"],
        "the old config stays"
    );

    let reply = request(
        running.addr,
        "POST",
        "/-/reload",
        &[("Content-Length", "0")],
    )
    .await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.text().contains("concurrency: must be at least 1"),
        "{}",
        reply.text()
    );

    std::fs::write(&f.path, config_text(&["d"])).unwrap();
    let reply = request(
        running.addr,
        "POST",
        "/-/reload",
        &[("Content-Length", "0")],
    )
    .await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "config reloaded: 1 accounts\n")
    );
    assert_eq!(
        get(running.addr, "/metrics").await.text(),
        "fake_accounts 1\n"
    );

    assert_eq!(
        *f.exporter.reloads.lock().unwrap(),
        [true, true, false, false, true]
    );
    running.shutdown().await;
    // The prober saw every good config and none of the bad ones (it may skip intermediate
    // values, as a watch channel does, but ends on the last).
    let seen = f.probing.seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&2));
    assert_eq!(seen.last(), Some(&1));
    assert!(seen.iter().all(|n| [1, 2, 3].contains(n)), "{seen:?}");
}

#[tokio::test]
async fn a_reload_answers_once_probing_runs_the_new_config() {
    let f = fixture(&config_text(&["a"]));
    let running = start_fixture(&f).await;
    for names in [&["a", "b"][..], &["c"], &["c", "d", "e"]] {
        std::fs::write(&f.path, config_text(names)).unwrap();
        assert_eq!(running.reload().await.unwrap(), names.len());
        // On this single-threaded runtime the prober has run only if the reload waited for it.
        assert_eq!(f.probing.seen.lock().unwrap().last(), Some(&names.len()));
    }
    running.shutdown().await;
}

/// Polling gives up after this long: a condition not met by then is a failure.
const PATIENCE: Duration = Duration::from_secs(30);

async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_never_interleave() {
    const N: usize = 8;
    let f = fixture(&config_text(&["a"]));
    let running = start_fixture(&f).await;
    let handle = running.reload_handle();
    let reload = || {
        let handle = handle.clone();
        tokio::spawn(async move { handle.reload().await })
    };
    f.exporter.gate.hold_next();
    let first = reload();
    until("the first reload applies its config", || {
        f.exporter.gate.holding()
    })
    .await;
    let others: Vec<_> = (1..N).map(|_| reload()).collect();
    // The first is held until the others wait for it, or until one of them applies a config
    // while the first still does.
    until("the other reloads wait for the first", || {
        handle.0.queued.load(Ordering::SeqCst) == N - 1 || f.exporter.gate.overlapped()
    })
    .await;
    f.exporter.gate.release();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    for reload in others {
        assert_eq!(reload.await.unwrap().unwrap(), 1);
    }
    assert!(!f.exporter.gate.overlapped(), "two reloads applied at once");
    // The start, the first reload, and one for all the others.
    assert_eq!(f.exporter.applied.lock().unwrap().len(), 3);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_reload_requests_costs_at_most_two_loads() {
    const N: usize = 50;
    let f = fixture(&config_text(&["a"]));
    let running = start_fixture(&f).await;
    let addr = running.addr;
    let post = || {
        tokio::spawn(
            async move { request(addr, "POST", "/-/reload", &[("Content-Length", "0")]).await },
        )
    };
    f.exporter.gate.hold_next();
    let first = post();
    until("the first reload applies its config", || {
        f.exporter.gate.holding()
    })
    .await;
    std::fs::write(&f.path, config_text(&["a", "b"])).unwrap();
    let flood: Vec<_> = (1..N).map(|_| post()).collect();
    let reloads = running.reload_handle();
    until("the flood waits for the first reload", || {
        reloads.0.queued.load(Ordering::SeqCst) == N - 1
    })
    .await;
    f.exporter.gate.release();
    let first = first.await.unwrap();
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, "config reloaded: 1 accounts\n")
    );
    for reply in flood {
        let reply = reply.await.unwrap();
        // Each answer comes from a load that started after the request: the new file.
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "config reloaded: 2 accounts\n")
        );
    }
    // The start, the first request's load, and one load for the other 49.
    assert_eq!(*f.exporter.reloads.lock().unwrap(), [true, true, true]);
    assert_eq!(f.exporter.current(), ["a", "b"]);
    running.shutdown().await;
}

#[tokio::test]
async fn without_the_lifecycle_flag_post_reload_is_forbidden_and_sighup_still_reloads() {
    let mut f = fixture(&config_text(&["a"]));
    f.options.enable_lifecycle = false;
    let running = start_fixture(&f).await;
    std::fs::write(&f.path, config_text(&["a", "b"])).unwrap();

    let reply = request(
        running.addr,
        "POST",
        "/-/reload",
        &[("Content-Length", "0")],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert!(
        reply.text().contains("--web.enable-lifecycle"),
        "{}",
        reply.text()
    );
    assert_eq!(get(running.addr, "/-/reload").await.status, 405);
    assert_eq!(
        *f.exporter.reloads.lock().unwrap(),
        [true],
        "nothing loaded"
    );
    assert_eq!(f.exporter.current(), ["a"]);

    // What SIGHUP calls.
    assert_eq!(running.reload().await.unwrap(), 2);
    assert_eq!(f.exporter.current(), ["a", "b"]);
    running.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_probing_and_the_web_side() {
    let f = fixture(&config_text(&["a"]));
    let running = start_fixture(&f).await;
    let addr = running.addr;
    assert!(!f.probing.stopped.load(Ordering::SeqCst));
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown completes");
    assert!(f.probing.stopped.load(Ordering::SeqCst));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_busy_port_is_reported_before_probing_starts() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut f = fixture(&config_text(&["a"]));
    f.options.listen_address = taken.local_addr().unwrap().to_string().parse().unwrap();
    let config = load(&f.path, None).unwrap();
    let e = start_with(
        f.options.clone(),
        config,
        WebConfig::default(),
        Arc::clone(&f.exporter),
        f.probing.clone(),
    )
    .await
    .err()
    .expect("the port is taken");
    assert!(matches!(e, AppError::Listen { .. }), "{e}");
    assert!(
        e.to_string().starts_with("cannot listen on 127.0.0.1:"),
        "{e}"
    );
    assert!(f.probing.seen.lock().unwrap().is_empty(), "probing started");
    assert!(f.exporter.applied.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_web_config_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  alice: not-a-hash\n").unwrap();
    let e = load_web_config(Some(&web)).await.unwrap_err();
    assert!(
        e.to_string().contains("\"alice\": not a bcrypt hash"),
        "{e}"
    );
    assert!(!e.to_string().contains("not-a-hash"), "{e}");
    assert!(!load_web_config(None).await.unwrap().is_tls());
}

#[tokio::test]
async fn reload_reads_the_web_config_again_and_keeps_it_on_errors() {
    let mut f = fixture(&config_text(&["a"]));
    let web_path = f.path.with_file_name("web.yml");
    let users = |user: &str| {
        let hash = bcrypt::hash("pw", 4).unwrap();
        format!("basic_auth_users:\n  {user}: '{hash}'\n")
    };
    std::fs::write(&web_path, users("alice")).unwrap();
    f.options.web_config_file = Some(web_path.clone());
    let running = start_with(
        f.options.clone(),
        load(&f.path, None).unwrap(),
        load_web_config(Some(&web_path)).await.unwrap(),
        Arc::clone(&f.exporter),
        f.probing.clone(),
    )
    .await
    .unwrap();
    let addr = running.addr;
    let status = |user: &'static str| async move {
        let authorization = basic(user, "pw");
        request(
            addr,
            "GET",
            "/metrics",
            &[("Authorization", &authorization)],
        )
        .await
        .status
    };
    assert_eq!((status("alice").await, status("bob").await), (200, 401));

    std::fs::write(&web_path, users("bob")).unwrap();
    running.reload().await.unwrap();
    assert_eq!((status("alice").await, status("bob").await), (401, 200));

    // A bad web config refuses the whole reload, reported with the config's errors.
    std::fs::write(&f.path, config_text(&["a", "b"])).unwrap();
    std::fs::write(&web_path, "basic_auth_users:\n  carol: not-a-hash\n").unwrap();
    let errors = running.reload().await.unwrap_err().to_string();
    assert!(errors.contains("web.yml"), "{errors}");
    assert!(errors.contains("\"carol\": not a bcrypt hash"), "{errors}");
    assert!(!errors.contains("not-a-hash"), "{errors}");
    std::fs::write(&f.path, BAD_CONFIG).unwrap();
    let errors = running.reload().await.unwrap_err();
    assert_eq!(errors.len(), 3, "{errors}");
    assert_eq!(f.exporter.current(), ["a"]);
    assert_eq!((status("alice").await, status("bob").await), (401, 200));
    assert_eq!(
        *f.exporter.reloads.lock().unwrap(),
        [true, true, false, false]
    );
    running.shutdown().await;
}
