//! What the playground prints: one line per decision or event, and a status table redrawn about
//! once a second. On a terminal the table stays at the bottom and log lines scroll above it;
//! otherwise it is printed only when a node's role, term or readiness changes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::coordinator::{Plan, Source};
use crate::failover::{Action, Coordinator, SwitchoverOutcome, WaitReason};

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub url: String,
    pub pid: Option<u32>,
    pub role: String,
    pub term: Option<u64>,
    pub applied: Option<u64>,
    pub lag: Option<u64>,
    pub ready: bool,
    pub restarts: u64,
}

pub struct Ui {
    quiet: bool,
    tty: bool,
    /// Lines of the table currently on screen (terminal mode).
    drawn: usize,
    last_table: String,
    /// The (role, term, ready) summary last printed (non-terminal mode).
    last_summary: String,
    last_draw: Option<Instant>,
}

const REDRAW: Duration = Duration::from_secs(1);

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        Ui {
            quiet,
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
            last_table: String::new(),
            last_summary: String::new(),
            last_draw: None,
        }
    }

    /// Prints a log line (above the table on a terminal).
    pub fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = writeln!(out, "{text}");
        if self.drawn > 0 {
            let _ = write!(out, "{}", self.last_table);
        }
        let _ = out.flush();
    }

    /// Redraws the table when it is due.
    pub fn table(&mut self, header: &str, rows: &[Row], now: Instant) {
        if self.quiet {
            return;
        }
        let table = render(header, rows);
        if !self.tty {
            let summary: Vec<String> = rows
                .iter()
                .map(|r| format!("{}:{}:{:?}:{}", r.name, r.role, r.term, r.ready))
                .collect();
            let summary = format!("{header}|{}", summary.join(","));
            if summary != self.last_summary {
                self.last_summary = summary;
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{table}");
                let _ = out.flush();
            }
            return;
        }
        if self.last_draw.is_some_and(|t| now - t < REDRAW) && table == self.last_table {
            return;
        }
        self.last_draw = Some(now);
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = write!(out, "{table}");
        let _ = out.flush();
        self.drawn = table.lines().count();
        self.last_table = table;
    }
}

