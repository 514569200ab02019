//! The shipped Prometheus rules and Grafana dashboards, against the real Prometheus: promtool's
//! checks and unit tests, then the exporter probing simulated servers and scraped by a real
//! Prometheus, where every dashboard query and rule must return data, the account alerts fire
//! with the labels they take from series that exist only while true (the failing reason, the
//! fallback's method), the group alert must fire and resolve within what its rule promises,
//! and the account source alert fires for a VICIdial database that does not answer.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mailbox_exporter::app::{self, RunOptions};
use mailbox_exporter::sim::{Behavior, SimServer, SimSpec, sim_certificate};
use mailbox_exporter::verdict::{Protocol, TlsMode};
use serde_json::Value;

use support::prometheus::{Prometheus, promtool, repo_root, with_for};

const DASHBOARDS: [&str; 2] = [
    "dashboards/mailbox-overview.json",
    "dashboards/mailbox-account.json",
];

/// The `for:` every rule gets in the end-to-end test.
const TEST_FOR: Duration = Duration::from_secs(2);
/// Probe interval of the end-to-end test's accounts (the minimum the config allows).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Scrape and evaluation interval of the test's Prometheus.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Slack for loaded CI machines on top of what the rules promise.
const MARGIN: Duration = Duration::from_secs(8);

