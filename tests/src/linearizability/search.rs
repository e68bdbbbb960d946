//! The per-key search: Lowe's just-in-time linearization over a linked list of call and return
//! events, with a cache of visited (linearized set, state) pairs.

use std::collections::HashSet;

use super::history::{INFINITY, Interner, Operation, Step};

/// One operation of a key's sub-history.
pub(super) struct Op {
    /// Index in the whole history.
    pub index: usize,
    pub call: u64,
    /// `INFINITY` when it never returned.
    pub ret: u64,
    pub step: Step,
}

/// The register's version as far as the search knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Version {
    Exactly(u64),
    /// Written by an operation of unknown outcome: at least this much.
    AtLeast(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Register {
    /// `None`: absent (then the version is `Exactly(0)`).
    value: Option<u32>,
    version: Version,
}

const INITIAL: Register = Register {
    value: None,
    version: Version::Exactly(0),
};

pub(super) struct Search<'a> {
    pub ops: &'a [Op],
    /// Versions returned to some client: an unknown write cannot have produced them.
    pub known_versions: &'a HashSet<u64>,
}

pub(super) enum KeyResult {
    Ok,
    /// `prefix`: the longest linearization found (indices into `ops`); `stuck`: the operation
    /// whose return could not be passed after it.
    Stuck {
        prefix: Vec<usize>,
        stuck: usize,
    },
    OutOfSteps,
}

impl Search<'_> {
    /// Whether the register's current version could be `v`; the state with it fixed if so.
    fn version_is(&self, reg: Register, v: u64) -> Option<Register> {
        match reg.version {
            Version::Exactly(c) => (c == v).then_some(reg),
            Version::AtLeast(low) => {
                (v >= low && !self.known_versions.contains(&v)).then_some(Register {
                    version: Version::Exactly(v),
                    ..reg
                })
            }
        }
    }

    /// The register after `op`, or `None` when `op` cannot take effect in `reg`.
    fn apply(&self, reg: Register, step: Step) -> Option<Register> {
        // The lowest version the register can have; a new write's version exceeds it.
        let floor = match reg.version {
            Version::Exactly(v) | Version::AtLeast(v) => v,
        };
        let written = |value, version: Option<u64>, after: u64| match version {
            Some(v) => (v > after).then_some(Register {
                value: Some(value),
                version: Version::Exactly(v),
            }),
            None => Some(Register {
                value: Some(value),
                version: Version::AtLeast(after + 1),
            }),
        };
        match step {
            Step::Put { value, version } => written(value, version, floor),
            Step::Cas {
                expected,
                value,
                version,
            } => {
                let matched = if expected == 0 {
                    reg.value.is_none().then_some(reg)
                } else {
                    reg.value.and(self.version_is(reg, expected))
                };
                matched.and_then(|_| written(value, version, expected))
            }
            Step::CasMismatch { expected } => {
                let surely_equal = match (expected, reg.value, reg.version) {
                    (0, None, _) => true,
                    (0, Some(_), _) | (_, None, _) => false,
                    (e, Some(_), Version::Exactly(c)) => c == e,
                    (_, Some(_), Version::AtLeast(_)) => false,
                };
                (!surely_equal).then_some(reg)
            }
            Step::Get { found: None } => reg.value.is_none().then_some(reg),
            Step::Get {
                found: Some((value, version)),
            } => {
                if reg.value != Some(value) {
                    return None;
                }
                self.version_is(reg, version)
            }
        }
    }

    pub fn run(&self, budget: &mut u64) -> KeyResult {
        let mut events = Events::new(self.ops);
        let words = self.ops.len().div_ceil(64);
        let mut linearized = vec![0u64; words];
        let mut seen: HashSet<(Vec<u64>, Register)> = HashSet::new();
        // (call event, register before it)
        let mut stack: Vec<(usize, Register)> = Vec::new();
        let mut state = INITIAL;
        let mut longest: Option<(Vec<usize>, usize)> = None;
        let mut entry = events.first();
        loop {
            if *budget == 0 {
                return KeyResult::OutOfSteps;
            }
            *budget -= 1;
            let Some(e) = entry else {
                return KeyResult::Ok;
            };
            let op = events.op(e);
            if events.is_call(e) {
                if let Some(next) = self.apply(state, self.ops[op].step) {
                    set_bit(&mut linearized, op, true);
                    if seen.insert((linearized.clone(), next)) {
                        stack.push((e, state));
                        state = next;
                        events.lift(e);
                        entry = events.first();
                        continue;
                    }
                    set_bit(&mut linearized, op, false);
                }
                entry = events.next(e);
                continue;
            }
            // A return: every operation still in the list before it must take effect first.
            if self.ops[op].ret == INFINITY {
                // Only unknown operations remain; they may never have taken effect.
                return KeyResult::Ok;
            }
            if longest.as_ref().is_none_or(|(p, _)| stack.len() > p.len()) {
                let prefix = stack.iter().map(|&(call, _)| events.op(call)).collect();
                longest = Some((prefix, op));
            }
            let Some((call, before)) = stack.pop() else {
                let (prefix, stuck) = longest.unwrap_or((Vec::new(), op));
                return KeyResult::Stuck { prefix, stuck };
            };
            set_bit(&mut linearized, events.op(call), false);
            state = before;
            events.unlift(call);
            entry = events.next(call);
        }
    }
}

fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    let mask = 1u64 << (i % 64);
    if on {
        bits[i / 64] |= mask;
    } else {
        bits[i / 64] &= !mask;
    }
}

/// Call and return events sorted by time, in a doubly linked list that supports removing an
/// operation (both its events) and putting it back in reverse order (dancing links).
struct Events {
    /// Per event: the operation and whether it is the call.
    kind: Vec<(usize, bool)>,
    /// Per operation: its return event.
    ret_of: Vec<usize>,
    /// Links; index `len` is the head/tail sentinel.
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Events {
    fn new(ops: &[Op]) -> Self {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            // At equal times calls sort first: such operations count as concurrent.
            order.push((op.call, false, i));
            order.push((op.ret, true, i));
        }
        order.sort();
        let n = order.len();
        let mut ret_of = vec![0; ops.len()];
        let kind = order
            .iter()
            .enumerate()
            .map(|(e, &(_, is_return, op))| {
                if is_return {
                    ret_of[op] = e;
                }
                (op, !is_return)
            })
            .collect();
        let next = (0..=n).map(|i| if i == n { 0 } else { i + 1 }).collect();
        let prev = (0..=n).map(|i| if i == 0 { n } else { i - 1 }).collect();
        Events {
            kind,
            ret_of,
            next,
            prev,
        }
    }

    fn sentinel(&self) -> usize {
        self.kind.len()
    }

    fn first(&self) -> Option<usize> {
        self.next(self.sentinel())
    }

    fn next(&self, e: usize) -> Option<usize> {
        let n = self.next[e];
        (n != self.sentinel()).then_some(n)
    }

    fn op(&self, e: usize) -> usize {
        self.kind[e].0
    }

    fn is_call(&self, e: usize) -> bool {
        self.kind[e].1
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    fn lift(&mut self, call: usize) {
        let ret = self.ret_of[self.op(call)];
        self.unlink(call);
        self.unlink(ret);
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.ret_of[self.op(call)];
        self.relink(ret);
        self.relink(call);
    }
}

/// A counterexample in words: what was linearized, the state it left, and what got stuck.
pub(super) fn describe(
    history: &[Operation],
    values: &Interner,
    key: &str,
    prefix: &[usize],
    stuck: usize,
    search: &Search,
) -> String {
    let mut state = INITIAL;
    for &i in prefix {
        state = search.apply(state, search.ops[i].step).unwrap_or(state);
    }
    let shown = |i: usize| {
        let op = &history[search.ops[i].index];
        format!(
            "#{} client {} {:?} -> {:?} [{}, {}]",
            search.ops[i].index,
            op.client,
            op.kind,
            op.outcome,
            op.call,
            op.ret.map_or("never".to_string(), |r| r.to_string()),
        )
    };
    let value = state.value.map_or("absent".to_string(), |v| {
        format!("{:?}", values.names[v as usize])
    });
    let version = match state.version {
        Version::Exactly(v) => v.to_string(),
        Version::AtLeast(v) => format!(">= {v}"),
    };
    let mut text = format!("key {key:?} is not linearizable.\n");
    if prefix.is_empty() {
        text.push_str("No operation can take effect first.\n");
    } else {
        text.push_str("Longest linearization found:\n");
        for &i in prefix {
            text.push_str(&format!("  {}\n", shown(i)));
        }
    }
    text.push_str(&format!(
        "It leaves value {value}, version {version}; then this operation cannot take effect \
         before it returned:\n  {}",
        shown(stuck)
    ));
    text
}
