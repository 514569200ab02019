//! The OAuth2 side of a probe: a token before any connection, then one login with the
//! strongest OAuth2 mechanism the server offers (OAUTHBEARER, then XOAUTH2), never a password;
//! a refused token is handed back to its source and the login tried once more with a fresh
//! one, on a fresh connection.

use crate::proto::sasl::{self, OAuthError};
use crate::token::{AccessToken, OAuth2Login};
use crate::verdict::{AuthMode, Method, OAUTH2_METHODS, Phase, Protocol};

use super::{ProbeError, Session, Target};

/// Logs in to the account of `s` with tokens from `login`.
pub(crate) async fn login(s: &mut Session<'_>, login: &OAuth2Login) -> Result<Method, ProbeError> {
    let token = fetch(s, login).await?;
    let first = super::walk(s).await;
    let Err(ProbeError::TokenRejected(detail)) = first else {
        return first;
    };
    login.source.rejected(&token);
    s.note(&format!(
        "the server refused the token ({detail}); fetching a fresh one and trying once more"
    ));
    let fresh = fetch(s, login).await?;
    let second = super::walk(s).await;
    if matches!(second, Err(ProbeError::TokenRejected(_))) {
        login.source.rejected(&fresh);
    }
    second
}

/// A token from `login`, under the probe's deadline, registered as a secret with every form
/// the probe may send (both initial responses) before any connection is made.
async fn fetch(s: &mut Session<'_>, login: &OAuth2Login) -> Result<AccessToken, ProbeError> {
    let start = tokio::time::Instant::now();
    let got = tokio::time::timeout_at(s.deadline, login.source.token()).await;
    s.phases.add(Phase::Auth, start.elapsed());
    let token = match got {
        Ok(Ok(token)) => token,
        Ok(Err(e)) => {
            return Err(ProbeError::TokenUnavailable(format!(
                "no OAuth2 token from {}: {e}; no login was tried",
                login.id
            )));
        }
        Err(_) => {
            return Err(ProbeError::TokenUnavailable(format!(
                "no OAuth2 token from {} within the probe timeout; no login was tried",
                login.id
            )));
        }
    };
    s.transcript.add_secret(token.expose());
    if !is_bearer_token(token.expose()) {
        return Err(ProbeError::TokenUnavailable(format!(
            "the token from {} is not a bearer token (empty, or with characters outside \
             RFC 6750's b64token); no login was tried",
            login.id
        )));
    }
    for m in OAUTH2_METHODS {
        s.transcript
            .add_secret(&initial_response(s.target, m, &token));
    }
    s.note(&format!("got an OAuth2 token from {}", login.id));
    s.token = Some(token.clone());
    Ok(token)
}

fn token_of<'s>(s: &'s Session<'_>) -> Result<&'s AccessToken, ProbeError> {
    s.token
        .as_ref()
        .ok_or_else(|| ProbeError::TokenUnavailable("no OAuth2 token".into()))
}

/// RFC 6750 section 2.1 b64token: what may follow `Bearer ` (and what keeps the SASL message's
/// %x01 separators and the command line intact).
fn is_bearer_token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The SASL initial response of `m` (an OAuth2 method) for `target` with `token`.
pub(crate) fn initial_response(target: &Target, m: Method, token: &AccessToken) -> String {
    match m {
        Method::Oauthbearer => {
            sasl::oauthbearer_response(&target.username, &target.host, target.port, token.expose())
        }
        _ => sasl::xoauth2_response(&target.username, token.expose()),
    }
}

/// The initial response for `m` with the probe's token (registered as secret when the token
/// was fetched).
pub(crate) fn response_for(s: &Session<'_>, m: Method) -> Result<String, ProbeError> {
    Ok(initial_response(s.target, m, token_of(s)?))
}

