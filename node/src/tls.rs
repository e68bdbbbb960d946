//! TLS on the node's listener (`--tls-cert`, `--tls-key`): one certificate for client and
//! internal traffic alike. The files are read again on SIGHUP and whenever they change (checked
//! every `--reload-interval-ms`), so a rotated certificate needs no restart: connections made
//! after the reload get the new one. A pair that does not load keeps the one in force.
//!
//! The node's own calls to other nodes (replication, forwarding, fan-out) verify their
//! certificates against `--tls-ca` (see `rcluster_client::tls`).

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    /// The acceptor in force and the file contents it was made from.
    current: RwLock<(TlsAcceptor, Vec<u8>)>,
}

impl ServerTls {
    pub fn open(cert: &Path, key: &Path) -> Result<ServerTls, String> {
        let (acceptor, loaded) = load(cert, key)?;
        Ok(ServerTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((acceptor, loaded)),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Loads the files again when they changed. `Ok(true)` when a new pair is in force; on error
    /// the old one stays.
    pub fn reload(&self) -> Result<bool, String> {
        let files = read_pair(&self.cert, &self.key)?;
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == files {
            return Ok(false);
        }
        let (acceptor, loaded) = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (acceptor, loaded);
        Ok(true)
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Vec<u8>, String> {
    let (mut both, key) = (read(cert)?, read(key)?);
    both.extend_from_slice(&key);
    Ok(both)
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

fn load(cert: &Path, key: &Path) -> Result<(TlsAcceptor, Vec<u8>), String> {
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(rcluster_client::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable certificate: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut loaded = cert_pem;
    loaded.extend_from_slice(&key_pem);
    Ok((TlsAcceptor::from(Arc::new(config)), loaded))
}
