//! A local OAuth2 provider for integration tests: an HTTPS token endpoint (RFC 6749, the
//! `client_credentials` and `refresh_token` grants) and an introspection endpoint (RFC 7662)
//! on 127.0.0.1, with controls to revoke or expire tokens, count requests and inject faults.
//!
//! Who a token belongs to: every registered client and every registered refresh token names
//! one mailbox user, and the access tokens issued for it carry that user (`username` and `sub`
//! in the introspection answer). [`OAuth2Provider::start`] registers [`CLIENT_ID`] /
//! [`CLIENT_SECRET`] and [`REFRESH_TOKEN`] for [`USER`], the user every Dovecot instance knows.
//!
//! The provider runs on its own thread and runtime, so a test on paused time or on any runtime
//! talks to it alike; it stops when dropped.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response as HttpResponse, StatusCode};
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use super::http::Response;

/// The mailbox user the default client and refresh token stand for (Dovecot's first user).
pub const USER: &str = "alice";
/// The default confidential client, for the `client_credentials` grant.
pub const CLIENT_ID: &str = "mailbox-exporter-test";
/// Its secret has characters that RFC 6749 2.3.1 form-encodes before HTTP Basic (`+`, `/`,
/// `=`, space), so a client that skips that encoding is refused.
pub const CLIENT_SECRET: &str = "cs~K9.q+Z/w= x";
/// The default refresh token, issued to [`CLIENT_ID`] for [`USER`].
pub const REFRESH_TOKEN: &str = "rt-alice-1";
/// The scope a token gets when the request names none.
pub const DEFAULT_SCOPE: &str = "mail";
/// Lifetime of the tokens the token endpoint issues unless changed with `set_lifetime`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Bodies larger than this are refused; no legitimate token request comes near it.
const MAX_BODY: usize = 64 * 1024;
/// How long [`OAuth2Provider::wait_for`] waits before failing the test.
const WAIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The provider's two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /token`
    Token,
    /// `POST /introspect`
    Introspect,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Token => "/token",
            Endpoint::Introspect => "/introspect",
        }
    }
}

/// What an endpoint does instead of answering normally. The request is counted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 Service Unavailable` with a plain-text body.
    Unavailable,
    /// The connection is closed after the request is read, with no answer at all.
    Hangup,
    /// The normal answer, after this delay (a long one stands for a hanging endpoint).
    Slow(Duration),
    /// `200 OK`, `Content-Type: application/json`, and a body that is not JSON.
    MalformedJson,
}

/// Requests seen by the provider so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests to `/token`, whatever their outcome.
    pub token: u64,
    /// `/token` requests by their `grant_type` value as sent (`client_credentials`, ...).
    pub grants: HashMap<String, u64>,
    /// Access tokens issued by `/token`.
    pub issued: u64,
    /// `/token` requests answered with an RFC 6749 5.2 error.
    pub token_errors: u64,
    /// Requests to `/introspect`, whatever their outcome.
    pub introspect: u64,
    /// Introspections answered `"active": true`.
    pub active: u64,
    /// Introspections answered `"active": false`.
    pub inactive: u64,
}

impl Counts {
    /// `/token` requests with `grant_type=grant`.
    pub fn grant(&self, grant: &str) -> u64 {
        self.grants.get(grant).copied().unwrap_or(0)
    }
}

/// An access token the provider knows.
#[derive(Debug, Clone)]
struct Token {
    user: String,
    client_id: String,
    scope: String,
    issued_at: SystemTime,
    expires_at: SystemTime,
    revoked: bool,
}

impl Token {
    fn active(&self) -> bool {
        !self.revoked && SystemTime::now() < self.expires_at
    }
}

#[derive(Debug, Clone)]
struct Client {
    secret: String,
    user: String,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    client_id: String,
    user: String,
    revoked: bool,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<String, Client>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    tokens: HashMap<String, Token>,
    lifetime: Duration,
    faults: HashMap<Endpoint, Fault>,
}

