//! Sending each request straight to the shard that owns it (docs/SHARDS.md "Routing").
//!
//! The client keeps the cluster map a node serves at `GET /v1/cluster`, computes a key's or a
//! topic's slot itself and sends the request to the owning shard's primary with `Rcluster-Direct`,
//! so no node forwards it. Nothing depends on the map being current: a node that does not own the
//! slot answers `421 moved` and a replica `503 not_primary` — both apply nothing — and the client
//! then refreshes the map or follows the named primary. A cluster with one shard is served as it
//! always was (any node, forwarding, redirects).

use std::sync::{Arc, Mutex};

use rcluster_proto::{ClusterMap, ShardId};

/// Where a request is sent directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direct {
    pub shard: ShardId,
    pub url: String,
}

/// The cached cluster map.
#[derive(Default)]
pub struct Routes {
    map: Mutex<Option<Arc<ClusterMap>>>,
}

impl Routes {
    fn map(&self) -> Option<Arc<ClusterMap>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The slot map epoch the client routes by (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.map().map_or(0, |m| m.slots.epoch)
    }

    /// Where to send a request about `name` (a record key or topic), when the cluster has
    /// several shards and the owner's primary is known.
    pub fn direct(&self, name: &str) -> Option<Direct> {
        let map = self.map()?;
        if map.slots.shards <= 1 {
            return None;
        }
        let shard = map.slots.owner_of(name);
        let url = map.shard(shard)?.primary_url()?.to_string();
        Some(Direct { shard, url })
    }

    /// Takes what `map` knows that the cached map does not (newer epoch, newer terms).
    pub fn learn(&self, map: ClusterMap) {
        if map.validate().is_err() {
            return;
        }
        let mut cur = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let merged = match cur.as_deref() {
            Some(old) => old.merged(&map),
            None => map,
        };
        *cur = Some(Arc::new(merged));
    }

    /// A replica of `shard` named its primary (`Rcluster-Primary`): route there from now on.
    /// Returns false when the URL is no member of the shard (then it is not followed).
    pub fn primary_moved(&self, shard: ShardId, url: &str) -> bool {
        let mut cur = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(map) = cur.as_deref() else {
            return false;
        };
        let mut next = map.clone();
        let Some(info) = next.shards.iter_mut().find(|s| s.shard == shard) else {
            return false;
        };
        let Some(name) = info
            .members
            .iter()
            .find(|(_, u)| u.as_str() == url)
            .map(|(n, _)| n.clone())
        else {
            return false;
        };
        info.primary = Some(name);
        *cur = Some(Arc::new(next));
        true
    }

    /// Every member URL of every shard (endpoints for requests that any node may serve).
    pub fn member_urls(&self) -> Vec<String> {
        self.map()
            .map(|m| {
                m.shards
                    .iter()
                    .flat_map(|s| s.members.values().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcluster_proto::{ShardInfo, SlotMap};

    fn map(primaries: [&str; 2]) -> ClusterMap {
        let shard = |id: u32, names: [&str; 2], primary: &str| ShardInfo {
            shard: id,
            members: names
                .iter()
                .map(|n| (n.to_string(), format!("http://{n}")))
                .collect(),
            primary: Some(primary.to_string()),
            term: 1,
        };
        ClusterMap {
            slots: SlotMap::even(64, 2).unwrap(),
            shards: vec![
                shard(0, ["a1", "a2"], primaries[0]),
                shard(1, ["b1", "b2"], primaries[1]),
            ],
        }
    }

    #[test]
    fn keys_go_to_their_shards_primary_and_follow_a_named_one() {
        let r = Routes::default();
        assert_eq!(r.direct("k"), None, "no map yet");
        r.learn(map(["a1", "b1"]));
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| SlotMap::even(64, 2).unwrap().owner_of(k) == 1)
            .unwrap();
        assert_eq!(
            r.direct(&key),
            Some(Direct {
                shard: 1,
                url: "http://b1".into()
            })
        );
        assert!(r.primary_moved(1, "http://b2"));
        assert_eq!(r.direct(&key).unwrap().url, "http://b2");
        assert!(!r.primary_moved(1, "http://elsewhere"), "not a member");
        assert_eq!(r.member_urls().len(), 4);
    }

    #[test]
    fn one_shard_is_not_routed_directly() {
        let r = Routes::default();
        r.learn(ClusterMap::single(
            64,
            [("n1".to_string(), "http://n1".to_string())].into(),
            Some("n1".into()),
            1,
        ));
        assert_eq!(r.direct("k"), None);
    }
}
