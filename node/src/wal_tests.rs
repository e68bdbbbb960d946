use super::*;
use crate::log::{Entry, Op};
use crate::state::entry;

fn cfg(dir: &Path, segment_bytes: u64) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        fsync: FsyncMode::Always,
        fsync_interval: Duration::from_millis(5),
        segment_bytes,
    }
}

fn durable() -> Arc<watch::Sender<u64>> {
    Arc::new(watch::channel(0).0)
}

fn standalone(yes: bool) -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(yes))
}

fn write(dir: &Path, from: u64, to: u64, segment_bytes: u64) {
    let wal = Wal::start(
        cfg(dir, segment_bytes),
        from - 1,
        from - 1,
        durable(),
        Arc::new(Metrics::new()),
        standalone(true),
    )
    .unwrap();
    for i in from..=to {
        let e = entry(i, i, Op::Noop);
        wal.append(i, &log::encode(&e));
    }
    wal.close();
    assert_eq!(*wal.durable().borrow(), to);
}

fn read_all(dir: &Path, after: u64) -> (Vec<Entry>, Recovery) {
    let mut out = Vec::new();
    let rec = recover(dir, after, false, |e| out.push(e)).unwrap();
    (out, rec)
}

#[test]
fn appends_survive_restart_across_segments() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 500, 2048);
    write(d.path(), 501, 600, 2048);
    assert!(
        list_segments(d.path()).unwrap().len() > 3,
        "small segments roll"
    );
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len(), 600);
    assert!(
        entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == i as u64 + 1)
    );
    assert!(rec.truncation.is_none());
    let (after, _) = read_all(d.path(), 550);
    assert_eq!(after.first().unwrap().index, 551);
}

#[test]
fn a_replicating_writer_that_gathers_batches_keeps_every_entry_in_order() {
    let d = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let wal = Wal::start(
        cfg(d.path(), 1 << 16),
        0,
        0,
        durable(),
        metrics.clone(),
        standalone(false),
    )
    .unwrap();
    // Appends from four threads, in index order under one lock as the engine makes them, so
    // batches hold several entries and the writer yields before taking each one.
    let next = Mutex::new(1u64);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..500 {
                    let mut n = next.lock().unwrap();
                    wal.append(*n, &log::encode(&entry(*n, *n, Op::Noop)));
                    *n += 1;
                }
            });
        }
    });
    let mut rx = wal.durable();
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|d| *d == 2000))
                .await
                .expect("every entry becomes durable")
                .unwrap();
        });
    wal.close();
    let (entries, rec) = read_all(d.path(), 0);
    let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (1..=2000).collect::<Vec<_>>());
    assert!(rec.truncation.is_none());
    let batches = metrics.fsync_batch.get_sample_count();
    assert!(
        batches < 2000,
        "concurrent appends share batches: {batches} for 2000 entries"
    );
}

#[test]
fn concurrent_synced_writes_gather_batches_a_standalone_node_only_while_few_wait() {
    // (fsync, entries in the batch before, entries waiting, standalone) -> yields before the
    // next batch
    let cases = [
        (FsyncMode::Always, 2, 0, false, true),
        (FsyncMode::Always, 50, 0, false, true),
        (FsyncMode::Always, 50, 80, false, true),
        (FsyncMode::Always, 1, 0, false, false),
        (FsyncMode::Always, 0, 0, false, false),
        (FsyncMode::Always, 50, 10, true, true),
        (FsyncMode::Always, 50, 50, true, false),
        (FsyncMode::Always, 50, 80, true, false),
        (FsyncMode::Always, 1, 0, true, false),
        (FsyncMode::Interval, 50, 0, false, false),
        (FsyncMode::Interval, 50, 0, true, false),
    ];
    for (fsync, last, waiting, standalone, want) in cases {
        assert_eq!(
            gathers(fsync, last, waiting, standalone),
            want,
            "{fsync:?}, batch of {last}, {waiting} waiting, standalone {standalone}"
        );
    }
}

