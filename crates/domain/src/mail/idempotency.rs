//! The idempotency window for envelopes (pure): an envelope's (correlation id, sequence
//! number) is processed once within the retention; a duplicate gets the first outcome.
//!
//! The window is derived state: the supervisor rebuilds it at start from the stored jobs
//! (each job records its origin and acceptance time), so it survives a restart without a
//! store of its own. Entries older than the retention are forgotten in arrival order.

use crate::time::UnixMillis;
use std::collections::{HashMap, VecDeque};

/// Identifies an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvelopeKey {
    /// The submitter's correlation id.
    pub correlation: String,
    /// The envelope's sequence number within it.
    pub sequence: u64,
}

/// Envelopes seen within the retention, with the outcome the first one got.
#[derive(Debug, Clone)]
pub struct IdempotencyWindow<T> {
    /// How long an envelope is remembered, in milliseconds.
    retention_ms: i64,
    /// Outcome and first-seen time by envelope.
    seen: HashMap<EnvelopeKey, (UnixMillis, T)>,
    /// First-seen order, for expiry without scanning the map.
    order: VecDeque<(UnixMillis, EnvelopeKey)>,
}

impl<T: Clone> IdempotencyWindow<T> {
    /// An empty window remembering envelopes for `retention_ms`.
    pub fn new(retention_ms: i64) -> Self {
        IdempotencyWindow {
            retention_ms,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The first outcome of `key` if it was seen within the retention at `now_ms`.
    pub fn check(&mut self, key: &EnvelopeKey, now_ms: UnixMillis) -> Option<T> {
        self.expire(now_ms);
        self.seen.get(key).map(|(_, outcome)| outcome.clone())
    }

    /// Remembers `key`'s outcome as of `at_ms` (the first outcome wins; later ones are
    /// ignored). Entries are expected in roughly increasing time; an older one (recovery
    /// reads jobs in id order) is still expired correctly because expiry checks each entry's
    /// own time.
    pub fn record(&mut self, key: EnvelopeKey, outcome: T, at_ms: UnixMillis) {
        if self.seen.contains_key(&key) {
            return;
        }
        self.seen.insert(key.clone(), (at_ms, outcome));
        self.order.push_back((at_ms, key));
    }

    /// Forgets envelopes first seen more than the retention before `now_ms`.
    pub fn expire(&mut self, now_ms: UnixMillis) {
        let horizon = now_ms.saturating_sub(self.retention_ms);
        while let Some((at, key)) = self.order.front() {
            if *at >= horizon {
                break;
            }
            if self.seen.get(key).is_some_and(|(seen_at, _)| seen_at == at) {
                self.seen.remove(key);
            }
            self.order.pop_front();
        }
    }

    /// Envelopes remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(c: &str, s: u64) -> EnvelopeKey {
        EnvelopeKey {
            correlation: c.into(),
            sequence: s,
        }
    }

    #[test]
    fn a_duplicate_gets_the_first_outcome_until_the_retention_ends() {
        let mut w = IdempotencyWindow::new(1_000);
        assert_eq!(w.check(&key("a", 1), 0), None);
        w.record(key("a", 1), "first", 0);
        w.record(key("a", 1), "second", 10);
        assert_eq!(w.check(&key("a", 1), 500), Some("first"));
        assert_eq!(w.check(&key("a", 2), 500), None, "another sequence number");
        assert_eq!(w.check(&key("a", 1), 1_000), Some("first"));
        assert_eq!(w.check(&key("a", 1), 1_001), None, "retention over");
        assert!(w.is_empty());
    }

    proptest! {
        #[test]
        fn within_the_retention_the_first_outcome_always_wins(
            arrivals in proptest::collection::vec((0u64..5, 0i64..100, 0u32..100), 1..100),
        ) {
            let mut w = IdempotencyWindow::new(10_000);
            let mut first = std::collections::HashMap::new();
            let mut now = 0;
            for (seq, dt, outcome) in arrivals {
                now += dt;
                let k = key("c", seq);
                match w.check(&k, now) {
                    Some(o) => prop_assert_eq!(Some(&o), first.get(&seq)),
                    None => {
                        prop_assert!(!first.contains_key(&seq));
                        w.record(k, outcome, now);
                        first.insert(seq, outcome);
                    }
                }
            }
        }
    }
}
