//! One conformance suite for the limit methods of every [`StateStore`] (`admit`,
//! `admit_and_view`, `add_spend`, `warm_spend`, `invalidate_spend`): each case in `cases` runs
//! against the `MemoryStateStore` and, with the `redis` feature, against a `RedisStateStore` on
//! `redis://127.0.0.1:6379`. Both run on a `ManualClock` (the Redis store's test clock), so the
//! cases step over minutes, hours and days exactly.
//!
//! On top of the shared cases, `redis_only::differential` drives both stores with the same long
//! random sequence of operations and requires the same answer at every step.
//!
//! Every Redis test works under its own random key prefix and checks at its end that every key it
//! left has a TTL. Without a Redis the Redis tests print why they skip, unless `CI=true`, where
//! they fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono_tz::Tz;
use gateway_core::limit::spec::SpendFrame;
use gateway_core::limit::state::REQUEST_ID_MEMORY_MS;
use gateway_core::limit::window::{
    DAY_MS, FIVE_HOURS_MS, RPM_WINDOW_MS, ResetTime, WindowMode, rolling_leaves_at,
};
use gateway_core::limit::{
    Admission, AdmissionCheck, LimitHit, LimitKind, Limits, SpendRecord, SpendSnapshot, SpendWindow, Subject,
    SubjectCheck,
};
use gateway_core::store::state::StateStore;
use gateway_core::store::{ManualClock, MemoryStateStore};
use gateway_core::usage::UsdNanos;

mod common;

/// Wednesday 2025-01-15 12:00:00 UTC.
const T0: i64 = 1_736_942_400_000;
const HOUR: i64 = 3_600_000;
const TZ: Tz = chrono_tz::UTC;
const SESSION_TTL: i64 = 300_000;

fn utc(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")).timestamp_millis()
}

fn usd(n: i64) -> Option<UsdNanos> {
    Some(UsdNanos(n))
}

/// A subject's check at `now`, as `LimitEngine` builds it.
fn subject_check(subject: Subject, limits: &Limits, now: i64) -> SubjectCheck {
    let spend: Vec<_> = limits.spend_windows().collect();
    let (shape, frame) = if spend.is_empty() {
        (String::new(), SpendFrame::default())
    } else {
        (limits.shape(TZ), limits.frame(now, TZ))
    };
    SubjectCheck {
        subject,
        rpm: limits.rpm_limit,
        concurrent_sessions: limits.limit_concurrent_sessions,
        spend,
        shape,
        frame,
    }
}

fn next_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("req-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A store and the clock it runs on.
#[derive(Clone)]
pub struct Env {
    store: Arc<dyn StateStore>,
    clock: Arc<ManualClock>,
}

impl Env {
    fn memory() -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        Self { store: Arc::new(MemoryStateStore::with_clock(clock.clone())), clock }
    }

    fn now(&self) -> i64 {
        use gateway_core::store::Clock;
        self.clock.now_ms()
    }

    fn set(&self, at: i64) {
        self.clock.set(at);
    }

    fn advance(&self, ms: i64) {
        self.clock.advance(Duration::from_millis(u64::try_from(ms).expect("forward")));
    }

    fn check(
        &self,
        subjects: &[(Subject, &Limits)],
        providers: &[(Subject, &Limits)],
        session: Option<&str>,
    ) -> AdmissionCheck {
        let now = self.now();
        AdmissionCheck {
            request_id: next_request_id(),
            session: session.map(str::to_owned),
            session_ttl_ms: SESSION_TTL,
            subjects: subjects.iter().map(|(s, l)| subject_check(*s, l, now)).collect(),
            providers: providers.iter().map(|(s, l)| subject_check(*s, l, now)).collect(),
        }
    }

    async fn admit_check(&self, check: &AdmissionCheck) -> Admission {
        self.store.admit(check).await.expect("admit")
    }

    async fn admit(
        &self,
        subjects: &[(Subject, &Limits)],
        providers: &[(Subject, &Limits)],
        session: Option<&str>,
    ) -> Admission {
        self.admit_check(&self.check(subjects, providers, session)).await
    }

    /// Spend of a request that arrived now.
    async fn spend(&self, subject: Subject, limits: &Limits, id: &str, amount: i64) {
        self.spend_at(subject, limits, id, amount, self.now()).await;
    }

    async fn spend_at(&self, subject: Subject, limits: &Limits, id: &str, amount: i64, at: i64) {
        let record = SpendRecord {
            subject,
            shape: limits.shape(TZ),
            frame: limits.frame(at, TZ),
            at_ms: at,
            request_id: id.to_owned(),
            amount: UsdNanos(amount),
        };
        self.store.add_spend(&[record]).await.expect("add_spend");
    }

    /// An empty snapshot of `subject` at now, to fill in.
    fn snapshot(&self, subject: Subject, limits: &Limits) -> SpendSnapshot {
        SpendSnapshot {
            subject,
            shape: limits.shape(TZ),
            frame: limits.frame(self.now(), TZ),
            ..SpendSnapshot::default()
        }
    }

    async fn warm(&self, snapshots: &[SpendSnapshot]) {
        self.store.warm_spend(snapshots).await.expect("warm_spend");
    }

    /// Loads `subject` with nothing spent.
    async fn warm_empty(&self, subject: Subject, limits: &Limits) {
        self.warm(&[self.snapshot(subject, limits)]).await;
    }
}

#[track_caller]
fn admitted(a: &Admission) -> Vec<i64> {
    match a {
        Admission::Admitted { providers_over } => providers_over.clone(),
        other => panic!("expected admitted, got {other:?}"),
    }
}

#[track_caller]
fn rejected(a: &Admission) -> LimitHit {
    match a {
        Admission::Rejected(hit) => hit.clone(),
        other => panic!("expected rejected, got {other:?}"),
    }
}

/// (kind, current, limit, reset) of a rejection.
#[track_caller]
fn hit(a: &Admission) -> (LimitKind, i64, i64, Option<i64>) {
    let h = rejected(a);
    (h.kind, h.current, h.limit, h.reset_at_ms)
}

fn key() -> Subject {
    Subject::key(1)
}

fn user() -> Subject {
    Subject::user(1)
}

/// The cases, each against any store.
pub mod cases {
    use super::*;

