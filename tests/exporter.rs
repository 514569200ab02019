//! The exporter as an operator runs it: started against the simulator and a real Dovecot,
//! scraped over HTTP, reloaded, signalled. Every assertion reads what a scraper receives.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use mailbox_exporter::app::{self, RunOptions, Running};
use mailbox_exporter::sim::{Behavior, SimServer, SimSpec, sim_certificate};
use mailbox_exporter::verdict::{Protocol, TlsMode};
use support::http::{self, Samples, scrape, wait_for};
use support::{Dovecot, Flavor};

const PASSWORD: &str = "Exp0rter-Secret";
const USER: &str = "agent";

/// Polling gives up after this long: a condition not met by then is a failure.
const PATIENCE: Duration = Duration::from_secs(30);

/// A directory with a config file, the simulator CA and a password file.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &sim_certificate().cert_pem).unwrap();
        std::fs::write(dir.path().join("secret"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(dir.path().join("wrong"), "not-the-password\n").unwrap();
        Setup { dir }
    }

    fn config_file(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    fn write(&self, text: &str) {
        std::fs::write(self.config_file(), text).unwrap();
    }

    async fn start(&self) -> Running {
        app::start(RunOptions {
            config_file: self.config_file(),
            listen_address: "127.0.0.1:0".parse().unwrap(),
            web_config_file: None,
            shard: None,
            // The tests reload over HTTP as well as through the handle.
            enable_lifecycle: true,
        })
        .await
        .expect("the exporter starts")
    }
}

/// One account line of a YAML config.
fn account(name: &str, protocol: Protocol, tls: TlsMode, port: u16, extra: &str) -> String {
    format!(
        "      - {{ name: {name}, protocol: {protocol}, tls: {tls}, server: \"127.0.0.1:{port}\", \
         username: {USER}, password_file: secret, ca_file: ca.pem{extra} }}\n"
    )
}

fn config(header: &str, groups: &[(&str, String)]) -> String {
    // These servers share 127.0.0.1 and fail logins on purpose, many a minute: no failed-login
    // budget here (tests/lockout.rs tests it).
    let mut text = format!("{header}\nfailure_budget: {{failures: 0}}\ngroups:\n");
    for (name, accounts) in groups {
        text.push_str(&format!("  - name: {name}\n    accounts:\n{accounts}"));
    }
    text
}

async fn sim(protocol: Protocol, tls: TlsMode, behavior: Behavior) -> SimServer {
    SimServer::start(SimSpec::new(protocol, tls, behavior).user(USER, PASSWORD))
        .await
        .unwrap()
}

fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn value(s: &Samples, name: &str, account: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("account", account)];
    all.extend_from_slice(labels);
    s.find(name, &all)
        .unwrap_or_else(|| panic!("no {name} for {account} {labels:?} in:\n{}", s.text))
}

/// Probes of each account seen finishing so far. The model keeps no per-account probe
/// counter: an account's last-probe timestamp changes with every probe that finishes, and
/// scrapes come every 100 ms while one account is probed at most once a second, so the
/// distinct timestamps seen count its probes (a missed one only makes a wait longer).
#[derive(Default)]
struct Seen(Mutex<HashMap<String, BTreeSet<u64>>>);

impl Seen {
    fn probes(&self, s: &Samples, account: &str) -> f64 {
        let at = last_probe(s, account);
        let mut seen = self.0.lock().unwrap();
        let times = seen.entry(account.to_string()).or_default();
        if at > 0.0 {
            times.insert(at.to_bits());
        }
        times.len() as f64
    }
}

/// `account` logged in at least once.
fn logged_in(s: &Samples, account: &str) -> bool {
    s.find(
        "mailbox_last_success_timestamp_seconds",
        &[("account", account)],
    )
    .is_some_and(|t| t > 0.0)
}

