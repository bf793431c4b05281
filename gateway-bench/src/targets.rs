//! The performance targets of the gateway and how a run's figures are checked against them.

use serde::Serialize;

use crate::stats::{fmt_ms, fmt_ms_signed};

/// Bytes in a MiB; the RSS target's "MB" is read as MiB.
pub const MIB: u64 = 1024 * 1024;

/// Thresholds from the issue: added p50 < 0.2 ms and p99 < 1 ms at 1,000 req/s, saturation
/// throughput at least 40% of direct, idle RSS under 30 MB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Targets {
    /// Added p50 must stay strictly below this (µs).
    pub added_p50_us: f64,
    /// Added p99 must stay strictly below this (µs).
    pub added_p99_us: f64,
    /// Gateway/direct throughput at saturation must reach at least this.
    pub min_saturation_ratio: f64,
    /// Idle resident set must stay strictly below this (bytes).
    pub max_idle_rss_bytes: u64,
    /// Translated p50 latency over passthrough p50 latency (both through the gateway) must stay
    /// at or below this.
    pub max_translated_ratio: f64,
    /// A timing figure is trusted only when other processes used at most this share of the
    /// machine (percent of all CPUs) during every phase it comes from.
    pub max_other_load_pct: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            added_p50_us: 200.0,
            added_p99_us: 1_000.0,
            min_saturation_ratio: 0.40,
            max_idle_rss_bytes: 30 * MIB,
            max_translated_ratio: 1.10,
            max_other_load_pct: 10.0,
        }
    }
}

/// The figures of a run that targets are checked against; `None` when not measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Rate of the fixed-rate scenario (the targets are stated for 1,000 req/s).
    pub rate: u64,
    /// Added p50 of the fixed-rate scenario (µs).
    pub added_p50_us: Option<f64>,
    /// Added p99 of the fixed-rate scenario (µs).
    pub added_p99_us: Option<f64>,
    /// Gateway RPS over direct RPS at saturation.
    pub saturation_ratio: Option<f64>,
    /// Idle RSS of gateway-server (bytes).
    pub idle_rss_bytes: Option<u64>,
    /// Requests that failed (transport error, timeout, non-200, truncated body) anywhere.
    pub failed_requests: u64,
    /// Requests sent anywhere, for the failure check's message.
    pub total_requests: u64,
    /// Translated p50 / passthrough p50, both through the gateway.
    pub translated_p50_ratio: Option<f64>,
    /// Highest `other load` (percent of all CPUs used by other processes) over the phases of
    /// the fixed-rate scenario.
    pub fixed_rate_other_load_pct: f64,
    /// The same for the saturation scenario.
    pub saturation_other_load_pct: f64,
    /// The same for the translated scenario.
    pub translated_other_load_pct: f64,
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Target met.
    Pass,
    /// Target missed.
    Fail,
    /// The figure was not measured (scenario failed or skipped).
    NotMeasured,
    /// Measured, but other processes used so much CPU meanwhile that the figure says more
    /// about them than about the gateway.
    Disturbed,
}

impl Verdict {
    /// `PASS`, `FAIL`, `N/A` or `DISTURBED`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::NotMeasured => "N/A",
            Self::Disturbed => "DISTURBED",
        }
    }
}

/// One target with the measured figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    /// What is checked.
    pub name: String,
    /// The threshold, human readable.
    pub target: String,
    /// The figure, human readable.
    pub measured: String,
    /// Outcome.
    pub verdict: Verdict,
}

fn check<T: Copy>(
    name: String,
    target: String,
    value: Option<T>,
    show: impl Fn(T) -> String,
    pass: impl Fn(T) -> bool,
) -> TargetCheck {
    match value {
        Some(v) => TargetCheck {
            name,
            target,
            measured: show(v),
            verdict: if pass(v) { Verdict::Pass } else { Verdict::Fail },
        },
        None => {
            TargetCheck { name, target, measured: "not measured".to_owned(), verdict: Verdict::NotMeasured }
        }
    }
}

