//! Dialogues with the simulator over real sockets, written as a client would speak them.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_native_tls::TlsStream;

use super::*;
use crate::proto::sasl;

/// Bound on every single step, so a broken dialogue fails instead of hanging.
const STEP: Duration = Duration::from_secs(5);
const USER: &str = "tim";
const PASSWORD: &str = "tanstaaf-secret";

struct Client<S> {
    reader: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// The next line without CRLF; `None` at end of stream.
    async fn try_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = timeout(STEP, self.reader.read_line(&mut line))
            .await
            .expect("server answered in time")
            .expect("read");
        if n == 0 {
            return None;
        }
        assert!(line.ends_with("\r\n"), "line not CRLF-terminated: {line:?}");
        line.truncate(line.len() - 2);
        Some(line)
    }

    async fn line(&mut self) -> String {
        self.try_line().await.expect("a line, not end of stream")
    }

    async fn send(&mut self, text: &str) {
        // One write per command: two would meet Nagle and delayed ACKs.
        let stream = self.reader.get_mut();
        stream
            .write_all(format!("{text}\r\n").as_bytes())
            .await
            .unwrap();
        stream.flush().await.unwrap();
    }

    async fn cmd(&mut self, text: &str) -> String {
        self.send(text).await;
        self.line().await
    }

    /// POP3 multi-line body up to the "." line.
    async fn multiline(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line == "." {
                return lines;
            }
            lines.push(line);
        }
    }

    /// IMAP: every line up to and including the one tagged `tag`.
    async fn tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// True when the server has closed the connection (possibly after more lines).
    async fn closed(&mut self) -> bool {
        for _ in 0..16 {
            if self.try_line().await.is_none() {
                return true;
            }
        }
        false
    }
}

async fn plain(server: &SimServer) -> Client<TcpStream> {
    Client::new(TcpStream::connect(server.addr()).await.unwrap())
}

async fn tls(server: &SimServer) -> Client<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    Client::new(handshake(tcp).await)
}

async fn handshake(tcp: TcpStream) -> TlsStream<TcpStream> {
    let connector = sim_certificate().connector().unwrap();
    timeout(STEP, connector.connect("localhost", tcp))
        .await
        .expect("handshake in time")
        .expect("handshake with the sim certificate as root")
}

async fn upgrade(client: Client<TcpStream>) -> Client<TlsStream<TcpStream>> {
    assert!(
        client.reader.buffer().is_empty(),
        "bytes buffered before TLS"
    );
    Client::new(handshake(client.reader.into_inner()).await)
}

async fn start(protocol: Protocol, tls: TlsMode, behavior: Behavior) -> SimServer {
    start_spec(SimSpec::new(protocol, tls, behavior).user(USER, PASSWORD)).await
}

async fn start_spec(spec: SimSpec) -> SimServer {
    SimServer::start(spec).await.unwrap()
}

fn apop_timestamp(greeting: &str) -> String {
    let open = greeting.find('<').expect("timestamp in greeting");
    let close = greeting.rfind('>').expect("timestamp in greeting");
    greeting[open..=close].to_string()
}

fn challenge(continuation: &str) -> Vec<u8> {
    let text = continuation.strip_prefix("+ ").expect("continuation");
    sasl::decode_challenge(text).expect("base64 challenge")
}

// ---- POP3 ----

#[tokio::test]
async fn pop3_apop_rfc_digest_succeeds_on_healthy() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    let greeting = c.line().await;
    assert!(greeting.starts_with("+OK "), "{greeting}");
    let timestamp = apop_timestamp(&greeting);
    assert!(timestamp.ends_with("@sim.example>"), "{timestamp}");
    let digest = sasl::apop_digest(&timestamp, PASSWORD);
    assert_eq!(
        c.cmd(&format!("APOP {USER} {digest}")).await,
        "+OK Logged in."
    );
    assert_eq!(c.cmd("STAT").await, "+OK 0 0");
    assert_eq!(c.cmd("NOOP").await, "+OK");
    assert_eq!(c.cmd("QUIT").await, "+OK Logging out.");
    assert!(c.closed().await);
    assert_eq!(server.stats().logins_ok, 1);
}

#[tokio::test]
async fn pop3_wrong_apop_digest_fails_and_keeps_the_connection() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    let timestamp = apop_timestamp(&c.line().await);
    let wrong = sasl::apop_digest(&timestamp, "not-the-password");
    assert_eq!(
        c.cmd(&format!("APOP {USER} {wrong}")).await,
        "-ERR [AUTH] Authentication failed."
    );
    // Digest of another greeting's timestamp: replay must fail too.
    let replay = sasl::apop_digest("<1.2@sim.example>", PASSWORD);
    assert!(
        c.cmd(&format!("APOP {USER} {replay}"))
            .await
            .starts_with("-ERR [AUTH]")
    );
    assert_eq!(c.cmd("USER tim").await, "+OK");
    assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).await, "+OK Logged in.");
    let stats = server.stats();
    assert_eq!((stats.logins_ok, stats.logins_rejected), (1, 2));
}

