//! HTTPS for the web side with rustls: the `tls_server_config` of the exporter toolkit's web
//! config file (PKCS#1, SEC1 and PKCS#8 keys, TLS versions, Go cipher suite and curve names,
//! client certificates) turned into a server config.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, SupportedKxGroup, ring};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};

/// What `tls_server_config` asks for, with files already read.
#[derive(Default)]
pub(super) struct TlsSettings {
    /// PEM: the server's certificate chain, and its key.
    pub(super) cert: Vec<u8>,
    pub(super) key: Vec<u8>,
    /// PEM: the CAs that sign client certificates.
    pub(super) client_ca: Option<Vec<u8>>,
    pub(super) client_auth_type: Option<String>,
    pub(super) client_allowed_sans: Option<Vec<String>>,
    pub(super) cipher_suites: Option<Vec<String>>,
    pub(super) curve_preferences: Option<Vec<String>>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
    pub(super) prefer_server_cipher_suites: Option<bool>,
}

/// Go's `tls.ClientAuthType`, by the names the exporter toolkit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(name: &str) -> Result<ClientAuth, String> {
        Ok(match name {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // The older name, still accepted by the exporter toolkit.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => {
                return Err(format!(
                    "client_auth_type: unknown {other:?} (expected NoClientCert, \
                     RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
                     RequireAndVerifyClientCert)"
                ));
            }
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// TLS versions by the exporter toolkit's names, oldest first; rustls speaks 1.2 and 1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl Version {
    fn parse(field: &str, name: &str) -> Result<Version, String> {
        Ok(match name {
            "TLS10" => Version::Tls10,
            "TLS11" => Version::Tls11,
            "TLS12" => Version::Tls12,
            "TLS13" => Version::Tls13,
            other => {
                return Err(format!(
                    "{field}: unknown TLS version {other:?} (expected TLS12 or TLS13)"
                ));
            }
        })
    }
}

/// Go's names for the cipher suites `tls.CipherSuites()` lists, mapped to what rustls offers:
/// the ECDHE suites with AEAD ciphers. The others (CBC, RSA key exchange) are known but refused.
const GO_SUITES: &[(&str, Option<SupportedCipherSuite>)] = {
    use ring::cipher_suite as cs;
    &[
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Some(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Some(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            Some(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            Some(cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        ("TLS_RSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", None),
        ("TLS_RSA_WITH_AES_256_GCM_SHA384", None),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
        // TLS 1.3 suites: Go does not let them be chosen either; all three are always on.
        ("TLS_AES_128_GCM_SHA256", Some(cs::TLS13_AES_128_GCM_SHA256)),
        ("TLS_AES_256_GCM_SHA384", Some(cs::TLS13_AES_256_GCM_SHA384)),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            Some(cs::TLS13_CHACHA20_POLY1305_SHA256),
        ),
    ]
};

/// The TLS 1.2 suites named in `cipher_suites`, in order, or every error.
fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, String> {
    let mut suites = Vec::new();
    let mut unknown = Vec::new();
    let mut unsupported = Vec::new();
    for name in names {
        match GO_SUITES.iter().find(|(go, _)| go == name) {
            None => unknown.push(name.as_str()),
            Some((_, None)) => unsupported.push(name.as_str()),
            // TLS 1.3 suites are always enabled, as in Go.
            Some((_, Some(SupportedCipherSuite::Tls13(_)))) => {}
            Some((_, Some(suite))) => {
                if !suites.contains(suite) {
                    suites.push(*suite);
                }
            }
        }
    }
    let mut errors = Vec::new();
    if !unknown.is_empty() {
        errors.push(format!("unknown {}", unknown.join(", ")));
    }
    if !unsupported.is_empty() {
        errors.push(format!(
            "not supported (CBC or RSA key exchange): {}",
            unsupported.join(", ")
        ));
    }
    if !errors.is_empty() {
        return Err(format!("cipher_suites: {}", errors.join("; ")));
    }
    if suites.is_empty() {
        return Err("cipher_suites: names no TLS 1.2 suite".into());
    }
    Ok(suites)
}

/// The key exchange groups named in `curve_preferences`, in order.
fn curves(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    let mut bad = Vec::new();
    for name in names {
        let group: &'static dyn SupportedKxGroup = match name.as_str() {
            "X25519" => ring::kx_group::X25519,
            "CurveP256" => ring::kx_group::SECP256R1,
            "CurveP384" => ring::kx_group::SECP384R1,
            "CurveP521" => {
                bad.push(format!("{name} (not supported)"));
                continue;
            }
            _ => {
                bad.push(format!("{name:?} (unknown)"));
                continue;
            }
        };
        if !groups.iter().any(|g| g.name() == group.name()) {
            groups.push(group);
        }
    }
    if !bad.is_empty() {
        return Err(format!(
            "curve_preferences: {} (expected X25519, CurveP256 or CurveP384)",
            bad.join(", ")
        ));
    }
    Ok(groups)
}

/// Builds the server config, or says what is wrong without quoting any key material.
pub(super) fn server_config(settings: TlsSettings) -> Result<ServerConfig, String> {
    let mut provider = ring::default_provider();
    if let Some(names) = settings.cipher_suites.as_deref().filter(|n| !n.is_empty()) {
        let tls12 = cipher_suites(names)?;
        provider
            .cipher_suites
            .retain(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
        provider.cipher_suites.extend(tls12);
    }
    if let Some(names) = settings
        .curve_preferences
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        provider.kx_groups = curves(names)?;
    }
    let provider = Arc::new(provider);

    let min = match settings.min_version.as_deref() {
        None | Some("") => Version::Tls12,
        Some(name) => Version::parse("min_version", name)?,
    };
    let max = match settings.max_version.as_deref() {
        None | Some("") => Version::Tls13,
        Some(name) => Version::parse("max_version", name)?,
    };
    if max < Version::Tls12 {
        return Err("max_version: TLS 1.0 and 1.1 are not offered; use TLS12 or TLS13".into());
    }
    if min > max {
        return Err("min_version is newer than max_version".into());
    }
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if max == Version::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if min <= Version::Tls12 {
        versions.push(&rustls::version::TLS12);
    }

    let client_auth = ClientAuth::parse(settings.client_auth_type.as_deref().unwrap_or(""))?;
    let verifier = client_verifier(
        client_auth,
        settings.client_ca.as_deref(),
        settings.client_allowed_sans,
        &provider,
    )?;

    let chain = certificates(&settings.cert).map_err(|e| format!("cert: {e}"))?;
    let key = private_key(&settings.key)?;
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("cannot combine these TLS settings: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "the key does not belong to the certificate".to_string()
            }
            e => format!("cannot use the certificate and key: {e}"),
        })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({})", pem_error(&e)))?;
    if chain.is_empty() {
        return Err("no certificate (\"BEGIN CERTIFICATE\") found".into());
    }
    Ok(chain)
}

