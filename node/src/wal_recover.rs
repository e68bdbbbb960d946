//! Recovery of the log at start: which damage may be cut (a torn tail) and which stops the node.

use super::{MAGIC, list_segments, sync_dir};
use crate::log::{self, Entry, FrameRead};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

/// What recovery cut from the log, reported in logs and `/v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Truncation {
    pub segment: String,
    pub offset: u64,
    pub bytes_removed: u64,
    pub segments_removed: usize,
    pub reason: String,
    pub last_valid_index: u64,
    /// The cut removed intact entries after the damage (only with `--accept-data-loss`); a torn
    /// tail, which only ever holds a write that was never acknowledged, leaves this false.
    pub data_loss: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// The last index known after recovery: the log's end, or the snapshot's if that is newer.
    pub last_index: u64,
    /// The last index actually present in the log files (0 when there is none).
    pub log_end: u64,
    pub last_term: u64,
    pub truncation: Option<Truncation>,
}

/// Damage that is not a torn tail: cutting the log there would drop intact entries, any of which
/// may have been acknowledged to a client.
#[derive(Debug, Clone)]
pub struct Damage {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// Why the damage cannot be a torn write.
    pub not_torn: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "damaged log: {} at offset {}: {}; {}",
            self.segment.display(),
            self.offset,
            self.reason,
            self.not_torn
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{0}")]
    Damaged(Box<Damage>),
}

/// Reads every valid entry with index > `after` in order, calling `apply` for each.
///
/// Only a torn tail is cut without asking: damage in the newest segment with no intact entry after
/// it. A crash mid-write can leave exactly that, and what it holds was never acknowledged (a
/// write is acknowledged only once durable, and everything before it is durable too). Any other
/// damage — intact entries after it, an older segment, a segment that does not continue the log,
/// entries missing between the snapshot and the log — is `Damaged`, unless `accept_loss` says to
/// cut there anyway (reported as `data_loss`).
pub fn recover(
    dir: &Path,
    after: u64,
    accept_loss: bool,
    mut apply: impl FnMut(Entry),
) -> Result<Recovery, RecoverError> {
    let segments = list_segments(dir)?;
    let mut rec = Recovery {
        last_index: after,
        ..Recovery::default()
    };
    let mut expected: Option<u64> = None;
    for (pos, (first, path)) in segments.iter().enumerate() {
        let bad = if pos == 0 && *first > after + 1 {
            Some(Bad {
                offset: 0,
                reason: format!(
                    "the log starts at index {first} but the state before it ends at index {after}"
                ),
                next_index: *first,
                not_torn: Some("entries are missing"),
            })
        } else {
            // A segment may start past the previous one's end when the snapshot covers the gap
            // (a log that lost its tail restarted after a newer snapshot).
            if expected.is_some_and(|x| x != *first && *first <= after + 1) {
                expected = None;
            }
            scan_segment(path, *first, &mut expected, |e| {
                rec.last_index = e.index.max(rec.last_index);
                rec.log_end = e.index;
                if e.index > after {
                    rec.last_term = e.term;
                    apply(e);
                }
            })?
        };
        let Some(bad) = bad else { continue };
        let newer = segments.len() - pos - 1;
        let tail = if newer == 0 && bad.not_torn.is_none() && bad.offset >= MAGIC.len() as u64 {
            read_from(path, bad.offset)?
        } else {
            Vec::new()
        };
        if !tail.is_empty() && tail.iter().all(|b| *b == 0) {
            // The unwritten rest of a segment zeroed ahead: the log's end, not damage, so it is
            // cut without a report.
            cut(dir, &segments[pos..], bad.offset)?;
            break;
        }
        let not_torn = if let Some(why) = bad.not_torn {
            Some(why.to_string())
        } else if newer > 0 {
            Some(format!("{newer} newer segment(s) follow it"))
        } else if unwritten_sector(&tail, bad.offset) {
            // In a segment zeroed ahead, the blocks of a write that no fsync finished reach the
            // disk in any order, so a crash can leave a sector of one still zero with later
            // entries of the same write intact. None of them was acknowledged: everything up to
            // an acknowledged entry was fsynced, and a disk that honours fsync does not read back
            // zeros where it wrote a frame. So this is a torn tail too.
            None
        } else {
            find_intact_entry(path, bad.offset + 1, bad.next_index)?.map(|(index, at)| {
                format!("an intact entry (index {index}) follows at offset {at}")
            })
        };
        let data_loss = not_torn.is_some();
        let reason = match not_torn {
            None => bad.reason,
            Some(not_torn) if accept_loss => format!("{}; {not_torn}", bad.reason),
            Some(not_torn) => {
                return Err(RecoverError::Damaged(Box::new(Damage {
                    segment: path.clone(),
                    offset: bad.offset,
                    reason: bad.reason,
                    not_torn,
                })));
            }
        };
        let (bytes_removed, segments_removed) = cut(dir, &segments[pos..], bad.offset)?;
        rec.truncation = Some(Truncation {
            segment: path.display().to_string(),
            offset: bad.offset,
            bytes_removed,
            segments_removed,
            reason,
            last_valid_index: rec.last_index,
            data_loss,
        });
        break;
    }
    Ok(rec)
}

