//! The exporter-wide families, as a `prometheus` crate `Collector` over the store: build
//! info, configuration reloads, probes in flight, schedule lag, certificate expiry per
//! server, account sources, failed-login budgets and OAuth2 token sources. Read at scrape
//! time; no metric object is kept in sync with the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::metrics::store::Store;

/// The git commit the exporter was built from, or `unknown` (a build outside a checkout).
pub const REVISION: &str = match option_env!("MAILBOX_EXPORTER_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// The version of the compiler that built the exporter, or `unknown`.
pub const RUST_VERSION: &str = match option_env!("MAILBOX_EXPORTER_RUST_VERSION") {
    Some(version) => version,
    None => "unknown",
};

/// One family: what its descriptor and its `# HELP`/`# TYPE` lines say.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn gauge(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Spec {
    Spec {
        name,
        help,
        kind: MetricType::GAUGE,
        labels,
    }
}

const fn counter(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Spec {
    Spec {
        name,
        help,
        kind: MetricType::COUNTER,
        labels,
    }
}

const BUILD_INFO: Spec = gauge(
    "mailbox_exporter_build_info",
    &["version", "revision", "rustversion"],
    "The exporter's version, the git commit it was built from and the Rust version that \
     built it; always 1.",
);
const RELOAD_OK: Spec = gauge(
    "mailbox_exporter_config_last_reload_successful",
    &[],
    "Whether the last configuration (re)load succeeded.",
);
const RELOAD_SUCCESS: Spec = gauge(
    "mailbox_exporter_config_last_reload_success_timestamp_seconds",
    &[],
    "When the configuration was last loaded successfully, seconds since the epoch.",
);
const IN_FLIGHT: Spec = gauge(
    "mailbox_exporter_probes_in_flight",
    &[],
    "Probes running now.",
);
const LAG: Spec = gauge(
    "mailbox_exporter_schedule_lag_seconds",
    &[],
    "The largest delay of a probe start behind its schedule over the last minute; growing \
     values mean the pool cannot keep up.",
);
const CERT_EXPIRY: Spec = gauge(
    "mailbox_tls_cert_expiry_timestamp_seconds",
    &["server"],
    "When the server's TLS certificate expires, seconds since the epoch, as the latest TLS \
     probe to it saw; absent until a TLS handshake reported it.",
);
const SOURCE_UP: Spec = gauge(
    "mailbox_exporter_source_up",
    &["source"],
    "Whether the last read of the account source succeeded; while 0 its last accounts stay \
     in force.",
);
const SOURCE_ACCOUNTS: Spec = gauge(
    "mailbox_exporter_source_accounts",
    &["source"],
    "Accounts in force from the source: those of its last successful read.",
);
const SOURCE_SKIPPED: Spec = gauge(
    "mailbox_exporter_source_skipped_rows",
    &["source"],
    "Rows the source's last successful read skipped for an unusable value (the log names \
     each).",
);
const SOURCE_SUCCESS: Spec = gauge(
    "mailbox_exporter_source_last_success_timestamp_seconds",
    &["source"],
    "When the source was last read successfully, seconds since the epoch; 0 before.",
);
const BUDGET_REMAINING: Spec = gauge(
    "mailbox_exporter_server_failure_budget_remaining",
    &["server"],
    "Failed logins the server's budget still allows within its window, after what probes \
     under way have reserved.",
);
const BUDGET_WAITING: Spec = gauge(
    "mailbox_exporter_server_failure_budget_waiting_probes",
    &["server"],
    "Probes waiting for room in the server's failed-login budget.",
);
const BUDGET_CHARGED: Spec = counter(
    "mailbox_exporter_server_failed_logins_total",
    &["server"],
    "Failed logins charged to the server's budget: rejected or unanswered methods, and \
     probes that ended without a login after one.",
);
const TOKEN_REQUESTS: Spec = counter(
    "mailbox_exporter_oauth2_token_requests_total",
    &["source", "result"],
    "OAuth2 token requests (reads of a token file) by source and result: success, error \
     (the provider refused, or the file is unusable), unreachable, malformed.",
);
const TOKEN_EXPIRY: Spec = gauge(
    "mailbox_exporter_oauth2_token_expiry_timestamp_seconds",
    &["source"],
    "When the source's cached OAuth2 token expires (Unix time); absent while none is cached \
     or its lifetime is unknown.",
);

const SPECS: [&Spec; 15] = [
    &BUILD_INFO,
    &RELOAD_OK,
    &RELOAD_SUCCESS,
    &IN_FLIGHT,
    &LAG,
    &CERT_EXPIRY,
    &SOURCE_UP,
    &SOURCE_ACCOUNTS,
    &SOURCE_SKIPPED,
    &SOURCE_SUCCESS,
    &BUDGET_REMAINING,
    &BUDGET_WAITING,
    &BUDGET_CHARGED,
    &TOKEN_REQUESTS,
    &TOKEN_EXPIRY,
];

/// The exporter-wide families over the store.
pub(super) struct ExporterCollector {
    store: Arc<Store>,
    descs: Vec<Desc>,
}

impl ExporterCollector {
    pub(super) fn new(store: Arc<Store>) -> ExporterCollector {
        let descs = SPECS
            .iter()
            .map(|spec| {
                let labels = spec.labels.iter().map(|l| l.to_string()).collect();
                Desc::new(spec.name.into(), spec.help.into(), labels, HashMap::new())
                    .expect("the families' names and labels are valid")
            })
            .collect();
        ExporterCollector { store, descs }
    }
}

impl Collector for ExporterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let store = &self.store;
        let lag = store.lag_max();
        let in_flight = store.in_flight.load(Ordering::Relaxed);
        let budgets = store.budget.servers();
        let tokens = store.tokens.get().map(|tokens| tokens.stats());

        let mut families = Vec::with_capacity(SPECS.len());
        let mut add = |spec: &Spec, metrics: Vec<Metric>| {
            if !metrics.is_empty() {
                families.push(family(spec, metrics));
            }
        };
        add(
            &BUILD_INFO,
            vec![sample(
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("revision", REVISION),
                    ("rustversion", RUST_VERSION),
                ],
                MetricType::GAUGE,
                1.0,
            )],
        );
        {
            let inner = store.read();
            add(
                &RELOAD_OK,
                vec![plain(f64::from(u8::from(inner.reload_ok)))],
            );
            add(&RELOAD_SUCCESS, vec![plain(seconds(inner.reload_success))]);
            add(
                &CERT_EXPIRY,
                per(&inner.certs, "server", &CERT_EXPIRY, |&expiry| {
                    expiry as f64
                }),
            );
            let sources = &inner.sources;
            add(
                &SOURCE_UP,
                per(sources, "source", &SOURCE_UP, |s| f64::from(u8::from(s.up))),
            );
            add(
                &SOURCE_ACCOUNTS,
                per(sources, "source", &SOURCE_ACCOUNTS, |s| s.accounts as f64),
            );
            add(
                &SOURCE_SKIPPED,
                per(sources, "source", &SOURCE_SKIPPED, |s| s.skipped as f64),
            );
            add(
                &SOURCE_SUCCESS,
                per(sources, "source", &SOURCE_SUCCESS, |s| {
                    seconds(s.last_success)
                }),
            );
        }
        add(&IN_FLIGHT, vec![plain(in_flight as f64)]);
        add(&LAG, vec![plain(lag)]);

        let by_server = |spec: &Spec, value: &dyn Fn(&crate::budget::ServerBudget) -> f64| {
            budgets
                .iter()
                .map(|b| sample(&[("server", &b.server)], spec.kind, value(b)))
                .collect()
        };
        add(
            &BUDGET_REMAINING,
            by_server(&BUDGET_REMAINING, &|b| f64::from(b.remaining)),
        );
        add(
            &BUDGET_WAITING,
            by_server(&BUDGET_WAITING, &|b| f64::from(b.waiting)),
        );
        add(
            &BUDGET_CHARGED,
            by_server(&BUDGET_CHARGED, &|b| b.charged as f64),
        );

        let tokens = tokens.unwrap_or_default();
        let mut requests = Vec::new();
        for source in &tokens {
            for result in crate::oauth2::RESULTS {
                let count = source.requests.get(result).copied().unwrap_or(0);
                let labels = [("source", source.name.as_str()), ("result", result)];
                requests.push(sample(&labels, MetricType::COUNTER, count as f64));
            }
        }
        add(&TOKEN_REQUESTS, requests);
        let expiries = tokens
            .iter()
            .filter_map(|source| {
                let expiry = source.expiry?;
                let whole = expiry
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Some(sample(
                    &[("source", &source.name)],
                    MetricType::GAUGE,
                    whole as f64,
                ))
            })
            .collect();
        add(&TOKEN_EXPIRY, expiries);
        families
    }
}

fn family(spec: &Spec, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(spec.name.to_string());
    family.set_help(spec.help.to_string());
    family.set_field_type(spec.kind);
    family.set_metric(metrics);
    family
}

/// One series of a gauge or a counter.
pub(super) fn sample(labels: &[(&str, &str)], kind: MetricType, value: f64) -> Metric {
    let pairs = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect();
    let mut metric = Metric::from_label(pairs);
    if kind == MetricType::COUNTER {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    metric
}

/// A gauge without labels.
fn plain(value: f64) -> Metric {
    sample(&[], MetricType::GAUGE, value)
}

/// One series per key of `map`, labelled `label="key"`.
fn per<T>(
    map: &std::collections::BTreeMap<String, T>,
    label: &str,
    spec: &Spec,
    value: impl Fn(&T) -> f64,
) -> Vec<Metric> {
    map.iter()
        .map(|(key, v)| sample(&[(label, key)], spec.kind, value(v)))
        .collect()
}

/// Seconds since the epoch, millisecond precision; 0 for "never".
fn seconds(at: Option<SystemTime>) -> f64 {
    let since = at
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default();
    since.as_millis() as f64 / 1000.0
}
