//! `spec.tls` and `spec.auth`: the Secrets the operator makes (once, owned by the cluster, by
//! server-side apply), what the pods mount and run with, a user's Secrets used instead, and the
//! node certificate renewed when a third of its lifetime is left.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::fixtures::{Expect, Log, finish_keep, not_found, serve};
use super::world::*;
use crate::certs::CERT_LIFETIME_SECS;
use crate::controller::reconcile;

const CORE: &str = "/api/v1/namespaces/shop";
/// Unix milliseconds of the first reconcile.
pub(super) const T0_MS: u64 = 1_800_000_000_000;

/// The Secrets the API server holds, by name.
pub(super) type Store = Arc<Mutex<BTreeMap<String, Value>>>;

pub(super) fn get(store: &Store, name: &'static str) -> Expect {
    let store = store.clone();
    Expect::get(&format!("{CORE}/secrets/{name}")).respond(move |_| {
        match store.lock().unwrap().get(name).cloned() {
            Some(s) => (200, s),
            None => not_found(),
        }
    })
}

/// A server-side apply of Secret `name`, kept in `store`; `check` sees the body.
pub(super) fn apply_secret(
    store: &Store,
    name: &'static str,
    check: impl FnOnce(&Value) + Send + 'static,
) -> Expect {
    let store = store.clone();
    apply(&format!("{CORE}/secrets"), "Secret", name)
        .check(check)
        .respond(move |b| {
            store.lock().unwrap().insert(name.to_string(), b.clone());
            (200, b)
        })
}

pub(super) fn decoded(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].clone();
    assert!(b64.is_string(), "{key}: {secret}");
    let bytes: k8s_openapi::ByteString = serde_json::from_value(b64).unwrap();
    String::from_utf8(bytes.0).unwrap()
}

