//! `GET /v1/merged?prefix=A&prefix=B&order=modified|version&limit=N&cursor=C`: the live records
//! under several prefixes in one page, newest first — a timeline page (posts of every followed
//! user) in one request instead of one list per prefix and a merge in the client.
//!
//! Records are ordered by the order's value (`modified_ms`, or `version`), newest first, ties by
//! key (also descending), so the order is total and a cursor — the last item's value and key —
//! pages exactly: the next page holds what sorts after it. A node scans every record under the
//! prefixes (cost: their number, not the page size). Over several shards each shard answers its
//! own first page after the cursor and the pages are merged (`fanout::gather`), exactly as paged
//! lists are.

use super::kv::{after_read, before_read};
use super::render::{self, Obj};
use super::stream::prefixes;
use super::{ApiError, Ctx, Req, ok_with_token};
use crate::answer::Response;
use crate::engine::now_ms;
use crate::record::{Rec, Records};
use std::collections::BinaryHeap;
use std::ops::Bound;

/// What a merged read sorts by, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Modified,
    Version,
}

impl Order {
    pub fn parse(req: &Req) -> Result<Order, ApiError> {
        match req.param("order") {
            None | Some("") | Some("modified") => Ok(Order::Modified),
            Some("version") => Ok(Order::Version),
            Some(v) => Err(ApiError::bad_request(
                "invalid_parameter",
                format!("order must be modified or version, got {v:?}"),
            )),
        }
    }

    fn tag(self) -> char {
        match self {
            Order::Modified => 'm',
            Order::Version => 'v',
        }
    }

    /// The value a record sorts by.
    pub fn value(self, r: &Rec) -> u64 {
        match self {
            Order::Modified => r.modified_ms(),
            Order::Version => r.version(),
        }
    }

    /// The same value read back from a rendered record.
    pub fn field(self) -> &'static str {
        match self {
            Order::Modified => "modified_ms",
            Order::Version => "version",
        }
    }
}

/// Where a page ends: its last item's sort value and key. Text: `m1733000000123.users/7` (the
/// order's letter, the value, a dot, the key), opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub value: u64,
    pub key: String,
}

impl Cursor {
    pub fn text(&self, order: Order) -> String {
        format!("{}{}.{}", order.tag(), self.value, self.key)
    }

    fn parse(order: Order, text: &str) -> Result<Cursor, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "cursor must be the `next` of an earlier page with order={}, got {:?}",
                    order.field().trim_end_matches("_ms"),
                    text.chars().take(64).collect::<String>()
                ),
            )
        };
        let rest = text.strip_prefix(order.tag()).ok_or_else(bad)?;
        let (value, key) = rest.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            value: value.parse().map_err(|_| bad())?,
            key: key.to_string(),
        })
    }

    /// Whether an item with this sort value and key comes after the cursor (newest first).
    fn before(&self, value: u64, key: &str) -> bool {
        (value, key) < (self.value, self.key.as_str())
    }
}

pub async fn merged(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    if req.params("prefix").is_empty() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "name at least one prefix (prefix=A&prefix=B; prefix= for every key)",
        ));
    }
    let prefixes = disjoint(prefixes(req)?);
    let order = Order::parse(req)?;
    let max = ctx.limits.max_batch;
    let limit = req.parse::<usize>("limit")?.unwrap_or(100.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::too_large(
            "batch_too_large",
            format!("limit must be 1..={max}, got {limit}"),
        ));
    }
    let cursor = match req.param("cursor").filter(|c| !c.is_empty()) {
        Some(c) => Some(Cursor::parse(order, c)?),
        None => None,
    };
    let c = before_read(ctx, req).await?;
    let ((items, more), observed) = {
        let core = ctx.engine.core_view();
        let page = newest(
            &core.state.records,
            &prefixes,
            order,
            cursor.as_ref(),
            limit,
            now_ms(),
        );
        (page, core.state.applied_index)
    };
    after_read(ctx, c, observed).await?;
    let next = items.last().filter(|_| more).map(|r| {
        Cursor {
            value: order.value(r),
            key: r.key().to_string(),
        }
        .text(order)
    });
    let body = Obj::new().raw("items", &render::array(items.iter().map(render::record)));
    let body = match next {
        Some(n) => body.str("next", &n),
        None => body.raw("next", "null"),
    };
    Ok(ok_with_token(body.done(), observed))
}

