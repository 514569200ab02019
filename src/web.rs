//! The HTTP side: `/metrics`, the landing and account pages, `/-/healthy`, `/-/ready` and
//! `POST /-/reload`, with the optional web config file (TLS with client certificates, basic
//! auth, headers, rate limit) in the format of the Prometheus exporter toolkit.
//!
//! Serving only reads state that probes wrote: no request ever makes the exporter log in
//! anywhere. What a request may cost is bounded: headers are size- and time-limited, bodies are
//! never read, a client must keep reading its response, and open connections are capped with
//! the quietest closed first, so idle sockets cannot keep a scraper out.
//!
//! Layout: `config` (the web config file), `tls` (rustls from it), `auth` (basic auth),
//! `connections` (the cap and the stream wrapper that notes activity).

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ConfigErrors;

mod auth;
mod body;
mod config;
mod connections;
mod tls;

use auth::BasicAuth;
pub use auth::{DEFAULT_HASH_COST, HashError, MAX_PASSWORD_BYTES, hash_password};
use body::Body;
use config::RateLimit;
pub use config::{WebConfig, WebConfigError};
use connections::{Admitted, Connections};

/// The port registered for this exporter.
pub const DEFAULT_PORT: u16 = 9110;
/// The exposition format Prometheus negotiates for text.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Open connections at once: far more than any set of scrapers and browsers needs, few enough
/// that a flood of sockets cannot exhaust file descriptors. At the cap a new connection closes
/// the quietest one, so idle sockets cannot keep a scraper out.
const MAX_CONNECTIONS: usize = 512;
/// A client must send each request's headers within this, counted from the connection's start
/// or the end of its previous response: it bounds slow senders and idle keep-alive alike.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake slower than this is a stuck or hostile client.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes no bytes of its response for this long has stopped reading.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Request line plus headers; our routes need a few hundred bytes (hyper's minimum is 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// On shutdown, in-flight requests get this long to finish; a scrape takes milliseconds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Sent with every 401; the realm is what browsers show in their login prompt.
const WWW_AUTHENTICATE: &str = "Basic realm=\"mailbox_exporter\"";

/// `--web.listen-address`: `:9110` (every interface) or `host:port` (`[::1]:9110` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// `None` listens on every interface.
    pub host: Option<String>,
    pub port: u16,
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "{s:?} is not a listen address: expected [host]:port, e.g. :9110 or 127.0.0.1:9110"
            )
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(usage)?;
        let port: u16 = port.parse().map_err(|_| usage())?;
        let host = match host.strip_prefix('[') {
            Some(rest) => {
                let inner = rest.strip_suffix(']').ok_or_else(usage)?;
                inner.parse::<std::net::Ipv6Addr>().map_err(|_| usage())?;
                Some(inner.to_string())
            }
            None if host.is_empty() => None,
            None => {
                let valid = host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
                if !valid {
                    return Err(usage());
                }
                Some(host.to_string())
            }
        };
        Ok(ListenAddress { host, port })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(host) if host.contains(':') => write!(f, "[{host}]:{}", self.port),
            Some(host) => write!(f, "{host}:{}", self.port),
        }
    }
}

/// Binds `address`. Every interface means IPv6 and IPv4 where the host has IPv6, IPv4 alone
/// where it does not.
pub async fn bind(address: &ListenAddress) -> io::Result<TcpListener> {
    let candidates: Vec<SocketAddr> = match &address.host {
        None => vec![
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, address.port)),
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, address.port)),
        ],
        Some(host) => tokio::net::lookup_host((host.as_str(), address.port))
            .await?
            .collect(),
    };
    let mut last = io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        format!("{address} resolves to no address"),
    );
    for candidate in candidates {
        match TcpListener::bind(candidate).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What the read-only routes serve (`/metrics`, `/` and `/accounts/<name>`), from state that
/// probes wrote: reading never makes the exporter log in anywhere. The exporter's state
/// implements it; so do the fakes of the web side's and the service's tests.
pub trait Pages: Send + Sync + 'static {
    /// Writes the Prometheus text exposition to `out`, from a blocking thread; it fails only
    /// when `out` does (the client went away).
    fn write_metrics(&self, out: &mut dyn io::Write) -> io::Result<()>;
    /// The landing page (HTML).
    fn landing_page(&self) -> String;
    /// One account's page (HTML), `None` for an account that is not configured.
    fn account_page(&self, name: &str) -> Option<String>;
}

