//! OAuth2 token sources against the local OAuth2 provider over HTTPS with its test CA: both
//! grants, one request for many callers, expiry, a refused token, and every failure mode of
//! the token endpoint (with the provider's error in the text, no secret, and the floor kept).

mod support;

use std::sync::Arc;
use std::time::Duration;

use mailbox_exporter::oauth2::{Endpoint, Grant, Policy, Secret, Settings, Tokens};
use mailbox_exporter::token::{OAuth2Login, TokenError};
use support::OAuth2Provider;
use support::oauth2_provider::{CLIENT_ID, CLIENT_SECRET, Endpoint as Path, Fault, REFRESH_TOKEN};

fn endpoint(provider: &OAuth2Provider, secret: &str) -> Endpoint {
    Endpoint {
        token_url: provider.token_url(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(Secret::new(secret)),
        scope: Some("mail".into()),
    }
}

fn client_credentials(provider: &OAuth2Provider) -> Settings {
    settings(
        provider,
        Grant::ClientCredentials(endpoint(provider, CLIENT_SECRET)),
    )
}

fn refresh_token(provider: &OAuth2Provider, token: &str) -> Settings {
    settings(
        provider,
        Grant::RefreshToken {
            endpoint: endpoint(provider, CLIENT_SECRET),
            refresh_token: Secret::new(token),
            from: "env:REFRESH".into(),
        },
    )
}

fn settings(provider: &OAuth2Provider, grant: Grant) -> Settings {
    Settings {
        grant,
        ca_file: Some(provider.ca_file().to_path_buf()),
        timeout: Duration::from_secs(5),
    }
}

fn login(tokens: &Tokens, settings: &Settings) -> OAuth2Login {
    tokens.login(settings).expect("a usable source")
}

/// The error, after checking that it holds no secret.
fn clean(error: TokenError) -> String {
    let text = error.to_string();
    for secret in [CLIENT_SECRET, REFRESH_TOKEN, "cs~K9"] {
        assert!(!text.contains(secret), "a secret in {text:?}");
    }
    text
}

#[tokio::test]
async fn both_grants_get_a_token_the_provider_knows() {
    let provider = OAuth2Provider::start();
    let tokens = Tokens::default();
    let by_client = login(&tokens, &client_credentials(&provider));
    let by_refresh = login(&tokens, &refresh_token(&provider, REFRESH_TOKEN));
    assert_ne!(by_client, by_refresh);

    let first = by_client.source.token().await.expect("client_credentials");
    let second = by_refresh.source.token().await.expect("refresh_token");
    assert!(provider.is_active(first.expose()));
    assert!(provider.is_active(second.expose()));
    let counts = provider.counts();
    assert_eq!(counts.grant("client_credentials"), 1, "{counts:?}");
    assert_eq!(counts.grant("refresh_token"), 1, "{counts:?}");

    // Cached: no second request.
    assert_eq!(by_client.source.token().await.unwrap(), first);
    assert_eq!(provider.counts().token, 2);

    let stats = tokens.stats();
    let names: Vec<_> = stats.iter().map(|s| s.name.as_str()).collect();
    let host = format!("127.0.0.1:{}", provider.addr().port());
    assert_eq!(
        names,
        [
            format!("{host}/{CLIENT_ID}"),
            format!("{host}/{CLIENT_ID} (env:REFRESH)")
        ]
    );
    for source in &stats {
        assert_eq!(source.requests.get("success"), Some(&1), "{source:?}");
        assert!(source.expiry.is_some(), "{source:?}");
    }
    let shown = format!(
        "{:?} {:?}",
        refresh_token(&provider, REFRESH_TOKEN),
        by_refresh
    );
    assert!(
        !shown.contains(CLIENT_SECRET) && !shown.contains(REFRESH_TOKEN),
        "{shown}"
    );
}

#[tokio::test]
async fn one_request_for_200_concurrent_callers_of_equal_settings() {
    let provider = OAuth2Provider::start();
    let tokens = Arc::new(Tokens::default());
    let mut callers = Vec::new();
    for _ in 0..200 {
        let tokens = tokens.clone();
        let settings = client_credentials(&provider);
        callers.push(tokio::spawn(async move {
            let login = tokens.login(&settings).expect("a usable source");
            login.source.token().await
        }));
    }
    let mut seen = Vec::new();
    for caller in callers {
        seen.push(caller.await.unwrap().expect("a token"));
    }
    assert!(seen.iter().all(|t| *t == seen[0]));
    assert_eq!(provider.counts().token, 1, "{:?}", provider.counts());
    assert_eq!(tokens.stats().len(), 1);
}

#[tokio::test]
async fn a_token_is_replaced_before_it_expires() {
    let provider = OAuth2Provider::start();
    provider.set_lifetime(Duration::from_secs(4));
    let tokens = Tokens::default();
    let source = login(&tokens, &client_credentials(&provider)).source;
    let first = source.token().await.unwrap();
    // Replaced after nine tenths of its lifetime: poll until the source hands out another.
    let second = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let token = source.token().await.unwrap();
            if token != first {
                return token;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a new token before long");
    assert!(
        provider.is_active(first.expose()),
        "the old token was still valid when replaced"
    );
    assert!(provider.is_active(second.expose()));
    assert_eq!(provider.counts().token, 2);
}

#[tokio::test]
async fn a_refused_token_is_dropped_once_and_only_if_still_cached() {
    let provider = OAuth2Provider::start();
    let policy = Policy {
        floor: Duration::ZERO,
        ..Policy::default()
    };
    let tokens = Tokens::new(policy);
    let source = login(&tokens, &client_credentials(&provider)).source;
    let first = source.token().await.unwrap();
    source.rejected(&first);
    let second = source.token().await.unwrap();
    assert_ne!(first, second);
    // A late report about the old token does not drop the new one.
    source.rejected(&first);
    assert_eq!(source.token().await.unwrap(), second);
    assert_eq!(provider.counts().token, 2);
}

#[tokio::test]
async fn a_token_refused_within_the_floor_is_kept() {
    let provider = OAuth2Provider::start();
    let tokens = Tokens::default();
    let source = login(&tokens, &client_credentials(&provider)).source;
    let first = source.token().await.unwrap();
    source.rejected(&first);
    assert_eq!(source.token().await.unwrap(), first);
    assert_eq!(provider.counts().token, 1);
}

/// `settings` fail with a text that contains `expected`; a second call within the floor
/// fails alike at once, without a request.
async fn fails(provider: &OAuth2Provider, settings: Settings, expected: &str, result: &str) {
    let tokens = Tokens::default();
    let source = login(&tokens, &settings).source;
    let text = clean(source.token().await.expect_err("no token"));
    assert!(text.contains(expected), "{text:?} lacks {expected:?}");
    let before = provider.counts().token;
    assert_eq!(before, 1, "{:?}", provider.counts());
    assert_eq!(clean(source.token().await.unwrap_err()), text);
    assert_eq!(
        provider.counts().token,
        before,
        "no request within the floor"
    );
    let stats = tokens.stats();
    assert_eq!(stats[0].requests.get(result), Some(&1), "{stats:?}");
    assert_eq!(stats[0].expiry, None);
}

#[tokio::test]
async fn invalid_client_is_reported_with_the_status() {
    let provider = OAuth2Provider::start();
    let settings = settings(
        &provider,
        Grant::ClientCredentials(endpoint(&provider, "wrong secret")),
    );
    fails(&provider, settings, "HTTP 401: invalid_client", "error").await;
}

#[tokio::test]
async fn invalid_grant_is_reported() {
    let provider = OAuth2Provider::start();
    provider.revoke_refresh_token(REFRESH_TOKEN);
    let settings = refresh_token(&provider, REFRESH_TOKEN);
    fails(&provider, settings, "HTTP 400: invalid_grant", "error").await;
}

#[tokio::test]
async fn an_unavailable_endpoint_is_reported() {
    let provider = OAuth2Provider::start();
    provider.set_fault(Path::Token, Some(Fault::Unavailable));
    let settings = client_credentials(&provider);
    fails(&provider, settings, "HTTP 503", "error").await;
}

#[tokio::test]
async fn a_hangup_is_reported() {
    let provider = OAuth2Provider::start();
    provider.set_fault(Path::Token, Some(Fault::Hangup));
    let settings = client_credentials(&provider);
    fails(&provider, settings, "request failed", "unreachable").await;
}

#[tokio::test]
async fn malformed_json_is_reported() {
    let provider = OAuth2Provider::start();
    provider.set_fault(Path::Token, Some(Fault::MalformedJson));
    let settings = client_credentials(&provider);
    fails(&provider, settings, "malformed token answer", "malformed").await;
}

#[tokio::test]
async fn a_slow_endpoint_times_out() {
    let provider = OAuth2Provider::start();
    provider.set_fault(Path::Token, Some(Fault::Slow(Duration::from_secs(60))));
    let mut settings = client_credentials(&provider);
    settings.timeout = Duration::from_millis(500);
    fails(&provider, settings, "timed out after 500ms", "unreachable").await;
}

#[tokio::test]
async fn an_untrusted_endpoint_is_refused() {
    let provider = OAuth2Provider::start();
    let mut settings = client_credentials(&provider);
    settings.ca_file = None;
    let tokens = Tokens::default();
    let text = clean(login(&tokens, &settings).source.token().await.unwrap_err());
    assert!(
        text.contains("cannot connect") || text.contains("request failed"),
        "{text}"
    );
    assert_eq!(
        provider.counts().token,
        0,
        "no request without verified TLS"
    );
}

#[tokio::test]
async fn a_plain_http_token_url_is_refused() {
    let provider = OAuth2Provider::start();
    let mut settings = client_credentials(&provider);
    if let Grant::ClientCredentials(endpoint) = &mut settings.grant {
        endpoint.token_url = endpoint.token_url.replace("https:", "http:");
    }
    let error = Tokens::default().login(&settings).expect_err("refused");
    assert!(error.contains("https"), "{error}");
}

#[tokio::test]
async fn a_token_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "tok-1\n").unwrap();
    let tokens = Tokens::default();
    let settings = Settings {
        grant: Grant::TokenFile(path.clone()),
        ca_file: None,
        timeout: Duration::from_secs(5),
    };
    let source = login(&tokens, &settings).source;
    assert_eq!(source.token().await.unwrap().expose(), "tok-1");
    assert_eq!(source.token().await.unwrap().expose(), "tok-1");
    // A different size is a change even within the file system's time granularity.
    std::fs::write(&path, "tok-22\n").unwrap();
    assert_eq!(source.token().await.unwrap().expose(), "tok-22");
    assert_eq!(tokens.stats()[0].requests.get("success"), Some(&2));
    std::fs::write(&path, "").unwrap();
    let text = source.token().await.unwrap_err().to_string();
    assert!(text.contains("does not hold one token"), "{text}");
    std::fs::remove_file(&path).unwrap();
    assert!(source.token().await.is_err());
}
