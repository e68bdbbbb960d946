//! Doing a migration step against real nodes: the internal `slots*` endpoints of the source's
//! and the target's primaries (node/src/api/slots.rs). Copy pages and log stretches travel as
//! the nodes wrote them: the coordinator never decodes data.

use super::step::{Step, next_step};
use crate::nodes::{NodeClient, NodeError};
use rcluster_proto::migration::{Migration, SlotState};
use std::time::Duration;

/// Records per copy page (the node also stops a page at a few MiB).
const PAGE: usize = 500;
/// Source log entries looked at per catch-up round.
const LOG_PAGE: u64 = 2000;
/// A step waits for a quorum of a shard; a page may be MiBs.
const TIMEOUT: Duration = Duration::from_secs(20);
/// A copy that keeps being restarted (the source's primary keeps changing) is retried later.
const COPY_ATTEMPTS: usize = 3;
/// Steps one [`Mover::run_phase`] takes before it reports back (a catch-up that never catches
/// up must not hold the caller's view of the migration forever).
const STEPS_PER_PHASE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("{0}")]
    Protocol(String),
}

/// Performs migration steps; remembers only what may be lost (whether the last catch-up round
/// reached the source's end).
pub struct Mover {
    client: NodeClient,
    caught_up: bool,
}

fn header(resp: &rcluster_client::transport::Response, name: &str) -> Option<String> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn number(resp: &rcluster_client::transport::Response, name: &str) -> Result<u64, MoveError> {
    header(resp, name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| MoveError::Protocol(format!("the node's answer lacks {name}")))
}

impl Mover {
    pub fn new(client: NodeClient) -> Mover {
        Mover {
            client,
            caught_up: false,
        }
    }

