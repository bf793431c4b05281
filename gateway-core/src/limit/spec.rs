//! What a limit is: the configured limits of users, keys and providers, the subjects they apply
//! to, and the frame of fixed windows a subject's spend is kept in at one instant.

use std::fmt;

use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::window::{
    EpochMs, FIVE_HOURS_MS, FiveHourMode, LimitWindow, ResetTime, WindowMode, parse_usd_limit, span,
};
use crate::config::Id;
use crate::usage::UsdNanos;

/// Limits of a user, key or provider. Money is configured as decimal strings (`"12.50"`); an
/// integer is accepted too. Absent or 0 = no limit. Providers take the spend limits only (their
/// concurrent sessions are a routing option).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute, sliding (users and keys).
    #[serde(skip_serializing_if = "is_zero")]
    pub rpm_limit: u32,
    /// Distinct sessions active within `SESSION_TTL` (users and keys).
    #[serde(skip_serializing_if = "is_zero")]
    pub limit_concurrent_sessions: u32,
    /// Spend per 5 hours.
    #[serde(with = "usd_opt", skip_serializing_if = "Option::is_none")]
    pub limit_5h_usd: Option<UsdNanos>,
    /// `rolling` (the last 5 h, default) or `fixed` (5 h opened by the first billed request).
    pub limit_5h_mode: WindowMode,
    /// Spend per day.
    #[serde(with = "usd_opt", skip_serializing_if = "Option::is_none")]
    pub limit_daily_usd: Option<UsdNanos>,
    /// `fixed` (default: resets at `daily_reset_time`) or `rolling` (the last 24 h).
    pub daily_reset_mode: WindowMode,
    /// Local `HH:MM` at which fixed days reset; default `00:00`.
    pub daily_reset_time: ResetTime,
    /// Spend per week, Monday 00:00 local to the next.
    #[serde(with = "usd_opt", skip_serializing_if = "Option::is_none")]
    pub limit_weekly_usd: Option<UsdNanos>,
    /// Spend per calendar month.
    #[serde(with = "usd_opt", skip_serializing_if = "Option::is_none")]
    pub limit_monthly_usd: Option<UsdNanos>,
    /// Spend in total, since `total_reset_at`.
    #[serde(with = "usd_opt", skip_serializing_if = "Option::is_none")]
    pub limit_total_usd: Option<UsdNanos>,
    /// Spend before this instant does not count toward `limit_total_usd` (a manual reset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_reset_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rpm_limit: 0,
            limit_concurrent_sessions: 0,
            limit_5h_usd: None,
            limit_5h_mode: WindowMode::Rolling,
            limit_daily_usd: None,
            daily_reset_mode: WindowMode::Fixed,
            daily_reset_time: ResetTime::MIDNIGHT,
            limit_weekly_usd: None,
            limit_monthly_usd: None,
            limit_total_usd: None,
            total_reset_at: None,
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The config keys of the spend limits, flat in a provider, user or key table.
pub const SPEND_LIMIT_KEYS: &[&str] = &[
    "limit_5h_usd",
    "limit_5h_mode",
    "limit_daily_usd",
    "daily_reset_mode",
    "daily_reset_time",
    "limit_weekly_usd",
    "limit_monthly_usd",
    "limit_total_usd",
    "total_reset_at",
];

/// The config keys of the rate limits, flat in a user or key table.
pub const RATE_LIMIT_KEYS: &[&str] = &["rpm_limit", "limit_concurrent_sessions"];

impl Limits {
    /// Whether anything is limited.
    pub fn any(&self) -> bool {
        self.rpm_limit > 0 || self.limit_concurrent_sessions > 0 || self.any_spend()
    }

    /// Whether any spend limit is set (only then is the subject's spend tracked).
    pub fn any_spend(&self) -> bool {
        self.spend_windows().next().is_some()
    }

