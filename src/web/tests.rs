//! The web side over real sockets on `127.0.0.1:0`, with a fake backend.

use std::io::{self, Read as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use base64::Engine as _;

use super::*;
use crate::config::{Config, Format};

/// What a test waits for at most before calling the server stuck.
pub(crate) const STUCK: Duration = Duration::from_secs(60);

pub(crate) const METRIC_LINE: &str =
    "mailbox_auth_success{group=\"support\",account=\"support-inbox\"} 1\n";

#[derive(Default)]
pub(crate) struct Fake {
    pub(crate) ready: AtomicBool,
    pub(crate) reload_fails: AtomicBool,
    pub(crate) reloads: AtomicUsize,
    pub(crate) reload_delay: Option<Duration>,
    /// Metrics far larger than socket buffers, for clients that stop reading.
    pub(crate) huge_metrics: bool,
}

impl Pages for Fake {
    fn write_metrics(&self, out: &mut dyn io::Write) -> io::Result<()> {
        for _ in 0..if self.huge_metrics { 500_000 } else { 200 } {
            out.write_all(METRIC_LINE.as_bytes())?;
        }
        Ok(())
    }

    fn landing_page(&self) -> String {
        "<html>landing</html>".into()
    }

    fn account_page(&self, name: &str) -> Option<String> {
        ["support-inbox", "sales inbox"]
            .contains(&name)
            .then(|| format!("<html>account {name}</html>"))
    }
}

impl Backend for Fake {
    type Pages = Fake;

    fn pages(&self) -> &Fake {
        self
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn lifecycle_enabled(&self) -> bool {
        true
    }

    async fn reload(&self) -> Result<String, ConfigErrors> {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        if let Some(delay) = self.reload_delay {
            tokio::time::sleep(delay).await;
        }
        if self.reload_fails.load(Ordering::SeqCst) {
            Err(
                Config::from_str_with_format("timeout: 0s\nconcurrency: 0\n", Format::Yaml)
                    .unwrap_err(),
            )
        } else {
            Ok("config reloaded: 2 accounts".into())
        }
    }
}

pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

pub(crate) async fn serve_fake(backend: Arc<Fake>, web: WebConfig) -> Served {
    serve_limited(
        backend,
        web,
        Limits::default(),
        Connections::new(MAX_CONNECTIONS),
    )
    .await
}

pub(crate) async fn serve_limited(
    backend: Arc<Fake>,
    web: WebConfig,
    limits: Limits,
    connections: Arc<Connections>,
) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    // Reloads are the app's business; here the config stays as it is.
    let (_, web) = watch::channel(web);
    let task = tokio::spawn(serve_with(
        listener,
        web,
        backend,
        limits,
        connections,
        async {
            let _ = stopped.await;
        },
    ));
    Served { addr, stop, task }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on its own connection, as raw HTTP/1.1.
pub(crate) async fn request_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_reply(&raw)
}

pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    request_on(
        TcpStream::connect(addr).await.unwrap(),
        method,
        path,
        headers,
    )
    .await
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[]).await
}

pub(crate) fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// A chunked body's data; panics on a malformed or incomplete one.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = std::str::from_utf8(&raw[..end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n", "a chunk ends with CRLF");
        raw = &raw[size + 2..];
    }
}

fn gunzip(data: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[tokio::test]
async fn metrics_are_gzipped_when_the_client_accepts_it() {
    let served = serve_fake(Arc::new(Fake::default()), WebConfig::default()).await;
    let expected = METRIC_LINE.repeat(200);

    let plain = get(served.addr, "/metrics").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-type"), Some(METRICS_CONTENT_TYPE));
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.text(), expected);

    for accept in ["gzip", "deflate, gzip;q=0.5", "*", "br, x-gzip"] {
        let zipped = request(
            served.addr,
            "GET",
            "/metrics",
            &[("Accept-Encoding", accept)],
        )
        .await;
        assert_eq!(zipped.status, 200, "{accept}");
        assert_eq!(zipped.header("content-encoding"), Some("gzip"), "{accept}");
        assert_eq!(zipped.header("vary"), Some("Accept-Encoding"));
        assert!(
            zipped.body.len() < expected.len() / 4,
            "{accept}: not compressed"
        );
        assert_eq!(gunzip(&zipped.body), expected, "{accept}");
    }

    for accept in ["identity", "gzip;q=0", "*;q=0", "*, gzip;q=0", "deflate"] {
        let plain = request(
            served.addr,
            "GET",
            "/metrics",
            &[("Accept-Encoding", accept)],
        )
        .await;
        assert_eq!(plain.header("content-encoding"), None, "{accept}");
        assert_eq!(plain.text(), expected, "{accept}");
    }
}