#[test]
fn torn_tail_is_cut_at_the_last_valid_frame() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 100, 1 << 30);
    let (_, path) = list_segments(d.path()).unwrap().pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len(), 99);
    let cut = rec.truncation.expect("the cut is reported");
    assert_eq!(cut.last_valid_index, 99);
    assert!(cut.bytes_removed > 0);
    // The cut is permanent: new entries continue from 100 and a second recovery is clean.
    write(d.path(), 100, 120, 1 << 30);
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len(), 120);
    assert!(rec.truncation.is_none());
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

fn damaged(dir: &Path) -> Damage {
    match recover(dir, 0, false, |_| {}) {
        Err(RecoverError::Damaged(d)) => *d,
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn corruption_in_an_older_segment_is_refused_unless_the_loss_is_accepted() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 300, 1024);
    let segs = list_segments(d.path()).unwrap();
    let (_, victim) = &segs[1];
    let mid = fs::metadata(victim).unwrap().len() as usize / 2;
    flip_byte(victim, mid);
    let damage = damaged(d.path());
    assert_eq!(&damage.segment, victim);
    assert!(damage.offset <= mid as u64 && damage.offset > 8, "{damage}");
    assert!(damage.not_torn.contains("newer segment"), "{damage}");
    assert_eq!(
        list_segments(d.path()).unwrap().len(),
        segs.len(),
        "nothing cut"
    );

    let mut entries = Vec::new();
    let rec = recover(d.path(), 0, true, |e| entries.push(e)).unwrap();
    let cut = rec.truncation.unwrap();
    assert!(cut.data_loss);
    assert_eq!(cut.segments_removed, segs.len() - 2);
    assert_eq!(entries.len() as u64, cut.last_valid_index);
    assert_eq!(list_segments(d.path()).unwrap().len(), 2);
}

#[test]
fn a_flipped_byte_with_intact_entries_after_it_is_not_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 100, 1 << 30);
    let (_, seg) = list_segments(d.path()).unwrap().pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // Each byte of a frame: its length, its checksum, its payload.
    for at in [8, 8 + 5, len as usize / 2] {
        let copy = tempfile::tempdir().unwrap();
        fs::copy(&seg, copy.path().join(seg.file_name().unwrap())).unwrap();
        let victim = list_segments(copy.path()).unwrap().pop().unwrap().1;
        flip_byte(&victim, at);
        let damage = damaged(copy.path());
        assert!(damage.not_torn.contains("intact entry"), "{damage}");
        assert_eq!(fs::metadata(&victim).unwrap().len(), len, "nothing cut");
        let rec = recover(copy.path(), 0, true, |_| {}).unwrap();
        let cut = rec.truncation.unwrap();
        assert!(cut.data_loss && cut.offset == damage.offset, "{cut:?}");
    }
}

#[test]
fn a_garbage_tail_is_torn() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 50, 1 << 30);
    let (_, seg) = list_segments(d.path()).unwrap().pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0x5a; 13]).unwrap();
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len(), 50);
    let cut = rec.truncation.expect("cut");
    assert!(!cut.data_loss);
    assert_eq!(cut.bytes_removed, 13);
}

/// Appends `n` zero bytes to the newest segment: what a segment zeroed ahead holds past its last
/// entry.
fn zero_tail(dir: &Path, n: usize) -> PathBuf {
    let (_, seg) = list_segments(dir).unwrap().pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&vec![0u8; n]).unwrap();
    seg
}

#[test]
fn a_zero_filled_tail_is_the_end_of_the_log_not_damage() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 50, 1 << 30);
    let (_, seg) = list_segments(d.path()).unwrap().pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    zero_tail(d.path(), 100_000);
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len(), 50);
    assert!(rec.truncation.is_none(), "{:?}", rec.truncation);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        len,
        "the zeros are trimmed"
    );
}

#[test]
fn a_writer_resuming_a_segment_with_a_zero_tail_writes_after_the_last_entry() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 50, 1 << 30);
    // No recovery in between: the writer alone must not leave the zeros before its entries,
    // however few there are.
    zero_tail(d.path(), 3000);
    write(d.path(), 51, 60, 1 << 30);
    zero_tail(d.path(), 3);
    write(d.path(), 61, 70, 1 << 30);
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len(), 70);
    assert!(rec.truncation.is_none(), "{:?}", rec.truncation);
}

