//! One conformance suite for every [`StateStore`]: each case in `cases` runs against the
//! `MemoryStateStore` and, with the `redis` feature, against a `RedisStateStore` on
//! `redis://127.0.0.1:6379`.
//!
//! Redis keeps its own clock, which a test cannot steer; so the cases use real time at short
//! durations (TTLs and open periods of a second or two), plus pure-logic parity: the same outcomes
//! driven through `BreakerRecord` and through the store must leave the same record.
//!
//! Every Redis test works under its own random key prefix, so the tests run in parallel, and
//! checks at its end that every key it left has a TTL before deleting them. Without a Redis the
//! Redis tests print why they skip, unless `CI=true`, where they fail.

use std::sync::Arc;
use std::time::Duration;

use gateway_core::route::breaker::{BreakerConfig, BreakerRecord, CircuitState};
use gateway_core::store::MemoryStateStore;
use gateway_core::store::state::{AttemptResult, RoutingView, StateStore};

mod common;

/// Two handles on one shared state, as two gateway replicas see it. For the memory store both
/// are the same store; for Redis they are two stores with their own connections.
pub struct Replicas {
    a: Arc<dyn StateStore>,
    b: Arc<dyn StateStore>,
}

fn now_local() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

async fn view(store: &dyn StateStore, session: Option<&str>, providers: &[i64]) -> RoutingView {
    store.routing_view(session, providers, None).await.expect("routing_view")
}

async fn binding(store: &dyn StateStore, session: &str) -> Option<i64> {
    view(store, Some(session), &[]).await.binding
}

async fn record(store: &dyn StateStore, provider: i64) -> (BreakerRecord, i64) {
    let v = view(store, None, &[provider]).await;
    (v.health[0].breaker.clone(), v.now_ms)
}

async fn acquire(store: &dyn StateStore, provider: i64, session: &str, limit: u32, ttl: Duration) -> bool {
    store.acquire_provider_session(provider, session, limit, ttl).await.expect("acquire_provider_session")
}

async fn fail(store: &dyn StateStore, provider: i64, cfg: BreakerConfig, reason: &str) {
    store.record_attempt(provider, cfg, AttemptResult::Failure, reason).await.expect("record failure");
}