/// Marks a timing check as disturbed when other processes used more than the allowed share of
/// the machine during its phases; the would-be verdict stays visible in the measured text.
fn unless_disturbed(mut check: TargetCheck, other_load_pct: f64, targets: &Targets) -> TargetCheck {
    if check.verdict != Verdict::NotMeasured && other_load_pct > targets.max_other_load_pct {
        check.measured = format!(
            "{} (would be {}; other load {other_load_pct:.0}%)",
            check.measured,
            check.verdict.label()
        );
        check.verdict = Verdict::Disturbed;
    }
    check
}

/// Checks every target. Also checks that no request failed: a latency figure over failed
/// requests (fast 5xx responses, say) would flatter the gateway.
pub fn check_targets(measured: &Measured, targets: &Targets) -> Vec<TargetCheck> {
    let rate = measured.rate;
    let fixed_load = measured.fixed_rate_other_load_pct;
    vec![
        unless_disturbed(
            check(
                format!("added p50 at {rate} req/s"),
                format!("< {}", fmt_ms(targets.added_p50_us)),
                measured.added_p50_us,
                fmt_ms_signed,
                |v| v < targets.added_p50_us,
            ),
            fixed_load,
            targets,
        ),
        unless_disturbed(
            check(
                format!("added p99 at {rate} req/s"),
                format!("< {}", fmt_ms(targets.added_p99_us)),
                measured.added_p99_us,
                fmt_ms_signed,
                |v| v < targets.added_p99_us,
            ),
            fixed_load,
            targets,
        ),
        unless_disturbed(
            check(
                "saturation throughput, gateway / direct".to_owned(),
                format!(">= {:.0}%", targets.min_saturation_ratio * 100.0),
                measured.saturation_ratio,
                |v| format!("{:.1}%", v * 100.0),
                |v| v >= targets.min_saturation_ratio,
            ),
            measured.saturation_other_load_pct,
            targets,
        ),
        check(
            "idle RSS of gateway-server".to_owned(),
            format!("< {}", fmt_mib(targets.max_idle_rss_bytes)),
            measured.idle_rss_bytes,
            fmt_mib,
            |v| v < targets.max_idle_rss_bytes,
        ),
        check(
            "requests that failed".to_owned(),
            "0".to_owned(),
            Some(measured.failed_requests),
            |v| format!("{v} of {}", measured.total_requests),
            |v| v == 0,
        ),
        unless_disturbed(
            check(
                "translated p50 / passthrough p50".to_owned(),
                format!("<= {:.0}%", targets.max_translated_ratio * 100.0),
                measured.translated_p50_ratio,
                |v| format!("{:.1}%", v * 100.0),
                |v| v <= targets.max_translated_ratio,
            ),
            measured.translated_other_load_pct,
            targets,
        ),
    ]
}

/// Whether every target passed (not-measured counts as a miss).
pub fn all_pass(checks: &[TargetCheck]) -> bool {
    checks.iter().all(|c| c.verdict == Verdict::Pass)
}

