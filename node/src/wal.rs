//! The write-ahead log: segment files of checksummed frames, one log entry per frame, written by a
//! dedicated thread that batches everything queued while the previous write/fsync ran (group commit).
//!
//! Segment `NNNNNNNNNNNNNNNNNNNN.wal` starts with a magic header and holds consecutive entries from
//! index NNN. Recovery reads segments in order. It cuts a torn tail (what a crash mid-write leaves
//! at the end of the newest segment); any other damage stops it, so that no intact entry, which
//! may have been acknowledged, is ever dropped without the operator saying so.
//!
//! A busy writer writes into segments zeroed ahead of time ([`SPARE`]): an fdatasync after a write
//! that extends the file also commits the new size to the filesystem's journal, and one that
//! overwrites zeroed blocks only flushes the data (about 9k against 6.6k fdatasyncs a second on
//! this project's ext4 VMs). So the newest segment may end in zeros, which recovery trims.

use crate::log::{self, Entry, FrameRead};
use crate::metrics::Metrics;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const MAGIC: &[u8; 8] = b"RCWAL\x00\x00\x01";

/// The next segment, zeroed and fsynced in the background while the current one fills; renamed
/// to its segment name when the writer rolls. Not a segment name, so nothing reads it as one; a
/// leftover (a crash while it was being made) is removed at start.
const SPARE: &str = "spare.wal.tmp";

/// Bytes a segment must take before the writer zeroes a spare: a node that writes little never
/// spends a segment's worth of disk writes and space on one.
const SPARE_AFTER: u64 = 1 << 20;

/// Times the writer yields its core before taking a batch when the batch before held more than
/// one entry (see `gathers`).
const GATHER_YIELDS: usize = 2;

#[path = "wal_recover.rs"]
mod recover;
#[path = "wal_wake.rs"]
mod wake;
use recover::scan_segment;
pub use recover::{Damage, RecoverError, Recovery, Truncation, recover};
use wake::{BUSY_FOR, POLL};
pub use wake::{unparked, wake_deferred};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Acknowledge after fsync; concurrent writers share one fsync.
    Always,
    /// Acknowledge after write(2) (survives a process crash); fsync every interval.
    Interval,
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub fsync: FsyncMode,
    pub fsync_interval: Duration,
    pub segment_bytes: u64,
}

pub fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.wal"))
}

/// Segments in the directory, sorted by first index.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let first = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, p));
        }
    }
    out.sort();
    Ok(out)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads up to `max_entries` entries (and about `max_bytes`) starting at index `from`, as
