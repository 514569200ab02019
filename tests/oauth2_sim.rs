//! OAuth2 logins (XOAUTH2, OAUTHBEARER) against the simulator's OAuth2 servers: the
//! mechanism picked, a refused token replaced once, a token source that fails, and no token
//! in any output.

mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailbox_exporter::probe::{self, Target, TlsSettings};
use mailbox_exporter::proto::sasl;
use mailbox_exporter::secret::Password;
use mailbox_exporter::sim::{Behavior, SimServer, SimSpec};
use mailbox_exporter::token::{AccessToken, OAuth2Login, TokenError, TokenFuture, TokenSource};
use mailbox_exporter::verdict::{
    Attempt, AttemptResult, AuthMode, Method, Protocol, Reason, TlsMode, Verdict,
};
use support::sim_ca_file;

const USER: &str = "alice@example.com";
const PASSWORD: &str = "not-the-way-in";
const GOOD: &str = "ya29.good-token-Zm9vYmFy";
const STALE: &str = "ya29.stale-token-YmF6cXV4";

/// A generous outer bound: a probe that outlives it has hung.
const HANG: Duration = Duration::from_secs(20);

/// A token source that hands out a scripted list (the last answer repeats), counts its calls
/// and remembers which tokens it was told were refused.
struct Script {
    answers: Mutex<VecDeque<Result<String, String>>>,
    calls: AtomicUsize,
    rejected: Mutex<Vec<String>>,
}

impl Script {
    fn new(answers: &[Result<&str, &str>]) -> Arc<Script> {
        Arc::new(Script {
            answers: Mutex::new(
                answers
                    .iter()
                    .map(|a| a.map(str::to_string).map_err(str::to_string))
                    .collect(),
            ),
            calls: AtomicUsize::new(0),
            rejected: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn rejected(&self) -> Vec<String> {
        self.rejected.lock().unwrap().clone()
    }
}

impl TokenSource for Script {
    fn token(&self) -> TokenFuture<'_> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().cloned()
        };
        Box::pin(async move {
            match answer {
                Some(Ok(token)) => Ok(AccessToken::new(token)),
                Some(Err(text)) => Err(TokenError::new(text)),
                None => Err(TokenError::new("no answer scripted")),
            }
        })
    }

    fn rejected(&self, token: &AccessToken) {
        self.rejected
            .lock()
            .unwrap()
            .push(token.expose().to_string());
    }
}

/// A token source that never answers.
struct Silent;

impl TokenSource for Silent {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(std::future::pending())
    }

    fn rejected(&self, _: &AccessToken) {}
}

struct Server {
    protocol: Protocol,
    tls: TlsMode,
    xoauth2: bool,
    oauthbearer: bool,
    sasl_ir: bool,
}

impl Server {
    fn new(protocol: Protocol) -> Server {
        Server {
            protocol,
            tls: TlsMode::Implicit,
            xoauth2: true,
            oauthbearer: true,
            sasl_ir: true,
        }
    }

    async fn start(self) -> SimServer {
        let mut spec = SimSpec::new(self.protocol, self.tls, Behavior::OAuthOnly);
        spec.oauth2_token = Some(GOOD.into());
        spec.xoauth2 = self.xoauth2;
        spec.oauthbearer = self.oauthbearer;
        spec.sasl_ir = self.sasl_ir;
        SimServer::start(spec.user(USER, PASSWORD)).await.unwrap()
    }
}

fn target(sim: &SimServer, source: Arc<dyn TokenSource>) -> Target {
    Target {
        protocol: sim.spec().protocol,
        host: "127.0.0.1".into(),
        port: sim.port(),
        tls: TlsSettings {
            mode: sim.spec().tls,
            verify: true,
            ca_file: Some(sim_ca_file()),
        },
        username: USER.into(),
        password: Password::new(PASSWORD),
        auth_mode: AuthMode::Best,
        timeout: Duration::from_secs(5),
        oauth2: Some(OAuth2Login::new("test-tenant", source)),
    }
}

/// Every form of `token` this client may send for `t`.
fn forms(t: &Target, token: &str) -> Vec<String> {
    vec![
        token.to_string(),
        sasl::xoauth2_response(&t.username, token),
        sasl::oauthbearer_response(&t.username, &t.host, t.port, token),
    ]
}

