//! The per-account and per-group families, written as text by hand: the values are copied
//! out of the store under its lock, then written in one pass through a buffer handed on
//! whenever it holds [`SPILL`] bytes, with every account's label prefix rendered once when it
//! is configured.
//!
//! The `prometheus` crate's encoder renders the exporter-wide families; these are appended
//! after them. Going through the crate's data model for 10,000 accounts costs a `Metric`
//! with its own label strings per series, built, sorted and dropped on every scrape: the
//! exposition benchmark (`cargo bench --bench exposition`) measures both paths.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use crate::metrics::store::{DURATION_BUCKETS, Entry, GroupStats, Inner};
use crate::verdict::{AttemptResult, Method, Phase, Phases, Reason, TlsMode};

/// The `le` label of each of [`DURATION_BUCKETS`], then `+Inf`.
const BUCKET_LABELS: [&str; DURATION_BUCKETS.len() + 1] = [
    "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf",
];

/// The buffer is handed to the writer once it holds this much: the text of ten thousand
/// accounts (about 10 MB) never sits in memory whole.
const SPILL: usize = 32 * 1024;

/// Where the text goes: a buffer, spilled into `sink` between series.
pub(super) struct Out<'w> {
    text: String,
    sink: &'w mut dyn io::Write,
    /// The sink's first error; nothing more is written after it.
    error: Option<io::Error>,
}