/// A PKCS#1, SEC1 or PKCS#8 key. Messages never quote the file.
fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    if contains(pem, b"ENCRYPTED PRIVATE KEY") || contains(pem, b"Proc-Type: 4,ENCRYPTED") {
        return Err("key: encrypted keys are not supported; decrypt it with openssl".into());
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => "key: no private key found (expected \"BEGIN PRIVATE KEY\", \
                                     \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")"
            .to_string(),
        e => format!("key: not a PEM private key ({})", pem_error(&e)),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A PEM error by its kind only: some variants carry bytes of the input.
fn pem_error(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        pem::Error::Base64Decode(_) => "bad base64",
        pem::Error::Io(_) => "unreadable",
        pem::Error::NoItemsFound => "nothing found",
        _ => "malformed",
    }
}

fn client_verifier(
    client_auth: ClientAuth,
    client_ca: Option<&[u8]>,
    allowed_sans: Option<Vec<String>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err(
            "client_ca_file is set but client_auth_type is NoClientCert: set \
                    client_auth_type to RequireAndVerifyClientCert"
                .into(),
        );
    }
    let verifier: Arc<dyn ClientCertVerifier> = match (client_auth, client_ca) {
        (ClientAuth::NoClientCert, _) => {
            if allowed_sans.is_some() {
                return Err(
                    "client_allowed_sans needs a client_auth_type that asks for a \
                            client certificate"
                        .into(),
                );
            }
            return Ok(Arc::new(rustls::server::NoClientAuth));
        }
        (auth, None) if auth.verifies() => {
            return Err(format!(
                "client_auth_type {auth:?} needs client_ca_file (or client_ca) to verify \
                 client certificates against"
            ));
        }
        (auth, Some(pem)) if auth.verifies() => {
            let mut roots = RootCertStore::empty();
            let cas = certificates(pem).map_err(|e| format!("client_ca: {e}"))?;
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("client_ca: not a usable CA certificate: {e}"))?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
            let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| format!("client_ca: cannot verify with it: {e}"))?
        }
        (auth, _) => Arc::new(AnyClientCert {
            mandatory: auth == ClientAuth::RequireAnyClientCert,
            provider: Arc::clone(provider),
        }),
    };
    Ok(match allowed_sans {
        Some(sans) => Arc::new(AllowedSans {
            inner: verifier,
            sans,
        }),
        None => verifier,
    })
}

/// Go's `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for (and
/// its key's signature checked) but not verified against any CA. Insecure, as the exporter
/// toolkit's documentation says; offered for compatibility.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `client_allowed_sans`: the client certificate must carry one of these subject alternative
/// names (DNS name, e-mail address, IP address or URI), exactly.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

impl AllowedSans {
    fn allows(&self, der: &[u8]) -> bool {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return false;
        };
        let Ok(Some(names)) = cert.subject_alternative_name() else {
            return false;
        };
        names.value.general_names.iter().any(|name| {
            let value = match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    s.to_string()
                }
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default())
                        .to_string(),
                    16 => {
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default())
                            .to_string()
                    }
                    _ => return false,
                },
                _ => return false,
            };
            self.sans.contains(&value)
        })
    }
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allows(end_entity) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
