//! Internal endpoints for replication and the failover coordinator. Every request must carry the
//! cluster secret (`Authorization: Bearer …`); without it the answer is 401, given before any of
//! the body is read, and nothing is done.

use super::{ApiError, Ctx, Req, json_response};
use crate::answer::Response;
use crate::engine::EngineError;
use crate::replication::RoleCommand;
use http::StatusCode;

/// Whether the request carries the cluster secret. Checked from the head, before any body is
/// read: an anonymous client must not make the node buffer a body.
pub fn authorized(ctx: &Ctx, headers: &http::HeaderMap) -> bool {
    let given = crate::headers::header(headers, &http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    super::bearer_matches(ctx.engine.cluster.secret.as_deref(), given)
}

pub fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "internal endpoints need the cluster secret",
    )
}

/// Query parameters of each internal operation.
pub fn params(op: &str) -> &'static [&'static str] {
    match op {
        "install-snapshot" => &["term", "from"],
        op => super::slots::params(op).unwrap_or(&[]),
    }
}

/// Refuses a command of a term older than this node's.
fn current_term(ctx: &Ctx, term: u64) -> Result<(), ApiError> {
    let current = ctx.engine.term();
    if term < current {
        return Err(EngineError::StaleTerm {
            given: term,
            current,
        }
        .into());
    }
    Ok(())
}

fn command(req: &Req) -> Result<RoleCommand, ApiError> {
    serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("expected {{\"term\":N, \"primary\":NAME?, \"members\":{{NAME:URL}}?}}: {e}"),
        )
    })
}

fn status_reply(ctx: &Ctx) -> Response {
    json_response(
        StatusCode::OK,
        super::to_json(&super::node_status(ctx, false).0),
    )
}

/// Serves an internal operation; the secret, the method and the parameters were checked from the
/// request head already.
pub async fn handle(ctx: &Ctx, req: &Req, op: &str) -> Result<Response, ApiError> {
    let engine = &ctx.engine;
    match op {
        "append" => {
            let r = engine.handle_append(req.body.clone()).await?;
            Ok(json_response(
                StatusCode::OK,
                serde_json::to_string(&r).unwrap_or_default(),
            ))
        }
        "install-snapshot" => {
            let term = req.parse::<u64>("term")?.unwrap_or(0);
            let from = req.param("from").unwrap_or_default().to_string();
            let r = engine
                .install_snapshot(term, &from, req.body.clone())
                .await?;
            Ok(json_response(
                StatusCode::OK,
                serde_json::to_string(&r).unwrap_or_default(),
            ))
        }
        "fence" => {
            engine.fence(command(req)?.term)?;
            Ok(status_reply(ctx))
        }
        "promote" => {
            let c = command(req)?;
            engine.promote(c.term, c.members)?;
            Ok(status_reply(ctx))
        }
        "follow" => {
            let c = command(req)?;
            let primary = c
                .primary
                .ok_or_else(|| ApiError::bad_request("invalid_json", "follow needs \"primary\""))?;
            engine.follow(c.term, &primary, c.members)?;
            Ok(status_reply(ctx))
        }
        "hello" => {
            let term = command(req)?.term;
            current_term(ctx, term)?;
            engine.hello_from(term);
            Ok(json_response(StatusCode::OK, "{}".into()))
        }
        "status" => Ok(status_reply(ctx)),
        "cluster-map" => {
            let map: rcluster_proto::ClusterMap =
                serde_json::from_slice(&req.body).map_err(|e| {
                    ApiError::bad_request("invalid_json", format!("expected a cluster map: {e}"))
                })?;
            let changed = ctx
                .routing
                .update(map)
                .map_err(|e| ApiError::bad_request("invalid_cluster_map", e))?;
            let reply = super::render::Obj::new()
                .num("epoch", ctx.routing.epoch())
                .bool("changed", changed == crate::routing::MapUpdate::Changed)
                .done();
            Ok(json_response(StatusCode::OK, reply))
        }
        "clear-switchover" => {
            // Only the coordinator of the current term may say the request was dealt with.
            current_term(ctx, command(req)?.term)?;
            *engine.switchover_request.lock().unwrap() = None;
            Ok(status_reply(ctx))
        }
        op if super::slots::params(op).is_some() => super::slots::handle(ctx, req, op).await,
        _ => Err(ApiError::not_found(
            "route_not_found",
            format!("no internal endpoint {op:?}"),
        )),
    }
}
