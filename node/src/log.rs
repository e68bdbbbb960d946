//! Log entries and the checksummed frame format shared by WAL segments and snapshots.
//!
//! Every mutation is an [`Entry`]; the state is what applying entries in index order produces, so the
//! encoding must be deterministic and stable across versions (postcard, no maps with random order).

use serde::{Deserialize, Serialize};
use std::io::{self, Read};
use std::sync::Arc;

/// Upper bound on one frame; anything larger is treated as corruption rather than allocated.
pub const MAX_FRAME: usize = 256 << 20;
pub const FRAME_HEADER: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    /// Wall-clock time of the primary that created the entry. Expiry decisions use this, never the
    /// applying node's clock, so replicas reach the same state.
    pub ts_ms: u64,
    pub idem: Option<IdemTag>,
    pub op: Op,
}

/// The idempotency key of the request that produced an entry, with a fingerprint of the request so
/// that reusing a key for a different request is detected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdemTag {
    pub key: String,
    pub fingerprint: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Retention {
    pub max_messages: Option<u64>,
    pub max_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Start {
    Earliest,
    Latest,
    Offset(u64),
}

/// Values are kept as their compact JSON text: validated once at the edge, never re-parsed.
pub type Json = Arc<str>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Written by a new primary at the start of its term.
    Noop,
    Put {
        key: String,
        value: Json,
        ttl_ms: Option<u64>,
        if_version: Option<u64>,
    },
    Delete {
        key: String,
        if_version: Option<u64>,
    },
    Incr {
        key: String,
        delta: i64,
        min: Option<i64>,
        max: Option<i64>,
    },
    /// Purge records that expired; each is removed only if it still has the given version.
    Expire {
        keys: Vec<(String, u64)>,
    },
    CreateTopic {
        topic: String,
        retention: Retention,
    },
    DeleteTopic {
        topic: String,
    },
    Publish {
        topic: String,
        values: Vec<Json>,
    },
    /// Apply age retention at the entry's time.
    Trim {
        topic: String,
    },
    Subscribe {
        topic: String,
        name: String,
        start: Start,
    },
    Unsubscribe {
        topic: String,
        name: String,
    },
    /// Deliver up to `max` messages from the cursor and advance it, in one entry, so a pull is atomic
    /// and its result is the same on every node.
    Pull {
        topic: String,
        name: String,
        max: u32,
    },
    /// A transaction (`POST /v1/txn`): `success` when every comparison holds, else `failure`,
    /// all or nothing, in this one entry.
    Txn {
        compare: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    // Slot migration (docs/SHARDS.md "Resharding"): the source shard fences, hands off and
    // finally drops a range; the target imports it and then owns it. Every step is an entry, so a
    // new primary of either shard knows exactly how far a migration got.
    /// Source: from here on writes to `start..=end` are refused (`slot_migrating`).
    SlotsFence {
        start: u32,
        end: u32,
        to: u32,
    },
    /// Source: an aborted migration; the range takes writes again.
    SlotsUnfence {
        start: u32,
        end: u32,
    },
    /// Source: the coordinator recorded `to` as the owner at `epoch`; the range is not served here.
    SlotsHandoff {
        start: u32,
        end: u32,
        to: u32,
        epoch: u64,
    },
    /// Source: the handed-off range's data is removed.
    SlotsDrop {
        start: u32,
        end: u32,
    },
    /// Target: the range is being imported from shard `from`; it is not served until `ImportEnd`.
    ImportBegin {
        start: u32,
        end: u32,
        from: u32,
    },
    /// Target: part of the source's consistent copy taken at source index `at`; `last` ends it.
    ImportCopy {
        at: u64,
        records: Vec<ImportedRecord>,
        topics: Vec<ImportedTopic>,
        idem: Vec<ImportedIdem>,
        last: bool,
    },
    /// Target: the source's committed entries touching the range, up to source index `upto`.
    ImportEntries {
        entries: Vec<Entry>,
        upto: u64,
    },
    /// Target: the coordinator recorded this shard as the range's owner at `epoch`.
    ImportEnd {
        start: u32,
        end: u32,
        epoch: u64,
    },
    /// Target: an aborted import; whatever was copied is removed.
    ImportAbort {
        start: u32,
        end: u32,
    },
    /// Forget the idempotency keys stored by entries before `below_index`. Only the primary
    /// decides what to forget (by its retention settings) and logs it, so every node forgets the
    /// same keys whatever its own settings: a retry is answered alike by any later primary.
    ForgetIdem {
        below_index: u64,
    },
    /// Target: the source's committed entries touching the range, up to source index `upto`,
    /// which the source stamped with versions `index + offset`: applied here with exactly those
    /// versions. (`ImportEntries`, written before, applied them at their index, which is wrong
    /// once the source imported a range earlier and stamped above its indexes.)
    ImportTail {
        entries: Vec<Entry>,
        upto: u64,
        offset: u64,
    },
}

/// A record as it travels between shards: its version and times stay what they were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedRecord {
    pub key: String,
    pub value: Json,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
    pub created_ms: u64,
    pub modified_ms: u64,
}

