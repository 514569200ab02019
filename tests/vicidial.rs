//! The VICIdial account source against a real MariaDB holding `vicidial_email_accounts`: the
//! exporter's binary probes exactly the active inbound POP3/IMAP rows (against the simulator
//! and a real Dovecot, the trap advised in VICIdial's terms), follows rows inserted, changed
//! and deleted while it runs, keeps probing the last accounts while the database is stopped,
//! slow, or its table missing or changed, and never shows a password.

mod support;

#[path = "vicidial/site.rs"]
mod site;

use std::cell::Cell;

use mailbox_exporter::sim::{Behavior, SimServer, SimSpec};
use mailbox_exporter::verdict::{Protocol, TlsMode};
use site::{
    Exporter, Site, assert_no_secret, has_series, info_labels, run, set, source, source_errors,
    sum, unescape,
};
use support::{Dovecot, Flavor, Row};

/// The password of row `id`: unique, so a leak names its row.
fn row_password(id: &str) -> String {
    format!("Row-Secret-{id}")
}

/// A row of in-group `group` logging in as `u<id>` with [`row_password`] to `server`, every
/// second (`email_frequency_check_mins` 0 leaves the configured interval).
fn row(id: &str, protocol: &str, group: &str, server: &str) -> Row {
    Row::new(id)
        .protocol(protocol)
        .group(group)
        .server(server)
        .user(&format!("u{id}"))
        .password(&row_password(id))
        .frequency_mins(0)
}

/// A simulator knowing `u<id>` with [`row_password`] for each of `ids`.
async fn sim(protocol: Protocol, tls: TlsMode, ids: &[&str]) -> SimServer {
    let mut spec = SimSpec::new(protocol, tls, Behavior::Healthy);
    for id in ids {
        spec = spec.user(format!("u{id}"), row_password(id));
    }
    SimServer::start(spec).await.unwrap()
}

fn server(sim: &SimServer) -> String {
    format!("127.0.0.1:{}", sim.port())
}

/// Blocking harness work (MariaDB stopping, starting, locking) off the runtime's workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Successes of `account`, with its state checked to be kept: the last-success time it
/// shows never goes back (a reset account shows 0).
struct Counter<'a> {
    account: &'a str,
    last: Cell<f64>,
}

impl Counter<'_> {
    fn new(account: &str) -> Counter<'_> {
        Counter {
            account,
            last: Cell::new(0.0),
        }
    }

    /// The successes so far; panics if the scrape shows the account's state reset.
    fn read(&self, exporter: &Exporter, s: &support::http::Samples) -> f64 {
        let labels = [("account", self.account)];
        let now = s
            .find("mailbox_last_success_timestamp_seconds", &labels)
            .unwrap_or(0.0);
        assert!(
            now >= self.last.get(),
            "the last success of {} went from {} back to {now}: its state was reset",
            self.account,
            self.last.get()
        );
        self.last.set(now);
        exporter.successes(self.account)
    }
}