#[tokio::test]
async fn pop3_capa_lists_what_is_configured() {
    let server = start(Protocol::Pop3, TlsMode::Starttls, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    c.line().await;
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    let capa = c.multiline().await;
    for expected in [
        "USER",
        "SASL CRAM-MD5 PLAIN",
        "STLS",
        "RESP-CODES",
        "AUTH-RESP-CODE",
    ] {
        assert!(
            capa.iter().any(|l| l == expected),
            "{expected} missing: {capa:?}"
        );
    }

    let spec = SimSpec {
        cram_md5: false,
        apop: false,
        ..SimSpec::new(Protocol::Pop3, TlsMode::None, Behavior::Healthy)
    };
    let server = start_spec(spec).await;
    let mut c = plain(&server).await;
    assert!(!c.line().await.contains('<'));
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(capa.iter().any(|l| l == "SASL PLAIN"), "{capa:?}");
    assert!(!capa.iter().any(|l| l == "STLS"), "{capa:?}");
}

#[tokio::test]
async fn pop3_cram_md5_round_trip_and_cancel() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    c.line().await;
    let first = challenge(&c.cmd("AUTH CRAM-MD5").await);
    assert!(first.starts_with(b"<") && first.ends_with(b"@sim.example>"));
    assert_eq!(c.cmd("*").await, "-ERR Authentication cancelled.");
    let second = challenge(&c.cmd("AUTH CRAM-MD5").await);
    assert_ne!(first, second, "challenges are fresh");
    let answer = sasl::cram_md5_response(USER, PASSWORD, &first);
    assert!(
        c.cmd(&answer).await.starts_with("-ERR [AUTH]"),
        "stale challenge accepted"
    );
    challenge(&c.cmd("AUTH CRAM-MD5").await);
    assert!(c.cmd("not base64!").await.starts_with("-ERR"));
    let third = challenge(&c.cmd("AUTH CRAM-MD5").await);
    let answer = sasl::cram_md5_response(USER, PASSWORD, &third);
    assert_eq!(c.cmd(&answer).await, "+OK Logged in.");
    assert_eq!(server.stats().commands, vec!["AUTH CRAM-MD5"; 4]);
}

#[tokio::test]
async fn pop3_auth_plain_with_and_without_initial_response() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    c.line().await;
    let response = sasl::plain_response(USER, PASSWORD);
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {response}")).await,
        "+OK Logged in."
    );

    let mut c = plain(&server).await;
    c.line().await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    let wrong = sasl::plain_response(USER, "wrong");
    assert!(c.cmd(&wrong).await.starts_with("-ERR [AUTH]"));
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    assert_eq!(c.cmd(&response).await, "+OK Logged in.");
    assert_eq!(c.cmd("AUTH PLAIN").await, "-ERR Already logged in.");
}

#[tokio::test]
async fn pop3_noop_and_stat_rejected_before_login() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    c.line().await;
    assert!(c.cmd("NOOP").await.starts_with("-ERR"));
    assert!(c.cmd("STAT").await.starts_with("-ERR"));
    assert_eq!(c.cmd("PASS x").await, "-ERR No username given.");
    c.cmd(&format!("USER {USER}")).await;
    assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).await, "+OK Logged in.");
    assert_eq!(c.cmd("NOOP").await, "+OK");
    assert_eq!(c.cmd("STAT").await, "+OK 0 0");
}

#[tokio::test]
async fn pop3_trap_rejects_correct_digests_but_pass_works() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::UnverifiableDigests).await;
    let mut c = plain(&server).await;
    let timestamp = apop_timestamp(&c.line().await);
    c.cmd("CAPA").await;
    assert!(
        c.multiline()
            .await
            .iter()
            .any(|l| l == "SASL CRAM-MD5 PLAIN")
    );
    let digest = sasl::apop_digest(&timestamp, PASSWORD);
    assert_eq!(
        c.cmd(&format!("APOP {USER} {digest}")).await,
        "-ERR [AUTH] Authentication failed."
    );
    // What Mail::POP3Client does next: the connection is still usable.
    assert!(c.cmd("NOOP").await.starts_with("-ERR"));
    let cram = challenge(&c.cmd("AUTH CRAM-MD5").await);
    let answer = sasl::cram_md5_response(USER, PASSWORD, &cram);
    assert_eq!(c.cmd(&answer).await, "-ERR [AUTH] Authentication failed.");
    assert_eq!(c.cmd(&format!("USER {USER}")).await, "+OK");
    assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).await, "+OK Logged in.");
    let stats = server.stats();
    assert_eq!((stats.logins_ok, stats.logins_rejected), (1, 2));
}

#[tokio::test]
async fn pop3_trap_then_close_really_closes() {
    let server = start(
        Protocol::Pop3,
        TlsMode::None,
        Behavior::UnverifiableDigestsThenClose,
    )
    .await;
    let mut c = plain(&server).await;
    let timestamp = apop_timestamp(&c.line().await);
    let digest = sasl::apop_digest(&timestamp, PASSWORD);
    assert_eq!(
        c.cmd(&format!("APOP {USER} {digest}")).await,
        "-ERR [AUTH] Authentication failed."
    );
    assert_eq!(
        c.try_line().await,
        None,
        "connection closed after the rejection"
    );

    // A fresh connection still logs in with PASS.
    let mut c = plain(&server).await;
    c.line().await;
    c.cmd(&format!("USER {USER}")).await;
    assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).await, "+OK Logged in.");
}

#[tokio::test]
async fn pop3_cram_md5_only() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::CramMd5Only).await;
    let mut c = plain(&server).await;
    let greeting = c.line().await;
    assert!(!greeting.contains('<'), "{greeting}");
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(capa.iter().any(|l| l == "SASL CRAM-MD5"), "{capa:?}");
    assert!(!capa.iter().any(|l| l == "USER"), "{capa:?}");
    assert!(c.cmd(&format!("USER {USER}")).await.starts_with("-ERR"));
    assert!(c.cmd("APOP tim 0123").await.starts_with("-ERR"));
    assert!(c.cmd("AUTH PLAIN").await.starts_with("-ERR"));
    let cram = challenge(&c.cmd("AUTH CRAM-MD5").await);
    let answer = sasl::cram_md5_response(USER, PASSWORD, &cram);
    assert_eq!(c.cmd(&answer).await, "+OK Logged in.");
}

