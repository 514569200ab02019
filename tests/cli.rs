//! The binary's command line: exit codes and what `check-config` and the usage errors print.
//! `probe` is only driven up to the point where it would log in.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{alias_bomb, mkfifo};

const SECRET: &str = "correct-horse-battery";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"))
        .args(args)
        // Keep the caller's environment from overriding the test configs.
        .env_remove("MAILBOX_EXPORTER__TIMEOUT")
        .env_remove("MAILBOX_EXPORTER__INTERVAL")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    format!("--config.file={}", path.display())
}

fn good_config() -> String {
    format!(
        r#"
interval: 1m
groups:
  - name: support
    accounts:
      - name: support-inbox
        server: mail.example.com
        username: support@example.com
        password: {SECRET}
      - name: support-imap
        server: "[::1]:993"
        protocol: imap
        username: support@example.com
        password_file: secret.txt
  - name: sales
    accounts:
      - name: sales-inbox
        server: mail.example.com:110
        tls: starttls
        username: sales@example.com
        password: {SECRET}
"#
    )
}

/// Five different problems, one password written into a misspelt key.
fn bad_config() -> String {
    format!(
        r#"
timeout: 0s
groups:
  - name: support
    accounts:
      - name: support-inbox
        server: mail.example.com:99999
        username: support@example.com
        pasword: {SECRET}
      - name: sales-inbox
        server: mail.example.com
        username: sales@example.com
        password: {SECRET}
        auth_mode: BETS
  - name: empty
"#
    )
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), format!("{SECRET}\n")).unwrap();
    let flag = write(dir.path(), "good.yaml", &good_config());
    let out = run(&["check-config", &flag]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "config OK: 2 groups, 3 accounts\n");
    assert!(!stderr(&out).contains(SECRET));
}

