//! Tests of the per-account and per-group model: which series exist when, their values, the
//! series budget, and what survives a reload.

use super::*;

#[test]
fn before_any_probe_an_account_has_only_its_always_present_series_at_zero() {
    let (m, x) = metrics();
    m.apply_config(&config(two_accounts()));
    let text = x.render();

    for family in ALWAYS {
        assert_eq!(
            text.matches(&format!("# TYPE {family} ")).count(),
            1,
            "{family}"
        );
    }
    let s = |extra: &str| acct("support-inbox", extra);
    for family in ALWAYS.iter().take(5) {
        assert_eq!(get(&text, &format!("{family}{}", s(""))), 0.0, "{family}");
    }
    for p in ["connect", "tls", "greeting", "auth"] {
        let labels = format!("phase=\"{p}\"");
        assert_eq!(
            get(&text, &format!("mailbox_probe_phase_seconds{}", s(&labels))),
            0.0
        );
    }
    assert!(!text.contains("phase=\"total\""));
    assert_eq!(
        get(
            &text,
            &format!(
                "mailbox_account_info{}",
                s(
                    "protocol=\"pop3\",server=\"mail.example.com:995\",tls=\"implicit\",\
                   auth_mode=\"BEST\",source=\"file\""
                )
            )
        ),
        1.0
    );
    assert_eq!(
        get(
            &text,
            &format!(
                "mailbox_account_info{}",
                acct(
                    "sales-inbox",
                    "protocol=\"imap\",server=\"mail.example.com:995\",tls=\"implicit\",\
                   auth_mode=\"auto\",source=\"file\""
                )
            )
        ),
        1.0
    );
    // Nothing is initialised for what has not happened: no method, no reason, no flags,
    // no group counters, no certificate.
    for family in [
        "mailbox_auth_method",
        "mailbox_auth_consecutive_failures",
        "mailbox_auth_fallback",
        "mailbox_auth_cleartext",
        "mailbox_probe_backoff",
        "mailbox_auth_attempts_total",
        "mailbox_group_failures_total",
        "mailbox_group_auth_attempts_total",
        "mailbox_tls_cert_expiry_timestamp_seconds",
    ] {
        assert!(
            !text.contains(&format!("\n{family}{{")) && !text.contains(&format!(" {family} ")),
            "{family} in:\n{text}"
        );
    }
    assert_eq!(series_of(&text, "support-inbox").len(), 10);
    for g in ["support", "sales"] {
        let l = format!("{{group=\"{g}\"}}");
        assert_eq!(get(&text, &format!("mailbox_group_accounts{l}")), 1.0);
        assert_eq!(
            get(&text, &format!("mailbox_group_accounts_authenticated{l}")),
            0.0
        );
        assert_eq!(
            get(&text, &format!("mailbox_probe_duration_seconds_count{l}")),
            0.0
        );
    }
    assert_eq!(
        get(
            &text,
            &format!(
                "mailbox_exporter_build_info{{version=\"{}\",revision=\"{REVISION}\",rustversion=\"{RUST_VERSION}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(
        get(&text, "mailbox_exporter_config_last_reload_successful"),
        0.0
    );
    assert_eq!(get(&text, "mailbox_exporter_probes_in_flight"), 0.0);
    assert_eq!(get(&text, "mailbox_exporter_schedule_lag_seconds"), 0.0);
    // Accounts by group, then name.
    assert!(text.find("group=\"sales\"").unwrap() < text.find("group=\"support\"").unwrap());
}

#[test]
fn build_info_names_the_commit_and_the_rust_version() {
    assert!(!REVISION.is_empty() && !REVISION.contains(char::is_whitespace));
    // `rustc --version` says e.g. `rustc 1.95.0 (...)`: only the version is kept.
    assert!(
        RUST_VERSION.split('.').count() >= 3
            && RUST_VERSION.starts_with(|c: char| c.is_ascii_digit()),
        "{RUST_VERSION}"
    );
}

#[test]
fn the_process_collector_reports_this_process() {
    let (_, x) = metrics();
    let text = x.render();
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} in:\n{text}"
        );
    }
    assert!(get(&text, "process_resident_memory_bytes") > 0.0);
    assert!(get(&text, "process_open_fds") > 0.0);
}