    /// The configured spend windows with their limits, in check order.
    pub fn spend_windows(&self) -> impl Iterator<Item = (SpendWindow, UsdNanos)> + '_ {
        let five = match self.limit_5h_mode {
            WindowMode::Rolling => SpendWindow::FiveHourRolling,
            WindowMode::Fixed => SpendWindow::FiveHourFixed,
        };
        let daily = match self.daily_reset_mode {
            WindowMode::Rolling => SpendWindow::DailyRolling,
            WindowMode::Fixed => SpendWindow::DailyFixed,
        };
        [
            (SpendWindow::Total, self.limit_total_usd),
            (five, self.limit_5h_usd),
            (daily, self.limit_daily_usd),
            (SpendWindow::Weekly, self.limit_weekly_usd),
            (SpendWindow::Monthly, self.limit_monthly_usd),
        ]
        .into_iter()
        .filter_map(|(w, limit)| limit.map(|l| (w, l)))
    }

    /// The fixed windows at `at_ms` in `tz`, where spend at that instant is counted.
    ///
    /// A frame changes only when a day, week or month turns, and computing one in a timezone
    /// costs microseconds, asked several times per request: recent frames are kept per thread
    /// and reused while `at_ms` is inside all three of their windows.
    pub fn frame(&self, at_ms: EpochMs, tz: Tz) -> SpendFrame {
        let key = (self.daily_reset_time, self.total_reset_at.map(|t| t.timestamp_millis()), tz);
        let cached = RECENT_FRAMES.with_borrow(|frames| {
            frames.iter().flatten().find(|(k, f)| *k == key && f.contains(at_ms)).map(|(_, f)| *f)
        });
        if let Some(frame) = cached {
            return frame;
        }
        let frame = self.compute_frame(at_ms, tz);
        RECENT_FRAMES.with_borrow_mut(|frames| {
            frames.rotate_right(1);
            frames[0] = Some((key, frame));
        });
        frame
    }

    fn compute_frame(&self, at_ms: EpochMs, tz: Tz) -> SpendFrame {
        let bounds = |w: LimitWindow| {
            let s = span(&w, at_ms, tz);
            (s.start_ms, s.reset_ms.unwrap_or(s.start_ms))
        };
        let (daily_start, daily_reset) =
            bounds(LimitWindow::Daily { mode: WindowMode::Fixed, reset: self.daily_reset_time });
        let (weekly_start, weekly_reset) = bounds(LimitWindow::Weekly);
        let (monthly_start, monthly_reset) = bounds(LimitWindow::Monthly);
        SpendFrame {
            daily_start,
            daily_reset,
            weekly_start,
            weekly_reset,
            monthly_start,
            monthly_reset,
            total_since: self.total_reset_at.map_or(0, |t| t.timestamp_millis()),
        }
    }

    /// What decides where spend is kept: a change of it makes the store rebuild the subject's
    /// windows from the request log.
    pub fn shape(&self, tz: Tz) -> String {
        format!(
            "{}|{}|{}",
            self.daily_reset_time,
            self.total_reset_at.map_or(0, |t| t.timestamp_millis()),
            tz
        )
    }
}

/// Splits the limit keys out of a config table and parses them; the rest stays in `table`.
pub(crate) fn take_limits<T: serde::de::DeserializeOwned>(
    table: &mut serde_json::Map<String, serde_json::Value>,
    keys: &[&[&str]],
) -> Result<T, String> {
    let mut limits = serde_json::Map::new();
    for key in keys.iter().flat_map(|k| k.iter()) {
        if let Some(v) = table.remove(*key) {
            limits.insert((*key).to_owned(), v);
        }
    }
    serde_json::from_value(serde_json::Value::Object(limits)).map_err(|e| e.to_string())
}

/// Decimal-string money in config: `"12.5"` or an integer; floats are refused (inexact).
mod usd_opt {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<UsdNanos>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UsdNanos>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let parsed = match Option::<Raw>::deserialize(d)? {
            None => return Ok(None),
            Some(Raw::Text(s)) => parse_usd_limit(&s),
            Some(Raw::Int(i)) => parse_usd_limit(&i.to_string()),
            Some(Raw::Float(f)) => {
                return Err(serde::de::Error::custom(format!(
                    "money must be a decimal string such as \"{f}\", not a float"
                )));
            }
        };
        parsed.map(Some).map_err(serde::de::Error::custom)
    }
}

/// Whose usage a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    /// A user (all its keys add up).
    User,
    /// An API key.
    Key,
    /// An upstream provider.
    Provider,
}

/// A user, key or provider whose limits are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject {
    /// What it is.
    pub kind: SubjectKind,
    /// Its id.
    pub id: Id,
}

impl Subject {
    /// A user.
    pub const fn user(id: Id) -> Self {
        Self { kind: SubjectKind::User, id }
    }
    /// A key.
    pub const fn key(id: Id) -> Self {
        Self { kind: SubjectKind::Key, id }
    }
    /// A provider.
    pub const fn provider(id: Id) -> Self {
        Self { kind: SubjectKind::Provider, id }
    }

