//! No password anywhere: every failure mode and every success path, over both protocols and
//! every TLS mode, through the library and through the `probe` command (text, JSON and trace
//! logs), is searched for the password and its encoded forms.

use std::path::Path;
use std::time::Duration;

use mailbox_exporter::probe::{self, Steps, Target, TlsSettings};
use mailbox_exporter::proto::sasl;
use mailbox_exporter::secret::Password;
use mailbox_exporter::sim::{Behavior, BusyCode, SimServer, SimSpec, TlsDemand, sim_certificate};
use mailbox_exporter::tls::Connectors;
use mailbox_exporter::verdict::{AuthMode, Protocol, TlsMode};

const USER: &str = "agent7@helpdesk.example";
const SECRET: &str = "Zq9-unique-Secret-4711";

/// Every form in which the password could leak: itself, and the encodings a client sends.
fn forbidden() -> Vec<String> {
    vec![
        SECRET.to_string(),
        sasl::plain_response(USER, SECRET),
        sasl::encode(SECRET.as_bytes()),
    ]
}

fn assert_clean(context: &str, text: &str) {
    for needle in forbidden() {
        assert!(
            !text.contains(&needle),
            "{context}: found {needle:?} in:\n{text}"
        );
    }
}

fn behaviors() -> Vec<Behavior> {
    vec![
        Behavior::Healthy,
        Behavior::UnverifiableDigests,
        Behavior::UnverifiableDigestsThenClose,
        Behavior::CramMd5Only,
        Behavior::CleartextOnly,
        Behavior::Busy(BusyCode::InUse),
        Behavior::Busy(BusyCode::SysTemp),
        Behavior::RejectGreeting,
        Behavior::LoginDisabled,
        Behavior::OAuthOnly,
        Behavior::Silent,
        Behavior::EndlessLine,
        Behavior::Garbage,
        Behavior::CloseOnAccept,
        Behavior::TlsRequired(TlsDemand::Layer),
        Behavior::TlsRequired(TlsDemand::Text),
        Behavior::TlsRequired(TlsDemand::Capability),
        Behavior::EchoRefusals,
    ]
}

fn ca_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("sim-ca.pem");
    std::fs::write(&path, &sim_certificate().cert_pem).unwrap();
    path
}

/// The password login modes a probe can be told to use for `protocol`.
fn password_modes(protocol: Protocol) -> &'static [AuthMode] {
    match protocol {
        Protocol::Pop3 => &[
            AuthMode::Best,
            AuthMode::Apop,
            AuthMode::CramMd5,
            AuthMode::Pass,
        ],
        Protocol::Imap => &[AuthMode::Best],
    }
}