/// Byte offsets of each frame in a segment.
fn frame_offsets(seg: &Path) -> Vec<usize> {
    let bytes = fs::read(seg).unwrap();
    let mut at = MAGIC.len();
    let mut out = Vec::new();
    while at + log::FRAME_HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push(at);
        at += log::FRAME_HEADER + len;
    }
    out
}

#[test]
fn a_zeroed_sector_inside_the_last_write_is_a_torn_tail_even_with_entries_after_it() {
    // Entries of one write reach a zeroed segment's blocks in any order when no fsync finished:
    // a crash can leave the sectors under entry 60 zero and later entries intact.
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 300, 1 << 30);
    let seg = zero_tail(d.path(), 4096);
    let at = frame_offsets(&seg)[59];
    let mut bytes = fs::read(&seg).unwrap();
    let sector_end = (at / 512 + 1) * 512;
    // At least a header's worth: if the frame starts right at a sector's end, the next sector.
    let end = if sector_end - at < 8 {
        sector_end + 512
    } else {
        sector_end
    };
    bytes[at..end].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len(), 59);
    let cut = rec.truncation.expect("the cut is reported");
    assert!(!cut.data_loss && cut.offset == at as u64, "{cut:?}");
    // A byte flipped there instead is damage, as before: the sector was written.
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 300, 1 << 30);
    let seg = list_segments(d.path()).unwrap().pop().unwrap().1;
    flip_byte(&seg, frame_offsets(&seg)[59] + 9);
    assert!(damaged(d.path()).not_torn.contains("intact entry"));
}

#[test]
fn a_busy_writer_rolls_into_segments_zeroed_ahead() {
    let d = tempfile::tempdir().unwrap();
    let segment_bytes = 64 << 10;
    let wal = Wal::start(
        cfg(d.path(), segment_bytes),
        0,
        0,
        durable(),
        Arc::new(Metrics::new()),
        standalone(true),
    )
    .unwrap();
    // Written a segment at a time until the newest segment is one zeroed ahead: as long as a
    // segment, though not full. Zeroing runs in the background, so this waits for it.
    let zeroed_newest = |dir: &Path| {
        let (first, seg) = list_segments(dir).unwrap().pop().unwrap();
        let bytes = fs::read(&seg).unwrap();
        first > 1 && bytes.len() as u64 == segment_bytes && bytes[bytes.len() - 1] == 0
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 1;
    while !zeroed_newest(d.path()) {
        assert!(
            Instant::now() < deadline,
            "no zeroed segment after {next} entries"
        );
        for _ in 0..200 {
            wal.append(next, &log::encode(&entry(next, next, Op::Noop)));
            next += 1;
        }
        while *wal.durable().borrow() < next - 1 {
            assert!(Instant::now() < deadline, "entries not durable");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    wal.close();
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len() as u64, next - 1);
    assert!(
        entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == i as u64 + 1)
    );
    assert!(rec.truncation.is_none(), "{:?}", rec.truncation);
    // The writer carries on after the trimmed zeros, and the spare a crash left is not a segment.
    fs::write(d.path().join(SPARE), MAGIC).unwrap();
    write(d.path(), next, next + 99, segment_bytes);
    assert!(!d.path().join(SPARE).exists());
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len() as u64, next + 99);
    assert!(rec.truncation.is_none());
}

#[test]
fn a_newest_segment_without_a_valid_header_is_replaced_and_stays_usable() {
    for keep in [0u64, 5] {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), 1, 40, 1024);
        let before = list_segments(d.path()).unwrap();
        let (first, newest) = before.last().unwrap().clone();
        OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap()
            .set_len(keep)
            .unwrap();
        let (entries, rec) = read_all(d.path(), 0);
        assert_eq!(entries.len() as u64, first - 1);
        assert!(!rec.truncation.unwrap().data_loss);
        // The writer carries on; what it writes survives the next two recoveries.
        write(d.path(), first, 60, 1024);
        for _ in 0..2 {
            let (entries, rec) = read_all(d.path(), 0);
            assert_eq!(entries.len(), 60, "keep {keep}");
            assert!(rec.truncation.is_none());
        }
    }
}

#[test]
fn a_gap_behind_the_snapshot_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 10, 20, 1 << 30);
    assert!(matches!(
        recover(d.path(), 5, false, |_| {}),
        Err(RecoverError::Damaged(_))
    ));
    assert_eq!(read_all(d.path(), 9).0.len(), 11);
}

