//! The restart budget: how often a supervisor may restart the same child before it gives
//! up, so a child that fails on every start (bad state, a bug on recovery) cannot spin.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Counts recent restarts per child within a sliding window.
pub struct RestartBudget<K> {
    /// Restarts allowed per window.
    budget: u32,
    /// The window.
    window: Duration,
    /// Restart times per child, oldest first.
    history: HashMap<K, VecDeque<Instant>>,
}

impl<K: Eq + Hash> RestartBudget<K> {
    /// A budget of `budget` restarts per `window` for each child.
    pub fn new(budget: u32, window: Duration) -> Self {
        RestartBudget {
            budget,
            window,
            history: HashMap::new(),
        }
    }

    /// Records a restart of `child` at `now` if the budget allows it.
    pub fn allow(&mut self, child: K, now: Instant) -> bool {
        let times = self.history.entry(child).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.budget as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_then_recovers_after_the_window() {
        let mut b = RestartBudget::new(2, Duration::from_secs(10));
        let t = Instant::now();
        assert!(b.allow("a", t));
        assert!(b.allow("a", t + Duration::from_secs(1)));
        assert!(!b.allow("a", t + Duration::from_secs(2)));
        assert!(
            b.allow("b", t + Duration::from_secs(2)),
            "budgets are per child"
        );
        assert!(b.allow("a", t + Duration::from_secs(11)));
    }
}
