//! The `--web.config.file`, in the Prometheus exporter toolkit's format: `tls_server_config`,
//! `http_server_config`, `basic_auth_users` and `rate_limit`. Unknown keys are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::auth::BasicAuth;
use super::tls::{self, TlsSettings};
use crate::files::Reader;

/// The web config file and the certificates it names are small; a larger file is a mistake.
const MAX_WEB_FILE: u64 = 1024 * 1024;

/// Response headers an operator may add, and the values allowed where there is a fixed set:
/// the exporter toolkit's list, so one file works for every exporter.
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// The web config: basic auth users, TLS, extra headers, a rate limit. Empty means open HTTP.
#[derive(Default, Clone)]
pub struct WebConfig {
    pub(super) auth: Option<Arc<BasicAuth>>,
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    pub(super) rate_limit: Option<Arc<RateLimit>>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // User names only: hashes are secrets too (they can be attacked offline).
        f.debug_struct("WebConfig")
            .field(
                "basic_auth_users",
                &self
                    .auth
                    .as_ref()
                    .map(|a| a.user_names().collect::<Vec<_>>()),
            )
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers.len())
            .field("rate_limit", &self.rate_limit.is_some())
            .finish()
    }
}

/// Why a web config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read web config {path:?}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("web config {path:?}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; this server speaks HTTP/1.1.
    #[serde(rename = "http2")]
    _http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    interval: Option<String>,
    burst: Option<u32>,
}

const SUPPORTED: &str = "supported: tls_server_config (cert_file, key_file, cert, key, \
                         client_ca_file, client_ca, client_auth_type, client_allowed_sans, \
                         min_version, max_version, cipher_suites, curve_preferences, \
                         prefer_server_cipher_suites), http_server_config (http2, headers), \
                         basic_auth_users, rate_limit (interval, burst)";

impl WebConfig {
    /// Takes over `previous`'s basic auth when its users and hashes are unchanged, so that a
    /// reload does not forget the successful checks: otherwise a scraper's first request
    /// after it would queue behind every bcrypt check in progress, a flood of wrong
    /// passwords included.
    pub fn keep_checks_from(&mut self, previous: &WebConfig) {
        if let (Some(new), Some(old)) = (&self.auth, &previous.auth)
            && new.same_users(old)
        {
            self.auth = Some(Arc::clone(old));
        }
    }

    /// Reads `path`; relative file names in it are resolved against its directory.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let invalid = |message| WebConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        // One reading thread for the config and the files it names.
        let mut files = Reader::new();
        let text = files
            .read(path, MAX_WEB_FILE)
            .map_err(|source| WebConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let text = String::from_utf8(text).map_err(|_| invalid("not UTF-8 text".into()))?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        WebConfig::parse_with(&text, base_dir, &mut files).map_err(invalid)
    }

    /// Parses the YAML `text`, reading the files it names relative to `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<WebConfig, String> {
        WebConfig::parse_with(text, base_dir, &mut Reader::new())
    }

    fn parse_with(text: &str, base_dir: &Path, files: &mut Reader) -> Result<WebConfig, String> {
        refuse_aliases(text)?;
        let tree: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| format!("cannot parse: {e}"))?;
        let raw: RawWebConfig = serde_json::from_value(tree).map_err(|e| {
            let message = shorten_quoted(&e.to_string());
            if message.contains("unknown field") {
                format!("{message} ({SUPPORTED})")
            } else {
                message
            }
        })?;
        let auth = match raw.basic_auth_users {
            Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users)?)),
            _ => None,
        };
        let tls = match raw.tls_server_config {
            Some(tls) if tls.is_set() => Some(tls_acceptor(tls, base_dir, files)?),
            _ => None,
        };
        let headers = match raw.http_server_config.and_then(|h| h.headers) {
            Some(headers) => extra_headers(headers)?,
            None => Vec::new(),
        };
        let rate_limit = match raw.rate_limit {
            Some(raw) => RateLimit::new(raw)?.map(Arc::new),
            None => None,
        };
        Ok(WebConfig {
            auth,
            tls,
            headers: Arc::new(headers),
            rate_limit,
        })
    }

    /// True when the web side serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl RawTls {
    /// As in the exporter toolkit, an empty `tls_server_config` (or one of empty strings)
    /// leaves TLS off.
    fn is_set(&self) -> bool {
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let file = |p: &Option<PathBuf>| p.as_deref().is_some_and(|p| !p.as_os_str().is_empty());
        set(&self.cert)
            || set(&self.key)
            || set(&self.client_ca)
            || set(&self.client_auth_type)
            || file(&self.cert_file)
            || file(&self.key_file)
            || file(&self.client_ca_file)
    }
}

