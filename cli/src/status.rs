//! `rcluster status` and `rcluster slot`: the whole cluster from any node. The cluster map
//! (`GET /v1/cluster`) names every shard, its slot ranges, primary and term, and every member;
//! each member is then asked for its own `/v1/status` (all at once, briefly), which gives its
//! role, term, log positions and readiness, and the primary's report gives the replicas' lag.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use rcluster_client::{Client, Error, RetryPolicy, calls};
use rcluster_proto::{ClusterMap, NodeStatus, Role, ShardId, SlotMap, slots::hash_tag};

use crate::args::GlobalArgs;
use crate::failure::Failure;
use crate::{term, time};

/// How long a member may take to answer the status round.
const MEMBER_WAIT: Duration = Duration::from_secs(2);

/// One member as the status round saw it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub name: String,
    pub url: String,
    /// Its own report, when it answered.
    pub status: Option<NodeStatus>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Entries behind its shard's primary (the primary's view, else the log positions).
    pub lag_entries: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardView {
    pub shard: ShardId,
    /// `[start, end]` slot ranges, inclusive.
    pub slot_ranges: Vec<[u32; 2]>,
    pub slots: u32,
    /// The primary and term the coordinator last recorded in the map.
    pub primary: Option<String>,
    pub term: u64,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub cluster_id: Option<String>,
    /// The node whose map this is.
    pub answered_by: String,
    pub map: ClusterMap,
    pub shards: Vec<ShardView>,
    /// Slot ranges moving now, from the shards' own reports (`slot_state`).
    pub migrations: Vec<MigrationView>,
    /// A playground's resharding (its `/status` `reshard`), when the cluster is a playground's and
    /// one is under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reshard: Option<serde_json::Value>,
}

/// One range moving between two shards, as their primaries' logs tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationView {
    pub start: u32,
    pub end: u32,
    pub from: ShardId,
    pub to: ShardId,
    /// `copying`, `catching up`, `fenced` or `handed off` (the furthest either side got).
    pub phase: String,
    /// What the phase has reached: the source index the target holds, the fence's index, or the
    /// map epoch of the handoff.
    pub detail: String,
}

/// The report that speaks for a shard: its primary's (newest term), else the most advanced member.
fn shard_report(members: &[MemberView]) -> Option<&NodeStatus> {
    let reports = members.iter().filter_map(|m| m.status.as_ref());
    reports
        .clone()
        .filter(|s| s.role == Role::Primary)
        .max_by_key(|s| s.term)
        .or_else(|| reports.max_by_key(|s| s.applied_index))
}

/// The migrations under way: every range a shard gives away (not dropped yet) or takes in, once,
/// described by the furthest step either side recorded.
pub fn migrations(shards: &[ShardView]) -> Vec<MigrationView> {
    let mut out: BTreeMap<(u32, u32, ShardId, ShardId), MigrationView> = BTreeMap::new();
    for s in shards {
        let Some(report) = shard_report(&s.members) else {
            continue;
        };
        let slots = &report.slot_state;
        if let Some(i) = &slots.incoming {
            let (phase, detail) = if i.copied {
                ("catching up", format!("source index {}", i.source_index))
            } else {
                let at = i
                    .copy_at
                    .map_or("starting".into(), |a| format!("copy of index {a}"));
                ("copying", at)
            };
            out.entry((i.start, i.end, i.from, s.shard))
                .or_insert_with(|| MigrationView {
                    start: i.start,
                    end: i.end,
                    from: i.from,
                    to: s.shard,
                    phase: phase.into(),
                    detail,
                });
        }
        for o in slots.outgoing.iter().filter(|o| !o.dropped) {
            let (phase, detail) = match o.handed_off {
                Some(epoch) => ("handed off", format!("map epoch {epoch}")),
                None => ("fenced", format!("fence at index {}", o.fence_index)),
            };
            // The source's step is further than anything the target reports.
            out.insert(
                (o.start, o.end, s.shard, o.to),
                MigrationView {
                    start: o.start,
                    end: o.end,
                    from: s.shard,
                    to: o.to,
                    phase: phase.into(),
                    detail,
                },
            );
        }
    }
    out.into_values().collect()
}

/// A playground's `/status` `reshard`, when `view`'s nodes are a playground's: found by its port
/// convention from any member's report, asked briefly; nothing when none answers.
async fn playground_reshard(
    global: &GlobalArgs,
    shards: &[ShardView],
) -> Option<serde_json::Value> {
    let url = shards
        .iter()
        .flat_map(|s| &s.members)
        .find_map(|m| crate::reshard::control_url(m.status.as_ref()?))?;
    let client = member_client(global, &url, MEMBER_WAIT.as_secs_f64()).ok()?;
    let reply = client.execute(&calls::playground_status()).await.ok()?;
    let r = reply.json.get("reshard")?;
    (!r.is_null()).then(|| r.clone())
}

