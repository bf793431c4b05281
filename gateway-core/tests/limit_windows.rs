//! Window arithmetic of spend and rate limits at the boundaries: every window type at exact
//! boundary instants and ±1 ms, in UTC, Asia/Shanghai and America/New_York, week and month
//! edges, daily reset times, rolling vs fixed 5 h, DST transitions (Europe/Berlin and
//! America/New_York), reset helpers, the RPM sliding window and limit parsing.

use std::time::Duration;

use chrono::DateTime;
use chrono_tz::{America::New_York, Asia::Shanghai, Europe::Berlin, Tz, UTC};
use gateway_core::limit::window::{
    DAY_MS, EpochMs, FIVE_HOURS_MS, FiveHourMode, LimitParseError, LimitWindow, RPM_WINDOW_MS, ResetTime,
    SpanKind, WindowMode, WindowSpan, fixed_window_opened_at, parse_usd_limit, reset_epoch_secs,
    rolling_release_ms, rolling_usage, rpm_admits, rpm_next_slot_ms, seconds_until, span,
};
use gateway_core::store::ManualClock;
use gateway_core::usage::UsdNanos;

const HOUR_MS: i64 = 3_600_000;

fn utc(s: &str) -> EpochMs {
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")).timestamp_millis()
}

fn daily(mode: WindowMode, reset: &str) -> LimitWindow {
    LimitWindow::Daily { mode, reset: reset.parse().expect("reset time") }
}

fn fixed(start: &str, reset: &str) -> WindowSpan {
    WindowSpan { start_ms: utc(start), reset_ms: Some(utc(reset)), kind: SpanKind::Fixed }
}

/// `boundary` ends the fixed window `[prev_start, boundary)` and starts `[boundary, next_reset)`:
/// checked 1 ms before, at, and 1 ms after it.
fn assert_boundary(window: &LimitWindow, tz: Tz, prev_start: &str, boundary: &str, next_reset: &str) {
    let b = utc(boundary);
    let before = fixed(prev_start, boundary);
    let after = fixed(boundary, next_reset);
    assert_eq!(span(window, b - 1, tz), before, "{window:?} {tz} 1 ms before {boundary}");
    assert_eq!(span(window, b, tz), after, "{window:?} {tz} at {boundary}");
    assert_eq!(span(window, b + 1, tz), after, "{window:?} {tz} 1 ms after {boundary}");
}

fn usd(s: &str) -> UsdNanos {
    parse_usd_limit(s).expect("usd")
}

// ---------------------------------------------------------------------------------------------
// Daily (fixed)

#[test]
fn daily_midnight_reset_in_utc_shanghai_and_new_york() {
    let w = daily(WindowMode::Fixed, "00:00");
    assert_boundary(&w, UTC, "2024-06-14T00:00:00Z", "2024-06-15T00:00:00Z", "2024-06-16T00:00:00Z");
    // 00:00 CST (UTC+8) is 16:00 UTC the day before.
    assert_boundary(&w, Shanghai, "2024-06-13T16:00:00Z", "2024-06-14T16:00:00Z", "2024-06-15T16:00:00Z");
    // 00:00 EDT (UTC-4) in summer, 00:00 EST (UTC-5) in winter.
    assert_boundary(&w, New_York, "2024-06-14T04:00:00Z", "2024-06-15T04:00:00Z", "2024-06-16T04:00:00Z");
    assert_boundary(&w, New_York, "2024-01-14T05:00:00Z", "2024-01-15T05:00:00Z", "2024-01-16T05:00:00Z");
}

#[test]
fn daily_reset_at_0930_in_utc_shanghai_and_new_york() {
    let w = daily(WindowMode::Fixed, "09:30");
    assert_boundary(&w, UTC, "2024-06-14T09:30:00Z", "2024-06-15T09:30:00Z", "2024-06-16T09:30:00Z");
    assert_boundary(&w, Shanghai, "2024-06-14T01:30:00Z", "2024-06-15T01:30:00Z", "2024-06-16T01:30:00Z");
    assert_boundary(&w, New_York, "2024-06-14T13:30:00Z", "2024-06-15T13:30:00Z", "2024-06-16T13:30:00Z");
}

