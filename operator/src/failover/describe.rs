//! One-line explanations of waits and switchover problems, shared by both runtimes (the
//! playground's log and UI, the controller's status conditions and Events).

use std::fmt;

use super::types::{SwitchoverProblem, WaitReason};

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::InvalidInput { problem } => write!(f, "invalid cluster: {problem}"),
            WaitReason::WithinDetectionWindow {
                primary,
                remaining_ms,
            } => write!(
                f,
                "primary {primary} is failing; failover in {remaining_ms} ms unless it recovers"
            ),
            WaitReason::TooFewResponders { have, need } => write!(
                f,
                "{have} member(s) answered in the new term, {need} needed to be sure no acknowledged write is lost"
            ),
            WaitReason::OnlyEmptyLogs { longest_known } => write!(
                f,
                "every member that answers has an empty log, but a member was seen holding {longest_known} entries"
            ),
            WaitReason::FencePending { nodes } => write!(
                f,
                "waiting for {} to acknowledge the new term",
                nodes.join(", ")
            ),
            WaitReason::SwitchoverCatchingUp {
                target,
                target_index,
                primary_index,
            } => write!(
                f,
                "switchover target {target} is catching up ({target_index} of {primary_index} entries)"
            ),
            WaitReason::SwitchoverFencing { primary } => {
                write!(f, "waiting for {primary} to stop accepting writes")
            }
            WaitReason::MembersCommitting {
                term_start,
                committed,
            } => write!(
                f,
                "the new member list takes over once entry {term_start} is acknowledged (at {committed})"
            ),
        }
    }
}

impl fmt::Display for SwitchoverProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchoverProblem::InvalidInput { problem } => write!(f, "invalid cluster: {problem}"),
            SwitchoverProblem::NoHealthyPrimary => {
                f.write_str("there is no healthy primary to hand over from")
            }
            SwitchoverProblem::NotAMember { node } => write!(f, "{node} is not a member"),
            SwitchoverProblem::Unreachable { node } => write!(f, "{node} does not answer"),
            SwitchoverProblem::TargetNotFollowing { target } => {
                write!(f, "{target} does not replicate from the primary")
            }
            SwitchoverProblem::NoCandidate => f.write_str("no replica could take over"),
            SwitchoverProblem::OtherSwitchoverInProgress { to } => {
                write!(f, "a switchover to {to} is in progress")
            }
            SwitchoverProblem::TimedOut { target, behind } => {
                write!(
                    f,
                    "{target} did not catch up in time ({behind} entries behind)"
                )
            }
            SwitchoverProblem::PrimaryNotFenced { primary } => {
                write!(f, "{primary} still claims to be primary")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_and_problems_read_as_one_line() {
        let w = WaitReason::TooFewResponders { have: 1, need: 2 };
        assert_eq!(
            w.to_string(),
            "1 member(s) answered in the new term, 2 needed to be sure no acknowledged write is lost"
        );
        let p = SwitchoverProblem::TimedOut {
            target: "n2".into(),
            behind: 7,
        };
        assert_eq!(
            p.to_string(),
            "n2 did not catch up in time (7 entries behind)"
        );
    }
}
