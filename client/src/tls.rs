//! TLS for `https://` endpoints: which certificates a client trusts, and the rustls settings the
//! transport (and the node's own listener) use. The ring provider is named explicitly, so nothing
//! depends on which crypto backends other crates happened to enable.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The crypto provider every TLS config of rcluster uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Which server certificates a client accepts.
#[derive(Clone, Debug, Default)]
pub enum Trust {
    /// The operating system's trust store.
    #[default]
    System,
    /// Only certificates issued by these CAs (`--cacert`, `--tls-ca`).
    Roots(Arc<RootCertStore>),
}

impl Trust {
    /// The CA certificates of a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Trust, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Trust::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The CA certificates of PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Trust, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not PEM certificates: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no certificate in it".into());
        }
        Ok(Trust::Roots(Arc::new(roots)))
    }

    /// The rustls client settings for this trust (the transport adds ALPN `http/1.1`).
    pub fn client_config(&self) -> ClientConfig {
        let roots = match self {
            Trust::Roots(r) => r.clone(),
            Trust::System => system_roots(),
        };
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

/// The system's CA certificates, read once per process (empty if there are none: every
/// `https://` endpoint then fails verification with a clear error).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            Arc::new(roots)
        })
        .clone()
}

/// Whether `e` (or an error it wraps) is a TLS failure: a certificate that does not verify, a
/// handshake refused. Such a request was never sent.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return true;
        }
        // An I/O error's `source()` skips the error it wraps (it returns that error's source),
        // and the connector wraps rustls' I/O error in another one: look inside each.
        if let Some(inner) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            source = Some(inner);
            continue;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_is_found_inside_nested_io_errors() {
        let handshake = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::General("unknown issuer".into()),
        );
        assert!(is_tls_error(&handshake));
        // How the https connector hands it on.
        let wrapped = std::io::Error::other(handshake);
        assert!(is_tls_error(&wrapped));
        let refused =
            std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!is_tls_error(&refused));
    }
}
