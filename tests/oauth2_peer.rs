//! Regression tests of the OAuth2 peer: the local provider's token and introspection
//! endpoints over HTTPS, and a real Dovecot whose oauth2 passdb checks tokens against it,
//! driven with raw IMAP and POP3 dialogues (SASL XOAUTH2 and OAUTHBEARER) over TLS.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use support::http::Response;
use support::oauth2_provider::{
    CLIENT_ID, CLIENT_SECRET, DEFAULT_SCOPE, Endpoint, Fault, REFRESH_TOKEN, USER,
};
use support::{Dovecot, OAuth2Provider};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_native_tls::TlsStream;

fn json(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", response.text()))
}

/// The access token of a successful token answer, after checking its RFC 6749 5.1 shape.
fn access_token(response: &Response, lifetime: u64) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let body = json(response);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], lifetime);
    body["access_token"]
        .as_str()
        .expect("access_token is a string")
        .to_owned()
}

async fn client_credentials(provider: &OAuth2Provider) -> Response {
    provider
        .post_form(
            Endpoint::Token,
            Some((CLIENT_ID, CLIENT_SECRET)),
            &[("grant_type", "client_credentials"), ("scope", "mail")],
        )
        .await
}

async fn refresh(provider: &OAuth2Provider, refresh_token: &str) -> Response {
    provider
        .post_form(
            Endpoint::Token,
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await
}

async fn introspect(provider: &OAuth2Provider, token: &str) -> Value {
    let response = provider
        .post_form(Endpoint::Introspect, None, &[("token", token)])
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    json(&response)
}

/// The RFC 6749 5.2 `error` of an error answer with `status`.
fn error_code(response: &Response, status: u16) -> String {
    assert_eq!(response.status, status, "{}", response.text());
    json(response)["error"]
        .as_str()
        .expect("error is a string")
        .to_owned()
}

#[tokio::test]
async fn provider_issues_tokens_for_both_grants_and_introspects_them() {
    let provider = OAuth2Provider::start();

    let first = access_token(&client_credentials(&provider).await, 3600);
    let second = access_token(&refresh(&provider, REFRESH_TOKEN).await, 3600);
    assert_ne!(first, second, "every token is new");

    for token in [&first, &second] {
        let answer = introspect(&provider, token).await;
        assert_eq!(answer["active"], true);
        assert_eq!(answer["username"], USER);
        assert_eq!(answer["sub"], USER);
        assert_eq!(answer["scope"], DEFAULT_SCOPE);
        assert!(answer["exp"].as_u64().is_some(), "{answer}");
    }
    assert_eq!(
        introspect(&provider, "at-unknown").await,
        json!({"active": false})
    );

    let counts = provider.counts();
    assert_eq!(counts.token, 2);
    assert_eq!(counts.grant("client_credentials"), 1);
    assert_eq!(counts.grant("refresh_token"), 1);
    assert_eq!(counts.issued, 2);
    assert_eq!(counts.introspect, 3);
    assert_eq!((counts.active, counts.inactive), (2, 1));
}

#[tokio::test]
async fn provider_client_secret_in_the_form_works_too() {
    let provider = OAuth2Provider::start();
    let response = provider
        .post_form(
            Endpoint::Token,
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    let token = access_token(&response, 3600);
    assert_eq!(json(&response)["scope"], DEFAULT_SCOPE);
    assert!(provider.is_active(&token));
}

#[tokio::test]
async fn provider_answers_rfc6749_errors() {
    let provider = OAuth2Provider::start();

    let wrong_secret = provider
        .post_form(
            Endpoint::Token,
            Some((CLIENT_ID, "wrong")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(error_code(&wrong_secret, 401), "invalid_client");
    assert_eq!(
        wrong_secret.header("www-authenticate"),
        Some("Basic realm=\"token\"")
    );

    let unknown_refresh = refresh(&provider, "rt-unknown").await;
    assert_eq!(error_code(&unknown_refresh, 400), "invalid_grant");

    provider.revoke_refresh_token(REFRESH_TOKEN);
    let revoked_refresh = refresh(&provider, REFRESH_TOKEN).await;
    assert_eq!(error_code(&revoked_refresh, 400), "invalid_grant");

    let no_grant = provider
        .post_form(Endpoint::Token, Some((CLIENT_ID, CLIENT_SECRET)), &[])
        .await;
    assert_eq!(error_code(&no_grant, 400), "invalid_request");

    let password_grant = provider
        .post_form(
            Endpoint::Token,
            Some((CLIENT_ID, CLIENT_SECRET)),
            &[("grant_type", "password")],
        )
        .await;
    assert_eq!(error_code(&password_grant, 400), "unsupported_grant_type");

    let counts = provider.counts();
    assert_eq!(
        (counts.token, counts.token_errors, counts.issued),
        (5, 5, 0)
    );
    assert_eq!(counts.grant("refresh_token"), 2);
    assert_eq!(counts.grant("(none)"), 1);
}

#[tokio::test]
async fn provider_revoked_and_expired_tokens_are_inactive() {
    let provider = OAuth2Provider::start();
    let revoked = access_token(&client_credentials(&provider).await, 3600);
    let expired = access_token(&client_credentials(&provider).await, 3600);
    provider.revoke(&revoked);
    provider.expire(&expired);
    let minted_expired = provider.issue_token(USER, Duration::ZERO);
    let minted = provider.issue_token(USER, Duration::from_secs(60));
    for token in [&revoked, &expired, &minted_expired] {
        assert_eq!(
            introspect(&provider, token).await["active"],
            false,
            "{token}"
        );
    }
    assert_eq!(introspect(&provider, &minted).await["active"], true);

    provider.set_lifetime(Duration::from_secs(5));
    access_token(&client_credentials(&provider).await, 5);
}

#[tokio::test]
async fn provider_faults_replace_the_answer_until_cleared() {
    let provider = OAuth2Provider::start();

    provider.set_fault(Endpoint::Token, Some(Fault::Unavailable));
    assert_eq!(client_credentials(&provider).await.status, 503);

    provider.set_fault(Endpoint::Token, Some(Fault::MalformedJson));
    let malformed = client_credentials(&provider).await;
    assert_eq!(malformed.status, 200);
    assert!(serde_json::from_slice::<Value>(&malformed.body).is_err());

    provider.set_fault(Endpoint::Token, Some(Fault::Hangup));
    assert_eq!(
        client_credentials(&provider).await.status,
        0,
        "no answer at all"
    );

    // Slow: the answer is held until the delay passes; a client with a shorter timeout gives
    // up while the request is counted.
    provider.set_fault(
        Endpoint::Token,
        Some(Fault::Slow(Duration::from_secs(3600))),
    );
    let gave_up = tokio::time::timeout(Duration::from_millis(300), client_credentials(&provider));
    let (gave_up, counts) = tokio::join!(
        gave_up,
        provider.wait_for("the slow request", |c| c.token == 4)
    );
    assert!(gave_up.is_err(), "the slow answer came early");
    assert_eq!(counts.issued, 0);

    // The introspection endpoint is unaffected, and the token endpoint recovers.
    assert_eq!(introspect(&provider, "at-x").await["active"], false);
    provider.set_fault(Endpoint::Token, None);
    access_token(&client_credentials(&provider).await, 3600);
    assert_eq!(provider.counts().token, 5);
}

// ---- Dovecot's oauth2 passdb against the provider ----

/// Every read waits at most this long: Dovecot answers within ~0.5 s even when rejecting.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A line-oriented raw dialogue over TLS.
struct Dialogue {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Dialogue {
    /// Connects to an implicit-TLS port, verifying the harness CA, and reads the greeting.
    async fn connect(dovecot: &Dovecot, addr: SocketAddr) -> (Self, String) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = dovecot
            .tls_connector()
            .connect(&dovecot.tls_domain(), tcp)
            .await
            .expect("TLS handshake");
        let mut dialogue = Dialogue {
            stream: BufReader::new(tls),
        };
        let greeting = dialogue.line().await;
        (dialogue, greeting)
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read_line(&mut line))
            .await
            .expect("server answered in time")
            .expect("read from server");
        assert!(n > 0, "server closed the connection");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    async fn send(&mut self, line: &str) {
        let stream = self.stream.get_mut();
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write to server");
        stream.flush().await.expect("flush");
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    /// Sends a tagged IMAP command; returns (untagged lines, tagged completion line).
    async fn imap(&mut self, tag: &str, command: &str) -> (Vec<String>, String) {
        self.send(&format!("{tag} {command}")).await;
        let mut untagged = Vec::new();
        loop {
            let line = self.line().await;
            if line.starts_with(&format!("{tag} ")) {
                return (untagged, line);
            }
            untagged.push(line);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    XOauth2,
    OAuthBearer,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::XOauth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The base64 initial response: Google's XOAUTH2 format, or RFC 7628 section 3.1.
    fn initial_response(self, user: &str, token: &str, addr: SocketAddr) -> String {
        let message = match self {
            Mechanism::XOauth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
            Mechanism::OAuthBearer => format!(
                "n,a={user},\x01host={}\x01port={}\x01auth=Bearer {token}\x01\x01",
                addr.ip(),
                addr.port()
            ),
        };
        BASE64.encode(message)
    }

    /// The client's answer to the server's error challenge: RFC 7628 3.2.3 wants the dummy
    /// `%x01` for OAUTHBEARER; for XOAUTH2 an empty response.
    fn error_answer(self) -> &'static str {
        match self {
            Mechanism::XOauth2 => "",
            Mechanism::OAuthBearer => "AQ==",
        }
    }
}

/// How an OAuth2 login ended.
#[derive(Debug)]
enum Outcome {
    /// The final OK / +OK line.
    Accepted(String),
    /// The decoded JSON error challenge, and the final NO / -ERR line.
    Refused { challenge: Value, last: String },
    /// A final NO / -ERR line with no challenge before it.
    Failed(String),
}

fn decode_challenge(line: &str) -> Value {
    let encoded = line
        .strip_prefix("+ ")
        .unwrap_or_else(|| panic!("not a SASL challenge: {line:?}"));
    let decoded = BASE64.decode(encoded).expect("base64 challenge");
    serde_json::from_slice(&decoded).unwrap_or_else(|e| {
        panic!(
            "challenge is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&decoded)
        )
    })
}

/// `AUTHENTICATE mechanism <SASL-IR>` over IMAPS.
async fn imap_login(dovecot: &Dovecot, mechanism: Mechanism, user: &str, token: &str) -> Outcome {
    let addr = dovecot.imaps_addr();
    let (mut d, greeting) = Dialogue::connect(dovecot, addr).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let (caps, done) = d.imap("c", "CAPABILITY").await;
    assert_eq!(
        done,
        "c OK Pre-login capabilities listed, post-login capabilities have more."
    );
    for cap in ["SASL-IR", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"] {
        assert!(
            caps[0].split(' ').any(|c| c == cap),
            "{cap} advertised: {caps:?}"
        );
    }
    let ir = mechanism.initial_response(user, token, addr);
    d.send(&format!("a AUTHENTICATE {} {ir}", mechanism.name()))
        .await;
    let mut line = d.line().await;
    // After a login Dovecot may list the capabilities untagged before the tagged OK.
    while line.starts_with("* ") {
        line = d.line().await;
    }
    if line.starts_with("a OK") {
        return Outcome::Accepted(line);
    }
    if line.starts_with("a NO ") {
        return Outcome::Failed(line);
    }
    let challenge = decode_challenge(&line);
    let last = d.command(mechanism.error_answer()).await;
    Outcome::Refused { challenge, last }
}

/// `AUTH mechanism <initial response>` (RFC 5034) over POP3S.
async fn pop3_login(dovecot: &Dovecot, mechanism: Mechanism, user: &str, token: &str) -> Outcome {
    let addr = dovecot.pop3s_addr();
    let (mut d, greeting) = Dialogue::connect(dovecot, addr).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert_eq!(d.command("CAPA").await, "+OK");
    let mut capa = Vec::new();
    loop {
        let line = d.line().await;
        if line == "." {
            break;
        }
        capa.push(line);
    }
    assert!(
        capa.iter().any(|l| l.starts_with("SASL ")
            && l.contains(" XOAUTH2")
            && l.contains(" OAUTHBEARER")),
        "SASL XOAUTH2 OAUTHBEARER advertised: {capa:?}"
    );
    let ir = mechanism.initial_response(user, token, addr);
    let line = d.command(&format!("AUTH {} {ir}", mechanism.name())).await;
    if line.starts_with("+OK") {
        return Outcome::Accepted(line);
    }
    if line.starts_with("-ERR ") {
        return Outcome::Failed(line);
    }
    let challenge = decode_challenge(&line);
    let last = d.command(mechanism.error_answer()).await;
    Outcome::Refused { challenge, last }
}

macro_rules! peers {
    ($test:literal) => {{
        let provider = OAuth2Provider::start();
        match Dovecot::oauth2_or_skip(&provider, $test) {
            Some(dovecot) => (provider, dovecot),
            None => return,
        }
    }};
}

fn accepted(outcome: Outcome) -> String {
    match outcome {
        Outcome::Accepted(line) => line,
        Outcome::Refused { challenge, last } => panic!("refused: {challenge} then {last:?}"),
        Outcome::Failed(line) => panic!("failed: {line:?}"),
    }
}

fn refused(outcome: Outcome) -> (Value, String) {
    match outcome {
        Outcome::Accepted(line) => panic!("accepted: {line:?}"),
        Outcome::Refused { challenge, last } => (challenge, last),
        Outcome::Failed(line) => panic!("failed without a challenge: {line:?}"),
    }
}

#[tokio::test]
async fn dovecot_imap_accepts_fetched_tokens_with_both_mechanisms() {
    let (provider, dovecot) = peers!("dovecot_imap_accepts_fetched_tokens_with_both_mechanisms");
    let user = dovecot.user();
    let by_client = access_token(&client_credentials(&provider).await, 3600);
    let by_refresh = access_token(&refresh(&provider, REFRESH_TOKEN).await, 3600);

    let line = accepted(imap_login(&dovecot, Mechanism::XOauth2, user, &by_client).await);
    assert!(line.ends_with(" Logged in"), "{line}");
    accepted(imap_login(&dovecot, Mechanism::OAuthBearer, user, &by_refresh).await);

    let counts = provider.counts();
    assert_eq!(
        (counts.introspect, counts.active, counts.inactive),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn dovecot_pop3_accepts_fetched_tokens_with_both_mechanisms() {
    let (provider, dovecot) = peers!("dovecot_pop3_accepts_fetched_tokens_with_both_mechanisms");
    let user = dovecot.user();
    let by_client = access_token(&client_credentials(&provider).await, 3600);
    let by_refresh = access_token(&refresh(&provider, REFRESH_TOKEN).await, 3600);

    let line = accepted(pop3_login(&dovecot, Mechanism::XOauth2, user, &by_client).await);
    assert_eq!(line, "+OK Logged in.");
    accepted(pop3_login(&dovecot, Mechanism::OAuthBearer, user, &by_refresh).await);
    // The same token again: Dovecot caches nothing, every login is introspected.
    accepted(pop3_login(&dovecot, Mechanism::OAuthBearer, user, &by_refresh).await);

    let counts = provider.counts();
    assert_eq!(
        (counts.introspect, counts.active, counts.inactive),
        (3, 3, 0)
    );
}

/// Dovecot 2.3's error challenge for a refused token: Google's XOAUTH2 shape, or RFC 7628
/// 3.2.2's `status` for OAUTHBEARER.
fn assert_invalid_token_challenge(mechanism: Mechanism, challenge: &Value) {
    let expected = match mechanism {
        Mechanism::XOauth2 => json!({"status": "401", "schemes": "bearer", "scope": "mail"}),
        Mechanism::OAuthBearer => json!({"status": "invalid_token"}),
    };
    assert_eq!(challenge, &expected, "{mechanism:?}");
}

const IMAP_AUTH_FAILED: &str = "a NO [AUTHENTICATIONFAILED] Authentication failed.";
const POP3_AUTH_FAILED: &str = "-ERR [AUTH] Authentication failed.";

#[tokio::test]
async fn dovecot_refuses_a_revoked_token_with_a_json_challenge() {
    let (provider, dovecot) = peers!("dovecot_refuses_a_revoked_token_with_a_json_challenge");
    let user = dovecot.user();
    let token = access_token(&client_credentials(&provider).await, 3600);
    accepted(imap_login(&dovecot, Mechanism::XOauth2, user, &token).await);
    provider.revoke(&token);

    for mechanism in [Mechanism::XOauth2, Mechanism::OAuthBearer] {
        let (challenge, last) = refused(imap_login(&dovecot, mechanism, user, &token).await);
        assert_invalid_token_challenge(mechanism, &challenge);
        assert_eq!(last, IMAP_AUTH_FAILED);
        let (challenge, last) = refused(pop3_login(&dovecot, mechanism, user, &token).await);
        assert_invalid_token_challenge(mechanism, &challenge);
        assert_eq!(last, POP3_AUTH_FAILED);
    }
    // Each login asked the provider once: nothing is cached by Dovecot.
    let counts = provider.counts();
    assert_eq!(
        (counts.introspect, counts.active, counts.inactive),
        (5, 1, 4)
    );
}

#[tokio::test]
async fn dovecot_refuses_an_expired_token() {
    let (provider, dovecot) = peers!("dovecot_refuses_an_expired_token");
    let user = dovecot.user();
    let token = access_token(&refresh(&provider, REFRESH_TOKEN).await, 3600);
    accepted(pop3_login(&dovecot, Mechanism::OAuthBearer, user, &token).await);
    provider.expire(&token);
    let minted = provider.issue_token(user, Duration::ZERO);

    for token in [&token, &minted] {
        let outcome = imap_login(&dovecot, Mechanism::OAuthBearer, user, token).await;
        let (challenge, last) = refused(outcome);
        assert_invalid_token_challenge(Mechanism::OAuthBearer, &challenge);
        assert_eq!(last, IMAP_AUTH_FAILED);
        let (challenge, last) =
            refused(pop3_login(&dovecot, Mechanism::XOauth2, user, token).await);
        assert_invalid_token_challenge(Mechanism::XOauth2, &challenge);
        assert_eq!(last, POP3_AUTH_FAILED);
    }
    let counts = provider.counts();
    assert_eq!(
        (counts.introspect, counts.active, counts.inactive),
        (5, 1, 4)
    );
}

#[tokio::test]
async fn dovecot_refuses_a_token_of_another_user() {
    let (provider, dovecot) = peers!("dovecot_refuses_a_token_of_another_user");
    let alices = access_token(&client_credentials(&provider).await, 3600);
    let outcome = imap_login(&dovecot, Mechanism::XOauth2, dovecot.other_user(), &alices).await;
    let (challenge, last) = refused(outcome);
    assert_invalid_token_challenge(Mechanism::XOauth2, &challenge);
    assert_eq!(last, IMAP_AUTH_FAILED);
    // The token itself is fine: the introspection said active, for another user.
    assert_eq!(provider.counts().active, 1);
    assert!(
        dovecot
            .log()
            .contains("Username 'bob' did not match 'alice'"),
        "{}",
        dovecot.log()
    );
}

#[tokio::test]
async fn dovecot_fails_temporarily_without_a_challenge_when_introspection_fails() {
    let (provider, dovecot) =
        peers!("dovecot_fails_temporarily_without_a_challenge_when_introspection_fails");
    let user = dovecot.user();
    let token = access_token(&client_credentials(&provider).await, 3600);
    for (n, fault) in [Fault::Unavailable, Fault::MalformedJson, Fault::Hangup]
        .into_iter()
        .enumerate()
    {
        provider.set_fault(Endpoint::Introspect, Some(fault));
        let Outcome::Failed(line) = imap_login(&dovecot, Mechanism::XOauth2, user, &token).await
        else {
            panic!("{fault:?}: not a plain failure");
        };
        assert!(
            line.starts_with("a NO [UNAVAILABLE] Temporary authentication failure."),
            "{fault:?}: {line}"
        );
        let Outcome::Failed(line) =
            pop3_login(&dovecot, Mechanism::OAuthBearer, user, &token).await
        else {
            panic!("{fault:?}: not a plain failure");
        };
        assert!(
            line.starts_with("-ERR [SYS/TEMP] Temporary authentication failure."),
            "{fault:?}: {line}"
        );
        assert_eq!(provider.counts().introspect, 2 * (n as u64 + 1));
    }
    provider.set_fault(Endpoint::Introspect, None);
    accepted(imap_login(&dovecot, Mechanism::OAuthBearer, user, &token).await);
}