/// What the web side reads and triggers: the [`Pages`], and the service's readiness and
/// reloads. The service implements it over its state; tests implement it with fakes.
pub trait Backend: Send + Sync + 'static {
    type Pages: Pages;
    fn pages(&self) -> &Self::Pages;
    /// True once the first configuration is applied, until shutdown starts.
    fn is_ready(&self) -> bool;
    /// Whether `POST /-/reload` may reload (`--web.enable-lifecycle`); when not, it answers
    /// 403 and [`Backend::reload`] is never called.
    fn lifecycle_enabled(&self) -> bool;
    /// Loads the configuration file again: `Ok` with a one-line summary, or every error.
    fn reload(&self) -> impl Future<Output = Result<String, ConfigErrors>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Serving.

/// What one connection may take: time limits on the client's side of the exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) tls_handshake_timeout: Duration,
    pub(crate) write_stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
        }
    }
}

/// Serves `backend` on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests [`DRAIN_TIMEOUT`] to finish. Each connection is served with the web
/// config current when it was accepted: a reload takes effect for new connections.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    web: watch::Receiver<WebConfig>,
    backend: Arc<B>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::new(MAX_CONNECTIONS);
    serve_with(
        listener,
        web,
        backend,
        Limits::default(),
        connections,
        shutdown,
    )
    .await
}

