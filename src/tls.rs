//! TLS for the prober: a cache of connectors built once per distinct setting, the handshake,
//! and the facts of the server certificate an operator wants (its expiry).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio_native_tls::{TlsConnector, TlsStream};

use crate::files;

/// Most bytes read from a CA file; a certificate bundle is far smaller.
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("CA file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

type Key = (bool, Option<PathBuf>);

/// TLS connectors, built once per distinct setting (verification, CA file) and shared by the
/// probes that use this cache: building one loads the system trust store and reads the CA
/// file, too slow to do per probe. Clones share the cache. Whoever runs probes owns one, so
/// no two owners (two exporters, two tests) ever see each other's connectors.
#[derive(Clone, Default)]
pub struct Connectors(Arc<Mutex<Cache>>);

#[derive(Default)]
struct Cache {
    built: HashMap<Key, TlsConnector>,
    /// Counts [`Connectors::forget`] calls: a connector whose build began before the last one
    /// read a CA file that may since have changed, and is not kept.
    forgotten: u64,
}

impl Connectors {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connector for these settings, built on first use and kept until [`Self::forget`].
    pub fn get(&self, verify: bool, ca_file: Option<&Path>) -> Result<TlsConnector, TlsError> {
        let key = (verify, ca_file.map(Path::to_path_buf));
        let forgotten = {
            let cache = self.lock();
            if let Some(found) = cache.built.get(&key) {
                return Ok(found.clone());
            }
            cache.forgotten
        };
        // Built without the lock held: a slow CA file must not hold up other settings.
        let built = build(verify, ca_file)?;
        let mut cache = self.lock();
        if cache.forgotten == forgotten {
            cache.built.insert(key, built.clone());
        }
        Ok(built)
    }

    /// Drops every connector, so that CA files are read again on next use: the prober calls
    /// it when a new configuration takes effect, so a renewed CA file is used without a
    /// restart. Probes in flight keep the connector they hold.
    pub fn forget(&self) {
        let mut cache = self.lock();
        cache.built.clear();
        cache.forgotten += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Connectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connectors")
            .field("settings", &self.lock().built.len())
            .finish()
    }
}

fn build(verify: bool, ca_file: Option<&Path>) -> Result<TlsConnector, TlsError> {
    let mut builder = native_tls::TlsConnector::builder();
    if !verify {
        builder
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true);
    }
    if let Some(path) = ca_file {
        for cert in load_ca_file(path)? {
            builder.add_root_certificate(cert);
        }
    }
    let connector = builder
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(TlsConnector::from(connector))
}

/// Reads every PEM certificate of a CA file; an empty or non-PEM file, or one holding a
/// certificate that does not parse, is an error.
pub fn load_ca_file(path: &Path) -> Result<Vec<native_tls::Certificate>, TlsError> {
    load_ca_file_with(&mut files::Reader::new(), path)
}

/// [`load_ca_file`] with the reader of a whole load. Configuration validation uses it, so a
/// file accepted there is one the prober can use.
pub fn load_ca_file_with(
    reader: &mut files::Reader,
    path: &Path,
) -> Result<Vec<native_tls::Certificate>, TlsError> {
    let fail = |detail: String| TlsError::CaFile {
        path: path.to_path_buf(),
        detail,
    };
    let pem = reader
        .read(path, MAX_CA_FILE)
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    let text = String::from_utf8_lossy(&pem);
    let mut certs = Vec::new();
    let mut rest = text.as_ref();
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(fail("holds an unterminated PEM certificate".into()));
        };
        let block = &rest[start..start + len + END.len()];
        let cert = native_tls::Certificate::from_pem(block.as_bytes())
            .map_err(|e| fail(format!("holds a certificate that does not parse: {e}")))?;
        certs.push(cert);
        rest = &rest[start + len + END.len()..];
    }
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Bytes read from the socket at once under TLS: a handshake flight or a few records.
const TLS_READ_BUFFER: usize = 8 * 1024;

/// A stream under TLS, read through a buffer.
pub type Buffered<S> = BufReader<S>;

/// Runs the client handshake, verifying against `host` (a name or an IP address).
///
/// OpenSSL reads each record in two calls, its 5-byte header and then its body; straight on
/// the socket that is two system calls per record (28 `recvfrom` per POP3S login against
/// Dovecot). The buffer underneath serves them from one read of whatever has arrived. It
/// holds only bytes of the TLS session, so nothing read before the handshake can end up in it.
pub async fn handshake<S>(
    connector: &TlsConnector,
    host: &str,
    stream: S,
) -> Result<TlsStream<Buffered<S>>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    connector
        .connect(host, BufReader::with_capacity(TLS_READ_BUFFER, stream))
        .await
        .map_err(|e| TlsError::Handshake(e.to_string()))
}

/// The leaf certificate's notAfter, in seconds since the epoch.
pub fn cert_expiry<S>(stream: &TlsStream<S>) -> Option<i64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cert = stream.get_ref().peer_certificate().ok()??;
    let der = cert.to_der().ok()?;
    not_after(&der)
}

/// notAfter of a DER certificate, seconds since the epoch.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        // 2031-05-17T00:00:00Z
        assert_eq!(not_after(cert.der()), Some(1_936_742_400));
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = load_ca_file(&path).err().unwrap().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let missing = load_ca_file(&dir.path().join("missing.pem"))
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("missing.pem"), "{missing}");
    }

    fn ca_pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem()
    }

    #[test]
    fn forgotten_connectors_read_their_ca_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("renewed.pem");
        std::fs::write(&path, ca_pem("ca")).unwrap();
        let connectors = Connectors::new();
        assert!(connectors.get(true, Some(&path)).is_ok());
        std::fs::write(&path, "not a certificate any more").unwrap();
        assert!(
            connectors.get(true, Some(&path)).is_ok(),
            "cached until forgotten"
        );
        connectors.clone().forget();
        assert!(
            connectors.get(true, Some(&path)).is_err(),
            "read again after forgetting, by any clone"
        );
    }

    #[test]
    fn caches_are_their_owners_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca_pem("ca")).unwrap();
        let (mine, theirs) = (Connectors::new(), Connectors::new());
        assert!(mine.get(true, Some(&path)).is_ok());
        std::fs::write(&path, "not a certificate any more").unwrap();
        assert!(
            theirs.get(true, Some(&path)).is_err(),
            "another cache builds its own"
        );
        theirs.forget();
        assert!(
            mine.get(true, Some(&path)).is_ok(),
            "forgetting another cache leaves this one alone"
        );
    }

    #[test]
    fn loads_a_pem_bundle() {
        let key = rcgen::KeyPair::generate().unwrap();
        let a = rcgen::CertificateParams::new(vec!["a".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let b = rcgen::CertificateParams::new(vec!["b".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, format!("{}\n{}", a.pem(), b.pem())).unwrap();
        assert_eq!(load_ca_file(&path).unwrap().len(), 2);
        assert!(Connectors::new().get(true, Some(&path)).is_ok());
    }
}
