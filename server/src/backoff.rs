//! Pauses between attempts, in one place: exponential from a first pause up to a longest one,
//! optionally with jitter. Each place that tries again names its policy: a call sent on to
//! another node, a NATS request during a leader election, an LLM call that failed.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Retries made at once, before the first pause.
    pub immediate: u32,
    /// The first pause; each next one doubles it.
    pub first: Duration,
    /// The longest pause (before jitter).
    pub max: Duration,
    /// Scales each pause by 50–100 %, so that callers that failed together do not all come
    /// back together.
    pub jitter: bool,
}

impl Backoff {
    /// The pause before retry `retry` (1: the first retry): none for the immediate ones, then
    /// `first` × 2^k, at most `max`, scaled by the jitter.
    pub fn pause(&self, retry: u32) -> Duration {
        let Some(doublings) = retry.checked_sub(self.immediate + 1) else { return Duration::ZERO };
        let pause = self.first.saturating_mul(1u32 << doublings.min(16)).min(self.max);
        if self.jitter { pause.mul_f64(rand::random_range(0.5..=1.0)) } else { pause }
    }

    /// A new series of attempts under this policy.
    pub fn attempts(self) -> Attempts {
        Attempts { policy: self, retries: 0, started: Instant::now() }
    }
}

/// One series of attempts: how many retries so far, and since when.
#[derive(Debug)]
pub struct Attempts {
    policy: Backoff,
    retries: u32,
    started: Instant,
}

impl Attempts {
    /// The pause the next retry will wait (without jitter, what it is at most).
    pub fn next_pause(&self) -> Duration {
        Backoff { jitter: false, ..self.policy }.pause(self.retries + 1)
    }

    /// How long since the series started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits before the next retry.
    pub async fn wait(&mut self) {
        self.retries += 1;
        let pause = self.policy.pause(self.retries);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_longest_and_jitter_stays_within_half() {
        let policy =
            Backoff { immediate: 1, first: Duration::from_millis(50), max: Duration::from_millis(500), jitter: false };
        let pauses: Vec<u128> = (1..=7).map(|retry| policy.pause(retry).as_millis()).collect();
        assert_eq!(pauses, [0, 50, 100, 200, 400, 500, 500]);
        let jittered = Backoff { immediate: 0, jitter: true, max: Duration::from_secs(1), ..policy };
        for retry in 1..40 {
            let ceiling =
                Duration::from_millis(50).saturating_mul(1 << (retry - 1).min(16)).min(Duration::from_secs(1));
            let pause = jittered.pause(retry);
            assert!(pause <= ceiling && pause >= ceiling / 2, "retry {retry}: {pause:?}");
        }
        let attempts = policy.attempts();
        assert_eq!(attempts.next_pause(), Duration::ZERO);
    }
}
