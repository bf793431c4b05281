//! Hot shared state of routing: session bindings, per-provider active sessions, circuit
//! breakers and `Retry-After` cooldowns. One trait; the in-memory store here serves a single
//! process, a Redis store (feature `redis`) serves replicas. Calls are batched so that a request
//! costs at most one round trip before it is forwarded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::future::{BoxFuture, ready};
use parking_lot::Mutex;

use crate::config::Id;
use crate::limit::memory::LimitBook;
use crate::limit::spec::Subject;
use crate::limit::state::{Admission, AdmissionCheck, SpendRecord, SpendSnapshot};
use crate::route::breaker::{BreakerConfig, BreakerRecord, BreakerStatus};

/// Milliseconds since the Unix epoch.
pub type EpochMs = i64;

/// A source of time; tests use [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> EpochMs;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> EpochMs {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: EpochMs) -> Self {
        Self(AtomicI64::new(start_ms))
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set(&self, ms: EpochMs) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> EpochMs {
        self.0.load(Ordering::SeqCst)
    }
}

/// Failure of the state backend (e.g. Redis unreachable). Routing fails open on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StateError(pub String);

/// What routing needs to know before choosing, fetched in one call.
#[derive(Debug, Clone, Default)]
pub struct RoutingView {
    /// The provider the session is bound to, if any.
    pub binding: Option<Id>,
    /// Health of the asked providers, in the order asked.
    pub health: Vec<ProviderHealth>,
    /// The store's "now", so time windows agree across replicas.
    pub now_ms: EpochMs,
}

/// One provider's routing health.
#[derive(Debug, Clone, Default)]
pub struct ProviderHealth {
    /// Its breaker record.
    pub breaker: BreakerRecord,
    /// Kept out of selection until then (from `Retry-After`).
    pub cooldown_until_ms: Option<EpochMs>,
}

/// The outcome of one provider attempt, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The provider answered well.
    Success,
    /// The provider failed in a way that counts toward opening its circuit.
    Failure,
}

/// Hot shared routing state.
pub trait StateStore: Send + Sync + std::fmt::Debug + 'static {
    /// The session's binding and the health of `providers`. With `keep_binding`, a binding found
    /// is kept that long from now, as [`Self::bind_session`] to the same provider would: a
    /// session that stays on its provider then needs no write of its own (with Redis, no round
    /// trip beyond this read).
    fn routing_view<'a>(
        &'a self,
        session: Option<&'a str>,
        providers: &'a [Id],
        keep_binding: Option<Duration>,
    ) -> BoxFuture<'a, Result<RoutingView, StateError>>;

    /// Admits `session` on `provider` if fewer than `limit` other sessions were active there in
    /// the last `ttl`; a session already active is always admitted. Marks it active.
    fn acquire_provider_session<'a>(
        &'a self,
        provider: Id,
        session: &'a str,
        limit: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StateError>>;

    /// Records an attempt's outcome on the provider's breaker.
    fn record_attempt<'a>(
        &'a self,
        provider: Id,
        cfg: BreakerConfig,
        result: AttemptResult,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Binds (or rebinds, refreshing the TTL) a session to a provider.
    fn bind_session<'a>(
        &'a self,
        session: &'a str,
        provider: Id,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Keeps a provider out of selection until `until_ms`.
    fn set_cooldown(&self, provider: Id, until_ms: EpochMs) -> BoxFuture<'_, Result<(), StateError>>;

    /// The breaker status of a provider.
    fn breaker_status(
        &self,
        provider: Id,
        cfg: BreakerConfig,
    ) -> BoxFuture<'_, Result<BreakerStatus, StateError>>;

    /// Closes a provider's breaker and clears its cooldown.
    fn reset_breaker(&self, provider: Id) -> BoxFuture<'_, Result<(), StateError>>;

    /// One atomic admission against the limits in `check` (see [`crate::limit::state`]): checks
    /// every window, and only when all pass counts the request (RPM) and its session
    /// (concurrency).
    fn admit<'a>(&'a self, check: &'a AdmissionCheck) -> BoxFuture<'a, Result<Admission, StateError>>;

    /// [`Self::admit`] and [`Self::routing_view`] together; stores with round trips answer both
    /// with one.
    fn admit_and_view<'a>(
        &'a self,
        check: &'a AdmissionCheck,
        session: Option<&'a str>,
        providers: &'a [Id],
        keep_binding: Option<Duration>,
    ) -> BoxFuture<'a, (Result<Admission, StateError>, Result<RoutingView, StateError>)> {
        Box::pin(async move {
            let admission = self.admit(check).await;
            (admission, self.routing_view(session, providers, keep_binding).await)
        })
    }

    /// Adds finished requests' spend to their subjects' windows.
    fn add_spend<'a>(&'a self, records: &'a [SpendRecord]) -> BoxFuture<'a, Result<(), StateError>>;

    /// Replaces subjects' windows with ones rebuilt from the request log, marking them loaded.
    fn warm_spend<'a>(&'a self, snapshots: &'a [SpendSnapshot]) -> BoxFuture<'a, Result<(), StateError>>;

    /// Marks subjects' windows as unknown, so the next admission rebuilds them (after spend
    /// could not be added, or a manual reset).
    fn invalidate_spend<'a>(&'a self, subjects: &'a [Subject]) -> BoxFuture<'a, Result<(), StateError>>;
}

