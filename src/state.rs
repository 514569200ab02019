//! One account's history and the pure rules that turn a probe's verdict into its next state:
//! counters, the remembered method, fallback and backoff. No locks, no I/O, no clock.

use std::fmt;
use std::time::SystemTime;

use crate::probe::{MethodSet, Steps};
use crate::verdict::{AttemptResult, Method, Reason, Verdict};

/// What the next probe of an account should do, decided from its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The method that worked last time: tried first.
    pub preferred: Option<Method>,
    /// Methods rejected since they last worked: tried after every other one.
    pub rejected: MethodSet,
    /// The account's interval is multiplied by this (1 = no backoff) after consecutive
    /// credential rejections, so that the exporter never locks a mailbox out.
    pub backoff_factor: u32,
}

impl Plan {
    /// The whole ladder, the remembered method first and rejected ones last: how a probe
    /// walks when no failure budget shortens it.
    pub fn steps(&self) -> Steps {
        Steps {
            preferred: self.preferred,
            last: self.rejected,
            others: None,
        }
    }
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            preferred: None,
            rejected: MethodSet::EMPTY,
            backoff_factor: 1,
        }
    }
}

/// The interval is never multiplied by more than this, however long the rejections go on:
/// with a 5 min interval a wrong password is still retried every 80 min.
pub const MAX_BACKOFF_FACTOR: u32 = 16;

/// What the last probe of an account found, and when it finished.
#[derive(Debug, Clone)]
pub struct LastProbe {
    pub verdict: Verdict,
    pub finished: SystemTime,
}

/// The history of one account.
///
/// Policies (product behaviour, visible in the metrics):
/// - **Remembered method.** A successful login with method `m` makes `m` the method tried
///   first next time. It counts as *reached by falling back* when the verdict says so, or when
///   `m` is the method already remembered and that one was itself reached by falling back (the
///   next probe tries it first and so no longer needs to fall back, but the server still
///   advertises a method it cannot verify). A failure with reason `auth_rejected` forgets the
///   method, so that the next probe walks the whole ladder; other failures (timeouts, a busy
///   server, connection trouble) say nothing about the method and keep it, unless the
///   remembered method itself was rejected, or is no longer offered
///   (`mechanism_unavailable`).
/// - **Rejected rungs.** Every method a probe saw rejected is remembered as such (also when
///   the probe then failed, e.g. timed out on a server that delays each rejection) until it
///   logs in or the account's settings change. The next probe tries those rungs only after
///   every other one ([`Plan::rejected`]), so the ladder reaches the rung that works within
///   the timeout, or on the next probe, and then goes straight to it.
/// - **Fallback** holds while the remembered method was reached by falling back; it ends
///   with an `auth_rejected` failure, where every rung failed and pinning a method would not
///   help. (`mailbox_auth_fallback` shows it only while the last probe also logged in.)
/// - **Backoff.** Only rejected credentials count towards it: `auth_rejected`, and a probe
///   that saw a rung rejected before it failed otherwise (a timeout or hang-up mid-ladder:
///   those rejections were failed logins all the same). `plaintext_disallowed` and
///   `mechanism_unavailable` never send a credential, and a busy server or a timeout without
///   a rejection is not the user's fault. After `n` rejections in a row the interval is multiplied by
///   `2^(n-1)` (1 for `n <= 1`), capped at [`MAX_BACKOFF_FACTOR`]; any other outcome ends
///   the streak.
/// - **Certificate expiry** is the one the last TLS handshake reported; probes that did not
///   get that far keep the previous one.
#[derive(Debug, Clone, Default)]
pub struct AccountState {
    /// Failed probes, whatever the reason: per reason and per method they are counted per
    /// group, where ten thousand accounts do not multiply them.
    failures: u64,
    consecutive_failures: u64,
    consecutive_rejections: u32,
    probes: u64,
    last: Option<LastProbe>,
    last_success: Option<SystemTime>,
    last_success_method: Option<Method>,
    cert_expiry: Option<i64>,
    remembered: Option<Method>,
    remembered_by_fallback: bool,
    /// Methods rejected since they last worked.
    rejected: MethodSet,
    /// The advice of the probe that fell back ("pin auth_mode: PASS"): later probes go
    /// straight to the remembered method and no longer see the rejection themselves.
    fallback_advice: Option<String>,
}

