//! The generated CRD accepts the good example resources and rejects the bad ones.
//!
//! Two checks stand in for the API server: `schema_check` applies the structural OpenAPI rules the
//! schema uses (types, enums, bounds, patterns, required and unknown fields), and kube-cel evaluates
//! the `x-kubernetes-validations` CEL rules after applying the schema's defaults, as the API server
//! does. Every file in `fixtures/invalid/` starts with `# expect: <text>`, and the check must fail
//! with a message containing that text, so a fixture cannot pass by failing for the wrong reason.

mod schema_check;

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use rcluster_operator::crd::ReplicatedCluster;
use serde_json::{Value, json};

fn crd_json() -> Value {
    serde_json::to_value(ReplicatedCluster::crd()).unwrap()
}

fn schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every error the API server would report for `object`, structural first, then CEL.
fn errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema();
    let mut errs = schema_check::check(&schema, object);
    if errs.is_empty()
        && let Err(cel) = kube_cel::validate(&schema, object, old)
    {
        errs.extend(cel.into_vec().into_iter().map(|e| e.to_string()));
    }
    errs
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(kind),
    )
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "too few YAML files in {}", dir.display());
    files
}

fn load(path: &Path) -> (String, Value) {
    let text = std::fs::read_to_string(path).unwrap();
    let value: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    (text, value)
}

#[test]
fn valid_examples_are_accepted_and_deserialize() {
    for path in fixtures("valid") {
        let (_, object) = load(&path);
        let errs = errors(&object, None);
        assert!(errs.is_empty(), "{} rejected: {errs:#?}", path.display());
        let typed: Result<ReplicatedCluster, _> = serde_json::from_value(object);
        assert!(typed.is_ok(), "{}: {:?}", path.display(), typed.err());
    }
}

#[test]
fn published_example_clusters_are_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    for path in yaml_files(&dir) {
        let (_, object) = load(&path);
        if object["kind"] != "ReplicatedCluster" {
            continue;
        }
        let errs = errors(&object, None);
        assert!(errs.is_empty(), "{} rejected: {errs:#?}", path.display());
    }
}

#[test]
fn invalid_examples_are_rejected_for_the_stated_reason() {
    for path in fixtures("invalid") {
        let (text, object) = load(&path);
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks a '# expect: ' line", path.display()))
            .trim();
        let errs = errors(&object, None);
        assert!(
            errs.iter().any(|e| e.contains(expect)),
            "{}: expected an error containing {expect:?}, got {errs:#?}",
            path.display()
        );
    }
}

#[test]
fn what_the_operator_serializes_is_accepted() {
    let mut c = ReplicatedCluster::new("demo", Default::default());
    c.metadata.namespace = Some("shop".into());
    let object = serde_json::to_value(&c).unwrap();
    assert_eq!(errors(&object, None), Vec::<String>::new());
}

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "rcluster.dev/v1alpha1",
        "kind": "ReplicatedCluster",
        "metadata": {"name": "demo", "namespace": "shop"},
        "spec": spec,
    })
}

#[test]
fn storage_is_immutable_but_other_fields_may_change() {
    let old = cluster(json!({"storage": {"size": "1Gi"}}));
    let grown = cluster(json!({"storage": {"size": "2Gi"}}));
    let errs = errors(&grown, Some(&old));
    assert!(
        errs.iter().any(|e| e.contains("storage cannot change")),
        "{errs:#?}"
    );
    let classed = cluster(json!({"storage": {"size": "1Gi", "className": "fast"}}));
    assert!(!errors(&classed, Some(&old)).is_empty());

    let scaled =
        cluster(json!({"storage": {"size": "1Gi"}, "replicas": 5, "replication": {"ack": "all"}}));
    assert_eq!(errors(&scaled, Some(&old)), Vec::<String>::new());
}