struct Shared {
    state: Mutex<State>,
    counts: watch::Sender<Counts>,
    random: SystemRandom,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, update: impl FnOnce(&mut Counts)) {
        self.counts.send_modify(update);
    }

    fn new_token_value(&self, prefix: &str) -> String {
        let mut bytes = [0u8; 16];
        self.random.fill(&mut bytes).expect("system random");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}-{hex}")
    }

    fn issue(&self, user: &str, client_id: &str, scope: &str, lifetime: Duration) -> String {
        let value = self.new_token_value("at");
        let now = SystemTime::now();
        self.state().tokens.insert(
            value.clone(),
            Token {
                user: user.to_owned(),
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                issued_at: now,
                expires_at: now + lifetime,
                revoked: false,
            },
        );
        value
    }
}

/// A running provider; stopped, with its files removed, on drop.
pub struct OAuth2Provider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    ca_pem: String,
    ca_file: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    dir: TempDir,
}

impl std::fmt::Debug for OAuth2Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Provider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl OAuth2Provider {
    /// Starts a provider on a free port of 127.0.0.1, with a fresh test CA, the default client
    /// and refresh token registered, and tokens living [`DEFAULT_LIFETIME`].
    pub fn start() -> Self {
        let (ca_pem, cert_pem, key_pem) = super::dovecot::certificates();
        let dir = tempfile::Builder::new()
            .prefix("oauth2")
            .tempdir()
            .expect("create temp dir");
        super::dovecot::set_mode(dir.path(), 0o755);
        let ca_file = dir.path().join("oauth2-ca.pem");
        fs::write(&ca_file, &ca_pem).expect("write CA");
        super::dovecot::set_mode(&ca_file, 0o644);

        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert PEM")];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lifetime: DEFAULT_LIFETIME,
                ..State::default()
            }),
            counts: watch::Sender::new(Counts::default()),
            random: SystemRandom::new(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("oauth2-provider".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("provider runtime");
                runtime.block_on(serve(listener, acceptor, serving, stopped));
            })
            .expect("spawn provider thread");
        let provider = OAuth2Provider {
            addr,
            shared,
            ca_pem,
            ca_file,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        };
        provider.add_client(CLIENT_ID, CLIENT_SECRET, USER);
        provider.add_refresh_token(REFRESH_TOKEN, CLIENT_ID, USER);
        provider
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT/token`
    pub fn token_url(&self) -> String {
        self.url(Endpoint::Token)
    }

    /// `https://127.0.0.1:PORT/introspect`
    pub fn introspection_url(&self) -> String {
        self.url(Endpoint::Introspect)
    }

    pub fn url(&self, endpoint: Endpoint) -> String {
        format!("https://{}{}", self.addr, endpoint.path())
    }

    /// The CA that signed the provider's certificate (valid for 127.0.0.1 and localhost).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// [`Self::ca_pem`] as a world-readable file.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A directory for files that belong with the provider (removed with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Registers a confidential client whose `client_credentials` tokens are `user`'s.
    pub fn add_client(&self, client_id: &str, secret: &str, user: &str) {
        self.shared.state().clients.insert(
            client_id.to_owned(),
            Client {
                secret: secret.to_owned(),
                user: user.to_owned(),
            },
        );
    }

    /// Registers a refresh token issued to `client_id` for `user`.
    pub fn add_refresh_token(&self, refresh_token: &str, client_id: &str, user: &str) {
        self.shared.state().refresh_tokens.insert(
            refresh_token.to_owned(),
            RefreshGrant {
                client_id: client_id.to_owned(),
                user: user.to_owned(),
                revoked: false,
            },
        );
    }

    /// Lifetime (`expires_in`) of the tokens the token endpoint issues from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.shared.state().lifetime = lifetime;
    }

    /// Mints an access token for `user` without a request (not counted); a zero `lifetime`
    /// gives a token that is already expired.
    pub fn issue_token(&self, user: &str, lifetime: Duration) -> String {
        self.shared.issue(user, "minted", DEFAULT_SCOPE, lifetime)
    }

    /// From now on the token introspects as inactive. Panics on an unknown token.
    pub fn revoke(&self, access_token: &str) {
        self.token_mut(access_token, |t| t.revoked = true);
    }

    /// The token expires now: it introspects as inactive from now on.
    pub fn expire(&self, access_token: &str) {
        self.token_mut(access_token, |t| t.expires_at = SystemTime::now());
    }

    /// From now on the refresh token is answered `invalid_grant`.
    pub fn revoke_refresh_token(&self, refresh_token: &str) {
        let mut state = self.shared.state();
        let grant = state
            .refresh_tokens
            .get_mut(refresh_token)
            .expect("a registered refresh token");
        grant.revoked = true;
    }

    /// Whether the provider would answer `"active": true` for `access_token` now.
    pub fn is_active(&self, access_token: &str) -> bool {
        self.shared
            .state()
            .tokens
            .get(access_token)
            .is_some_and(Token::active)
    }

    /// Makes `endpoint` misbehave (`Some`) or answer normally again (`None`).
    pub fn set_fault(&self, endpoint: Endpoint, fault: Option<Fault>) {
        let mut state = self.shared.state();
        match fault {
            Some(fault) => state.faults.insert(endpoint, fault),
            None => state.faults.remove(&endpoint),
        };
    }

    /// The requests counted so far.
    pub fn counts(&self) -> Counts {
        self.shared.counts.borrow().clone()
    }

    /// Waits until `condition` holds for the counts (checked on every change) and returns
    /// them; fails the test with `what` and the counts after a generous timeout.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Counts) -> bool) -> Counts {
        let mut counts = self.shared.counts.subscribe();
        match tokio::time::timeout(WAIT_TIMEOUT, counts.wait_for(|c| condition(c))).await {
            Ok(Ok(counts)) => counts.clone(),
            _ => panic!("the provider never saw {what}: {:?}", self.counts()),
        }
    }

    /// A TLS connector trusting only the provider's CA (native-tls, like the probes).
    pub fn tls_connector(&self) -> tokio_native_tls::TlsConnector {
        let ca = native_tls::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM");
        native_tls::TlsConnector::builder()
            .disable_built_in_roots(true)
            .add_root_certificate(ca)
            .build()
            .expect("TLS connector")
            .into()
    }

    /// A small HTTPS client for the tests: POSTs `form` (URL-encoded) to `endpoint`, with HTTP
    /// Basic credentials when given (form-encoded first, as RFC 6749 2.3.1 says), verifying
    /// the provider's certificate, and reads the whole answer.
    pub async fn post_form(
        &self,
        endpoint: Endpoint,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Response {
        let body = form_encode(form);
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            endpoint.path(),
            self.addr,
            body.len()
        );
        if let Some((id, secret)) = basic {
            head.push_str(&format!("Authorization: {}\r\n", basic_auth(id, secret)));
        }
        head.push_str("\r\n");
        let exchange = async {
            let tcp = TcpStream::connect(self.addr).await.expect("connect");
            let mut tls = self
                .tls_connector()
                .connect("127.0.0.1", tcp)
                .await
                .expect("TLS handshake verifying the provider's CA");
            tls.write_all(head.as_bytes()).await.expect("write head");
            tls.write_all(body.as_bytes()).await.expect("write body");
            let mut raw = Vec::new();
            // A hang-up is an empty answer; the caller looks at `raw` through the Response.
            let _ = tls.read_to_end(&mut raw).await;
            raw
        };
        let raw = tokio::time::timeout(WAIT_TIMEOUT, exchange)
            .await
            .expect("the provider answered in time");
        if raw.is_empty() {
            // Hung up without an answer: status 0 says so.
            return Response {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
            };
        }
        super::http::parse(&raw)
    }

    fn token_mut(&self, access_token: &str, change: impl FnOnce(&mut Token)) {
        let mut state = self.shared.state();
        change(
            state
                .tokens
                .get_mut(access_token)
                .expect("a token the provider issued"),
        );
    }
}

