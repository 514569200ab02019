//! The per-account and per-group families through the `prometheus` crate's data model: a
//! `Collector` that reads the store at scrape time and builds one `Metric` per series.
//!
//! Not what `/metrics` serves: at 10,000 accounts it is many times slower and allocates
//! several times more than [`super::text`], so the exposition benchmark renders both and
//! the exporter uses the hand-written one (see the README's metrics section for the figures).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use super::exporter::sample;
use crate::metrics::store::{DURATION_BUCKETS, Entry, Store, auth_mode_label};
use crate::verdict::{AttemptResult, Method, Phase, Reason, TlsMode};

/// The per-account and per-group families over the store.
pub(super) struct AccountCollector {
    store: Arc<Store>,
    descs: Vec<Desc>,
}

const FAMILIES: [(&str, MetricType); 17] = [
    ("mailbox_auth_success", MetricType::GAUGE),
    ("mailbox_auth_method", MetricType::GAUGE),
    ("mailbox_auth_consecutive_failures", MetricType::GAUGE),
    ("mailbox_auth_failures_total", MetricType::COUNTER),
    ("mailbox_auth_fallback", MetricType::GAUGE),
    ("mailbox_auth_cleartext", MetricType::GAUGE),
    ("mailbox_probe_backoff", MetricType::GAUGE),
    ("mailbox_last_probe_timestamp_seconds", MetricType::GAUGE),
    ("mailbox_last_success_timestamp_seconds", MetricType::GAUGE),
    ("mailbox_probe_last_duration_seconds", MetricType::GAUGE),
    ("mailbox_probe_phase_seconds", MetricType::GAUGE),
    ("mailbox_account_info", MetricType::GAUGE),
    ("mailbox_group_accounts", MetricType::GAUGE),
    ("mailbox_group_accounts_authenticated", MetricType::GAUGE),
    ("mailbox_group_failures_total", MetricType::COUNTER),
    ("mailbox_group_auth_attempts_total", MetricType::COUNTER),
    ("mailbox_probe_duration_seconds", MetricType::HISTOGRAM),
];

impl AccountCollector {
    pub(super) fn new(store: Arc<Store>) -> AccountCollector {
        let descs = FAMILIES
            .iter()
            .map(|(name, _)| {
                Desc::new(
                    name.to_string(),
                    name.to_string(),
                    vec![],
                    Default::default(),
                )
                .expect("valid names")
            })
            .collect();
        AccountCollector { store, descs }
    }
}

/// `group`, `account` and `extra` as label pairs.
fn labels(e: &Entry, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("group".to_string(), e.account.group.clone()),
        ("account".to_string(), e.account.name.clone()),
    ];
    all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all
}

fn metric(labels: Vec<(String, String)>, kind: MetricType, value: f64) -> Metric {
    let mut metric = sample(&[], kind, value);
    metric.set_label(
        labels
            .into_iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name);
                pair.set_value(value);
                pair
            })
            .collect(),
    );
    metric
}

fn seconds(at: Option<std::time::SystemTime>) -> f64 {
    at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_millis() as f64 / 1000.0)
}

