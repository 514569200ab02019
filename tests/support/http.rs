//! A minimal HTTP/1.1 client for the tests (one request per connection) and a reader of the
//! Prometheus text format, so tests assert on what a scraper really receives.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long [`wait_for`] keeps scraping before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// `/metrics` at `addr`, which must answer 200.
pub async fn scrape(addr: SocketAddr) -> Samples {
    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    Samples::new(response.text())
}

/// Scrapes until `done` holds, or fails with the last scrape.
pub async fn wait_for(addr: SocketAddr, what: &str, done: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let samples = scrape(addr).await;
        if done(&samples) {
            return samples;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for {what}; last scrape:\n{}", samples.text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `headers` and reads the whole response (Connection: close).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let fut = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the exporter");
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if method == "POST" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        parse(&raw)
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("the exporter answered in time")
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[]).await
}

pub(super) fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// The samples of a Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub text: String,
}

impl Samples {
    pub fn new(text: String) -> Self {
        Samples { text }
    }

    /// The value of the series written exactly as `series` (name and labels, in the order the
    /// exporter writes them), e.g. `mailbox_auth_success{group="g",account="a"}`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.text.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?;
            let value = rest.strip_prefix(' ')?;
            value.split(' ').next()?.parse().ok()
        })
    }

    /// The value of `name` for the series carrying every one of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.text.lines().find_map(|line| {
            if line.starts_with('#') {
                return None;
            }
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = match series.split_once('{') {
                Some((n, r)) => (n, r),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if all { value.parse().ok() } else { None }
        })
    }

    /// How many series of `name` carry every one of `labels`.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                let series = line.rsplit_once(' ').map(|(s, _)| s).unwrap_or("");
                let series_name = series.split('{').next().unwrap_or("");
                series_name == name
                    && labels
                        .iter()
                        .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
            })
            .count()
    }
}