pub(super) fn args(sts: &Value) -> Vec<String> {
    serde_json::from_value(sts["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .unwrap()
}

/// The names of the Secret volumes of the pod template, by volume name.
pub(super) fn secret_volumes(sts: &Value) -> BTreeMap<String, (String, i64)> {
    let vols = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    vols.iter()
        .filter(|v| v.get("secret").is_some())
        .map(|v| {
            let s = &v["secret"];
            (
                v["name"].as_str().unwrap().to_string(),
                (
                    s["secretName"].as_str().unwrap().to_string(),
                    s["defaultMode"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// A reconcile's opening with the security stage between the cluster Secret and the pods.
pub(super) fn opening_with(
    w: &Shared,
    first: bool,
    security: Vec<Expect>,
    sts: impl FnOnce(&Value) + Send + 'static,
) -> Vec<Expect> {
    let mut v = vec![get_secret(w)];
    v.extend(security);
    v.push(list_pods(w));
    v.extend(apply_stage(w, first, sts));
    v
}

fn secure_spec() -> Value {
    json!({"replicas": 3, "tls": {"enabled": true}, "auth": {"enabled": true}})
}

#[tokio::test]
async fn generated_secrets_are_made_once_owned_and_mounted() {
    let w = world(cluster(secure_spec(), None), vec![], None);
    let log = Log::default();
    let clock = Arc::new(AtomicU64::new(T0_MS));
    let (ctx, handle) = context(BTreeMap::new(), clock.clone());
    let store = Store::default();

    let security = vec![
        get(&store, "demo-ca"),
        get(&store, "demo-tls"),
        get(&store, "demo-tokens"),
        apply_secret(&store, "demo-ca", |b| {
            assert_eq!(b["type"], "Opaque");
            assert_eq!(
                b["metadata"]["labels"]["app.kubernetes.io/component"],
                "tls"
            );
            assert!(decoded(b, "ca.crt").contains("BEGIN CERTIFICATE"));
            assert!(decoded(b, "ca.key").contains("PRIVATE KEY"));
        }),
        apply_secret(&store, "demo-tls", |b| {
            assert_eq!(b["type"], "kubernetes.io/tls");
            let names = b["metadata"]["annotations"]["rcluster.dev/names"]
                .as_str()
                .unwrap();
            assert!(names.starts_with("*.demo-headless.shop.svc,"), "{names}");
            assert!(names.contains(",demo-rw.shop.svc,"), "{names}");
        }),
        apply_secret(&store, "demo-tokens", |b| {
            let file = decoded(b, "auth");
            for role in ["read", "write", "admin"] {
                let token = decoded(b, role);
                assert!(file.contains(&format!("{token} {role}\n")), "{file}");
            }
        }),
    ];
    let mut script = opening_with(&w, true, security, |sts| {
        let a = args(sts).join(" ");
        for flag in [
            "--tls-cert /var/run/secrets/rcluster-tls/tls.crt",
            "--tls-key /var/run/secrets/rcluster-tls/tls.key",
            "--tls-ca /var/run/secrets/rcluster-tls/ca.crt",
            "--auth-file /var/run/secrets/rcluster-auth/auth",
        ] {
            assert!(a.contains(flag), "{flag} missing: {a}");
        }
        let vols = secret_volumes(sts);
        assert_eq!(vols["tls"], ("demo-tls".to_string(), 0o440));
        assert_eq!(vols["auth"], ("demo-tokens".to_string(), 0o440));
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        let mounts = c["volumeMounts"].as_array().unwrap();
        for (name, path) in [
            ("tls", "/var/run/secrets/rcluster-tls"),
            ("auth", "/var/run/secrets/rcluster-auth"),
        ] {
            let m = mounts.iter().find(|m| m["name"] == name).unwrap();
            assert_eq!(
                (m["mountPath"].as_str(), m["readOnly"].as_bool()),
                (Some(path), Some(true))
            );
        }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        }
    });
    // The nodes reach each other over https.
    let at = script
        .iter()
        .position(|e| e.path.ends_with("/configmaps/demo-config"))
        .unwrap();
    script[at] = apply(&format!("{CORE}/configmaps"), "ConfigMap", "demo-config").check(|b| {
        let config: Value =
            serde_json::from_str(b["data"]["cluster.json"].as_str().unwrap()).unwrap();
        assert_eq!(
            config["members"]["demo-1"],
            "https://demo-1.demo-headless.shop.svc:7000"
        );
    });
    script.push(write_status(&w, &log, |_| {}));
    script.push(event("CertificateIssued", None).check(|b| {
        let note = b["note"].as_str().unwrap();
        assert!(
            note.contains("kubectl get secret demo-ca -n shop"),
            "{note}"
        );
    }));
    script.push(event("AccessTokensCreated", None).check(|b| {
        let note = b["note"].as_str().unwrap();
        assert!(
            note.contains("kubectl get secret demo-tokens -n shop"),
            "{note}"
        );
    }));
    script.push(event("ElectionStarted", None));
    let handle = reconcile_with_script(&w, &log, &ctx, handle, script).await;
    let made = store.lock().unwrap().clone();

    // An hour later: found complete, nothing is made or applied again.
    clock.fetch_add(3_600_000, Ordering::SeqCst);
    let security = vec![
        get(&store, "demo-ca"),
        get(&store, "demo-tls"),
        get(&store, "demo-tokens"),
    ];
    let mut script = opening_with(&w, false, security, |_| {});
    script.push(write_status(&w, &log, |_| {}).optional());
    script.extend(later_events());
    reconcile_with_script(&w, &log, &ctx, handle, script).await;
    assert_eq!(*store.lock().unwrap(), made, "the Secrets are unchanged");
}

/// Whatever the failover stage tells about a cluster whose pods never came (not this test's
/// subject): after the security stage's events, if any.
pub(super) fn later_events() -> Vec<Expect> {
    (0..4)
        .map(|_| Expect::post("/apis/events.k8s.io/v1/namespaces/shop/events").optional())
        .collect()
}

/// Like `world::reconcile_with`, for scripts with optional tails.
pub(super) async fn reconcile_with_script(
    w: &Shared,
    log: &Log,
    ctx: &Arc<crate::controller::Context>,
    handle: super::fixtures::Handle,
    script: Vec<Expect>,
) -> super::fixtures::Handle {
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(w)), ctx.clone()).await.unwrap();
    finish_keep(server).await
}

#[tokio::test]
async fn the_node_certificate_is_renewed_when_a_third_of_its_life_is_left() {
    let w = world(cluster(secure_spec(), None), vec![], None);
    let log = Log::default();
    let clock = Arc::new(AtomicU64::new(T0_MS));
    let (ctx, handle) = context(BTreeMap::new(), clock.clone());
    let store = Store::default();
    let security = vec![
        get(&store, "demo-ca"),
        get(&store, "demo-tls"),
        get(&store, "demo-tokens"),
        apply_secret(&store, "demo-ca", |_| {}),
        apply_secret(&store, "demo-tls", |_| {}),
        apply_secret(&store, "demo-tokens", |_| {}),
    ];
    let mut script = opening_with(&w, true, security, |_| {});
    script.push(write_status(&w, &log, |_| {}));
    script.push(event("CertificateIssued", None));
    script.push(event("AccessTokensCreated", None));
    script.push(event("ElectionStarted", None));
    let handle = reconcile_with_script(&w, &log, &ctx, handle, script).await;
    let first = store.lock().unwrap().clone();

    // Less than a third of 90 days left: a new certificate from the same CA; tokens untouched.
    let due = T0_MS + (CERT_LIFETIME_SECS * 2 / 3 + 3600) * 1000;
    clock.store(due, Ordering::SeqCst);
    let old_cert = decoded(&first["demo-tls"], "tls.crt");
    let security = vec![
        get(&store, "demo-ca"),
        get(&store, "demo-tls"),
        get(&store, "demo-tokens"),
        apply_secret(&store, "demo-tls", move |b| {
            assert_ne!(decoded(b, "tls.crt"), old_cert, "a new certificate");
            let not_after = &b["metadata"]["annotations"]["rcluster.dev/not-after"];
            assert_eq!(
                not_after,
                &json!((due / 1000 + CERT_LIFETIME_SECS).to_string())
            );
        }),
    ];
    let mut script = opening_with(&w, false, security, |_| {});
    script.push(write_status(&w, &log, |_| {}).optional());
    script.push(event("CertificateRenewed", None).check(|b| {
        let note = b["note"].as_str().unwrap();
        assert!(note.contains("without a restart"), "{note}");
    }));
    script.extend(later_events());
    reconcile_with_script(&w, &log, &ctx, handle, script).await;
    let now = store.lock().unwrap().clone();
    assert_eq!(now["demo-ca"], first["demo-ca"], "the CA stays");
    assert_eq!(now["demo-tokens"], first["demo-tokens"], "the tokens stay");
    assert_eq!(
        decoded(&now["demo-tls"], "ca.crt"),
        decoded(&first["demo-ca"], "ca.crt")
    );
}

#[tokio::test]
async fn user_secrets_are_mounted_and_nothing_is_generated() {
    let spec = json!({"replicas": 3,
        "tls": {"enabled": true, "secretName": "demo-cert-manager"},
        "auth": {"enabled": true, "secretName": "my-tokens"}});
    let w = world(cluster(spec, None), vec![], None);
    let log = Log::default();
    let (ctx, handle) = context(BTreeMap::new(), Arc::new(AtomicU64::new(T0_MS)));
    let store = Store::default();
    // What cert-manager's Certificate writes.
    let ca = crate::certs::new_ca("my CA", T0_MS / 1000).unwrap();
    let b64 =
        |s: &str| serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())).unwrap();
    store.lock().unwrap().insert(
        "demo-cert-manager".into(),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "demo-cert-manager", "namespace": "shop"},
               "data": {"ca.crt": b64(&ca.cert_pem), "tls.crt": b64("x"), "tls.key": b64("y")}}),
    );
    let mut script = opening_with(&w, true, vec![get(&store, "demo-cert-manager")], |sts| {
        let vols = secret_volumes(sts);
        assert_eq!(vols["tls"].0, "demo-cert-manager");
        assert_eq!(vols["auth"].0, "my-tokens");
        assert!(
            args(sts)
                .join(" ")
                .contains("--auth-file /var/run/secrets/rcluster-auth/auth")
        );
    });
    script.push(write_status(&w, &log, |_| {}));
    script.push(event("ElectionStarted", None));
    reconcile_with_script(&w, &log, &ctx, handle, script).await;

    // Without the named Secret the reconcile stops with a reason and applies nothing.
    store.lock().unwrap().clear();
    let (ctx, handle) = context(BTreeMap::new(), Arc::new(AtomicU64::new(T0_MS)));
    let script = vec![get_secret(&w), get(&store, "demo-cert-manager")];
    let server = serve(handle, script, log.clone());
    let err = reconcile(Arc::new(current(&w)), ctx.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("demo-cert-manager named by spec.tls.secretName does not exist"),
        "{err}"
    );
    finish_keep(server).await;
}
