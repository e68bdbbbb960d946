//! Which cluster a client talks to. Every node of a cluster started with a cluster id names it in
//! the `Rcluster-Cluster-Id` header of its answers and refuses requests that name another. The
//! client takes the id it was given, or learns it from the first node that names one, sends it with
//! every request, and keeps away from endpoints found to belong to another cluster: it neither
//! follows a redirect to them nor sends them anything more.

use std::sync::Mutex;

use http::{HeaderMap, HeaderValue};

use crate::error::Error;

/// Request: the cluster the client means. Response: the cluster of the node that answered.
pub const CLUSTER_ID_HEADER: &str = "rcluster-cluster-id";

/// The error code of a request that reached another cluster's node.
pub const CLUSTER_MISMATCH: &str = "cluster_mismatch";

#[derive(Debug, Default)]
pub struct Identity {
    id: Mutex<Option<String>>,
    /// Endpoints that answered for another cluster (or refused ours).
    foreign: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Identity {
    pub fn new(configured: Option<String>) -> Identity {
        Identity {
            id: Mutex::new(configured.filter(|id| !id.is_empty())),
            foreign: Mutex::new(Vec::new()),
        }
    }

    /// The cluster id, configured or learned.
    pub fn id(&self) -> Option<String> {
        lock(&self.id).clone()
    }

    /// Adds the cluster id to a request's headers, once it is known.
    pub fn add_header(&self, headers: &mut HeaderMap) {
        if let Some(v) = self.id().and_then(|id| HeaderValue::from_str(&id).ok()) {
            headers.insert(CLUSTER_ID_HEADER, v);
        }
    }

    /// Checks the cluster an answer from `endpoint` names: learns it when none is known yet,
    /// refuses it when it is another one. Answers that name none pass (a node without an id would
    /// have refused a request naming a cluster).
    pub fn check(&self, endpoint: &str, headers: &HeaderMap) -> Result<(), Error> {
        let Some(theirs) = headers.get(CLUSTER_ID_HEADER) else {
            return Ok(());
        };
        let mut ours = lock(&self.id);
        // The common answer, from our own cluster, costs no allocation.
        if ours
            .as_deref()
            .is_some_and(|o| o.as_bytes() == theirs.as_bytes())
        {
            return Ok(());
        }
        let theirs = String::from_utf8_lossy(theirs.as_bytes()).into_owned();
        match ours.as_deref() {
            None => {
                *ours = Some(theirs);
                Ok(())
            }
            Some(o) if o == theirs => Ok(()),
            Some(o) => {
                let message = format!("{endpoint} belongs to cluster {theirs:?}, not {o:?}");
                drop(ours);
                self.mark_foreign(endpoint);
                Err(mismatch(message))
            }
        }
    }

    pub fn mark_foreign(&self, endpoint: &str) {
        let mut f = lock(&self.foreign);
        if !f.iter().any(|e| e == endpoint) {
            f.push(endpoint.to_string());
        }
    }

    pub fn is_foreign(&self, endpoint: &str) -> bool {
        lock(&self.foreign).iter().any(|e| e == endpoint)
    }

    /// Sorts out an answer from `target` (its headers, the error it is, the primary it names):
    /// a node of another cluster (it refused our request, or names another cluster) is marked
    /// foreign and the answer becomes a `cluster_mismatch` error; a primary in another cluster is
    /// not followed.
    pub fn screen(
        &self,
        target: &str,
        headers: &HeaderMap,
        err: Option<Error>,
        primary: Option<String>,
    ) -> (Option<Error>, Option<String>) {
        if let Err(e) = self.check(target, headers) {
            return (Some(e), None);
        }
        if err.as_ref().is_some_and(is_mismatch) {
            self.mark_foreign(target);
            return (err, None);
        }
        match primary {
            Some(p) if self.is_foreign(&p) => {
                let e = mismatch(format!(
                    "{target} names {p} as the primary, which belongs to another cluster"
                ));
                (Some(e), None)
            }
            p => (err, p),
        }
    }
}

pub fn mismatch(message: String) -> Error {
    Error::Api {
        status: 409,
        code: CLUSTER_MISMATCH.into(),
        message,
    }
}

/// Whether an error says the request reached another cluster's node.
pub fn is_mismatch(e: &Error) -> bool {
    e.code() == Some(CLUSTER_MISMATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(id) = id {
            h.insert(CLUSTER_ID_HEADER, HeaderValue::from_str(id).unwrap());
        }
        h
    }

    #[test]
    fn the_first_named_cluster_is_learned_and_others_refused() {
        let i = Identity::new(None);
        assert!(i.check("http://a:1", &answer(None)).is_ok());
        assert_eq!(i.id(), None);
        assert!(i.check("http://a:1", &answer(Some("shop"))).is_ok());
        assert_eq!(i.id().as_deref(), Some("shop"));
        let e = i.check("http://b:1", &answer(Some("other"))).unwrap_err();
        assert!(is_mismatch(&e), "{e}");
        assert!(i.is_foreign("http://b:1"));
        assert!(!i.is_foreign("http://a:1"));
        let mut h = HeaderMap::new();
        i.add_header(&mut h);
        assert_eq!(h[CLUSTER_ID_HEADER], "shop");
    }

    #[test]
    fn a_refusal_or_a_foreign_primary_becomes_a_mismatch() {
        let i = Identity::new(Some("shop".into()));
        let refused = mismatch("no".into());
        let (e, p) = i.screen("http://b:1", &answer(None), Some(refused), None);
        assert!(e.as_ref().is_some_and(is_mismatch) && p.is_none());
        assert!(i.is_foreign("http://b:1"));
        let not_primary = Error::Api {
            status: 503,
            code: "not_primary".into(),
            message: String::new(),
        };
        let (e, p) = i.screen(
            "http://a:1",
            &answer(Some("shop")),
            Some(not_primary.clone()),
            Some("http://b:1".into()),
        );
        assert!(
            e.as_ref().is_some_and(is_mismatch) && p.is_none(),
            "not followed"
        );
        let (e, p) = i.screen(
            "http://a:1",
            &answer(Some("shop")),
            Some(not_primary),
            Some("http://c:1".into()),
        );
        assert_eq!(
            e.and_then(|e| e.code().map(str::to_string)).as_deref(),
            Some("not_primary")
        );
        assert_eq!(p.as_deref(), Some("http://c:1"));
    }

    #[test]
    fn a_configured_id_is_never_replaced() {
        let i = Identity::new(Some("shop".into()));
        assert!(i.check("http://b:1", &answer(Some("other"))).is_err());
        assert_eq!(i.id().as_deref(), Some("shop"));
        let mut h = HeaderMap::new();
        Identity::new(Some(String::new())).add_header(&mut h);
        assert!(h.is_empty(), "an empty id is no id");
    }
}
