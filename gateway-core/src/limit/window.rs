//! Window arithmetic of spend and rate limits: pure functions of an instant and a timezone.
//!
//! # Instants and boundaries
//!
//! Instants are [`EpochMs`] (UTC milliseconds). Every window is half-open: a window *starts* at
//! its first counted instant (inclusive) and *resets* at the first instant that no longer belongs
//! to it (exclusive). Consequently:
//!
//! - a **fixed** window `[start, reset)` covers `now` when `start <= now < reset`; at the reset
//!   instant itself the next window has begun;
//! - a **rolling** window of length `L` counts an event at `t` while `now < t + L`, i.e. the
//!   events in `(now - L, now]`, so its [`WindowSpan::start_ms`] is `now - L + 1`. An event thus
//!   counts for exactly `L` milliseconds, and it leaves the window at `t + L` (this is how
//!   claude-code-hub prunes its sliding sets: members with `score <= now - L` are dropped).
//!
//! # Windows
//!
//! | window | span at `now` |
//! |---|---|
//! | [`LimitWindow::Rpm`] | rolling 60 s |
//! | [`LimitWindow::FiveHour`] rolling | rolling 5 h |
//! | [`LimitWindow::FiveHour`] fixed | 5 h **opened by the first billed request** (claude-code-hub's fixed mode): `[opened, opened + 5h)` while open; when none is open, the window a request billed at `now` would open, `[now, now + 5h)` |
//! | [`LimitWindow::Daily`] fixed | from the last local `reset` time (`HH:MM`) to the next one |
//! | [`LimitWindow::Daily`] rolling | rolling 24 h |
//! | [`LimitWindow::Weekly`] | Monday 00:00 local to the next Monday 00:00 local |
//! | [`LimitWindow::Monthly`] | the 1st 00:00 local to the next month's 1st 00:00 local |
//! | [`LimitWindow::Total`] | since the reset instant (or the Unix epoch); never resets |
//!
//! # Daylight saving time
//!
//! A nominal local time (a day's reset time, a Monday or a 1st at 00:00) is turned into an
//! instant by [`local_instant`]:
//!
//! - in a **gap** (the clocks jump forward over it, e.g. 02:30 on the last Sunday of March in
//!   Europe/Berlin), it is the earliest instant whose local time is at or after the nominal one,
//!   which is the transition instant itself (03:00 CEST in the example);
//! - in a **fold** (the local time happens twice, e.g. 02:30 on the last Sunday of October in
//!   Europe/Berlin), it is the first occurrence (02:30 CEST, not 02:30 CET).
//!
//! So local days, weeks and months around a transition are 23 h / 25 h, 167 h / 169 h, etc. long,
//! and consecutive boundaries never go backwards. A local day that does not exist at all (a
//! skipped date) yields an empty window that is never current.
//!
//! # Money
//!
//! Amounts are [`UsdNanos`]; limits configured as decimal strings are parsed exactly by
//! [`parse_usd_limit`]. A spend limit admits while usage is **below** it (`usage < limit`), as in
//! claude-code-hub, whose lease allows a request while the remaining budget is positive.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::store::Clock;
pub use crate::store::state::EpochMs;
use crate::usage::UsdNanos;

/// Milliseconds in a minute: the length of the RPM sliding window.
pub const RPM_WINDOW_MS: i64 = 60_000;
/// Milliseconds in five hours.
pub const FIVE_HOURS_MS: i64 = 5 * 3_600_000;
/// Milliseconds in 24 hours: the length of the rolling daily window.
pub const DAY_MS: i64 = 24 * 3_600_000;

/// Granularity of the rolling spend windows (5 h, 24 h) in the state stores: spend is kept as one
/// sum per second ("bucket") instead of one entry per request, so a subject's windows hold at most
/// 86,400 sums whatever its traffic. A bucket leaves a window with its last millisecond: spend
/// billed at `t` counts until [`rolling_leaves_at`], never less than the exact `t + L` and at
/// most 999 ms more. (RPM stays exact: one entry per request.)
pub const ROLLING_BUCKET_MS: i64 = 1_000;

