//! Tests of the configuration: raw to validated, every error with its location.

use super::*;

const SECRET: &str = "hunter2-secret";

fn yaml(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_str_with_format(text, Format::Yaml)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn yaml_env(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::from_str_with_env(text, Format::Yaml, Path::new(""), env(pairs))
}

/// The error lines of an invalid config.
fn errors(text: &str) -> Vec<String> {
    errors_with(yaml(text))
}

fn errors_with(result: Result<Config, ConfigErrors>) -> Vec<String> {
    match result {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains(SECRET), "password leaked: {text}");
            assert_eq!(text.lines().count(), e.len());
            text.lines().map(str::to_string).collect()
        }
    }
}

/// One POP3 account `a` in group `g` with `extra` fields appended to the account.
fn one_account(extra: &str) -> String {
    format!(
        "groups:\n  - name: g\n    accounts:\n      - name: a\n        server: mail.example.com\n        username: u\n{extra}"
    )
}

fn with_password(extra: &str) -> String {
    one_account(&format!("        password: {SECRET}\n{extra}"))
}

const A: &str = "groups[0] \"g\" / accounts[0] \"a\"";

const FULL_YAML: &str = r#"
interval: 2m
timeout: 20s
concurrency: 10
per_server_concurrency: 2
defaults:
  tls: starttls
  auth_mode: APOP
groups:
  - name: support
    defaults: { protocol: imap, timeout: 15s }
    accounts:
      - name: support-inbox
        server: imap.example.com
        username: support@example.com
        password: s3cret
      - name: sales-inbox
        server: "[::1]:1995"
        protocol: pop3
        tls: implicit
        tls_verify: false
        username: sales@example.com
        password: s3cret
        interval: 1m
        timeout: 5s
  - name: billing
    accounts:
      - name: billing-inbox
        server: pop.example.com:2110
        username: billing
        password: s3cret
        auth_mode: pass
"#;

const FULL_TOML: &str = r#"
interval = "2m"
timeout = "20s"
concurrency = 10
per_server_concurrency = 2

[defaults]
tls = "starttls"
auth_mode = "APOP"

[[groups]]
name = "support"
defaults = { protocol = "imap", timeout = "15s" }

[[groups.accounts]]
name = "support-inbox"
server = "imap.example.com"
username = "support@example.com"
password = "s3cret"

[[groups.accounts]]
name = "sales-inbox"
server = "[::1]:1995"
protocol = "pop3"
tls = "implicit"
tls_verify = false
username = "sales@example.com"
password = "s3cret"
interval = "1m"
timeout = "5s"

[[groups]]
name = "billing"

[[groups.accounts]]
name = "billing-inbox"
server = "pop.example.com:2110"
username = "billing"
password = "s3cret"
auth_mode = "pass"
"#;

#[test]
fn defaults_layer_global_group_account() {
    let c = yaml(FULL_YAML).unwrap();
    assert_eq!(c.interval, Duration::from_secs(120));
    assert_eq!(c.timeout, Duration::from_secs(20));
    assert_eq!((c.concurrency, c.per_server_concurrency), (10, 2));
    assert_eq!(c.groups.len(), 2);
    assert_eq!(c.account_count(), 3);

    // Group defaults (imap, 15s) over global ones (starttls, 2m).
    let a = c.find_account("support-inbox").unwrap();
    assert_eq!(a.group, "support");
    assert_eq!(a.interval, Duration::from_secs(120));
    let t = &a.target;
    assert_eq!(t.protocol, Protocol::Imap);
    assert_eq!(t.tls.mode, TlsMode::Starttls);
    assert_eq!(t.port, 143);
    assert_eq!(t.host, "imap.example.com");
    assert!(t.tls.verify);
    assert_eq!(t.timeout, Duration::from_secs(15));
    assert_eq!(t.username, "support@example.com");
    assert_eq!(t.password.expose(), "s3cret");
    // The global POP3 auth mode does not reach an IMAP account.
    assert_eq!(t.auth_mode, AuthMode::Best);

    // Account fields over both.
    let a = c.find_account("sales-inbox").unwrap();
    assert_eq!(a.interval, Duration::from_secs(60));
    let t = &a.target;
    assert_eq!(t.protocol, Protocol::Pop3);
    assert_eq!(t.tls.mode, TlsMode::Implicit);
    assert!(!t.tls.verify);
    assert_eq!((t.host.as_str(), t.port), ("::1", 1995));
    assert_eq!(t.server(), "[::1]:1995");
    assert_eq!(t.timeout, Duration::from_secs(5));
    assert_eq!(t.auth_mode, AuthMode::Apop);

    let t = &c.find_account("billing-inbox").unwrap().target;
    assert_eq!(
        (t.protocol, t.tls.mode, t.port),
        (Protocol::Pop3, TlsMode::Starttls, 2110)
    );
    assert_eq!(t.auth_mode, AuthMode::Pass);
    assert_eq!(t.timeout, Duration::from_secs(20));

    assert!(c.find_account("nope").is_none());
    let names: Vec<&str> = c.accounts().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["support-inbox", "sales-inbox", "billing-inbox"]);
}

