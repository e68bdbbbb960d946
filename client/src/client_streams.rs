//! Opening server-sent event streams: the same endpoint choice, redirects and retries as a call.

use super::{Client, primary_hint};
use crate::calls::Call;
use crate::error::Error;
use crate::identity;
use crate::random;
use crate::retry::{Decision, RetryPolicy};
use crate::transport::{EventStream, Streamed};
use std::time::Instant;

impl Client {
    /// Opens a server-sent event stream (`stream` or `watch` calls). Connecting is retried
    /// like a read; a stream that breaks later is not reopened (the resumable streams of
    /// `watch` and `stream` do that).
    pub async fn open_stream(&self, call: &Call) -> Result<EventStream, Error> {
        self.open_stream_at(call).await.map(|(events, _)| events)
    }

    /// The retry policy calls follow.
    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// Stops preferring `endpoint` (it went silent): the next call goes elsewhere.
    pub(crate) fn move_away_from(&self, endpoint: &str) {
        self.rotate(endpoint);
    }

    /// [`Client::open_stream`], also saying which endpoint serves the stream.
    pub(crate) async fn open_stream_at(&self, call: &Call) -> Result<(EventStream, String), Error> {
        self.locate_once().await;
        let headers = self.headers(call, None);
        let mut state = self.retry_state();
        let mut target = self.current_endpoint();
        loop {
            let url = format!("{target}{}", call.path);
            let mut headers = headers.clone();
            self.inner.identity.add_header(&mut headers);
            let opening = self.inner.transport.stream(&url, headers, None);
            let (err, primary) = match self.noting_slow(call.api, &target, opening).await {
                Ok(Streamed::Events(events)) => {
                    match self
                        .inner
                        .identity
                        .screen(&target, events.headers(), None, None)
                    {
                        (None, _) => return Ok((events, target)),
                        (Some(e), p) => (e, p),
                    }
                }
                Ok(Streamed::Response(resp)) => {
                    let e = Error::from_response(resp.status.as_u16(), &resp.body);
                    let (e, primary) = self.inner.identity.screen(
                        &target,
                        &resp.headers,
                        Some(e),
                        primary_hint(&resp.headers),
                    );
                    (e.unwrap_or_else(|| unreachable!()), primary)
                }
                Err(t) => (Error::Transport(t), None),
            };
            if identity::is_mismatch(&err) && self.all_foreign() {
                return Err(err);
            }
            match state.next(
                &err,
                &target,
                primary.as_deref(),
                Instant::now(),
                random::unit(),
            ) {
                Decision::Redirect(p) => target = p,
                Decision::Retry { after, rotate } => {
                    let wait = (after, rotate);
                    target = self.back_off(call.api, &target, &err, &state, wait).await;
                }
                Decision::GiveUp => return Err(err),
            }
        }
    }
}
