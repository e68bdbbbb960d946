//! TLS and tokens on by default (`crd::security`): a new cluster that does not say gets both, and
//! the decision is recorded in `status.security`; a cluster created before the record keeps
//! what its spec says explicitly (absent: off) and gets that recorded; `enabled: false` opts out;
//! a recorded decision wins over whatever the operator's default is later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Value, json};

use super::fixtures::Log;
use super::security::{
    Store, T0_MS, apply_secret, args, get, later_events, opening_with, reconcile_with_script,
    secret_volumes,
};
use super::world::*;
use crate::crd::{Phase, ReplicatedClusterStatus, SecurityStatus};

fn is_plain(sts: &Value) {
    let a = args(sts).join(" ");
    assert!(!a.contains("--tls-") && !a.contains("--auth-file"), "{a}");
    assert!(secret_volumes(sts).keys().all(|v| v == "secret"), "{sts}");
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["scheme"], Value::Null, "{probe}");
    }
}

/// A cluster the operator ran before `status.security` existed: a primary in term 3.
fn running_before_the_record() -> ReplicatedClusterStatus {
    ReplicatedClusterStatus {
        phase: Some(Phase::Running),
        term: 3,
        primary: Some("demo-0".into()),
        member_list: vec!["demo-0".into(), "demo-1".into(), "demo-2".into()],
        ..ReplicatedClusterStatus::default()
    }
}

#[tokio::test]
async fn a_new_cluster_that_does_not_say_gets_tls_and_tokens_recorded() {
    let w = world(cluster(json!({"replicas": 3}), None), vec![], None);
    let log = Log::default();
    let clock = Arc::new(AtomicU64::new(T0_MS));
    let (ctx, handle) = context_with(BTreeMap::new(), clock, SecurityStatus::ON);
    let store = Store::default();
    let security = vec![
        get(&store, "demo-ca"),
        get(&store, "demo-tls"),
        get(&store, "demo-tokens"),
        apply_secret(&store, "demo-ca", |_| {}),
        apply_secret(&store, "demo-tls", |_| {}),
        apply_secret(&store, "demo-tokens", |_| {}),
    ];
    let mut script = opening_with(&w, true, security, |sts| {
        let a = args(sts).join(" ");
        for flag in ["--tls-cert", "--tls-key", "--tls-ca", "--auth-file"] {
            assert!(a.contains(flag), "{flag} missing: {a}");
        }
        let vols = secret_volumes(sts);
        assert_eq!(vols["tls"].0, "demo-tls");
        assert_eq!(vols["auth"].0, "demo-tokens");
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    });
    script.push(write_status(&w, &log, |s| {
        assert_eq!(s.security, Some(SecurityStatus::ON))
    }));
    script.push(event("CertificateIssued", None));
    script.push(event("AccessTokensCreated", None));
    script.push(event("ElectionStarted", None));
    reconcile_with_script(&w, &log, &ctx, handle, script).await;
    assert_eq!(
        current(&w).status.unwrap().security,
        Some(SecurityStatus::ON)
    );
}

#[tokio::test]
async fn a_cluster_from_before_the_record_stays_plain_and_gets_it_recorded() {
    let w = world(
        cluster(json!({"replicas": 3}), Some(running_before_the_record())),
        vec![],
        Some(secret_object()),
    );
    let log = Log::default();
    let (ctx, handle) = context_with(
        BTreeMap::new(),
        Arc::new(AtomicU64::new(T0_MS)),
        SecurityStatus::ON,
    );
    // No Secret of TLS or tokens is looked for: any such request fails the script.
    let mut script = opening_with(&w, true, vec![], is_plain);
    script.push(write_status(&w, &log, |s| {
        assert_eq!(s.security, Some(SecurityStatus::OFF));
    }));
    script.extend(later_events());
    let handle = reconcile_with_script(&w, &log, &ctx, handle, script).await;

    // Recorded now: the next reconcile runs it again.
    let mut script = opening_with(&w, false, vec![], is_plain);
    script.push(
        write_status(&w, &log, |s| {
            assert_eq!(s.security, Some(SecurityStatus::OFF))
        })
        .optional(),
    );
    script.extend(later_events());
    reconcile_with_script(&w, &log, &ctx, handle, script).await;
    assert_eq!(
        current(&w).status.unwrap().security,
        Some(SecurityStatus::OFF)
    );
}