#[tokio::test]
async fn pop3_cleartext_only() {
    // Even when asked for STARTTLS, a cleartext-only server offers none.
    let server = start(Protocol::Pop3, TlsMode::Starttls, Behavior::CleartextOnly).await;
    let mut c = plain(&server).await;
    assert!(!c.line().await.contains('<'));
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(capa.iter().any(|l| l == "USER"));
    assert!(
        !capa.iter().any(|l| l.starts_with("SASL") || l == "STLS"),
        "{capa:?}"
    );
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
    assert!(c.cmd("AUTH CRAM-MD5").await.starts_with("-ERR"));
    c.cmd(&format!("USER {USER}")).await;
    assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).await, "+OK Logged in.");
}

#[tokio::test]
async fn pop3_busy_codes() {
    for (code, text) in [
        (BusyCode::InUse, "-ERR [IN-USE] "),
        (BusyCode::SysTemp, "-ERR [SYS/TEMP] "),
        (BusyCode::LoginDelay, "-ERR [LOGIN-DELAY] "),
    ] {
        let server = start(Protocol::Pop3, TlsMode::None, Behavior::Busy(code)).await;
        let mut c = plain(&server).await;
        let timestamp = apop_timestamp(&c.line().await);
        let digest = sasl::apop_digest(&timestamp, PASSWORD);
        assert!(
            c.cmd(&format!("APOP {USER} {digest}"))
                .await
                .starts_with(text)
        );
        c.cmd(&format!("USER {USER}")).await;
        assert!(c.cmd(&format!("PASS {PASSWORD}")).await.starts_with(text));
        assert_eq!(server.stats().logins_rejected, 2);
    }
}

#[tokio::test]
async fn pop3_err_greeting() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::RejectGreeting).await;
    let mut c = plain(&server).await;
    assert!(c.line().await.starts_with("-ERR "));
    assert_eq!(c.try_line().await, None);
}

