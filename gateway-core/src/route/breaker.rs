//! The per-provider circuit breaker as pure state transitions, so the memory store, the Redis
//! store and the tests share one definition.
//!
//! Closed → Open after `failure_threshold` consecutive failures (0 disables the breaker) →
//! Open for `open_duration` → Half-open (probe traffic admitted) → Closed after
//! `half_open_success_threshold` successes, or Open again on a failure. Time is passed in, so
//! tests drive every transition with a manual clock.

use serde::{Deserialize, Serialize};

use crate::config::ProviderOptions;

/// Breaker settings of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit; 0 disables it.
    pub failure_threshold: u32,
    /// How long the circuit stays open, in milliseconds.
    pub open_duration_ms: u64,
    /// Successes while half-open that close it.
    pub half_open_success_threshold: u32,
}

impl BreakerConfig {
    /// The breaker settings in a provider's options.
    pub fn of(options: &ProviderOptions) -> Self {
        Self {
            failure_threshold: options.circuit_breaker_failure_threshold,
            open_duration_ms: options.circuit_breaker_open_duration_ms,
            half_open_success_threshold: options.circuit_breaker_half_open_success_threshold.max(1),
        }
    }
}

/// The state a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// Traffic is kept away until the open period ends.
    Open,
    /// The open period ended: requests probe the provider.
    HalfOpen,
}

/// What is stored per provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerRecord {
    /// Consecutive failures (closed) or failures since opening.
    pub failures: u32,
    /// Successes since the circuit went half-open.
    pub half_open_successes: u32,
    /// When the circuit last opened (ms since the epoch), while not closed.
    pub opened_at_ms: Option<i64>,
    /// Reason of the failure that opened it, or of the last failure.
    pub last_failure: Option<String>,
}

impl BreakerRecord {
    /// The state at `now_ms`. An open circuit whose period has passed reads as half-open.
    pub fn state(&self, cfg: &BreakerConfig, now_ms: i64) -> CircuitState {
        match self.opened_at_ms {
            _ if cfg.failure_threshold == 0 => CircuitState::Closed,
            None => CircuitState::Closed,
            Some(opened) => {
                let until = opened.saturating_add(i64::try_from(cfg.open_duration_ms).unwrap_or(i64::MAX));
                if now_ms < until { CircuitState::Open } else { CircuitState::HalfOpen }
            }
        }
    }

    /// Whether requests may go to the provider now.
    pub fn admits(&self, cfg: &BreakerConfig, now_ms: i64) -> bool {
        self.state(cfg, now_ms) != CircuitState::Open
    }

    /// Applies a success.
    pub fn on_success(&mut self, cfg: &BreakerConfig, now_ms: i64) {
        match self.state(cfg, now_ms) {
            CircuitState::Closed => {
                self.failures = 0;
            }
            CircuitState::HalfOpen => {
                self.half_open_successes += 1;
                if self.half_open_successes >= cfg.half_open_success_threshold {
                    *self = Self::default();
                }
            }
            // A success that started before the circuit opened changes nothing.
            CircuitState::Open => {}
        }
    }

    /// Applies a failure.
    pub fn on_failure(&mut self, cfg: &BreakerConfig, now_ms: i64, reason: &str) {
        if cfg.failure_threshold == 0 {
            return;
        }
        self.last_failure = Some(reason.chars().take(300).collect());
        match self.state(cfg, now_ms) {
            CircuitState::Closed => {
                self.failures += 1;
                if self.failures >= cfg.failure_threshold {
                    self.opened_at_ms = Some(now_ms);
                    self.half_open_successes = 0;
                }
            }
            CircuitState::HalfOpen => {
                // The probe failed: open again for a full period.
                self.failures += 1;
                self.opened_at_ms = Some(now_ms);
                self.half_open_successes = 0;
            }
            CircuitState::Open => {
                self.failures += 1;
            }
        }
    }
}