#[derive(Debug, Default)]
struct MemoryState {
    bindings: HashMap<String, (Id, EpochMs)>,
    breakers: HashMap<Id, BreakerRecord>,
    cooldowns: HashMap<Id, EpochMs>,
    /// provider → session → last seen.
    active_sessions: HashMap<Id, HashMap<String, EpochMs>>,
    limits: LimitBook,
}

/// In-process state for a single gateway.
#[derive(Debug, Clone)]
pub struct MemoryStateStore {
    state: Arc<Mutex<MemoryState>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryStateStore {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

/// Bindings and active-session entries older than this are swept while the store is used, so
/// memory stays bounded by the traffic of the last few TTLs.
const SWEEP_EVERY: usize = 4096;

impl MemoryStateStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store on the given clock.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self { state: Arc::new(Mutex::new(MemoryState::default())), clock }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl StateStore for MemoryStateStore {
    fn routing_view<'a>(
        &'a self,
        session: Option<&'a str>,
        providers: &'a [Id],
        keep_binding: Option<Duration>,
    ) -> BoxFuture<'a, Result<RoutingView, StateError>> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        let binding = session
            .and_then(|s| state.bindings.get_mut(s))
            .filter(|(_, expires)| *expires > now)
            .map(|(id, expires)| {
                if let Some(ttl) = keep_binding {
                    *expires = now.saturating_add(ms(ttl));
                }
                *id
            });
        let health = providers
            .iter()
            .map(|id| ProviderHealth {
                breaker: state.breakers.get(id).cloned().unwrap_or_default(),
                cooldown_until_ms: state.cooldowns.get(id).copied().filter(|t| *t > now),
            })
            .collect();
        Box::pin(ready(Ok(RoutingView { binding, health, now_ms: now })))
    }

