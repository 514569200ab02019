//! OAuth2 token sources against the local OAuth2 provider over HTTPS with its test CA: both
//! grants, one request for many callers, expiry, a refused token, and every failure mode of
//! the token endpoint (with the provider's error in the text, no secret, and the floor kept).
//! Then end to end: accounts made from config keys probe a real Dovecot whose oauth2 passdb
//! introspects the tokens at the same provider.

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

// ---------------------------------------------------------------------------------------------
// End to end: config, token sources, the library probe and a real Dovecot.

use mailbox_exporter::config::{Config, Format};
use mailbox_exporter::metrics::{Exposition, Store};
use mailbox_exporter::probe;
use mailbox_exporter::verdict::{Method, Reason, Verdict};
use support::Dovecot;

macro_rules! peers {
    ($test:literal) => {{
        let provider = OAuth2Provider::start();
        match Dovecot::oauth2_or_skip(&provider, $test) {
            Some(dovecot) => (provider, dovecot),
            None => return,
        }
    }};
}

/// The environment the configs name their secrets in.
fn secrets_env() -> Vec<(String, String)> {
    vec![
        ("CLIENT_SECRET".into(), CLIENT_SECRET.into()),
        ("REFRESH_TOKEN".into(), REFRESH_TOKEN.into()),
    ]
}

/// A config whose `defaults` log in at `dovecot` with tokens from `provider` by
/// client_credentials, with `accounts` (YAML list items, indented by 6) in group `g`.
fn config_text(provider: &OAuth2Provider, dovecot: &Dovecot, accounts: &str) -> String {
    format!(
        "
defaults:
  tls: implicit
  ca_file: {dovecot_ca}
  timeout: 20s
  oauth2:
    grant: client_credentials
    token_url: {token_url}
    client_id: {CLIENT_ID}
    client_secret_env: CLIENT_SECRET
    scope: mail
    ca_file: {provider_ca}
    timeout: 2s
groups:
  - name: g
    accounts:
{accounts}",
        dovecot_ca = dovecot.ca_file().display(),
        token_url = provider.token_url(),
        provider_ca = provider.ca_file().display(),
    )
}

fn account(dovecot: &Dovecot, name: &str, protocol: &str, extra: &str) -> String {
    let port = match protocol {
        "imap" => dovecot.imaps_addr().port(),
        _ => dovecot.pop3s_addr().port(),
    };
    format!(
        "      - name: {name}\n        server: {host}:{port}\n        username: {user}\n        protocol: {protocol}\n{extra}",
        host = dovecot.tls_domain(),
        user = dovecot.user(),
    )
}

/// The config made from `text`, its OAuth2 accounts resolved through `tokens`.
fn config(text: &str, tokens: &Tokens) -> Config {
    let mut config =
        Config::from_str_with_env(text, Format::Yaml, std::path::Path::new(""), secrets_env())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.resolve_oauth2(tokens).expect("resolved");
    config
}

async fn probe_account(config: &Config, name: &str) -> Verdict {
    let account = config.find_account(name).expect("the account");
    let verdict =
        tokio::time::timeout(Duration::from_secs(60), probe::probe(&account.target, None))
            .await
            .expect("the probe hung");
    let dump = format!("{verdict:?}");
    for secret in [CLIENT_SECRET, REFRESH_TOKEN] {
        assert!(!dump.contains(secret), "a secret in {dump}");
    }
    verdict
}

