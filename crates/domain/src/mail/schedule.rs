//! The schedule of waiting jobs (pure): one time-ordered queue per transport, and how many
//! of that transport's jobs are awake. This, plus the directory entry, is all a waiting job
//! costs: no actor, no task, no timer of its own.

use super::job::TransportKind;
use super::message::JobId;
use crate::time::UnixMillis;
use std::collections::{BTreeSet, HashMap};

/// One transport's queue.
#[derive(Debug, Default)]
pub struct Lane {
    /// (due time, job), earliest first; a job may appear twice after a duplicate schedule,
    /// which the dispatcher skips because the directory says the job is not due.
    queue: BTreeSet<(UnixMillis, JobId)>,
    /// Jobs woken and not yet settled.
    pub in_flight: u32,
    /// No job of this lane is admitted before this (the breaker is open).
    pub blocked_until: Option<UnixMillis>,
}

/// Every lane.
#[derive(Debug, Default)]
pub struct Schedule {
    /// Lanes by transport.
    lanes: HashMap<TransportKind, Lane>,
}

impl Schedule {
    /// Queues `id` for `due_ms`.
    pub fn push(&mut self, transport: TransportKind, due_ms: UnixMillis, id: JobId) {
        self.lanes
            .entry(transport)
            .or_default()
            .queue
            .insert((due_ms, id));
    }

    /// The lane of `transport`.
    pub fn lane(&mut self, transport: TransportKind) -> &mut Lane {
        self.lanes.entry(transport).or_default()
    }

    /// Jobs queued in every lane.
    pub fn len(&self) -> usize {
        self.lanes.values().map(|l| l.queue.len()).sum()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the next wake-up is needed: the earliest due job of each lane that has room,
    /// but not before its breaker lets traffic through.
    pub fn next_wake(&self, limit: impl Fn(TransportKind) -> u32) -> Option<UnixMillis> {
        self.lanes
            .iter()
            .filter(|(kind, lane)| lane.in_flight < limit(**kind))
            .filter_map(|(_, lane)| {
                let (due, _) = lane.queue.first()?;
                Some(lane.blocked_until.map_or(*due, |b| b.max(*due)))
            })
            .min()
    }
}

impl Lane {
    /// The earliest job if it is due at `now_ms`, without removing it.
    pub fn peek_due(&self, now_ms: UnixMillis) -> Option<&JobId> {
        self.queue
            .first()
            .filter(|(due, _)| *due <= now_ms)
            .map(|(_, id)| id)
    }

    /// Removes and returns the earliest job.
    pub fn pop(&mut self) -> Option<JobId> {
        self.queue.pop_first().map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_wake_at_their_earliest_due_job_unless_blocked_or_full() {
        let mut s = Schedule::default();
        let (a, b) = (JobId::derive("a", 1, 0), JobId::derive("b", 1, 0));
        s.push(TransportKind::Smtp, 200, a.clone());
        s.push(TransportKind::Smtp, 100, b.clone());
        s.push(TransportKind::Http, 300, a.clone());
        assert_eq!(s.next_wake(|_| 1), Some(100));
        s.lane(TransportKind::Smtp).blocked_until = Some(1_000);
        assert_eq!(s.next_wake(|_| 1), Some(300));
        s.lane(TransportKind::Http).in_flight = 1;
        assert_eq!(s.next_wake(|_| 1), Some(1_000));
        assert_eq!(s.lane(TransportKind::Smtp).peek_due(150), Some(&b));
        assert_eq!(s.lane(TransportKind::Smtp).pop(), Some(b));
        assert_eq!(s.lane(TransportKind::Smtp).peek_due(150), None);
        assert_eq!(s.len(), 2);
    }
}