/// A state change worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The account stopped logging in (or its first probe failed).
    StartedFailing { reason: Reason },
    /// The account logs in again.
    Recovered { method: Option<Method> },
    /// The login still works, with another method.
    MethodChanged { from: Method, to: Method },
    /// The login still fails, for another reason.
    ReasonChanged { from: Reason, to: Reason },
    /// Probing slowed down after repeated rejections.
    BackoffStarted { factor: u32 },
    /// Probing is back to the configured interval.
    BackoffEnded,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::StartedFailing { reason } => write!(f, "login failing: {reason}"),
            Change::Recovered { method: Some(m) } => write!(f, "login works again, with {m}"),
            Change::Recovered { method: None } => f.write_str("login works again"),
            Change::MethodChanged { from, to } => {
                write!(f, "login method changed from {from} to {to}")
            }
            Change::ReasonChanged { from, to } => {
                write!(f, "login still failing, now {to} (was {from})")
            }
            Change::BackoffStarted { factor } => write!(
                f,
                "credentials rejected repeatedly: probing slowed down, interval x{factor}"
            ),
            Change::BackoffEnded => f.write_str("probing back at the configured interval"),
        }
    }
}

/// The backoff factor after `rejections` credential rejections in a row.
pub fn backoff_factor(rejections: u32) -> u32 {
    if rejections <= 1 {
        1
    } else {
        // 2^(n-1) reaches the cap at n = 5; clamp first so the shift cannot overflow.
        (1u32 << (rejections - 1).min(31)).min(MAX_BACKOFF_FACTOR)
    }
}

