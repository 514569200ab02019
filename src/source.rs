//! Account sources beside the config file's `groups`: each is read every `refresh`, and
//! what it read joins the accounts in force as a reload would. A source that cannot be read
//! keeps its last accounts in force; its state is logged once per change, not once per read.

pub mod vicidial;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use crate::config::{Account, SourceSettings};

/// One successful read: the accounts, and the rows that were skipped with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read {
    pub accounts: Vec<Account>,
    /// By row id (`email_account_id`): why it is not probed. Never holds a password.
    pub skipped: BTreeMap<String, String>,
}

/// Reads `settings`' source once.
pub async fn read(settings: &SourceSettings) -> Result<Read, String> {
    match settings {
        SourceSettings::Vicidial(v) => {
            let rows = vicidial::read(v).await?;
            let mut read = Read::default();
            let wanted = |group: Option<&str>| match (&v.in_groups, group) {
                (None, _) => true,
                (Some(groups), Some(g)) => groups.iter().any(|w| w == g.trim()),
                (Some(_), None) => false,
            };
            for row in rows {
                if !wanted(row.group_id.as_deref()) {
                    continue;
                }
                match vicidial::account(v, &row) {
                    Ok(account) if read.accounts.iter().any(|a| a.name == account.name) => {
                        read.skipped.insert(
                            row.email_account_id.clone(),
                            "another row has the same email_account_id (after trimming)".into(),
                        );
                    }
                    Ok(account) => read.accounts.push(account),
                    Err(why) => {
                        read.skipped.insert(row.email_account_id.clone(), why);
                    }
                }
            }
            Ok(read)
        }
    }
}

/// What a source's metrics and pages show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The last read succeeded.
    pub up: bool,
    /// Accounts in force from this source (the last successful read's).
    pub accounts: usize,
    /// Rows skipped by the last successful read.
    pub skipped: usize,
    pub last_success: Option<SystemTime>,
    /// Why the last read failed, when it did.
    pub error: Option<String>,
}

/// Where a followed source's results go.
pub trait Sink: Send + Sync + 'static {
    /// The source's accounts changed: put them in force.
    fn accounts(&self, source: &str, accounts: Vec<Account>) -> impl Future<Output = ()> + Send;
    /// After every read.
    fn status(&self, source: &str, status: Status);
}

/// Reads `settings`' source now and every `refresh`, until dropped. Accounts go to `sink`
/// when they differ from the last read's; a failed read leaves them as they are.
pub async fn follow(settings: SourceSettings, sink: impl Sink) {
    let name = settings.name().to_string();
    let mut log = Log::default();
    let mut last: Option<Vec<Account>> = None;
    let mut status = Status {
        up: false,
        accounts: 0,
        skipped: 0,
        last_success: None,
        error: None,
    };
    let mut ticks = tokio::time::interval(settings.refresh());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = read(&settings).await;
        log.outcome(&name, &outcome);
        match outcome {
            Ok(read) => {
                status.up = true;
                status.error = None;
                status.accounts = read.accounts.len();
                status.skipped = read.skipped.len();
                status.last_success = Some(SystemTime::now());
                if last.as_ref() != Some(&read.accounts) {
                    last = Some(read.accounts.clone());
                    sink.accounts(&name, read.accounts).await;
                }
            }
            Err(why) => {
                status.up = false;
                status.error = Some(why);
            }
        }
        sink.status(&name, status.clone());
    }
}

/// Logs a source's state when it changes: the error when it first appears or differs from
/// the last one, the recovery, and each skipped row when it is first skipped or for a new
/// reason.
#[derive(Debug, Default)]
struct Log {
    /// `None` before the first read.
    last: Option<Result<(), String>>,
    skipped: BTreeMap<String, String>,
}

impl Log {
    fn outcome(&mut self, source: &str, outcome: &Result<Read, String>) {
        match outcome {
            Err(why) => {
                if self.last.as_ref().and_then(|l| l.as_ref().err()) != Some(why) {
                    tracing::error!(
                        source,
                        error = %why,
                        "account source cannot be read; its last accounts stay in force"
                    );
                }
                self.last = Some(Err(why.clone()));
            }
            Ok(read) => {
                match &self.last {
                    Some(Err(_)) => tracing::info!(
                        source,
                        accounts = read.accounts.len(),
                        "account source readable again"
                    ),
                    None => tracing::info!(
                        source,
                        accounts = read.accounts.len(),
                        skipped = read.skipped.len(),
                        "account source read"
                    ),
                    Some(Ok(())) => {}
                }
                self.last = Some(Ok(()));
                for (id, why) in &read.skipped {
                    if self.skipped.get(id) != Some(why) {
                        tracing::warn!(source, row = %id, "row skipped: {why}");
                    }
                }
                self.skipped = read.skipped.clone();
            }
        }
    }
}