/// (entry, encoded payload). Empty when `from` is past the end; an error when it was compacted.
pub fn read_range(
    dir: &Path,
    from: u64,
    max_entries: usize,
    max_bytes: usize,
) -> io::Result<Vec<(Entry, Vec<u8>)>> {
    let segments = list_segments(dir)?;
    let Some(start) = segments.iter().rposition(|(first, _)| *first <= from) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("entry {from} was compacted"),
        ));
    };
    let mut out = Vec::new();
    let mut bytes = 0;
    for (_, path) in &segments[start..] {
        let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut magic = [0u8; 8];
        io::Read::read_exact(&mut r, &mut magic)?;
        while let FrameRead::Frame(payload) = log::read_frame(&mut r)? {
            let Ok(entry) = log::decode::<Entry>(&payload) else {
                break;
            };
            if entry.index < from {
                continue;
            }
            bytes += payload.len();
            out.push((entry, payload));
            if out.len() >= max_entries || bytes >= max_bytes {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Removes every entry after `index` from the files (the writer must be stopped). Returns how many
/// entries were removed.
pub fn truncate_after(dir: &Path, index: u64) -> io::Result<u64> {
    let segments = list_segments(dir)?;
    let mut removed = 0;
    for (first, path) in segments.iter().rev() {
        if *first > index {
            let mut count = 0;
            let mut expected = None;
            let _ = scan_segment(path, *first, &mut expected, |_| count += 1)?;
            removed += count;
            fs::remove_file(path)?;
            continue;
        }
        let mut keep_end = MAGIC.len() as u64;
        let mut count_after = 0;
        let mut r = BufReader::new(File::open(path)?);
        let mut magic = [0u8; 8];
        io::Read::read_exact(&mut r, &mut magic)?;
        while let FrameRead::Frame(payload) = log::read_frame(&mut r)? {
            let e: Entry = log::decode(&payload).map_err(io::Error::other)?;
            if e.index <= index {
                keep_end += (log::FRAME_HEADER + payload.len()) as u64;
            } else {
                count_after += 1;
            }
        }
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(keep_end)?;
        f.sync_all()?;
        removed += count_after;
        break;
    }
    sync_dir(dir)?;
    Ok(removed)
}

/// Deletes every segment (a replica about to install a snapshot).
pub fn remove_all(dir: &Path) -> io::Result<()> {
    for (_, p) in list_segments(dir)? {
        fs::remove_file(p)?;
    }
    sync_dir(dir)
}

struct Pending {
    buf: Vec<u8>,
    first_index: u64,
    last_index: u64,
    count: u64,
    shutdown: bool,
    /// The writer waits on the condvar: an append must wake it. While it writes or syncs it
    /// takes the whole buffer when done, so appends need not wake it (a wake is a system call
    /// each, whether anyone waits or not).
    writer_waits: bool,
    /// The waiting writer looks again within [`POLL`] on its own: an append may then leave it
    /// asleep for its thread to wake (see `wake_deferred`).
    writer_polls: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    segments: Mutex<Vec<(u64, PathBuf)>>,
}

impl wake::Sleeper for Shared {
    fn wake_if_waiting(&self) {
        let wake = std::mem::take(&mut self.pending.lock().unwrap().writer_waits);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// Handle to the log writer thread.
pub struct Wal {
    shared: Arc<Shared>,
    durable: watch::Receiver<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Wal {
    /// Starts the writer. `log_end` is the last index in the files, `last_index` the last index of
    /// the state (they differ when a snapshot is newer than the log); the next entry appended must
    /// have index `last_index + 1`.
    ///
    /// `standalone`: the engine's flag for a member list of at most one member (it changes with
    /// the list); a writer of a node that replicates gathers larger batches.
    pub fn start(
        cfg: WalConfig,
        log_end: u64,
        last_index: u64,
        durable: Arc<watch::Sender<u64>>,
        metrics: Arc<Metrics>,
        standalone: Arc<AtomicBool>,
    ) -> io::Result<Wal> {
        fs::create_dir_all(&cfg.dir)?;
        match fs::remove_file(cfg.dir.join(SPARE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut segments = list_segments(&cfg.dir)?;
        // Append to the newest segment only if it ends exactly where the state ends; otherwise
        // start a fresh segment at the next index so no segment ever holds a gap.
        let resume = match segments.last() {
            Some((first, path))
                if *first == last_index + 1 || (log_end == last_index && *first <= last_index) =>
            {
                let f = OpenOptions::new().read(true).append(true).open(path)?;
                let len = trim_zero_tail(&f)?;
                Some((f, len))
            }
            _ => None,
        };
        let (file, size) = match resume {
            Some(x) => x,
            None => {
                let path = segment_path(&cfg.dir, last_index + 1);
                let f = new_segment(&cfg.dir, &path)?;
                segments.push((last_index + 1, path));
                (f, MAGIC.len() as u64)
            }
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(1 << 20),
                first_index: 0,
                last_index,
                count: 0,
                shutdown: false,
                writer_waits: false,
                writer_polls: false,
            }),
            wake: Condvar::new(),
            segments: Mutex::new(segments),
        });
        durable.send_replace(last_index);
        let rx = durable.subscribe();
        let writer = Writer {
            cfg,
            shared: shared.clone(),
            file,
            size,
            written: 0,
            zeroed: false,
            spare: Spare::Idle,
            durable,
            metrics,
            standalone,
        };
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run())?;
        Ok(Wal {
            shared,
            durable: rx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues an encoded entry. Callers serialise appends (the engine's lock) so indexes arrive in order.
    pub fn append(&self, index: u64, payload: &[u8]) {
        self.append_with(index, |buf| log::put_frame(buf, payload));
    }

    /// Queues `entry`, encoded straight into the log's buffer; `kept` is given its payload (the
    /// bytes `log::encode(entry)` makes). As `append`, callers serialise appends.
    pub fn append_entry(&self, entry: &Entry, kept: impl FnOnce(&[u8])) {
        self.append_with(entry.index, |buf| {
            let payload = log::put_encoded_frame(buf, entry);
            kept(&buf[payload]);
        });
    }

    /// Queues the frame `put` appends to the buffer, as entry `index`.
    fn append_with(&self, index: u64, put: impl FnOnce(&mut Vec<u8>)) {
        let mut p = self.shared.pending.lock().unwrap();
        if p.buf.is_empty() {
            p.first_index = index;
        }
        put(&mut p.buf);
        p.last_index = index;
        p.count += 1;
        let defer = p.writer_waits && wake::may_defer(p.writer_polls, p.count);
        let wake = !defer && std::mem::take(&mut p.writer_waits);
        drop(p);
        if wake {
            self.shared.wake.notify_one();
        } else if defer {
            wake::left_asleep(&self.shared);
        }
    }

    /// The highest index that is durable by the configured fsync policy.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Deletes segments whose entries are all at or below `index` (covered by a snapshot). The
    /// newest segment is always kept.
    pub fn compact(&self, index: u64) -> io::Result<usize> {
        let mut segs = self.shared.segments.lock().unwrap();
        let mut removed = 0;
        while segs.len() > 1 && segs[1].0 <= index + 1 {
            let (_, path) = segs.remove(0);
            fs::remove_file(&path)?;
            removed += 1;
        }
        Ok(removed)
    }

    pub fn segment_count(&self) -> usize {
        self.shared.segments.lock().unwrap().len()
    }

    /// Flushes and fsyncs everything queued, then stops the writer.
    pub fn close(&self) {
        self.shared.pending.lock().unwrap().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

fn new_segment(dir: &Path, path: &Path) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    f.write_all(MAGIC)?;
    f.sync_all()?;
    sync_dir(dir)?;
    Ok(f)
}

/// Where the end of a segment opened to append to is: its length, unless it ends in the zeros
/// of a preallocated segment, which are cut off first (recovery cuts them too; this keeps a new
/// entry from ever being written after a run of zeros, which recovery would take for a gap).
fn trim_zero_tail(f: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    // A segment ending in a nonzero byte has no zeros after its last frame. One ending in zero
    // is read through: a frame may end in a zero byte too, and zeros may be a few bytes long.
    let mut last = [0u8; 1];
    if len <= MAGIC.len() as u64 || {
        f.read_exact_at(&mut last, len - 1)?;
        last[0] != 0
    } {
        return Ok(len);
    }
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut end = MAGIC.len() as u64;
    io::Seek::seek(&mut r, io::SeekFrom::Start(end))?;
    while let FrameRead::Frame(payload) = log::read_frame(&mut r)? {
        end += (log::FRAME_HEADER + payload.len()) as u64;
    }
    f.set_len(end)?;
    f.sync_all()?;
    Ok(end)
}

/// The state of the next segment's spare.
enum Spare {
    Idle,
    Zeroing(std::thread::JoinHandle<io::Result<()>>),
    Ready,
    /// Zeroing failed (a full disk, say): the writer goes on with segments it extends, and tries
    /// again for the segment after this one.
    Failed,
}

/// Makes [`SPARE`]: the magic header and zeros to `bytes`, fsynced.
fn zero_spare(dir: &Path, bytes: u64) -> io::Result<()> {
    let path = dir.join(SPARE);
    let mut f = crate::fds::with_spare_descriptors(|| {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
    })?;
    f.write_all(MAGIC)?;
    // A megabyte at a time, each flushed before the next: one flush of the whole segment would
    // queue tens of megabytes on the disk ahead of the log's own fsyncs, stalling every write.
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes.saturating_sub(MAGIC.len() as u64);
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        f.sync_data()?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Whether to let other threads run before taking the next batch, so the writes they are
/// about to append join it: one fsync costs about 40 µs of CPU (measured on the primary of a
/// 3-node group), so when the cores are busy, fewer and larger batches leave more of them to
/// requests. A yield returns at once when no other thread waits for the core, so an idle or
/// lightly loaded node loses nothing; a single client's writes (a batch of one) never wait.
/// In a node that replicates, always: a write waits for a replica's round trip as well, which
/// hides the writer's turn. Standalone, the writer is a write's whole wait, so only while fewer
/// entries wait than the last batch held: yielding before every batch raised the put p99 at 128
/// connections from 5.2–6.1 to 7.3–8.3 ms (four runs each), where the batches waiting were
/// already large and the yield only delayed them. With that bound, batches at 32 connections
/// went from 10–11 to 12–16 entries (Redis's `appendfsync always` takes one fsync per pass over
/// its clients, about 32 at 32 connections) and at 128 from 25–27 to 32–44, with more puts a
/// second in 10 of 12 alternating rounds and a p99 no higher (medians 9.4 against 9.8 ms at 32
/// connections, 12.1 against 13.6 ms at 128).
fn gathers(fsync: FsyncMode, last_count: u64, waiting: u64, standalone: bool) -> bool {
    fsync == FsyncMode::Always && last_count > 1 && (!standalone || waiting < last_count)
}

/// Renames the spare to the segment `path` and opens it to write after the header.
fn adopt_spare(dir: &Path, path: &Path) -> io::Result<File> {
    fs::rename(dir.join(SPARE), path)?;
    // Before any entry goes in: an fdatasync of the file does not make its new name durable.
    sync_dir(dir)?;
    let mut f = OpenOptions::new().write(true).open(path)?;
    io::Seek::seek(&mut f, io::SeekFrom::Start(MAGIC.len() as u64))?;
    Ok(f)
}

struct Writer {
    cfg: WalConfig,
    shared: Arc<Shared>,
    file: File,
    /// Where the next frame goes in the current segment.
    size: u64,
    /// Bytes this writer put into the current segment.
    written: u64,
    /// Whether the current segment was zeroed ahead (so writes overwrite, not extend).
    zeroed: bool,
    spare: Spare,
    durable: Arc<watch::Sender<u64>>,
    metrics: Arc<Metrics>,
    standalone: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        if let Err(e) = self.run_loop() {
            // Fail-stop: the in-memory state already includes entries whose durability is now
            // unknown, and continuing could acknowledge writes that a restart would not have.
            tracing::error!(error = %e, "WAL write failed; stopping the node");
            std::process::exit(74);
        }
        // No thread of a closed log may still write in its folder.
        if let Spare::Zeroing(t) = std::mem::replace(&mut self.spare, Spare::Idle) {
            let _ = t.join();
        }
    }

    /// Whether a zeroed spare is ready to roll into; starts zeroing one once the current
    /// segment took [`SPARE_AFTER`] bytes (half a segment, for small segments).
    fn spare_ready(&mut self) -> bool {
        if let Spare::Zeroing(t) = &self.spare
            && t.is_finished()
        {
            let Spare::Zeroing(t) = std::mem::replace(&mut self.spare, Spare::Idle) else {
                unreachable!()
            };
            self.spare = match t.join() {
                Ok(Ok(())) => Spare::Ready,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot zero the next WAL segment ahead; extending segments instead");
                    Spare::Failed
                }
                Err(_) => Spare::Failed,
            };
        }
        if matches!(self.spare, Spare::Idle)
            && self.written >= SPARE_AFTER.min(self.cfg.segment_bytes / 2)
        {
            let (dir, bytes) = (self.cfg.dir.clone(), self.cfg.segment_bytes);
            match std::thread::Builder::new()
                .name("wal-spare".into())
                .spawn(move || zero_spare(&dir, bytes))
            {
                Ok(t) => self.spare = Spare::Zeroing(t),
                Err(_) => self.spare = Spare::Failed,
            }
        }
        matches!(self.spare, Spare::Ready)
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut spare = Vec::with_capacity(1 << 20);
        let mut unsynced = false;
        let mut last_sync = Instant::now();
        let mut last_count = 0;
        // When the last batch was taken; `None` before the first.
        let mut last_batch: Option<Instant> = None;
        loop {
            let (first, last, count, shutdown) = {
                let mut p = self.shared.pending.lock().unwrap();
                while p.buf.is_empty() && !p.shutdown {
                    if self.cfg.fsync == FsyncMode::Interval && unsynced {
                        let wait = self.cfg.fsync_interval.saturating_sub(last_sync.elapsed());
                        if wait.is_zero() {
                            break;
                        }
                        p.writer_waits = true;
                        p = self.shared.wake.wait_timeout(p, wait).unwrap().0;
                    } else if last_batch.is_some_and(|t| t.elapsed() < BUSY_FOR) {
                        (p.writer_waits, p.writer_polls) = (true, true);
                        p = self.shared.wake.wait_timeout(p, POLL).unwrap().0;
                    } else {
                        p.writer_waits = true;
                        p = self.shared.wake.wait(p).unwrap();
                    }
                    (p.writer_waits, p.writer_polls) = (false, false);
                }
                let standalone = self.standalone.load(Ordering::Relaxed);
                if !p.shutdown && gathers(self.cfg.fsync, last_count, p.count, standalone) {
                    drop(p);
                    for _ in 0..GATHER_YIELDS {
                        std::thread::yield_now();
                    }
                    p = self.shared.pending.lock().unwrap();
                }
                std::mem::swap(&mut p.buf, &mut spare);
                let out = (p.first_index, p.last_index, p.count, p.shutdown);
                p.count = 0;
                last_count = out.2;
                out
            };
            if !spare.is_empty() {
                last_batch = Some(Instant::now());
                self.write_batch(&spare, first)?;
                self.metrics.wal_bytes.inc_by(spare.len() as u64);
                self.metrics.fsync_batch.observe(count as f64);
                spare.clear();
                unsynced = true;
            }
            let due = self.cfg.fsync == FsyncMode::Always
                || shutdown
                || last_sync.elapsed() >= self.cfg.fsync_interval;
            if unsynced && due {
                let t = Instant::now();
                self.file.sync_data()?;
                self.metrics
                    .fsync_duration
                    .observe(t.elapsed().as_secs_f64());
                unsynced = false;
                last_sync = Instant::now();
            }
            if count > 0 {
                // In interval mode an entry counts as durable once written: it survives a crash of
                // the process, which is the guarantee that mode documents.
                self.durable.send_replace(last);
            }
            if shutdown && self.shared.pending.lock().unwrap().buf.is_empty() {
                return Ok(());
            }
        }
    }

    /// Writes a batch of frames, starting new segments at frame boundaries when one is full.
    fn write_batch(&mut self, batch: &[u8], first_index: u64) -> io::Result<()> {
        let mut off = 0;
        let mut index = first_index;
        while off < batch.len() {
            // A segment that is extended gives way to a zeroed spare as soon as one is ready (it
            // holds an entry, so no two segments start at the same index).
            let early = !self.zeroed && self.size > MAGIC.len() as u64 && self.spare_ready();
            if self.size >= self.cfg.segment_bytes || early {
                self.roll(index)?;
            }
            let start = off;
            while off < batch.len() && (off == start || self.size < self.cfg.segment_bytes) {
                let len = u32::from_le_bytes(batch[off..off + 4].try_into().unwrap()) as usize;
                off += log::FRAME_HEADER + len;
                self.size += (log::FRAME_HEADER + len) as u64;
                index += 1;
            }
            self.file.write_all(&batch[start..off])?;
            self.written += (off - start) as u64;
        }
        self.spare_ready();
        Ok(())
    }

    fn roll(&mut self, first_index: u64) -> io::Result<()> {
        self.file.sync_data()?;
        let path = segment_path(&self.cfg.dir, first_index);
        let zeroed = self.spare_ready();
        // Connections may hold every other descriptor; the spares are given back for this.
        self.file = crate::fds::with_spare_descriptors(|| {
            if zeroed {
                adopt_spare(&self.cfg.dir, &path)
            } else {
                new_segment(&self.cfg.dir, &path)
            }
        })?;
        self.zeroed = zeroed;
        if zeroed || matches!(self.spare, Spare::Failed) {
            self.spare = Spare::Idle;
        }
        self.size = MAGIC.len() as u64;
        self.written = 0;
        self.shared
            .segments
            .lock()
            .unwrap()
            .push((first_index, path));
        Ok(())
    }
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
