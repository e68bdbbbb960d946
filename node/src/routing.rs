//! Where a request belongs: this node's shard owns some hash slots (DESIGN: docs/SHARDS.md); a
//! request for a slot of another shard goes to that shard's primary.
//!
//! The node keeps the cluster map the coordinator last pushed (`cluster.json` in the data dir, so a
//! restarted node routes at once). A node that never received one owns every slot: a cluster
//! without shards, or a single node started by hand.

use rcluster_proto::{ClusterMap, DEFAULT_SLOTS, ShardId, ShardInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

const MAP_FILE: &str = "cluster.json";

pub struct Routing {
    /// This node's shard.
    pub shard: ShardId,
    /// `None` until the coordinator pushes a map.
    map: RwLock<Option<Arc<ClusterMap>>>,
    dir: PathBuf,
    /// Serializes writers of `cluster.json` (a push and its save must not interleave with another).
    save: Mutex<()>,
    /// Bumped when a pushed map changed the known one (the cluster stream sends it on).
    changed: tokio::sync::watch::Sender<u64>,
}

/// What became of a pushed map.
#[derive(Debug, PartialEq, Eq)]
pub enum MapUpdate {
    /// The map taught the node something (a newer epoch or a newer term for some shard).
    Changed,
    /// The node already knew all of it.
    Unchanged,
}

impl Routing {
    /// Loads the saved map, if any. A map that names another shard layout than `shard` is kept:
    /// the coordinator decides shard membership, the flag only says which group this node is in.
    pub fn open(dir: &Path, shard: ShardId) -> std::io::Result<Routing> {
        let map = match std::fs::read(dir.join(MAP_FILE)) {
            Ok(bytes) => {
                let m: ClusterMap = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::other(format!("{}: {e}", dir.join(MAP_FILE).display()))
                })?;
                Some(Arc::new(m))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Routing {
            shard,
            map: RwLock::new(map),
            dir: dir.to_path_buf(),
            save: Mutex::new(()),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// Changes when a pushed map changed the known one.
    pub fn map_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The pushed map, if any.
    pub fn map(&self) -> Option<Arc<ClusterMap>> {
        self.map.read().unwrap().clone()
    }

    /// `f` of the pushed map, read in place: the lookups every request makes (its owner, the
    /// epoch it answers with) take no reference of their own.
    fn with_map<R>(&self, f: impl FnOnce(Option<&ClusterMap>) -> R) -> R {
        f(self.map.read().unwrap().as_deref())
    }

    /// The slot map epoch this node routes by (0: no map pushed yet).
    pub fn epoch(&self) -> u64 {
        self.with_map(|m| m.map_or(0, |m| m.slots.epoch))
    }

    /// The shard that owns `name` (a record key or a topic name).
    pub fn owner_of(&self, name: &str) -> ShardId {
        self.with_map(|m| m.map_or(self.shard, |m| m.slots.owner_of(name)))
    }

    /// The hash slot of `name`: by the map's slot count, or the default one before any map
    /// arrives (so what is refused as cross-slot never depends on whether shards exist yet).
    pub fn slot_of(&self, name: &str) -> u32 {
        self.with_map(|m| match m {
            Some(m) => m.slots.slot_of(name),
            None => rcluster_proto::slot_of(name, DEFAULT_SLOTS),
        })
    }

    pub fn is_local(&self, name: &str) -> bool {
        self.owner_of(name) == self.shard
    }

    /// How many shards there are (1 before a map arrives), without listing them.
    pub fn shard_count(&self) -> usize {
        self.map().map_or(1, |m| m.slots.shards as usize)
    }

    /// Every shard number (just this node's before a map arrives).
    pub fn shards(&self) -> Vec<ShardId> {
        match self.map() {
            Some(m) => (0..m.slots.shards).collect(),
            None => vec![self.shard],
        }
    }

    /// What the coordinator last recorded about `shard`.
    pub fn shard_info(&self, shard: ShardId) -> Option<ShardInfo> {
        self.map().and_then(|m| m.shard(shard).cloned())
    }

    /// Merges a pushed map into the known one and saves it before answering, so a node never
    /// routes by a map it would forget on restart.
    pub fn update(&self, pushed: ClusterMap) -> Result<MapUpdate, String> {
        pushed.validate()?;
        let _saving = self.save.lock().unwrap();
        let merged = match self.map() {
            Some(cur) => cur.merged(&pushed),
            None => pushed,
        };
        if self.map().is_some_and(|cur| *cur == merged) {
            return Ok(MapUpdate::Unchanged);
        }
        write_atomically(&self.dir, MAP_FILE, &merged)
            .map_err(|e| format!("cannot save the cluster map: {e}"))?;
        *self.map.write().unwrap() = Some(Arc::new(merged));
        self.changed.send_modify(|v| *v += 1);
        Ok(MapUpdate::Changed)
    }

    /// The map this node serves at `GET /v1/cluster`: the pushed one, or (before any push) one
    /// shard owning every slot, described by this node's own member list and primary.
    pub fn view(
        &self,
        members: BTreeMap<String, String>,
        primary: Option<String>,
        term: u64,
    ) -> ClusterMap {
        let mine = ShardInfo {
            shard: self.shard,
            members,
            primary,
            term,
        };
        match self.map() {
            // This node knows its own shard's current primary better than the last push did.
            Some(m) => m.merged(&ClusterMap {
                slots: m.slots.clone(),
                shards: vec![mine],
            }),
            None => ClusterMap::single(
                DEFAULT_SLOTS,
                mine.members.clone(),
                mine.primary.clone(),
                mine.term,
            ),
        }
    }
}

fn write_atomically<T: serde::Serialize>(dir: &Path, name: &str, v: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(v).map_err(std::io::Error::other)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    crate::wal::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcluster_proto::SlotMap;

    fn map(epoch_moves: u32, term: u64) -> ClusterMap {
        let mut slots = SlotMap::even(16, 2).unwrap();
        for i in 0..epoch_moves {
            slots = slots.with_owner(i, i, 1).unwrap();
        }
        let shard = |id: ShardId, name: &str| ShardInfo {
            shard: id,
            members: [(name.to_string(), format!("http://{name}"))].into(),
            primary: Some(name.to_string()),
            term,
        };
        ClusterMap {
            slots,
            shards: vec![shard(0, "a"), shard(1, "b")],
        }
    }

    #[test]
    fn a_pushed_map_survives_a_restart_and_older_pushes_do_not_win() {
        let dir = tempfile::tempdir().unwrap();
        let r = Routing::open(dir.path(), 1).unwrap();
        assert_eq!(r.epoch(), 0);
        assert!(r.is_local("anything"), "no map: every slot is ours");
        assert_eq!(r.update(map(2, 5)).unwrap(), MapUpdate::Changed);
        assert_eq!(r.update(map(2, 5)).unwrap(), MapUpdate::Unchanged);
        assert_eq!(r.update(map(1, 4)).unwrap(), MapUpdate::Unchanged);
        let again = Routing::open(dir.path(), 1).unwrap();
        assert_eq!(again.epoch(), 3);
        assert_eq!(again.map().unwrap().shard(0).unwrap().term, 5);
        let key = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| again.owner_of(k) == 0)
            .unwrap();
        assert!(!again.is_local(&key));
    }

    #[test]
    fn an_invalid_map_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = Routing::open(dir.path(), 0).unwrap();
        let mut bad = map(0, 1);
        bad.shards.pop();
        assert!(r.update(bad).is_err());
        assert_eq!(r.epoch(), 0);
    }
}
