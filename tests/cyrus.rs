//! Probes against a real Cyrus IMAP (its imapd and pop3d), a second server family besides
//! Dovecot: clear-text secrets in the SASL database where every method works, passwords
//! checked by saslauthd while APOP and CRAM-MD5 are still advertised (the trap, Cyrus style),
//! and `allowplaintext: 0`, which refuses passwords on unencrypted connections.

mod support;

use mailbox_exporter::secret::Password;
use mailbox_exporter::verdict::{
    AttemptResult, AuthMode, Method, Protocol, Reason, TlsMode, Verdict,
};
use support::Cyrus;
use support::cyrus::Flavor;
use support::mail::{attempts, run, target};

use AttemptResult::{Rejected, Success};
use Method::{Apop, CramMd5, Login, Pass, Plain};

/// Success, method, attempts, fallback and cleartext of `v`.
fn check(
    v: &Verdict,
    success: bool,
    method: Option<Method>,
    tried: &[(Method, AttemptResult)],
    fallback: bool,
    cleartext: bool,
) {
    assert_eq!(v.success, success, "{v:#?}");
    assert_eq!(v.method, method, "{v:#?}");
    assert_eq!(v.attempts, attempts(tried), "{v:#?}");
    assert_eq!(v.fallback, fallback, "fallback: {v:#?}");
    assert_eq!(v.cleartext, cleartext, "cleartext: {v:#?}");
    if success {
        assert_eq!(v.reason, None, "{v:#?}");
    }
}

/// Whether the client sent a line starting with one of `commands` (after an IMAP tag).
fn sent(v: &Verdict, commands: &[&str]) -> bool {
    v.transcript.iter().any(|line| {
        let Some(line) = line.strip_prefix("C: ") else {
            return false;
        };
        let untagged = line.split_once(' ').map_or(line, |(_, rest)| rest);
        commands
            .iter()
            .any(|c| line.starts_with(c) || untagged.starts_with(c))
    })
}

/// Transports on which the APOP timestamp of the greeting is trustworthy: it was read over
/// the connection the password goes over. (After STLS it was not: see
/// `stls_never_uses_the_apop_timestamp_of_the_plaintext_greeting`.)
const APOP_TRANSPORTS: [TlsMode; 2] = [TlsMode::None, TlsMode::Implicit];
const TRANSPORTS: [TlsMode; 3] = [TlsMode::None, TlsMode::Starttls, TlsMode::Implicit];

#[tokio::test]
async fn plaintext_secrets_every_pop3_mode_logs_in() {
    let Some(c) = Cyrus::start_or_skip(Flavor::Plaintext, "plaintext_secrets_every_pop3_mode")
    else {
        return;
    };
    for tls in APOP_TRANSPORTS {
        for (mode, method) in [
            // Cyrus's pop3d greets with an APOP timestamp, so BEST starts there.
            (AuthMode::Best, Apop),
            (AuthMode::Apop, Apop),
            (AuthMode::CramMd5, CramMd5),
            (AuthMode::Pass, Pass),
        ] {
            let v = run(&target(&c, Protocol::Pop3, tls, mode), None).await;
            let cleartext = method == Pass && tls == TlsMode::None;
            check(
                &v,
                true,
                Some(method),
                &[(method, Success)],
                false,
                cleartext,
            );
            assert_eq!(v.cert_expiry.is_some(), tls == TlsMode::Implicit, "{tls}");
        }
    }
    // Over STLS every mode but APOP logs in too; the password never crosses in clear text.
    for (mode, method) in [(AuthMode::CramMd5, CramMd5), (AuthMode::Pass, Pass)] {
        let v = run(&target(&c, Protocol::Pop3, TlsMode::Starttls, mode), None).await;
        check(&v, true, Some(method), &[(method, Success)], false, false);
        assert!(sent(&v, &["STLS"]), "{:?}", v.transcript);
        assert!(v.cert_expiry.is_some());
    }
}