#[test]
fn before_the_reset_time_the_window_began_the_previous_day() {
    let w = daily(WindowMode::Fixed, "09:30");
    // 08:00 local on June 15 in each zone: still in the window opened June 14 09:30 local.
    assert_eq!(
        span(&w, utc("2024-06-15T08:00:00Z"), UTC),
        fixed("2024-06-14T09:30:00Z", "2024-06-15T09:30:00Z")
    );
    assert_eq!(
        span(&w, utc("2024-06-15T08:00:00+08:00"), Shanghai),
        fixed("2024-06-14T01:30:00Z", "2024-06-15T01:30:00Z")
    );
    assert_eq!(
        span(&w, utc("2024-06-15T08:00:00-04:00"), New_York),
        fixed("2024-06-14T13:30:00Z", "2024-06-15T13:30:00Z")
    );
    // And the 00:00 reset differs from the 09:30 one at the same instant.
    let midnight = daily(WindowMode::Fixed, "00:00");
    assert_eq!(
        span(&midnight, utc("2024-06-15T08:00:00Z"), UTC),
        fixed("2024-06-15T00:00:00Z", "2024-06-16T00:00:00Z")
    );
}

#[test]
fn daily_reset_time_crosses_the_utc_date_in_shanghai() {
    // 23:30 local Shanghai = 15:30 UTC the same date; 07:00 local = 23:00 UTC the day before.
    let late = daily(WindowMode::Fixed, "23:30");
    assert_boundary(&late, Shanghai, "2024-12-30T15:30:00Z", "2024-12-31T15:30:00Z", "2025-01-01T15:30:00Z");
    let early = daily(WindowMode::Fixed, "07:00");
    assert_boundary(&early, Shanghai, "2024-12-30T23:00:00Z", "2024-12-31T23:00:00Z", "2025-01-01T23:00:00Z");
}

// ---------------------------------------------------------------------------------------------
// Daily (rolling) and 5 h

#[test]
fn rolling_daily_counts_the_last_24_hours() {
    let w = daily(WindowMode::Rolling, "09:30");
    let now = utc("2024-06-15T12:00:00Z");
    let s = span(&w, now, Shanghai);
    assert_eq!(
        s,
        WindowSpan {
            start_ms: now - DAY_MS + 1,
            reset_ms: None,
            kind: SpanKind::Rolling { length_ms: DAY_MS }
        }
    );
    assert!(!s.contains(now - DAY_MS));
    assert!(s.contains(now - DAY_MS + 1));
    assert!(s.contains(now));
    assert_eq!(w.rolling_length_ms(), Some(DAY_MS));
    assert_eq!(daily(WindowMode::Fixed, "09:30").rolling_length_ms(), None);
}

#[test]
fn rolling_5h_window_edges() {
    let w = LimitWindow::FiveHour(FiveHourMode::Rolling);
    let now = utc("2024-06-15T12:00:00Z");
    for tz in [UTC, Shanghai, New_York] {
        let s = span(&w, now, tz);
        assert_eq!(s.start_ms, now - FIVE_HOURS_MS + 1);
        assert_eq!(s.reset_ms, None);
        assert_eq!(s.kind, SpanKind::Rolling { length_ms: FIVE_HOURS_MS });
    }
    // A spend exactly 5 h old has left; 5 h - 1 ms old still counts.
    let events = [(now - FIVE_HOURS_MS, usd("1")), (now - FIVE_HOURS_MS + 1, usd("2")), (now, usd("4"))];
    assert_eq!(rolling_usage(events, now, FIVE_HOURS_MS), usd("6"));
    assert_eq!(span(&w, now, UTC).usage(events), usd("6"));
    assert_eq!(rolling_usage(events, now - 1, FIVE_HOURS_MS), usd("7"));
}

