//! Log lines that a client can cause on demand (a refused call) are written at most once a
//! second per reason, each saying how many were left out since the last, so the log cannot
//! be flooded; the metric beside each stays exact.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often one reason may be logged.
const EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct LogLimiter {
    /// By reason: when its last line was written, and how many were left out since.
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl LogLimiter {
    /// `Some(left out since the last line)` when a line for `reason` may be written now.
    pub fn admit(&self, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match last.get_mut(reason) {
            Some((at, suppressed)) if now.duration_since(*at) < EVERY => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                *at = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                last.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_per_reason_counting_the_rest() {
        let limiter = LogLimiter::default();
        assert_eq!(limiter.admit("a"), Some(0));
        assert_eq!(limiter.admit("b"), Some(0), "reasons are limited apart");
        for _ in 0..5 {
            assert_eq!(limiter.admit("a"), None);
        }
        std::thread::sleep(EVERY);
        assert_eq!(limiter.admit("a"), Some(5));
        assert_eq!(limiter.admit("a"), None);
    }
}