    /// Short tag used in store keys: `u:1`, `k:2`, `p:3`.
    pub fn tag(&self) -> String {
        let kind = match self.kind {
            SubjectKind::User => 'u',
            SubjectKind::Key => 'k',
            SubjectKind::Provider => 'p',
        };
        format!("{kind}:{}", self.id)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SubjectKind::User => "user",
            SubjectKind::Key => "key",
            SubjectKind::Provider => "provider",
        };
        write!(f, "{kind} {}", self.id)
    }
}

/// A spend window as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendWindow {
    /// The last 5 hours.
    FiveHourRolling,
    /// 5 hours opened by the first billed request.
    FiveHourFixed,
    /// The last 24 hours.
    DailyRolling,
    /// The local day from the reset time.
    DailyFixed,
    /// Monday to Monday.
    Weekly,
    /// The calendar month.
    Monthly,
    /// Since the total's reset.
    Total,
}

impl SpendWindow {
    /// The rolling length, for rolling windows.
    pub const fn rolling_ms(self) -> Option<i64> {
        match self {
            Self::FiveHourRolling => Some(FIVE_HOURS_MS),
            Self::DailyRolling => Some(super::window::DAY_MS),
            _ => None,
        }
    }

    /// The name used in error bodies (`limit_type`), as claude-code-hub names them.
    pub const fn limit_type(self) -> &'static str {
        match self {
            Self::FiveHourRolling | Self::FiveHourFixed => "usd_5h",
            Self::DailyRolling | Self::DailyFixed => "daily_quota",
            Self::Weekly => "usd_weekly",
            Self::Monthly => "usd_monthly",
            Self::Total => "usd_total",
        }
    }

    /// All windows, in check order.
    pub const ALL: [Self; 7] = [
        Self::Total,
        Self::FiveHourRolling,
        Self::FiveHourFixed,
        Self::DailyRolling,
        Self::DailyFixed,
        Self::Weekly,
        Self::Monthly,
    ];

    /// The window of [`super::window`] arithmetic this corresponds to (fixed 5 h without its
    /// opening instant).
    pub fn limit_window(self, limits: &Limits) -> LimitWindow {
        match self {
            Self::FiveHourRolling => LimitWindow::FiveHour(FiveHourMode::Rolling),
            Self::FiveHourFixed => LimitWindow::FiveHour(FiveHourMode::Fixed { opened_at_ms: None }),
            Self::DailyRolling => {
                LimitWindow::Daily { mode: WindowMode::Rolling, reset: limits.daily_reset_time }
            }
            Self::DailyFixed => {
                LimitWindow::Daily { mode: WindowMode::Fixed, reset: limits.daily_reset_time }
            }
            Self::Weekly => LimitWindow::Weekly,
            Self::Monthly => LimitWindow::Monthly,
            Self::Total => LimitWindow::Total { since: limits.total_reset_at.map(|t| t.timestamp_millis()) },
        }
    }
}

/// The fixed windows in which spend at one instant is counted: each is named by its start, so
/// a new window starts from zero by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SpendFrame {
    /// Start of the fixed day.
    pub daily_start: EpochMs,
    /// Its reset.
    pub daily_reset: EpochMs,
    /// Start of the week.
    pub weekly_start: EpochMs,
    /// Its reset.
    pub weekly_reset: EpochMs,
    /// Start of the month.
    pub monthly_start: EpochMs,
    /// Its reset.
    pub monthly_reset: EpochMs,
    /// Start of the total (its reset instant, or 0).
    pub total_since: EpochMs,
}

type FrameKey = (ResetTime, Option<EpochMs>, Tz);

thread_local! {
    /// A few frames, most recent first: one per distinct reset time and timezone in use.
    static RECENT_FRAMES: std::cell::RefCell<[Option<(FrameKey, SpendFrame)>; 4]> =
        const { std::cell::RefCell::new([None; 4]) };
}

impl SpendFrame {
    /// Whether `at_ms` lies in this frame's day, week and month (so the frame at `at_ms` is
    /// this one). A window without a reset never matches, so such frames are not reused.
    fn contains(&self, at_ms: EpochMs) -> bool {
        [
            (self.daily_start, self.daily_reset),
            (self.weekly_start, self.weekly_reset),
            (self.monthly_start, self.monthly_reset),
        ]
        .iter()
        .all(|&(start, reset)| start <= at_ms && at_ms < reset)
    }