#[test]
fn tls_phase_only_for_accounts_with_tls() {
    let (m, x) = metrics();
    let mut plain = account("support", "plain-inbox", Protocol::Pop3);
    plain.target.tls.mode = TlsMode::None;
    plain.target.port = 110;
    let mut starttls = account("support", "starttls-inbox", Protocol::Imap);
    starttls.target.tls.mode = TlsMode::Starttls;
    m.apply_config(&config(vec![plain, starttls]));
    let text = x.render();
    let phases = |name: &str| {
        series_of(&text, name)
            .iter()
            .filter_map(|l| l.split("phase=\"").nth(1)?.split('"').next())
            .collect::<Vec<_>>()
    };
    assert_eq!(phases("plain-inbox"), ["connect", "greeting", "auth"]);
    assert_eq!(
        phases("starttls-inbox"),
        ["connect", "tls", "greeting", "auth"]
    );
}

#[test]
fn series_per_account_stay_within_the_budget() {
    let (m, x) = metrics();
    let accounts = vec![
        account("support", "healthy", Protocol::Imap),
        account("support", "trap", Protocol::Pop3),
        account("support", "failing", Protocol::Pop3),
        account("support", "timing-out", Protocol::Imap),
    ];
    m.apply_config(&config(accounts.clone()));
    let cert = |mut v: Verdict| {
        v.cert_expiry = Some(1_800_000_000);
        v
    };
    for n in 0..5 {
        let t = at(1_700_000_000 + n);
        m.record(&accounts[0], cert(success(Method::Plain, false, vec![])), t);
        m.record(&accounts[1], cert(trap()), t);
        m.record(
            &accounts[2],
            failure(Reason::AuthRejected, vec![]),
            at(1_700_000_000 + n),
        );
        m.record(&accounts[3], failure(Reason::Timeout, vec![]), t);
    }
    let text = x.render();
    let counts: Vec<(&str, usize)> = ["healthy", "trap", "failing", "timing-out"]
        .into_iter()
        .map(|name| (name, series_of(&text, name).len()))
        .collect();
    eprintln!("series per account: {counts:?}");
    // The model's steady-state counts: healthy TLS 11, trap 12, failing with backoff 12,
    // failing for another reason 11.
    assert_eq!(
        counts,
        [
            ("healthy", 11),
            ("trap", 12),
            ("failing", 12),
            ("timing-out", 11)
        ]
    );
    for (name, n) in counts {
        assert!(
            n <= SERIES_BUDGET,
            "{name} has {n} series, over the budget of {SERIES_BUDGET}:\n{}",
            series_of(&text, name).join("\n")
        );
    }
    let mut trap_families = families_of(&text, "trap");
    trap_families.dedup();
    assert!(trap_families.contains(&"mailbox_auth_fallback".to_string()));
    assert!(families_of(&text, "failing").contains(&"mailbox_probe_backoff".to_string()));
}

#[test]
fn an_oauth2_account_has_the_same_families() {
    let mut oauth = account("support", "support-inbox", Protocol::Imap);
    oauth.target.oauth2 = Some(crate::token::OAuth2Login::for_test("m365"));
    let (m, x) = metrics();
    m.apply_config(&config(vec![oauth.clone()]));
    m.record(&oauth, failure(Reason::TokenRejected, vec![]), at(10));
    let text = x.render();
    let s = |extra: &str| acct("support-inbox", extra);
    assert_eq!(
        get(
            &text,
            &format!(
                "mailbox_auth_consecutive_failures{}",
                s("reason=\"token_rejected\"")
            )
        ),
        1.0
    );
    assert_eq!(
        get(
            &text,
            "mailbox_group_failures_total{group=\"support\",reason=\"token_rejected\"}"
        ),
        1.0
    );
    assert!(series_of(&text, "support-inbox").len() <= SERIES_BUDGET);
}

