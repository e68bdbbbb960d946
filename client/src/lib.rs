//! rcluster client library: it finds the primary, follows redirects, carries the session token,
//! and retries writes under one idempotency key, reporting "outcome unknown" rather than failure
//! when no retry settles a write. The `rcluster` command line is the `rcluster-cli` crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rcluster_client::Error> {
//! use rcluster_client::{Client, PutOptions};
//! let client = Client::new(["http://127.0.0.1:7001", "http://127.0.0.1:7002"])?;
//! let put = client.put("users/42", &serde_json::json!({"name": "Ada"}), &PutOptions::default()).await?;
//! let rec = client.get("users/42", None).await?;
//! assert_eq!(rec.map(|r| r.version), Some(put.version));
//! # Ok(()) }
//! ```

mod api;
pub mod calls;
mod client;
mod cluster_stream;
mod error;
mod identity;
mod locate;
mod notice;
pub mod push;
pub mod random;
pub mod retry;
mod routing;
pub mod sse;
pub mod tls;
pub mod transport;
pub mod txn;
pub mod types;

pub use client::{
    Client, ClientBuilder, IDEMPOTENCY_HEADER, PRIMARY_HEADER, Reply, TOKEN_HEADER,
    normalize_endpoint,
};
pub use error::Error;
pub use identity::{CLUSTER_ID_HEADER, CLUSTER_MISMATCH};
pub use locate::Located;
pub use notice::Notice;
pub use push::{Change, TopicEvent, TopicStream, WatchEvent, WatchOptions, WatchStream};
pub use random::idempotency_key;
pub use retry::RetryPolicy;
pub use txn::{Compare, Txn, TxnOp, TxnOpResult, TxnResult};
pub use types::*;
