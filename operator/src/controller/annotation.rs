//! The `rcluster.dev/switchover-to` annotation: a planned switchover asked for on the
//! ReplicatedCluster, and when it has served its purpose.

use crate::coordinator::{Request, Source};
use crate::failover::SwitchoverOutcome;

/// Annotation on a ReplicatedCluster asking for a planned switchover to the named pod (empty:
/// the most advanced replica). The controller removes it when the switchover is done or refused.
pub const SWITCHOVER_ANNOTATION: &str = "rcluster.dev/switchover-to";

/// The switchover the annotation asks for.
pub fn request(annotation: Option<&str>) -> Option<Request> {
    annotation.map(|a| Request {
        target: Some(a.trim().to_string()).filter(|t| !t.is_empty()),
        source: Source::Annotation,
    })
}

/// Whether the switchover annotation has served its purpose: the switchover it asked for is done,
/// or it was refused or given up.
pub fn finished(annotation: Option<&str>, outcome: &SwitchoverOutcome) -> bool {
    let Some(a) = annotation.map(str::trim) else {
        return false;
    };
    match outcome {
        SwitchoverOutcome::Done { primary } => a.is_empty() || a == primary,
        SwitchoverOutcome::Rejected(_) | SwitchoverOutcome::Abandoned(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::SwitchoverProblem;

    #[test]
    fn the_annotation_names_the_target_and_empty_means_the_best_replica() {
        assert_eq!(
            request(Some(" demo-2 ")),
            Some(Request {
                target: Some("demo-2".into()),
                source: Source::Annotation
            })
        );
        assert_eq!(request(Some("")).unwrap().target, None);
        assert_eq!(request(None), None);
    }

    #[test]
    fn the_annotation_is_removed_only_when_its_switchover_ended() {
        let done = SwitchoverOutcome::Done {
            primary: "demo-1".into(),
        };
        assert!(finished(Some("demo-1"), &done));
        assert!(finished(Some(""), &done));
        assert!(!finished(Some("demo-2"), &done));
        assert!(!finished(None, &done));
        for pending in [
            SwitchoverOutcome::None,
            SwitchoverOutcome::Waiting,
            SwitchoverOutcome::Deferred,
            SwitchoverOutcome::Continuing {
                to: "demo-1".into(),
            },
        ] {
            assert!(!finished(Some("demo-1"), &pending), "{pending:?}");
        }
        let refused = SwitchoverOutcome::Rejected(SwitchoverProblem::NotAMember {
            node: "demo-7".into(),
        });
        assert!(finished(Some("demo-7"), &refused));
        let given_up = SwitchoverOutcome::Abandoned(SwitchoverProblem::NoCandidate);
        assert!(finished(Some("demo-1"), &given_up));
    }
}