    /// A shard's slot state, from its primary.
    pub async fn state(&self, primary: &str) -> Result<SlotState, MoveError> {
        let resp = self
            .client
            .internal(primary, "slots?step=show", None, TIMEOUT)
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|e| MoveError::Protocol(format!("slot state: {e}")))?;
        serde_json::from_value(v["slots"].clone())
            .map_err(|e| MoveError::Protocol(format!("slot state: {e}")))
    }

    /// The next step, from both shards' states as their primaries report them.
    pub async fn next(&self, m: &Migration, source: &str, target: &str) -> Result<Step, MoveError> {
        let (s, t) = tokio::try_join!(self.state(source), self.state(target))?;
        Ok(next_step(m, &s, &t, self.caught_up))
    }

    async fn step(&self, primary: &str, query: String) -> Result<(), MoveError> {
        self.client
            .internal(primary, &format!("slots?{query}"), None, TIMEOUT)
            .await?;
        Ok(())
    }

    /// Goes through the steps of `m`'s phase until the caller has something to save (a
    /// `Record` or `Finished`), an error, or [`STEPS_PER_PHASE`] steps (then a `CatchUp`: ask
    /// again). Hands the mover back, for the caller to run beside its own loop.
    pub async fn run_phase(
        mut self,
        m: Migration,
        source: String,
        target: String,
    ) -> (Mover, Result<Step, MoveError>) {
        for _ in 0..STEPS_PER_PHASE {
            let step = match self.next(&m, &source, &target).await {
                Ok(step) => step,
                Err(e) => return (self, Err(e)),
            };
            if matches!(step, Step::Record(_) | Step::Finished) {
                return (self, Ok(step));
            }
            if let Err(e) = self.perform(&m, &step, &source, &target).await {
                return (self, Err(e));
            }
        }
        (self, Ok(Step::CatchUp { from: 0 }))
    }

    /// Does `step` (never `Record` or `Finished`: those are the caller's).
    pub async fn perform(
        &mut self,
        m: &Migration,
        step: &Step,
        source: &str,
        target: &str,
    ) -> Result<(), MoveError> {
        let range = format!("start={}&end={}", m.start, m.end);
        match *step {
            Step::Begin => {
                self.caught_up = false;
                let q = format!("step=begin&{range}&shard={}", m.from);
                self.step(target, q).await
            }
            Step::Copy => self.copy(&range, source, target).await,
            Step::CatchUp { from } => {
                let upto = self.log_page(&range, from, source, target).await?;
                self.caught_up = upto - from < LOG_PAGE;
                Ok(())
            }
            Step::Drain { mut from, until } => {
                while from < until {
                    let upto = self.log_page(&range, from, source, target).await?;
                    if upto == from {
                        // The fence is committed, so its index is too: the source must have it.
                        return Err(MoveError::Protocol(format!(
                            "the source's log ends at {from}, before its fence at {until}"
                        )));
                    }
                    from = upto;
                }
                Ok(())
            }
            Step::Fence => {
                let q = format!("step=fence&{range}&shard={}", m.to);
                self.step(source, q).await
            }
            Step::Handoff { epoch } => {
                let q = format!("step=handoff&{range}&shard={}&epoch={epoch}", m.to);
                self.step(source, q).await
            }
            Step::End { epoch } => {
                self.step(target, format!("step=end&{range}&epoch={epoch}"))
                    .await
            }
            Step::Drop => self.step(source, format!("step=drop&{range}")).await,
            Step::Abort => self.step(target, format!("step=abort&{range}")).await,
            Step::Unfence => self.step(source, format!("step=unfence&{range}")).await,
            Step::Record(_) | Step::Finished => Err(MoveError::Protocol(format!(
                "{step:?} is the caller's to do"
            ))),
        }
    }

    /// A whole consistent copy, page by page; started over when the source lost it (a new
    /// primary, a restart): the target then discards the partial copy.
    async fn copy(&self, range: &str, source: &str, target: &str) -> Result<(), MoveError> {
        let mut attempts = 0;
        'copy: loop {
            attempts += 1;
            let mut cursor: Option<(u64, String)> = None;
            loop {
                let q = match &cursor {
                    None => format!("slots-copy?{range}&limit={PAGE}"),
                    Some((at, after)) => {
                        format!("slots-copy?{range}&limit={PAGE}&at={at}&after={after}")
                    }
                };
                let page = match self.client.internal(source, &q, None, TIMEOUT).await {
                    Err(NodeError::Refused { status: 409, .. }) if attempts < COPY_ATTEMPTS => {
                        continue 'copy;
                    }
                    r => r?,
                };
                let at = number(&page, "rcluster-copy-at")?;
                let next = header(&page, "rcluster-copy-next");
                self.client
                    .internal(target, "slots-import", Some(page.body), TIMEOUT)
                    .await?;
                match next {
                    Some(after) => cursor = Some((at, after)),
                    None => return Ok(()),
                }
            }
        }
    }

    /// One stretch of the source's log into the target; returns how far it reached.
    async fn log_page(
        &self,
        range: &str,
        from: u64,
        source: &str,
        target: &str,
    ) -> Result<u64, MoveError> {
        let q = format!("slots-log?{range}&from={from}&max={LOG_PAGE}");
        let page = self.client.internal(source, &q, None, TIMEOUT).await?;
        let upto = number(&page, "rcluster-log-upto")?;
        if upto > from {
            self.client
                .internal(target, "slots-import", Some(page.body), TIMEOUT)
                .await?;
        }
        Ok(upto)
    }
}

/// A migration phase running beside the reconciles; it hands the mover back.
pub type Moving = tokio::task::JoinHandle<(Mover, Result<Step, MoveError>)>;

/// What a coordinator remembers of a resharding between its loops: the phase task running and
/// the mover between tasks. Lost on restart, which costs at most a repeated step: the record is
/// saved (the resource status, the playground's state file).
#[derive(Default)]
pub struct ReshardMemory {
    pub moving: Option<Moving>,
    pub mover: Option<Mover>,
    /// Failed tasks in a row: the first of a streak is told.
    pub failures: u32,
}

impl std::fmt::Debug for ReshardMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReshardMemory")
            .field("moving", &self.moving.is_some())
            .field("failures", &self.failures)
            .finish()
    }
}

impl Drop for ReshardMemory {
    fn drop(&mut self) {
        if let Some(m) = &self.moving {
            m.abort();
        }
    }
}
