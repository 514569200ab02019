//! OAuth2 access tokens as the probe sees them: a secret value, a source to ask for one, and
//! why none could be had.
//!
//! The probe only logs in with a token ([`TokenSource::token`]) and says when the server
//! refused it ([`TokenSource::rejected`]); where tokens come from (a token endpoint, a file
//! kept fresh by something else) and how long they are cached is the source's business. The
//! configuration fills [`crate::probe::Target::oauth2`] with an [`OAuth2Login`] per account.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;

/// An OAuth2 access token. `Debug` and `Display` print `***`; the value is reached only
/// through [`AccessToken::expose`], which the SASL builders call and nothing else should.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(value: impl Into<String>) -> Self {
        AccessToken(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why no token could be had: a short text for people (the provider's error code, "timed
/// out", ...). A source builds it so that it never holds a secret: no client secret, refresh
/// token or access token, and no response body that might carry one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

impl TokenError {
    pub fn new(text: impl Into<String>) -> Self {
        TokenError(text.into())
    }
}

/// What [`TokenSource::token`] returns.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send + 'a>>;

/// Where an account's access tokens come from.
pub trait TokenSource: Send + Sync {
    /// A token to log in with now: a cached one while it is fresh, else a new one.
    fn token(&self) -> TokenFuture<'_>;

    /// The server refused `token`: forget it, so that the next [`TokenSource::token`] fetches
    /// a fresh one instead of handing it out again.
    fn rejected(&self, token: &AccessToken);
}

/// An account's OAuth2 login: its token source and a stable name for it. Two logins are the
/// same when their ids are (a reload compares targets: an unchanged source keeps its state).
#[derive(Clone)]
pub struct OAuth2Login {
    pub id: String,
    pub source: Arc<dyn TokenSource>,
}

impl OAuth2Login {
    pub fn new(id: impl Into<String>, source: Arc<dyn TokenSource>) -> Self {
        OAuth2Login {
            id: id.into(),
            source,
        }
    }
}

impl fmt::Debug for OAuth2Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Login").field("id", &self.id).finish()
    }
}

impl PartialEq for OAuth2Login {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for OAuth2Login {}

impl Hash for OAuth2Login {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

/// A source that always hands out the same token, for unit tests elsewhere.
#[cfg(test)]
pub(crate) struct Fixed;

#[cfg(test)]
impl TokenSource for Fixed {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async { Ok(AccessToken::new("ya29.secret")) })
    }

    fn rejected(&self, _: &AccessToken) {}
}

#[cfg(test)]
impl OAuth2Login {
    /// A login named `id` with a [`Fixed`] token.
    pub(crate) fn for_test(id: &str) -> OAuth2Login {
        OAuth2Login::new(id, Arc::new(Fixed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let t = AccessToken::new("ya29.secret");
        assert_eq!(format!("{t}"), "***");
        assert_eq!(format!("{t:?}"), "***");
        assert_eq!(format!("{:?}", Some(&t)), "Some(***)");
        assert_eq!(t.expose(), "ya29.secret");
    }

    #[tokio::test]
    async fn a_login_is_its_id() {
        let a = OAuth2Login::new("m365", Arc::new(Fixed));
        let b = OAuth2Login::new("m365", Arc::new(Fixed));
        let c = OAuth2Login::new("google", Arc::new(Fixed));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let shown = format!("{a:?}");
        assert!(
            shown.contains("m365") && !shown.contains("secret"),
            "{shown}"
        );
        assert_eq!(a.source.token().await.unwrap().expose(), "ya29.secret");
    }
}
