//! Snapshots: the whole state at one log index, as a stream of checksummed frames ending with a
//! count-carrying `End` frame. A file without a valid `End` is damaged; recovery decides whether an
//! older snapshot and the log can stand in for it.
//! Written to a temporary name, fsynced and renamed, so a crash never leaves a half snapshot in place.

use crate::log::{self, FrameRead, Retention};
use crate::record::Rec;
use crate::state::{Idem, IdemRecord, Message, Record, SlotState, State, Topic};
use imbl::{OrdMap, Vector};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RCSNAP01";
const CHUNK: usize = 4096;

/// Frames of a snapshot. Items are only ever added at the end, so every older snapshot still
/// loads: `Records` and `Messages` are the forms written before records had times and messages
/// their log index.
#[derive(Serialize, Deserialize)]
enum Item {
    Meta {
        index: u64,
        term: u64,
    },
    Records(Vec<(String, RecordV1)>),
    Topic {
        name: String,
        retention: Retention,
        first_offset: u64,
        subscriptions: Vec<(String, u64)>,
    },
    Messages(Vec<MessageV1>),
    Idem(Vec<(std::sync::Arc<str>, IdemRecord)>),
    End {
        records: u64,
        topics: u64,
        messages: u64,
        idem: u64,
    },
    TimedRecords(Vec<(String, Record)>),
    IndexedMessages(Vec<Message>),
    // Added after the first format: an older snapshot has none of these (then no migration ran,
    // versions are log indexes and every idempotency key's slot is unknown).
    /// Slot migrations in progress and the version floor.
    Slots {
        state: SlotState,
        version_floor: u64,
    },
    /// The slot of each idempotency key.
    IdemSlots(Vec<(std::sync::Arc<str>, u16)>),
    /// The version offset (`State::version_offset`; absent: 0).
    VersionOffset(u64),
}

/// A record as snapshots stored it before records had times (which then read as 0: unknown).
#[derive(Serialize, Deserialize)]
struct RecordV1 {
    value: crate::log::Json,
    version: u64,
    expires_at_ms: Option<u64>,
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Record {
        Record {
            value: r.value,
            version: r.version,
            expires_at_ms: r.expires_at_ms,
            created_ms: 0,
            modified_ms: 0,
        }
    }
}

/// A message as snapshots stored it before messages kept their log index (which then reads as 0).
#[derive(Serialize, Deserialize)]
struct MessageV1 {
    value: crate::log::Json,
    published_at_ms: u64,
}

impl From<MessageV1> for Message {
    fn from(m: MessageV1) -> Message {
        Message {
            value: m.value,
            published_at_ms: m.published_at_ms,
            index: 0,
        }
    }
}

pub fn snapshot_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("snapshot-{index:020}.snap"))
}

/// Snapshot files, newest first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let index = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("snapshot-"))
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(i) = index {
            out.push((i, p));
        }
    }
    out.sort_by(|a, b| b.cmp(a));
    Ok(out)
}

fn frame(w: &mut impl Write, item: &Item) -> io::Result<()> {
    let mut buf = Vec::new();
    log::put_frame(&mut buf, &log::encode(item));
    w.write_all(&buf)
}