/// The one OAuth2 rung for an account: the pinned mechanism (POP3 `auth_mode: XOAUTH2` or
/// `OAUTHBEARER`, tried even if not advertised, like every pinned mode), else the strongest
/// the server advertises. A refused token is refused whatever the mechanism, so there is no
/// second rung.
pub(crate) fn plan(
    target: &Target,
    offered: impl Fn(Method) -> bool,
) -> Result<Vec<Method>, ProbeError> {
    if target.protocol == Protocol::Pop3 {
        match target.auth_mode {
            AuthMode::Xoauth2 => return Ok(vec![Method::Xoauth2]),
            AuthMode::Oauthbearer => return Ok(vec![Method::Oauthbearer]),
            AuthMode::Best => {}
            other => {
                return Err(ProbeError::MechanismUnavailable(format!(
                    "auth_mode {other} is a password mode, and this account logs in with \
                     OAuth2: set auth_mode: BEST, XOAUTH2 or OAUTHBEARER"
                )));
            }
        }
    }
    match OAUTH2_METHODS.into_iter().find(|&m| offered(m)) {
        Some(m) => Ok(vec![m]),
        None => Err(ProbeError::MechanismUnavailable(
            "the account logs in with OAuth2, and the server offers neither OAUTHBEARER nor \
             XOAUTH2; no password was tried"
                .into(),
        )),
    }
}

/// What to send in answer to the server's error challenge so that it ends the exchange:
/// `AQ==` (a lone %x01, RFC 7628) for OAUTHBEARER, an empty line for XOAUTH2.
pub(crate) fn abort_line(m: Method) -> &'static str {
    match m {
        Method::Oauthbearer => sasl::OAUTHBEARER_ABORT,
        _ => "",
    }
}

/// A note for the transcript about the server's error challenge, and the text the rejection
/// detail gains from it.
pub(crate) fn challenge_said(challenge: &str) -> String {
    match sasl::parse_oauth_error(challenge)
        .as_ref()
        .and_then(OAuthError::summary)
    {
        Some(summary) => format!("the server's OAuth2 error: {summary}"),
        None => "the server's OAuth2 error challenge could not be read".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Reason;

    fn target(protocol: Protocol, auth_mode: AuthMode) -> Target {
        let mut t = crate::config::Account::for_test("g", "u", protocol).target;
        t.auth_mode = auth_mode;
        t
    }

    #[test]
    fn the_strongest_offered_mechanism_or_the_pinned_one() {
        let imap = target(Protocol::Imap, AuthMode::Best);
        assert_eq!(plan(&imap, |_| true).unwrap(), vec![Method::Oauthbearer]);
        assert_eq!(
            plan(&imap, |m| m == Method::Xoauth2).unwrap(),
            vec![Method::Xoauth2]
        );
        assert_eq!(
            plan(&imap, |m| !m.is_oauth2()).unwrap_err().reason(),
            Reason::MechanismUnavailable
        );
        let pinned = target(Protocol::Pop3, AuthMode::Xoauth2);
        assert_eq!(plan(&pinned, |_| false).unwrap(), vec![Method::Xoauth2]);
        let password = target(Protocol::Pop3, AuthMode::Pass);
        assert_eq!(
            plan(&password, |_| true).unwrap_err().reason(),
            Reason::MechanismUnavailable
        );
    }

    #[test]
    fn bearer_tokens() {
        assert!(is_bearer_token("ya29.a0Af-_~+/x=="));
        for bad in ["", "==", "tok en", "tok\x01en", "token\n", "tøken"] {
            assert!(!is_bearer_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_error_challenge_is_summarised() {
        let json = sasl::encode(br#"{"status":"invalid_token","scope":"s"}"#);
        assert_eq!(
            challenge_said(&json),
            "the server's OAuth2 error: status=invalid_token scope=s"
        );
        assert!(challenge_said("not base64!").contains("could not be read"));
        assert_eq!(abort_line(Method::Oauthbearer), "AQ==");
        assert_eq!(abort_line(Method::Xoauth2), "");
    }
}
