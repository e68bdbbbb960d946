//! The playground's files in its folder: the durable coordinator record (`state.json`, the
//! coordinator runtime's record store), the cluster secret and id, the decision log and a lock so
//! two playgrounds never drive one cluster.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use crate::coordinator::{self, History, RecordStore, Stored};
use crate::failover::{AckLevel, Coordinator};
use rcluster_proto::{DEFAULT_SLOTS, SlotMap};

pub const STATE_FILE: &str = "state.json";
pub const SECRET_FILE: &str = "secret";
pub const CLUSTER_ID_FILE: &str = "cluster-id";
pub const DECISIONS_FILE: &str = "decisions.log";
const LOCK_FILE: &str = "playground.pid";

/// Everything `state.json` holds. Every coordinator record (one per shard) and the slot map must
/// reach the disk before any node hears of them; the rest is history for `/status`.
///
/// Shard 0's record and statistics sit at the top level, where a cluster without shards has always
/// kept them, so older state files load unchanged; shards 1.. follow in `shards`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The members asked for per shard (`--replicas`).
    pub replicas: usize,
    pub base_port: u16,
    pub ack: AckLevel,
    pub coordinator: Coordinator,
    /// Failover and switchover statistics (`failovers_total`, `last_failover`, ...).
    #[serde(flatten)]
    pub history: History,
    /// Shards 1.. (shard 0 is the top level).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardRecord>,
    /// Which shard owns each hash slot; `None` for a cluster created without shards (one shard
    /// owning every slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<SlotMap>,
    /// A change of the shard count under way: slots still moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshard: Option<Reshard>,
}

/// A resharding: the shard count asked for and the range moving now, saved before each of its
/// steps acts (docs/SHARDS.md "Resharding"); the same record as the controller's.
pub use crate::reshard::Resharding as Reshard;

/// The coordinator record and statistics of one shard beyond the first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub coordinator: Coordinator,
    #[serde(flatten)]
    pub history: History,
}

impl Saved {
    /// A new cluster of `members.len()` shards: shard k's nodes start with the member list
    /// `members[k]`; with several shards the slots are spread evenly.
    pub fn new(
        replicas: usize,
        base_port: u16,
        ack: AckLevel,
        mut members: Vec<Vec<String>>,
    ) -> Saved {
        let count = members.len().max(1);
        let first = if members.is_empty() {
            Vec::new()
        } else {
            members.remove(0)
        };
        Saved {
            replicas,
            base_port,
            ack,
            coordinator: Coordinator {
                members: first,
                ..Coordinator::default()
            },
            history: History::default(),
            shards: members
                .into_iter()
                .map(|m| ShardRecord {
                    coordinator: Coordinator {
                        members: m,
                        ..Coordinator::default()
                    },
                    history: History::default(),
                })
                .collect(),
            slots: (count > 1).then(|| {
                SlotMap::even(DEFAULT_SLOTS, count as u32).expect("shard counts are validated")
            }),
            reshard: None,
        }
    }

    /// How many shards the cluster has.
    pub fn shard_count(&self) -> usize {
        1 + self.shards.len()
    }

    pub fn record(&self, shard: usize) -> &Coordinator {
        match shard {
            0 => &self.coordinator,
            k => &self.shards[k - 1].coordinator,
        }
    }

    pub fn record_mut(&mut self, shard: usize) -> &mut Coordinator {
        match shard {
            0 => &mut self.coordinator,
            k => &mut self.shards[k - 1].coordinator,
        }
    }

    pub fn history(&self, shard: usize) -> &History {
        match shard {
            0 => &self.history,
            k => &self.shards[k - 1].history,
        }
    }

    pub fn history_mut(&mut self, shard: usize) -> &mut History {
        match shard {
            0 => &mut self.history,
            k => &mut self.shards[k - 1].history,
        }
    }

    /// The slot map in force: the recorded one, or one shard owning every slot.
    pub fn slot_map(&self) -> SlotMap {
        self.slots
            .clone()
            .unwrap_or_else(|| SlotMap::single(DEFAULT_SLOTS))
    }
}

