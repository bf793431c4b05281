//! What the [`StateStore`](crate::store::StateStore) is asked about limits, and what it answers.
//!
//! One admission is one atomic step in the store: it reads every spend window of the caller's
//! key and user (and of the candidate providers), checks concurrency and RPM, and only when
//! everything passes counts the request toward RPM and the session toward concurrency. Spend is
//! added later, when the request's cost is known ([`SpendRecord`]).
//!
//! The store keeps, per subject with spend limits: the spend of the last 24 h as one sum per
//! second ([`ROLLING_BUCKET_MS`](super::window::ROLLING_BUCKET_MS)) with running sums for the
//! rolling 5 h and 24 h windows, the fixed 5 h window (opened by the first billed request), the
//! counters of the current fixed day, week, month and total, each with its window's start (a
//! record for an older window than the newest one counted changes nothing: that window is over),
//! and the request ids taken in the last [`REQUEST_ID_MEMORY_MS`]. A subject is *loaded* once its
//! windows were rebuilt from the request log ([`SpendSnapshot`]); until then admission answers
//! [`Admission::NeedsWarm`].

use serde::{Deserialize, Serialize};

use super::spec::{SpendFrame, SpendWindow, Subject};
use super::window::EpochMs;
use crate::config::Id;
use crate::usage::UsdNanos;

/// How long a subject's windows remember the request ids they took (added spend, or events of a
/// rebuild), so that a request is counted once: a rebuild may read a request from the log just
/// before its spend is added. Both happen when the request ends, seconds apart at most, so ten
/// minutes are plenty, and the memory this costs is bounded by ten minutes of traffic.
pub const REQUEST_ID_MEMORY_MS: i64 = 10 * 60_000;

/// A billed request as the request log has it: (arrival, request id, cost).
pub type SpendEvent = (EpochMs, String, UsdNanos);

/// The limits of one subject, as one admission checks them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectCheck {
    /// Whose limits.
    pub subject: Subject,
    /// Requests per minute; 0 = none.
    pub rpm: u32,
    /// Concurrent sessions; 0 = none.
    pub concurrent_sessions: u32,
    /// Spend windows with their limits (empty: spend not checked).
    pub spend: Vec<(SpendWindow, UsdNanos)>,
    /// Where spend is kept now; see [`super::spec::SpendLimits::shape`].
    pub shape: String,
    /// The fixed windows of now.
    pub frame: SpendFrame,
}

impl SubjectCheck {
    /// Whether the subject's spend is tracked (it has spend limits).
    pub fn tracks_spend(&self) -> bool {
        !self.spend.is_empty()
    }
}

/// One admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionCheck {
    /// Request id (the RPM window's member).
    pub request_id: String,
    /// Session, counted toward concurrency limits.
    pub session: Option<String>,
    /// Milliseconds a session stays active after its last request (`SESSION_TTL`).
    pub session_ttl_ms: i64,
    /// Key then user: a failure rejects the request.
    pub subjects: Vec<SubjectCheck>,
    /// Candidate providers with spend limits: a provider over a limit is only left out.
    pub providers: Vec<SubjectCheck>,
}

impl AdmissionCheck {
    /// Whether nothing needs checking.
    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty() && self.providers.is_empty()
    }
}

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Requests per minute.
    Rpm,
    /// Concurrent sessions.
    ConcurrentSessions,
    /// A spend window.
    Spend(SpendWindow),
}

impl LimitKind {
    /// `limit_type` in error bodies.
    pub const fn limit_type(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::ConcurrentSessions => "concurrent_sessions",
            Self::Spend(w) => w.limit_type(),
        }
    }
}

/// A refused admission: which limit of whom, where it stands and when it frees up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitHit {
    /// Whose limit.
    pub subject: Subject,
    /// Which limit.
    pub kind: LimitKind,
    /// Current value: requests, sessions or nano-dollars.
    pub current: i64,
    /// The limit, in the same unit.
    pub limit: i64,
    /// When the request would be admitted again, if known: a fixed window's reset, the instant
    /// enough spend or requests leave a rolling window. `None` for the total.
    pub reset_at_ms: Option<EpochMs>,
    /// The store's now when it refused.
    pub now_ms: EpochMs,
}

/// The store's answer to an [`AdmissionCheck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    /// Admitted and counted; the listed providers are over a spend limit.
    Admitted {
        /// Providers to leave out.
        providers_over: Vec<Id>,
    },
    /// Refused; nothing was counted.
    Rejected(LimitHit),
    /// These subjects' windows must be rebuilt first ([`SpendSnapshot`]); nothing was counted.
    NeedsWarm(Vec<Subject>),
}

/// Spend of one finished request, for one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendRecord {
    /// Whose spend.
    pub subject: Subject,
    /// The subject's shape (see [`SubjectCheck::shape`]).
    pub shape: String,
    /// The fixed windows of `at_ms`.
    pub frame: SpendFrame,
    /// When the request arrived (the request log's `created_at`): the instant it counts at.
    pub at_ms: EpochMs,
    /// Request id. A record whose id the subject's windows took in the last
    /// [`REQUEST_ID_MEMORY_MS`] was counted before (read from the log by a rebuild, or sent
    /// twice) and is skipped whole.
    pub request_id: String,
    /// The cost.
    pub amount: UsdNanos,
}

/// A subject's windows rebuilt from the request log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpendSnapshot {
    /// Whose.
    pub subject: Subject,
    /// Its shape.
    pub shape: String,
    /// The fixed windows the sums below belong to.
    pub frame: SpendFrame,
    /// Billed requests of the last 24 h: (arrival, request id, cost), oldest first.
    pub events: Vec<SpendEvent>,
    /// The open fixed 5 h window: (opened at, spend in it).
    pub fixed_5h: Option<(EpochMs, UsdNanos)>,
    /// Spend in the fixed day of `frame`.
    pub daily: UsdNanos,
    /// Spend in the week of `frame`.
    pub weekly: UsdNanos,
    /// Spend in the month of `frame`.
    pub monthly: UsdNanos,
    /// Spend since `frame.total_since`.
    pub total: UsdNanos,
}

impl Default for Subject {
    fn default() -> Self {
        Subject::user(0)
    }
}
