//! Tests of the scheduler and worker pool, on paused time with scripted probers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::task::JoinHandle;

use super::*;
use crate::config::Group;
use crate::secret::Password;
use crate::shard::{Shard, ShardError, owns};
use crate::state::Plan;
use crate::verdict::{Method, Phases, Protocol};

const SECOND: Duration = Duration::from_secs(1);

fn account(name: &str, host: &str, interval: Duration) -> Account {
    let mut account = Account::for_test("support", name, Protocol::Pop3);
    account.interval = interval;
    account.target.host = host.into();
    // The scripted prober knows accounts by user name.
    account.target.username = name.into();
    account
}

fn accounts(prefix: &str, host: &str, n: usize, interval: Duration) -> Vec<Account> {
    (0..n)
        .map(|i| account(&format!("{prefix}-{i}"), host, interval))
        .collect()
}

fn config(accounts: Vec<Account>, concurrency: usize, per_server: usize) -> Config {
    Config {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
        concurrency,
        per_server_concurrency: per_server,
        failure_budget: None,
        groups: vec![Group {
            name: "support".into(),
            accounts: accounts.into_iter().map(Arc::new).collect(),
        }],
        sources: Vec::new(),
    }
}

fn verdict(method: Option<Method>) -> Verdict {
    Verdict {
        success: true,
        method: Some(method.unwrap_or(Method::Pass)),
        reason: None,
        detail: None,
        fallback: false,
        cleartext: false,
        attempts: Vec::new(),
        phases: Phases::default(),
        cert_expiry: None,
        advice: None,
        transcript: Vec::new(),
    }
}

struct TestLedger {
    plan: Plan,
    records: Mutex<Vec<(String, Instant)>>,
    lags: Mutex<Vec<Duration>>,
    started: AtomicUsize,
    finished: AtomicUsize,
}

impl TestLedger {
    fn new(plan: Plan) -> Self {
        TestLedger {
            plan,
            records: Mutex::new(Vec::new()),
            lags: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        }
    }

    fn lags(&self) -> Vec<Duration> {
        self.lags.lock().unwrap().clone()
    }
}

impl Ledger for TestLedger {
    fn plan(&self, _account: &str) -> Plan {
        self.plan
    }

    fn record(&self, account: &Account, _verdict: Verdict, _finished: SystemTime) {
        let entry = (account.name.clone(), Instant::now());
        self.records.lock().unwrap().push(entry);
    }

    fn probe_started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }

    fn probe_finished(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }

    fn schedule_lag(&self, lag: Duration) {
        self.lags.lock().unwrap().push(lag);
    }
}

#[derive(Debug, Clone)]
struct Call {
    account: String,
    host: String,
    password: String,
    started: Instant,
    preferred: Option<Method>,
    /// Probes in flight when this one started, itself included.
    in_flight: usize,
    /// When it completed, or was dropped unfinished (cancelled), if it has ended.
    ended: Option<(Instant, bool)>,
}

#[derive(Default)]
struct Observed {
    calls: Vec<Call>,
    in_flight: usize,
    max_in_flight: usize,
    per_server: HashMap<String, usize>,
    max_per_server: HashMap<String, usize>,
    per_account: HashMap<String, usize>,
    max_per_account: usize,
}

/// Answers every probe with a success after a virtual delay that depends on the host.
struct ScriptedProber {
    delay: Duration,
    host_delays: HashMap<String, Duration>,
    observed: Arc<Mutex<Observed>>,
}

impl ScriptedProber {
    fn new(delay: Duration) -> Self {
        ScriptedProber {
            delay,
            host_delays: HashMap::new(),
            observed: Arc::default(),
        }
    }

    fn with_host_delay(mut self, host: &str, delay: Duration) -> Self {
        self.host_delays.insert(host.into(), delay);
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.observed.lock().unwrap().calls.clone()
    }

    fn in_flight(&self) -> usize {
        self.observed.lock().unwrap().in_flight
    }

