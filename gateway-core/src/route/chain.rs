//! The decision chain: every provider considered for a request, why it was skipped or chosen,
//! and every attempt with its outcome and latency. Stored with the request's log row.

use serde::{Deserialize, Serialize};

use crate::config::Id;

/// Why a provider was not a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Disabled by the operator.
    Disabled,
    /// Speaks another dialect.
    DialectMismatch,
    /// Its `allowed_models` do not include the requested model.
    ModelNotAllowed,
    /// Outside its `active_from`..`active_to` window.
    OutsideActiveWindow,
    /// Its circuit is open.
    CircuitOpen,
    /// It asked to be left alone (`Retry-After`) and that time has not passed.
    CoolingDown,
    /// It is at its limit of concurrent sessions.
    ConcurrencyLimit,
    /// It already failed for this request.
    FailedEarlier,
    /// It reached one of its spend limits.
    SpendLimit,
}

/// How the provider of an attempt was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionMethod {
    /// The session was bound to it.
    SessionReuse,
    /// Weighted random inside the best priority tier.
    WeightedRandom,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// A good response is being delivered.
    Success,
    /// A client error (4xx other than 429), returned to the caller as it is.
    ClientError,
    /// A 5xx or 429.
    UpstreamError,
    /// HTTP 200 whose body was an error or an HTML page.
    Fake200,
    /// No response in time.
    Timeout,
    /// Connection failed or broke before the response began.
    NetworkError,
}

/// One step of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChainStep {
    /// Not a candidate.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// Chosen for the next attempt(s).
    Selected {
        /// How.
        method: SelectionMethod,
        /// Its effective priority for this caller.
        priority: i32,
        /// Candidates in its tier.
        tier_size: usize,
    },
    /// One try.
    Attempt {
        /// 1-based try number on this provider.
        attempt: u32,
        /// How it ended.
        outcome: AttemptOutcome,
        /// Upstream status, when there was a response.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Time from sending to the verdict.
        latency_ms: u64,
        /// What went wrong.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// A provider and what happened with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// Provider id.
    pub provider_id: Id,
    /// Provider name at the time.
    pub provider: String,
    /// What happened.
    #[serde(flatten)]
    pub step: ChainStep,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(provider_id: Id, provider: &str, step: ChainStep) -> ChainEntry {
        ChainEntry { provider_id, provider: provider.to_owned(), step }
    }

    /// The stored format of the chain (a `request_log` column): rows already in databases must
    /// keep reading back, and new rows must look the same.
    #[test]
    fn entries_serialize_flat_and_read_back() {
        let chain = vec![
            entry(2, "backup \"b\"", ChainStep::Skipped { reason: SkipReason::CircuitOpen }),
            entry(
                3,
                "main",
                ChainStep::Selected { method: SelectionMethod::WeightedRandom, priority: -1, tier_size: 2 },
            ),
            entry(
                3,
                "main",
                ChainStep::Attempt {
                    attempt: 1,
                    outcome: AttemptOutcome::UpstreamError,
                    status: Some(529),
                    latency_ms: 12,
                    error: Some("overloaded".to_owned()),
                },
            ),
            entry(
                3,
                "main",
                ChainStep::Attempt {
                    attempt: 2,
                    outcome: AttemptOutcome::Success,
                    status: None,
                    latency_ms: 7,
                    error: None,
                },
            ),
        ];
        let json = serde_json::to_string(&chain).expect("serialize");
        assert_eq!(
            json,
            r#"[{"provider_id":2,"provider":"backup \"b\"","event":"skipped","reason":"circuit_open"},{"provider_id":3,"provider":"main","event":"selected","method":"weighted_random","priority":-1,"tier_size":2},{"provider_id":3,"provider":"main","event":"attempt","attempt":1,"outcome":"upstream_error","status":529,"latency_ms":12,"error":"overloaded"},{"provider_id":3,"provider":"main","event":"attempt","attempt":2,"outcome":"success","latency_ms":7}]"#
        );
        let back: Vec<ChainEntry> = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, chain);
    }
}