#[test]
fn fixed_5h_window_is_opened_by_the_first_billed_request() {
    let opened = utc("2024-06-15T10:17:23.456Z");
    let w = LimitWindow::FiveHour(FiveHourMode::Fixed { opened_at_ms: Some(opened) });
    let open = WindowSpan { start_ms: opened, reset_ms: Some(opened + FIVE_HOURS_MS), kind: SpanKind::Fixed };
    // Not aligned to the clock, and the same in every timezone.
    for tz in [UTC, Shanghai, New_York, Berlin] {
        assert_eq!(span(&w, opened, tz), open);
        assert_eq!(span(&w, opened + FIVE_HOURS_MS - 1, tz), open);
    }
    // At the reset instant the old window is over: the next billed request opens a new one.
    let end = opened + FIVE_HOURS_MS;
    assert_eq!(
        span(&w, end, UTC),
        WindowSpan { start_ms: end, reset_ms: Some(end + FIVE_HOURS_MS), kind: SpanKind::Fixed }
    );
    assert_eq!(
        span(&w, end + 1, UTC),
        WindowSpan { start_ms: end + 1, reset_ms: Some(end + 1 + FIVE_HOURS_MS), kind: SpanKind::Fixed }
    );
    // No window on record: the one a request billed now would open.
    let none = LimitWindow::FiveHour(FiveHourMode::new(WindowMode::Fixed, None));
    let now = utc("2024-06-15T03:00:00Z");
    assert_eq!(
        span(&none, now, UTC),
        WindowSpan { start_ms: now, reset_ms: Some(now + FIVE_HOURS_MS), kind: SpanKind::Fixed }
    );
    assert_eq!(FiveHourMode::new(WindowMode::Rolling, Some(opened)), FiveHourMode::Rolling);
}

#[test]
fn rolling_and_fixed_5h_differ_on_the_same_history() {
    let t0 = utc("2024-06-15T08:00:00Z");
    let events = [(t0, usd("3")), (t0 + 4 * HOUR_MS, usd("3"))];
    let now = t0 + 5 * HOUR_MS + 30 * 60_000; // 13:30
    // Rolling: the 08:00 spend has left, the 12:00 one still counts.
    let rolling = span(&LimitWindow::FiveHour(FiveHourMode::Rolling), now, UTC);
    assert_eq!(rolling.usage(events), usd("3"));
    // Fixed: the window opened at 08:00 closed at 13:00, and nothing was billed since: empty.
    let opened = fixed_window_opened_at(events.iter().map(|e| e.0), None, now, FIVE_HOURS_MS);
    assert_eq!(opened, None);
    let fixed = span(&LimitWindow::FiveHour(FiveHourMode::Fixed { opened_at_ms: opened }), now, UTC);
    assert_eq!(fixed.usage(events), UsdNanos(0));
    // At 12:30 both counted the two spends.
    let earlier = t0 + 4 * HOUR_MS + 30 * 60_000;
    let opened = fixed_window_opened_at(events.iter().map(|e| e.0), None, earlier, FIVE_HOURS_MS);
    assert_eq!(opened, Some(t0));
    let fixed = span(&LimitWindow::FiveHour(FiveHourMode::Fixed { opened_at_ms: opened }), earlier, UTC);
    assert_eq!(fixed.usage(events), usd("6"));
    assert_eq!(span(&LimitWindow::FiveHour(FiveHourMode::Rolling), earlier, UTC).usage(events), usd("6"));
}

#[test]
fn fixed_window_chain_is_replayed_from_billed_requests() {
    let t = |h: i64, m: i64| utc("2024-06-15T00:00:00Z") + h * HOUR_MS + m * 60_000;
    // 10:00 opens [10:00, 15:00); 12:00 inside; 15:30 opens [15:30, 20:30); 16:00 inside.
    let billed = [t(16, 0), t(10, 0), t(15, 30), t(12, 0)];
    let opened = |now| fixed_window_opened_at(billed, None, now, FIVE_HOURS_MS);
    assert_eq!(opened(t(10, 0)), Some(t(10, 0)));
    assert_eq!(opened(t(15, 0) - 1), Some(t(10, 0)));
    assert_eq!(opened(t(15, 0)), None);
    assert_eq!(opened(t(15, 30) - 1), None);
    assert_eq!(opened(t(15, 30)), Some(t(15, 30)));
    assert_eq!(opened(t(20, 30) - 1), Some(t(15, 30)));
    assert_eq!(opened(t(20, 30)), None);
    // Requests after `now` are not on record yet.
    assert_eq!(opened(t(9, 0)), None);
    // A reset at 11:00 ignores the 10:00 request: 12:00 opens [12:00, 17:00), 16:00 inside.
    let reset = fixed_window_opened_at(billed, Some(t(11, 0)), t(16, 30), FIVE_HOURS_MS);
    assert_eq!(reset, Some(t(12, 0)));
}

// ---------------------------------------------------------------------------------------------
// Weekly and monthly

