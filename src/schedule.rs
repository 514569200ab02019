//! The scheduler and worker pool: one probe per account per interval, at a stable per-account
//! phase, under a global and a per-server concurrency limit.

use std::time::{Duration, SystemTime};

use crate::config::Account;
use crate::verdict::{Method, Verdict};

/// What the next probe of an account should do, decided from its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The method that worked last time: tried first.
    pub preferred: Option<Method>,
    /// The account's interval is multiplied by this (1 = no backoff) after consecutive
    /// credential rejections, so that the exporter never locks a mailbox out.
    pub backoff_factor: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            preferred: None,
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
}