impl AccountState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in a finished probe and returns what changed, for the log.
    pub fn observe(&mut self, verdict: Verdict, finished: SystemTime) -> Vec<Change> {
        let mut changes = Vec::new();
        let before_factor = self.backoff_factor();
        match &self.last {
            None if !verdict.success => changes.push(Change::StartedFailing {
                reason: verdict.reason.unwrap_or(Reason::Protocol),
            }),
            None => {}
            Some(prev) => changes.extend(outcome_change(&prev.verdict, &verdict)),
        }

        let mut rejected_now = false;
        for attempt in &verdict.attempts {
            match attempt.result {
                AttemptResult::Rejected => {
                    rejected_now = true;
                    self.rejected.insert(attempt.method);
                }
                AttemptResult::Success => self.rejected.remove(attempt.method),
                AttemptResult::Error => {}
            }
        }
        self.probes += 1;
        if verdict.success {
            self.consecutive_failures = 0;
            self.consecutive_rejections = 0;
            self.last_success = Some(finished);
            if let Some(m) = verdict.method {
                let still_fallback = self.remembered == Some(m) && self.remembered_by_fallback;
                self.remembered_by_fallback = verdict.fallback || still_fallback;
                if verdict.fallback {
                    self.fallback_advice = verdict.advice.clone();
                } else if !still_fallback {
                    self.fallback_advice = None;
                }
                self.remembered = Some(m);
                self.last_success_method = Some(m);
            }
        } else {
            let reason = verdict.reason.unwrap_or(Reason::Protocol);
            self.failures += 1;
            self.consecutive_failures += 1;
            let no_credentials = matches!(
                reason,
                Reason::PlaintextDisallowed | Reason::MechanismUnavailable
            );
            if reason == Reason::AuthRejected || (rejected_now && !no_credentials) {
                self.consecutive_rejections = self.consecutive_rejections.saturating_add(1);
            } else {
                self.consecutive_rejections = 0;
            }
            let method_gone = self.remembered.is_some_and(|m| self.rejected.contains(m))
                || reason == Reason::MechanismUnavailable;
            if reason == Reason::AuthRejected || method_gone {
                self.remembered = None;
                self.remembered_by_fallback = false;
                self.fallback_advice = None;
            }
        }
        if verdict.cert_expiry.is_some() {
            self.cert_expiry = verdict.cert_expiry;
        }

        let after_factor = self.backoff_factor();
        if before_factor == 1 && after_factor > 1 {
            changes.push(Change::BackoffStarted {
                factor: after_factor,
            });
        } else if before_factor > 1 && after_factor == 1 {
            changes.push(Change::BackoffEnded);
        }
        // Kept until the next probe, for every account: without the slack that building it
        // left.
        let mut verdict = verdict;
        verdict
            .transcript
            .iter_mut()
            .for_each(String::shrink_to_fit);
        verdict.transcript.shrink_to_fit();
        verdict.attempts.shrink_to_fit();
        self.last = Some(LastProbe { verdict, finished });
        changes
    }

    /// Forgets what no longer holds once an account's settings changed: the remembered
    /// method, the backoff streak and the certificate (it belonged to the old settings).
    /// Counters and the last probe stay: they are history.
    pub fn reset_memory(&mut self) {
        self.remembered = None;
        self.remembered_by_fallback = false;
        self.fallback_advice = None;
        self.rejected = MethodSet::EMPTY;
        self.consecutive_rejections = 0;
        self.cert_expiry = None;
    }

    /// What the next probe should do.
    pub fn plan(&self) -> Plan {
        Plan {
            preferred: self.remembered,
            rejected: self.rejected,
            backoff_factor: self.backoff_factor(),
        }
    }

    /// See the backoff policy on [`AccountState`].
    pub fn backoff_factor(&self) -> u32 {
        backoff_factor(self.consecutive_rejections)
    }

    /// Probing is slowed down (`mailbox_probe_backoff`).
    pub fn backoff(&self) -> bool {
        self.backoff_factor() > 1
    }

    /// `mailbox_auth_fallback`: see the policy on [`AccountState`].
    pub fn fallback(&self) -> bool {
        self.remembered.is_some() && self.remembered_by_fallback
    }

    /// What to tell the operator: the last probe's advice, or, while the remembered method
    /// was reached by falling back and the last probe went straight to it, the advice of the
    /// probe that fell back.
    pub fn advice(&self) -> Option<String> {
        let last = self.last.as_ref()?;
        if last.verdict.success && !last.verdict.fallback && self.fallback() {
            return self
                .fallback_advice
                .clone()
                .or_else(|| last.verdict.advice.clone());
        }
        last.verdict.advice.clone()
    }

    pub fn remembered(&self) -> Option<Method> {
        self.remembered
    }

    /// Methods rejected since they last worked: see the policy on [`AccountState`].
    pub fn rejected(&self) -> MethodSet {
        self.rejected
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures
    }

    pub fn consecutive_rejections(&self) -> u32 {
        self.consecutive_rejections
    }

    /// How many probes were observed.
    pub fn probes(&self) -> u64 {
        self.probes
    }

    pub fn last(&self) -> Option<&LastProbe> {
        self.last.as_ref()
    }

    /// The last probe logged in (false before the first probe).
    pub fn success(&self) -> bool {
        self.last.as_ref().is_some_and(|l| l.verdict.success)
    }

    /// The last probe sent the password unencrypted.
    pub fn cleartext(&self) -> bool {
        self.last.as_ref().is_some_and(|l| l.verdict.cleartext)
    }

    pub fn last_success(&self) -> Option<SystemTime> {
        self.last_success
    }

    /// The method of the last successful login, however long ago.
    pub fn last_success_method(&self) -> Option<Method> {
        self.last_success_method
    }

    pub fn cert_expiry(&self) -> Option<i64> {
        self.cert_expiry
    }
}

