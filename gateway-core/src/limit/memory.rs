//! The limit book of [`MemoryStateStore`](crate::store::MemoryStateStore): the semantics of
//! [`super::state`] in plain data structures, one process.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::spec::{SpendFrame, SpendWindow, Subject};
use super::state::{
    Admission, AdmissionCheck, LimitHit, LimitKind, SpendRecord, SpendSnapshot, SubjectCheck,
};
use super::window::{DAY_MS, EpochMs, FIVE_HOURS_MS, RPM_WINDOW_MS};

/// Events of a rolling window in arrival order, with their running sum. Each event enters and
/// leaves once, so keeping the sum costs O(log n) per event, whatever the window's size.
#[derive(Debug, Default, Clone)]
struct Rolling {
    /// (arrival, sequence) → (amount, request id); the sequence keeps simultaneous events apart.
    events: BTreeMap<(EpochMs, u64), (i64, String)>,
    /// The request ids in `events`, so that a request is counted once.
    ids: HashSet<String>,
    sum: i128,
}

impl Rolling {
    fn expire(&mut self, now: EpochMs, length: i64) {
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > now - length {
                break;
            }
            let (amount, id) = entry.remove();
            self.sum -= i128::from(amount);
            self.ids.remove(&id);
        }
    }

    fn add(&mut self, at: EpochMs, seq: u64, id: &str, amount: i64, now: EpochMs, length: i64) {
        if at > now - length {
            self.events.insert((at, seq), (amount, id.to_owned()));
            self.ids.insert(id.to_owned());
            self.sum += i128::from(amount);
        }
    }

    /// When enough of the oldest events have left for the sum to drop below `limit`. Events of
    /// one instant leave together (as in [`super::window::rolling_release_ms`]): a charge and its
    /// refund at the same instant must not be taken apart.
    fn release_at(&self, length: i64, limit: i64) -> Option<EpochMs> {
        let mut sum = self.sum;
        let mut events = self.events.iter().peekable();
        while let Some((&(at, _), (amount, _))) = events.next() {
            sum -= i128::from(*amount);
            if events.peek().is_some_and(|&(&(next, _), _)| next == at) {
                continue;
            }
            if sum < i128::from(limit) {
                return Some(at + length);
            }
        }
        None
    }
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

    const ALL: [Self; 4] = [Self::Daily, Self::Weekly, Self::Monthly, Self::Total];
}

#[derive(Debug, Default, Clone)]
struct SpendBook {
    shape: String,
    loaded: bool,
    five: Rolling,
    day: Rolling,
    /// The fixed 5 h window: opened at, spend.
    fixed_5h: Option<(EpochMs, i64)>,
    /// (kind, window start) → spend.
    counters: HashMap<(Fixed, EpochMs), i64>,
}

impl SpendBook {
    /// Adds a billed request to the rolling windows, unless the last 24 h already hold its request
    /// id: then it was counted before (a retried record, or a rebuild that read it from the log)
    /// and `false` says the whole record must be skipped.
    fn add_event(&mut self, at: EpochMs, seq: u64, id: &str, amount: i64, now: EpochMs) -> bool {
        self.five.expire(now, FIVE_HOURS_MS);
        self.day.expire(now, DAY_MS);
        if self.day.ids.contains(id) {
            return false;
        }
        self.five.add(at, seq, id, amount, now, FIVE_HOURS_MS);
        self.day.add(at, seq, id, amount, now, DAY_MS);
        true
    }

    fn value(
        &mut self,
        window: SpendWindow,
        frame: &SpendFrame,
        now: EpochMs,
        limit: i64,
    ) -> (i64, Option<EpochMs>) {
        match window {
            SpendWindow::FiveHourRolling => {
                self.five.expire(now, FIVE_HOURS_MS);
                (saturate(self.five.sum), self.five.release_at(FIVE_HOURS_MS, limit))
            }
            SpendWindow::DailyRolling => {
                self.day.expire(now, DAY_MS);
                (saturate(self.day.sum), self.day.release_at(DAY_MS, limit))
            }
            SpendWindow::FiveHourFixed => match self.fixed_5h {
                Some((opened, spent)) if opened + FIVE_HOURS_MS > now => {
                    (spent, Some(opened + FIVE_HOURS_MS))
                }
                _ => (0, None),
            },
            SpendWindow::DailyFixed | SpendWindow::Weekly | SpendWindow::Monthly | SpendWindow::Total => {
                let Some(kind) = Fixed::of(window) else { return (0, None) };
                let spent = self.counters.get(&(kind, kind.start(frame))).copied().unwrap_or(0);
                (spent, frame.bounds(window).and_then(|(_, reset)| reset))
            }
        }
    }
}

