//! Security stage (`spec.tls`, `spec.auth`), before the owned objects are applied: reads the
//! Secrets the pods will mount, makes what is missing or due (`resources::security::plan`: a CA,
//! a node certificate renewed when a third of its lifetime is left, the access tokens) and
//! returns the CA the operator verifies its nodes with. With both features off it makes no API
//! call at all.
//!
//! A renewed certificate reaches running nodes without a restart: the kubelet rewrites the files
//! of a Secret volume (mounted as a directory, not `subPath`) within its sync period, and the node
//! reloads `--tls-cert`/`--tls-key` when their content changes (`node/src/tls.rs`). The token file
//! is reloaded the same way. The operator itself needs no access token: the cluster Secret's token
//! counts as admin on every node.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use rcluster_client::tls::Trust;

use super::apply::apply_one;
use super::error::Error;
use crate::crd::{ReplicatedCluster, SecurityStatus};
use crate::resources::security::{
    self, CA_CERT_KEY, Existing, Made, ca_secret_name, tls_secret_name, tokens_secret_name,
};

/// `reason` of the events this stage emits.
pub mod reason {
    pub const CERTIFICATE_ISSUED: &str = "CertificateIssued";
    pub const CERTIFICATE_RENEWED: &str = "CertificateRenewed";
    pub const TOKENS_CREATED: &str = "AccessTokensCreated";
}

/// `cluster` with its TLS and tokens decided and recorded in its status (a new cluster gets an
/// empty status to hold them), so that every stage reads them with
/// [`ReplicatedCluster::security`] and every status written records them. Nothing is written
/// here: the status stage does, in the same reconcile; a reconcile that fails before it decides
/// again from the same inputs the next time.
pub fn decided(cluster: &ReplicatedCluster, default: SecurityStatus) -> ReplicatedCluster {
    let decision = cluster.decide_security(default);
    let mut decided = cluster.clone();
    decided.status.get_or_insert_with(Default::default).security = Some(decision);
    decided
}

/// What the rest of the reconcile needs from this stage.
#[derive(Default)]
pub struct Security {
    /// The CA that verifies the nodes' certificates (TLS on).
    pub trust: Option<Trust>,
    /// What was made, told once.
    pub events: Vec<Event>,
}

async fn get(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    Ok(api.get_opt(name).await?)
}

pub async fn prepare(
    client: &Client,
    cluster: &ReplicatedCluster,
    ns: &str,
    name: &str,
    shards: u32,
    now_secs: u64,
) -> Result<Security, Error> {
    let spec = &cluster.spec;
    let on = cluster.security();
    if !on.tls && !on.auth {
        return Ok(Security::default());
    }
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let mut existing = Existing::default();
    let mut user_ca = None;
    if on.tls {
        match &spec.tls.secret_name {
            Some(user) => {
                let secret = get(&api, user).await?.ok_or_else(|| {
                    Error::Security(format!(
                        "Secret {user} named by spec.tls.secretName does not exist"
                    ))
                })?;
                user_ca = Some(security::user_ca(&secret, user).map_err(Error::Security)?);
            }
            None => {
                existing.ca = get(&api, &ca_secret_name(name)).await?;
                existing.tls = get(&api, &tls_secret_name(name)).await?;
            }
        }
    }
    if on.auth && spec.auth.secret_name.is_none() {
        existing.tokens = get(&api, &tokens_secret_name(name)).await?;
    }
    let planned = security::plan(cluster, shards, &existing, now_secs)?;
    for secret in &planned.apply {
        apply_one(client, ns, secret).await?;
    }
    let trust = match planned.ca_pem.or(user_ca) {
        Some(pem) => Some(Trust::from_pem(pem.as_bytes()).map_err(|e| {
            Error::Security(format!(
                "the {CA_CERT_KEY} of the cluster's TLS Secret: {e}"
            ))
        })?),
        None => None,
    };
    Ok(Security {
        trust,
        events: planned
            .made
            .iter()
            .filter_map(|m| event(m, ns, name))
            .collect(),
    })
}

fn event(made: &Made, ns: &str, cluster: &str) -> Option<Event> {
    let (reason, note) = match made {
        Made::Ca => return None,
        Made::Certificate { not_after, renewed } => {
            let until = crate::controller::status::time_from_ms(not_after * 1000).0;
            let (reason, what) = if *renewed {
                (
                    reason::CERTIFICATE_RENEWED,
                    "renewed (less than a third of its lifetime was left; the nodes reload it without a restart)",
                )
            } else {
                (reason::CERTIFICATE_ISSUED, "issued")
            };
            let note = format!(
                "node certificate in Secret {} {what}, valid until {}; clients trust the CA: \
                 kubectl get secret {} -n {ns} -o jsonpath='{{.data.ca\\.crt}}' | base64 -d",
                tls_secret_name(cluster),
                until,
                ca_secret_name(cluster),
            );
            (reason, note)
        }
        Made::Tokens => (
            reason::TOKENS_CREATED,
            format!(
                "access tokens in Secret {0} (keys read, write, admin): \
                 kubectl get secret {0} -n {ns} -o jsonpath='{{.data.write}}' | base64 -d",
                tokens_secret_name(cluster)
            ),
        ),
    };
    Some(Event {
        type_: EventType::Normal,
        reason: reason.to_string(),
        note: Some(note),
        action: "Secure".to_string(),
        secondary: None,
    })
}