#[test]
fn tls_is_fixed_at_creation_and_auth_may_change() {
    let unset = cluster(json!({}));
    let on = cluster(json!({"tls": {"enabled": true}}));
    let off = cluster(json!({"tls": {"enabled": false}}));
    // Set, changed or removed on a live cluster: refused (unset, the operator's recorded
    // decision runs, and an explicit value could contradict it).
    for (old, new) in [
        (&unset, &on),
        (&on, &unset),
        (&unset, &off),
        (&off, &unset),
        (&on, &off),
        (&off, &on),
    ] {
        let errs = errors(new, Some(old));
        assert!(
            errs.iter()
                .any(|e| e.contains("tls.enabled cannot be set, changed or removed")),
            "{old} -> {new}: {errs:#?}"
        );
    }
    // Left as it was: fine, whatever else changes.
    for same in [&unset, &on, &off] {
        let scaled = {
            let mut c = same.clone();
            c["spec"]["replicas"] = json!(5);
            c
        };
        assert_eq!(errors(&scaled, Some(same)), Vec::<String>::new());
    }
    let renamed = cluster(json!({"tls": {"enabled": true, "secretName": "mine"}}));
    assert_eq!(errors(&renamed, Some(&on)), Vec::<String>::new());
    let tokens = cluster(json!({"auth": {"enabled": true}}));
    assert_eq!(errors(&tokens, Some(&unset)), Vec::<String>::new());
    let no_tokens = cluster(json!({"auth": {"enabled": false}}));
    assert_eq!(errors(&no_tokens, Some(&tokens)), Vec::<String>::new());
}

#[test]
fn tls_and_auth_have_no_schema_default() {
    // A default would be applied to every stored cluster when read: clusters created plain http
    // by an older operator would turn https. Unset is the operator's decision, recorded.
    let s = schema();
    for feature in ["tls", "auth"] {
        let f = &s["properties"]["spec"]["properties"][feature];
        assert_eq!(f["properties"]["enabled"].get("default"), None, "{feature}");
        assert_eq!(f["default"], json!({}), "{feature}");
    }
}

#[test]
fn ack_rules_follow_the_replica_count() {
    let cases = [
        ("async", 1, true),
        ("quorum", 1, true),
        ("quorum", 2, true),
        ("one", 1, false),
        ("one", 2, true),
        ("all", 1, false),
        ("all", 2, true),
        ("all", 15, true),
    ];
    for (ack, replicas, ok) in cases {
        let obj = cluster(json!({"replicas": replicas, "replication": {"ack": ack}}));
        let errs = errors(&obj, None);
        assert_eq!(
            errs.is_empty(),
            ok,
            "ack {ack} replicas {replicas}: {errs:#?}"
        );
    }
}

#[test]
fn defaults_are_in_the_schema() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(spec["replicas"]["default"], 3);
    assert_eq!(
        spec["image"]["default"],
        rcluster_operator::crd::default_image()
    );
    assert_eq!(spec["imagePullPolicy"]["default"], "IfNotPresent");
    assert_eq!(spec["fsync"]["default"], "always");
    assert_eq!(spec["fsyncIntervalMs"]["default"], 10);
    assert_eq!(spec["serviceType"]["default"], "ClusterIP");
    assert_eq!(spec["storage"]["properties"]["size"]["default"], "1Gi");
    let replication = &spec["replication"]["properties"];
    assert_eq!(replication["ack"]["default"], "quorum");
    assert_eq!(replication["readConsistency"]["default"], "linearizable");
    let failover = &spec["failover"]["properties"];
    assert_eq!(failover["enabled"]["default"], true);
    assert_eq!(failover["detectionWindow"]["default"], "10s");
    assert_eq!(failover["allowDataLoss"]["default"], false);
    assert_eq!(
        spec["metrics"]["properties"]["serviceMonitor"]["properties"]["enabled"]["default"],
        false
    );
}

