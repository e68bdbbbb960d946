//! What a client tells its caller while a call waits, so that a command line never waits in
//! silence: before each retry, and when an attempt has gone unanswered for a while.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

#[derive(Debug)]
pub enum Notice<'a> {
    /// An attempt failed; the call tries again (attempt number `attempt`) after `after`.
    Retrying {
        api: &'a str,
        endpoint: &'a str,
        error: &'a Error,
        attempt: u32,
        after: Duration,
    },
    /// An attempt has had no answer for `waited`; the call keeps waiting, up to its timeout.
    Slow {
        api: &'a str,
        endpoint: &'a str,
        waited: Duration,
    },
}

impl std::fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Retrying {
                api,
                endpoint,
                error,
                attempt,
                after,
            } => write!(
                f,
                "retrying {api} (attempt {attempt}) in {:.1} s: {endpoint}: {error}",
                after.as_secs_f64()
            ),
            Notice::Slow {
                api,
                endpoint,
                waited,
            } => write!(
                f,
                "waiting for {endpoint} ({api}): no answer for {:.0} s…",
                waited.as_secs_f64()
            ),
        }
    }
}

/// The handler a client calls with notices.
#[derive(Clone)]
pub struct NoticeFn(pub Arc<dyn Fn(&Notice<'_>) + Send + Sync>);

impl std::ops::Deref for NoticeFn {
    type Target = dyn Fn(&Notice<'_>) + Send + Sync;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for NoticeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoticeFn")
    }
}
