//! Regression tests of the OAuth2 peer: the local provider's token and introspection
//! endpoints over HTTPS, and a real Dovecot whose oauth2 passdb checks tokens against it,
//! driven with raw IMAP and POP3 dialogues (SASL XOAUTH2 and OAUTHBEARER) over TLS.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::OAuth2Provider;
use support::http::Response;
use support::oauth2_provider::{
    CLIENT_ID, CLIENT_SECRET, DEFAULT_SCOPE, Endpoint, Fault, REFRESH_TOKEN, USER,
};

fn json(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", response.text()))
}

/// The access token of a successful token answer, after checking its RFC 6749 5.1 shape.
fn access_token(response: &Response, lifetime: u64) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let body = json(response);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], lifetime);
    body["access_token"]
        .as_str()
        .expect("access_token is a string")
        .to_owned()
}

async fn client_credentials(provider: &OAuth2Provider) -> Response {
    provider
        .post_form(
            Endpoint::Token,
            Some((CLIENT_ID, CLIENT_SECRET)),
            &[("grant_type", "client_credentials"), ("scope", "mail")],
        )
        .await
}

async fn refresh(provider: &OAuth2Provider, refresh_token: &str) -> Response {
    provider
        .post_form(
            Endpoint::Token,
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await
}

async fn introspect(provider: &OAuth2Provider, token: &str) -> Value {
    let response = provider
        .post_form(Endpoint::Introspect, None, &[("token", token)])
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    json(&response)
}

/// The RFC 6749 5.2 `error` of an error answer with `status`.
fn error_code(response: &Response, status: u16) -> String {
    assert_eq!(response.status, status, "{}", response.text());
    json(response)["error"]
        .as_str()
        .expect("error is a string")
        .to_owned()
}

#[tokio::test]
async fn provider_issues_tokens_for_both_grants_and_introspects_them() {
    let provider = OAuth2Provider::start();

    let first = access_token(&client_credentials(&provider).await, 3600);
    let second = access_token(&refresh(&provider, REFRESH_TOKEN).await, 3600);
    assert_ne!(first, second, "every token is new");

    for token in [&first, &second] {
        let answer = introspect(&provider, token).await;
        assert_eq!(answer["active"], true);
        assert_eq!(answer["username"], USER);
        assert_eq!(answer["sub"], USER);
        assert_eq!(answer["scope"], DEFAULT_SCOPE);
        assert!(answer["exp"].as_u64().is_some(), "{answer}");
    }
    assert_eq!(
        introspect(&provider, "at-unknown").await,
        serde_json::json!({"active": false})
    );

    let counts = provider.counts();
    assert_eq!(counts.token, 2);
    assert_eq!(counts.grant("client_credentials"), 1);
    assert_eq!(counts.grant("refresh_token"), 1);
    assert_eq!(counts.issued, 2);
    assert_eq!(counts.introspect, 3);
    assert_eq!((counts.active, counts.inactive), (2, 1));
}

#[tokio::test]
async fn provider_client_secret_in_the_form_works_too() {
    let provider = OAuth2Provider::start();
    let response = provider
        .post_form(
            Endpoint::Token,
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    let token = access_token(&response, 3600);
    assert_eq!(json(&response)["scope"], DEFAULT_SCOPE);
    assert!(provider.is_active(&token));
}

#[tokio::test]
async fn provider_answers_rfc6749_errors() {
    let provider = OAuth2Provider::start();

    let wrong_secret = provider
        .post_form(
            Endpoint::Token,
            Some((CLIENT_ID, "wrong")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(error_code(&wrong_secret, 401), "invalid_client");
    assert_eq!(
        wrong_secret.header("www-authenticate"),
        Some("Basic realm=\"token\"")
    );

    let unknown_refresh = refresh(&provider, "rt-unknown").await;
    assert_eq!(error_code(&unknown_refresh, 400), "invalid_grant");

    provider.revoke_refresh_token(REFRESH_TOKEN);
    let revoked_refresh = refresh(&provider, REFRESH_TOKEN).await;
    assert_eq!(error_code(&revoked_refresh, 400), "invalid_grant");

    let no_grant = provider
        .post_form(Endpoint::Token, Some((CLIENT_ID, CLIENT_SECRET)), &[])
        .await;
    assert_eq!(error_code(&no_grant, 400), "invalid_request");

    let password_grant = provider
        .post_form(
            Endpoint::Token,
            Some((CLIENT_ID, CLIENT_SECRET)),
            &[("grant_type", "password")],
        )
        .await;
    assert_eq!(error_code(&password_grant, 400), "unsupported_grant_type");

    let counts = provider.counts();
    assert_eq!(
        (counts.token, counts.token_errors, counts.issued),
        (5, 5, 0)
    );
    assert_eq!(counts.grant("refresh_token"), 2);
    assert_eq!(counts.grant("(none)"), 1);
}

#[tokio::test]
async fn provider_revoked_and_expired_tokens_are_inactive() {
    let provider = OAuth2Provider::start();
    let revoked = access_token(&client_credentials(&provider).await, 3600);
    let expired = access_token(&client_credentials(&provider).await, 3600);
    provider.revoke(&revoked);
    provider.expire(&expired);
    let minted_expired = provider.issue_token(USER, Duration::ZERO);
    let minted = provider.issue_token(USER, Duration::from_secs(60));
    for token in [&revoked, &expired, &minted_expired] {
        assert_eq!(
            introspect(&provider, token).await["active"],
            false,
            "{token}"
        );
    }
    assert_eq!(introspect(&provider, &minted).await["active"], true);

    provider.set_lifetime(Duration::from_secs(5));
    access_token(&client_credentials(&provider).await, 5);
}

#[tokio::test]
async fn provider_faults_replace_the_answer_until_cleared() {
    let provider = OAuth2Provider::start();

    provider.set_fault(Endpoint::Token, Some(Fault::Unavailable));
    assert_eq!(client_credentials(&provider).await.status, 503);

    provider.set_fault(Endpoint::Token, Some(Fault::MalformedJson));
    let malformed = client_credentials(&provider).await;
    assert_eq!(malformed.status, 200);
    assert!(serde_json::from_slice::<Value>(&malformed.body).is_err());

    provider.set_fault(Endpoint::Token, Some(Fault::Hangup));
    assert_eq!(
        client_credentials(&provider).await.status,
        0,
        "no answer at all"
    );

    // Slow: the answer is held until the delay passes; a client with a shorter timeout gives
    // up while the request is counted.
    provider.set_fault(
        Endpoint::Token,
        Some(Fault::Slow(Duration::from_secs(3600))),
    );
    let gave_up = tokio::time::timeout(Duration::from_millis(300), client_credentials(&provider));
    let (gave_up, counts) = tokio::join!(
        gave_up,
        provider.wait_for("the slow request", |c| c.token == 4)
    );
    assert!(gave_up.is_err(), "the slow answer came early");
    assert_eq!(counts.issued, 0);

    // The introspection endpoint is unaffected, and the token endpoint recovers.
    assert_eq!(introspect(&provider, "at-x").await["active"], false);
    provider.set_fault(Endpoint::Token, None);
    access_token(&client_credentials(&provider).await, 3600);
    assert_eq!(provider.counts().token, 5);
}
