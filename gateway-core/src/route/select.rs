//! Provider selection as pure functions over the catalog and a routing view: the filters, the
//! priority tier, the weighted pick. Benchmarked with 50 providers.

use std::sync::Arc;

use rand::Rng;

use super::breaker::BreakerConfig;
use super::chain::{ChainEntry, ChainStep, SkipReason};
use crate::config::{Id, Provider, model_allowed};
use crate::dialect::Dialect;
use crate::store::state::ProviderHealth;

/// The wildcard group: a caller in it sees every provider.
pub const ALL_GROUPS: &str = "*";

/// Whether a caller with `caller_groups` may use a provider tagged `provider_groups`.
pub fn groups_overlap(caller_groups: &[String], provider_groups: &[String]) -> bool {
    caller_groups.iter().any(|g| g == ALL_GROUPS || provider_groups.contains(g))
}

/// What the static filters compare against.
#[derive(Debug, Clone, Copy)]
pub struct StaticFilter<'a> {
    /// Client dialect.
    pub dialect: Dialect,
    /// Caller's groups.
    pub groups: &'a [String],
    /// Requested model, if any.
    pub model: Option<&'a str>,
    /// Minutes after local midnight, for active windows.
    pub local_minute: u16,
    /// Whether this endpoint can be served by a provider of another dialect.
    pub translatable: bool,
}

pub(crate) fn skip(chain: &mut Vec<ChainEntry>, p: &Provider, reason: SkipReason) {
    chain.push(ChainEntry {
        provider_id: p.id,
        provider: p.name.clone(),
        step: ChainStep::Skipped { reason },
    });
}

/// Providers that could serve the request regardless of their health, as indices into
/// `providers`. Providers outside the caller's groups are not recorded: they do not exist for
/// this caller.
pub fn static_candidates(
    providers: &[Arc<Provider>],
    f: &StaticFilter<'_>,
    chain: &mut Vec<ChainEntry>,
) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        if !groups_overlap(f.groups, &p.groups) {
            continue;
        }
        let reason = if !p.enabled {
            Some(SkipReason::Disabled)
        } else if !(p.provider_type.native_dialect() == f.dialect || (f.translatable && p.serves(f.dialect)))
        {
            Some(SkipReason::DialectMismatch)
        } else if f.model.is_some_and(|m| !model_allowed(&p.options.allowed_models, m)) {
            Some(SkipReason::ModelNotAllowed)
        } else if p.active_window.is_some_and(|w| !w.contains(f.local_minute)) {
            Some(SkipReason::OutsideActiveWindow)
        } else {
            None
        };
        match reason {
            Some(r) => skip(chain, p, r),
            None => out.push(i),
        }
    }
    out
}

/// Removes candidates whose circuit is open, that are cooling down, or that failed earlier in
/// this request. `health[k]` belongs to `candidates[k]` as they were when the view was taken.
pub fn healthy_candidates(
    providers: &[Arc<Provider>],
    candidates: &[usize],
    health: &[ProviderHealth],
    excluded: &[Id],
    now_ms: i64,
    chain: &mut Vec<ChainEntry>,
    record: bool,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(candidates.len());
    for (k, &i) in candidates.iter().enumerate() {
        let p = &providers[i];
        let h = health.get(k);
        let reason = if excluded.contains(&p.id) {
            Some(SkipReason::FailedEarlier)
        } else if h.is_some_and(|h| !h.breaker.admits(&BreakerConfig::of(&p.options), now_ms)) {
            Some(SkipReason::CircuitOpen)
        } else if h.and_then(|h| h.cooldown_until_ms).is_some_and(|t| t > now_ms) {
            Some(SkipReason::CoolingDown)
        } else {
            None
        };
        match reason {
            // Providers that failed in this request were recorded when they failed.
            Some(SkipReason::FailedEarlier) => {}
            Some(r) if record => skip(chain, p, r),
            Some(_) => {}
            None => out.push(i),
        }
    }
    out
}

