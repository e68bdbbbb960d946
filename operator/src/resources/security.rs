//! The Secrets of `spec.tls` and `spec.auth` the operator makes when the user names none:
//!
//! - `<cluster>-ca` (Opaque): `ca.crt`, `ca.key`. The CA; its key never leaves this Secret.
//! - `<cluster>-tls` (`kubernetes.io/tls`): `tls.crt`, `tls.key`, `ca.crt`, the layout of a
//!   cert-manager Certificate's Secret, so the pods mount a user's Secret and this one alike. Valid
//!   for every pod of every shard (`*.<cluster>-headless.<ns>.svc`: a scale-up needs no new
//!   certificate), every Service of the cluster, `localhost` and `127.0.0.1`. Its validity and names
//!   are in annotations, so deciding whether to renew needs no certificate parsing.
//! - `<cluster>-tokens` (Opaque): one token per role (`read`, `write`, `admin`) and `auth`, the
//!   nodes' `--auth-file`.
//!
//! Each is made once and kept: [`plan`] returns only what is missing or due, so a reconcile that
//! finds them complete applies nothing, and tokens handed out stay valid. The node certificate is
//! issued again when less than a third of its lifetime is left (or its names or CA changed); the
//! CA stays, so clients that trust `ca.crt` keep working across renewals.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{
    BuildError, Owner, client_service_name, component, headless_service_name, ro_service_name,
    rw_service_name,
};
use crate::certs::{self, CERT_LIFETIME_SECS, Ca, ROLES};
use crate::crd::ReplicatedCluster;
use rcluster_proto::ShardId;

pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
/// The nodes' `--auth-file` in a tokens Secret.
pub const AUTH_KEY: &str = "auth";

/// Unix seconds from which the node certificate of `<cluster>-tls` is valid.
pub const NOT_BEFORE_ANNOTATION: &str = "rcluster.dev/not-before";
/// Unix seconds until which it is valid.
pub const NOT_AFTER_ANNOTATION: &str = "rcluster.dev/not-after";
/// The names it was issued for, comma-separated.
pub const NAMES_ANNOTATION: &str = "rcluster.dev/names";

pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-ca")
}
pub fn tls_secret_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}
pub fn tokens_secret_name(cluster: &str) -> String {
    format!("{cluster}-tokens")
}

/// The Secret the nodes' certificate is mounted from; `None` when TLS is off.
pub fn tls_secret(cluster: &ReplicatedCluster, name: &str) -> Option<String> {
    let tls = &cluster.spec.tls;
    cluster.security().tls.then(|| {
        tls.secret_name
            .clone()
            .unwrap_or_else(|| tls_secret_name(name))
    })
}

/// The Secret the nodes' token file is mounted from; `None` when tokens are off.
pub fn auth_secret(cluster: &ReplicatedCluster, name: &str) -> Option<String> {
    let auth = &cluster.spec.auth;
    cluster.security().auth.then(|| {
        auth.secret_name
            .clone()
            .unwrap_or_else(|| tokens_secret_name(name))
    })
}

/// Every name the nodes are reached by: any pod under the headless Service, every Service of
/// the `shards` shards in each of its DNS forms, and the loopback names (a client beside a node,
/// `kubectl port-forward`).
pub fn certificate_names(cluster: &str, namespace: &str, shards: u32) -> Vec<String> {
    let headless = headless_service_name(cluster);
    let mut names = vec![
        format!("*.{headless}.{namespace}.svc"),
        format!("*.{headless}.{namespace}.svc.cluster.local"),
    ];
    let mut services = vec![headless, client_service_name(cluster)];
    for k in 0..shards.max(1) as ShardId {
        services.push(rw_service_name(cluster, k));
        services.push(ro_service_name(cluster, k));
    }
    for s in services {
        names.push(s.clone());
        names.push(format!("{s}.{namespace}"));
        names.push(format!("{s}.{namespace}.svc"));
        names.push(format!("{s}.{namespace}.svc.cluster.local"));
    }
    names.push("localhost".to_string());
    names.push("127.0.0.1".to_string());
    names
}

/// The generated Secrets as read from the API server (`None`: absent).
#[derive(Clone, Debug, Default)]
pub struct Existing {
    pub ca: Option<Secret>,
    pub tls: Option<Secret>,
    pub tokens: Option<Secret>,
}

/// What [`plan`] made, for events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Made {
    Ca,
    /// A node certificate valid until `not_after`; `renewed`: it replaces one.
    Certificate {
        not_after: u64,
        renewed: bool,
    },
    Tokens,
}

/// The Secrets to apply and what they hold that is new.
#[derive(Clone, Debug, Default)]
pub struct Planned {
    pub apply: Vec<Secret>,
    pub made: Vec<Made>,
    /// The CA certificate the nodes' certificate chains to (when the operator makes it).
    pub ca_pem: Option<String>,
}

fn value(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    let s = String::from_utf8(bytes.0.clone()).ok()?;
    (!s.trim().is_empty()).then_some(s)
}

fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret.metadata.annotations.as_ref()?.get(key).cloned()
}

fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, ByteString>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    )
}

fn cert_error(e: certs::CertError) -> BuildError {
    BuildError::Security(e.to_string())
}

/// The subject of a cluster's CA: derived, so the CA signs the same way after any restart.
fn ca_subject(owner: &Owner) -> String {
    format!("rcluster {}/{} CA", owner.namespace, owner.name)
}