#[test]
fn rules_pass_promtool_check() {
    let Some(promtool_bin) = support::promtool_or_skip("rules_pass_promtool_check") else {
        return;
    };
    let dir = repo_root().join("deploy/prometheus");
    let out = promtool(&promtool_bin, &dir, &["check", "rules", "rules.yml"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn rules_pass_their_unit_tests() {
    let Some(promtool_bin) = support::promtool_or_skip("rules_pass_their_unit_tests") else {
        return;
    };
    let dir = repo_root().join("deploy/prometheus");
    promtool(&promtool_bin, &dir, &["test", "rules", "rules.test.yml"]);
}

#[test]
fn every_alert_has_a_unit_test() {
    let root = repo_root().join("deploy/prometheus");
    let rules = std::fs::read_to_string(root.join("rules.yml")).unwrap();
    let tests = std::fs::read_to_string(root.join("rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in alerts {
        let tested = |firing: bool| {
            tests.split("- alertname: ").skip(1).any(|case| {
                case.starts_with(&format!("{alert}\n")) && case.contains("exp_alerts: []") != firing
            })
        };
        assert!(tested(true), "{alert} has no test where it fires");
        assert!(tested(false), "{alert} has no test where it does not fire");
    }
}

#[test]
fn example_config_passes_promtool_check() {
    let Some(promtool_bin) = support::promtool_or_skip("example_config_passes_promtool_check")
    else {
        return;
    };
    // prometheus.yml names rules.yml relative to itself.
    let dir = repo_root().join("deploy/prometheus");
    promtool(&promtool_bin, &dir, &["check", "config", "prometheus.yml"]);
}

#[test]
fn dashboards_are_well_formed() {
    for path in DASHBOARDS {
        let dashboard = read_json(&repo_root().join(path));
        assert!(dashboard.get("__inputs").is_none(), "{path}");
        assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36, "{path}");
        let vars: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        assert_eq!(vars["datasource"]["type"], "datasource", "{path}");
        assert_eq!(vars["datasource"]["query"], "prometheus", "{path}");
        for name in ["group", "account", "server"] {
            let query = vars[name]["query"].as_str().unwrap_or_default();
            assert!(query.starts_with("label_values("), "{path}: ${name}");
        }
        let mut ids = std::collections::BTreeSet::new();
        for panel in panels(&dashboard) {
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{path}: duplicate id"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{path}");
            assert!(
                !targets(panel).is_empty(),
                "{path}: {} has no query",
                panel["title"]
            );
        }
    }
}

/// The exporter against simulated servers, scraped by a real Prometheus with the shipped rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboards_and_rules_work_against_real_prometheus() {
    let Some(prometheus_bin) =
        support::prometheus_or_skip("dashboards_and_rules_work_against_real_prometheus")
    else {
        return;
    };
    let started = Instant::now();
    let mut lab = Lab::start().await;
    let running = app::start(RunOptions {
        config_file: lab.config_file(),
        listen_address: "127.0.0.1:0".parse().unwrap(),
        web_config_file: None,
        shard: None,
        enable_lifecycle: false,
    })
    .await
    .expect("the exporter starts");

    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/rules.yml")).unwrap();
    let test_for = format!("{}s", TEST_FOR.as_secs());
    let rule_count = rules
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- record: ") || l.starts_with("- alert: ")
        })
        .count();
    let rules = with_for(&rules, &test_for);
    let prometheus = Prometheus::start(&prometheus_bin, running.addr, &rules).await;

    eventually(
        "the exporter is scraped",
        Duration::from_secs(20),
        || async {
            match prometheus.target_health().await.as_deref() {
                Some("up") => Ok(()),
                other => Err(format!("target health {other:?}")),
            }
        },
    )
    .await;

    // Every probe has run and enough scrapes are stored for the rates: then every panel and
    // every recording rule has data.
    let queries = dashboard_queries();
    eventually(
        "every dashboard query returns data",
        Duration::from_secs(30),
        || async {
            let mut problems = Vec::new();
            for (what, expr) in &queries {
                match prometheus.query(expr).await {
                    Ok(result) if !result.is_empty() => {}
                    Ok(_) => problems.push(format!("{what}: no data: {expr}")),
                    Err(e) => problems.push(format!("{what}: {e}: {expr}")),
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("\n"))
            }
        },
    )
    .await;

    eventually("every rule evaluates", Duration::from_secs(10), || async {
        let rules = prometheus.rules().await;
        let mut problems = Vec::new();
        for rule in &rules {
            let name = rule["name"].as_str().unwrap_or_default();
            let expr = rule["query"].as_str().unwrap_or_default();
            if rule["health"] != "ok" {
                problems.push(format!(
                    "{name}: health {} {}",
                    rule["health"], rule["lastError"]
                ));
            }
            match (rule["type"].as_str(), prometheus.query(expr).await) {
                (_, Err(e)) => problems.push(format!("{name}: {e}")),
                (Some("recording"), Ok(result)) if result.is_empty() => {
                    problems.push(format!("{name}: no data"));
                }
                _ => {}
            }
            if rule["type"] == "recording" && prometheus.query(name).await.unwrap().is_empty() {
                problems.push(format!("{name}: not recorded yet"));
            }
            // An alert's expression is empty while nothing is wrong; every series it reads
            // must have data, or the alert could never fire.
            if rule["type"] == "alerting" {
                for series in series_read_by(expr) {
                    if prometheus.query(&series).await.unwrap().is_empty() {
                        problems.push(format!("{name}: {series} has no data"));
                    }
                }
            }
        }
        if rules.len() < rule_count {
            problems.push(format!("{} of the {rule_count} rules loaded", rules.len()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    })
    .await;
    assert!(
        firing(&prometheus, "MailboxGroupNotAuthenticating", "frontdesk")
            .await
            .is_none(),
        "frontdesk pages while healthy"
    );

    // Within: the rule's `for:`, a probe, a scrape, two evaluations (the recording rule, then
    // the alert), and slack.
    let promised = TEST_FOR + PROBE_INTERVAL + SCRAPE_INTERVAL * 3 + MARGIN;

    // The account alerts join series that exist only while true: each fires once, for the
    // account it is about, with the label it promises.
    let expected = [
        (
            "MailboxAccountAuthFailing",
            "billing-wrong-password",
            "reason",
            "auth_rejected",
        ),
        (
            "MailboxAccountAuthFailing",
            "billing-dead",
            "reason",
            "connect",
        ),
        ("MailboxAuthFallback", "support-apop-trap", "method", "PASS"),
        ("MailboxAuthCleartext", "billing-cleartext", "tls", "none"),
    ];
    eventually("the account alerts fire", promised, || async {
        let alerts = prometheus.alerts().await;
        let mut problems = Vec::new();
        for (name, account, label, want) in expected {
            let fired: Vec<&Value> = alerts
                .iter()
                .filter(|a| {
                    a["labels"]["alertname"] == name
                        && a["labels"]["account"] == account
                        && a["state"] == "firing"
                })
                .collect();
            match fired.as_slice() {
                [alert] if alert["labels"][label] == want => {}
                _ => problems.push(format!("{name} of {account}, {label} {want}: {fired:?}")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    })
    .await;
    let alerts = prometheus.alerts().await;
    for account in ["support-imap", "frontdesk-1", "m365-imap"] {
        assert!(
            !alerts.iter().any(|a| {
                a["labels"]["alertname"] == "MailboxAccountAuthFailing"
                    && a["labels"]["account"] == account
            }),
            "{account} logs in but MailboxAccountAuthFailing is pending or firing"
        );
    }

    // Nothing answers on the VICIdial database's port: the source is down from its first
    // read, and the alert says that none of its accounts is probed.
    eventually("the account source alert fires", promised, || async {
        let alert = prometheus.alerts().await.into_iter().find(|a| {
            a["labels"]["alertname"] == "MailboxAccountSourceDown"
                && a["labels"]["source"] == "vicidial"
                && a["state"] == "firing"
        });
        match alert {
            Some(alert) => {
                assert_eq!(alert["labels"]["severity"], "warning");
                let description = alert["annotations"]["description"].as_str().unwrap();
                assert!(
                    description.contains("none of its accounts is probed"),
                    "{description}"
                );
                Ok(())
            }
            None => Err("not firing".into()),
        }
    })
    .await;

    // The frontdesk group's only server goes away: the group pages, and the server alert says
    // it is the server, not the credentials.
    let outage = Instant::now();
    lab.frontdesk.take().unwrap().shutdown().await;
    let frontdesk_server = format!("127.0.0.1:{}", lab.frontdesk_port);
    eventually("the frontdesk group pages", promised, || async {
        let page = firing(&prometheus, "MailboxGroupNotAuthenticating", "frontdesk").await;
        let server = prometheus.alerts().await.into_iter().any(|a| {
            a["labels"]["alertname"] == "MailboxServerFailing"
                && a["labels"]["server"] == frontdesk_server.as_str()
                && a["state"] == "firing"
        });
        match (page, server) {
            (Some(page), true) => {
                assert_eq!(page["labels"]["severity"], "page");
                Ok(())
            }
            (page, server) => Err(format!("page {page:?}, server alert firing: {server}")),
        }
    })
    .await;
    let fired_after = outage.elapsed();
    for group in ["support", "billing"] {
        assert!(
            firing(&prometheus, "MailboxGroupNotAuthenticating", group)
                .await
                .is_none(),
            "{group} pages although some of its accounts log in"
        );
    }

    // The accounts move to a healthy server: the page resolves.
    lab.move_frontdesk_to_spare();
    running.reload().await.expect("the new config loads");
    let recovery = Instant::now();
    eventually("the frontdesk page resolves", promised, || async {
        match firing(&prometheus, "MailboxGroupNotAuthenticating", "frontdesk").await {
            None => Ok(()),
            Some(alert) => Err(format!("still firing: {alert}")),
        }
    })
    .await;
    eprintln!(
        "group alert fired {:.1} s after the outage, resolved {:.1} s after the reload; \
         whole test {:.1} s",
        fired_after.as_secs_f64(),
        recovery.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );

    drop(prometheus);
    running.shutdown().await;
}

/// The metric and recording-rule names an expression reads, with the label matchers that
/// follow them (`up{job="mailbox_exporter"}`).
fn series_read_by(expr: &str) -> Vec<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        let token_len = rest[start..]
            .find(|c: char| !is_name(c))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + token_len];
        let preceded_by_name = rest[..start].ends_with(is_name);
        let after = &rest[start + token_len..];
        // Label matchers belong to the name before them; their values are not names.
        let matchers = match after.find('}') {
            Some(end) if after.starts_with('{') => &after[..=end],
            _ => "",
        };
        let metric = token.starts_with("mailbox_") || token == "up";
        if metric && !preceded_by_name {
            let series = format!("{token}{matchers}");
            if !found.contains(&series) {
                found.push(series);
            }
        }
        rest = &after[matchers.len()..];
    }
    found
}

#[test]
fn series_read_by_an_expression() {
    assert_eq!(
        series_read_by(
            "(mailbox_auth_fallback == 1) * on (instance, group, account) group_left (protocol) \
             mailbox_account_info and up{job=\"mailbox_exporter\"} == 0 and backup"
        ),
        [
            "mailbox_auth_fallback",
            "mailbox_account_info",
            "up{job=\"mailbox_exporter\"}"
        ]
    );
}

/// The firing alert `name` of `group`, if any.
async fn firing(prometheus: &Prometheus, name: &str, group: &str) -> Option<Value> {
    prometheus.alerts().await.into_iter().find(|a| {
        a["labels"]["alertname"] == name && a["labels"]["group"] == group && a["state"] == "firing"
    })
}

/// Polls `check` until it passes, and panics with its last complaint after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

fn targets(panel: &Value) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect()
}

/// `(where, PromQL)` of every panel query and every variable's `label_values` selector, with
/// Grafana's variables replaced as Grafana would for "All" over this short test.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for path in DASHBOARDS {
        let dashboard = read_json(&repo_root().join(path));
        for panel in panels(&dashboard) {
            for (i, expr) in targets(panel).into_iter().enumerate() {
                let what = format!("{path}: {} #{i}", panel["title"]);
                queries.push((what, substitute(expr)));
            }
        }
        for var in dashboard["templating"]["list"].as_array().unwrap() {
            let Some(query) = var["query"].as_str() else {
                continue;
            };
            if let Some(args) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
            {
                let (selector, label) = args.rsplit_once(',').unwrap();
                let expr = format!("count by ({}) ({})", label.trim(), substitute(selector));
                queries.push((format!("{path}: ${}", var["name"].as_str().unwrap()), expr));
            }
        }
    }
    queries
}

