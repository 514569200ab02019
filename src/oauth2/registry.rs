//! The [`Tokens`] registry: one shared token source per distinct [`Settings`], owned by the
//! app and kept across reloads so that cached tokens survive them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::cache::{Cached, Policy};
use super::endpoint::TokenRequest;
use super::file::TokenFile;
use super::{Grant, Settings};
use crate::token::{OAuth2Login, TokenSource};

/// A source's token requests by result and its cached token's expiry, for the metrics.
#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<(BTreeMap<&'static str, u64>, Option<SystemTime>)>,
}

impl Stats {
    fn lock(&self) -> MutexGuard<'_, (BTreeMap<&'static str, u64>, Option<SystemTime>)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request with `result` and sets the cached token's expiry.
    pub fn record(&self, result: &'static str, expiry: Option<SystemTime>) {
        let mut inner = self.lock();
        *inner.0.entry(result).or_default() += 1;
        inner.1 = expiry;
    }

    pub fn set_expiry(&self, expiry: Option<SystemTime>) {
        self.lock().1 = expiry;
    }
}

/// What the metrics show of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStats {
    /// The `source` label: [`Settings::name`], with `#2`, `#3`, ... when names repeat.
    pub name: String,
    /// Token requests (file reads for a token file) by result: `success`, `error` (the
    /// provider refused, or the file is unusable), `unreachable`, `malformed`.
    pub requests: BTreeMap<&'static str, u64>,
    /// When the cached token expires, if one is cached and its lifetime known.
    pub expiry: Option<SystemTime>,
}

struct Entry {
    login: OAuth2Login,
    name: String,
    stats: Arc<Stats>,
}

/// One shared source per distinct [`Settings`].
pub struct Tokens {
    policy: Policy,
    sources: Mutex<HashMap<Settings, Entry>>,
    serial: Mutex<u64>,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::new(Policy::default())
    }
}

impl Tokens {
    pub fn new(policy: Policy) -> Self {
        Tokens {
            policy,
            sources: Mutex::new(HashMap::new()),
            serial: Mutex::new(0),
        }
    }

    fn sources(&self) -> MutexGuard<'_, HashMap<Settings, Entry>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The login for `settings`: the existing source when one has them, else a new one.
    /// Blocks to read a `ca_file`; fails when it cannot be used or the token URL is not https.
    pub fn login(&self, settings: &Settings) -> Result<OAuth2Login, String> {
        if let Some(entry) = self.sources().get(settings) {
            return Ok(entry.login.clone());
        }
        let stats = Arc::new(Stats::default());
        let source: Arc<dyn TokenSource> = match &settings.grant {
            Grant::ClientCredentials(endpoint) => Arc::new(Cached::new(
                TokenRequest::new(
                    endpoint,
                    None,
                    settings.ca_file.as_deref(),
                    settings.timeout,
                )?,
                self.policy,
                stats.clone(),
            )),
            Grant::RefreshToken {
                endpoint,
                refresh_token,
                ..
            } => Arc::new(Cached::new(
                TokenRequest::new(
                    endpoint,
                    Some(refresh_token.expose()),
                    settings.ca_file.as_deref(),
                    settings.timeout,
                )?,
                self.policy,
                stats.clone(),
            )),
            Grant::TokenFile(path) => Arc::new(TokenFile::new(path.clone(), stats.clone())),
        };
        let mut sources = self.sources();
        if let Some(entry) = sources.get(settings) {
            return Ok(entry.login.clone());
        }
        let base = settings.name();
        let taken = |name: &str| sources.values().any(|e| e.name == name);
        let mut name = base.clone();
        let mut n = 1;
        while taken(&name) {
            n += 1;
            name = format!("{base}#{n}");
        }
        let serial = {
            let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
            *serial += 1;
            *serial
        };
        let login = OAuth2Login::new(format!("{name} [{serial}]"), source);
        sources.insert(
            settings.clone(),
            Entry {
                login: login.clone(),
                name,
                stats,
            },
        );
        Ok(login)
    }

    /// Forgets every source whose settings `keep` refuses (after a reload, those no account
    /// uses any more).
    pub fn retain(&self, keep: impl Fn(&Settings) -> bool) {
        self.sources().retain(|settings, _| keep(settings));
    }

    /// The sources' metrics, by name.
    pub fn stats(&self) -> Vec<SourceStats> {
        let mut all: Vec<SourceStats> = self
            .sources()
            .values()
            .map(|entry| {
                let inner = entry.stats.lock();
                SourceStats {
                    name: entry.name.clone(),
                    requests: inner.0.clone(),
                    expiry: inner.1,
                }
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}