#[tokio::test]
async fn enabled_false_opts_a_new_cluster_out() {
    let spec = json!({"replicas": 3, "tls": {"enabled": false}, "auth": {"enabled": false}});
    let w = world(cluster(spec, None), vec![], None);
    let log = Log::default();
    let (ctx, handle) = context_with(
        BTreeMap::new(),
        Arc::new(AtomicU64::new(T0_MS)),
        SecurityStatus::ON,
    );
    let mut script = opening_with(&w, true, vec![], is_plain);
    script.push(write_status(&w, &log, |s| {
        assert_eq!(s.security, Some(SecurityStatus::OFF))
    }));
    script.push(event("ElectionStarted", None));
    reconcile_with_script(&w, &log, &ctx, handle, script).await;

    // One opted out, one not: each feature is decided on its own.
    let spec = json!({"replicas": 3, "tls": {"enabled": false}});
    let w = world(cluster(spec, None), vec![], None);
    let (ctx, handle) = context_with(
        BTreeMap::new(),
        Arc::new(AtomicU64::new(T0_MS)),
        SecurityStatus::ON,
    );
    let store = Store::default();
    let security = vec![
        get(&store, "demo-tokens"),
        apply_secret(&store, "demo-tokens", |_| {}),
    ];
    let mut script = opening_with(&w, true, security, |sts| {
        let a = args(sts).join(" ");
        assert!(
            a.contains("--auth-file") && !a.contains("--tls-cert"),
            "{a}"
        );
    });
    let want = SecurityStatus {
        tls: false,
        auth: true,
    };
    script.push(write_status(&w, &log, move |s| {
        assert_eq!(s.security, Some(want))
    }));
    script.push(event("AccessTokensCreated", None));
    script.push(event("ElectionStarted", None));
    reconcile_with_script(&w, &log, &ctx, handle, script).await;
}

#[tokio::test]
async fn the_recorded_decision_wins_over_a_later_operator_default() {
    // Recorded off, the operator's default now on: stays plain http, no Secret looked for.
    let status = ReplicatedClusterStatus {
        security: Some(SecurityStatus::OFF),
        ..running_before_the_record()
    };
    let w = world(
        cluster(json!({"replicas": 3}), Some(status)),
        vec![],
        Some(secret_object()),
    );
    let log = Log::default();
    let (ctx, handle) = context_with(
        BTreeMap::new(),
        Arc::new(AtomicU64::new(T0_MS)),
        SecurityStatus::ON,
    );
    let mut script = opening_with(&w, true, vec![], is_plain);
    script.push(
        write_status(&w, &log, |s| {
            assert_eq!(s.security, Some(SecurityStatus::OFF))
        })
        .optional(),
    );
    script.extend(later_events());
    reconcile_with_script(&w, &log, &ctx, handle, script).await;

    // Recorded on, the operator's default off: TLS and tokens stay.
    let status = ReplicatedClusterStatus {
        security: Some(SecurityStatus::ON),
        ..running_before_the_record()
    };
    let w = world(
        cluster(json!({"replicas": 3}), Some(status)),
        vec![],
        Some(secret_object()),
    );
    let (ctx, handle) = context_with(
        BTreeMap::new(),
        Arc::new(AtomicU64::new(T0_MS)),
        SecurityStatus::OFF,
    );
    let store = Store::default();
    let security = vec![
        get(&store, "demo-ca"),
        get(&store, "demo-tls"),
        get(&store, "demo-tokens"),
        apply_secret(&store, "demo-ca", |_| {}),
        apply_secret(&store, "demo-tls", |_| {}),
        apply_secret(&store, "demo-tokens", |_| {}),
    ];
    let mut script = opening_with(&w, true, security, |sts| {
        let a = args(sts).join(" ");
        assert!(a.contains("--tls-cert") && a.contains("--auth-file"), "{a}");
    });
    script.push(
        write_status(&w, &log, |s| {
            assert_eq!(s.security, Some(SecurityStatus::ON))
        })
        .optional(),
    );
    script.extend(later_events());
    reconcile_with_script(&w, &log, &ctx, handle, script).await;
    assert_eq!(
        current(&w).status.unwrap().security,
        Some(SecurityStatus::ON)
    );
}
