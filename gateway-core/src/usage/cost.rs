//! Exact cost arithmetic: decimal prices per million tokens, rounded once to nano-dollars.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::TokenUsage;
use crate::config::Price;

/// An amount of US dollars in integer nano-dollars (1e-9 USD). Integers add up exactly in every
/// database and limit window; one nano-dollar is far below any price step vendors publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UsdNanos(pub i64);

impl UsdNanos {
    /// Nano-dollars per dollar.
    pub const PER_USD: i64 = 1_000_000_000;

    /// Converts a decimal dollar amount, rounding half away from zero to the nearest nano-dollar;
    /// `None` on overflow.
    pub fn from_usd(usd: Decimal) -> Option<Self> {
        let nanos = (usd * Decimal::from(Self::PER_USD))
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
        i64::try_from(nanos).ok().map(Self)
    }

    /// The exact decimal dollar amount.
    pub fn to_usd(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.0), 9).normalize()
    }
}

impl fmt::Display for UsdNanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_usd())
    }
}

const MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// Cost of `usage` under `price`, times `multiplier`. Missing cache prices default to the usual
/// vendor ratios: 5m write 1.25×, 1h write 2×, read 0.1× the input price. Cache writes the
/// upstream did not split by TTL are billed at the 5m rate.
pub fn compute_cost(usage: &TokenUsage, price: &Price, multiplier: Decimal) -> Option<UsdNanos> {
    let input = price.input_per_mtok;
    let write_5m = price.cache_write_5m_per_mtok.unwrap_or(input * Decimal::new(125, 2));
    let write_1h = price.cache_write_1h_per_mtok.unwrap_or(input * Decimal::TWO);
    let read = price.cache_read_per_mtok.unwrap_or(input * Decimal::new(1, 1));
    let split = usage.cache_creation_5m_input_tokens + usage.cache_creation_1h_input_tokens;
    let unsplit = usage.cache_creation_input_tokens.saturating_sub(split);
    let tokens_times_price = Decimal::from(usage.input_tokens) * input
        + Decimal::from(usage.output_tokens) * price.output_per_mtok
        + Decimal::from(usage.cache_creation_5m_input_tokens + unsplit) * write_5m
        + Decimal::from(usage.cache_creation_1h_input_tokens) * write_1h
        + Decimal::from(usage.cache_read_input_tokens) * read;
    UsdNanos::from_usd(tokens_times_price.checked_mul(multiplier)? / MILLION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sonnet() -> Price {
        Price {
            model: "claude-sonnet-4-5".into(),
            input_per_mtok: Decimal::new(3, 0),
            output_per_mtok: Decimal::new(15, 0),
            cache_write_5m_per_mtok: Some(Decimal::new(375, 2)),
            cache_write_1h_per_mtok: Some(Decimal::new(6, 0)),
            cache_read_per_mtok: Some(Decimal::new(30, 2)),
        }
    }

    #[test]
    fn exact_cost_with_every_bucket() {
        let usage = TokenUsage {
            input_tokens: 1000,
            output_tokens: 500,
            cache_creation_input_tokens: 3000,
            cache_creation_5m_input_tokens: 1000,
            cache_creation_1h_input_tokens: 2000,
            cache_read_input_tokens: 10_000,
        };
        // 1000*3 + 500*15 + 1000*3.75 + 2000*6 + 10000*0.3 = 3000+7500+3750+12000+3000 = 29250 µ$
        let cost = compute_cost(&usage, &sonnet(), Decimal::ONE).expect("cost");
        assert_eq!(cost, UsdNanos(29_250_000));
        assert_eq!(cost.to_string(), "0.02925");
    }

    #[test]
    fn unsplit_cache_writes_use_the_5m_rate_and_multiplier_applies() {
        let usage = TokenUsage { cache_creation_input_tokens: 1000, ..Default::default() };
        let cost = compute_cost(&usage, &sonnet(), Decimal::new(15, 1)).expect("cost");
        assert_eq!(cost, UsdNanos(5_625_000)); // 1000 * 3.75 * 1.5 / 1e6
    }

    #[test]
    fn defaults_for_missing_cache_prices() {
        let price = Price {
            cache_write_5m_per_mtok: None,
            cache_write_1h_per_mtok: None,
            cache_read_per_mtok: None,
            ..sonnet()
        };
        let usage = TokenUsage {
            cache_creation_input_tokens: 2_000_000,
            cache_creation_5m_input_tokens: 1_000_000,
            cache_creation_1h_input_tokens: 1_000_000,
            cache_read_input_tokens: 1_000_000,
            ..Default::default()
        };
        // 3.75 + 6 + 0.3 dollars
        assert_eq!(compute_cost(&usage, &price, Decimal::ONE), Some(UsdNanos(10_050_000_000)));
    }

    #[test]
    fn rounds_half_away_from_zero_once() {
        let price = Price { input_per_mtok: Decimal::new(1, 4), ..sonnet() }; // $0.0001/Mtok
        let usage = TokenUsage { input_tokens: 5, ..Default::default() }; // 0.5e-9 USD
        assert_eq!(compute_cost(&usage, &price, Decimal::ONE), Some(UsdNanos(1)));
    }
}
