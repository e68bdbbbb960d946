//! Read consistency levels (`consistency` query parameter).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Served by the primary after a quorum confirms it still leads its term.
    Linearizable,
    /// Any node, once it has applied the client's session token: read-your-writes, monotonic.
    Session,
    /// Any node, at once.
    Eventual,
}

impl Consistency {
    pub const ALL: [Consistency; 3] = [
        Consistency::Linearizable,
        Consistency::Session,
        Consistency::Eventual,
    ];

    pub fn parse(s: &str) -> Option<Consistency> {
        Consistency::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Session => "session",
            Consistency::Eventual => "eventual",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Consistency, String> {
        Consistency::parse(s)
            .ok_or_else(|| format!("expected linearizable, session or eventual, got {s:?}"))
    }
}
