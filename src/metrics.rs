//! Every account's state and its Prometheus exposition: the single source of truth that probes
//! write and scrapes and the landing page read. Scraping only encodes; it never probes.
//!
//! The exposition is written by hand rather than through a client library: with 10,000
//! accounts and ~40 series each, a scrape must be one pass over the accounts into one
//! pre-sized buffer, with every account's label prefix rendered once when it is configured.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::budget::{FailureBudget, ServerBudget};
use crate::config::{Account, Config};
use crate::probe::Target;
use crate::schedule::Ledger;
use crate::state::AccountState;
use crate::state::Plan;
use crate::verdict::{
    Attempt, AttemptResult, Method, Phase, Phases, Protocol, Reason, TlsMode, Verdict,
};

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
    inner: RwLock<Inner>,
    in_flight: AtomicI64,
    lag: Mutex<LagWindow>,
    /// Where the lag window's seconds count from.
    epoch: Instant,
    /// The length of the last exposition, to size the next one.
    last_len: AtomicUsize,
    budget: Arc<FailureBudget>,
    /// The OAuth2 token sources, once the app has them.
    tokens: std::sync::OnceLock<Arc<crate::oauth2::Tokens>>,
}

#[derive(Default)]
struct Inner {
    /// Ordered by group, then account name: the order of the exposition and the page.
    accounts: BTreeMap<(String, String), Entry>,
    /// Account name (unique in a config) to its key in `accounts`.
    keys: HashMap<String, (String, String)>,
    groups: BTreeMap<String, GroupStats>,
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
    labels: String,
    /// `protocol="..",server="..",tls="..",auth_mode="..",source=".."` (and a VICIdial
    /// row's `email_account_name`, `user_group`), escaped.
    info: String,
}

impl Entry {
    fn new(account: &Account, state: AccountState) -> Entry {
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
            account: Arc::new(account.clone()),
            state,
            labels,
            info,
        }
    }
}

/// `mailbox_probe_duration_seconds` of one group.
struct GroupStats {
    /// `group=".."`, escaped.
    labels: String,
    /// Per bucket, not cumulative; the exposition adds them up.
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
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
        }
    }

    fn observe(&mut self, seconds: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
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

/// One account as the web pages show it: its settings and what its last probe found.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub group: String,
    pub account: String,
    pub protocol: Protocol,
    /// `host:port`.
    pub server: String,
    pub tls: TlsMode,
    /// `BEST`, `APOP`, `CRAM-MD5`, `PASS` for POP3; `auto` for IMAP.
    pub auth_mode: &'static str,
    pub interval: Duration,
    /// Where the account is defined.
    pub origin: crate::config::Origin,
    /// At least one probe finished.
    pub probed: bool,
    /// The last probe logged in.
    pub success: bool,
    /// The method the last probe logged in with.
    pub method: Option<Method>,
    /// The method of the last successful login, however long ago.
    pub last_success_method: Option<Method>,
    /// Why the last probe failed.
    pub reason: Option<Reason>,
    /// The last probe's one-line account of its failure.
    pub detail: Option<String>,
    /// What the operator should change, from the last probe.
    pub advice: Option<String>,
    pub fallback: bool,
    pub cleartext: bool,
    pub backoff: bool,
    pub backoff_factor: u32,
    pub consecutive_failures: u64,
    pub last_probe: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    /// The certificate's notAfter, seconds since the epoch.
    pub cert_expiry: Option<i64>,
    pub phases: Phases,
    /// The last probe's redacted dialogue (left empty by [`Metrics::accounts`]).
    pub transcript: Vec<String>,
    /// The rungs the last probe tried (left empty by [`Metrics::accounts`]).
    pub attempts: Vec<Attempt>,
    /// The server whose failed-login budget the account's probe waits for now.
    pub budget_wait: Option<String>,
}