pub fn render(header: &str, rows: &[Row]) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut lines = vec![
        header.to_string(),
        format!(
            "{:<5} {:<23} {:>7} {:<10} {:>5} {:>9} {:>6} {:<5} {:>8}",
            "NODE", "URL", "PID", "ROLE", "TERM", "APPLIED", "LAG", "READY", "RESTARTS"
        ),
    ];
    for r in rows {
        lines.push(format!(
            "{:<5} {:<23} {:>7} {:<10} {:>5} {:>9} {:>6} {:<5} {:>8}",
            r.name,
            r.url,
            r.pid.map_or("-".to_string(), |p| p.to_string()),
            r.role,
            opt(r.term),
            opt(r.applied),
            opt(r.lag),
            if r.ready { "yes" } else { "no" },
            r.restarts
        ));
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// `HH:MM:SS.mmm` (UTC) of a time in ms since the epoch.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// A decision in words: `bump term to 3; fence n2,n3 (term 3)`.
pub fn describe(actions: &[Action]) -> String {
    let parts: Vec<String> = actions.iter().map(describe_one).collect();
    parts.join("; ")
}

fn describe_one(a: &Action) -> String {
    match a {
        Action::BumpTerm { to } => format!("bump term to {to}"),
        Action::BeginSwitchover { from, to, term, .. } => {
            format!("begin switchover {from} -> {to} (term {term})")
        }
        Action::Fence { nodes, term } => format!("fence {} (term {term})", nodes.join(",")),
        Action::Promote { node, term } => format!("promote {node} (term {term})"),
        Action::Follow {
            node,
            primary,
            term,
        } => format!("{node} follows {primary} (term {term})"),
        Action::ChangeMembers { members, term, .. } => {
            format!("members {} (term {term})", members.join(","))
        }
        Action::MembersCommitted => "member list committed".to_string(),
        Action::Wait { reason } => format!("wait: {reason}"),
        Action::ReportPossibleLoss {
            promoted,
            longest,
            entries,
        } => format!(
            "lossy promotion of {promoted}: {} entries of {} may be lost",
            entries.map_or("an unknown number of".to_string(), |e| e.to_string()),
            longest.as_deref().unwrap_or("an unreachable member")
        ),
    }
}

/// A line about a switchover someone asked for (or one given up) in this step, if any.
pub fn request_note(plan: &Plan, record: &Coordinator) -> Option<String> {
    if let SwitchoverOutcome::Abandoned(problem) = &plan.switchover {
        return Some(format!("switchover abandoned: {problem}"));
    }
    let req = plan.request.as_ref()?;
    let target = req.target.as_deref().unwrap_or("the most advanced replica");
    let primary = record.primary.as_deref().unwrap_or("the primary");
    match &plan.switchover {
        SwitchoverOutcome::Started { from, to } if req.source == Source::ScaleDown => Some(
            format!("{from} leaves the member list: switchover to {to} first"),
        ),
        SwitchoverOutcome::Started { .. } => {
            Some(format!("switchover requested on {primary} to {target}"))
        }
        SwitchoverOutcome::Done { primary } => Some(format!(
            "switchover request: {primary} is already the primary (term {})",
            record.term
        )),
        SwitchoverOutcome::Rejected(problem) => {
            Some(format!("switchover to {target} rejected: {problem}"))
        }
        SwitchoverOutcome::Deferred => Some(format!(
            "switchover to {target} waits: there is no healthy primary to hand over from"
        )),
        _ => None,
    }
}

/// What identifies a decision for de-duplication in the log: the actions without the countdown
/// of the detection window, which changes on every probe.
pub fn signature(actions: &[Action]) -> String {
    let stable: Vec<Action> = actions
        .iter()
        .map(|a| match a {
            Action::Wait {
                reason: WaitReason::WithinDetectionWindow { primary, .. },
            } => Action::Wait {
                reason: WaitReason::WithinDetectionWindow {
                    primary: primary.clone(),
                    remaining_ms: 0,
                },
            },
            other => other.clone(),
        })
        .collect();
    serde_json::to_string(&stable).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_read_as_sentences() {
        let actions = vec![
            Action::BumpTerm { to: 3 },
            Action::Fence {
                nodes: vec!["n2".into(), "n3".into()],
                term: 3,
            },
        ];
        assert_eq!(describe(&actions), "bump term to 3; fence n2,n3 (term 3)");
        let wait = |ms| {
            vec![Action::Wait {
                reason: WaitReason::WithinDetectionWindow {
                    primary: "n1".into(),
                    remaining_ms: ms,
                },
            }]
        };
        assert_eq!(signature(&wait(100)), signature(&wait(900)));
        assert_ne!(signature(&wait(100)), signature(&actions));
        assert_eq!(clock(3_723_004), "01:02:03.004");
    }

    #[test]
    fn switchover_requests_read_as_sentences() {
        let record = Coordinator {
            term: 2,
            primary: Some("n1".into()),
            ..Coordinator::default()
        };
        let mut plan = Plan {
            actions: Vec::new(),
            switchover: SwitchoverOutcome::Deferred,
            failover_disabled: false,
            request: Some(crate::coordinator::Request {
                target: Some("n2".into()),
                source: Source::Node,
            }),
            clear: Vec::new(),
        };
        assert_eq!(
            request_note(&plan, &record).as_deref(),
            Some("switchover to n2 waits: there is no healthy primary to hand over from")
        );
        plan.switchover = SwitchoverOutcome::Started {
            from: "n1".into(),
            to: "n2".into(),
        };
        assert_eq!(
            request_note(&plan, &record).as_deref(),
            Some("switchover requested on n1 to n2")
        );
        plan.switchover = SwitchoverOutcome::Waiting;
        assert_eq!(request_note(&plan, &record), None);
        plan.request = None;
        plan.switchover =
            SwitchoverOutcome::Abandoned(crate::failover::SwitchoverProblem::NoCandidate);
        assert_eq!(
            request_note(&plan, &record).as_deref(),
            Some("switchover abandoned: no replica could take over")
        );
    }

    #[test]
    fn table_has_a_row_per_node() {
        let row = Row {
            name: "n1".into(),
            url: "http://127.0.0.1:7001".into(),
            pid: Some(42),
            role: "primary".into(),
            term: Some(1),
            applied: Some(10),
            lag: Some(0),
            ready: true,
            restarts: 0,
        };
        let t = render(
            "header",
            &[
                row.clone(),
                Row {
                    name: "n2".into(),
                    pid: None,
                    ..row
                },
            ],
        );
        assert_eq!(t.lines().count(), 4);
        assert!(
            t.lines()
                .nth(2)
                .unwrap()
                .starts_with("n1    http://127.0.0.1:7001")
        );
        assert!(t.contains("primary"));
    }
}
