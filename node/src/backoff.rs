//! Retry pacing for the long-running consumers (history, durable ingest), and when a
//! failure is worth a warning. A consumer interrupted once is routine in a cluster — a shard
//! changing hands deletes its ingest consumer, a JetStream stream elects a new leader — and
//! ops should not be paged by their logs for it; the same consumer failing again and again
//! is news.

use std::time::Duration;

/// Failures in a row logged at debug before they become warnings.
const QUIET_FAILURES: u32 = 3;
/// An attempt that ran this long before it failed was healthy: its failure starts a new
/// streak. (Not the time between failures: a consumer that loses its heartbeat fails every
/// 10–30 s for ever, and must warn.)
const HEALTHY_RUN: Duration = Duration::from_secs(120);

/// Exponential backoff that knows how long the current streak of failures is.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    delay: Duration,
    streak: u32,
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
        }
    }

    /// Records the failure of an attempt that ran for `ran_for`.
    pub fn failed_after(&mut self, ran_for: Duration) -> Retry {
        if ran_for >= HEALTHY_RUN {
            self.succeeded();
        }
        self.streak += 1;
        let after = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        Retry {
            after,
            loud: self.streak > QUIET_FAILURES,
        }
    }

    /// Work went through (a batch written, a chunk applied): the next failure starts a new
    /// streak.
    pub fn succeeded(&mut self) {
        self.delay = self.initial;
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIEF: Duration = Duration::from_secs(30);

    #[test]
    fn a_streak_grows_the_delay_and_turns_loud_after_three() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let retries: Vec<Retry> = (0..6).map(|_| b.failed_after(BRIEF)).collect();
        let delays: Vec<u128> = retries.iter().map(|r| r.after.as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        let loud: Vec<bool> = retries.iter().map(|r| r.loud).collect();
        assert_eq!(loud, [false, false, false, true, true, true]);
    }

    #[test]
    fn progress_or_a_long_healthy_run_starts_a_new_streak() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..5 {
            b.failed_after(BRIEF);
        }
        b.succeeded();
        let quiet = Retry {
            after: Duration::from_millis(100),
            loud: false,
        };
        assert_eq!(b.failed_after(BRIEF), quiet);
        for _ in 0..5 {
            b.failed_after(BRIEF);
        }
        assert_eq!(b.failed_after(Duration::from_secs(600)), quiet);
    }
}
