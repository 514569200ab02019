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

// Stand-ins with the agreed signatures, so that the service compiles; the scheduler replaces
// them.

/// One replica's share of the accounts: `--shard=i/n`, `i` counting from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let usage = || format!("{s:?} is not a shard: expected i/n with 0 <= i < n, e.g. 0/3");
        let (index, count) = s.split_once('/').ok_or_else(usage)?;
        let index: u32 = index.trim().parse().map_err(|_| usage())?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        if index >= count {
            return Err(usage());
        }
        Ok(Shard { index, count })
    }
}

/// Whether `shard` probes the account named `account`.
pub fn owns(account: &str, shard: Shard) -> bool {
    let _ = (account, shard);
    todo!()
}

/// Runs one probe.
pub trait Prober: Send + Sync + 'static {}

/// Probes over the network.
#[derive(Debug, Default)]
pub struct NetworkProber;

impl NetworkProber {
    pub fn new() -> Self {
        NetworkProber
    }
}

impl Prober for NetworkProber {}

/// Probes every account of the current config on its schedule.
pub struct Scheduler<L, P> {
    ledger: std::sync::Arc<L>,
    prober: std::sync::Arc<P>,
}

impl<L: Ledger, P: Prober> Scheduler<L, P> {
    pub fn new(ledger: std::sync::Arc<L>, prober: std::sync::Arc<P>) -> Self {
        Scheduler { ledger, prober }
    }

    /// Runs until `shutdown` turns true, then waits for in-flight probes.
    pub async fn run(
        self,
        config: tokio::sync::watch::Receiver<std::sync::Arc<crate::config::Config>>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let _ = (self.ledger, self.prober, config, shutdown);
        todo!()
    }
}