#[test]
fn weekly_monday_boundary_in_three_zones() {
    let w = LimitWindow::Weekly;
    // 2024-06-17 is a Monday.
    assert_boundary(&w, UTC, "2024-06-10T00:00:00Z", "2024-06-17T00:00:00Z", "2024-06-24T00:00:00Z");
    // Monday 00:00 in Shanghai is Sunday 16:00 UTC.
    assert_boundary(&w, Shanghai, "2024-06-09T16:00:00Z", "2024-06-16T16:00:00Z", "2024-06-23T16:00:00Z");
    // Monday 00:00 EDT is Monday 04:00 UTC: Monday 03:59:59.999 UTC is still last week there.
    assert_boundary(&w, New_York, "2024-06-10T04:00:00Z", "2024-06-17T04:00:00Z", "2024-06-24T04:00:00Z");
    // Mid-week (Thursday) and Sunday 23:59:59.999 local belong to the week of the Monday before.
    let week = fixed("2024-06-17T00:00:00Z", "2024-06-24T00:00:00Z");
    assert_eq!(span(&w, utc("2024-06-20T12:00:00Z"), UTC), week);
    assert_eq!(span(&w, utc("2024-06-23T23:59:59.999Z"), UTC), week);
}

#[test]
fn weekly_across_the_year_end() {
    let w = LimitWindow::Weekly;
    // 2024-12-30 is a Monday: that week runs into 2025.
    assert_boundary(&w, UTC, "2024-12-23T00:00:00Z", "2024-12-30T00:00:00Z", "2025-01-06T00:00:00Z");
    assert_eq!(
        span(&w, utc("2025-01-01T00:00:00Z"), UTC),
        fixed("2024-12-30T00:00:00Z", "2025-01-06T00:00:00Z")
    );
    assert_boundary(&w, Shanghai, "2024-12-22T16:00:00Z", "2024-12-29T16:00:00Z", "2025-01-05T16:00:00Z");
    assert_boundary(&w, New_York, "2024-12-23T05:00:00Z", "2024-12-30T05:00:00Z", "2025-01-06T05:00:00Z");
}

#[test]
fn monthly_edges_leap_february_and_year_end() {
    let w = LimitWindow::Monthly;
    // February 2024 has 29 days.
    assert_boundary(&w, UTC, "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z");
    let feb = span(&w, utc("2024-02-29T12:00:00Z"), UTC);
    assert_eq!(feb, fixed("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"));
    assert_eq!(feb.reset_ms.map(|r| r - feb.start_ms), Some(29 * DAY_MS));
    // 2023 is not a leap year.
    assert_boundary(&w, UTC, "2023-02-01T00:00:00Z", "2023-03-01T00:00:00Z", "2023-04-01T00:00:00Z");
    // Year end.
    assert_boundary(&w, UTC, "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z");
    // Shanghai: March 1 00:00 CST is Feb 29 16:00 UTC.
    assert_boundary(&w, Shanghai, "2024-01-31T16:00:00Z", "2024-02-29T16:00:00Z", "2024-03-31T16:00:00Z");
    assert_boundary(&w, Shanghai, "2024-11-30T16:00:00Z", "2024-12-31T16:00:00Z", "2025-01-31T16:00:00Z");
    // New York: year end in EST.
    assert_boundary(&w, New_York, "2024-12-01T05:00:00Z", "2025-01-01T05:00:00Z", "2025-02-01T05:00:00Z");
}

#[test]
fn monthly_in_new_york_spans_the_dst_change() {
    // November 2024 starts in EDT and ends in EST: 30 days and one hour.
    let w = LimitWindow::Monthly;
    assert_boundary(&w, New_York, "2024-10-01T04:00:00Z", "2024-11-01T04:00:00Z", "2024-12-01T05:00:00Z");
    let nov = span(&w, utc("2024-11-15T00:00:00Z"), New_York);
    assert_eq!(nov.reset_ms.map(|r| r - nov.start_ms), Some(30 * DAY_MS + HOUR_MS));
    // March 2024 loses an hour.
    let mar = span(&w, utc("2024-03-15T00:00:00Z"), New_York);
    assert_eq!(mar, fixed("2024-03-01T05:00:00Z", "2024-04-01T04:00:00Z"));
}

// ---------------------------------------------------------------------------------------------
// DST