/// RPM windows, session sets and spend books of every subject.
#[derive(Debug, Default)]
pub(crate) struct LimitBook {
    spend: HashMap<Subject, SpendBook>,
    rpm: HashMap<Subject, BTreeMap<(EpochMs, u64), ()>>,
    sessions: HashMap<Subject, HashMap<String, EpochMs>>,
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

    pub(crate) fn admit(&mut self, check: &AdmissionCheck, now: EpochMs) -> Admission {
        let cold: Vec<Subject> = check
            .subjects
            .iter()
            .chain(&check.providers)
            .filter(|c| c.tracks_spend())
            .filter(|c| self.spend.get(&c.subject).is_none_or(|b| !b.loaded || b.shape != c.shape))
            .map(|c| c.subject)
            .collect();
        if !cold.is_empty() {
            return Admission::NeedsWarm(cold);
        }
        for c in &check.subjects {
            if let Some(hit) = self.spend_over(c, now) {
                return Admission::Rejected(hit);
            }
        }
        let session = check.session.as_deref();
        for c in check.subjects.iter().filter(|c| c.concurrent_sessions > 0) {
            let Some(session) = session else { break };
            let sessions = self.sessions.entry(c.subject).or_default();
            sessions.retain(|_, seen| *seen > now - check.session_ttl_ms);
            let limit = c.concurrent_sessions as usize;
            if !sessions.contains_key(session) && sessions.len() >= limit {
                let oldest = sessions.values().min().copied().unwrap_or(now);
                return Admission::Rejected(LimitHit {
                    subject: c.subject,
                    kind: LimitKind::ConcurrentSessions,
                    current: sessions.len() as i64,
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
                self.sessions.entry(c.subject).or_default().insert(session.to_owned(), now);
            }
            if c.rpm > 0 {
                let seq = self.next_seq();
                self.rpm.entry(c.subject).or_default().insert((now, seq), ());
            }
        }
        let providers_over = check
            .providers
            .iter()
            .filter(|c| self.spend_over(c, now).is_some())
            .map(|c| c.subject.id)
            .collect();
        Admission::Admitted { providers_over }
    }

    pub(crate) fn add_spend(&mut self, record: &SpendRecord, now: EpochMs) {
        let seq = self.next_seq();
        let book = self.spend.entry(record.subject).or_default();
        if book.shape != record.shape {
            // Kept elsewhere now: whatever was here is stale; the next admission rebuilds it.
            *book = SpendBook { shape: record.shape.clone(), ..SpendBook::default() };
        }
        let (at, amount) = (record.at_ms, record.amount.0);
        if !book.add_event(at, seq, &record.request_id, amount, now) {
            return;
        }
        book.fixed_5h = match book.fixed_5h {
            Some((opened, spent)) if opened + FIVE_HOURS_MS > at => {
                Some((opened, spent.saturating_add(amount)))
            }
            _ => Some((at, amount)),
        };
        for kind in Fixed::ALL {
            let start = kind.start(&record.frame);
            book.counters.retain(|(k, s), _| *k != kind || *s >= start);
            let counter = book.counters.entry((kind, start)).or_insert(0);
            *counter = counter.saturating_add(amount);
        }
    }

    pub(crate) fn warm(&mut self, snapshot: &SpendSnapshot, now: EpochMs) {
        let mut book = SpendBook { shape: snapshot.shape.clone(), loaded: true, ..SpendBook::default() };
        for (at, id, amount) in &snapshot.events {
            self.seq = self.seq.wrapping_add(1);
            // A request listed twice counts once (its first listing).
            book.add_event(*at, self.seq, id, amount.0, now);
        }
        book.fixed_5h = snapshot.fixed_5h.map(|(opened, spent)| (opened, spent.0));
        let frame = &snapshot.frame;
        for (kind, value) in [
            (Fixed::Daily, snapshot.daily),
            (Fixed::Weekly, snapshot.weekly),
            (Fixed::Monthly, snapshot.monthly),
            (Fixed::Total, snapshot.total),
        ] {
            book.counters.insert((kind, kind.start(frame)), value.0);
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
        let mut r = Rolling::default();
        r.add(1_000, 1, "a", 5, 1_000, FIVE_HOURS_MS);
        r.add(2_000, 2, "b", 5, 2_000, FIVE_HOURS_MS);
        assert_eq!(r.release_at(FIVE_HOURS_MS, 10), Some(1_000 + FIVE_HOURS_MS));
        assert_eq!(r.release_at(FIVE_HOURS_MS, 5), Some(2_000 + FIVE_HOURS_MS));
        r.expire(1_000 + FIVE_HOURS_MS, FIVE_HOURS_MS);
        assert_eq!(r.sum, 5);
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
