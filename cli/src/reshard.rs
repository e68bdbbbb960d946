//! `rcluster reshard --shards N`: ask a running playground to reshard while it serves (its
//! control endpoint's `POST /reshard`), and with `--wait` follow it until the slots are where
//! they belong.
//!
//! Finding the playground: `--playground URL` (or `RCLUSTER_PLAYGROUND`), else the playground's
//! port convention applied to the node that answers: node `i` of shard `k` listens on
//! BASE_PORT+100·k+i and the control endpoint on BASE_PORT, so a node's name (`nI`/`sKnI`), shard
//! and URL give the endpoint with no extra flag. A node named otherwise (a Kubernetes pod) is not
//! a playground's: the shard count is the cluster resource's `spec.shards`, which only kubectl
//! (or whoever may patch the resource) changes, and the command says exactly how.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use rcluster_client::{Client, Error, Status, calls};

use crate::failure::Failure;
use crate::term;

/// The playground control endpoint of the cluster `status`'s node belongs to, if its name and URL
/// follow the playground's convention.
pub fn control_url(status: &Status) -> Option<String> {
    let (shard, i) = playground_ordinal(&status.node)?;
    if shard != status.shard as usize {
        return None;
    }
    let me = status.members.iter().find(|m| m.name == status.node)?;
    let rest = me
        .url
        .strip_prefix("http://")
        .or_else(|| me.url.strip_prefix("https://"))?;
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':')?;
    if !host.starts_with("127.") {
        return None;
    }
    let port: usize = port.parse().ok()?;
    let base = port.checked_sub(100 * shard + i).filter(|b| *b > 0)?;
    Some(format!("http://{host}:{base}"))
}

/// (shard, i) of a playground member name: `nI` is shard 0, `sKnI` shard K.
fn playground_ordinal(name: &str) -> Option<(usize, usize)> {
    let (shard, rest) = match name.strip_prefix('s') {
        Some(r) => {
            let at = r.find('n')?;
            (r[..at].parse().ok()?, &r[at..])
        }
        None => (0, name),
    };
    let i: usize = rest.strip_prefix('n')?.parse().ok()?;
    (i > 0).then_some((shard, i))
}

/// What to say when there is no playground to ask: the cluster runs on Kubernetes (or
/// elsewhere), where the shard count is the resource's.
pub fn not_a_playground(shards: u16, why: &str) -> Failure {
    Failure::Other {
        code: "not_a_playground",
        message: format!(
            "{why}; on Kubernetes reshard by changing the cluster resource: kubectl patch rcl \
             NAME --type merge -p '{{\"spec\":{{\"shards\":{shards}}}}}' (NAME: the cluster's \
             name); for a playground pass --playground URL"
        ),
        exit: 2,
    }
}

fn control_client(url: &str) -> Result<Client, Error> {
    Client::builder([url.to_string()])
        .discover_members(false)
        .retry_deadline(Duration::from_secs(5))
        .build()
}

