//! TLS settings for one endpoint, and the rustls client configuration built from them.
//!
//! The engine's connections speak TLS through `rustls::ClientConnection` (see `conn.rs`); this
//! module only decides whom they trust. The crypto provider is `ring`, the one ureq 3.5 uses
//! here, passed explicitly so nothing depends on a process-wide default provider. Trust is the
//! webpki roots (Mozilla's list, as ureq's), plus any private CA an endpoint names, plus the
//! operating system's store when an endpoint asks for it (`system_roots`, loaded once per
//! process by rustls-native-certs), or nothing at all when an endpoint opts out of
//! verification.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// Per-endpoint TLS settings, used when the endpoint's URL is `https://`.
///
/// The default trusts the webpki roots (Mozilla's CA list) and verifies every certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra trust anchors in PEM (a private CA): one or more `CERTIFICATE` blocks. They are
    /// trusted **in addition to** the webpki roots, so an endpoint with a private CA can still
    /// be moved to a public certificate without a config change. A value with no certificate
    /// in it, or one that does not parse, is refused (`Error::Config` naming `tls.ca_pem`).
    pub ca_pem: Option<String>,
    /// Skip certificate verification entirely: any certificate, for any name, from any issuer
    /// is accepted (the handshake's signatures are still checked against the certificate the
    /// server sent). Dangerous: anyone on the path can read and forge deliveries. For tests and
    /// private networks only. When set, `ca_pem` and `system_roots` are ignored.
    pub insecure: bool,
    /// Also trust the operating system's certificate store (what `curl` and `openssl` trust:
    /// on Linux the distribution's CA bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set),
    /// read once per process. Needs the `native-roots` feature (on with `cli`): without it, or
    /// if the store cannot be read at all, the endpoint is refused (`Error::Config` naming
    /// `tls.system_roots`), never silently left with fewer roots. Certificates in the store
    /// that do not parse are skipped, as rustls-native-certs' users do.
    pub system_roots: bool,
}

/// The crypto provider every hookwire TLS connection uses.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Builds the rustls client configuration for `opts`.
///
/// The default options share one configuration (the webpki roots are parsed once per
/// process); others build their own. Connections advertise ALPN `http/1.1`.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, Error> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if *opts == TlsOptions::default() {
        if let Some(config) = DEFAULT.get() {
            return Ok(config.clone());
        }
        let config = build(opts)?;
        return Ok(DEFAULT.get_or_init(|| config).clone());
    }
    build(opts)
}

fn build(opts: &TlsOptions) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("tls", format!("the TLS provider is unusable: {e}")))?;
    let mut config = if opts.insecure {
        let verifier = NoVerification {
            algorithms: provider.signature_verification_algorithms,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(opts)?)
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The webpki roots, plus the system's (`system_roots`), plus the certificates in `ca_pem`.
fn roots(opts: &TlsOptions) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if opts.system_roots {
        store.add_parsable_certificates(system_certs()?.iter().cloned());
    }
    for cert in ca_certs(opts.ca_pem.as_deref())? {
        store.add(cert).map_err(|e| {
            Error::config(
                "tls.ca_pem",
                format!("holds a certificate that cannot be a trust anchor: {e}"),
            )
        })?;
    }
    Ok(store)
}

/// Loads the operating system's certificate store (once per process) and says how many
/// certificates it holds: what [`TlsOptions::system_roots`] would add. An error (the
/// `native-roots` feature is off, or the store cannot be read) is the one an endpoint with
/// `system_roots` would be refused with; a program can call this first and choose to warn
/// and go without.
pub fn system_roots() -> Result<usize, Error> {
    system_certs().map(<[_]>::len)
}

/// The operating system's trusted certificates, loaded once per process.
#[cfg(feature = "native-roots")]
fn system_certs() -> Result<&'static [CertificateDer<'static>], Error> {
    static CERTS: OnceLock<Result<Vec<CertificateDer<'static>>, String>> = OnceLock::new();
    let loaded = CERTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let why = found
                .errors
                .first()
                .map_or_else(|| "it holds no certificate".to_owned(), ToString::to_string);
            return Err(why);
        }
        for e in &found.errors {
            log::warn!("the system's certificate store: {e} (the rest is used)");
        }
        Ok(found.certs)
    });
    match loaded {
        Ok(certs) => Ok(certs),
        Err(why) => Err(Error::config(
            "tls.system_roots",
            format!("the system's certificate store cannot be used: {why}"),
        )),
    }
}

/// Without the `native-roots` feature there is no system store to trust: asking for it is
/// an error, not a quiet "webpki roots only".
#[cfg(not(feature = "native-roots"))]
fn system_certs() -> Result<&'static [CertificateDer<'static>], Error> {
    Err(Error::config(
        "tls.system_roots",
        "hookwire was built without its `native-roots` feature",
    ))
}

/// The certificates in `ca_pem` (none without one); a value with none, or bad PEM, is an
/// `Error::Config` naming `tls.ca_pem`.
fn ca_certs(ca_pem: Option<&str>) -> Result<Vec<CertificateDer<'static>>, Error> {
    let Some(pem) = ca_pem else {
        return Ok(Vec::new());
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::config("tls.ca_pem", format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(
            "tls.ca_pem",
            "holds no PEM CERTIFICATE block",
        ));
    }
    Ok(certs)
}

/// The same trust for layer 1's `HttpSink` (ureq): the default roots, the webpki roots plus
/// `ca_pem`, or no verification.
pub(crate) fn ureq_config(opts: &TlsOptions) -> Result<ureq::tls::TlsConfig, Error> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let builder = TlsConfig::builder();
    if opts.insecure {
        return Ok(builder.disable_verification(true).build());
    }
    let mut extra = ca_certs(opts.ca_pem.as_deref())?;
    if opts.system_roots {
        extra.extend(system_certs()?.iter().cloned());
    }
    if extra.is_empty() {
        return Ok(builder.build());
    }
    let certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .chain(&extra)
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(builder
        .root_certs(RootCerts::Specific(Arc::new(certs)))
        .build())
}

/// A verifier that accepts every certificate (`TlsOptions::insecure`). It still checks that
/// the handshake was signed by the key in the certificate presented, so the connection is at
/// least with whoever holds that key.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: Error) -> &'static str {
        match e {
            Error::Config { field, .. } => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn default_is_shared_and_verifies() {
        let a = client_config(&TlsOptions::default()).unwrap();
        let b = client_config(&TlsOptions::default()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, [b"http/1.1".to_vec()]);
        let insecure = client_config(&TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        })
        .unwrap();
        assert!(!Arc::ptr_eq(&a, &insecure));
    }

    #[test]
    fn bad_ca_pem_is_a_config_error() {
        for pem in [
            "",
            "not pem at all",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let opts = TlsOptions {
                ca_pem: Some(pem.into()),
                ..TlsOptions::default()
            };
            assert_eq!(
                field(client_config(&opts).unwrap_err()),
                "tls.ca_pem",
                "{pem:?}"
            );
        }
    }

    #[test]
    fn a_real_ca_is_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let opts = TlsOptions {
            ca_pem: Some(ca.pem()),
            ..TlsOptions::default()
        };
        assert!(client_config(&opts).is_ok());
    }
}
