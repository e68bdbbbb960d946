//! Optional prometheus-operator ServiceMonitor `<cluster>`.
//!
//! `monitoring.coreos.com` types are not in k8s-openapi, so this is a `DynamicObject`. It scrapes
//! the headless Service, which lists members that are not ready: those are the ones whose metrics
//! matter most.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::headless_service_name;
use super::security::{CA_CERT_KEY, tls_secret};
use super::{
    BuildError, INSTANCE_LABEL, NAME_LABEL, Owner, PORT_NAME, SERVICE_LABEL, component,
    service::kind, service_monitor_name,
};
use crate::crd::{ReplicatedCluster, SHARD_LABEL};

/// A Kubernetes label name as Prometheus' service discovery spells it.
fn prometheus_label(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The ServiceMonitor kind, for building `Api<DynamicObject>` in the controller.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ))
}

/// `None` unless `spec.metrics.serviceMonitor.enabled`.
pub fn build(cluster: &ReplicatedCluster) -> Result<Option<DynamicObject>, BuildError> {
    let sm = &cluster.spec.metrics.service_monitor;
    if !sm.enabled {
        return Ok(None);
    }
    let owner = Owner::new(cluster)?;
    let mut metadata = owner.meta(service_monitor_name(&owner.name), component::METRICS);
    if let Some(labels) = metadata.labels.as_mut() {
        // User labels first, so they cannot overwrite the ones the operator relies on.
        let ours = std::mem::replace(labels, sm.labels.clone());
        labels.extend(ours);
    }
    let selector = LabelSelector {
        match_labels: Some(
            [
                (NAME_LABEL, super::APP_NAME),
                (INSTANCE_LABEL, owner.name.as_str()),
                (SERVICE_LABEL, kind::HEADLESS),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        ..LabelSelector::default()
    };
    // The `rcluster` label names the cluster in every series, as the chart's PodMonitor does, so the
    // dashboard and alerts can group by cluster whichever way the nodes are scraped.
    // And `shard` names the shard, for the per-shard panels and alerts.
    let relabel = json!([{
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "targetLabel": "rcluster"
    }, {
        "sourceLabels": [format!("__meta_kubernetes_pod_label_{}", prometheus_label(SHARD_LABEL))],
        "targetLabel": "shard"
    }]);
    let tls = tls_secret(cluster, &owner.name);
    let scheme = super::scheme(tls.is_some());
    let mut endpoint =
        json!({"port": PORT_NAME, "path": "/metrics", "scheme": scheme, "relabelings": relabel});
    if let Some(secret) = tls {
        // Targets are pod IPs; the certificate names the headless Service's hosts.
        endpoint["tlsConfig"] = json!({
            "ca": {"secret": {"name": secret, "key": CA_CERT_KEY}},
            "serverName": format!("{}.{}.svc", headless_service_name(&owner.name), owner.namespace),
        });
    }
    if let Some(interval) = &sm.interval {
        endpoint["interval"] = json!(interval);
    }
    let mut obj = DynamicObject::new(&service_monitor_name(&owner.name), &api_resource())
        .data(json!({"spec": {"selector": selector, "endpoints": [endpoint]}}));
    obj.metadata = metadata;
    Ok(Some(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::cluster;

    #[test]
    fn disabled_by_default() {
        assert_eq!(build(&cluster("{}")).unwrap(), None);
        assert_eq!(
            build(&cluster(
                "{metrics: {serviceMonitor: {enabled: false, interval: 5s}}}"
            ))
            .unwrap(),
            None
        );
    }

    #[test]
    fn enabled_scrapes_the_headless_service() {
        let sm = build(&cluster("{metrics: {serviceMonitor: {enabled: true}}}"))
            .unwrap()
            .unwrap();
        let v = serde_json::to_value(&sm).unwrap();
        assert_eq!(v["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(v["kind"], "ServiceMonitor");
        assert_eq!(v["metadata"]["name"], "demo");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(
            v["metadata"]["labels"]["app.kubernetes.io/component"],
            "metrics"
        );
        assert_eq!(
            v["spec"],
            json!({
                "selector": {"matchLabels": {
                    "app.kubernetes.io/name": "rcluster",
                    "app.kubernetes.io/instance": "demo",
                    "rcluster.dev/service": "headless",
                }},
                "endpoints": [{"port": "http", "path": "/metrics", "scheme": "http",
                    "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"], "targetLabel": "rcluster"},
                                    {"sourceLabels": ["__meta_kubernetes_pod_label_rcluster_dev_shard"], "targetLabel": "shard"}]}],
            })
        );
    }

    #[test]
    fn interval_and_labels_are_passed_through_without_overriding_ours() {
        let sm = build(&cluster(
            "{metrics: {serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom, app.kubernetes.io/instance: evil}}}}",
        ))
        .unwrap()
        .unwrap();
        let labels = sm.metadata.labels.clone().unwrap();
        assert_eq!(labels["release"], "prom");
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
        let v = serde_json::to_value(&sm).unwrap();
        assert_eq!(v["spec"]["endpoints"][0]["interval"], "15s");
    }

    #[test]
    fn api_resource_is_servicemonitors() {
        let ar = api_resource();
        assert_eq!(ar.group, "monitoring.coreos.com");
        assert_eq!(ar.plural, "servicemonitors");
        assert_eq!(ar.api_version, "monitoring.coreos.com/v1");
    }
}