#[tokio::test]
async fn config_made_accounts_log_in_over_imap_and_pop3_with_both_mechanisms() {
    let (provider, dovecot) =
        peers!("config_made_accounts_log_in_over_imap_and_pop3_with_both_mechanisms");
    let refresh = "        oauth2:\n          grant: refresh_token\n          refresh_token_env: REFRESH_TOKEN\n";
    let accounts = [
        account(&dovecot, "imap", "imap", ""),
        account(
            &dovecot,
            "pop3-xoauth2",
            "pop3",
            "        auth_mode: XOAUTH2\n",
        ),
        account(
            &dovecot,
            "pop3-oauthbearer",
            "pop3",
            "        auth_mode: OAUTHBEARER\n",
        ),
        account(&dovecot, "imap-refresh", "imap", refresh),
        account(
            &dovecot,
            "pop3-refresh",
            "pop3",
            &format!("        auth_mode: XOAUTH2\n{refresh}"),
        ),
    ]
    .concat();
    let tokens = Tokens::default();
    let config = config(&config_text(&provider, &dovecot, &accounts), &tokens);
    for (name, method) in [
        // IMAP picks the strongest mechanism Dovecot advertises; POP3 is pinned.
        ("imap", Method::Oauthbearer),
        ("pop3-xoauth2", Method::Xoauth2),
        ("pop3-oauthbearer", Method::Oauthbearer),
        ("imap-refresh", Method::Oauthbearer),
        ("pop3-refresh", Method::Xoauth2),
    ] {
        let verdict = probe_account(&config, name).await;
        assert!(verdict.success, "{name}: {verdict:#?}");
        assert_eq!(verdict.method, Some(method), "{name}");
        assert!(verdict.cert_expiry.is_some(), "{name}: over TLS");
    }
    let counts = provider.counts();
    assert_eq!(
        counts.grant("client_credentials"),
        1,
        "one shared source: {counts:?}"
    );
    assert_eq!(
        counts.grant("refresh_token"),
        1,
        "one shared source: {counts:?}"
    );
    assert_eq!(counts.active, 5, "every login introspected: {counts:?}");
}

/// The product keeps a token that was fetched less than a floor interval ago when a server
/// refuses it (one request per floor at most): the probe reports `token_rejected`. Once the
/// token is older than the floor (here: a zero floor), the probe's one re-fetch brings a fresh
/// token and the same probe logs in.
#[tokio::test]
async fn a_revoked_token_is_rejected_then_replaced() {
    let (provider, dovecot) = peers!("a_revoked_token_is_rejected_then_replaced");
    let accounts = account(&dovecot, "imap", "imap", "");
    let text = config_text(&provider, &dovecot, &accounts);

    // Within the floor: token_rejected, no second token request.
    let tokens = Tokens::default();
    let young = config(&text, &tokens);
    assert!(probe_account(&young, "imap").await.success);
    let first = young
        .find_account("imap")
        .unwrap()
        .target
        .oauth2
        .clone()
        .unwrap();
    provider.revoke(first.source.token().await.unwrap().expose());
    let verdict = probe_account(&young, "imap").await;
    assert_eq!(verdict.reason, Some(Reason::TokenRejected), "{verdict:#?}");
    assert_eq!(provider.counts().token, 1);

    // Past the floor: the rejected token is dropped and the probe's re-fetch logs in.
    let tokens = Tokens::new(Policy {
        floor: Duration::ZERO,
        ..Policy::default()
    });
    let old = config(&text, &tokens);
    assert!(probe_account(&old, "imap").await.success);
    assert_eq!(provider.counts().token, 2);
    let login = old
        .find_account("imap")
        .unwrap()
        .target
        .oauth2
        .clone()
        .unwrap();
    provider.revoke(login.source.token().await.unwrap().expose());
    let verdict = probe_account(&old, "imap").await;
    assert!(verdict.success, "{verdict:#?}");
    assert_eq!(provider.counts().token, 3, "one fresh token");
    assert!(probe_account(&old, "imap").await.success);
    assert_eq!(provider.counts().token, 3, "and it is cached");
}

/// No token: `token_unavailable` with the provider's error, and Dovecot never asked.
async fn unavailable(provider: &OAuth2Provider, dovecot: &Dovecot, oauth2: &str, expected: &str) {
    let accounts = [
        account(dovecot, "imap", "imap", oauth2),
        account(
            dovecot,
            "pop3",
            "pop3",
            &format!("        auth_mode: XOAUTH2\n{oauth2}"),
        ),
    ]
    .concat();
    let tokens = Tokens::default();
    let config = config(&config_text(provider, dovecot, &accounts), &tokens);
    for name in ["imap", "pop3"] {
        let verdict = probe_account(&config, name).await;
        assert_eq!(
            verdict.reason,
            Some(Reason::TokenUnavailable),
            "{name}: {verdict:#?}"
        );
        let detail = verdict.detail.clone().unwrap_or_default();
        assert!(
            detail.contains(expected),
            "{name}: {detail:?} lacks {expected:?}"
        );
        assert!(
            verdict.attempts.is_empty(),
            "{name}: no login: {verdict:#?}"
        );
    }
    let counts = provider.counts();
    assert_eq!(
        counts.token, 1,
        "the floor holds for both accounts: {counts:?}"
    );
    assert_eq!(counts.introspect, 0, "no token reached Dovecot: {counts:?}");
}

