//! Spend and rate limits on users, keys and providers.
//!
//! [`window`] holds the pure arithmetic: which instants a limit window covers at a given moment
//! (RPM sliding minute, rolling or fixed 5 hours, fixed or rolling day with a reset time, the
//! Monday-based week, the calendar month, the lifetime total), when a window resets or a rolling
//! window frees enough room, the `Retry-After` / `X-RateLimit-Reset` values that follow, and the
//! parsing of limits configured as decimal dollar strings into exact [`UsdNanos`].
//!
//! Everything here takes the current instant as an argument (or a [`Clock`]), so tests can pin
//! time to any boundary; calendar windows are computed in the configured timezone (`TZ`).
//!
//! [`UsdNanos`]: crate::usage::UsdNanos
//! [`Clock`]: crate::store::Clock

pub mod engine;
pub(crate) mod memory;
pub mod spec;
pub mod state;
pub mod window;

pub use engine::{LimitEngine, LimitSettings, RateLimitFailMode, SpendHistory};
pub use spec::{Limits, SpendWindow, Subject, SubjectKind};
pub use state::{
    Admission, AdmissionCheck, LimitHit, LimitKind, SpendEvent, SpendRecord, SpendSnapshot, SubjectCheck,
};
