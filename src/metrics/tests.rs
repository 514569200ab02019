//! Tests of the store through its readings: the exposition is parsed back and compared series
//! by series, and the views the pages read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::store::LagWindow;
use super::*;
use crate::config::Group;
use crate::config::{Account, Config};
use crate::schedule::Ledger;
use crate::state::Plan;
use crate::state::tests::{at, failure, success, trap};
use crate::verdict::{AuthMode, TlsMode};
use crate::verdict::{Method, Protocol, Reason, Verdict};

/// A store and its exposition, as the exporter pairs them.
fn metrics() -> (Arc<Store>, Exposition) {
    let store = Arc::new(Store::new());
    (Arc::clone(&store), Exposition::new(store))
}

fn account(group: &str, name: &str, protocol: Protocol) -> Account {
    Account::for_test(group, name, protocol)
}

fn config(accounts: Vec<Account>) -> Config {
    let mut groups: Vec<Group> = Vec::new();
    for a in accounts {
        match groups.iter_mut().find(|g| g.name == a.group) {
            Some(g) => g.accounts.push(Arc::new(a)),
            None => groups.push(Group {
                name: a.group.clone(),
                accounts: vec![Arc::new(a)],
            }),
        }
    }
    Config {
        interval: Duration::from_secs(300),
        timeout: Duration::from_secs(30),
        concurrency: 64,
        per_server_concurrency: 4,
        failure_budget: None,
        groups,
        sources: Vec::new(),
    }
}

fn two_accounts() -> Vec<Account> {
    vec![
        account("support", "support-inbox", Protocol::Pop3),
        account("sales", "sales-inbox", Protocol::Imap),
    ]
}

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(rest.parse().expect("a numeric value"))
    })
}

fn get(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

fn acct(name: &str, extra: &str) -> String {
    let group = if name.starts_with("sales") {
        "sales"
    } else {
        "support"
    };
    if extra.is_empty() {
        format!("{{group=\"{group}\",account=\"{name}\"}}")
    } else {
        format!("{{group=\"{group}\",account=\"{name}\",{extra}}}")
    }
}

/// Every series line of `account` (any family), as written.
fn series_of<'a>(text: &'a str, account: &str) -> Vec<&'a str> {
    let label = format!("account=\"{account}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&label))
        .collect()
}

/// The families (names) of `account`'s series.
fn families_of(text: &str, account: &str) -> Vec<String> {
    series_of(text, account)
        .iter()
        .map(|l| l.split('{').next().unwrap().to_string())
        .collect()
}

/// The per-account families every account has from the start.
const ALWAYS: [&str; 7] = [
    "mailbox_auth_success",
    "mailbox_auth_failures_total",
    "mailbox_last_probe_timestamp_seconds",
    "mailbox_last_success_timestamp_seconds",
    "mailbox_probe_last_duration_seconds",
    "mailbox_probe_phase_seconds",
    "mailbox_account_info",
];

/// The series budget of the model: at most this many series per account in steady state.
const SERIES_BUDGET: usize = 12;

mod model;

#[test]
fn exporter_wide_values() {
    let (m, x) = metrics();
    m.apply_config(&config(two_accounts()));
    m.probe_started();
    m.probe_started();
    m.probe_finished();
    m.config_reload(true, at(1_700_000_000) + Duration::from_millis(5));
    m.schedule_lag(Duration::from_millis(1500));
    m.schedule_lag(Duration::from_millis(200));
    let text = x.render();
    assert_eq!(get(&text, "mailbox_exporter_probes_in_flight"), 1.0);
    assert_eq!(
        get(&text, "mailbox_exporter_config_last_reload_successful"),
        1.0
    );
    assert!(text.contains(
        "mailbox_exporter_config_last_reload_success_timestamp_seconds 1700000000.005\n"
    ));
    assert_eq!(get(&text, "mailbox_exporter_schedule_lag_seconds"), 1.5);
    // A failed reload keeps the time of the last good one.
    m.config_reload(false, at(1_800_000_000));
    let text = x.render();
    assert_eq!(
        get(&text, "mailbox_exporter_config_last_reload_successful"),
        0.0
    );
    assert_eq!(
        get(
            &text,
            "mailbox_exporter_config_last_reload_success_timestamp_seconds"
        ),
        1_700_000_000.005
    );
    assert!(!m.last_reload_ok());
}