/// Writes `state` (at its applied index) as the snapshot file of that index and returns the path.
pub fn write(dir: &Path, state: &State) -> io::Result<PathBuf> {
    let path = snapshot_path(dir, state.applied_index);
    let tmp = path.with_extension("snap.tmp");
    let file = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(MAGIC)?;
    frame(
        &mut w,
        &Item::Meta {
            index: state.applied_index,
            term: state.applied_term,
        },
    )?;
    let mut chunk = Vec::with_capacity(CHUNK);
    for r in &state.records {
        chunk.push((r.key().to_string(), r.record()));
        if chunk.len() == CHUNK {
            frame(&mut w, &Item::TimedRecords(std::mem::take(&mut chunk)))?;
        }
    }
    if !chunk.is_empty() {
        frame(&mut w, &Item::TimedRecords(chunk))?;
    }
    let mut messages = 0u64;
    for (name, t) in &state.topics {
        frame(
            &mut w,
            &Item::Topic {
                name: name.clone(),
                retention: t.retention,
                first_offset: t.first_offset,
                subscriptions: t
                    .subscriptions
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            },
        )?;
        let all: Vec<Message> = t.messages.iter().cloned().collect();
        for part in all.chunks(CHUNK) {
            frame(&mut w, &Item::IndexedMessages(part.to_vec()))?;
        }
        messages += t.messages.len() as u64;
    }
    // Chunk by chunk, like the records: a copy of a million keys' results would be a transient
    // hundred megabytes.
    let mut part: Vec<(std::sync::Arc<str>, IdemRecord)> = Vec::with_capacity(CHUNK);
    for i in &state.idem {
        let Some(r) = i.record() else {
            let why = format!("idempotency key {:?} holds an unreadable result", i.key());
            return Err(io::Error::other(why));
        };
        part.push((i.key().into(), r));
        if part.len() == CHUNK {
            frame(&mut w, &Item::Idem(std::mem::take(&mut part)))?;
        }
    }
    if !part.is_empty() {
        frame(&mut w, &Item::Idem(part))?;
    }
    let mut slots: Vec<(std::sync::Arc<str>, u16)> = Vec::with_capacity(CHUNK);
    for i in &state.idem {
        slots.push((i.key().into(), i.slot()));
        if slots.len() == CHUNK {
            frame(&mut w, &Item::IdemSlots(std::mem::take(&mut slots)))?;
        }
    }
    if !slots.is_empty() {
        frame(&mut w, &Item::IdemSlots(slots))?;
    }
    frame(
        &mut w,
        &Item::Slots {
            state: state.slots.clone(),
            version_floor: state.version_floor,
        },
    )?;
    frame(&mut w, &Item::VersionOffset(state.version_offset))?;
    frame(
        &mut w,
        &Item::End {
            records: state.records.len() as u64,
            topics: state.topics.len() as u64,
            messages,
            idem: state.idem.len() as u64,
        },
    )?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    crate::wal::sync_dir(dir)?;
    Ok(path)
}

/// Loads a snapshot file. A damaged or incomplete file is an `InvalidData` error naming the file
/// and the offset of the damage; other kinds are I/O failures.
pub fn load(path: &Path) -> io::Result<State> {
    let mut offset = 0u64;
    let bad = |offset: u64, why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} at offset {offset}: {why}", path.display()),
        )
    };
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut magic = [0u8; 8];
    match io::Read::read_exact(&mut r, &mut magic) {
        Ok(()) if &magic == MAGIC => {}
        Ok(()) => return Err(bad(0, "not a snapshot")),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(bad(0, "shorter than its header"));
        }
        Err(e) => return Err(e),
    }
    offset += MAGIC.len() as u64;
    let mut state = State::default();
    let mut current: Option<(String, Topic)> = None;
    loop {
        let payload = match log::read_frame(&mut r)? {
            FrameRead::Frame(p) => p,
            FrameRead::End => return Err(bad(offset, "ends without its end marker")),
            FrameRead::Bad(why) => return Err(bad(offset, why)),
        };
        let at = offset;
        offset += (log::FRAME_HEADER + payload.len()) as u64;
        let item: Item = log::decode(&payload).map_err(|_| bad(at, "undecodable frame"))?;
        match item {
            Item::Meta { index, term } => {
                state.applied_index = index;
                state.applied_term = term;
            }
            Item::TimedRecords(rs) => state.records.extend(rs.iter().map(|(k, r)| Rec::new(k, r))),
            Item::Records(rs) => state
                .records
                .extend(rs.into_iter().map(|(k, r)| Rec::new(&k, &Record::from(r)))),
            Item::Topic {
                name,
                retention,
                first_offset,
                subscriptions,
            } => {
                if let Some((n, t)) = current.take() {
                    state.topics.insert(n, t);
                }
                let t = Topic {
                    retention,
                    first_offset,
                    messages: Vector::new(),
                    subscriptions: subscriptions.into_iter().collect::<OrdMap<_, _>>(),
                };
                current = Some((name, t));
            }
            Item::IndexedMessages(ms) => match current.as_mut() {
                Some((_, t)) => t.messages.extend(ms),
                None => return Err(bad(at, "messages without a topic")),
            },
            Item::Messages(ms) => match current.as_mut() {
                Some((_, t)) => t.messages.extend(ms.into_iter().map(Message::from)),
                None => return Err(bad(at, "messages without a topic")),
            },
            Item::Idem(items) => state
                .idem
                .extend(items.iter().map(|(k, r)| Idem::new(k, r))),
            Item::IdemSlots(items) => {
                for (k, slot) in items {
                    if let Some(i) = state.idem.get(&k).and_then(|i| i.with_slot(slot)) {
                        state.idem.insert(i);
                    }
                }
            }
            Item::Slots {
                state: slots,
                version_floor,
            } => {
                state.slots = slots;
                state.version_floor = version_floor;
            }
            Item::VersionOffset(offset) => state.version_offset = offset,
            Item::End {
                records,
                topics,
                messages,
                idem,
            } => {
                if let Some((n, t)) = current.take() {
                    state.topics.insert(n, t);
                }
                let got_messages: u64 =
                    state.topics.values().map(|t| t.messages.len() as u64).sum();
                if (records, topics, messages, idem)
                    != (
                        state.records.len() as u64,
                        state.topics.len() as u64,
                        got_messages,
                        state.idem.len() as u64,
                    )
                {
                    return Err(bad(at, "counts do not match its end marker"));
                }
                state.rebuild_indexes();
                return Ok(state);
            }
        }
    }
}