/// The state file as the coordinator runtime's record store, for one shard's runtime. One
/// playground owns the folder (the lock), so nobody else changes the record: a write always
/// succeeds or fails outright.
pub struct StateStore<'a> {
    pub folder: &'a Folder,
    pub saved: &'a mut Saved,
    pub shard: usize,
}

impl RecordStore for StateStore<'_> {
    type Error = Error;

    async fn store(&mut self, write: &coordinator::Write<'_>) -> Result<Stored, Error> {
        let mut next = self.saved.clone();
        *next.record_mut(self.shard) = write.record.clone();
        *next.history_mut(self.shard) = write.history.clone();
        self.folder.save(&next)?;
        *self.saved = next;
        Ok(Stored::Written)
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// The playground folder.
#[derive(Debug, Clone)]
pub struct Folder {
    pub dir: PathBuf,
}

impl Folder {
    pub fn create(dir: &Path) -> Result<Folder, Error> {
        fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io(format!("cannot resolve {}", dir.display())))?;
        Ok(Folder { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The saved state, or `None` for a new cluster.
    pub fn load(&self) -> Result<Option<Saved>, Error> {
        let path = self.path(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Usage(format!(
                    "{} is not a playground state file ({e}); use another --dir",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
        }
    }

    /// Write to a temporary file, fsync, rename over `state.json`, fsync the folder: after a
    /// crash the file holds either the old record or the new one, never a mix.
    pub fn save(&self, saved: &Saved) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(saved).map_err(|e| Error::Io {
            what: "cannot encode the state".into(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.dir, STATE_FILE, &bytes, 0o644)
    }

    /// The cluster's id, created on first use and kept: every node of this cluster carries it,
    /// and nodes and clients refuse traffic meant for another cluster.
    pub fn cluster_id(&self) -> Result<String, Error> {
        let path = self.path(CLUSTER_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "{} is empty; delete it only together with the whole folder",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
        }
        let id = format!("playground-{}", random_hex(6, "the cluster id")?);
        write_atomic(&self.dir, CLUSTER_ID_FILE, id.as_bytes(), 0o644)?;
        Ok(id)
    }

    /// The cluster secret, created on first use (owner-readable only).
    pub fn secret(&self) -> Result<PathBuf, Error> {
        let path = self.path(SECRET_FILE);
        match fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(path),
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "{} is empty; delete it only together with the whole folder",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
        }
        let hex = random_hex(32, "the cluster secret")?;
        write_atomic(&self.dir, SECRET_FILE, hex.as_bytes(), 0o600)?;
        Ok(path)
    }

    /// Takes the folder for this process. A lock left by a process that no longer runs is taken
    /// over (the playground may have been killed).
    pub fn lock(&self) -> Result<Lock, Error> {
        let path = self.path(LOCK_FILE);
        if let Ok(text) = fs::read_to_string(&path)
            && let Ok(pid) = text.trim().parse::<u32>()
            && pid != std::process::id()
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            return Err(Error::Usage(format!(
                "{} is in use by another playground (pid {pid}); stop it or use another --dir",
                self.dir.display()
            )));
        }
        let pid = std::process::id().to_string();
        write_atomic(&self.dir, LOCK_FILE, pid.as_bytes(), 0o644)?;
        Ok(Lock { path })
    }

    pub fn decision_log(&self) -> Result<File, Error> {
        let path = self.path(DECISIONS_FILE);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))
    }

    /// The log file of one node (its stdout and stderr), appended across restarts.
    pub fn node_log(&self, name: &str) -> Result<File, Error> {
        let path = self.path(&format!("{name}.log"));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))
    }
}

/// Removes the lock file when the playground ends.
pub struct Lock {
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let what = || format!("cannot write {}", path.display());
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(what()))?;
    f.write_all(bytes).map_err(io(what()))?;
    f.sync_all().map_err(io(what()))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io(what()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(what()))
}

