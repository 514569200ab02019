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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::budget::{Admission, FailureBudget};
use crate::config::{Account, Config};
use crate::probe::{self, Meter, Steps, Target};
use crate::shard::{PHASE_SALT, stable_hash};
use crate::state::Plan;
use crate::tls::Connectors;
use crate::verdict::Verdict;

mod limit;

use limit::Limit;

/// Where the scheduler reads account history from and reports to. [`crate::metrics::Store`]
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
    /// Probes `target` walking its ladder as `steps` say, counting the rungs it starts on
    /// `meter` (so that a probe dropped under way is charged to the failed-login budget for
    /// what it may have sent). The future must finish on its own within the target's
    /// timeout. Probers that only script verdicts may ignore all but `steps.preferred`.
    fn probe(&self, target: Target, steps: Steps, meter: Meter) -> ProbeFuture;

    /// A new configuration is in force: probes started from now on must not use anything the
    /// prober derived from files the old one named.
    fn config_changed(&self) {}
}

/// Logs in over the network with [`probe::probe_metered`], sharing its TLS connectors between
/// its probes until the configuration changes.
#[derive(Debug, Clone, Default)]
pub struct NetworkProber {
    connectors: Connectors,
}

impl Prober for NetworkProber {
    fn probe(&self, target: Target, steps: Steps, meter: Meter) -> ProbeFuture {
        let connectors = self.connectors.clone();
        Box::pin(async move { probe::probe_metered(&target, steps, &connectors, &meter).await })
    }

    /// CA files may have been renewed: the next probes build their connectors afresh.
    fn config_changed(&self) {
        self.connectors.forget();
    }
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
                Some((name, entry))
                    if entry.state != State::Probing(AfterProbe::Forget)
                        && *entry.account == **account =>
                {
                    // The new config's copy, so that the old one can go.
                    let name = Arc::clone(name);
                    let entry = self.entries.get_mut(&name).expect("looked up above");
                    entry.account = Arc::clone(account);
                }
                Some((name, _)) => {
                    changed += 1;
                    let name = Arc::clone(name);
                    let entry = self.entries.get_mut(&name).expect("looked up above");
                    entry.account = Arc::clone(account);
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
                        account: Arc::clone(account),
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
        None => plan.steps(),
    };
    let in_flight = InFlight::new(&*ledger);
    let meter = admission.as_ref().map(Admission::meter).unwrap_or_default();
    let verdict = prober.probe(account.target.clone(), steps, meter).await;
    drop(in_flight);
    if let Some(admission) = admission {
        admission.settle(&verdict);
    }
    ledger.record(&account, verdict, SystemTime::now());
    Some(ledger.plan(&account.name).backoff_factor)
}

#[cfg(test)]
mod tests;