/// The bucket of `at`: the start of its second.
pub const fn rolling_bucket(at: EpochMs) -> EpochMs {
    at - at.rem_euclid(ROLLING_BUCKET_MS)
}

/// When spend billed at `at` leaves a rolling window of `length_ms`, as the state stores keep it:
/// with its whole bucket, `length_ms` after the bucket's last millisecond.
pub const fn rolling_leaves_at(at: EpochMs, length_ms: i64) -> EpochMs {
    rolling_bucket(at) + ROLLING_BUCKET_MS - 1 + length_ms
}

/// The oldest bucket still in a rolling window of `length_ms` at `now`: the smallest bucket `b`
/// with `b + ROLLING_BUCKET_MS - 1 + length_ms > now`.
pub const fn rolling_first_bucket(now: EpochMs, length_ms: i64) -> EpochMs {
    let lowest = now - length_ms - ROLLING_BUCKET_MS + 2;
    lowest + (ROLLING_BUCKET_MS - lowest.rem_euclid(ROLLING_BUCKET_MS)) % ROLLING_BUCKET_MS
}

/// Fixed or rolling, as configured by `limit_5h_mode` and `daily_reset_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowMode {
    /// A window with a start and a reset instant; usage restarts from zero at the reset.
    Fixed,
    /// The last window length before now; usage leaves it event by event.
    Rolling,
}

impl FromStr for WindowMode {
    type Err = LimitParseError;

    /// `"fixed"` or `"rolling"` (surrounding whitespace and ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("fixed") {
            Ok(Self::Fixed)
        } else if s.eq_ignore_ascii_case("rolling") {
            Ok(Self::Rolling)
        } else {
            Err(LimitParseError::Mode(s.to_owned()))
        }
    }
}

impl fmt::Display for WindowMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fixed => "fixed",
            Self::Rolling => "rolling",
        })
    }
}

/// A local time of day at which fixed daily windows reset (`daily_reset_time`, `"HH:MM"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResetTime {
    hour: u8,
    minute: u8,
}

impl ResetTime {
    /// Local midnight, the default reset time.
    pub const MIDNIGHT: Self = Self { hour: 0, minute: 0 };

    /// `hour:minute`; `None` unless `hour < 24` and `minute < 60`.
    pub const fn new(hour: u8, minute: u8) -> Option<Self> {
        if hour < 24 && minute < 60 { Some(Self { hour, minute }) } else { None }
    }

    /// The hour, 0–23.
    pub const fn hour(self) -> u8 {
        self.hour
    }

    /// The minute, 0–59.
    pub const fn minute(self) -> u8 {
        self.minute
    }

    fn naive(self) -> NaiveTime {
        NaiveTime::from_hms_opt(u32::from(self.hour), u32::from(self.minute), 0).unwrap_or(NaiveTime::MIN)
    }
}

impl FromStr for ResetTime {
    type Err = LimitParseError;

    /// `"HH:MM"` (a one-digit hour is accepted), 00:00–23:59.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LimitParseError::ResetTime(s.to_owned());
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let digits = |part: &str, max_len: usize| {
            (!part.is_empty() && part.len() <= max_len && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u8>().ok())
                .flatten()
        };
        let hour = digits(h, 2).ok_or_else(bad)?;
        let minute = if m.len() == 2 { digits(m, 2) } else { None }.ok_or_else(bad)?;
        Self::new(hour, minute).ok_or_else(bad)
    }
}

impl TryFrom<String> for ResetTime {
    type Error = LimitParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ResetTime> for String {
    fn from(t: ResetTime) -> Self {
        t.to_string()
    }
}

impl fmt::Display for ResetTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// The 5-hour window's mode, with what the usage store knows about an open fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FiveHourMode {
    /// The last 5 hours.
    Rolling,
    /// A 5-hour window opened by the first billed request after the previous one expired.
    Fixed {
        /// When the current fixed window was opened (its first billed request), if one is on
        /// record; an expired one counts as none. [`fixed_window_opened_at`] reconstructs it
        /// from the billed requests' timestamps.
        opened_at_ms: Option<EpochMs>,
    },
}

