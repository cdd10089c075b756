//! Retry pacing for the long-running consumers (history, durable ingest), and when a
//! failure is worth a warning. A consumer interrupted once is routine in a cluster — a shard
//! changing hands deletes its ingest consumer, a JetStream stream elects a new leader — and
//! ops should not be paged by their logs for it; the same consumer failing again and again
//! is news.

use std::time::{Duration, Instant};

/// Failures in a row logged at debug before they become warnings.
const QUIET_FAILURES: u32 = 3;
/// A failure this long after the previous one starts a new streak.
const STREAK_GAP: Duration = Duration::from_secs(30);

/// Exponential backoff that knows how long the current streak of failures is.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    delay: Duration,
    streak: u32,
    last_failure: Option<Instant>,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait this long before trying again.
    pub after: Duration,
    /// The streak is long enough to warn about.
    pub loud: bool,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            delay: initial,
            streak: 0,
            last_failure: None,
        }
    }

    /// Records a failure at `now`.
    pub fn failed_at(&mut self, now: Instant) -> Retry {
        if self
            .last_failure
            .is_some_and(|last| now.duration_since(last) > STREAK_GAP)
        {
            self.succeeded();
        }
        self.last_failure = Some(now);
        self.streak += 1;
        let after = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        Retry {
            after,
            loud: self.streak > QUIET_FAILURES,
        }
    }

    pub fn failed(&mut self) -> Retry {
        self.failed_at(Instant::now())
    }

    /// Work went through: the next failure starts a new streak.
    pub fn succeeded(&mut self) {
        self.delay = self.initial;
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_grows_the_delay_and_turns_loud_after_three() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let t = Instant::now();
        let retries: Vec<Retry> = (0..6)
            .map(|i| b.failed_at(t + Duration::from_millis(i)))
            .collect();
        let delays: Vec<u128> = retries.iter().map(|r| r.after.as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        let loud: Vec<bool> = retries.iter().map(|r| r.loud).collect();
        assert_eq!(loud, [false, false, false, true, true, true]);
    }

    #[test]
    fn success_or_a_long_quiet_time_starts_a_new_streak() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let t = Instant::now();
        for i in 0..5 {
            b.failed_at(t + Duration::from_millis(i));
        }
        b.succeeded();
        assert_eq!(
            b.failed_at(t + Duration::from_millis(10)),
            Retry {
                after: Duration::from_millis(100),
                loud: false
            }
        );
        for i in 0..5 {
            b.failed_at(t + Duration::from_millis(20 + i));
        }
        let later = b.failed_at(t + Duration::from_secs(60));
        assert_eq!(later.after, Duration::from_millis(100));
        assert!(!later.loud);
    }
}
