//! Router stage: picks the provider for the request and prepares the body it will get.
//!
//! Adds to the request: `target` (provider, forwarded model, body). Adds to the context:
//! `provider`, `original_model`, `forwarded_model`. Read by: forwarder, log, cost.
//!
//! Selection: enabled providers that serve the caller's dialect and share a group with the
//! caller; the lowest priority number wins; inside that tier, weighted random (all weights zero
//! means uniform).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use rand::Rng;
use tower::{Layer, Service};

use crate::catalog::CatalogHandle;
use crate::config::{Provider, redirect_model};
use crate::dialect::Dialect;
use crate::error::{ErrorKind, GatewayError};
use crate::ingress::set_top_level_field;
use crate::request::{GatewayRequest, GatewayResponse, Target};

/// The wildcard group: a caller in it sees every provider.
pub const ALL_GROUPS: &str = "*";

/// The groups of a caller; an unauthenticated (embedder-trusted) caller is in the default group.
pub fn caller_groups(user: Option<&crate::config::User>) -> &[String] {
    static DEFAULT: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec![crate::config::DEFAULT_GROUP.to_owned()]);
    user.map_or(DEFAULT.as_slice(), |u| u.groups.as_slice())
}

/// Whether a caller with `caller_groups` may use a provider tagged `provider_groups`.
pub fn groups_overlap(caller_groups: &[String], provider_groups: &[String]) -> bool {
    caller_groups.iter().any(|g| g == ALL_GROUPS || provider_groups.contains(g))
}

/// Chooses one provider for `dialect` among `providers` visible to `caller_groups`.
pub fn select_provider(
    providers: &[Arc<Provider>],
    dialect: Dialect,
    caller_groups: &[String],
    rng: &mut impl Rng,
) -> Result<Arc<Provider>, GatewayError> {
    let mut best_priority = i32::MAX;
    let mut tier: Vec<&Arc<Provider>> = Vec::new();
    for p in providers {
        if !p.enabled
            || p.provider_type.native_dialect() != dialect
            || !groups_overlap(caller_groups, &p.groups)
        {
            continue;
        }
        if p.priority < best_priority {
            best_priority = p.priority;
            tier.clear();
        }
        if p.priority == best_priority {
            tier.push(p);
        }
    }
    if tier.is_empty() {
        return Err(GatewayError::new(
            ErrorKind::NoProvider,
            "no_provider_available",
            format!(
                "no enabled {} provider is available to this key's groups ({})",
                dialect,
                caller_groups.join(", ")
            ),
        ));
    }
    let total: u64 = tier.iter().map(|p| u64::from(p.weight)).sum();
    if total == 0 {
        return Ok(tier[rng.random_range(0..tier.len())].clone());
    }
    let mut pick = rng.random_range(0..total);
    for p in &tier {
        let w = u64::from(p.weight);
        if pick < w {
            return Ok((*p).clone());
        }
        pick -= w;
    }
    Ok(tier[tier.len() - 1].clone())
}

/// Adds [`RouterService`].
#[derive(Debug, Clone)]
pub struct RouterLayer {
    catalog: CatalogHandle,
}

impl RouterLayer {
    /// Routes among the providers of `catalog`.
    pub fn new(catalog: CatalogHandle) -> Self {
        Self { catalog }
    }
}

impl<S> Layer<S> for RouterLayer {
    type Service = RouterService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouterService { inner, catalog: self.catalog.clone() }
    }
}

/// Selects the provider and applies its model redirects.
#[derive(Debug, Clone)]
pub struct RouterService<S> {
    inner: S,
    catalog: CatalogHandle,
}

impl<S> RouterService<S> {
    fn route(&self, req: &mut GatewayRequest) -> Result<(), GatewayError> {
        let catalog = self.catalog.load();
        let user = req.ctx.user();
        let groups = caller_groups(user.as_deref());
        let provider = select_provider(catalog.providers(), req.dialect, groups, &mut rand::rng())?;
        let original = req.hints.model.clone();
        let redirected = original.as_deref().and_then(|m| redirect_model(&provider.model_redirects, m));
        let (forwarded_model, body) = match redirected {
            Some(to) if Some(to) != original.as_deref() => {
                let body = set_top_level_field(&req.body, "model", &serde_json::Value::from(to))?;
                (Some(to.to_owned()), body)
            }
            _ => (original.clone(), req.body.clone()),
        };
        req.ctx.update(|s| {
            s.provider = Some(provider.clone());
            s.original_model = original;
            s.forwarded_model = forwarded_model.clone();
        });
        req.target = Some(Target { provider, forwarded_model, body });
        Ok(())
    }
}

impl<S> Service<GatewayRequest> for RouterService<S>
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError>,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = Either<Ready<Result<GatewayResponse, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: GatewayRequest) -> Self::Future {
        match self.route(&mut req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderConfig, ProviderType};
    use rand::SeedableRng;

    fn provider(id: i64, priority: i32, weight: u32, groups: &[&str]) -> Arc<Provider> {
        let mut cfg = ProviderConfig::new(&format!("p{id}"), ProviderType::Claude, "http://127.0.0.1:1", "k");
        cfg.priority = priority;
        cfg.weight = weight;
        cfg.groups = groups.iter().map(|g| g.to_string()).collect();
        Arc::new(Provider::from_config(id, &cfg).expect("provider"))
    }

    fn counts(
        providers: &[Arc<Provider>],
        groups: &[&str],
        n: usize,
    ) -> std::collections::HashMap<i64, usize> {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut out = std::collections::HashMap::new();
        for _ in 0..n {
            let p = select_provider(providers, Dialect::Anthropic, &groups, &mut rng).expect("select");
            *out.entry(p.id).or_default() += 1;
        }
        out
    }

    #[test]
    fn lowest_priority_tier_wins() {
        let ps = vec![provider(1, 1, 100, &["default"]), provider(2, 0, 1, &["default"])];
        assert_eq!(counts(&ps, &["default"], 100).get(&2), Some(&100));
    }

    #[test]
    fn weights_split_traffic() {
        let ps = vec![provider(1, 0, 3, &["default"]), provider(2, 0, 1, &["default"])];
        let c = counts(&ps, &["default"], 4000);
        let share = c[&1] as f64 / 4000.0;
        assert!((0.72..0.78).contains(&share), "share {share}");
    }

    #[test]
    fn groups_isolate_and_star_sees_all() {
        let ps = vec![provider(1, 0, 1, &["team-a"]), provider(2, 0, 1, &["team-b"])];
        assert_eq!(counts(&ps, &["team-a"], 50).keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(counts(&ps, &["*"], 200).len(), 2);
        let err = select_provider(&ps, Dialect::Anthropic, &["team-c".into()], &mut rand::rng())
            .expect_err("no provider");
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn disabled_and_foreign_dialect_providers_are_skipped() {
        let mut disabled = (*provider(1, 0, 1, &["default"])).clone();
        disabled.enabled = false;
        let mut codex = (*provider(2, 0, 1, &["default"])).clone();
        codex.provider_type = ProviderType::Codex;
        let ps = vec![Arc::new(disabled), Arc::new(codex)];
        assert!(select_provider(&ps, Dialect::Anthropic, &["default".into()], &mut rand::rng()).is_err());
    }
}
