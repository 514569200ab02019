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
            let mut names = std::collections::HashSet::new();
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
                    Ok(account) if !names.insert(account.name.clone()) => {
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
        let changes = log.changes(&outcome);
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
        // Logged once in force, so that a scrape after the log line sees what it says.
        for change in changes {
            change.log(&name);
        }
    }
}

/// A change in a source's state worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// The first read succeeded.
    Read { accounts: usize, skipped: usize },
    /// A read failed, for the first time or for another reason than the last one.
    Failed(String),
    /// A read succeeded after failing.
    Recovered { accounts: usize },
    /// A row is skipped, for the first time or for a new reason.
    Skipped { row: String, why: String },
}

impl Change {
    fn log(&self, source: &str) {
        match self {
            Change::Read { accounts, skipped } => {
                tracing::info!(source, accounts, skipped, "account source read")
            }
            Change::Failed(why) => tracing::error!(
                source,
                error = %why,
                "account source cannot be read; its last accounts stay in force"
            ),
            Change::Recovered { accounts } => {
                tracing::info!(source, accounts, "account source readable again")
            }
            Change::Skipped { row, why } => {
                tracing::warn!(source, row = %row, "row skipped: {why}")
            }
        }
    }
}

/// What a source's log has said, so that each state is logged once, not once per read.
#[derive(Debug, Default)]
struct Log {
    /// `None` before the first read.
    last: Option<Result<(), String>>,
    skipped: BTreeMap<String, String>,
}

impl Log {
    fn changes(&mut self, outcome: &Result<Read, String>) -> Vec<Change> {
        let mut changes = Vec::new();
        match outcome {
            Err(why) => {
                if self.last.as_ref().and_then(|l| l.as_ref().err()) != Some(why) {
                    changes.push(Change::Failed(why.clone()));
                }
                self.last = Some(Err(why.clone()));
            }
            Ok(read) => {
                let accounts = read.accounts.len();
                match &self.last {
                    None => changes.push(Change::Read {
                        accounts,
                        skipped: read.skipped.len(),
                    }),
                    Some(Err(_)) => changes.push(Change::Recovered { accounts }),
                    Some(Ok(())) => {}
                }
                self.last = Some(Ok(()));
                for (row, why) in &read.skipped {
                    if self.skipped.get(row) != Some(why) {
                        changes.push(Change::Skipped {
                            row: row.clone(),
                            why: why.clone(),
                        });
                    }
                }
                self.skipped = read.skipped.clone();
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(accounts: usize, skipped: &[(&str, &str)]) -> Result<Read, String> {
        Ok(Read {
            accounts: (0..accounts)
                .map(|i| Account::for_test("g", &i.to_string(), crate::verdict::Protocol::Pop3))
                .collect(),
            skipped: skipped
                .iter()
                .map(|(r, w)| (r.to_string(), w.to_string()))
                .collect(),
        })
    }

    #[test]
    fn each_state_is_logged_once_per_change_not_once_per_read() {
        let mut log = Log::default();
        let down = || Err::<Read, String>("cannot connect".into());
        let skip = Change::Skipped {
            row: "9".into(),
            why: "email_account_server is empty".into(),
        };
        assert_eq!(
            log.changes(&read(2, &[("9", "email_account_server is empty")])),
            [
                Change::Read {
                    accounts: 2,
                    skipped: 1
                },
                skip.clone()
            ]
        );
        assert_eq!(
            log.changes(&read(2, &[("9", "email_account_server is empty")])),
            []
        );
        assert_eq!(
            log.changes(&down()),
            [Change::Failed("cannot connect".into())]
        );
        assert_eq!(log.changes(&down()), []);
        assert_eq!(
            log.changes(&Err("timeout".into())),
            [Change::Failed("timeout".into())]
        );
        assert_eq!(
            log.changes(&read(3, &[("9", "email_account_server is empty")])),
            [Change::Recovered { accounts: 3 }]
        );
        assert_eq!(log.changes(&read(3, &[])), []);
        // Skipped again after being fixed: said again.
        assert_eq!(
            log.changes(&read(3, &[("9", "email_account_server is empty")])),
            [skip]
        );
    }
}
