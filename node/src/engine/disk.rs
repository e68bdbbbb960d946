//! The engine's file work besides the WAL writer's: the role record, discarding a divergent log
//! suffix, installing a primary's snapshot. Every function here runs without the core lock (checked
//! in debug builds), so a slow disk stalls the step that needs it, not every request.

use super::locked::assert_unlocked;
use super::recovery::{self, Loaded};
use crate::metrics::Metrics;
use crate::replication::RoleRecord;
use crate::snapshot;
use crate::state::State;
use crate::wal::{self, Wal, WalConfig};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::watch;

const RECORD_FILE: &str = "role.json";
/// Received snapshots are written to `incoming-N.snap.part`, one name per reception: a primary
/// that retries a slow transfer may send a second copy while the first is still being written or
/// installed, and the two must not write into, or rename away, each other's file.
const INCOMING_SNAPSHOT: &str = "incoming";
static RECEPTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Takes the data folder for this process: an exclusive lock on its `LOCK` file, held for as long
/// as the returned file is open (the kernel lets go when the process ends, however it ends). A
/// second process on the same folder (started on it by mistake, or a replacement started before
/// the old process ended) would interleave its log writes and role records with this one's.
pub fn lock_folder(dir: &Path) -> io::Result<std::fs::File> {
    use std::io::{Read, Write};
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("LOCK"))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "it is in use by another rcluster-node process (pid {}); one folder serves one \
                     node at a time",
                    holder.trim()
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    // Who holds it, for the refusal above: informative only, the lock is what counts.
    f.set_len(0)?;
    f.write_all(std::process::id().to_string().as_bytes())?;
    Ok(f)
}

pub fn load_record(dir: &Path) -> io::Result<RoleRecord> {
    match std::fs::read(dir.join(RECORD_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RoleRecord::default()),
        Err(e) => Err(e),
    }
}

/// Writes the role record durably: a new file, fsynced, renamed over the old one.
pub fn save_record(dir: &Path, record: &RoleRecord) -> io::Result<()> {
    assert_unlocked("writing the role record");
    let tmp = dir.join("role.json.tmp");
    // Each step names itself: an error here fails a role change, and must say where.
    let step = |what: &str, r: io::Result<()>| {
        r.map_err(|e| io::Error::new(e.kind(), format!("{what} {}: {e}", tmp.display())))
    };
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    step("writing", std::fs::write(&tmp, bytes))?;
    step(
        "syncing",
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()),
    )?;
    step("renaming", std::fs::rename(&tmp, dir.join(RECORD_FILE)))?;
    step("syncing the folder of", wal::sync_dir(dir))
}

/// Where the log writer of a rebuilt log reports durability.
pub struct Writer<'a> {
    pub cfg: &'a WalConfig,
    pub durable: &'a Arc<watch::Sender<u64>>,
    pub metrics: &'a Arc<Metrics>,
    pub standalone: &'a Arc<AtomicBool>,
}

impl Writer<'_> {
    fn start(&self, log_end: u64, last_index: u64) -> io::Result<Wal> {
        Wal::start(
            self.cfg.clone(),
            log_end,
            last_index,
            self.durable.clone(),
            self.metrics.clone(),
            self.standalone.clone(),
        )
    }
}

/// Discards the log from `index` on, after stopping `old` (the writer of that log). The state is
/// rebuilt from the newest snapshot before `index` and the log; without one the replica starts
/// empty and asks for a snapshot. Returns the rebuilt state and the new log's writer.
pub fn truncate_from(
    w: &Writer,
    old: &Wal,
    index: u64,
    accept_data_loss: bool,
) -> io::Result<(Loaded, Wal)> {
    assert_unlocked("truncating the log");
    let dir = &w.cfg.dir;
    old.close();
    // Snapshots holding the suffix go first: a crash between the two steps then leaves the
    // suffix in the log, to be discarded again, never in a snapshot above a shorter log.
    for (i, p) in snapshot::list(dir)? {
        if i >= index {
            std::fs::remove_file(p)?;
        }
    }
    wal::sync_dir(dir)?;
    wal::truncate_after(dir, index - 1)?;
    let loaded = match recovery::load(dir, accept_data_loss) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot rebuild below the snapshot; starting empty to fetch a snapshot");
            wal::remove_all(dir)?;
            for (_, p) in snapshot::list(dir)? {
                std::fs::remove_file(p)?;
            }
            recovery::load(dir, accept_data_loss)?
        }
    };
    let wal = w.start(loaded.recovery.log_end, loaded.last_index)?;
    Ok((loaded, wal))
}

/// Writes a snapshot received from the primary to a side file, durably, and loads it.
pub fn receive_snapshot(dir: &Path, body: &[u8]) -> io::Result<(PathBuf, State)> {
    assert_unlocked("receiving a snapshot");
    let n = RECEPTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{INCOMING_SNAPSHOT}-{n}.snap.part"));
    let received = std::fs::write(&tmp, body)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| snapshot::load(&tmp));
    match received {
        Ok(state) => Ok((tmp, state)),
        Err(e) => {
            discard_received(&tmp);
            Err(e)
        }
    }
}

/// Removes a received snapshot that will not be installed (a bad one, or one overtaken by a
/// newer term); a leftover only costs disk space, so a failure to remove it is just logged.
pub fn discard_received(tmp: &Path) {
    if let Err(e) = snapshot::remove_if_there(tmp) {
        tracing::warn!(file = %tmp.display(), error = %e, "cannot remove a received snapshot");
    }
}

/// Removes snapshots a previous process was receiving when it stopped. Only at start, before
/// anything can be received (a later call could remove a reception in flight): each reception
/// has its own file, so nothing else would ever reuse them.
pub fn discard_partial_receptions(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(INCOMING_SNAPSHOT) && name.ends_with(".snap.part") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Replaces the log with the received snapshot `tmp` at `index`, after stopping `old`; returns the
/// new log's writer.
pub fn install_snapshot(w: &Writer, old: &Wal, tmp: &Path, index: u64) -> io::Result<Wal> {
    assert_unlocked("installing a snapshot");
    let dir = &w.cfg.dir;
    old.close();
    // The new snapshot is in place (and the folder fsynced) before anything old goes: a crash in
    // between must not leave a replica without the entries it acknowledged.
    let path = snapshot::snapshot_path(dir, index);
    std::fs::rename(tmp, &path)?;
    wal::sync_dir(dir)?;
    wal::remove_all(dir)?;
    for (_, p) in snapshot::list(dir)? {
        if p != path {
            // The node's own snapshot step may be pruning them at the same time.
            snapshot::remove_if_there(&p)?;
        }
    }
    wal::sync_dir(dir)?;
    w.start(0, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_received_snapshot_has_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let written = snapshot::write(dir.path(), &State::default()).unwrap();
        let body = std::fs::read(written).unwrap();
        let (first, _) = receive_snapshot(dir.path(), &body).unwrap();
        let (second, _) = receive_snapshot(dir.path(), &body).unwrap();
        // A second copy arriving while the first is installed must leave the first in place.
        assert_ne!(first, second);
        assert!(first.exists() && second.exists());
        assert!(receive_snapshot(dir.path(), b"not a snapshot").is_err());
        let parts = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("part".as_ref()))
            .count();
        assert_eq!(parts, 2, "a bad snapshot leaves no file behind");
        discard_partial_receptions(dir.path()).unwrap();
        assert!(!first.exists() && !second.exists());
        assert_eq!(
            snapshot::list(dir.path()).unwrap().len(),
            1,
            "snapshots stay"
        );
    }
}