    /// Start and reset (`None`: never) of a calendar window; `None` for the others.
    pub fn bounds(&self, window: SpendWindow) -> Option<(EpochMs, Option<EpochMs>)> {
        match window {
            SpendWindow::DailyFixed => Some((self.daily_start, Some(self.daily_reset))),
            SpendWindow::Weekly => Some((self.weekly_start, Some(self.weekly_reset))),
            SpendWindow::Monthly => Some((self.monthly_start, Some(self.monthly_reset))),
            SpendWindow::Total => Some((self.total_since, None)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_from_decimal_strings_and_integers_but_not_floats() {
        let l: Limits = serde_json::from_value(serde_json::json!({
            "rpm_limit": 10, "limit_daily_usd": "2.50", "limit_total_usd": 100, "daily_reset_time": "18:30"
        }))
        .expect("limits");
        assert_eq!(l.rpm_limit, 10);
        assert_eq!(l.limit_daily_usd, Some(UsdNanos(2_500_000_000)));
        assert_eq!(l.limit_total_usd, Some(UsdNanos(100 * UsdNanos::PER_USD)));
        assert_eq!(l.daily_reset_time, ResetTime::new(18, 30).expect("time"));
        assert_eq!(l.limit_5h_mode, WindowMode::Rolling);
        assert_eq!(l.daily_reset_mode, WindowMode::Fixed);
        let err = serde_json::from_value::<Limits>(serde_json::json!({"limit_daily_usd": 2.5}))
            .expect_err("float refused");
        assert!(err.to_string().contains("decimal string"), "{err}");
        assert!(serde_json::from_value::<Limits>(serde_json::json!({"limit_dayly_usd": "1"})).is_err());
    }

    #[test]
    fn windows_follow_the_modes_in_check_order() {
        let mut s = Limits {
            limit_5h_usd: Some(UsdNanos(1)),
            limit_daily_usd: Some(UsdNanos(2)),
            limit_total_usd: Some(UsdNanos(3)),
            ..Default::default()
        };
        let got: Vec<_> = s.spend_windows().map(|(w, _)| w).collect();
        assert_eq!(got, [SpendWindow::Total, SpendWindow::FiveHourRolling, SpendWindow::DailyFixed]);
        s.limit_5h_mode = WindowMode::Fixed;
        s.daily_reset_mode = WindowMode::Rolling;
        let got: Vec<_> = s.spend_windows().map(|(w, _)| w).collect();
        assert_eq!(got, [SpendWindow::Total, SpendWindow::FiveHourFixed, SpendWindow::DailyRolling]);
        assert!(!Limits::default().any());
    }

    #[test]
    fn reused_frames_equal_computed_ones_across_days_weeks_months_and_dst() {
        let at_0 =
            chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("t").timestamp_millis();
        let tzs = [chrono_tz::UTC, chrono_tz::America::New_York, chrono_tz::Asia::Kolkata];
        let limits = [
            Limits::default(),
            Limits { daily_reset_time: ResetTime::new(18, 30).expect("t"), ..Default::default() },
        ];
        // 83-minute steps through a year, alternating the reset times and timezones so that
        // several frames live in the cache at once, and a step back now and then.
        let mut at = at_0;
        for step in 0..6_600i64 {
            at += if step % 50 == 49 { -5 * 3_600_000 } else { 83 * 60_000 };
            for tz in tzs {
                for l in &limits {
                    // The instant, then the edges of its windows: the last instant of each, and
                    // the first of the next.
                    let f = l.compute_frame(at, tz);
                    let edges = [f.daily_reset, f.weekly_reset, f.monthly_reset];
                    let probes = [at].into_iter().chain(edges.into_iter().flat_map(|r| [r - 1, r, at]));
                    for probe in probes {
                        assert_eq!(l.frame(probe, tz), l.compute_frame(probe, tz), "at {probe} in {tz}");
                    }
                }
            }
        }
    }

    #[test]
    fn frame_names_the_calendar_windows_of_the_instant() {
        // Wednesday 2025-01-15 12:00 UTC.
        let at = chrono::DateTime::parse_from_rfc3339("2025-01-15T12:00:00Z").expect("t").timestamp_millis();
        let limits = Limits { daily_reset_time: ResetTime::new(18, 0).expect("t"), ..Default::default() };
        let f = limits.frame(at, chrono_tz::UTC);
        let ms = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("t").timestamp_millis();
        assert_eq!(f.daily_start, ms("2025-01-14T18:00:00Z"));
        assert_eq!(f.daily_reset, ms("2025-01-15T18:00:00Z"));
        assert_eq!(f.weekly_start, ms("2025-01-13T00:00:00Z"));
        assert_eq!(f.monthly_start, ms("2025-01-01T00:00:00Z"));
        assert_eq!(f.monthly_reset, ms("2025-02-01T00:00:00Z"));
        assert_eq!(f.total_since, 0);
    }
}
