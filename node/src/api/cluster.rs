//! The cluster map (`GET /v1/cluster`) and its push (`GET /v1/cluster/stream`): which node is
//! each shard's primary, in which term, and which shard owns which slots.
//!
//! The stream exists so a client switches its write target the moment a failover promotes a new
//! primary, instead of finding out from a timeout against the old one. It sends the map at once,
//! again whenever this node's term, primary or member list changes (the coordinator fences it,
//! then points it at the new primary) or a pushed map teaches it something, and every
//! [`HEARTBEAT`] anyway: a client that hears nothing for a few heartbeats knows its node stopped
//! and moves to another. A node that is cut off from the coordinator keeps its old view; the
//! client keeps the map of the highest term it has seen, so such a node cannot move it back.

use super::stream::{Ev, sse};
use super::{ApiError, Ctx, json_response, to_json};
use crate::answer::Response;
use crate::engine::Engine;
use crate::routing::Routing;
use http::StatusCode;
use rcluster_proto::ClusterMap;
use std::time::Duration;

/// A quiet cluster stream resends the map this often. Short, because the map is small and the
/// client's only way to tell a paused node from a quiet one is silence.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The cluster map as this node knows it: the pushed one, with this node's own shard as its
/// role record says (newer than the last push after a failover).
fn view(engine: &Engine, routing: &Routing) -> ClusterMap {
    let (members, primary, term) = {
        let core = engine.core_view();
        let node = &core.node;
        ((*node.members).clone(), node.primary.clone(), node.term)
    };
    routing.view(members, primary, term)
}

/// `GET /v1/cluster`.
pub async fn cluster(ctx: &Ctx) -> Result<Response, ApiError> {
    let map = view(&ctx.engine, &ctx.routing);
    Ok(json_response(StatusCode::OK, to_json(&map)))
}

/// `GET /v1/cluster/stream`: `cluster` events, each the whole map.
pub async fn cluster_stream(ctx: &Ctx) -> Result<Response, ApiError> {
    let (engine, routing) = (ctx.engine.clone(), ctx.routing.clone());
    Ok(sse(move |tx| async move {
        let mut roles = engine.role_watch();
        let mut pushed = routing.map_watch();
        loop {
            let map = Ev::new("cluster", None, to_json(&view(&engine, &routing)));
            if tx.send(map).await.is_err() {
                return;
            }
            // Marked seen before the map is read again, so a change during the send is not lost.
            tokio::select! {
                r = roles.changed() => if r.is_err() { return },
                r = pushed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
    }))
}
