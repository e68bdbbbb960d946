//! Certificates and access tokens for a cluster, as pure functions of their inputs (time
//! included): a CA per cluster, a node certificate it signs for every name the nodes are reached
//! by, the rule that says when to issue the next one, and one random token per role.
//!
//! The CA signs again after a restart of the operator because its subject is derived from the
//! cluster (not stored) and its key is kept: a certificate issued later by the same key and
//! subject verifies against the CA certificate handed out at first.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long a generated CA is valid.
pub const CA_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;
/// How long a node certificate is valid; it is replaced once a third of that remains.
pub const CERT_LIFETIME_SECS: u64 = 90 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("time {0} is out of range")]
    Time(u64),
    #[error("cannot generate a token: {0}")]
    Random(String),
}

/// A CA: its certificate (handed to clients and nodes) and key (kept by the operator only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ca {
    /// Derived from the cluster; the same for every certificate the CA signs.
    pub subject: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A node certificate and its key, with its validity (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: u64,
    pub not_after: u64,
}

fn at(secs: u64) -> Result<time::OffsetDateTime, CertError> {
    let s = i64::try_from(secs).map_err(|_| CertError::Time(secs))?;
    time::OffsetDateTime::from_unix_timestamp(s).map_err(|_| CertError::Time(secs))
}

fn ca_params(subject: &str, now: u64) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, subject);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // A little back-dated: clocks of nodes and clients may be behind the operator's.
    p.not_before = at(now.saturating_sub(3600))?;
    p.not_after = at(now + CA_LIFETIME_SECS)?;
    Ok(p)
}

/// A new CA named `subject`, valid from `now` (Unix seconds).
pub fn new_ca(subject: &str, now: u64) -> Result<Ca, CertError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(subject, now)?.self_signed(&key)?;
    Ok(Ca {
        subject: subject.to_string(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A server certificate signed by `ca` for `names` (DNS names or IP addresses), valid from `now`
/// for `lifetime` seconds.
pub fn issue(ca: &Ca, names: &[String], now: u64, lifetime: u64) -> Result<Issued, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::new(ca_params(&ca.subject, now)?, ca_key);
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Nodes are servers to clients and clients of each other (same certificate, no client auth).
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let not_before = now.saturating_sub(300);
    let not_after = now + lifetime;
    p.not_before = at(not_before)?;
    p.not_after = at(not_after)?;
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
    })
}

/// Whether a certificate valid from `not_before` to `not_after` should be replaced at `now`:
/// when less than a third of its lifetime remains (or it is not valid at all).
pub fn needs_rotation(not_before: u64, not_after: u64, now: u64) -> bool {
    if not_after <= not_before || now >= not_after || now < not_before {
        return true;
    }
    let remaining = not_after - now;
    remaining * 3 < not_after - not_before
}

/// The roles a cluster has tokens for, in the order of the auth file.
pub const ROLES: [&str; 3] = ["read", "write", "admin"];

/// A fresh random access token: 64 lower-case hex characters.
pub fn new_token() -> Result<String, CertError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| CertError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The node's `--auth-file` for `tokens` (role, token), one `TOKEN ROLE` per line.
pub fn auth_file(tokens: &[(&str, &str)]) -> String {
    let mut out = String::from("# rcluster access tokens: TOKEN ROLE (read < write < admin)\n");
    for (role, token) in tokens {
        out.push_str(&format!("{token} {role}\n"));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    const NOW: u64 = 1_800_000_000;

    /// Verifies `issued` for `name` at `now` against `ca`, as a node or client would.
    pub(crate) fn verify(ca: &Ca, issued: &Issued, name: &str, now: u64) -> Result<(), String> {
        let trust = rcluster_client::tls::Trust::from_pem(ca.cert_pem.as_bytes())?;
        let rcluster_client::tls::Trust::Roots(roots) = trust else {
            unreachable!()
        };
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots,
            rcluster_client::tls::provider(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &name,
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_certificate_verifies_for_each_of_its_names_and_no_other() {
        let ca = new_ca("rcluster shop/demo CA", NOW).unwrap();
        let names = vec![
            "demo-0.demo-headless.shop.svc".to_string(),
            "demo-rw.shop.svc.cluster.local".to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        let issued = issue(&ca, &names, NOW, CERT_LIFETIME_SECS).unwrap();
        for n in &names {
            verify(&ca, &issued, n, NOW + 10).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        assert!(verify(&ca, &issued, "demo-9.elsewhere.svc", NOW).is_err());
        let other = new_ca("rcluster shop/demo CA", NOW).unwrap();
        assert!(
            verify(&other, &issued, "localhost", NOW).is_err(),
            "another CA"
        );
        assert!(
            verify(&ca, &issued, "localhost", issued.not_after + 1).is_err(),
            "expired"
        );
    }

    #[test]
    fn a_later_certificate_of_the_same_ca_verifies_against_the_first_ca_certificate() {
        let ca = new_ca("rcluster playground CA", NOW).unwrap();
        let later = NOW + 200 * 24 * 3600;
        let next = issue(&ca, &["localhost".into()], later, CERT_LIFETIME_SECS).unwrap();
        verify(&ca, &next, "localhost", later + 1).unwrap();
    }

    #[test]
    fn rotation_starts_when_a_third_of_the_lifetime_remains() {
        let (nb, na) = (1000, 1000 + 90);
        assert!(!needs_rotation(nb, na, 1000));
        assert!(!needs_rotation(nb, na, 1059), "31 of 90 left");
        assert!(needs_rotation(nb, na, 1061), "29 of 90 left");
        assert!(needs_rotation(nb, na, 1090), "expired");
        assert!(needs_rotation(nb, na, 999), "not yet valid");
        assert!(needs_rotation(5, 5, 5), "empty validity");
    }

    #[test]
    fn tokens_and_the_auth_file() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let file = auth_file(&[("read", "r1"), ("admin", "a1")]);
        assert!(file.ends_with("r1 read\na1 admin\n"), "{file}");
    }
}