impl Drop for OAuth2Provider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `Basic base64(urlencode(id):urlencode(secret))`, RFC 6749 2.3.1.
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    let pair = format!(
        "{}:{}",
        form_encode_value(client_id),
        form_encode_value(secret)
    );
    format!("Basic {}", BASE64.encode(pair))
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode_value(k), form_encode_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_encode_value(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The pairs of a form body; `None` when it is not valid form encoding or not UTF-8.
fn form_decode(body: &[u8]) -> Option<Vec<(String, String)>> {
    if body.is_empty() {
        return Some(Vec::new());
    }
    body.split(|&b| b == b'&')
        .map(|pair| {
            let mut parts = pair.splitn(2, |&b| b == b'=');
            let key = decode_component(parts.next()?)?;
            let value = decode_component(parts.next().unwrap_or_default())?;
            Some((key, value))
        })
        .collect()
}

fn decode_component(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { handle(&shared, request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A hang-up: hyper closes the connection without an answer when the service fails.
#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hang-up on purpose")
    }
}

impl std::error::Error for HangUp {}

type Answer = HttpResponse<Full<Bytes>>;

async fn handle(shared: &Shared, request: Request<Incoming>) -> Result<Answer, HangUp> {
    let endpoint = match request.uri().path() {
        "/token" => Endpoint::Token,
        "/introspect" => Endpoint::Introspect,
        _ => return Ok(plain(StatusCode::NOT_FOUND, "not found")),
    };
    if request.method() != hyper::Method::POST {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "POST only"));
    }
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
    };
    let form = form_decode(&body);
    shared.count(|c| match endpoint {
        Endpoint::Token => {
            c.token += 1;
            let grant = form
                .as_ref()
                .and_then(|f| field(f, "grant_type"))
                .unwrap_or("(none)");
            *c.grants.entry(grant.to_owned()).or_default() += 1;
        }
        Endpoint::Introspect => c.introspect += 1,
    });

    let fault = shared.state().faults.get(&endpoint).copied();
    match fault {
        Some(Fault::Unavailable) => {
            return Ok(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable",
            ));
        }
        Some(Fault::Hangup) => return Err(HangUp),
        Some(Fault::MalformedJson) => {
            return Ok(answer(
                StatusCode::OK,
                "application/json",
                "{\"access_token\": \"trunc",
            ));
        }
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }

    let Some(form) = form else {
        return Ok(match endpoint {
            Endpoint::Token => token_error(shared, "invalid_request", "the body is not a form"),
            Endpoint::Introspect => plain(StatusCode::BAD_REQUEST, "the body is not a form"),
        });
    };
    Ok(match endpoint {
        Endpoint::Token => token(shared, authorization.as_deref(), &form),
        Endpoint::Introspect => introspect(shared, &form),
    })
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The client's credentials from HTTP Basic or from the form (RFC 6749 2.3.1), never both.
enum ClientAuth {
    None,
    /// `client_id` only: a public client, refused by both grants here.
    IdOnly,
    Credentials {
        id: String,
        secret: String,
        basic: bool,
    },
}

