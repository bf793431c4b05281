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

impl SkipReason {
    /// The name in the stored chain (as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::DialectMismatch => "dialect_mismatch",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::OutsideActiveWindow => "outside_active_window",
            Self::CircuitOpen => "circuit_open",
            Self::CoolingDown => "cooling_down",
            Self::ConcurrencyLimit => "concurrency_limit",
            Self::FailedEarlier => "failed_earlier",
            Self::SpendLimit => "spend_limit",
        }
    }
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

impl SelectionMethod {
    /// The name in the stored chain (as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionReuse => "session_reuse",
            Self::WeightedRandom => "weighted_random",
        }
    }
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

impl AttemptOutcome {
    /// The name in the stored chain (as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ClientError => "client_error",
            Self::UpstreamError => "upstream_error",
            Self::Fake200 => "fake200",
            Self::Timeout => "timeout",
            Self::NetworkError => "network_error",
        }
    }
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

/// `chain` as the JSON `serde_json` makes of it (the stored format), written directly. Through
/// serde, the flattened and internally tagged entries took about 4 k instructions per logged
/// request: several percent of the gateway's CPU at saturation.
pub fn chain_to_json(chain: &[ChainEntry]) -> String {
    use crate::translate::jsonw::{put_int, put_str};
    let mut out: Vec<u8> = Vec::with_capacity(chain.len() * 128);
    out.push(b'[');
    for (i, entry) in chain.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"provider_id":"#);
        put_int(&mut out, entry.provider_id);
        out.extend_from_slice(br#","provider":"#);
        put_str(&mut out, &entry.provider);
        match &entry.step {
            ChainStep::Skipped { reason } => {
                out.extend_from_slice(br#","event":"skipped","reason":"#);
                put_name(&mut out, reason.as_str());
            }
            ChainStep::Selected { method, priority, tier_size } => {
                out.extend_from_slice(br#","event":"selected","method":"#);
                put_name(&mut out, method.as_str());
                out.extend_from_slice(br#","priority":"#);
                put_int(&mut out, *priority);
                out.extend_from_slice(br#","tier_size":"#);
                put_int(&mut out, *tier_size);
            }
            ChainStep::Attempt { attempt, outcome, status, latency_ms, error } => {
                out.extend_from_slice(br#","event":"attempt","attempt":"#);
                put_int(&mut out, *attempt);
                out.extend_from_slice(br#","outcome":"#);
                put_name(&mut out, outcome.as_str());
                if let Some(status) = status {
                    out.extend_from_slice(br#","status":"#);
                    put_int(&mut out, *status);
                }
                out.extend_from_slice(br#","latency_ms":"#);
                put_int(&mut out, *latency_ms);
                if let Some(error) = error {
                    out.extend_from_slice(br#","error":"#);
                    put_str(&mut out, error);
                }
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    // Only `str`s and ASCII were written, so this is always UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// An enum's name: snake_case ASCII, nothing to escape.
fn put_name(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
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
        assert_eq!(chain_to_json(&chain), json);
    }

    /// The direct writer makes exactly serde's JSON, for every step and every enum value, and
    /// escapes names and errors as serde does.
    #[test]
    fn direct_json_is_serdes_json() {
        let odd = "q\"b\\s/\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f} é 😀";
        let mut chain = vec![];
        for reason in [
            SkipReason::Disabled,
            SkipReason::DialectMismatch,
            SkipReason::ModelNotAllowed,
            SkipReason::OutsideActiveWindow,
            SkipReason::CircuitOpen,
            SkipReason::CoolingDown,
            SkipReason::ConcurrencyLimit,
            SkipReason::FailedEarlier,
            SkipReason::SpendLimit,
        ] {
            chain.push(entry(-1, odd, ChainStep::Skipped { reason }));
        }
        for method in [SelectionMethod::SessionReuse, SelectionMethod::WeightedRandom] {
            chain.push(entry(
                i64::MAX,
                "",
                ChainStep::Selected { method, priority: i32::MIN, tier_size: usize::MAX },
            ));
        }
        for (i, outcome) in [
            AttemptOutcome::Success,
            AttemptOutcome::ClientError,
            AttemptOutcome::UpstreamError,
            AttemptOutcome::Fake200,
            AttemptOutcome::Timeout,
            AttemptOutcome::NetworkError,
        ]
        .into_iter()
        .enumerate()
        {
            let error = (i % 2 == 0).then(|| format!("{odd}{i}"));
            let status = (i % 3 != 0).then_some(u16::MAX);
            chain.push(entry(
                0,
                "p",
                ChainStep::Attempt { attempt: u32::MAX, outcome, status, latency_ms: u64::MAX, error },
            ));
        }
        assert_eq!(chain_to_json(&chain), serde_json::to_string(&chain).expect("serialize"));
        assert_eq!(chain_to_json(&[]), "[]");
    }
}