/// Bytes as `"12.3 MiB"`.
#[allow(clippy::cast_precision_loss)] // Display only.
pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Measured {
        Measured {
            rate: 1_000,
            added_p50_us: Some(120.0),
            added_p99_us: Some(600.0),
            saturation_ratio: Some(0.55),
            idle_rss_bytes: Some(12 * MIB),
            failed_requests: 0,
            total_requests: 50_000,
            translated_p50_ratio: Some(1.04),
            fixed_rate_other_load_pct: 2.0,
            saturation_other_load_pct: 3.0,
            translated_other_load_pct: 1.0,
        }
    }

    #[test]
    fn timing_figures_from_a_busy_machine_are_disturbed_not_passed() {
        let m = Measured { fixed_rate_other_load_pct: 40.0, added_p99_us: Some(-30_000.0), ..good() };
        let checks = check_targets(&m, &Targets::default());
        assert_eq!(checks[0].verdict, Verdict::Disturbed);
        assert_eq!(checks[1].verdict, Verdict::Disturbed);
        assert_eq!(checks[1].measured, "-30.000 ms (would be PASS; other load 40%)");
        // Other scenarios, memory and failures keep their verdicts.
        assert_eq!(checks[2].verdict, Verdict::Pass);
        assert_eq!(checks[3].verdict, Verdict::Pass);
        assert!(!all_pass(&checks));
        let m = Measured { saturation_other_load_pct: 10.5, saturation_ratio: Some(0.2), ..good() };
        let checks = check_targets(&m, &Targets::default());
        assert_eq!(checks[2].verdict, Verdict::Disturbed);
        assert_eq!(checks[2].measured, "20.0% (would be FAIL; other load 10%)");
        let m = Measured { saturation_other_load_pct: 10.0, ..good() };
        assert_eq!(check_targets(&m, &Targets::default())[2].verdict, Verdict::Pass);
    }

    #[test]
    fn translated_latency_within_ten_percent_of_passthrough() {
        let pass = verdicts(&Measured { translated_p50_ratio: Some(1.10), ..good() });
        assert!(pass.iter().all(|v| *v == Verdict::Pass), "{pass:?}");
        let fail = verdicts(&Measured { translated_p50_ratio: Some(1.101), ..good() });
        assert!(fail.contains(&Verdict::Fail), "{fail:?}");
    }

    fn verdicts(m: &Measured) -> Vec<Verdict> {
        check_targets(m, &Targets::default()).iter().map(|c| c.verdict).collect()
    }

    #[test]
    fn all_targets_pass_with_good_figures() {
        let checks = check_targets(&good(), &Targets::default());
        assert_eq!(checks.len(), 6);
        assert!(all_pass(&checks), "{checks:?}");
        assert_eq!(checks[0].measured, "+0.120 ms");
        assert_eq!(checks[2].measured, "55.0%");
        assert_eq!(checks[3].measured, "12.0 MiB");
    }

    #[test]
    fn thresholds_are_strict_where_the_issue_says_under() {
        let m = Measured {
            added_p50_us: Some(200.0),
            added_p99_us: Some(1_000.0),
            idle_rss_bytes: Some(30 * MIB),
            ..good()
        };
        assert_eq!(
            verdicts(&m),
            [Verdict::Fail, Verdict::Fail, Verdict::Pass, Verdict::Fail, Verdict::Pass, Verdict::Pass]
        );
    }

    #[test]
    fn saturation_ratio_at_exactly_forty_percent_passes() {
        let m = Measured { saturation_ratio: Some(0.40), ..good() };
        assert_eq!(verdicts(&m)[2], Verdict::Pass);
        let m = Measured { saturation_ratio: Some(0.399), ..good() };
        assert_eq!(verdicts(&m)[2], Verdict::Fail);
    }

    #[test]
    fn failed_requests_fail_the_run() {
        let m = Measured { failed_requests: 3, ..good() };
        let checks = check_targets(&m, &Targets::default());
        assert_eq!(checks[4].verdict, Verdict::Fail);
        assert_eq!(checks[4].measured, "3 of 50000");
        assert!(!all_pass(&checks));
    }

    #[test]
    fn missing_figures_are_not_a_pass() {
        let m = Measured { saturation_ratio: None, ..good() };
        let checks = check_targets(&m, &Targets::default());
        assert_eq!(checks[2].verdict, Verdict::NotMeasured);
        assert_eq!(checks[2].measured, "not measured");
        assert!(!all_pass(&checks));
    }

    #[test]
    fn negative_added_latency_passes() {
        let m = Measured { added_p50_us: Some(-15.0), ..good() };
        let checks = check_targets(&m, &Targets::default());
        assert_eq!(checks[0].verdict, Verdict::Pass);
        assert_eq!(checks[0].measured, "-0.015 ms");
    }
}
