//! A token kept fresh in a file by something else (a sidecar): read again whenever the file's
//! modification time or size changes, on a blocking thread with the bounded reader.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::registry::Stats;
use crate::token::{AccessToken, TokenError, TokenFuture, TokenSource};

/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

type Stamp = (Option<SystemTime>, u64);

pub(crate) struct TokenFile {
    path: PathBuf,
    stats: Arc<Stats>,
    cached: Mutex<Option<(Stamp, AccessToken)>>,
}

impl TokenFile {
    pub fn new(path: PathBuf, stats: Arc<Stats>) -> Self {
        TokenFile {
            path,
            stats,
            cached: Mutex::new(None),
        }
    }

    fn cached(&self) -> MutexGuard<'_, Option<(Stamp, AccessToken)>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn get(&self) -> Result<AccessToken, TokenError> {
        let path = self.path.clone();
        let stamp = tokio::task::spawn_blocking(move || {
            std::fs::metadata(&path).map(|m| (m.modified().ok(), m.len()))
        })
        .await
        .map_err(|e| TokenError::new(format!("token file: {e}")))?
        .map_err(|e| self.error(&e.to_string()))?;
        if let Some((seen, token)) = &*self.cached()
            && *seen == stamp
        {
            return Ok(token.clone());
        }
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || crate::files::read(&path, MAX_TOKEN_FILE))
            .await
            .map_err(|e| TokenError::new(format!("token file: {e}")))?;
        let token = read
            .map_err(|e| self.error(&e.to_string()))
            .and_then(|bytes| {
                let text = String::from_utf8(bytes).map_err(|_| self.error("not UTF-8"))?;
                let token = text.trim();
                if token.is_empty() || token.contains(char::is_whitespace) {
                    return Err(self.error("does not hold one token"));
                }
                Ok(AccessToken::new(token))
            })?;
        self.stats.record("success", None);
        *self.cached() = Some((stamp, token.clone()));
        Ok(token)
    }

    fn error(&self, why: &str) -> TokenError {
        self.stats.record("error", None);
        TokenError::new(format!("token file {}: {why}", self.path.display()))
    }
}

impl TokenSource for TokenFile {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.get())
    }

    /// Forgets `token`, so that the file is read again even if it looks unchanged.
    fn rejected(&self, token: &AccessToken) {
        let mut cached = self.cached();
        if cached.as_ref().is_some_and(|(_, held)| held == token) {
            *cached = None;
        }
    }
}
