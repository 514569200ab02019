//! A token cache in front of a fetch: one request for all concurrent callers, a token kept
//! until shortly before it expires, and at most one request per floor interval, with
//! exponential backoff while requests fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::registry::Stats;
use crate::token::{AccessToken, TokenError, TokenFuture, TokenSource};

/// How a source caches tokens and paces its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The least time between two token requests: after a failure (the first backoff step),
    /// and before a token that the server refused is dropped.
    pub floor: Duration,
    /// The longest backoff after repeated failures.
    pub max_backoff: Duration,
    /// A token is replaced this long before it expires, or after nine tenths of its lifetime
    /// when that comes first.
    pub margin: Duration,
    /// How long a token without `expires_in` is used.
    pub default_lifetime: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            floor: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            margin: Duration::from_secs(60),
            default_lifetime: Duration::from_secs(300),
        }
    }
}

/// What a fetch brings back.
pub(crate) struct Fetched {
    pub token: AccessToken,
    pub expires_in: Option<Duration>,
}

/// A failed fetch: the text for people and the `result` label of the request counter.
pub(crate) struct FetchError {
    pub result: &'static str,
    pub error: TokenError,
}

pub(crate) type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>>;

/// One token request.
pub(crate) trait Fetch: Send + Sync + 'static {
    fn fetch(&self) -> FetchFuture<'_>;
}

struct Held {
    token: AccessToken,
    fetched_at: Instant,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    token: Option<Held>,
    /// The last failure and when the next request may be sent.
    failure: Option<(TokenError, Instant)>,
    failures: u32,
}

pub(crate) struct Cached<F> {
    fetch: F,
    policy: Policy,
    stats: Arc<Stats>,
    state: Mutex<State>,
    /// Held while a request is under way: the single flight.
    flight: tokio::sync::Mutex<()>,
}

impl<F: Fetch> Cached<F> {
    pub fn new(fetch: F, policy: Policy, stats: Arc<Stats>) -> Self {
        Cached {
            fetch,
            policy,
            stats,
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer without a request: a fresh token, or the last error while backing off
    /// (with a token that has not expired yet still handed out).
    fn ready(&self) -> Option<Result<AccessToken, TokenError>> {
        let now = Instant::now();
        let state = self.state();
        if let Some(held) = &state.token
            && now < held.refresh_at
        {
            return Some(Ok(held.token.clone()));
        }
        if let Some((error, retry_at)) = &state.failure
            && now < *retry_at
        {
            if let Some(held) = &state.token
                && now < held.expires_at
            {
                return Some(Ok(held.token.clone()));
            }
            return Some(Err(error.clone()));
        }
        None
    }

    async fn get(&self) -> Result<AccessToken, TokenError> {
        if let Some(ready) = self.ready() {
            return ready;
        }
        let _flight = self.flight.lock().await;
        if let Some(ready) = self.ready() {
            return ready;
        }
        let result = self.fetch.fetch().await;
        let now = Instant::now();
        let mut state = self.state();
        match result {
            Ok(fetched) => {
                let lifetime = fetched.expires_in.unwrap_or(self.policy.default_lifetime);
                let margin = self.policy.margin.min(lifetime / 10);
                state.token = Some(Held {
                    token: fetched.token.clone(),
                    fetched_at: now,
                    refresh_at: now + (lifetime - margin),
                    expires_at: now + lifetime,
                });
                state.failure = None;
                state.failures = 0;
                self.stats
                    .record("success", Some(SystemTime::now() + lifetime));
                Ok(fetched.token)
            }
            Err(failed) => {
                state.failures = state.failures.saturating_add(1);
                let steps = state.failures.saturating_sub(1).min(16);
                let delay = self
                    .policy
                    .floor
                    .saturating_mul(1 << steps)
                    .min(self.policy.max_backoff)
                    .max(self.policy.floor);
                state.failure = Some((failed.error.clone(), now + delay));
                let expiry = state
                    .token
                    .as_ref()
                    .filter(|held| now < held.expires_at)
                    .map(|held| SystemTime::now() + (held.expires_at - now));
                self.stats.record(failed.result, expiry);
                match &state.token {
                    Some(held) if now < held.expires_at => Ok(held.token.clone()),
                    _ => Err(failed.error),
                }
            }
        }
    }
}

impl<F: Fetch> TokenSource for Cached<F> {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.get())
    }

    /// Drops `token` if it is still the cached one and was fetched at least a floor interval
    /// ago: a server that refuses every token then costs one request per floor, not one per
    /// probe.
    fn rejected(&self, token: &AccessToken) {
        let now = Instant::now();
        let mut state = self.state();
        if state
            .token
            .as_ref()
            .is_some_and(|held| held.token == *token && now >= held.fetched_at + self.policy.floor)
        {
            state.token = None;
            self.stats.set_expiry(None);
        }
    }
}