/// A topic with its messages, subscriptions and cursors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedTopic {
    pub name: String,
    pub retention: Retention,
    pub first_offset: u64,
    /// (value, published_at_ms) from `first_offset` on.
    pub messages: Vec<(Json, u64)>,
    pub subscriptions: Vec<(String, u64)>,
}

/// A remembered idempotency key of a write to the range, so a retry after the move is still
/// applied once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedIdem {
    pub key: String,
    pub fingerprint: u64,
    pub ts_ms: u64,
    /// The result, postcard-encoded as the source keeps it.
    pub result: Vec<u8>,
}

impl Op {
    /// The record keys or topic names the operation touches (their slots decide its shard).
    pub fn names(&self) -> Vec<&str> {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } | Op::Incr { key, .. } => vec![key],
            Op::Expire { keys } => keys.iter().map(|(k, _)| k.as_str()).collect(),
            Op::CreateTopic { topic, .. }
            | Op::DeleteTopic { topic }
            | Op::Publish { topic, .. }
            | Op::Trim { topic }
            | Op::Subscribe { topic, .. }
            | Op::Unsubscribe { topic, .. }
            | Op::Pull { topic, .. } => vec![topic],
            Op::Txn {
                compare,
                success,
                failure,
            } => compare
                .iter()
                .map(|c| c.key.as_str())
                .chain(success.iter().chain(failure).map(TxnOp::name))
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Sized first, then written once: growing the Vec from empty reallocated five or six times
    // for a write's entry (about 1,500 instructions of a quorum put's 45,000), and the exact
    // size is what the log keeps.
    let size = postcard::experimental::serialized_size(value)
        .expect("postcard sizes any value it encodes");
    postcard::to_extend(value, Vec::with_capacity(size))
        .expect("postcard encoding into a Vec cannot fail")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Appends the frame of `value`, encoded in place (what `put_frame(out, &encode(value))`
/// appends), and returns its payload's range in `out`. Encoding a log entry to a `Vec` of its own
/// first sizes it with a whole pass of the encoder, then allocates, encodes and copies it: about
/// 240 of a durable put's 26,000 instructions more (callgrind).
pub fn put_encoded_frame<T: Serialize>(out: &mut Vec<u8>, value: &T) -> std::ops::Range<usize> {
    /// Encodes onto the end of a buffer it borrows (`to_extend` would take it by value).
    struct Onto<'a>(&'a mut Vec<u8>);
    impl postcard::ser_flavors::Flavor for Onto<'_> {
        type Output = ();
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            self.0.extend_from_slice(data);
            Ok(())
        }
        fn try_push(&mut self, data: u8) -> postcard::Result<()> {
            self.0.push(data);
            Ok(())
        }
        fn finalize(self) -> postcard::Result<()> {
            Ok(())
        }
    }
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    if let Err(e) = postcard::serialize_with_flavor(value, Onto(out)) {
        // Never for a log entry (every field has a known length); were it to happen, no half
        // frame stays behind what the buffer held.
        out.truncate(start);
        panic!("postcard cannot encode this value: {e}");
    }
    seal_frame(out, start)
}

/// Appends one frame: `len: u32 LE | crc32c(payload): u32 LE | payload`.
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.extend_from_slice(payload);
    seal_frame(out, start);
}

/// Writes the header of the frame at `start`, whose payload runs to the end of `out`, and
/// returns the payload's range: the one place the header's layout is written.
fn seal_frame(out: &mut [u8], start: usize) -> std::ops::Range<usize> {
    let payload = start + FRAME_HEADER..out.len();
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c(&out[payload.clone()]).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&crc);
    payload
}