impl AccountView {
    /// `detail`: with the last transcript and attempts, which only the account's own page
    /// shows; the list of every account leaves them out rather than copy every transcript.
    fn new(entry: &Entry, detail: bool) -> AccountView {
        let account = &entry.account;
        let target = &account.target;
        let state = &entry.state;
        let last = state.last();
        let verdict = last.map(|l| &l.verdict);
        AccountView {
            group: account.group.clone(),
            account: account.name.clone(),
            protocol: target.protocol,
            server: target.server(),
            tls: target.tls.mode,
            auth_mode: auth_mode_label(target),
            interval: account.interval,
            origin: account.origin.clone(),
            probed: last.is_some(),
            success: state.success(),
            method: verdict.and_then(|v| v.method),
            last_success_method: state.last_success_method(),
            reason: verdict.and_then(|v| v.reason),
            detail: verdict.and_then(|v| v.detail.clone()),
            advice: state.advice(),
            fallback: state.fallback(),
            cleartext: state.cleartext(),
            backoff: state.backoff(),
            backoff_factor: state.backoff_factor(),
            consecutive_failures: state.consecutive_failures(),
            last_probe: last.map(|l| l.finished),
            last_success: state.last_success(),
            cert_expiry: state.cert_expiry(),
            phases: verdict.map(|v| v.phases).unwrap_or_default(),
            transcript: verdict
                .filter(|_| detail)
                .map(|v| v.transcript.clone())
                .unwrap_or_default(),
            attempts: verdict
                .filter(|_| detail)
                .map(|v| v.attempts.clone())
                .unwrap_or_default(),
            budget_wait: None,
        }
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
        Metrics {
            inner: RwLock::new(Inner::default()),
            in_flight: AtomicI64::new(0),
            lag: Mutex::new(LagWindow::new()),
            epoch: Instant::now(),
            last_len: AtomicUsize::new(0),
            budget: Arc::new(FailureBudget::new()),
            tokens: std::sync::OnceLock::new(),
        }
    }

    /// Shows `tokens`' sources from now on.
    pub fn use_tokens(&self, tokens: Arc<crate::oauth2::Tokens>) {
        let _ = self.tokens.set(tokens);
    }

