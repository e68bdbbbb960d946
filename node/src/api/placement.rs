//! Which node serves a request (docs/SHARDS.md "Routing"): this one, another shard's primary, this
//! shard's primary, or every shard (reads that span shards). Decided before any handler runs, from
//! the path, the method, the cluster map and, during a slot migration, this shard's own record of
//! it (which is newer than any map until the coordinator pushes the next one).

use super::fanout::{self, Listing};
use super::forward::{Target, forward, forward_stream};
use super::merged::Order;
use super::{ApiError, Ctx, Req, Route};
use crate::answer::Response;
use crate::engine::{Core, Engine};
use http::{Method, StatusCode};
use rcluster_proto::{Consistency, ShardId, headers, slots};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

/// What a request addresses.
#[derive(Debug, PartialEq, Eq)]
enum Place<'a> {
    /// The node itself (status, metrics, the cluster map, switchover requests).
    Node,
    /// One record key or topic name: its slot's shard.
    Name(Cow<'a, str>),
    /// Every shard: a listing merged across them.
    Everywhere(Listing),
    /// Every shard: record changes merged across them.
    WatchEverywhere,
    /// One topic's event stream, served by its shard.
    Stream(Cow<'a, str>),
}

/// From the route already decided (rather than the path's segments split again: that was two
/// hundred instructions a request).
fn place<'a>(ctx: &Ctx, route: Route, req: &'a Req) -> Place<'a> {
    let get = req.method == Method::GET;
    match route {
        Route::List if get => {
            let prefix = req.param("prefix").unwrap_or_default();
            // Every key under a prefix that holds a whole hash tag shares that tag's slot.
            if tag_prefix(prefix) {
                Place::Name(Cow::Borrowed(prefix))
            } else {
                Place::Everywhere(Listing::Records)
            }
        }
        Route::Put | Route::Get | Route::Delete | Route::Incr => {
            match req.key_ref(usize::from(route == Route::Incr), usize::MAX) {
                Ok(key) => Place::Name(key),
                // The handler answers the bad key.
                Err(_) => Place::Node,
            }
        }
        // A transaction's keys and topics share one slot (the handler refuses it otherwise).
        Route::Txn => match super::txn::first_name(&req.body) {
            Some(name) => Place::Name(Cow::Owned(name)),
            None => Place::Node,
        },
        Route::ListTopics if get => Place::Everywhere(Listing::Topics),
        Route::Merged => match (one_shard(ctx, &req.params("prefix")), Order::parse(req)) {
            (Some(prefix), _) => Place::Name(Cow::Owned(prefix)),
            (None, Ok(order)) => Place::Everywhere(Listing::Merged(order)),
            // The handler answers the bad order.
            (None, Err(_)) => Place::Node,
        },
        Route::Stream => match req.segment(2) {
            Ok(topic) => Place::Stream(Cow::Owned(topic)),
            Err(_) => Place::Node,
        },
        Route::Watch => match one_shard(ctx, &req.params("prefix")) {
            Some(prefix) => Place::Stream(Cow::Owned(prefix)),
            None => Place::WatchEverywhere,
        },
        Route::CreateTopic
        | Route::DeleteTopic
        | Route::Publish
        | Route::Read
        | Route::Subscribe
        | Route::Unsubscribe
        | Route::Pull => match req.segment(2) {
            Ok(topic) => Place::Name(Cow::Owned(topic)),
            Err(_) => Place::Node,
        },
        // A listing asked with HEAD is this node's own (its parts from elsewhere would have no
        // body to merge).
        Route::List
        | Route::ListTopics
        | Route::Livez
        | Route::Readyz
        | Route::Metrics
        | Route::Status
        | Route::Cluster
        | Route::ClusterStream
        | Route::Switchover
        | Route::Streams
        | Route::Internal => Place::Node,
    }
}