fn client_auth(authorization: Option<&str>, form: &[(String, String)]) -> Result<ClientAuth, ()> {
    let from_form = match (field(form, "client_id"), field(form, "client_secret")) {
        (Some(id), Some(secret)) => Some(ClientAuth::Credentials {
            id: id.to_owned(),
            secret: secret.to_owned(),
            basic: false,
        }),
        (Some(_), None) => Some(ClientAuth::IdOnly),
        (None, Some(_)) => return Err(()),
        (None, None) => None,
    };
    let from_header = match authorization {
        None => None,
        Some(value) => {
            let encoded = value.strip_prefix("Basic ").ok_or(())?;
            let decoded = BASE64.decode(encoded.trim()).map_err(|_| ())?;
            let pair = std::str::from_utf8(&decoded).map_err(|_| ())?;
            let (id, secret) = pair.split_once(':').ok_or(())?;
            Some(ClientAuth::Credentials {
                id: decode_component(id.as_bytes()).ok_or(())?,
                secret: decode_component(secret.as_bytes()).ok_or(())?,
                basic: true,
            })
        }
    };
    match (from_header, from_form) {
        // RFC 6749 2.3: a client MUST NOT use more than one authentication method per request
        // (a client_id in the form beside Basic is allowed; it must then be the same client).
        (Some(ClientAuth::Credentials { id, .. }), Some(ClientAuth::IdOnly))
            if field(form, "client_id") != Some(id.as_str()) =>
        {
            Err(())
        }
        (Some(header), Some(ClientAuth::IdOnly)) | (Some(header), None) => Ok(header),
        (Some(_), Some(_)) => Err(()),
        (None, Some(form)) => Ok(form),
        (None, None) => Ok(ClientAuth::None),
    }
}

