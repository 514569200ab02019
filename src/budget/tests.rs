//! The failed-login budget on paused time: reservations, waits, expiry and charges.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::Account;
use crate::verdict::{Attempt, AttemptResult, Method, Protocol, Reason};

const WINDOW: Duration = Duration::from_secs(600);

fn settings(failures: u32) -> Option<FailureBudgetSettings> {
    Some(FailureBudgetSettings {
        failures,
        window: WINDOW,
    })
}

fn account(name: &str) -> Account {
    Account::for_test("g", name, Protocol::Pop3)
}

fn budget(failures: u32) -> Arc<FailureBudget> {
    let b = Arc::new(FailureBudget::new());
    b.configure(settings(failures), std::iter::once(&account("a").target));
    b
}

fn unknown() -> Plan {
    Plan::default()
}

fn known() -> Plan {
    Plan {
        preferred: Some(Method::Pass),
        ..Plan::default()
    }
}

fn verdict(success: bool, results: &[(Method, AttemptResult)]) -> Verdict {
    let attempts = results
        .iter()
        .map(|&(method, result)| Attempt { method, result })
        .collect();
    if success {
        crate::state::tests::success(Method::Pass, false, attempts)
    } else {
        crate::state::tests::failure(Reason::AuthRejected, attempts)
    }
}

/// The trap: APOP and CRAM-MD5 rejected, PASS logs in.
fn trap() -> Verdict {
    verdict(
        true,
        &[
            (Method::Apop, AttemptResult::Rejected),
            (Method::CramMd5, AttemptResult::Rejected),
            (Method::Pass, AttemptResult::Success),
        ],
    )
}

fn remaining(b: &FailureBudget) -> u32 {
    b.servers()[0].remaining
}

#[test]
fn what_a_probe_costs() {
    assert_eq!(cost(&trap()), 2);
    let wrong = verdict(
        false,
        &[
            (Method::Apop, AttemptResult::Rejected),
            (Method::CramMd5, AttemptResult::Rejected),
            (Method::Pass, AttemptResult::Rejected),
        ],
    );
    assert_eq!(cost(&wrong), 4, "three rejections and the aborted login");
    let timed_out = verdict(
        false,
        &[
            (Method::Apop, AttemptResult::Rejected),
            (Method::CramMd5, AttemptResult::Error),
        ],
    );
    assert_eq!(cost(&timed_out), 3, "an unanswered rung may be a failure");
    assert_eq!(cost(&verdict(false, &[])), 0, "no login was tried");
    assert_eq!(
        cost(&verdict(true, &[(Method::Pass, AttemptResult::Success)])),
        0
    );
}

