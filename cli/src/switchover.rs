//! `rcluster switchover [--to NAME]`: ask the primary for a planned switchover (the request is
//! recorded by the node and carried out by the failover coordinator: operator or playground),
//! then watch `/v1/status` until another node, the named one if any, is primary in a newer term.

use std::time::{Duration, Instant};

use serde_json::json;

use rcluster_client::{Client, Error, calls};

use crate::failure::Failure;
use crate::term;

/// Whether the switchover is done, given the primary a node reports now.
fn finished(old: Option<&str>, target: Option<&str>, now: Option<&str>) -> bool {
    match (now, target) {
        (Some(p), Some(t)) => p == t,
        (Some(p), None) => Some(p) != old,
        (None, _) => false,
    }
}

pub async fn run(
    client: &Client,
    to: Option<&str>,
    wait: Duration,
    json_out: bool,
) -> Result<(), Failure> {
    let before = client.status().await?;
    let old = before.primary.clone();
    if to.is_some() && to == old.as_deref() {
        return print(json_out, old.as_deref(), old.as_deref(), before.term, true);
    }
    client.execute(&calls::switchover(to)?).await?;
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        // Errors while the roles move are expected; only the deadline ends the wait.
        if let Ok(s) = client.status().await {
            let now = s.primary.clone();
            if s.term > before.term && finished(old.as_deref(), to, now.as_deref()) {
                return print(json_out, old.as_deref(), now.as_deref(), s.term, false);
            }
        }
        if Instant::now() >= deadline {
            return Err(Failure::Client(Error::Timeout(format!(
                "no new primary within {:.1} s (it was {}); the coordinator may have refused \
                 the switchover: see its decision log",
                wait.as_secs_f64(),
                old.as_deref().unwrap_or("unknown")
            ))));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

fn print(
    json_out: bool,
    from: Option<&str>,
    to: Option<&str>,
    term_no: u64,
    already: bool,
) -> Result<(), Failure> {
    if json_out {
        term::line(json!({"from": from, "to": to, "term": term_no}))
    } else if already {
        term::line(format!(
            "{} is already the primary (term {term_no})",
            to.unwrap_or("-")
        ))
    } else {
        term::line(format!(
            "switchover done: primary {} (was {}), term {term_no}",
            to.unwrap_or("-"),
            from.unwrap_or("-")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_when_the_target_or_anyone_new_leads() {
        assert!(finished(Some("n1"), Some("n3"), Some("n3")));
        assert!(!finished(Some("n1"), Some("n3"), Some("n2")));
        assert!(finished(Some("n1"), None, Some("n2")));
        assert!(!finished(Some("n1"), None, Some("n1")));
        assert!(!finished(Some("n1"), None, None));
    }
}
