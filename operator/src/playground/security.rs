//! `--tls` and `--auth`: a CA and a node certificate for 127.0.0.1 and `localhost`, and an access
//! token per role, made in the folder on first use and kept across restarts (clients keep
//! working). A node certificate with less than a third of its lifetime left is replaced when the
//! playground starts; the CA stays.
//!
//! Files: `tls/ca.crt`, `tls/ca.key`, `tls/tls.crt`, `tls/tls.key`, `tls/validity` (Unix seconds
//! `NOT_BEFORE NOT_AFTER`), `auth` (the nodes' `--auth-file`) and `token-read`, `token-write`,
//! `token-admin` (one token each, for `RCLUSTER_TOKEN`). Secrets are owner-readable only.

use std::path::{Path, PathBuf};

use super::Error;
use super::state::{Folder, write_atomic};
use crate::certs::{self, CERT_LIFETIME_SECS, Ca, ROLES};

/// The subject of the playground's CA (derived, so it signs the same way after a restart).
const CA_SUBJECT: &str = "rcluster playground CA";

pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The node flags that serve the certificate and verify other nodes with the CA.
    pub fn node_args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".into(),
            p(&self.cert),
            "--tls-key".into(),
            p(&self.key),
            "--tls-ca".into(),
            p(&self.ca),
        ]
    }
}

fn cert_error(e: certs::CertError) -> Error {
    Error::Io {
        what: "cannot make the TLS certificates".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn read(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            what: format!("cannot read {}", path.display()),
            source,
        }),
    }
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })
}

/// The CA and a valid node certificate in `folder/tls`, made or renewed as needed at `now`
/// (Unix seconds). Returns the files and whether a new node certificate was issued.
pub fn prepare_tls(folder: &Folder, now: u64) -> Result<(TlsFiles, bool), Error> {
    let dir = folder.path("tls");
    create_dir(&dir)?;
    let files = TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let ca = match (read(&files.ca)?, read(&dir.join("ca.key"))?) {
        (Some(cert_pem), Some(key_pem)) => Ca {
            subject: CA_SUBJECT.into(),
            cert_pem,
            key_pem,
        },
        _ => {
            let ca = certs::new_ca(CA_SUBJECT, now).map_err(cert_error)?;
            write_atomic(&dir, "ca.key", ca.key_pem.as_bytes(), 0o600)?;
            write_atomic(&dir, "ca.crt", ca.cert_pem.as_bytes(), 0o644)?;
            ca
        }
    };
    let validity = read(&dir.join("validity"))?.and_then(|v| {
        let mut it = v.split_whitespace().map(|n| n.parse::<u64>().ok());
        Some((it.next()??, it.next()??))
    });
    let current = validity.is_some_and(|(nb, na)| !certs::needs_rotation(nb, na, now))
        && files.cert.exists()
        && files.key.exists();
    if current {
        return Ok((files, false));
    }
    let names = ["127.0.0.1".to_string(), "localhost".to_string()];
    let issued = certs::issue(&ca, &names, now, CERT_LIFETIME_SECS).map_err(cert_error)?;
    write_atomic(&dir, "tls.key", issued.key_pem.as_bytes(), 0o600)?;
    write_atomic(&dir, "tls.crt", issued.cert_pem.as_bytes(), 0o644)?;
    let validity = format!("{} {}\n", issued.not_before, issued.not_after);
    write_atomic(&dir, "validity", validity.as_bytes(), 0o644)?;
    Ok((files, true))
}

/// The nodes' auth file and one token file per role, made on first use.
pub fn prepare_auth(folder: &Folder) -> Result<PathBuf, Error> {
    let mut tokens = Vec::new();
    for role in ROLES {
        let name = format!("token-{role}");
        let token = match read(&folder.path(&name))? {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = certs::new_token().map_err(cert_error)?;
                write_atomic(&folder.dir, &name, t.as_bytes(), 0o600)?;
                t
            }
        };
        tokens.push((role, token));
    }
    let pairs: Vec<(&str, &str)> = tokens.iter().map(|(r, t)| (*r, t.as_str())).collect();
    write_atomic(
        &folder.dir,
        "auth",
        certs::auth_file(&pairs).as_bytes(),
        0o600,
    )?;
    Ok(folder.path("auth"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn certificates_and_tokens_are_made_once_and_renewed_when_due() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = Folder::create(tmp.path()).unwrap();
        let (files, new) = prepare_tls(&folder, NOW).unwrap();
        assert!(new);
        let ca = std::fs::read(&files.ca).unwrap();
        let cert = std::fs::read(&files.cert).unwrap();
        let (_, new) = prepare_tls(&folder, NOW + 3600).unwrap();
        assert!(!new, "a fresh certificate is kept");
        assert_eq!(std::fs::read(&files.cert).unwrap(), cert);
        let late = NOW + CERT_LIFETIME_SECS * 2 / 3 + 3600;
        let (_, new) = prepare_tls(&folder, late).unwrap();
        assert!(new, "renewed with less than a third left");
        assert_ne!(std::fs::read(&files.cert).unwrap(), cert);
        assert_eq!(std::fs::read(&files.ca).unwrap(), ca, "the CA stays");

        let auth = prepare_auth(&folder).unwrap();
        let text = std::fs::read_to_string(&auth).unwrap();
        let admin = std::fs::read_to_string(folder.path("token-admin")).unwrap();
        assert!(text.contains(&format!("{admin} admin")), "{text}");
        prepare_auth(&folder).unwrap();
        assert_eq!(
            std::fs::read_to_string(folder.path("token-admin")).unwrap(),
            admin,
            "tokens are kept"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(folder.path("token-admin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "owner-readable only");
    }
}