#[test]
fn builtin_defaults() {
    let c = yaml(&with_password("")).unwrap();
    assert_eq!(c.interval, DEFAULT_INTERVAL);
    assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    assert_eq!(c.concurrency, DEFAULT_CONCURRENCY);
    assert_eq!(c.per_server_concurrency, DEFAULT_PER_SERVER_CONCURRENCY);
    let a = c.find_account("a").unwrap();
    assert_eq!(a.interval, DEFAULT_INTERVAL);
    let t = &a.target;
    assert_eq!(t.protocol, Protocol::Pop3);
    assert_eq!(
        t.tls,
        TlsSettings {
            mode: TlsMode::Implicit,
            verify: true,
            ca_file: None
        }
    );
    assert_eq!(t.port, 995);
    assert_eq!(t.auth_mode, AuthMode::Best);
    assert_eq!(t.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn default_ports_by_protocol_and_tls() {
    for (protocol, tls, port) in [
        ("pop3", "implicit", 995),
        ("pop3", "starttls", 110),
        ("pop3", "none", 110),
        ("imap", "implicit", 993),
        ("imap", "starttls", 143),
        ("imap", "none", 143),
    ] {
        let c = yaml(&with_password(&format!(
            "        protocol: {protocol}\n        tls: {tls}\n"
        )))
        .unwrap();
        assert_eq!(
            c.find_account("a").unwrap().target.port,
            port,
            "{protocol} {tls}"
        );
    }
}

#[test]
fn toml_and_yaml_are_equivalent() {
    let from_yaml = yaml(FULL_YAML).unwrap();
    let from_toml = Config::from_str_with_format(FULL_TOML, Format::Toml).unwrap();
    assert_eq!(from_yaml, from_toml);
}

#[test]
fn format_follows_the_extension() {
    assert_eq!(Format::from_path(Path::new("a/b.toml")), Format::Toml);
    assert_eq!(Format::from_path(Path::new("b.TOML")), Format::Toml);
    assert_eq!(Format::from_path(Path::new("b.yaml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("b.yml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("b")), Format::Yaml);
}

#[test]
fn load_reads_files_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, FULL_TOML).unwrap();
    let yml = dir.path().join("c.yml");
    std::fs::write(&yml, FULL_YAML).unwrap();
    assert_eq!(Config::load(&toml).unwrap(), Config::load(&yml).unwrap());

    let missing = dir.path().join("missing.yaml");
    let e = Config::load(&missing).unwrap_err().to_string();
    assert!(e.starts_with("cannot read "), "{e}");
    assert!(e.contains("missing.yaml"), "{e}");
}

#[test]
fn environment_overrides_the_file() {
    let c = yaml_env(
        &with_password("        tls: none\n"),
        &[
            ("MAILBOX_EXPORTER__TIMEOUT", "10s"),
            ("MAILBOX_EXPORTER__CONCURRENCY", "8"),
            ("MAILBOX_EXPORTER__DEFAULTS__TLS_VERIFY", "false"),
            ("MAILBOX_EXPORTER__DEFAULTS__AUTH_MODE", "PASS"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.timeout, Duration::from_secs(10));
    assert_eq!(c.concurrency, 8);
    let t = &c.find_account("a").unwrap().target;
    assert!(!t.tls.verify);
    assert_eq!(t.auth_mode, AuthMode::Pass);
    assert_eq!(t.timeout, Duration::from_secs(10));
}

#[test]
fn environment_overrides_what_the_file_sets() {
    let text = format!(
        "timeout: 20s\ndefaults:\n  tls_verify: true\n{}",
        with_password("")
    );
    let c = yaml_env(
        &text,
        &[
            ("MAILBOX_EXPORTER__TIMEOUT", "7s"),
            ("MAILBOX_EXPORTER__DEFAULTS__TLS_VERIFY", "false"),
        ],
    )
    .unwrap();
    assert_eq!(c.timeout, Duration::from_secs(7));
    assert!(!c.find_account("a").unwrap().target.tls.verify);
}

#[test]
fn bad_environment_values_are_errors() {
    let e = errors_with(yaml_env(
        &with_password(""),
        &[
            ("MAILBOX_EXPORTER__TIMEOUT", "soon"),
            ("MAILBOX_EXPORTER__DEFAULTS__TLS_VERIFY", "maybe"),
            ("MAILBOX_EXPORTER__TIMOUT", "5s"),
        ],
    ));
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e.contains(&"unknown key \"timout\" (did you mean \"timeout\"?)".to_string()),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("timeout: bad duration \"soon\"")),
        "{e:#?}"
    );
    assert!(
        e.contains(&"defaults: tls_verify: expected true or false, found \"maybe\"".to_string()),
        "{e:#?}"
    );
}

#[test]
fn password_file_drops_one_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    for (content, expected) in [
        ("pw\n", "pw"),
        ("pw\r\n", "pw"),
        ("pw", "pw"),
        (" pw ", " pw "),
    ] {
        std::fs::write(dir.path().join("secret"), content).unwrap();
        let c = Config::from_str_with_env(
            &one_account("        password_file: secret\n"),
            Format::Yaml,
            dir.path(),
            env(&[]),
        )
        .unwrap();
        let t = &c.find_account("a").unwrap().target;
        assert_eq!(t.password.expose(), expected, "{content:?}");
    }
}