/// `n` random bytes as lower-case hex.
fn random_hex(n: usize, what: &str) -> Result<String, Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| Error::Io {
        what: format!("cannot generate {what}"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_secret_is_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = Folder::create(tmp.path()).unwrap();
        assert_eq!(folder.load().unwrap(), None);
        let mut saved = Saved::new(3, 7000, AckLevel::Quorum, vec![vec!["n1".into()]]);
        saved.coordinator.term = 4;
        saved.coordinator.primary = Some("n2".into());
        folder.save(&saved).unwrap();
        assert_eq!(folder.load().unwrap(), Some(saved));

        let secret = folder.secret().unwrap();
        let first = fs::read_to_string(&secret).unwrap();
        assert_eq!(first.len(), 64);
        folder.secret().unwrap();
        assert_eq!(fs::read_to_string(&secret).unwrap(), first);

        let id = folder.cluster_id().unwrap();
        assert!(id.starts_with("playground-") && id.len() == 23, "{id}");
        assert_eq!(
            folder.cluster_id().unwrap(),
            id,
            "generated once, then kept"
        );
        let other = Folder::create(&tmp.path().join("other")).unwrap();
        assert_ne!(other.cluster_id().unwrap(), id);
    }

    #[test]
    fn the_statistics_sit_beside_the_record_as_before() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = Folder::create(tmp.path()).unwrap();
        // A state file of an earlier version: no member list, statistics at the top level.
        let old = r#"{"replicas":3,"base_port":7000,"ack":"quorum",
            "coordinator":{"term":2,"primary":"n1"},"failovers_total":4,"switchovers_total":1,
            "last_failover":null,"last_switchover":null}"#;
        fs::write(folder.path(STATE_FILE), old).unwrap();
        let mut saved = folder.load().unwrap().unwrap();
        assert_eq!(saved.history.failovers_total, 4);
        assert!(saved.coordinator.members.is_empty());
        saved.history.switchovers_total = 2;
        folder.save(&saved).unwrap();
        let text = fs::read_to_string(folder.path(STATE_FILE)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (
                v["failovers_total"].as_u64(),
                v["switchovers_total"].as_u64()
            ),
            (Some(4), Some(2))
        );
    }

    #[test]
    fn shards_keep_a_record_each_and_the_slot_map() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = Folder::create(tmp.path()).unwrap();
        let one = Saved::new(2, 7000, AckLevel::Quorum, vec![vec!["n1".into()]]);
        assert_eq!(one.shard_count(), 1);
        assert_eq!(one.slots, None, "a cluster without shards records no map");
        let text = serde_json::to_value(&one).unwrap();
        assert!(text.get("shards").is_none() && text.get("slots").is_none());
        let mut three = Saved::new(
            2,
            7000,
            AckLevel::Quorum,
            vec![
                vec!["n1".into(), "n2".into()],
                vec!["s1n1".into(), "s1n2".into()],
                vec!["s2n1".into(), "s2n2".into()],
            ],
        );
        assert_eq!(three.shard_count(), 3);
        assert_eq!(three.record(2).members, ["s2n1", "s2n2"]);
        three.record_mut(1).term = 7;
        three.history_mut(2).failovers_total = 1;
        folder.save(&three).unwrap();
        let back = folder.load().unwrap().unwrap();
        assert_eq!(back.record(1).term, 7);
        assert_eq!(back.history(2).failovers_total, 1);
        let map = back.slot_map();
        map.validate().unwrap();
        assert_eq!((map.shards, map.slot_count(1)), (3, 1365));
    }

    #[test]
    fn a_garbled_state_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = Folder::create(tmp.path()).unwrap();
        fs::write(folder.path(STATE_FILE), "{not json").unwrap();
        let err = folder.load().unwrap_err().to_string();
        assert!(err.contains("not a playground state file"), "{err}");
    }

    #[test]
    fn lock_refuses_a_live_owner_and_takes_over_a_dead_one() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = Folder::create(tmp.path()).unwrap();
        // pid 1 always runs.
        fs::write(folder.path(LOCK_FILE), "1").unwrap();
        assert!(folder.lock().is_err());
        fs::write(folder.path(LOCK_FILE), "4000000000").unwrap();
        let lock = folder.lock().unwrap();
        drop(lock);
        assert!(!folder.path(LOCK_FILE).exists());
    }
}