    /// 50 admissions race for an RPM of 10: exactly 10 win, the others see the full window.
    pub async fn concurrent_rpm(env: &Env) {
        let limits = Limits { rpm_limit: 10, ..Limits::default() };
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let env = env.clone();
                let limits = limits.clone();
                tokio::spawn(async move { env.admit(&[(key(), &limits)], &[], None).await })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.expect("task") {
                Admission::Admitted { providers_over } => {
                    assert!(providers_over.is_empty());
                    wins += 1;
                }
                refused => {
                    assert_eq!(hit(&refused), (LimitKind::Rpm, 10, 10, Some(T0 + RPM_WINDOW_MS)));
                    assert_eq!(rejected(&refused).now_ms, T0, "the store's now is the clock's");
                }
            }
        }
        assert_eq!(wins, 10);
    }

    /// The sliding minute: a request counts for exactly 60 s; refusals count nothing.
    pub async fn rpm_frees_after_a_minute(env: &Env) {
        let limits = Limits { rpm_limit: 3, ..Limits::default() };
        let k = [(key(), &limits)];
        for _ in 0..3 {
            admitted(&env.admit(&k, &[], None).await);
            env.advance(10_000);
        }
        // At T0 + 30 s: requests at T0, +10 s, +20 s.
        assert_eq!(hit(&env.admit(&k, &[], None).await), (LimitKind::Rpm, 3, 3, Some(T0 + 60_000)));
        env.set(T0 + 59_999);
        assert_eq!(hit(&env.admit(&k, &[], None).await), (LimitKind::Rpm, 3, 3, Some(T0 + 60_000)));
        env.set(T0 + 60_000);
        admitted(&env.admit(&k, &[], None).await);
        assert_eq!(
            hit(&env.admit(&k, &[], None).await),
            (LimitKind::Rpm, 3, 3, Some(T0 + 70_000)),
            "the refusals counted nothing: only T0 left, and one slot freed"
        );
        // Other subjects have their own window.
        admitted(&env.admit(&[(Subject::key(2), &limits)], &[], None).await);
    }

    /// Distinct sessions within the session TTL: a known one is admitted, a new one refused until
    /// the oldest expires; requests without a session are not counted.
    pub async fn concurrent_sessions(env: &Env) {
        let limits = Limits { limit_concurrent_sessions: 2, ..Limits::default() };
        let k = [(key(), &limits)];
        admitted(&env.admit(&k, &[], Some("s1")).await);
        env.set(T0 + 1_000);
        admitted(&env.admit(&k, &[], Some("s2")).await);
        env.set(T0 + 2_000);
        let refused = env.admit(&k, &[], Some("s3")).await;
        assert_eq!(hit(&refused), (LimitKind::ConcurrentSessions, 2, 2, Some(T0 + SESSION_TTL)));
        assert_eq!(rejected(&refused).subject, key());
        admitted(&env.admit(&k, &[], Some("s1")).await);
        // s1 was seen again at +2 s: s2 is the oldest now.
        assert_eq!(
            hit(&env.admit(&k, &[], Some("s3")).await),
            (LimitKind::ConcurrentSessions, 2, 2, Some(T0 + 1_000 + SESSION_TTL))
        );
        admitted(&env.admit(&k, &[], None).await);
        env.set(T0 + 1_000 + SESSION_TTL - 1);
        assert!(matches!(env.admit(&k, &[], Some("s3")).await, Admission::Rejected(_)), "s2 not expired yet");
        env.set(T0 + 1_000 + SESSION_TTL);
        admitted(&env.admit(&k, &[], Some("s3")).await);
        assert_eq!(
            hit(&env.admit(&k, &[], Some("s4")).await),
            (LimitKind::ConcurrentSessions, 2, 2, Some(T0 + 2_000 + SESSION_TTL))
        );
    }

    /// Cold → NeedsWarm; warmed → admitted; spend added up to the limit → rejected with the
    /// window's numbers; NeedsWarm counts nothing.
    pub async fn spend_warm_then_reject(env: &Env) {
        let limits = Limits { rpm_limit: 5, limit_daily_usd: usd(1_000), ..Limits::default() };
        let k = [(key(), &limits)];
        assert_eq!(env.admit(&k, &[], None).await, Admission::NeedsWarm(vec![key()]));
        assert_eq!(env.admit(&k, &[], None).await, Admission::NeedsWarm(vec![key()]), "still cold");
        let mut snapshot = env.snapshot(key(), &limits);
        snapshot.daily = UsdNanos(900);
        env.warm(&[snapshot]).await;
        admitted(&env.admit(&k, &[], None).await);
        env.spend(key(), &limits, "a", 99).await;
        admitted(&env.admit(&k, &[], None).await);
        env.spend(key(), &limits, "b", 1).await;
        let reset = utc("2025-01-16T00:00:00Z");
        let refused = env.admit(&k, &[], None).await;
        assert_eq!(hit(&refused), (LimitKind::Spend(SpendWindow::DailyFixed), 1_000, 1_000, Some(reset)));
        assert_eq!(rejected(&refused).now_ms, T0);
        // 2 admissions counted toward RPM 5 (not the NeedsWarm nor the refusal): 3 more pass.
        let unlimited = Limits { rpm_limit: 5, ..Limits::default() };
        for _ in 0..3 {
            admitted(&env.admit(&[(key(), &unlimited)], &[], None).await);
        }
        assert_eq!(hit(&env.admit(&[(key(), &unlimited)], &[], None).await).0, LimitKind::Rpm);
    }

    /// Rolling 5 h: spend leaves 5 h after the end of the second it arrived in (never earlier
    /// than 5 h after it arrived); a refusal names the instant enough of it has left, spend of one
    /// second leaving together.
    pub async fn rolling_release(env: &Env) {
        let limits = Limits { limit_5h_usd: usd(10), ..Limits::default() };
        let k = [(key(), &limits)];
        let five = SpendWindow::FiveHourRolling;
        env.warm_empty(key(), &limits).await;
        env.spend(key(), &limits, "a", 4).await;
        env.set(T0 + HOUR);
        env.spend(key(), &limits, "b", 4).await;
        env.set(T0 + 2 * HOUR);
        env.spend(key(), &limits, "c", 4).await;
        // 12 in the window; without a (4) it is 8 < 10.
        assert_eq!(
            hit(&env.admit(&k, &[], None).await),
            (LimitKind::Spend(five), 12, 10, Some(rolling_leaves_at(T0, FIVE_HOURS_MS)))
        );
        let tight = Limits { limit_5h_usd: usd(5), ..limits.clone() };
        assert_eq!(
            hit(&env.admit(&[(key(), &tight)], &[], None).await),
            (LimitKind::Spend(five), 12, 5, Some(rolling_leaves_at(T0 + HOUR, FIVE_HOURS_MS))),
            "a and b must leave for 4 < 5"
        );
        // Spend leaves with its second: never before the exact instant, at most 999 ms after.
        env.set(T0 + FIVE_HOURS_MS);
        assert_eq!(hit(&env.admit(&k, &[], None).await).1, 12);
        env.set(rolling_leaves_at(T0, FIVE_HOURS_MS) - 1);
        assert_eq!(hit(&env.admit(&k, &[], None).await).1, 12);
        env.set(rolling_leaves_at(T0, FIVE_HOURS_MS));
        admitted(&env.admit(&k, &[], None).await);
        assert_eq!(
            hit(&env.admit(&[(key(), &tight)], &[], None).await),
            (LimitKind::Spend(five), 8, 5, Some(rolling_leaves_at(T0 + HOUR, FIVE_HOURS_MS)))
        );

        // A charge and a refund at one instant leave together: only when z leaves is the sum
        // (10, then 0) below 10.
        let u = [(user(), &limits)];
        env.set(T0);
        let mut snapshot = env.snapshot(user(), &limits);
        snapshot.events = vec![
            (T0 - 1_000, "x".into(), UsdNanos(5)),
            (T0 - 1_000, "y".into(), UsdNanos(-3)),
            (T0, "z".into(), UsdNanos(10)),
        ];
        env.warm(&[snapshot]).await;
        assert_eq!(
            hit(&env.admit(&u, &[], None).await),
            (LimitKind::Spend(five), 12, 10, Some(rolling_leaves_at(T0, FIVE_HOURS_MS)))
        );
        env.set(rolling_leaves_at(T0 - 1_000, FIVE_HOURS_MS));
        assert_eq!(
            hit(&env.admit(&u, &[], None).await),
            (LimitKind::Spend(five), 10, 10, Some(rolling_leaves_at(T0, FIVE_HOURS_MS)))
        );
        env.set(rolling_leaves_at(T0, FIVE_HOURS_MS));
        admitted(&env.admit(&u, &[], None).await);
    }

    /// Rolling 24 h behaves alike over a day; events older than the window are not loaded.
    pub async fn rolling_day(env: &Env) {
        let limits =
            Limits { limit_daily_usd: usd(10), daily_reset_mode: WindowMode::Rolling, ..Limits::default() };
        let k = [(key(), &limits)];
        let day = SpendWindow::DailyRolling;
        let mut snapshot = env.snapshot(key(), &limits);
        snapshot.events = vec![
            // Its second ended a day before now: out (an event at T0 - DAY_MS would still count
            // until T0 + 999, with the rest of its second).
            (T0 - DAY_MS - 1_000, "old".into(), UsdNanos(100)),
            (T0 - 10 * HOUR, "a".into(), UsdNanos(6)),
            (T0 - HOUR, "b".into(), UsdNanos(3)),
        ];
        env.warm(&[snapshot]).await;
        admitted(&env.admit(&k, &[], None).await);
        env.spend(key(), &limits, "c", 1).await;
        assert_eq!(
            hit(&env.admit(&k, &[], None).await),
            (LimitKind::Spend(day), 10, 10, Some(rolling_leaves_at(T0 - 10 * HOUR, DAY_MS)))
        );
        env.set(rolling_leaves_at(T0 - 10 * HOUR, DAY_MS));
        admitted(&env.admit(&k, &[], None).await);
    }

    /// Fixed 5 h: the first billed request opens the window, which lasts 5 h; the next billed
    /// request after it opens the next.
    pub async fn fixed_five_hours(env: &Env) {
        let limits = Limits { limit_5h_usd: usd(10), limit_5h_mode: WindowMode::Fixed, ..Limits::default() };
        let k = [(key(), &limits)];
        let fixed = LimitKind::Spend(SpendWindow::FiveHourFixed);
        env.warm_empty(key(), &limits).await;
        admitted(&env.admit(&k, &[], None).await);
        env.set(T0 + HOUR);
        env.spend(key(), &limits, "a", 6).await;
        env.set(T0 + 2 * HOUR);
        env.spend(key(), &limits, "b", 5).await;
        let opened = T0 + HOUR;
        assert_eq!(hit(&env.admit(&k, &[], None).await), (fixed, 11, 10, Some(opened + FIVE_HOURS_MS)));
        env.set(opened + FIVE_HOURS_MS - 1);
        assert_eq!(hit(&env.admit(&k, &[], None).await), (fixed, 11, 10, Some(opened + FIVE_HOURS_MS)));
        env.set(opened + FIVE_HOURS_MS);
        admitted(&env.admit(&k, &[], None).await);
        env.advance(10);
        env.spend(key(), &limits, "c", 3).await;
        env.set(T0 + 7 * HOUR);
        env.spend(key(), &limits, "d", 7).await;
        let reopened = opened + FIVE_HOURS_MS + 10;
        assert_eq!(hit(&env.admit(&k, &[], None).await), (fixed, 10, 10, Some(reopened + FIVE_HOURS_MS)));
        // A snapshot carries the open window as the request log has it.
        let mut snapshot = env.snapshot(user(), &limits);
        snapshot.fixed_5h = Some((T0 + 6 * HOUR, UsdNanos(10)));
        env.warm(&[snapshot]).await;
        assert_eq!(
            hit(&env.admit(&[(user(), &limits)], &[], None).await),
            (fixed, 10, 10, Some(T0 + 6 * HOUR + FIVE_HOURS_MS))
        );
    }

    /// Fixed day, week, month and total counters are named by their window's start: the next
    /// window starts from zero, the longer ones keep counting.
    pub async fn calendar_windows(env: &Env) {
        let limits = Limits {
            limit_daily_usd: usd(10),
            limit_weekly_usd: usd(15),
            limit_monthly_usd: usd(100),
            limit_total_usd: usd(40),
            ..Limits::default()
        };
        let k = [(key(), &limits)];
        env.warm_empty(key(), &limits).await;
        env.spend(key(), &limits, "a", 10).await;
        assert_eq!(
            hit(&env.admit(&k, &[], None).await),
            (LimitKind::Spend(SpendWindow::DailyFixed), 10, 10, Some(utc("2025-01-16T00:00:00Z")))
        );
        env.set(utc("2025-01-16T00:00:00Z") - 1);
        assert_eq!(hit(&env.admit(&k, &[], None).await).0, LimitKind::Spend(SpendWindow::DailyFixed));
        env.set(utc("2025-01-16T00:00:00Z"));
        admitted(&env.admit(&k, &[], None).await);
        env.spend(key(), &limits, "b", 6).await;
        assert_eq!(
            hit(&env.admit(&k, &[], None).await),
            (LimitKind::Spend(SpendWindow::Weekly), 16, 15, Some(utc("2025-01-20T00:00:00Z")))
        );
        env.set(utc("2025-01-20T00:00:00Z"));
        admitted(&env.admit(&k, &[], None).await);
        env.spend(key(), &limits, "c", 9).await;
        env.set(utc("2025-02-03T09:00:00Z"));
        env.spend(key(), &limits, "d", 9).await;
        env.set(utc("2025-02-05T09:00:00Z"));
        env.spend(key(), &limits, "e", 7).await;
        // Total 41 since the epoch: checked first, and it never resets.
        assert_eq!(
            hit(&env.admit(&k, &[], None).await),
            (LimitKind::Spend(SpendWindow::Total), 41, 40, None)
        );
        let reset_total = Limits {
            total_reset_at: Some(chrono::DateTime::from_timestamp_millis(T0 + 1).expect("t")),
            ..limits.clone()
        };
        assert_eq!(
            env.admit(&[(key(), &reset_total)], &[], None).await,
            Admission::NeedsWarm(vec![key()]),
            "a total reset changes the shape"
        );
        // Monthly: January's spend does not count in February.
        let monthly = Limits { limit_monthly_usd: usd(16), ..Limits::default() };
        let m = [(user(), &monthly)];
        env.set(utc("2025-01-31T23:00:00Z"));
        env.warm_empty(user(), &monthly).await;
        env.spend(user(), &monthly, "f", 16).await;
        assert_eq!(
            hit(&env.admit(&m, &[], None).await),
            (LimitKind::Spend(SpendWindow::Monthly), 16, 16, Some(utc("2025-02-01T00:00:00Z")))
        );
        env.set(utc("2025-02-01T00:00:00Z"));
        admitted(&env.admit(&m, &[], None).await);
    }

    /// A limit of 0 admits nothing in that window; other windows see their own values.
    pub async fn zero_limit(env: &Env) {
        let limits = Limits { limit_weekly_usd: usd(0), ..Limits::default() };
        env.warm_empty(key(), &limits).await;
        assert_eq!(
            hit(&env.admit(&[(key(), &limits)], &[], None).await),
            (LimitKind::Spend(SpendWindow::Weekly), 0, 0, Some(utc("2025-01-20T00:00:00Z")))
        );
    }

    /// A subject whose windows were rebuilt for another shape (reset time, total reset, timezone)
    /// is cold again; spend recorded under a new shape makes it cold too.
    pub async fn shape_change(env: &Env) {
        let limits = Limits { limit_daily_usd: usd(10), ..Limits::default() };
        let later = Limits { daily_reset_time: ResetTime::new(6, 0).expect("time"), ..limits.clone() };
        env.warm_empty(key(), &limits).await;
        admitted(&env.admit(&[(key(), &limits)], &[], None).await);
        assert_eq!(env.admit(&[(key(), &later)], &[], None).await, Admission::NeedsWarm(vec![key()]));
        admitted(&env.admit(&[(key(), &limits)], &[], None).await);
        env.spend(key(), &later, "a", 1).await;
        assert_eq!(
            env.admit(&[(key(), &limits)], &[], None).await,
            Admission::NeedsWarm(vec![key()]),
            "spend kept for another shape: the old windows are gone"
        );
        assert_eq!(env.admit(&[(key(), &later)], &[], None).await, Admission::NeedsWarm(vec![key()]));
        env.warm_empty(key(), &later).await;
        admitted(&env.admit(&[(key(), &later)], &[], None).await);
        // Limits changed without a new shape (another amount, another window): still loaded.
        let weekly = Limits { limit_weekly_usd: usd(1), ..later.clone() };
        admitted(&env.admit(&[(key(), &weekly)], &[], None).await);
    }

    /// Invalidation forgets the windows: the next admission asks for a rebuild, which replaces
    /// whatever was there.
    pub async fn invalidate(env: &Env) {
        let limits = Limits { limit_daily_usd: usd(10), limit_5h_usd: usd(10), ..Limits::default() };
        env.warm_empty(key(), &limits).await;
        env.warm_empty(user(), &limits).await;
        env.spend(key(), &limits, "a", 10).await;
        assert_eq!(hit(&env.admit(&[(key(), &limits)], &[], None).await).1, 10);
        env.store.invalidate_spend(&[key()]).await.expect("invalidate");
        assert_eq!(
            env.admit(&[(key(), &limits), (user(), &limits)], &[], None).await,
            Admission::NeedsWarm(vec![key()]),
            "only the invalidated subject"
        );
        // Spend arriving before the rebuild is overwritten by it.
        env.spend(key(), &limits, "b", 50).await;
        assert_eq!(env.admit(&[(key(), &limits)], &[], None).await, Admission::NeedsWarm(vec![key()]));
        let mut snapshot = env.snapshot(key(), &limits);
        snapshot.events = vec![(T0, "a".into(), UsdNanos(3))];
        snapshot.daily = UsdNanos(3);
        env.warm(&[snapshot]).await;
        admitted(&env.admit(&[(key(), &limits)], &[], None).await);
        env.spend(key(), &limits, "c", 7).await;
        assert_eq!(
            hit(&env.admit(&[(key(), &limits)], &[], None).await),
            (
                LimitKind::Spend(SpendWindow::FiveHourRolling),
                10,
                10,
                Some(rolling_leaves_at(T0, FIVE_HOURS_MS))
            )
        );
        env.store.invalidate_spend(&[]).await.expect("nothing to invalidate");
        env.store.invalidate_spend(&[Subject::provider(9)]).await.expect("an unknown subject");
    }

    /// Request ids are remembered for `REQUEST_ID_MEMORY_MS` from when they were taken (added or
    /// rebuilt), then a record with the same id counts again; the rolling sums stay per second.
    pub async fn request_ids_are_remembered_for_a_while(env: &Env) {
        let limits =
            Limits { limit_daily_usd: usd(100), daily_reset_mode: WindowMode::Rolling, ..Limits::default() };
        let k = [(key(), &limits)];
        let mut snapshot = env.snapshot(key(), &limits);
        snapshot.events = vec![(T0 - HOUR, "logged".into(), UsdNanos(10))];
        env.warm(&[snapshot]).await;
        env.spend(key(), &limits, "a", 10).await;
        env.advance(REQUEST_ID_MEMORY_MS - 1);
        env.spend_at(key(), &limits, "a", 10, T0).await;
        env.spend_at(key(), &limits, "logged", 10, T0 - HOUR).await;
        let tight = Limits { limit_daily_usd: usd(20), ..limits.clone() };
        assert_eq!(hit(&env.admit(&[(key(), &tight)], &[], None).await).1, 20, "both repeats skipped");
        env.advance(1);
        env.spend_at(key(), &limits, "a", 10, T0).await;
        assert_eq!(hit(&env.admit(&[(key(), &tight)], &[], None).await).1, 30, "forgotten: counted again");
        admitted(&env.admit(&k, &[], None).await);
    }

    /// A request id counts once: a repeated record, or one the rebuild already read from the log.
    pub async fn request_ids_count_once(env: &Env) {
        let limits = Limits { limit_5h_usd: usd(10), limit_daily_usd: usd(10), ..Limits::default() };
        let k = [(key(), &limits)];
        let mut snapshot = env.snapshot(key(), &limits);
        snapshot.events =
            vec![(T0 - HOUR, "logged".into(), UsdNanos(4)), (T0 - HOUR, "logged".into(), UsdNanos(4))];
        snapshot.daily = UsdNanos(4);
        env.warm(&[snapshot]).await;
        env.spend_at(key(), &limits, "logged", 4, T0 - HOUR).await;
        env.spend(key(), &limits, "new", 5).await;
        env.spend(key(), &limits, "new", 5).await;
        admitted(&env.admit(&k, &[], None).await);
        env.spend(key(), &limits, "more", 1).await;
        assert_eq!(
            hit(&env.admit(&k, &[], None).await),
            (
                LimitKind::Spend(SpendWindow::FiveHourRolling),
                10,
                10,
                Some(rolling_leaves_at(T0 - HOUR, FIVE_HOURS_MS))
            )
        );
        let daily_only = Limits { limit_daily_usd: usd(10), ..Limits::default() };
        assert_eq!(
            hit(&env.admit(&[(key(), &daily_only)], &[], None).await).1,
            10,
            "counters skipped the repeats too"
        );
    }

    /// Providers over a spend limit are listed, not refused; cold providers are warmed like the
    /// others; the caller is counted.
    pub async fn providers_over(env: &Env) {
        let user_limits = Limits { rpm_limit: 2, ..Limits::default() };
        let p_limits = Limits { limit_daily_usd: usd(5), ..Limits::default() };
        let (p1, p2, p3) = (Subject::provider(11), Subject::provider(12), Subject::provider(13));
        let mut full = env.snapshot(p1, &p_limits);
        full.daily = UsdNanos(5);
        let mut some = env.snapshot(p2, &p_limits);
        some.daily = UsdNanos(1);
        env.warm(&[full, some]).await;
        let providers = [(p1, &p_limits), (p2, &p_limits), (p3, &p_limits)];
        assert_eq!(
            env.admit(&[(user(), &user_limits)], &providers, None).await,
            Admission::NeedsWarm(vec![p3])
        );
        env.warm_empty(p3, &p_limits).await;
        assert_eq!(admitted(&env.admit(&[(user(), &user_limits)], &providers, None).await), vec![11]);
        env.spend(p2, &p_limits, "x", 4).await;
        assert_eq!(admitted(&env.admit(&[(user(), &user_limits)], &providers, None).await), vec![11, 12]);
        assert_eq!(
            hit(&env.admit(&[(user(), &user_limits)], &providers, None).await).0,
            LimitKind::Rpm,
            "both admissions counted"
        );
        assert_eq!(admitted(&env.admit(&[], &providers[..2], None).await), vec![11, 12], "providers alone");
    }

    /// A refusal counts nothing: neither the session nor the request, for no subject.
    pub async fn nothing_counted_on_rejection(env: &Env) {
        let key_limits = Limits { rpm_limit: 2, limit_concurrent_sessions: 1, ..Limits::default() };
        let user_limits = Limits { limit_daily_usd: usd(5), ..Limits::default() };
        let mut over = env.snapshot(user(), &user_limits);
        over.daily = UsdNanos(5);
        env.warm(&[over]).await;
        let both = [(key(), &key_limits), (user(), &user_limits)];
        for i in 0..5 {
            let refused = env.admit(&both, &[], Some(&format!("s{i}"))).await;
            assert_eq!(rejected(&refused).subject, user());
        }
        // A key refused on RPM does not count its session either.
        let user_rpm = Limits { rpm_limit: 1, limit_concurrent_sessions: 1, ..Limits::default() };
        env.warm_empty(user(), &user_limits).await;
        let again = [(key(), &key_limits), (user(), &user_rpm)];
        admitted(&env.admit(&again, &[], Some("a")).await);
        let refused = env.admit(&again, &[], Some("a")).await;
        assert_eq!((rejected(&refused).subject, hit(&refused).0), (user(), LimitKind::Rpm));
        admitted(&env.admit(&[(key(), &key_limits)], &[], Some("a")).await);
        assert_eq!(
            hit(&env.admit(&[(key(), &key_limits)], &[], Some("b")).await).0,
            LimitKind::ConcurrentSessions,
            "only session a is counted"
        );
        assert_eq!(
            hit(&env.admit(&[(key(), &key_limits)], &[], Some("a")).await),
            (LimitKind::Rpm, 2, 2, Some(T0 + RPM_WINDOW_MS)),
            "two admissions of the key counted"
        );
    }

    /// Admission and routing view in one call give what the two calls give.
    pub async fn admit_with_view(env: &Env) {
        let limits = Limits { rpm_limit: 1, limit_daily_usd: usd(5), ..Limits::default() };
        env.store.bind_session("sv", 7, Duration::from_secs(60)).await.expect("bind");
        let check = env.check(&[(key(), &limits)], &[], Some("sv"));
        let (admission, view) = env.store.admit_and_view(&check, Some("sv"), &[7, 8], None).await;
        assert_eq!(admission.expect("admission"), Admission::NeedsWarm(vec![key()]));
        let view = view.expect("view");
        assert_eq!((view.binding, view.health.len()), (Some(7), 2));
        env.warm_empty(key(), &limits).await;
        let (admission, view) = env.store.admit_and_view(&check, None, &[], None).await;
        admitted(&admission.expect("admission"));
        assert!(view.expect("view").binding.is_none());
        let (admission, _) = env.store.admit_and_view(&check, None, &[], None).await;
        assert_eq!(hit(&admission.expect("admission")).0, LimitKind::Rpm);
        let empty = env.check(&[], &[], None);
        let (admission, view) = env.store.admit_and_view(&empty, Some("sv"), &[], None).await;
        assert_eq!(admitted(&admission.expect("admission")), Vec::<i64>::new());
        assert_eq!(view.expect("view").binding, Some(7));
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
                    cases::$case(&Env::memory()).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((env, redis)) = redis_env::env(stringify!($case)).await else { return };
                    cases::$case(&env).await;
                    redis.finish().await;
                }
            )*
        }
    };
}

