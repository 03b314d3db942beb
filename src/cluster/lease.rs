//! When a node may act on what it leased, pure: the rule every lease follows, tested without
//! NATS or a runtime. The shell ([`super::leases`]) does the compare-and-swap writes and
//! tells this table what happened, with the instant each write was *sent*.
//!
//! The bucket forgets a lease `ttl` after the write that last renewed it reached the NATS
//! server, which is after the node sent it. So a node that counts its lease valid until
//! `sent + ttl - margin` stops acting on it (stops writing) strictly before any other node
//! can take it, whatever the network did to the write: two owners never act at once, as
//! long as clocks run at the same rate (they are measured on each machine's monotonic
//! clock, never compared across machines).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// The bucket revision of the last successful write: the next renewal must match it.
    revision: u64,
    /// When that write was sent.
    sent: Instant,
}

/// The leases one node holds, and what their timing requires.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    /// How long the bucket keeps a lease after its last write.
    ttl: Duration,
    /// How long before the bucket could forget it the node stops acting on it.
    margin: Duration,
    /// By key.
    held: HashMap<String, Held>,
}

impl LeaseTable {
    /// A table for leases kept `ttl` by the bucket. The node stops acting a fifth of the
    /// TTL before it could lapse, and renews every third of it, so two renewals can fail
    /// before the lease is given up.
    pub fn new(ttl: Duration) -> LeaseTable {
        LeaseTable {
            ttl,
            margin: ttl / 5,
            held: HashMap::new(),
        }
    }

    /// How often renewals are due.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// The write of `key` sent at `sent` succeeded with `revision` (taken or renewed).
    pub fn written(&mut self, key: &str, revision: u64, sent: Instant) {
        self.held.insert(key.to_owned(), Held { revision, sent });
    }

    /// The revision the next write of `key` must match, if this node holds it.
    pub fn revision(&self, key: &str) -> Option<u64> {
        self.held.get(key).map(|held| held.revision)
    }

    /// `key` is given up or was taken by another node.
    pub fn forget(&mut self, key: &str) {
        self.held.remove(key);
    }

    /// Whether this node may act on `key` at `now`.
    pub fn holds(&self, key: &str, now: Instant) -> bool {
        self.held
            .get(key)
            .is_some_and(|held| now < self.valid_until(held))
    }

    /// The leases to renew at `now`, with the revision each renewal must match: those whose
    /// last write is a third of the TTL old, and still valid.
    pub fn due(&self, now: Instant) -> Vec<(String, u64)> {
        let every = self.renew_every();
        let mut due: Vec<(String, u64)> = self
            .held
            .iter()
            .filter(|(_, held)| now >= held.sent + every && now < self.valid_until(held))
            .map(|(key, held)| (key.clone(), held.revision))
            .collect();
        due.sort();
        due
    }

    /// The leases that lapsed at `now` (renewals kept failing): taken out of the table; the
    /// node must stop acting on each at once.
    pub fn lapse(&mut self, now: Instant) -> Vec<String> {
        let mut lapsed: Vec<String> = self
            .held
            .iter()
            .filter(|(_, held)| now >= self.valid_until(held))
            .map(|(key, _)| key.clone())
            .collect();
        lapsed.sort();
        for key in &lapsed {
            self.held.remove(key);
        }
        lapsed
    }

    /// Every lease held.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.held.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The last instant the node may act on a lease.
    fn valid_until(&self, held: &Held) -> Instant {
        held.sent + self.ttl - self.margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: Duration = Duration::from_millis(3000);

    #[test]
    fn a_lease_is_renewed_at_a_third_and_given_up_before_it_can_lapse() {
        let t0 = Instant::now();
        let mut table = LeaseTable::new(TTL);
        table.written("race.r1", 7, t0);
        assert!(table.holds("race.r1", t0));
        assert!(table.due(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(
            table.due(t0 + Duration::from_millis(1000)),
            vec![("race.r1".to_owned(), 7)]
        );
        // Renewals fail: held until ttl - ttl/5, then lapsed and forgotten.
        assert!(table.holds("race.r1", t0 + Duration::from_millis(2399)));
        assert!(!table.holds("race.r1", t0 + Duration::from_millis(2400)));
        assert!(table.lapse(t0 + Duration::from_millis(2399)).is_empty());
        assert_eq!(
            table.lapse(t0 + Duration::from_millis(2400)),
            vec!["race.r1"]
        );
        assert!(table.keys().is_empty());
        // A renewal moves the window on and carries the new revision.
        table.written("race.r2", 1, t0);
        table.written("race.r2", 2, t0 + Duration::from_millis(1000));
        assert!(table.holds("race.r2", t0 + Duration::from_millis(3000)));
        assert_eq!(
            table.due(t0 + Duration::from_millis(2000)),
            vec![("race.r2".to_owned(), 2)]
        );
        table.forget("race.r2");
        assert!(!table.holds("race.r2", t0 + Duration::from_millis(1001)));
    }

    proptest! {
        /// Whatever the writes and the instants asked: a lease is never held at or past
        /// `ttl` after the write that last kept it was sent (when the bucket may already
        /// have forgotten it), and is always due for renewal before it stops being held.
        #[test]
        fn never_held_when_the_bucket_may_have_forgotten(
            writes in proptest::collection::vec(0u64..10_000, 1..20),
            probe in 0u64..20_000,
        ) {
            let t0 = Instant::now();
            let mut table = LeaseTable::new(TTL);
            let mut sorted = writes.clone();
            sorted.sort();
            for (revision, at) in sorted.iter().enumerate() {
                table.written("k", revision as u64, t0 + Duration::from_millis(*at));
            }
            let last = *sorted.last().unwrap_or(&0);
            let now = t0 + Duration::from_millis(probe);
            if table.holds("k", now) {
                prop_assert!(probe < last + TTL.as_millis() as u64);
            }
            let due_at = t0 + Duration::from_millis(last) + table.renew_every();
            prop_assert!(table.holds("k", due_at), "renewal due while still held");
            prop_assert_eq!(table.due(due_at).len(), 1);
        }
    }
}