fn rules_at(schema: &Value) -> Vec<(String, String)> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap().to_string(),
                        r["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cel_rules_are_where_they_belong() {
    let s = schema();
    let root: Vec<String> = rules_at(&s).into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        root,
        [
            "size(self.metadata.name) <= 52",
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "!has(self.spec.shards) || self.spec.shards <= 1 || size(self.metadata.name) <= 48",
        ]
    );
    let spec = &s["properties"]["spec"];
    let spec_rules: Vec<String> = rules_at(spec).into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        spec_rules,
        [
            "!(self.replication.ack in ['one', 'all']) || self.replicas >= 2",
            "!self.failover.allowDataLoss || self.replication.ack in ['async', 'one']",
            "(has(self.tls) && has(self.tls.enabled)) == (has(oldSelf.tls) && has(oldSelf.tls.enabled)) && (!has(self.tls) || !has(self.tls.enabled) || self.tls.enabled == oldSelf.tls.enabled)",
        ]
    );
    for feature in ["tls", "auth"] {
        let rules = rules_at(&spec["properties"][feature]);
        assert_eq!(
            rules[0].0,
            "!has(self.secretName) || !has(self.enabled) || self.enabled"
        );
    }
    let storage: Vec<String> = rules_at(&spec["properties"]["storage"])
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(storage, ["self == oldSelf"]);
    let window = rules_at(&spec["properties"]["failover"]["properties"]["detectionWindow"]);
    assert_eq!(
        window[0].0,
        "duration(self) >= duration('1s') && duration(self) <= duration('10m')"
    );
    let all = [
        rules_at(&s),
        rules_at(spec),
        rules_at(&spec["properties"]["storage"]),
        window,
    ]
    .concat();
    for (rule, message) in all {
        assert!(!message.is_empty(), "rule {rule:?} has no message");
    }
}

#[test]
fn names_subresources_and_columns() {
    let crd = crd_json();
    let spec = &crd["spec"];
    assert_eq!(crd["metadata"]["name"], "replicatedclusters.rcluster.dev");
    assert_eq!(spec["group"], "rcluster.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "ReplicatedCluster");
    assert_eq!(spec["names"]["plural"], "replicatedclusters");
    assert_eq!(spec["names"]["shortNames"], json!(["rcl", "rcluster"]));
    assert_eq!(spec["names"]["categories"], json!(["rcluster"]));
    // Short names of built-in kinds (kubectl api-resources) must not be shadowed.
    let builtin = [
        "rc",
        "cs",
        "cm",
        "ep",
        "ev",
        "limits",
        "ns",
        "no",
        "pvc",
        "pv",
        "po",
        "podtemplates",
        "quota",
        "sa",
        "svc",
        "crd",
        "crds",
        "deploy",
        "ds",
        "rs",
        "sts",
        "hpa",
        "cj",
        "csr",
        "ing",
        "netpol",
        "pdb",
        "pc",
        "sc",
        "rb",
        "crb",
        "ro",
    ];
    for short in spec["names"]["shortNames"].as_array().unwrap() {
        assert!(
            !builtin.contains(&short.as_str().unwrap()),
            "{short} clashes"
        );
    }
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        })
    );
    let columns: Vec<(String, String, String)> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
                c["jsonPath"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("Shards", "integer", ".spec.shards"),
        ("Replicas", "integer", ".spec.replicas"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Primary", "string", ".status.primary"),
        ("Term", "integer", ".status.term"),
        ("Phase", "string", ".status.phase"),
        ("Reshard", "string", ".status.reshard.progress"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(columns, expected);
}

#[test]
fn status_lists_merge_by_key() {
    let status = &schema()["properties"]["status"]["properties"];
    assert_eq!(status["members"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        status["members"]["x-kubernetes-list-map-keys"],
        json!(["name"])
    );
    assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        status["conditions"]["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
    assert_eq!(
        status["phase"]["enum"],
        json!([
            "Pending",
            "Running",
            "Degraded",
            "FailingOver",
            "Unavailable"
        ])
    );
}