#[derive(Debug)]
pub enum FrameRead {
    Frame(Vec<u8>),
    /// Clean end of input at a frame boundary.
    End,
    /// A partial or corrupt frame: the reader stops here.
    Bad(&'static str),
}

/// Reads the next frame. I/O errors other than a short read are returned as errors; a short read or
/// checksum mismatch is `Bad`, which recovery treats as the end of the valid log.
pub fn read_frame(r: &mut impl Read) -> io::Result<FrameRead> {
    let mut header = [0u8; FRAME_HEADER];
    let mut got = 0;
    while got < FRAME_HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(FrameRead::End),
            Ok(0) => return Ok(FrameRead::Bad("torn frame header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    if len > MAX_FRAME {
        return Ok(FrameRead::Bad("frame length out of range"));
    }
    // Nothing ever writes an empty frame, while a zero-filled tail (a file extended but never
    // written) would otherwise pass as one: length 0, and 0 is the checksum of nothing.
    if len == 0 {
        return Ok(FrameRead::Bad("empty frame"));
    }
    let mut payload = vec![0u8; len];
    if let Err(e) = r.read_exact(&mut payload) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(FrameRead::Bad("torn frame payload"))
        } else {
            Err(e)
        };
    }
    if crc32c::crc32c(&payload) != crc {
        return Ok(FrameRead::Bad("checksum mismatch"));
    }
    Ok(FrameRead::Frame(payload))
}

/// FNV-1a, 64 bit: a stable hash for request fingerprints and state digests (std's hasher is not
/// guaranteed stable across releases, and these values are stored in the log).
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// Writes a length prefix first so that ("ab","c") and ("a","bc") hash differently.
    pub fn write_field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let e = Entry {
            term: 3,
            index: 7,
            ts_ms: 1,
            idem: Some(IdemTag {
                key: "k".into(),
                fingerprint: 9,
            }),
            op: Op::Put {
                key: "a".into(),
                value: "{\"x\":1}".into(),
                ttl_ms: Some(5),
                if_version: None,
            },
        };
        let mut buf = Vec::new();
        put_frame(&mut buf, &encode(&e));
        let mut r = &buf[..];
        match read_frame(&mut r).unwrap() {
            FrameRead::Frame(p) => assert_eq!(decode::<Entry>(&p).unwrap(), e),
            other => panic!("{other:?}"),
        }
        assert!(matches!(read_frame(&mut r).unwrap(), FrameRead::End));

        let mut torn = &buf[..buf.len() - 1];
        assert!(matches!(read_frame(&mut torn).unwrap(), FrameRead::Bad(_)));
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(
            read_frame(&mut &flipped[..]).unwrap(),
            FrameRead::Bad("checksum mismatch")
        ));
    }

    /// An entry encoded in place makes the very frame that encoding it apart makes, after what
    /// the buffer already holds, and its range is that frame's payload.
    #[test]
    fn a_frame_encoded_in_place_is_the_frame_of_its_encoding() {
        let entries = [
            crate::state::entry(1, 1, Op::Noop),
            Entry {
                idem: Some(IdemTag {
                    key: "idem-1".into(),
                    fingerprint: u64::MAX,
                }),
                ..crate::state::entry(
                    u64::MAX,
                    300,
                    Op::Put {
                        key: "k".repeat(200),
                        value: Json::from("\"v\""),
                        ttl_ms: Some(5),
                        if_version: Some(2),
                    },
                )
            },
        ];
        let mut in_place = b"earlier".to_vec();
        let mut apart = in_place.clone();
        for e in &entries {
            let payload = put_encoded_frame(&mut in_place, e);
            assert_eq!(in_place[payload], encode(e)[..]);
            put_frame(&mut apart, &encode(e));
            assert_eq!(in_place, apart);
        }
    }
}

// Transactions (`crate::txn`). Part of the log format: change them only by adding variants at the
// end.

/// A condition on one record; every test it names must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    /// The record exists (`true`) or does not (`false`).
    pub exists: Option<bool>,
    /// The record's version equals this (0: the record does not exist).
    pub version: Option<u64>,
    /// The record's value equals this JSON value (as JSON: `{"a":1}` equals `{ "a": 1 }`).
    pub value: Option<Json>,
    /// The value is an integer and at least this...
    pub min: Option<i64>,
    /// ...and at most this.
    pub max: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        key: String,
        value: Json,
        ttl_ms: Option<u64>,
    },
    /// Removes the record if it exists (a missing record is no error: `deleted: false`).
    Delete {
        key: String,
    },
    Incr {
        key: String,
        delta: i64,
        min: Option<i64>,
        max: Option<i64>,
    },
    Publish {
        topic: String,
        value: Json,
    },
}

/// What one operation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxnResult {
    Put {
        version: u64,
        expires_at_ms: Option<u64>,
    },
    Delete {
        deleted: bool,
    },
    Incr {
        value: i64,
        version: u64,
    },
    Publish {
        offset: u64,
    },
}
