//! Leader election on a `coordination.k8s.io/v1` Lease, with kube's own API primitives and the
//! algorithm of client-go's leaderelection package:
//!
//! - The holder renews the Lease every `retry_period` (a replace carrying the resourceVersion it
//!   read, so two candidates can never both succeed).
//! - A candidate takes over only when the Lease has not changed for `leaseDurationSeconds`,
//!   measured on its own clock from when it last saw the Lease change. Clock skew between
//!   machines does not matter; only the rate of the clocks does.
//! - A holder that could not renew for `renew_deadline` (shorter than the lease duration) stops
//!   acting before anyone else may start.
//! - On shutdown the holder releases the Lease (empty holder, 1 s duration), so a successor
//!   starts at once instead of after the lease duration.
//!
//! Leader election keeps two operators from doing the same work at once; it is not what keeps
//! failovers safe. That is the status write with optimistic concurrency before any node command,
//! and the nodes' term checks.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use super::error::is_status;
use crate::resources::FIELD_MANAGER;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's name in `holderIdentity` (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.is_empty() || self.name.is_empty() || self.namespace.is_empty() {
            return Err("leader election needs a lease name, a namespace and an identity".into());
        }
        if !(self.retry_period < self.renew_deadline && self.renew_deadline < self.lease_duration) {
            return Err(format!(
                "leader election needs retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }
}

/// Why leadership ended.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    #[error("another candidate holds the lease")]
    TakenOver,
    #[error("could not renew the lease within the renew deadline")]
    RenewDeadline,
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The Lease's resourceVersion when last read, and when (local clock) it was first seen.
    observed: Option<(String, Instant)>,
}

/// The Lease is written under the operator's field manager, as everything it writes is (without
/// one the server records the writer as "unknown").
fn write_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: Client, cfg: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    fn duration_secs(&self) -> i32 {
        self.cfg.lease_duration.as_secs().clamp(1, i32::MAX as u64) as i32
    }

    fn observe(&mut self, lease: &Lease, now: Instant) {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            self.observed = Some((rv, now));
        }
    }

    /// One attempt to take or renew the Lease. `Ok(true)`: this candidate holds it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let Some(lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&write_params(), &lease).await {
                Ok(created) => {
                    self.observe(&created, now);
                    Ok(true)
                }
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease, now);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.cfg.identity.as_str());
        if holder.is_some() && !mine {
            let duration =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(1).max(1) as u64);
            let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
            if now.duration_since(seen_at) < duration {
                return Ok(false);
            }
            tracing::info!(holder = ?holder, "lease expired; taking it over");
        }
        let mut next = lease;
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        if !mine {
            spec.acquire_time = Some(now_micro());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.cfg.identity.clone());
        spec.renew_time = Some(now_micro());
        spec.lease_duration_seconds = Some(self.duration_secs());
        match self
            .api
            .replace(&self.cfg.name, &write_params(), &next)
            .await
        {
            Ok(written) => {
                self.observe(&written, now);
                Ok(true)
            }
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read or write the leader lease"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Keeps the Lease renewed; returns only when leadership is lost.
    pub async fn hold(&mut self) -> Lost {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return Lost::TakenOver,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader lease");
                    if renewed.elapsed() >= self.cfg.renew_deadline {
                        return Lost::RenewDeadline;
                    }
                }
            }
        }
    }

    /// Gives the Lease up if this candidate holds it.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        match self
            .api
            .replace(&self.cfg.name, &write_params(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone else took it meanwhile: nothing left to release.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
