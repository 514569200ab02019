//! The failed-login budget of each server: no more failed logins per host within a sliding
//! window than the configured number, so the exporter never gets its own address banned
//! (fail2ban's stock Dovecot jail bans after 5 failures in 10 minutes).
//!
//! Rules (product behaviour, documented in the README):
//! - A server is a host name as configured: fail2ban bans the client's address on every port,
//!   so all ports of a host share one budget.
//! - A probe costs one failure per rung that was rejected or ended without an answer, plus one
//!   when it ended without logging in after such a rung (Dovecot then logs the aborted
//!   connection, and fail2ban's filter counts that line too). See [`cost`].
//! - A probe whose first rung is the method known to work for its account does not wait: it
//!   tries that rung only, and whatever it costs is charged afterwards.
//! - Any other probe reserves its worst case ([`Need`]) before it starts, waiting (visibly,
//!   [`FailureBudget::waiting`]) while the window has no room, and gives back what it did not
//!   spend when it ends. Waiting probes are admitted in the order they came. A budget smaller
//!   than a whole ladder lets such a probe try fewer rungs.
//! - Charged failures leave the window `window` + [`EXPIRY_MARGIN`] after the probe ended.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::FailureBudgetSettings;
use crate::probe::{Meter, Steps, Target};
use crate::state::Plan;
use crate::verdict::{AttemptResult, Protocol, Verdict};

/// Failures are charged when the probe ends, a moment after the server logged them; they stay
/// in the window this much longer than `window`, so the server's own count (timestamps to the
/// second) never sees more than the budget in any window.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// What a probe may cost before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Its first rung is the method known to work: no reservation, only that rung.
    Known,
    /// It may walk this many rungs, each of which may fail.
    Unknown { rungs: usize },
}

impl Need {
    /// The worst case of the probe `plan` describes for `target`.
    pub fn of(target: &Target, plan: &Plan) -> Need {
        if plan.preferred.is_some() {
            return Need::Known;
        }
        // An OAuth2 login is one rung, and one more with a fresh token after a refusal.
        let rungs = match target.auth_mode.pinned() {
            _ if target.oauth2.is_some() => 2,
            Some(_) if target.protocol == Protocol::Pop3 => 1,
            _ => target.protocol.methods().len(),
        };
        Need::Unknown { rungs }
    }
}

/// The failures a finished probe is charged: every rung rejected or left unanswered, plus one
/// for ending without a login after such a rung.
pub fn cost(verdict: &Verdict) -> u32 {
    let failed_rungs = verdict
        .attempts
        .iter()
        .filter(|a| a.result != AttemptResult::Success)
        .count();
    let failed_rungs = u32::try_from(failed_rungs).unwrap_or(u32::MAX);
    let aborted = u32::from(!verdict.success && failed_rungs > 0);
    failed_rungs.saturating_add(aborted)
}

/// One server's window.
#[derive(Debug, Default)]
struct Server {
    /// When each charged failure leaves the window, oldest first.
    expiries: VecDeque<Instant>,
    /// Failures reserved by probes under way.
    reserved: u32,
    /// Probes waiting for room, by ticket: the oldest is admitted first, so accounts that
    /// keep failing cannot starve the others.
    waiting: BTreeMap<u64, String>,
    next_ticket: u64,
    /// Failures charged since start-up.
    charged: u64,
    wake: Arc<Notify>,
}

impl Server {
    fn prune(&mut self, now: Instant) {
        while self.expiries.front().is_some_and(|&t| t <= now) {
            self.expiries.pop_front();
        }
    }

    fn used(&self) -> u32 {
        u32::try_from(self.expiries.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.reserved)
    }
}

#[derive(Debug, Default)]
struct Inner {
    settings: Option<FailureBudgetSettings>,
    servers: HashMap<String, Server>,
}

/// The budgets of every server. Shared by the scheduler (which reserves and charges) and the
/// exposition and pages (which show them).
#[derive(Debug, Default)]
pub struct FailureBudget {
    inner: Mutex<Inner>,
}

/// One server's budget as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBudget {
    pub server: String,
    /// Failures a probe could still reserve now.
    pub remaining: u32,
    /// Probes waiting for room.
    pub waiting: u32,
    /// Failures charged since start-up.
    pub charged: u64,
}

