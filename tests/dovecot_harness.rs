//! Regression tests of the real-Dovecot harness: raw POP3/IMAP dialogues prove that each
//! instance flavor behaves as the probe tests assume, line for line.
//!
//! The digests are computed here with the hash crates directly, not with the exporter's own
//! SASL code, so a bug there cannot hide a broken harness (or the other way round).

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use md5::{Digest, Md5};
use support::{Dovecot, Flavor};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_native_tls::TlsStream;

/// Every read waits at most this long: Dovecot answers within ~0.5 s even when rejecting.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

const POP3_AUTH_FAILED: &str = "-ERR [AUTH] Authentication failed.";
const IMAP_AUTH_FAILED: &str = "NO [AUTHENTICATIONFAILED] Authentication failed.";

/// A line-oriented raw dialogue over any stream.
struct Dialogue<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Dialogue<S> {
    fn new(stream: S) -> Self {
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// The next line without its CRLF; `None` when the server closed the connection.
    async fn try_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read_line(&mut line))
            .await
            .expect("server answered in time")
            .expect("read from server");
        (n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned())
    }

    async fn line(&mut self) -> String {
        self.try_line().await.expect("server closed the connection")
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

    /// Lines of a POP3 multi-line answer, after its `+OK` line, up to the final `.`.
    async fn pop3_multiline(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line == "." {
                return lines;
            }
            lines.push(line);
        }
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

    fn into_inner(self) -> S {
        assert!(
            self.stream.buffer().is_empty(),
            "bytes buffered before the TLS handshake"
        );
        self.stream.into_inner()
    }
}

async fn plain(addr: std::net::SocketAddr) -> Dialogue<TcpStream> {
    Dialogue::new(TcpStream::connect(addr).await.expect("connect"))
}

async fn tls(dovecot: &Dovecot, stream: TcpStream) -> Dialogue<TlsStream<TcpStream>> {
    let stream = dovecot
        .tls_connector()
        .connect(&dovecot.tls_domain(), stream)
        .await
        .expect("TLS handshake verifying the harness CA and the IP SAN");
    Dialogue::new(stream)
}