pub(crate) async fn serve_with<B: Backend>(
    listener: TcpListener,
    web: watch::Receiver<WebConfig>,
    backend: Arc<B>,
    limits: Limits,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: give clients a moment to let go.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = Arc::new(connections.admit());
        let watcher = graceful.watcher();
        let web = web.borrow().clone();
        let tls = web.tls.clone();
        let routes = Arc::new(Routes {
            backend: Arc::clone(&backend),
            auth: web.auth,
            headers: web.headers,
            rate_limit: web.rate_limit,
        });
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let stream = admitted.track(stream, limits.write_stall_timeout);
            let serve = async {
                match tls {
                    None => serve_connection(stream, routes, &admitted, limits, watcher).await,
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        match tokio::time::timeout(limits.tls_handshake_timeout, handshake).await {
                            Ok(Ok(stream)) => {
                                serve_connection(stream, routes, &admitted, limits, watcher).await
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                _ = admitted.evicted() => {}
                _ = serve => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight after {DRAIN_TIMEOUT:?}; closing them");
    }
}

async fn serve_connection<S, B>(
    stream: S,
    routes: Arc<Routes<B>>,
    admitted: &Arc<Admitted>,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let admitted = Arc::clone(admitted);
    let service = service_fn(move |request| {
        let routes = Arc::clone(&routes);
        let serving = admitted.serving();
        async move {
            let response = routes.respond(request).await;
            drop(serving);
            Ok::<_, Infallible>(response)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

struct Routes<B> {
    backend: Arc<B>,
    auth: Option<Arc<BasicAuth>>,
    /// `http_server_config.headers`, added to every response.
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    rate_limit: Option<Arc<RateLimit>>,
}

impl<B: Backend> Routes<B> {
    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        let mut response = self.answer(request).await;
        for (name, value) in self.headers.iter() {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        // The body is never read: no route takes input, and an unread body costs nothing.
        let (parts, _body) = request.into_parts();
        if self.rate_limit.as_ref().is_some_and(|limit| !limit.allow()) {
            return text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n");
        }
        if let Some(auth) = &self.auth {
            let header = parts.headers.get(header::AUTHORIZATION);
            if !auth.allows(header.map(HeaderValue::as_bytes)).await {
                let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE),
                );
                return response;
            }
        }
        self.route(&parts.method, parts.uri.path(), &parts.headers)
            .await
    }

    async fn route(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
        let read = method == Method::GET || method == Method::HEAD;
        match path {
            "/metrics" if read => {
                let gzip = accepts_gzip(headers);
                let backend = Arc::clone(&self.backend);
                let (body, mut out) = Body::streamed();
                // Encoding thousands of accounts (and compressing them) is CPU work: done off
                // the runtime, and handed to the connection a chunk at a time as the client
                // reads, so that the exposition is never held whole.
                // The writer fails only when the body is gone: the client left, or was cut off
                // for not reading.
                tokio::task::spawn_blocking(move || {
                    let pages = backend.pages();
                    let written = if gzip {
                        let mut encoder = GzEncoder::new(&mut out, Compression::fast());
                        pages
                            .write_metrics(&mut encoder)
                            .and_then(|()| encoder.finish().map(drop))
                    } else {
                        pages.write_metrics(&mut out)
                    };
                    if let Err(e) = written.and_then(|()| out.finish()) {
                        tracing::debug!(error = %e, "the metrics client went away before the end");
                    }
                });
                let mut response = Response::new(body);
                let h = response.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(METRICS_CONTENT_TYPE),
                );
                h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
                if gzip {
                    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                response
            }
            "/" if read => {
                // It lists every account: at 10,000 that is milliseconds of work, done off the
                // runtime that the probes run on.
                let backend = Arc::clone(&self.backend);
                match tokio::task::spawn_blocking(move || backend.pages().landing_page()).await {
                    Ok(page) => html(page),
                    Err(e) => {
                        tracing::error!(error = %e, "rendering the landing page failed");
                        text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "cannot render the page\n",
                        )
                    }
                }
            }
            "/-/healthy" if read => text(StatusCode::OK, "OK\n"),
            "/-/ready" if read => {
                if self.backend.is_ready() {
                    text(StatusCode::OK, "OK\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
                }
            }
            "/-/reload" if method == Method::POST && !self.backend.lifecycle_enabled() => text(
                StatusCode::FORBIDDEN,
                "Lifecycle API is not enabled: start the exporter with --web.enable-lifecycle \
                 to reload over HTTP, or send it SIGHUP.\n",
            ),
            "/-/reload" if method == Method::POST => match self.backend.reload().await {
                Ok(summary) => text(StatusCode::OK, format!("{summary}\n")),
                Err(errors) => {
                    let n = errors.len();
                    let noun = if n == 1 { "error" } else { "errors" };
                    let body = format!(
                        "config rejected ({n} {noun}); the previous config stays in force\n{errors}\n"
                    );
                    text(StatusCode::INTERNAL_SERVER_ERROR, body)
                }
            },
            "/-/reload" => not_allowed("POST"),
            "/metrics" | "/" | "/-/healthy" | "/-/ready" => not_allowed("GET, HEAD"),
            _ => match path.strip_prefix("/accounts/").map(percent_decode) {
                Some(Some(name)) if !name.is_empty() => {
                    if !read {
                        return not_allowed("GET, HEAD");
                    }
                    match self.backend.pages().account_page(&name) {
                        Some(page) => html(page),
                        None => text(StatusCode::NOT_FOUND, "no such account\n"),
                    }
                }
                _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
            },
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    respond(status, TEXT_CONTENT_TYPE, Bytes::from(body.into()))
}

fn html(body: String) -> Response<Body> {
    respond(StatusCode::OK, HTML_CONTENT_TYPE, Bytes::from(body))
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Whether `Accept-Encoding` allows gzip: listed (or `*`) with a non-zero quality, and not
/// refused by name.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut params = item.split(';');
            let coding = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(quality),
                "*" => any = Some(quality),
                _ => {}
            }
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// `%XX` escapes decoded; `None` for a malformed escape or a name that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
pub(crate) mod tests;
