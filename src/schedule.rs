//! The scheduler and worker pool: one probe per account per interval, at a stable per-account
//! phase, under a global and a per-server concurrency limit.
//!
//! Timing rules (product behaviour; operators and dashboards rely on them):
//! - Every account has a *phase* in `[0, interval)` derived from its name ([`phase`]). Its
//!   probes are due at the wall-clock times `t` where `t - phase` is a whole multiple of its
//!   interval, so start times spread evenly over the interval and stay put across restarts
//!   and replicas.
//! - The first probe after start-up, or after a reload adds or changes the account, is due
//!   within a start-up window of `min(interval, 60 s)` ([`STARTUP_WINDOW`]), at the same
//!   fraction of the window as the phase is of the interval: a new exporter shows data within
//!   a minute without logging in to everything at once.
//! - An account never has two probes in flight. Its next probe is planned when the current one
//!   finishes: the first aligned time at or after `due + interval * backoff_factor` (the
//!   ledger's [`Plan`] once the verdict is recorded, so a rejection slows the very next
//!   login), and never in the past: a probe that finished late goes to the next aligned time
//!   from now.
//! - A probe first waits for a permit of its server (`per_server_concurrency`), then for a
//!   global one (`concurrency`). Accounts of a slow or dead server queue on their own server
//!   and never hold global permits that other servers' accounts need.
//! - A reload never lets a probe log in with settings it replaced: probes of removed or
//!   changed accounts are cancelled, waiting or in flight, and changed limits apply to the
//!   probes already waiting.
//!
//! Cost: idle accounts are one entry in a binary heap behind a single timer; only a probe that
//! is due has a task. Stale heap entries (left by reloads) are skipped when they surface.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::budget::{Admission, FailureBudget};
use crate::config::{Account, Config};
use crate::probe::{self, Meter, MethodSet, Steps, Target};
use crate::tls::Connectors;
use crate::verdict::{Method, Verdict};

mod limit;

use limit::Limit;

/// What the next probe of an account should do, decided from its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The method that worked last time: tried first.
    pub preferred: Option<Method>,
    /// Methods rejected since they last worked: tried after every other one.
    pub rejected: MethodSet,
    /// The account's interval is multiplied by this (1 = no backoff) after consecutive
    /// credential rejections, so that the exporter never locks a mailbox out.
    pub backoff_factor: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            preferred: None,
            rejected: MethodSet::EMPTY,
            backoff_factor: 1,
        }
    }
}

/// Where the scheduler reads account history from and reports to. [`crate::metrics::Metrics`]
/// is the real one; tests use their own.
pub trait Ledger: Send + Sync + 'static {
    fn plan(&self, account: &str) -> Plan;
    /// A finished probe of `account` (as configured when the probe started).
    fn record(&self, account: &Account, verdict: Verdict, finished: SystemTime);
    fn probe_started(&self);
    fn probe_finished(&self);
    /// How late a probe started, compared with when it was due.
    fn schedule_lag(&self, lag: Duration);
    /// The failed-login budgets probes must stay within; `None`: no budget.
    fn failure_budget(&self) -> Option<Arc<FailureBudget>> {
        None
    }
}

/// The first probe of an account comes within `min(interval, STARTUP_WINDOW)` of start-up (or
/// of the reload that added it): data within a minute, without a login storm.
pub const STARTUP_WINDOW: Duration = Duration::from_secs(60);

/// At shutdown, probes in flight get their own timeout plus this before they are aborted: a
/// probe bounded by its timeout has then had every chance to say QUIT/LOGOUT.
pub const SHUTDOWN_GRACE_MARGIN: Duration = Duration::from_secs(1);

/// Upper bound of a backed-off gap, so that no backoff factor can overflow the clock.
const MAX_GAP: Duration = Duration::from_secs(366 * 24 * 3600);