/// A breaker's state as reported by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerStatus {
    /// Current state.
    pub state: CircuitState,
    /// Failure count.
    pub failures: u32,
    /// When it opened (ms since the epoch), while not closed.
    pub opened_at_ms: Option<i64>,
    /// When an open circuit goes half-open.
    pub open_until_ms: Option<i64>,
    /// Last failure reason.
    pub reason: Option<String>,
}

impl BreakerStatus {
    /// The report of `record` at `now_ms`.
    pub fn of(record: &BreakerRecord, cfg: &BreakerConfig, now_ms: i64) -> Self {
        let state = record.state(cfg, now_ms);
        Self {
            state,
            failures: record.failures,
            opened_at_ms: record.opened_at_ms.filter(|_| state != CircuitState::Closed),
            open_until_ms: record
                .opened_at_ms
                .filter(|_| state != CircuitState::Closed)
                .map(|t| t.saturating_add(i64::try_from(cfg.open_duration_ms).unwrap_or(i64::MAX))),
            reason: record.last_failure.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: BreakerConfig = BreakerConfig {
        failure_threshold: 3,
        open_duration_ms: 30 * 60 * 1000,
        half_open_success_threshold: 2,
    };

    #[test]
    fn every_transition() {
        let mut b = BreakerRecord::default();
        let t0 = 1_000_000;
        assert_eq!(b.state(&CFG, t0), CircuitState::Closed);
        b.on_failure(&CFG, t0, "500");
        b.on_failure(&CFG, t0, "500");
        assert_eq!(b.state(&CFG, t0), CircuitState::Closed);
        // A success in between resets the consecutive count.
        b.on_success(&CFG, t0);
        b.on_failure(&CFG, t0, "500");
        b.on_failure(&CFG, t0, "500");
        assert_eq!(b.state(&CFG, t0), CircuitState::Closed);
        b.on_failure(&CFG, t0 + 1, "503");
        assert_eq!(b.state(&CFG, t0 + 1), CircuitState::Open);
        assert!(!b.admits(&CFG, t0 + 1));
        // Still open one millisecond before the period ends.
        let until = t0 + 1 + 30 * 60 * 1000;
        assert_eq!(b.state(&CFG, until - 1), CircuitState::Open);
        assert_eq!(b.state(&CFG, until), CircuitState::HalfOpen);
        assert!(b.admits(&CFG, until));
        // A failed probe opens it again for a full period.
        b.on_failure(&CFG, until, "timeout");
        assert_eq!(b.state(&CFG, until + 10), CircuitState::Open);
        let until2 = until + 30 * 60 * 1000;
        assert_eq!(b.state(&CFG, until2), CircuitState::HalfOpen);
        // Two successful probes close it.
        b.on_success(&CFG, until2);
        assert_eq!(b.state(&CFG, until2), CircuitState::HalfOpen);
        b.on_success(&CFG, until2 + 1);
        assert_eq!(b.state(&CFG, until2 + 1), CircuitState::Closed);
        assert_eq!(b, BreakerRecord::default());
    }

    #[test]
    fn threshold_zero_disables() {
        let cfg = BreakerConfig { failure_threshold: 0, ..CFG };
        let mut b = BreakerRecord::default();
        for _ in 0..100 {
            b.on_failure(&cfg, 0, "x");
        }
        assert_eq!(b.state(&cfg, 0), CircuitState::Closed);
    }

    #[test]
    fn status_reports_reason_and_reopen_time() {
        let mut b = BreakerRecord::default();
        for _ in 0..3 {
            b.on_failure(&CFG, 5, "upstream 529");
        }
        let s = BreakerStatus::of(&b, &CFG, 6);
        assert_eq!(s.state, CircuitState::Open);
        assert_eq!(s.open_until_ms, Some(5 + 30 * 60 * 1000));
        assert_eq!(s.reason.as_deref(), Some("upstream 529"));
    }
}
