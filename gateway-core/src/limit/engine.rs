//! Enforcement: builds a request's [`AdmissionCheck`], runs it in the state store together with
//! the routing read (one round trip), rebuilds cold windows from the request log, turns a
//! [`LimitHit`] into the caller's error, and adds each finished request's cost to the windows.
//!
//! # Overshoot
//!
//! Spend is checked at admission and added when the request's cost is known (at the end of
//! its stream). Requests admitted while a subject was still under its limit may all finish, so
//! spend can exceed a limit by at most the cost of the subject's requests in flight when the
//! limit was reached; the next request after that is refused. RPM and concurrency are counted
//! in the same atomic step that checks them, so they never overshoot.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono_tz::Tz;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use super::spec::{Limits, SpendWindow, Subject, SubjectKind};
use super::state::{
    Admission, AdmissionCheck, LimitHit, LimitKind, SpendEvent, SpendRecord, SpendSnapshot, SubjectCheck,
};
use super::window::{
    DAY_MS, EpochMs, FIVE_HOURS_MS, fixed_window_opened_at, reset_epoch_secs, seconds_until,
};
use crate::config::{ApiKey, Id, Provider, User};
use crate::error::{ErrorKind, GatewayError, LimitInfo};
use crate::store::state::{RoutingView, StateError, StateStore};
use crate::usage::UsdNanos;

/// What to do when the state store cannot answer (`RATE_LIMIT_FAIL_MODE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RateLimitFailMode {
    /// Admit the request (default): an outage of Redis does not stop the team.
    #[default]
    Open,
    /// Refuse with 503.
    Closed,
}

impl std::str::FromStr for RateLimitFailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            other => Err(format!("{other:?} is not a fail mode: use open or closed")),
        }
    }
}

/// Settings of limit enforcement.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `ENABLE_RATE_LIMIT`: false turns every limit off.
    pub enabled: bool,
    /// `RATE_LIMIT_FAIL_MODE`.
    pub fail_mode: RateLimitFailMode,
    /// `TZ`: calendar windows are local to it.
    pub timezone: Tz,
    /// `SESSION_TTL`: how long a session counts as active.
    pub session_ttl: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            fail_mode: RateLimitFailMode::Open,
            timezone: chrono_tz::UTC,
            session_ttl: Duration::from_secs(300),
        }
    }
}

/// The request log, as the source of truth windows are rebuilt from.
pub trait SpendHistory: Send + Sync + 'static {
    /// Billed requests of `subject` that arrived at or after `from_ms`: (arrival, request id,
    /// cost), oldest first.
    fn events(
        &self,
        subject: Subject,
        from_ms: EpochMs,
    ) -> BoxFuture<'_, Result<Vec<SpendEvent>, StateError>>;

    /// Spend of `subject` on requests that arrived in `[from_ms, to_ms)` (`None`: no end).
    fn sum(
        &self,
        subject: Subject,
        from_ms: EpochMs,
        to_ms: Option<EpochMs>,
    ) -> BoxFuture<'_, Result<UsdNanos, StateError>>;
}

/// The outcome of admission, as routing uses it.
#[derive(Debug)]
pub enum AdmitDecision {
    /// Go on; leave these providers out.
    Admitted {
        /// Providers over a spend limit.
        providers_over: Vec<Id>,
    },
    /// Refuse with this error.
    Rejected(GatewayError),
}

/// Limit enforcement shared by the router (admission) and the recorder (spend).
pub struct LimitEngine {
    store: Arc<dyn StateStore>,
    history: Option<Arc<dyn SpendHistory>>,
    settings: LimitSettings,
    failures: AtomicU64,
    /// Subjects whose spend could not be added: rebuilt before their next admission.
    dirty: Mutex<HashSet<Subject>>,
}

impl std::fmt::Debug for LimitEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitEngine").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn subject_check(subject: Subject, limits: &Limits, now: EpochMs, tz: Tz) -> SubjectCheck {
    let windows: Vec<_> = limits.spend_windows().collect();
    let (shape, frame) = if windows.is_empty() {
        (String::new(), Default::default())
    } else {
        (limits.shape(tz), limits.frame(now, tz))
    };
    SubjectCheck {
        subject,
        rpm: limits.rpm_limit,
        concurrent_sessions: limits.limit_concurrent_sessions,
        spend: windows,
        shape,
        frame,
    }
}

impl LimitEngine {
    /// Enforcement on `store`, rebuilding windows from `history` (none: cold windows start at
    /// zero, as in a gateway without a database).
    pub fn new(
        store: Arc<dyn StateStore>,
        history: Option<Arc<dyn SpendHistory>>,
        settings: LimitSettings,
    ) -> Self {
        Self { store, history, settings, failures: AtomicU64::new(0), dirty: Mutex::new(HashSet::new()) }
    }

