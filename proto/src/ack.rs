//! Write acknowledgement levels and the quorum arithmetic behind them: the node's commit rule and
//! the failover core's intersection rule are the two halves of one safety argument, so both read
//! their numbers from here.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Write acknowledgement level (`ack` query parameter, cluster default, CRD `replication.ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum AckLevel {
    /// Durable on the primary.
    Async,
    /// Durable on the primary and at least one replica.
    One,
    /// Durable on a majority of members.
    Quorum,
    /// Durable on every member.
    All,
}

impl AckLevel {
    pub const ALL: [AckLevel; 4] = [
        AckLevel::Async,
        AckLevel::One,
        AckLevel::Quorum,
        AckLevel::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AckLevel::Async => "async",
            AckLevel::One => "one",
            AckLevel::Quorum => "quorum",
            AckLevel::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<AckLevel> {
        AckLevel::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// How many members (the primary included) hold an entry before it is acknowledged.
    pub fn write_quorum(self, members: usize) -> usize {
        let q = match self {
            AckLevel::Async => 1,
            AckLevel::One => 2,
            AckLevel::Quorum => majority(members),
            AckLevel::All => members,
        };
        q.min(members)
    }

    /// How many members must answer a failover so that every acknowledged entry is among them:
    /// any `members - write_quorum + 1` members intersect every write quorum.
    pub fn failover_quorum(self, members: usize) -> usize {
        members - self.write_quorum(members) + 1
    }

    /// Whether a failover may lose writes acknowledged at this level (only `async` and `one`
    /// promise nothing across a failover).
    pub fn may_lose_writes(self) -> bool {
        matches!(self, AckLevel::Async | AckLevel::One)
    }
}

/// Members needed for a majority.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// The highest index durable at `ack` level, given the primary's own durable index and each other
/// member's durable index in the current term (0 when unknown).
///
/// Only entries of the current term are counted (`term_start` is the index of the term's first
/// entry, the no-op a new primary writes): an older-term entry held by a majority can still be
/// overwritten by a node with a newer conflicting entry (Raft's figure 8), so it counts as
/// committed only once the no-op after it is.
pub fn commit_index(
    ack: AckLevel,
    own: u64,
    others: impl IntoIterator<Item = u64, IntoIter: ExactSizeIterator>,
    term_start: u64,
) -> u64 {
    let others = others.into_iter();
    let raw = if others.len() == 0 {
        own
    } else {
        match ack {
            AckLevel::Async => own,
            AckLevel::One => own.min(others.max().unwrap_or(0)),
            AckLevel::Quorum => {
                // The median of every member's position, ours included. On the stack for up to
                // nine members: the primary asks several times per write.
                let mut small = [0u64; 9];
                let mut big = Vec::new();
                let all: &mut [u64] = if others.len() < small.len() {
                    let n = others.len();
                    for (slot, p) in small.iter_mut().zip(others.chain([own])) {
                        *slot = p;
                    }
                    &mut small[..=n]
                } else {
                    big.extend(others.chain([own]));
                    &mut big
                };
                all.sort_unstable_by(|a, b| b.cmp(a));
                all[all.len() / 2]
            }
            AckLevel::All => own.min(others.min().unwrap_or(0)),
        }
    };
    if raw >= term_start { raw } else { 0 }
}

impl fmt::Display for AckLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AckLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<AckLevel, String> {
        AckLevel::parse(s).ok_or_else(|| format!("expected async, one, quorum or all, got {s:?}"))
    }
}

/// The highest index acknowledged at each level (`commit_by_ack` of a primary's status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitByAck {
    #[serde(default, rename = "async")]
    pub async_: u64,
    #[serde(default)]
    pub one: u64,
    #[serde(default)]
    pub quorum: u64,
    #[serde(default)]
    pub all: u64,
}

impl CommitByAck {
    pub fn at(&self, ack: AckLevel) -> u64 {
        match ack {
            AckLevel::Async => self.async_,
            AckLevel::One => self.one,
            AckLevel::Quorum => self.quorum,
            AckLevel::All => self.all,
        }
    }

    /// Builds the table from a function of the level.
    pub fn from_fn(mut f: impl FnMut(AckLevel) -> u64) -> CommitByAck {
        CommitByAck {
            async_: f(AckLevel::Async),
            one: f(AckLevel::One),
            quorum: f(AckLevel::Quorum),
            all: f(AckLevel::All),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AckLevel::*;

    #[test]
    fn levels_on_three_members() {
        // primary at 10, replicas at 7 and 4
        let cases = [(Async, 10), (One, 7), (Quorum, 7), (All, 4)];
        for (ack, want) in cases {
            assert_eq!(commit_index(ack, 10, [7, 4], 1), want, "{ack:?}");
        }
        // one replica stopped: quorum still advances, all does not
        assert_eq!(commit_index(Quorum, 10, [10, 0], 1), 10);
        assert_eq!(commit_index(All, 10, [10, 0], 1), 0);
        assert_eq!(commit_index(One, 10, [0, 0], 1), 0);
    }

    #[test]
    fn quorum_counts_the_primary_and_needs_a_majority() {
        assert_eq!(
            commit_index(Quorum, 9, [9, 0, 0, 0], 1),
            0,
            "2 of 5 is not a majority"
        );
        assert_eq!(commit_index(Quorum, 9, [9, 5, 0, 0], 1), 5);
        assert_eq!(
            commit_index(Quorum, 3, [9, 9], 1),
            9,
            "two replicas are a majority of 3"
        );
        assert_eq!(commit_index(Quorum, 9, [0], 1), 0, "2 members need both");
        // Past the nine members counted on the stack.
        let mut others = [0; 10];
        others[..5].fill(9);
        assert_eq!(commit_index(Quorum, 9, others, 1), 9, "6 of 11");
        others[4] = 0;
        assert_eq!(commit_index(Quorum, 9, others, 1), 0, "5 of 11");
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn single_member_commits_on_local_durability() {
        for ack in AckLevel::ALL {
            assert_eq!(commit_index(ack, 5, [], 1), 5);
        }
    }

    #[test]
    fn older_term_entries_wait_for_the_new_terms_first_entry() {
        // the term started at 20; a majority holds only up to 15
        assert_eq!(commit_index(Quorum, 25, [15, 15], 20), 0);
        assert_eq!(commit_index(Quorum, 25, [21, 15], 20), 21);
    }

    /// The commit rule and the failover rule fit together: an entry counted as committed at a
    /// level is on `write_quorum` members, and any `failover_quorum` members include one of them.
    #[test]
    fn write_and_failover_quorums_intersect() {
        for members in 1..=9 {
            for ack in AckLevel::ALL {
                let w = ack.write_quorum(members);
                let f = ack.failover_quorum(members);
                assert!(w + f > members, "{ack} on {members}");
                // the commit rule needs exactly `w` durable copies
                let mut durable = vec![0u64; members - 1];
                for d in durable.iter_mut().take(w.saturating_sub(1)) {
                    *d = 5;
                }
                if ack != One || members > 1 {
                    assert_eq!(
                        commit_index(ack, 5, durable.iter().copied(), 1),
                        5,
                        "{ack} on {members}"
                    );
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for a in AckLevel::ALL {
            assert_eq!(a.as_str().parse::<AckLevel>(), Ok(a));
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        assert!("most".parse::<AckLevel>().is_err());
    }
}