impl FiveHourMode {
    /// The mode for a configured [`WindowMode`]; `opened_at_ms` is used by fixed mode only.
    pub const fn new(mode: WindowMode, opened_at_ms: Option<EpochMs>) -> Self {
        match mode {
            WindowMode::Rolling => Self::Rolling,
            WindowMode::Fixed => Self::Fixed { opened_at_ms },
        }
    }
}

/// One limit window (the dimension a limit is counted over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitWindow {
    /// Requests per minute (`rpm_limit`): a sliding 60 s window.
    Rpm,
    /// Spend per 5 hours (`limit_5h_usd`, `limit_5h_mode`).
    FiveHour(FiveHourMode),
    /// Spend per day (`limit_daily_usd`, `daily_reset_mode`, `daily_reset_time`).
    Daily {
        /// Fixed (resets at `reset` local time) or rolling (last 24 h).
        mode: WindowMode,
        /// Local reset time of the fixed mode; ignored by the rolling mode.
        reset: ResetTime,
    },
    /// Spend per week (`limit_weekly_usd`): Monday 00:00 local to the next Monday 00:00 local.
    Weekly,
    /// Spend per calendar month (`limit_monthly_usd`), from the 1st 00:00 local.
    Monthly,
    /// Spend in total (`limit_total_usd`), since a reset.
    Total {
        /// The last reset of the total (`cost_reset_at`); `None` counts from the Unix epoch.
        since: Option<EpochMs>,
    },
}

impl LimitWindow {
    /// The span of this window at `now` in `tz`; see [`span`].
    pub fn span(&self, now_ms: EpochMs, tz: Tz) -> WindowSpan {
        span(self, now_ms, tz)
    }

    /// The span of this window at `clock`'s now in `tz`.
    pub fn span_now(&self, clock: &dyn Clock, tz: Tz) -> WindowSpan {
        span(self, clock.now_ms(), tz)
    }

    /// The length of a rolling window, `None` for fixed windows and the total.
    pub const fn rolling_length_ms(&self) -> Option<i64> {
        match self {
            Self::Rpm => Some(RPM_WINDOW_MS),
            Self::FiveHour(FiveHourMode::Rolling) => Some(FIVE_HOURS_MS),
            Self::Daily { mode: WindowMode::Rolling, .. } => Some(DAY_MS),
            _ => None,
        }
    }
}

/// How a [`WindowSpan`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// A fixed window: usage restarts from zero at [`WindowSpan::reset_ms`].
    Fixed,
    /// A rolling window of this length: usage leaves it event by event, see
    /// [`rolling_release_ms`].
    Rolling {
        /// The window's length in milliseconds.
        length_ms: i64,
    },
    /// The lifetime total: never resets by itself.
    Lifetime,
}

/// The instants a limit window covers at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSpan {
    /// The first instant counted (inclusive).
    pub start_ms: EpochMs,
    /// The reset instant (exclusive end) of a fixed window; `None` for rolling windows and the
    /// lifetime total, which have no single reset.
    pub reset_ms: Option<EpochMs>,
    /// How the window ends.
    pub kind: SpanKind,
}

impl WindowSpan {
    /// Whether usage recorded at `ts` counts in this span.
    pub fn contains(&self, ts: EpochMs) -> bool {
        ts >= self.start_ms && self.reset_ms.is_none_or(|reset| ts < reset)
    }

    /// The span with its start moved to `reset_at` if that is later (a manual "reset usage":
    /// usage before it no longer counts).
    pub fn clipped(self, reset_at: Option<EpochMs>) -> Self {
        Self { start_ms: reset_at.map_or(self.start_ms, |r| r.max(self.start_ms)), ..self }
    }

    /// The sum of the amounts recorded inside the span (saturating at the `i64` range).
    pub fn usage<I>(&self, events: I) -> UsdNanos
    where
        I: IntoIterator<Item = (EpochMs, UsdNanos)>,
    {
        let total: i128 =
            events.into_iter().filter(|(ts, _)| self.contains(*ts)).map(|(_, a)| i128::from(a.0)).sum();
        UsdNanos(saturate(total))
    }

