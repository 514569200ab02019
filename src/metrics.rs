//! The account store and its readings: the single source of truth that probes write
//! ([`Ledger::record`]), the pages read ([`view::AccountView`]) and scrapes encode. Scraping
//! only encodes; it never probes.
//!
//! The exposition is a private `prometheus` registry (the process collector and
//! [`exporter::ExporterCollector`] over the store) encoded by the crate's `TextEncoder`,
//! followed by the per-account and per-group families that [`text`] writes by hand
//! ([`families`] is the same through the crate, kept for the exposition benchmark).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{Registry, TextEncoder};

use crate::budget::FailureBudget;
use crate::config::{Account, Config};
use crate::probe::Target;
use crate::schedule::Ledger;
use crate::state::AccountState;
use crate::state::Plan;
use crate::verdict::{AttemptResult, Method, Protocol, Reason, Verdict};
use text::escape_label_into;

/// Upper bounds of `mailbox_probe_duration_seconds`: a healthy login takes tens of
/// milliseconds to a second; Dovecot's failure delays and the 30 s default timeout make the
/// long tail.
pub const DURATION_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const BUCKET_LABELS: [&str; 11] = [
    "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf",
];

/// `mailbox_exporter_schedule_lag_seconds` is the largest lag reported within this window:
/// long enough that a 15 s or 30 s scrape interval sees every spike.
pub const LAG_WINDOW_SECS: u64 = 60;

/// The exporter's state. The rest of the code calls its `observe`-style methods.
pub struct Metrics {
    shared: Arc<Shared>,
    /// The process collector and the exporter-wide families; private, so that tests and
    /// several exporters in one process never share series.
    registry: Registry,
    /// The length of the last exposition, to size the next one.
    last_len: AtomicUsize,
}

/// What the probes write and the exporter-wide collector reads.
struct Shared {
    inner: RwLock<Inner>,
    in_flight: AtomicI64,
    lag: Mutex<LagWindow>,
    /// Where the lag window's seconds count from.
    epoch: Instant,
    budget: Arc<FailureBudget>,
    /// The OAuth2 token sources, once the app has them.
    tokens: OnceLock<Arc<crate::oauth2::Tokens>>,
}

impl Shared {
    // A panic elsewhere must not take scraping down with it: the data stays consistent
    // because every update is a plain assignment under the lock.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lag_second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// `mailbox_exporter_schedule_lag_seconds`.
    fn lag_max(&self) -> f64 {
        self.lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .max(self.lag_second(Instant::now()))
    }
}

#[derive(Default)]
struct Inner {
    /// Ordered by group, then account name: the order of the exposition and the page.
    accounts: BTreeMap<(String, String), Entry>,
    /// Account name (unique in a config) to its key in `accounts`.
    keys: HashMap<String, (String, String)>,
    groups: BTreeMap<String, GroupStats>,
    /// `host:port` to the notAfter the latest TLS probe to it saw, for the servers that
    /// configured accounts use.
    certs: BTreeMap<String, i64>,
    reload_ok: bool,
    reload_success: Option<SystemTime>,
    /// Each account source's state, by name.
    sources: BTreeMap<String, crate::source::Status>,
}

struct Entry {
    /// As configured: a result from a probe that ran with other settings is dropped.
    account: Arc<Account>,
    state: AccountState,
    /// `group="..",account=".."`, escaped.
    labels: Arc<str>,
    /// `protocol="..",server="..",tls="..",auth_mode="..",source=".."` (and a VICIdial
    /// row's `email_account_name`, `user_group`), escaped.
    info: Arc<str>,
}