#[test]
fn password_file_with_more_lines_is_refused_without_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    for content in [
        format!("{SECRET}\n\n"),
        format!("{SECRET}\nother\n"),
        "\n".to_string(),
    ] {
        std::fs::write(&path, &content).unwrap();
        let e = errors_with(Config::from_str_with_env(
            &one_account(&format!("        password_file: {}\n", path.display())),
            Format::Yaml,
            Path::new("/elsewhere"),
            env(&[]),
        ));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(&format!("{A}: password_file: the password ")),
            "{e:?}"
        );
    }
}

#[test]
fn unreadable_password_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a-directory")).unwrap();
    let e = errors_with(Config::from_str_with_env(
        &one_account("        password_file: a-directory\n"),
        Format::Yaml,
        dir.path(),
        env(&[]),
    ));
    let path = dir.path().join("a-directory");
    assert_eq!(
        e,
        [format!(
            "{A}: password_file: cannot read {path:?}: not a regular file (a directory)"
        )]
    );
}

/// A password typed into `password_file` or `password_env` is not a file or a variable:
/// the error says so without repeating it.
#[test]
fn a_password_in_the_wrong_field_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    for field in ["password_file", "password_env"] {
        let e = errors_with(Config::from_str_with_env(
            &one_account(&format!("        {field}: {SECRET}\n")),
            Format::Yaml,
            dir.path(),
            env(&[]),
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!("{A}: {field}: no such ")),
            "{e:?}"
        );
        assert!(!e[0].contains(SECRET), "{e:?}");
    }
}

/// Every place that quotes a value quotes a short prefix of it.
#[test]
fn huge_values_are_cut_in_errors() {
    let huge = "x".repeat(100_000);
    let text = format!(
        "groups:\n  - name: g\n    ? {huge}\n    : 1\n    accounts:\n      - name: a\n        \
             server: \"{huge} \"\n        username: u\n        password: p\n        \
             auth_mode: {huge}\n        tls: {huge}\n        protocol: {huge}\n        \
             tls_verify: {huge}\n        interval: {huge}\n        timeout: 1{huge}\n"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 8, "{e:?}");
    let cut = format!("\"{}\"…(10000", "x".repeat(32));
    for message in &e {
        assert!(message.len() < 300, "{message}");
    }
    assert_eq!(e.iter().filter(|m| m.contains(&cut)).count(), 7, "{e:?}");
    let e = errors(&format!("concurrency: \"{huge}\"\n"));
    assert!(e[0].contains(&cut) && e[0].len() < 300, "{e:?}");
}