/// The first of `prefixes` when every key under any of them lives on one shard (each prefix holds
/// a whole hash tag, all of that shard); `None` when the keys may be anywhere.
fn one_shard(ctx: &Ctx, prefixes: &[&str]) -> Option<String> {
    let first = prefixes.first()?;
    let owner = ctx.routing.owner_of(first);
    prefixes
        .iter()
        .all(|p| tag_prefix(p) && ctx.routing.owner_of(p) == owner)
        .then(|| first.to_string())
}

/// Whether every key starting with `prefix` hashes by a tag inside `prefix` itself.
fn tag_prefix(prefix: &str) -> bool {
    // The tag found is the first complete `{…}`, which every such key starts with too.
    slots::hash_tag(prefix).len() < prefix.len()
}

/// Whether only a primary may serve the request: writes, and linearizable reads.
fn needs_primary(ctx: &Ctx, req: &Req) -> bool {
    if req.method != Method::GET && req.method != Method::HEAD {
        return true;
    }
    req.consistency(ctx.consistency)
        .is_ok_and(|c| c == Consistency::Linearizable)
}

/// The answer of a request served elsewhere (or refused before it is): boxed, so the request
/// future that awaits it stays the size of the local handlers. Forwarding and fan-out futures
/// are kilobytes, and every request's future is moved at least once as it starts.
pub type Elsewhere<'a> = Pin<Box<dyn Future<Output = Result<Response, ApiError>> + Send + 'a>>;

/// `Some(answer)` when the request is not this node's to serve alone; `None` to serve it here.
/// Decided without waiting: only the answer from elsewhere is awaited.
pub fn route<'a>(ctx: &'a Ctx, route: Route, req: &'a Req) -> Option<Elsewhere<'a>> {
    let direct = crate::headers::header(&req.headers, &super::DIRECT_HEADER).is_some();
    // Asked only by the requests that reach every shard (a keyed request does not).
    let single = || ctx.routing.shard_count() == 1;
    let refused = |e: ApiError| -> Option<Elsewhere<'a>> { Some(Box::pin(async move { Err(e) })) };
    match place(ctx, route, req) {
        Place::Node => None,
        Place::WatchEverywhere if direct || single() => None,
        Place::Everywhere(_) if direct => None,
        // One shard: a listing is this shard's to serve, by its primary when it must be.
        Place::Everywhere(_) if single() => to_own_primary(ctx, req),
        Place::WatchEverywhere => Some(Box::pin(super::multistream::watch_everywhere(ctx, req))),
        Place::Stream(name) => {
            let owner = match owner(ctx, &ctx.engine.core_view(), &name) {
                Ok(owner) => owner,
                Err(e) => return refused(e),
            };
            if owner == ctx.routing.shard {
                return None;
            }
            if direct {
                return refused(misrouted(ctx, &name, owner));
            }
            match fanout::shard_target(ctx, owner) {
                Ok(target) => Some(Box::pin(forward_stream(ctx, req, target))),
                Err(e) => refused(e),
            }
        }
        Place::Everywhere(listing) => {
            let limit = req
                .parse::<usize>("limit")
                .ok()
                .flatten()
                .unwrap_or(100)
                .min(ctx.limits.max_batch);
            let local = move || async move {
                match listing {
                    Listing::Records => super::kv::list(ctx, req).await,
                    Listing::Topics => super::topics::list(ctx, req).await,
                    Listing::Merged(_) => super::merged::merged(ctx, req).await,
                }
            };
            let serve_here =
                !needs_primary(ctx, req) || ctx.engine.primary_if_elsewhere().is_none();
            Some(Box::pin(fanout::gather(
                ctx, req, listing, limit, serve_here, local,
            )))
        }
        Place::Name(name) => {
            // The slot's owner and this shard's primary in one look at the core: each look is
            // two atomic writes to a line every request thread writes.
            let (owner, primary) = {
                let core = ctx.engine.core_view();
                let primary = needs_primary(ctx, req)
                    .then(|| Engine::primary_elsewhere(&core))
                    .flatten();
                (owner(ctx, &core, &name), primary)
            };
            let owner = match owner {
                Ok(owner) => owner,
                Err(e) => return refused(e),
            };
            let mine = ctx.routing.shard;
            if owner != mine {
                if direct {
                    return refused(misrouted(ctx, &name, owner));
                }
                return match fanout::shard_target(ctx, owner) {
                    Ok(target) => Some(Box::pin(forward(ctx, req, target))),
                    Err(e) => refused(e),
                };
            }
            if direct {
                return None;
            }
            primary.map(|primary| to_primary(ctx, req, primary))
        }
    }
}