impl Entry {
    fn new(account: &Arc<Account>, state: AccountState) -> Entry {
        let mut labels = String::with_capacity(account.group.len() + account.name.len() + 20);
        labels.push_str("group=\"");
        escape_label_into(&mut labels, &account.group);
        labels.push_str("\",account=\"");
        escape_label_into(&mut labels, &account.name);
        labels.push('"');
        let target = &account.target;
        let mut info = String::new();
        let _ = write!(info, "protocol=\"{}\",server=\"", target.protocol);
        escape_label_into(&mut info, &target.server());
        let _ = write!(
            info,
            "\",tls=\"{}\",auth_mode=\"{}\"",
            target.tls.mode,
            auth_mode_label(target)
        );
        info.push_str(",source=\"");
        escape_label_into(&mut info, account.origin.source());
        info.push('"');
        if let crate::config::Origin::Vicidial(row) = &account.origin {
            info.push_str(",email_account_name=\"");
            escape_label_into(&mut info, &row.email_account_name);
            info.push_str("\",user_group=\"");
            escape_label_into(&mut info, &row.user_group);
            info.push('"');
        }
        Entry {
            account: Arc::clone(account),
            state,
            labels: labels.into(),
            info: info.into(),
        }
    }
}

/// One group's counters: they outlive the accounts that made them and go with the group.
#[derive(Clone)]
struct GroupStats {
    /// `group=".."`, escaped.
    labels: String,
    /// `mailbox_probe_duration_seconds` per bucket, not cumulative; the exposition adds
    /// them up.
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
    /// `mailbox_group_failures_total`, in [`Reason::ALL`]'s order.
    failures: [u64; Reason::ALL.len()],
    /// `mailbox_group_auth_attempts_total`, in [`Method::ALL`] then [`AttemptResult::ALL`]
    /// order.
    attempts: [[u64; AttemptResult::ALL.len()]; Method::ALL.len()],
}

impl GroupStats {
    fn new(group: &str) -> GroupStats {
        let mut labels = String::from("group=\"");
        escape_label_into(&mut labels, group);
        labels.push('"');
        GroupStats {
            labels,
            buckets: [0; DURATION_BUCKETS.len()],
            count: 0,
            sum: 0.0,
            failures: [0; Reason::ALL.len()],
            attempts: [[0; AttemptResult::ALL.len()]; Method::ALL.len()],
        }
    }

    fn observe(&mut self, verdict: &Verdict) {
        let seconds = verdict.phases.total.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
        if !verdict.success {
            // As the account's state counts it.
            let reason = verdict.reason.unwrap_or(Reason::Protocol);
            if let Some(i) = Reason::ALL.iter().position(|&r| r == reason) {
                self.failures[i] += 1;
            }
        }
        for attempt in &verdict.attempts {
            let m = Method::ALL.iter().position(|&m| m == attempt.method);
            let r = AttemptResult::ALL.iter().position(|&r| r == attempt.result);
            if let (Some(m), Some(r)) = (m, r) {
                self.attempts[m][r] += 1;
            }
        }
    }
}

/// The largest lag per second over the last [`LAG_WINDOW_SECS`] seconds, in a ring.
struct LagWindow {
    /// `(second, largest lag in that second)`; a slot is stale once its second left the window.
    slots: [(u64, f64); LAG_WINDOW_SECS as usize],
}

impl LagWindow {
    fn new() -> LagWindow {
        LagWindow {
            slots: [(0, 0.0); LAG_WINDOW_SECS as usize],
        }
    }

    fn report(&mut self, second: u64, lag: f64) {
        let slot = &mut self.slots[(second % LAG_WINDOW_SECS) as usize];
        if slot.0 != second {
            *slot = (second, lag);
        } else if lag > slot.1 {
            slot.1 = lag;
        }
    }

    fn max(&self, now: u64) -> f64 {
        self.slots
            .iter()
            .filter(|(second, _)| *second <= now && now - *second < LAG_WINDOW_SECS)
            .map(|&(_, lag)| lag)
            .fold(0.0, f64::max)
    }
}

/// The `auth_mode` label: POP3's configured mode; IMAP picks its mechanism itself.
fn auth_mode_label(target: &Target) -> &'static str {
    match target.protocol {
        Protocol::Pop3 => target.auth_mode.as_str(),
        Protocol::Imap => "auto",
    }
}

