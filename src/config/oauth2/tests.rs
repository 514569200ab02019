//! Tests of the `oauth2` keys: layering, completeness, and errors at their location without
//! a secret.

use std::path::Path;

use crate::config::{Config, ConfigErrors, Format};
use crate::oauth2::{Grant, Secret};

const CLIENT_SECRET: &str = "cs-very-secret";
const REFRESH: &str = "rt-very-secret";
const A: &str = "groups[0] \"g\" / accounts[0] \"a\"";

fn load(text: &str) -> Result<Config, ConfigErrors> {
    let env = [
        ("M365_SECRET".to_owned(), CLIENT_SECRET.to_owned()),
        ("GOOGLE_REFRESH".to_owned(), REFRESH.to_owned()),
    ];
    Config::from_str_with_env(text, Format::Yaml, Path::new(""), env)
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                !text.contains(CLIENT_SECRET) && !text.contains(REFRESH),
                "a secret leaked: {text}"
            );
            text.lines().map(str::to_owned).collect()
        }
    }
}

const M365: &str = "
defaults:
  oauth2:
    grant: client_credentials
    token_url: https://login.microsoftonline.com/TENANT/oauth2/v2.0/token
    client_id: app-id
    client_secret_env: M365_SECRET
    scope: https://outlook.office365.com/.default
groups:
  - name: g
    accounts:
      - name: a
        server: outlook.office365.com
        username: a@example.com
        protocol: imap
      - name: b
        server: outlook.office365.com
        username: b@example.com
        oauth2:
          timeout: 3s
";

#[test]
fn defaults_give_every_account_a_source_and_no_password_is_needed() {
    let config = load(M365).expect("valid");
    let accounts: Vec<_> = config.accounts().collect();
    let a = accounts[0].oauth2.as_ref().expect("oauth2 settings");
    let Grant::ClientCredentials(endpoint) = &a.grant else {
        panic!("{a:?}")
    };
    assert_eq!(endpoint.client_id, "app-id");
    assert_eq!(endpoint.client_secret, Some(Secret::new(CLIENT_SECRET)));
    assert_eq!(
        endpoint.scope.as_deref(),
        Some("https://outlook.office365.com/.default")
    );
    assert_eq!(a.timeout, crate::oauth2::DEFAULT_TIMEOUT);
    // The account's own key layers over the defaults, key by key.
    let b = accounts[1].oauth2.as_ref().unwrap();
    assert_eq!(b.timeout, std::time::Duration::from_secs(3));
    assert_eq!(b.grant, a.grant);
    assert!(!format!("{config:?}").contains(CLIENT_SECRET));
}

#[test]
fn accounts_with_equal_settings_share_one_source() {
    let mut config = load(M365).unwrap();
    let tokens = crate::oauth2::Tokens::default();
    config.resolve_oauth2(&tokens).unwrap();
    let logins: Vec<_> = config
        .accounts()
        .map(|a| a.target.oauth2.clone().expect("a login"))
        .collect();
    // Different timeouts are different settings, so two sources.
    assert_ne!(logins[0], logins[1]);
    assert_eq!(tokens.stats().len(), 2);
    let mut again = load(M365).unwrap();
    again.resolve_oauth2(&tokens).unwrap();
    let first = again.accounts().next().unwrap();
    assert_eq!(
        first.target.oauth2.as_ref(),
        Some(&logins[0]),
        "kept across loads"
    );
}

#[test]
fn a_refresh_token_grant_per_account() {
    let config = load(
        "
groups:
  - name: g
    defaults:
      oauth2:
        grant: refresh_token
        token_url: https://oauth2.googleapis.com/token
        client_id: google-id
        client_secret: inline-secret
        scope: https://mail.google.com/
    accounts:
      - name: a
        server: imap.gmail.com
        username: a@example.com
        protocol: imap
        oauth2:
          refresh_token_env: GOOGLE_REFRESH
",
    )
    .expect("valid");
    let settings = config.accounts().next().unwrap().oauth2.clone().unwrap();
    let Grant::RefreshToken {
        refresh_token,
        from,
        ..
    } = &settings.grant
    else {
        panic!("{settings:?}")
    };
    assert_eq!(refresh_token.expose(), REFRESH);
    assert_eq!(from, "env:GOOGLE_REFRESH");
    assert_eq!(
        settings.name(),
        "oauth2.googleapis.com/google-id (env:GOOGLE_REFRESH)"
    );
}

#[test]
fn every_problem_is_listed_at_its_location() {
    let e = errors(
        "
defaults:
  oauth2:
    grant: password
    token_url: http://login.example.com/token
    client_secret: x
    client_secret_env: M365_SECRET
    colour: blue
groups:
  - name: g
    accounts:
      - name: a
        server: mail.example.com
        username: u
        oauth2:
          grant: client_credentials
          timeout: forever
",
    );
    let expected = [
        "defaults / oauth2: unknown key \"colour\"",
        "defaults / oauth2: grant: \"password\" is not a grant",
        "defaults / oauth2: token_url: must be an https URL",
        "defaults / oauth2: client_secret: set only one of client_secret, client_secret_file and client_secret_env",
        &format!("{A} / oauth2: timeout: "),
        &format!("{A} / oauth2: token_url: missing (needed by grant client_credentials)"),
        &format!("{A} / oauth2: client_id: missing"),
        &format!("{A} / oauth2: client_secret: missing"),
    ];
    for want in expected {
        assert!(
            e.iter().any(|line| line.starts_with(want)),
            "no {want:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expected.len(), "{e:#?}");
}

#[test]
fn a_token_file_grant_needs_only_the_file_and_unset_secrets_are_named() {
    let e = errors(
        "
groups:
  - name: g
    accounts:
      - name: a
        server: mail.example.com
        username: u
        oauth2:
          grant: token_file
      - name: b
        server: mail.example.com
        username: u
        oauth2:
          grant: refresh_token
          token_url: https://oauth2.googleapis.com/token
          client_id: id
          refresh_token_env: UNSET_REFRESH
",
    );
    assert_eq!(
        e,
        [
            format!("{A} / oauth2: token_file: missing (needed by grant token_file)"),
            "groups[0] \"g\" / accounts[1] \"b\" / oauth2: refresh_token_env: environment variable \"UNSET_REFRESH\" is not set".to_owned(),
            "groups[0] \"g\" / accounts[1] \"b\" / oauth2: refresh_token_file: missing (needed by grant refresh_token)".to_owned(),
        ]
    );
}