conformance!(
    concurrent_rpm,
    rpm_frees_after_a_minute,
    concurrent_sessions,
    spend_warm_then_reject,
    rolling_release,
    rolling_day,
    fixed_five_hours,
    calendar_windows,
    zero_limit,
    shape_change,
    invalidate,
    request_ids_count_once,
    request_ids_are_remembered_for_a_while,
    providers_over,
    nothing_counted_on_rejection,
    admit_with_view,
);

#[cfg(feature = "redis")]
mod redis_env {
    use super::*;
    use crate::common::redis_fixture::{RedisPrefix, URL};
    use gateway_core::store::{RedisStateOptions, RedisStateStore};

    /// A Redis store on a fresh prefix with the test clock at `T0`.
    pub async fn env(test: &str) -> Option<(Env, RedisPrefix)> {
        let redis = RedisPrefix::new(test).await?;
        let clock = Arc::new(ManualClock::new(T0));
        let options = RedisStateOptions { clock: Some(clock.clone()), ..redis.options() };
        let store = RedisStateStore::connect(URL, options).await.expect("connect");
        Some((Env { store: Arc::new(store), clock }, redis))
    }
}

#[cfg(feature = "redis")]
mod redis_only {
    use gateway_core::store::{RedisStateOptions, RedisStateStore};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::common::redis_fixture::{PrivateRedis, free_port};