/// The budget key of a target: its host, lowercased.
pub fn server_of(target: &Target) -> String {
    target.host.to_ascii_lowercase()
}

impl FailureBudget {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows a (re)loaded config: its settings (`None`: no budget) and its servers. Servers
    /// no longer configured are forgotten once nothing is reserved or waiting there; waiting
    /// probes look again, as the limit may have grown.
    pub fn configure<'a>(
        &self,
        settings: Option<FailureBudgetSettings>,
        targets: impl Iterator<Item = &'a Target>,
    ) {
        let hosts: HashSet<String> = targets.map(server_of).collect();
        let mut inner = self.lock();
        inner.settings = settings;
        for host in &hosts {
            inner.servers.entry(host.clone()).or_default();
        }
        inner.servers.retain(|host, server| {
            hosts.contains(host) || server.reserved > 0 || !server.waiting.is_empty()
        });
        for server in inner.servers.values() {
            server.wake.notify_waiters();
        }
    }

    /// Waits until a probe of `account` on `target` as `plan` describes may start, and returns
    /// its admission: how it may walk its ladder, and what to charge when it ends.
    pub async fn admit(self: &Arc<Self>, account: &str, target: &Target, plan: &Plan) -> Admission {
        let host = server_of(target);
        let mut admission = Admission {
            budget: Arc::clone(self),
            host: host.clone(),
            steps: plan.steps(),
            reserved: 0,
            meter: Meter::default(),
            started: false,
            settled: false,
        };
        let Need::Unknown { rungs } = Need::of(target, plan) else {
            if self.lock().settings.is_some() {
                admission.steps.others = Some(0);
            }
            return admission;
        };
        // Worst case: every rung fails, and the probe ends without a login.
        let want = u32::try_from(rungs).unwrap_or(u32::MAX).saturating_add(1);
        let mut queued: Option<WaitGuard<'_>> = None;
        loop {
            let ticket = queued.as_ref().map(|q| q.ticket);
            let (wake, next_expiry) = match self.try_reserve(&host, account, want, ticket) {
                Reserve::Off => break,
                Reserve::Done(reserved) => {
                    admission.reserved = reserved;
                    // One failure is kept for the aborted login.
                    let others = usize::try_from(reserved.saturating_sub(1)).unwrap_or(0);
                    admission.steps.others = Some(others.min(rungs));
                    break;
                }
                Reserve::Wait {
                    ticket,
                    wake,
                    next_expiry,
                } => {
                    if queued.is_none() {
                        queued = Some(WaitGuard {
                            budget: self,
                            host: &host,
                            ticket,
                        });
                    }
                    (wake, next_expiry)
                }
            };
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Room made between the look above and the registration is seen here.
            let ticket = queued.as_ref().map(|q| q.ticket);
            if self.has_room(&host, want, ticket) {
                continue;
            }
            match next_expiry {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
        drop(queued);
        admission
    }

    /// Reserves `want` (at most the limit) for a probe holding `ticket` (none yet: a newcomer)
    /// when the window has room and no earlier probe waits; otherwise queues it.
    fn try_reserve(&self, host: &str, account: &str, want: u32, ticket: Option<u64>) -> Reserve {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(settings) = inner.settings else {
            return Reserve::Off;
        };
        let server = inner.servers.entry(host.to_string()).or_default();
        server.prune(now);
        let want = want.min(settings.failures);
        let first = server.waiting.keys().next().copied();
        let my_turn = first.is_none() || first == ticket;
        if my_turn && server.used().saturating_add(want) <= settings.failures {
            server.reserved += want;
            return Reserve::Done(want);
        }
        let ticket = ticket.unwrap_or_else(|| {
            let ticket = server.next_ticket;
            server.next_ticket += 1;
            server.waiting.insert(ticket, account.to_string());
            ticket
        });
        Reserve::Wait {
            ticket,
            wake: Arc::clone(&server.wake),
            next_expiry: server.expiries.front().copied(),
        }
    }

    /// Whether [`FailureBudget::try_reserve`] would succeed now.
    fn has_room(&self, host: &str, want: u32, ticket: Option<u64>) -> bool {
        let mut inner = self.lock();
        let Some(settings) = inner.settings else {
            return true;
        };
        let Some(server) = inner.servers.get_mut(host) else {
            return true;
        };
        server.prune(Instant::now());
        let first = server.waiting.keys().next().copied();
        (first.is_none() || first == ticket)
            && server.used().saturating_add(want.min(settings.failures)) <= settings.failures
    }

    /// Gives back `reserved` and charges `spent` failures to `host`, now.
    fn settle(&self, host: &str, reserved: u32, spent: u32) {
        let mut inner = self.lock();
        let window = inner.settings.map(|s| s.window);
        let server = inner.servers.entry(host.to_string()).or_default();
        server.reserved = server.reserved.saturating_sub(reserved);
        server.charged += u64::from(spent);
        if let Some(window) = window {
            let expiry = Instant::now() + window + EXPIRY_MARGIN;
            for _ in 0..spent {
                server.expiries.push_back(expiry);
            }
        }
        server.wake.notify_waiters();
    }

    /// Every configured server's budget, by name; empty while the budget is off.
    pub fn servers(&self) -> Vec<ServerBudget> {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(settings) = inner.settings else {
            return Vec::new();
        };
        let mut out: Vec<ServerBudget> = inner
            .servers
            .iter_mut()
            .map(|(host, server)| {
                server.prune(now);
                ServerBudget {
                    server: host.clone(),
                    remaining: settings.failures.saturating_sub(server.used()),
                    waiting: u32::try_from(server.waiting.len()).unwrap_or(u32::MAX),
                    charged: server.charged,
                }
            })
            .collect();
        out.sort_by(|a, b| a.server.cmp(&b.server));
        out
    }

    /// Accounts whose probe waits for room, with the server it waits for.
    pub fn waiting(&self) -> HashMap<String, String> {
        let inner = self.lock();
        let mut out = HashMap::new();
        for (host, server) in &inner.servers {
            for account in server.waiting.values() {
                out.insert(account.clone(), host.clone());
            }
        }
        out
    }

    /// The server `account`'s probe waits for the budget of, if it waits.
    pub fn waiting_for(&self, account: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .servers
            .iter()
            .find(|(_, server)| server.waiting.values().any(|a| a == account))
            .map(|(host, _)| host.clone())
    }
}

/// The outcome of one look at a server's budget.
enum Reserve {
    /// No budget: nothing to reserve.
    Off,
    /// Reserved this many failures.
    Done(u32),
    /// Queued with `ticket`: look again when woken or when the oldest failure expires.
    Wait {
        ticket: u64,
        wake: Arc<Notify>,
        next_expiry: Option<Instant>,
    },
}

/// A probe's place in its server's queue, given up when its wait ends, however it ends;
/// the next in line is then woken.
struct WaitGuard<'a> {
    budget: &'a FailureBudget,
    host: &'a str,
    ticket: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut inner = self.budget.lock();
        if let Some(server) = inner.servers.get_mut(self.host) {
            server.waiting.remove(&self.ticket);
            server.wake.notify_waiters();
        }
    }
}