/// Runs a probe and checks that no token, in any form, is anywhere in what it returns.
async fn run(t: &Target) -> Verdict {
    let v = tokio::time::timeout(HANG, probe::probe(t, None))
        .await
        .expect("the probe hung");
    let everything = format!(
        "{v:?}\n{}\n{}",
        serde_json::to_string(&v).unwrap(),
        v.transcript.join("\n")
    );
    for token in [GOOD, STALE] {
        for form in forms(t, token) {
            assert!(
                !everything.contains(&form),
                "a token form leaked: {form}\n{everything}"
            );
        }
    }
    assert!(!everything.contains(PASSWORD), "{everything}");
    v
}

fn attempts(tried: &[(Method, AttemptResult)]) -> Vec<Attempt> {
    tried
        .iter()
        .map(|&(method, result)| Attempt { method, result })
        .collect()
}

fn transcript_has(v: &Verdict, needle: &str) -> bool {
    v.transcript.iter().any(|l| l.contains(needle))
}

/// No password command reached the server.
fn no_password_tried(sim: &SimServer) {
    let commands = sim.stats().commands;
    for verb in [
        "USER",
        "PASS",
        "APOP",
        "LOGIN",
        "AUTH PLAIN",
        "AUTHENTICATE PLAIN",
    ] {
        assert!(!commands.iter().any(|c| c == verb), "{verb}: {commands:?}");
    }
}

#[tokio::test]
async fn logs_in_with_the_strongest_advertised_mechanism() {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        for (xoauth2, oauthbearer, expected) in [
            (true, true, Method::Oauthbearer),
            (true, false, Method::Xoauth2),
            (false, true, Method::Oauthbearer),
        ] {
            for sasl_ir in [true, false] {
                let sim = Server {
                    xoauth2,
                    oauthbearer,
                    sasl_ir,
                    ..Server::new(protocol)
                }
                .start()
                .await;
                let source = Script::new(&[Ok(GOOD)]);
                let t = target(&sim, source.clone());
                let v = run(&t).await;
                let case = format!("{protocol} {expected} sasl_ir={sasl_ir}");
                assert!(v.success, "{case}: {v:#?}");
                assert_eq!(v.method, Some(expected), "{case}");
                assert_eq!(v.reason, None);
                assert!(!v.fallback && !v.cleartext, "{case}");
                assert_eq!(v.attempts, attempts(&[(expected, AttemptResult::Success)]));
                assert_eq!(source.calls(), 1, "{case}");
                assert!(source.rejected().is_empty());
                assert_eq!(sim.stats().connections, 1);
                assert_eq!(sim.stats().logins_ok, 1);
                no_password_tried(&sim);
                let (verb, ir) = match protocol {
                    Protocol::Imap => ("AUTHENTICATE", sasl_ir),
                    // POP3 always sends a short enough initial response along.
                    Protocol::Pop3 => ("AUTH", true),
                };
                let shown = if ir {
                    format!("{verb} {expected} ***")
                } else {
                    format!("{verb} {expected}")
                };
                assert!(
                    v.transcript.iter().any(|l| l.ends_with(&shown)),
                    "{case}: {:#?}",
                    v.transcript
                );
            }
        }
    }
}

#[tokio::test]
async fn a_pop3_initial_response_too_long_for_the_command_follows_an_empty_challenge() {
    let long = format!("{GOOD}{}", "x".repeat(300));
    let mut spec = SimSpec::new(Protocol::Pop3, TlsMode::Implicit, Behavior::OAuthOnly);
    spec.oauth2_token = Some(long.clone());
    let sim = SimServer::start(spec.user(USER, PASSWORD)).await.unwrap();
    let source = Script::new(&[Ok(&long)]);
    let t = target(&sim, source.clone());
    let v = run(&t).await;
    assert!(v.success, "{v:#?}");
    assert!(
        v.transcript.iter().any(|l| l == "C: AUTH OAUTHBEARER"),
        "{:#?}",
        v.transcript
    );
    assert!(v.transcript.iter().any(|l| l == "C: ***"));
    for form in forms(&t, &long) {
        assert!(!v.transcript.join("\n").contains(&form));
    }
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_on_a_fresh_connection() {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        for (xoauth2, oauthbearer, method) in [
            (true, true, Method::Oauthbearer),
            (true, false, Method::Xoauth2),
        ] {
            let sim = Server {
                xoauth2,
                oauthbearer,
                ..Server::new(protocol)
            }
            .start()
            .await;
            let source = Script::new(&[Ok(STALE), Ok(GOOD)]);
            let t = target(&sim, source.clone());
            let v = run(&t).await;
            let case = format!("{protocol} {method}");
            assert!(v.success, "{case}: {v:#?}");
            assert_eq!(v.method, Some(method));
            assert!(!v.fallback, "a fresh token is no fallback: {case}");
            assert_eq!(
                v.attempts,
                attempts(&[
                    (method, AttemptResult::Rejected),
                    (method, AttemptResult::Success)
                ]),
                "{case}"
            );
            assert_eq!(source.calls(), 2, "{case}");
            assert_eq!(source.rejected(), [STALE], "{case}");
            assert_eq!(sim.stats().connections, 2, "{case}");
            // The error challenge was answered as the mechanism requires, its status kept.
            let answer = match method {
                Method::Oauthbearer => "C: AQ==",
                _ => "C: ",
            };
            assert!(
                v.transcript.iter().any(|l| l == answer),
                "{case}: {:#?}",
                v.transcript
            );
            assert!(transcript_has(&v, "status=invalid_token"), "{case}");
            assert!(transcript_has(&v, "fetching a fresh one"), "{case}");
            no_password_tried(&sim);
        }
    }
}

