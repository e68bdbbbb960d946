//! `GET /v1/merged` (placeholder).
use super::{ApiError, Ctx, Req};
use warp::reply::Response;

pub async fn merged(_ctx: &Ctx, _req: &Req) -> Result<Response, ApiError> {
    Err(ApiError::not_found("route_not_found", "not yet"))
}