#[test]
fn lag_window_keeps_the_largest_lag_of_the_last_minute() {
    let mut w = LagWindow::new();
    assert_eq!(w.max(0), 0.0);
    w.report(5, 2.0);
    w.report(5, 1.0);
    w.report(30, 0.5);
    assert_eq!(w.max(30), 2.0);
    assert_eq!(w.max(64), 2.0);
    assert_eq!(w.max(65), 0.5);
    // Slot 5 is reused by second 65.
    w.report(65, 0.25);
    assert_eq!(w.max(65), 0.5);
    assert_eq!(w.max(90), 0.25);
    assert_eq!(w.max(200), 0.0);
}

#[test]
fn views_carry_the_last_probe() {
    let m = Store::new();
    let accounts = two_accounts();
    m.apply_config(&config(accounts.clone()));
    let mut v = trap();
    v.advice = Some("pin auth_mode: PASS".into());
    v.transcript = vec!["C: PASS ***".into()];
    m.record(&accounts[0], v, at(10));
    let views = m.accounts();
    assert_eq!(
        views.iter().map(|v| v.account.as_str()).collect::<Vec<_>>(),
        ["sales-inbox", "support-inbox"]
    );
    assert!(
        views
            .iter()
            .all(|v| v.transcript.is_empty() && v.attempts.is_empty()),
        "the list does not copy transcripts"
    );
    let view = m.account("support-inbox").unwrap();
    assert_eq!(view.group, "support");
    assert_eq!(view.protocol, Protocol::Pop3);
    assert_eq!(view.method, Some(Method::Pass));
    assert_eq!(view.advice.as_deref(), Some("pin auth_mode: PASS"));
    assert_eq!(view.transcript, ["C: PASS ***"]);
    assert_eq!(view.attempts.len(), 2);
    assert!(view.fallback && view.success && view.probed);
    let idle = m.account("sales-inbox").unwrap();
    assert!(!idle.probed);
    assert_eq!(idle.auth_mode, "auto");
    assert_eq!(idle.last_probe, None);
}

const PROMTOOL_SKIP: &str = "SKIPPED (real peer missing): rendered_text_passes_promtool needs \
     promtool (apt-get install prometheus); run scripts/test to run it";

fn promtool() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH").into_iter().flat_map(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .collect::<Vec<_>>()
    });
    in_path
        .chain([PathBuf::from("/usr/bin/promtool")])
        .find(|p| p.is_file())
}

#[test]
fn rendered_text_passes_promtool() {
    let Some(promtool) = promtool() else {
        if std::env::var("MAILBOX_EXPORTER_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
            panic!("{PROMTOOL_SKIP}");
        }
        eprintln!("{PROMTOOL_SKIP}");
        return;
    };
    let (m, x) = metrics();
    let mut accounts = two_accounts();
    accounts.push(account("odd \"group\" \\", "odd\ninbox", Protocol::Pop3));
    m.apply_config(&config(accounts.clone()));
    let mut v = trap();
    v.cert_expiry = Some(1_800_000_000);
    m.record(
        &accounts[0],
        v,
        at(1_700_000_000) + Duration::from_millis(7),
    );
    m.record(
        &accounts[1],
        failure(Reason::Timeout, vec![]),
        at(1_700_000_001),
    );
    m.config_reload(true, at(1_700_000_000));
    m.schedule_lag(Duration::from_millis(30));
    m.source_status("vicidial", Some(source_status(false)));
    let text = x.render();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let output = check_metrics(&promtool, &path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: {}\nstdout: {stdout}\nstderr: {stderr}\ninput:\n{text}",
        output.status
    );
}

fn source_status(up: bool) -> crate::source::Status {
    crate::source::Status {
        up,
        accounts: 40,
        skipped: 2,
        last_success: Some(at(1_700_000_000)),
        error: (!up).then(|| "cannot connect".to_string()),
    }
}

