//! Why a reconcile failed. Each variant has a short label for logs.

use crate::resources::BuildError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot build the desired objects: {0}")]
    Build(#[from] BuildError),
    #[error("ReplicatedCluster has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// `status.slotMap` does not give every slot exactly one owner; nothing is routed by it.
    #[error("{0}")]
    SlotMap(String),
    /// The TLS or token Secrets cannot be read, made or used (e.g. a named Secret is missing).
    #[error("{0}")]
    Security(String),
    /// Server-side apply of owned objects failed; the failover stage still ran.
    #[error("cannot apply {object}: {source}")]
    Apply {
        object: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Build(_) => "build",
            Error::MissingMetadata(_) => "metadata",
            Error::Apply { .. } => "apply",
            Error::SlotMap(_) => "slot-map",
            Error::Security(_) => "security",
        }
    }
}

/// Whether a Kubernetes API error is this HTTP status.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}