/// What to apply at `now` (Unix seconds) for a cluster of `shards` shards, given what exists.
/// Nothing for a feature that is off or whose Secret the user provides.
pub fn plan(
    cluster: &ReplicatedCluster,
    shards: u32,
    existing: &Existing,
    now: u64,
) -> Result<Planned, BuildError> {
    let owner = Owner::new(cluster)?;
    let mut planned = Planned::default();
    let spec = &cluster.spec;
    let on = cluster.security();
    if on.tls && spec.tls.secret_name.is_none() {
        plan_tls(&owner, shards, existing, now, &mut planned)?;
    }
    if on.auth && spec.auth.secret_name.is_none() {
        plan_tokens(&owner, existing.tokens.as_ref(), &mut planned)?;
    }
    Ok(planned)
}

fn plan_tls(
    owner: &Owner,
    shards: u32,
    existing: &Existing,
    now: u64,
    planned: &mut Planned,
) -> Result<(), BuildError> {
    let subject = ca_subject(owner);
    let kept_ca = match (
        value(existing.ca.as_ref(), CA_CERT_KEY),
        value(existing.ca.as_ref(), CA_KEY_KEY),
    ) {
        (Some(cert_pem), Some(key_pem)) => Some(Ca {
            subject: subject.clone(),
            cert_pem,
            key_pem,
        }),
        _ => None,
    };
    let ca = match kept_ca {
        Some(ca) => ca,
        None => {
            let ca = certs::new_ca(&subject, now).map_err(cert_error)?;
            planned.apply.push(Secret {
                metadata: owner.meta(ca_secret_name(&owner.name), component::TLS),
                type_: Some("Opaque".to_string()),
                data: data(&[(CA_CERT_KEY, &ca.cert_pem), (CA_KEY_KEY, &ca.key_pem)]),
                ..Secret::default()
            });
            planned.made.push(Made::Ca);
            ca
        }
    };
    let names = certificate_names(&owner.name, &owner.namespace, shards);
    let joined = names.join(",");
    let current = existing.tls.as_ref().filter(|s| {
        let num = |key| annotation(s, key).and_then(|v| v.parse::<u64>().ok());
        let valid = match (num(NOT_BEFORE_ANNOTATION), num(NOT_AFTER_ANNOTATION)) {
            (Some(nb), Some(na)) => !certs::needs_rotation(nb, na, now),
            _ => false,
        };
        valid
            && annotation(s, NAMES_ANNOTATION).as_deref() == Some(joined.as_str())
            && value(Some(s), CA_CERT_KEY).as_deref() == Some(ca.cert_pem.as_str())
            && value(Some(s), TLS_CERT_KEY).is_some()
            && value(Some(s), TLS_KEY_KEY).is_some()
    });
    if current.is_none() {
        let issued = certs::issue(&ca, &names, now, CERT_LIFETIME_SECS).map_err(cert_error)?;
        let mut meta = owner.meta(tls_secret_name(&owner.name), component::TLS);
        meta.annotations = Some(BTreeMap::from([
            (
                NOT_BEFORE_ANNOTATION.to_string(),
                issued.not_before.to_string(),
            ),
            (
                NOT_AFTER_ANNOTATION.to_string(),
                issued.not_after.to_string(),
            ),
            (NAMES_ANNOTATION.to_string(), joined),
        ]));
        planned.apply.push(Secret {
            metadata: meta,
            type_: Some("kubernetes.io/tls".to_string()),
            data: data(&[
                (TLS_CERT_KEY, &issued.cert_pem),
                (TLS_KEY_KEY, &issued.key_pem),
                (CA_CERT_KEY, &ca.cert_pem),
            ]),
            ..Secret::default()
        });
        planned.made.push(Made::Certificate {
            not_after: issued.not_after,
            renewed: existing.tls.is_some(),
        });
    }
    planned.ca_pem = Some(ca.cert_pem);
    Ok(())
}

fn plan_tokens(
    owner: &Owner,
    existing: Option<&Secret>,
    planned: &mut Planned,
) -> Result<(), BuildError> {
    let kept: Vec<Option<String>> = ROLES.iter().map(|r| value(existing, r)).collect();
    if kept.iter().all(Option::is_some) && value(existing, AUTH_KEY).is_some() {
        return Ok(());
    }
    // Tokens already handed out stay; only missing ones are made.
    let tokens = kept
        .into_iter()
        .map(|t| match t {
            Some(t) => Ok(t.trim().to_string()),
            None => certs::new_token().map_err(cert_error),
        })
        .collect::<Result<Vec<String>, BuildError>>()?;
    let pairs: Vec<(&str, &str)> = ROLES
        .iter()
        .zip(&tokens)
        .map(|(r, t)| (*r, t.as_str()))
        .collect();
    let file = certs::auth_file(&pairs);
    let mut all = pairs.clone();
    all.push((AUTH_KEY, &file));
    planned.apply.push(Secret {
        metadata: owner.meta(tokens_secret_name(&owner.name), component::AUTH),
        type_: Some("Opaque".to_string()),
        data: data(&all),
        ..Secret::default()
    });
    planned.made.push(Made::Tokens);
    Ok(())
}

/// The CA certificate of a user's TLS Secret (cert-manager puts it under `ca.crt`).
pub fn user_ca(secret: &Secret, name: &str) -> Result<String, String> {
    value(Some(secret), CA_CERT_KEY).ok_or_else(|| {
        format!(
            "Secret {name} has no {CA_CERT_KEY}: the operator and the nodes verify each other with it"
        )
    })
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
