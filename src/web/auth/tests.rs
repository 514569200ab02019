//! Basic auth over real sockets: remembered checks, one bcrypt at a time, bcrypt's 72 bytes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::*;
use crate::web::WebConfig;
use crate::web::tests::{Fake, STUCK, basic, request, serve_fake};

#[test]
fn basic_credentials_are_parsed() {
    assert_eq!(
        parse_basic(basic("a", "b:c").as_bytes()),
        Some(("a".into(), "b:c".into()))
    );
    assert_eq!(parse_basic(b"basic   YTpi"), Some(("a".into(), "b".into())));
    assert_eq!(parse_basic(b"Basic YWI="), None);
    assert_eq!(parse_basic(b"Digest x"), None);
}

fn auth_config(users: &[(&str, &str)], cost: u32) -> WebConfig {
    let mut text = String::from("basic_auth_users:\n");
    for (user, password) in users {
        let hash = bcrypt::hash(password, cost).unwrap();
        text.push_str(&format!("  {user}: '{hash}'\n"));
    }
    WebConfig::parse(&text, Path::new("")).unwrap()
}

async fn status_with(addr: SocketAddr, authorization: &str) -> u16 {
    request(addr, "GET", "/metrics", &[("Authorization", authorization)])
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remembered_password_does_not_wait_for_bcrypt() {
    let web = auth_config(&[("alice", "s3cret")], 4);
    let auth = Arc::clone(web.auth.as_ref().unwrap());
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    let good = basic("alice", "s3cret");
    assert_eq!(status_with(served.addr, &good).await, 200);
    assert_eq!(status_with(served.addr, &good).await, 200);
    assert_eq!(
        auth.runs.load(Ordering::SeqCst),
        1,
        "checked once, then remembered"
    );

    // While a bcrypt check holds the turn (a flood of wrong passwords does), a remembered
    // password is still let through, and a new guess waits its turn.
    let turn = auth.turn.lock().await;
    let addr = served.addr;
    let guess = tokio::spawn(async move { status_with(addr, &basic("alice", "guess")).await });
    let scrape = tokio::time::timeout(STUCK, status_with(served.addr, &good))
        .await
        .expect("a remembered password waits for no bcrypt check");
    assert_eq!(scrape, 200);
    assert_eq!(auth.runs.load(Ordering::SeqCst), 1);
    drop(turn);
    assert_eq!(guess.await.unwrap(), 401);
    assert_eq!(auth.runs.load(Ordering::SeqCst), 2);
    // Failures are not remembered: the same wrong password is checked again.
    assert_eq!(
        status_with(served.addr, &basic("alice", "guess")).await,
        401
    );
    assert_eq!(auth.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bcrypt_check_at_a_time() {
    let web = auth_config(&[("alice", "s3cret")], 8);
    let auth = Arc::clone(web.auth.as_ref().unwrap());
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    let addr = served.addr;
    let guesses: Vec<_> = (0..12)
        .map(|i| {
            tokio::spawn(
                async move { status_with(addr, &basic("alice", &format!("guess{i}"))).await },
            )
        })
        .collect();
    // The same right password from several clients at once is checked once.
    let scrapes: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { status_with(addr, &basic("alice", "s3cret")).await }))
        .collect();
    for guess in guesses {
        assert_eq!(guess.await.unwrap(), 401);
    }
    for scrape in scrapes {
        assert_eq!(scrape.await.unwrap(), 200);
    }
    assert_eq!(auth.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(auth.runs.load(Ordering::SeqCst), 12 + 1);
}

#[tokio::test]
async fn passwords_past_72_bytes_are_refused_not_truncated() {
    let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
    let longest = "y".repeat(MAX_PASSWORD_BYTES);
    // A hash made by a tool that truncates: plain bcrypt accepts `long` against it.
    assert!(bcrypt::verify(&long, &bcrypt::hash(&long, 4).unwrap()).unwrap());
    let web = auth_config(&[("alice", &long), ("bob", &longest)], 4);
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    assert_eq!(status_with(served.addr, &basic("alice", &long)).await, 401);
    assert_eq!(status_with(served.addr, &basic("bob", &longest)).await, 200);

    assert_eq!(hash_password(long.as_bytes(), 4), Err(HashError::TooLong));
    assert_eq!(hash_password(b"", 4), Err(HashError::Empty));
    assert_eq!(hash_password(b"\xff", 4), Err(HashError::NotUtf8));
    let hash = hash_password(longest.as_bytes(), 4).unwrap();
    assert!(bcrypt::verify(&longest, &hash).unwrap());
    let e = HashError::TooLong.to_string();
    assert!(e.contains("longer than 72 bytes"), "{e}");
}

/// A reload that leaves the users as they were keeps the remembered checks: otherwise the
/// first scrape after every reload would queue behind a flood's bcrypt checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_the_same_users_keeps_the_remembered_checks() {
    let text = |user: &str, hash: &str| format!("basic_auth_users:\n  {user}: '{hash}'\n");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let first = WebConfig::parse(&text("alice", &hash), Path::new("")).unwrap();
    let auth = Arc::clone(first.auth.as_ref().unwrap());
    assert!(auth.allows(Some(basic("alice", "s3cret").as_bytes())).await);
    assert_eq!(auth.runs.load(Ordering::SeqCst), 1);

    let mut same = WebConfig::parse(&text("alice", &hash), Path::new("")).unwrap();
    same.keep_checks_from(&first);
    let kept = same.auth.as_ref().unwrap();
    assert!(Arc::ptr_eq(kept, &auth));
    assert!(kept.allows(Some(basic("alice", "s3cret").as_bytes())).await);
    assert_eq!(
        auth.runs.load(Ordering::SeqCst),
        1,
        "remembered across the reload"
    );

    let other_hash = bcrypt::hash("other", 4).unwrap();
    for changed in [text("alice", &other_hash), text("bob", &hash)] {
        let mut changed = WebConfig::parse(&changed, Path::new("")).unwrap();
        changed.keep_checks_from(&first);
        assert!(!Arc::ptr_eq(changed.auth.as_ref().unwrap(), &auth));
    }
}
