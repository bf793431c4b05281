//! Open-loop scheduling math: when each request of a fixed-rate run is due.
//!
//! Send times are computed from the request index (never accumulated from the previous one),
//! so integer rounding of the interval cannot drift over a long run, and a late tick never
//! shifts the ticks after it: an open-loop generator must keep its schedule even when the
//! system under test falls behind.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A fixed-rate run: `warmup` then `measure`, requests evenly spaced at `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePlan {
    /// Requests per second (at least 1).
    pub rate: u64,
    /// Time whose requests are sent but not recorded.
    pub warmup: Duration,
    /// Time whose requests are recorded.
    pub measure: Duration,
}

impl RatePlan {
    /// A plan; a rate of 0 is treated as 1 so the interval stays finite.
    pub fn new(rate: u64, warmup: Duration, measure: Duration) -> Self {
        Self { rate: rate.max(1), warmup, measure }
    }

    /// Offset of request `index` from the start of the run.
    pub fn offset(&self, index: u64) -> Duration {
        let nanos = u128::from(index) * NANOS_PER_SEC / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Requests in the warm-up (indices `0..warmup_count()`).
    pub fn warmup_count(&self) -> u64 {
        count_in(self.rate, self.warmup)
    }

    /// Requests in the whole run, warm-up included.
    pub fn total_count(&self) -> u64 {
        count_in(self.rate, self.warmup + self.measure)
    }

    /// Requests that are recorded.
    pub fn measured_count(&self) -> u64 {
        self.total_count() - self.warmup_count()
    }

    /// Whether request `index` falls in the measured part. Decided by index rather than by
    /// the clock so direct and gateway runs record exactly the same number of requests.
    pub fn is_measured(&self, index: u64) -> bool {
        index >= self.warmup_count() && index < self.total_count()
    }
}

/// Requests due in `span` at `rate` per second: those whose offset is strictly inside it.
fn count_in(rate: u64, span: Duration) -> u64 {
    // ceil(rate * span): request i is due at i/rate, and i/rate < span for i < rate * span.
    let scaled = u128::from(rate) * span.as_nanos();
    let count = scaled.div_ceil(NANOS_PER_SEC);
    u64::try_from(count).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_evenly_spaced() {
        let plan = RatePlan::new(1_000, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(plan.offset(0), Duration::ZERO);
        assert_eq!(plan.offset(1), Duration::from_millis(1));
        assert_eq!(plan.offset(999), Duration::from_millis(999));
    }

    #[test]
    fn offsets_do_not_drift_with_a_non_integral_interval() {
        // 3 req/s: 333_333_333.33 ns apart. Accumulating a rounded interval would lose 1 ns
        // per request; computing from the index lands exactly on whole seconds.
        let plan = RatePlan::new(3, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(plan.offset(3), Duration::from_secs(1));
        assert_eq!(plan.offset(3_000_000), Duration::from_secs(1_000_000));
        assert_eq!(plan.offset(1), Duration::from_nanos(333_333_333));
    }

    #[test]
    fn counts_split_warmup_and_measurement() {
        let plan = RatePlan::new(1_000, Duration::from_secs(2), Duration::from_secs(10));
        assert_eq!(plan.warmup_count(), 2_000);
        assert_eq!(plan.total_count(), 12_000);
        assert_eq!(plan.measured_count(), 10_000);
        assert!(!plan.is_measured(1_999));
        assert!(plan.is_measured(2_000));
        assert!(plan.is_measured(11_999));
        assert!(!plan.is_measured(12_000));
    }

    #[test]
    fn fractional_spans_round_up_to_the_requests_due_inside_them() {
        // 200 req/s for 1.5 ms: only request 0 (at 0 ms) is due; for 5.5 ms, 0 and 1 (at 5 ms).
        assert_eq!(count_in(200, Duration::from_micros(1_500)), 1);
        assert_eq!(count_in(200, Duration::from_micros(5_500)), 2);
        assert_eq!(count_in(200, Duration::ZERO), 0);
    }

    #[test]
    fn zero_rate_is_clamped() {
        let plan = RatePlan::new(0, Duration::ZERO, Duration::from_secs(2));
        assert_eq!(plan.rate, 1);
        assert_eq!(plan.total_count(), 2);
    }
}