#[test]
fn daily_window_on_spring_forward_and_fall_back_days_in_berlin() {
    let w = daily(WindowMode::Fixed, "00:00");
    // 2024-03-31: 02:00 CET -> 03:00 CEST; the day has 23 hours.
    assert_boundary(&w, Berlin, "2024-03-29T23:00:00Z", "2024-03-30T23:00:00Z", "2024-03-31T22:00:00Z");
    let spring = span(&w, utc("2024-03-31T12:00:00Z"), Berlin);
    assert_eq!(spring, fixed("2024-03-30T23:00:00Z", "2024-03-31T22:00:00Z"));
    // 2024-10-27: 03:00 CEST -> 02:00 CET; the day has 25 hours.
    assert_boundary(&w, Berlin, "2024-10-25T22:00:00Z", "2024-10-26T22:00:00Z", "2024-10-27T23:00:00Z");
    let fall = span(&w, utc("2024-10-27T12:00:00Z"), Berlin);
    assert_eq!(fall.reset_ms.map(|r| r - fall.start_ms), Some(25 * HOUR_MS));
}

#[test]
fn reset_time_inside_a_gap_starts_at_the_transition_berlin() {
    // 02:30 does not exist on 2024-03-31 in Berlin: the window starts at 03:00 CEST (01:00 UTC),
    // the earliest instant at or after the nominal local time.
    let w = daily(WindowMode::Fixed, "02:30");
    assert_boundary(&w, Berlin, "2024-03-30T01:30:00Z", "2024-03-31T01:00:00Z", "2024-04-01T00:30:00Z");
}

#[test]
fn reset_time_inside_a_fold_starts_at_the_first_occurrence_berlin() {
    // 02:30 happens twice on 2024-10-27 in Berlin: 00:30 UTC (CEST) and 01:30 UTC (CET).
    let w = daily(WindowMode::Fixed, "02:30");
    assert_boundary(&w, Berlin, "2024-10-26T00:30:00Z", "2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z");
    // The second 02:30 is not a reset.
    assert_eq!(
        span(&w, utc("2024-10-27T01:30:00Z"), Berlin),
        fixed("2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z")
    );
}

#[test]
fn dst_gap_and_fold_in_new_york() {
    // 2024-03-10: 02:00 EST -> 03:00 EDT (07:00 UTC). 02:30 is in the gap.
    let gap = daily(WindowMode::Fixed, "02:30");
    assert_boundary(&gap, New_York, "2024-03-09T07:30:00Z", "2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z");
    // Midnight reset: 2024-03-10 has 23 hours.
    let midnight = daily(WindowMode::Fixed, "00:00");
    assert_boundary(
        &midnight,
        New_York,
        "2024-03-09T05:00:00Z",
        "2024-03-10T05:00:00Z",
        "2024-03-11T04:00:00Z",
    );
    // 2024-11-03: 02:00 EDT -> 01:00 EST (06:00 UTC). 01:30 happens at 05:30 and 06:30 UTC.
    let fold = daily(WindowMode::Fixed, "01:30");
    assert_boundary(&fold, New_York, "2024-11-02T05:30:00Z", "2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z");
    assert_eq!(
        span(&fold, utc("2024-11-03T06:30:00Z"), New_York),
        fixed("2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z")
    );
    // Midnight reset: 2024-11-03 has 25 hours.
    assert_boundary(
        &midnight,
        New_York,
        "2024-11-02T04:00:00Z",
        "2024-11-03T04:00:00Z",
        "2024-11-04T05:00:00Z",
    );
}

#[test]
fn weekly_window_across_dst_changes() {
    let w = LimitWindow::Weekly;
    // Berlin: the week of 2024-03-25 contains spring forward (167 h), that of 2024-10-21 fall
    // back (169 h).
    let spring = span(&w, utc("2024-03-31T12:00:00Z"), Berlin);
    assert_eq!(spring, fixed("2024-03-24T23:00:00Z", "2024-03-31T22:00:00Z"));
    assert_eq!(spring.reset_ms.map(|r| r - spring.start_ms), Some(167 * HOUR_MS));
    assert_boundary(&w, Berlin, "2024-03-24T23:00:00Z", "2024-03-31T22:00:00Z", "2024-04-07T22:00:00Z");
    let fall = span(&w, utc("2024-10-27T12:00:00Z"), Berlin);
    assert_eq!(fall, fixed("2024-10-20T22:00:00Z", "2024-10-27T23:00:00Z"));
    assert_eq!(fall.reset_ms.map(|r| r - fall.start_ms), Some(169 * HOUR_MS));
    assert_boundary(&w, Berlin, "2024-10-20T22:00:00Z", "2024-10-27T23:00:00Z", "2024-11-03T23:00:00Z");
    // New York: Sunday 2024-03-10 and Sunday 2024-11-03.
    assert_boundary(&w, New_York, "2024-03-04T05:00:00Z", "2024-03-11T04:00:00Z", "2024-03-18T04:00:00Z");
    assert_boundary(&w, New_York, "2024-10-28T04:00:00Z", "2024-11-04T05:00:00Z", "2024-11-11T05:00:00Z");
}