const ACTIVE: [&str; 6] = ["1001", "1002", "1003", "1004", "1005", "1006"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_rows_are_probed_when_active_inbound_pop3_or_imap_and_broken_ones_skipped() {
    let test = "realistic_rows_are_probed_when_active_inbound_pop3_or_imap";
    let Some(site) = Site::start_or_skip(test) else {
        return;
    };
    let ids = [
        "1001", "1002", "1003", "1004", "1005", "1006", "2001", "2002", "2003", "2004", "3001",
        "3002",
    ];
    let pop3s = sim(Protocol::Pop3, TlsMode::Implicit, &ids).await;
    let imaps = sim(Protocol::Imap, TlsMode::Implicit, &ids).await;
    let pop3 = sim(Protocol::Pop3, TlsMode::None, &ids).await;
    let (pop3s_at, imaps_at, pop3_at) = (server(&pop3s), server(&imaps), server(&pop3));
    let rows = [
        // Every pop3_auth_mode, over implicit TLS (VICIdial's way) and, by override, none.
        row("1001", "POP3", "SUPPORT", &pop3s_at)
            .name("Support inbox")
            .user_group("AGENTS"),
        row("1002", "POP3", "SUPPORT", &pop3_at).auth_mode("PASS"),
        row("1003", "POP3", "BILLING", &pop3s_at).auth_mode("APOP"),
        row("1004", "POP3", "BILLING", &pop3s_at).auth_mode("CRAM-MD5"),
        row("1005", "IMAP", "BILLING", &imaps_at),
        // VICIdial's own default: checked every 5 minutes, so probed every 5 minutes.
        row("1006", "IMAP", "SUPPORT", &imaps_at).frequency_mins(5),
        // Not probed: inactive, outbound, SMTP, an in-group the source does not follow.
        row("2001", "POP3", "SUPPORT", &pop3s_at).active(false),
        row("2002", "IMAP", "SUPPORT", &imaps_at).account_type("OUTBOUND"),
        row("2003", "SMTP", "SUPPORT", &pop3s_at),
        row("2004", "POP3", "SALES", &pop3s_at),
        // Broken: skipped with a warning, the other rows go on.
        row("3001", "POP3", "SUPPORT", ""),
    ];
    for r in &rows {
        site.db.insert_row(r);
    }
    // VICIdial's ENUM stores an unknown auth mode as '' when the SQL mode is not strict.
    let nope = row("3002", "POP3", "BILLING", &pop3s_at).auth_mode("NOPE");
    site.db.execute(&format!(
        "SET SESSION sql_mode = '';\n{}",
        nope.sql("INSERT")
    ));
    assert_eq!(
        site.db.query(
            "SELECT pop3_auth_mode FROM vicidial_email_accounts WHERE email_account_id = '3002'"
        ),
        "\n"
    );
    let ca = support::sim_ca_file();
    let config = site.config(&format!(
        "      in_groups: [SUPPORT, BILLING]\n      \
         defaults: {{tls: implicit, ca_file: \"{}\", interval: 1s}}\n      \
         overrides:\n        \"{pop3_at}\": {{tls: none}}\n",
        ca.display()
    ));
    let exporter = Exporter::start(&config).await;

    let s = exporter
        .wait("every probed row logged in once", |s| {
            source(s, "up") == Some(1.0)
                && ACTIVE[..5]
                    .iter()
                    .all(|a| s.find("mailbox_auth_success", &[("account", a)]) == Some(1.0))
        })
        .await;
    assert_eq!(info_labels(&s, "account"), set(&ACTIVE), "{}", s.text);
    assert_eq!(info_labels(&s, "group"), set(&["BILLING", "SUPPORT"]));
    assert_eq!(info_labels(&s, "source"), set(&["vicidial"]));
    assert_eq!(source(&s, "accounts"), Some(6.0));
    assert_eq!(source(&s, "skipped_rows"), Some(2.0));
    assert!(
        sum(
            &s,
            "mailbox_exporter_source_last_success_timestamp_seconds",
            &[]
        ) > 0.0
    );
    let info = |account: &str, labels: &[(&str, &str)]| {
        let mut all = vec![("account", account)];
        all.extend_from_slice(labels);
        assert_eq!(
            s.find("mailbox_account_info", &all),
            Some(1.0),
            "{all:?} in\n{}",
            s.text
        );
    };
    info(
        "1001",
        &[
            ("group", "SUPPORT"),
            ("protocol", "pop3"),
            ("server", &pop3s_at),
            ("tls", "implicit"),
            ("auth_mode", "BEST"),
            ("source", "vicidial"),
            ("email_account_name", "Support inbox"),
            ("user_group", "AGENTS"),
        ],
    );
    info("1002", &[("tls", "none"), ("auth_mode", "PASS")]);
    info("1003", &[("group", "BILLING"), ("auth_mode", "APOP")]);
    info("1004", &[("auth_mode", "CRAM-MD5")]);
    info(
        "1005",
        &[("protocol", "imap"), ("email_account_name", "1005 mailbox")],
    );
    info("1006", &[("user_group", "---ALL---")]);
    // Each pinned mode logged in with its method; BEST took the strongest.
    for (account, method) in [
        ("1001", "APOP"),
        ("1002", "PASS"),
        ("1003", "APOP"),
        ("1004", "CRAM-MD5"),
    ] {
        let labels = [("account", account), ("method", method)];
        assert_eq!(
            s.find("mailbox_auth_method", &labels),
            Some(1.0),
            "{account}"
        );
    }
    // Only the rows probed ever logged in: nothing else reached the servers.
    for sim in [&pop3s, &imaps, &pop3] {
        assert_eq!(sim.stats().logins_rejected, 0, "{:?}", sim.stats());
    }
    // The row checked every 5 minutes by VICIdial is not probed every second: by the time a
    // 1 s row has logged in three times, it has had at most its first probe.
    let s = exporter
        .wait("three probes of a 1 s row", |_| {
            exporter.successes("1001") >= 3.0
        })
        .await;
    assert!(exporter.successes("1006") <= 1.0, "{}", s.text);
    let skipped = exporter.logged("row skipped: email_account_server is empty");
    assert_eq!(skipped.len(), 1, "{}", exporter.log());
    assert_eq!(skipped[0]["fields"]["row"], "3001");

    let out = run(&[
        "check-config".into(),
        format!("--config.file={}", config.display()),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "source vicidial: 6 accounts in 2 in-groups: BILLING 3, SUPPORT 3; 2 rows skipped\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("  row \"3001\" skipped: email_account_server is empty\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  row \"3002\" skipped: pop3_auth_mode \"\" is none of"),
        "{stdout}"
    );

    let mut secrets: Vec<String> = ids.iter().map(|id| row_password(id)).collect();
    secrets.push(site.db.password().to_string());
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret("check-config", &format!("{stdout}{stderr}"), &secrets);
    assert_no_secret("/metrics", &exporter.scrape().await.text, &secrets);
    assert_no_secret("/", &exporter.page("/").await, &secrets);
    for account in ACTIVE {
        let page = exporter.page(&format!("/accounts/{account}")).await;
        assert_no_secret(account, &page, &secrets);
    }
    assert_no_secret("the log", &exporter.log(), &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_dovecot_rows_log_in_and_the_trap_is_advised_in_vicidial_terms() {
    let test = "real_dovecot_rows_log_in_and_the_trap_is_advised_in_vicidial_terms";
    let Some(site) = Site::start_or_skip(test) else {
        return;
    };
    let Some(plain) = Dovecot::start_or_skip(Flavor::Plaintext, test) else {
        return;
    };
    let Some(hashed) = Dovecot::start_or_skip(Flavor::Hashed, test) else {
        return;
    };
    let (plain_at, hashed_at) = (
        plain.pop3s_addr().to_string(),
        hashed.pop3s_addr().to_string(),
    );
    let dovecot_row = |id: &str, group: &str, d: &Dovecot, at: &str| {
        Row::new(id)
            .protocol("POP3")
            .group(group)
            .server(at)
            .user(d.user())
            .password(d.password())
            .frequency_mins(0)
    };
    site.db
        .insert_row(&dovecot_row("5001", "SUPPORT", &plain, &plain_at).auth_mode("PASS"));
    site.db
        .insert_row(&dovecot_row("5002", "BILLING", &hashed, &hashed_at).auth_mode("BEST"));
    site.db.insert_row(
        &dovecot_row("5003", "SUPPORT", &plain, &plain.imaps_addr().to_string()).protocol("IMAP"),
    );
    // Implicit TLS, VICIdial's default; each Dovecot has its own CA.
    let config = site.config(&format!(
        "      defaults: {{interval: 3s, timeout: 2900ms}}\n      overrides:\n        \
         \"{plain_at}\": {{ca_file: \"{}\"}}\n        \"{}\": {{ca_file: \"{}\"}}\n        \
         \"{hashed_at}\": {{ca_file: \"{}\"}}\n",
        plain.ca_file().display(),
        plain.imaps_addr(),
        plain.ca_file().display(),
        hashed.ca_file().display(),
    ));
    let exporter = Exporter::start(&config).await;
    let s = exporter
        .wait("the three rows logged in, the trap with a fallback", |s| {
            ["5001", "5002", "5003"]
                .iter()
                .all(|a| s.find("mailbox_auth_success", &[("account", a)]) == Some(1.0))
                && s.find("mailbox_auth_fallback", &[("account", "5002")]) == Some(1.0)
        })
        .await;
    // The fallback series exists only while 1.
    assert_eq!(
        s.find("mailbox_auth_fallback", &[("account", "5001")]),
        None
    );
    let labels = [("account", "5002"), ("method", "PASS")];
    assert_eq!(s.find("mailbox_auth_method", &labels), Some(1.0));

    let advice = "in VICIdial: Admin > Email Accounts > 5002, set Auth Mode to PASS";
    let page = exporter.page("/accounts/5002").await;
    assert!(unescape(&page).contains(advice), "{page}");
    assert!(unescape(&page).contains("pin auth_mode: PASS"), "{page}");
    let calm = exporter.page("/accounts/5001").await;
    assert!(!unescape(&calm).contains("in VICIdial:"), "{calm}");

    let out = run(&[
        "probe".into(),
        format!("--config.file={}", config.display()),
        "--account=5002".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(advice), "{stdout}");

    let secrets = [plain.password(), hashed.password(), site.db.password()];
    assert_no_secret("probe", &format!("{stdout}{stderr}"), &secrets);
    assert_no_secret("/metrics", &exporter.scrape().await.text, &secrets);
    assert_no_secret("/", &exporter.page("/").await, &secrets);
    assert_no_secret("/accounts/5002", &page, &secrets);
    assert_no_secret("/accounts/5001", &calm, &secrets);
    assert_no_secret("the log", &exporter.log(), &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_inserted_changed_and_removed_while_running_are_followed() {
    let test = "rows_inserted_changed_and_removed_while_running_are_followed";
    let Some(site) = Site::start_or_skip(test) else {
        return;
    };
    let pop3 = sim(Protocol::Pop3, TlsMode::None, &["6001", "6002", "6003"]).await;
    let at = server(&pop3);
    site.db.insert_row(&row("6001", "POP3", "SUPPORT", &at));
    site.db.insert_row(&row("6002", "POP3", "SUPPORT", &at));
    let config = site.config("      defaults: {tls: none, interval: 1s}\n");
    let exporter = Exporter::start(&config).await;
    let kept = Counter::new("6001");
    exporter
        .wait("both rows logged in", |s| {
            kept.read(&exporter, s) >= 1.0 && exporter.successes("6002") >= 1.0
        })
        .await;

    site.db.insert_row(&row("6003", "POP3", "BILLING", &at));
    let s = exporter
        .wait("the inserted row logged in", |s| {
            kept.read(&exporter, s);
            exporter.successes("6003") >= 1.0
        })
        .await;
    assert_eq!(info_labels(&s, "group"), set(&["BILLING", "SUPPORT"]));

    // Someone changed the password in VICIdial (to one the server does not take).
    let mut changed = row("6002", "POP3", "SUPPORT", &at);
    changed.email_account_pass = Some("Changed-Wrong-6002".into());
    site.db.replace_row(&changed);
    exporter
        .wait("the changed password rejected", |s| {
            kept.read(&exporter, s);
            let labels = [("account", "6002"), ("reason", "auth_rejected")];
            s.find("mailbox_auth_consecutive_failures", &labels) >= Some(1.0)
                && s.find("mailbox_auth_success", &[("account", "6002")]) == Some(0.0)
        })
        .await;

    site.db
        .replace_row(&row("6003", "POP3", "BILLING", &at).active(false));
    site.db.delete_row("6002");
    let s = exporter
        .wait("the deactivated and the deleted rows gone", |s| {
            kept.read(&exporter, s);
            !has_series(s, "6002") && !has_series(s, "6003")
        })
        .await;
    assert_eq!(info_labels(&s, "account"), set(&["6001"]));
    assert_eq!(info_labels(&s, "group"), set(&["SUPPORT"]));
    assert_eq!(source(&s, "accounts"), Some(1.0));
    let before = kept.read(&exporter, &s);
    exporter
        .wait("the untouched row still probed", |s| {
            kept.read(&exporter, s) >= before + 2.0
        })
        .await;
    assert_no_secret("the log", &exporter.log(), &["Changed-Wrong-6002"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_keeps_the_accounts_probed_and_is_followed_again_once_started() {
    let test = "a_stopped_database_keeps_the_accounts_probed";
    let Some(mut site) = Site::start_or_skip(test) else {
        return;
    };
    let pop3 = sim(Protocol::Pop3, TlsMode::None, &["7001", "7002", "7003"]).await;
    let at = server(&pop3);
    site.db.insert_row(&row("7001", "POP3", "SUPPORT", &at));
    site.db.insert_row(&row("7002", "POP3", "BILLING", &at));
    let config = site.dsn_config("      defaults: {tls: none, interval: 1s}\n");
    let exporter = Exporter::start(&config).await;
    let kept = Counter::new("7001");
    exporter
        .wait("both rows logged in", |s| {
            source(s, "up") == Some(1.0)
                && kept.read(&exporter, s) >= 1.0
                && exporter.successes("7002") >= 1.0
        })
        .await;

    blocking(|| site.db.stop());
    let s = exporter
        .wait("the source down", |s| {
            kept.read(&exporter, s);
            source(s, "up") == Some(0.0)
        })
        .await;
    let down = kept.read(&exporter, &s);
    let last_success = sum(
        &s,
        "mailbox_exporter_source_last_success_timestamp_seconds",
        &[],
    );
    // Three more probes a second apart: three more reads a second apart failed meanwhile.
    let s = exporter
        .wait("probes going on while the database is down", |s| {
            kept.read(&exporter, s) >= down + 3.0 && exporter.successes("7002") >= 1.0
        })
        .await;
    assert_eq!(source(&s, "up"), Some(0.0));
    assert_eq!(source(&s, "accounts"), Some(2.0));
    assert_eq!(info_labels(&s, "account"), set(&["7001", "7002"]));
    assert_eq!(
        sum(
            &s,
            "mailbox_exporter_source_last_success_timestamp_seconds",
            &[]
        ),
        last_success
    );
    // Logged when the state changed, not once per read: a read during the shutdown may
    // have failed for another reason first, but the refused connections since say nothing.
    let errors = source_errors(&exporter);
    assert!(
        !errors.is_empty() && errors.len() <= 2,
        "logged once per change, not once per read: {errors:?}"
    );
    assert!(errors.windows(2).all(|w| w[0] != w[1]), "{errors:?}");
    assert!(
        errors
            .last()
            .unwrap()
            .starts_with("cannot connect to the database"),
        "{errors:?}"
    );
    let s = exporter
        .wait("three more probes", |s| {
            kept.read(&exporter, s) >= down + 6.0
        })
        .await;
    assert_eq!(source(&s, "up"), Some(0.0));
    assert_eq!(source_errors(&exporter), errors, "{}", exporter.log());

    blocking(|| site.db.start());
    // Changed before the exporter's first read of the database back up.
    site.db.insert_row(&row("7003", "POP3", "SUPPORT", &at));
    site.db.delete_row("7002");
    let s = exporter
        .wait("the source back up with the changes", |s| {
            kept.read(&exporter, s);
            source(s, "up") == Some(1.0)
                && exporter.successes("7003") >= 1.0
                && !has_series(s, "7002")
        })
        .await;
    assert_eq!(info_labels(&s, "account"), set(&["7001", "7003"]));
    // A read while the server was starting up may have failed once more, for its own reason.
    let since = source_errors(&exporter);
    assert!(
        since.starts_with(&errors) && since.len() <= errors.len() + 1,
        "{since:?}"
    );
    assert_eq!(
        exporter.logged("account source readable again").len(),
        1,
        "{}",
        exporter.log()
    );
    assert_no_secret("the log", &exporter.log(), &[site.db.password()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_changed_database_flips_the_source_and_keeps_the_last_accounts() {
    let test = "a_slow_or_changed_database_flips_the_source";
    let Some(site) = Site::start_or_skip(test) else {
        return;
    };
    let pop3 = sim(Protocol::Pop3, TlsMode::None, &["8001", "8002"]).await;
    let at = server(&pop3);
    site.db.insert_row(&row("8001", "POP3", "SUPPORT", &at));
    site.db.insert_row(&row("8002", "POP3", "BILLING", &at));
    let config = site.config("      timeout: 1s\n      defaults: {tls: none, interval: 1s}\n");
    let exporter = Exporter::start(&config).await;
    let kept = Counter::new("8001");
    exporter
        .wait("both rows logged in", |s| {
            source(s, "up") == Some(1.0)
                && kept.read(&exporter, s) >= 1.0
                && exporter.successes("8002") >= 1.0
        })
        .await;

    // Each fault: the source goes down, the accounts stay and are still probed; undone, it
    // comes back up.
    let fault = |what: &'static str| {
        let exporter = &exporter;
        let kept = &kept;
        async move {
            let s = exporter
                .wait(what, |s| {
                    kept.read(exporter, s);
                    source(s, "up") == Some(0.0)
                })
                .await;
            let at_down = kept.read(exporter, &s);
            let s = exporter
                .wait("probes going on", |s| {
                    kept.read(exporter, s) >= at_down + 2.0
                })
                .await;
            assert_eq!(source(&s, "up"), Some(0.0), "{what}");
            assert_eq!(source(&s, "accounts"), Some(2.0), "{what}");
            assert_eq!(info_labels(&s, "account"), set(&["8001", "8002"]), "{what}");
        }
    };
    let up = |what: &'static str| {
        exporter.wait(what, |s| {
            kept.read(&exporter, s);
            source(s, "up") == Some(1.0)
        })
    };

    // A read waiting on a table lock: the source's 1 s deadline ends it.
    let lock = blocking(|| site.db.lock_table());
    fault("the source down while the table is locked").await;
    let last = source_errors(&exporter).pop();
    assert_eq!(last.as_deref(), Some("no answer within 1s (timeout)"));
    assert!(site.db.sessions_waiting_for_lock() >= 1);
    drop(lock);
    up("the source up once the lock is gone").await;

    // A hung server: the connection is accepted, nothing answers.
    blocking(|| site.db.freeze());
    fault("the source down while the server hangs").await;
    blocking(|| site.db.thaw());
    up("the source up once the server answers").await;

    site.db.execute(
        "ALTER TABLE vicidial_email_accounts MODIFY email_frequency_check_mins VARCHAR(10);",
    );
    fault("the source down with a column of an unexpected type").await;
    let errors = source_errors(&exporter);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("email_frequency_check_mins")),
        "{errors:?}"
    );
    site.db.execute(
        "ALTER TABLE vicidial_email_accounts \
         MODIFY email_frequency_check_mins TINYINT(3) UNSIGNED DEFAULT '5';",
    );
    up("the source up with the column's type restored").await;

    site.db
        .execute("RENAME TABLE vicidial_email_accounts TO vicidial_email_accounts_old;");
    fault("the source down with the table missing").await;
    let last = source_errors(&exporter).pop().unwrap_or_default();
    assert!(
        last.contains("vicidial_email_accounts' doesn't exist"),
        "{last}"
    );
    site.db
        .execute("RENAME TABLE vicidial_email_accounts_old TO vicidial_email_accounts;");
    let s = up("the source up with the table back").await;
    assert_eq!(info_labels(&s, "account"), set(&["8001", "8002"]));
    assert_no_secret("the log", &exporter.log(), &[site.db.password()]);
}