fn token(shared: &Shared, authorization: Option<&str>, form: &[(String, String)]) -> Answer {
    let Ok(auth) = client_auth(authorization, form) else {
        return token_error(
            shared,
            "invalid_request",
            "client authentication is malformed or uses more than one method",
        );
    };
    let client = match &auth {
        ClientAuth::Credentials { id, secret, basic } => {
            let known = shared.state().clients.get(id).cloned();
            match known {
                Some(client) if client.secret == *secret => (id.clone(), client),
                _ => return invalid_client(shared, *basic),
            }
        }
        ClientAuth::None | ClientAuth::IdOnly => return invalid_client(shared, false),
    };
    let (client_id, client) = client;
    let scope = field(form, "scope").unwrap_or(DEFAULT_SCOPE).to_owned();
    let user = match field(form, "grant_type") {
        Some("client_credentials") => client.user,
        Some("refresh_token") => {
            let Some(refresh_token) = field(form, "refresh_token") else {
                return token_error(shared, "invalid_request", "refresh_token is missing");
            };
            let grant = shared.state().refresh_tokens.get(refresh_token).cloned();
            match grant {
                Some(grant) if !grant.revoked && grant.client_id == client_id => grant.user,
                _ => {
                    return token_error(
                        shared,
                        "invalid_grant",
                        "the refresh token is invalid, expired or revoked",
                    );
                }
            }
        }
        Some(_) => {
            return token_error(
                shared,
                "unsupported_grant_type",
                "only client_credentials and refresh_token",
            );
        }
        None => return token_error(shared, "invalid_request", "grant_type is missing"),
    };
    let lifetime = shared.state().lifetime;
    let access_token = shared.issue(&user, &client_id, &scope, lifetime);
    shared.count(|c| c.issued += 1);
    json_answer(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "scope": scope,
        }),
    )
}

fn invalid_client(shared: &Shared, basic: bool) -> Answer {
    let mut answer = token_error_with(
        shared,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    if basic {
        answer.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"token\""),
        );
    }
    answer
}

fn token_error(shared: &Shared, error: &str, description: &str) -> Answer {
    token_error_with(shared, StatusCode::BAD_REQUEST, error, description)
}

/// An RFC 6749 5.2 error answer.
fn token_error_with(shared: &Shared, status: StatusCode, error: &str, description: &str) -> Answer {
    shared.count(|c| c.token_errors += 1);
    json_answer(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn introspect(shared: &Shared, form: &[(String, String)]) -> Answer {
    let token = field(form, "token").and_then(|t| shared.state().tokens.get(t).cloned());
    let body = match token.filter(Token::active) {
        Some(token) => {
            shared.count(|c| c.active += 1);
            json!({
                "active": true,
                "username": token.user,
                "sub": token.user,
                "client_id": token.client_id,
                "scope": token.scope,
                "token_type": "Bearer",
                "iat": unix(token.issued_at),
                "exp": unix(token.expires_at),
            })
        }
        None => {
            shared.count(|c| c.inactive += 1);
            json!({"active": false})
        }
    };
    json_answer(StatusCode::OK, &body)
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    let mut answer = answer(status, "application/json", &body.to_string());
    // RFC 6749 5.1: token answers must not be cached.
    answer.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    answer
}

fn plain(status: StatusCode, body: &str) -> Answer {
    answer(status, "text/plain", body)
}

fn answer(status: StatusCode, content_type: &'static str, body: &str) -> Answer {
    let mut answer = HttpResponse::new(Full::new(Bytes::from(body.to_owned())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    answer
}