    // A panic elsewhere must not take scraping down with it: the data stays consistent
    // because every update is a plain assignment under the lock.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
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
                Some(entry) if *entry.account == *account => {
                    kept += 1;
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

    /// Every configured account, by group then name, without transcripts and attempts.
    pub fn accounts(&self) -> Vec<AccountView> {
        let mut waiting = self.budget.waiting();
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
        view.budget_wait = self.budget.waiting_for(name);
        Some(view)
    }

    /// The failed-login budgets the scheduler keeps probes within.
    pub fn budget(&self) -> &Arc<FailureBudget> {
        &self.budget
    }

    /// The last configuration (re)load succeeded.
    pub fn last_reload_ok(&self) -> bool {
        self.read().reload_ok
    }

    fn lag_second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let lag = self
            .lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .max(self.lag_second(Instant::now()));
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let budgets = self.budget.servers();
        let inner = self.read();
        // ~40 series of ~90 bytes per account until the first exposition tells.
        let estimate = match self.last_len.load(Ordering::Relaxed) {
            0 => 4096 + inner.accounts.len() * 3600,
            last => last + last / 8,
        };
        let mut out = String::with_capacity(estimate);
        // Writing to a String cannot fail.
        let _ = write_exposition(&mut out, &inner, in_flight, lag);
        let _ = write_budgets(&mut out, &budgets);
        drop(inner);
        if let Some(tokens) = self.tokens.get() {
            let _ = oauth2::write_tokens(&mut out, &tokens.stats());
        }
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
        let changes = entry.state.observe(verdict, finished);
        if let Some(stats) = inner.groups.get_mut(&account.group) {
            stats.observe(total.as_secs_f64());
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

/// Appends `value` escaped as the text format wants label values.
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

/// A sample value, appended without going through `fmt` for the common integer case: a
/// scrape writes hundreds of thousands of them.
trait Sample {
    fn write_to(&self, out: &mut String);
}

impl Sample for u64 {
    fn write_to(&self, out: &mut String) {
        let mut digits = [0u8; 20];
        let mut n = *self;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            out.push(char::from(d));
        }
    }
}

impl Sample for bool {
    fn write_to(&self, out: &mut String) {
        out.push(if *self { '1' } else { '0' });
    }
}

impl Sample for i64 {
    fn write_to(&self, out: &mut String) {
        if *self < 0 {
            out.push('-');
        }
        self.unsigned_abs().write_to(out);
    }
}

impl Sample for f64 {
    fn write_to(&self, out: &mut String) {
        if self.fract() == 0.0 && self.abs() < 1e15 {
            // Whole values (every phase before the first probe, say) skip float formatting.
            (*self as i64).write_to(out);
        } else {
            // `Display` for f64 never uses an exponent and prints the shortest exact form.
            let _ = write!(out, "{self}");
        }
    }
}

/// Seconds since the epoch, millisecond precision; 0 for "never".
struct Timestamp(Option<SystemTime>);

impl Sample for Timestamp {
    fn write_to(&self, out: &mut String) {
        let since = self
            .0
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .unwrap_or_default();
        since.as_secs().write_to(out);
        let ms = since.subsec_millis();
        if ms != 0 {
            let _ = write!(out, ".{ms:03}");
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}")
}

/// `name value`.
fn unlabelled(out: &mut String, name: &str, value: impl Sample) {
    out.push_str(name);
    out.push(' ');
    value.write_to(out);
    out.push('\n');
}

/// `name{labels,key="label",...} value`; the extra labels are fixed enum strings, never
/// free text.
fn series(out: &mut String, name: &str, labels: &str, extra: &[(&str, &str)], value: impl Sample) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    for (key, label) in extra {
        out.push(',');
        out.push_str(key);
        out.push_str("=\"");
        out.push_str(label);
        out.push('"');
    }
    out.push_str("} ");
    value.write_to(out);
    out.push('\n');
}

fn write_exposition(out: &mut String, inner: &Inner, in_flight: i64, lag: f64) -> fmt::Result {
    let accounts = || inner.accounts.values();

    let name = "mailbox_auth_success";
    header(
        out,
        name,
        "gauge",
        "Whether the last probe logged in (1) or not (0).",
    )?;
    for e in accounts() {
        series(out, name, &e.labels, &[], e.state.success());
    }

    let name = "mailbox_auth_method";
    header(
        out,
        name,
        "gauge",
        "1 for the method of the last successful login, 0 for the account's other methods.",
    )?;
    for e in accounts() {
        let current = e.state.last_success_method();
        for &m in e.account.target.methods() {
            series(
                out,
                name,
                &e.labels,
                &[("method", m.as_str())],
                current == Some(m),
            );
        }
    }

    let name = "mailbox_auth_attempts_total";
    header(
        out,
        name,
        "counter",
        "Login methods tried, by method and result (success, rejected, error).",
    )?;
    for e in accounts() {
        for &m in e.account.target.methods() {
            for r in AttemptResult::ALL {
                let labels = [("method", m.as_str()), ("result", r.as_str())];
                series(out, name, &e.labels, &labels, e.state.attempts(m, r));
            }
        }
    }

    let name = "mailbox_auth_failures_total";
    header(out, name, "counter", "Failed probes, by reason.")?;
    for e in accounts() {
        // Only the reasons this kind of login can fail with: a password account cannot fail
        // with a token reason, an OAuth2 account not with auth_rejected.
        for &r in Reason::for_login(e.account.target.oauth2.is_some()) {
            series(
                out,
                name,
                &e.labels,
                &[("reason", r.as_str())],
                e.state.failures(r),
            );
        }
    }

    let name = "mailbox_auth_consecutive_failures";
    header(
        out,
        name,
        "gauge",
        "Probes that failed in a row, up to now.",
    )?;
    for e in accounts() {
        series(out, name, &e.labels, &[], e.state.consecutive_failures());
    }

    let name = "mailbox_auth_fallback";
    header(
        out,
        name,
        "gauge",
        "1 while the login works only with a method reached after an advertised method was \
         rejected: pin the auth mode (POP3) or fix the server's mechanism list (IMAP).",
    )?;
    for e in accounts() {
        series(out, name, &e.labels, &[], e.state.fallback());
    }

    let name = "mailbox_auth_cleartext";
    header(
        out,
        name,
        "gauge",
        "1 when the last probe sent the password unencrypted, whatever the outcome.",
    )?;
    for e in accounts() {
        series(out, name, &e.labels, &[], e.state.cleartext());
    }

    let name = "mailbox_probe_phase_seconds";
    header(
        out,
        name,
        "gauge",
        "Time the last probe spent per phase (connect, tls, greeting, auth, total).",
    )?;
    for e in accounts() {
        let phases = e.state.last().map(|l| l.verdict.phases).unwrap_or_default();
        for p in Phase::ALL {
            series(
                out,
                name,
                &e.labels,
                &[("phase", p.as_str())],
                phases.get(p).as_secs_f64(),
            );
        }
    }

    let name = "mailbox_probe_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "Duration of whole probes, per group.",
    )?;
    for g in inner.groups.values() {
        let mut cumulative = 0;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            cumulative = match g.buckets.get(i) {
                Some(n) => cumulative + n,
                None => g.count,
            };
            writeln!(
                out,
                "{name}_bucket{{{},le=\"{le}\"}} {cumulative}",
                g.labels
            )?;
        }
        writeln!(out, "{name}_sum{{{}}} {}", g.labels, g.sum)?;
        writeln!(out, "{name}_count{{{}}} {}", g.labels, g.count)?;
    }

