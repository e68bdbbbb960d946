//! Session tokens: the log positions a client has observed, one per shard.
//!
//! A response carries the token (`Rcluster-Token`) merged with what it observed; a session read
//! sends it back and waits until the serving node's shard has applied that shard's position. A
//! token holds one position per shard because shards have independent logs: a write on shard A
//! says nothing about shard B, and a read on B must wait only for what the client saw on B.
//!
//! Text form: `SHARD:INDEX` pairs joined by commas (`0:17,3:250`). A token of shard 0 alone is just
//! its index (`17`), which is what a cluster without shards has always sent, so old clients and
//! old tokens keep working.

use crate::slots::ShardId;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Most shards one token may name (bounds what a header can make a node parse and hold).
pub const MAX_TOKEN_SHARDS: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionToken {
    positions: BTreeMap<ShardId, u64>,
}

impl SessionToken {
    pub fn new() -> SessionToken {
        SessionToken::default()
    }

    pub fn at(shard: ShardId, index: u64) -> SessionToken {
        let mut t = SessionToken::new();
        t.observe(shard, index);
        t
    }

    /// The position observed on `shard` (0: nothing).
    pub fn get(&self, shard: ShardId) -> u64 {
        self.positions.get(&shard).copied().unwrap_or(0)
    }

    /// Records that `index` of `shard` was observed; positions never go back.
    pub fn observe(&mut self, shard: ShardId, index: u64) {
        if index == 0 {
            return;
        }
        let p = self.positions.entry(shard).or_insert(0);
        *p = (*p).max(index);
    }

    /// The later of both tokens' positions, shard by shard.
    pub fn merge(&mut self, other: &SessionToken) {
        for (s, i) in &other.positions {
            self.observe(*s, *i);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ShardId, u64)> + '_ {
        self.positions.iter().map(|(s, i)| (*s, *i))
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.positions.is_empty() {
            return f.write_str("0");
        }
        if self.positions.len() == 1
            && let Some(i) = self.positions.get(&0)
        {
            return write!(f, "{i}");
        }
        for (n, (s, i)) in self.positions.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{s}:{i}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadToken(pub String);

impl fmt::Display for BadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad session token {:?}: expected INDEX or SHARD:INDEX,… (as a response's Rcluster-Token)",
            self.0
        )
    }
}

impl std::error::Error for BadToken {}

impl FromStr for SessionToken {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<SessionToken, BadToken> {
        let bad = || BadToken(s.chars().take(64).collect());
        let s = s.trim();
        if let Ok(i) = s.parse::<u64>() {
            return Ok(SessionToken::at(0, i));
        }
        let mut t = SessionToken::new();
        for (n, part) in s.split(',').enumerate() {
            if n >= MAX_TOKEN_SHARDS {
                return Err(bad());
            }
            let (shard, index) = part.trim().split_once(':').ok_or_else(bad)?;
            let shard: ShardId = shard.parse().map_err(|_| bad())?;
            let index: u64 = index.parse().map_err(|_| bad())?;
            t.observe(shard, index);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shard_zero_alone_is_a_plain_index() {
        assert_eq!(SessionToken::at(0, 17).to_string(), "17");
        assert_eq!("17".parse::<SessionToken>().unwrap().get(0), 17);
        assert_eq!(SessionToken::new().to_string(), "0");
        assert!("0".parse::<SessionToken>().unwrap().is_empty());
    }

    #[test]
    fn shards_merge_position_by_position() {
        let mut a: SessionToken = "0:5,2:9".parse().unwrap();
        let b: SessionToken = "0:7,1:3,2:4".parse().unwrap();
        a.merge(&b);
        assert_eq!(a.to_string(), "0:7,1:3,2:9");
        assert_eq!(a.get(3), 0);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "x", "1:", ":2", "1:2,", "-1", "1:2:3", "a:1"] {
            assert!(bad.parse::<SessionToken>().is_err(), "{bad:?}");
        }
        let many = (0..=MAX_TOKEN_SHARDS)
            .map(|i| format!("{i}:1"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(many.parse::<SessionToken>().is_err());
    }

    proptest! {
        #[test]
        fn text_round_trips(pos in prop::collection::btree_map(0u32..50, 1u64..u64::MAX, 0..6)) {
            let mut t = SessionToken::new();
            for (s, i) in &pos {
                t.observe(*s, *i);
            }
            let back: SessionToken = t.to_string().parse().unwrap();
            prop_assert_eq!(back, t);
        }
    }
}