impl Collector for AccountCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let inner = self.store.read();
        let mut series: Vec<Vec<Metric>> = FAMILIES.iter().map(|_| Vec::new()).collect();
        for e in inner.accounts.values() {
            let state = &e.state;
            let last = state.last();
            let g = |extra: &[(&str, &str)]| labels(e, extra);
            series[0].push(metric(
                g(&[]),
                MetricType::GAUGE,
                f64::from(u8::from(state.success())),
            ));
            if let Some(m) = last
                .filter(|l| l.verdict.success)
                .and_then(|l| l.verdict.method)
            {
                series[1].push(metric(g(&[("method", m.as_str())]), MetricType::GAUGE, 1.0));
            }
            if let Some(l) = last.filter(|l| !l.verdict.success) {
                let r = l.verdict.reason.unwrap_or(Reason::Protocol);
                let n = state.consecutive_failures() as f64;
                series[2].push(metric(g(&[("reason", r.as_str())]), MetricType::GAUGE, n));
            }
            let failures: u64 = state.failures();
            series[3].push(metric(g(&[]), MetricType::COUNTER, failures as f64));
            if state.success() && state.fallback() {
                series[4].push(metric(g(&[]), MetricType::GAUGE, 1.0));
            }
            if state.cleartext() {
                series[5].push(metric(g(&[]), MetricType::GAUGE, 1.0));
            }
            if state.backoff() {
                series[6].push(metric(g(&[]), MetricType::GAUGE, 1.0));
            }
            let finished = last.map(|l| l.finished);
            series[7].push(metric(g(&[]), MetricType::GAUGE, seconds(finished)));
            let success = seconds(state.last_success());
            series[8].push(metric(g(&[]), MetricType::GAUGE, success));
            let phases = last.map(|l| l.verdict.phases).unwrap_or_default();
            series[9].push(metric(
                g(&[]),
                MetricType::GAUGE,
                phases.total.as_secs_f64(),
            ));
            let tls = e.account.target.tls.mode != TlsMode::None;
            for p in [Phase::Connect, Phase::Tls, Phase::Greeting, Phase::Auth] {
                if p != Phase::Tls || tls {
                    let s = phases.get(p).as_secs_f64();
                    series[10].push(metric(g(&[("phase", p.as_str())]), MetricType::GAUGE, s));
                }
            }
            let target = &e.account.target;
            let server = target.server();
            let protocol = target.protocol.as_str();
            let mut info = vec![
                ("protocol", protocol),
                ("server", server.as_str()),
                ("tls", target.tls.mode.as_str()),
                ("auth_mode", auth_mode_label(target)),
                ("source", e.account.origin.source()),
            ];
            if let crate::config::Origin::Vicidial(row) = &e.account.origin {
                info.push(("email_account_name", &row.email_account_name));
                info.push(("user_group", &row.user_group));
            }
            series[11].push(metric(g(&info), MetricType::GAUGE, 1.0));
        }
        for (group, stats) in &inner.groups {
            let members = inner
                .accounts
                .values()
                .filter(|e| e.account.group == *group);
            let (mut total, mut authenticated) = (0.0, 0.0);
            for e in members {
                total += 1.0;
                authenticated += f64::from(u8::from(e.state.success()));
            }
            let g = |extra: &[(&str, &str)]| {
                let mut all = vec![("group".to_string(), group.clone())];
                all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                all
            };
            series[12].push(metric(g(&[]), MetricType::GAUGE, total));
            series[13].push(metric(g(&[]), MetricType::GAUGE, authenticated));
            for (i, &r) in Reason::ALL.iter().enumerate() {
                if stats.failures[i] > 0 {
                    let n = stats.failures[i] as f64;
                    series[14].push(metric(g(&[("reason", r.as_str())]), MetricType::COUNTER, n));
                }
            }
            for (i, &m) in Method::ALL.iter().enumerate() {
                for (j, &r) in AttemptResult::ALL.iter().enumerate() {
                    let n = stats.attempts[i][j];
                    if n > 0 {
                        let l = g(&[("method", m.as_str()), ("result", r.as_str())]);
                        series[15].push(metric(l, MetricType::COUNTER, n as f64));
                    }
                }
            }
            let mut histogram = Histogram::default();
            let mut cumulative = 0;
            let buckets = DURATION_BUCKETS
                .iter()
                .zip(stats.buckets)
                .map(|(&le, n)| {
                    cumulative += n;
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(le);
                    bucket.set_cumulative_count(cumulative);
                    bucket
                })
                .collect();
            histogram.set_bucket(buckets);
            histogram.set_sample_count(stats.count);
            histogram.set_sample_sum(stats.sum);
            let mut m = metric(g(&[]), MetricType::GAUGE, 0.0);
            m.set_histogram(histogram);
            series[16].push(m);
        }
        drop(inner);
        FAMILIES
            .iter()
            .zip(series)
            .map(|((name, kind), metrics)| {
                let mut family = MetricFamily::default();
                family.set_name(name.to_string());
                family.set_help(name.to_string());
                family.set_field_type(*kind);
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}
