//! Probes against a real Dovecot: the plaintext-passdb instance where every method works, the
//! hashed-passdb instance that advertises APOP and CRAM-MD5 it cannot verify (the trap), and
//! an instance that refuses passwords on unencrypted connections.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use mailbox_exporter::secret::Password;
use mailbox_exporter::verdict::{
    AttemptResult, AuthMode, Method, Protocol, Reason, TlsMode, Verdict,
};
use support::mail::{attempts, run, target};
use support::{Dovecot, Flavor};

use AttemptResult::{Rejected, Success};
use Method::{Apop, CramMd5, Login, Pass, Plain};

fn check(v: &Verdict, success: bool, method: Option<Method>, tried: &[(Method, AttemptResult)]) {
    assert_eq!(v.success, success, "{v:#?}");
    assert_eq!(v.method, method, "{v:#?}");
    assert_eq!(v.attempts, attempts(tried), "{v:#?}");
}

const TRANSPORTS: [TlsMode; 3] = [TlsMode::None, TlsMode::Starttls, TlsMode::Implicit];

#[tokio::test]
async fn plaintext_passdb_every_pop3_mode_over_every_transport() {
    let Some(d) = Dovecot::start_or_skip(Flavor::Plaintext, "plaintext_passdb_every_pop3_mode")
    else {
        return;
    };
    for tls in TRANSPORTS {
        // After STLS there is no greeting read over TLS, so no APOP timestamp to trust.
        let best = if tls == TlsMode::Starttls {
            CramMd5
        } else {
            Apop
        };
        for (mode, method) in [
            (AuthMode::Best, best),
            (AuthMode::Apop, Apop),
            (AuthMode::CramMd5, CramMd5),
            (AuthMode::Pass, Pass),
        ] {
            let v = run(&target(&d, Protocol::Pop3, tls, mode), None).await;
            if tls == TlsMode::Starttls && mode == AuthMode::Apop {
                check(&v, false, None, &[]);
                assert_eq!(v.reason, Some(Reason::MechanismUnavailable));
                assert!(!v.transcript.iter().any(|l| l.starts_with("C: APOP")));
                continue;
            }
            check(&v, true, Some(method), &[(method, Success)]);
            assert!(!v.fallback);
            assert_eq!(
                v.cleartext,
                method == Pass && tls == TlsMode::None,
                "{tls} {mode}"
            );
            assert_eq!(
                v.cert_expiry.is_some(),
                tls != TlsMode::None,
                "{tls} {mode}"
            );
            if tls == TlsMode::Starttls {
                assert!(
                    v.transcript.iter().any(|l| l == "C: STLS"),
                    "{:?}",
                    v.transcript
                );
            }
        }
    }
}

#[tokio::test]
async fn plaintext_passdb_every_imap_mechanism_over_every_transport() {
    let Some(d) =
        Dovecot::start_or_skip(Flavor::Plaintext, "plaintext_passdb_every_imap_mechanism")
    else {
        return;
    };
    for tls in TRANSPORTS {
        let t = target(&d, Protocol::Imap, tls, AuthMode::Best);
        // Unprompted, the strongest mechanism wins.
        let v = run(&t, None).await;
        check(&v, true, Some(CramMd5), &[(CramMd5, Success)]);
        assert!(!v.cleartext && !v.fallback);
        // Remembered from an earlier probe, the others are used first and work too.
        for method in [Plain, Login] {
            let v = run(&t, Some(method)).await;
            check(&v, true, Some(method), &[(method, Success)]);
            assert_eq!(v.cleartext, tls == TlsMode::None, "{tls} {method}");
        }
        if tls == TlsMode::Starttls {
            assert!(
                v.transcript.iter().any(|l| l.ends_with("STARTTLS")),
                "{:?}",
                v.transcript
            );
        }
    }
}

#[tokio::test]
async fn hashed_passdb_trap_best_falls_back_to_pass_and_pinned_pass_does_not() {
    let Some(d) = Dovecot::start_or_skip(Flavor::Hashed, "hashed_passdb_trap") else {
        return;
    };
    for tls in TRANSPORTS {
        let v = run(&target(&d, Protocol::Pop3, tls, AuthMode::Best), None).await;
        // No APOP after STLS: the only timestamp was read before TLS.
        let ladder: &[_] = if tls == TlsMode::Starttls {
            &[(CramMd5, Rejected), (Pass, Success)]
        } else {
            &[(Apop, Rejected), (CramMd5, Rejected), (Pass, Success)]
        };
        check(&v, true, Some(Pass), ladder);
        assert!(v.fallback, "{tls}");
        assert!(v.advice.as_deref().unwrap().contains("pin auth_mode: PASS"));
        assert!(
            !v.transcript.iter().any(|l| l.starts_with("C: NOOP")),
            "no NOOP before login"
        );

        let v = run(&target(&d, Protocol::Pop3, tls, AuthMode::Pass), None).await;
        check(&v, true, Some(Pass), &[(Pass, Success)]);
        assert!(!v.fallback);
    }
    for (mode, method) in [(AuthMode::Apop, Apop), (AuthMode::CramMd5, CramMd5)] {
        let v = run(&target(&d, Protocol::Pop3, TlsMode::Implicit, mode), None).await;
        check(&v, false, None, &[(method, Rejected)]);
        assert_eq!(v.reason, Some(Reason::AuthRejected));
        assert!(v.advice.as_deref().unwrap().contains("PASS"));
    }
}