impl Metrics {
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
            inner: RwLock::new(Inner::default()),
            in_flight: AtomicI64::new(0),
            lag: Mutex::new(LagWindow::new()),
            epoch: Instant::now(),
            budget: Arc::new(FailureBudget::new()),
            tokens: OnceLock::new(),
        });
        let registry = Registry::new();
        let exporter = exporter::ExporterCollector::new(Arc::clone(&shared));
        registry
            .register(Box::new(exporter))
            .expect("a new registry takes the exporter's families");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("a new registry takes the process collector");
        Metrics {
            shared,
            registry,
            last_len: AtomicUsize::new(0),
        }
    }

    /// Shows `tokens`' sources from now on.
    pub fn use_tokens(&self, tokens: Arc<crate::oauth2::Tokens>) {
        let _ = self.shared.tokens.set(tokens);
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.shared.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.shared.write()
    }

    /// Makes the set of accounts match `config`. Accounts are identified by name: an
    /// unchanged account keeps everything; a changed one keeps its counters but forgets its
    /// remembered method and backoff ([`AccountState::reset_memory`]); a new one starts at
    /// zero with all its series; a removed one, and a group left empty, disappear.
    pub fn apply_config(&self, config: &Config) {
        let (mut added, mut changed, mut kept) = (0usize, 0usize, 0usize);
        let mut inner = self.write();
        let mut old_accounts = std::mem::take(&mut inner.accounts);
        let old_keys = std::mem::take(&mut inner.keys);
        let mut old_groups = std::mem::take(&mut inner.groups);
        for account in config.accounts() {
            if inner.keys.contains_key(&account.name) {
                // Names are unique in a validated config; the first one wins otherwise.
                continue;
            }
            let old = old_keys
                .get(&account.name)
                .and_then(|key| old_accounts.remove(key));
            let entry = match old {
                Some(mut entry) if *entry.account == **account => {
                    kept += 1;
                    // The new config's copy, so that the old one can go.
                    entry.account = Arc::clone(account);
                    entry
                }
                Some(mut entry) => {
                    changed += 1;
                    entry.state.reset_memory();
                    Entry::new(account, entry.state)
                }
                None => {
                    added += 1;
                    Entry::new(account, AccountState::new())
                }
            };
            let key = (account.group.clone(), account.name.clone());
            inner.keys.insert(account.name.clone(), key.clone());
            inner.accounts.insert(key, entry);
            if !inner.groups.contains_key(&account.group) {
                let stats = old_groups
                    .remove(&account.group)
                    .unwrap_or_else(|| GroupStats::new(&account.group));
                inner.groups.insert(account.group.clone(), stats);
            }
        }
        let servers: HashSet<String> = config.accounts().map(|a| a.target.server()).collect();
        inner.certs.retain(|server, _| servers.contains(server));
        let removed = old_accounts.len();
        drop(inner);
        self.shared.budget.configure(
            config.failure_budget,
            config.accounts().map(|account| &account.target),
        );
        tracing::info!(added, changed, kept, removed, "accounts configured");
    }

    /// Shows account source `name`'s state from now on; `None` removes its series.
    pub fn source_status(&self, name: &str, status: Option<crate::source::Status>) {
        let mut inner = self.write();
        match status {
            Some(status) => {
                inner.sources.insert(name.to_string(), status);
            }
            None => {
                inner.sources.remove(name);
            }
        }
    }

    /// Each account source's state, by name.
    pub fn sources(&self) -> Vec<(String, crate::source::Status)> {
        self.read()
            .sources
            .iter()
            .map(|(name, status)| (name.clone(), status.clone()))
            .collect()
    }

    /// The outcome of a configuration (re)load; `at` counts only when it succeeded.
    pub fn config_reload(&self, ok: bool, at: SystemTime) {
        let mut inner = self.write();
        inner.reload_ok = ok;
        if ok {
            inner.reload_success = Some(at);
        }
    }

    /// Every configured account, by group then name, without transcripts and attempts.
    pub fn accounts(&self) -> Vec<AccountView> {
        let mut waiting = self.shared.budget.waiting();
        self.read()
            .accounts
            .values()
            .map(|entry| {
                let mut view = AccountView::new(entry, false);
                view.budget_wait = waiting.remove(&view.account);
                view
            })
            .collect()
    }

    /// One configured account, by name, with its last transcript and attempts.
    pub fn account(&self, name: &str) -> Option<AccountView> {
        let inner = self.read();
        let key = inner.keys.get(name)?;
        let mut view = inner
            .accounts
            .get(key)
            .map(|entry| AccountView::new(entry, true))?;
        drop(inner);
        view.budget_wait = self.shared.budget.waiting_for(name);
        Some(view)
    }

    /// The failed-login budgets the scheduler keeps probes within.
    pub fn budget(&self) -> &Arc<FailureBudget> {
        &self.shared.budget
    }

    /// The last configuration (re)load succeeded.
    pub fn last_reload_ok(&self) -> bool {
        self.read().reload_ok
    }

    /// The same exposition with the per-account and per-group families built through the
    /// `prometheus` crate's data model and encoder ([`families::AccountCollector`]): only
    /// for the exposition benchmark, which measures both ways.
    #[doc(hidden)]
    pub fn render_through_crate(&self) -> String {
        let registry = Registry::new();
        let collectors: [Box<dyn prometheus::core::Collector>; 2] = [
            Box::new(exporter::ExporterCollector::new(Arc::clone(&self.shared))),
            Box::new(families::AccountCollector::new(Arc::clone(&self.shared))),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("a new registry takes the collectors");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("a new registry takes the process collector");
        let mut out = String::new();
        let _ = TextEncoder::new().encode_utf8(&registry.gather(), &mut out);
        out
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        // Gathered before the store is locked here: the collector takes the lock itself.
        let families = self.registry.gather();
        let inner = self.read();
        let snapshot = text::Snapshot::take(&inner);
        let accounts = inner.accounts.len();
        drop(inner);
        // ~11 series of ~90 bytes per account until the first exposition tells.
        let estimate = match self.last_len.load(Ordering::Relaxed) {
            0 => 4096 + accounts * 1000,
            last => last + last / 8,
        };
        let mut out = String::with_capacity(estimate);
        // Encoding cannot fail: every family has a name and at least one series.
        let _ = TextEncoder::new().encode_utf8(&families, &mut out);
        text::write_accounts(&mut out, &snapshot);
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger for Metrics {
    fn plan(&self, account: &str) -> Plan {
        let inner = self.read();
        inner
            .keys
            .get(account)
            .and_then(|key| inner.accounts.get(key))
            .map(|entry| entry.state.plan())
            .unwrap_or_default()
    }

    /// Drops the result when the account was removed or changed while the probe ran: it
    /// says nothing about the account as configured now.
    fn record(&self, account: &Account, verdict: Verdict, finished: SystemTime) {
        let total = verdict.phases.total;
        let cert_expiry = verdict.cert_expiry;
        let success = verdict.success;
        let method = verdict.method.map_or("none", Method::as_str);
        let reason = verdict.reason.map_or("none", Reason::as_str);
        let mut guard = self.write();
        let inner = &mut *guard;
        let entry = inner
            .keys
            .get(&account.name)
            .and_then(|key| inner.accounts.get_mut(key))
            .filter(|entry| *entry.account == *account);
        let Some(entry) = entry else {
            drop(guard);
            tracing::debug!(
                group = %account.group,
                account = %account.name,
                "probe result dropped: the account was reconfigured or removed meanwhile"
            );
            return;
        };
        let mut verdict = verdict;
        verdict.advice = account.advise(verdict.advice.take());
        if let Some(stats) = inner.groups.get_mut(&account.group) {
            stats.observe(&verdict);
        }
        let changes = entry.state.observe(verdict, finished);
        if let Some(expiry) = cert_expiry {
            inner.certs.insert(account.target.server(), expiry);
        }
        drop(guard);
        tracing::debug!(
            group = %account.group,
            account = %account.name,
            success,
            method,
            reason,
            duration = ?total,
            "probe finished"
        );
        for change in changes {
            tracing::info!(group = %account.group, account = %account.name, "{change}");
        }
    }

    fn probe_started(&self) {
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn probe_finished(&self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn failure_budget(&self) -> Option<Arc<FailureBudget>> {
        Some(Arc::clone(&self.shared.budget))
    }

    fn schedule_lag(&self, lag: Duration) {
        let second = self.shared.lag_second(Instant::now());
        self.shared
            .lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .report(second, lag.as_secs_f64());
    }
}

mod exporter;
mod families;
#[cfg(test)]
mod tests;
mod text;
mod view;

pub use exporter::{REVISION, RUST_VERSION};
pub use view::AccountView;