    /// Every limit key gets a TTL; the marker never outlives the total it vouches for, and the
    /// other windows live until their content no longer counts.
    #[tokio::test]
    async fn limit_keys_expire() {
        let Some((env, mut redis)) = redis_env::env("limit_keys_expire").await else { return };
        let limits = Limits {
            rpm_limit: 5,
            limit_concurrent_sessions: 2,
            limit_5h_usd: usd(100),
            limit_5h_mode: WindowMode::Fixed,
            limit_daily_usd: usd(100),
            limit_weekly_usd: usd(100),
            limit_monthly_usd: usd(100),
            limit_total_usd: usd(100),
            ..Limits::default()
        };
        let rolling = Limits { limit_5h_usd: usd(100), ..Limits::default() };
        env.warm_empty(key(), &limits).await;
        let mut snapshot = env.snapshot(user(), &rolling);
        snapshot.events = vec![(T0 - HOUR, "a".into(), UsdNanos(1))];
        env.warm(&[snapshot]).await;
        admitted(&env.admit(&[(key(), &limits), (user(), &rolling)], &[], Some("s")).await);
        env.spend(key(), &limits, "b", 1).await;
        let keys = redis.keys().await;
        let p = redis.prefix.clone();
        let tagged = |s: &str, part: &str| format!("{p}{{lim}}:{s}:{part}");
        let mut expected: Vec<String> = ["rpm", "ses", "sp", "b", "ids"]
            .iter()
            .map(|part| tagged("k:1", part))
            .chain(["sp", "b", "ids"].iter().map(|part| tagged("u:1", part)))
            .collect();
        expected.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, expected, "the documented key layout");
        let day = DAY_MS;
        // The hash keeps the monthly counter until the month ends (2025-02-01, 16.5 days after
        // T0) plus a day for late records, rounded up to the hour.
        let month = utc("2025-02-01T00:00:00Z") - T0 + day;
        let bounds = [
            (tagged("k:1", "rpm"), RPM_WINDOW_MS - 5_000, RPM_WINDOW_MS),
            (tagged("k:1", "ses"), SESSION_TTL - 5_000, SESSION_TTL),
            (tagged("k:1", "sp"), month + HOUR - 5_000, month + HOUR),
            (tagged("u:1", "sp"), month + HOUR - 5_000, month + HOUR),
            // 24 h after the newest bucket (or now, for one in the past), plus a day for records
            // arriving late.
            (tagged("k:1", "b"), 2 * day - 5_000, 2 * day),
            (tagged("u:1", "b"), 2 * day - 5_000, 2 * day),
            (tagged("k:1", "ids"), REQUEST_ID_MEMORY_MS - 5_000, REQUEST_ID_MEMORY_MS),
            (tagged("u:1", "ids"), REQUEST_ID_MEMORY_MS - 5_000, REQUEST_ID_MEMORY_MS),
        ];
        for (key, min, max) in bounds {
            let ttl = redis.pttl(&key).await;
            assert!((min..=max).contains(&ttl), "{key}: PTTL {ttl} not in {min}..={max}");
        }
        redis.finish().await;
    }

    /// After `SCRIPT FLUSH` (a restarted Redis) the pipelined admission loads its script again,
    /// and so do the other limit calls. On a private Redis: flushing the shared one would make the
    /// other tests' calls race the flushes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_pipeline_reloads_its_script() {
        let Some(server) = PrivateRedis::start(free_port()) else {
            eprintln!("skipping admission_pipeline_reloads_its_script: cannot start redis-server");
            return;
        };
        let url = format!("redis://127.0.0.1:{}", server.port);
        let clock = Arc::new(ManualClock::new(T0));
        let options = RedisStateOptions {
            prefix: "gwtest:flush:".to_owned(),
            timeout: Duration::from_secs(3),
            clock: Some(clock.clone()),
        };
        let env =
            Env { store: Arc::new(RedisStateStore::connect(&url, options).await.expect("store")), clock };
        let mut raw = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let mut flush = async || {
            redis::cmd("SCRIPT").arg("FLUSH").exec_async(&mut raw).await.expect("SCRIPT FLUSH");
        };
        let limits = Limits { rpm_limit: 1, limit_daily_usd: usd(10), ..Limits::default() };
        let check = env.check(&[(key(), &limits)], &[], None);
        flush().await;
        let (admission, view) = env.store.admit_and_view(&check, None, &[1], None).await;
        assert_eq!(admission.expect("answered after NOSCRIPT"), Admission::NeedsWarm(vec![key()]));
        assert_eq!(view.expect("view").health.len(), 1);
        flush().await;
        env.warm_empty(key(), &limits).await;
        flush().await;
        env.spend(key(), &limits, "a", 10).await;
        flush().await;
        assert_eq!(hit(&env.admit_check(&check).await).0, LimitKind::Spend(SpendWindow::DailyFixed));
        flush().await;
        env.store.invalidate_spend(&[key()]).await.expect("invalidate");
        assert_eq!(env.admit_check(&check).await, Admission::NeedsWarm(vec![key()]));
    }

    /// Random limits, spend, rebuilds, invalidations and time steps, applied to both stores:
    /// every answer must be the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn differential() {
        let Some((redis_env, redis)) = redis_env::env("differential").await else { return };
        let memory = Env::memory();
        let envs = [&memory, &redis_env];
        let configs = [
            Limits { rpm_limit: 4, limit_5h_usd: usd(30), ..Limits::default() },
            Limits {
                limit_concurrent_sessions: 2,
                limit_5h_usd: usd(25),
                limit_5h_mode: WindowMode::Fixed,
                ..Limits::default()
            },
            Limits {
                limit_daily_usd: usd(40),
                daily_reset_mode: WindowMode::Rolling,
                limit_weekly_usd: usd(90),
                ..Limits::default()
            },
            Limits {
                rpm_limit: 6,
                limit_daily_usd: usd(35),
                daily_reset_time: ResetTime::new(18, 30).expect("time"),
                limit_monthly_usd: usd(90),
                limit_total_usd: usd(120),
                ..Limits::default()
            },
            Limits {
                limit_daily_usd: usd(35),
                daily_reset_time: ResetTime::new(6, 0).expect("time"),
                ..Limits::default()
            },
        ];
        let subjects =
            [Subject::key(1), Subject::key(2), Subject::user(1), Subject::provider(5), Subject::provider(6)];
        let mut rng = StdRng::seed_from_u64(20_250_115);
        let mut config_of = [0usize; 5];
        let mut ids = 0u32;
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..3_000 {
            let ctx = format!("step {step}");
            match rng.random_range(0..100) {
                0..10 => {
                    // Steps that land on the windows' edges as well as anywhere.
                    let ms = match rng.random_range(0..12) {
                        0 => rng.random_range(0..2 * DAY_MS),
                        1..3 => rng.random_range(0..3 * HOUR),
                        3..6 => rng.random_range(0..90_000),
                        6 => 1,
                        7 => RPM_WINDOW_MS,
                        8 => RPM_WINDOW_MS - 1,
                        9 => 10 * 60_000,
                        10 => HOUR,
                        _ => SESSION_TTL,
                    };
                    for env in envs {
                        env.advance(ms);
                    }
                }
                10..14 => {
                    let s = rng.random_range(0..subjects.len());
                    config_of[s] = rng.random_range(0..configs.len());
                }
                14..40 => {
                    let s = rng.random_range(0..subjects.len());
                    ids += 1;
                    // Now and then a recent id again, or a record that arrived a while ago (on a
                    // 10-minute grid, so that events share instants and meet window edges).
                    let id = if rng.random_bool(0.15) && ids > 1 {
                        rng.random_range(ids.saturating_sub(8).max(1)..ids)
                    } else {
                        ids
                    };
                    let at = memory.now()
                        - if rng.random_bool(0.3) { rng.random_range(0..42) * 10 * 60_000 } else { 0 };
                    let amount = rng.random_range(-2..12);
                    for env in envs {
                        env.spend_at(subjects[s], &configs[config_of[s]], &format!("r{id}"), amount, at)
                            .await;
                    }
                }
                40..46 => {
                    let s = rng.random_range(0..subjects.len());
                    let snapshot =
                        random_snapshot(&mut rng, &memory, subjects[s], &configs[config_of[s]], &mut ids);
                    for env in envs {
                        env.warm(std::slice::from_ref(&snapshot)).await;
                    }
                }
                46..48 => {
                    let s = rng.random_range(0..subjects.len());
                    for env in envs {
                        env.store.invalidate_spend(&[subjects[s]]).await.expect("invalidate");
                    }
                }
                _ => {
                    let callers: Vec<_> = (0..3)
                        .filter(|_| rng.random_bool(0.6))
                        .map(|s| (subjects[s], &configs[config_of[s]]))
                        .collect();
                    let providers: Vec<_> = (3..5)
                        .filter(|_| rng.random_bool(0.5))
                        .map(|s| (subjects[s], &configs[config_of[s]]))
                        .collect();
                    let session = format!("s{}", rng.random_range(0..4));
                    let session = rng.random_bool(0.8).then_some(session.as_str());
                    let check = memory.check(&callers, &providers, session);
                    let expected = memory.admit_check(&check).await;
                    let got = redis_env.admit_check(&check).await;
                    assert_eq!(got, expected, "{ctx}: {check:?}");
                    seen.insert(outcome(&expected));
                    // As the engine does: rebuild what is cold, then ask again.
                    if let Admission::NeedsWarm(cold) = expected
                        && rng.random_bool(0.9)
                    {
                        let snapshots: Vec<_> = cold
                            .iter()
                            .map(|c| {
                                let s = subjects.iter().position(|s| s == c).expect("known subject");
                                random_snapshot(&mut rng, &memory, *c, &configs[config_of[s]], &mut ids)
                            })
                            .collect();
                        for env in envs {
                            env.warm(&snapshots).await;
                        }
                        let expected = memory.admit_check(&check).await;
                        assert_eq!(
                            redis_env.admit_check(&check).await,
                            expected,
                            "{ctx} after warm: {check:?}"
                        );
                        seen.insert(outcome(&expected));
                    }
                }
            }
        }
        // The sequence reached every kind of answer, so the comparison meant something.
        let all = [
            "admitted",
            "admitted, providers over",
            "needs warm",
            "rejected rpm",
            "rejected concurrent_sessions",
            "rejected usd_5h",
            "rejected daily_quota",
            "rejected usd_weekly",
            "rejected usd_monthly",
            "rejected usd_total",
        ];
        for kind in all {
            assert!(seen.contains(kind), "no {kind:?} among {seen:?}");
        }
        redis.finish().await;
    }

    /// What one request costs Redis with the load benchmark's limits (RPM, concurrent sessions,
    /// rolling 5 h and fixed daily spend, on the user): `N` admissions and `N` added spends on the
    /// server's clock, then `INFO commandstats` (reset first), printed per request; each
    /// admission and each added spend must be exactly one script call (one round trip). To
    /// measure: `SCRIPT_COST_N=5000 cargo test -p gateway-core --features redis --test
    /// limit_conformance script_cost -- --nocapture`. On a private `redis-server`, so that other
    /// tests' commands do not mix into the statistics.
    #[tokio::test]
    async fn script_cost() {
        // SCRIPT_COST_URL: a Redis of one's own to measure on (to watch it with MONITOR).
        let server = std::env::var("SCRIPT_COST_URL").is_err().then(|| PrivateRedis::start(free_port()));
        let url = match (&server, std::env::var("SCRIPT_COST_URL")) {
            (_, Ok(url)) => url,
            (Some(Some(server)), _) => format!("redis://127.0.0.1:{}", server.port),
            _ => {
                eprintln!("skipping script_cost: cannot start redis-server");
                return;
            }
        };
        let options = RedisStateOptions { prefix: "gwtest:cost:".to_owned(), ..RedisStateOptions::default() };
        let store = RedisStateStore::connect(&url, options).await.expect("connect");
        let limits = Limits {
            rpm_limit: 1_000_000_000,
            limit_concurrent_sessions: 1_000_000,
            limit_5h_usd: usd(1_000_000_000_000_000),
            limit_daily_usd: usd(1_000_000_000_000_000),
            ..Limits::default()
        };
        let subject = user();
        let mut raw = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let now = || chrono::Utc::now().timestamp_millis();
        let snapshot = SpendSnapshot {
            subject,
            shape: limits.shape(TZ),
            frame: limits.frame(now(), TZ),
            ..SpendSnapshot::default()
        };
        store.warm_spend(&[snapshot]).await.expect("warm");
        let n: usize = std::env::var("SCRIPT_COST_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
        // Admissions, then added spends, each with statistics of its own.
        for phase in ["admission", "added spend"] {
            redis::cmd("CONFIG").arg("RESETSTAT").exec_async(&mut raw).await.expect("RESETSTAT");
            let started = std::time::Instant::now();
            for i in 0..n {
                let t = now();
                if phase == "admission" {
                    let check = AdmissionCheck {
                        request_id: format!("req-{i}"),
                        session: Some(format!("session-{}", i % 50)),
                        session_ttl_ms: SESSION_TTL,
                        subjects: vec![subject_check(subject, &limits, t)],
                        providers: Vec::new(),
                    };
                    admitted(&store.admit(&check).await.expect("admit"));
                } else {
                    let record = SpendRecord {
                        subject,
                        shape: limits.shape(TZ),
                        frame: limits.frame(t, TZ),
                        at_ms: t,
                        request_id: format!("req-{i}"),
                        amount: UsdNanos(1_234_567),
                    };
                    store.add_spend(&[record]).await.expect("add_spend");
                }
            }
            let elapsed = started.elapsed();
            let info: String =
                redis::cmd("INFO").arg("commandstats").query_async(&mut raw).await.expect("INFO");
            println!("{n} x {phase} in {elapsed:?}");
            let mut total = 0.0;
            let mut script_calls = 0.0;
            for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
                let field = |name: &str| {
                    line.split([':', ','])
                        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                let (calls, usec) = (field("calls"), field("usec"));
                let name = line.split(':').next().unwrap_or("").trim_start_matches("cmdstat_");
                if name == "config|resetstat" {
                    continue;
                }
                if name == "evalsha" || name == "eval" {
                    script_calls += calls;
                } else {
                    total += usec;
                }
                println!(
                    "{name:>20}: {:7.2} calls/request, {:7.2} us/request",
                    calls / n as f64,
                    usec / n as f64
                );
            }
            println!("commands called by the script: {:.2} us/request", total / n as f64);
            assert_eq!(script_calls, n as f64, "{phase}: one script call per request");
        }
    }

    fn outcome(a: &Admission) -> String {
        match a {
            Admission::Admitted { providers_over } if providers_over.is_empty() => "admitted".into(),
            Admission::Admitted { .. } => "admitted, providers over".into(),
            Admission::NeedsWarm(_) => "needs warm".into(),
            Admission::Rejected(hit) => format!("rejected {}", hit.kind.limit_type()),
        }
    }

    /// A rebuild as the request log might give it: events of the last 25 h (some too old to
    /// count), perhaps an open fixed 5 h window, calendar sums.
    fn random_snapshot(
        rng: &mut StdRng,
        clock: &Env,
        subject: Subject,
        limits: &Limits,
        ids: &mut u32,
    ) -> SpendSnapshot {
        let mut snapshot = clock.snapshot(subject, limits);
        let now = clock.now();
        for _ in 0..rng.random_range(0..6) {
            *ids += 1;
            // On a 30-minute grid: events share instants and sit on window edges.
            let at = now - rng.random_range(0..50) * 30 * 60_000;
            // Now and then a refund: a charge and a refund at one instant leave together.
            snapshot.events.push((at, format!("r{ids}"), UsdNanos(rng.random_range(-8..10))));
        }
        snapshot.events.sort();
        if rng.random_bool(0.5) {
            snapshot.fixed_5h =
                Some((now - rng.random_range(0..6 * HOUR), UsdNanos(rng.random_range(0..30))));
        }
        snapshot.daily = UsdNanos(rng.random_range(0..40));
        snapshot.weekly = UsdNanos(rng.random_range(0..90));
        snapshot.monthly = UsdNanos(rng.random_range(0..100));
        snapshot.total = UsdNanos(rng.random_range(0..130));
        snapshot
    }
}