#[test]
fn skipped_local_day_never_is_the_current_window() {
    // Samoa skipped 2011-12-30 entirely (UTC-10 -> UTC+14 at 2011-12-30T10:00Z).
    let apia = chrono_tz::Pacific::Apia;
    let w = daily(WindowMode::Fixed, "00:00");
    let s = span(&w, utc("2011-12-30T10:00:00Z"), apia);
    assert_eq!(s, fixed("2011-12-30T10:00:00Z", "2011-12-31T10:00:00Z"));
    let before = span(&w, utc("2011-12-30T09:59:59.999Z"), apia);
    assert_eq!(before, fixed("2011-12-29T10:00:00Z", "2011-12-30T10:00:00Z"));
}

// ---------------------------------------------------------------------------------------------
// Total

#[test]
fn total_counts_since_the_reset_or_the_epoch() {
    let now = utc("2024-06-15T12:00:00Z");
    let all = span(&LimitWindow::Total { since: None }, now, Shanghai);
    assert_eq!(all, WindowSpan { start_ms: 0, reset_ms: None, kind: SpanKind::Lifetime });
    assert_eq!(all.retry_after_secs(now), None);
    let since = utc("2024-06-01T00:00:00Z");
    let reset = span(&LimitWindow::Total { since: Some(since) }, now, UTC);
    assert!(!reset.contains(since - 1));
    assert!(reset.contains(since));
    assert!(reset.contains(now));
    let events = [(since - 1, usd("5")), (since, usd("1.25")), (now, usd("0.75"))];
    assert_eq!(reset.usage(events), usd("2"));
    assert_eq!(all.usage(events), usd("7"));
}

#[test]
fn manual_reset_clips_a_window() {
    let w = LimitWindow::Monthly;
    let now = utc("2024-06-15T12:00:00Z");
    let month = span(&w, now, UTC);
    let reset = utc("2024-06-10T08:00:00Z");
    let clipped = month.clipped(Some(reset));
    assert_eq!(clipped.start_ms, reset);
    assert_eq!(clipped.reset_ms, month.reset_ms);
    // A reset before the window changes nothing, nor does none.
    assert_eq!(month.clipped(Some(utc("2024-05-01T00:00:00Z"))), month);
    assert_eq!(month.clipped(None), month);
}

// ---------------------------------------------------------------------------------------------
// Reset helpers

#[test]
fn retry_after_and_reset_header_round_up() {
    assert_eq!(seconds_until(1_000, 1_000), 0);
    assert_eq!(seconds_until(1_000, 999), 0);
    assert_eq!(seconds_until(1_000, 1_001), 1);
    assert_eq!(seconds_until(1_000, 2_000), 1);
    assert_eq!(seconds_until(1_000, 2_001), 2);
    assert_eq!(seconds_until(i64::MIN, i64::MAX), u64::MAX / 1000 + 1);
    assert_eq!(reset_epoch_secs(1_718_409_600_000), 1_718_409_600);
    assert_eq!(reset_epoch_secs(1_718_409_600_001), 1_718_409_601);
    assert_eq!(reset_epoch_secs(1_718_409_599_999), 1_718_409_600);
    assert_eq!(reset_epoch_secs(-1), 0);
    assert_eq!(reset_epoch_secs(-1_000), -1);

    // The daily window at 23:59:59.001 UTC resets in 1 s; at 12:00:00 in 12 h.
    let w = daily(WindowMode::Fixed, "00:00");
    let s = span(&w, utc("2024-06-15T23:59:59.001Z"), UTC);
    assert_eq!(s.retry_after_secs(utc("2024-06-15T23:59:59.001Z")), Some(1));
    assert_eq!(s.reset_ms.map(reset_epoch_secs), Some(utc("2024-06-16T00:00:00Z") / 1000));
    let noon = utc("2024-06-15T12:00:00Z");
    assert_eq!(span(&w, noon, UTC).retry_after_secs(noon), Some(12 * 3600));
    // Rolling windows have no single reset.
    assert_eq!(span(&LimitWindow::Rpm, noon, UTC).retry_after_secs(noon), None);
}

