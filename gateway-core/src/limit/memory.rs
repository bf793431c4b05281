//! The limit book of [`MemoryStateStore`](crate::store::MemoryStateStore): the semantics of
//! [`super::state`] in plain data structures, one process.

use std::collections::{BTreeMap, HashMap};

use super::spec::{SpendFrame, SpendWindow, Subject};
use super::state::{
    Admission, AdmissionCheck, LimitHit, LimitKind, REQUEST_ID_MEMORY_MS, SpendRecord, SpendSnapshot,
    SubjectCheck,
};
use super::window::{
    DAY_MS, EpochMs, FIVE_HOURS_MS, RPM_WINDOW_MS, rolling_bucket, rolling_first_bucket, rolling_leaves_at,
};

/// A running sum over the buckets from `first` on. Buckets before `first` left the window and
/// were subtracted once; `first` never moves back, so each bucket leaves once.
#[derive(Debug, Default, Clone, Copy)]
struct Rolling {
    sum: i128,
    /// The oldest bucket counted; `None` until the window was first looked at.
    first: Option<EpochMs>,
}

/// Counter kinds of the fixed windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fixed {
    Daily,
    Weekly,
    Monthly,
    Total,
}

impl Fixed {
    fn of(window: SpendWindow) -> Option<Self> {
        match window {
            SpendWindow::DailyFixed => Some(Self::Daily),
            SpendWindow::Weekly => Some(Self::Weekly),
            SpendWindow::Monthly => Some(Self::Monthly),
            SpendWindow::Total => Some(Self::Total),
            _ => None,
        }
    }

