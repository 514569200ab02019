//! The accounts in force: the config file's, joined by what each account source last read.
//! Whenever either changes, the whole is put in force the way a reload is (the exporter's
//! state, then the scheduler), one change at a time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::config::{Account, Config, SourceSettings};
use crate::oauth2::Tokens;
use crate::shard::{self, Shard};
use crate::source::{self, Status};

use super::Exporter;

pub(super) struct InForce<E> {
    exporter: Arc<E>,
    shard: Option<Shard>,
    tokens: Arc<Tokens>,
    /// What the scheduler follows.
    config: watch::Sender<Arc<Config>>,
    /// The config the scheduler runs.
    applied: watch::Receiver<Arc<Config>>,
    /// Held while a change is put in force, so changes never interleave.
    state: Mutex<State>,
}

struct State {
    /// The config file's, this shard's accounts only.
    file: Config,
    /// Each source's last successful read.
    read: BTreeMap<String, Vec<Arc<Account>>>,
    following: BTreeMap<String, (SourceSettings, JoinHandle<()>)>,
    /// Source accounts left out because the config file has an account of that name.
    clashes: BTreeSet<String>,
}

impl<E: Exporter> InForce<E> {
    /// `file` in force: the exporter has it; the scheduler gets it through `config`.
    pub(super) fn new(
        file: Config,
        exporter: Arc<E>,
        shard: Option<Shard>,
        tokens: Arc<Tokens>,
        config: watch::Sender<Arc<Config>>,
        applied: watch::Receiver<Arc<Config>>,
    ) -> Arc<Self> {
        Arc::new(InForce {
            exporter,
            shard,
            tokens,
            config,
            applied,
            state: Mutex::new(State {
                file,
                read: BTreeMap::new(),
                following: BTreeMap::new(),
                clashes: BTreeSet::new(),
            }),
        })
    }

    /// The OAuth2 token sources, shared by every config loaded.
    pub(super) fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// Starts following the sources of the config in force.
    pub(super) async fn start(self: &Arc<Self>) {
        let mut state = self.state.lock().await;
        self.follow(&mut state);
    }

    /// Puts a newly loaded config file in force with the sources' last reads, and follows
    /// its sources: unchanged ones go on, changed ones start over, removed ones stop and
    /// their accounts go. Returns the number of accounts now in force.
    pub(super) async fn file(self: &Arc<Self>, file: Config) -> usize {
        let mut state = self.state.lock().await;
        state.file = file;
        self.follow(&mut state);
        self.apply(&mut state).await
    }

    /// Source `name` read `accounts`: puts them in force.
    async fn source(&self, name: &str, accounts: Vec<Account>) {
        let mut state = self.state.lock().await;
        if !state.following.contains_key(name) {
            // The source was removed by a reload while this read ran.
            return;
        }
        let accounts = accounts.into_iter().map(Arc::new).collect();
        state.read.insert(name.to_string(), accounts);
        self.apply(&mut state).await;
    }

    /// Stops following every source.
    pub(super) async fn stop(&self) {
        let mut state = self.state.lock().await;
        for (_, (_, task)) in std::mem::take(&mut state.following) {
            task.abort();
        }
    }

    fn follow(self: &Arc<Self>, state: &mut State) {
        let wanted: BTreeMap<&str, &SourceSettings> =
            state.file.sources.iter().map(|s| (s.name(), s)).collect();
        let stale: Vec<String> = state
            .following
            .iter()
            .filter(|(name, (settings, _))| wanted.get(name.as_str()) != Some(&settings))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, task)) = state.following.remove(&name) {
                task.abort();
            }
            state.read.remove(&name);
            self.exporter.source_status(&name, None);
        }
        for (name, settings) in wanted {
            if state.following.contains_key(name) {
                continue;
            }
            let sink = Sink(Arc::downgrade(self));
            let task = tokio::spawn(source::follow(settings.clone(), sink));
            state
                .following
                .insert(name.to_string(), (settings.clone(), task));
        }
    }

    /// The config file's accounts and the sources', this shard's, put in force; answered
    /// once the scheduler runs them.
    async fn apply(&self, state: &mut State) -> usize {
        let (config, clashes) = compose(&state.file, &state.read, self.shard);
        for name in clashes.difference(&state.clashes) {
            tracing::error!(
                account = %name,
                "an account source has an account named like one in the config file; the \
                 config file's is probed, rename one of them"
            );
        }
        state.clashes = clashes;
        let accounts = config.account_count();
        let used: HashSet<_> = config.accounts().filter_map(|a| a.oauth2.clone()).collect();
        self.tokens.retain(|settings| used.contains(settings));
        self.exporter.apply_config(&config);
        let config = Arc::new(config);
        self.config.send_replace(Arc::clone(&config));
        // From then on no probe starts with settings it replaced. (If the scheduler has
        // stopped, nothing probes.)
        let mut applied = self.applied.clone();
        let _ = applied.wait_for(|now| Arc::ptr_eq(now, &config)).await;
        accounts
    }
}

