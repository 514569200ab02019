//! Tests of the `sources` list: what a VICIdial source resolves to, and every error.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::{Config, ConfigErrors, Format};

const SECRET: &str = "Db-Secret-4711";

fn yaml_in(dir: &Path, text: &str) -> Result<Config, ConfigErrors> {
    Config::from_str_with_env(
        text,
        Format::Yaml,
        dir,
        [("VICIDIAL_DB_PASSWORD".to_string(), SECRET.to_string())],
    )
}

fn yaml(text: &str) -> Result<Config, ConfigErrors> {
    yaml_in(Path::new(""), text)
}

fn errors(text: &str) -> Vec<String> {
    match yaml(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains(SECRET), "secret leaked: {text}");
            text.lines().map(str::to_string).collect()
        }
    }
}

fn vicidial(config: &Config) -> &VicidialSettings {
    match &config.sources[..] {
        [SourceSettings::Vicidial(v)] => v,
        other => panic!("expected one vicidial source, got {other:?}"),
    }
}

#[test]
fn a_vicidial_source_with_parts_and_defaults() {
    let config = yaml(
        "interval: 2m\n\
         sources:\n  - vicidial:\n      host: db.example.com\n      user: monitor\n      \
         password_env: VICIDIAL_DB_PASSWORD\n      in_groups: [SUPPORT, BILLING]\n      \
         overrides:\n        Mail.Example.com: { tls: starttls, tls_verify: false }\n",
    )
    .unwrap();
    let v = vicidial(&config);
    assert_eq!(v.name, "vicidial");
    assert_eq!(
        v.database,
        Database::Parts {
            host: "db.example.com".into(),
            port: 3306,
            socket: None,
            database: "asterisk".into(),
            user: "monitor".into(),
            password: Some(Password::new(SECRET)),
        }
    );
    assert!(!format!("{:?}", v.database).contains(SECRET));
    assert_eq!(
        (v.refresh, v.timeout),
        (DEFAULT_REFRESH, DEFAULT_SOURCE_TIMEOUT)
    );
    assert_eq!(
        v.in_groups.as_deref(),
        Some(&["SUPPORT".to_string(), "BILLING".to_string()][..])
    );
    // VICIdial's own way unless told otherwise: implicit TLS, verified; the global interval.
    assert_eq!(v.defaults.tls, TlsMode::Implicit);
    assert!(v.defaults.tls_verify);
    assert_eq!(v.defaults.interval, Duration::from_secs(120));
    let plain = v.reach("mail.example.COM ");
    assert_eq!((plain.tls, plain.tls_verify), (TlsMode::Starttls, false));
    assert_eq!(plain.interval, Duration::from_secs(120));
    assert_eq!(v.reach("other.example.com").tls, TlsMode::Implicit);
    assert_eq!(config.account_count(), 0);
}

#[test]
fn a_dsn_file_holds_the_connection_and_is_never_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let dsn = format!("mysql://monitor:{SECRET}@db.example.com:3307/asterisk\n");
    std::fs::write(dir.path().join("dsn"), &dsn).unwrap();
    let config = yaml_in(
        dir.path(),
        "sources:\n  - vicidial:\n      name: site-a\n      dsn_file: dsn\n      refresh: 30s\n",
    )
    .unwrap();
    let v = vicidial(&config);
    assert_eq!(v.name, "site-a");
    assert_eq!(v.database, Database::Url(Password::new(dsn.trim())));
    assert!(!format!("{config:?}").contains(SECRET));

    std::fs::write(
        dir.path().join("bad"),
        format!("pgsql://monitor:{SECRET}@db/x"),
    )
    .unwrap();
    let e = yaml_in(dir.path(), "sources:\n  - vicidial:\n      dsn_file: bad\n").unwrap_err();
    let text = e.to_string();
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("the scheme must be mysql://"), "{text}");
}

#[test]
fn every_problem_of_a_source_is_reported_with_where_it_is() {
    let e = errors(
        "sources:\n  - vicidial:\n      dsn_file: /nonexistent\n      host: db\n  \
         - vicidial:\n      host: db\n      refresh: 0s\n      in_groups: []\n      \
         defaults: { auth_mode: PASS, protocol: imap }\n      colour: blue\n  \
         - vicidial: { user: a, password: Db-Secret-4711, password_env: X }\n  \
         - nosuch: {}\n  - vicidial: { user: a }\n  - vicidial: { user: b, name: vicidial }\n  - vicidial: { user: c, name: file }\n",
    );
    let want = [
        "sources[0] / vicidial: dsn_file: the DSN holds the connection; remove host or dsn_file",
        "sources[1] / vicidial: unknown key \"colour\"",
        "sources[1] / vicidial: refresh: must be greater than zero",
        "sources[1] / vicidial: in_groups: is empty, so nothing would be probed: remove it to take every in-group",
        "sources[1] / vicidial: user: missing",
        "sources[1] / vicidial / defaults: protocol: comes from the VICIdial table",
        "sources[1] / vicidial / defaults: auth_mode: comes from the VICIdial table",
        "sources[2] / vicidial: password: set only one of password, password_file and password_env",
        "sources[3]: unknown key \"nosuch\"",
        "sources[5] / vicidial: name: duplicate source name \"vicidial\" (first used at sources[4] / vicidial)",
        "sources[6] / vicidial: name: \"file\" names the config file's accounts",
    ];
    for w in want {
        assert!(
            e.iter().any(|line| line.starts_with(w)),
            "missing {w:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), want.len(), "{e:#?}");
}

#[test]
fn a_source_interval_must_outlast_its_timeout() {
    let e = errors(
        "sources:\n  - vicidial:\n      user: a\n      overrides:\n        \
         slow.example.com: { interval: 10s, timeout: 20s }\n",
    );
    assert_eq!(
        e,
        [
            "sources[0] / vicidial / overrides / \"slow.example.com\": timeout: timeout 20s must be shorter than interval 10s"
        ]
    );
}