#[test]
fn compaction_keeps_segments_needed_after_the_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::start(
        cfg(d.path(), 1024),
        0,
        0,
        durable(),
        Arc::new(Metrics::new()),
        standalone(true),
    )
    .unwrap();
    for i in 1..=300 {
        wal.append(i, &log::encode(&entry(i, 0, Op::Noop)));
    }
    wal.close();
    let before = wal.segment_count();
    wal.compact(150).unwrap();
    assert!(wal.segment_count() < before);
    let first = list_segments(d.path()).unwrap()[0].0;
    assert!(first <= 151);
    assert_eq!(read_all(d.path(), 150).0.len(), 150);
}

#[test]
fn a_snapshot_newer_than_the_log_starts_a_fresh_segment() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 10, 1 << 30);
    // The state is at 20 (from a snapshot) while the log ends at 10.
    let wal = Wal::start(
        cfg(d.path(), 1 << 30),
        10,
        20,
        durable(),
        Arc::new(Metrics::new()),
        standalone(true),
    )
    .unwrap();
    for i in 21..=25 {
        wal.append(i, &log::encode(&entry(i, 0, Op::Noop)));
    }
    wal.close();
    let (entries, rec) = read_all(d.path(), 20);
    assert!(rec.truncation.is_none());
    assert_eq!(
        entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![21, 22, 23, 24, 25]
    );
}

#[test]
fn read_range_and_truncate_after() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 100, 1024);
    let got = read_range(d.path(), 40, 10, usize::MAX).unwrap();
    assert_eq!(
        got.iter().map(|(e, _)| e.index).collect::<Vec<_>>(),
        (40..50).collect::<Vec<_>>()
    );
    assert_eq!(truncate_after(d.path(), 60).unwrap(), 40);
    let (entries, rec) = read_all(d.path(), 0);
    assert_eq!(entries.len(), 60);
    assert!(rec.truncation.is_none());
    write(d.path(), 61, 70, 1024);
    assert_eq!(read_all(d.path(), 0).0.len(), 70);
}