    fn acquire_provider_session<'a>(
        &'a self,
        provider: Id,
        session: &'a str,
        limit: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        let sessions = state.active_sessions.entry(provider).or_default();
        let horizon = now - ms(ttl);
        sessions.retain(|_, seen| *seen > horizon);
        let admitted = limit == 0 || sessions.contains_key(session) || sessions.len() < limit as usize;
        if admitted {
            sessions.insert(session.to_owned(), now);
        }
        Box::pin(ready(Ok(admitted)))
    }

    fn record_attempt<'a>(
        &'a self,
        provider: Id,
        cfg: BreakerConfig,
        result: AttemptResult,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        let record = state.breakers.entry(provider).or_default();
        match result {
            AttemptResult::Success => record.on_success(&cfg, now),
            AttemptResult::Failure => record.on_failure(&cfg, now, reason),
        }
        if *record == BreakerRecord::default() {
            state.breakers.remove(&provider);
        }
        Box::pin(ready(Ok(())))
    }

    fn bind_session<'a>(
        &'a self,
        session: &'a str,
        provider: Id,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        state.bindings.insert(session.to_owned(), (provider, now + ms(ttl)));
        if state.bindings.len().is_multiple_of(SWEEP_EVERY) {
            state.bindings.retain(|_, (_, expires)| *expires > now);
        }
        Box::pin(ready(Ok(())))
    }

    fn set_cooldown(&self, provider: Id, until_ms: EpochMs) -> BoxFuture<'_, Result<(), StateError>> {
        self.state.lock().cooldowns.insert(provider, until_ms);
        Box::pin(ready(Ok(())))
    }

    fn breaker_status(
        &self,
        provider: Id,
        cfg: BreakerConfig,
    ) -> BoxFuture<'_, Result<BreakerStatus, StateError>> {
        let now = self.clock.now_ms();
        let record = self.state.lock().breakers.get(&provider).cloned().unwrap_or_default();
        Box::pin(ready(Ok(BreakerStatus::of(&record, &cfg, now))))
    }

    fn reset_breaker(&self, provider: Id) -> BoxFuture<'_, Result<(), StateError>> {
        let mut state = self.state.lock();
        state.breakers.remove(&provider);
        state.cooldowns.remove(&provider);
        Box::pin(ready(Ok(())))
    }

    fn admit<'a>(&'a self, check: &'a AdmissionCheck) -> BoxFuture<'a, Result<Admission, StateError>> {
        let now = self.clock.now_ms();
        let admission = self.state.lock().limits.admit(check, now);
        Box::pin(ready(Ok(admission)))
    }

    fn add_spend<'a>(&'a self, records: &'a [SpendRecord]) -> BoxFuture<'a, Result<(), StateError>> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        for record in records {
            state.limits.add_spend(record, now);
        }
        Box::pin(ready(Ok(())))
    }

    fn warm_spend<'a>(&'a self, snapshots: &'a [SpendSnapshot]) -> BoxFuture<'a, Result<(), StateError>> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        for snapshot in snapshots {
            state.limits.warm(snapshot, now);
        }
        Box::pin(ready(Ok(())))
    }

    fn invalidate_spend<'a>(&'a self, subjects: &'a [Subject]) -> BoxFuture<'a, Result<(), StateError>> {
        let mut state = self.state.lock();
        for subject in subjects {
            state.limits.invalidate(*subject);
        }
        Box::pin(ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn provider_sessions_are_distinct_and_expire() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = MemoryStateStore::with_clock(clock.clone());
        let ttl = Duration::from_secs(300);
        assert!(store.acquire_provider_session(1, "a", 2, ttl).await.expect("ok"));
        assert!(store.acquire_provider_session(1, "b", 2, ttl).await.expect("ok"));
        assert!(!store.acquire_provider_session(1, "c", 2, ttl).await.expect("ok"), "third session refused");
        assert!(store.acquire_provider_session(1, "a", 2, ttl).await.expect("ok"), "known session admitted");
        assert!(
            store.acquire_provider_session(2, "c", 2, ttl).await.expect("ok"),
            "other provider unaffected"
        );
        clock.advance(Duration::from_secs(301));
        assert!(store.acquire_provider_session(1, "c", 2, ttl).await.expect("ok"), "old sessions expired");
    }

    #[tokio::test]
    async fn bindings_expire_and_cooldowns_show_in_the_view() {
        let clock = Arc::new(ManualClock::new(0));
        let store = MemoryStateStore::with_clock(clock.clone());
        store.bind_session("s", 7, Duration::from_secs(300)).await.expect("bind");
        store.set_cooldown(7, 10_000).await.expect("cooldown");
        let view = store.routing_view(Some("s"), &[7, 8], None).await.expect("view");
        assert_eq!(view.binding, Some(7));
        assert_eq!(view.health[0].cooldown_until_ms, Some(10_000));
        assert_eq!(view.health[1].cooldown_until_ms, None);
        clock.advance(Duration::from_secs(301));
        let view = store.routing_view(Some("s"), &[7], None).await.expect("view");
        assert_eq!(view.binding, None);
        assert_eq!(view.health[0].cooldown_until_ms, None);
    }
}
