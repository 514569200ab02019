//! The simulator's TLS identity: one self-signed certificate per process, valid for
//! `localhost` and `127.0.0.1`, and the acceptor and connector built from it.

use std::io;
use std::sync::OnceLock;

use tokio_native_tls::{TlsAcceptor, TlsConnector};

/// Names the certificate is valid for: what tests and the demo connect to.
const SUBJECT_ALT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A self-signed certificate and its PKCS#8 private key, both PEM.
#[derive(Clone)]
pub struct SimCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for SimCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is test material, but keys do not belong in logs either way.
        f.debug_struct("SimCertificate")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"***")
            .finish()
    }
}

impl SimCertificate {
    /// A client-side connector that trusts this certificate (and nothing else is needed to
    /// reach a simulator over TLS as `localhost` or `127.0.0.1`).
    pub fn connector(&self) -> io::Result<TlsConnector> {
        let root =
            native_tls::Certificate::from_pem(self.cert_pem.as_bytes()).map_err(tls_error)?;
        let connector = native_tls::TlsConnector::builder()
            .add_root_certificate(root)
            .build()
            .map_err(tls_error)?;
        Ok(TlsConnector::from(connector))
    }

    fn build_acceptor(&self) -> io::Result<TlsAcceptor> {
        let identity =
            native_tls::Identity::from_pkcs8(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
                .map_err(tls_error)?;
        let acceptor = native_tls::TlsAcceptor::new(identity).map_err(tls_error)?;
        Ok(TlsAcceptor::from(acceptor))
    }
}

/// The process-wide simulator certificate, generated on first use.
pub fn sim_certificate() -> &'static SimCertificate {
    static CERT: OnceLock<SimCertificate> = OnceLock::new();
    CERT.get_or_init(|| {
        let names: Vec<String> = SUBJECT_ALT_NAMES.iter().map(|s| s.to_string()).collect();
        // Generation only fails on an internal rcgen/ring error; there is no input to blame.
        let certified = rcgen::generate_simple_self_signed(names)
            .expect("generating a self-signed certificate");
        SimCertificate {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        }
    })
}

/// The server-side acceptor for [`sim_certificate`], built once: every TLS simulator shares it.
pub(super) fn acceptor() -> io::Result<TlsAcceptor> {
    static ACCEPTOR: OnceLock<Result<TlsAcceptor, String>> = OnceLock::new();
    ACCEPTOR
        .get_or_init(|| {
            sim_certificate()
                .build_acceptor()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(io::Error::other)
}

fn tls_error(e: native_tls::Error) -> io::Error {
    io::Error::other(e)
}
