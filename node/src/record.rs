//! A record: its key, value and metadata in one packed block (see `packed`), the element of the
//! record map.
//!
//! The payload: flags, `version` varint, `created_ms` varint, `modified_ms` as a zigzag delta
//! from `created_ms` (clocks of successive primaries may step back), `expires_at_ms` varint when
//! the flag says so, then the value (the JSON text as it arrived) to the end. A 100-byte value
//! under a short key takes one 144-byte heap chunk.

use crate::log::Json;
use crate::packed::{Block, KeyedSet, Packed, Varints, varint};
use serde::{Deserialize, Serialize};

/// A record as an owned value: what snapshots and imports carry (their encoding is this struct's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub value: Json,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
    /// Time of the entry that created the key (the primary's clock): kept by later writes, new
    /// after the key was deleted or expired. 0 for records loaded from a snapshot written before
    /// records had times.
    pub created_ms: u64,
    /// Time of the entry that wrote the current value.
    pub modified_ms: u64,
}

impl Record {
    pub fn live_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|t| t > now_ms)
    }
}

const HAS_EXPIRY: u8 = 1;

/// One record with its key, immutable; cloning shares it.
#[derive(Clone, PartialEq, Eq)]
pub struct Rec(Block);

/// The record map.
pub type Records = KeyedSet<Rec>;

impl Packed for Rec {
    fn block(&self) -> &Block {
        &self.0
    }
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Every field of a record, read in one walk (rendering needs them all).
pub struct View<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
    pub created_ms: u64,
    pub modified_ms: u64,
}

impl Rec {
    pub fn new(key: &str, r: &Record) -> Rec {
        Rec::build(
            key,
            &r.value,
            r.version,
            r.expires_at_ms,
            r.created_ms,
            r.modified_ms,
        )
    }

    pub fn build(
        key: &str,
        value: &str,
        version: u64,
        expires_at_ms: Option<u64>,
        created_ms: u64,
        modified_ms: u64,
    ) -> Rec {
        let mut head = Varints::default();
        head.byte(if expires_at_ms.is_some() {
            HAS_EXPIRY
        } else {
            0
        });
        head.varint(version);
        head.varint(created_ms);
        head.varint(zigzag((modified_ms as i64).wrapping_sub(created_ms as i64)));
        if let Some(at) = expires_at_ms {
            head.varint(at);
        }
        Rec(Block::new(key, &[head.bytes(), value.as_bytes()]))
    }

    pub fn key(&self) -> &str {
        self.0.key()
    }

    pub fn view(&self) -> View<'_> {
        let p = self.0.payload();
        let flags = p[0];
        let mut at = 1;
        let version = varint(p, &mut at);
        let created_ms = varint(p, &mut at);
        let modified_ms = (created_ms as i64).wrapping_add(unzigzag(varint(p, &mut at))) as u64;
        let expires_at_ms = (flags & HAS_EXPIRY != 0).then(|| varint(p, &mut at));
        // SAFETY: the rest of the payload was copied from a `&str` by `build`.
        let value = unsafe { std::str::from_utf8_unchecked(&p[at..]) };
        View {
            key: self.0.key(),
            value,
            version,
            expires_at_ms,
            created_ms,
            modified_ms,
        }
    }

    pub fn value(&self) -> &str {
        self.view().value
    }

    pub fn version(&self) -> u64 {
        self.view().version
    }

    pub fn expires_at_ms(&self) -> Option<u64> {
        self.view().expires_at_ms
    }

    pub fn created_ms(&self) -> u64 {
        self.view().created_ms
    }

    pub fn modified_ms(&self) -> u64 {
        self.view().modified_ms
    }

    pub fn live_at(&self, now_ms: u64) -> bool {
        // Most records never expire: the flag answers without decoding the header (every read
        // asks).
        self.0.payload()[0] & HAS_EXPIRY == 0 || self.expires_at_ms().is_none_or(|t| t > now_ms)
    }

    /// The record as an owned value (snapshots, imports, tests).
    pub fn record(&self) -> Record {
        let v = self.view();
        Record {
            value: Json::from(v.value),
            version: v.version,
            expires_at_ms: v.expires_at_ms,
            created_ms: v.created_ms,
            modified_ms: v.modified_ms,
        }
    }
}

impl std::fmt::Debug for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Rec")
            .field(&self.key())
            .field(&self.record())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_field_reads_back_as_built(
            key in "\\PC{0,300}",
            value in "\\PC{0,600}",
            version: u64,
            exp: Option<u64>,
            created: u64,
            modified: u64,
        ) {
            let r = Rec::build(&key, &value, version, exp, created, modified);
            prop_assert_eq!(r.key(), key.as_str());
            prop_assert_eq!(r.value(), value.as_str());
            prop_assert_eq!(r.version(), version);
            prop_assert_eq!(r.expires_at_ms(), exp);
            prop_assert_eq!(r.created_ms(), created);
            prop_assert_eq!(r.modified_ms(), modified);
            let copy = r.clone();
            drop(r);
            prop_assert_eq!(copy.value(), value.as_str());
            prop_assert_eq!(Rec::new(&key, &copy.record()), copy);
        }
    }

    #[test]
    fn a_record_is_equal_only_to_one_with_every_field_equal() {
        let r = Rec::build("k", "1", 2, None, 3, 4);
        assert_eq!(r, Rec::build("k", "1", 2, None, 3, 4));
        assert_ne!(r, Rec::build("k", "1", 2, None, 3, 5));
        assert_ne!(r, Rec::build("k", "1", 2, Some(9), 3, 4));
    }
}