#[tokio::test]
async fn hashed_passdb_imap_falls_back_from_cram_md5() {
    let Some(d) = Dovecot::start_or_skip(Flavor::Hashed, "hashed_passdb_imap") else {
        return;
    };
    let v = run(
        &target(&d, Protocol::Imap, TlsMode::Implicit, AuthMode::Best),
        None,
    )
    .await;
    check(
        &v,
        true,
        Some(Plain),
        &[(CramMd5, Rejected), (Plain, Success)],
    );
    assert!(v.fallback);
}

#[tokio::test]
async fn wrong_password_is_auth_rejected() {
    let Some(d) = Dovecot::start_or_skip(Flavor::Plaintext, "wrong_password_is_auth_rejected")
    else {
        return;
    };
    let mut t = target(&d, Protocol::Pop3, TlsMode::Implicit, AuthMode::Best);
    t.password = Password::new("not the password");
    let v = run(&t, None).await;
    check(
        &v,
        false,
        None,
        &[(Apop, Rejected), (CramMd5, Rejected), (Pass, Rejected)],
    );
    assert_eq!(v.reason, Some(Reason::AuthRejected));
    assert!(v.detail.as_deref().unwrap().contains("[AUTH]"));

    let mut t = target(&d, Protocol::Imap, TlsMode::Implicit, AuthMode::Best);
    t.password = Password::new("not the password");
    let v = run(&t, None).await;
    check(
        &v,
        false,
        None,
        &[(CramMd5, Rejected), (Plain, Rejected), (Login, Rejected)],
    );
    assert_eq!(v.reason, Some(Reason::AuthRejected));
    assert!(
        v.detail
            .as_deref()
            .unwrap()
            .contains("AUTHENTICATIONFAILED")
    );
}

#[tokio::test]
async fn insecure_connection_is_plaintext_disallowed_without_sending_the_password() {
    let Some(d) = Dovecot::start_or_skip(Flavor::Insecure, "insecure_connection") else {
        return;
    };
    let v = run(
        &target(&d, Protocol::Imap, TlsMode::None, AuthMode::Best),
        None,
    )
    .await;
    check(&v, false, None, &[]);
    assert_eq!(v.reason, Some(Reason::PlaintextDisallowed));
    assert!(!v.cleartext);
    assert!(
        !v.transcript
            .iter()
            .any(|l| l.contains("LOGIN \"") || l.contains("AUTHENTICATE")),
        "{:?}",
        v.transcript
    );

    let v = run(
        &target(&d, Protocol::Pop3, TlsMode::None, AuthMode::Best),
        None,
    )
    .await;
    check(&v, false, None, &[]);
    assert_eq!(v.reason, Some(Reason::PlaintextDisallowed));
    let v = run(
        &target(&d, Protocol::Pop3, TlsMode::None, AuthMode::Pass),
        None,
    )
    .await;
    // CAPA offers STLS but not USER: not even USER is sent.
    check(&v, false, None, &[]);
    assert_eq!(v.reason, Some(Reason::PlaintextDisallowed));
    assert!(!v.cleartext);
    assert!(
        !v.transcript
            .iter()
            .any(|l| l.starts_with("C: USER") || l.starts_with("C: PASS")),
        "{:?}",
        v.transcript
    );

    // The same server over STARTTLS/STLS takes the password.
    let v = run(
        &target(&d, Protocol::Imap, TlsMode::Starttls, AuthMode::Best),
        None,
    )
    .await;
    check(&v, true, Some(Plain), &[(Plain, Success)]);
    let v = run(
        &target(&d, Protocol::Pop3, TlsMode::Starttls, AuthMode::Best),
        None,
    )
    .await;
    check(&v, true, Some(Pass), &[(Pass, Success)]);
    assert!(!v.cleartext);
}

#[tokio::test]
async fn certificate_is_verified_and_its_expiry_reported() {
    let Some(d) = Dovecot::start_or_skip(Flavor::Plaintext, "certificate_is_verified") else {
        return;
    };
    let mut t = target(&d, Protocol::Imap, TlsMode::Implicit, AuthMode::Best);
    let v = run(&t, None).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        v.cert_expiry.is_some_and(|e| e > now),
        "{:?}",
        v.cert_expiry
    );

    t.tls.ca_file = None;
    let v = run(&t, None).await;
    check(&v, false, None, &[]);
    assert_eq!(v.reason, Some(Reason::Tls));
    assert!(
        v.detail.as_deref().unwrap().contains("certificate"),
        "{:?}",
        v.detail
    );

    t.tls.verify = false;
    let v = run(&t, None).await;
    assert!(v.success);
}