    /// Whole seconds from `now` until the fixed reset, rounded up (`Retry-After`); `None`
    /// without a fixed reset.
    pub fn retry_after_secs(&self, now_ms: EpochMs) -> Option<u64> {
        self.reset_ms.map(|reset| seconds_until(now_ms, reset))
    }
}

/// The span `window` covers at `now_ms`, calendar windows computed in `tz`.
///
/// The result always contains `now_ms`, except for a fixed 5-hour window opened "in the future"
/// by a clock skewed ahead (it is still the open window) and a total whose reset lies ahead.
/// Instants beyond chrono's calendar (about ±262,000 years) give a one-millisecond fixed span at
/// `now_ms`.
pub fn span(window: &LimitWindow, now_ms: EpochMs, tz: Tz) -> WindowSpan {
    let rolling = |length_ms: i64| WindowSpan {
        start_ms: now_ms.saturating_sub(length_ms).saturating_add(1),
        reset_ms: None,
        kind: SpanKind::Rolling { length_ms },
    };
    let fixed = |(start_ms, reset_ms): (EpochMs, EpochMs)| WindowSpan {
        start_ms,
        reset_ms: Some(reset_ms),
        kind: SpanKind::Fixed,
    };
    let calendar =
        |bounds: Option<(EpochMs, EpochMs)>| fixed(bounds.unwrap_or((now_ms, now_ms.saturating_add(1))));
    match *window {
        LimitWindow::Rpm => rolling(RPM_WINDOW_MS),
        LimitWindow::FiveHour(FiveHourMode::Rolling) => rolling(FIVE_HOURS_MS),
        LimitWindow::FiveHour(FiveHourMode::Fixed { opened_at_ms }) => {
            let start = opened_at_ms.filter(|&opened| now_ms < opened.saturating_add(FIVE_HOURS_MS));
            let start = start.unwrap_or(now_ms);
            fixed((start, start.saturating_add(FIVE_HOURS_MS)))
        }
        LimitWindow::Daily { mode: WindowMode::Rolling, .. } => rolling(DAY_MS),
        LimitWindow::Daily { mode: WindowMode::Fixed, reset } => {
            calendar(calendar_bounds(now_ms, tz, reset.naive(), Period::Day))
        }
        LimitWindow::Weekly => calendar(calendar_bounds(now_ms, tz, NaiveTime::MIN, Period::Week)),
        LimitWindow::Monthly => calendar(calendar_bounds(now_ms, tz, NaiveTime::MIN, Period::Month)),
        LimitWindow::Total { since } => {
            WindowSpan { start_ms: since.unwrap_or(0), reset_ms: None, kind: SpanKind::Lifetime }
        }
    }
}

#[derive(Clone, Copy)]
enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    /// The first day of the period containing `date`.
    fn floor(self, date: NaiveDate) -> Option<NaiveDate> {
        match self {
            Self::Day => Some(date),
            Self::Week => date.checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday()))),
            Self::Month => date.with_day(1),
        }
    }

    /// The first day of the next (`forward`) or previous period, from a period's first day.
    fn step(self, first: NaiveDate, forward: bool) -> Option<NaiveDate> {
        match (self, forward) {
            (Self::Day, true) => first.checked_add_days(Days::new(1)),
            (Self::Day, false) => first.checked_sub_days(Days::new(1)),
            (Self::Week, true) => first.checked_add_days(Days::new(7)),
            (Self::Week, false) => first.checked_sub_days(Days::new(7)),
            (Self::Month, true) => first.checked_add_months(Months::new(1)),
            (Self::Month, false) => first.checked_sub_months(Months::new(1)),
        }
    }
}

/// `[start, reset)` of the calendar period containing `now`, each boundary being `time` local on
/// the period's first day.
fn calendar_bounds(now_ms: EpochMs, tz: Tz, time: NaiveTime, period: Period) -> Option<(EpochMs, EpochMs)> {
    let local_date = DateTime::from_timestamp_millis(now_ms)?.with_timezone(&tz).date_naive();
    let mut first = period.floor(local_date)?;
    let mut start = local_instant(tz, first.and_time(time))?;
    // A boundary's local time may lie after now's local time (a reset time later in the day), or,
    // around a transition at midnight, the local date may be off by one: step until it fits.
    while start > now_ms {
        first = period.step(first, false)?;
        start = local_instant(tz, first.and_time(time))?;
    }
    let mut reset = local_instant(tz, period.step(first, true)?.and_time(time))?;
    while reset <= now_ms {
        first = period.step(first, true)?;
        start = reset;
        reset = local_instant(tz, period.step(first, true)?.and_time(time))?;
    }
    Some((start, reset))
}