/// Picks inside the best priority tier by weight; returns the index and the tier size.
pub fn pick_weighted(
    providers: &[Arc<Provider>],
    candidates: &[usize],
    groups: &[String],
    dialect: Dialect,
    rng: &mut impl Rng,
) -> Option<(usize, usize)> {
    let best = candidates.iter().map(|&i| providers[i].effective_priority(groups)).min()?;
    // Inside the tier, providers speaking the caller's dialect come first: translation is for
    // requests nothing else can serve.
    let native_in_tier = candidates.iter().any(|&i| {
        providers[i].effective_priority(groups) == best
            && providers[i].provider_type.native_dialect() == dialect
    });
    let in_tier = |i: usize| {
        providers[i].effective_priority(groups) == best
            && (!native_in_tier || providers[i].provider_type.native_dialect() == dialect)
    };
    let mut tier_total: u64 = 0;
    let mut tier_len = 0usize;
    for &i in candidates {
        if in_tier(i) {
            tier_total += u64::from(providers[i].weight);
            tier_len += 1;
        }
    }
    let tier = || candidates.iter().copied().filter(|&i| in_tier(i));
    if tier_total == 0 {
        let n = rng.random_range(0..tier_len);
        return tier().nth(n).map(|i| (i, tier_len));
    }
    let mut ticket = rng.random_range(0..tier_total);
    for i in tier() {
        let w = u64::from(providers[i].weight);
        if ticket < w {
            return Some((i, tier_len));
        }
        ticket -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderConfig, ProviderType};
    use crate::route::breaker::BreakerRecord;
    use rand::SeedableRng;

    fn provider(id: i64, f: impl FnOnce(&mut ProviderConfig)) -> Arc<Provider> {
        let mut cfg = ProviderConfig::new(&format!("p{id}"), ProviderType::Claude, "http://127.0.0.1:1", "k");
        f(&mut cfg);
        Arc::new(Provider::from_config(id, &cfg).expect("provider"))
    }

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    fn shares(ps: &[Arc<Provider>], g: &[String], n: usize) -> std::collections::BTreeMap<i64, usize> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let all: Vec<usize> = (0..ps.len()).collect();
        let mut out = std::collections::BTreeMap::new();
        for _ in 0..n {
            let (i, _) = pick_weighted(ps, &all, g, Dialect::Anthropic, &mut rng).expect("pick");
            *out.entry(ps[i].id).or_default() += 1;
        }
        out
    }

    #[test]
    fn weighted_split_over_1000_selections() {
        let ps = vec![
            provider(1, |c| c.weight = 70),
            provider(2, |c| c.weight = 20),
            provider(3, |c| c.weight = 10),
        ];
        let c = shares(&ps, &groups(&["default"]), 1000);
        // Binomial with n=1000: 4 standard deviations around 700/200/100.
        assert!((642..=758).contains(&c[&1]), "{c:?}");
        assert!((149..=251).contains(&c[&2]), "{c:?}");
        assert!((62..=138).contains(&c[&3]), "{c:?}");
    }

    #[test]
    fn zero_weights_split_uniformly() {
        let ps = vec![provider(1, |c| c.weight = 0), provider(2, |c| c.weight = 0)];
        let c = shares(&ps, &groups(&["default"]), 1000);
        assert!((437..=563).contains(&c[&1]), "{c:?}");
    }

    #[test]
    fn lowest_priority_tier_wins_and_group_priorities_override() {
        let ps = vec![
            provider(1, |c| c.priority = 1),
            provider(2, |c| {
                c.priority = 0;
            }),
            provider(3, |c| {
                c.priority = 5;
                c.groups = groups(&["default", "vip"]);
                c.options.group_priorities.insert("vip".into(), -1);
            }),
        ];
        assert_eq!(shares(&ps, &groups(&["default"]), 100).keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(shares(&ps, &groups(&["vip"]), 100).keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn each_static_filter_records_its_reason() {
        let ps = vec![
            provider(1, |c| c.enabled = false),
            provider(2, |c| c.provider_type = ProviderType::Codex),
            provider(3, |c| {
                c.options.allowed_models = vec![
                    crate::config::ModelPattern::new(crate::config::MatchKind::Prefix, "claude-opus")
                        .expect("p"),
                ]
            }),
            provider(4, |c| {
                c.options.active_from = Some("22:00".into());
                c.options.active_to = Some("06:00".into());
            }),
            provider(5, |c| c.groups = groups(&["other-team"])),
            provider(6, |_| {}),
        ];
        let g = groups(&["default"]);
        let mut chain = Vec::new();
        let f = StaticFilter {
            dialect: Dialect::Anthropic,
            groups: &g,
            model: Some("claude-sonnet-4-5"),
            local_minute: 12 * 60,
            translatable: true,
        };
        let c = static_candidates(&ps, &f, &mut chain);
        assert_eq!(c, vec![5]);
        let reasons: Vec<(i64, SkipReason)> = chain
            .iter()
            .map(|e| match e.step {
                ChainStep::Skipped { reason } => (e.provider_id, reason),
                _ => panic!("unexpected {e:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                (1, SkipReason::Disabled),
                (2, SkipReason::DialectMismatch),
                (3, SkipReason::ModelNotAllowed),
                (4, SkipReason::OutsideActiveWindow),
            ]
        );
        // The night window crosses midnight: at 23:30 provider 4 is in.
        let f = StaticFilter { local_minute: 23 * 60 + 30, ..f };
        assert_eq!(static_candidates(&ps, &f, &mut Vec::new()), vec![3, 5]);
    }

    #[test]
    fn health_filters_record_their_reasons() {
        let ps = vec![provider(1, |_| {}), provider(2, |_| {}), provider(3, |_| {}), provider(4, |_| {})];
        let mut open = BreakerRecord::default();
        let cfg = BreakerConfig::of(&ps[0].options);
        for _ in 0..cfg.failure_threshold {
            open.on_failure(&cfg, 1_000, "500");
        }
        let health = vec![
            ProviderHealth { breaker: open, cooldown_until_ms: None },
            ProviderHealth { breaker: BreakerRecord::default(), cooldown_until_ms: Some(5_000) },
            ProviderHealth::default(),
            ProviderHealth::default(),
        ];
        let mut chain = Vec::new();
        let c = healthy_candidates(&ps, &[0, 1, 2, 3], &health, &[4], 2_000, &mut chain, true);
        assert_eq!(c, vec![2]);
        let reasons: Vec<_> = chain.iter().map(|e| (e.provider_id, e.step.clone())).collect();
        assert_eq!(
            reasons,
            vec![
                (1, ChainStep::Skipped { reason: SkipReason::CircuitOpen }),
                (2, ChainStep::Skipped { reason: SkipReason::CoolingDown }),
            ]
        );
    }
}