#[test]
fn families_have_one_help_and_type_each_and_accounts_follow_the_registry() {
    let (m, x) = metrics();
    let accounts = two_accounts();
    m.apply_config(&config(accounts.clone()));
    m.record(&accounts[0], trap(), at(10));
    let text = x.render();
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), types.len(), "a family twice: {types:?}");
    assert_eq!(text.matches("# HELP ").count(), types.len());
    // The registry's families (sorted by name) come first, then the accounts' and groups'.
    let first_account = types
        .iter()
        .position(|&t| t == "mailbox_auth_success")
        .unwrap();
    assert!(
        types[..first_account]
            .iter()
            .all(|t| t.starts_with("mailbox_exporter_") || t.starts_with("process_")),
        "{types:?}"
    );
    assert_eq!(
        types[first_account..],
        [
            "mailbox_auth_success",
            "mailbox_auth_method",
            "mailbox_auth_failures_total",
            "mailbox_auth_fallback",
            "mailbox_last_probe_timestamp_seconds",
            "mailbox_last_success_timestamp_seconds",
            "mailbox_probe_last_duration_seconds",
            "mailbox_probe_phase_seconds",
            "mailbox_account_info",
            "mailbox_group_accounts",
            "mailbox_group_accounts_authenticated",
            "mailbox_group_auth_attempts_total",
            "mailbox_probe_duration_seconds",
        ]
    );
}

#[test]
fn a_recorded_probe_changes_exactly_its_series() {
    let (m, x) = metrics();
    let accounts = two_accounts();
    m.apply_config(&config(accounts.clone()));
    let mut v = trap();
    v.cert_expiry = Some(1_800_000_000);
    v.phases.connect = Duration::from_millis(12);
    v.phases.total = Duration::from_millis(300);
    v.advice = Some("APOP advertised but rejected; pin auth_mode: PASS".into());
    let finished = at(1_700_000_000) + Duration::from_millis(250);
    m.record(&accounts[0], v, finished);
    let text = x.render();
    let s = |extra: &str| acct("support-inbox", extra);
    let g = |family: &str, extra: &str| get(&text, &format!("{family}{}", s(extra)));
    let has = |family: &str| {
        series_of(&text, "support-inbox")
            .iter()
            .any(|l| l.starts_with(&format!("{family}{{")))
    };

    assert_eq!(g("mailbox_auth_success", ""), 1.0);
    assert_eq!(g("mailbox_auth_method", "method=\"PASS\""), 1.0);
    assert_eq!(
        series_of(&text, "support-inbox")
            .iter()
            .filter(|l| l.starts_with("mailbox_auth_method{"))
            .count(),
        1
    );
    assert_eq!(g("mailbox_auth_fallback", ""), 1.0);
    assert!(!has("mailbox_auth_consecutive_failures"));
    assert!(!has("mailbox_auth_cleartext"));
    assert!(!has("mailbox_probe_backoff"));
    assert_eq!(g("mailbox_auth_failures_total", ""), 0.0);
    assert_eq!(g("mailbox_probe_phase_seconds", "phase=\"connect\""), 0.012);
    assert_eq!(g("mailbox_probe_last_duration_seconds", ""), 0.3);
    assert_eq!(
        g("mailbox_last_probe_timestamp_seconds", ""),
        1_700_000_000.25
    );
    assert!(text.contains(&format!(
        "mailbox_last_probe_timestamp_seconds{} 1700000000.250\n",
        s("")
    )));
    assert_eq!(
        g("mailbox_last_success_timestamp_seconds", ""),
        1_700_000_000.25
    );
    // The certificate is the server's, not the account's.
    assert_eq!(
        get(
            &text,
            "mailbox_tls_cert_expiry_timestamp_seconds{server=\"mail.example.com:995\"}"
        ),
        1_800_000_000.0
    );
    let group =
        |family: &str, extra: &str| get(&text, &format!("{family}{{group=\"support\",{extra}}}"));
    assert_eq!(
        group(
            "mailbox_group_auth_attempts_total",
            "method=\"APOP\",result=\"rejected\""
        ),
        1.0
    );
    assert_eq!(
        group(
            "mailbox_group_auth_attempts_total",
            "method=\"PASS\",result=\"success\""
        ),
        1.0
    );
    assert_eq!(
        text.matches("mailbox_group_auth_attempts_total{").count(),
        2,
        "only the pairs that happened"
    );
    assert_eq!(
        get(
            &text,
            "mailbox_group_accounts_authenticated{group=\"support\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &text,
            "mailbox_group_accounts_authenticated{group=\"sales\"}"
        ),
        0.0
    );
    // The other account is untouched.
    let i = |family: &str| get(&text, &format!("{family}{}", acct("sales-inbox", "")));
    assert_eq!(i("mailbox_auth_success"), 0.0);
    assert_eq!(i("mailbox_last_probe_timestamp_seconds"), 0.0);
    // Free text never reaches the exposition.
    assert!(!text.contains("pin auth_mode"));

    // Three wrong passwords in a row: failing, counted, backing off, method and fallback
    // gone.
    for n in 1..=3 {
        m.record(
            &accounts[0],
            failure(Reason::AuthRejected, vec![]),
            at(1_700_000_000 + n),
        );
    }
    let text = x.render();
    let g = |family: &str, extra: &str| get(&text, &format!("{family}{}", s(extra)));
    let has = |family: &str| {
        series_of(&text, "support-inbox")
            .iter()
            .any(|l| l.starts_with(&format!("{family}{{")))
    };
    assert_eq!(g("mailbox_auth_success", ""), 0.0);
    assert_eq!(g("mailbox_auth_failures_total", ""), 3.0);
    assert_eq!(
        g(
            "mailbox_auth_consecutive_failures",
            "reason=\"auth_rejected\""
        ),
        3.0
    );
    assert_eq!(g("mailbox_probe_backoff", ""), 1.0);
    assert!(!has("mailbox_auth_fallback"));
    assert!(!has("mailbox_auth_method"));
    assert_eq!(
        get(
            &text,
            "mailbox_group_failures_total{group=\"support\",reason=\"auth_rejected\"}"
        ),
        3.0
    );
    assert!(!text.contains("reason=\"timeout\""));
    assert_eq!(
        g("mailbox_last_success_timestamp_seconds", ""),
        1_700_000_000.25
    );
    assert_eq!(
        g("mailbox_last_probe_timestamp_seconds", ""),
        1_700_000_003.0
    );
    assert_eq!(m.plan("support-inbox").backoff_factor, 4);
    assert_eq!(m.plan("support-inbox").preferred, None);
    assert_eq!(m.plan("nobody"), Plan::default());

    // Another reason: the current reason moves, the count starts again.
    m.record(
        &accounts[0],
        failure(Reason::Timeout, vec![]),
        at(1_700_000_010),
    );
    let text = x.render();
    let reasons: Vec<&str> = series_of(&text, "support-inbox")
        .into_iter()
        .filter(|l| l.starts_with("mailbox_auth_consecutive_failures{"))
        .collect();
    assert_eq!(
        reasons,
        [format!(
            "mailbox_auth_consecutive_failures{} 4",
            s("reason=\"timeout\"")
        )]
    );
    // Cleartext shows while the last probe sent the password unencrypted.
    let mut v = success(Method::Pass, false, vec![]);
    v.cleartext = true;
    m.record(&accounts[0], v, at(1_700_000_020));
    let text = x.render();
    assert_eq!(get(&text, &format!("mailbox_auth_cleartext{}", s(""))), 1.0);
}

