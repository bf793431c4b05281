//! Usage records handed to JavaScript.

use std::sync::Arc;

use gateway_core::store::UsageSink;
use gateway_core::usage::UsageRecord;
use napi::Status;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use parking_lot::RwLock;

/// The JS callback receiving each record as canonical JSON text. Weak (unreferenced): a
/// gateway waiting for records must not keep a finished Node process alive; callee-handled is
/// off because the callback takes one argument, not Node's `(err, value)`.
pub(crate) type UsageCallback = ThreadsafeFunction<String, (), String, Status, false, true>;

/// A [`UsageSink`] that queues each record for the JS event loop and returns at once.
#[derive(Default)]
pub(crate) struct JsUsageSink {
    callback: RwLock<Option<Arc<UsageCallback>>>,
}

impl JsUsageSink {
    /// Replaces the callback (`None` stops delivery).
    pub(crate) fn set(&self, callback: Option<UsageCallback>) {
        *self.callback.write() = callback.map(Arc::new);
    }
}

impl UsageSink for JsUsageSink {
    fn record(&self, record: UsageRecord) {
        // Cloned out so the lock is not held while serializing.
        let Some(callback) = self.callback.read().clone() else {
            return;
        };
        match serde_json::to_string(&record) {
            // NonBlocking on an unbounded queue: the request path never waits for JavaScript.
            Ok(json) => {
                let status = callback.call(json, ThreadsafeFunctionCallMode::NonBlocking);
                if status != Status::Ok {
                    tracing::warn!(
                        request_id = record.request_id,
                        ?status,
                        "usage record not delivered to JS"
                    );
                }
            }
            Err(e) => tracing::warn!(request_id = record.request_id, "usage record not serializable: {e}"),
        }
    }
}
