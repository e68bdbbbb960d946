//! Which members must keep a running node (a pod, a process) while the member list changes.

use std::collections::BTreeSet;

use crate::failover::Coordinator;

/// Every desired member; every member of the list in force and of an uncommitted change (one may
/// hold the only copy of acknowledged entries: it goes once the change that removes it is
/// committed); the primary (it hands over first); and while there is no primary, every member
/// that runs now (nothing shrinks during an election).
pub fn keep_running<'a>(
    desired: &'a [String],
    record: &'a Coordinator,
    running: &'a [String],
) -> BTreeSet<&'a str> {
    let listed = record
        .members
        .iter()
        .chain(record.previous_members.iter().flatten())
        .chain(record.primary.iter());
    let mut keep: BTreeSet<&str> = desired.iter().chain(listed).map(String::as_str).collect();
    if record.primary.is_none() {
        keep.extend(running.iter().map(String::as_str));
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    fn kept(desired: &[&str], record: &Coordinator, running: &[&str]) -> Vec<String> {
        let (desired, running) = (names(desired), names(running));
        keep_running(&desired, record, &running)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_member_goes_only_once_no_list_holds_it() {
        let mut record = Coordinator {
            term: 3,
            primary: Some("n1".into()),
            members: names(&["n1", "n2", "n3", "n4"]),
            previous_members: None,
            switchover: None,
        };
        // Scale-down asked, not recorded yet: n4 stays.
        assert_eq!(
            kept(&["n1", "n2", "n3"], &record, &[]),
            ["n1", "n2", "n3", "n4"]
        );
        // Recorded but not committed: n4 stays.
        record.previous_members = Some(record.members.clone());
        record.members.truncate(3);
        assert_eq!(
            kept(&["n1", "n2", "n3"], &record, &[]),
            ["n1", "n2", "n3", "n4"]
        );
        // Committed: n4 goes.
        record.previous_members = None;
        assert_eq!(
            kept(&["n1", "n2", "n3"], &record, &["n4"]),
            ["n1", "n2", "n3"]
        );
        // The primary stays until it handed over.
        record.primary = Some("n3".into());
        assert_eq!(kept(&["n1", "n2"], &record, &[]), ["n1", "n2", "n3"]);
        // No primary: whatever runs keeps running.
        record.primary = None;
        assert_eq!(kept(&["n1"], &record, &["n5"]), ["n1", "n2", "n3", "n5"]);
    }
}