#[test]
fn check_config_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let flag = write(dir.path(), "bad.yaml", &bad_config());
    let out = run(&["check-config", &flag]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(!err.contains(SECRET), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let account = "groups[0] \"support\" / accounts[0] \"support-inbox\"";
    assert_eq!(
        lines[..6],
        [
            "timeout: must be greater than zero".to_string(),
            format!("{account}: unknown key \"pasword\" (did you mean \"password\"?)"),
            format!(
                "{account}: server: \"mail.example.com:99999\": bad port \"99999\", expected 1-65535"
            ),
            format!(
                "{account}: password: missing: set one of password_file, password_env or password"
            ),
            "groups[0] \"support\" / accounts[1] \"sales-inbox\": auth_mode: unknown auth mode \
             \"BETS\": expected one of BEST, APOP, CRAM-MD5, PASS, XOAUTH2, OAUTHBEARER"
                .to_string(),
            "groups[1] \"empty\": accounts: the group has no accounts".to_string(),
        ]
    );
    assert!(lines[6].ends_with("bad.yaml rejected: 6 errors"), "{err}");
    assert_eq!(lines.len(), 7);
}

#[test]
fn check_config_reads_toml() {
    let dir = tempfile::tempdir().unwrap();
    let flag = write(
        dir.path(),
        "good.toml",
        &format!(
            "[[groups]]\nname = \"g\"\n[[groups.accounts]]\nname = \"a\"\nserver = \"h\"\n\
             username = \"u\"\npassword = \"{SECRET}\"\n"
        ),
    );
    let out = run(&[
        "--config.file",
        &flag["--config.file=".len()..],
        "check-config",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "config OK: 1 group, 1 account\n");
}

#[test]
fn check_config_applies_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    let flag = write(dir.path(), "good.yaml", &good_config());
    let out = Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"))
        .args(["check-config", &flag])
        .env("MAILBOX_EXPORTER__CONCURRENCY", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("concurrency: must be at least 1\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_of_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let out = run(&["check-config", &format!("--config.file={}", path.display())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("cannot read "), "{}", stderr(&out));
    assert!(stderr(&out).contains("absent.yaml"));
}

#[test]
fn missing_config_file_flag_is_a_usage_error() {
    for args in [&["check-config"][..], &["probe", "--account=a"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("--config.file"), "{}", stderr(&out));
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["--no-such-flag"][..],
        &["probe", "--config.file=c.yaml"],
        &[
            "probe",
            "--config.file=c.yaml",
            "--account=a",
            "--auth-mode=BETS",
        ],
        &["--log.format=xml"],
        &["no-such-command"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{args:?}");
    }
}

#[test]
fn exporter_refuses_a_bad_config_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let flag = write(dir.path(), "bad.yaml", &bad_config());
    let out = run(&[&flag, "--web.listen-address=127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains(SECRET), "{err}");
    assert!(
        err.contains("timeout: must be greater than zero\n"),
        "{err}"
    );
    assert!(
        err.contains("auth_mode: unknown auth mode \"BETS\""),
        "{err}"
    );
    assert!(err.contains("bad.yaml rejected: 6 errors"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
}

#[test]
fn exporter_refuses_a_bad_web_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    let flag = write(dir.path(), "good.yaml", &good_config());
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  alice: hunter2\n").unwrap();
    let out = run(&[
        &flag,
        "--web.listen-address=127.0.0.1:0",
        &format!("--web.config.file={}", web.display()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("\"alice\": not a bcrypt hash"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn exporter_flags_are_checked() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--config.file"), "{}", stderr(&out));
    for args in [
        &["--config.file=c.yaml", "--web.listen-address=bogus"][..],
        &["demo", "--web.listen-address=9110"],
        &["--config.file=c.yaml", "--shard=2/2"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("error: invalid value"), "{args:?}: {err}");
    }
    let out = run(&["--config.file=c.yaml", "--web.listen-address=bogus"]);
    assert!(
        stderr(&out).contains("\"bogus\" is not a listen address: expected [host]:port"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn probe_refuses_before_logging_in() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    let good = write(dir.path(), "good.yaml", &good_config());
    let bad = write(dir.path(), "bad.yaml", &bad_config());

    let out = run(&["probe", &good, "--account=nobody"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "no account named \"nobody\": known accounts: support-inbox, support-imap, sales-inbox"
        ),
        "{}",
        stderr(&out)
    );

    let out = run(&["probe", &good, "--account=support-imap", "--auth-mode=PASS"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--auth-mode applies to POP3 accounts only"));

    let out = run(&["probe", &bad, "--account=sales-inbox", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("unknown auth mode \"BETS\""));
    assert!(!stderr(&out).contains(SECRET));
}

/// A config with one account per simulated server, all with the same password file.
fn sim_config(dir: &Path, servers: &[(&str, &mailbox_exporter::sim::SimServer, &str)]) -> String {
    std::fs::write(dir.join("secret.txt"), format!("{SECRET}\n")).unwrap();
    let mut accounts = String::new();
    for (name, sim, tls) in servers {
        accounts.push_str(&format!(
            "      - {{ name: {name}, protocol: {}, tls: {tls}, server: \"127.0.0.1:{}\", \
             username: agent, password_file: secret.txt }}\n",
            sim.spec().protocol,
            sim.port()
        ));
    }
    write(
        dir,
        "sim.yaml",
        &format!("timeout: 5s\ngroups:\n  - name: helpdesk\n    accounts:\n{accounts}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_explains_the_trap_rung_by_rung_and_names_the_mode_to_pin() {
    use mailbox_exporter::sim::{Behavior, SimServer, SimSpec};
    use mailbox_exporter::verdict::{Protocol, TlsMode};
    let trap = SimServer::start(
        SimSpec::new(Protocol::Pop3, TlsMode::None, Behavior::UnverifiableDigests)
            .user("agent", SECRET),
    )
    .await
    .unwrap();
    let wrong = SimServer::start(
        SimSpec::new(Protocol::Pop3, TlsMode::None, Behavior::Healthy).user("agent", "other"),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(
        dir.path(),
        &[("trap", &trap, "none"), ("wrong", &wrong, "none")],
    );
    let blocking = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
    };

    let out = blocking(vec![
        "probe".into(),
        config.clone(),
        "--account=trap".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "C: APOP agent ***",
        "C: PASS ***",
        "  APOP: rejected",
        "  CRAM-MD5: rejected",
        "  PASS: success",
        "result: success with PASS (after a fallback)",
        "pin auth_mode: PASS",
        "unencrypted",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains(SECRET));

    // Stepping down to PASS as a test, without editing the config.
    let out = blocking(vec![
        "probe".into(),
        config.clone(),
        "--account=trap".into(),
        "--auth-mode=PASS".into(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["success"], true);
    assert_eq!(json["method"], "PASS");
    assert_eq!(json["fallback"], false);
    assert_eq!(
        json["attempts"],
        serde_json::json!([{"method": "PASS", "result": "success"}])
    );

    let out = blocking(vec![
        "probe".into(),
        config,
        "--account=wrong".into(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["success"], false);
    assert_eq!(json["reason"], "auth_rejected");
    assert_eq!(json["method"], serde_json::Value::Null);
    assert!(
        json["advice"]
            .as_str()
            .unwrap()
            .contains("username and password")
    );
    assert!(!stdout(&out).contains(SECRET));
}

/// Before the limit, expanding it took 8-38 s and aborted at 4 GB.
#[test]
fn check_config_refuses_an_alias_bomb_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let flag = write(dir.path(), "bomb.yaml", &alias_bomb());
    let out = run(&["check-config", &flag]);
    assert_eq!(out.status.code(), Some(1));
    let path = dir.path().join("bomb.yaml");
    assert_eq!(
        stderr(&out),
        format!(
            "{}: cannot parse the config: the YAML holds more than 1000000 values once its \
             aliases are expanded; refused\nconfig {} rejected: 1 error\n",
            path.display(),
            path.display()
        )
    );
}

/// A FIFO nobody writes to, as the config file, a password file or a CA file, is refused at
/// once instead of blocking `check-config` forever.
#[test]
fn check_config_refuses_fifos_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("pipe");
    mkfifo(&pipe);
    let out = run(&["check-config", &format!("--config.file={}", pipe.display())]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "cannot read {pipe:?}: not a regular file (a FIFO)\nconfig {} rejected: 1 error\n",
            pipe.display()
        )
    );

    let flag = write(
        dir.path(),
        "fifos.yaml",
        "groups:\n  - name: g\n    accounts:\n      - {name: a, server: h, username: u, \
         password_file: pipe, ca_file: pipe}\n",
    );
    let out = run(&["check-config", &flag]);
    assert_eq!(out.status.code(), Some(1));
    let account = "groups[0] \"g\" / accounts[0] \"a\"";
    assert_eq!(
        stderr(&out).lines().collect::<Vec<_>>(),
        [
            format!("{account}: password_file: cannot read {pipe:?}: not a regular file (a FIFO)"),
            format!(
                "{account}: ca_file: CA file {}: cannot read it: not a regular file (a FIFO)",
                pipe.display()
            ),
            format!(
                "config {} rejected: 2 errors",
                dir.path().join("fifos.yaml").display()
            ),
        ]
    );
}

/// A 60 MB value once came back whole; a password typed into the wrong field was repeated.
#[test]
fn check_config_quotes_values_short_and_never_a_misplaced_password() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "x".repeat(1_000_000);
    let flag = write(
        dir.path(),
        "huge.yaml",
        &format!(
            "groups:\n  - name: g\n    accounts:\n      - name: a\n        server: \"{huge}:1\"\n        \
             username: u\n        password_file: {SECRET}\n        auth_mode: {huge}\n      \
             - name: b\n        server: h\n        username: u\n        password_env: {SECRET}\n"
        ),
    );
    let out = run(&["check-config", &flag]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.len() < 1000,
        "{} bytes: {}",
        err.len(),
        &err[..2000.min(err.len())]
    );
    assert!(!err.contains(SECRET), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let cut = format!("\"{}\"…(", "x".repeat(32));
    assert_eq!(lines.len(), 5, "{err}");
    assert!(
        lines[0].starts_with("groups[0] \"g\" / accounts[0] \"a\": server: ")
            && lines[0].contains(&cut),
        "{err}"
    );
    assert!(
        lines[1].starts_with("groups[0] \"g\" / accounts[0] \"a\": password_file: no such file"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("groups[0] \"g\" / accounts[0] \"a\": auth_mode: ")
            && lines[2].contains(&cut),
        "{err}"
    );
    assert!(
        lines[3].starts_with(
            "groups[0] \"g\" / accounts[1] \"b\": password_env: no such environment variable"
        ),
        "{err}"
    );
}

/// Names become label values and log fields: an escape sequence or a line break in one would
/// reach every scrape and log line raw.
#[test]
fn check_config_refuses_control_characters_in_names() {
    let dir = tempfile::tempdir().unwrap();
    let flag = write(
        dir.path(),
        "names.yaml",
        "groups:\n  - name: \"sup\\e[31mport\"\n    accounts:\n      - {name: \"in\\nbox\", server: h, \
         username: u, password: p}\n",
    );
    let out = run(&["check-config", &flag]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains('\u{1b}'), "{err}");
    assert_eq!(
        err.lines().take(2).collect::<Vec<_>>(),
        [
            "groups[0]: name: \"sup\\u{1b}[31mport\" contains the control character '\\u{1b}'; \
             names become metric labels and log fields",
            "groups[0] / accounts[0]: name: \"in\\nbox\" contains the control character '\\n'; \
             names become metric labels and log fields",
        ]
    );
}

fn hash_password(stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"))
        .args(["hash-password", "--cost=4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // The command may stop reading once it has seen too much.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn hash_password_prints_a_bcrypt_hash_and_refuses_what_bcrypt_would_cut() {
    let out = hash_password(format!("{SECRET}\n").as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hash = stdout(&out);
    let hash = hash.strip_suffix('\n').expect("one line");
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    assert!(bcrypt::verify(SECRET, hash).unwrap());
    assert!(!bcrypt::verify(format!("{SECRET}\n"), hash).unwrap());

    let longest = "p".repeat(72);
    let out = hash_password(format!("{longest}\r\n").as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(bcrypt::verify(&longest, stdout(&out).trim_end()).unwrap());

    for refused in ["p".repeat(73), "p".repeat(100_000), String::new()] {
        let out = hash_password(format!("{refused}\n").as_bytes());
        assert_eq!(out.status.code(), Some(1), "{} bytes", refused.len());
        assert!(stdout(&out).is_empty());
        let err = stderr(&out);
        assert!(!err.contains(&refused) || refused.is_empty(), "echoed");
        let expected = if refused.is_empty() {
            "empty"
        } else {
            "longer than 72 bytes"
        };
        assert!(err.contains(expected), "{err}");
    }
}
