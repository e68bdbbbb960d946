//! Which connections the node serves. Up to the connection limit, every one. At the limit, a
//! connection that has no request in service gives way to the newcomer: one still sending its
//! request head first (a slow client), else the one idle longest. When every connection has a
//! request in service, a small reserved lane still serves health probes and authenticated
//! internal calls, and anything else is answered `503 too_many_connections` at once.

use crate::connection::Shared;
use crate::fds;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub struct Admission {
    limit: usize,
    conns: Mutex<Registry>,
    reserved: Mutex<Lane>,
}

/// The reserved lane: connections still sending the head that decides whether they are served
/// (oldest first; a newcomer pushes out the oldest, so slow clients cannot fill the lane), and
/// how many it serves or is closing.
#[derive(Default)]
struct Lane {
    next_id: u64,
    waiting: VecDeque<(u64, Arc<Notify>)>,
    /// Reserved connections alive: waiting, served, or told to give way and not closed yet.
    open: usize,
    served: usize,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    live: HashMap<u64, Arc<Shared>>,
}

/// What to do with a new connection.
pub enum Admit {
    /// Serve it; the slot frees itself when dropped.
    Serve(Slot),
    /// Over the limit: serve it only if it is a probe or an internal call.
    Reserved(ReservedSlot),
    /// Answer 503 and close.
    Refuse,
}

impl Admission {
    pub fn new(limit: usize) -> Arc<Admission> {
        Arc::new(Admission {
            limit: limit.max(1),
            conns: Mutex::new(Registry::default()),
            reserved: Mutex::new(Lane::default()),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections served now (the reserved lane not included).
    pub fn live(&self) -> usize {
        self.conns.lock().unwrap().live.len()
    }

    pub fn admit(self: &Arc<Self>) -> Admit {
        let mut reg = self.conns.lock().unwrap();
        let n = reg.live.len();
        let admit =
            n < self.limit || (n < self.limit + fds::OVERSHOOT && evict_one(&reg.live).is_some());
        if admit {
            reg.next_id += 1;
            let id = reg.next_id;
            let shared = Shared::new();
            reg.live.insert(id, shared.clone());
            return Admit::Serve(Slot {
                admission: self.clone(),
                id,
                shared,
            });
        }
        drop(reg);
        let mut lane = self.reserved.lock().unwrap();
        if lane.open >= fds::RESERVED_CONNECTIONS + fds::OVERSHOOT {
            return Admit::Refuse;
        }
        if lane.waiting.len() + lane.served >= fds::RESERVED_CONNECTIONS {
            match lane.waiting.pop_front() {
                Some((_, oldest)) => oldest.notify_one(),
                None => return Admit::Refuse,
            }
        }
        lane.next_id += 1;
        lane.open += 1;
        let id = lane.next_id;
        let give_way = Arc::new(Notify::new());
        lane.waiting.push_back((id, give_way.clone()));
        Admit::Reserved(ReservedSlot {
            admission: self.clone(),
            id,
            give_way,
            served: false,
        })
    }
}

/// Asks the connection that waits longest without a request in service (slow heads before idle
/// keep-alives) to close; returns its id.
fn evict_one(live: &HashMap<u64, Arc<Shared>>) -> Option<u64> {
    let (id, shared) = live
        .iter()
        .filter_map(|(id, s)| s.evictable().map(|(head, since)| (id, s, head, since)))
        .min_by_key(|(id, _, head, since)| (!*head, *since, **id))
        .map(|(id, s, _, _)| (*id, s))?;
    shared.evict();
    Some(id)
}

pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    shared: Arc<Shared>,
}

impl Slot {
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.conns.lock().unwrap().live.remove(&self.id);
    }
}

pub struct ReservedSlot {
    admission: Arc<Admission>,
    id: u64,
    give_way: Arc<Notify>,
    served: bool,
}

impl ReservedSlot {
    /// Resolves when a newer connection took this one's place in the lane.
    pub async fn given_way(&self) {
        self.give_way.notified().await
    }

    /// Its head showed a probe or an internal call: it is served and no longer gives way.
    pub fn serve(&mut self) {
        let mut lane = self.admission.reserved.lock().unwrap();
        let before = lane.waiting.len();
        lane.waiting.retain(|(id, _)| *id != self.id);
        if lane.waiting.len() < before {
            lane.served += 1;
            self.served = true;
        }
    }
}

impl Drop for ReservedSlot {
    fn drop(&mut self) {
        let mut lane = self.admission.reserved.lock().unwrap();
        lane.open -= 1;
        if self.served {
            lane.served -= 1;
        } else {
            lane.waiting.retain(|(id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(a: &Arc<Admission>) -> Slot {
        match a.admit() {
            Admit::Serve(s) => s,
            _ => panic!("expected a slot"),
        }
    }

    #[test]
    fn at_the_limit_the_longest_waiting_free_connection_gives_way() {
        let a = Admission::new(2);
        let first = serve(&a);
        let second = serve(&a);
        // Both are fresh (receiving their first head): the older one is asked to go.
        let third = serve(&a);
        assert!(
            first.shared().evictable().is_none(),
            "eviction was requested"
        );
        assert!(second.shared().evictable().is_some());
        assert_eq!(a.live(), 3, "over the limit until the evicted one closes");
        drop(first);
        assert_eq!(a.live(), 2);
        drop((second, third));
        assert_eq!(a.live(), 0);
    }

    fn reserved(a: &Arc<Admission>) -> ReservedSlot {
        match a.admit() {
            Admit::Reserved(r) => r,
            _ => panic!("expected the reserved lane"),
        }
    }

    #[tokio::test]
    async fn busy_connections_stay_and_the_reserved_lane_pushes_out_its_oldest() {
        let a = Admission::new(1);
        let slot = serve(&a);
        let _busy = slot.shared().begin_request_for_test();
        let mut lane: Vec<_> = (0..fds::RESERVED_CONNECTIONS)
            .map(|_| reserved(&a))
            .collect();
        lane[1].serve();
        // The lane is full: a newcomer pushes out the oldest connection still sending its head.
        let newest = reserved(&a);
        lane[0].given_way().await;
        let pushed = lane.remove(0);
        // Until the pushed-out ones close, the lane may hold a few more, never unboundedly many.
        let mut extra = vec![pushed, newest];
        while let Admit::Reserved(r) = a.admit() {
            extra.push(r);
        }
        assert_eq!(
            lane.len() + extra.len(),
            fds::RESERVED_CONNECTIONS + fds::OVERSHOOT
        );
        drop(extra);
        assert!(matches!(a.admit(), Admit::Reserved(_)));
        assert!(
            slot.shared().evictable().is_none(),
            "a busy connection stays"
        );
    }
}