/// The shard that serves `name`: the map's owner, unless this shard's log knows of a migration
/// newer than the map (a range handed off, or adopted). A range still being imported here is
/// served by nobody yet: `slot_migrating`, nothing applied, retry shortly.
fn owner(ctx: &Ctx, core: &Core, name: &str) -> Result<ShardId, ApiError> {
    let by_map = ctx.routing.owner_of(name);
    let mine = ctx.routing.shard;
    let migration = &core.state.slots;
    if migration.is_empty() {
        return Ok(by_map);
    }
    // Hashed only here: no slot moves on nearly every request.
    let slot = slots::slot_of(name, rcluster_proto::DEFAULT_SLOTS);
    if let Some(newer) = migration.owner_after(slot, ctx.routing.epoch(), mine) {
        return Ok(newer);
    }
    if by_map == mine && !migration.readable(slot) {
        return Err(crate::state::ApplyError::SlotMigrating { slot }.into());
    }
    Ok(by_map)
}

/// A replica that knows its primary sends writes and linearizable reads there; a node that knows
/// none answers itself (`not_primary`, nothing applied).
fn to_own_primary<'a>(ctx: &'a Ctx, req: &'a Req) -> Option<Elsewhere<'a>> {
    if !needs_primary(ctx, req) {
        return None;
    }
    let primary = ctx.engine.primary_if_elsewhere()?;
    Some(to_primary(ctx, req, primary))
}

fn to_primary<'a>(ctx: &'a Ctx, req: &'a Req, primary: String) -> Elsewhere<'a> {
    let target = Target {
        shard: ctx.routing.shard,
        urls: vec![primary],
    };
    Box::pin(forward(ctx, req, target))
}

/// A request sent here directly for a slot this node's map gives to `owner`. While this shard
/// imports the slot, the sender's map is newer than this node's (only a map naming this shard
/// sends it here): the range is being handed over, `503 slot_migrating` (retry shortly), not a
/// `moved` back to the shard that gave it away. Otherwise the sender routed by a stale map.
fn misrouted(ctx: &Ctx, name: &str, owner: ShardId) -> ApiError {
    let slot = slots::slot_of(name, rcluster_proto::DEFAULT_SLOTS);
    let importing = ctx
        .engine
        .core_view()
        .state
        .slots
        .incoming
        .as_ref()
        .is_some_and(|i| rcluster_proto::migration::within(slot, i.start, i.end));
    if importing {
        return crate::state::ApplyError::SlotMigrating { slot }.into();
    }
    moved(ctx, name, owner)
}

/// `421 moved`: the sender routed by a stale map. Nothing was applied.
fn moved(ctx: &Ctx, name: &str, owner: ShardId) -> ApiError {
    let epoch = ctx.routing.epoch();
    let slot = ctx.routing.map().map_or(0, |m| m.slots.slot_of(name));
    let mut e = ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "moved",
        format!(
            "slot {slot} belongs to shard {owner} (cluster map epoch {epoch}); nothing was \
             applied: refresh the map (GET /v1/cluster) and send it there"
        ),
    );
    e.headers.push((headers::SHARD, owner.to_string()));
    e.headers.push((headers::EPOCH, epoch.to_string()));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_prefixes_stay_in_one_slot() {
        assert!(tag_prefix("{user42}/"));
        assert!(tag_prefix("{user42}"));
        assert!(tag_prefix("posts/{user42}/x"));
        assert!(!tag_prefix("{user42"));
        assert!(!tag_prefix("users/"));
        assert!(!tag_prefix("{}/"));
        assert!(!tag_prefix(""));
    }
}
