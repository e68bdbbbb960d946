//! Client calls whose outcome must end up known. A write that failed in a way that may have
//! applied it (timeout, connection lost, a primary deposed while it waited) is retried with the
//! same idempotency key: the node applies it at most once and returns the first result, so the
//! retry tells what happened.

use std::future::Future;
use std::time::{Duration, Instant};

use rcluster_client::Error;

/// The node judged the request and refused it: it was not applied (4xx).
pub fn refused(e: &Error) -> bool {
    matches!(e, Error::Api { status, .. } if (400..500).contains(status))
}

/// Repeats `op` (which must reuse one idempotency key) until it succeeds or is refused, for at
/// most `limit`. The last error comes back when the limit is reached.
pub async fn until_known<T, F, Fut>(limit: Duration, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if refused(&e) => return Err(e),
            Err(e) if started.elapsed() >= limit => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Microseconds since `origin`: the clock of a recorded history.
pub fn micros(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}
