//! Where OAuth2 access tokens come from: a token endpoint (the `client_credentials` and
//! `refresh_token` grants) or a file kept fresh by something else, and the [`Tokens`] registry
//! that hands out one shared source per distinct [`Settings`].
//!
//! One source serves every account with the same settings, so 500 mailboxes of one tenant cost
//! one token request per token lifetime. A source caches its token until shortly before it
//! expires, lets concurrent callers wait for a single request, and never asks the endpoint more
//! than once per floor interval, backing off when it fails (see [`Policy`]).

mod cache;
mod endpoint;
mod file;
mod registry;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use cache::Policy;
pub use registry::{SourceStats, Tokens};

/// The `result` values of a token request, as counted in [`SourceStats::requests`].
pub const RESULTS: [&str; 4] = ["success", "error", "unreachable", "malformed"];

/// A client secret or a refresh token. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The token endpoint and the client that asks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// An `https` URL.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// Space-separated scopes, sent as they are; none when `None`.
    pub scope: Option<String>,
}

/// How a source gets its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grant {
    ClientCredentials(Endpoint),
    /// `from` names where the refresh token was read (a file path or `env:NAME`): the
    /// non-secret part of the source's name.
    RefreshToken {
        endpoint: Endpoint,
        refresh_token: Secret,
        from: String,
    },
    /// A token kept fresh in this file by something else; re-read when it changes.
    TokenFile(PathBuf),
}

/// A token source's validated settings: the [`Tokens`] registry's key, and what a reload
/// compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    pub grant: Grant,
    /// An extra CA certificate file (PEM) trusted for the token endpoint.
    pub ca_file: Option<PathBuf>,
    /// The whole token request, connection included.
    pub timeout: Duration,
}

/// The token request timeout unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Settings {
    /// The source's stable, non-secret name (the `source` label of its metrics): the token
    /// endpoint's host and the client id, with where the refresh token comes from for the
    /// `refresh_token` grant; the path for a token file.
    pub fn name(&self) -> String {
        match &self.grant {
            Grant::ClientCredentials(endpoint) => {
                format!("{}/{}", host(&endpoint.token_url), endpoint.client_id)
            }
            Grant::RefreshToken { endpoint, from, .. } => format!(
                "{}/{} ({from})",
                host(&endpoint.token_url),
                endpoint.client_id
            ),
            Grant::TokenFile(path) => path.display().to_string(),
        }
    }
}

/// The host (and port) of `url`, or the URL itself when it has none.
fn host(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => url.to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// `text` cut to at most `max` characters, marked when cut.
fn cut(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests;