#[tokio::test]
async fn a_token_refused_twice_is_token_rejected() {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        for sasl_ir in [true, false] {
            let sim = Server {
                sasl_ir,
                ..Server::new(protocol)
            }
            .start()
            .await;
            let other = "ya29.another-stale-token";
            let source = Script::new(&[Ok(STALE), Ok(other)]);
            let t = target(&sim, source.clone());
            let v = run(&t).await;
            let case = format!("{protocol} sasl_ir={sasl_ir}");
            assert!(!v.success, "{case}");
            assert_eq!(v.reason, Some(Reason::TokenRejected), "{case}: {v:#?}");
            assert_eq!(
                v.attempts,
                attempts(&[
                    (Method::Oauthbearer, AttemptResult::Rejected),
                    (Method::Oauthbearer, AttemptResult::Rejected)
                ])
            );
            assert_eq!(source.calls(), 2, "fetched again once, not more: {case}");
            assert_eq!(source.rejected(), [STALE, other], "{case}");
            assert_eq!(sim.stats().connections, 2);
            assert_eq!(sim.stats().logins_rejected, 2);
            let detail = v.detail.as_deref().unwrap();
            assert!(detail.contains("status=invalid_token"), "{detail}");
            assert!(detail.contains("refused the token"), "{detail}");
            let advice = v.advice.as_deref().unwrap();
            assert!(advice.contains("mailbox access"), "{advice}");
            assert!(!advice.contains("password"), "{advice}");
            for form in forms(&t, other) {
                assert!(!format!("{v:?}").contains(&form));
            }
            no_password_tried(&sim);
        }
    }
}

#[tokio::test]
async fn no_token_means_no_connection() {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        let sim = Server::new(protocol).start().await;
        let source = Script::new(&[Err("invalid_client: the client secret has expired")]);
        let v = run(&target(&sim, source.clone())).await;
        assert_eq!(v.reason, Some(Reason::TokenUnavailable), "{v:#?}");
        assert!(v.attempts.is_empty());
        assert_eq!(source.calls(), 1);
        assert_eq!(sim.stats().connections, 0, "not even a connection");
        let detail = v.detail.as_deref().unwrap();
        assert!(detail.contains("invalid_client"), "{detail}");
        assert!(detail.contains("test-tenant"), "{detail}");
        assert!(v.advice.as_deref().unwrap().contains("token endpoint"));
    }
}

#[tokio::test]
async fn no_fresh_token_after_a_refusal_is_token_unavailable() {
    let sim = Server::new(Protocol::Imap).start().await;
    let source = Script::new(&[Ok(STALE), Err("invalid_grant")]);
    let v = run(&target(&sim, source.clone())).await;
    assert_eq!(v.reason, Some(Reason::TokenUnavailable), "{v:#?}");
    assert_eq!(
        v.attempts,
        attempts(&[(Method::Oauthbearer, AttemptResult::Rejected)])
    );
    assert_eq!(source.calls(), 2);
    assert_eq!(source.rejected(), [STALE]);
    assert_eq!(sim.stats().connections, 1);
}

#[tokio::test(start_paused = true)]
async fn a_token_source_that_never_answers_is_token_unavailable_at_the_deadline() {
    let sim = Server::new(Protocol::Pop3).start().await;
    let v = probe::probe(&target(&sim, Arc::new(Silent)), None).await;
    assert_eq!(v.reason, Some(Reason::TokenUnavailable), "{v:#?}");
    assert!(v.detail.unwrap().contains("within the probe timeout"));
    assert_eq!(sim.stats().connections, 0);
}