/// Waits (up to a generous deadline) for `cond` on the writer's pending state.
fn until_pending(wal: &Wal, what: &str, cond: impl Fn(&Pending) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond(&wal.shared.pending.lock().unwrap()) {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn until_durable(wal: &Wal, index: u64) {
    let rx = wal.durable();
    let deadline = Instant::now() + Duration::from_secs(20);
    while *rx.borrow() < index {
        assert!(
            Instant::now() < deadline,
            "entry {index} not durable within 20 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A fresh log of a node without replicas, to share between threads.
fn shared_wal(dir: &Path) -> Arc<Wal> {
    let wal = Wal::start(
        cfg(dir, 1 << 20),
        0,
        0,
        durable(),
        Arc::new(Metrics::new()),
        standalone(true),
    );
    Arc::new(wal.unwrap())
}

/// A shared log whose writer has written a batch (entry 1): busy, it polls while it waits.
fn busy_wal(dir: &Path) -> Arc<Wal> {
    let wal = shared_wal(dir);
    append(&wal, 1);
    until_durable(&wal, 1);
    wal
}

/// The writer waits, and looks again on its own within its poll.
fn polling(p: &Pending) -> bool {
    p.writer_waits && p.writer_polls
}

/// Appends a no-op entry at index `i`.
fn append(wal: &Wal, i: u64) {
    wal.append(i, &log::encode(&entry(i, i, Op::Noop)));
}

/// A runtime worker's append leaves a busy writer asleep for the worker to wake when it runs out
/// of work; an entry whose worker never does is still taken by the writer's own poll. A thread
/// that is not a worker always wakes the writer. Every entry ends durable, in order.
#[test]
fn an_append_left_for_its_worker_to_wake_is_durable_whether_or_not_it_wakes() {
    let d = tempfile::tempdir().unwrap();
    let wal = busy_wal(d.path());
    let left_asleep = wake::holds_one;
    // Not a worker: wakes the writer itself, even a busy one.
    until_pending(&wal, "the busy writer polls", polling);
    append(&wal, 2);
    assert!(
        !left_asleep(),
        "a thread that is not a worker wakes the writer"
    );
    until_durable(&wal, 2);
    let worker = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            // What tokio calls as a worker parks: it marks the thread as one that wakes later.
            wake_deferred();
            until_pending(&wal, "the busy writer polls", polling);
            append(&wal, 3);
            assert!(left_asleep(), "a worker leaves a busy writer asleep");
            // This worker never parks: the writer's poll takes the entry.
            until_durable(&wal, 3);
            until_pending(&wal, "the busy writer polls", polling);
            append(&wal, 4);
            assert!(left_asleep());
            wake_deferred();
            assert!(!left_asleep(), "parking wakes the writer it left asleep");
            until_durable(&wal, 4);
        })
    };
    worker.join().unwrap();
    wal.close();
    let (entries, _) = read_all(d.path(), 0);
    let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
    assert_eq!(indexes, [1, 2, 3, 4]);
}

/// A thread may leave a busy writer asleep behind fewer than `DEFER_UP_TO` queued entries only:
/// the append that queues that many wakes it at once, so a thread that stays busy cannot keep a
/// growing batch waiting for the writer's poll. Every entry ends durable.
#[test]
fn the_append_that_fills_a_deferred_batch_wakes_the_writer() {
    let d = tempfile::tempdir().unwrap();
    let wal = busy_wal(d.path());
    let worker = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            wake_deferred();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut next = 2;
            // The most entries seen queued behind a sleeping writer: one short of the limit once
            // a run of appends outpaces the writer's own poll (which takes the batch early).
            let mut most = 0;
            while most < wake::DEFER_UP_TO - 1 {
                assert!(
                    Instant::now() < deadline,
                    "no run of appends reached the limit within 20 s (most {most})"
                );
                until_pending(&wal, "the busy writer polls", polling);
                for _ in 0..wake::DEFER_UP_TO {
                    append(&wal, next);
                    next += 1;
                    // Read, then asserted on without the lock (a failed assertion would poison
                    // it for the writer).
                    let (waits, count) = {
                        let p = wal.shared.pending.lock().unwrap();
                        (p.writer_waits, p.count)
                    };
                    assert!(
                        !(waits && count >= wake::DEFER_UP_TO),
                        "{count} entries queued behind a writer left asleep"
                    );
                    if waits {
                        most = most.max(count);
                    }
                }
                // What the thread does as it runs out of work: wakes what it left asleep.
                wake_deferred();
            }
            next - 1
        })
    };
    let last = worker.join().unwrap();
    until_durable(&wal, last);
    wal.close();
    let (entries, _) = read_all(d.path(), 0);
    let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (1..=last).collect::<Vec<_>>());
}

/// Two threads append to one log: the first to run out of work hands the writer it left asleep
/// to the other, still running, which wakes it as it runs out in turn. Both entries end
/// durable, in order.
#[test]
fn a_thread_that_parks_while_another_runs_leaves_the_wake_to_it() {
    let d = tempfile::tempdir().unwrap();
    let wal = busy_wal(d.path());
    // What tokio calls on a connection thread: a park (the first marks it as one that defers),
    // then its wake-up, which counts it as running.
    let start = || {
        wake_deferred();
        unparked();
    };
    let (b_running, running) = std::sync::mpsc::channel();
    let (a_parked, parked) = std::sync::mpsc::channel();
    let b = std::thread::spawn(move || {
        start();
        b_running.send(()).unwrap();
        parked.recv().unwrap();
        assert_eq!(
            wake::handed(),
            1,
            "the first to park handed its writer over"
        );
        wake_deferred();
        assert_eq!(
            wake::handed(),
            0,
            "the last to park wakes what was handed to it"
        );
    });
    let a = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            start();
            running.recv().unwrap();
            until_pending(&wal, "the busy writer polls", polling);
            append(&wal, 2);
            assert!(
                wake::holds_one(),
                "a running thread leaves a busy writer asleep"
            );
            wake_deferred();
            assert!(!wake::holds_one());
            a_parked.send(()).unwrap();
        })
    };
    a.join().unwrap();
    b.join().unwrap();
    until_durable(&wal, 2);
    wal.close();
    let (entries, _) = read_all(d.path(), 0);
    let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
    assert_eq!(indexes, [1, 2]);
}