/// A web config has no use for YAML aliases, and a few of them can expand a small file into
/// gigabytes: any alias is refused before the document is built.
fn refuse_aliases(text: &str) -> Result<(), String> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::Alias(_), mark)) => {
                return Err(format!(
                    "line {}: YAML aliases (*name) are not allowed in the web config",
                    mark.line()
                ));
            }
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("cannot parse: {e}")),
        }
    }
}

/// A value quoted in a parser's message cut to a short prefix: it may be a secret (a key or
/// hash under the wrong key) or huge.
fn shorten_quoted(message: &str) -> String {
    const KEEP: usize = 8;
    let mut out = String::with_capacity(message.len().min(512));
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('"');
        if i % 2 == 0 && part.chars().count() > KEEP {
            out.extend(part.chars().take(KEEP));
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// `inline` or the contents of `file` (relative to `base_dir`), not both.
fn pem_source(
    field: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    base_dir: &Path,
    files: &mut Reader,
) -> Result<Option<Vec<u8>>, String> {
    let inline = inline.filter(|s| !s.is_empty());
    let file = file.filter(|p| !p.as_os_str().is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("set {field} or {field}_file, not both")),
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(file)) => {
            let path = base_dir.join(&file);
            files
                .read(&path, MAX_WEB_FILE)
                .map(Some)
                .map_err(|e| format!("{field}_file: cannot read {path:?}: {e}"))
        }
        (None, None) => Ok(None),
    }
}

fn tls_acceptor(raw: RawTls, base_dir: &Path, files: &mut Reader) -> Result<TlsAcceptor, String> {
    let given = |inline: &Option<String>, file: &Option<PathBuf>| {
        inline.as_deref().is_some_and(|s| !s.is_empty())
            || file.as_deref().is_some_and(|p| !p.as_os_str().is_empty())
    };
    if !given(&raw.cert, &raw.cert_file) || !given(&raw.key, &raw.key_file) {
        return Err("tls_server_config needs both cert_file and key_file".into());
    }
    let cert = pem_source("cert", raw.cert, raw.cert_file, base_dir, files)?.unwrap_or_default();
    let key = pem_source("key", raw.key, raw.key_file, base_dir, files)?.unwrap_or_default();
    let client_ca = pem_source(
        "client_ca",
        raw.client_ca,
        raw.client_ca_file,
        base_dir,
        files,
    )?;
    let settings = TlsSettings {
        cert,
        key,
        client_ca,
        client_auth_type: raw.client_auth_type,
        client_allowed_sans: raw.client_allowed_sans,
        cipher_suites: raw.cipher_suites,
        curve_preferences: raw.curve_preferences,
        min_version: raw.min_version,
        max_version: raw.max_version,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites,
    };
    let config = tls::server_config(settings).map_err(|e| format!("tls_server_config: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn extra_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let Some((canonical, allowed)) = EXTRA_HEADERS
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(&name))
        else {
            return Err(format!(
                "http_server_config: header {name:?} cannot be set (allowed: {})",
                EXTRA_HEADERS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if value.is_empty() {
            continue;
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config: {canonical}: expected one of {}",
                allowed.join(", ")
            ));
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("http_server_config: {canonical}: not a valid header value"))?;
        out.push((HeaderName::from_static(canonical_lower(canonical)), value));
    }
    Ok(out)
}

fn canonical_lower(name: &str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

/// `rate_limit`: a token bucket over every request, as the exporter toolkit's: one token per
/// `interval`, at most `burst` saved; a request without a token gets 429.
pub(crate) struct RateLimit {
    interval: Duration,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    fn new(raw: RawRateLimit) -> Result<Option<RateLimit>, String> {
        let interval = match raw.interval.as_deref() {
            None | Some("") | Some("0") => return Ok(None),
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| format!("rate_limit: interval {text:?}: {e}"))?,
        };
        if interval.is_zero() {
            return Ok(None);
        }
        let burst = f64::from(raw.burst.unwrap_or(0));
        Ok(Some(RateLimit {
            interval,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }))
    }

    /// Takes a token if there is one.
    pub(crate) fn allow(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        let earned = now.duration_since(*last).as_secs_f64() / self.interval.as_secs_f64();
        *tokens = (*tokens + earned).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