/// A probe of `USER` with `password` at `sim`, trusting `ca`.
fn target(
    sim: &SimServer,
    ca: &Path,
    password: &str,
    auth_mode: AuthMode,
    timeout: Duration,
) -> Target {
    Target {
        protocol: sim.spec().protocol,
        host: "127.0.0.1".into(),
        port: sim.port(),
        tls: TlsSettings {
            mode: sim.spec().tls,
            verify: true,
            ca_file: Some(ca.to_path_buf()),
        },
        username: USER.into(),
        password: Password::new(password),
        auth_mode,
        timeout,
        oauth2: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_verdict_of_any_failure_mode_contains_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    let mut servers = Vec::new();
    let mut probes = tokio::task::JoinSet::new();
    // One cache for all, as the exporter shares one between its probes.
    let connectors = Connectors::new();
    for protocol in [Protocol::Pop3, Protocol::Imap] {
        for behavior in behaviors() {
            for tls in [TlsMode::None, TlsMode::Starttls, TlsMode::Implicit] {
                // The server holds a different password for the failure paths, the same one
                // for the success paths: both must stay silent about the client's.
                for server_password in [SECRET, "another-password"] {
                    let spec =
                        SimSpec::new(protocol, tls, behavior.clone()).user(USER, server_password);
                    let sim = SimServer::start(spec).await.unwrap();
                    for &auth_mode in password_modes(protocol) {
                        let target =
                            target(&sim, &ca, SECRET, auth_mode, Duration::from_millis(500));
                        let context = format!("{protocol} {behavior:?} tls {tls} {auth_mode}");
                        let connectors = connectors.clone();
                        probes.spawn(async move {
                            let v = probe::probe_with(&target, Steps::default(), &connectors).await;
                            assert_clean(&context, &format!("{v:?}"));
                            assert_clean(&context, &serde_json::to_string(&v).unwrap());
                            assert_clean(&context, &format!("{target:?}"));
                            v.success
                        });
                    }
                    servers.push(sim);
                }
            }
        }
    }
    let mut outcomes = Vec::new();
    while let Some(done) = probes.join_next().await {
        outcomes.push(done.expect("no probe panics"));
    }
    assert!(outcomes.iter().any(|&ok| ok) && outcomes.iter().any(|&ok| !ok));
    // 2 passwords x 3 TLS modes x 18 behaviours x (4 POP3 modes + 1 IMAP)
    assert_eq!(outcomes.len(), 2 * 3 * 18 * 5);
}

fn run_cli(args: &[String]) -> (String, i32) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbox_exporter"))
        .args(args)
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_command_output_and_logs_never_contain_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    let mut servers = Vec::new();
    let mut accounts = String::new();
    for (i, (protocol, behavior, tls)) in [
        (Protocol::Pop3, Behavior::UnverifiableDigests, TlsMode::None),
        (
            Protocol::Pop3,
            Behavior::UnverifiableDigestsThenClose,
            TlsMode::Starttls,
        ),
        (Protocol::Pop3, Behavior::CleartextOnly, TlsMode::None),
        (
            Protocol::Pop3,
            Behavior::Busy(BusyCode::InUse),
            TlsMode::Implicit,
        ),
        (
            Protocol::Imap,
            Behavior::UnverifiableDigests,
            TlsMode::Implicit,
        ),
        (Protocol::Imap, Behavior::LoginDisabled, TlsMode::None),
        (Protocol::Imap, Behavior::CleartextOnly, TlsMode::None),
        (Protocol::Imap, Behavior::Garbage, TlsMode::None),
    ]
    .into_iter()
    .enumerate()
    {
        for (suffix, server_password) in [("ok", SECRET), ("bad", "not-it")] {
            let sim = SimServer::start(
                SimSpec::new(protocol, tls, behavior.clone()).user(USER, server_password),
            )
            .await
            .unwrap();
            accounts.push_str(&format!(
                "      - {{ name: a{i}-{suffix}, protocol: {protocol}, tls: {tls}, server: \"127.0.0.1:{}\", username: \"{USER}\", password_file: secret, ca_file: \"{}\" }}\n",
                sim.port(),
                ca.display()
            ));
            servers.push((format!("a{i}-{suffix}"), sim));
        }
    }
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!("timeout: 2s\ngroups:\n  - name: helpdesk\n    accounts:\n{accounts}"),
    )
    .unwrap();
    let config_flag = format!("--config.file={}", config.display());
    let mut successes = 0;
    for (name, _) in &servers {
        for extra in [
            vec![],
            vec!["--json".to_string()],
            vec!["--auth-mode=PASS".to_string()],
        ] {
            let imap = ["a4", "a5", "a6", "a7"].iter().any(|p| name.starts_with(p));
            if imap && !extra.is_empty() && extra[0].starts_with("--auth-mode") {
                continue; // IMAP has no auth mode
            }
            let mut args = vec![
                "probe".to_string(),
                config_flag.clone(),
                format!("--account={name}"),
                "--log.level=trace".to_string(),
            ];
            args.extend(extra);
            let (text, code) = tokio::task::spawn_blocking(move || run_cli(&args))
                .await
                .unwrap();
            assert!(code == 0 || code == 1, "{name}: exit {code}: {text}");
            if code == 0 {
                successes += 1;
            }
            assert_clean(name, &text);
        }
    }
    assert!(
        successes > 0 && successes < 40,
        "both outcomes were exercised: {successes}"
    );
}

/// The APOP timestamp and CRAM-MD5 challenge of the echoing servers, so that the digests the
/// client sends are known here.
const STAMP: &str = "<1896.697170952@dbc.mtview.ca.us>";

/// Passwords that take every form: escapes when IMAP-quoted, a literal when 8-bit.
const ECHO_SECRETS: [&str; 3] = [
    "Zq9-unique-Secret-4711",
    "Zq9\"quoted\\Secret-4711",
    "Zq9-ünïcode-Secret-4711",
];

/// Every form in which the client sends `password`, hex digests in both cases.
fn sent_forms(password: &str) -> Vec<String> {
    let apop = sasl::apop_digest(STAMP, password);
    let cram = sasl::cram_md5_digest(password, STAMP.as_bytes());
    let quoted = mailbox_exporter::proto::imap::quoted(password);
    let mut forms = vec![
        password.to_string(),
        sasl::encode(password.as_bytes()),
        sasl::plain_response(USER, password),
        sasl::cram_md5_response(USER, password, STAMP.as_bytes()),
        apop.to_ascii_uppercase(),
        cram.to_ascii_uppercase(),
        apop,
        cram,
    ];
    if let Some(quoted) = quoted {
        forms.push(quoted[1..quoted.len() - 1].to_string());
        forms.push(quoted);
    }
    forms
}