/// The success/failure transition between two consecutive probes.
fn outcome_change(prev: &Verdict, now: &Verdict) -> Option<Change> {
    match (prev.success, now.success) {
        (true, false) => Some(Change::StartedFailing {
            reason: now.reason.unwrap_or(Reason::Protocol),
        }),
        (false, true) => Some(Change::Recovered { method: now.method }),
        (true, true) => match (prev.method, now.method) {
            (Some(from), Some(to)) if from != to => Some(Change::MethodChanged { from, to }),
            _ => None,
        },
        (false, false) => match (prev.reason, now.reason) {
            (Some(from), Some(to)) if from != to => Some(Change::ReasonChanged { from, to }),
            _ => None,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verdict::{Attempt, Phases};
    use std::time::Duration;

    pub(crate) fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn attempt(method: Method, result: AttemptResult) -> Attempt {
        Attempt { method, result }
    }

    pub(crate) fn success(method: Method, fallback: bool, attempts: Vec<Attempt>) -> Verdict {
        Verdict {
            success: true,
            method: Some(method),
            reason: None,
            detail: None,
            fallback,
            cleartext: false,
            attempts,
            phases: Phases {
                total: Duration::from_millis(300),
                ..Phases::default()
            },
            cert_expiry: None,
            advice: None,
            transcript: Vec::new(),
        }
    }

    pub(crate) fn failure(reason: Reason, attempts: Vec<Attempt>) -> Verdict {
        Verdict {
            success: false,
            method: None,
            reason: Some(reason),
            detail: Some(format!("failed: {reason}")),
            fallback: false,
            cleartext: false,
            attempts,
            phases: Phases {
                total: Duration::from_secs(2),
                ..Phases::default()
            },
            cert_expiry: None,
            advice: None,
            transcript: Vec::new(),
        }
    }

    /// BEST stepped past a rejected APOP and logged in with PASS.
    pub(crate) fn trap() -> Verdict {
        success(
            Method::Pass,
            true,
            vec![
                attempt(Method::Apop, AttemptResult::Rejected),
                attempt(Method::Pass, AttemptResult::Success),
            ],
        )
    }

    fn pass_ok() -> Verdict {
        success(
            Method::Pass,
            false,
            vec![attempt(Method::Pass, AttemptResult::Success)],
        )
    }

    fn rejected() -> Verdict {
        failure(
            Reason::AuthRejected,
            vec![
                attempt(Method::Apop, AttemptResult::Rejected),
                attempt(Method::Pass, AttemptResult::Rejected),
            ],
        )
    }

    #[test]
    fn fallback_is_remembered_until_the_credentials_are_rejected() {
        let mut s = AccountState::new();
        assert_eq!(s.plan(), Plan::default());
        assert!(!s.fallback());

        let mut fell_back = trap();
        fell_back.advice = Some("APOP advertised but rejected; pin auth_mode: PASS".into());
        assert_eq!(s.observe(fell_back, at(1)), vec![]);
        assert_eq!(s.remembered(), Some(Method::Pass));
        assert!(s.fallback());
        assert_eq!(s.plan().preferred, Some(Method::Pass));

        // PASS is tried first now, so no rung falls back: the server still has the trap, and
        // the advice of the probe that fell back still stands.
        assert_eq!(s.observe(pass_ok(), at(2)), vec![]);
        assert!(s.fallback());
        assert_eq!(s.remembered(), Some(Method::Pass));
        assert!(s.advice().unwrap().contains("pin auth_mode: PASS"));

        // A timeout says nothing about the method.
        let changes = s.observe(failure(Reason::Timeout, vec![]), at(3));
        assert_eq!(
            changes,
            vec![Change::StartedFailing {
                reason: Reason::Timeout
            }]
        );
        assert!(s.fallback());
        assert_eq!(s.plan().preferred, Some(Method::Pass));

        // Every rung rejected: forget the method, pinning would not help.
        s.observe(rejected(), at(4));
        assert_eq!(s.remembered(), None);
        assert!(!s.fallback());
        assert!(s.advice().is_none_or(|a| !a.contains("pin auth_mode")));
        assert_eq!(s.plan().preferred, None);

        // A clean PASS login without any fallback is not the trap.
        s.observe(pass_ok(), at(5));
        assert_eq!(s.remembered(), Some(Method::Pass));
        assert!(!s.fallback());
    }

    #[test]
    fn a_different_method_without_fallback_clears_the_flag() {
        let mut s = AccountState::new();
        s.observe(trap(), at(1));
        assert!(s.fallback());
        let apop = success(
            Method::Apop,
            false,
            vec![attempt(Method::Apop, AttemptResult::Success)],
        );
        assert_eq!(
            s.observe(apop, at(2)),
            vec![Change::MethodChanged {
                from: Method::Pass,
                to: Method::Apop
            }]
        );
        assert!(!s.fallback());
        assert_eq!(s.remembered(), Some(Method::Apop));
    }

    #[test]
    fn backoff_factors() {
        let expected = [1, 1, 2, 4, 8, 16, 16, 16];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(backoff_factor(n as u32), *want, "n = {n}");
        }
        assert_eq!(backoff_factor(u32::MAX), MAX_BACKOFF_FACTOR);

        let mut s = AccountState::new();
        for (n, want) in expected.iter().enumerate().skip(1) {
            s.observe(rejected(), at(n as u64));
            assert_eq!(s.consecutive_rejections(), n as u32);
            assert_eq!(s.plan().backoff_factor, *want, "after {n} rejections");
            assert_eq!(s.backoff(), *want > 1);
        }
        s.reset_memory();
        assert_eq!(s.plan().backoff_factor, 1);
        assert!(!s.backoff());
        // Counters are history and survive.
        assert_eq!(s.failures(), 7);
        assert_eq!(s.consecutive_failures(), 7);
    }

    #[test]
    fn only_rejections_count_towards_backoff() {
        let mut s = AccountState::new();
        s.observe(rejected(), at(1));
        s.observe(rejected(), at(2));
        assert_eq!(s.backoff_factor(), 2);
        for reason in [
            Reason::PlaintextDisallowed,
            Reason::MechanismUnavailable,
            Reason::ServerBusy,
            Reason::Timeout,
        ] {
            s.observe(rejected(), at(3));
            s.observe(rejected(), at(4));
            assert!(s.backoff(), "{reason}");
            s.observe(failure(reason, vec![]), at(5));
            assert_eq!(s.backoff_factor(), 1, "{reason} ends the streak");
            assert_eq!(s.consecutive_rejections(), 0);
        }
        assert_eq!(s.consecutive_failures(), 14);
        s.observe(pass_ok(), at(6));
        assert_eq!(s.consecutive_failures(), 0);
    }

    #[test]
    fn change_sequence() {
        let mut s = AccountState::new();
        let mut log = Vec::new();
        for (i, v) in [
            rejected(),
            rejected(),
            rejected(),
            failure(Reason::Timeout, vec![]),
            trap(),
            pass_ok(),
            success(
                Method::Apop,
                false,
                vec![attempt(Method::Apop, AttemptResult::Success)],
            ),
        ]
        .into_iter()
        .enumerate()
        {
            log.push(s.observe(v, at(i as u64)));
        }
        assert_eq!(
            log,
            vec![
                vec![Change::StartedFailing {
                    reason: Reason::AuthRejected
                }],
                vec![Change::BackoffStarted { factor: 2 }],
                vec![],
                vec![
                    Change::ReasonChanged {
                        from: Reason::AuthRejected,
                        to: Reason::Timeout
                    },
                    Change::BackoffEnded
                ],
                vec![Change::Recovered {
                    method: Some(Method::Pass)
                }],
                vec![],
                vec![Change::MethodChanged {
                    from: Method::Pass,
                    to: Method::Apop
                }],
            ]
        );
        assert_eq!(
            Change::BackoffStarted { factor: 4 }.to_string(),
            "credentials rejected repeatedly: probing slowed down, interval x4"
        );
        assert_eq!(
            Change::StartedFailing {
                reason: Reason::AuthRejected
            }
            .to_string(),
            "login failing: auth_rejected"
        );
    }

    #[test]
    fn facts_of_the_last_probe() {
        let mut s = AccountState::new();
        assert!(!s.success());
        assert!(s.last().is_none());
        let mut v = trap();
        v.cert_expiry = Some(1_800_000_000);
        v.cleartext = true;
        s.observe(v, at(10));
        assert!(s.success());
        assert!(s.cleartext());
        assert_eq!(s.last_success(), Some(at(10)));
        assert_eq!(s.cert_expiry(), Some(1_800_000_000));
        // A probe that never reached TLS keeps the last known certificate.
        s.observe(failure(Reason::Connect, vec![]), at(20));
        assert!(!s.success());
        assert_eq!(s.cert_expiry(), Some(1_800_000_000));
        assert_eq!(s.last_success(), Some(at(10)));
        assert_eq!(s.last_success_method(), Some(Method::Pass));
        assert_eq!(s.last().map(|l| l.finished), Some(at(20)));
        assert_eq!(s.probes(), 2);
        s.reset_memory();
        assert_eq!(s.cert_expiry(), None);
        assert_eq!(s.remembered(), None);
        assert_eq!(s.probes(), 2);
    }

    /// A server that delays each rejection until the probe times out: APOP rejected, CRAM-MD5
    /// unanswered.
    fn trap_timed_out() -> Verdict {
        failure(
            Reason::Timeout,
            vec![
                attempt(Method::Apop, AttemptResult::Rejected),
                attempt(Method::CramMd5, AttemptResult::Error),
            ],
        )
    }

    #[test]
    fn rejected_rungs_go_last_until_they_work() {
        let mut s = AccountState::new();
        s.observe(trap_timed_out(), at(1));
        let plan = s.plan();
        assert_eq!(plan.preferred, None);
        assert_eq!(plan.rejected.iter().collect::<Vec<_>>(), vec![Method::Apop]);

        // The next probe reaches PASS past a rejected CRAM-MD5: both are remembered.
        s.observe(
            success(
                Method::Pass,
                true,
                vec![
                    attempt(Method::CramMd5, AttemptResult::Rejected),
                    attempt(Method::Pass, AttemptResult::Success),
                ],
            ),
            at(2),
        );
        let plan = s.plan();
        assert_eq!(plan.preferred, Some(Method::Pass));
        assert_eq!(
            plan.rejected.iter().collect::<Vec<_>>(),
            vec![Method::Apop, Method::CramMd5]
        );

        // A rung that works again is no longer held back; new settings forget them all.
        s.observe(
            success(
                Method::Apop,
                false,
                vec![attempt(Method::Apop, AttemptResult::Success)],
            ),
            at(3),
        );
        assert_eq!(
            s.plan().rejected.iter().collect::<Vec<_>>(),
            vec![Method::CramMd5]
        );
        s.reset_memory();
        assert!(s.plan().rejected.is_empty());
    }

    #[test]
    fn a_timeout_after_rejections_keeps_the_backoff_going() {
        let mut s = AccountState::new();
        s.observe(rejected(), at(1));
        s.observe(rejected(), at(2));
        assert_eq!(s.backoff_factor(), 2);
        s.observe(trap_timed_out(), at(3));
        assert_eq!(s.consecutive_rejections(), 3);
        assert_eq!(s.backoff_factor(), 4);
        // A timeout that rejected nothing is not the user's fault.
        s.observe(failure(Reason::Timeout, vec![]), at(4));
        assert_eq!(s.backoff_factor(), 1);
        // Nor is a plaintext refusal, which sent no credential.
        s.observe(rejected(), at(5));
        s.observe(rejected(), at(6));
        s.observe(
            failure(
                Reason::PlaintextDisallowed,
                vec![attempt(Method::Pass, AttemptResult::Rejected)],
            ),
            at(7),
        );
        assert_eq!(s.backoff_factor(), 1);
    }

    #[test]
    fn a_remembered_method_that_is_rejected_or_gone_is_forgotten() {
        let mut s = AccountState::new();
        s.observe(pass_ok(), at(1));
        s.observe(
            failure(
                Reason::Timeout,
                vec![
                    attempt(Method::Pass, AttemptResult::Rejected),
                    attempt(Method::Apop, AttemptResult::Error),
                ],
            ),
            at(2),
        );
        assert_eq!(s.plan().preferred, None);

        s.observe(pass_ok(), at(3));
        s.observe(failure(Reason::MechanismUnavailable, vec![]), at(4));
        assert_eq!(s.plan().preferred, None);

        // A timeout that says nothing about the method keeps it.
        s.observe(pass_ok(), at(5));
        s.observe(failure(Reason::Timeout, vec![]), at(6));
        assert_eq!(s.plan().preferred, Some(Method::Pass));
    }
}
