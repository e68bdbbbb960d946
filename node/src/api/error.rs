//! Client-facing errors: one HTTP status and one stable `code` each (the metrics' outcome label).

use crate::engine::EngineError;
use crate::state::ApplyError;
use http::StatusCode;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers, e.g. where the primary is.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn body(&self) -> String {
        serde_json::json!({"error": {"code": self.code, "message": self.message}}).to_string()
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        let (status, code) = apply_status(&e);
        ApiError::new(status, code, e.to_string())
    }
}

/// A transaction's failed operation answers with that operation's status and code; the message
/// says which operation it was.
fn apply_status(e: &ApplyError) -> (StatusCode, &'static str) {
    match e {
        ApplyError::VersionMismatch { .. } => (StatusCode::PRECONDITION_FAILED, "version_mismatch"),
        ApplyError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ApplyError::NotANumber => (StatusCode::CONFLICT, "not_a_number"),
        ApplyError::OutOfBounds => (StatusCode::CONFLICT, "out_of_bounds"),
        ApplyError::TopicNotFound => (StatusCode::NOT_FOUND, "topic_not_found"),
        ApplyError::SubscriptionNotFound => (StatusCode::NOT_FOUND, "subscription_not_found"),
        ApplyError::OffsetOutOfRange { .. } => (StatusCode::BAD_REQUEST, "offset_out_of_range"),
        ApplyError::SlotMigrating { .. } => (StatusCode::SERVICE_UNAVAILABLE, "slot_migrating"),
        ApplyError::ImportBusy { .. } => (StatusCode::CONFLICT, "conflict"),
        ApplyError::InTxn { source, .. } => apply_status(source),
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Apply(a) => a.into(),
            EngineError::IdempotencyKeyReused => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                e.to_string(),
            ),
            EngineError::AckTimeout { .. } => ApiError::unavailable("ack_timeout", e.to_string()),
            EngineError::SessionTimeout { .. } => ApiError::unavailable("not_ready", e.to_string()),
            EngineError::OutcomeUnknown { ref primary, .. } => with_primary(
                ApiError::unavailable("outcome_unknown", e.to_string()),
                primary,
            ),
            EngineError::NotPrimary { ref primary } => {
                with_primary(ApiError::unavailable("not_primary", e.to_string()), primary)
            }
            EngineError::NotSynced { ref primary } => {
                with_primary(ApiError::unavailable("not_ready", e.to_string()), primary)
            }
            EngineError::Discarded { .. } => ApiError::unavailable("discarded", e.to_string()),
            EngineError::Unconfirmed => ApiError::unavailable("unavailable", e.to_string()),
            EngineError::StaleTerm { .. } => {
                ApiError::new(StatusCode::CONFLICT, "stale_term", e.to_string())
            }
            EngineError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            EngineError::Io(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

/// Adds where the primary is, so clients can go there (`Rcluster-Primary: <url>`).
fn with_primary(mut e: ApiError, primary: &Option<String>) -> ApiError {
    if let Some(url) = primary {
        e.message = format!("{}; the primary is {url}", e.message);
        e.headers
            .push((rcluster_proto::headers::PRIMARY, url.clone()));
    }
    e
}
