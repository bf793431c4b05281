//! Latency histograms and the figures reported from them.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms hold: one minute, far above any request timeout.
const MAX_TRACKABLE_US: u64 = 60_000_000;

/// A latency histogram in microseconds, 3 significant digits (1 µs resolution below 2 ms).
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3)?)
}

/// Records `elapsed` in microseconds, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_TRACKABLE_US);
    histogram.saturating_record(micros);
}

/// Percentiles of one latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Recorded values.
    pub count: u64,
    /// Smallest value.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest value.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// Summarises a histogram; all zero when it is empty.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        // hdrhistogram reports the highest value equivalent to the bucket; that is at most
        // 0.1% above the true value at 3 significant digits.
        Self {
            count: histogram.len(),
            min_us: histogram.min(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

/// Latency the gateway adds over the direct path, per percentile, in microseconds. Negative
/// when noise made the gateway run faster than the direct one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Added {
    /// Gateway p50 minus direct p50.
    pub p50_us: f64,
    /// Gateway p99 minus direct p99.
    pub p99_us: f64,
}

impl Added {
    /// Difference of two summaries taken in the same round.
    pub fn between(direct: &LatencySummary, gateway: &LatencySummary) -> Self {
        Self {
            p50_us: signed_diff(gateway.p50_us, direct.p50_us),
            p99_us: signed_diff(gateway.p99_us, direct.p99_us),
        }
    }

    /// Per-percentile median over several rounds; `None` without rounds.
    pub fn median_of(rounds: &[Added]) -> Option<Self> {
        let p50 = median(rounds.iter().map(|a| a.p50_us).collect())?;
        let p99 = median(rounds.iter().map(|a| a.p99_us).collect())?;
        Some(Self { p50_us: p50, p99_us: p99 })
    }
}

#[allow(clippy::cast_precision_loss)] // Microsecond latencies are far below 2^52.
fn signed_diff(a: u64, b: u64) -> f64 {
    a as f64 - b as f64
}

/// Median of `values` (mean of the middle two for an even count); `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// `1234` µs as `"1.234 ms"`: milliseconds with microsecond precision, the unit of the targets.
pub fn fmt_ms(micros: f64) -> String {
    format!("{:.3} ms", micros / 1000.0)
}

/// Like [`fmt_ms`] with an explicit sign, for added latency.
pub fn fmt_ms_signed(micros: f64) -> String {
    format!("{:+.3} ms", micros / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_of(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = new_histogram().expect("valid bounds");
        for v in values {
            h.record(v).expect("in range");
        }
        h
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        // 1..=1000 µs: p50 is 500, p90 900, p99 990 (within hdrhistogram's 0.1%).
        let summary = LatencySummary::from_histogram(&histogram_of(1..=1000));
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.min_us, 1);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p90_us, 900);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.max_us, 1000);
        assert!((summary.mean_us - 500.5).abs() < 0.5, "mean {}", summary.mean_us);
    }

    #[test]
    fn tail_outliers_move_p99_but_not_p50() {
        let summary = LatencySummary::from_histogram(&histogram_of(
            std::iter::repeat_n(100, 980).chain(std::iter::repeat_n(5_000, 20)),
        ));
        assert_eq!(summary.p50_us, 100);
        assert!((4_995..=5_005).contains(&summary.p99_us), "p99 {}", summary.p99_us);
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        assert_eq!(
            LatencySummary::from_histogram(&new_histogram().expect("valid bounds")),
            LatencySummary::default()
        );
    }

    #[test]
    fn record_clamps_and_converts_to_micros() {
        let mut h = new_histogram().expect("valid bounds");
        record(&mut h, Duration::from_nanos(10)); // below 1 µs: counted as 1 µs, not dropped
        record(&mut h, Duration::from_micros(250));
        record(&mut h, Duration::from_secs(3_600)); // above the range: clamped to the top
        assert_eq!(h.len(), 3);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_TRACKABLE_US - MAX_TRACKABLE_US / 1000);
        assert_eq!(h.value_at_quantile(0.5), 250);
    }

    #[test]
    fn added_latency_can_be_negative() {
        let direct = LatencySummary { p50_us: 120, p99_us: 400, ..Default::default() };
        let gateway = LatencySummary { p50_us: 100, p99_us: 900, ..Default::default() };
        assert_eq!(Added::between(&direct, &gateway), Added { p50_us: -20.0, p99_us: 500.0 });
    }

    #[test]
    fn median_of_rounds_resists_one_disturbed_round() {
        let rounds = [
            Added { p50_us: 90.0, p99_us: 300.0 },
            Added { p50_us: 400.0, p99_us: 9_000.0 },
            Added { p50_us: 100.0, p99_us: 350.0 },
        ];
        assert_eq!(Added::median_of(&rounds), Some(Added { p50_us: 100.0, p99_us: 350.0 }));
        assert_eq!(median(vec![1.0, 3.0]), Some(2.0));
        assert_eq!(Added::median_of(&[]), None);
    }

    #[test]
    fn milliseconds_formatting() {
        assert_eq!(fmt_ms(1234.0), "1.234 ms");
        assert_eq!(fmt_ms(87.0), "0.087 ms");
        assert_eq!(fmt_ms_signed(-20.0), "-0.020 ms");
        assert_eq!(fmt_ms_signed(150.0), "+0.150 ms");
    }
}