#[tokio::test]
async fn a_server_without_oauth2_gets_no_password() {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        let sim = SimServer::start(
            SimSpec::new(protocol, TlsMode::Implicit, Behavior::Healthy).user(USER, PASSWORD),
        )
        .await
        .unwrap();
        let source = Script::new(&[Ok(GOOD)]);
        let v = run(&target(&sim, source)).await;
        assert_eq!(v.reason, Some(Reason::MechanismUnavailable), "{v:#?}");
        assert!(v.attempts.is_empty());
        let advice = v.advice.as_deref().unwrap();
        assert!(
            advice.contains("neither OAUTHBEARER nor XOAUTH2"),
            "{advice}"
        );
        assert_eq!(sim.stats().logins_ok + sim.stats().logins_rejected, 0);
        no_password_tried(&sim);
    }
}

#[tokio::test]
async fn a_pinned_pop3_mechanism_is_used_even_when_not_advertised() {
    let sim = Server {
        xoauth2: false,
        ..Server::new(Protocol::Pop3)
    }
    .start()
    .await;
    let source = Script::new(&[Ok(GOOD)]);
    let mut t = target(&sim, source);
    t.auth_mode = AuthMode::Xoauth2;
    let v = run(&t).await;
    // The server refuses the mechanism it does not offer: before any token went out.
    assert_eq!(v.reason, Some(Reason::MechanismUnavailable), "{v:#?}");
    assert_eq!(sim.stats().commands.last().unwrap(), "QUIT");
    assert!(sim.stats().commands.iter().any(|c| c == "AUTH XOAUTH2"));
    assert!(v.transcript.iter().any(|l| l == "C: AUTH XOAUTH2"));
    assert!(!transcript_has(&v, "C: ***"), "the token stayed home");
    assert!(v.detail.unwrap().contains("refused AUTH XOAUTH2"));
    assert!(v.advice.unwrap().contains("auth_mode: BEST"));
}

#[tokio::test]
async fn a_token_sent_without_tls_is_cleartext() {
    let sim = Server {
        tls: TlsMode::None,
        ..Server::new(Protocol::Imap)
    }
    .start()
    .await;
    let source = Script::new(&[Ok(GOOD)]);
    let v = run(&target(&sim, source)).await;
    assert!(v.success, "{v:#?}");
    assert!(v.cleartext);
    let advice = v.advice.as_deref().unwrap();
    assert!(
        advice.contains("OAuth2 token crossed the network"),
        "{advice}"
    );
}

#[tokio::test]
async fn a_server_echoing_the_token_back_is_scrubbed() {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        for sasl_ir in [true, false] {
            let mut spec = SimSpec::new(protocol, TlsMode::Implicit, Behavior::EchoRefusals);
            spec.oauth2_token = Some("never-presented".into());
            spec.sasl_ir = sasl_ir;
            let sim = SimServer::start(spec.user(USER, PASSWORD)).await.unwrap();
            let source = Script::new(&[Ok(STALE), Ok(GOOD)]);
            let t = target(&sim, source.clone());
            // run() fails the test if any form of either token shows anywhere.
            let v = run(&t).await;
            let case = format!("{protocol} sasl_ir={sasl_ir}");
            assert_eq!(v.reason, Some(Reason::TokenRejected), "{case}: {v:#?}");
            assert!(transcript_has(&v, "you said:"), "{case}: the server echoed");
            assert!(v.detail.unwrap().contains("you said:"), "{case}");
            assert_eq!(source.rejected(), [STALE, GOOD]);
        }
    }
}

#[tokio::test]
async fn a_token_that_is_no_bearer_token_is_never_sent() {
    let sim = Server::new(Protocol::Imap).start().await;
    let odd = "ya29.line-one\r\na2 DELETE INBOX";
    let source = Script::new(&[Ok(odd)]);
    let v = run(&target(&sim, source)).await;
    assert_eq!(v.reason, Some(Reason::TokenUnavailable), "{v:#?}");
    assert!(v.detail.as_deref().unwrap().contains("not a bearer token"));
    assert_eq!(sim.stats().connections, 0);
    assert!(!format!("{v:?}").contains("line-one"));
}

#[tokio::test]
async fn a_password_refused_by_an_oauth2_provider_is_not_called_a_wrong_password() {
    let sim = Server::new(Protocol::Pop3).start().await;
    let source = Script::new(&[Ok(GOOD)]);
    let mut t = target(&sim, source);
    t.oauth2 = None;
    let v = run(&t).await;
    assert_eq!(v.reason, Some(Reason::AuthRejected), "{v:#?}");
    let advice = v.advice.as_deref().unwrap();
    assert!(
        advice.contains("offers OAuth2") && advice.contains("oauth2:"),
        "{advice}"
    );
    assert!(advice.contains("app password"), "{advice}");
    assert!(
        !advice.contains("check the username and password"),
        "{advice}"
    );
}
