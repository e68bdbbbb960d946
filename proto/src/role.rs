//! Roles a node reports and the coordinator reasons about.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Leads its shard and takes its writes.
    Primary,
    /// Follows a primary.
    Replica,
    /// Received a term from the coordinator and follows nobody yet: waits for promote or follow.
    Fenced,
    /// A node without a member list: accepts writes without replication. In a replicated cluster
    /// this counts as a claim to be primary.
    Standalone,
    /// A role this version does not know (a newer node), or none reported.
    #[default]
    #[serde(other)]
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Fenced => "fenced",
            Role::Standalone => "standalone",
            Role::Unknown => "unknown",
        }
    }

    /// Whether a node in this role accepts writes.
    pub fn claims_primary(self) -> bool {
        matches!(self, Role::Primary | Role::Standalone)
    }
}

/// A role from its wire name; a name this version does not know is `Unknown`, as when parsing a
/// status report.
impl From<&str> for Role {
    fn from(s: &str) -> Role {
        [Role::Primary, Role::Replica, Role::Fenced, Role::Standalone]
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or(Role::Unknown)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        for r in [Role::Primary, Role::Replica, Role::Fenced, Role::Standalone] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(text, format!("\"{r}\""));
            assert_eq!(serde_json::from_str::<Role>(&text).unwrap(), r);
        }
        assert_eq!(
            serde_json::from_str::<Role>("\"learner\"").unwrap(),
            Role::Unknown
        );
    }
}
