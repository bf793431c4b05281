//! Storage seams of the pipeline: where usage records go and where configuration comes from.

#[cfg(feature = "redis")]
pub mod redis;
pub mod state;

use std::sync::Arc;

#[cfg(feature = "redis")]
pub use self::redis::{RedisStateOptions, RedisStateStore};
pub use state::{Clock, ManualClock, MemoryStateStore, StateStore, SystemClock};

use parking_lot::Mutex;

use crate::usage::UsageRecord;

/// Receives one [`UsageRecord`] per request. Called on the request path (also from `Drop` when a
/// client disconnects), so implementations must not block: hand the record to a queue.
pub trait UsageSink: Send + Sync + 'static {
    /// Takes ownership of a finished record.
    fn record(&self, record: UsageRecord);
}

/// Discards records.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullUsageSink;

impl UsageSink for NullUsageSink {
    fn record(&self, _record: UsageRecord) {}
}

/// Keeps records in memory; for tests and small embedders.
#[derive(Debug, Default, Clone)]
pub struct MemoryUsageSink {
    records: Arc<Mutex<Vec<UsageRecord>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl MemoryUsageSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<UsageRecord> {
        self.records.lock().clone()
    }

    /// Waits until at least `count` records arrived (records of streams arrive when the body ends).
    pub async fn wait_for(&self, count: usize) -> Vec<UsageRecord> {
        loop {
            let notified = self.notify.notified();
            {
                let records = self.records.lock();
                if records.len() >= count {
                    return records.clone();
                }
            }
            notified.await;
        }
    }
}

impl UsageSink for MemoryUsageSink {
    fn record(&self, record: UsageRecord) {
        self.records.lock().push(record);
        self.notify.notify_waiters();
    }
}

impl<T: UsageSink + ?Sized> UsageSink for Arc<T> {
    fn record(&self, record: UsageRecord) {
        (**self).record(record)
    }
}
