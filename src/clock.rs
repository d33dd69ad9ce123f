//! Time: the injected clock every room reads "now" from, and the one doubling back-off that
//! every retrying loop uses (the reconcile loop's error policy, throttled passes, a failing
//! tier's launches, the interruption feed).
//!
//! Must not: sleep; callers decide how to wait.

use crate::model::Millis;
use std::sync::Arc;
use std::time::Duration;

/// A source of "now" in epoch milliseconds. Tests inject their own.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    })
}

/// A doubling back-off: the first failure waits `first`, each further one twice as long, never
/// more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The wait after the `failures`-th consecutive failure (0 and 1 both wait `first`).
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// A failed reconcile pass or interruption poll: 1 s doubling to a minute (kube-rs's
/// `error_policy`). A failure never ends a loop; it only delays the next try.
pub const ERROR_POLICY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// The delay after `failures` consecutive failed passes or polls.
pub fn error_policy(failures: u32) -> Duration {
    ERROR_POLICY.after(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_doubles_from_its_first_wait_up_to_its_cap() {
        let backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(600));
        let waits: Vec<u64> = (0..=8).map(|n| backoff.after(n).as_secs()).collect();
        assert_eq!(waits, [10, 10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(backoff.after(u32::MAX), Duration::from_secs(600));
        assert_eq!(error_policy(1), Duration::from_secs(1));
        assert_eq!(error_policy(6), Duration::from_secs(32));
        assert_eq!(error_policy(7), Duration::from_secs(60));
    }
}