fn substitute(expr: &str) -> String {
    let mut expr = expr.to_string();
    for (from, to) in [
        ("$__rate_interval", "1m"),
        ("$__interval", "1m"),
        ("$__range", "5m"),
    ] {
        expr = expr.replace(from, to);
    }
    for var in ["group", "account", "server"] {
        expr = expr
            .replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${var}"), ".*");
    }
    assert!(!expr.contains('$'), "an unknown variable in {expr}");
    expr
}

const PASSWORD: &str = "lab-password";

/// The simulated servers and the exporter's config: one account for each thing a panel shows,
/// a `frontdesk` group whose only server can be stopped, and a VICIdial source whose database
/// does not answer.
struct Lab {
    dir: tempfile::TempDir,
    /// The frontdesk group's server, until the outage.
    frontdesk: Option<SimServer>,
    frontdesk_port: u16,
    /// Healthy POP3 over TLS: the frontdesk accounts after the reload, and the wrong password.
    spare: SimServer,
    others: Vec<SimServer>,
    /// Nothing listens here: the billing-dead account's server and the VICIdial database.
    dead_port: u16,
    frontdesk_on_spare: bool,
}

impl Lab {
    async fn start() -> Lab {
        let pop3 = |tls, behavior| SimSpec::new(Protocol::Pop3, tls, behavior);
        let users = |spec: SimSpec, names: &[&str]| {
            names
                .iter()
                .fold(spec, |spec, name| spec.user(user(name), PASSWORD))
        };
        let start = |spec| async { SimServer::start(spec).await.expect("a simulated server") };
        let frontdesk = start(users(
            pop3(TlsMode::Implicit, Behavior::Healthy),
            &["frontdesk-1", "frontdesk-2"],
        ))
        .await;
        let spare = start(users(
            pop3(TlsMode::Implicit, Behavior::Healthy),
            &["frontdesk-1", "frontdesk-2", "billing-wrong-password"],
        ))
        .await;
        let imap = start(users(
            SimSpec::new(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy),
            &["support-imap"],
        ))
        .await;
        let trap = start(users(
            pop3(TlsMode::Implicit, Behavior::UnverifiableDigests),
            &["support-apop-trap"],
        ))
        .await;
        let cleartext = start(users(
            pop3(TlsMode::None, Behavior::CleartextOnly),
            &["billing-cleartext"],
        ))
        .await;
        // An OAuth2-only IMAP server, logged in to with a token a sidecar would keep fresh.
        let mut oauth2 = SimSpec::new(Protocol::Imap, TlsMode::Implicit, Behavior::OAuthOnly);
        oauth2.oauth2_token = Some(LAB_TOKEN.into());
        let oauth2 = start(users(oauth2, &["m365-imap"])).await;
        let dead_port = support::prometheus::free_port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &sim_certificate().cert_pem).unwrap();
        std::fs::write(dir.path().join("token"), LAB_TOKEN).unwrap();
        let lab = Lab {
            dir,
            frontdesk_port: frontdesk.port(),
            frontdesk: Some(frontdesk),
            spare,
            others: vec![imap, trap, cleartext, oauth2],
            dead_port,
            frontdesk_on_spare: false,
        };
        lab.write_config();
        lab
    }

    fn config_file(&self) -> std::path::PathBuf {
        self.dir.path().join("config.yaml")
    }

    fn move_frontdesk_to_spare(&mut self) {
        self.frontdesk_on_spare = true;
        self.write_config();
    }

    fn write_config(&self) {
        let port = |i: usize| self.others[i].port();
        let frontdesk = if self.frontdesk_on_spare {
            self.spare.port()
        } else {
            self.frontdesk_port
        };
        let account = |name: &str, port: u16, protocol: &str, tls: &str, password: &str| {
            format!(
                "      - name: {name}\n        server: 127.0.0.1:{port}\n        \
                 protocol: {protocol}\n        tls: {tls}\n        username: {}\n        \
                 password: {password}\n",
                user(name)
            )
        };
        let mut yaml = format!(
            "interval: {}s\ntimeout: 500ms\n\
             # Wrong passwords on purpose, every few seconds: a budget that holds nothing back.\n\
             failure_budget: {{failures: 1000, window: 1m}}\n\
             defaults:\n  ca_file: {:?}\ngroups:\n",
            PROBE_INTERVAL.as_secs(),
            self.dir.path().join("ca.pem").display().to_string()
        );
        yaml.push_str("  - name: frontdesk\n    accounts:\n");
        for name in ["frontdesk-1", "frontdesk-2"] {
            yaml.push_str(&account(name, frontdesk, "pop3", "implicit", PASSWORD));
        }
        yaml.push_str("  - name: support\n    accounts:\n");
        yaml.push_str(&account(
            "support-imap",
            port(0),
            "imap",
            "implicit",
            PASSWORD,
        ));
        yaml.push_str(&account(
            "support-apop-trap",
            port(1),
            "pop3",
            "implicit",
            PASSWORD,
        ));
        yaml.push_str("  - name: billing\n    accounts:\n");
        yaml.push_str(&account(
            "billing-cleartext",
            port(2),
            "pop3",
            "none",
            PASSWORD,
        ));
        yaml.push_str(&account(
            "billing-wrong-password",
            self.spare.port(),
            "pop3",
            "implicit",
            "not-the-password",
        ));
        yaml.push_str(&account(
            "billing-dead",
            self.dead_port,
            "pop3",
            "implicit",
            PASSWORD,
        ));
        yaml.push_str(&format!(
            "  - name: m365\n    accounts:\n      - name: m365-imap\n        \
             server: 127.0.0.1:{}\n        protocol: imap\n        username: {}\n        \
             oauth2:\n          grant: token_file\n          token_file: {:?}\n",
            port(3),
            user("m365-imap"),
            self.dir.path().join("token").display().to_string()
        ));
        yaml.push_str(&format!(
            "sources:\n  - vicidial:\n      host: 127.0.0.1\n      port: {}\n      \
             user: monitor\n      timeout: 500ms\n",
            self.dead_port
        ));
        std::fs::write(self.config_file(), yaml).unwrap();
    }
}

/// The token the lab's OAuth2 server accepts.
const LAB_TOKEN: &str = "lab-token";

fn user(name: &str) -> String {
    format!("{name}@lab.example")
}