    let name = "mailbox_last_success_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the last successful login finished, seconds since the epoch (0: never).",
    )?;
    for e in accounts() {
        series(out, name, &e.labels, &[], Timestamp(e.state.last_success()));
    }

    let name = "mailbox_last_probe_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the last probe finished, seconds since the epoch (0: never).",
    )?;
    for e in accounts() {
        let finished = e.state.last().map(|l| l.finished);
        series(out, name, &e.labels, &[], Timestamp(finished));
    }

    let name = "mailbox_tls_cert_expiry_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the server's TLS certificate expires, seconds since the epoch; absent until a \
         TLS handshake reported it.",
    )?;
    for e in accounts() {
        if let Some(expiry) = e.state.cert_expiry() {
            series(out, name, &e.labels, &[], expiry);
        }
    }

    let name = "mailbox_probe_backoff";
    header(
        out,
        name,
        "gauge",
        "1 while probing of this account is slowed down after repeated credential rejections.",
    )?;
    for e in accounts() {
        series(out, name, &e.labels, &[], e.state.backoff());
    }

    let name = "mailbox_account_info";
    header(
        out,
        name,
        "gauge",
        "The account's settings, as labels; always 1.",
    )?;
    for e in accounts() {
        writeln!(out, "{name}{{{},{}}} 1", e.labels, e.info)?;
    }

    // Accounts are ordered by group, so one walk counts every group's.
    let mut walk = accounts().peekable();
    let mut counts = Vec::with_capacity(inner.groups.len());
    for group in inner.groups.keys() {
        let (mut total, mut authenticated) = (0u64, 0u64);
        while let Some(e) = walk.next_if(|e| e.account.group == *group) {
            total += 1;
            authenticated += u64::from(e.state.success());
        }
        counts.push((total, authenticated));
    }

    let name = "mailbox_group_accounts";
    header(out, name, "gauge", "Accounts configured in the group.")?;
    for (g, (total, _)) in inner.groups.values().zip(&counts) {
        series(out, name, &g.labels, &[], *total);
    }

    let name = "mailbox_group_accounts_authenticated";
    header(
        out,
        name,
        "gauge",
        "Accounts of the group whose last probe logged in.",
    )?;
    for (g, (_, authenticated)) in inner.groups.values().zip(&counts) {
        series(out, name, &g.labels, &[], *authenticated);
    }

    let name = "mailbox_exporter_build_info";
    header(out, name, "gauge", "The exporter's version; always 1.")?;
    writeln!(out, "{name}{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))?;

    let name = "mailbox_exporter_config_last_reload_successful";
    header(
        out,
        name,
        "gauge",
        "Whether the last configuration (re)load succeeded.",
    )?;
    unlabelled(out, name, inner.reload_ok);

    let name = "mailbox_exporter_config_last_reload_success_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the configuration was last loaded successfully, seconds since the epoch.",
    )?;
    unlabelled(out, name, Timestamp(inner.reload_success));

    write_sources(out, &inner.sources)?;

    let name = "mailbox_exporter_probes_in_flight";
    header(out, name, "gauge", "Probes running now.")?;
    unlabelled(out, name, in_flight);

    let name = "mailbox_exporter_schedule_lag_seconds";
    header(
        out,
        name,
        "gauge",
        "The largest delay of a probe start behind its schedule over the last minute; \
         growing values mean the pool cannot keep up.",
    )?;
    unlabelled(out, name, lag);
    Ok(())
}

