//! One simulated data node: what `rcluster-node` does with its log, its term, its role and its
//! member list (node/src/engine/roles.rs and replica.rs), reduced to what the failover rules
//! depend on. Commands answer `false` where the node would refuse them.

use rcluster_operator::failover::Role;

/// The term a node led and the index of that term's first entry (its no-op). In memory only:
/// a restarted node forgets it, so it neither leads nor drains after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Led {
    pub term: u64,
    pub start: u64,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// Term of entry `i + 1`.
    pub log: Vec<u64>,
    pub term: u64,
    pub role: Role,
    pub following: Option<usize>,
    /// The process runs (a crashed node keeps its disk).
    pub alive: bool,
    /// The coordinator can reach it.
    pub visible: bool,
    /// The pod exists. A pod removed by a scale-down keeps its disk (the PVC stays).
    pub present: bool,
    /// Its pod is being deleted: probes say so until the process ends and a new pod starts it.
    pub going_away: bool,
    /// The member list it runs with: its flags until a promote or follow gives it another.
    pub members: Vec<String>,
    pub led: Option<Led>,
}

impl Node {
    /// A slot whose pod was never created.
    pub fn absent() -> Node {
        Node {
            log: Vec::new(),
            term: 0,
            role: Role::Fenced,
            following: None,
            alive: false,
            visible: false,
            present: false,
            going_away: false,
            members: Vec::new(),
            led: None,
        }
    }

    /// A node started on an empty disk: fenced in term 0, with the member list of its flags.
    pub fn fresh(members: Vec<String>) -> Node {
        Node {
            alive: true,
            visible: true,
            present: true,
            going_away: false,
            members,
            ..Node::absent()
        }
    }

    pub fn up(&self) -> bool {
        self.present && self.alive
    }

    pub fn reachable(&self) -> bool {
        self.up() && self.visible
    }

    /// The process starts again on its disk (`initial_role`): a former primary comes back
    /// fenced, since another node may have been promoted meanwhile; a replica resumes.
    pub fn restart(&mut self) {
        self.going_away = false;
        self.alive = true;
        self.visible = true;
        self.led = None;
        if self.role == Role::Primary {
            self.role = Role::Fenced;
            self.following = None;
        }
    }

    /// The term whose log this node ships (`still_ships`): the one it leads, and after a fence
    /// the one it led, draining to that term's replicas until it follows someone or leads again.
    pub fn ships(&self) -> Option<Led> {
        let led = self.led?;
        match self.role {
            Role::Primary if self.term == led.term => Some(led),
            Role::Fenced => Some(led),
            _ => None,
        }
    }

    pub fn fence(&mut self, term: u64) -> bool {
        if term < self.term {
            return false;
        }
        self.term = term;
        self.role = Role::Fenced;
        self.following = None;
        true
    }

    /// `me` is this node's name; `members` the list the command carries.
    pub fn promote(&mut self, me: &str, term: u64, members: &[String]) -> bool {
        if !members.iter().any(|m| m == me) || term < self.term {
            return false;
        }
        if self.role == Role::Primary && self.term == term {
            return same(&self.members, members);
        }
        if self.term == term && self.following.is_some() {
            return false;
        }
        self.members = members.to_vec();
        self.term = term;
        self.role = Role::Primary;
        self.following = None;
        // A new primary opens its term with an entry of its own (Raft §5.4.2).
        self.log.push(term);
        self.led = Some(Led {
            term,
            start: self.log.len() as u64,
        });
        true
    }

    pub fn follow(
        &mut self,
        me: &str,
        primary: (usize, &str),
        term: u64,
        members: &[String],
    ) -> bool {
        let listed = |name: &str| members.iter().any(|m| m == name);
        if primary.1 == me || !listed(me) || !listed(primary.1) || term < self.term {
            return false;
        }
        if self.term == term && self.role == Role::Primary {
            return false;
        }
        self.members = members.to_vec();
        self.term = term;
        self.role = Role::Replica;
        self.following = Some(primary.0);
        self.led = None;
        true
    }
}

/// Whether two member lists name the same members, in any order.
pub fn same(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}