    /// Start times of `account`'s probes, relative to `t0`.
    fn starts(&self, account: &str, t0: Instant) -> Vec<Duration> {
        self.calls()
            .iter()
            .filter(|c| c.account == account)
            .map(|c| c.started - t0)
            .collect()
    }
}

/// One scripted probe in flight: counted out when it completes or is dropped.
struct Flight {
    observed: Arc<Mutex<Observed>>,
    index: usize,
    completed: bool,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut o = self.observed.lock().unwrap();
        o.in_flight -= 1;
        let call = &mut o.calls[self.index];
        call.ended = Some((Instant::now(), self.completed));
        let (host, account) = (call.host.clone(), call.account.clone());
        *o.per_server.get_mut(&host).unwrap() -= 1;
        *o.per_account.get_mut(&account).unwrap() -= 1;
    }
}

impl Prober for ScriptedProber {
    fn probe(&self, target: Target, steps: Steps, _meter: Meter) -> ProbeFuture {
        let preferred = steps.preferred;
        let delay = *self.host_delays.get(&target.host).unwrap_or(&self.delay);
        let observed = Arc::clone(&self.observed);
        Box::pin(async move {
            let (account, host) = (target.username.clone(), target.host.clone());
            let mut flight = {
                let mut o = observed.lock().unwrap();
                o.in_flight += 1;
                o.max_in_flight = o.max_in_flight.max(o.in_flight);
                let on_server = *o
                    .per_server
                    .entry(host.clone())
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                let max = o.max_per_server.entry(host.clone()).or_insert(0);
                *max = (*max).max(on_server);
                let n = *o
                    .per_account
                    .entry(account.clone())
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                o.max_per_account = o.max_per_account.max(n);
                let in_flight = o.in_flight;
                o.calls.push(Call {
                    account,
                    host,
                    password: target.password.expose().to_string(),
                    started: Instant::now(),
                    preferred,
                    in_flight,
                    ended: None,
                });
                Flight {
                    observed: Arc::clone(&observed),
                    index: o.calls.len() - 1,
                    completed: false,
                }
            };
            tokio::time::sleep(delay).await;
            flight.completed = true;
            verdict(preferred)
        })
    }
}