/// A probe's admission. [`Admission::settle`] charges what the probe cost. Dropped unsettled
/// (a reload cancelled the probe), it gives the reservation back if the probe never started,
/// and otherwise charges what its [`Meter`] says may have gone out: each rung started, plus
/// the aborted login that follows one, as [`cost`] counts a finished probe.
#[derive(Debug)]
pub struct Admission {
    budget: Arc<FailureBudget>,
    host: String,
    steps: Steps,
    reserved: u32,
    meter: Meter,
    started: bool,
    settled: bool,
}

impl Admission {
    /// How the probe may walk its ladder; from now on the probe counts as under way.
    pub fn start(&mut self) -> Steps {
        self.started = true;
        self.steps
    }

    /// Where the probe counts the rungs it starts.
    pub fn meter(&self) -> Meter {
        self.meter.clone()
    }

    /// Failures reserved for the probe.
    pub fn reserved(&self) -> u32 {
        self.reserved
    }

    /// Charges what `verdict` cost and gives back the rest of the reservation.
    pub fn settle(mut self, verdict: &Verdict) {
        self.settled = true;
        self.budget.settle(&self.host, self.reserved, cost(verdict));
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.settled {
            let rungs = if self.started {
                self.meter.rungs_started()
            } else {
                0
            };
            let spent = rungs.saturating_add(u32::from(rungs > 0));
            self.budget.settle(&self.host, self.reserved, spent);
        }
    }
}

#[cfg(test)]
mod tests;