/// The instant of the local time `local` in `tz`: in a DST gap the earliest instant whose local
/// time is at or after `local` (the transition itself), in a fold the first occurrence. `None`
/// beyond chrono's calendar.
pub fn local_instant(tz: Tz, local: NaiveDateTime) -> Option<EpochMs> {
    if let Some(dt) = tz.from_local_datetime(&local).earliest() {
        return Some(dt.timestamp_millis());
    }
    // A gap: binary-search the first instant whose local time is at or after `local`. No UTC
    // offset reaches a day, so the answer lies within a day of `local` read as UTC.
    let local_at =
        |ms: EpochMs| DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).naive_local());
    let nominal = local.and_utc().timestamp_millis();
    let (mut lo, mut hi) = (nominal.checked_sub(DAY_MS)?, nominal.checked_add(DAY_MS)?);
    if local_at(lo)? >= local || local_at(hi)? < local {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_at(mid)? >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Start of the fixed window of `length_ms` that covers `now_ms`, replaying the billed requests'
/// timestamps `billed_ms` (any order): the first billed request at or after `since_ms` opens a
/// window, which lasts `length_ms`; the first billed request at or after its end opens the next.
/// `None` when no window is open at `now_ms` (the next billed request will open one). Requests
/// after `now_ms` are ignored.
pub fn fixed_window_opened_at<I>(
    billed_ms: I,
    since_ms: Option<EpochMs>,
    now_ms: EpochMs,
    length_ms: i64,
) -> Option<EpochMs>
where
    I: IntoIterator<Item = EpochMs>,
{
    let since = since_ms.unwrap_or(EpochMs::MIN);
    let mut billed: Vec<EpochMs> = billed_ms.into_iter().filter(|&t| t >= since && t <= now_ms).collect();
    billed.sort_unstable();
    let mut opened: Option<EpochMs> = None;
    for t in billed {
        if opened.is_none_or(|o| t >= o.saturating_add(length_ms)) {
            opened = Some(t);
        }
    }
    opened.filter(|&o| now_ms < o.saturating_add(length_ms))
}

/// The sum of the amounts a rolling window of `length_ms` counts at `now_ms` (events in
/// `(now - length, now]`, and any recorded ahead of `now` by a skewed clock), saturating.
pub fn rolling_usage<I>(events: I, now_ms: EpochMs, length_ms: i64) -> UsdNanos
where
    I: IntoIterator<Item = (EpochMs, UsdNanos)>,
{
    let total: i128 = events
        .into_iter()
        .filter(|(ts, _)| in_rolling(*ts, now_ms, length_ms))
        .map(|(_, a)| i128::from(a.0))
        .sum();
    UsdNanos(saturate(total))
}

/// When usage in a rolling window of `length_ms` falls below `limit`, given the spend events
/// `(timestamp, amount)` on record (any order; those already outside the window are ignored):
/// `Some(now_ms)` if it already is below (a request is admitted now), else the instant the
/// oldest events have left the window so that it is; `None` if it never will (`limit <= 0`, or
/// refunds keep it above).
pub fn rolling_release_ms<I>(events: I, now_ms: EpochMs, length_ms: i64, limit: UsdNanos) -> Option<EpochMs>
where
    I: IntoIterator<Item = (EpochMs, UsdNanos)>,
{
    release_ms(
        events.into_iter().map(|(ts, a)| (ts, i128::from(a.0))),
        now_ms,
        length_ms,
        i128::from(limit.0),
    )
}

/// Whether the RPM sliding window admits one more request at `now_ms`: fewer than `limit`
/// requests in the last 60 s (`(now - 60 s, now]`). `limit == 0` admits nothing; express "no
/// limit" by not checking.
pub fn rpm_admits(timestamps_ms: &[EpochMs], now_ms: EpochMs, limit: u32) -> bool {
    let in_window = timestamps_ms.iter().filter(|&&ts| in_rolling(ts, now_ms, RPM_WINDOW_MS)).count();
    u64::try_from(in_window).unwrap_or(u64::MAX) < u64::from(limit)
}

/// When the RPM sliding window next admits a request: `Some(now_ms)` if it does now, else the
/// instant enough of the oldest requests have left the window; `None` if `limit == 0`.
pub fn rpm_next_slot_ms(timestamps_ms: &[EpochMs], now_ms: EpochMs, limit: u32) -> Option<EpochMs> {
    release_ms(timestamps_ms.iter().map(|&ts| (ts, 1)), now_ms, RPM_WINDOW_MS, i128::from(limit))
}

fn in_rolling(ts: EpochMs, now_ms: EpochMs, length_ms: i64) -> bool {
    ts.saturating_add(length_ms) > now_ms
}

/// First instant `t >= now` at which the weights still in the window sum below `limit`.
fn release_ms<I>(events: I, now_ms: EpochMs, length_ms: i64, limit: i128) -> Option<EpochMs>
where
    I: IntoIterator<Item = (EpochMs, i128)>,
{
    let mut live: Vec<(EpochMs, i128)> =
        events.into_iter().filter(|(ts, _)| in_rolling(*ts, now_ms, length_ms)).collect();
    let mut total: i128 = live.iter().map(|(_, w)| w).sum();
    if total < limit {
        return Some(now_ms);
    }
    live.sort_unstable_by_key(|(ts, _)| *ts);
    let mut i = 0;
    while i < live.len() {
        let ts = live[i].0;
        // Every event recorded at `ts` leaves at the same instant.
        while i < live.len() && live[i].0 == ts {
            total -= live[i].1;
            i += 1;
        }
        if total < limit {
            return Some(ts.saturating_add(length_ms));
        }
    }
    None
}

/// Whole seconds from `now_ms` until `at_ms`, rounded up; 0 once `at_ms` has passed. The
/// `Retry-After` value for a window that resets (or frees room) at `at_ms`.
pub fn seconds_until(now_ms: EpochMs, at_ms: EpochMs) -> u64 {
    let ms = i128::from(at_ms) - i128::from(now_ms);
    if ms <= 0 { 0 } else { u64::try_from((ms + 999) / 1000).unwrap_or(u64::MAX) }
}

/// `at_ms` in Unix seconds, rounded up: the `X-RateLimit-Reset` value, so that a client waiting
/// until that second finds the window reset.
pub fn reset_epoch_secs(at_ms: EpochMs) -> i64 {
    at_ms.div_euclid(1000) + i64::from(at_ms.rem_euclid(1000) != 0)
}

fn saturate(total: i128) -> i64 {
    i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX })
}