/// `rcluster status`: gathers the view and prints it.
pub async fn cluster(client: &Client, global: &GlobalArgs) -> Result<(), Failure> {
    let view = gather(client, global).await?;
    if global.json {
        term::line(serde_json::to_string(&view).unwrap_or_default())
    } else {
        term::text(&render(&view, time::now_ms()))
    }
}

async fn gather(client: &Client, global: &GlobalArgs) -> Result<ClusterView, Failure> {
    let reply = client.execute(&calls::cluster()).await?;
    let map: ClusterMap = reply.parse()?;
    let mut targets: Vec<(ShardId, String, String)> = map
        .shards
        .iter()
        .flat_map(|s| {
            s.members
                .iter()
                .map(move |(name, url)| (s.shard, name.clone(), url.clone()))
        })
        .collect();
    // A node without a member list (standalone) lists nobody: it is the whole cluster.
    if targets.is_empty() {
        targets.push((0, String::new(), reply.endpoint.clone()));
    }
    let timeout = global.timeout.min(MEMBER_WAIT.as_secs_f64());
    let mut asks = tokio::task::JoinSet::new();
    for (i, (_, _, url)) in targets.iter().enumerate() {
        let member = member_client(global, url, timeout);
        asks.spawn(async move {
            let status = match member {
                Ok(c) => c.status().await,
                Err(e) => Err(e),
            };
            (i, status)
        });
    }
    let mut answers: BTreeMap<usize, Result<NodeStatus, Error>> = BTreeMap::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok((i, status)) = joined {
            answers.insert(i, status);
        }
    }
    let mut views: BTreeMap<ShardId, Vec<MemberView>> = BTreeMap::new();
    for (i, (shard, name, url)) in targets.into_iter().enumerate() {
        let (status, error) = match answers.remove(&i) {
            Some(Ok(s)) => (Some(s), None),
            Some(Err(e)) => (None, Some(crate::failure::one_line(&e.to_string()))),
            None => (None, Some("no answer".into())),
        };
        let name = match (&status, name.is_empty()) {
            (Some(s), true) => s.node.clone(),
            _ => name,
        };
        views.entry(shard).or_default().push(MemberView {
            name,
            url,
            status,
            error,
            lag_entries: None,
        });
    }
    let mut shards = Vec::new();
    for id in shard_ids(&map) {
        let info = map.shard(id);
        let mut members = views.remove(&id).unwrap_or_default();
        fill_lag(&mut members);
        shards.push(ShardView {
            shard: id,
            slot_ranges: map.slots.ranges_of(id).map(|r| [r.start, r.end]).collect(),
            slots: map.slots.slot_count(id),
            primary: info.and_then(|s| s.primary.clone()),
            term: info.map_or(0, |s| s.term),
            members,
        });
    }
    let cluster_id = shards
        .iter()
        .flat_map(|s| &s.members)
        .find_map(|m| m.status.as_ref()?.cluster_id.clone())
        .or_else(|| client.cluster_id());
    let reshard = playground_reshard(global, &shards).await;
    Ok(ClusterView {
        cluster_id,
        answered_by: reply.endpoint,
        migrations: migrations(&shards),
        map,
        shards,
        reshard,
    })
}