/// The prefixes without those another one already covers (`a` covers `ab`), so no record is
/// counted twice; empty when one of them is `""` (every key).
fn disjoint(mut prefixes: Vec<String>) -> Vec<String> {
    if prefixes.is_empty() {
        return vec![String::new()];
    }
    prefixes.sort();
    let mut out: Vec<String> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        if !out.last().is_some_and(|q| p.starts_with(q.as_str())) {
            out.push(p);
        }
    }
    out
}

/// The first `limit` live records under `prefixes` after `cursor`, newest first, and whether
/// more follow.
fn newest(
    records: &Records,
    prefixes: &[String],
    order: Order,
    cursor: Option<&Cursor>,
    limit: usize,
    now_ms: u64,
) -> (Vec<Rec>, bool) {
    // A min-heap (by `Reverse`) of the newest `limit + 1` seen so far: the extra one says
    // whether more follow.
    let mut heap: BinaryHeap<std::cmp::Reverse<(u64, &str)>> = BinaryHeap::new();
    for p in prefixes {
        let range = records.from(Bound::Included(p.as_str()));
        for r in range.take_while(|r| r.key().starts_with(p.as_str())) {
            let (v, k) = (order.value(r), r.key());
            if !r.live_at(now_ms) || cursor.is_some_and(|c| !c.before(v, k)) {
                continue;
            }
            heap.push(std::cmp::Reverse((v, k)));
            if heap.len() > limit + 1 {
                heap.pop();
            }
        }
    }
    let more = heap.len() > limit;
    let mut top: Vec<(u64, &str)> = heap.into_iter().map(|r| r.0).collect();
    top.sort_by(|a, b| b.cmp(a));
    top.truncate(limit);
    let items = top
        .into_iter()
        .filter_map(|(_, k)| records.get(k).cloned())
        .collect();
    (items, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, version: u64, modified_ms: u64) -> Rec {
        Rec::build(key, "1", version, None, modified_ms, modified_ms)
    }

    #[test]
    fn pages_are_newest_first_exact_and_disjoint() {
        let mut records = Records::new();
        // Same times on purpose: the key breaks ties.
        for (i, k) in ["a/1", "a/2", "b/1", "b/2", "c/1", "ab/1"]
            .iter()
            .enumerate()
        {
            records.insert(rec(k, i as u64 + 1, 100 + (i as u64 / 2)));
        }
        let prefixes = disjoint(vec!["b/".into(), "a".into(), "ab".into()]);
        assert_eq!(prefixes, ["a", "b/"]);
        let mut cursor = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let (page, more) = newest(&records, &prefixes, Order::Modified, cursor.as_ref(), 2, 0);
            seen.extend(page.iter().map(|r| r.key().to_string()));
            let Some(r) = page.last().filter(|_| more) else {
                break;
            };
            cursor = Some(Cursor {
                value: r.modified_ms(),
                key: r.key().to_string(),
            });
        }
        assert_eq!(seen, ["ab/1", "b/2", "b/1", "a/2", "a/1"]);
        let c = Cursor {
            value: 7,
            key: "x.y".into(),
        };
        assert_eq!(c.text(Order::Version), "v7.x.y");
        assert_eq!(
            Cursor::parse(Order::Version, "v7.x.y").unwrap(),
            c,
            "keys may hold dots"
        );
        assert!(Cursor::parse(Order::Modified, "v7.x").is_err());
        assert_eq!(disjoint(vec![]), [""]);
    }
}