/// A snapshot file that could not be loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Damaged {
    pub file: String,
    pub index: u64,
    pub error: String,
}

/// Loads the newest intact snapshot; also returns the damaged newer ones it passed over.
pub fn load_newest(dir: &Path) -> io::Result<(Option<State>, Vec<Damaged>)> {
    let mut damaged = Vec::new();
    for (index, path) in list(dir)? {
        match load(&path) {
            Ok(s) => return Ok((Some(s), damaged)),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => damaged.push(Damaged {
                file: path.display().to_string(),
                index,
                error: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok((None, damaged))
}

/// Renames damaged snapshots out of the way (`*.snap.damaged`), kept for inspection: once
/// recovery has gone past them they must neither be tried again nor count among the snapshots
/// that pruning keeps.
pub fn set_aside(dir: &Path, damaged: &[Damaged]) -> io::Result<()> {
    for d in damaged {
        fs::rename(&d.file, format!("{}.damaged", d.file))?;
    }
    crate::wal::sync_dir(dir)
}

/// Keeps the newest `keep` snapshots and removes the temporary files of snapshot writes that did
/// not finish (a process stopped mid-write; writes are serialized, so none is in flight here).
/// Only this writer's own: other files are written through temporaries in the same folder (the
/// role record, the cluster map), and taking theirs made a role change fail with "No such file".
pub fn prune(dir: &Path, keep: usize) -> io::Result<()> {
    for (_, p) in list(dir)?.into_iter().skip(keep) {
        remove_if_there(&p)?;
    }
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snapshot-") && name.ends_with(".snap.tmp") {
            remove_if_there(&p)?;
        }
    }
    Ok(())
}

/// Removes a file another step may have removed already (a snapshot install replaces them all).
pub fn remove_if_there(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Op, Start};
    use crate::state::entry;

    #[test]
    fn pruning_removes_only_its_own_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = State::default();
        for index in 1..=3 {
            s.applied_index = index;
            write(d, &s).unwrap();
        }
        // Another writer's file in flight (the role record, the cluster map) is not ours to take.
        fs::write(d.join("role.json.tmp"), "{}").unwrap();
        fs::write(d.join("cluster.json.tmp"), "{}").unwrap();
        // A snapshot a stopped process was writing is.
        fs::write(d.join("snapshot-00000000000000000009.snap.tmp"), "partial").unwrap();
        prune(d, 2).unwrap();
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let kept: Vec<String> = [2, 3]
            .iter()
            .map(|i| {
                snapshot_path(d, *i)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            left,
            [
                "cluster.json.tmp".to_string(),
                "role.json.tmp".into(),
                kept[0].clone(),
                kept[1].clone()
            ]
        );
    }

    #[test]
    fn round_trip_keeps_the_digest_and_rejects_damage() {
        let mut s = State::default();
        let ops = vec![
            Op::Put {
                key: "k".into(),
                value: "{\"a\":1}".into(),
                ttl_ms: Some(1000),
                if_version: None,
            },
            Op::CreateTopic {
                topic: "t".into(),
                retention: Retention::default(),
            },
            Op::Publish {
                topic: "t".into(),
                values: (0..5000).map(|i| i.to_string().into()).collect(),
            },
            Op::Subscribe {
                topic: "t".into(),
                name: "s".into(),
                start: Start::Earliest,
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            s.apply_logged(&entry(i as u64 + 1, 10, op)).unwrap();
        }
        for i in 0..5000u64 {
            let op = Op::Put {
                key: format!("r{i}"),
                value: "1".into(),
                ttl_ms: None,
                if_version: None,
            };
            s.apply_logged(&entry(5 + i, 10, op)).unwrap();
        }
        let d = tempfile::tempdir().unwrap();
        let path = write(d.path(), &s).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.digest(), s.digest());
        assert_eq!(loaded.applied_index, s.applied_index);
        assert_eq!(
            loaded.expired_keys(u64::MAX, 10).len(),
            1,
            "derived indexes rebuilt"
        );

        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = load(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(" at offset "), "{err}");
        let (state, damaged) = load_newest(d.path()).unwrap();
        assert!(state.is_none());
        assert_eq!(damaged[0].index, s.applied_index);
    }

    /// More keys than one chunk holds, the last chunk partial: every key comes back with its
    /// result and slot, and the forgetting order is rebuilt.
    #[test]
    fn idempotency_keys_survive_a_snapshot_in_chunks() {
        let mut s = State::default();
        let n = 2 * CHUNK as u64 + 7;
        for i in 0..n {
            let mut e = entry(
                i + 1,
                10 + i,
                Op::Put {
                    key: format!("k{i}"),
                    value: "1".into(),
                    ttl_ms: None,
                    if_version: None,
                },
            );
            e.idem = Some(crate::log::IdemTag {
                key: format!("req-{i}"),
                fingerprint: i,
            });
            s.apply_logged(&e).unwrap();
        }
        let d = tempfile::tempdir().unwrap();
        let loaded = load(&write(d.path(), &s).unwrap()).unwrap();
        assert_eq!(loaded.digest(), s.digest());
        assert_eq!(loaded.idem.len() as u64, n);
        for i in &s.idem {
            assert_eq!(loaded.idem.get(i.key()), Some(i), "{}", i.key());
        }
        assert_eq!(
            loaded.idem_forget_below(u64::MAX, 0, 0),
            s.idem_forget_below(u64::MAX, 0, 0)
        );
        assert_eq!(loaded.idem_forget_below(20, 5, usize::MAX), Some(6));
    }

    #[test]
    fn a_migration_in_progress_survives_a_snapshot() {
        let mut s = State::default();
        let ops = vec![
            Op::Put {
                key: "k".into(),
                value: "1".into(),
                ttl_ms: None,
                if_version: None,
            },
            // Giving slots 0-10 to shard 1 while taking 20-30 from shard 2.
            Op::SlotsFence {
                start: 0,
                end: 10,
                to: 1,
            },
            Op::ImportBegin {
                start: 20,
                end: 30,
                from: 2,
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            s.apply_logged(&entry(i as u64 + 1, 10, op)).unwrap();
        }
        assert!(!s.slots.is_idle());
        let d = tempfile::tempdir().unwrap();
        let loaded = load(&write(d.path(), &s).unwrap()).unwrap();
        assert_eq!(loaded.slots, s.slots, "where the migration got to");
        assert_eq!(loaded.version_floor, s.version_floor);
        assert_eq!(loaded.version_offset, s.version_offset);
    }

    #[test]
    fn snapshots_written_before_record_times_still_load() {
        let d = tempfile::tempdir().unwrap();
        let path = snapshot_path(d.path(), 7);
        let mut buf = MAGIC.to_vec();
        let items = [
            Item::Meta { index: 7, term: 2 },
            Item::Records(vec![(
                "k".into(),
                RecordV1 {
                    value: "1".into(),
                    version: 5,
                    expires_at_ms: None,
                },
            )]),
            Item::Topic {
                name: "t".into(),
                retention: Retention::default(),
                first_offset: 3,
                subscriptions: vec![],
            },
            Item::Messages(vec![MessageV1 {
                value: "\"m\"".into(),
                published_at_ms: 9,
            }]),
            Item::End {
                records: 1,
                topics: 1,
                messages: 1,
                idem: 0,
            },
        ];
        for item in &items {
            log::put_frame(&mut buf, &log::encode(item));
        }
        fs::write(&path, buf).unwrap();
        let s = load(&path).unwrap();
        let r = s.get("k", 0).unwrap();
        assert_eq!((r.version(), r.created_ms(), r.modified_ms()), (5, 0, 0));
        let t = &s.topics["t"];
        assert_eq!((t.next_offset(), t.messages[0].index), (4, 0));
        // Written again, it is in today's form and loads the same.
        let again = load(&write(d.path(), &s).unwrap()).unwrap();
        assert_eq!(again.digest(), s.digest());
    }
}
