//! HTTP header names of the wire contract (lower case, as `http::HeaderName::from_static` needs).

/// Session token: the log positions a client observed, one per shard ([`crate::SessionToken`]).
pub const TOKEN: &str = "rcluster-token";
/// A client's key for a write; a retry with the same key is applied once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Where the primary is (URL), on answers that send the client elsewhere.
pub const PRIMARY: &str = "rcluster-primary";
/// Which shard served a request (its number).
pub const SHARD: &str = "rcluster-shard";
/// The slot map epoch the sender knows (requests) or the serving node knows (responses).
pub const EPOCH: &str = "rcluster-epoch";
/// The sender routed this request itself (a client library with a slot map, or a node forwarding
/// for a client): serve it or refuse it (`421 moved`, `503 not_primary` — nothing applied), never
/// forward it again. A stale map then costs one refusal, never a loop.
pub const DIRECT: &str = "rcluster-direct";