#[test]
fn removed_accounts_and_empty_groups_vanish_with_their_counters() {
    let (m, x) = metrics();
    let accounts = two_accounts();
    m.apply_config(&config(accounts.clone()));
    let mut v = failure(Reason::Timeout, vec![]);
    v.cert_expiry = Some(1_800_000_000);
    m.record(&accounts[1], v, at(10));
    m.apply_config(&config(vec![accounts[0].clone()]));
    let text = x.render();
    assert!(!text.contains("sales"), "{text}");
    assert!(text.contains("account=\"support-inbox\""));
    assert!(m.account("sales-inbox").is_none());
    assert_eq!(m.accounts().len(), 1);
    // A result for the removed account is dropped.
    m.record(&accounts[1], success(Method::Plain, false, vec![]), at(20));
    assert!(!x.render().contains("sales"));
}

#[test]
fn group_counters_outlive_the_accounts_that_made_them() {
    let (m, x) = metrics();
    let a = account("support", "a", Protocol::Pop3);
    let b = account("support", "b", Protocol::Pop3);
    m.apply_config(&config(vec![a.clone(), b.clone()]));
    m.record(&a, failure(Reason::ServerBusy, vec![]), at(10));
    m.apply_config(&config(vec![b.clone()]));
    let text = x.render();
    assert_eq!(
        get(
            &text,
            "mailbox_group_failures_total{group=\"support\",reason=\"server_busy\"}"
        ),
        1.0
    );
    assert!(!text.contains("account=\"a\""));
}

