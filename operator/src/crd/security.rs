//! `spec.tls` and `spec.auth`: TLS on every node's listener and access tokens with roles.
//!
//! Both are off by default, so a cluster created before them keeps working unchanged. Enabled
//! without a `secretName`, the operator generates what is needed (a CA, a node certificate it
//! renews, a token per role) in Secrets the cluster owns; with one, it mounts the user's Secret
//! (cert-manager's Certificate writes exactly the `kubernetes.io/tls` layout asked for).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// TLS for client and internal traffic alike.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.secretName) || self.enabled")
    .message("tls.secretName needs tls.enabled: true"))]
pub struct TlsSpec {
    /// Serve https only. Fixed at creation: the members of a cluster all speak http or all https.
    #[serde(default)]
    pub enabled: bool,
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
#[x_kube(validation = kube::core::Rule::new("!has(self.secretName) || self.enabled")
    .message("auth.secretName needs auth.enabled: true"))]
pub struct AuthSpec {
    #[serde(default)]
    pub enabled: bool,
    /// A Secret of yours whose key `auth` is the nodes' token file (`TOKEN ROLE` per line). When
    /// unset the operator makes `<name>-tokens` with keys `read`, `write`, `admin` and `auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}