/// Attempts of `group`'s accounts with `method`, whatever their result.
fn tries(s: &Samples, group: &str, method: &str) -> f64 {
    ["success", "rejected", "error"]
        .iter()
        .filter_map(|r| {
            s.find(
                "mailbox_group_auth_attempts_total",
                &[("group", group), ("method", method), ("result", r)],
            )
        })
        .sum()
}

/// The commands `server` saw with this verb.
fn commands(server: &SimServer, verb: &str) -> usize {
    server
        .stats()
        .commands
        .iter()
        .filter(|c| *c == verb)
        .count()
}

fn last_probe(s: &Samples, account: &str) -> f64 {
    s.find(
        "mailbox_last_probe_timestamp_seconds",
        &[("account", account)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_for_each_behaviour() {
    let healthy_pop3 = sim(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy).await;
    let trap = sim(
        Protocol::Pop3,
        TlsMode::Implicit,
        Behavior::UnverifiableDigests,
    )
    .await;
    let cleartext = sim(Protocol::Pop3, TlsMode::None, Behavior::CleartextOnly).await;
    let imap = sim(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy).await;
    let setup = Setup::new();
    setup.write(&config(
        "interval: 1s\ntimeout: 900ms",
        &[
            (
                "support",
                account(
                    "apop",
                    Protocol::Pop3,
                    TlsMode::Implicit,
                    healthy_pop3.port(),
                    "",
                ) + &account("trap", Protocol::Pop3, TlsMode::Implicit, trap.port(), ""),
            ),
            (
                "sales",
                account(
                    "wrong",
                    Protocol::Pop3,
                    TlsMode::Implicit,
                    healthy_pop3.port(),
                    "",
                )
                .replace("password_file: secret", "password_file: wrong")
                    + &account(
                        "cleartext",
                        Protocol::Pop3,
                        TlsMode::None,
                        cleartext.port(),
                        "",
                    ),
            ),
            (
                "billing",
                account("down", Protocol::Pop3, TlsMode::None, dead_port(), "")
                    + &account("imap", Protocol::Imap, TlsMode::Implicit, imap.port(), ""),
            ),
        ],
    ));
    let running = setup.start().await;
    let addr = running.addr;
    let all = ["apop", "trap", "wrong", "cleartext", "down", "imap"];

    let seen = Seen::default();

    // The trap walks its ladder until PASS works; from then on PASS is tried first.
    let s = wait_for(addr, "the trap's first login", |s| logged_in(s, "trap")).await;
    let trap_probes = seen.probes(&s, "trap");
    let (trap_apops, trap_crams) = (commands(&trap, "APOP"), commands(&trap, "AUTH CRAM-MD5"));

    let s = wait_for(
        addr,
        "three probes of every reachable account, two after the trap's first login, the last \
         one of each a login, and a backoff",
        |s| {
            // A probe that timed out on a loaded machine is followed by one that did not.
            all.iter().all(|a| seen.probes(s, a) > 0.0)
                && ["apop", "trap", "cleartext", "imap"].iter().all(|a| {
                    seen.probes(s, a) >= 3.0
                        && s.find("mailbox_auth_success", &[("account", *a)]) == Some(1.0)
                })
                && seen.probes(s, "trap") >= trap_probes + 2.0
                && s.find("mailbox_probe_backoff", &[("account", "wrong")]) == Some(1.0)
                && s.find(
                    "mailbox_auth_consecutive_failures",
                    &[("account", "down"), ("reason", "connect")],
                ) >= Some(1.0)
        },
    )
    .await;

    let success = |a| value(&s, "mailbox_auth_success", a, &[]);
    assert_eq!(
        all.map(success),
        [1.0, 1.0, 0.0, 1.0, 0.0, 1.0],
        "success of {all:?}"
    );
    let method = |a, m| value(&s, "mailbox_auth_method", a, &[("method", m)]);
    assert_eq!(method("apop", "APOP"), 1.0);
    assert_eq!(method("trap", "PASS"), 1.0);
    assert_eq!(method("imap", "CRAM-MD5"), 1.0);
    assert_eq!(method("cleartext", "PASS"), 1.0);
    for a in all {
        let methods = s.count("mailbox_auth_method", &[("account", a)]);
        assert_eq!(
            methods,
            usize::from(success(a) == 1.0),
            "one method while logged in: {a}"
        );
    }

    // The trap: PASS, fallback, and after the first login no further APOP or CRAM-MD5
    // attempt, neither in the group's counters nor on the server.
    let attempts = |g, m, r| {
        s.find(
            "mailbox_group_auth_attempts_total",
            &[("group", g), ("method", m), ("result", r)],
        )
        .unwrap_or(0.0)
    };
    assert!(attempts("support", "APOP", "rejected") >= 1.0, "{}", s.text);
    assert!(
        attempts("support", "CRAM-MD5", "rejected") >= 1.0,
        "{}",
        s.text
    );
    assert!(attempts("support", "APOP", "success") >= 3.0, "{}", s.text);
    assert!(attempts("support", "PASS", "success") >= 3.0, "{}", s.text);
    assert!(trap_apops >= 1);
    assert_eq!(
        (commands(&trap, "APOP"), commands(&trap, "AUTH CRAM-MD5")),
        (trap_apops, trap_crams),
        "the server saw no APOP or CRAM-MD5 after the first login: the remembered method is \
         used first once it worked"
    );
    let present = |family, a| s.count(family, &[("account", a)]);
    let flagged = |family| all.map(|a| present(family, a));
    assert_eq!(flagged("mailbox_auth_fallback"), [0, 1, 0, 0, 0, 0]);
    assert_eq!(value(&s, "mailbox_auth_fallback", "trap", &[]), 1.0);
    assert_eq!(flagged("mailbox_auth_cleartext"), [0, 0, 0, 1, 0, 0]);
    assert_eq!(value(&s, "mailbox_auth_cleartext", "cleartext", &[]), 1.0);

    let failing = |a, r| value(&s, "mailbox_auth_consecutive_failures", a, &[("reason", r)]);
    assert!(failing("wrong", "auth_rejected") >= 2.0);
    assert!(failing("down", "connect") >= 1.0);
    assert_eq!(
        flagged("mailbox_auth_consecutive_failures"),
        [0, 0, 1, 0, 1, 0]
    );
    let failures = |a| value(&s, "mailbox_auth_failures_total", a, &[]);
    assert!(failures("wrong") >= 2.0);
    assert!(failures("down") >= 1.0);
    let by_reason = |g, r| {
        s.find(
            "mailbox_group_failures_total",
            &[("group", g), ("reason", r)],
        )
    };
    assert!(by_reason("sales", "auth_rejected") >= Some(2.0));
    assert!(by_reason("billing", "connect") >= Some(1.0));
    assert_eq!(
        by_reason("sales", "connect"),
        None,
        "a reason appears when it happens"
    );
    assert_eq!(flagged("mailbox_probe_backoff"), [0, 0, 1, 0, 0, 0]);
    assert_eq!(value(&s, "mailbox_probe_backoff", "wrong", &[]), 1.0);

    for phase in ["connect", "tls", "greeting", "auth"] {
        assert!(
            value(
                &s,
                "mailbox_probe_phase_seconds",
                "apop",
                &[("phase", phase)]
            ) > 0.0,
            "{phase}"
        );
    }
    assert!(value(&s, "mailbox_probe_last_duration_seconds", "apop", &[]) > 0.0);
    assert_eq!(
        s.count(
            "mailbox_probe_phase_seconds",
            &[("account", "cleartext"), ("phase", "tls")]
        ),
        0,
        "no TLS, no tls phase"
    );
    assert_eq!(
        s.count("mailbox_probe_phase_seconds", &[("phase", "total")]),
        0
    );
    assert!(value(&s, "mailbox_last_success_timestamp_seconds", "apop", &[]) > 1.7e9);
    assert_eq!(
        value(&s, "mailbox_last_success_timestamp_seconds", "wrong", &[]),
        0.0
    );
    let expiry = |port: u16| {
        s.find(
            "mailbox_tls_cert_expiry_timestamp_seconds",
            &[("server", &format!("127.0.0.1:{port}"))],
        )
    };
    assert!(expiry(healthy_pop3.port()) > Some(1.7e9));
    assert!(expiry(imap.port()) > Some(1.7e9));
    assert_eq!(
        expiry(cleartext.port()),
        None,
        "no certificate, no expiry series"
    );
    assert_eq!(
        s.count(
            "mailbox_tls_cert_expiry_timestamp_seconds",
            &[("account", "apop")]
        ),
        0,
        "the certificate is the server's"
    );
    for a in all {
        assert!(
            s.text
                .lines()
                .filter(|l| l.contains(&format!("account=\"{a}\"")))
                .count()
                <= 12,
            "the series budget: {a}"
        );
    }
    assert_eq!(
        value(
            &s,
            "mailbox_account_info",
            "trap",
            &[
                ("protocol", "pop3"),
                ("tls", "implicit"),
                ("auth_mode", "BEST"),
                ("server", &format!("127.0.0.1:{}", trap.port())),
            ]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "mailbox_account_info", "imap", &[("auth_mode", "auto")]),
        1.0
    );

    let group = |name, g| s.find(name, &[("group", g)]).unwrap();
    for (g, accounts, authenticated) in [
        ("support", 2.0, 2.0),
        ("sales", 2.0, 1.0),
        ("billing", 2.0, 1.0),
    ] {
        assert_eq!(group("mailbox_group_accounts", g), accounts, "{g}");
        assert_eq!(
            group("mailbox_group_accounts_authenticated", g),
            authenticated,
            "{g}"
        );
        assert!(
            group("mailbox_probe_duration_seconds_count", g) >= 2.0,
            "{g}"
        );
    }
    assert!(
        !s.text
            .contains("mailbox_probe_duration_seconds_count{group=\"support\",account"),
        "the histogram is per group, not per account"
    );

    assert_eq!(
        s.find("mailbox_exporter_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert!(
        s.find(
            "mailbox_exporter_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .unwrap()
            > 1.7e9
    );
    assert!(s.find("mailbox_exporter_probes_in_flight", &[]).is_some());
    // Its value is how late the pool started probes: the scheduler's tests pin it on paused
    // time; here the machine's load decides it.
    assert!(
        s.find("mailbox_exporter_schedule_lag_seconds", &[])
            .is_some_and(|lag| lag >= 0.0)
    );
    assert_eq!(
        s.find(
            "mailbox_exporter_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", mailbox_exporter::metrics::REVISION),
                ("rustversion", mailbox_exporter::metrics::RUST_VERSION),
            ]
        ),
        Some(1.0)
    );
    assert!(s.find("process_resident_memory_bytes", &[]) > Some(0.0));
    assert!(s.find("process_start_time_seconds", &[]) > Some(1.7e9));
    assert!(!s.text.contains(PASSWORD), "no password in /metrics");

    // The landing page and the transcript page tell the operator what to do.
    let page = http::get(addr, "/").await;
    assert_eq!(page.status, 200);
    let page = page.text();
    assert!(page.contains("pin auth_mode: PASS"), "{page}");
    assert!(page.contains("accounts/trap"), "{page}");
    let transcript = http::get(addr, "/accounts/trap").await.text();
    assert!(transcript.contains("C: PASS ***"), "{transcript}");
    assert!(!transcript.contains(PASSWORD));
    assert_eq!(http::get(addr, "/accounts/nobody").await.status, 404);
    assert_eq!(http::get(addr, "/-/healthy").await.status, 200);
    assert_eq!(http::get(addr, "/-/ready").await.status, 200);
    let gzipped = http::request(addr, "GET", "/metrics", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(gzipped.header("Content-Encoding"), Some("gzip"));

    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_always_present_series_exist_before_the_first_probe_finishes() {
    let silent = sim(Protocol::Pop3, TlsMode::None, Behavior::Silent).await;
    let setup = Setup::new();
    setup.write(&config(
        "interval: 1h\ntimeout: 3s",
        &[(
            "support",
            account("slow", Protocol::Pop3, TlsMode::None, silent.port(), ""),
        )],
    ));
    let running = setup.start().await;
    let s = scrape(running.addr).await;
    assert_eq!(value(&s, "mailbox_auth_success", "slow", &[]), 0.0);
    assert_eq!(
        value(&s, "mailbox_last_probe_timestamp_seconds", "slow", &[]),
        0.0
    );
    assert_eq!(value(&s, "mailbox_auth_failures_total", "slow", &[]), 0.0);
    assert_eq!(
        s.count("mailbox_probe_phase_seconds", &[("account", "slow")]),
        3,
        "connect, greeting, auth: no TLS"
    );
    for name in [
        "mailbox_last_success_timestamp_seconds",
        "mailbox_probe_last_duration_seconds",
    ] {
        assert_eq!(value(&s, name, "slow", &[]), 0.0, "{name}");
    }
    for name in [
        "mailbox_auth_method",
        "mailbox_auth_consecutive_failures",
        "mailbox_auth_fallback",
        "mailbox_auth_cleartext",
        "mailbox_probe_backoff",
    ] {
        assert_eq!(s.count(name, &[("account", "slow")]), 0, "{name}");
    }
    assert_eq!(
        s.find("mailbox_group_accounts", &[("group", "support")]),
        Some(1.0)
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_does_not_delay_the_others() {
    let silent = sim(Protocol::Pop3, TlsMode::None, Behavior::Silent).await;
    let healthy = sim(Protocol::Pop3, TlsMode::None, Behavior::CleartextOnly).await;
    let mut stuck = String::new();
    for i in 0..20 {
        stuck.push_str(&account(
            &format!("stuck-{i}"),
            Protocol::Pop3,
            TlsMode::None,
            silent.port(),
            "",
        ));
    }
    let mut fine = String::new();
    for i in 0..5 {
        fine.push_str(&account(
            &format!("fine-{i}"),
            Protocol::Pop3,
            TlsMode::None,
            healthy.port(),
            "",
        ));
    }
    let setup = Setup::new();
    setup.write(&config(
        "interval: 1s\ntimeout: 900ms\nconcurrency: 4\nper_server_concurrency: 2",
        &[("stuck", stuck), ("fine", fine)],
    ));
    let running = setup.start().await;
    let seen = Seen::default();
    let s = wait_for(running.addr, "four probes of every healthy account", |s| {
        (0..5).all(|i| seen.probes(s, &format!("fine-{i}")) >= 4.0)
    })
    .await;
    assert!(
        s.find("mailbox_exporter_schedule_lag_seconds", &[])
            .unwrap()
            < 0.5,
        "{}",
        s.text
    );
    assert!(
        s.find(
            "mailbox_group_failures_total",
            &[("group", "stuck"), ("reason", "timeout")]
        )
        .is_some()
    );
    assert_eq!(
        s.find("mailbox_group_accounts_authenticated", &[("group", "fine")]),
        Some(5.0)
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_accounts_and_refuses_a_bad_config() {
    let trap = sim(Protocol::Pop3, TlsMode::None, Behavior::UnverifiableDigests).await;
    let healthy = sim(Protocol::Pop3, TlsMode::None, Behavior::CleartextOnly).await;
    let setup = Setup::new();
    let header = "interval: 1s\ntimeout: 900ms";
    let trap_account = account("trap", Protocol::Pop3, TlsMode::None, trap.port(), "");
    setup.write(&config(
        header,
        &[(
            "support",
            trap_account.clone()
                + &account("old", Protocol::Pop3, TlsMode::None, healthy.port(), ""),
        )],
    ));
    let running = setup.start().await;
    let addr = running.addr;
    let seen = Seen::default();
    let s = wait_for(
        addr,
        "both accounts probed twice, the trap logged in",
        |s| seen.probes(s, "trap") >= 2.0 && logged_in(s, "trap") && seen.probes(s, "old") >= 2.0,
    )
    .await;
    // The trap's ladder ran until PASS worked; the counters and the remembered method must
    // survive reloads that leave the account unchanged.
    let trap_apops = tries(&s, "support", "APOP");
    assert!(trap_apops >= 1.0, "{}", s.text);
    let trap_failures = value(&s, "mailbox_auth_failures_total", "trap", &[]);

    // Add one, remove one, keep the trap unchanged: its state survives.
    setup.write(&config(
        header,
        &[
            ("support", trap_account.clone()),
            (
                "sales",
                account("new", Protocol::Pop3, TlsMode::None, healthy.port(), ""),
            ),
        ],
    ));
    let reloaded = http::request(addr, "POST", "/-/reload", &[]).await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    // Two more probes of the trap: at least one of them started after the reload (a probe in
    // flight is not counted yet).
    let trap_probes = seen.probes(&scrape(addr).await, "trap");
    let s = wait_for(addr, "the new account probed, the trap twice", |s| {
        seen.probes(s, "new") >= 1.0 && seen.probes(s, "trap") >= trap_probes + 2.0
    })
    .await;
    assert_eq!(
        s.count("mailbox_auth_success", &[("account", "old")]),
        0,
        "removed"
    );
    assert_eq!(
        tries(&s, "support", "APOP"),
        trap_apops,
        "unchanged accounts keep their remembered method"
    );
    assert_eq!(
        value(&s, "mailbox_auth_failures_total", "trap", &[]),
        trap_failures,
        "unchanged accounts keep their counters"
    );
    assert_eq!(value(&s, "mailbox_auth_fallback", "trap", &[]), 1.0);
    assert_eq!(
        s.find("mailbox_group_accounts", &[("group", "sales")]),
        Some(1.0)
    );

    // Change the trap account: pinned PASS. Counters stay, the fallback memory goes.
    setup.write(&config(
        header,
        &[
            ("support", trap_account.replace(" }", ", auth_mode: PASS }")),
            (
                "sales",
                account("new", Protocol::Pop3, TlsMode::None, healthy.port(), ""),
            ),
        ],
    ));
    assert_eq!(running.reload().await.expect("a valid config"), 2);
    // Two more probes: at least one of them started under the new config (a probe in flight
    // is not counted yet).
    let trap_probes = seen.probes(&scrape(addr).await, "trap");
    let s = wait_for(addr, "the pinned trap account probed", |s| {
        s.find(
            "mailbox_account_info",
            &[("account", "trap"), ("auth_mode", "PASS")],
        )
        .is_some()
            && seen.probes(s, "trap") >= trap_probes + 2.0
    })
    .await;
    assert_eq!(s.count("mailbox_auth_fallback", &[("account", "trap")]), 0);
    assert_eq!(tries(&s, "support", "APOP"), trap_apops, "counters stay");

    // A bad config is refused with every error; the old one keeps running.
    setup.write("interval: 0s\ngroups:\n  - name: broken\n    accounts:\n      - { name: x }\n");
    let errors = running.reload().await.expect_err("an invalid config");
    assert!(errors.len() >= 2, "{errors}");
    let refused = http::request(addr, "POST", "/-/reload", &[]).await;
    assert_eq!(refused.status, 500);
    assert!(refused.text().contains("interval"), "{}", refused.text());
    let before = seen.probes(&scrape(addr).await, "new");
    let s = wait_for(addr, "the old config still probing", |s| {
        seen.probes(s, "new") > before
    })
    .await;
    assert_eq!(
        s.find("mailbox_exporter_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(s.count("mailbox_auth_success", &[("group", "broken")]), 0);
    assert_eq!(http::get(addr, "/-/ready").await.status, 200);
    running.shutdown().await;
}

/// The exporter keeps its TLS connectors between probes and builds them afresh on reload, so
/// a renewed CA file takes effect with the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_ca_file_again() {
    let server = sim(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy).await;
    let setup = Setup::new();
    setup.write(&config(
        "interval: 1s\ntimeout: 900ms",
        &[(
            "g",
            account("tls", Protocol::Pop3, TlsMode::Implicit, server.port(), ""),
        )],
    ));
    let running = setup.start().await;
    let addr = running.addr;
    let tls_failures = |s: &Samples| {
        s.find(
            "mailbox_group_failures_total",
            &[("group", "g"), ("reason", "tls")],
        )
        .unwrap_or(0.0)
    };
    let seen = Seen::default();
    let s = wait_for(addr, "a login over TLS", |s| logged_in(s, "tls")).await;

    // A CA that did not sign the server's certificate.
    let key = rcgen::KeyPair::generate().unwrap();
    let other_ca = rcgen::CertificateParams::new(vec!["another CA".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(setup.dir.path().join("ca.pem"), other_ca.pem()).unwrap();
    let before = seen.probes(&s, "tls");
    let s = wait_for(addr, "two probes after the CA file changed", |s| {
        seen.probes(s, "tls") >= before + 2.0
    })
    .await;
    assert_eq!(tls_failures(&s), 0.0, "the file is not read per probe");

    assert_eq!(running.reload().await.expect("a valid config"), 1);
    let s = wait_for(addr, "a probe that verifies against the new CA", |s| {
        tls_failures(s) >= 1.0
    })
    .await;
    assert_eq!(value(&s, "mailbox_auth_success", "tls", &[]), 0.0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_against_real_dovecot() {
    let Some(plain) = Dovecot::start_or_skip(Flavor::Plaintext, "exporter_against_real_dovecot")
    else {
        return;
    };
    let hashed = Dovecot::start(Flavor::Hashed);
    let setup = Setup::new();
    std::fs::write(
        setup.dir.path().join("dovecot"),
        format!("{}\n", plain.password()),
    )
    .unwrap();
    let line = |name: &str, d: &Dovecot, protocol: Protocol, addr: SocketAddr, password: &str| {
        format!(
            "      - {{ name: {name}, protocol: {protocol}, tls: implicit, server: \"{}:{}\", \
             username: {}, password_file: {password}, ca_file: \"{}\" }}\n",
            d.tls_domain(),
            addr.port(),
            d.user(),
            d.ca_file().display()
        )
    };
    setup.write(&config(
        "interval: 3s\ntimeout: 2900ms",
        &[
            (
                "plain",
                line(
                    "apop",
                    &plain,
                    Protocol::Pop3,
                    plain.pop3s_addr(),
                    "dovecot",
                ) + &line(
                    "imap",
                    &plain,
                    Protocol::Imap,
                    plain.imaps_addr(),
                    "dovecot",
                ) + &line("wrong", &plain, Protocol::Pop3, plain.pop3s_addr(), "wrong"),
            ),
            (
                "hashed",
                line(
                    "trap",
                    &hashed,
                    Protocol::Pop3,
                    hashed.pop3s_addr(),
                    "dovecot",
                ) + &line(
                    "trap-imap",
                    &hashed,
                    Protocol::Imap,
                    hashed.imaps_addr(),
                    "dovecot",
                ),
            ),
        ],
    ));
    let running = setup.start().await;
    let addr = running.addr;
    // The traps walk their ladders until a method works; from then on it is tried first.
    let s = wait_for(
        addr,
        "a login of every account with the password, a rejection",
        |s| {
            ["apop", "imap", "trap", "trap-imap"]
                .iter()
                .all(|a| logged_in(s, a))
                && s.find(
                    "mailbox_auth_consecutive_failures",
                    &[("account", "wrong"), ("reason", "auth_rejected")],
                ) >= Some(1.0)
        },
    )
    .await;
    // The group "hashed" holds only the traps: APOP is the POP3 trap's, CRAM-MD5 both's.
    let walked = |s: &Samples| (tries(s, "hashed", "APOP"), tries(s, "hashed", "CRAM-MD5"));
    let first_walk = walked(&s);
    let seen = Seen::default();
    let (trap_probes, trap_imap_probes) = (seen.probes(&s, "trap"), seen.probes(&s, "trap-imap"));
    let s = wait_for(addr, "two more probes of the trap accounts", |s| {
        seen.probes(s, "trap") >= trap_probes + 2.0
            && seen.probes(s, "trap-imap") >= trap_imap_probes + 2.0
    })
    .await;
    let method = |a, m| value(&s, "mailbox_auth_method", a, &[("method", m)]);
    assert_eq!(method("apop", "APOP"), 1.0);
    assert_eq!(method("imap", "CRAM-MD5"), 1.0);
    assert_eq!(method("trap", "PASS"), 1.0);
    assert_eq!(method("trap-imap", "PLAIN"), 1.0);
    assert_eq!(value(&s, "mailbox_auth_fallback", "trap", &[]), 1.0);
    assert_eq!(value(&s, "mailbox_auth_fallback", "trap-imap", &[]), 1.0);
    assert_eq!(s.count("mailbox_auth_fallback", &[("account", "apop")]), 0);
    let rejected = |g, m| {
        s.find(
            "mailbox_group_auth_attempts_total",
            &[("group", g), ("method", m), ("result", "rejected")],
        )
        .unwrap_or(0.0)
    };
    // Dovecot rejects what it cannot verify (a probe that timed out mid-ladder walks it again,
    // so the walk may have taken more than one probe)...
    assert!(rejected("hashed", "APOP") >= 1.0, "{}", s.text);
    assert!(rejected("hashed", "CRAM-MD5") >= 2.0, "{}", s.text);
    // ...and once a method worked, the rejected ones are not tried again.
    assert_eq!(
        walked(&s),
        first_walk,
        "APOP and CRAM-MD5 are not retried once a method is remembered"
    );
    assert_eq!(value(&s, "mailbox_auth_success", "wrong", &[]), 0.0);
    assert!(value(&s, "mailbox_auth_failures_total", "wrong", &[]) >= 1.0);
    assert!(
        s.find(
            "mailbox_group_failures_total",
            &[("group", "plain"), ("reason", "auth_rejected")]
        ) >= Some(1.0)
    );
    let server = format!("{}:{}", hashed.tls_domain(), hashed.pop3s_addr().port());
    assert!(
        s.find(
            "mailbox_tls_cert_expiry_timestamp_seconds",
            &[("server", &server)]
        ) > Some(1.7e9),
        "{}",
        s.text
    );
    running.shutdown().await;
}

/// The binary, as systemd or Kubernetes runs it: SIGHUP reloads, SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let healthy = sim(Protocol::Pop3, TlsMode::None, Behavior::CleartextOnly).await;
    let setup = Setup::new();
    let first = account("first", Protocol::Pop3, TlsMode::None, healthy.port(), "");
    setup.write(&config(
        "interval: 1s\ntimeout: 900ms",
        &[("g", first.clone())],
    ));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"))
        .arg(format!("--config.file={}", setup.config_file().display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--log.format=json")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(address) = json["fields"]["address"].as_str() {
                return address.parse().unwrap();
            }
        }
        panic!("the exporter exited without saying where it listens");
    })
    .await
    .expect("the listen address is logged");
    let logs = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    wait_for(addr, "the first account probed", |s| {
        last_probe(s, "first") > 0.0
    })
    .await;

    let second = account("second", Protocol::Pop3, TlsMode::None, healthy.port(), "");
    setup.write(&config(
        "interval: 1s\ntimeout: 900ms",
        &[("g", first + &second)],
    ));
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(addr, "the account added by SIGHUP probed", |s| {
        last_probe(s, "second") > 0.0
    })
    .await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let logs = logs.await.unwrap().join("\n");
    assert!(logs.contains("config reloaded"), "{logs}");
    assert!(!logs.contains(PASSWORD));
}
