//! Bounded retries with exponential backoff and jitter.
//!
//! Fleets boot at once: without jitter, a hundred nodes that failed together
//! retry together. Every retry here is bounded twice, by a count and by a
//! deadline, and a wait never sleeps past the deadline.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure, before jitter.
    pub first: Duration,
    /// No single wait is longer than this.
    pub max: Duration,
    /// Attempts in all, the first one included.
    pub attempts: u32,
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1-based): the doubled base,
    /// capped, then "equal jitter": half fixed, half random.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let base = self.first.saturating_mul(1 << exp).min(self.max);
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    /// After failed attempt `attempt`: sleeps and returns true when another
    /// attempt is allowed and its wait ends before `deadline`; else returns
    /// false at once.
    pub async fn wait(&self, attempt: u32, deadline: Instant) -> bool {
        if attempt >= self.attempts {
            return false;
        }
        let delay = self.delay(attempt);
        if Instant::now() + delay >= deadline {
            return false;
        }
        tracing::info!(attempt, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "retrying");
        tokio::time::sleep(delay).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff { first: Duration::from_secs(2), max: Duration::from_secs(30), attempts: 4 };

    #[test]
    fn delays_double_within_jitter_and_are_capped() {
        for _ in 0..200 {
            let d1 = B.delay(1);
            assert!(d1 >= Duration::from_secs(1) && d1 <= Duration::from_secs(2), "{d1:?}");
            let d3 = B.delay(3);
            assert!(d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs(8), "{d3:?}");
            let d9 = B.delay(9);
            assert!(d9 >= Duration::from_secs(15) && d9 <= Duration::from_secs(30), "{d9:?}");
        }
        let spread: std::collections::BTreeSet<Duration> = (0..50).map(|_| B.delay(2)).collect();
        assert!(spread.len() > 1, "no jitter: {spread:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_is_bounded_by_count_and_deadline() {
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(B.wait(1, far).await);
        assert!(B.wait(3, far).await);
        assert!(!B.wait(4, far).await, "a fifth attempt was allowed");
        let near = Instant::now() + Duration::from_millis(500);
        let before = Instant::now();
        assert!(!B.wait(1, near).await, "waited past the deadline");
        assert_eq!(Instant::now(), before, "slept although no attempt was left");
    }
}