#[tokio::test]
async fn no_token_means_token_unavailable_and_no_login() {
    let (provider, dovecot) = peers!("no_token_means_token_unavailable_and_no_login");
    provider.set_fault(Path::Token, Some(Fault::Unavailable));
    unavailable(&provider, &dovecot, "", "HTTP 503").await;
    let (provider, dovecot) = peers!("no_token_means_token_unavailable_and_no_login");
    provider.set_fault(Path::Token, Some(Fault::MalformedJson));
    unavailable(&provider, &dovecot, "", "malformed token answer").await;
    let (provider, dovecot) = peers!("no_token_means_token_unavailable_and_no_login");
    provider.set_fault(Path::Token, Some(Fault::Slow(Duration::from_secs(60))));
    unavailable(&provider, &dovecot, "", "timed out after 2s").await;
    let (provider, dovecot) = peers!("no_token_means_token_unavailable_and_no_login");
    unavailable(
        &provider,
        &dovecot,
        "        oauth2:\n          client_id: nobody\n",
        "invalid_client",
    )
    .await;
    let (provider, dovecot) = peers!("no_token_means_token_unavailable_and_no_login");
    provider.revoke_refresh_token(REFRESH_TOKEN);
    unavailable(
        &provider,
        &dovecot,
        "        oauth2:\n          grant: refresh_token\n          refresh_token_env: REFRESH_TOKEN\n",
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn two_hundred_accounts_share_one_token_request() {
    let (provider, dovecot) = peers!("two_hundred_accounts_share_one_token_request");
    let accounts: String = (0..200)
        .map(|i| {
            let protocol = if i % 2 == 0 { "imap" } else { "pop3" };
            let extra = if i % 2 == 0 {
                ""
            } else {
                "        auth_mode: XOAUTH2\n"
            };
            account(&dovecot, &format!("a{i}"), protocol, extra)
        })
        .collect();
    let tokens = Arc::new(Tokens::default());
    let config = Arc::new(config(
        &config_text(&provider, &dovecot, &accounts),
        &tokens,
    ));
    // Twenty at a time, as a scheduler would; the first ones race for the token.
    let gate = Arc::new(tokio::sync::Semaphore::new(20));
    let mut probes = Vec::new();
    for i in 0..200 {
        let (config, gate) = (config.clone(), gate.clone());
        probes.push(tokio::spawn(async move {
            let _slot = gate.acquire().await.unwrap();
            probe_account(&config, &format!("a{i}")).await
        }));
    }
    for (i, probe) in probes.into_iter().enumerate() {
        let verdict = probe.await.unwrap();
        assert!(verdict.success, "a{i}: {verdict:#?}");
    }
    let counts = provider.counts();
    assert_eq!(counts.token, 1, "{counts:?}");
    assert_eq!(counts.active, 200, "{counts:?}");

    let store = Arc::new(Store::new());
    store.use_tokens(tokens.clone());
    let text = Exposition::new(store).render();
    let source = format!(
        "source=\"127.0.0.1:{}/{CLIENT_ID}\"",
        provider.addr().port()
    );
    assert!(
        text.contains(&format!(
            "mailbox_exporter_oauth2_token_requests_total{{{source},result=\"success\"}} 1\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "mailbox_exporter_oauth2_token_requests_total{{{source},result=\"error\"}} 0\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "mailbox_exporter_oauth2_token_expiry_timestamp_seconds{{{source}}} "
        )),
        "{text}"
    );
    assert!(!text.contains(CLIENT_SECRET));
}

/// Every form in which a secret of these tests could show: the client secret (as configured,
/// form-encoded, in the Basic header), the refresh tokens, and any access token the provider
/// issues (`at-` and 32 hex digits).
fn assert_no_secret(context: &str, text: &str, refresh_tokens: &[&str]) {
    use base64::Engine as _;
    let encoded: String = support::oauth2_provider::form_encode(&[("s", CLIENT_SECRET)])
        .trim_start_matches("s=")
        .to_owned();
    let basic = support::oauth2_provider::basic_auth(CLIENT_ID, CLIENT_SECRET);
    let basic_value = basic.trim_start_matches("Basic ").to_owned();
    let plain_basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let mut forbidden = vec![CLIENT_SECRET.to_owned(), encoded, basic_value, plain_basic];
    forbidden.extend(refresh_tokens.iter().map(|t| t.to_string()));
    for needle in &forbidden {
        assert!(
            !text.contains(needle.as_str()),
            "{context}: {needle:?} in:\n{text}"
        );
    }
    for (at, _) in text.match_indices("at-") {
        let tail = &text[at + 3..];
        let hex = tail.chars().take_while(char::is_ascii_hexdigit).count();
        assert!(hex < 32, "{context}: an access token in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_command_output_and_trace_logs_hold_no_oauth2_secret() {
    let (provider, dovecot) = peers!("probe_command_output_and_trace_logs_hold_no_oauth2_secret");
    const REVOKED_RT: &str = "rt-revoked-7";
    provider.add_refresh_token(REVOKED_RT, CLIENT_ID, support::oauth2_provider::USER);
    provider.revoke_refresh_token(REVOKED_RT);
    let revoked_access =
        provider.issue_token(support::oauth2_provider::USER, Duration::from_secs(3600));
    provider.revoke(&revoked_access);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("revoked-token"), &revoked_access).unwrap();
    std::fs::write(dir.path().join("revoked-rt"), REVOKED_RT).unwrap();
    let refresh =
        |from: &str| format!("        oauth2:\n          grant: refresh_token\n          {from}\n");
    let accounts = [
        account(&dovecot, "cc-imap", "imap", ""),
        account(&dovecot, "cc-pop3", "pop3", "        auth_mode: XOAUTH2\n"),
        account(&dovecot, "rt-imap", "imap", &refresh("refresh_token_env: REFRESH_TOKEN")),
        account(
            &dovecot,
            "rt-revoked",
            "imap",
            &refresh(&format!("refresh_token_file: {:?}", dir.path().join("revoked-rt"))),
        ),
        account(&dovecot, "unknown-client", "imap", "        oauth2:\n          client_id: nobody\n"),
        account(
            &dovecot,
            "revoked-token",
            "pop3",
            &format!(
                "        auth_mode: OAUTHBEARER\n        oauth2:\n          grant: token_file\n          token_file: {:?}\n",
                dir.path().join("revoked-token")
            ),
        ),
    ]
    .concat();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, config_text(&provider, &dovecot, &accounts)).unwrap();
    let config = Arc::new(config);
    let run = move |account: &str, json: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"));
        command
            .arg("probe")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--account={account}"))
            .arg("--log.level=trace")
            .envs(secrets_env());
        if json {
            command.arg("--json");
        }
        let out = command.output().expect("the binary runs");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (text, out.status.code().unwrap_or(-1))
    };
    let secrets = [REFRESH_TOKEN, REVOKED_RT];
    let mut outcomes = Vec::new();
    for fault in [None, Some(Fault::MalformedJson), Some(Fault::Unavailable)] {
        provider.set_fault(Path::Token, fault);
        for name in [
            "cc-imap",
            "cc-pop3",
            "rt-imap",
            "rt-revoked",
            "unknown-client",
            "revoked-token",
        ] {
            for json in [false, true] {
                let (text, code) = tokio::task::spawn_blocking({
                    let run = run.clone();
                    move || run(name, json)
                })
                .await
                .unwrap();
                assert_no_secret(&format!("{name} {fault:?}"), &text, &secrets);
                // The sweep covers the HTTP client's own trace logs.
                if name != "revoked-token" {
                    assert!(text.contains("caller=hyper_util"), "{text}");
                }
                let reason = ["token_rejected", "token_unavailable"]
                    .into_iter()
                    .find(|r| text.contains(r));
                outcomes.push((fault, name, json, code, reason));
            }
        }
    }
    let outcome = |fault: Option<Fault>, name: &str| {
        outcomes
            .iter()
            .find(|o| o.0 == fault && o.1 == name && !o.2)
            .map(|o| (o.3, o.4))
            .unwrap()
    };
    for name in ["cc-imap", "cc-pop3", "rt-imap"] {
        assert_eq!(outcome(None, name), (0, None), "{name} logs in");
        assert_eq!(
            outcome(Some(Fault::MalformedJson), name).1,
            Some("token_unavailable")
        );
    }
    assert_eq!(outcome(None, "rt-revoked").1, Some("token_unavailable"));
    assert_eq!(outcome(None, "unknown-client").1, Some("token_unavailable"));
    assert_eq!(outcome(None, "revoked-token").1, Some("token_rejected"));
}

#[tokio::test]
async fn an_expiring_token_is_replaced_without_a_failed_probe() {
    let (provider, dovecot) = peers!("an_expiring_token_is_replaced_without_a_failed_probe");
    // Replaced a tenth of its lifetime (1 s) early: far more than a probe on loopback takes.
    provider.set_lifetime(Duration::from_secs(10));
    let tokens = Tokens::default();
    let accounts = account(&dovecot, "imap", "imap", "");
    let config = config(&config_text(&provider, &dovecot, &accounts), &tokens);
    // Probe back to back until the source has fetched its second token: every probe logs in.
    let mut probes = 0;
    while provider.counts().token < 2 {
        let verdict = probe_account(&config, "imap").await;
        assert!(verdict.success, "probe {probes}: {verdict:#?}");
        probes += 1;
        assert!(probes < 10_000, "never replaced: {:?}", provider.counts());
    }
    let counts = provider.counts();
    assert_eq!(
        counts.inactive, 0,
        "no expired token reached Dovecot: {counts:?}"
    );
    assert_eq!(counts.active, probes, "{counts:?}");
}

/// IMAP picks OAUTHBEARER when it is offered; a Dovecot that serves tokens with XOAUTH2 only
/// proves the IMAP side of XOAUTH2 (SASL-IR, over implicit TLS and STARTTLS).
#[tokio::test]
async fn imap_logs_in_with_xoauth2_where_only_xoauth2_is_offered() {
    let test = "imap_logs_in_with_xoauth2_where_only_xoauth2_is_offered";
    let provider = OAuth2Provider::start();
    let Some(dovecot) = Dovecot::oauth2_mechanisms_or_skip(&provider, "xoauth2", test) else {
        return;
    };
    let starttls = format!(
        "      - name: imap-starttls\n        server: {host}:{port}\n        username: {user}\n        protocol: imap\n        tls: starttls\n",
        host = dovecot.tls_domain(),
        port = dovecot.imap_addr().port(),
        user = dovecot.user(),
    );
    let accounts = [account(&dovecot, "imap", "imap", ""), starttls].concat();
    let tokens = Tokens::default();
    let config = config(&config_text(&provider, &dovecot, &accounts), &tokens);
    for name in ["imap", "imap-starttls"] {
        let verdict = probe_account(&config, name).await;
        assert!(verdict.success, "{name}: {verdict:#?}");
        assert_eq!(verdict.method, Some(Method::Xoauth2), "{name}");
        assert!(!verdict.cleartext, "{name}");
        assert!(
            verdict
                .transcript
                .iter()
                .any(|l| l.contains("AUTHENTICATE XOAUTH2 ***")),
            "{name}: the initial response went with the command, redacted: {:#?}",
            verdict.transcript
        );
    }
    let counts = provider.counts();
    assert_eq!(counts.grant("client_credentials"), 1, "{counts:?}");
    assert_eq!(counts.active, 2, "both logins introspected: {counts:?}");
}
