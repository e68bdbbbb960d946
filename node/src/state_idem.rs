//! The state's idempotency keys: stored as entries apply, forgotten as the primary decides.

use super::{IDEM_FORGET_BATCH, Idem, IdemRecord, State};

impl State {
    pub fn idempotent_result(&self, key: &str) -> Option<&Idem> {
        self.idem.get(key)
    }

    /// Stores an idempotency key's record. Records come in log order, so the queue stays sorted.
    pub(crate) fn remember(&mut self, key: &str, rec: IdemRecord) {
        let idem = Idem::new(key, &rec);
        self.idem.insert(idem.clone());
        self.idem_order.push_back(idem);
    }

    /// Whether a queue element is still its key's current record (not stored again later, nor
    /// dropped with its slot).
    fn idem_live(&self, queued: &Idem) -> bool {
        self.idem
            .get(queued.key())
            .is_some_and(|current| current.same(queued))
    }

    /// The primary's decision: the index below which idempotency keys are to be forgotten (those
    /// stored more than `ttl_ms` before `now_ms`, then the oldest beyond `max_keys`), at most about
    /// [`IDEM_FORGET_BATCH`] keys at a time; `None` when nothing is due.
    pub fn idem_forget_below(&self, now_ms: u64, ttl_ms: u64, max_keys: usize) -> Option<u64> {
        let horizon = now_ms.saturating_sub(ttl_ms);
        let mut live = self.idem.len();
        let mut below = None;
        let mut forgotten = 0;
        // Stale elements count too, so one decision walks a bounded part of the queue.
        for (visited, queued) in self.idem_order.iter().enumerate() {
            if !self.idem_live(queued) {
                continue;
            }
            let (index, ts_ms) = (queued.index(), queued.ts_ms());
            // Keys of one entry (an import) go together.
            let same_entry = below == Some(index + 1);
            if !same_entry
                && (forgotten >= IDEM_FORGET_BATCH
                    || visited >= 4 * IDEM_FORGET_BATCH
                    || (ts_ms >= horizon && live <= max_keys))
            {
                break;
            }
            below = Some(index + 1);
            live -= 1;
            forgotten += 1;
        }
        below
    }

    /// Applies [`Op::ForgetIdem`]: removes the keys stored by entries before `below_index`.
    pub(crate) fn forget_idem_below(&mut self, below_index: u64) -> u64 {
        let mut count = 0;
        while let Some(queued) = self.idem_order.front().cloned() {
            if queued.index() >= below_index {
                break;
            }
            self.idem_order.pop_front();
            if self.idem_live(&queued) {
                self.idem.remove(queued.key());
                count += 1;
            }
        }
        count
    }

    /// The queue rebuilt from the map after a snapshot was loaded: by index, then key.
    pub(crate) fn rebuild_idem_order(&mut self) {
        let mut order: Vec<(u64, Idem)> =
            self.idem.iter().map(|i| (i.index(), i.clone())).collect();
        order.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key().cmp(b.1.key())));
        self.idem_order = order.into_iter().map(|(_, i)| i).collect();
    }
}