#[test]
fn gzip_negotiation() {
    let accepts = |values: &[&str]| {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    };
    assert!(!accepts(&[]));
    assert!(accepts(&["gzip"]));
    assert!(accepts(&["GZIP; q=0.001"]));
    assert!(accepts(&["deflate", "gzip"]));
    assert!(!accepts(&["gzip;q=0.0"]));
    assert!(!accepts(&["compress, br"]));
}

#[tokio::test]
async fn pages_and_unknown_paths() {
    let served = serve_fake(Arc::new(Fake::default()), WebConfig::default()).await;
    let landing = get(served.addr, "/").await;
    assert_eq!(landing.status, 200);
    assert_eq!(
        landing.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(landing.text(), "<html>landing</html>");

    let account = get(served.addr, "/accounts/support-inbox").await;
    assert_eq!(
        (account.status, account.text().as_str()),
        (200, "<html>account support-inbox</html>")
    );
    let escaped = get(served.addr, "/accounts/sales%20inbox?refresh=1").await;
    assert_eq!(
        (escaped.status, escaped.text().as_str()),
        (200, "<html>account sales inbox</html>")
    );

    for path in [
        "/accounts/nobody",
        "/accounts/",
        "/accounts/%zz",
        "/nope",
        "/metrics/",
        "/-/",
    ] {
        assert_eq!(get(served.addr, path).await.status, 404, "{path}");
    }

    let healthy = get(served.addr, "/-/healthy").await;
    assert_eq!((healthy.status, healthy.text().as_str()), (200, "OK\n"));
    let head = request(served.addr, "HEAD", "/-/healthy", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    for (method, path) in [
        ("POST", "/metrics"),
        ("DELETE", "/"),
        ("PUT", "/-/healthy"),
        ("POST", "/accounts/support-inbox"),
    ] {
        let reply = request(served.addr, method, path, &[("Content-Length", "0")]).await;
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
}

#[tokio::test]
async fn ready_only_once_the_backend_says_so() {
    let backend = Arc::new(Fake::default());
    let served = serve_fake(Arc::clone(&backend), WebConfig::default()).await;
    assert_eq!(get(served.addr, "/-/ready").await.status, 503);
    assert_eq!(get(served.addr, "/-/healthy").await.status, 200);
    backend.ready.store(true, Ordering::SeqCst);
    let ready = get(served.addr, "/-/ready").await;
    assert_eq!((ready.status, ready.text().as_str()), (200, "OK\n"));
}

#[tokio::test]
async fn reload_reports_success_or_every_error() {
    let backend = Arc::new(Fake::default());
    let served = serve_fake(Arc::clone(&backend), WebConfig::default()).await;
    let ok = request(served.addr, "POST", "/-/reload", &[("Content-Length", "0")]).await;
    assert_eq!(
        (ok.status, ok.text().as_str()),
        (200, "config reloaded: 2 accounts\n")
    );

    backend.reload_fails.store(true, Ordering::SeqCst);
    // A body is accepted and ignored.
    let failed = request(served.addr, "POST", "/-/reload", &[("Content-Length", "5")]).await;
    assert_eq!(failed.status, 500);
    assert_eq!(
        failed.text(),
        "config rejected (2 errors); the previous config stays in force\n\
         timeout: must be greater than zero\nconcurrency: must be at least 1\n"
    );

    for method in ["GET", "PUT"] {
        let reply = request(served.addr, method, "/-/reload", &[("Content-Length", "0")]).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("POST"));
    }
    assert_eq!(backend.reloads.load(Ordering::SeqCst), 2);
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_auth_protects_every_endpoint() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = WebConfig::parse(
        &format!("basic_auth_users:\n  Alice: '{hash}'\n"),
        Path::new(""),
    )
    .unwrap();
    assert!(format!("{web:?}").contains("Alice"));
    assert!(!format!("{web:?}").contains(&hash));
    let backend = Arc::new(Fake::default());
    let served = serve_fake(Arc::clone(&backend), web).await;

    for path in [
        "/metrics",
        "/",
        "/-/healthy",
        "/-/ready",
        "/accounts/support-inbox",
        "/nope",
    ] {
        let reply = get(served.addr, path).await;
        assert_eq!(reply.status, 401, "{path}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(WWW_AUTHENTICATE),
            "{path}"
        );
    }
    for authorization in [
        basic("Alice", "wrong"),
        basic("alice", "s3cret"),
        basic("Bob", "s3cret"),
        "Bearer s3cret".to_string(),
        "Basic !!!".to_string(),
    ] {
        let reply = request(
            served.addr,
            "GET",
            "/metrics",
            &[("Authorization", &authorization)],
        )
        .await;
        assert_eq!(reply.status, 401, "{authorization}");
    }
    let reload = request(served.addr, "POST", "/-/reload", &[("Content-Length", "0")]).await;
    assert_eq!(reload.status, 401);
    assert_eq!(backend.reloads.load(Ordering::SeqCst), 0);

    let good = basic("Alice", "s3cret");
    let reply = request(served.addr, "GET", "/metrics", &[("Authorization", &good)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), METRIC_LINE.repeat(200));
    let reply = request(
        served.addr,
        "GET",
        "/-/healthy",
        &[("Authorization", &good)],
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let cert = crate::sim::sim_certificate();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(
        &path,
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
    )
    .unwrap();
    let web = WebConfig::load(&path).unwrap();
    assert!(web.is_tls());
    let served = serve_fake(Arc::new(Fake::default()), web).await;

    let tcp = TcpStream::connect(served.addr).await.unwrap();
    let tls = cert
        .connector()
        .unwrap()
        .connect("localhost", tcp)
        .await
        .unwrap();
    let reply = request_on(tls, "GET", "/-/healthy", &[]).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "OK\n"));

    // Plain HTTP to the HTTPS port gets no answer, and the server carries on.
    let plain = TcpStream::connect(served.addr).await.unwrap();
    let mut plain = plain;
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(!String::from_utf8_lossy(&buf).contains("landing"));
}

#[test]
fn web_config_errors_are_explained() {
    let here = Path::new("");
    assert!(WebConfig::parse("", here).unwrap().auth.is_none());
    assert!(
        WebConfig::parse("basic_auth_users: {}\n", here)
            .unwrap()
            .auth
            .is_none()
    );
    let e = WebConfig::parse("basic_auth_user:\n  a: b\n", here).unwrap_err();
    assert!(e.contains("basic_auth_user"), "{e}");
    let e = WebConfig::parse("basic_auth_users:\n  alice: plaintext\n", here).unwrap_err();
    assert_eq!(e, "basic_auth_users: \"alice\": not a bcrypt hash");
    assert!(!e.contains("plaintext"));
    let e = WebConfig::parse("tls_server_config:\n  cert_file: c.pem\n", here).unwrap_err();
    assert_eq!(e, "tls_server_config needs both cert_file and key_file");
    let e = WebConfig::parse("tls_server_config:\n  cert_flie: c.pem\n", here).unwrap_err();
    assert!(e.contains("unknown field `cert_flie`"), "{e}");
    let e = WebConfig::parse(
        "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: k.pem\n",
        here,
    )
    .unwrap_err();
    assert!(e.contains("cannot read"), "{e}");
    let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
    assert!(e.to_string().contains("cannot read web config"), "{e}");
}

#[test]
fn listen_addresses() {
    let parse = |s: &str| s.parse::<ListenAddress>();
    assert_eq!(
        parse(":9110").unwrap(),
        ListenAddress {
            host: None,
            port: 9110
        }
    );
    assert_eq!(
        parse("127.0.0.1:0").unwrap(),
        ListenAddress {
            host: Some("127.0.0.1".into()),
            port: 0
        }
    );
    assert_eq!(
        parse("[::1]:9110").unwrap(),
        ListenAddress {
            host: Some("::1".into()),
            port: 9110
        }
    );
    assert_eq!(parse("localhost:80").unwrap().to_string(), "localhost:80");
    assert_eq!(parse("[::1]:9110").unwrap().to_string(), "[::1]:9110");
    assert_eq!(parse(":9110").unwrap().to_string(), ":9110");
    for bad in [
        "bogus",
        "9110",
        ":http",
        ":99999",
        "::1:9110",
        "[::1:9110",
        "a b:1",
        "[nope]:1",
    ] {
        let e = parse(bad).unwrap_err();
        assert!(e.contains("expected [host]:port"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn binds_every_interface_or_one_host() {
    let any = bind(&":0".parse().unwrap()).await.unwrap();
    assert!(any.local_addr().unwrap().ip().is_unspecified());
    let local = bind(&"localhost:0".parse().unwrap()).await.unwrap();
    assert!(local.local_addr().unwrap().ip().is_loopback());
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let backend = Arc::new(Fake {
        reload_delay: Some(Duration::from_millis(300)),
        ..Fake::default()
    });
    let served = serve_fake(Arc::clone(&backend), WebConfig::default()).await;
    let addr = served.addr;
    let in_flight = tokio::spawn(async move {
        request(addr, "POST", "/-/reload", &[("Content-Length", "0")]).await
    });
    while backend.reloads.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    served.stop.send(()).unwrap();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    tokio::time::timeout(Duration::from_secs(5), served.task)
        .await
        .expect("the server stops once drained")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn extra_headers_and_the_rate_limit_of_the_web_config() {
    let web = WebConfig::parse(
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    \
         Content-Security-Policy: \"default-src 'self'\"\n    X-XSS-Protection: ''\n\
         rate_limit:\n  interval: 1h\n  burst: 2\n",
        Path::new(""),
    )
    .unwrap();
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    for path in ["/metrics", "/nope"] {
        let reply = get(served.addr, path).await;
        assert_ne!(reply.status, 429, "{path}");
        assert_eq!(reply.header("x-frame-options"), Some("deny"));
        assert_eq!(
            reply.header("content-security-policy"),
            Some("default-src 'self'")
        );
        assert_eq!(reply.header("x-xss-protection"), None);
    }
    // Two tokens, one more every hour.
    let limited = get(served.addr, "/metrics").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("x-frame-options"), Some("deny"));

    let here = Path::new("");
    let e = WebConfig::parse("http_server_config:\n  headers:\n    Server: x\n", here).unwrap_err();
    assert!(e.contains("header \"Server\" cannot be set"), "{e}");
    let e = WebConfig::parse(
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        here,
    )
    .unwrap_err();
    assert!(
        e.contains("X-Frame-Options: expected one of deny, sameorigin"),
        "{e}"
    );
    let e = WebConfig::parse("rate_limit:\n  interval: soon\n", here).unwrap_err();
    assert!(e.contains("rate_limit: interval \"soon\""), "{e}");
    let e = WebConfig::parse("http_server_config:\n  http3: true\n", here).unwrap_err();
    assert!(e.contains("unknown field `http3`"), "{e}");
    assert!(
        WebConfig::parse("rate_limit:\n  interval: 0s\n", here)
            .unwrap()
            .rate_limit
            .is_none()
    );
}

#[test]
fn yaml_aliases_and_long_values_are_not_expanded_or_echoed() {
    let here = Path::new("");
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n";
    let e = WebConfig::parse(bomb, here).unwrap_err();
    assert!(
        e.contains("line 2: YAML aliases (*name) are not allowed"),
        "{e}"
    );
    let secret = "$2b$10$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQ";
    let e = WebConfig::parse(&format!("basic_auth_users: '{secret}'\n"), here).unwrap_err();
    assert!(e.contains("invalid type"), "{e}");
    assert!(!e.contains(secret), "{e}");
}

/// The web config and its files are read like the main config: no alias bomb, no FIFO.
#[test]
fn web_config_files_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for (name, prev) in ["b", "c", "d", "e", "f", "g"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f"])
    {
        bomb.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 10].join(",")
        ));
    }
    let e = WebConfig::parse(&bomb, dir.path()).unwrap_err();
    assert!(e.contains("YAML aliases (*name) are not allowed"), "{e}");

    let pipe = dir.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap()
            .success()
    );
    let e = WebConfig::load(&pipe).unwrap_err().to_string();
    assert!(e.ends_with("not a regular file (a FIFO)"), "{e}");
    let e = WebConfig::parse(
        "tls_server_config:\n  cert_file: pipe\n  key_file: pipe\n",
        dir.path(),
    )
    .unwrap_err();
    assert!(e.ends_with("not a regular file (a FIFO)"), "{e}");
}
