//! Which log index each write-acknowledgement level has reached. Pure: the primary feeds it the
//! durable indexes it knows and gets back a commit index.

/// Write acknowledgement levels: one vocabulary for the node, the client and the operator.
pub use rcluster_client::types::Ack as AckLevel;

/// The highest index durable at `ack` level, given the primary's own durable index and each other
/// member's durable index in the current term (0 when unknown).
///
/// Only entries of the current term are counted (`term_start` is the index of the term's first
/// entry, the no-op a new primary writes): an older-term entry held by a majority can still be
/// overwritten by a node with a newer conflicting entry (Raft's figure 8), so it counts as committed
/// only once the no-op after it is.
pub fn commit_index(ack: AckLevel, own: u64, others: &[u64], term_start: u64) -> u64 {
    let raw = if others.is_empty() {
        own
    } else {
        match ack {
            AckLevel::Async => own,
            AckLevel::One => own.min(others.iter().copied().max().unwrap_or(0)),
            AckLevel::Quorum => {
                let mut all: Vec<u64> = others.to_vec();
                all.push(own);
                all.sort_unstable_by(|a, b| b.cmp(a));
                all[all.len() / 2]
            }
            AckLevel::All => own.min(others.iter().copied().min().unwrap_or(0)),
        }
    };
    if raw >= term_start { raw } else { 0 }
}

/// Members needed for a majority.
pub fn quorum(members: usize) -> usize {
    members / 2 + 1
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
            assert_eq!(commit_index(ack, 10, &[7, 4], 1), want, "{ack:?}");
        }
        // one replica stopped: quorum still advances, all does not
        assert_eq!(commit_index(Quorum, 10, &[10, 0], 1), 10);
        assert_eq!(commit_index(All, 10, &[10, 0], 1), 0);
        assert_eq!(commit_index(One, 10, &[0, 0], 1), 0);
    }

    #[test]
    fn quorum_counts_the_primary_and_needs_a_majority() {
        assert_eq!(
            commit_index(Quorum, 9, &[9, 0, 0, 0], 1),
            0,
            "2 of 5 is not a majority"
        );
        assert_eq!(commit_index(Quorum, 9, &[9, 5, 0, 0], 1), 5);
        assert_eq!(
            commit_index(Quorum, 3, &[9, 9], 1),
            9,
            "two replicas are a majority of 3"
        );
        assert_eq!(commit_index(Quorum, 9, &[0], 1), 0, "2 members need both");
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(2), 2);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(5), 3);
    }

    #[test]
    fn single_member_commits_on_local_durability() {
        for ack in AckLevel::ALL {
            assert_eq!(commit_index(ack, 5, &[], 1), 5);
        }
    }

    #[test]
    fn older_term_entries_wait_for_the_new_terms_first_entry() {
        // the term started at 20; a majority holds only up to 15
        assert_eq!(commit_index(Quorum, 25, &[15, 15], 20), 0);
        assert_eq!(commit_index(Quorum, 25, &[21, 15], 20), 21);
    }
}