#[test]
fn rolling_release_tells_when_usage_falls_below_the_limit() {
    let l = FIVE_HOURS_MS;
    let t0 = utc("2024-06-15T08:00:00Z");
    let events = [(t0 + 2 * HOUR_MS, usd("3")), (t0, usd("4")), (t0 + HOUR_MS, usd("2.5"))];
    let now = t0 + 3 * HOUR_MS;
    // Usage 9.5: below 10 already.
    assert_eq!(rolling_release_ms(events, now, l, usd("10")), Some(now));
    // Exactly at the limit is not below it: the oldest (4) leaves at t0 + 5 h -> 5.5.
    assert_eq!(rolling_release_ms(events, now, l, usd("9.5")), Some(t0 + l));
    // Below 5.5 needs the 2.5 gone too; below 3 needs everything gone.
    assert_eq!(rolling_release_ms(events, now, l, usd("5.5")), Some(t0 + HOUR_MS + l));
    assert_eq!(rolling_release_ms(events, now, l, usd("3")), Some(t0 + 2 * HOUR_MS + l));
    assert_eq!(rolling_release_ms(events, now, l, UsdNanos(0)), None);
    // Spend already outside the window at now does not count.
    let later = t0 + l;
    assert_eq!(rolling_usage(events, later, l), usd("5.5"));
    assert_eq!(rolling_release_ms(events, later, l, usd("5.5")), Some(t0 + HOUR_MS + l));
    // And the Retry-After derived from it.
    let at = rolling_release_ms(events, now, l, usd("9.5")).expect("releases");
    assert_eq!(seconds_until(now, at), 2 * 3600);
}

// ---------------------------------------------------------------------------------------------
// RPM

#[test]
fn rpm_sliding_window() {
    let now = utc("2024-06-15T12:00:00Z");
    let s = span(&LimitWindow::Rpm, now, New_York);
    assert_eq!(s.start_ms, now - RPM_WINDOW_MS + 1);
    assert_eq!(s.kind, SpanKind::Rolling { length_ms: RPM_WINDOW_MS });

    // Three requests: 60 s ago exactly (outside), 59.999 s ago and 10 s ago (inside).
    let ts = [now - 60_000, now - 59_999, now - 10_000];
    assert!(rpm_admits(&ts, now, 3));
    assert!(!rpm_admits(&ts, now, 2));
    assert!(!rpm_admits(&ts, now - 1, 3)); // one ms earlier all three were inside
    assert!(rpm_admits(&ts, now + 1, 2)); // one ms later only one is
    assert!(!rpm_admits(&[], now, 0));
    assert!(rpm_admits(&[], now, 1));

    // Next slot: now if admitted; otherwise when enough of the oldest have left.
    assert_eq!(rpm_next_slot_ms(&ts, now, 3), Some(now));
    assert_eq!(rpm_next_slot_ms(&ts, now, 2), Some(now + 1));
    assert_eq!(rpm_next_slot_ms(&ts, now, 1), Some(now + 50_000));
    assert_eq!(rpm_next_slot_ms(&ts, now, 0), None);
    let at = rpm_next_slot_ms(&ts, now, 1).expect("slot");
    assert!(!rpm_admits(&ts, at - 1, 1));
    assert!(rpm_admits(&ts, at, 1));
    assert_eq!(seconds_until(now, at), 50);
}

#[test]
fn rpm_burst_frees_one_slot_per_leaving_request() {
    let t0 = utc("2024-06-15T12:00:00Z");
    let ts: Vec<EpochMs> = (0..5).map(|i| t0 + i * 1_000).collect();
    let now = t0 + 30_000;
    assert!(!rpm_admits(&ts, now, 5));
    assert_eq!(rpm_next_slot_ms(&ts, now, 5), Some(t0 + 60_000));
    assert_eq!(rpm_next_slot_ms(&ts, now, 4), Some(t0 + 61_000));
    assert_eq!(rpm_next_slot_ms(&ts, now, 6), Some(now));
}

// ---------------------------------------------------------------------------------------------
// Clock