impl<'w> Out<'w> {
    pub(super) fn new(sink: &'w mut dyn io::Write) -> Out<'w> {
        Out {
            text: String::with_capacity(SPILL + 1024),
            sink,
            error: None,
        }
    }

    fn spill_if_full(&mut self) {
        if self.text.len() >= SPILL {
            self.spill();
        }
    }

    fn spill(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.sink.write_all(self.text.as_bytes())
        {
            self.error = Some(e);
        }
        self.text.clear();
    }

    /// Hands on what is left; the sink's first error, if any.
    pub(super) fn finish(mut self) -> io::Result<()> {
        self.spill();
        self.error.map_or(Ok(()), Err)
    }
}

/// What the per-account and per-group families need, copied out of the store so that the
/// text is written without holding its lock: a probe's verdict waits for the copy (a
/// fraction of a millisecond per thousand accounts), not for the whole rendering.
pub(super) struct Snapshot {
    accounts: Vec<Row>,
    groups: Vec<(GroupStats, u64, u64)>,
}

/// One account's values.
struct Row {
    labels: Arc<str>,
    info: Arc<str>,
    success: bool,
    /// While the last probe logged in.
    method: Option<Method>,
    /// While the last probe failed.
    reason: Option<Reason>,
    consecutive_failures: u64,
    failures: u64,
    fallback: bool,
    cleartext: bool,
    backoff: bool,
    last_probe: Option<SystemTime>,
    last_success: Option<SystemTime>,
    phases: Phases,
    tls: bool,
}

impl Snapshot {
    /// Copies `inner`'s accounts and groups; called under the store's read lock.
    pub(super) fn take(inner: &Inner) -> Snapshot {
        let accounts: Vec<Row> = inner.accounts.values().map(Row::new).collect();
        // Accounts are ordered by group, so one walk counts every group's.
        let mut walk = inner.accounts.values().peekable();
        let mut groups = Vec::with_capacity(inner.groups.len());
        for (group, stats) in &inner.groups {
            let (mut total, mut authenticated) = (0u64, 0u64);
            while let Some(e) = walk.next_if(|e| e.account.group == *group) {
                total += 1;
                authenticated += u64::from(e.state.success());
            }
            groups.push((stats.clone(), total, authenticated));
        }
        Snapshot { accounts, groups }
    }
}

impl Row {
    fn new(e: &Entry) -> Row {
        let state = &e.state;
        let last = state.last();
        Row {
            labels: Arc::clone(&e.labels),
            info: Arc::clone(&e.info),
            success: state.success(),
            method: logged_in(e),
            reason: failing(e),
            consecutive_failures: state.consecutive_failures(),
            failures: state.failures(),
            fallback: state.success() && state.fallback(),
            cleartext: state.cleartext(),
            backoff: state.backoff(),
            last_probe: last.map(|l| l.finished),
            last_success: state.last_success(),
            phases: last.map(|l| l.verdict.phases).unwrap_or_default(),
            tls: e.account.target.tls.mode != TlsMode::None,
        }
    }
}

/// A sample value, appended without going through `fmt` for the common integer case: a
/// scrape writes over a hundred thousand of them.
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

impl Sample for f64 {
    fn write_to(&self, out: &mut String) {
        if self.fract() == 0.0 && self.abs() < 1e15 {
            // Whole values (every phase before the first probe, say) skip float formatting.
            if *self < 0.0 {
                out.push('-');
            }
            (self.abs() as u64).write_to(out);
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

/// One family being written: its `# HELP`/`# TYPE` lines go out with its first series, so
/// a family without series (no account in backoff, say) leaves no trace.
struct Family<'a, 'w> {
    out: &'a mut Out<'w>,
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    started: bool,
}

impl<'a, 'w> Family<'a, 'w> {
    fn new(
        out: &'a mut Out<'w>,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    ) -> Self {
        Family {
            out,
            name,
            kind,
            help,
            started: false,
        }
    }

    /// `name{labels,key="label",...} value`; the extra labels are fixed enum strings,
    /// never free text.
    fn series(&mut self, labels: &str, extra: &[(&str, &str)], value: impl Sample) {
        self.write(labels, None, extra, value);
    }

    /// `name{labels,more} value`: `more` is a pre-rendered, escaped label list.
    fn series_with(&mut self, labels: &str, more: &str, value: impl Sample) {
        self.write(labels, Some(more), &[], value);
    }

    fn write(
        &mut self,
        labels: &str,
        more: Option<&str>,
        extra: &[(&str, &str)],
        value: impl Sample,
    ) {
        self.start();
        let out = &mut self.out.text;
        out.push_str(self.name);
        out.push('{');
        out.push_str(labels);
        if let Some(more) = more {
            out.push(',');
            out.push_str(more);
        }
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
        self.out.spill_if_full();
    }

    fn start(&mut self) {
        if !self.started {
            self.started = true;
            let _ = writeln!(
                self.out.text,
                "# HELP {name} {help}\n# TYPE {name} {kind}",
                name = self.name,
                help = self.help,
                kind = self.kind
            );
        }
    }
}

/// The phases `mailbox_probe_phase_seconds` reports for `e`: `tls` only where there is TLS,
/// and never `total`, which has its own family so that a sum over phases means something.
fn phases(e: &Row) -> impl Iterator<Item = Phase> + '_ {
    let tls = e.tls;
    [Phase::Connect, Phase::Tls, Phase::Greeting, Phase::Auth]
        .into_iter()
        .filter(move |&p| p != Phase::Tls || tls)
}

/// The reason of `e`'s last probe, while it failed.
fn failing(e: &Entry) -> Option<Reason> {
    let last = e.state.last()?;
    (!last.verdict.success).then(|| last.verdict.reason.unwrap_or(Reason::Protocol))
}

/// The method `e`'s last probe logged in with, while it logged in.
fn logged_in(e: &Entry) -> Option<Method> {
    let last = e.state.last()?;
    last.verdict
        .success
        .then_some(last.verdict.method)
        .flatten()
}

/// Appends the per-account and per-group families.
pub(super) fn write_accounts(out: &mut Out<'_>, snapshot: &Snapshot) {
    let accounts = || snapshot.accounts.iter();

    let mut f = Family::new(
        out,
        "mailbox_auth_success",
        "gauge",
        "Whether the last probe logged in (1) or not (0; also before the first probe).",
    );
    for e in accounts() {
        f.series(&e.labels, &[], e.success);
    }

    let mut f = Family::new(
        out,
        "mailbox_auth_method",
        "gauge",
        "The method the last probe logged in with; present only while it logged in.",
    );
    for e in accounts() {
        if let Some(m) = e.method {
            f.series(&e.labels, &[("method", m.as_str())], 1u64);
        }
    }

    let mut f = Family::new(
        out,
        "mailbox_auth_consecutive_failures",
        "gauge",
        "Probes that failed in a row, labelled with the last one's reason; present only while \
         the last probe failed.",
    );
    for e in accounts() {
        if let Some(r) = e.reason {
            let n = e.consecutive_failures;
            f.series(&e.labels, &[("reason", r.as_str())], n);
        }
    }

    let mut f = Family::new(
        out,
        "mailbox_auth_failures_total",
        "counter",
        "Failed probes, all reasons (per reason: mailbox_group_failures_total).",
    );
    for e in accounts() {
        f.series(&e.labels, &[], e.failures);
    }

    let mut f = Family::new(
        out,
        "mailbox_auth_fallback",
        "gauge",
        "1 while the login works only with a method reached after an advertised method was \
         rejected: pin the auth mode (POP3) or fix the server's mechanism list (IMAP); \
         absent otherwise.",
    );
    for e in accounts() {
        if e.fallback {
            f.series(&e.labels, &[], 1u64);
        }
    }

    let mut f = Family::new(
        out,
        "mailbox_auth_cleartext",
        "gauge",
        "1 when the last probe sent the password or token unencrypted, whatever the outcome; \
         absent otherwise.",
    );
    for e in accounts() {
        if e.cleartext {
            f.series(&e.labels, &[], 1u64);
        }
    }

    let mut f = Family::new(
        out,
        "mailbox_probe_backoff",
        "gauge",
        "1 while probing of this account is slowed down after repeated credential rejections; \
         absent otherwise.",
    );
    for e in accounts() {
        if e.backoff {
            f.series(&e.labels, &[], 1u64);
        }
    }

    let mut f = Family::new(
        out,
        "mailbox_last_probe_timestamp_seconds",
        "gauge",
        "When the last probe finished, seconds since the epoch (0: never).",
    );
    for e in accounts() {
        f.series(&e.labels, &[], Timestamp(e.last_probe));
    }

    let mut f = Family::new(
        out,
        "mailbox_last_success_timestamp_seconds",
        "gauge",
        "When the last successful login finished, seconds since the epoch (0: never).",
    );
    for e in accounts() {
        f.series(&e.labels, &[], Timestamp(e.last_success));
    }

    let mut f = Family::new(
        out,
        "mailbox_probe_last_duration_seconds",
        "gauge",
        "How long the last probe took, in seconds (0 before the first).",
    );
    for e in accounts() {
        f.series(&e.labels, &[], e.phases.total.as_secs_f64());
    }

    let mut f = Family::new(
        out,
        "mailbox_probe_phase_seconds",
        "gauge",
        "Time the last probe spent per phase (connect, tls where there is TLS, greeting, \
         auth); they add up to about the probe's duration.",
    );
    for e in accounts() {
        for p in phases(e) {
            let seconds = e.phases.get(p).as_secs_f64();
            f.series(&e.labels, &[("phase", p.as_str())], seconds);
        }
    }

    let mut f = Family::new(
        out,
        "mailbox_account_info",
        "gauge",
        "The account's settings, as labels; always 1.",
    );
    for e in accounts() {
        f.series_with(&e.labels, &e.info, 1u64);
    }

    write_groups(out, &snapshot.groups);
}

fn write_groups(out: &mut Out<'_>, snapshot: &[(GroupStats, u64, u64)]) {
    let groups = || {
        snapshot
            .iter()
            .map(|(g, total, authenticated)| (g, (total, authenticated)))
    };

    let mut f = Family::new(
        out,
        "mailbox_group_accounts",
        "gauge",
        "Accounts configured in the group.",
    );
    for (g, (total, _)) in groups() {
        f.series(&g.labels, &[], *total);
    }

    let mut f = Family::new(
        out,
        "mailbox_group_accounts_authenticated",
        "gauge",
        "Accounts of the group whose last probe logged in.",
    );
    for (g, (_, authenticated)) in groups() {
        f.series(&g.labels, &[], *authenticated);
    }

    let mut f = Family::new(
        out,
        "mailbox_group_failures_total",
        "counter",
        "Failed probes of the group's accounts, by reason; a reason appears when it first \
         happens in the group.",
    );
    for (g, _, _) in snapshot {
        for (i, &r) in Reason::ALL.iter().enumerate() {
            if g.failures[i] > 0 {
                f.series(&g.labels, &[("reason", r.as_str())], g.failures[i]);
            }
        }
    }

    let mut f = Family::new(
        out,
        "mailbox_group_auth_attempts_total",
        "counter",
        "Login methods the group's accounts tried, by method and result (success, rejected, \
         error); a pair appears when it first happens in the group.",
    );
    for (g, _, _) in snapshot {
        for (i, &m) in Method::ALL.iter().enumerate() {
            for (j, &r) in AttemptResult::ALL.iter().enumerate() {
                let n = g.attempts[i][j];
                if n > 0 {
                    f.series(
                        &g.labels,
                        &[("method", m.as_str()), ("result", r.as_str())],
                        n,
                    );
                }
            }
        }
    }

    let name = "mailbox_probe_duration_seconds";
    let mut f = Family::new(
        out,
        name,
        "histogram",
        "Duration of whole probes, per group.",
    );
    for (g, _, _) in snapshot {
        f.start();
        let out = &mut f.out.text;
        let mut cumulative = 0;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            cumulative = match g.buckets.get(i) {
                Some(n) => cumulative + n,
                None => g.count,
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{},le=\"{le}\"}} {cumulative}",
                g.labels
            );
        }
        let _ = writeln!(out, "{name}_sum{{{}}} {}", g.labels, g.sum);
        let _ = writeln!(out, "{name}_count{{{}}} {}", g.labels, g.count);
        f.out.spill_if_full();
    }
}