fn assert_no_form(context: &str, password: &str, text: &str) {
    for form in sent_forms(password) {
        assert!(
            !text.contains(&form),
            "{context}: found {form:?} in:\n{text}"
        );
    }
}

async fn echo_server(protocol: Protocol, tls: TlsMode, sasl_ir: bool, password: &str) -> SimServer {
    let mut spec = SimSpec::new(protocol, tls, Behavior::EchoRefusals).user(USER, password);
    spec.fixed_stamp = Some(STAMP.to_string());
    spec.sasl_ir = sasl_ir;
    SimServer::start(spec).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_echoing_every_client_line_shows_no_form_of_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    for password in ECHO_SECRETS {
        for tls in [TlsMode::None, TlsMode::Starttls, TlsMode::Implicit] {
            for (protocol, sasl_ir) in [
                (Protocol::Pop3, true),
                (Protocol::Imap, true),
                (Protocol::Imap, false),
            ] {
                let sim = echo_server(protocol, tls, sasl_ir, password).await;
                for &auth_mode in password_modes(protocol) {
                    let target = target(&sim, &ca, password, auth_mode, Duration::from_secs(5));
                    let context = format!("{protocol} tls {tls} {auth_mode} sasl-ir {sasl_ir}");
                    let v = probe::probe(&target, None).await;
                    assert!(!v.success, "{context}: {v:#?}");
                    let everything = format!(
                        "{v:?}\n{}\n{}",
                        serde_json::to_string(&v).unwrap(),
                        v.detail.as_deref().unwrap_or_default()
                    );
                    assert_no_form(&context, password, &everything);
                    // The server did echo: the redaction, not luck, kept the forms out.
                    let echoed = v
                        .transcript
                        .iter()
                        .filter(|l| l.starts_with("S: ") && l.contains("you said"))
                        .count();
                    let expected = match (protocol, tls, auth_mode) {
                        (Protocol::Pop3, TlsMode::Starttls, AuthMode::Best) => 2,
                        (Protocol::Pop3, TlsMode::Starttls, AuthMode::Apop) => 0,
                        (Protocol::Pop3, _, AuthMode::Best) | (Protocol::Imap, _, _) => 3,
                        _ => 1,
                    };
                    assert_eq!(echoed, expected, "{context}: {:#?}", v.transcript);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_command_shows_no_form_of_a_secret_a_server_echoes() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    let mut accounts = String::new();
    for (i, password) in ECHO_SECRETS.iter().enumerate() {
        std::fs::write(dir.path().join(format!("secret{i}")), password).unwrap();
        for (protocol, sasl_ir) in [
            (Protocol::Pop3, true),
            (Protocol::Imap, true),
            (Protocol::Imap, false),
        ] {
            let sim = echo_server(protocol, TlsMode::None, sasl_ir, password).await;
            let name = format!("e{}", servers.len());
            accounts.push_str(&format!(
                "      - {{ name: {name}, protocol: {protocol}, tls: none, server: \"127.0.0.1:{}\", username: \"{USER}\", password_file: secret{i} }}\n",
                sim.port(),
            ));
            servers.push((name, *password, protocol, sim));
        }
    }
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!("timeout: 5s\ngroups:\n  - name: helpdesk\n    accounts:\n{accounts}"),
    )
    .unwrap();
    for (name, password, protocol, _) in &servers {
        let modes: &[&str] = match protocol {
            Protocol::Pop3 => &["BEST", "APOP", "CRAM-MD5", "PASS"],
            Protocol::Imap => &[""],
        };
        for mode in modes {
            let mut args = vec![
                "probe".to_string(),
                format!("--config.file={}", config.display()),
                format!("--account={name}"),
                "--json".to_string(),
                "--log.level=trace".to_string(),
            ];
            if !mode.is_empty() {
                args.push(format!("--auth-mode={mode}"));
            }
            let (text, code) = tokio::task::spawn_blocking(move || run_cli(&args))
                .await
                .unwrap();
            assert_eq!(code, 1, "{name} {mode}: {text}");
            assert!(
                text.contains("you said"),
                "{name} {mode}: the server echoed: {text}"
            );
            assert_no_form(&format!("{name} {mode}"), password, &text);
        }
    }
}