async fn implicit_tls(
    dovecot: &Dovecot,
    addr: std::net::SocketAddr,
) -> Dialogue<TlsStream<TcpStream>> {
    tls(dovecot, TcpStream::connect(addr).await.expect("connect")).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `<...@...>` timestamp of a POP3 greeting.
fn apop_timestamp(greeting: &str) -> &str {
    let start = greeting
        .find('<')
        .expect("greeting carries an APOP timestamp");
    let end = greeting.rfind('>').expect("timestamp ends with >");
    &greeting[start..=end]
}

fn apop_command(greeting: &str, user: &str, password: &str) -> String {
    let digest = Md5::digest(format!("{}{password}", apop_timestamp(greeting)).as_bytes());
    format!("APOP {user} {}", hex(&digest))
}

/// Answers a `+ <base64 challenge>` line as RFC 2195 says.
fn cram_md5_answer(challenge_line: &str, user: &str, password: &str) -> String {
    let challenge = challenge_line
        .strip_prefix("+ ")
        .unwrap_or_else(|| panic!("not a SASL challenge: {challenge_line:?}"));
    let challenge = BASE64.decode(challenge).expect("base64 challenge");
    let mut mac = <hmac::Hmac<Md5> as KeyInit>::new_from_slice(password.as_bytes()).expect("key");
    mac.update(&challenge);
    let digest = hex(&mac.finalize().into_bytes());
    BASE64.encode(format!("{user} {digest}"))
}

fn sasl_plain(user: &str, password: &str) -> String {
    BASE64.encode(format!("\0{user}\0{password}"))
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn capa_has(capa: &[String], line: &str) -> bool {
    capa.iter().any(|l| l == line)
}

/// The atoms of a `* CAPABILITY ...` line or of a `[CAPABILITY ...]` response code.
fn imap_caps(line: &str) -> Vec<String> {
    let start = line.find("CAPABILITY ").expect("capability list") + "CAPABILITY ".len();
    let rest = &line[start..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end].split(' ').map(str::to_owned).collect()
}

async fn pop3_user_pass<S: AsyncRead + AsyncWrite + Unpin>(
    d: &mut Dialogue<S>,
    user: &str,
    password: &str,
) -> String {
    assert_eq!(d.command(&format!("USER {user}")).await, "+OK");
    d.command(&format!("PASS {password}")).await
}

async fn pop3_capa<S: AsyncRead + AsyncWrite + Unpin>(d: &mut Dialogue<S>) -> Vec<String> {
    assert_eq!(d.command("CAPA").await, "+OK");
    d.pop3_multiline().await
}

macro_rules! dovecot {
    ($flavor:expr, $test:literal) => {
        match Dovecot::start_or_skip($flavor, $test) {
            Some(dovecot) => dovecot,
            None => return,
        }
    };
}

#[tokio::test]
async fn plaintext_pop3_accepts_every_mode() {
    let dovecot = dovecot!(Flavor::Plaintext, "plaintext_pop3_accepts_every_mode");
    let (user, password) = (dovecot.user(), dovecot.password());

    let mut d = plain(dovecot.pop3_addr()).await;
    let greeting = d.line().await;
    assert!(greeting.starts_with("+OK Dovecot ready. <"), "{greeting}");
    // The domain part is the machine's hostname; Dovecot's `hostname` setting does not apply.
    assert!(apop_timestamp(&greeting).contains('@'), "{greeting}");
    let capa = pop3_capa(&mut d).await;
    for expected in [
        "STLS",
        "USER",
        "SASL PLAIN LOGIN CRAM-MD5",
        "RESP-CODES",
        "AUTH-RESP-CODE",
    ] {
        assert!(
            capa_has(&capa, expected),
            "{expected} missing from {capa:?}"
        );
    }
    assert_eq!(
        d.command(&apop_command(&greeting, user, password)).await,
        "+OK Logged in."
    );
    assert_eq!(d.command("QUIT").await, "+OK Logging out.");

    let mut d = plain(dovecot.pop3_addr()).await;
    d.line().await;
    let challenge = d.command("AUTH CRAM-MD5").await;
    let answer = cram_md5_answer(&challenge, user, password);
    assert_eq!(d.command(&answer).await, "+OK Logged in.");

    let mut d = plain(dovecot.pop3_addr()).await;
    d.line().await;
    assert_eq!(
        pop3_user_pass(&mut d, user, "wrong").await,
        POP3_AUTH_FAILED
    );
    assert_eq!(
        pop3_user_pass(&mut d, user, password).await,
        "+OK Logged in."
    );

    let mut d = plain(dovecot.pop3_addr()).await;
    d.line().await;
    assert_eq!(d.command("STLS").await, "+OK Begin TLS negotiation now.");
    let mut d = tls(&dovecot, d.into_inner()).await;
    let capa = pop3_capa(&mut d).await;
    assert!(!capa_has(&capa, "STLS"), "{capa:?}");
    let (other, other_password) = (dovecot.other_user(), dovecot.other_password());
    assert_eq!(
        pop3_user_pass(&mut d, other, other_password).await,
        "+OK Logged in."
    );

    let mut d = implicit_tls(&dovecot, dovecot.pop3s_addr()).await;
    let greeting = d.line().await;
    let command = format!("AUTH PLAIN {}", sasl_plain(user, password));
    assert_eq!(d.command(&command).await, "+OK Logged in.", "{greeting}");
}

#[tokio::test]
async fn plaintext_imap_accepts_every_mechanism() {
    let dovecot = dovecot!(Flavor::Plaintext, "plaintext_imap_accepts_every_mechanism");
    let (user, password) = (dovecot.user(), dovecot.password());

    let mut d = plain(dovecot.imap_addr()).await;
    let greeting = d.line().await;
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "),
        "{greeting}"
    );
    assert!(greeting.ends_with("] Dovecot ready."), "{greeting}");
    let caps = imap_caps(&greeting);
    for expected in [
        "STARTTLS",
        "SASL-IR",
        "AUTH=PLAIN",
        "AUTH=LOGIN",
        "AUTH=CRAM-MD5",
    ] {
        assert!(
            caps.iter().any(|c| c == expected),
            "{expected} missing: {caps:?}"
        );
    }
    assert!(!caps.iter().any(|c| c == "LOGINDISABLED"), "{caps:?}");
    let (_, done) = d.imap("a1", &format!("LOGIN {user} \"wrong\"")).await;
    assert_eq!(done, format!("a1 {IMAP_AUTH_FAILED}"));
    let login = format!("LOGIN {user} {}", quoted(password));
    let (_, done) = d.imap("a2", &login).await;
    assert!(done.starts_with("a2 OK [CAPABILITY IMAP4rev1 "), "{done}");
    assert!(done.ends_with("] Logged in"), "{done}");

    let mut d = plain(dovecot.imap_addr()).await;
    d.line().await;
    let plain_ir = format!("AUTHENTICATE PLAIN {}", sasl_plain(user, password));
    let (_, done) = d.imap("b1", &plain_ir).await;
    assert!(
        done.starts_with("b1 OK ") && done.ends_with("Logged in"),
        "{done}"
    );

    let mut d = plain(dovecot.imap_addr()).await;
    d.line().await;
    let challenge = d.command("c1 AUTHENTICATE CRAM-MD5").await;
    let done = d
        .command(&cram_md5_answer(&challenge, user, password))
        .await;
    assert!(
        done.starts_with("c1 OK ") && done.ends_with("Logged in"),
        "{done}"
    );

    let mut d = plain(dovecot.imap_addr()).await;
    d.line().await;
    let (_, done) = d.imap("d1", "STARTTLS").await;
    assert_eq!(done, "d1 OK Begin TLS negotiation now.");
    let mut d = tls(&dovecot, d.into_inner()).await;
    let (untagged, _) = d.imap("d2", "CAPABILITY").await;
    let caps = imap_caps(&untagged[0]);
    assert!(!caps.iter().any(|c| c == "STARTTLS"), "{caps:?}");
    assert!(caps.iter().any(|c| c == "AUTH=CRAM-MD5"), "{caps:?}");
    let (other, other_password) = (dovecot.other_user(), dovecot.other_password());
    let login = format!("LOGIN {other} {}", quoted(other_password));
    let (_, done) = d.imap("d3", &login).await;
    assert!(done.starts_with("d3 OK "), "{done}");

    let mut d = implicit_tls(&dovecot, dovecot.imaps_addr()).await;
    d.line().await;
    assert_eq!(d.command("e1 AUTHENTICATE LOGIN").await, "+ VXNlcm5hbWU6");
    assert_eq!(d.command(&BASE64.encode(user)).await, "+ UGFzc3dvcmQ6");
    let done = d.command(&BASE64.encode(password)).await;
    assert!(
        done.starts_with("e1 OK ") && done.ends_with("Logged in"),
        "{done}"
    );
}

#[tokio::test]
async fn hashed_pop3_advertises_apop_and_cram_md5_but_rejects_them() {
    let dovecot = dovecot!(
        Flavor::Hashed,
        "hashed_pop3_advertises_apop_and_cram_md5_but_rejects_them"
    );
    let (user, password) = (dovecot.user(), dovecot.password());

    let mut d = plain(dovecot.pop3_addr()).await;
    let greeting = d.line().await;
    assert!(greeting.starts_with("+OK Dovecot ready. <"), "{greeting}");
    let capa = pop3_capa(&mut d).await;
    assert!(capa_has(&capa, "SASL PLAIN LOGIN CRAM-MD5"), "{capa:?}");
    // The right password, rejected: the server cannot compute APOP from a hash. Repeated
    // rejections leave the connection open, and USER/PASS then works on it.
    let apop = apop_command(&greeting, user, password);
    for _ in 0..3 {
        assert_eq!(d.command(&apop).await, POP3_AUTH_FAILED);
    }
    assert_eq!(
        pop3_user_pass(&mut d, user, password).await,
        "+OK Logged in."
    );

    let mut d = plain(dovecot.pop3_addr()).await;
    d.line().await;
    let challenge = d.command("AUTH CRAM-MD5").await;
    let answer = cram_md5_answer(&challenge, user, password);
    assert_eq!(d.command(&answer).await, POP3_AUTH_FAILED);
    let command = format!("AUTH PLAIN {}", sasl_plain(user, password));
    assert_eq!(d.command(&command).await, "+OK Logged in.");
}

#[tokio::test]
async fn hashed_imap_rejects_cram_md5_but_accepts_plain_and_login() {
    let dovecot = dovecot!(
        Flavor::Hashed,
        "hashed_imap_rejects_cram_md5_but_accepts_plain_and_login"
    );
    let (user, password) = (dovecot.user(), dovecot.password());

    let mut d = plain(dovecot.imap_addr()).await;
    let caps = imap_caps(&d.line().await);
    assert!(caps.iter().any(|c| c == "AUTH=CRAM-MD5"), "{caps:?}");
    let challenge = d.command("a1 AUTHENTICATE CRAM-MD5").await;
    let done = d
        .command(&cram_md5_answer(&challenge, user, password))
        .await;
    assert_eq!(done, format!("a1 {IMAP_AUTH_FAILED}"));
    let (_, done) = d
        .imap("a2", &format!("LOGIN {user} {}", quoted(password)))
        .await;
    assert!(done.starts_with("a2 OK "), "{done}");

    let mut d = implicit_tls(&dovecot, dovecot.imaps_addr()).await;
    d.line().await;
    let (other, other_password) = (dovecot.other_user(), dovecot.other_password());
    let plain_ir = format!("AUTHENTICATE PLAIN {}", sasl_plain(other, other_password));
    let (_, done) = d.imap("b1", &plain_ir).await;
    assert!(done.starts_with("b1 OK "), "{done}");
}

#[tokio::test]
async fn insecure_imap_disables_login_until_starttls() {
    let dovecot = dovecot!(
        Flavor::Insecure,
        "insecure_imap_disables_login_until_starttls"
    );
    let (user, password) = (dovecot.user(), dovecot.password());
    assert_eq!(dovecot.host().to_string(), "127.0.0.3");

    let mut d = plain(dovecot.imap_addr()).await;
    let caps = imap_caps(&d.line().await);
    assert!(caps.iter().any(|c| c == "LOGINDISABLED"), "{caps:?}");
    assert!(caps.iter().any(|c| c == "STARTTLS"), "{caps:?}");
    assert!(!caps.iter().any(|c| c.starts_with("AUTH=")), "{caps:?}");
    // Refused before any credential is sent.
    let (_, done) = d.imap("a1", "AUTHENTICATE PLAIN").await;
    assert_eq!(
        done,
        "a1 NO [PRIVACYREQUIRED] Plaintext authentication disabled."
    );
    let (_, done) = d.imap("a2", "STARTTLS").await;
    assert_eq!(done, "a2 OK Begin TLS negotiation now.");
    let mut d = tls(&dovecot, d.into_inner()).await;
    let (untagged, _) = d.imap("a3", "CAPABILITY").await;
    let caps = imap_caps(&untagged[0]);
    assert!(!caps.iter().any(|c| c == "LOGINDISABLED"), "{caps:?}");
    for expected in ["AUTH=PLAIN", "AUTH=LOGIN"] {
        assert!(
            caps.iter().any(|c| c == expected),
            "{expected} missing: {caps:?}"
        );
    }
    assert!(!caps.iter().any(|c| c == "AUTH=CRAM-MD5"), "{caps:?}");
    let (_, done) = d
        .imap("a4", &format!("LOGIN {user} {}", quoted(password)))
        .await;
    assert!(done.starts_with("a4 OK "), "{done}");

    let mut d = implicit_tls(&dovecot, dovecot.imaps_addr()).await;
    let caps = imap_caps(&d.line().await);
    assert!(!caps.iter().any(|c| c == "LOGINDISABLED"), "{caps:?}");
    let (_, done) = d
        .imap("b1", &format!("LOGIN {user} {}", quoted(password)))
        .await;
    assert!(done.starts_with("b1 OK "), "{done}");
}

#[tokio::test]
async fn insecure_pop3_refuses_plaintext_until_stls() {
    let dovecot = dovecot!(
        Flavor::Insecure,
        "insecure_pop3_refuses_plaintext_until_stls"
    );
    let (user, password) = (dovecot.user(), dovecot.password());

    let mut d = plain(dovecot.pop3_addr()).await;
    let greeting = d.line().await;
    assert_eq!(
        greeting, "+OK Dovecot ready.",
        "no APOP timestamp without apop"
    );
    let capa = pop3_capa(&mut d).await;
    assert!(capa_has(&capa, "STLS"), "{capa:?}");
    assert!(capa_has(&capa, "SASL"), "an empty SASL list: {capa:?}");
    assert!(!capa_has(&capa, "USER"), "{capa:?}");
    // Refused at USER, so the password is never sent in clear.
    assert_eq!(
        d.command(&format!("USER {user}")).await,
        "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
    );
    assert_eq!(d.command("STLS").await, "+OK Begin TLS negotiation now.");
    let mut d = tls(&dovecot, d.into_inner()).await;
    let capa = pop3_capa(&mut d).await;
    assert!(capa_has(&capa, "USER"), "{capa:?}");
    assert!(capa_has(&capa, "SASL PLAIN LOGIN"), "{capa:?}");
    assert_eq!(
        pop3_user_pass(&mut d, user, password).await,
        "+OK Logged in."
    );

    let mut d = implicit_tls(&dovecot, dovecot.pop3s_addr()).await;
    d.line().await;
    let (other, other_password) = (dovecot.other_user(), dovecot.other_password());
    assert_eq!(
        pop3_user_pass(&mut d, other, other_password).await,
        "+OK Logged in."
    );
}

#[tokio::test]
async fn drop_stops_every_process_and_removes_the_directory() {
    let dovecot = dovecot!(
        Flavor::Plaintext,
        "drop_stops_every_process_and_removes_the_directory"
    );
    let dir = dovecot.dir().to_owned();
    let instance = dovecot.instance_name().to_owned();
    let config = dir.join("dovecot.conf");
    // A logged-in session, left open, so that login, auth and pop3 processes exist too.
    let mut d = plain(dovecot.pop3_addr()).await;
    d.line().await;
    let (user, password) = (dovecot.user(), dovecot.password());
    assert_eq!(
        pop3_user_pass(&mut d, user, password).await,
        "+OK Logged in."
    );
    let running = processes_of(&dir, &instance);
    assert!(
        running.iter().any(|p| p.contains("/pop3 ")) && running.len() >= 4,
        "master and its children run: {running:?}"
    );
    drop(dovecot);
    assert_eq!(processes_of(&dir, &instance), Vec::<String>::new());
    assert!(!config.exists(), "temp dir removed");
    // The session went down with the server, saying so.
    assert_eq!(
        d.try_line().await.as_deref(),
        Some("-ERR [SYS/TEMP] Server shutting down.")
    );
    assert_eq!(d.try_line().await, None);
}

/// Command lines of live processes of one instance: the master names the configuration in
/// `dir`, its children are titled `dovecot-<instance>/<service>`.
fn processes_of(dir: &std::path::Path, instance: &str) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let title = format!("dovecot-{instance}/");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) || cmdline.starts_with(&title) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[test]
fn missing_peer_message_names_test_binary_packages_and_remedy() {
    let message = support::missing_peer_message(&support::DOVECOT, "some_test");
    assert_eq!(
        message,
        "SKIPPED (real peer missing): some_test needs dovecot (apt-get install dovecot-core \
         dovecot-pop3d dovecot-imapd); run scripts/test to run it"
    );
    assert!(support::find_binary("sh").is_some());
    assert!(support::find_binary("no-such-binary-mailbox-exporter").is_none());
}
