//! `spec.tls` and `spec.auth`: TLS on every node's listener and access tokens with roles.
//!
//! Both are on by default on Kubernetes, decided once per cluster and recorded in
//! `status.security` ([`SecurityStatus`]); `ReplicatedCluster::security` ([`in_force`]) is the
//! one answer to "does this cluster run with TLS, with tokens" that every stage reads.
//!
//! Why not a schema default (`enabled: true`): the API server applies defaults to stored objects
//! whenever it reads them, so every cluster created plain http by an older operator would turn
//! https on upgrade. Instead `enabled` is optional; absent means "the operator's default", which
//! the operator applies to a new cluster only (one without a status), before it creates
//! anything, and records. A cluster with a status but no record (created by an older operator)
//! runs what its spec says explicitly, absent being off, and gets that recorded. From then on the
//! record is what runs, whatever a later operator's default. `enabled: false` is the opt-out (a
//! dev setup).
//!
//! On without a `secretName`, the operator generates what is needed (a CA, a node certificate it
//! renews, a token per role) in Secrets the cluster owns; with one, it mounts the user's Secret
//! (cert-manager's Certificate writes exactly the `kubernetes.io/tls` layout asked for).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// TLS for client and internal traffic alike.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.secretName) || !has(self.enabled) || self.enabled")
    .message("tls.secretName cannot go with tls.enabled: false"))]
pub struct TlsSpec {
    /// Serve https only. Unset: the operator's default, on for a new cluster (recorded in
    /// `status.security`; a cluster created by an older operator keeps what it runs). `false`
    /// opts out. Fixed at creation: the members of a cluster all speak http or all https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A `kubernetes.io/tls` Secret of yours with `tls.crt`, `tls.key` and `ca.crt` (e.g. from a
    /// cert-manager Certificate), valid for `*.<name>-headless.<namespace>.svc`. When unset the
    /// operator makes a CA (`<name>-ca`) and a node certificate (`<name>-tls`) and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

/// Access tokens: every client request needs `Authorization: Bearer TOKEN` of a role that allows
/// it (read < write < admin). Health endpoints and `/metrics` stay open.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.secretName) || !has(self.enabled) || self.enabled")
    .message("auth.secretName cannot go with auth.enabled: false"))]
pub struct AuthSpec {
    /// Unset: the operator's default, on for a new cluster (recorded in `status.security`).
    /// `false` opts out. May change on a live cluster (the pods restart one at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A Secret of yours whose key `auth` is the nodes' token file (`TOKEN ROLE` per line). When
    /// unset the operator makes `<name>-tokens` with keys `read`, `write`, `admin` and `auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

impl TlsSpec {
    /// What the spec asks for explicitly: `enabled`, or on when it names a Secret.
    pub fn asked(&self) -> Option<bool> {
        self.enabled.or(self.secret_name.as_ref().map(|_| true))
    }
}

impl AuthSpec {
    /// What the spec asks for explicitly: `enabled`, or on when it names a Secret.
    pub fn asked(&self) -> Option<bool> {
        self.enabled.or(self.secret_name.as_ref().map(|_| true))
    }
}

/// `status.security`: whether the cluster runs with TLS and with access tokens, as decided
/// once by the operator (see the module documentation).
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub struct SecurityStatus {
    /// The nodes serve https only (fixed for the cluster's life).
    pub tls: bool,
    /// Every client request needs an access token.
    pub auth: bool,
}

impl SecurityStatus {
    /// The operator's default for a new cluster on Kubernetes.
    pub const ON: SecurityStatus = SecurityStatus {
        tls: true,
        auth: true,
    };
    pub const OFF: SecurityStatus = SecurityStatus {
        tls: false,
        auth: false,
    };
}

/// TLS and tokens as a cluster runs them, from its spec and its record (`status.security`):
/// TLS, the record once there is one (it never changes); tokens, an explicit spec (they may be
/// switched on a live cluster), else the record. Neither recorded nor asked for: off, what a
/// cluster created before the record runs.
pub fn in_force(
    tls: &TlsSpec,
    auth: &AuthSpec,
    recorded: Option<SecurityStatus>,
) -> SecurityStatus {
    SecurityStatus {
        tls: recorded.map_or_else(|| tls.asked().unwrap_or(false), |r| r.tls),
        auth: auth.asked().or(recorded.map(|r| r.auth)).unwrap_or(false),
    }
}

/// What to record for a new cluster (no status yet: nothing was created for it): what its spec
/// asks for explicitly, and `default` for the rest.
pub fn for_new_cluster(tls: &TlsSpec, auth: &AuthSpec, default: SecurityStatus) -> SecurityStatus {
    SecurityStatus {
        tls: tls.asked().unwrap_or(default.tls),
        auth: auth.asked().unwrap_or(default.auth),
    }
}