/// A probe in progress, as returned by [`Prober::probe`].
pub type ProbeFuture = Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// How a probe is run: [`NetworkProber`] logs in for real; tests script verdicts.
pub trait Prober: Send + Sync + 'static {
    /// Probes `target`, trying `preferred` first when given. The future must finish on its
    /// own within the target's timeout.
    fn probe(&self, target: Target, preferred: Option<Method>) -> ProbeFuture;

    /// A new configuration is in force: probes started from now on must not use anything the
    /// prober derived from files the old one named.
    fn config_changed(&self) {}

    /// Probes `target` walking its ladder as `steps` say. Probers that only script verdicts
    /// may ignore everything but the preferred method.
    fn probe_steps(&self, target: Target, steps: Steps) -> ProbeFuture {
        self.probe(target, steps.preferred)
    }

    /// [`Prober::probe_steps`], counting the rungs the probe starts on `meter`, so that a
    /// probe dropped under way is charged to the failed-login budget for what it may have
    /// sent. Probers that only script verdicts may ignore it.
    fn probe_metered(&self, target: Target, steps: Steps, meter: Meter) -> ProbeFuture {
        let _ = meter;
        self.probe_steps(target, steps)
    }
}

/// Logs in over the network with [`probe::probe_with`], sharing its TLS connectors between
/// its probes until the configuration changes.
#[derive(Debug, Clone, Default)]
pub struct NetworkProber {
    connectors: Connectors,
}

impl Prober for NetworkProber {
    fn probe(&self, target: Target, preferred: Option<Method>) -> ProbeFuture {
        let connectors = self.connectors.clone();
        Box::pin(async move {
            probe::probe_with(&target, Steps::preferring(preferred), &connectors).await
        })
    }

    /// CA files may have been renewed: the next probes build their connectors afresh.
    fn config_changed(&self) {
        self.connectors.forget();
    }

    fn probe_steps(&self, target: Target, steps: Steps) -> ProbeFuture {
        self.probe_metered(target, steps, Meter::default())
    }

    fn probe_metered(&self, target: Target, steps: Steps, meter: Meter) -> ProbeFuture {
        let connectors = self.connectors.clone();
        Box::pin(async move { probe::probe_metered(&target, steps, &connectors, &meter).await })
    }
}

// The hashes below decide phases and shard ownership. They are FNV-1a followed by the
// MurmurHash3 finalizer (FNV alone mixes its high bits poorly for short names), with fixed
// constants: the same name gets the same phase and shard on every replica and every release.
// Changing them reshuffles every deployment's schedule and shards.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const PHASE_SALT: u64 = 0;
/// Shards use an independent hash: were shard and phase correlated, each replica would probe
/// its accounts in one bunch of the interval.
const SHARD_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

