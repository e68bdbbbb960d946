//! Idempotency results: what a retried write with the same key is answered, one packed block per
//! key (see `packed`), and the primary's decision of which to forget.
//!
//! The payload: `index` varint, `ts_ms` varint, `fingerprint` (8 bytes), `slot` (2 bytes), then
//! the result in the log's encoding to the end. About 80 heap bytes for the client library's keys,
//! where a key, a boxed result and a wide map element took 281.

use crate::log;
use crate::op_result::OpResult;
use crate::packed::{Block, KeyedSet, Packed, Varints, varint};
use serde::{Deserialize, Serialize};

/// Default of `--idempotency-ttl-ms`: how long a retried request with the same idempotency key
/// returns the first result at least.
pub const IDEM_TTL_MS: u64 = 24 * 3600 * 1000;
/// Default of `--idempotency-max-keys`: bound on remembered idempotency keys; the oldest are
/// forgotten first. Both are settings of the primary only: it logs what to forget
/// ([`log::Op::ForgetIdem`]), so every node forgets the same keys whatever its own flags.
pub const IDEM_MAX_KEYS: usize = 1_000_000;
/// Most idempotency keys one forget entry removes, so applying it holds the state briefly.
pub const IDEM_FORGET_BATCH: usize = 10_000;

/// An idempotency key's record as an owned value (snapshots, imports, answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub fingerprint: u64,
    pub index: u64,
    pub ts_ms: u64,
    /// Boxed as it always was: the snapshot encoding is the same as unboxed.
    pub result: Box<OpResult>,
    /// The hash slot of the write (its key or topic), so the key moves with the slot; snapshots
    /// keep it in frames of their own ([`NO_SLOT`] when unknown: written before slots moved).
    #[serde(skip, default = "no_slot")]
    pub slot: u16,
}

/// The slot of an idempotency record that predates slot tracking: it moves with every range.
pub const NO_SLOT: u16 = u16::MAX;

fn no_slot() -> u16 {
    NO_SLOT
}

/// One idempotency key and its record, immutable; cloning shares it.
#[derive(Clone, PartialEq, Eq)]
pub struct Idem(Block);

/// The idempotency keys, by key.
pub type IdemMap = KeyedSet<Idem>;

impl Packed for Idem {
    fn block(&self) -> &Block {
        &self.0
    }
}

impl Idem {
    pub fn new(key: &str, r: &IdemRecord) -> Idem {
        let mut head = Varints::default();
        head.varint(r.index);
        head.varint(r.ts_ms);
        let result = log::encode(&*r.result);
        Idem(Block::new(
            key,
            &[
                head.bytes(),
                &r.fingerprint.to_le_bytes(),
                &r.slot.to_le_bytes(),
                &result,
            ],
        ))
    }

    pub fn key(&self) -> &str {
        self.0.key()
    }

    /// Whether both are the same stored record (not merely equal).
    pub fn same(&self, other: &Idem) -> bool {
        self.0.same(&other.0)
    }

    /// The index, the time, and where the fixed fields start.
    fn head(&self) -> (u64, u64, usize) {
        let p = self.0.payload();
        let mut at = 0;
        let index = varint(p, &mut at);
        let ts_ms = varint(p, &mut at);
        (index, ts_ms, at)
    }

    /// The index of the entry that stored it (of the import entry, for an imported key).
    pub fn index(&self) -> u64 {
        let p = self.0.payload();
        varint(p, &mut 0)
    }

    pub fn ts_ms(&self) -> u64 {
        self.head().1
    }

    pub fn fingerprint(&self) -> u64 {
        let (_, _, at) = self.head();
        let b: [u8; 8] = self.0.payload()[at..at + 8].try_into().expect("8 bytes");
        u64::from_le_bytes(b)
    }

    pub fn slot(&self) -> u16 {
        let (_, _, at) = self.head();
        let b: [u8; 2] = self.0.payload()[at + 8..at + 10]
            .try_into()
            .expect("2 bytes");
        u16::from_le_bytes(b)
    }

    /// The result a retry is answered. `None` only if the block did not hold what `new` wrote.
    pub fn result(&self) -> Option<OpResult> {
        let (_, _, at) = self.head();
        log::decode(&self.0.payload()[at + 10..]).ok()
    }

    /// The same record with another slot.
    pub fn with_slot(&self, slot: u16) -> Option<Idem> {
        let mut r = self.record()?;
        r.slot = slot;
        Some(Idem::new(self.key(), &r))
    }

    pub fn record(&self) -> Option<IdemRecord> {
        let (index, ts_ms, _) = self.head();
        Some(IdemRecord {
            fingerprint: self.fingerprint(),
            index,
            ts_ms,
            result: Box::new(self.result()?),
            slot: self.slot(),
        })
    }
}

impl std::fmt::Debug for Idem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Idem")
            .field(&self.key())
            .field(&self.record())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_as_stored() {
        let r = IdemRecord {
            fingerprint: u64::MAX - 3,
            index: 1 << 40,
            ts_ms: 1_790_000_000_000,
            result: Box::new(OpResult::Put {
                version: 77,
                expires_at_ms: Some(9),
            }),
            slot: 4095,
        };
        let i = Idem::new("rc-0000000000005eed-1e8480", &r);
        assert_eq!(i.key(), "rc-0000000000005eed-1e8480");
        assert_eq!(i.record(), Some(r.clone()));
        assert_eq!((i.index(), i.ts_ms(), i.slot()), (1 << 40, r.ts_ms, 4095));
        let moved = i.with_slot(NO_SLOT).expect("decodes");
        assert_eq!(moved.slot(), NO_SLOT);
        assert_eq!(moved.fingerprint(), r.fingerprint);
        assert_ne!(moved, i);
    }
}
