//! The terms of a log, kept as runs so that `term_at` needs no disk read.

/// The terms of a log: runs of consecutive entries with one term, plus the (index, term) of the
/// snapshot the log continues from. Terms change rarely, so this stays tiny.
#[derive(Debug, Clone, Default)]
pub struct TermRuns {
    base_index: u64,
    base_term: u64,
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    pub fn new(base_index: u64, base_term: u64) -> Self {
        TermRuns {
            base_index,
            base_term,
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, index: u64, term: u64) {
        if self.runs.last().is_none_or(|(_, t)| *t != term) {
            self.runs.push((index, term));
        }
    }

    /// The term of the entry at `index`, if this log knows it (0 for index 0).
    pub fn term_at(&self, index: u64, last_index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        if index > last_index || index < self.base_index {
            return None;
        }
        match self.runs.iter().rev().find(|(first, _)| *first <= index) {
            Some((_, t)) => Some(*t),
            None if index == self.base_index => Some(self.base_term),
            None => None,
        }
    }

    /// Forgets entries from `index` on.
    pub fn truncate(&mut self, index: u64) {
        self.runs.retain(|(first, _)| *first < index);
    }

    /// The first index of the run holding `index`: where a primary should retry after a conflict.
    pub fn run_start(&self, index: u64) -> u64 {
        self.runs
            .iter()
            .rev()
            .find(|(first, _)| *first <= index)
            .map_or(self.base_index + 1, |(first, _)| *first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_runs_answer_by_index() {
        let mut t = TermRuns::new(10, 2);
        for i in 11..=15 {
            t.push(i, 2);
        }
        for i in 16..=20 {
            t.push(i, 3);
        }
        assert_eq!(t.term_at(9, 20), None, "compacted");
        assert_eq!(t.term_at(10, 20), Some(2));
        assert_eq!(t.term_at(15, 20), Some(2));
        assert_eq!(t.term_at(16, 20), Some(3));
        assert_eq!(t.term_at(21, 20), None);
        assert_eq!(t.run_start(18), 16);
        t.truncate(16);
        assert_eq!(t.term_at(15, 15), Some(2));
        t.push(16, 4);
        assert_eq!(t.term_at(16, 16), Some(4));
    }

    #[test]
    fn a_fresh_log_has_term_zero_at_index_zero() {
        let t = TermRuns::new(0, 0);
        assert_eq!(t.term_at(0, 0), Some(0));
        assert_eq!(t.term_at(1, 0), None);
    }
}