/// Cuts the log at `offset` of the first of `segments` and removes the others. A segment left
/// without a single entry is removed too, so that no segment without a valid header survives a
/// cut: the writer starts a fresh one (header written and fsynced, the folder fsynced). Returns
/// the bytes and the whole segments removed.
fn cut(dir: &Path, segments: &[(u64, PathBuf)], offset: u64) -> io::Result<(u64, usize)> {
    let (_, path) = &segments[0];
    let mut removed = 0;
    for (_, p) in &segments[1..] {
        removed += fs::metadata(p)?.len();
        fs::remove_file(p)?;
    }
    let len = fs::metadata(path)?.len();
    let mut segments_removed = segments.len() - 1;
    if offset <= MAGIC.len() as u64 {
        fs::remove_file(path)?;
        removed += len;
        segments_removed += 1;
    } else {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(offset)?;
        f.sync_all()?;
        removed += len - offset;
    }
    sync_dir(dir)?;
    Ok((removed, segments_removed))
}

/// The bytes of a file from `offset` to its end.
fn read_from(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    io::Seek::seek(&mut f, io::SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    io::Read::read_to_end(&mut f, &mut out)?;
    Ok(out)
}

/// Sectors: the unit a disk writes whole or not at all.
const SECTOR: u64 = 512;

/// Whether the bad frame at the start of `tail` (the file from `offset` on) spans a sector never
/// written since it was zeroed: one whose bytes from the frame's start (in the frame's first
/// sector) or whole (in a later one) are all zero. A frame is its header and, when the header's
/// length is plausible, its payload. At least a header's worth of zeros counts, so the zero high
/// bytes of a length field are not mistaken for one.
fn unwritten_sector(tail: &[u8], offset: u64) -> bool {
    let header = tail.len().min(log::FRAME_HEADER);
    let len = match tail.get(..4) {
        Some(b) => u32::from_le_bytes(b.try_into().unwrap()) as usize,
        None => 0,
    };
    let end = if (1..=log::MAX_FRAME).contains(&len) {
        (log::FRAME_HEADER + len).min(tail.len())
    } else {
        header
    };
    let mut at = 0;
    while at < end {
        let sector_end = ((offset + at as u64) / SECTOR + 1) * SECTOR - offset;
        let stop = (sector_end as usize).min(tail.len());
        let span = &tail[at..stop];
        if span.len() >= log::FRAME_HEADER && span.iter().all(|b| *b == 0) {
            return true;
        }
        at = stop;
    }
    false
}

/// Where a segment stops being readable.
pub(super) struct Bad {
    offset: u64,
    reason: String,
    /// The index the entry at `offset` should have had.
    next_index: u64,
    /// Why this cannot be what a write cut short leaves; `None` for a missing or bad header or
    /// frame, which it can be (if nothing intact follows).
    not_torn: Option<&'static str>,
}

/// Scans one segment, calling `each` for every entry up to the first bad spot, which it returns.
pub(super) fn scan_segment(
    path: &Path,
    first: u64,
    expected: &mut Option<u64>,
    mut each: impl FnMut(Entry),
) -> io::Result<Option<Bad>> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut magic = [0u8; 8];
    let mut next = expected.unwrap_or(first);
    if io::Read::read_exact(&mut r, &mut magic).is_err() || &magic != MAGIC {
        return Ok(Some(Bad {
            offset: 0,
            reason: "missing or bad segment header".into(),
            next_index: next,
            not_torn: None,
        }));
    }
    let mut end = MAGIC.len() as u64;
    if next != first {
        return Ok(Some(Bad {
            offset: end,
            reason: format!("segment starts at {first}, expected {next}"),
            next_index: next,
            not_torn: Some("entries are missing or out of order"),
        }));
    }
    let bad = |offset, next_index, reason: String, not_torn| {
        Ok(Some(Bad {
            offset,
            reason,
            next_index,
            not_torn,
        }))
    };
    loop {
        let payload = match log::read_frame(&mut r)? {
            FrameRead::End => break,
            FrameRead::Bad(why) => return bad(end, next, why.into(), None),
            FrameRead::Frame(p) => p,
        };
        let entry: Entry = match log::decode(&payload) {
            Ok(e) => e,
            Err(_) => {
                let why = "its checksum is intact, so no interrupted write left it";
                return bad(end, next, "undecodable entry".into(), Some(why));
            }
        };
        if entry.index != next {
            let reason = format!("entry {} where {next} was expected", entry.index);
            return bad(
                end,
                next,
                reason,
                Some("an intact entry is out of sequence"),
            );
        }
        end += (log::FRAME_HEADER + payload.len()) as u64;
        next += 1;
        each(entry);
    }
    *expected = Some(next);
    Ok(None)
}

/// The first intact entry at or after byte `from` of a segment whose index is at least
/// `min_index`: a frame whose checksum verifies and whose payload decodes as such an entry.
/// Every byte offset is tried, since a damaged length field hides where the next frame starts.
///
/// Client data can hardly fake one: the length field of any frame that fits in a segment has
/// zero bytes, which stored JSON text, keys and names never hold, and the entry must decode with
/// an index at or past the damaged one.
fn find_intact_entry(path: &Path, from: u64, min_index: u64) -> io::Result<Option<(u64, u64)>> {
    let bytes = fs::read(path)?;
    let mut at = from as usize;
    while at + log::FRAME_HEADER < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        let start = at + log::FRAME_HEADER;
        if len > 0 && len <= bytes.len() - start {
            let payload = &bytes[start..start + len];
            if crc32c::crc32c(payload) == crc
                && let Ok(e) = log::decode::<Entry>(payload)
                && e.index >= min_index
            {
                return Ok(Some((e.index, at as u64)));
            }
        }
        at += 1;
    }
    Ok(None)
}