#[test]
fn account_sources_have_their_series_until_removed() {
    let (m, x) = metrics();
    let mut vicidial = account("SUPPORT", "1001", Protocol::Pop3);
    vicidial.origin = crate::config::Origin::Vicidial(crate::config::VicidialRow {
        source: "vicidial".into(),
        email_account_name: "Support \"A\"".into(),
        user_group: "ADMIN".into(),
        frequency_check_mins: 5,
    });
    m.apply_config(&config(vec![vicidial]));
    let text = x.render();
    assert!(!text.contains("mailbox_exporter_source_"), "{text}");
    assert!(
        text.contains(
            "tls=\"implicit\",auth_mode=\"BEST\",source=\"vicidial\",\
             email_account_name=\"Support \\\"A\\\"\",user_group=\"ADMIN\"} 1"
        ),
        "{text}"
    );

    m.source_status("vicidial", Some(source_status(true)));
    let text = x.render();
    let s = "{source=\"vicidial\"}";
    assert_eq!(get(&text, &format!("mailbox_exporter_source_up{s}")), 1.0);
    assert_eq!(
        get(&text, &format!("mailbox_exporter_source_accounts{s}")),
        40.0
    );
    assert_eq!(
        get(&text, &format!("mailbox_exporter_source_skipped_rows{s}")),
        2.0
    );
    assert_eq!(
        get(
            &text,
            &format!("mailbox_exporter_source_last_success_timestamp_seconds{s}")
        ),
        1_700_000_000.0
    );
    m.source_status("vicidial", Some(source_status(false)));
    assert_eq!(
        get(&x.render(), &format!("mailbox_exporter_source_up{s}")),
        0.0
    );
    m.source_status("vicidial", None);
    assert!(!x.render().contains("mailbox_exporter_source_"));
}

fn check_metrics(promtool: &Path, input: &Path) -> std::process::Output {
    Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(input).unwrap())
        .output()
        .expect("promtool runs")
}

#[tokio::test(start_paused = true)]
async fn the_failure_budget_of_each_server_is_exposed_and_waiting_accounts_are_flagged() {
    let (m, x) = metrics();
    let mut other = account("support", "other-host", Protocol::Pop3);
    other.target.host = "imap.example.com".into();
    let mut cfg = config(vec![
        account("support", "support-inbox", Protocol::Pop3),
        account("support", "support-new", Protocol::Pop3),
        other,
    ]);
    cfg.failure_budget = Some(crate::config::DEFAULT_FAILURE_BUDGET);
    m.apply_config(&cfg);
    let text = x.render();
    for server in ["imap.example.com", "mail.example.com"] {
        let labels = format!("{{server=\"{server}\"}}");
        assert_eq!(
            get(
                &text,
                &format!("mailbox_exporter_server_failure_budget_remaining{labels}")
            ),
            4.0
        );
        assert_eq!(
            get(
                &text,
                &format!("mailbox_exporter_server_failure_budget_waiting_probes{labels}")
            ),
            0.0
        );
        assert_eq!(
            get(
                &text,
                &format!("mailbox_exporter_server_failed_logins_total{labels}")
            ),
            0.0
        );
    }

    // One new account walks the ladder; the next waits, and says so.
    let budget = Arc::clone(m.budget());
    let inbox = cfg.accounts().next().unwrap().clone();
    let mut first = budget
        .admit("support-inbox", &inbox.target, &m.plan("support-inbox"))
        .await;
    first.start();
    let waiting = {
        let budget = Arc::clone(&budget);
        let target = inbox.target.clone();
        tokio::spawn(async move { budget.admit("support-new", &target, &Plan::default()).await })
    };
    tokio::task::yield_now().await;
    let text = x.render();
    let mail = "{server=\"mail.example.com\"}";
    assert_eq!(
        get(
            &text,
            &format!("mailbox_exporter_server_failure_budget_remaining{mail}")
        ),
        0.0
    );
    assert_eq!(
        get(
            &text,
            &format!("mailbox_exporter_server_failure_budget_waiting_probes{mail}")
        ),
        1.0
    );
    let views = m.accounts();
    let flagged: Vec<_> = views
        .iter()
        .filter_map(|v| Some((v.account.as_str(), v.budget_wait.as_deref()?)))
        .collect();
    assert_eq!(flagged, vec![("support-new", "mail.example.com")]);
    assert_eq!(
        m.account("support-new").and_then(|v| v.budget_wait),
        Some("mail.example.com".into())
    );
    first.settle(&trap());
    waiting.abort();
    let text = x.render();
    assert_eq!(
        get(
            &text,
            &format!("mailbox_exporter_server_failed_logins_total{mail}")
        ),
        1.0
    );

    // Turned off: no budget series at all.
    cfg.failure_budget = None;
    m.apply_config(&cfg);
    assert!(!x.render().contains("failure_budget"));
}
