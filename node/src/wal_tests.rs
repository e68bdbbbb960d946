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

fn write(dir: &Path, from: u64, to: u64, segment_bytes: u64) {
    let wal = Wal::start(
        cfg(dir, segment_bytes),
        from - 1,
        from - 1,
        durable(),
        Arc::new(Metrics::new()),
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
    let rec = recover(dir, after, |e| out.push(e)).unwrap();
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

#[test]
fn corruption_in_an_older_segment_drops_everything_after_it() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1, 300, 1024);
    let segs = list_segments(d.path()).unwrap();
    let (_, victim) = &segs[1];
    let mut bytes = fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(victim, bytes).unwrap();
    let (entries, rec) = read_all(d.path(), 0);
    let cut = rec.truncation.unwrap();
    assert_eq!(cut.segments_removed, segs.len() - 2);
    assert_eq!(entries.len() as u64, cut.last_valid_index);
    assert_eq!(list_segments(d.path()).unwrap().len(), 2);
}

#[test]
fn a_gap_behind_the_snapshot_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 10, 20, 1 << 30);
    assert!(recover(d.path(), 5, |_| {}).is_err());
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
