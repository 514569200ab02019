//! Unit tests of the token cache's timing (on paused time, with a scripted fetch) and of the
//! names and secrets of the settings.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cache::{Cached, Fetch, FetchError, FetchFuture, Fetched, Policy};
use super::registry::Stats;
use super::*;
use crate::token::{AccessToken, TokenError, TokenSource};

/// Answers from a script (an error once it runs out), counting requests.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Result<(&'static str, u64), &'static str>>>,
    requests: Arc<AtomicU32>,
}

impl Fetch for Script {
    fn fetch(&self) -> FetchFuture<'_> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let next = self.answers.lock().unwrap().pop_front();
        Box::pin(async move {
            match next {
                Some(Ok((token, lifetime))) => Ok(Fetched {
                    token: AccessToken::new(token),
                    expires_in: Some(Duration::from_secs(lifetime)),
                }),
                Some(Err(why)) => Err(failure(why)),
                None => Err(failure("endpoint down")),
            }
        })
    }
}

fn failure(why: &str) -> FetchError {
    FetchError {
        result: "error",
        error: TokenError::new(why),
    }
}

fn cached(
    answers: &[Result<(&'static str, u64), &'static str>],
) -> (Cached<Script>, Arc<AtomicU32>) {
    let script = Script::default();
    script
        .answers
        .lock()
        .unwrap()
        .extend(answers.iter().cloned());
    let requests = script.requests.clone();
    (
        Cached::new(script, Policy::default(), Arc::new(Stats::default())),
        requests,
    )
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_from_the_floor_to_the_cap() {
    let (source, requests) = cached(&[]);
    let mut waited = Vec::new();
    for _ in 0..8 {
        let before = requests.load(Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        loop {
            assert!(source.token().await.is_err());
            if requests.load(Ordering::SeqCst) > before {
                break;
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        waited.push(start.elapsed().as_secs());
    }
    // The first request goes at once; then 10 s, doubling, capped at 5 minutes.
    assert_eq!(waited, [0, 10, 20, 40, 80, 160, 300, 300]);
}

#[tokio::test(start_paused = true)]
async fn a_token_is_refreshed_at_nine_tenths_or_a_minute_before_expiry() {
    let (source, requests) = cached(&[Ok(("a", 3600)), Ok(("b", 100)), Ok(("c", 100))]);
    assert_eq!(source.token().await.unwrap().expose(), "a");
    tokio::time::advance(Duration::from_secs(3539)).await;
    assert_eq!(source.token().await.unwrap().expose(), "a");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(source.token().await.unwrap().expose(), "b");
    tokio::time::advance(Duration::from_secs(89)).await;
    assert_eq!(source.token().await.unwrap().expose(), "b");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(source.token().await.unwrap().expose(), "c");
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_token_until_it_expires() {
    let (source, requests) = cached(&[Ok(("a", 100))]);
    assert_eq!(source.token().await.unwrap().expose(), "a");
    tokio::time::advance(Duration::from_secs(95)).await;
    // The refresh fails: the token still has 5 s, so it is handed out.
    assert_eq!(source.token().await.unwrap().expose(), "a");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        source.token().await.unwrap_err().to_string(),
        "endpoint down"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2, "still backing off");
}

#[test]
fn settings_never_print_their_secrets() {
    let settings = Settings {
        grant: Grant::RefreshToken {
            endpoint: Endpoint {
                token_url: "https://oauth2.googleapis.com/token".into(),
                client_id: "id".into(),
                client_secret: Some(Secret::new("cs-secret")),
                scope: None,
            },
            refresh_token: Secret::new("rt-secret"),
            from: "/run/secrets/rt".into(),
        },
        ca_file: None,
        timeout: DEFAULT_TIMEOUT,
    };
    let shown = format!("{settings:?} {}", settings.name());
    assert!(!shown.contains("secret\""), "{shown}");
    assert!(
        !shown.contains("cs-secret") && !shown.contains("rt-secret"),
        "{shown}"
    );
    assert_eq!(
        settings.name(),
        "oauth2.googleapis.com/id (/run/secrets/rt)"
    );
}

#[test]
fn cut_marks_a_long_text() {
    assert_eq!(cut(" short ", 10), "short");
    assert_eq!(cut("abcdefghijkl", 5), "abcde...");
}

fn endpoint_settings(secret: &str) -> Settings {
    Settings {
        grant: Grant::ClientCredentials(Endpoint {
            token_url: "https://login.example.com/tenant/token".into(),
            client_id: "app".into(),
            client_secret: Some(Secret::new(secret)),
            scope: Some("mail".into()),
        }),
        ca_file: None,
        timeout: DEFAULT_TIMEOUT,
    }
}

#[test]
fn a_changed_secret_is_a_new_source_and_unused_sources_are_forgotten() {
    let tokens = Tokens::default();
    let first = tokens.login(&endpoint_settings("one")).unwrap();
    assert_eq!(tokens.login(&endpoint_settings("one")).unwrap(), first);
    let changed = tokens.login(&endpoint_settings("two")).unwrap();
    assert_ne!(changed, first, "a reload sees the change");
    let names: Vec<_> = tokens.stats().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["login.example.com/app", "login.example.com/app#2"]);
    assert!(!format!("{first:?} {changed:?}").contains("two"));

    tokens.retain(|settings| *settings == endpoint_settings("two"));
    assert_eq!(tokens.stats().len(), 1);
    assert_eq!(tokens.login(&endpoint_settings("two")).unwrap(), changed);
    assert_ne!(tokens.login(&endpoint_settings("one")).unwrap(), first);
}