#[test]
fn a_server_certificate_goes_when_no_account_uses_the_server() {
    let (m, x) = metrics();
    let a = account("support", "a", Protocol::Pop3);
    let mut b = account("support", "b", Protocol::Imap);
    b.target.host = "imap.example.com".into();
    b.target.port = 993;
    m.apply_config(&config(vec![a.clone(), b.clone()]));
    for (acct, expiry) in [(&a, 1_800_000_000), (&b, 1_900_000_000)] {
        let mut v = success(Method::Plain, false, vec![]);
        v.cert_expiry = Some(expiry);
        m.record(acct, v, at(10));
    }
    // The latest probe to a server wins.
    let mut v = success(Method::Pass, false, vec![]);
    v.cert_expiry = Some(1_850_000_000);
    m.record(&a, v, at(20));
    let text = x.render();
    let cert = |server: &str| {
        value(
            &text,
            &format!("mailbox_tls_cert_expiry_timestamp_seconds{{server=\"{server}\"}}"),
        )
    };
    assert_eq!(cert("mail.example.com:995"), Some(1_850_000_000.0));
    assert_eq!(cert("imap.example.com:993"), Some(1_900_000_000.0));
    m.apply_config(&config(vec![a.clone()]));
    let text = x.render();
    assert!(!text.contains("imap.example.com"), "{text}");
    assert!(text.contains("server=\"mail.example.com:995\"} 1850000000"));
}

#[test]
fn a_changed_account_keeps_its_counters_but_forgets_its_method() {
    let (m, x) = metrics();
    let mut accounts = two_accounts();
    m.apply_config(&config(accounts.clone()));
    m.record(&accounts[0], trap(), at(10));
    m.record(&accounts[0], failure(Reason::AuthRejected, vec![]), at(11));
    m.record(&accounts[0], failure(Reason::AuthRejected, vec![]), at(12));
    m.record(&accounts[0], trap(), at(13));
    assert_eq!(m.plan("support-inbox").preferred, Some(Method::Pass));

    // Unchanged: everything kept.
    m.apply_config(&config(accounts.clone()));
    assert_eq!(m.plan("support-inbox").preferred, Some(Method::Pass));
    assert!(m.account("support-inbox").unwrap().fallback);

    accounts[0].target.auth_mode = AuthMode::Pass;
    m.apply_config(&config(accounts.clone()));
    assert_eq!(m.plan("support-inbox"), Plan::default());
    let view = m.account("support-inbox").unwrap();
    assert!(!view.fallback);
    assert_eq!(view.auth_mode, "PASS");
    let text = x.render();
    let s = |extra: &str| acct("support-inbox", extra);
    assert_eq!(
        get(&text, &format!("mailbox_auth_failures_total{}", s(""))),
        2.0
    );
    assert!(!text.contains("mailbox_auth_fallback{"));
    assert_eq!(
        get(
            &text,
            "mailbox_group_auth_attempts_total{group=\"support\",method=\"APOP\",result=\"rejected\"}"
        ),
        2.0
    );
    assert!(text.contains("auth_mode=\"PASS\""));
    assert!(!text.contains("auth_mode=\"BEST\""));
}

#[test]
fn a_result_from_before_a_reload_is_ignored() {
    let (m, x) = metrics();
    let accounts = two_accounts();
    m.apply_config(&config(accounts.clone()));
    let mut changed = accounts[0].clone();
    changed.target.host = "mail2.example.com".into();
    m.apply_config(&config(vec![changed.clone(), accounts[1].clone()]));
    // The probe ran with the old settings.
    m.record(&accounts[0], trap(), at(10));
    let view = m.account("support-inbox").unwrap();
    assert!(!view.probed);
    assert_eq!(view.server, "mail2.example.com:995");
    assert!(!x.render().contains("mailbox_group_auth_attempts_total"));
    m.record(&changed, trap(), at(11));
    let view = m.account("support-inbox").unwrap();
    assert!(view.probed && view.success);
    assert_eq!(view.last_probe, Some(at(11)));
}

