//! Latency samples and what a report says about them.

use std::time::Duration;

use serde::Serialize;

/// Percentiles and throughput of one measured case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Operations per second over the case's wall time.
    pub throughput: f64,
}

impl Summary {
    pub fn of(mut samples: Vec<Duration>, wall: Duration) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index].as_secs_f64() * 1e6
        };
        Self {
            count: samples.len(),
            p50_us: at(0.50),
            p95_us: at(0.95),
            p99_us: at(0.99),
            max_us: at(1.0),
            throughput: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let summary = Summary::of(samples, Duration::from_secs(2));
        assert_eq!((summary.p50_us, summary.p95_us, summary.p99_us, summary.max_us), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(summary.throughput, 50.0);
        assert_eq!(Summary::of(Vec::new(), Duration::from_secs(1)).count, 0);
    }
}