#[test]
fn the_worst_case_of_a_probe() {
    let mut a = account("a");
    assert_eq!(Need::of(&a.target, &known()), Need::Known);
    assert_eq!(Need::of(&a.target, &unknown()), Need::Unknown { rungs: 3 });
    a.target.auth_mode = crate::verdict::AuthMode::Pass;
    assert_eq!(Need::of(&a.target, &unknown()), Need::Unknown { rungs: 1 });
    // IMAP has no auth mode: its whole ladder.
    let mut imap = account("i");
    imap.target.protocol = Protocol::Imap;
    imap.target.auth_mode = crate::verdict::AuthMode::Pass;
    assert_eq!(
        Need::of(&imap.target, &unknown()),
        Need::Unknown { rungs: 3 }
    );
    // OAuth2: one login, and one more with a fresh token after a refusal.
    imap.target.oauth2 = Some(crate::token::OAuth2Login::for_test("t"));
    assert_eq!(
        Need::of(&imap.target, &unknown()),
        Need::Unknown { rungs: 2 }
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_probes_wait_for_room_while_known_ones_go_on() {
    let b = budget(4);
    let a = account("a");
    assert_eq!(remaining(&b), 4);

    // The first unknown probe reserves its worst case: three rungs and the aborted login.
    let mut first = b.admit("a", &a.target, &unknown()).await;
    assert_eq!(first.reserved(), 4);
    assert_eq!(first.start().others, Some(3));
    assert_eq!(remaining(&b), 0);

    // A second one waits, visibly.
    let b2 = Arc::clone(&b);
    let target = a.target.clone();
    let second = tokio::spawn(async move { b2.admit("b", &target, &unknown()).await });
    tokio::task::yield_now().await;
    assert_eq!(
        b.waiting().get("b").map(String::as_str),
        Some("mail.example.com")
    );
    assert_eq!(b.servers()[0].waiting, 1);

    // A probe of a method known to work does not wait, and tries only that method.
    let mut known_probe = b.admit("c", &a.target, &known()).await;
    assert_eq!(known_probe.reserved(), 0);
    assert_eq!(known_probe.start().others, Some(0));
    known_probe.settle(&verdict(true, &[(Method::Pass, AttemptResult::Success)]));

    // The first probe spends two of its four: the rest is not enough for the second.
    let finished = Instant::now();
    first.settle(&trap());
    tokio::task::yield_now().await;
    assert_eq!(remaining(&b), 2);
    assert!(!second.is_finished());

    // The two failures leave the window, not a moment before.
    tokio::time::sleep_until(finished + WINDOW + EXPIRY_MARGIN - Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert!(!second.is_finished());
    let second = second.await.expect("admitted");
    assert_eq!(Instant::now(), finished + WINDOW + EXPIRY_MARGIN);
    assert_eq!(second.reserved(), 4);
    assert!(b.waiting().is_empty());
    assert_eq!(b.servers()[0].charged, 2);
}

#[tokio::test(start_paused = true)]
async fn unspent_reservations_wake_waiters_at_once() {
    let b = budget(4);
    let a = account("a");
    let mut first = b.admit("a", &a.target, &unknown()).await;
    first.start();
    let b2 = Arc::clone(&b);
    let target = a.target.clone();
    let second = tokio::spawn(async move { b2.admit("b", &target, &unknown()).await });
    tokio::task::yield_now().await;
    assert!(!second.is_finished());
    let before = Instant::now();
    first.settle(&verdict(true, &[(Method::Apop, AttemptResult::Success)]));
    let second = second.await.expect("admitted");
    assert_eq!(Instant::now(), before, "no failure was spent: no wait");
    assert_eq!(second.reserved(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_budget_smaller_than_the_ladder_shortens_it() {
    let b = budget(2);
    let a = account("a");
    let mut admission = b.admit("a", &a.target, &unknown()).await;
    assert_eq!(admission.reserved(), 2);
    assert_eq!(admission.start().others, Some(1));
}

#[tokio::test(start_paused = true)]
async fn cancelled_probes_give_back_or_charge_their_reservation() {
    let b = budget(4);
    let a = account("a");
    // Dropped before it started: nothing was tried.
    drop(b.admit("a", &a.target, &unknown()).await);
    assert_eq!(remaining(&b), 4);
    // Dropped under way before any rung: nothing went out.
    let mut admission = b.admit("a", &a.target, &unknown()).await;
    admission.start();
    drop(admission);
    assert_eq!(remaining(&b), 4);
    // Dropped under way after two rungs started: both may have failed, and the login they
    // left is aborted.
    let mut admission = b.admit("a", &a.target, &unknown()).await;
    admission.start();
    let meter = admission.meter();
    meter.start_rung();
    meter.start_rung();
    drop(admission);
    assert_eq!(remaining(&b), 1);
    assert_eq!(b.servers()[0].charged, 3);

    // A probe waiting for room that is cancelled leaves the waiting list.
    let b2 = Arc::clone(&b);
    let target = a.target.clone();
    let waiter = tokio::spawn(async move { b2.admit("b", &target, &unknown()).await });
    tokio::task::yield_now().await;
    assert!(b.waiting().contains_key("b"));
    waiter.abort();
    let _ = waiter.await;
    assert!(b.waiting().is_empty());
}

#[tokio::test(start_paused = true)]
async fn off_means_no_reservation_and_the_whole_ladder() {
    let b = Arc::new(FailureBudget::new());
    let a = account("a");
    b.configure(None, std::iter::once(&a.target));
    for _ in 0..10 {
        let mut admission = b.admit("a", &a.target, &unknown()).await;
        assert_eq!(admission.start().others, None);
        admission.settle(&trap());
    }
    let mut known_probe = b.admit("a", &a.target, &known()).await;
    assert_eq!(known_probe.start().others, None);
    assert!(b.servers().is_empty(), "no budget series while it is off");
}

#[tokio::test(start_paused = true)]
async fn hosts_share_a_budget_across_ports_and_a_reload_widens_it() {
    let b = budget(4);
    let a = account("a");
    let mut other_port = account("b");
    other_port.target.port = 110;
    other_port.target.host = "MAIL.example.com".into();
    let mut first = b.admit("a", &a.target, &unknown()).await;
    first.start();
    let b2 = Arc::clone(&b);
    let target = other_port.target.clone();
    let second = tokio::spawn(async move { b2.admit("b", &target, &unknown()).await });
    tokio::task::yield_now().await;
    assert!(!second.is_finished(), "same host, other port: same budget");
    b.configure(settings(8), std::iter::once(&a.target));
    let second = second.await.expect("admitted after the reload");
    assert_eq!(second.reserved(), 4);
    assert_eq!(b.servers().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_probes_are_admitted_in_the_order_they_came() {
    let b = budget(5);
    let a = account("a");
    let mut first = b.admit("a", &a.target, &unknown()).await;
    first.start();
    let mut pinned = account("p");
    pinned.target.auth_mode = crate::verdict::AuthMode::Pass;
    let spawn = |name: &'static str, target: Target| {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.admit(name, &target, &unknown()).await })
    };
    let second = spawn("b", a.target.clone());
    tokio::task::yield_now().await;
    // A pinned probe needs 2, and 1 is left: it queues behind the second even once 2 are.
    let third = spawn("c", pinned.target.clone());
    tokio::task::yield_now().await;
    assert_eq!(b.servers()[0].waiting, 2);
    first.settle(&verdict(false, &[(Method::Apop, AttemptResult::Rejected)]));
    // 5 - 2 spent = 3 left: not enough for the second (4), and the third may not pass it.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished());
    assert!(!third.is_finished(), "the third jumped the queue");
    let second = second.await.expect("admitted");
    assert_eq!(second.reserved(), 4);
    drop(second);
    let third = third.await.expect("admitted");
    assert_eq!(third.reserved(), 2);
}
