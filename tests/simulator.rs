//! Probes against the in-process simulator: one test per server behaviour seen in the wild,
//! each asserting the whole verdict.

mod support;

use std::time::Duration;

use mailbox_exporter::probe::{self, Target, TlsSettings};
use mailbox_exporter::secret::Password;
use mailbox_exporter::sim::{Behavior, BusyCode, SimServer, SimSpec, TlsDemand};
use mailbox_exporter::verdict::{
    Attempt, AttemptResult, AuthMode, Method, Protocol, Reason, TlsMode, Verdict,
};
use support::sim_ca_file;

const USER: &str = "alice@example.com";
const PASSWORD: &str = "c0rrect \"horse\" \\battery";
const WRONG: &str = "Tr0ub4dor&3-wrong";

/// A generous outer bound: a probe that outlives it has hung.
const HANG: Duration = Duration::from_secs(20);

async fn server(protocol: Protocol, tls: TlsMode, behavior: Behavior) -> SimServer {
    server_with(SimSpec::new(protocol, tls, behavior)).await
}

async fn server_with(spec: SimSpec) -> SimServer {
    SimServer::start(spec.user(USER, PASSWORD)).await.unwrap()
}

fn target(sim: &SimServer, tls: TlsMode) -> Target {
    Target {
        protocol: sim.spec().protocol,
        host: "127.0.0.1".into(),
        port: sim.port(),
        tls: TlsSettings {
            mode: tls,
            verify: true,
            ca_file: Some(sim_ca_file()),
        },
        username: USER.into(),
        password: Password::new(PASSWORD),
        auth_mode: AuthMode::Best,
        timeout: Duration::from_secs(5),
        oauth2: None,
    }
}

async fn run(t: &Target) -> Verdict {
    run_preferring(t, None).await
}

async fn run_preferring(t: &Target, preferred: Option<Method>) -> Verdict {
    let verdict = tokio::time::timeout(HANG, probe::probe(t, preferred))
        .await
        .expect("the probe hung");
    assert_no_secret(&verdict, t.password.expose());
    verdict
}

fn assert_no_secret(v: &Verdict, secret: &str) {
    let everything = format!(
        "{v:?}\n{}",
        serde_json::to_string(v).expect("verdicts serialize")
    );
    assert!(
        !everything.contains(secret),
        "the password leaked into the verdict: {everything}"
    );
}

fn attempts(list: &[(Method, AttemptResult)]) -> Vec<Attempt> {
    list.iter()
        .map(|&(method, result)| Attempt { method, result })
        .collect()
}

use AttemptResult::{Error, Rejected, Success};
use Method::{Apop, CramMd5, Login, Pass, Plain};

fn assert_success(v: &Verdict, method: Method, tried: &[(Method, AttemptResult)]) {
    assert!(v.success, "expected success: {v:#?}");
    assert_eq!(v.method, Some(method), "{v:#?}");
    assert_eq!(v.reason, None);
    assert_eq!(v.detail, None);
    assert_eq!(v.attempts, attempts(tried), "{v:#?}");
}

fn assert_failure(v: &Verdict, reason: Reason, tried: &[(Method, AttemptResult)]) {
    assert!(!v.success, "expected failure: {v:#?}");
    assert_eq!(v.method, None);
    assert_eq!(v.reason, Some(reason), "{v:#?}");
    assert!(v.detail.is_some());
    assert!(!v.fallback);
    assert_eq!(v.attempts, attempts(tried), "{v:#?}");
    assert!(v.advice.is_some(), "a failure always comes with advice");
}

fn transcript_has(v: &Verdict, needle: &str) -> bool {
    v.transcript.iter().any(|l| l.contains(needle))
}

// ---------------------------------------------------------------------------------------
// POP3