/// A scheduler running on paused time whose wall clock reads the Unix epoch at `t0`, so
/// that slots fall at `t0 + phase + k * interval`.
struct Running {
    t0: Instant,
    ledger: Arc<TestLedger>,
    prober: Arc<ScriptedProber>,
    config: watch::Sender<Arc<Config>>,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Running {
    fn start(config: Config, prober: ScriptedProber, plan: Plan) -> Running {
        let t0 = Instant::now();
        let ledger = Arc::new(TestLedger::new(plan));
        let prober = Arc::new(prober);
        let config = Arc::new(config);
        let (config_tx, config_rx) = watch::channel(Arc::clone(&config));
        let (applied, _) = watch::channel(config);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let scheduler = Scheduler::new(Arc::clone(&ledger), Arc::clone(&prober))
            .with_wall_clock(t0, UNIX_EPOCH);
        let handle = tokio::spawn(scheduler.run(config_rx, applied, shutdown_rx));
        Running {
            t0,
            ledger,
            prober,
            config: config_tx,
            shutdown: shutdown_tx,
            handle,
        }
    }

    async fn run_until(&self, since_t0: Duration) {
        tokio::time::sleep_until(self.t0 + since_t0).await;
    }

    /// Shuts down and returns how long `run` took to return.
    async fn stop(self) -> Duration {
        let asked = Instant::now();
        self.shutdown.send(true).unwrap();
        self.handle.await.unwrap();
        asked.elapsed()
    }
}

/// The first aligned slot at or after `at` (times relative to the epoch-anchored `t0`).
fn aligned(at: Duration, phase: Duration, interval: Duration) -> Duration {
    let past = (at.as_millis() + interval.as_millis() - phase.as_millis()) % interval.as_millis();
    if past == 0 {
        at
    } else {
        at + Duration::from_millis((interval.as_millis() - past) as u64)
    }
}

/// When `name`'s probes should start, from `first` until `until`, for probes lasting
/// `probe` and a constant backoff `factor`.
fn expected_starts(
    name: &str,
    interval: Duration,
    first: Duration,
    probe: Duration,
    factor: u32,
    until: Duration,
) -> Vec<Duration> {
    let phase = phase(name, interval);
    let mut starts = Vec::new();
    let mut t = first;
    while t < until {
        starts.push(t);
        t = aligned((t + interval * factor).max(t + probe), phase, interval);
    }
    starts
}

#[test]
fn phase_is_stable_and_within_the_interval() {
    let interval = Duration::from_secs(300);
    // Pinned: a different value would move every deployed account's probe time.
    assert_eq!(
        phase("support-inbox", interval),
        Duration::from_millis(235_827)
    );
    for i in 0..1000 {
        let name = format!("mailbox-{i}");
        let p = phase(&name, interval);
        assert_eq!(p, phase(&name, interval));
        assert!(p < interval, "{name}: {p:?}");
        assert_eq!(p.subsec_nanos() % 1_000_000, 0, "whole milliseconds");
        assert!(startup_offset(&name, interval) < STARTUP_WINDOW);
    }
    assert_eq!(phase("x", Duration::ZERO), Duration::ZERO);
    assert!(phase("x", Duration::from_millis(1)) < Duration::from_millis(1));
}

#[test]
fn phases_spread_evenly_over_the_interval() {
    let interval = Duration::from_secs(60);
    let phases: Vec<Duration> = (0..100)
        .map(|i| phase(&format!("mailbox-{i}"), interval))
        .collect();
    let distinct: HashSet<Duration> = phases.iter().copied().collect();
    assert_eq!(distinct.len(), 100, "all distinct");
    // Ten 6-second buckets expect 10 phases each.
    let mut buckets = [0usize; 10];
    for p in &phases {
        assert!(*p < interval);
        buckets[(p.as_secs() / 6) as usize] += 1;
    }
    assert!(
        buckets.iter().all(|&n| (3..=20).contains(&n)),
        "{buckets:?}"
    );
}

#[test]
fn shards_partition_the_accounts() {
    let names: Vec<String> = (0..3000).map(|i| format!("mailbox-{i}")).collect();
    for count in 1..=7 {
        let mut owned = vec![0usize; count as usize];
        for name in &names {
            let owners: Vec<u32> = (0..count)
                .filter(|&index| owns(name, Shard { index, count }))
                .collect();
            assert_eq!(owners.len(), 1, "{name} with {count} shards: {owners:?}");
            owned[owners[0] as usize] += 1;
        }
        let fair = names.len() / count as usize;
        assert!(
            owned
                .iter()
                .all(|&n| n > fair * 8 / 10 && n < fair * 12 / 10),
            "{count} shards: {owned:?}"
        );
    }
    assert!(names.iter().all(|n| owns(n, Shard::WHOLE)));
}

#[test]
fn shard_phase_is_independent_of_the_shard() {
    // Each shard's accounts still spread over the whole interval.
    let interval = Duration::from_secs(60);
    let shard = Shard { index: 0, count: 4 };
    let halves = (0..1000)
        .map(|i| format!("mailbox-{i}"))
        .filter(|n| owns(n, shard))
        .fold([0usize; 2], |mut h, n| {
            h[usize::from(phase(&n, interval) >= interval / 2)] += 1;
            h
        });
    assert!(halves[0] > 80 && halves[1] > 80, "{halves:?}");
}

#[test]
fn shard_parsing() {
    assert_eq!("0/1".parse(), Ok(Shard::WHOLE));
    assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
    assert_eq!(Shard { index: 2, count: 3 }.to_string(), "2/3");
    let err = |s: &str| s.parse::<Shard>().unwrap_err();
    assert_eq!(err("3/3"), ShardError::OutOfRange { index: 3, count: 3 });
    assert_eq!(
        err("3/3").to_string(),
        "shard index 3 is out of range: with 3 shards it is 0 to 2"
    );
    assert_eq!(err("0/0"), ShardError::ZeroCount);
    assert_eq!(err("1"), ShardError::Format("1".into()));
    assert_eq!(err(""), ShardError::Format("".into()));
    assert_eq!(err("a/2"), ShardError::Index("a".into()));
    assert_eq!(err("-1/2"), ShardError::Index("-1".into()));
    assert_eq!(err("+1/2"), ShardError::Index("+1".into()));
    assert_eq!(err(" 1/2"), ShardError::Index(" 1".into()));
    assert_eq!(err("1/2/3"), ShardError::Count("2/3".into()));
    assert_eq!(err("1/"), ShardError::Count("".into()));
    assert_eq!(
        err("0/99999999999"),
        ShardError::Count("99999999999".into())
    );
}

#[tokio::test(start_paused = true)]
async fn every_account_is_probed_once_per_interval_at_its_phase() {
    let interval = Duration::from_secs(300);
    let probe = SECOND;
    let names = accounts("mailbox", "mail.example.com", 20, interval);
    let run = Running::start(
        config(names.clone(), 64, 64),
        ScriptedProber::new(probe),
        Plan::default(),
    );
    let until = interval * 5 + Duration::from_millis(500);
    run.run_until(until).await;
    for a in &names {
        let starts = run.prober.starts(&a.name, run.t0);
        let first = startup_offset(&a.name, interval);
        assert!(first < STARTUP_WINDOW);
        assert_eq!(
            starts[0], first,
            "{}: first probe in the start-up window",
            a.name
        );
        let expected = expected_starts(&a.name, interval, first, probe, 1, until);
        assert_eq!(starts, expected, "{}", a.name);
        // After the first, every probe is at the phase, one interval apart.
        let phase = phase(&a.name, interval);
        for pair in starts[1..].windows(2) {
            assert_eq!(pair[1] - pair[0], interval, "{}", a.name);
            assert_eq!((pair[0] - phase).as_millis() % interval.as_millis(), 0);
        }
        assert!(starts.len() >= 5, "{}: {starts:?}", a.name);
    }
    assert!(run.ledger.lags().iter().all(|l| l.is_zero()));
    let (ledger, prober) = (Arc::clone(&run.ledger), Arc::clone(&run.prober));
    run.stop().await;
    assert_eq!(ledger.records.lock().unwrap().len(), prober.calls().len());
}

#[tokio::test(start_paused = true)]
async fn a_probe_longer_than_the_interval_never_overlaps_itself() {
    let interval = Duration::from_secs(10);
    let probe = Duration::from_secs(25);
    let names = accounts("slow", "mail.example.com", 3, interval);
    let run = Running::start(
        config(names.clone(), 64, 64),
        ScriptedProber::new(probe),
        Plan::default(),
    );
    let until = Duration::from_secs(200);
    run.run_until(until).await;
    assert_eq!(run.prober.observed.lock().unwrap().max_per_account, 1);
    for a in &names {
        let starts = run.prober.starts(&a.name, run.t0);
        let first = startup_offset(&a.name, interval);
        let expected = expected_starts(&a.name, interval, first, probe, 1, until);
        assert_eq!(starts, expected, "{}", a.name);
        for pair in starts[1..].windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_secs(30));
        }
    }
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_stretches_the_gap_and_the_preferred_method_is_passed() {
    let interval = Duration::from_secs(60);
    let probe = SECOND;
    let names = accounts("locked", "mail.example.com", 5, interval);
    let plan = Plan {
        preferred: Some(Method::Apop),
        backoff_factor: 4,
        ..Plan::default()
    };
    let run = Running::start(
        config(names.clone(), 64, 64),
        ScriptedProber::new(probe),
        plan,
    );
    let until = Duration::from_secs(1000);
    run.run_until(until).await;
    for a in &names {
        let starts = run.prober.starts(&a.name, run.t0);
        let first = startup_offset(&a.name, interval);
        let expected = expected_starts(&a.name, interval, first, probe, 4, until);
        assert_eq!(starts, expected, "{}", a.name);
        assert!(starts[1] - starts[0] >= interval * 4);
        for pair in starts[1..].windows(2) {
            assert_eq!(pair[1] - pair[0], interval * 4);
        }
    }
    let calls = run.prober.calls();
    assert!(calls.len() >= 15);
    assert!(calls.iter().all(|c| c.preferred == Some(Method::Apop)));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_global_limit_is_respected() {
    let interval = Duration::from_secs(10);
    let names: Vec<Account> = (0..30)
        .map(|i| {
            account(
                &format!("mailbox-{i}"),
                &format!("mail{i}.example.com"),
                interval,
            )
        })
        .collect();
    let run = Running::start(
        config(names, 3, 4),
        ScriptedProber::new(Duration::from_secs(4)),
        Plan::default(),
    );
    run.run_until(Duration::from_secs(100)).await;
    assert_eq!(run.prober.observed.lock().unwrap().max_in_flight, 3);
    // The pool cannot keep up: the lag says so.
    assert!(run.ledger.lags().iter().any(|l| *l > SECOND));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_per_server_limit_is_respected_and_its_wait_is_not_lag() {
    let interval = Duration::from_secs(10);
    let names = accounts("shared", "mail.example.com", 12, interval);
    let run = Running::start(
        config(names, 10, 2),
        ScriptedProber::new(Duration::from_secs(4)),
        Plan::default(),
    );
    run.run_until(Duration::from_secs(100)).await;
    {
        let observed = run.prober.observed.lock().unwrap();
        assert_eq!(observed.max_per_server["mail.example.com"], 2);
        assert_eq!(observed.max_per_account, 1);
    }
    // Probes were late, but only because of their server: the pool itself keeps up.
    let lags = run.ledger.lags();
    assert!(lags.len() > 20);
    assert!(lags.iter().all(|l| l.is_zero()), "{lags:?}");
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_server_does_not_delay_other_servers() {
    let interval = Duration::from_secs(60);
    let quick = Duration::from_millis(10);
    let dead = accounts("dead", "dead.example.com", 40, interval);
    let live = accounts("live", "live.example.com", 20, interval);
    let all = dead.iter().chain(&live).cloned().collect();
    let prober =
        ScriptedProber::new(quick).with_host_delay("dead.example.com", Duration::from_secs(30));
    let run = Running::start(config(all, 6, 4), prober, Plan::default());
    let until = Duration::from_secs(300);
    run.run_until(until).await;
    for a in &live {
        let starts = run.prober.starts(&a.name, run.t0);
        let first = startup_offset(&a.name, interval);
        let expected = expected_starts(&a.name, interval, first, quick, 1, until);
        assert_eq!(starts, expected, "{} probed on time", a.name);
    }
    {
        let observed = run.prober.observed.lock().unwrap();
        assert_eq!(observed.max_per_server["dead.example.com"], 4);
        let dead_calls = observed
            .calls
            .iter()
            .filter(|c| c.host == "dead.example.com");
        assert!(dead_calls.count() > 20);
    }
    assert!(run.ledger.lags().iter().all(|l| l.is_zero()));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reload_adds_removes_and_changes_accounts() {
    let interval = Duration::from_secs(60);
    let probe = SECOND;
    let (a, b, c) = (
        account("alpha", "mail.example.com", interval),
        account("bravo", "mail.example.com", interval),
        account("charlie", "mail.example.com", interval),
    );
    let run = Running::start(
        config(vec![a.clone(), b.clone(), c.clone()], 64, 64),
        ScriptedProber::new(probe),
        Plan::default(),
    );
    let reload = Duration::from_secs(150) + Duration::from_millis(250);
    run.run_until(reload).await;
    let new_interval = Duration::from_secs(30);
    let mut c2 = account("charlie", "other.example.com", new_interval);
    c2.group = "sales".into();
    let d = account("delta", "mail.example.com", interval);
    run.config
        .send(Arc::new(config(vec![a.clone(), c2, d.clone()], 64, 64)))
        .unwrap();
    let until = Duration::from_secs(400);
    run.run_until(until).await;

    // Unchanged: the same timing throughout, as if nothing happened.
    let first = startup_offset("alpha", interval);
    let expected = expected_starts("alpha", interval, first, probe, 1, until);
    assert_eq!(run.prober.starts("alpha", run.t0), expected);
    // Removed: no probe after the reload.
    let bravo = run.prober.starts("bravo", run.t0);
    assert!(
        !bravo.is_empty() && bravo.iter().all(|t| *t < reload),
        "{bravo:?}"
    );
    // Added: first probe within the start-up window, then at its phase.
    let first = reload + startup_offset("delta", interval);
    let expected = expected_starts("delta", interval, first, probe, 1, until);
    assert_eq!(run.prober.starts("delta", run.t0), expected);
    assert!(expected[0] < reload + STARTUP_WINDOW);
    // Changed: probed afresh, on its new server, at its new interval.
    let calls = run.prober.calls();
    let after: Vec<&Call> = calls
        .iter()
        .filter(|c| c.account == "charlie" && c.started - run.t0 >= reload)
        .collect();
    assert!(after.iter().all(|c| c.host == "other.example.com"));
    let starts: Vec<Duration> = after.iter().map(|c| c.started - run.t0).collect();
    let first = reload + startup_offset("charlie", new_interval);
    let expected = expected_starts("charlie", new_interval, first, probe, 1, until);
    assert_eq!(starts, expected);
    assert!(
        calls
            .iter()
            .filter(|c| c.account == "charlie" && c.started - run.t0 < reload)
            .all(|c| c.host == "mail.example.com")
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_account_removed_and_readded_mid_probe_is_never_probed_twice_at_once() {
    let interval = Duration::from_secs(60);
    let x = account("xray", "mail.example.com", interval);
    let with_x = config(vec![x.clone()], 64, 64);
    let without_x = config(Vec::new(), 64, 64);
    let run = Running::start(
        with_x.clone(),
        ScriptedProber::new(Duration::from_secs(20)),
        Plan::default(),
    );
    while run.prober.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.config.send(Arc::new(without_x)).unwrap();
    let removed = Instant::now();
    tokio::time::sleep(SECOND).await;
    run.config.send(Arc::new(with_x)).unwrap();
    let readded = Instant::now() - run.t0;
    run.run_until(Duration::from_secs(300)).await;
    let starts = run.prober.starts("xray", run.t0);
    assert_eq!(run.prober.observed.lock().unwrap().max_per_account, 1);
    // The removal cancelled the first probe; the re-added account follows the start-up
    // rule.
    assert_eq!(run.prober.calls()[0].ended, Some((removed, false)));
    assert_eq!(starts[1], readded + startup_offset("xray", interval));
    assert!(starts.len() >= 5, "{starts:?}");
    run.stop().await;
}

/// Accounts `prefix-0`.. on one server, every first probe due within the start-up window.
fn due_by_the_window(prefix: &str, n: usize) -> Vec<Account> {
    accounts(prefix, "mail.example.com", n, Duration::from_secs(60))
}

#[tokio::test(start_paused = true)]
async fn a_reload_cancels_probes_of_changed_and_removed_accounts_waiting_or_in_flight() {
    let before = due_by_the_window("box", 7);
    // One probe at a time on the server, 30 s each: by the reload, one is in flight and
    // at least four wait for the server with the old settings.
    let run = Running::start(
        config(before.clone(), 64, 1),
        ScriptedProber::new(Duration::from_secs(30)),
        Plan::default(),
    );
    let reload = STARTUP_WINDOW + SECOND;
    run.run_until(reload).await;
    let calls = run.prober.calls();
    let running: Vec<&Call> = calls.iter().filter(|c| c.ended.is_none()).collect();
    assert_eq!(running.len(), 1);
    let in_flight = running[0].account.clone();
    let waiting: Vec<String> = before
        .iter()
        .map(|a| a.name.clone())
        .filter(|name| !calls.iter().any(|c| c.account == *name))
        .collect();
    assert!(waiting.len() >= 4, "{waiting:?}");
    let (removed, unchanged) = (waiting[0].clone(), waiting[1].clone());

    // New passwords for all but one account, one account removed.
    let after: Vec<Account> = before
        .iter()
        .filter(|a| a.name != removed)
        .cloned()
        .map(|mut a| {
            if a.name != unchanged {
                a.target.password = Password::new("new-secret");
            }
            a
        })
        .collect();
    run.config
        .send(Arc::new(config(after.clone(), 64, 1)))
        .unwrap();
    let until = Duration::from_secs(600);
    run.run_until(until).await;

    let at_reload = run.t0 + reload;
    let calls = run.prober.calls();
    let dropped: Vec<&Call> = calls
        .iter()
        .filter(|c| c.ended.is_some_and(|(_, completed)| !completed))
        .collect();
    assert_eq!(dropped.len(), 1, "only the probe in flight was dropped");
    assert_eq!(dropped[0].account, in_flight);
    assert_eq!(
        dropped[0].ended,
        Some((at_reload, false)),
        "dropped at once"
    );
    for call in calls.iter().filter(|c| c.started >= at_reload) {
        assert_ne!(call.account, removed, "a removed account is never probed");
        let expected = if call.account == unchanged {
            "hunter2"
        } else {
            "new-secret"
        };
        assert_eq!(call.password, expected, "{}", call.account);
    }
    for account in &after {
        assert!(
            calls
                .iter()
                .any(|c| c.account == account.name && c.started >= at_reload),
            "{} probed after the reload",
            account.name
        );
    }
    assert_eq!(
        run.prober.observed.lock().unwrap().max_per_server["mail.example.com"],
        1
    );
    // Nothing is recorded for the dropped probe: one record per completed probe.
    let (ledger, prober) = (Arc::clone(&run.ledger), Arc::clone(&run.prober));
    run.stop().await;
    let completed = prober
        .calls()
        .iter()
        .filter(|c| c.ended.is_some_and(|(_, completed)| completed))
        .count();
    assert_eq!(ledger.records.lock().unwrap().len(), completed);
    assert!(
        ledger
            .records
            .lock()
            .unwrap()
            .iter()
            .all(|(name, _)| *name != removed)
    );
}

#[tokio::test(start_paused = true)]
async fn a_raised_server_limit_lets_waiting_probes_start_at_once() {
    let names = due_by_the_window("box", 7);
    let run = Running::start(
        config(names.clone(), 64, 1),
        ScriptedProber::new(Duration::from_secs(30)),
        Plan::default(),
    );
    let reload = STARTUP_WINDOW + SECOND;
    run.run_until(reload).await;
    assert_eq!(run.prober.in_flight(), 1);
    run.config.send(Arc::new(config(names, 64, 3))).unwrap();
    run.run_until(reload + SECOND).await;
    let calls = run.prober.calls();
    let at_reload = calls
        .iter()
        .filter(|c| c.started == run.t0 + reload)
        .count();
    assert_eq!(at_reload, 2, "two waiting probes start with the reload");
    assert_eq!(run.prober.in_flight(), 3);
    run.run_until(Duration::from_secs(400)).await;
    assert_eq!(
        run.prober.observed.lock().unwrap().max_per_server["mail.example.com"],
        3
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lowered_global_limit_holds_waiting_probes_until_enough_have_finished() {
    let interval = Duration::from_secs(60);
    // Every account on its own server: only the global limit applies.
    let names: Vec<Account> = (0..10)
        .map(|i| {
            account(
                &format!("box-{i}"),
                &format!("mail{i}.example.com"),
                interval,
            )
        })
        .collect();
    let run = Running::start(
        config(names.clone(), 4, 64),
        ScriptedProber::new(Duration::from_secs(30)),
        Plan::default(),
    );
    let reload = STARTUP_WINDOW + SECOND;
    run.run_until(reload).await;
    assert_eq!(run.prober.in_flight(), 4);
    run.config.send(Arc::new(config(names, 1, 64))).unwrap();
    run.run_until(Duration::from_secs(400)).await;

    let at_reload = run.t0 + reload;
    let calls = run.prober.calls();
    let last_old_end = calls
        .iter()
        .filter(|c| c.started < at_reload)
        .filter_map(|c| c.ended.map(|(at, _)| at))
        .max()
        .unwrap();
    let later: Vec<&Call> = calls.iter().filter(|c| c.started >= at_reload).collect();
    assert!(later.len() > 5, "{}", later.len());
    assert_eq!(
        later.iter().map(|c| c.started).min(),
        Some(last_old_end),
        "the first probe after the reload waits for the four in flight"
    );
    assert!(later.iter().all(|c| c.in_flight == 1), "{later:?}");
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_probes_in_flight() {
    let interval = Duration::from_secs(60);
    let run = Running::start(
        config(vec![account("alpha", "mail.example.com", interval)], 64, 64),
        ScriptedProber::new(Duration::from_secs(5)),
        Plan::default(),
    );
    while run.prober.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ledger = Arc::clone(&run.ledger);
    let probe_ends = run.prober.calls()[0].started + Duration::from_secs(5);
    run.stop().await;
    assert_eq!(Instant::now(), probe_ends, "returned as the probe finished");
    assert_eq!(ledger.records.lock().unwrap().len(), 1);
    assert_eq!(ledger.started.load(Ordering::SeqCst), 1);
    assert_eq!(ledger.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_after_the_grace_period_and_starts_nothing_new() {
    let interval = Duration::from_secs(60);
    // One global permit: the second account waits behind the first, hung, probe.
    let run = Running::start(
        config(accounts("hung", "mail.example.com", 2, interval), 1, 4),
        ScriptedProber::new(Duration::from_secs(1000)),
        Plan::default(),
    );
    run.run_until(STARTUP_WINDOW + SECOND).await;
    assert_eq!(run.prober.calls().len(), 1);
    let (ledger, prober) = (Arc::clone(&run.ledger), Arc::clone(&run.prober));
    let took = run.stop().await;
    assert_eq!(took, Duration::from_secs(30) + SHUTDOWN_GRACE_MARGIN);
    assert_eq!(prober.calls().len(), 1, "the waiting probe never started");
    assert!(ledger.records.lock().unwrap().is_empty());
    assert_eq!(ledger.started.load(Ordering::SeqCst), 1);
    assert_eq!(ledger.finished.load(Ordering::SeqCst), 1);
    assert_eq!(ledger.lags().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_nothing_in_flight_is_immediate() {
    let run = Running::start(
        config(
            accounts("idle", "mail.example.com", 100, Duration::from_secs(3600)),
            64,
            4,
        ),
        ScriptedProber::new(SECOND),
        Plan::default(),
    );
    run.run_until(Duration::from_secs(30)).await;
    while run.prober.in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(run.stop().await, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_accounts_keep_their_schedule() {
    let interval = Duration::from_secs(300);
    let probe = Duration::from_millis(200);
    let names: Vec<Account> = (0..10_000)
        .map(|i| {
            account(
                &format!("mailbox-{i}"),
                &format!("mail{}.example.com", i % 500),
                interval,
            )
        })
        .collect();
    let run = Running::start(
        config(names.clone(), 64, 4),
        ScriptedProber::new(probe),
        Plan::default(),
    );
    let until = interval * 3;
    run.run_until(until).await;
    let expected: usize = names
        .iter()
        .map(|a| {
            let first = startup_offset(&a.name, interval);
            expected_starts(&a.name, interval, first, probe, 1, until).len()
        })
        .sum();
    assert_eq!(run.prober.calls().len(), expected);
    assert_eq!(run.prober.observed.lock().unwrap().max_per_account, 1);
    run.stop().await;
}