    fn start(self, frame: &SpendFrame) -> EpochMs {
        match self {
            Self::Daily => frame.daily_start,
            Self::Weekly => frame.weekly_start,
            Self::Monthly => frame.monthly_start,
            Self::Total => frame.total_since,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    const ALL: [Self; 4] = [Self::Daily, Self::Weekly, Self::Monthly, Self::Total];
}

#[derive(Debug, Default, Clone)]
struct SpendBook {
    shape: String,
    loaded: bool,
    /// Bucket start → spend billed in it, for the buckets still in the 24 h window.
    buckets: BTreeMap<EpochMs, i64>,
    five: Rolling,
    day: Rolling,
    /// The fixed 5 h window: opened at, spend.
    fixed_5h: Option<(EpochMs, i64)>,
    /// Per [`Fixed`] kind: the newest window counted (its start) and its spend.
    counters: [Option<(EpochMs, i64)>; 4],
    /// Request ids taken, with when: those of the last [`REQUEST_ID_MEMORY_MS`] count.
    ids: HashMap<Box<str>, EpochMs>,
    /// When `ids` was last swept of old entries.
    ids_swept: EpochMs,
}

impl SpendBook {
    /// Moves both rolling windows to `now`: buckets that left are subtracted (and, from the 24 h
    /// window, forgotten).
    fn expire(&mut self, now: EpochMs) {
        let first = rolling_first_bucket(now, FIVE_HOURS_MS);
        match self.five.first {
            Some(from) if from < first => {
                let gone: i128 = self.buckets.range(from..first).map(|(_, a)| i128::from(*a)).sum();
                self.five = Rolling { sum: self.five.sum - gone, first: Some(first) };
            }
            None => self.five.first = Some(first),
            Some(_) => {}
        }
        let first = rolling_first_bucket(now, DAY_MS);
        match self.day.first {
            Some(from) if from < first => {
                let kept = self.buckets.split_off(&first);
                let gone: i128 =
                    std::mem::replace(&mut self.buckets, kept).values().map(|a| i128::from(*a)).sum();
                self.day = Rolling { sum: self.day.sum - gone, first: Some(first) };
            }
            None => self.day.first = Some(first),
            Some(_) => {}
        }
    }

    /// Takes `id` unless the book took it within [`REQUEST_ID_MEMORY_MS`]: `false` then (it was
    /// counted before, and the whole record must be skipped).
    fn take_id(&mut self, id: &str, now: EpochMs) -> bool {
        let horizon = now - REQUEST_ID_MEMORY_MS;
        // Swept every quarter of the memory: ids cost at most 1.25 memories of traffic.
        if now - self.ids_swept >= REQUEST_ID_MEMORY_MS / 4 || now < self.ids_swept {
            self.ids.retain(|_, seen| *seen > horizon);
            self.ids_swept = now;
        }
        match self.ids.get_mut(id) {
            Some(seen) if *seen > horizon => false,
            Some(seen) => {
                *seen = now;
                true
            }
            None => {
                self.ids.insert(id.into(), now);
                true
            }
        }
    }

    /// Adds a billed request to the rolling windows it still belongs to (call `expire` first).
    fn add_rolling(&mut self, at: EpochMs, amount: i64) {
        let bucket = rolling_bucket(at);
        if self.day.first.is_some_and(|first| bucket >= first) {
            let sum = self.buckets.entry(bucket).or_insert(0);
            *sum = sum.saturating_add(amount);
            self.day.sum += i128::from(amount);
            if self.five.first.is_some_and(|first| bucket >= first) {
                self.five.sum += i128::from(amount);
            }
        }
    }

    /// When enough of the oldest buckets have left a rolling window for its sum to drop below
    /// `limit`.
    fn release_at(&self, window: Rolling, length: i64, limit: i64) -> Option<EpochMs> {
        let mut sum = window.sum;
        for (&bucket, &amount) in self.buckets.range(window.first.unwrap_or(EpochMs::MIN)..) {
            sum -= i128::from(amount);
            if sum < i128::from(limit) {
                return Some(rolling_leaves_at(bucket, length));
            }
        }
        None
    }

    fn value(
        &mut self,
        window: SpendWindow,
        frame: &SpendFrame,
        now: EpochMs,
        limit: i64,
    ) -> (i64, Option<EpochMs>) {
        match window {
            SpendWindow::FiveHourRolling | SpendWindow::DailyRolling => {
                self.expire(now);
                let (rolling, length) = if window == SpendWindow::FiveHourRolling {
                    (self.five, FIVE_HOURS_MS)
                } else {
                    (self.day, DAY_MS)
                };
                (saturate(rolling.sum), self.release_at(rolling, length, limit))
            }
            SpendWindow::FiveHourFixed => match self.fixed_5h {
                Some((opened, spent)) if opened + FIVE_HOURS_MS > now => {
                    (spent, Some(opened + FIVE_HOURS_MS))
                }
                _ => (0, None),
            },
            SpendWindow::DailyFixed | SpendWindow::Weekly | SpendWindow::Monthly | SpendWindow::Total => {
                let Some(kind) = Fixed::of(window) else { return (0, None) };
                let spent = match self.counters[kind.index()] {
                    Some((start, spent)) if start == kind.start(frame) => spent,
                    _ => 0,
                };
                (spent, frame.bounds(window).and_then(|(_, reset)| reset))
            }
        }
    }
}

/// Sessions seen per subject, with when.
#[derive(Debug, Default)]
struct Sessions {
    seen: HashMap<String, EpochMs>,
    /// When `seen` was last swept of sessions older than the TTL.
    swept: EpochMs,
}

/// RPM windows, session sets and spend books of every subject.
#[derive(Debug, Default)]
pub(crate) struct LimitBook {
    spend: HashMap<Subject, SpendBook>,
    rpm: HashMap<Subject, BTreeMap<(EpochMs, u64), ()>>,
    sessions: HashMap<Subject, Sessions>,
    seq: u64,
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl LimitBook {
    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn spend_over(&mut self, check: &SubjectCheck, now: EpochMs) -> Option<LimitHit> {
        let book = self.spend.get_mut(&check.subject)?;
        for &(window, limit) in &check.spend {
            let (current, reset_at_ms) = book.value(window, &check.frame, now, limit.0);
            if current >= limit.0 {
                return Some(LimitHit {
                    subject: check.subject,
                    kind: LimitKind::Spend(window),
                    current,
                    limit: limit.0,
                    reset_at_ms,
                    now_ms: now,
                });
            }
        }
        None
    }

    fn is_cold(&self, c: &SubjectCheck) -> bool {
        c.tracks_spend() && self.spend.get(&c.subject).is_none_or(|b| !b.loaded || b.shape != c.shape)
    }

    pub(crate) fn admit(&mut self, check: &AdmissionCheck, now: EpochMs) -> Admission {
        // Allocates only when something is cold (rare): admission is on every request's path.
        if check.subjects.iter().chain(&check.providers).any(|c| self.is_cold(c)) {
            let cold = check
                .subjects
                .iter()
                .chain(&check.providers)
                .filter(|c| self.is_cold(c))
                .map(|c| c.subject)
                .collect();
            return Admission::NeedsWarm(cold);
        }
        for c in &check.subjects {
            if let Some(hit) = self.spend_over(c, now) {
                return Admission::Rejected(hit);
            }
        }
        let session = check.session.as_deref();
        let horizon = now - check.session_ttl_ms;
        for c in check.subjects.iter().filter(|c| c.concurrent_sessions > 0) {
            let Some(session) = session else { break };
            let sessions = self.sessions.entry(c.subject).or_default();
            if sessions.seen.get(session).is_some_and(|seen| *seen > horizon) {
                continue;
            }
            let limit = c.concurrent_sessions as usize;
            // Entries that expired only make `seen` longer: sweep when that could refuse, and
            // once per TTL so that memory stays bounded by the sessions of about two TTLs.
            if sessions.seen.len() >= limit
                || now - sessions.swept >= check.session_ttl_ms
                || now < sessions.swept
            {
                sessions.seen.retain(|_, seen| *seen > horizon);
                sessions.swept = now;
            }
            if sessions.seen.len() >= limit {
                let oldest = sessions.seen.values().min().copied().unwrap_or(now);
                return Admission::Rejected(LimitHit {
                    subject: c.subject,
                    kind: LimitKind::ConcurrentSessions,
                    current: sessions.seen.len() as i64,
                    limit: limit as i64,
                    reset_at_ms: Some(oldest + check.session_ttl_ms),
                    now_ms: now,
                });
            }
        }
        for c in check.subjects.iter().filter(|c| c.rpm > 0) {
            let window = self.rpm.entry(c.subject).or_default();
            while let Some(entry) = window.first_entry() {
                if entry.key().0 > now - RPM_WINDOW_MS {
                    break;
                }
                entry.remove();
            }
            if window.len() >= c.rpm as usize {
                let oldest = window.keys().next().map_or(now, |k| k.0);
                return Admission::Rejected(LimitHit {
                    subject: c.subject,
                    kind: LimitKind::Rpm,
                    current: window.len() as i64,
                    limit: i64::from(c.rpm),
                    reset_at_ms: Some(oldest + RPM_WINDOW_MS),
                    now_ms: now,
                });
            }
        }
        // Everything passed: count.
        for c in &check.subjects {
            if c.concurrent_sessions > 0
                && let Some(session) = session
            {
                let sessions = &mut self.sessions.entry(c.subject).or_default().seen;
                match sessions.get_mut(session) {
                    Some(seen) => *seen = now,
                    None => {
                        sessions.insert(session.to_owned(), now);
                    }
                }
            }
            if c.rpm > 0 {
                let seq = self.next_seq();
                self.rpm.entry(c.subject).or_default().insert((now, seq), ());
            }
        }
        let providers_over = if check.providers.is_empty() {
            Vec::new()
        } else {
            check
                .providers
                .iter()
                .filter(|c| self.spend_over(c, now).is_some())
                .map(|c| c.subject.id)
                .collect()
        };
        Admission::Admitted { providers_over }
    }

    pub(crate) fn add_spend(&mut self, record: &SpendRecord, now: EpochMs) {
        let book = self.spend.entry(record.subject).or_default();
        if book.shape != record.shape {
            // Kept elsewhere now: whatever was here is stale; the next admission rebuilds it.
            *book = SpendBook { shape: record.shape.clone(), ..SpendBook::default() };
        }
        if !book.take_id(&record.request_id, now) {
            return;
        }
        let (at, amount) = (record.at_ms, record.amount.0);
        book.expire(now);
        book.add_rolling(at, amount);
        book.fixed_5h = match book.fixed_5h {
            Some((opened, spent)) if opened + FIVE_HOURS_MS > at => {
                Some((opened, spent.saturating_add(amount)))
            }
            _ => Some((at, amount)),
        };
        for kind in Fixed::ALL {
            let start = kind.start(&record.frame);
            let counter = &mut book.counters[kind.index()];
            *counter = match *counter {
                Some((s, spent)) if s == start => Some((s, spent.saturating_add(amount))),
                // A window older than the newest one counted is over: nothing reads it.
                Some((s, spent)) if s > start => Some((s, spent)),
                _ => Some((start, amount)),
            };
        }
    }

    pub(crate) fn warm(&mut self, snapshot: &SpendSnapshot, now: EpochMs) {
        let mut book = SpendBook { shape: snapshot.shape.clone(), loaded: true, ..SpendBook::default() };
        book.expire(now);
        for (at, id, amount) in &snapshot.events {
            // A request listed twice counts once (its first listing).
            if book.take_id(id, now) {
                book.add_rolling(*at, amount.0);
            }
        }
        book.fixed_5h = snapshot.fixed_5h.map(|(opened, spent)| (opened, spent.0));
        let frame = &snapshot.frame;
        for (kind, value) in [
            (Fixed::Daily, snapshot.daily),
            (Fixed::Weekly, snapshot.weekly),
            (Fixed::Monthly, snapshot.monthly),
            (Fixed::Total, snapshot.total),
        ] {
            book.counters[kind.index()] = Some((kind.start(frame), value.0));
        }
        self.spend.insert(snapshot.subject, book);
    }

    /// Forgets a subject's spend so the next admission rebuilds it from the request log.
    pub(crate) fn invalidate(&mut self, subject: Subject) {
        self.spend.remove(&subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsdNanos;

    fn usd(n: i64) -> UsdNanos {
        UsdNanos(n)
    }

    fn check(subject: Subject, spend: Vec<(SpendWindow, UsdNanos)>) -> SubjectCheck {
        SubjectCheck {
            subject,
            rpm: 0,
            concurrent_sessions: 0,
            spend,
            shape: "s".into(),
            frame: SpendFrame { daily_start: 0, daily_reset: DAY_MS, ..Default::default() },
        }
    }

    fn admission(subjects: Vec<SubjectCheck>) -> AdmissionCheck {
        AdmissionCheck {
            request_id: "r".into(),
            session: Some("s1".into()),
            session_ttl_ms: 300_000,
            subjects,
            providers: Vec::new(),
        }
    }

    #[test]
    fn rolling_release_is_when_enough_old_spend_left() {
        let mut b = SpendBook::default();
        b.expire(1_000);
        b.add_rolling(1_000, 5);
        b.expire(2_000);
        b.add_rolling(2_500, 5);
        assert_eq!(b.release_at(b.five, FIVE_HOURS_MS, 10), Some(1_999 + FIVE_HOURS_MS));
        assert_eq!(b.release_at(b.five, FIVE_HOURS_MS, 5), Some(2_999 + FIVE_HOURS_MS));
        b.expire(1_998 + FIVE_HOURS_MS);
        assert_eq!(b.five.sum, 10, "a bucket stays until its last millisecond was in for 5 h");
        b.expire(1_999 + FIVE_HOURS_MS);
        assert_eq!((b.five.sum, b.day.sum), (5, 10));
        b.expire(2_999 + DAY_MS);
        assert_eq!((b.five.sum, b.day.sum, b.buckets.len()), (0, 0, 0));
    }

    #[test]
    fn request_ids_are_remembered_for_a_while() {
        let mut b = SpendBook::default();
        assert!(b.take_id("a", 0));
        assert!(!b.take_id("a", REQUEST_ID_MEMORY_MS - 1));
        assert!(b.take_id("a", REQUEST_ID_MEMORY_MS), "forgotten after the memory");
        assert!(b.take_id("b", 3 * REQUEST_ID_MEMORY_MS));
        assert_eq!(b.ids.len(), 1, "swept");
    }

    #[test]
    fn cold_subjects_must_be_warmed_and_spend_counts_after() {
        let mut book = LimitBook::default();
        let user = Subject::user(1);
        let c = admission(vec![check(user, vec![(SpendWindow::DailyFixed, usd(10))])]);
        assert_eq!(book.admit(&c, 100), Admission::NeedsWarm(vec![user]));
        book.warm(
            &SpendSnapshot {
                subject: user,
                shape: "s".into(),
                frame: c.subjects[0].frame,
                daily: usd(9),
                ..Default::default()
            },
            100,
        );
        assert!(matches!(book.admit(&c, 100), Admission::Admitted { .. }));
        book.add_spend(
            &SpendRecord {
                subject: user,
                shape: "s".into(),
                frame: c.subjects[0].frame,
                at_ms: 100,
                request_id: "a".into(),
                amount: usd(1),
            },
            100,
        );
        let Admission::Rejected(hit) = book.admit(&c, 200) else { panic!("over the limit") };
        assert_eq!((hit.current, hit.limit, hit.reset_at_ms), (10, 10, Some(DAY_MS)));
    }
}