#[test]
fn names_with_control_characters_are_refused() {
    for name in [
        "\"sup\\eport\"",
        "\"sup\\nport\"",
        "\"sup\\x7fport\"",
        "\"sup\\u0085port\"",
    ] {
        let text = format!(
            "groups:\n  - name: {name}\n    accounts:\n      - {{name: {name}, server: h, username: u, password: p}}\n"
        );
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("groups[0]: name: \"sup\\"), "{e:?}");
        assert!(
            e[1].starts_with("groups[0] / accounts[0]: name: \"sup\\"),
            "{e:?}"
        );
        assert!(
            e.iter().all(|m| m.contains("control character")
                && !m.contains(['\x1b', '\n', '\x7f', '\u{85}'])),
            "{e:?}"
        );
    }
}

#[test]
fn line_breaks_and_nul_in_username_and_server_are_refused() {
    for bad in ["\"u\\r\\nQUIT\"", "\"u\\0\""] {
        let text = with_password("").replace("username: u", &format!("username: {bad}"));
        assert_eq!(
            errors(&text),
            [format!("{A}: username: contains a line break or NUL")]
        );
        let text = with_password("").replace("server: mail.example.com", &format!("server: {bad}"));
        let e = errors(&text);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(&format!("{A}: server: "))
                && e[0].ends_with("contains whitespace or a control character"),
            "{e:?}"
        );
    }
}

#[test]
fn errors_past_a_thousand_are_counted_not_listed() {
    let mut text = String::from("groups:\n  - name: g\n    accounts:\n");
    for _ in 0..1500 {
        text.push_str("      - 7\n");
    }
    let e = errors(&text);
    assert_eq!(e.len(), 1001);
    assert_eq!(
        e[999],
        "groups[0] \"g\" / accounts[999]: expected a mapping, found a number"
    );
    assert_eq!(e[1000], "500 more errors not listed");
}

#[test]
fn an_alias_bomb_is_refused_before_it_expands() {
    let e = errors(&limits::tests::alias_bomb());
    assert_eq!(
        e,
        [
            "cannot parse the config: the YAML holds more than 1000000 values once its aliases are expanded; refused"
        ]
    );
}

#[test]
fn endless_or_huge_files_are_refused_not_read_forever() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("huge"), vec![b'x'; 65537]).unwrap();
    for (file, message) in [
        ("/dev/zero", "not a regular file (a device)"),
        ("huge", "larger than 65536 bytes"),
    ] {
        let e = errors_with(Config::from_str_with_env(
            &one_account(&format!("        password_file: {file}\n")),
            Format::Yaml,
            dir.path(),
            env(&[]),
        ));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(&format!("{A}: password_file: cannot read ")),
            "{e:?}"
        );
        assert!(e[0].ends_with(message), "{e:?}");
    }
}