#[tokio::test]
async fn stls_never_uses_the_apop_timestamp_of_the_plaintext_greeting() {
    let Some(c) = Cyrus::start_or_skip(Flavor::Plaintext, "stls_never_uses_the_apop_timestamp")
    else {
        return;
    };
    // Cyrus greets once, before STLS, with a timestamp an attacker on the path could have
    // chosen; BEST goes on to CRAM-MD5, read from CAPA over TLS.
    let v = run(
        &target(&c, Protocol::Pop3, TlsMode::Starttls, AuthMode::Best),
        None,
    )
    .await;
    check(&v, true, Some(CramMd5), &[(CramMd5, Success)], false, false);
    assert!(!sent(&v, &["APOP"]), "{:?}", v.transcript);

    let v = run(
        &target(&c, Protocol::Pop3, TlsMode::Starttls, AuthMode::Apop),
        None,
    )
    .await;
    check(&v, false, None, &[], false, false);
    assert_eq!(v.reason, Some(Reason::MechanismUnavailable), "{v:#?}");
    assert!(!sent(&v, &["APOP"]), "{:?}", v.transcript);
}

#[tokio::test]
async fn plaintext_secrets_imap_picks_cram_md5_and_plain_and_login_work() {
    let Some(c) = Cyrus::start_or_skip(Flavor::Plaintext, "plaintext_secrets_imap") else {
        return;
    };
    for tls in TRANSPORTS {
        let t = target(&c, Protocol::Imap, tls, AuthMode::Best);
        // Unprompted, the strongest advertised mechanism the probe knows wins.
        let v = run(&t, None).await;
        check(&v, true, Some(CramMd5), &[(CramMd5, Success)], false, false);
        if tls == TlsMode::Starttls {
            assert!(sent(&v, &["STARTTLS"]), "{:?}", v.transcript);
        }
        // Remembered from an earlier probe, the others are used first and work too.
        for method in [Plain, Login] {
            let v = run(&t, Some(method)).await;
            let cleartext = tls == TlsMode::None;
            check(
                &v,
                true,
                Some(method),
                &[(method, Success)],
                false,
                cleartext,
            );
        }
    }
    // A backslash in the password, quoted for LOGIN.
    let mut t = target(&c, Protocol::Imap, TlsMode::Implicit, AuthMode::Best);
    t.username = c.other_user().into();
    t.password = Password::new(c.other_password());
    for method in [CramMd5, Plain, Login] {
        let v = run(&t, Some(method)).await;
        check(&v, true, Some(method), &[(method, Success)], false, false);
    }
}

#[tokio::test]
async fn wrong_password_is_auth_rejected() {
    let Some(c) = Cyrus::start_or_skip(Flavor::Plaintext, "wrong_password_is_auth_rejected") else {
        return;
    };
    let tried: [(Protocol, &[_]); 2] = [
        (
            Protocol::Pop3,
            &[(Apop, Rejected), (CramMd5, Rejected), (Pass, Rejected)],
        ),
        (
            Protocol::Imap,
            &[(CramMd5, Rejected), (Plain, Rejected), (Login, Rejected)],
        ),
    ];
    for (protocol, attempts) in tried {
        let mut t = target(&c, protocol, TlsMode::Implicit, AuthMode::Best);
        t.password = Password::new("not the password");
        let v = run(&t, None).await;
        check(&v, false, None, attempts, false, false);
        assert_eq!(v.reason, Some(Reason::AuthRejected), "{v:#?}");
        if protocol == Protocol::Pop3 {
            assert!(v.detail.as_deref().unwrap().contains("[AUTH]"), "{v:#?}");
        }
    }
}