    /// The settings.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// State-store failures met while enforcing limits (each also logged).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn failed(&self, what: &str, e: &StateError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(fail_mode = ?self.settings.fail_mode, "rate limit state unavailable ({what}): {e}");
    }

    /// The check of a request by `key` of `user` (key first: its limits are the tighter
    /// context) with the spend limits of `candidates`; `None` when nothing is limited.
    pub fn check_for(
        &self,
        key: Option<&ApiKey>,
        user: Option<&User>,
        candidates: &[&Provider],
        session: Option<&str>,
        request_id: &str,
        now_ms: EpochMs,
    ) -> Option<AdmissionCheck> {
        if !self.settings.enabled {
            return None;
        }
        let tz = self.settings.timezone;
        let mut subjects = Vec::new();
        if let Some(k) = key.filter(|k| k.limits.any()) {
            subjects.push(subject_check(Subject::key(k.id), &k.limits, now_ms, tz));
        }
        if let Some(u) = user.filter(|u| u.limits.any()) {
            subjects.push(subject_check(Subject::user(u.id), &u.limits, now_ms, tz));
        }
        let providers: Vec<_> = candidates
            .iter()
            .filter(|p| p.limits.any_spend())
            .map(|p| subject_check(Subject::provider(p.id), &p.limits, now_ms, tz))
            .collect();
        let check = AdmissionCheck {
            request_id: request_id.to_owned(),
            session: session.map(str::to_owned),
            session_ttl_ms: i64::try_from(self.settings.session_ttl.as_millis()).unwrap_or(i64::MAX),
            subjects,
            providers,
        };
        (!check.is_empty()).then_some(check)
    }

    /// Admits `check` and reads the routing view in one store call; rebuilds cold windows and
    /// asks again when needed.
    pub async fn admit_and_view(
        &self,
        check: &AdmissionCheck,
        session: Option<&str>,
        providers: &[Id],
        keep_binding: Option<Duration>,
    ) -> (AdmitDecision, Result<RoutingView, StateError>) {
        self.rebuild_dirty(check).await;
        let (admission, view) = self.store.admit_and_view(check, session, providers, keep_binding).await;
        let admission = match admission {
            Ok(Admission::NeedsWarm(cold)) => match self.warm(check, &cold).await {
                Ok(()) => self.store.admit(check).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        let decision = match admission {
            Ok(Admission::Admitted { providers_over }) => AdmitDecision::Admitted { providers_over },
            Ok(Admission::Rejected(hit)) => AdmitDecision::Rejected(self.limit_error(&hit)),
            Ok(Admission::NeedsWarm(cold)) => {
                // Rebuilt a moment ago and cold again: another replica changed the shape. Let
                // this one through rather than loop.
                tracing::warn!(?cold, "limit windows still cold after a rebuild; admitting");
                AdmitDecision::Admitted { providers_over: Vec::new() }
            }
            Err(e) => {
                self.failed("admission", &e);
                match self.settings.fail_mode {
                    RateLimitFailMode::Open => AdmitDecision::Admitted { providers_over: Vec::new() },
                    RateLimitFailMode::Closed => AdmitDecision::Rejected(GatewayError::new(
                        ErrorKind::NoProvider,
                        "rate_limit_unavailable",
                        "rate limits cannot be checked right now; try again shortly",
                    )),
                }
            }
        };
        (decision, view)
    }

    async fn rebuild_dirty(&self, check: &AdmissionCheck) {
        let dirty: Vec<Subject> = {
            let mut dirty = self.dirty.lock();
            if dirty.is_empty() {
                return;
            }
            check
                .subjects
                .iter()
                .chain(&check.providers)
                .map(|c| c.subject)
                .filter(|s| dirty.remove(s))
                .collect()
        };
        if !dirty.is_empty()
            && let Err(e) = self.store.invalidate_spend(&dirty).await
        {
            self.failed("invalidate", &e);
            self.dirty.lock().extend(dirty);
        }
    }

    async fn warm(&self, check: &AdmissionCheck, cold: &[Subject]) -> Result<(), StateError> {
        let mut snapshots = Vec::with_capacity(cold.len());
        for c in check.subjects.iter().chain(&check.providers).filter(|c| cold.contains(&c.subject)) {
            snapshots.push(self.snapshot(c).await?);
        }
        self.store.warm_spend(&snapshots).await
    }

    /// A subject's windows as the request log has them.
    async fn snapshot(&self, c: &SubjectCheck) -> Result<SpendSnapshot, StateError> {
        let mut snapshot = SpendSnapshot {
            subject: c.subject,
            shape: c.shape.clone(),
            frame: c.frame,
            ..SpendSnapshot::default()
        };
        let Some(history) = &self.history else { return Ok(snapshot) };
        let now = chrono::Utc::now().timestamp_millis();
        let f = c.frame;
        snapshot.events = history.events(c.subject, now - DAY_MS).await?;
        let opened = fixed_window_opened_at(
            snapshot.events.iter().map(|e| e.0),
            (f.total_since > 0).then_some(f.total_since),
            now,
            FIVE_HOURS_MS,
        );
        snapshot.fixed_5h = opened.map(|o| {
            let spent: i64 = snapshot
                .events
                .iter()
                .filter(|e| e.0 >= o && e.0 < o + FIVE_HOURS_MS)
                .map(|e| e.2.0)
                .fold(0, i64::saturating_add);
            (o, UsdNanos(spent))
        });
        snapshot.daily = history.sum(c.subject, f.daily_start, Some(f.daily_reset)).await?;
        snapshot.weekly = history.sum(c.subject, f.weekly_start, Some(f.weekly_reset)).await?;
        snapshot.monthly = history.sum(c.subject, f.monthly_start, Some(f.monthly_reset)).await?;
        snapshot.total = history.sum(c.subject, f.total_since, None).await?;
        Ok(snapshot)
    }

    /// The caller's error for a hit limit: 429 for RPM and concurrency, 402 for spend.
    pub fn limit_error(&self, hit: &LimitHit) -> GatewayError {
        let who = match hit.subject.kind {
            SubjectKind::Key => "API key",
            SubjectKind::User => "user",
            SubjectKind::Provider => "provider",
        };
        let reset = hit.reset_at_ms.and_then(chrono::DateTime::from_timestamp_millis);
        let until = reset.map_or(String::new(), |t| {
            format!("; resets at {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        });
        let (kind, code, message) = match hit.kind {
            LimitKind::Rpm => (
                ErrorKind::RateLimited,
                "rate_limit_exceeded",
                format!(
                    "{who} request rate limit reached: {} of {} requests per minute{until}",
                    hit.current, hit.limit
                ),
            ),
            LimitKind::ConcurrentSessions => (
                ErrorKind::RateLimited,
                "rate_limit_exceeded",
                format!(
                    "{who} concurrent session limit reached: {} of {} sessions{until}",
                    hit.current, hit.limit
                ),
            ),
            LimitKind::Spend(window) => (
                ErrorKind::QuotaExceeded,
                "quota_exceeded",
                format!(
                    "{who} {} spend limit reached: ${} of ${}{until}",
                    window_name(window),
                    UsdNanos(hit.current),
                    UsdNanos(hit.limit)
                ),
            ),
        };
        let (current, limit) = match hit.kind {
            LimitKind::Spend(_) => (UsdNanos(hit.current).to_string(), UsdNanos(hit.limit).to_string()),
            _ => (hit.current.to_string(), hit.limit.to_string()),
        };
        let remaining = match hit.kind {
            LimitKind::Spend(_) => UsdNanos(hit.limit.saturating_sub(hit.current).max(0)).to_string(),
            _ => hit.limit.saturating_sub(hit.current).max(0).to_string(),
        };
        GatewayError::new(kind, code, message).with_limit(LimitInfo {
            limit_type: hit.kind.limit_type(),
            current,
            limit,
            remaining,
            reset_at: reset,
            retry_after_secs: hit.reset_at_ms.map(|at| seconds_until(hit.now_ms, at).max(1)),
            reset_epoch_secs: hit.reset_at_ms.map(reset_epoch_secs),
        })
    }

    /// Adds a finished request's cost to the windows of its key, user and provider (those with
    /// spend limits), off the request path.
    pub fn record_spend(
        self: &Arc<Self>,
        key: Option<&ApiKey>,
        user: Option<&User>,
        provider: Option<&Provider>,
        request_id: &str,
        at_ms: EpochMs,
        cost: UsdNanos,
    ) {
        if !self.settings.enabled || cost.0 <= 0 {
            return;
        }
        let tz = self.settings.timezone;
        let subjects = [
            key.map(|k| (Subject::key(k.id), &k.limits)),
            user.map(|u| (Subject::user(u.id), &u.limits)),
            provider.map(|p| (Subject::provider(p.id), &p.limits)),
        ];
        let records: Vec<SpendRecord> = subjects
            .into_iter()
            .flatten()
            .filter(|(_, l)| l.any_spend())
            .map(|(subject, l)| SpendRecord {
                subject,
                shape: l.shape(tz),
                frame: l.frame(at_ms, tz),
                at_ms,
                request_id: request_id.to_owned(),
                amount: cost,
            })
            .collect();
        if records.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (a body dropped during shutdown): the log row still has the cost, and
            // the windows are rebuilt from it.
            self.dirty.lock().extend(records.iter().map(|r| r.subject));
            return;
        };
        let engine = self.clone();
        runtime.spawn(async move {
            if let Err(e) = engine.store.add_spend(&records).await {
                engine.failed("add spend", &e);
                engine.dirty.lock().extend(records.iter().map(|r| r.subject));
            }
        });
    }
}

fn window_name(w: SpendWindow) -> &'static str {
    match w {
        SpendWindow::FiveHourRolling => "rolling 5-hour",
        SpendWindow::FiveHourFixed => "5-hour",
        SpendWindow::DailyRolling => "rolling 24-hour",
        SpendWindow::DailyFixed => "daily",
        SpendWindow::Weekly => "weekly",
        SpendWindow::Monthly => "monthly",
        SpendWindow::Total => "total",
    }
}