async fn succeed(store: &dyn StateStore, provider: i64, cfg: BreakerConfig) {
    store.record_attempt(provider, cfg, AttemptResult::Success, "").await.expect("record success");
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The cases, each against any store.
pub mod cases {
    use super::*;

    /// Bind, read back (also from the other replica), rebind, refresh by rebinding, expire.
    pub async fn bindings(r: &Replicas) {
        let s = &*r.a;
        let ttl = Duration::from_millis(1500);
        assert_eq!(binding(s, "s1").await, None, "nothing bound yet");
        s.bind_session("s1", 7, ttl).await.expect("bind");
        assert_eq!(binding(s, "s1").await, Some(7));
        assert_eq!(binding(&*r.b, "s1").await, Some(7), "the other replica sees the binding");
        assert_eq!(binding(s, "s2").await, None, "other sessions are not bound");
        assert_eq!(view(s, None, &[]).await.binding, None, "no session, no binding");
        r.b.bind_session("s1", 8, ttl).await.expect("rebind");
        assert_eq!(binding(s, "s1").await, Some(8), "rebinding replaces the provider");
        // Rebinding refreshes the TTL: 2 s after the first bind, 1 s after the rebind.
        sleep_ms(1000).await;
        s.bind_session("s1", 8, ttl).await.expect("refresh");
        sleep_ms(1000).await;
        assert_eq!(binding(s, "s1").await, Some(8), "a refreshed binding outlives its first TTL");
        sleep_ms(1000).await;
        assert_eq!(binding(s, "s1").await, None, "the binding expired");
        s.bind_session("s3", 9, Duration::ZERO).await.expect("bind for no time");
        assert_eq!(binding(s, "s3").await, None, "a zero TTL keeps nothing");
    }

    async fn keep(store: &dyn StateStore, session: &str, ttl: Duration) -> Option<i64> {
        store.routing_view(Some(session), &[], Some(ttl)).await.expect("view").binding
    }

    /// A view with `keep_binding` refreshes a binding it finds (as a rebind to the same provider
    /// would), creates none, and a zero TTL keeps it for no time.
    pub async fn views_keep_bindings(r: &Replicas) {
        let s = &*r.a;
        let ttl = Duration::from_millis(1500);
        assert_eq!(keep(s, "k1", ttl).await, None, "nothing bound, nothing created");
        assert_eq!(binding(s, "k1").await, None);
        s.bind_session("k1", 7, ttl).await.expect("bind");
        sleep_ms(1000).await;
        assert_eq!(keep(&*r.b, "k1", ttl).await, Some(7), "the view answers the binding");
        sleep_ms(1000).await;
        assert_eq!(binding(s, "k1").await, Some(7), "the view refreshed the TTL");
        sleep_ms(1000).await;
        assert_eq!(binding(s, "k1").await, None, "a plain view does not refresh");
        s.bind_session("k2", 8, ttl).await.expect("bind");
        assert_eq!(keep(s, "k2", Duration::ZERO).await, Some(8), "read before it goes");
        assert_eq!(binding(s, "k2").await, None, "a zero TTL keeps nothing");
    }

    /// Distinct sessions per provider within the window; known sessions pass; entries expire.
    pub async fn provider_sessions(r: &Replicas) {
        let (s, other) = (&*r.a, &*r.b);
        let ttl = Duration::from_millis(2000);
        assert!(acquire(s, 1, "a", 2, ttl).await, "first session");
        assert!(acquire(other, 1, "a", 2, ttl).await, "the same session again does not count twice");
        assert!(acquire(other, 1, "b", 2, ttl).await, "second session");
        assert!(!acquire(s, 1, "c", 2, ttl).await, "third session refused");
        assert!(!acquire(other, 1, "c", 2, ttl).await, "still refused, on every replica");
        assert!(acquire(s, 1, "a", 2, ttl).await, "a session already counted is admitted");
        assert!(acquire(s, 2, "c", 2, ttl).await, "another provider is unaffected");
        for i in 0..20 {
            assert!(acquire(s, 3, &format!("u{i}"), 0, ttl).await, "limit 0 admits everyone");
        }
        // b seen again at 1.0 s; at 2.4 s a (last seen at 0) has left the window, b has not.
        sleep_ms(1000).await;
        assert!(acquire(s, 1, "b", 2, ttl).await, "known session refreshed");
        sleep_ms(1400).await;
        assert!(acquire(s, 1, "c", 2, ttl).await, "a expired, so c takes its place");
        assert!(!acquire(s, 1, "d", 2, ttl).await, "b and c fill the limit");
    }

    /// Closed → open → half-open → failed probe → open → half-open → closed, by real time.
    pub async fn breaker_cycle(r: &Replicas) {
        let (s, other) = (&*r.a, &*r.b);
        let cfg =
            BreakerConfig { failure_threshold: 2, open_duration_ms: 1000, half_open_success_threshold: 2 };
        let p = 5;
        fail(s, p, cfg, "e1").await;
        let st = s.breaker_status(p, cfg).await.expect("status");
        assert_eq!((st.state, st.failures, st.reason.as_deref()), (CircuitState::Closed, 1, Some("e1")));
        succeed(other, p, cfg).await;
        let st = s.breaker_status(p, cfg).await.expect("status");
        // A success resets the count but (as BreakerRecord does) keeps the last reason.
        assert_eq!((st.state, st.failures, st.reason.as_deref()), (CircuitState::Closed, 0, Some("e1")));
        fail(s, p, cfg, "e2").await;
        fail(other, p, cfg, "e3").await;
        let st = s.breaker_status(p, cfg).await.expect("status");
        assert_eq!((st.state, st.failures, st.reason.as_deref()), (CircuitState::Open, 2, Some("e3")));
        let opened = st.opened_at_ms.expect("opened_at while open");
        assert_eq!(st.open_until_ms, Some(opened + 1000));
        assert!((opened - now_local()).abs() < 5000, "opened on the (same machine's) server clock");
        let (rec, now) = record(other, p).await;
        assert_eq!(rec.state(&cfg, now), CircuitState::Open, "the view carries the open record");
        assert!(!rec.admits(&cfg, now));
        succeed(s, p, cfg).await;
        fail(s, p, cfg, "e4").await;
        let st = s.breaker_status(p, cfg).await.expect("status");
        assert_eq!(
            (st.state, st.failures, st.opened_at_ms),
            (CircuitState::Open, 3, Some(opened)),
            "while open a success changes nothing and a failure only counts"
        );
        sleep_ms(1200).await;
        let st = other.breaker_status(p, cfg).await.expect("status");
        assert_eq!(st.state, CircuitState::HalfOpen, "open period over");
        fail(s, p, cfg, "probe failed").await;
        let st = s.breaker_status(p, cfg).await.expect("status");
        assert_eq!((st.state, st.failures), (CircuitState::Open, 4), "a failed probe opens it again");
        assert!(st.opened_at_ms.expect("reopened") > opened, "for a full new period");
        sleep_ms(1200).await;
        succeed(s, p, cfg).await;
        let (rec, now) = record(s, p).await;
        assert_eq!((rec.state(&cfg, now), rec.half_open_successes), (CircuitState::HalfOpen, 1));
        succeed(other, p, cfg).await;
        let st = s.breaker_status(p, cfg).await.expect("status");
        assert_eq!((st.state, st.failures, st.reason), (CircuitState::Closed, 0, None));
        assert_eq!(record(s, p).await.0, BreakerRecord::default(), "a closed breaker is no record");
    }

    /// Threshold 0 disables the breaker; the state comes from the config at read time.
    pub async fn breaker_threshold_zero(r: &Replicas) {
        let s = &*r.a;
        let off =
            BreakerConfig { failure_threshold: 0, open_duration_ms: 60_000, half_open_success_threshold: 1 };
        for _ in 0..20 {
            fail(s, 1, off, "x").await;
        }
        let st = s.breaker_status(1, off).await.expect("status");
        assert_eq!((st.state, st.failures, st.reason), (CircuitState::Closed, 0, None));
        assert_eq!(record(s, 1).await.0, BreakerRecord::default(), "failures leave no trace");
        // Opened under threshold 1, then read and driven under threshold 0: same as BreakerRecord.
        let on = BreakerConfig { failure_threshold: 1, ..off };
        fail(s, 2, on, "y").await;
        assert_eq!(s.breaker_status(2, on).await.expect("status").state, CircuitState::Open);
        assert_eq!(s.breaker_status(2, off).await.expect("status").state, CircuitState::Closed);
        succeed(s, 2, off).await;
        let (rec, _) = record(s, 2).await;
        let mut expected = BreakerRecord::default();
        expected.on_failure(&on, 0, "y");
        expected.on_success(&off, 1);
        assert_eq!(
            (rec.failures, rec.half_open_successes, rec.opened_at_ms.is_some(), rec.last_failure),
            (
                expected.failures,
                expected.half_open_successes,
                expected.opened_at_ms.is_some(),
                expected.last_failure
            )
        );
    }

    /// Reset closes the breaker and clears the cooldown.
    pub async fn reset(r: &Replicas) {
        let s = &*r.a;
        let cfg =
            BreakerConfig { failure_threshold: 1, open_duration_ms: 60_000, half_open_success_threshold: 1 };
        fail(s, 3, cfg, "down").await;
        let now = view(s, None, &[]).await.now_ms;
        s.set_cooldown(3, now + 60_000).await.expect("cooldown");
        let v = view(s, None, &[3]).await;
        assert!(v.health[0].cooldown_until_ms.is_some() && v.health[0].breaker.opened_at_ms.is_some());
        r.b.reset_breaker(3).await.expect("reset");
        let st = s.breaker_status(3, cfg).await.expect("status");
        assert_eq!((st.state, st.failures, st.reason), (CircuitState::Closed, 0, None));
        let v = view(s, None, &[3]).await;
        assert_eq!(
            (v.health[0].breaker.clone(), v.health[0].cooldown_until_ms),
            (BreakerRecord::default(), None)
        );
        s.reset_breaker(4).await.expect("resetting an unknown provider is fine");
    }

    /// Cooldowns show until they end; later calls overwrite; past ones are none.
    pub async fn cooldowns(r: &Replicas) {
        let s = &*r.a;
        let now = view(s, None, &[]).await.now_ms;
        s.set_cooldown(1, now + 1000).await.expect("cooldown");
        s.set_cooldown(2, now - 1).await.expect("cooldown in the past");
        let v = view(&*r.b, None, &[1, 2, 3]).await;
        let got: Vec<_> = v.health.iter().map(|h| h.cooldown_until_ms).collect();
        assert_eq!(got, vec![Some(now + 1000), None, None]);
        s.set_cooldown(1, now + 60_000).await.expect("longer");
        assert_eq!(view(s, None, &[1]).await.health[0].cooldown_until_ms, Some(now + 60_000));
        s.set_cooldown(1, now + 1000).await.expect("shorter");
        assert_eq!(
            view(s, None, &[1]).await.health[0].cooldown_until_ms,
            Some(now + 1000),
            "the last call wins"
        );
        s.set_cooldown(5, i64::MAX).await.expect("a cooldown without end");
        assert_eq!(view(s, None, &[5]).await.health[0].cooldown_until_ms, Some(i64::MAX));
        sleep_ms(1200).await;
        assert_eq!(view(s, None, &[1]).await.health[0].cooldown_until_ms, None, "the cooldown ended");
    }

    /// One call returns the binding, each asked provider's health in order, and the time.
    pub async fn routing_view_in_order(r: &Replicas) {
        let s = &*r.a;
        let cfg =
            BreakerConfig { failure_threshold: 1, open_duration_ms: 60_000, half_open_success_threshold: 1 };
        s.bind_session("sess", 20, Duration::from_secs(60)).await.expect("bind");
        fail(s, 10, cfg, "boom").await;
        let now = view(s, None, &[]).await.now_ms;
        s.set_cooldown(20, now + 30_000).await.expect("cooldown");
        let v = view(&*r.b, Some("sess"), &[30, 10, 999, 20, 10]).await;
        assert_eq!(v.binding, Some(20));
        assert!((v.now_ms - now_local()).abs() < 5000, "now_ms is epoch milliseconds");
        assert!(v.now_ms >= now, "time does not go back");
        assert_eq!(v.health.len(), 5, "one entry per asked provider, duplicates included");
        let opened: Vec<bool> = v.health.iter().map(|h| h.breaker.opened_at_ms.is_some()).collect();
        assert_eq!(opened, vec![false, true, false, false, true]);
        assert_eq!(v.health[1].breaker.last_failure.as_deref(), Some("boom"));
        let cooling: Vec<_> = v.health.iter().map(|h| h.cooldown_until_ms).collect();
        assert_eq!(cooling, vec![None, None, None, Some(now + 30_000), None]);
        assert_eq!(v.health[2].breaker, BreakerRecord::default(), "unknown providers are healthy");
        let empty = view(s, None, &[]).await;
        assert!(empty.binding.is_none() && empty.health.is_empty());
    }

    /// 50 sessions race for 10 places on one provider, through both replicas: exactly 10 win.
    pub async fn concurrent_acquire(r: &Replicas) {
        let ttl = Duration::from_secs(30);
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = if i % 2 == 0 { r.a.clone() } else { r.b.clone() };
                tokio::spawn(async move {
                    let admitted = store.acquire_provider_session(42, &format!("s{i}"), 10, ttl).await;
                    (i, admitted.expect("acquire"))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (i, admitted) = task.await.expect("task");
            if admitted {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 10, "admitted: {winners:?}");
        for i in 0..50 {
            let again = acquire(&*r.a, 42, &format!("s{i}"), 10, ttl).await;
            assert_eq!(again, winners.contains(&i), "session s{i}: winners stay in, losers stay out");
        }
    }

    /// The same outcomes through `BreakerRecord` and through the store leave the same record.
    /// Open periods of 0 (half-open at once) and of an hour (open throughout) make the
    /// transitions independent of when exactly the store ran them.
    pub async fn breaker_parity(r: &Replicas) {
        use rand::{Rng, SeedableRng};
        let configs = [
            BreakerConfig { failure_threshold: 3, open_duration_ms: 0, half_open_success_threshold: 2 },
            BreakerConfig { failure_threshold: 1, open_duration_ms: 0, half_open_success_threshold: 1 },
            BreakerConfig {
                failure_threshold: 2,
                open_duration_ms: 3_600_000,
                half_open_success_threshold: 3,
            },
            BreakerConfig { failure_threshold: 0, open_duration_ms: 0, half_open_success_threshold: 1 },
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let long_reason = "é".repeat(400);
        for (n, cfg) in configs.into_iter().enumerate() {
            let provider = 100 + i64::try_from(n).unwrap_or_default();
            let mut local = BreakerRecord::default();
            for step in 0..60 {
                let store = if rng.random_bool(0.5) { &*r.a } else { &*r.b };
                let failure = rng.random_bool(0.6);
                let reason = if step % 7 == 0 { long_reason.clone() } else { format!("fail {step}") };
                if failure {
                    fail(store, provider, cfg, &reason).await;
                } else {
                    succeed(store, provider, cfg).await;
                }
                let (remote, now) = record(store, provider).await;
                if failure {
                    local.on_failure(&cfg, now, &reason);
                } else {
                    local.on_success(&cfg, now);
                }
                let ctx = format!("config {n}, step {step}, failure {failure}");
                assert_eq!(remote.state(&cfg, now), local.state(&cfg, now), "{ctx}");
                assert_eq!(
                    (remote.failures, remote.half_open_successes, remote.opened_at_ms.is_some()),
                    (local.failures, local.half_open_successes, local.opened_at_ms.is_some()),
                    "{ctx}"
                );
                assert_eq!(remote.last_failure, local.last_failure, "{ctx}");
                let status = store.breaker_status(provider, cfg).await.expect("status");
                assert_eq!(
                    (status.state, status.failures),
                    (local.state(&cfg, now), local.failures),
                    "{ctx}"
                );
            }
        }
    }
}

/// Runs every case against every store.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = MemoryStateStore::new();
                    let replicas = Replicas { a: Arc::new(store.clone()), b: Arc::new(store) };
                    cases::$case(&replicas).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(fixture) = redis_fixture::Fixture::new(stringify!($case)).await else { return };
                    cases::$case(&fixture.replicas).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

conformance!(
    bindings,
    views_keep_bindings,
    provider_sessions,
    breaker_cycle,
    breaker_threshold_zero,
    reset,
    cooldowns,
    routing_view_in_order,
    concurrent_acquire,
    breaker_parity,
);

#[cfg(feature = "redis")]
mod redis_fixture {
    use super::*;
    use crate::common::redis_fixture::{RedisPrefix, URL};
    use gateway_core::store::RedisStateStore;

    /// Two replicas on one fresh key prefix.
    pub struct Fixture {
        pub replicas: Replicas,
        redis: RedisPrefix,
    }

    impl std::ops::Deref for Fixture {
        type Target = RedisPrefix;
        fn deref(&self) -> &RedisPrefix {
            &self.redis
        }
    }

    impl std::ops::DerefMut for Fixture {
        fn deref_mut(&mut self) -> &mut RedisPrefix {
            &mut self.redis
        }
    }

    impl Fixture {
        pub async fn new(test: &str) -> Option<Self> {
            let redis = RedisPrefix::new(test).await?;
            let a = RedisStateStore::connect(URL, redis.options()).await.expect("connect a");
            let b = RedisStateStore::connect(URL, redis.options()).await.expect("connect b");
            Some(Self { replicas: Replicas { a: Arc::new(a), b: Arc::new(b) }, redis })
        }

        /// Checks that every key left has a TTL, then deletes them.
        pub async fn finish(self) {
            self.redis.finish().await;
        }
    }
}

#[cfg(feature = "redis")]
mod redis_only {
    use std::time::Instant;

    use super::*;
    use crate::common::redis_fixture::PrivateRedis;
    use gateway_core::store::{RedisStateOptions, RedisStateStore};

    /// Every kind of key gets a TTL matching what it holds.
    #[tokio::test]
    async fn every_key_expires() {
        let Some(mut fixture) = redis_fixture::Fixture::new("every_key_expires").await else { return };
        let s = fixture.replicas.a.clone();
        let open =
            BreakerConfig { failure_threshold: 1, open_duration_ms: 90_000, half_open_success_threshold: 1 };
        let closed = BreakerConfig { failure_threshold: 5, ..open };
        s.bind_session("k", 1, Duration::from_secs(300)).await.expect("bind");
        s.acquire_provider_session(1, "k", 3, Duration::from_secs(300)).await.expect("acquire");
        s.record_attempt(1, open, AttemptResult::Failure, "open").await.expect("open breaker");
        s.record_attempt(2, closed, AttemptResult::Failure, "one failure").await.expect("closed record");
        let now = s.routing_view(None, &[], None).await.expect("view").now_ms;
        s.set_cooldown(1, now + 120_000).await.expect("cooldown");
        let keys = fixture.keys().await;
        assert_eq!(keys.len(), 5, "bind, sessions, 2 breakers, cooldown: {keys:?}");
        let p = &fixture.prefix;
        let day = 24 * 3600 * 1000;
        let expect = [
            (format!("{p}{{s:k}}:bind"), 290_000, 300_000),
            (format!("{p}{{p:1}}:sessions"), 290_000, 300_000),
            (format!("{p}{{p:1}}:breaker"), day + 80_000, day + 90_000),
            (format!("{p}{{p:2}}:breaker"), day + 80_000, day + 90_000),
            (format!("{p}{{p:1}}:cooldown"), 110_000, 120_000),
        ];
        for (key, min, max) in expect {
            let ttl: i64 = fixture.pttl(&key).await;
            assert!((min..=max).contains(&ttl), "{key}: PTTL {ttl} not in {min}..={max}");
        }
        fixture.finish().await;
    }

    /// Scripts run by hash; after `SCRIPT FLUSH` (a restarted Redis) they are loaded again.
    #[tokio::test]
    async fn scripts_reload_after_flush() {
        let Some(mut fixture) = redis_fixture::Fixture::new("scripts_reload_after_flush").await else {
            return;
        };
        let s = fixture.replicas.a.clone();
        assert!(s.acquire_provider_session(1, "x", 1, Duration::from_secs(5)).await.expect("before"));
        fixture.flush_scripts().await;
        assert!(s.acquire_provider_session(1, "x", 1, Duration::from_secs(5)).await.expect("after NOSCRIPT"));
        assert!(!s.acquire_provider_session(1, "y", 1, Duration::from_secs(5)).await.expect("state kept"));
        fixture.finish().await;
    }

    /// Clients connected to the Redis at `url`, counting the one that asks.
    async fn connected_clients(url: &str) -> usize {
        let client = redis::Client::open(url).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        let info: String = redis::cmd("INFO").arg("clients").query_async(&mut conn).await.expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("connected_clients")
    }

    /// A single-threaded runtime uses a connection of its own (its driver task runs there), opened
    /// once; callers on a multi-threaded runtime share the store's first one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_threaded_runtimes_get_a_connection_of_their_own() {
        let port = crate::common::redis_fixture::free_port();
        let Some(_server) = PrivateRedis::start(port) else {
            assert!(std::env::var("CI").is_err(), "CI: cannot start redis-server");
            eprintln!(
                "skipping single_threaded_runtimes_get_a_connection_of_their_own: cannot start redis-server"
            );
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let options =
            RedisStateOptions { prefix: "gwtest:runtimes:".to_owned(), ..RedisStateOptions::default() };
        let store = Arc::new(RedisStateStore::connect(&url, options).await.expect("store"));
        store.bind_session("m", 1, Duration::from_secs(60)).await.expect("shared connection");
        let shared_only = connected_clients(&url).await;
        let spawned = tokio::spawn({
            let store = store.clone();
            async move { store.bind_session("m2", 1, Duration::from_secs(60)).await }
        });
        spawned.await.expect("task").expect("another worker thread, the same connection");
        assert_eq!(connected_clients(&url).await, shared_only);

        let on_its_own_runtime = std::thread::spawn({
            let (store, url) = (store.clone(), url.clone());
            move || {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async move {
                    for n in 0..3 {
                        store.bind_session(&format!("t{n}"), 1, Duration::from_secs(60)).await.expect("bind");
                    }
                    connected_clients(&url).await
                })
            }
        });
        let count = tokio::task::spawn_blocking(move || on_its_own_runtime.join().expect("thread"))
            .await
            .expect("join");
        assert_eq!(count, shared_only + 1, "one more connection, reused by all three calls");
    }

    /// Redis goes away and comes back: calls fail meanwhile, then work again by themselves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnects_after_a_restart() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let Some(mut server) = PrivateRedis::start(port) else {
            eprintln!("skipping reconnects_after_a_restart: cannot start redis-server");
            return;
        };
        let timeout = Duration::from_secs(1);
        let options = RedisStateOptions { prefix: "gwtest:restart:".to_owned(), timeout, clock: None };
        let store = RedisStateStore::connect(&format!("redis://127.0.0.1:{}", server.port), options)
            .await
            .expect("store");
        store.bind_session("r", 1, Duration::from_secs(60)).await.expect("Redis up");
        server.stop();
        let started = Instant::now();
        assert!(store.routing_view(Some("r"), &[1], None).await.is_err(), "Redis down");
        assert!(started.elapsed() < timeout + Duration::from_millis(800));
        let _server = PrivateRedis::start(port).expect("restart redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if store.bind_session("r", 2, Duration::from_secs(60)).await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "the store did not reconnect");
            sleep_ms(100).await;
        }
        let view = store.routing_view(Some("r"), &[1], None).await.expect("reconnected");
        assert_eq!(view.binding, Some(2));
    }

    /// Runs every operation and checks each fails (not hangs) within the timeout plus slack.
    async fn every_call_fails_quickly(store: &RedisStateStore, timeout: Duration) {
        let cfg =
            BreakerConfig { failure_threshold: 1, open_duration_ms: 1000, half_open_success_threshold: 1 };
        let bound = timeout + Duration::from_millis(800);
        macro_rules! check {
            ($what:expr, $call:expr) => {{
                let started = Instant::now();
                let result = tokio::time::timeout(Duration::from_secs(10), $call).await.expect("never hangs");
                let took = started.elapsed();
                assert!(result.is_err(), "{} succeeded without Redis", $what);
                assert!(took < bound, "{} took {took:?}", $what);
            }};
        }
        check!("routing_view", store.routing_view(Some("s"), &[1, 2], None));
        check!("acquire_provider_session", store.acquire_provider_session(1, "s", 1, Duration::from_secs(1)));
        check!("record_attempt", store.record_attempt(1, cfg, AttemptResult::Failure, "x"));
        check!("bind_session", store.bind_session("s", 1, Duration::from_secs(1)));
        check!("set_cooldown", store.set_cooldown(1, 0));
        check!("breaker_status", store.breaker_status(1, cfg));
        check!("reset_breaker", store.reset_breaker(1));
    }

    /// A closed port: the store is built anyway and every call fails at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_redis_fails_fast() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let options = RedisStateOptions { prefix: "gw:".to_owned(), timeout, clock: None };
        let store = RedisStateStore::connect(&format!("redis://127.0.0.1:{port}"), options)
            .await
            .expect("an unreachable Redis does not stop the store from being built");
        assert!(
            started.elapsed() < timeout + Duration::from_millis(800),
            "connect took {:?}",
            started.elapsed()
        );
        every_call_fails_quickly(&store, timeout).await;
        // After the backoff the store tries again, and again fails within the timeout.
        sleep_ms(1100).await;
        every_call_fails_quickly(&store, timeout).await;
        assert!(RedisStateStore::connect("not a url", RedisStateOptions::default()).await.is_err());
    }

    /// A server that accepts connections and never answers: calls time out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_redis_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let timeout = Duration::from_millis(200);
        let options = RedisStateOptions { prefix: "gw:".to_owned(), timeout, clock: None };
        let store =
            RedisStateStore::connect(&format!("redis://127.0.0.1:{port}"), options).await.expect("store");
        every_call_fails_quickly(&store, timeout).await;
        sleep_ms(1100).await;
        let started = Instant::now();
        let err = store.routing_view(None, &[1], None).await.expect_err("no answer");
        assert!(started.elapsed() >= timeout - Duration::from_millis(20), "waited for the timeout: {err}");
        assert!(err.to_string().contains("no answer"), "{err}");
        every_call_fails_quickly(&store, timeout).await;
        hold.abort();
    }
}