#[tokio::test]
async fn saslauthd_trap_best_falls_back_to_pass_and_pinned_pass_does_not() {
    let Some(c) = Cyrus::start_or_skip(Flavor::Saslauthd, "saslauthd_trap") else {
        return;
    };
    for tls in APOP_TRANSPORTS {
        let cleartext = tls == TlsMode::None;
        let v = run(&target(&c, Protocol::Pop3, tls, AuthMode::Best), None).await;
        check(
            &v,
            true,
            Some(Pass),
            &[(Apop, Rejected), (CramMd5, Rejected), (Pass, Success)],
            true,
            cleartext,
        );
        assert!(
            v.advice.as_deref().unwrap().contains("pin auth_mode: PASS"),
            "{v:#?}"
        );
        assert!(!sent(&v, &["NOOP"]), "no NOOP before login");

        let v = run(&target(&c, Protocol::Pop3, tls, AuthMode::Pass), None).await;
        check(&v, true, Some(Pass), &[(Pass, Success)], false, cleartext);
    }
    // Pinned to a method the server cannot verify, the probe fails and says what to pin.
    for (mode, method) in [(AuthMode::Apop, Apop), (AuthMode::CramMd5, CramMd5)] {
        let v = run(&target(&c, Protocol::Pop3, TlsMode::Implicit, mode), None).await;
        check(&v, false, None, &[(method, Rejected)], false, false);
        assert_eq!(v.reason, Some(Reason::AuthRejected), "{v:#?}");
        assert!(v.advice.as_deref().unwrap().contains("PASS"), "{v:#?}");
    }
}

#[tokio::test]
async fn saslauthd_trap_imap_falls_back_from_cram_md5() {
    let Some(c) = Cyrus::start_or_skip(Flavor::Saslauthd, "saslauthd_trap_imap") else {
        return;
    };
    for tls in TRANSPORTS {
        let v = run(&target(&c, Protocol::Imap, tls, AuthMode::Best), None).await;
        check(
            &v,
            true,
            Some(Plain),
            &[(CramMd5, Rejected), (Plain, Success)],
            true,
            tls == TlsMode::None,
        );
    }
}

#[tokio::test]
async fn allowplaintext_0_is_plaintext_disallowed_without_sending_the_password() {
    let Some(c) = Cyrus::start_or_skip(Flavor::NoPlaintext, "allowplaintext_0") else {
        return;
    };
    // IMAP: LOGINDISABLED, and AUTHENTICATE PLAIN is as cleartext as LOGIN.
    let v = run(
        &target(&c, Protocol::Imap, TlsMode::None, AuthMode::Best),
        None,
    )
    .await;
    check(&v, false, None, &[], false, false);
    assert_eq!(v.reason, Some(Reason::PlaintextDisallowed), "{v:#?}");
    assert!(!sent(&v, &["LOGIN", "AUTHENTICATE"]), "{:?}", v.transcript);
    assert!(
        v.advice.as_deref().unwrap().contains("tls: starttls"),
        "{v:#?}"
    );

    // POP3: CAPA offers STLS and no USER, and the greeting no APOP timestamp. Neither BEST
    // nor a pinned PASS sends USER or PASS.
    for mode in [AuthMode::Best, AuthMode::Pass] {
        let v = run(&target(&c, Protocol::Pop3, TlsMode::None, mode), None).await;
        assert!(!v.success, "{v:#?}");
        assert_eq!(
            v.reason,
            Some(Reason::PlaintextDisallowed),
            "{mode}: {v:#?}"
        );
        assert!(!v.cleartext, "{v:#?}");
        assert!(
            !sent(&v, &["USER", "PASS", "AUTH", "APOP"]),
            "{mode}: {:?}",
            v.transcript
        );
        assert!(v.attempts.iter().all(|a| a.result != Success), "{v:#?}");
        assert!(
            v.advice.as_deref().unwrap().contains("tls: starttls"),
            "{v:#?}"
        );
    }

    // Over STLS/STARTTLS and implicit TLS the same server takes the password.
    for tls in [TlsMode::Starttls, TlsMode::Implicit] {
        let v = run(&target(&c, Protocol::Imap, tls, AuthMode::Best), None).await;
        check(&v, true, Some(Plain), &[(Plain, Success)], false, false);
        let v = run(&target(&c, Protocol::Pop3, tls, AuthMode::Best), None).await;
        check(&v, true, Some(Pass), &[(Pass, Success)], false, false);
    }
}

