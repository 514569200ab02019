//! One account as the web pages read it: a copy of its settings and of what its last probe
//! found, taken under the store's lock and handed out without it, and the store's readings
//! that make them.

use std::time::{Duration, SystemTime};

use super::store::{Entry, Store, auth_mode_label};
use crate::verdict::{Attempt, Method, Phases, Protocol, Reason, TlsMode};

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
    /// The last probe's redacted dialogue (left empty by [`Store::accounts`]).
    pub transcript: Vec<String>,
    /// The rungs the last probe tried (left empty by [`Store::accounts`]).
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

/// The readings the pages make.
impl Store {
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
}