#[tokio::test]
async fn pop3_stls_then_login_over_tls() {
    let server = start(Protocol::Pop3, TlsMode::Starttls, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    let timestamp = apop_timestamp(&c.line().await);
    assert_eq!(c.cmd("STLS").await, "+OK Begin TLS negotiation now.");
    let mut c = upgrade(c).await;
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(
        !capa.iter().any(|l| l == "STLS"),
        "STLS offered twice: {capa:?}"
    );
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
    let digest = sasl::apop_digest(&timestamp, PASSWORD);
    assert_eq!(
        c.cmd(&format!("APOP {USER} {digest}")).await,
        "+OK Logged in."
    );
    assert_eq!(
        server.stats().commands,
        vec!["STLS", "CAPA", "STLS", "APOP"]
    );
}

#[tokio::test]
async fn pop3_stls_discards_injected_commands() {
    let server = start(Protocol::Pop3, TlsMode::Starttls, Behavior::Healthy).await;
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut greeting = [0u8; 256];
    let _ = timeout(STEP, tcp.read(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    // The injected CAPA rides in the same packet as STLS, before the handshake.
    tcp.write_all(b"STLS\r\nCAPA\r\n").await.unwrap();
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        timeout(STEP, tcp.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        reply.push(byte[0]);
    }
    assert_eq!(reply, b"+OK Begin TLS negotiation now.\r\n");
    let mut c = Client::new(handshake(tcp).await);
    assert_eq!(
        c.cmd("NOOP").await.get(..4),
        Some("-ERR"),
        "CAPA answered after TLS"
    );
}

#[tokio::test]
async fn pop3_implicit_tls_login() {
    let server = start(Protocol::Pop3, TlsMode::Implicit, Behavior::Healthy).await;
    let mut c = tls(&server).await;
    let timestamp = apop_timestamp(&c.line().await);
    c.cmd("CAPA").await;
    assert!(!c.multiline().await.iter().any(|l| l == "STLS"));
    let digest = sasl::apop_digest(&timestamp, PASSWORD);
    assert_eq!(
        c.cmd(&format!("APOP {USER} {digest}")).await,
        "+OK Logged in."
    );

    // The certificate is also valid for the address.
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let connector = sim_certificate().connector().unwrap();
    let stream = timeout(STEP, connector.connect("127.0.0.1", tcp))
        .await
        .unwrap();
    assert!(stream.is_ok(), "certificate not valid for 127.0.0.1");
}

#[tokio::test]
async fn pop3_login_disabled_and_oauth_only() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::LoginDisabled).await;
    let mut c = plain(&server).await;
    c.line().await;
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(!capa.iter().any(|l| l == "USER" || l.starts_with("SASL")));
    assert!(
        c.cmd(&format!("USER {USER}"))
            .await
            .contains("Plaintext authentication disallowed")
    );

    let server = start(Protocol::Pop3, TlsMode::Implicit, Behavior::OAuthOnly).await;
    let mut c = tls(&server).await;
    c.line().await;
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(
        capa.iter().any(|l| l == "SASL XOAUTH2 OAUTHBEARER"),
        "{capa:?}"
    );
    assert_eq!(c.cmd(&format!("USER {USER}")).await, "+OK");
    assert_eq!(
        c.cmd(&format!("PASS {PASSWORD}")).await,
        "-ERR [AUTH] Authentication failed."
    );
    // A wrong token meets the JSON error challenge; the refusal follows the empty answer.
    let wrong = sasl::xoauth2_response(USER, "wrong-token");
    let challenge = c.cmd(&format!("AUTH XOAUTH2 {wrong}")).await;
    let status = sasl::parse_oauth_error(challenge.strip_prefix("+ ").unwrap()).unwrap();
    assert_eq!(status.status.as_deref(), Some("invalid_token"));
    assert!(c.cmd("").await.starts_with("-ERR [AUTH]"));
    // Anything else in answer to the challenge is a protocol error.
    let wrong = sasl::oauthbearer_response(USER, "h", 995, "wrong-token");
    assert!(
        c.cmd(&format!("AUTH OAUTHBEARER {wrong}"))
            .await
            .starts_with("+ ")
    );
    assert!(c.cmd("").await.starts_with("-ERR Invalid answer"));
    assert_eq!(server.stats().logins_ok, 0);
}

#[tokio::test]
async fn pop3_oauth_only_takes_its_token() {
    let mut spec = SimSpec::new(Protocol::Pop3, TlsMode::Implicit, Behavior::OAuthOnly);
    spec.oauth2_token = Some("good-token".into());
    spec.xoauth2 = false;
    let server = SimServer::start(spec.user(USER, PASSWORD)).await.unwrap();
    let mut c = tls(&server).await;
    c.line().await;
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(capa.iter().any(|l| l == "SASL OAUTHBEARER"), "{capa:?}");
    // Without an initial response, the message follows an empty challenge (RFC 5034).
    assert_eq!(c.cmd("AUTH OAUTHBEARER").await, "+ ");
    let bad = sasl::oauthbearer_response(USER, "h", 995, "stale-token");
    assert!(c.cmd(&bad).await.starts_with("+ "));
    assert!(c.cmd("AQ==").await.starts_with("-ERR [AUTH]"));
    let good = sasl::oauthbearer_response(USER, "h", 995, "good-token");
    assert!(
        c.cmd(&format!("AUTH OAUTHBEARER {good}"))
            .await
            .starts_with("+OK")
    );
    assert_eq!(server.stats().logins_ok, 1);
    assert_eq!(server.stats().logins_rejected, 1);
}

// ---- IMAP ----

#[tokio::test]
async fn imap_greeting_capabilities_and_quoted_login() {
    let password = "pa ss\"wo\\rd";
    let spec =
        SimSpec::new(Protocol::Imap, TlsMode::Implicit, Behavior::Healthy).user(USER, password);
    assert!(!format!("{spec:?}").contains("pa ss"), "password in Debug");
    let server = start_spec(spec).await;
    let mut c = tls(&server).await;
    assert_eq!(
        c.line().await,
        "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=CRAM-MD5 AUTH=PLAIN] IMAP ready."
    );
    assert_eq!(
        c.cmd("a1 LOGIN tim \"wrong\"").await,
        "a1 NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    c.send("a2 LOGIN \"tim\" \"pa ss\\\"wo\\\\rd\"").await;
    assert_eq!(
        c.tagged("a2").await,
        vec!["a2 OK [CAPABILITY IMAP4rev1] Logged in"]
    );
    c.send("a3 LOGOUT").await;
    assert_eq!(
        c.tagged("a3").await,
        vec!["* BYE Logging out", "a3 OK Logout completed."]
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn imap_login_with_literals() {
    let password = "p{4}\r\nx";
    let spec =
        SimSpec::new(Protocol::Imap, TlsMode::None, Behavior::CleartextOnly).user(USER, password);
    let server = start_spec(spec).await;
    let mut c = plain(&server).await;
    assert_eq!(c.line().await, "* OK [CAPABILITY IMAP4rev1] IMAP ready.");
    assert_eq!(c.cmd("a1 LOGIN {3}").await, "+ go ahead");
    assert_eq!(
        c.cmd(&format!("tim {{{}}}", password.len())).await,
        "+ go ahead"
    );
    c.send(password).await;
    assert_eq!(c.line().await, "a1 OK [CAPABILITY IMAP4rev1] Logged in");

    // A non-synchronizing literal gets no continuation.
    let mut c = plain(&server).await;
    c.line().await;
    c.send(&format!(
        "b1 LOGIN tim {{{}+}}\r\n{password}",
        password.len()
    ))
    .await;
    assert_eq!(c.line().await, "b1 OK [CAPABILITY IMAP4rev1] Logged in");

    // A literal beyond the line cap is refused without being read.
    let mut c = plain(&server).await;
    c.line().await;
    assert_eq!(
        c.cmd("c1 LOGIN {100000}").await,
        "c1 BAD Literal too large."
    );
    assert_eq!(c.cmd("c2 NOOP").await, "c2 OK NOOP completed.");
}

#[tokio::test]
async fn imap_starttls_changes_capabilities() {
    let spec = SimSpec {
        greeting_capabilities: false,
        ..SimSpec::new(Protocol::Imap, TlsMode::Starttls, Behavior::Healthy).user(USER, PASSWORD)
    };
    let server = start_spec(spec).await;
    let mut c = plain(&server).await;
    assert_eq!(c.line().await, "* OK IMAP ready.");
    c.send("a1 CAPABILITY").await;
    assert_eq!(
        c.tagged("a1").await,
        vec![
            "* CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED AUTH=CRAM-MD5",
            "a1 OK Capability completed."
        ]
    );
    assert!(
        c.cmd(&format!("a2 LOGIN tim {PASSWORD}"))
            .await
            .starts_with("a2 NO [PRIVACYREQUIRED]")
    );
    assert!(
        c.cmd("a3 AUTHENTICATE PLAIN")
            .await
            .starts_with("a3 NO [PRIVACYREQUIRED]")
    );
    assert_eq!(
        c.cmd("a4 STARTTLS").await,
        "a4 OK Begin TLS negotiation now."
    );
    let mut c = upgrade(c).await;
    c.send("a5 CAPABILITY").await;
    assert_eq!(
        c.tagged("a5").await,
        vec![
            "* CAPABILITY IMAP4rev1 SASL-IR AUTH=CRAM-MD5 AUTH=PLAIN",
            "a5 OK Capability completed."
        ]
    );
    assert_eq!(c.cmd("a6 STARTTLS").await, "a6 BAD TLS is already active.");
    assert_eq!(
        c.cmd(&format!("a7 LOGIN tim {PASSWORD}")).await,
        "a7 OK [CAPABILITY IMAP4rev1] Logged in"
    );
}

#[tokio::test]
async fn imap_cram_md5_round_trip_and_cancel() {
    let server = start(Protocol::Imap, TlsMode::None, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    c.line().await;
    challenge(&c.cmd("a1 AUTHENTICATE CRAM-MD5").await);
    assert_eq!(c.cmd("*").await, "a1 BAD Authentication cancelled.");
    let cram = challenge(&c.cmd("a2 AUTHENTICATE CRAM-MD5").await);
    let wrong = sasl::cram_md5_response(USER, "wrong", &cram);
    assert_eq!(
        c.cmd(&wrong).await,
        "a2 NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    assert!(
        c.cmd("a3 AUTHENTICATE CRAM-MD5 dGlt")
            .await
            .starts_with("a3 BAD")
    );
    let cram = challenge(&c.cmd("a4 authenticate cram-md5").await);
    let answer = sasl::cram_md5_response(USER, PASSWORD, &cram);
    assert_eq!(
        c.cmd(&answer).await,
        "a4 OK [CAPABILITY IMAP4rev1] Logged in"
    );
    assert_eq!(
        c.cmd("a5 LOGIN tim x").await,
        "a5 BAD Already authenticated."
    );
}

#[tokio::test]
async fn imap_plain_with_and_without_sasl_ir() {
    let server = start(Protocol::Imap, TlsMode::None, Behavior::Healthy).await;
    let response = sasl::plain_response(USER, PASSWORD);
    let mut c = plain(&server).await;
    c.line().await;
    assert_eq!(
        c.cmd(&format!("a1 AUTHENTICATE PLAIN {response}")).await,
        "a1 OK [CAPABILITY IMAP4rev1] Logged in"
    );

    let spec = SimSpec {
        sasl_ir: false,
        ..SimSpec::new(Protocol::Imap, TlsMode::None, Behavior::Healthy).user(USER, PASSWORD)
    };
    let server = start_spec(spec).await;
    let mut c = plain(&server).await;
    assert_eq!(
        c.line().await,
        "* OK [CAPABILITY IMAP4rev1 AUTH=CRAM-MD5 AUTH=PLAIN] IMAP ready."
    );
    assert!(
        c.cmd(&format!("a1 AUTHENTICATE PLAIN {response}"))
            .await
            .starts_with("a1 BAD")
    );
    assert_eq!(c.cmd("a2 AUTHENTICATE PLAIN").await, "+ ");
    assert_eq!(c.cmd("*").await, "a2 BAD Authentication cancelled.");
    assert_eq!(c.cmd("a3 AUTHENTICATE PLAIN").await, "+ ");
    assert_eq!(
        c.cmd(&response).await,
        "a3 OK [CAPABILITY IMAP4rev1] Logged in"
    );
}

#[tokio::test]
async fn imap_trap_rejects_cram_md5_but_plain_and_login_work() {
    let server = start(Protocol::Imap, TlsMode::None, Behavior::UnverifiableDigests).await;
    let mut c = plain(&server).await;
    assert!(c.line().await.contains("AUTH=CRAM-MD5"));
    let cram = challenge(&c.cmd("a1 AUTHENTICATE CRAM-MD5").await);
    let answer = sasl::cram_md5_response(USER, PASSWORD, &cram);
    assert_eq!(
        c.cmd(&answer).await,
        "a1 NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    let response = sasl::plain_response(USER, PASSWORD);
    assert_eq!(
        c.cmd(&format!("a2 AUTHENTICATE PLAIN {response}")).await,
        "a2 OK [CAPABILITY IMAP4rev1] Logged in"
    );
    let mut c = plain(&server).await;
    c.line().await;
    assert!(
        c.cmd(&format!("b1 LOGIN tim {PASSWORD}"))
            .await
            .starts_with("b1 OK")
    );
}

#[tokio::test]
async fn imap_trap_then_close_closes() {
    let server = start(
        Protocol::Imap,
        TlsMode::None,
        Behavior::UnverifiableDigestsThenClose,
    )
    .await;
    let mut c = plain(&server).await;
    c.line().await;
    let cram = challenge(&c.cmd("a1 AUTHENTICATE CRAM-MD5").await);
    let answer = sasl::cram_md5_response(USER, PASSWORD, &cram);
    assert!(
        c.cmd(&answer)
            .await
            .starts_with("a1 NO [AUTHENTICATIONFAILED]")
    );
    assert_eq!(c.try_line().await, None);
}

#[tokio::test]
async fn imap_login_disabled_without_starttls() {
    let server = start(Protocol::Imap, TlsMode::None, Behavior::LoginDisabled).await;
    let mut c = plain(&server).await;
    assert_eq!(
        c.line().await,
        "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] IMAP ready."
    );
    assert!(
        c.cmd(&format!("a1 LOGIN tim {PASSWORD}"))
            .await
            .starts_with("a1 NO [PRIVACYREQUIRED]")
    );
    assert!(c.cmd("a2 STARTTLS").await.starts_with("a2 BAD"));
    assert!(c.cmd("a3 AUTHENTICATE CRAM-MD5").await.starts_with("a3 NO"));
    assert_eq!(server.stats().logins_rejected, 1);
}

#[tokio::test]
async fn imap_oauth_only_rejects_passwords() {
    let server = start(Protocol::Imap, TlsMode::Implicit, Behavior::OAuthOnly).await;
    let mut c = tls(&server).await;
    assert_eq!(
        c.line().await,
        "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGINDISABLED AUTH=XOAUTH2 AUTH=OAUTHBEARER] IMAP ready."
    );
    assert_eq!(
        c.cmd(&format!("a1 LOGIN tim {PASSWORD}")).await,
        "a1 NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    let response = sasl::plain_response(USER, PASSWORD);
    assert_eq!(
        c.cmd(&format!("a2 AUTHENTICATE PLAIN {response}")).await,
        "a2 NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    let wrong = sasl::xoauth2_response(USER, "wrong-token");
    assert!(
        c.cmd(&format!("a3 AUTHENTICATE XOAUTH2 {wrong}"))
            .await
            .starts_with("+ ")
    );
    assert!(c.cmd("").await.starts_with("a3 NO"));
}

#[tokio::test]
async fn imap_oauth_only_takes_its_token() {
    let mut spec = SimSpec::new(Protocol::Imap, TlsMode::Implicit, Behavior::OAuthOnly);
    spec.oauth2_token = Some("good-token".into());
    spec.sasl_ir = false;
    let server = SimServer::start(spec.user(USER, PASSWORD)).await.unwrap();
    let mut c = tls(&server).await;
    c.line().await;
    // A user the server does not know is refused even with the right token.
    assert_eq!(c.cmd("a1 AUTHENTICATE OAUTHBEARER").await, "+ ");
    let stranger = sasl::oauthbearer_response("bob@example.com", "h", 993, "good-token");
    assert!(c.cmd(&stranger).await.starts_with("+ "));
    assert!(c.cmd("AQ==").await.starts_with("a1 NO"));
    assert_eq!(c.cmd("a2 AUTHENTICATE XOAUTH2").await, "+ ");
    let good = sasl::xoauth2_response(USER, "good-token");
    assert!(c.cmd(&good).await.starts_with("a2 OK"));
    assert_eq!(server.stats().logins_ok, 1);
}

#[tokio::test]
async fn imap_busy_answers_unavailable() {
    let server = start(
        Protocol::Imap,
        TlsMode::None,
        Behavior::Busy(BusyCode::InUse),
    )
    .await;
    let mut c = plain(&server).await;
    c.line().await;
    assert_eq!(
        c.cmd(&format!("a1 LOGIN tim {PASSWORD}")).await,
        "a1 NO [UNAVAILABLE] Temporary authentication failure."
    );
}

#[tokio::test]
async fn imap_bye_and_preauth_greetings() {
    let server = start(Protocol::Imap, TlsMode::None, Behavior::RejectGreeting).await;
    let mut c = plain(&server).await;
    assert!(c.line().await.starts_with("* BYE "));
    assert_eq!(c.try_line().await, None);

    let server = start(Protocol::Imap, TlsMode::None, Behavior::Preauth).await;
    let mut c = plain(&server).await;
    assert!(c.line().await.starts_with("* PREAUTH "));
    assert!(c.cmd("a1 SELECT INBOX").await.starts_with("* FLAGS"));
    assert_eq!(
        c.tagged("a1").await.last().unwrap(),
        "a1 OK [READ-WRITE] SELECT completed."
    );

    let refused = SimServer::start(SimSpec::new(
        Protocol::Pop3,
        TlsMode::None,
        Behavior::Preauth,
    ))
    .await
    .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn imap_malformed_commands_are_bad_then_bye() {
    let server = start(Protocol::Imap, TlsMode::None, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    c.line().await;
    assert!(c.cmd("").await.starts_with("* BAD"));
    assert!(c.cmd("a1 LOGIN \"unterminated").await.starts_with("a1 BAD"));
    assert!(c.cmd("a2 LOGIN onlyone").await.starts_with("a2 BAD"));
    assert!(c.cmd("a3 FROB").await.starts_with("a3 BAD"));
    // Four bad commands so far; the tenth is one too many.
    for i in 4..MAX_BAD_COMMANDS - 1 {
        assert!(c.cmd(&format!("a{i} FROB")).await.contains("BAD"));
    }
    assert_eq!(
        c.cmd("z FROB").await,
        "* BYE Too many invalid IMAP commands."
    );
    assert_eq!(c.try_line().await, None);
}

// ---- both protocols ----

#[tokio::test]
async fn stats_record_verbs_never_arguments() {
    let server = start(Protocol::Imap, TlsMode::None, Behavior::Healthy).await;
    let mut c = plain(&server).await;
    c.line().await;
    c.send("a0 CAPABILITY").await;
    c.tagged("a0").await;
    c.cmd(&format!("a1 LOGIN tim {PASSWORD}")).await;
    c.send("a2 LOGOUT").await;
    c.tagged("a2").await;
    // A confused client sending its password as a command.
    let mut c = plain(&server).await;
    c.line().await;
    c.cmd(&format!("{PASSWORD} {PASSWORD}")).await;
    c.cmd(&format!(
        "a1 AUTHENTICATE PLAIN {}",
        sasl::plain_response(USER, PASSWORD)
    ))
    .await;

    let pop3 = start(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let mut p = plain(&pop3).await;
    let timestamp = apop_timestamp(&p.line().await);
    p.cmd(&format!(
        "APOP tim {}",
        sasl::apop_digest(&timestamp, PASSWORD)
    ))
    .await;
    p.cmd(PASSWORD).await;

    let stats = server.stats();
    assert_eq!(
        stats.commands,
        vec![
            "CAPABILITY",
            "LOGIN",
            "LOGOUT",
            "UNKNOWN",
            "AUTHENTICATE PLAIN"
        ]
    );
    assert_eq!(stats.connections, 2);
    assert_eq!(pop3.stats().commands, vec!["APOP", "UNKNOWN"]);
    let everything = format!("{stats:?} {:?}", pop3.stats());
    assert!(!everything.contains(PASSWORD));
    assert!(!everything.contains(USER));
}

#[tokio::test]
async fn over_long_line_closes_the_connection() {
    for protocol in [Protocol::Pop3, Protocol::Imap] {
        let server = start(protocol, TlsMode::None, Behavior::Healthy).await;
        let mut c = plain(&server).await;
        c.line().await;
        let long = "A".repeat(MAX_LINE + 10);
        c.send(&long).await;
        assert!(c.closed().await, "{protocol}: still open");
    }
}

#[tokio::test]
async fn arbitrary_bytes_never_break_the_server() {
    // A deterministic pseudo-random stream (xorshift), so a failure is reproducible.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for protocol in [Protocol::Pop3, Protocol::Imap] {
        let server = start(protocol, TlsMode::None, Behavior::Healthy).await;
        for _ in 0..20 {
            let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
            let mut bytes: Vec<u8> = (0..2000).map(|_| next() as u8).collect();
            // Sprinkle protocol-looking pieces among the noise.
            for piece in [
                &b"\r\nAUTH CRAM-MD5\r\n"[..],
                b"\r\na LOGIN {5}\r\n",
                b"\r\n*\r\n",
            ] {
                let at = (next() as usize) % bytes.len();
                bytes.splice(at..at, piece.iter().copied());
            }
            let _ = tcp.write_all(&bytes).await;
            let _ = tcp.shutdown().await;
            let mut sink = Vec::new();
            let _ = timeout(STEP, tcp.read_to_end(&mut sink)).await;
        }
        // Still serving after all that.
        let mut c = plain(&server).await;
        assert!(c.line().await.contains("OK"));
    }
}

#[tokio::test]
async fn silent_server_sends_nothing() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::Silent).await;
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_millis(200), tcp.read(&mut byte)).await;
    assert!(read.is_err(), "silent server sent something");
    assert_eq!(server.stats().connections, 1);
}

#[tokio::test]
async fn drip_greeting_arrives_byte_by_byte_then_works() {
    let server = start(
        Protocol::Imap,
        TlsMode::None,
        Behavior::Drip(Duration::from_millis(2)),
    )
    .await;
    let began = tokio::time::Instant::now();
    let mut c = plain(&server).await;
    let greeting = c.line().await;
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1"),
        "{greeting}"
    );
    // One pause per byte, CRLF included: the pauses are a floor, whatever the scheduler does.
    let floor = Duration::from_millis(2) * (greeting.len() as u32 + 2);
    assert!(began.elapsed() >= floor, "greeting came too fast");
    assert!(
        c.cmd(&format!("a1 LOGIN tim {PASSWORD}"))
            .await
            .starts_with("a1 OK")
    );
}

#[tokio::test]
async fn endless_line_is_bounded_by_the_client() {
    for tls_mode in [TlsMode::None, TlsMode::Implicit] {
        let server = start(Protocol::Pop3, tls_mode, Behavior::EndlessLine).await;
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let mut stream: Box<dyn AsyncRead + Unpin + Send> = match tls_mode {
            TlsMode::Implicit => Box::new(handshake(tcp).await),
            _ => Box::new(tcp),
        };
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        while received.len() < 64 * 1024 {
            let n = timeout(STEP, stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            received.extend_from_slice(&chunk[..n]);
        }
        assert!(received.starts_with(b"+OK "));
        assert!(!received.contains(&b'\n'));
        drop(stream);
    }
}

#[tokio::test]
async fn garbage_and_close_on_accept() {
    let server = start(Protocol::Pop3, TlsMode::Implicit, Behavior::Garbage).await;
    let mut c = plain(&server).await;
    assert_eq!(c.line().await, "HTTP/1.1 400 Bad Request");
    assert!(c.closed().await);

    let server = start(Protocol::Imap, TlsMode::None, Behavior::CloseOnAccept).await;
    let mut c = plain(&server).await;
    assert_eq!(c.try_line().await, None);
}

/// True once the peer has gone: end of stream, or a reset when it closed with bytes unread.
async fn gone(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        timeout(STEP, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn dropping_the_server_stops_listener_and_connections() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let addr = server.addr();
    let mut c = plain(&server).await;
    c.line().await;
    server.shutdown().await;
    assert!(
        gone(c.reader.get_mut()).await,
        "connection outlived its server"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );

    let server = start(Protocol::Imap, TlsMode::None, Behavior::Silent).await;
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    // Let the server accept it before it goes.
    timeout(STEP, async {
        while server.stats().connections == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("connection accepted");
    drop(server);
    assert!(
        gone(&mut tcp).await,
        "silent connection outlived its server"
    );
}

#[tokio::test]
async fn many_concurrent_logins() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::Healthy).await;
    let addr = server.addr();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        tasks.spawn(async move {
            let mut c = Client::new(TcpStream::connect(addr).await.unwrap());
            let timestamp = apop_timestamp(&c.line().await);
            let digest = sasl::apop_digest(&timestamp, PASSWORD);
            assert_eq!(
                c.cmd(&format!("APOP {USER} {digest}")).await,
                "+OK Logged in."
            );
            c.cmd("QUIT").await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let stats = server.stats();
    assert_eq!((stats.connections, stats.logins_ok), (200, 200));
}

#[test]
fn stamps_are_unique_and_well_formed() {
    let a = unique_stamp("h.example");
    let b = unique_stamp("h.example");
    assert_ne!(a, b);
    assert!(a.starts_with(&format!("<{}.", std::process::id())) && a.ends_with("@h.example>"));
}

// ---- servers that demand TLS, Courier's unlisted CRAM-MD5, echoing refusals ----

#[tokio::test]
async fn pop3_tls_demands_in_their_real_words() {
    let demand = |d| Behavior::TlsRequired(d);
    let server = start(Protocol::Pop3, TlsMode::Starttls, demand(TlsDemand::Layer)).await;
    let mut c = plain(&server).await;
    assert!(!c.line().await.contains('<'));
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(capa.iter().any(|l| l == "STLS") && !capa.iter().any(|l| l == "USER"));
    assert_eq!(
        c.cmd("USER tim").await,
        "-ERR [AUTH] USER command only available under a layer"
    );
    assert!(c.cmd("STLS").await.starts_with("+OK"));
    let mut c = upgrade(c).await;
    c.cmd("CAPA").await;
    assert!(c.multiline().await.iter().any(|l| l == "USER"));
    assert!(c.cmd("USER tim").await.starts_with("+OK"));
    assert!(c.cmd(&format!("PASS {PASSWORD}")).await.starts_with("+OK"));

    let server = start(Protocol::Pop3, TlsMode::Starttls, demand(TlsDemand::Text)).await;
    let mut c = plain(&server).await;
    c.line().await;
    for command in ["USER tim", "AUTH CRAM-MD5", "AUTH PLAIN", "APOP tim 0123"] {
        assert_eq!(c.cmd(command).await, "-ERR TLS required to log in.");
    }

    let server = start(
        Protocol::Pop3,
        TlsMode::Starttls,
        demand(TlsDemand::Capability),
    )
    .await;
    let mut c = plain(&server).await;
    c.line().await;
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(capa.iter().any(|l| l == "XTLSREQUIRED"), "{capa:?}");
    assert_eq!(c.cmd("USER tim").await, "-ERR Incorrect state");
    assert_eq!(server.stats().logins_rejected, 0);
}

#[tokio::test]
async fn imap_tls_demands_in_their_real_words() {
    let server = start(
        Protocol::Imap,
        TlsMode::Starttls,
        Behavior::TlsRequired(TlsDemand::Layer),
    )
    .await;
    let mut c = plain(&server).await;
    assert_eq!(
        c.line().await,
        "* OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED AUTH=PLAIN AUTH=CRAM-MD5] \
         IMAP ready."
    );
    assert_eq!(
        c.cmd("a1 AUTHENTICATE CRAM-MD5").await,
        "a1 NO STARTTLS required"
    );
    assert!(c.cmd("a2 STARTTLS").await.starts_with("a2 OK"));
    let mut c = upgrade(c).await;
    c.send("a3 CAPABILITY").await;
    let caps = c.tagged("a3").await;
    assert!(!caps[0].contains("LOGINDISABLED"), "{caps:?}");
    assert!(
        c.cmd(&format!("a4 LOGIN tim \"{PASSWORD}\""))
            .await
            .starts_with("a4 OK")
    );
}

#[tokio::test]
async fn pop3_unlisted_cram_md5_is_accepted() {
    let spec = SimSpec {
        unlisted_cram_md5: true,
        ..SimSpec::new(Protocol::Pop3, TlsMode::None, Behavior::Healthy)
    };
    let server = start_spec(spec.user(USER, PASSWORD)).await;
    let mut c = plain(&server).await;
    c.line().await;
    c.cmd("CAPA").await;
    let capa = c.multiline().await;
    assert!(!capa.iter().any(|l| l.contains("CRAM-MD5")), "{capa:?}");
    let prompt = c.cmd("AUTH CRAM-MD5").await;
    let challenge = challenge(&prompt);
    let answer = sasl::cram_md5_response(USER, PASSWORD, &challenge);
    assert!(c.cmd(&answer).await.starts_with("+OK"));
}

#[tokio::test]
async fn echoing_refusals_repeat_the_client_lines() {
    let server = start(Protocol::Pop3, TlsMode::None, Behavior::EchoRefusals).await;
    let mut c = plain(&server).await;
    c.line().await;
    assert!(c.cmd("USER tim").await.starts_with("+OK"));
    let refusal = c.cmd(&format!("PASS {PASSWORD}")).await;
    assert!(refusal.starts_with("-ERR [AUTH]"), "{refusal}");
    assert!(refusal.contains(&format!("PASS {PASSWORD}")), "{refusal}");

    let server = start(Protocol::Imap, TlsMode::None, Behavior::EchoRefusals).await;
    let mut c = plain(&server).await;
    c.line().await;
    let refusal = c.cmd(&format!("a1 LOGIN tim \"{PASSWORD}\"")).await;
    assert!(refusal.starts_with("a1 NO"), "{refusal}");
    assert!(refusal.contains(&format!("\"{PASSWORD}\"")), "{refusal}");
    assert_eq!(server.stats().logins_rejected, 1);
}
