{{/*
Rules of the operator's ClusterRole (scope "cluster") or Roles (scope "namespace").
Identical to manifests/rbac/clusterrole.yaml; .ci/check-manifests.sh fails when they differ.
*/}}
{{- define "rcluster.rbacRules" -}}
# Watch the clusters it reconciles; patch/update remove the switchover annotation when done.
- apiGroups: ["rcluster.dev"]
  resources: ["replicatedclusters"]
  verbs: ["get", "list", "watch", "patch", "update"]
# The term is written to status with optimistic concurrency before any promotion.
- apiGroups: ["rcluster.dev"]
  resources: ["replicatedclusters/status"]
  verbs: ["get", "patch", "update"]
# blockOwnerDeletion on owned objects needs this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["rcluster.dev"]
  resources: ["replicatedclusters/finalizers"]
  verbs: ["update"]
# Owned objects, applied with server-side apply.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Pods: readiness, the rcluster.dev/role label, and rolling (the StatefulSet uses OnDelete).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch", "delete"]
# The volumes of a shard removed by a resharding (it owns no slot any more): a shard added
# later must start empty, not on an old log.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "delete"]
# Events for every decision.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Leader election.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update", "patch"]
# Optional per-cluster ServiceMonitor (spec.metrics.serviceMonitor).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}

{{/* Leader election and events in the operator's own namespace, for scope "namespace". */}}
{{- define "rcluster.rbacOwnNamespaceRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
