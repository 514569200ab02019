//! HTTPS on the web side: real handshakes against the served port with keys and certificates
//! made by the `openssl` command, as an operator would make them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;
use crate::web::WebConfig;
use crate::web::tests::{Fake, parse_reply, serve_fake};

/// A test CA and the files an operator would point the web config at.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=test-ca",
            "-days",
            "2",
        ]);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("the openssl command is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `name.key` in the given format.
    fn key(&self, name: &str, format: KeyFormat) {
        let key = format!("{name}.key");
        match format {
            KeyFormat::Pkcs1Rsa => self.openssl(&["genrsa", "-traditional", "-out", &key, "2048"]),
            KeyFormat::Sec1Ec => self.openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &key,
            ]),
            KeyFormat::Pkcs8Ec => self.openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &key,
            ]),
        }
        assert!(
            self.read(&key).starts_with(format.pem_begin()),
            "{format:?}"
        );
    }

    /// `name.pem`, for `name.key`, signed by the test CA (or self-signed) for `san`.
    fn certificate(&self, name: &str, san: &str, usage: &str, by_ca: bool) {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.path(&ext),
            format!("subjectAltName={san}\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        self.openssl(&[
            "req", "-new", "-key", &key, "-subj", "/CN=test", "-out", &csr,
        ]);
        let mut args = vec!["x509", "-req", "-in", &csr, "-out", &pem, "-days", "2"];
        args.extend(["-extfile", &ext]);
        if by_ca {
            args.extend(["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]);
        } else {
            args.extend(["-key", &key]);
        }
        self.openssl(&args);
    }

    /// A server certificate for `localhost` with a key in `format`.
    fn server(&self, format: KeyFormat) {
        self.key("server", format);
        self.certificate("server", "DNS:localhost", "serverAuth", true);
    }

    /// A client certificate with subject alternative name `san`.
    fn client(&self, name: &str, san: &str, by_ca: bool) {
        self.key(name, KeyFormat::Pkcs8Ec);
        self.certificate(name, san, "clientAuth", by_ca);
    }

    /// The web config file with `tls_server_config` lines (indented by the caller).
    fn web_config(&self, tls_lines: &str) -> Result<WebConfig, String> {
        let path = self.path("web.yml");
        std::fs::write(&path, format!("tls_server_config:\n{tls_lines}")).unwrap();
        WebConfig::load(&path).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
enum KeyFormat {
    Pkcs1Rsa,
    Sec1Ec,
    Pkcs8Ec,
}

impl KeyFormat {
    fn pem_begin(self) -> &'static str {
        match self {
            KeyFormat::Pkcs1Rsa => "-----BEGIN RSA PRIVATE KEY-----",
            KeyFormat::Sec1Ec => "-----BEGIN EC PRIVATE KEY-----",
            KeyFormat::Pkcs8Ec => "-----BEGIN PRIVATE KEY-----",
        }
    }
}

const SERVER_FILES: &str = "  cert_file: server.pem\n  key_file: server.key\n";

/// A client trusting the test CA, with `versions`, optionally only `suites`, and optionally
/// presenting the certificate `identity` (`name.pem`, `name.key`).
fn client(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<Vec<SupportedCipherSuite>>,
    identity: Option<&str>,
) -> TlsConnector {
    let mut provider = ring::default_provider();
    if let Some(suites) = suites {
        provider.cipher_suites = suites;
    }
    let mut roots = RootCertStore::empty();
    for ca in certificates(pki.read("ca.pem").as_bytes()).unwrap() {
        roots.add(ca).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(name) => {
            let chain = certificates(pki.read(&format!("{name}.pem")).as_bytes()).unwrap();
            let key = private_key(pki.read(&format!("{name}.key")).as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

fn default_client(pki: &Pki) -> TlsConnector {
    client(pki, rustls::ALL_VERSIONS, None, None)
}

/// What a client gets: the status of `GET /-/healthy` and the TLS version, or why not.
async fn fetch(
    addr: std::net::SocketAddr,
    connector: &TlsConnector,
) -> Result<(u16, rustls::ProtocolVersion), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let version = tls.get_ref().1.protocol_version().unwrap();
    tls.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    // A refused client certificate under TLS 1.3 shows here: the server's alert.
    tls.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if raw.is_empty() {
        return Err("closed without a reply".into());
    }
    Ok((parse_reply(&raw).status, version))
}

#[tokio::test]
async fn pkcs1_sec1_and_pkcs8_keys_serve_https() {
    for format in [KeyFormat::Pkcs1Rsa, KeyFormat::Sec1Ec, KeyFormat::Pkcs8Ec] {
        let pki = Pki::new();
        pki.server(format);
        let web = pki.web_config(SERVER_FILES).unwrap();
        assert!(web.is_tls());
        let served = serve_fake(Arc::new(Fake::default()), web).await;
        let (status, _) = fetch(served.addr, &default_client(&pki)).await.unwrap();
        assert_eq!(status, 200, "{format:?}");
    }
}

#[tokio::test]
async fn min_and_max_version_are_enforced() {
    let pki = Pki::new();
    pki.server(KeyFormat::Sec1Ec);
    let tls12_only = client(&pki, &[&rustls::version::TLS12], None, None);
    let tls13_only = client(&pki, &[&rustls::version::TLS13], None, None);

    let web = pki
        .web_config(&format!("{SERVER_FILES}  min_version: TLS13\n"))
        .unwrap();
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    assert!(fetch(served.addr, &tls12_only).await.is_err());
    let (status, version) = fetch(served.addr, &tls13_only).await.unwrap();
    assert_eq!((status, version), (200, rustls::ProtocolVersion::TLSv1_3));

    let web = pki
        .web_config(&format!("{SERVER_FILES}  max_version: TLS12\n"))
        .unwrap();
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    assert!(fetch(served.addr, &tls13_only).await.is_err());
    let (status, version) = fetch(served.addr, &default_client(&pki)).await.unwrap();
    assert_eq!((status, version), (200, rustls::ProtocolVersion::TLSv1_2));

    // The defaults are TLS 1.2 to 1.3, as in the exporter toolkit.
    let web = pki.web_config(SERVER_FILES).unwrap();
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    assert_eq!(fetch(served.addr, &tls12_only).await.unwrap().0, 200);
    assert_eq!(fetch(served.addr, &tls13_only).await.unwrap().0, 200);
}

#[tokio::test]
async fn cipher_suites_limit_tls12_by_their_go_names() {
    use rustls::crypto::ring::cipher_suite as cs;
    let pki = Pki::new();
    pki.server(KeyFormat::Sec1Ec);
    let web = pki
        .web_config(&format!(
            "{SERVER_FILES}  max_version: TLS12\n  cipher_suites:\n    \
             - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n"
        ))
        .unwrap();
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    let tls12 = [&rustls::version::TLS12];
    let other = client(
        &pki,
        &tls12,
        Some(vec![cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
        None,
    );
    assert!(fetch(served.addr, &other).await.is_err());
    let listed = client(
        &pki,
        &tls12,
        Some(vec![
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ]),
        None,
    );
    assert_eq!(fetch(served.addr, &listed).await.unwrap().0, 200);

    let e = pki
        .web_config(&format!(
            "{SERVER_FILES}  cipher_suites: [TLS_NOPE, TLS_RSA_WITH_AES_128_CBC_SHA, \
             TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
        ))
        .unwrap_err();
    assert!(e.contains("cipher_suites: unknown TLS_NOPE;"), "{e}");
    assert!(
        e.contains("not supported (CBC or RSA key exchange): TLS_RSA_WITH_AES_128_CBC_SHA"),
        "{e}"
    );
    let e = pki
        .web_config(&format!(
            "{SERVER_FILES}  curve_preferences: [X25519, CurveP521]\n"
        ))
        .unwrap_err();
    assert!(
        e.contains("curve_preferences: CurveP521 (not supported)"),
        "{e}"
    );
    pki.web_config(&format!(
        "{SERVER_FILES}  curve_preferences: [CurveP256, X25519]\n  \
         prefer_server_cipher_suites: false\n"
    ))
    .unwrap();
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() {
    let pki = Pki::new();
    pki.server(KeyFormat::Pkcs8Ec);
    pki.client("scraper", "DNS:scraper", true);
    pki.client("other", "DNS:other", true);
    pki.client("stranger", "DNS:scraper", false);
    let anonymous = default_client(&pki);
    let scraper = client(&pki, rustls::ALL_VERSIONS, None, Some("scraper"));
    let other = client(&pki, rustls::ALL_VERSIONS, None, Some("other"));
    let stranger = client(&pki, rustls::ALL_VERSIONS, None, Some("stranger"));
    let serve = |auth: &str, extra: &str| {
        let web = pki.web_config(&format!(
            "{SERVER_FILES}  client_auth_type: {auth}\n  client_ca_file: ca.pem\n{extra}"
        ));
        async move { serve_fake(Arc::new(Fake::default()), web.unwrap()).await }
    };

    let served = serve("RequireAndVerifyClientCert", "").await;
    for tls13 in [false, true] {
        let version: &[&'static rustls::SupportedProtocolVersion] = if tls13 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS12]
        };
        let anonymous = client(&pki, version, None, None);
        let scraper = client(&pki, version, None, Some("scraper"));
        let stranger = client(&pki, version, None, Some("stranger"));
        assert!(
            fetch(served.addr, &anonymous).await.is_err(),
            "tls13 {tls13}"
        );
        assert!(
            fetch(served.addr, &stranger).await.is_err(),
            "tls13 {tls13}"
        );
        assert_eq!(fetch(served.addr, &scraper).await.unwrap().0, 200);
    }

    let served = serve("VerifyClientCertIfGiven", "").await;
    assert_eq!(fetch(served.addr, &anonymous).await.unwrap().0, 200);
    assert_eq!(fetch(served.addr, &scraper).await.unwrap().0, 200);
    assert!(fetch(served.addr, &stranger).await.is_err());

    let served = serve(
        "RequireAndVerifyClientCert",
        "  client_allowed_sans: [scraper]\n",
    )
    .await;
    assert_eq!(fetch(served.addr, &scraper).await.unwrap().0, 200);
    assert!(fetch(served.addr, &other).await.is_err());

    // Not verified against any CA (insecure, offered for compatibility): any certificate.
    let web = pki
        .web_config(&format!(
            "{SERVER_FILES}  client_auth_type: RequireAnyClientCert\n"
        ))
        .unwrap();
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    assert!(fetch(served.addr, &anonymous).await.is_err());
    assert_eq!(fetch(served.addr, &stranger).await.unwrap().0, 200);
    let web = pki
        .web_config(&format!(
            "{SERVER_FILES}  client_auth_type: RequestClientCert\n"
        ))
        .unwrap();
    let served = serve_fake(Arc::new(Fake::default()), web).await;
    assert_eq!(fetch(served.addr, &anonymous).await.unwrap().0, 200);
    assert_eq!(fetch(served.addr, &stranger).await.unwrap().0, 200);
}

#[test]
fn bad_tls_settings_and_files_are_refused_clearly() {
    let pki = Pki::new();
    pki.server(KeyFormat::Sec1Ec);
    pki.client("scraper", "DNS:scraper", true);
    pki.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-aes256",
        "-pass",
        "pass:x",
        "-out",
        "encrypted.key",
    ]);
    std::fs::write(pki.path("empty.pem"), "").unwrap();
    let fifo = pki.path("fifo.pem");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let key_text = pki.read("server.key");
    let refused = |lines: &str, expected: &str| {
        let e = pki.web_config(lines).unwrap_err();
        assert!(e.contains(expected), "{lines}: {e}");
        assert!(e.contains("web.yml"), "{e}");
        for line in key_text.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!e.contains(line), "key material in {e}");
        }
    };
    refused(
        "  cert_file: server.pem\n",
        "needs both cert_file and key_file",
    );
    refused(
        "  cert_file: server.pem\n  key_file: scraper.key\n",
        "the key does not belong to the certificate",
    );
    refused(
        "  cert_file: server.key\n  key_file: server.key\n",
        "cert: no certificate (\"BEGIN CERTIFICATE\") found",
    );
    refused(
        "  cert_file: server.pem\n  key_file: server.pem\n",
        "key: no private key found",
    );
    refused(
        "  cert_file: server.pem\n  key_file: encrypted.key\n",
        "encrypted keys are not supported",
    );
    refused(
        "  cert_file: server.pem\n  key_file: missing.key\n",
        "key_file: cannot read",
    );
    refused(
        "  cert_file: fifo.pem\n  key_file: server.key\n",
        "not a regular file",
    );
    refused(
        "  cert_file: empty.pem\n  key_file: server.key\n",
        "no certificate",
    );
    refused(
        &format!("{SERVER_FILES}  client_ca_file: ca.pem\n"),
        "client_ca_file is set but client_auth_type is NoClientCert",
    );
    refused(
        &format!("{SERVER_FILES}  client_auth_type: RequireAndVerifyClientCert\n"),
        "needs client_ca_file",
    );
    refused(
        &format!("{SERVER_FILES}  client_auth_type: VerifyAlways\n"),
        "client_auth_type: unknown \"VerifyAlways\"",
    );
    refused(
        &format!(
            "{SERVER_FILES}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n"
        ),
        "client_ca: no certificate",
    );
    refused(
        &format!("{SERVER_FILES}  min_version: TLS14\n"),
        "min_version: unknown TLS version \"TLS14\"",
    );
    refused(
        &format!("{SERVER_FILES}  max_version: TLS11\n"),
        "TLS 1.0 and 1.1 are not offered",
    );
    refused(
        &format!("{SERVER_FILES}  min_version: TLS13\n  max_version: TLS12\n"),
        "min_version is newer than max_version",
    );
    refused(
        &format!("{SERVER_FILES}  key: inline\n"),
        "set key or key_file, not both",
    );
    refused(
        &format!("{SERVER_FILES}  client_ca_fil: ca.pem\n"),
        "unknown field `client_ca_fil`",
    );

    // Inline PEM works as the files do; an empty section leaves TLS off.
    let inline = |name: &str| {
        pki.read(name)
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let web = pki
        .web_config(&format!(
            "  cert: |\n{}  key: |\n{}",
            inline("server.pem"),
            inline("server.key")
        ))
        .unwrap();
    assert!(web.is_tls());
    assert!(!pki.web_config("  cert_file: ''\n").unwrap().is_tls());
}