/// The account source families; none without sources.
fn write_sources(
    out: &mut String,
    sources: &BTreeMap<String, crate::source::Status>,
) -> fmt::Result {
    if sources.is_empty() {
        return Ok(());
    }
    let labels: Vec<String> = sources
        .keys()
        .map(|name| {
            let mut labels = String::from("source=\"");
            escape_label_into(&mut labels, name);
            labels.push('"');
            labels
        })
        .collect();
    let name = "mailbox_exporter_source_up";
    header(
        out,
        name,
        "gauge",
        "Whether the last read of the account source succeeded; while 0 its last accounts \
         stay in force.",
    )?;
    for (l, s) in labels.iter().zip(sources.values()) {
        series(out, name, l, &[], s.up);
    }
    let name = "mailbox_exporter_source_accounts";
    header(
        out,
        name,
        "gauge",
        "Accounts in force from the source: those of its last successful read.",
    )?;
    for (l, s) in labels.iter().zip(sources.values()) {
        series(out, name, l, &[], s.accounts as u64);
    }
    let name = "mailbox_exporter_source_skipped_rows";
    header(
        out,
        name,
        "gauge",
        "Rows the source's last successful read skipped for an unusable value (the log \
         names each).",
    )?;
    for (l, s) in labels.iter().zip(sources.values()) {
        series(out, name, l, &[], s.skipped as u64);
    }
    let name = "mailbox_exporter_source_last_success_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the source was last read successfully, seconds since the epoch; 0 before.",
    )?;
    for (l, s) in labels.iter().zip(sources.values()) {
        series(out, name, l, &[], Timestamp(s.last_success));
    }
    Ok(())
}

/// The per-server failed-login budget families; none while the budget is off.
fn write_budgets(out: &mut String, budgets: &[ServerBudget]) -> fmt::Result {
    if budgets.is_empty() {
        return Ok(());
    }
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(&ServerBudget) -> u64| {
        header(out, name, kind, help)?;
        for b in budgets {
            let mut labels = String::from("server=\"");
            escape_label_into(&mut labels, &b.server);
            labels.push('"');
            series(out, name, &labels, &[], value(b));
        }
        Ok::<(), fmt::Error>(())
    };
    family(
        "mailbox_exporter_server_failure_budget_remaining",
        "gauge",
        "Failed logins the server's budget still allows within its window, after what probes \
         under way have reserved.",
        &|b| u64::from(b.remaining),
    )?;
    family(
        "mailbox_exporter_server_failure_budget_waiting_probes",
        "gauge",
        "Probes waiting for room in the server's failed-login budget.",
        &|b| u64::from(b.waiting),
    )?;
    family(
        "mailbox_exporter_server_failed_logins_total",
        "counter",
        "Failed logins charged to the server's budget: rejected or unanswered methods, and \
         probes that ended without a login after one.",
        &|b| b.charged,
    )
}

mod oauth2;
#[cfg(test)]
mod tests;