#[tokio::test]
async fn pop3_healthy_logs_in_with_apop_over_implicit_tls() {
    let sim = server(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(&v, Apop, &[(Apop, Success)]);
    assert!(!v.fallback && !v.cleartext);
    assert!(
        v.cert_expiry.is_some(),
        "implicit TLS reports the certificate expiry"
    );
    assert!(v.phases.tls > Duration::ZERO && v.phases.total >= v.phases.auth);
    assert!(
        transcript_has(&v, "C: APOP alice@example.com ***"),
        "{:?}",
        v.transcript
    );
    assert_eq!(sim.stats().commands, ["CAPA", "APOP", "QUIT"]);
}

#[tokio::test]
async fn pop3_without_timestamp_uses_cram_md5() {
    let mut spec = SimSpec::new(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy);
    spec.apop = false;
    let sim = server_with(spec).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
    assert!(!v.cleartext);
}

#[tokio::test]
async fn pop3_trap_best_falls_back_to_pass_on_the_same_connection() {
    let sim = server(
        Protocol::Pop3,
        TlsMode::Implicit,
        Behavior::UnverifiableDigests,
    )
    .await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(
        &v,
        Pass,
        &[(Apop, Rejected), (CramMd5, Rejected), (Pass, Success)],
    );
    assert!(
        v.fallback,
        "stepping past a rejected advertised method is a fallback"
    );
    assert!(!v.cleartext, "PASS went over TLS");
    let advice = v.advice.as_deref().unwrap();
    assert!(advice.contains("pin auth_mode: PASS"), "{advice}");
    let stats = sim.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(
        stats.commands,
        ["CAPA", "APOP", "AUTH CRAM-MD5", "USER", "PASS", "QUIT"],
        "no NOOP before login, one ladder walk"
    );
}

#[tokio::test]
async fn pop3_trap_that_hangs_up_after_rejection_goes_on_over_a_new_connection() {
    let sim = server(
        Protocol::Pop3,
        TlsMode::Implicit,
        Behavior::UnverifiableDigestsThenClose,
    )
    .await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(
        &v,
        Pass,
        &[(Apop, Rejected), (CramMd5, Rejected), (Pass, Success)],
    );
    assert!(v.fallback);
    assert_eq!(sim.stats().connections, 3, "one new connection per hang-up");
    assert!(transcript_has(&v, "reconnecting"));
    assert!(!sim.stats().commands.contains(&"NOOP".to_string()));
}

#[tokio::test]
async fn pop3_trap_with_pinned_pass_logs_in_without_fallback() {
    let sim = server(
        Protocol::Pop3,
        TlsMode::Implicit,
        Behavior::UnverifiableDigests,
    )
    .await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.auth_mode = AuthMode::Pass;
    let v = run(&t).await;
    assert_success(&v, Pass, &[(Pass, Success)]);
    assert!(!v.fallback);
    assert_eq!(sim.stats().commands, ["CAPA", "USER", "PASS", "QUIT"]);
}

#[tokio::test]
async fn pop3_trap_with_pinned_apop_is_rejected_and_advised_to_try_pass() {
    let sim = server(
        Protocol::Pop3,
        TlsMode::Implicit,
        Behavior::UnverifiableDigests,
    )
    .await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.auth_mode = AuthMode::Apop;
    let v = run(&t).await;
    assert_failure(&v, Reason::AuthRejected, &[(Apop, Rejected)]);
    assert!(v.advice.as_deref().unwrap().contains("PASS"));
}

#[tokio::test]
async fn pop3_remembered_method_is_tried_first() {
    let sim = server(
        Protocol::Pop3,
        TlsMode::Implicit,
        Behavior::UnverifiableDigests,
    )
    .await;
    let v = run_preferring(&target(&sim, TlsMode::Implicit), Some(Pass)).await;
    assert_success(&v, Pass, &[(Pass, Success)]);
    assert!(!v.fallback);
    assert!(!sim.stats().commands.contains(&"APOP".to_string()));
}

#[tokio::test]
async fn pop3_remembered_method_that_fails_walks_the_rest_of_the_ladder_once() {
    let sim = server(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.password = Password::new(WRONG);
    let v = run_preferring(&t, Some(Pass)).await;
    assert_failure(
        &v,
        Reason::AuthRejected,
        &[(Pass, Rejected), (Apop, Rejected), (CramMd5, Rejected)],
    );
}

#[tokio::test]
async fn pop3_pinned_apop_without_timestamp_is_unavailable_and_sends_nothing() {
    let mut spec = SimSpec::new(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy);
    spec.apop = false;
    let sim = server_with(spec).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.auth_mode = AuthMode::Apop;
    let v = run(&t).await;
    assert_failure(&v, Reason::MechanismUnavailable, &[]);
    assert_eq!(sim.stats().logins_rejected, 0);
}

#[tokio::test]
async fn pop3_cram_md5_only_server() {
    let sim = server(Protocol::Pop3, TlsMode::Implicit, Behavior::CramMd5Only).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);

    let mut t = target(&sim, TlsMode::Implicit);
    t.password = Password::new(WRONG);
    let v = run(&t).await;
    // CAPA lists no USER, so no USER/PASS rung is tried: one failed login, not two.
    assert_failure(&v, Reason::AuthRejected, &[(CramMd5, Rejected)]);
}

#[tokio::test]
async fn pop3_wrong_password_is_rejected_by_every_rung() {
    let sim = server(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.password = Password::new(WRONG);
    let v = run(&t).await;
    assert_failure(
        &v,
        Reason::AuthRejected,
        &[(Apop, Rejected), (CramMd5, Rejected), (Pass, Rejected)],
    );
    assert!(
        v.advice
            .as_deref()
            .unwrap()
            .contains("username and password")
    );
}

#[tokio::test]
async fn pop3_cleartext_only_server_reports_cleartext() {
    let sim = server(Protocol::Pop3, TlsMode::None, Behavior::CleartextOnly).await;
    let v = run(&target(&sim, TlsMode::None)).await;
    assert_success(&v, Pass, &[(Pass, Success)]);
    assert!(v.cleartext);
    assert!(v.cert_expiry.is_none());
    assert!(v.advice.as_deref().unwrap().contains("unencrypted"));
}

#[tokio::test]
async fn pop3_stls_upgrades_before_the_password() {
    let sim = server(Protocol::Pop3, TlsMode::Starttls, Behavior::Healthy).await;
    let mut t = target(&sim, TlsMode::Starttls);
    t.auth_mode = AuthMode::Pass;
    let v = run(&t).await;
    assert_success(&v, Pass, &[(Pass, Success)]);
    assert!(!v.cleartext);
    assert!(v.cert_expiry.is_some());
    assert_eq!(
        sim.stats().commands,
        ["CAPA", "STLS", "CAPA", "USER", "PASS", "QUIT"],
        "capabilities are read again after the upgrade"
    );
}

#[tokio::test]
async fn pop3_starttls_against_a_server_without_it_is_a_tls_failure() {
    let sim = server(Protocol::Pop3, TlsMode::None, Behavior::CleartextOnly).await;
    let v = run(&target(&sim, TlsMode::Starttls)).await;
    assert_failure(&v, Reason::Tls, &[]);
    assert!(!v.cleartext);
    assert!(!sim.stats().commands.contains(&"PASS".to_string()));
}

#[tokio::test]
async fn pop3_busy_answers_are_server_busy_not_credentials() {
    for code in [BusyCode::InUse, BusyCode::SysTemp, BusyCode::LoginDelay] {
        let sim = server(Protocol::Pop3, TlsMode::Implicit, Behavior::Busy(code)).await;
        let v = run(&target(&sim, TlsMode::Implicit)).await;
        assert_failure(&v, Reason::ServerBusy, &[(Apop, Error)]);
        assert_eq!(
            sim.stats().commands,
            ["CAPA", "APOP", "QUIT"],
            "{code:?}: the ladder stops"
        );
    }
}

#[tokio::test]
async fn pop3_err_greeting_is_server_busy() {
    let sim = server(Protocol::Pop3, TlsMode::Implicit, Behavior::RejectGreeting).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_failure(&v, Reason::ServerBusy, &[]);
}

#[tokio::test]
async fn pop3_plaintext_disallowed_never_sends_the_password() {
    let sim = server(Protocol::Pop3, TlsMode::None, Behavior::LoginDisabled).await;
    let mut t = target(&sim, TlsMode::None);
    t.auth_mode = AuthMode::Pass;
    let v = run(&t).await;
    assert_failure(&v, Reason::PlaintextDisallowed, &[(Pass, Error)]);
    assert!(!v.cleartext);
    assert!(!sim.stats().commands.contains(&"PASS".to_string()));

    t.auth_mode = AuthMode::Best;
    let v = run(&t).await;
    assert_failure(&v, Reason::PlaintextDisallowed, &[]);
    assert!(v.advice.as_deref().unwrap().contains("tls: starttls"));
}

#[tokio::test]
async fn pop3_pinned_cram_md5_is_tried_though_capa_does_not_list_it() {
    // Courier takes AUTH CRAM-MD5 without listing it.
    let mut spec = SimSpec::new(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy);
    spec.apop = false;
    spec.unlisted_cram_md5 = true;
    let sim = server_with(spec).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.auth_mode = AuthMode::CramMd5;
    let v = run(&t).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
    // BEST sticks to what is advertised.
    t.auth_mode = AuthMode::Best;
    let v = run(&t).await;
    assert_success(&v, Pass, &[(Pass, Success)]);

    // Only the server's refusal of the command makes it unavailable.
    let mut spec = SimSpec::new(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy);
    spec.cram_md5 = false;
    let sim = server_with(spec).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.auth_mode = AuthMode::CramMd5;
    let v = run(&t).await;
    assert_failure(&v, Reason::MechanismUnavailable, &[(CramMd5, Error)]);
    assert!(
        v.detail
            .as_deref()
            .unwrap()
            .contains("refused AUTH CRAM-MD5"),
        "{v:#?}"
    );
    assert_eq!(sim.stats().commands, ["CAPA", "AUTH CRAM-MD5", "QUIT"]);
    assert_eq!(sim.stats().logins_rejected, 0);
}

#[tokio::test]
async fn pop3_after_stls_no_timestamp_from_before_tls_is_used() {
    let sim = server(Protocol::Pop3, TlsMode::Starttls, Behavior::Healthy).await;
    let mut t = target(&sim, TlsMode::Starttls);
    let v = run(&t).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
    assert!(transcript_has(
        &v,
        "APOP timestamp of the greeting before STLS is not trusted"
    ));
    assert!(!sim.stats().commands.contains(&"APOP".to_string()));

    t.auth_mode = AuthMode::Apop;
    let v = run(&t).await;
    assert_failure(&v, Reason::MechanismUnavailable, &[]);
    let detail = v.detail.as_deref().unwrap();
    assert!(detail.contains("no greeting after STLS"), "{detail}");
    let advice = v.advice.as_deref().unwrap();
    assert!(advice.contains("tls: implicit for APOP"), "{advice}");
    assert_eq!(
        sim.stats().commands,
        [
            "CAPA",
            "STLS",
            "CAPA",
            "AUTH CRAM-MD5",
            "QUIT",
            "CAPA",
            "STLS",
            "CAPA",
            "QUIT"
        ],
        "APOP is never sent after STLS"
    );
}

/// A probe that met a TLS demand: reported as `plaintext_disallowed` with the advice to set
/// `tls`, no password sent, no login counted by the server.
fn assert_tls_demanded(v: &Verdict, sim: &SimServer, tried: &[(Method, AttemptResult)]) {
    assert_failure(v, Reason::PlaintextDisallowed, tried);
    assert!(!v.cleartext, "{v:#?}");
    let advice = v.advice.as_deref().unwrap();
    assert!(
        advice.contains("set tls: starttls or tls: implicit"),
        "{advice}"
    );
    let commands = sim.stats().commands;
    assert!(
        !commands
            .iter()
            .any(|c| c == "PASS" || c == "LOGIN" || c.starts_with("AUTHENTICATE PLAIN")),
        "{commands:?}"
    );
}

#[tokio::test]
async fn pop3_capa_with_stls_but_no_user_is_plaintext_disallowed_before_user() {
    // Cyrus with allowplaintext: 0.
    let sim = server(
        Protocol::Pop3,
        TlsMode::Starttls,
        Behavior::TlsRequired(TlsDemand::Layer),
    )
    .await;
    for mode in [AuthMode::Best, AuthMode::Pass] {
        let mut t = target(&sim, TlsMode::None);
        t.auth_mode = mode;
        let v = run(&t).await;
        assert_tls_demanded(&v, &sim, &[]);
    }
    assert_eq!(
        sim.stats().commands,
        ["CAPA", "QUIT", "CAPA", "QUIT"],
        "no USER"
    );
    let v = run(&target(&sim, TlsMode::Starttls)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
}

#[tokio::test]
async fn pop3_user_only_available_under_a_layer_is_plaintext_disallowed() {
    // Without STLS on offer, a pinned PASS is tried and meets Cyrus' answer to USER.
    let sim = server(
        Protocol::Pop3,
        TlsMode::None,
        Behavior::TlsRequired(TlsDemand::Layer),
    )
    .await;
    let mut t = target(&sim, TlsMode::None);
    t.auth_mode = AuthMode::Pass;
    let v = run(&t).await;
    assert_tls_demanded(&v, &sim, &[(Pass, Error)]);
    let detail = v.detail.as_deref().unwrap();
    assert!(detail.contains("only available under a layer"), "{detail}");
    assert!(detail.contains("the password was not sent"), "{detail}");
}

#[tokio::test]
async fn pop3_tls_required_text_is_plaintext_disallowed_for_every_command() {
    let sim = server(
        Protocol::Pop3,
        TlsMode::Starttls,
        Behavior::TlsRequired(TlsDemand::Text),
    )
    .await;
    for (mode, method, verb) in [
        (AuthMode::Best, Apop, "APOP"),
        (AuthMode::Apop, Apop, "APOP"),
        (AuthMode::CramMd5, CramMd5, "AUTH CRAM-MD5"),
        (AuthMode::Pass, Pass, "USER"),
    ] {
        let before = sim.stats().commands.len();
        let mut t = target(&sim, TlsMode::None);
        t.auth_mode = mode;
        let v = run(&t).await;
        assert_tls_demanded(&v, &sim, &[(method, Error)]);
        assert!(
            v.detail
                .as_deref()
                .unwrap()
                .contains("TLS required to log in."),
            "{v:#?}"
        );
        // The ladder stops at the first demand: nothing more goes out on that connection.
        assert_eq!(
            sim.stats().commands[before..],
            ["CAPA", verb, "QUIT"],
            "{mode}"
        );
    }
    let v = run(&target(&sim, TlsMode::Starttls)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
}

#[tokio::test]
async fn pop3_xtlsrequired_in_capa_sends_no_login_at_all() {
    // GNU Mailutils: USER would be answered "-ERR Incorrect state".
    let sim = server(
        Protocol::Pop3,
        TlsMode::Starttls,
        Behavior::TlsRequired(TlsDemand::Capability),
    )
    .await;
    for mode in [
        AuthMode::Best,
        AuthMode::Apop,
        AuthMode::CramMd5,
        AuthMode::Pass,
    ] {
        let mut t = target(&sim, TlsMode::None);
        t.auth_mode = mode;
        let v = run(&t).await;
        assert_tls_demanded(&v, &sim, &[]);
        assert!(v.detail.as_deref().unwrap().contains("XTLSREQUIRED"));
    }
    assert!(
        sim.stats()
            .commands
            .iter()
            .all(|c| c == "CAPA" || c == "QUIT")
    );
    let v = run(&target(&sim, TlsMode::Starttls)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
}

#[tokio::test]
async fn over_tls_a_refusal_that_mentions_tls_is_about_the_credentials() {
    // The server echoes the client's lines, and this password reads like a TLS demand; over
    // TLS such words cannot be about this connection.
    let sim = server(Protocol::Pop3, TlsMode::Implicit, Behavior::EchoRefusals).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.auth_mode = AuthMode::Pass;
    t.password = Password::new("TLS required, must-1");
    let v = run(&t).await;
    assert_failure(&v, Reason::AuthRejected, &[(Pass, Rejected)]);
}

// ---------------------------------------------------------------------------------------
// IMAP

#[tokio::test]
async fn imap_healthy_picks_cram_md5() {
    let sim = server(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
    assert!(!v.cleartext && !v.fallback);
    assert_eq!(sim.stats().commands, ["AUTHENTICATE CRAM-MD5", "LOGOUT"]);
}

#[tokio::test]
async fn imap_plain_with_and_without_sasl_ir() {
    for sasl_ir in [true, false] {
        let mut spec = SimSpec::new(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy);
        spec.cram_md5 = false;
        spec.sasl_ir = sasl_ir;
        let sim = server_with(spec).await;
        let v = run(&target(&sim, TlsMode::Implicit)).await;
        assert_success(&v, Plain, &[(Plain, Success)]);
        assert!(transcript_has(&v, "AUTHENTICATE PLAIN"));
        assert!(!v.cleartext);
    }
}

#[tokio::test]
async fn imap_login_with_quotes_and_an_8bit_literal() {
    for password in [PASSWORD, "pässwörd ünïcode"] {
        let mut spec = SimSpec::new(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy);
        spec.cram_md5 = false;
        spec.plain = false;
        let sim = SimServer::start(spec.user(USER, password)).await.unwrap();
        let mut t = target(&sim, TlsMode::Implicit);
        t.password = Password::new(password);
        let v = run(&t).await;
        assert_success(&v, Login, &[(Login, Success)]);
    }
}

#[tokio::test]
async fn imap_asks_for_capabilities_when_the_greeting_has_none() {
    let mut spec = SimSpec::new(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy);
    spec.greeting_capabilities = false;
    let sim = server_with(spec).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
    assert_eq!(sim.stats().commands[0], "CAPABILITY");
}

#[tokio::test]
async fn imap_trap_falls_back_from_cram_md5_to_plain() {
    let sim = server(
        Protocol::Imap,
        TlsMode::Implicit,
        Behavior::UnverifiableDigests,
    )
    .await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(&v, Plain, &[(CramMd5, Rejected), (Plain, Success)]);
    assert!(v.fallback);
    assert!(v.advice.as_deref().unwrap().contains("CRAM-MD5"));
    assert_eq!(sim.stats().connections, 1);
}

#[tokio::test]
async fn imap_trap_that_hangs_up_goes_on_over_a_new_connection() {
    let sim = server(
        Protocol::Imap,
        TlsMode::Implicit,
        Behavior::UnverifiableDigestsThenClose,
    )
    .await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(&v, Plain, &[(CramMd5, Rejected), (Plain, Success)]);
    assert!(v.fallback);
    assert_eq!(sim.stats().connections, 2);
}

#[tokio::test]
async fn imap_wrong_password_is_rejected_by_every_mechanism() {
    let sim = server(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.password = Password::new(WRONG);
    let v = run(&t).await;
    assert_failure(
        &v,
        Reason::AuthRejected,
        &[(CramMd5, Rejected), (Plain, Rejected), (Login, Rejected)],
    );
    assert!(
        v.detail
            .as_deref()
            .unwrap()
            .contains("AUTHENTICATIONFAILED")
    );
}

#[tokio::test]
async fn imap_starttls_rereads_capabilities() {
    let sim = server(Protocol::Imap, TlsMode::Starttls, Behavior::Healthy).await;
    let v = run(&target(&sim, TlsMode::Starttls)).await;
    assert!(v.success, "{v:#?}");
    assert!(!v.cleartext && v.cert_expiry.is_some());
    let commands = sim.stats().commands;
    assert_eq!(&commands[..2], ["STARTTLS", "CAPABILITY"], "{commands:?}");
}

#[tokio::test]
async fn imap_logindisabled_without_tls_never_sends_the_password() {
    let sim = server(Protocol::Imap, TlsMode::None, Behavior::LoginDisabled).await;
    let v = run(&target(&sim, TlsMode::None)).await;
    assert_failure(&v, Reason::PlaintextDisallowed, &[]);
    assert!(!v.cleartext);
    let commands = sim.stats().commands;
    assert!(
        !commands
            .iter()
            .any(|c| c == "LOGIN" || c.starts_with("AUTHENTICATE")),
        "{commands:?}"
    );
}

#[tokio::test]
async fn imap_authenticate_plain_is_not_used_under_logindisabled_without_tls() {
    // GNU Mailutils: `STARTTLS LOGINDISABLED AUTH=PLAIN`.
    let sim = server(
        Protocol::Imap,
        TlsMode::Starttls,
        Behavior::TlsRequired(TlsDemand::Capability),
    )
    .await;
    let v = run(&target(&sim, TlsMode::None)).await;
    assert_tls_demanded(&v, &sim, &[]);
    assert_eq!(sim.stats().commands, ["LOGOUT"], "neither PLAIN nor LOGIN");
    let v = run(&target(&sim, TlsMode::Starttls)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);
    // Over TLS the same capability does not hold PLAIN back.
    let mut spec = SimSpec::new(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy);
    spec.cram_md5 = false;
    let sim = server_with(spec).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_success(&v, Plain, &[(Plain, Success)]);
}

#[tokio::test]
async fn imap_starttls_required_answer_is_plaintext_disallowed() {
    // Cyrus: `STARTTLS LOGINDISABLED AUTH=PLAIN AUTH=CRAM-MD5`, AUTHENTICATE answered
    // `NO STARTTLS required`.
    let sim = server(
        Protocol::Imap,
        TlsMode::Starttls,
        Behavior::TlsRequired(TlsDemand::Layer),
    )
    .await;
    let v = run(&target(&sim, TlsMode::None)).await;
    assert_tls_demanded(&v, &sim, &[(CramMd5, Error)]);
    assert!(
        v.detail
            .as_deref()
            .unwrap()
            .contains("NO STARTTLS required")
    );
    assert_eq!(sim.stats().commands, ["AUTHENTICATE CRAM-MD5", "LOGOUT"]);
    let v = run(&target(&sim, TlsMode::Starttls)).await;
    assert_success(&v, CramMd5, &[(CramMd5, Success)]);

    // Without LOGINDISABLED the text alone says it; the ladder stops there, before PLAIN
    // or LOGIN could carry the password in the clear.
    let sim = server(
        Protocol::Imap,
        TlsMode::Starttls,
        Behavior::TlsRequired(TlsDemand::Text),
    )
    .await;
    let v = run(&target(&sim, TlsMode::None)).await;
    assert_tls_demanded(&v, &sim, &[(CramMd5, Error)]);
    assert_eq!(sim.stats().commands, ["AUTHENTICATE CRAM-MD5", "LOGOUT"]);
    let v = run_preferring(&target(&sim, TlsMode::None), Some(Login)).await;
    assert_failure(&v, Reason::PlaintextDisallowed, &[(Login, Error)]);
    assert!(v.cleartext, "LOGIN went out before the server said no");

    // Refused before the PLAIN blob was asked for: the password never left.
    let mut spec = SimSpec::new(
        Protocol::Imap,
        TlsMode::Starttls,
        Behavior::TlsRequired(TlsDemand::Text),
    );
    spec.sasl_ir = false;
    let sim = server_with(spec).await;
    let v = run_preferring(&target(&sim, TlsMode::None), Some(Plain)).await;
    assert_failure(&v, Reason::PlaintextDisallowed, &[(Plain, Error)]);
    assert!(!v.cleartext, "{v:#?}");
    assert_eq!(sim.stats().commands, ["AUTHENTICATE PLAIN", "LOGOUT"]);
}

#[tokio::test]
async fn imap_oauth_only_provider_is_mechanism_unavailable() {
    let sim = server(Protocol::Imap, TlsMode::Implicit, Behavior::OAuthOnly).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_failure(&v, Reason::MechanismUnavailable, &[]);
    assert!(v.advice.as_deref().unwrap().contains("OAuth2"));
}

#[tokio::test]
async fn imap_preauth_is_never_a_login() {
    for tls in [TlsMode::None, TlsMode::Starttls, TlsMode::Implicit] {
        let sim = server(Protocol::Imap, tls, Behavior::Preauth).await;
        let v = run(&target(&sim, tls)).await;
        assert_failure(&v, Reason::Preauth, &[]);
        let detail = v.detail.as_deref().unwrap();
        assert!(
            detail.contains("greeted with PREAUTH: no credentials were checked"),
            "{detail}"
        );
        assert_eq!(
            detail.contains("STARTTLS-bypass attack"),
            tls == TlsMode::Starttls,
            "{detail}"
        );
        assert!(!v.cleartext);
        // Nothing but the goodbye: no STARTTLS on a session already "logged in", no login.
        assert_eq!(sim.stats().commands, ["LOGOUT"], "{tls}");
    }
}

#[tokio::test]
async fn imap_unavailable_and_bye_are_server_busy() {
    let sim = server(
        Protocol::Imap,
        TlsMode::Implicit,
        Behavior::Busy(BusyCode::InUse),
    )
    .await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_failure(&v, Reason::ServerBusy, &[(CramMd5, Error)]);

    let sim = server(Protocol::Imap, TlsMode::Implicit, Behavior::RejectGreeting).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_failure(&v, Reason::ServerBusy, &[]);
}

// ---------------------------------------------------------------------------------------
// Broken peers, either protocol

#[tokio::test]
async fn silent_server_times_out_in_the_greeting() {
    for protocol in [Protocol::Pop3, Protocol::Imap] {
        let sim = server(protocol, TlsMode::None, Behavior::Silent).await;
        let mut t = target(&sim, TlsMode::None);
        t.timeout = Duration::from_millis(500);
        let v = run(&t).await;
        assert_failure(&v, Reason::Timeout, &[]);
        assert!(v.detail.as_deref().unwrap().contains("greeting"));
    }
}

#[tokio::test]
async fn silent_tls_server_times_out_in_the_handshake() {
    let sim = server(Protocol::Imap, TlsMode::Implicit, Behavior::Silent).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.timeout = Duration::from_millis(500);
    let v = run(&t).await;
    assert_failure(&v, Reason::Timeout, &[]);
    assert!(v.detail.as_deref().unwrap().contains("tls"));
}

#[tokio::test]
async fn byte_a_second_greeting_ends_at_the_deadline() {
    let sim = server(
        Protocol::Pop3,
        TlsMode::None,
        Behavior::Drip(Duration::from_millis(200)),
    )
    .await;
    let mut t = target(&sim, TlsMode::None);
    t.timeout = Duration::from_millis(700);
    let v = run(&t).await;
    assert_failure(&v, Reason::Timeout, &[]);
}

#[tokio::test]
async fn endless_line_is_a_protocol_error_not_a_memory_leak() {
    for protocol in [Protocol::Pop3, Protocol::Imap] {
        let sim = server(protocol, TlsMode::None, Behavior::EndlessLine).await;
        let v = run(&target(&sim, TlsMode::None)).await;
        assert_failure(&v, Reason::Protocol, &[]);
        assert!(v.detail.as_deref().unwrap().contains("longer than"));
    }
}

#[tokio::test]
async fn garbage_and_hang_ups_are_protocol_errors() {
    for behavior in [Behavior::Garbage, Behavior::CloseOnAccept] {
        for protocol in [Protocol::Pop3, Protocol::Imap] {
            let sim = server(protocol, TlsMode::None, behavior.clone()).await;
            let v = run(&target(&sim, TlsMode::None)).await;
            assert_failure(&v, Reason::Protocol, &[]);
        }
    }
}

#[tokio::test]
async fn plain_text_on_a_tls_port_is_a_tls_error() {
    let sim = server(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let v = run(&target(&sim, TlsMode::Implicit)).await;
    assert_failure(&v, Reason::Tls, &[]);
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error_unless_verification_is_off() {
    let sim = server(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy).await;
    let mut t = target(&sim, TlsMode::Implicit);
    t.tls.ca_file = None;
    let v = run(&t).await;
    assert_failure(&v, Reason::Tls, &[]);
    assert!(v.advice.as_deref().unwrap().contains("ca_file"));

    t.tls.verify = false;
    let v = run(&t).await;
    assert!(v.success, "{v:#?}");
    assert!(v.advice.as_deref().unwrap().contains("not verified"));
}

#[tokio::test]
async fn dead_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let sim = server(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let mut t = target(&sim, TlsMode::None);
    t.port = port;
    let v = run(&t).await;
    assert_failure(&v, Reason::Connect, &[]);
}

/// A server (or a man in the middle) that answers STLS and, in the same packet, a line meant
/// to be read as if it came through TLS (CVE-2011-0411): the upgrade must be refused.
#[tokio::test]
async fn bytes_sent_ahead_of_the_tls_handshake_refuse_the_upgrade() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"+OK ready\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let reply: &[u8] = match line.as_str() {
                "CAPA" => b"+OK\r\nUSER\r\nSTLS\r\n.\r\n",
                "STLS" => b"+OK Begin TLS\r\n+OK injected before the handshake\r\n",
                _ => b"-ERR\r\n",
            };
            write.write_all(reply).await.unwrap();
        }
    });
    let sim = server_with(SimSpec::new(
        Protocol::Pop3,
        TlsMode::None,
        Behavior::Healthy,
    ))
    .await;
    let mut t = target(&sim, TlsMode::Starttls);
    t.port = port;
    let v = run(&t).await;
    assert_failure(&v, Reason::Tls, &[]);
    assert!(
        v.detail
            .as_deref()
            .unwrap()
            .contains("before the TLS handshake"),
        "{:?}",
        v.detail
    );
    assert!(!v.cleartext);
    server.abort();
}
