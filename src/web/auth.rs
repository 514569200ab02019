//! Basic auth for the web side: the bcrypt hashes of the web config's `basic_auth_users`,
//! checked at most one at a time and remembered once they succeed, so that a flood of wrong
//! passwords costs the attacker's requests their time and never a scrape's.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ring::hmac;
use ring::rand::SystemRandom;

/// bcrypt reads at most this many bytes of a password and silently ignores the rest, so a
/// longer password is refused outright rather than accepted on its first 72 bytes.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// What `hash-password` uses unless told otherwise: about 80 ms per check on a current core,
/// paid once per user and password thanks to the cache.
pub const DEFAULT_HASH_COST: u32 = 10;
/// Successful checks remembered: far more than the scrapers and browsers of one exporter, and
/// a bounded memory cost (32 bytes each).
const CACHE_SIZE: usize = 256;

/// Users and their bcrypt hashes, with the cache of successful checks.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Checked for unknown users, so that a wrong name costs as long as a wrong password and
    /// response times do not reveal which users exist.
    decoy: String,
    /// Keys the cache: an HMAC of user and password under a key drawn when the web config is
    /// loaded, so the cache never holds a password, nor anything that can be checked against
    /// a guess without that key.
    cache_key: hmac::Key,
    allowed: Mutex<Cache>,
    /// One bcrypt at a time: a flood of wrong passwords then queues behind itself and takes
    /// one core at most, while remembered credentials skip the queue.
    pub(super) turn: tokio::sync::Mutex<()>,
    pub(super) runs: AtomicUsize,
    in_flight: AtomicUsize,
    pub(super) max_in_flight: AtomicUsize,
}

impl BasicAuth {
    /// Checks every hash and draws the cache key; the decoy hash costs one bcrypt.
    pub fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, String> {
        let mut cost = None;
        for (user, hash) in &users {
            let parts = bcrypt::HashParts::from_str(hash)
                .map_err(|_| format!("basic_auth_users: {user:?}: not a bcrypt hash"))?;
            cost.get_or_insert(parts.get_cost());
        }
        let cost = cost.unwrap_or(DEFAULT_HASH_COST);
        let decoy = bcrypt::hash("decoy", cost).map_err(|e| format!("bcrypt: {e}"))?;
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| "no randomness for the basic auth cache key".to_string())?;
        Ok(BasicAuth {
            users,
            decoy,
            cache_key,
            allowed: Mutex::new(Cache::default()),
            turn: tokio::sync::Mutex::new(()),
            runs: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    /// Whether `other` has exactly the same users and hashes: a reload that changed nothing
    /// here keeps the previous instance, with its remembered checks.
    pub fn same_users(&self, other: &BasicAuth) -> bool {
        self.users == other.users
    }

    /// The configured user names (hashes are secrets too: they can be attacked offline).
    pub fn user_names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Whether an `Authorization` header value names a user with its password.
    pub async fn allows(self: &Arc<Self>, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let tag = self.tag(&user, &password);
        if self.is_remembered(&tag) {
            return true;
        }
        let _turn = self.turn.lock().await;
        // The same credentials may have been checked while this request waited.
        if self.is_remembered(&tag) {
            return true;
        }
        let auth = Arc::clone(self);
        let allowed = tokio::task::spawn_blocking(move || auth.verify(&user, &password))
            .await
            .unwrap_or(false);
        if allowed {
            self.allowed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tag);
        }
        allowed
    }

    fn tag(&self, user: &str, password: &str) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.cache_key);
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user.as_bytes());
        context.update(password.as_bytes());
        let mut tag = [0; 32];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }

    fn is_remembered(&self, tag: &[u8; 32]) -> bool {
        self.allowed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(tag)
    }

    /// bcrypt is slow on purpose: this blocks for tens of milliseconds.
    fn verify(&self, user: &str, password: &str) -> bool {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let allowed = match self.users.get(user) {
            Some(hash) => bcrypt::verify(password.as_bytes(), hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password.as_bytes(), &self.decoy);
                false
            }
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        allowed
    }
}

/// A bounded set of tags; the oldest goes first.
#[derive(Default)]
struct Cache {
    tags: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Cache {
    fn contains(&self, tag: &[u8; 32]) -> bool {
        self.tags.contains(tag)
    }

    fn insert(&mut self, tag: [u8; 32]) {
        if !self.tags.insert(tag) {
            return;
        }
        self.order.push_back(tag);
        while self.order.len() > CACHE_SIZE {
            if let Some(old) = self.order.pop_front() {
                self.tags.remove(&old);
            }
        }
    }
}

/// `Basic base64(user:password)` into its two parts.
pub(super) fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Why `hash-password` made no hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("the password is empty")]
    Empty,
    #[error(
        "the password is longer than {MAX_PASSWORD_BYTES} bytes: bcrypt would ignore the rest, \
         so choose a shorter one"
    )]
    TooLong,
    #[error("the password is not UTF-8 text")]
    NotUtf8,
    #[error("cannot hash: {0}")]
    Bcrypt(String),
}

/// A bcrypt hash of `password` for `basic_auth_users`, refusing what bcrypt would truncate.
pub fn hash_password(password: &[u8], cost: u32) -> Result<String, HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(HashError::TooLong);
    }
    // Browsers and scrapers send UTF-8, and the server only decodes UTF-8 credentials.
    if std::str::from_utf8(password).is_err() {
        return Err(HashError::NotUtf8);
    }
    bcrypt::hash(password, cost).map_err(|e| HashError::Bcrypt(e.to_string()))
}

#[cfg(test)]
mod tests;