/// Why a configured limit could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitParseError {
    /// Not a plain decimal number of dollars (digits with at most one `.`).
    #[error("invalid USD limit {0:?}: expected a decimal amount such as \"12.50\"")]
    Usd(String),
    /// A negative amount.
    #[error("invalid USD limit {0:?}: must not be negative")]
    Negative(String),
    /// Finer than a nano-dollar, so it cannot be held exactly.
    #[error("invalid USD limit {0:?}: more than 9 decimal places")]
    TooPrecise(String),
    /// Beyond what [`UsdNanos`] holds (about 9.2 billion dollars).
    #[error("invalid USD limit {0:?}: too large")]
    TooLarge(String),
    /// Not `fixed` or `rolling`.
    #[error("invalid window mode {0:?}: expected \"fixed\" or \"rolling\"")]
    Mode(String),
    /// Not a `HH:MM` time of day.
    #[error("invalid reset time {0:?}: expected HH:MM between 00:00 and 23:59")]
    ResetTime(String),
}

/// Reads a limit configured as decimal dollars (`"12.5"`, `"0.000000001"`, `"100"`) exactly into
/// nano-dollars. Surrounding whitespace is ignored; signs other than a bare `-0`, exponents,
/// separators and more than nine significant decimal places are rejected. `"0"` is a valid
/// limit that admits nothing.
pub fn parse_usd_limit(s: &str) -> Result<UsdNanos, LimitParseError> {
    let text = s.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let valid = digits.bytes().any(|b| b.is_ascii_digit())
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1;
    if !valid {
        return Err(LimitParseError::Usd(s.to_owned()));
    }
    if negative && digits.bytes().any(|b| matches!(b, b'1'..=b'9')) {
        return Err(LimitParseError::Negative(s.to_owned()));
    }
    // Drop what does not change the value, so that only the magnitude can make it unreadable.
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let int_part = int_part.trim_start_matches('0');
    let frac_part = frac_part.trim_end_matches('0');
    if frac_part.len() > 9 {
        return Err(LimitParseError::TooPrecise(s.to_owned()));
    }
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let canonical =
        if frac_part.is_empty() { int_part.to_owned() } else { format!("{int_part}.{frac_part}") };
    let value = Decimal::from_str_exact(&canonical).map_err(|_| LimitParseError::TooLarge(s.to_owned()))?;
    let nanos = 9_u32
        .checked_sub(value.scale())
        .and_then(|exp| 10_i128.checked_pow(exp))
        .and_then(|factor| value.mantissa().checked_mul(factor))
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| LimitParseError::TooLarge(s.to_owned()))?;
    Ok(UsdNanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> EpochMs {
        DateTime::parse_from_rfc3339(s).expect("rfc3339").timestamp_millis()
    }

    #[test]
    fn gap_resolves_to_the_transition_and_fold_to_the_first_occurrence() {
        let berlin = chrono_tz::Europe::Berlin;
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("naive");
        assert_eq!(local_instant(berlin, at("2024-03-31 02:30")), Some(utc("2024-03-31T01:00:00Z")));
        assert_eq!(local_instant(berlin, at("2024-10-27 02:30")), Some(utc("2024-10-27T00:30:00Z")));
        assert_eq!(local_instant(berlin, at("2024-06-01 12:00")), Some(utc("2024-06-01T10:00:00Z")));
    }

    #[test]
    fn release_groups_simultaneous_events() {
        // A charge and its refund at the same instant leave together: removing the charge alone
        // would wrongly report room at 1_000 + L.
        let l = FIVE_HOURS_MS;
        let events = [(1_000, UsdNanos(5)), (1_000, UsdNanos(-3)), (2_000, UsdNanos(10))];
        assert_eq!(rolling_release_ms(events, 3_000, l, UsdNanos(10)), Some(2_000 + l));
        assert_eq!(rolling_release_ms(events, 3_000, l, UsdNanos(13)), Some(3_000));
        assert_eq!(rolling_release_ms(events, 3_000, l, UsdNanos(0)), None);
    }

    #[test]
    fn rolling_buckets_leave_with_their_last_millisecond() {
        let l = FIVE_HOURS_MS;
        assert_eq!(rolling_bucket(12_345), 12_000);
        assert_eq!(rolling_leaves_at(12_000, l), 12_999 + l);
        assert_eq!(rolling_leaves_at(12_999, l), 12_999 + l, "the last ms of a bucket leaves on time");
        for now in [12_998 + l, 12_999 + l, 13_000 + l, 13_998 + l, 13_999 + l] {
            let first = rolling_first_bucket(now, l);
            assert_eq!(first % ROLLING_BUCKET_MS, 0);
            assert!(rolling_leaves_at(first, l) > now, "{now}: the first bucket still counts");
            assert!(rolling_leaves_at(first - ROLLING_BUCKET_MS, l) <= now, "{now}: the one before left");
        }
    }

    #[test]
    fn reset_time_parsing() {
        assert_eq!("09:30".parse::<ResetTime>(), Ok(ResetTime { hour: 9, minute: 30 }));
        assert_eq!("9:30".parse::<ResetTime>().map(|t| t.to_string()), Ok("09:30".to_owned()));
        for bad in ["24:00", "12:60", "12:5", "1230", "", "ab:cd", "-1:00", "123:00"] {
            assert!(bad.parse::<ResetTime>().is_err(), "{bad}");
        }
    }
}
