//! Per-account state and its Prometheus exposition: the single source of truth that probes
//! write and scrapes and the landing page read. Scraping only encodes; it never probes.

use std::time::{Duration, SystemTime};

use crate::config::{Account, Config};
use crate::schedule::{Ledger, Plan};
use crate::verdict::Verdict;

/// The exporter's state. The rest of the code calls its `observe`-style methods.
pub struct Metrics {}

impl Metrics {
    pub fn new() -> Self {
        todo!()
    }

    /// Makes the set of accounts match `config`.
    pub fn apply_config(&self, config: &Config) {
        let _ = config;
        todo!()
    }

    pub fn config_reload(&self, ok: bool, at: SystemTime) {
        let _ = (ok, at);
        todo!()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        todo!()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger for Metrics {
    fn plan(&self, account: &str) -> Plan {
        let _ = account;
        todo!()
    }

    fn record(&self, account: &Account, verdict: Verdict, finished: SystemTime) {
        let _ = (account, verdict, finished);
        todo!()
    }

    fn probe_started(&self) {
        todo!()
    }

    fn probe_finished(&self) {
        todo!()
    }

    fn schedule_lag(&self, lag: Duration) {
        let _ = lag;
        todo!()
    }
}

// Stand-ins with the agreed signatures, so that the service compiles; the metrics module
// replaces them.

/// What the pages show of one account.
#[derive(Debug, Clone)]
pub struct AccountView {}

impl Metrics {
    /// Every account, in config order.
    pub fn accounts(&self) -> Vec<AccountView> {
        todo!()
    }

    pub fn account(&self, name: &str) -> Option<AccountView> {
        let _ = name;
        todo!()
    }
}