/// The config file's accounts joined by the sources' (this shard's), and the names of
/// source accounts left out because the config file has one of that name.
fn compose(
    file: &Config,
    read: &BTreeMap<String, Vec<Arc<Account>>>,
    shard: Option<Shard>,
) -> (Config, BTreeSet<String>) {
    let mut config = file.clone();
    let ours = read
        .values()
        .flatten()
        .filter(|a| shard.is_none_or(|shard| shard::owns(&a.name, shard)))
        .cloned();
    let clashes = config.join(ours).into_iter().collect();
    (config, clashes)
}

/// A followed source's way back: weak, so that a source task never keeps the service alive.
struct Sink<E>(Weak<InForce<E>>);

impl<E: Exporter> source::Sink for Sink<E> {
    async fn accounts(&self, source: &str, accounts: Vec<Account>) {
        if let Some(in_force) = self.0.upgrade() {
            in_force.source(source, accounts).await;
        }
    }

    fn status(&self, source: &str, status: Status) {
        if let Some(in_force) = self.0.upgrade() {
            in_force.exporter.source_status(source, Some(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Group, Origin, VicidialRow};
    use crate::verdict::Protocol;

    fn from_source(group: &str, name: &str) -> Account {
        let mut a = Account::for_test(group, name, Protocol::Pop3);
        a.origin = Origin::Vicidial(VicidialRow {
            source: "vicidial".into(),
            email_account_name: String::new(),
            user_group: String::new(),
            frequency_check_mins: 5,
        });
        a
    }

    fn file(accounts: Vec<Account>) -> Config {
        let mut config = Config::from_str_with_format("{}", crate::config::Format::Yaml).unwrap();
        for a in accounts {
            match config.groups.iter_mut().find(|g| g.name == a.group) {
                Some(g) => g.accounts.push(Arc::new(a)),
                None => config.groups.push(Group {
                    name: a.group.clone(),
                    accounts: vec![Arc::new(a)],
                }),
            }
        }
        config
    }

    #[test]
    fn source_accounts_join_their_groups_and_file_names_win() {
        let file = file(vec![Account::for_test("SUPPORT", "inbox", Protocol::Pop3)]);
        let read = BTreeMap::from([(
            "vicidial".to_string(),
            vec![
                Arc::new(from_source("SUPPORT", "1001")),
                Arc::new(from_source("BILLING", "1002")),
                Arc::new(from_source("BILLING", "inbox")),
            ],
        )]);
        let (config, clashes) = compose(&file, &read, None);
        let names: Vec<(&str, Vec<&str>)> = config
            .groups
            .iter()
            .map(|g| {
                (
                    g.name.as_str(),
                    g.accounts.iter().map(|a| a.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("SUPPORT", vec!["inbox", "1001"]),
                ("BILLING", vec!["1002"])
            ]
        );
        assert_eq!(config.find_account("inbox").unwrap().origin, Origin::File);
        assert_eq!(clashes, BTreeSet::from(["inbox".to_string()]));
    }

    #[test]
    fn a_shard_takes_only_its_source_accounts() {
        let shard: Shard = "1/2".parse().unwrap();
        let accounts: Vec<Arc<Account>> = (0..40)
            .map(|i| Arc::new(from_source("SUPPORT", &format!("{i}"))))
            .collect();
        let read = BTreeMap::from([("vicidial".to_string(), accounts.clone())]);
        let (config, _) = compose(&file(Vec::new()), &read, Some(shard));
        let kept: Vec<&str> = config.accounts().map(|a| a.name.as_str()).collect();
        let owned: Vec<&str> = accounts
            .iter()
            .filter(|a| shard::owns(&a.name, shard))
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(kept, owned);
        assert!(!kept.is_empty() && kept.len() < 40);
    }
}