/// Every shard the map knows of: those owning slots and those only listed.
fn shard_ids(map: &ClusterMap) -> Vec<ShardId> {
    let mut ids: Vec<ShardId> = (0..map.slots.shards).collect();
    ids.extend(map.shards.iter().map(|s| s.shard));
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A client for one member's own status: no retries, no other endpoints, a short timeout.
fn member_client(global: &GlobalArgs, url: &str, timeout: f64) -> Result<Client, Error> {
    Client::builder([url.to_string()])
        .request_timeout(Duration::from_secs_f64(timeout))
        .retry(RetryPolicy::no_retry())
        .discover_members(false)
        .cluster_id(global.cluster_id.clone())
        .build()
}

/// The lag of each member behind its shard's primary: the primary's own figures when it has
/// them, else the difference of the log positions.
pub fn fill_lag(members: &mut [MemberView]) {
    let primary = members
        .iter()
        .filter_map(|m| m.status.as_ref())
        .filter(|s| s.role == Role::Primary)
        .max_by_key(|s| s.term)
        .cloned();
    let Some(p) = primary else { return };
    for m in members.iter_mut() {
        let Some(s) = &m.status else { continue };
        m.lag_entries = if s.node == p.node {
            Some(0)
        } else {
            p.members
                .iter()
                .find(|r| r.name == s.node || (!r.url.is_empty() && r.url == m.url))
                .and_then(|r| r.lag_entries)
                .or(Some(p.last_log_index.saturating_sub(s.last_log_index)))
        };
    }
}

/// `0-2047, 3000-3100`
fn ranges_text(ranges: &[[u32; 2]]) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    ranges
        .iter()
        .map(|[a, b]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The human form: a header, then per shard its slots, primary and term and a member table.
pub fn render(v: &ClusterView, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}  ({} slots, map epoch {}, {} shard{}; map from {})",
        v.cluster_id.as_deref().unwrap_or("(no id)"),
        v.map.slots.slots,
        v.map.slots.epoch,
        v.shards.len(),
        if v.shards.len() == 1 { "" } else { "s" },
        v.answered_by
    );
    for s in &v.shards {
        let _ = writeln!(
            out,
            "shard {}  slots {} ({})  primary {}  term {}",
            s.shard,
            ranges_text(&s.slot_ranges),
            s.slots,
            s.primary.as_deref().unwrap_or("none"),
            s.term
        );
        let rows: Vec<[String; 7]> = s
            .members
            .iter()
            .map(|m| {
                let st = m.status.as_ref();
                let ready = match (st, &m.error) {
                    (Some(st), _) if st.ready => "yes".to_string(),
                    (Some(_), _) => "no".to_string(),
                    (None, Some(e)) => format!("unreachable: {e}"),
                    (None, None) => "unreachable".to_string(),
                };
                [
                    m.name.clone(),
                    st.map_or_else(|| "-".into(), |st| st.role.as_str().to_string()),
                    opt(st.map(|st| st.term)),
                    opt(st.map(|st| st.applied_index)),
                    opt(m.lag_entries),
                    m.url.clone(),
                    ready,
                ]
            })
            .collect();
        let header = ["NAME", "ROLE", "TERM", "APPLIED", "LAG", "URL", "READY"].map(String::from);
        let mut widths = [0usize; 7];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                // Numbers right-aligned; the last column (readiness) unpadded.
                if i + 1 == row.len() {
                    let _ = write!(line, "  {cell}");
                } else if (2..=4).contains(&i) {
                    let _ = write!(line, "  {cell:>w$}");
                } else {
                    let _ = write!(line, "  {cell:<w$}");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for m in &s.members {
            let Some(st) = &m.status else { continue };
            if let Some(req) = &st.switchover_request {
                let _ = writeln!(
                    out,
                    "  switchover to {} requested on {} at {}",
                    req.to.as_deref().unwrap_or("the most advanced replica"),
                    m.name,
                    time::moment(req.at_ms, now_ms)
                );
            }
            if st.isolated {
                let _ = writeln!(
                    out,
                    "  {} is isolated: it has not heard from a quorum within its lease",
                    m.name
                );
            }
        }
    }
    render_moves(v, &mut out);
    out
}

/// Slots moving: the playground's resharding, one line per range under way, and the slot count
/// of every shard (so the balance it converges to shows).
fn render_moves(v: &ClusterView, out: &mut String) {
    if v.migrations.is_empty() && v.reshard.is_none() {
        return;
    }
    if let Some(r) = &v.reshard {
        let _ = writeln!(
            out,
            "resharding to {} shards: {} slots moved, {} to go",
            r["shards"], r["moved_slots"], r["remaining_slots"]
        );
    }
    for m in &v.migrations {
        let _ = writeln!(
            out,
            "  slots {}-{} shard {} → {}: {} ({})",
            m.start, m.end, m.from, m.to, m.phase, m.detail
        );
    }
    let counts: Vec<String> = v
        .shards
        .iter()
        .map(|s| format!("{}:{}", s.shard, s.slots))
        .collect();
    let _ = writeln!(out, "  slots per shard: {}", counts.join("  "));
}

/// `rcluster slot KEY...`
pub async fn slots(client: &Client, keys: &[String], json: bool) -> Result<(), Failure> {
    let map = client.cluster_map().await?;
    for key in keys {
        let line = slot_line(&map, key, json);
        term::line(line)?;
    }
    Ok(())
}

/// Where `key` lives: its slot (and the hash tag that chose it), the shard owning the slot and
/// that shard's primary.
pub fn slot_line(map: &ClusterMap, key: &str, json: bool) -> String {
    let slots: &SlotMap = &map.slots;
    let slot = slots.slot_of(key);
    let shard = slots.owner(slot);
    let info = shard.and_then(|s| map.shard(s));
    let tag = hash_tag(key);
    let tag = (tag != key).then_some(tag);
    let primary = info.and_then(|i| i.primary.clone());
    let primary_url = info.and_then(|i| i.primary_url().map(str::to_string));
    if json {
        return json!({
            "key": key, "hash_tag": tag, "slot": slot, "slots": slots.slots, "shard": shard,
            "epoch": slots.epoch, "primary": primary, "primary_url": primary_url,
        })
        .to_string();
    }
    let tag = tag.map_or(String::new(), |t| format!(" (hash tag {t:?})"));
    let place = match shard {
        Some(s) => format!(
            "shard {s}  primary {}",
            match (&primary, &primary_url) {
                (Some(p), Some(u)) => format!("{p} {u}"),
                (Some(p), None) => p.clone(),
                _ => "none".into(),
            }
        ),
        None => "no shard owns it (the map is incomplete)".into(),
    };
    format!("{key}  slot {slot}{tag}  {place}")
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