#[tokio::test]
async fn cyrus_defaults_log_in_on_a_plain_connection_without_cleartext() {
    let Some(c) = Cyrus::start_or_skip(Flavor::Defaults, "cyrus_defaults") else {
        return;
    };
    // APOP and CRAM-MD5 are offered where PLAIN, LOGIN and USER are not.
    let v = run(
        &target(&c, Protocol::Pop3, TlsMode::None, AuthMode::Best),
        None,
    )
    .await;
    check(&v, true, Some(Apop), &[(Apop, Success)], false, false);
    let v = run(
        &target(&c, Protocol::Imap, TlsMode::None, AuthMode::Best),
        None,
    )
    .await;
    check(&v, true, Some(CramMd5), &[(CramMd5, Success)], false, false);
    // PLAIN, remembered from a TLS connection, is as cleartext as LOGIN: under LOGINDISABLED
    // the probe does not use it and logs in with CRAM-MD5 instead.
    for remembered in [Plain, Login] {
        let v = run(
            &target(&c, Protocol::Imap, TlsMode::None, AuthMode::Best),
            Some(remembered),
        )
        .await;
        check(&v, true, Some(CramMd5), &[(CramMd5, Success)], false, false);
        assert!(
            !sent(&v, &["LOGIN", "AUTHENTICATE PLAIN"]),
            "{:?}",
            v.transcript
        );
    }
    // Pinned to PASS, whose USER this CAPA does not list (STLS is): nothing is sent.
    let v = run(
        &target(&c, Protocol::Pop3, TlsMode::None, AuthMode::Pass),
        None,
    )
    .await;
    assert!(!v.success, "{v:#?}");
    assert_eq!(v.reason, Some(Reason::PlaintextDisallowed), "{v:#?}");
    assert!(!v.cleartext, "{v:#?}");
    assert!(!sent(&v, &["USER", "PASS"]), "{:?}", v.transcript);
}

#[tokio::test]
async fn pinned_cram_md5_is_tried_though_not_advertised() {
    let Some(c) = Cyrus::start_or_skip(Flavor::NoPlaintext, "pinned_cram_md5_unadvertised") else {
        return;
    };
    // This instance offers only PLAIN and LOGIN; the operator pinned CRAM-MD5 anyway, so the
    // probe asks for it, and the server's refusal of the command itself is the verdict. Cyrus
    // refuses with `-ERR [AUTH] authenticating: no mechanism available`: the `[AUTH]` code
    // does not make it a rejected password.
    let v = run(
        &target(&c, Protocol::Pop3, TlsMode::Implicit, AuthMode::CramMd5),
        None,
    )
    .await;
    assert!(!v.success, "{v:#?}");
    assert_eq!(v.reason, Some(Reason::MechanismUnavailable), "{v:#?}");
    assert!(sent(&v, &["AUTH CRAM-MD5"]), "{:?}", v.transcript);
}

#[test]
fn instance_stops_on_drop_and_leaves_nothing_behind() {
    let Some(c) = Cyrus::start_or_skip(Flavor::Saslauthd, "instance_stops_on_drop") else {
        return;
    };
    let dir = c.dir().to_path_buf();
    // The master, its services and saslauthd all name the instance's directory.
    assert!(
        support::cyrus::processes_mentioning(&dir).len() >= 2,
        "master and saslauthd"
    );
    drop(c);
    assert_eq!(
        support::cyrus::processes_mentioning(&dir),
        Vec::<u32>::new()
    );
    assert!(!dir.exists());
}