fn stable_hash(name: &str, salt: u64) -> u64 {
    let mut h = FNV_OFFSET ^ salt;
    for byte in name.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `span * hash / 2^64`, in whole milliseconds (the timer's resolution).
fn fraction_of(hash: u64, span: Duration) -> Duration {
    let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
    let scaled = (u128::from(hash) * u128::from(span_ms)) >> 64;
    Duration::from_millis(u64::try_from(scaled).unwrap_or(u64::MAX))
}

/// The account's phase: probes of `account` are due at wall-clock times `t` with
/// `t - phase` a multiple of `interval`. Whole milliseconds in `[0, interval)` (zero for an
/// interval under a millisecond), a function of the name alone: stable across restarts and
/// replicas, and spread evenly over the interval across accounts.
pub fn phase(account: &str, interval: Duration) -> Duration {
    fraction_of(stable_hash(account, PHASE_SALT), interval)
}

/// Where in the start-up window the first probe of `account` is due: the same fraction of
/// `min(interval, STARTUP_WINDOW)` as [`phase`] is of the interval.
fn startup_offset(account: &str, interval: Duration) -> Duration {
    fraction_of(
        stable_hash(account, PHASE_SALT),
        interval.min(STARTUP_WINDOW),
    )
}

/// Whether the replica running as `shard` probes `account` (`--shard=i/n`). Each account is
/// owned by exactly one of the `n` shards, decided by a stable hash of its name alone, so
/// replicas agree without talking to each other and no mailbox is logged in to twice. Adding
/// or removing an account never moves another one.
pub fn owns(account: &str, shard: Shard) -> bool {
    let count = u128::from(shard.count.max(1));
    let owner = (u128::from(stable_hash(account, SHARD_SALT)) * count) >> 64;
    owner == u128::from(shard.index)
}

/// One replica's share of the accounts: `index` of `count`, 0-based, written `index/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// A single replica owning every account.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a `--shard` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard {0:?} is not of the form INDEX/COUNT, e.g. 0/3")]
    Format(String),
    #[error("shard index {0:?} is not a whole number")]
    Index(String),
    #[error("shard count {0:?} is not a whole number")]
    Count(String),
    #[error("shard count must be at least 1")]
    ZeroCount,
    #[error("shard index {index} is out of range: with {count} shards it is 0 to {}", count - 1)]
    OutOfRange { index: u32, count: u32 },
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (index, count) = s
            .split_once('/')
            .ok_or_else(|| ShardError::Format(s.to_string()))?;
        let number = |text: &str| {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse::<u32>().ok()
        };
        let index = number(index).ok_or_else(|| ShardError::Index(index.to_string()))?;
        let count = number(count).ok_or_else(|| ShardError::Count(count.to_string()))?;
        if count == 0 {
            return Err(ShardError::ZeroCount);
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }
}

/// Runs the probes of every configured account, following reloads, until shutdown.
pub struct Scheduler<L: Ledger, P: Prober> {
    ledger: Arc<L>,
    prober: Arc<P>,
    clock: Option<(Instant, SystemTime)>,
}

impl<L: Ledger, P: Prober> Scheduler<L, P> {
    pub fn new(ledger: Arc<L>, prober: Arc<P>) -> Self {
        Scheduler {
            ledger,
            prober,
            clock: None,
        }
    }

    /// Aligns phases as if the wall clock read `wall` at `instant`, instead of reading the
    /// system clock when [`Scheduler::run`] starts: for simulations under paused time.
    pub fn with_wall_clock(mut self, instant: Instant, wall: SystemTime) -> Self {
        self.clock = Some((instant, wall));
        self
    }

    /// Probes the accounts of the latest `config` until `shutdown` becomes true (or its sender
    /// is dropped). Every config taken from `config` is put on `applied` once it is in force:
    /// the probes it cancels are marked and aborted, so none of them starts after that.
    ///
    /// Reloads: every new value on `config` is applied at once. Added accounts get a first
    /// probe within the start-up window; unchanged ones keep their timing. Removed ones are no
    /// longer probed, and changed ones (any field differs) are treated as new, with their new
    /// interval and target. A probe of a removed or changed account that is waiting for a
    /// permit, or in flight, is cancelled: it never starts, or is dropped where it is (its
    /// connection closes, nothing is recorded), since it would log in with credentials or
    /// settings the operator replaced and its outcome says nothing about the new config.
    /// Concurrency limits follow the new config at once, for the probes already waiting too: a
    /// lowered limit lets no probe start until fewer than the new limit are in flight. If the
    /// config sender is dropped, the last config stays in force.
    ///
    /// Schedule lag: when a probe starts, the ledger hears how late it is because of the
    /// pool: the delay between its due time and its task starting, plus the time it waited
    /// for a global slot. A probe asks for a global slot first and, when its server is at the
    /// per-server limit, gives the slot back while it waits for the server: that wait is the
    /// server's slowness (or the per-server limit at work), not the pool's, and is not lag.
    /// So the lag measures whether the pool as a whole keeps up.
    ///
    /// Failed-login budget: before any permit, a probe that may try methods not known to
    /// work waits for room in its server's budget ([`crate::budget`]). That wait is the budget
    /// at work, shown by its own metrics and on the pages, and is not lag either; probes whose
    /// first method is known to work never wait for it.
    ///
    /// Shutdown: no probe starts after `shutdown` fires (probes still waiting for a permit are
    /// dropped). Probes in flight may finish, to log out politely, for up to the longest
    /// configured timeout plus [`SHUTDOWN_GRACE_MARGIN`]; then they are aborted and `run`
    /// returns.
    pub async fn run(
        self,
        mut config: watch::Receiver<Arc<Config>>,
        applied: watch::Sender<Arc<Config>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (instant, wall) = self
            .clock
            .unwrap_or_else(|| (Instant::now(), SystemTime::now()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut pool = Pool::new(
            self.ledger,
            self.prober,
            WallClock::new(instant, wall),
            stop_rx,
        );
        let first = Arc::clone(&config.borrow_and_update());
        pool.apply(&first, Instant::now());
        applied.send_replace(first);
        let mut config_open = true;
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        loop {
            let next = pool.next_due();
            if let Some(next) = next
                && timer.deadline() != next
            {
                timer.as_mut().reset(next);
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                changed = config.changed(), if config_open => match changed {
                    Ok(()) => {
                        let new = Arc::clone(&config.borrow_and_update());
                        pool.prober.config_changed();
                        pool.apply(&new, Instant::now());
                        applied.send_replace(new);
                    }
                    Err(_) => config_open = false,
                },
                Some(done) = pool.tasks.join_next_with_id(), if !pool.tasks.is_empty() => {
                    pool.finished(done, Instant::now());
                }
                () = &mut timer, if next.is_some() => pool.start_due(Instant::now()),
            }
        }
        // No config is applied any more: whoever waits for one stops waiting.
        drop(applied);
        let _ = stop_tx.send(true);
        pool.drain().await;
    }
}

/// Maps scheduler instants to wall-clock time, for phase alignment.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    instant: Instant,
    /// Nanoseconds since the Unix epoch at `instant`.
    wall_ns: u128,
}

impl WallClock {
    fn new(instant: Instant, wall: SystemTime) -> Self {
        let wall_ns = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        WallClock { instant, wall_ns }
    }

    /// The first instant at or after `at` whose wall-clock time minus `phase` is a multiple
    /// of `interval`.
    fn align(&self, at: Instant, phase: Duration, interval: Duration) -> Instant {
        let interval_ns = interval.as_nanos();
        if interval_ns == 0 {
            return at;
        }
        let wall = self.wall_ns + at.saturating_duration_since(self.instant).as_nanos();
        let phase_ns = phase.as_nanos() % interval_ns;
        let past_slot = (wall + interval_ns - phase_ns) % interval_ns;
        if past_slot == 0 {
            return at;
        }
        let wait = u64::try_from(interval_ns - past_slot).unwrap_or(u64::MAX);
        at + Duration::from_nanos(wait)
    }
}

/// What happens to an account once its probe in flight finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterProbe {
    /// Next aligned slot, stretched by the backoff factor.
    Continue,
    /// A reload changed the account and cancelled the probe: start afresh at the entry's
    /// `due`.
    Restart,
    /// A reload removed the account and cancelled the probe.
    Forget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the heap, waiting for `due`.
    Queued,
    /// A task runs (or waits for permits for) its probe.
    Probing(AfterProbe),
}

struct Entry {
    account: Arc<Account>,
    phase: Duration,
    /// When the probe in flight was due, or when the next one is.
    due: Instant,
    /// Identifies the live heap item; items with another generation are stale.
    generation: u64,
    state: State,
    /// The task of the probe while [`State::Probing`], so that a reload can cancel it.
    task: Option<ProbeTask>,
}

/// A probe's task, as a reload cancels it.
struct ProbeTask {
    handle: AbortHandle,
    /// Set before the task is aborted: a task that gets its permits in between (another
    /// task's abort can hand them over on another thread) sees it and does not probe.
    cancelled: Arc<AtomicBool>,
}

/// A heap item: the earliest `due` surfaces first.
type Slot = Reverse<(Instant, u64, Arc<str>)>;

/// The scheduler's state while it runs.
struct Pool<L, P> {
    ledger: Arc<L>,
    prober: Arc<P>,
    clock: WallClock,
    entries: HashMap<Arc<str>, Entry>,
    queue: BinaryHeap<Slot>,
    next_generation: u64,
    /// One task per probe that is due: waiting for permits or probing. Yields the backoff
    /// factor for the next gap, `None` if it was cancelled before probing.
    tasks: JoinSet<Option<u32>>,
    running: HashMap<Id, Arc<str>>,
    global: Arc<Limit>,
    servers: HashMap<String, Arc<Limit>>,
    server_limit: usize,
    /// The longest probe timeout in the config: bounds the shutdown grace period.
    timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl<L: Ledger, P: Prober> Pool<L, P> {
    fn new(ledger: Arc<L>, prober: Arc<P>, clock: WallClock, stop: watch::Receiver<bool>) -> Self {
        Pool {
            ledger,
            prober,
            clock,
            entries: HashMap::new(),
            queue: BinaryHeap::new(),
            next_generation: 0,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            global: Limit::new(0),
            servers: HashMap::new(),
            server_limit: 0,
            timeout: crate::config::DEFAULT_TIMEOUT,
            stop,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Puts `entry` in the heap at its `due`, superseding any earlier heap item of it.
    fn enqueue(
        queue: &mut BinaryHeap<Slot>,
        next_generation: &mut u64,
        name: &Arc<str>,
        entry: &mut Entry,
    ) {
        *next_generation += 1;
        entry.generation = *next_generation;
        entry.state = State::Queued;
        queue.push(Reverse((entry.due, entry.generation, Arc::clone(name))));
    }

    /// Makes the schedule follow `config` (see [`Scheduler::run`]).
    fn apply(&mut self, config: &Config, now: Instant) {
        // The longest any probe may run: accounts can carry their own timeout.
        self.timeout = config
            .accounts()
            .map(|a| a.target.timeout)
            .fold(config.timeout, Duration::max);
        let (mut added, mut changed) = (0usize, 0usize);
        // Probes of removed and changed accounts: marked while the entries are updated,
        // aborted once all are marked (and the limits changed), so that none of them starts
        // with permits that another's abort or a raised limit hands over meanwhile.
        let mut cancelled = Vec::new();
        let mut names = HashSet::with_capacity(config.account_count());
        for account in config.accounts() {
            names.insert(account.name.as_str());
            let due = now + startup_offset(&account.name, account.interval);
            match self.entries.get_key_value(account.name.as_str()) {
                Some((_, entry))
                    if entry.state != State::Probing(AfterProbe::Forget)
                        && *entry.account == *account => {}
                Some((name, _)) => {
                    changed += 1;
                    let name = Arc::clone(name);
                    let entry = self.entries.get_mut(&name).expect("looked up above");
                    entry.account = Arc::new(account.clone());
                    entry.phase = phase(&account.name, account.interval);
                    entry.due = due;
                    match entry.state {
                        State::Queued => {
                            Self::enqueue(&mut self.queue, &mut self.next_generation, &name, entry)
                        }
                        State::Probing(_) => {
                            cancelled.extend(cancel(entry));
                            entry.state = State::Probing(AfterProbe::Restart);
                        }
                    }
                }
                None => {
                    added += 1;
                    let name: Arc<str> = Arc::from(account.name.as_str());
                    let mut entry = Entry {
                        account: Arc::new(account.clone()),
                        phase: phase(&account.name, account.interval),
                        due,
                        generation: 0,
                        state: State::Queued,
                        task: None,
                    };
                    Self::enqueue(
                        &mut self.queue,
                        &mut self.next_generation,
                        &name,
                        &mut entry,
                    );
                    self.entries.insert(name, entry);
                }
            }
        }
        let before = self.entries.len();
        self.entries.retain(|name, entry| {
            if names.contains(&**name) {
                return true;
            }
            match entry.state {
                State::Queued => false,
                State::Probing(_) => {
                    cancelled.extend(cancel(entry));
                    entry.state = State::Probing(AfterProbe::Forget);
                    true
                }
            }
        });
        let removed = before - self.entries.len();
        let entries = &self.entries;
        self.queue.retain(|Reverse((_, generation, name))| {
            entries
                .get(name)
                .is_some_and(|e| e.generation == *generation && e.state == State::Queued)
        });

        // The limits are changed in place: probes already waiting for a permit wait on them.
        self.global.set(config.concurrency.max(1));
        self.server_limit = config.per_server_concurrency.max(1);
        let servers: HashSet<String> = config.accounts().map(|a| a.target.server()).collect();
        self.servers.retain(|server, _| servers.contains(server));
        for limit in self.servers.values() {
            limit.set(self.server_limit);
        }
        for task in &cancelled {
            task.abort();
        }
        tracing::info!(
            accounts = names.len(),
            added,
            changed,
            removed,
            cancelled = cancelled.len(),
            "schedule follows the configuration"
        );
    }

    /// Starts a task for every account due at or before `now`.
    fn start_due(&mut self, now: Instant) {
        while let Some(Reverse((due, _, _))) = self.queue.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((due, generation, name))) = self.queue.pop() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&name) else {
                continue;
            };
            if entry.generation != generation || entry.state != State::Queued {
                continue;
            }
            entry.state = State::Probing(AfterProbe::Continue);
            let account = Arc::clone(&entry.account);
            let server_limit = self.server_limit;
            let server = Arc::clone(
                self.servers
                    .entry(account.target.server())
                    .or_insert_with(|| Limit::new(server_limit)),
            );
            let cancelled = Arc::new(AtomicBool::new(false));
            let task = probe_when_permitted(
                Arc::clone(&self.ledger),
                Arc::clone(&self.prober),
                account,
                due,
                server,
                Arc::clone(&self.global),
                self.stop.clone(),
                Arc::clone(&cancelled),
            );
            let handle = self.tasks.spawn(task);
            self.running.insert(handle.id(), name);
            entry.task = Some(ProbeTask { handle, cancelled });
        }
    }

    /// Plans the next probe of the account whose task just ended.
    fn finished(&mut self, done: Result<(Id, Option<u32>), JoinError>, now: Instant) {
        let (id, factor) = match done {
            Ok((id, factor)) => (id, factor),
            Err(e) => {
                let account = self.running.get(&e.id()).map(|n| n.to_string());
                if e.is_cancelled() {
                    tracing::debug!(account, "probe cancelled by a reload");
                } else {
                    // The panic payload is not logged: it could hold anything.
                    tracing::error!(account, "a probe task panicked");
                }
                (e.id(), None)
            }
        };
        let Some(name) = self.running.remove(&id) else {
            return;
        };
        let Some(entry) = self.entries.get_mut(&name) else {
            return;
        };
        entry.task = None;
        match entry.state {
            State::Queued => {}
            State::Probing(AfterProbe::Forget) => {
                self.entries.remove(&name);
            }
            State::Probing(AfterProbe::Restart) => {
                entry.due = entry.due.max(now);
                Self::enqueue(&mut self.queue, &mut self.next_generation, &name, entry);
            }
            State::Probing(AfterProbe::Continue) => {
                let interval = entry.account.interval;
                let gap = interval
                    .saturating_mul(factor.unwrap_or(1).max(1))
                    .min(MAX_GAP);
                let earliest = (entry.due + gap).max(now);
                entry.due = self.clock.align(earliest, entry.phase, interval);
                Self::enqueue(&mut self.queue, &mut self.next_generation, &name, entry);
            }
        }
    }

    /// Waits for the probes in flight, aborting them after the grace period.
    async fn drain(&mut self) {
        let grace = self.timeout + SHUTDOWN_GRACE_MARGIN;
        let tasks = &mut self.tasks;
        let finished =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!(
                probes = self.tasks.len(),
                "aborting probes still running {grace:?} after shutdown"
            );
            self.tasks.shutdown().await;
        }
    }
}

