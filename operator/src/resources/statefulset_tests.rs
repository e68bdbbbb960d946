use super::*;
use crate::resources::test_support::cluster;
use k8s_openapi::api::core::v1::Toleration;

fn sts(spec: &str) -> StatefulSet {
    let c = cluster(spec);
    let shard = Shard {
        id: 0,
        count: 1,
        replicas: c.spec.replicas,
    };
    build(&c, shard).unwrap()
}

fn pod_spec(s: &StatefulSet) -> PodSpec {
    s.spec.clone().unwrap().template.spec.unwrap()
}

fn container(s: &StatefulSet) -> Container {
    let pod = pod_spec(s);
    assert_eq!(pod.containers.len(), 1);
    pod.containers[0].clone()
}

fn claim(s: &StatefulSet) -> PersistentVolumeClaimSpec {
    let claims = s.spec.clone().unwrap().volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    claims[0].spec.clone().unwrap()
}

#[test]
fn defaults_give_a_stable_parallel_on_delete_statefulset() {
    let s = sts("{}");
    assert_eq!(s.metadata.name.as_deref(), Some("demo"));
    let spec = s.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("demo-headless"));
    assert_eq!(spec.selector.match_labels, Some(pod_selector("demo")));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let update = spec.update_strategy.unwrap();
    assert_eq!(update.type_.as_deref(), Some("OnDelete"));
    assert_eq!(update.rolling_update, None);
    let retention = spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in pod_selector("demo") {
        assert_eq!(
            labels.get(&k),
            Some(&v),
            "template lacks selector label {k}"
        );
    }
    assert!(
        !labels.contains_key(crate::crd::ROLE_LABEL),
        "the operator sets the role label, not the template"
    );
}

#[test]
fn node_container_runs_rcluster_node_with_the_documented_command_line() {
    let c = container(&sts("{}"));
    assert_eq!(c.name, "node");
    assert_eq!(
        c.image.as_deref(),
        Some(crate::crd::default_image().as_str())
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(c.command, None, "the image entrypoint is rcluster-node");
    assert_eq!(
        c.args.unwrap(),
        [
            "--data-dir",
            "/var/lib/rcluster",
            "--listen",
            "0.0.0.0:7000",
            "--config",
            "/etc/rcluster/cluster.json",
            "--name",
            "$(POD_NAME)",
            "--secret-file",
            "/var/run/secrets/rcluster/token",
            "--log-json",
        ]
    );
    let env = c.env.unwrap();
    let fields: Vec<(&str, String)> = env
        .iter()
        .map(|e| {
            let from = e.value_from.as_ref().unwrap();
            let source = match (&from.field_ref, &from.secret_key_ref) {
                (Some(f), None) => f.field_path.clone(),
                (None, Some(s)) => format!("secret {} key {}", s.name, s.key),
                other => panic!("unexpected source {other:?}"),
            };
            (e.name.as_str(), source)
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("POD_NAME", "metadata.name".to_string()),
            ("POD_NAMESPACE", "metadata.namespace".to_string()),
            (
                "RCLUSTER_CLUSTER_ID",
                "secret demo-secret key cluster-id".to_string()
            ),
        ]
    );
    let ports = c.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].container_port, 7000);
    assert_eq!(c.resources, None);
}

#[test]
fn probes_hit_livez_and_readyz_on_the_http_port() {
    let c = container(&sts("{}"));
    let path_port = |p: Option<Probe>| {
        let get = p.unwrap().http_get.unwrap();
        (get.path.unwrap(), get.port)
    };
    let http = IntOrString::String("http".into());
    assert_eq!(
        path_port(c.liveness_probe.clone()),
        ("/livez".into(), http.clone())
    );
    assert_eq!(
        path_port(c.readiness_probe.clone()),
        ("/readyz".into(), http.clone())
    );
    assert_eq!(path_port(c.startup_probe.clone()), ("/livez".into(), http));
    let startup = c.startup_probe.unwrap();
    let allowed = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
    assert!(
        allowed >= 300,
        "startup allows only {allowed}s for log replay"
    );
}

#[test]
fn config_secret_and_data_are_mounted_where_the_args_point() {
    let s = sts("{}");
    let c = container(&s);
    let mounts: Vec<(String, String, Option<bool>)> = c
        .volume_mounts
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.mount_path, m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("data".into(), "/var/lib/rcluster".into(), None),
            ("config".into(), "/etc/rcluster".into(), Some(true)),
            (
                "secret".into(),
                "/var/run/secrets/rcluster".into(),
                Some(true)
            ),
            ("tmp".into(), "/tmp".into(), None),
        ]
    );
    let volumes = pod_spec(&s).volumes.unwrap();
    let config = volumes[0].config_map.clone().unwrap();
    assert_eq!(config.name, "demo-config");
    assert_eq!(config.items.unwrap()[0].path, "cluster.json");
    let secret = volumes[1].secret.clone().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("demo-secret"));
    assert_eq!(secret.items.unwrap()[0].path, "token");
    assert_eq!(secret.default_mode, Some(0o440));
    assert!(volumes[2].empty_dir.is_some());
}

