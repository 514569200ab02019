//! The account store: every configured account's state and every group's counters, the
//! single source of truth that probes write through [`Ledger`] and that the exposition and the
//! pages read. Writing and reading take one lock for a moment; nothing here renders or probes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::budget::FailureBudget;
use crate::config::{Account, Config};
use crate::probe::Target;
use crate::schedule::Ledger;
use crate::state::{AccountState, Plan};
use crate::verdict::{AttemptResult, Method, Protocol, Reason, Verdict};

/// Upper bounds of `mailbox_probe_duration_seconds`: a healthy login takes tens of
/// milliseconds to a second; Dovecot's failure delays and the 30 s default timeout make the
/// long tail.
pub const DURATION_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// `mailbox_exporter_schedule_lag_seconds` is the largest lag reported within this window:
/// long enough that a 15 s or 30 s scrape interval sees every spike.
pub const LAG_WINDOW_SECS: u64 = 60;

/// Every account's state, the groups' counters and the exporter-wide readings (probes in
/// flight, schedule lag, reloads, certificates, sources, failed-login budgets, tokens).
pub struct Store {
    inner: RwLock<Inner>,
    pub(super) in_flight: AtomicI64,
    lag: Mutex<LagWindow>,
    /// Where the lag window's seconds count from.
    epoch: Instant,
    pub(super) budget: Arc<FailureBudget>,
    /// The OAuth2 token sources, once the app has them.
    pub(super) tokens: OnceLock<Arc<crate::oauth2::Tokens>>,
}

#[derive(Default)]
pub(super) struct Inner {
    /// Ordered by group, then account name: the order of the exposition and the page.
    pub(super) accounts: BTreeMap<(String, String), Entry>,
    /// Account name (unique in a config) to its key in `accounts`.
    pub(super) keys: HashMap<String, (String, String)>,
    pub(super) groups: BTreeMap<String, GroupStats>,
    /// `host:port` to the notAfter the latest TLS probe to it saw, for the servers that
    /// configured accounts use.
    pub(super) certs: BTreeMap<String, i64>,
    pub(super) reload_ok: bool,
    pub(super) reload_success: Option<SystemTime>,
    /// Each account source's state, by name.
    pub(super) sources: BTreeMap<String, crate::source::Status>,
}

pub(super) struct Entry {
    /// As configured: a result from a probe that ran with other settings is dropped.
    pub(super) account: Arc<Account>,
    pub(super) state: AccountState,
    /// `group="..",account=".."`, escaped.
    pub(super) labels: Arc<str>,
    /// `protocol="..",server="..",tls="..",auth_mode="..",source=".."` (and a VICIdial
    /// row's `email_account_name`, `user_group`), escaped.
    pub(super) info: Arc<str>,
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
pub(super) struct GroupStats {
    /// `group=".."`, escaped.
    pub(super) labels: String,
    /// `mailbox_probe_duration_seconds` per bucket, not cumulative; the exposition adds
    /// them up.
    pub(super) buckets: [u64; DURATION_BUCKETS.len()],
    pub(super) count: u64,
    pub(super) sum: f64,
    /// `mailbox_group_failures_total`, in [`Reason::ALL`]'s order.
    pub(super) failures: [u64; Reason::ALL.len()],
    /// `mailbox_group_auth_attempts_total`, in [`Method::ALL`] then [`AttemptResult::ALL`]
    /// order.
    pub(super) attempts: [[u64; AttemptResult::ALL.len()]; Method::ALL.len()],
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
pub(super) struct LagWindow {
    /// `(second, largest lag in that second)`; a slot is stale once its second left the window.
    slots: [(u64, f64); LAG_WINDOW_SECS as usize],
}

impl LagWindow {
    pub(super) fn new() -> LagWindow {
        LagWindow {
            slots: [(0, 0.0); LAG_WINDOW_SECS as usize],
        }
    }

    pub(super) fn report(&mut self, second: u64, lag: f64) {
        let slot = &mut self.slots[(second % LAG_WINDOW_SECS) as usize];
        if slot.0 != second {
            *slot = (second, lag);
        } else if lag > slot.1 {
            slot.1 = lag;
        }
    }

    pub(super) fn max(&self, now: u64) -> f64 {
        self.slots
            .iter()
            .filter(|(second, _)| *second <= now && now - *second < LAG_WINDOW_SECS)
            .map(|&(_, lag)| lag)
            .fold(0.0, f64::max)
    }
}

/// Appends `value` escaped as the text format wants label values. The store renders each
/// account's and group's label prefix once, when it is configured, so that a scrape copies
/// them instead of escaping every name again.
fn escape_label_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The `auth_mode` label: POP3's configured mode; IMAP picks its mechanism itself.
pub(super) fn auth_mode_label(target: &Target) -> &'static str {
    match target.protocol {
        Protocol::Pop3 => target.auth_mode.as_str(),
        Protocol::Imap => "auto",
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            inner: RwLock::new(Inner::default()),
            in_flight: AtomicI64::new(0),
            lag: Mutex::new(LagWindow::new()),
            epoch: Instant::now(),
            budget: Arc::new(FailureBudget::new()),
            tokens: OnceLock::new(),
        }
    }

    // A panic elsewhere must not take scraping down with it: the data stays consistent
    // because every update is a plain assignment under the lock.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lag_second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// `mailbox_exporter_schedule_lag_seconds`.
    pub(super) fn lag_max(&self) -> f64 {
        self.lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .max(self.lag_second(Instant::now()))
    }

    /// Shows `tokens`' sources from now on.
    pub fn use_tokens(&self, tokens: Arc<crate::oauth2::Tokens>) {
        let _ = self.tokens.set(tokens);
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
        self.budget.configure(
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

    /// The failed-login budgets the scheduler keeps probes within.
    pub fn budget(&self) -> &Arc<FailureBudget> {
        &self.budget
    }

    /// The last configuration (re)load succeeded.
    pub fn last_reload_ok(&self) -> bool {
        self.read().reload_ok
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger for Store {
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
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn probe_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn failure_budget(&self) -> Option<Arc<FailureBudget>> {
        Some(Arc::clone(&self.budget))
    }

    fn schedule_lag(&self, lag: Duration) {
        let second = self.lag_second(Instant::now());
        self.lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .report(second, lag.as_secs_f64());
    }
}
