//! The exporter with OAuth2 accounts against a real Dovecot and the local OAuth2 provider:
//! logins and token metrics as a scraper sees them, and reloads that keep a cached token or,
//! when the client secret changes, make a new token source.

mod support;

use std::path::Path;

use mailbox_exporter::app::{self, RunOptions};
use support::http::{Samples, wait_for};
use support::oauth2_provider::{CLIENT_ID, CLIENT_SECRET};
use support::{Dovecot, OAuth2Provider};

fn write_config(dir: &Path, provider: &OAuth2Provider, dovecot: &Dovecot) {
    let text = format!(
        "
interval: 1s
timeout: 900ms
defaults:
  protocol: imap
  tls: implicit
  ca_file: {dovecot_ca}
  oauth2:
    grant: client_credentials
    token_url: {token_url}
    client_id: {CLIENT_ID}
    client_secret_file: client-secret
    scope: mail
    ca_file: {provider_ca}
groups:
  - name: m365
    accounts:
      - name: imap
        server: {host}:{imap}
        username: {user}
      - name: pop3
        protocol: pop3
        auth_mode: XOAUTH2
        server: {host}:{pop3}
        username: {user}
",
        dovecot_ca = dovecot.ca_file().display(),
        token_url = provider.token_url(),
        provider_ca = provider.ca_file().display(),
        host = dovecot.tls_domain(),
        imap = dovecot.imaps_addr().port(),
        pop3 = dovecot.pop3s_addr().port(),
        user = dovecot.user(),
    );
    std::fs::write(dir.join("config.yml"), text).unwrap();
}

/// Successful logins of `account` (IMAP: OAUTHBEARER; POP3: the pinned XOAUTH2), from its
/// group's counter: no other account of the group uses the method.
fn successes(s: &Samples, account: &str) -> f64 {
    let method = if account == "imap" {
        "OAUTHBEARER"
    } else {
        "XOAUTH2"
    };
    s.find(
        "mailbox_group_auth_attempts_total",
        &[("group", "m365"), ("method", method), ("result", "success")],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_logs_in_with_tokens_and_keeps_them_across_reloads() {
    let provider = OAuth2Provider::start();
    let Some(dovecot) = Dovecot::oauth2_or_skip(
        &provider,
        "the_exporter_logs_in_with_tokens_and_keeps_them_across_reloads",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("client-secret"),
        format!("{CLIENT_SECRET}\n"),
    )
    .unwrap();
    write_config(dir.path(), &provider, &dovecot);
    let running = app::start(RunOptions {
        config_file: dir.path().join("config.yml"),
        listen_address: "127.0.0.1:0".parse().unwrap(),
        web_config_file: None,
        shard: None,
        enable_lifecycle: false,
    })
    .await
    .expect("the exporter starts");
    let addr = running.addr;
    let source = format!("127.0.0.1:{}/{CLIENT_ID}", provider.addr().port());

    let s = wait_for(addr, "both accounts log in", |s| {
        successes(s, "imap") >= 1.0 && successes(s, "pop3") >= 1.0
    })
    .await;
    for (account, method) in [("imap", "OAUTHBEARER"), ("pop3", "XOAUTH2")] {
        assert_eq!(
            s.find(
                "mailbox_auth_method",
                &[("account", account), ("method", method)]
            ),
            Some(1.0),
            "{}",
            s.text
        );
    }
    let requests = |s: &Samples, result: &str| {
        s.find(
            "mailbox_exporter_oauth2_token_requests_total",
            &[("source", source.as_str()), ("result", result)],
        )
    };
    assert_eq!(requests(&s, "success"), Some(1.0), "{}", s.text);
    assert_eq!(requests(&s, "error"), Some(0.0), "{}", s.text);
    let expiry = s
        .find(
            "mailbox_exporter_oauth2_token_expiry_timestamp_seconds",
            &[("source", source.as_str())],
        )
        .expect("the expiry of the cached token");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 3000.0 && expiry <= now + 3601.0,
        "{expiry} vs {now}"
    );

    // An unchanged config keeps its token source and its cached token.
    running.reload().await.expect("the reload succeeds");
    let before = successes(&s, "imap");
    wait_for(addr, "probes after the reload", |s| {
        successes(s, "imap") >= before + 2.0
    })
    .await;
    assert_eq!(provider.counts().token, 1, "{:?}", provider.counts());

    // A changed client secret makes a new source: a token request, refused.
    std::fs::write(dir.path().join("client-secret"), "not-the-secret\n").unwrap();
    running.reload().await.expect("the reload succeeds");
    let s = wait_for(addr, "token_unavailable after the new secret", |s| {
        s.find(
            "mailbox_auth_consecutive_failures",
            &[("account", "imap"), ("reason", "token_unavailable")],
        )
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    assert_eq!(provider.counts().token, 2, "{:?}", provider.counts());
    assert_eq!(provider.counts().token_errors, 1, "{:?}", provider.counts());
    assert!(!s.text.contains(CLIENT_SECRET) && !s.text.contains("not-the-secret"));
    // The old source is gone from the metrics; the new one counts the refusal.
    assert_eq!(
        s.count(
            "mailbox_exporter_oauth2_token_requests_total",
            &[("result", "success")]
        ),
        1,
        "{}",
        s.text
    );
    assert!(
        s.find(
            "mailbox_exporter_oauth2_token_requests_total",
            &[("result", "error")]
        )
        .is_some_and(|v| v >= 1.0),
        "{}",
        s.text
    );
    running.shutdown().await;
}
