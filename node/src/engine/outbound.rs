//! What the engine asks of the log shipper, and what the shipper sends: plain messages, so the
//! engine never calls into the shipper.

use super::locked::Cached;

/// A message from the engine to the shipper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// This node leads `term`: ship the log to these peers (name, URL) while it does, and while it
    /// drains that term's log after a fence.
    Ship {
        term: u64,
        peers: Vec<(String, String)>,
    },
    /// This node follows the primary at `url` in `term`: say so, so it sends at once.
    Hello { url: String, term: u64 },
}

/// What to send to a replica next.
pub enum Work {
    /// These entries, which follow an entry of `prev_term`.
    Entries { prev_term: u64, items: Vec<Cached> },
    /// The entries it needs are gone from the log (or it is empty): a snapshot.
    Snapshot,
}