#[test]
fn a_manual_clock_walks_across_a_boundary() {
    let clock = ManualClock::new(utc("2024-06-16T23:59:59.999Z"));
    let w = LimitWindow::Weekly;
    assert_eq!(w.span_now(&clock, UTC), fixed("2024-06-10T00:00:00Z", "2024-06-17T00:00:00Z"));
    clock.advance(Duration::from_millis(1));
    assert_eq!(w.span_now(&clock, UTC), fixed("2024-06-17T00:00:00Z", "2024-06-24T00:00:00Z"));
    clock.set(utc("2024-06-16T15:59:59.999Z"));
    assert_eq!(w.span_now(&clock, Shanghai), fixed("2024-06-09T16:00:00Z", "2024-06-16T16:00:00Z"));
    clock.advance(Duration::from_millis(1));
    assert_eq!(w.span(utc("2024-06-16T16:00:00Z"), Shanghai), w.span_now(&clock, Shanghai));
    assert_eq!(w.span_now(&clock, Shanghai).start_ms, utc("2024-06-16T16:00:00Z"));
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[test]
fn usd_limits_parse_exactly() {
    assert_eq!(parse_usd_limit("12.5"), Ok(UsdNanos(12_500_000_000)));
    assert_eq!(parse_usd_limit(" 100 "), Ok(UsdNanos(100_000_000_000)));
    assert_eq!(parse_usd_limit("0.000000001"), Ok(UsdNanos(1)));
    assert_eq!(parse_usd_limit("0.1"), Ok(UsdNanos(100_000_000)));
    assert_eq!(parse_usd_limit("0.30"), Ok(UsdNanos(300_000_000)));
    assert_eq!(parse_usd_limit(".5"), Ok(UsdNanos(500_000_000)));
    assert_eq!(parse_usd_limit("5."), Ok(UsdNanos(5_000_000_000)));
    assert_eq!(parse_usd_limit("007.000000000000"), Ok(UsdNanos(7_000_000_000)));
    assert_eq!(parse_usd_limit("0"), Ok(UsdNanos(0)));
    assert_eq!(parse_usd_limit("-0"), Ok(UsdNanos(0)));
    assert_eq!(parse_usd_limit("9223372036.854775807"), Ok(UsdNanos(i64::MAX)));
    // 0.1 + 0.2 is exactly 0.3 in nano-dollars.
    assert_eq!(UsdNanos(usd("0.1").0 + usd("0.2").0), usd("0.3"));

    assert!(matches!(parse_usd_limit("-1"), Err(LimitParseError::Negative(_))));
    assert!(matches!(parse_usd_limit("-0.01"), Err(LimitParseError::Negative(_))));
    assert!(matches!(parse_usd_limit("0.0000000001"), Err(LimitParseError::TooPrecise(_))));
    assert!(matches!(parse_usd_limit("9223372036.854775808"), Err(LimitParseError::TooLarge(_))));
    assert!(matches!(
        parse_usd_limit("1000000000000000000000000000000000"),
        Err(LimitParseError::TooLarge(_))
    ));
    for bad in ["", " ", ".", "abc", "1e3", "+5", "1,5", "1_000", "1.2.3", "NaN", "$5", "--1"] {
        assert!(matches!(parse_usd_limit(bad), Err(LimitParseError::Usd(_))), "{bad:?}");
    }
}

#[test]
fn modes_and_reset_times_parse_and_deserialize() {
    assert_eq!("rolling".parse(), Ok(WindowMode::Rolling));
    assert_eq!(" Fixed ".parse(), Ok(WindowMode::Fixed));
    assert!(matches!("sliding".parse::<WindowMode>(), Err(LimitParseError::Mode(_))));
    assert_eq!(WindowMode::Rolling.to_string(), "rolling");

    assert_eq!("09:30".parse::<ResetTime>().map(|t| (t.hour(), t.minute())), Ok((9, 30)));
    assert_eq!("23:59".parse::<ResetTime>(), Ok(ResetTime::new(23, 59).expect("valid")));
    assert_eq!("00:00".parse::<ResetTime>(), Ok(ResetTime::MIDNIGHT));
    assert!(matches!("24:00".parse::<ResetTime>(), Err(LimitParseError::ResetTime(_))));
    assert_eq!(ResetTime::new(24, 0), None);

    let mode: WindowMode = serde_json::from_str("\"fixed\"").expect("mode");
    assert_eq!(mode, WindowMode::Fixed);
    let time: ResetTime = serde_json::from_str("\"09:30\"").expect("time");
    assert_eq!(serde_json::to_string(&time).expect("json"), "\"09:30\"");
    assert!(serde_json::from_str::<ResetTime>("\"9:60\"").is_err());
}