/// Marks the probe task of `entry` (waiting for permits or in flight) cancelled, and returns
/// it for the caller to abort. Aborted, the task ends at its next await point: its permits
/// and connection are dropped and nothing is recorded. [`Pool::finished`] hears of it as of
/// any task.
fn cancel(entry: &mut Entry) -> Option<AbortHandle> {
    let task = entry.task.take()?;
    if task.handle.is_finished() {
        return None;
    }
    task.cancelled.store(true, Ordering::SeqCst);
    Some(task.handle)
}

/// Reports a probe as in flight to the ledger for as long as it lives, even if the probe
/// panics or is aborted.
struct InFlight<'a, L: Ledger>(&'a L);

impl<'a, L: Ledger> InFlight<'a, L> {
    fn new(ledger: &'a L) -> Self {
        ledger.probe_started();
        InFlight(ledger)
    }
}

impl<L: Ledger> Drop for InFlight<'_, L> {
    fn drop(&mut self) {
        self.0.probe_finished();
    }
}

/// One due probe: waits for a global slot and its server's permit, then probes and records.
/// Returns the backoff factor for the gap to the next probe, or `None` when shutdown came
/// before the permits, or a reload cancelled the probe.
#[allow(clippy::too_many_arguments)]
async fn probe_when_permitted<L: Ledger, P: Prober>(
    ledger: Arc<L>,
    prober: Arc<P>,
    account: Arc<Account>,
    due: Instant,
    server: Arc<Limit>,
    global: Arc<Limit>,
    mut stop: watch::Receiver<bool>,
    cancelled: Arc<AtomicBool>,
) -> Option<u32> {
    let queued = Instant::now();
    let plan = ledger.plan(&account.name);
    let budget = ledger.failure_budget();
    let permits = async {
        // The failed-login budget comes first: a probe waiting for it holds no permit that
        // accounts with a method known to work need. That wait is the budget at work, shown
        // by its own metric, and is not lag.
        let admission = match &budget {
            Some(budget) => Some(budget.admit(&account.name, &account.target, &plan).await),
            None => None,
        };
        // The pool slot is asked for first, so that a pool that cannot keep up shows as lag;
        // when the account's server is at its own limit, the slot is given back while
        // waiting for the server, so a slow or dead server never holds slots that other
        // servers' accounts need, and that wait is not counted as the pool's lag.
        let asked = Instant::now();
        let slot = global.acquire().await;
        let mut pool_wait = asked.elapsed();
        if let Some(server_permit) = server.try_acquire() {
            return (server_permit, slot, pool_wait, admission);
        }
        drop(slot);
        let server_permit = server.acquire().await;
        let asked = Instant::now();
        let slot = global.acquire().await;
        pool_wait += asked.elapsed();
        (server_permit, slot, pool_wait, admission)
    };
    let (_server, _global, pool_wait, mut admission) = tokio::select! {
        biased;
        _ = stop.wait_for(|stop| *stop) => return None,
        permits = permits => permits,
    };
    if cancelled.load(Ordering::SeqCst) {
        return None;
    }
    // Late by the time the task started after its due time, plus the time it waited for a
    // pool slot (not for the budget).
    let dispatch = queued.saturating_duration_since(due);
    ledger.schedule_lag(dispatch + pool_wait);
    let steps = match admission.as_mut() {
        Some(admission) => admission.start(),
        None => Steps {
            preferred: plan.preferred,
            last: plan.rejected,
            others: None,
        },
    };
    let in_flight = InFlight::new(&*ledger);
    let meter = admission.as_ref().map(Admission::meter).unwrap_or_default();
    let verdict = prober
        .probe_metered(account.target.clone(), steps, meter)
        .await;
    drop(in_flight);
    if let Some(admission) = admission {
        admission.settle(&verdict);
    }
    ledger.record(&account, verdict, SystemTime::now());
    Some(ledger.plan(&account.name).backoff_factor)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::task::JoinHandle;

    use super::*;
    use crate::config::Group;
    use crate::secret::Password;
    use crate::verdict::{Phases, Protocol};

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
                accounts,
            }],
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
        fn probe(&self, target: Target, preferred: Option<Method>) -> ProbeFuture {
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
        let past =
            (at.as_millis() + interval.as_millis() - phase.as_millis()) % interval.as_millis();
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
}