#[test]
fn pods_run_as_non_root_with_a_read_only_root() {
    let s = sts("{}");
    let pod = pod_spec(&s);
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(RUN_AS));
    assert_eq!(psc.fs_group, Some(RUN_AS));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let csc = container(&s).security_context.unwrap();
    assert_eq!(csc.run_as_non_root, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(
        csc.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(pod.enable_service_links, Some(false));
}

#[test]
fn default_scheduling_spreads_members_and_sets_nothing_else() {
    let pod = pod_spec(&sts("{}"));
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap()[0];
    assert_eq!(
        term.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(
        term.pod_affinity_term
            .label_selector
            .clone()
            .unwrap()
            .match_labels,
        Some(pod_selector("demo"))
    );
    assert_eq!(pod.tolerations, None);
    assert_eq!(pod.node_selector, None);
}

#[test]
fn scheduling_options_are_passed_through() {
    let s = sts(r#"
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: disk, operator: In, values: [ssd]}
tolerations:
  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}
nodeSelector: {zone: a}
"#);
    let pod = pod_spec(&s);
    let affinity = pod.affinity.unwrap();
    assert!(
        affinity.pod_anti_affinity.is_none(),
        "user affinity replaces the default"
    );
    let terms = affinity
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    assert_eq!(terms[0].match_expressions.as_ref().unwrap()[0].key, "disk");
    assert_eq!(
        pod.tolerations.unwrap(),
        vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("db".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }]
    );
    assert_eq!(
        pod.node_selector.unwrap(),
        BTreeMap::from([("zone".to_string(), "a".to_string())])
    );
}

#[test]
fn replicas_image_pull_policy_and_resources_are_passed_through() {
    let s = sts(r#"
replicas: 5
image: registry.local/rcluster-node:dev
imagePullPolicy: Always
resources:
  requests: {cpu: 250m, memory: 256Mi}
  limits: {memory: 512Mi}
"#);
    assert_eq!(s.spec.clone().unwrap().replicas, Some(5));
    let c = container(&s);
    assert_eq!(c.image.as_deref(), Some("registry.local/rcluster-node:dev"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let q = |v: &str| Quantity(v.to_string());
    assert_eq!(
        c.resources.unwrap(),
        ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q("250m")),
                ("memory".to_string(), q("256Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), q("512Mi"))])),
            ..ResourceRequirements::default()
        }
    );
    let never = container(&sts("{imagePullPolicy: Never}"));
    assert_eq!(never.image_pull_policy.as_deref(), Some("Never"));
}

/// The resource the node's worker-thread count comes from, if any.
fn worker_threads_from(c: &Container) -> Option<String> {
    let env = c.env.as_ref().unwrap();
    let var = env.iter().find(|e| e.name == "RCLUSTER_WORKER_THREADS")?;
    let r = var.value_from.as_ref()?.resource_field_ref.as_ref()?;
    assert_eq!(r.container_name.as_deref(), Some(CONTAINER_NAME));
    assert_eq!(r.divisor, Some(Quantity("1".into())), "whole CPUs");
    Some(r.resource.clone())
}

#[test]
fn the_node_gets_a_worker_thread_per_cpu_of_its_limit_else_its_request() {
    for (resources, want) in [
        ("{}", None),
        (
            "{resources: {requests: {memory: 1Gi}, limits: {memory: 2Gi}}}",
            None,
        ),
        ("{resources: {requests: {cpu: 250m}}}", Some("requests.cpu")),
        (
            "{resources: {requests: {cpu: 2}, limits: {memory: 1Gi}}}",
            Some("requests.cpu"),
        ),
        ("{resources: {limits: {cpu: 4}}}", Some("limits.cpu")),
        (
            "{resources: {requests: {cpu: 1}, limits: {cpu: 3}}}",
            Some("limits.cpu"),
        ),
    ] {
        let c = container(&sts(resources));
        assert_eq!(worker_threads_from(&c).as_deref(), want, "{resources}");
    }
}

#[test]
fn each_pod_gets_a_volume_of_the_requested_size_and_class() {
    let default = claim(&sts("{}"));
    assert_eq!(
        default.access_modes,
        Some(vec!["ReadWriteOnce".to_string()])
    );
    assert_eq!(default.storage_class_name, None);
    let requests = default.resources.unwrap().requests.unwrap();
    assert_eq!(requests["storage"], Quantity("1Gi".into()));

    let custom = claim(&sts("{storage: {size: 20Gi, className: fast-ssd}}"));
    assert_eq!(custom.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        custom.resources.unwrap().requests.unwrap()["storage"],
        Quantity("20Gi".into())
    );
}

#[test]
fn replication_and_fsync_settings_travel_in_the_config_map_only() {
    let base = sts("{replicas: 3}");
    for spec in [
        "{replicas: 3, replication: {ack: all, readConsistency: eventual}}",
        "{replicas: 3, fsync: interval, fsyncIntervalMs: 50}",
        "{replicas: 3, failover: {enabled: false, detectionWindow: 30s}}",
        "{replicas: 3, serviceType: NodePort}",
    ] {
        assert_eq!(sts(spec), base, "{spec} changed the StatefulSet");
    }
}

#[test]
fn shard_k_has_its_own_set_config_and_labels_and_one_shard_keeps_the_old_template() {
    let c = cluster("{shards: 3, replicas: 2}");
    let shard = Shard {
        id: 2,
        count: 3,
        replicas: 2,
    };
    let s = build(&c, shard).unwrap();
    assert_eq!(s.metadata.name.as_deref(), Some("demo-s2"));
    let spec = s.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.service_name.as_deref(), Some("demo-headless"));
    let selector = spec.selector.match_labels.unwrap();
    assert_eq!(selector[SHARD_LABEL], "2");
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in &selector {
        assert_eq!(labels.get(k), Some(v), "the template matches the selector");
    }
    let config = pod_spec(&s)
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "config")
        .unwrap();
    assert_eq!(config.config_map.unwrap().name, "demo-s2-config");

    // One shard: selector and pod labels as before shards (the selector is immutable, and a
    // changed template would restart every pod of an existing cluster).
    let one = sts("{}");
    let spec = one.spec.unwrap();
    assert_eq!(spec.selector.match_labels, Some(pod_selector("demo")));
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert!(!labels.contains_key(SHARD_LABEL));
}