#[test]
fn an_account_moved_to_another_group_follows_it() {
    let (m, x) = metrics();
    let accounts = two_accounts();
    m.apply_config(&config(accounts.clone()));
    let mut moved = accounts[0].clone();
    moved.group = "sales".into();
    m.apply_config(&config(vec![moved, accounts[1].clone()]));
    let text = x.render();
    assert!(!text.contains("group=\"support\""));
    assert_eq!(get(&text, "mailbox_group_accounts{group=\"sales\"}"), 2.0);
    assert!(text.contains("mailbox_auth_success{group=\"sales\",account=\"support-inbox\"} 0"));
}

#[test]
fn label_values_are_escaped() {
    let (m, x) = metrics();
    let a = account("front \"desk\" \\ east\nwing", "inbox", Protocol::Pop3);
    m.apply_config(&config(vec![a.clone()]));
    m.record(&a, failure(Reason::Timeout, vec![]), at(10));
    m.source_status("odd \"source\"\n", Some(source_status(true)));
    let text = x.render();
    let labels = r#"group="front \"desk\" \\ east\nwing",account="inbox""#;
    assert_eq!(
        get(&text, &format!("mailbox_auth_success{{{labels}}}")),
        0.0
    );
    assert_eq!(
        get(
            &text,
            r#"mailbox_group_accounts{group="front \"desk\" \\ east\nwing"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &text,
            r#"mailbox_group_failures_total{group="front \"desk\" \\ east\nwing",reason="timeout"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &text,
            r#"mailbox_exporter_source_up{source="odd \"source\"\n"}"#
        ),
        1.0
    );
    // No raw newline from a label splits a line.
    assert!(
        text.lines()
            .all(|l| l.starts_with('#') || l.starts_with("mailbox_") || l.starts_with("process_"))
    );
}

#[test]
fn histogram_buckets_are_cumulative() {
    let (m, x) = metrics();
    let accounts = vec![
        account("support", "a", Protocol::Pop3),
        account("support", "b", Protocol::Pop3),
    ];
    m.apply_config(&config(accounts.clone()));
    for (i, ms) in [30u64, 50, 700, 3_000, 45_000, 90_000]
        .into_iter()
        .enumerate()
    {
        let mut v = success(Method::Pass, false, vec![]);
        v.phases.total = Duration::from_millis(ms);
        m.record(&accounts[i % 2], v, at(i as u64));
    }
    let text = x.render();
    let bucket = |le: &str| {
        get(
            &text,
            &format!("mailbox_probe_duration_seconds_bucket{{group=\"support\",le=\"{le}\"}}"),
        )
    };
    let expected = [
        ("0.05", 2.0),
        ("0.1", 2.0),
        ("0.25", 2.0),
        ("0.5", 2.0),
        ("1", 3.0),
        ("2.5", 3.0),
        ("5", 4.0),
        ("10", 4.0),
        ("30", 4.0),
        ("60", 5.0),
        ("+Inf", 6.0),
    ];
    for (le, want) in expected {
        assert_eq!(bucket(le), want, "le={le}");
    }
    assert_eq!(
        get(
            &text,
            "mailbox_probe_duration_seconds_count{group=\"support\"}"
        ),
        6.0
    );
    let sum = get(
        &text,
        "mailbox_probe_duration_seconds_sum{group=\"support\"}",
    );
    assert!((sum - 138.78).abs() < 1e-9, "{sum}");
}

#[test]
fn a_password_never_appears() {
    let (m, x) = metrics();
    let mut accounts = two_accounts();
    accounts[0].target.password = crate::secret::Password::new("s3cret-Pa55");
    m.apply_config(&config(accounts.clone()));
    let mut v = trap();
    v.transcript = vec!["C: PASS s3cret-Pa55".into()];
    v.detail = Some("s3cret-Pa55".into());
    m.record(&accounts[0], v, at(10));
    m.record(&accounts[0], failure(Reason::AuthRejected, vec![]), at(11));
    assert!(!x.render().contains("s3cret"));
}