pub async fn run(
    client: &Client,
    shards: u16,
    playground: Option<String>,
    wait: Option<Duration>,
    json_out: bool,
) -> Result<(), Failure> {
    let (url, derived) = match playground {
        Some(u) => (u, false),
        None => {
            let status = client.status().await?;
            match control_url(&status) {
                Some(u) => (u, true),
                None => {
                    let why = format!("{} is not a playground's node", status.node);
                    return Err(not_a_playground(shards, &why));
                }
            }
        }
    };
    let control = control_client(&url)?;
    let answer = match control.execute(&calls::playground_reshard(shards)).await {
        Ok(r) => r.json,
        Err(Error::Transport(e)) if derived => {
            let why = format!("no playground answers at {url} ({e})");
            return Err(not_a_playground(shards, &why));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(wait) = wait else {
        return print(json_out, &answer, describe(&answer, shards));
    };
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    loop {
        // Errors while nodes start and stop are expected; only the deadline ends the wait.
        if let Ok(r) = control.execute(&calls::playground_status()).await
            && done(&r.json, shards)
        {
            let text = format!("resharded: {shards} shard(s), slots even");
            return print(json_out, &json!({"shards": shards, "done": true}), text);
        }
        if Instant::now() >= deadline {
            return Err(Failure::Client(Error::Timeout(format!(
                "the resharding to {shards} shard(s) is not done after {:.0} s (it goes on); \
                 follow it with `rcluster status`",
                wait.as_secs_f64()
            ))));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The playground's `/status` says the resharding to `shards` is over.
pub fn done(status: &Value, shards: u16) -> bool {
    status["reshard"].is_null() && status["slot_map"]["shards"] == u64::from(shards)
}

/// One line for the playground's answer to `POST /reshard`.
pub fn describe(answer: &Value, shards: u16) -> String {
    let r = &answer["reshard"];
    if answer["started"] == true {
        format!(
            "resharding {} → {shards} shard(s) started: {} slot(s) to move, one range at a time \
             while serving (follow it with `rcluster status`)",
            answer["from"], r["remaining_slots"]
        )
    } else if r.is_null() {
        format!("already {shards} shard(s): nothing to move")
    } else {
        format!(
            "resharding to {shards} shard(s) already under way: {} slot(s) moved, {} to go",
            r["moved_slots"], r["remaining_slots"]
        )
    }
}

fn print(json_out: bool, doc: &Value, text: String) -> Result<(), Failure> {
    if json_out {
        term::line(doc.clone())
    } else {
        term::line(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcluster_proto::MemberReport;

    fn node(name: &str, shard: u32, url: &str) -> Status {
        Status {
            node: name.into(),
            shard,
            members: vec![MemberReport {
                name: name.into(),
                url: url.into(),
                ..MemberReport::default()
            }],
            ..Status::default()
        }
    }

    #[test]
    fn the_control_endpoint_follows_the_port_convention() {
        let at = |n, k, u| control_url(&node(n, k, u));
        assert_eq!(
            at("n1", 0, "http://127.0.0.1:7001"),
            Some("http://127.0.0.1:7000".into())
        );
        assert_eq!(
            at("s2n3", 2, "https://127.0.0.1:7203"),
            Some("http://127.0.0.1:7000".into())
        );
        assert_eq!(
            at("s1n1", 1, "http://127.0.0.1:9101/"),
            Some("http://127.0.0.1:9000".into())
        );
        // Pods of a Kubernetes cluster, a name that lies about its shard, a remote host.
        assert_eq!(at("demo-0", 0, "http://10.0.0.5:7070"), None);
        assert_eq!(at("s2n1", 1, "http://127.0.0.1:7201"), None);
        assert_eq!(at("n1", 0, "http://10.1.2.3:7001"), None);
        assert_eq!(at("n1", 0, "http://127.0.0.1:1"), None);
    }

    #[test]
    fn the_kubernetes_hint_is_the_exact_patch() {
        let f = not_a_playground(4, "demo-0 is not a playground's node");
        assert_eq!(f.exit_code(), 2);
        let Failure::Other { message, .. } = f else {
            panic!("not Other")
        };
        assert!(
            message.contains(r#"kubectl patch rcl NAME --type merge -p '{"spec":{"shards":4}}'"#),
            "{message}"
        );
    }

    #[test]
    fn answers_read_as_one_line() {
        let started = json!({"shards": 4, "from": 2, "started": true,
            "reshard": {"moved_slots": 0, "remaining_slots": 2048}});
        assert_eq!(
            describe(&started, 4),
            "resharding 2 → 4 shard(s) started: 2048 slot(s) to move, one range at a time while \
             serving (follow it with `rcluster status`)"
        );
        let same = json!({"shards": 4, "started": false, "reshard": null});
        assert_eq!(describe(&same, 4), "already 4 shard(s): nothing to move");
        let running = json!({"shards": 4, "started": false,
            "reshard": {"moved_slots": 682, "remaining_slots": 1366}});
        assert_eq!(
            describe(&running, 4),
            "resharding to 4 shard(s) already under way: 682 slot(s) moved, 1366 to go"
        );
        assert!(done(
            &json!({"reshard": null, "slot_map": {"shards": 3}}),
            3
        ));
        assert!(!done(&json!({"reshard": {}, "slot_map": {"shards": 3}}), 3));
        assert!(!done(
            &json!({"reshard": null, "slot_map": {"shards": 4}}),
            3
        ));
    }
}
