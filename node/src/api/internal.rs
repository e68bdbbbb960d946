//! Internal endpoints for replication and the failover coordinator. Every request must carry the
//! cluster secret (`Authorization: Bearer …`); without it the answer is 401 and nothing is done.

use super::{ApiError, Ctx, Req, json_response};
use crate::replication::RoleCommand;
use http::{Method, StatusCode};
use warp::reply::Response;

fn authorized(ctx: &Ctx, req: &Req) -> bool {
    let Some(secret) = &ctx.engine.cluster.secret else {
        return false;
    };
    let given = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compare in constant time so the secret cannot be guessed byte by byte from timings.
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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

pub async fn handle(ctx: &Ctx, req: &Req, op: &str) -> Result<Response, ApiError> {
    if !authorized(ctx, req) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "internal endpoints need the cluster secret",
        ));
    }
    if req.method != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "internal endpoints take POST",
        ));
    }
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
            engine.hello_from(command(req)?.term);
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
            *engine.switchover_request.lock().unwrap() = None;
            Ok(status_reply(ctx))
        }
        _ => Err(ApiError::not_found(
            "route_not_found",
            format!("no internal endpoint {op:?}"),
        )),
    }
}