/// A FIFO nobody writes to would block a plain open forever.
#[test]
fn fifos_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let e = errors_with(Config::from_str_with_env(
        &one_account("        password_file: pipe\n        ca_file: pipe\n"),
        Format::Yaml,
        dir.path(),
        env(&[]),
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with(&format!("{A}: password_file: cannot read "))
            && e[0].ends_with("pipe\": not a regular file (a FIFO)"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with(&format!("{A}: ca_file: CA file "))
            && e[1].ends_with("pipe: cannot read it: not a regular file (a FIFO)"),
        "{e:?}"
    );
}

#[test]
fn password_env_is_read_from_the_given_environment() {
    let text = one_account("        password_env: SUPPORT_PW\n");
    let c = yaml_env(&text, &[("SUPPORT_PW", "from-env")]).unwrap();
    assert_eq!(
        c.find_account("a").unwrap().target.password.expose(),
        "from-env"
    );

    let e = errors_with(yaml_env(&text, &[]));
    assert_eq!(
        e,
        [format!(
            "{A}: password_env: environment variable \"SUPPORT_PW\" is not set"
        )]
    );
}

#[test]
fn exactly_one_password_source() {
    assert_eq!(
        errors(&one_account("")),
        [format!(
            "{A}: password: missing: set one of password_file, password_env or password"
        )]
    );
    assert_eq!(
        errors(&with_password("        password_env: X\n")),
        [format!(
            "{A}: password: password and password_env are exclusive: set exactly one"
        )]
    );
}

#[test]
fn password_never_printed() {
    let c = yaml(&with_password("")).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("***"));

    let raw = RawConfig::parse(
        &with_password(&format!(
            "        pasword: {SECRET}\n        port: {SECRET}\n"
        )),
        Format::Yaml,
        &HashMap::new(),
    )
    .unwrap();
    let debug = format!("{raw:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("pasword"), "{debug}");

    // A password of the wrong type, and a misspelt key holding one.
    let e = errors(&one_account(&format!(
        "        password: [{SECRET}]\n        pasword: {SECRET}\n"
    )));
    assert_eq!(
        e,
        [
            format!("{A}: unknown key \"pasword\" (did you mean \"password\"?)"),
            format!("{A}: password: expected a string (quote it), found a list"),
        ]
    );
}

#[test]
fn toml_syntax_errors_do_not_quote_the_source() {
    let text = format!("[[groups]]\nname = \"g\"\npassword = \"{SECRET}\n");
    let e = Config::from_str_with_format(&text, Format::Toml).unwrap_err();
    let e = e.to_string();
    assert!(!e.contains(SECRET), "{e}");
    assert!(e.starts_with("cannot parse the config: "), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn yaml_syntax_errors_are_one_error() {
    let e = errors("groups: [\n  {name: g\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("cannot parse the config: "), "{e:?}");
}

#[test]
fn unknown_auth_mode() {
    let text = with_password("        auth_mode: BETS\n");
    assert_eq!(
        errors(&text),
        [format!(
            "{A}: auth_mode: unknown auth mode \"BETS\": expected one of BEST, APOP, CRAM-MD5, PASS, XOAUTH2, OAUTHBEARER"
        )]
    );
}

#[test]
fn auth_mode_on_an_imap_account() {
    let e = errors(&with_password(
        "        protocol: imap\n        auth_mode: PASS\n",
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(&format!("{A}: auth_mode: IMAP accounts have no auth mode")),
        "{e:?}"
    );
    // Inherited from defaults, it only applies to POP3 accounts.
    let text = format!(
        "defaults: {{auth_mode: PASS}}\n{}",
        with_password("        protocol: imap\n")
    );
    assert_eq!(
        yaml(&text)
            .unwrap()
            .find_account("a")
            .unwrap()
            .target
            .auth_mode,
        AuthMode::Best
    );
}

#[test]
fn unknown_protocol_tls_and_bad_types() {
    let text = format!(
        "groups:\n  - name: g\n    accounts:\n      - name: a\n        server: h\n        \
             username: 42\n        password: {SECRET}\n        protocol: smtp\n        \
             tls: ssl\n        tls_verify: 3\n"
    );
    assert_eq!(
        errors(&text),
        [
            format!("{A}: username: expected a string, found a number"),
            format!("{A}: protocol: unknown protocol \"smtp\": expected one of pop3, imap"),
            format!("{A}: tls: unknown tls mode \"ssl\": expected one of implicit, starttls, none"),
            format!("{A}: tls_verify: expected true or false, found a number"),
        ]
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let e = errors(&with_password("        username: v\n"));
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("duplicated key"), "{e:?}");
}

#[test]
fn bad_servers() {
    for (server, message) in [
        (
            "\"mail.example.com:99999\"",
            "bad port \"99999\", expected 1-65535",
        ),
        ("\"mail.example.com:0\"", "bad port \"0\", expected 1-65535"),
        ("\"mail.example.com:\"", "bad port \"\", expected 1-65535"),
        ("\"::1\"", "write IPv6 addresses in brackets"),
        ("\"[::1\"", "missing ']'"),
        ("\"[nope]:995\"", "is not an IPv6 address"),
        ("\":995\"", "the host is empty"),
        ("\"mail example.com\"", "contains whitespace"),
        ("\"pop3://mail.example.com\"", "bad port"),
        ("\"\"", "is empty"),
        (
            &format!("{}.example", "x".repeat(250)),
            "the host is longer than 253 bytes",
        ),
    ] {
        let text =
            with_password("").replace("server: mail.example.com", &format!("server: {server}"));
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{server}: {e:?}");
        assert!(e[0].starts_with(&format!("{A}: server: ")), "{e:?}");
        assert!(e[0].contains(message), "{server}: {e:?}");
    }
}

#[test]
fn good_servers() {
    for (server, host, port) in [
        ("mail.example.com", "mail.example.com", 995),
        ("mail.example.com:1995", "mail.example.com", 1995),
        ("127.0.0.3:110", "127.0.0.3", 110),
        ("\"[::1]\"", "::1", 995),
        ("\"[2001:db8::1]:995\"", "2001:db8::1", 995),
    ] {
        let text =
            with_password("").replace("server: mail.example.com", &format!("server: {server}"));
        let c = yaml(&text).unwrap();
        let t = &c.find_account("a").unwrap().target;
        assert_eq!((t.host.as_str(), t.port), (host, port), "{server}");
    }
}

#[test]
fn missing_fields() {
    let e = errors("groups:\n  - accounts:\n      - {}\n");
    assert_eq!(
        e,
        [
            "groups[0]: name: missing",
            "groups[0] / accounts[0]: name: missing",
            "groups[0] / accounts[0]: server: missing (host or host:port)",
            "groups[0] / accounts[0]: username: missing",
            "groups[0] / accounts[0]: password: missing: set one of password_file, password_env or password",
        ]
    );
}

#[test]
fn duplicate_names_and_empty_groups() {
    let e = errors(
        r#"
groups:
  - name: a
    accounts:
      - {name: x, server: h, username: u, password: p}
  - name: b
    accounts:
      - {name: x, server: h, username: u, password: p}
  - name: a
    accounts: []
  - name: c
"#,
    );
    assert_eq!(
        e,
        [
            "groups[1] \"b\" / accounts[0] \"x\": name: duplicate account name \"x\" (first used at groups[0] \"a\" / accounts[0]); account names must be unique across all groups",
            "groups[2] \"a\": name: duplicate group name \"a\" (first used at groups[0])",
            "groups[2] \"a\": accounts: the group has no accounts",
            "groups[3] \"c\": accounts: the group has no accounts",
        ]
    );
}

#[test]
fn wrong_shapes_do_not_stop_validation() {
    let e = errors(
        r#"
defaults: pop3
groups:
  - just-a-string
  - name: g
    defaults: [1]
    accounts: {name: x}
  - name: h
    accounts:
      - 7
      - {name: ok, server: h, username: u, password: p, interval: 5}
"#,
    );
    assert_eq!(
        e,
        [
            "defaults: expected a mapping, found a string",
            "groups[0]: expected a mapping, found a string",
            "groups[1] \"g\" / defaults: expected a mapping, found a list",
            "groups[1] \"g\": accounts: expected a list of accounts, found a mapping",
            "groups[2] \"h\" / accounts[0]: expected a mapping, found a number",
            "groups[2] \"h\" / accounts[1] \"ok\": interval: expected a duration with a unit such as \"30s\" or \"5m\", found a number",
        ]
    );
    assert_eq!(
        errors("groups: 3\n"),
        ["groups: expected a list of groups, found a number"]
    );
}

#[test]
fn bad_durations_and_concurrency() {
    let e = errors(
        "interval: 0s\ntimeout: 2h\nconcurrency: -1\nper_server_concurrency: 5000\ndefaults: {interval: 30d}\n",
    );
    assert_eq!(
        e,
        [
            "interval: must be greater than zero",
            "timeout: \"2h\" is out of range (10ms to 10m)",
            "concurrency: expected a whole number, found a number",
            "per_server_concurrency: 5000 is too large (at most 1000)",
            "defaults: interval: \"30d\" is out of range (1s to 7days)",
        ]
    );
    assert_eq!(
        errors("concurrency: lots\n"),
        ["concurrency: expected a whole number, found \"lots\""]
    );
    assert_eq!(errors("timeout: soon\n").len(), 1);
}

#[test]
fn timeout_must_be_shorter_than_interval() {
    assert_eq!(
        errors("interval: 10s\ntimeout: 30s\n"),
        ["timeout: timeout 30s must be shorter than interval 10s"]
    );
    let e = errors(&with_password("        interval: 20s\n"));
    assert_eq!(
        e,
        [format!(
            "{A}: timeout: timeout 30s must be shorter than interval 20s"
        )]
    );
}

#[test]
fn ca_file_must_be_pem() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        dir.path().join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let load = |ca: &str| {
        Config::from_str_with_env(
            &with_password(&format!("        ca_file: {ca}\n")),
            Format::Yaml,
            dir.path(),
            env(&[]),
        )
    };
    let c = load("ca.pem").unwrap();
    assert_eq!(
        c.find_account("a").unwrap().target.tls.ca_file,
        Some(dir.path().join("ca.pem"))
    );
    for (file, message) in [
        ("junk.pem", "holds no PEM certificate"),
        ("broken.pem", "does not parse"),
        ("missing.pem", "cannot read"),
    ] {
        let e = errors_with(load(file));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with(&format!("{A}: ca_file: ")), "{e:?}");
        assert!(e[0].contains(file) && e[0].contains(message), "{e:?}");
    }
}

#[test]
fn every_error_is_listed_at_once() {
    let e = errors(
        r#"
concurrency: 0
groups:
  - name: support
    accounts:
      - name: support-inbox
        server: mail.example.com:70000
        username: u
        password: p
      - name: other
        server: mail.example.com
        username: u
        password: p
      - name: sales-inbox
        server: mail.example.com
        username: u
        password: p
        auth_mode: BETS
        colour: blue
      - name: other
        server: mail.example.com
        username: u
        password: p
"#,
    );
    assert_eq!(
        e,
        [
            "concurrency: must be at least 1",
            "groups[0] \"support\" / accounts[0] \"support-inbox\": server: \"mail.example.com:70000\": bad port \"70000\", expected 1-65535",
            "groups[0] \"support\" / accounts[2] \"sales-inbox\": unknown key \"colour\"",
            "groups[0] \"support\" / accounts[2] \"sales-inbox\": auth_mode: unknown auth mode \"BETS\": expected one of BEST, APOP, CRAM-MD5, PASS, XOAUTH2, OAUTHBEARER",
            "groups[0] \"support\" / accounts[3] \"other\": name: duplicate account name \"other\" (first used at groups[0] \"support\" / accounts[1]); account names must be unique across all groups",
        ]
    );
}

#[test]
fn no_accounts_is_valid() {
    let c = yaml("").unwrap();
    assert_eq!((c.groups.len(), c.account_count()), (0, 0));
    let c = yaml("groups: []\n").unwrap();
    assert_eq!(c.account_count(), 0);
}

#[test]
fn raw_config_converts_with_try_from() {
    let raw = RawConfig::parse(&with_password(""), Format::Yaml, &HashMap::new()).unwrap();
    let c = Config::try_from(raw).unwrap();
    assert_eq!(c.account_count(), 1);
}

#[test]
fn typo_hints() {
    assert!(similar("password", "pasword"));
    assert!(similar("auth_mode", "auth-mode"));
    assert!(similar("tls_verify", "TLS_VERIFY"));
    assert!(!similar("tls", "protocol"));
}

#[test]
fn failure_budget() {
    assert_eq!(
        yaml("").unwrap().failure_budget,
        Some(DEFAULT_FAILURE_BUDGET)
    );
    let c = yaml("failure_budget: {failures: 6, window: 30m}\n").unwrap();
    assert_eq!(
        c.failure_budget,
        Some(FailureBudgetSettings {
            failures: 6,
            window: Duration::from_secs(1800)
        })
    );
    let c = yaml("failure_budget: {window: 20s}\n").unwrap();
    assert_eq!(
        c.failure_budget,
        Some(FailureBudgetSettings {
            failures: DEFAULT_FAILURE_BUDGET.failures,
            window: Duration::from_secs(20)
        })
    );
    assert_eq!(
        yaml("failure_budget: {failures: 0}\n")
            .unwrap()
            .failure_budget,
        None
    );
    let env = env(&[("MAILBOX_EXPORTER__FAILURE_BUDGET__FAILURES", "0")]);
    let env: HashMap<String, String> = env.into_iter().collect();
    let raw = RawConfig::parse("failure_budget: {failures: 5}\n", Format::Yaml, &env).unwrap();
    assert_eq!(
        raw.validate(Path::new(""), &env).unwrap().failure_budget,
        None
    );
    assert_eq!(
        errors("failure_budget: {failures: 1, window: 2d, ban: yes}\n"),
        [
            "failure_budget: unknown key \"ban\" (expected failures, window)",
            "failure_budget.window: \"2d\" is out of range (1s to 1day)",
            "failure_budget.failures: 1 leaves no room for a method and the aborted login \
                 after it: use 0 (no budget) or at least 2",
        ]
    );
    assert_eq!(
        errors("failure_budget: 4\n"),
        ["failure_budget: expected a mapping such as {failures: 4, window: 10m}, found a number"]
    );
    assert_eq!(
        errors("failure_budget: {failures: many}\n"),
        ["failure_budget.failures: expected a whole number (0 turns the budget off)"]
    );
}
