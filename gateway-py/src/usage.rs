//! `on_usage`: usage records reach Python callbacks on one dedicated thread.
//!
//! The gateway hands records to its sink on the request path (and from `Drop` when a client goes
//! away), where nothing may block, least of all on the GIL. So the sink only pushes into a
//! channel; a thread of its own takes records out, converts each to the canonical usage-record
//! JSON (`serde_json::to_value(&UsageRecord)`) and calls the callbacks with the GIL held.

use std::sync::Arc;
use std::sync::mpsc;

use gateway_core::store::UsageSink;
use gateway_core::usage::UsageRecord;
use parking_lot::Mutex;
use pyo3::prelude::*;

/// The registered callbacks; shared by the gateway object and the dispatch thread.
pub type Callbacks = Arc<Mutex<Vec<Py<PyAny>>>>;

/// Forwards records to the dispatch thread.
pub struct ChannelSink {
    tx: mpsc::Sender<UsageRecord>,
}

impl UsageSink for ChannelSink {
    fn record(&self, record: UsageRecord) {
        // Fails only when the dispatch thread is gone (interpreter shutting down): nothing left
        // to call then.
        let _ = self.tx.send(record);
    }
}

/// Starts the dispatch thread; it ends when the sink (and so the gateway) is dropped.
pub fn start(callbacks: Callbacks) -> std::io::Result<ChannelSink> {
    let (tx, rx) = mpsc::channel::<UsageRecord>();
    std::thread::Builder::new()
        .name("llm-gateway-usage".to_owned())
        .spawn(move || dispatch(&rx, &callbacks))?;
    Ok(ChannelSink { tx })
}

fn dispatch(rx: &mpsc::Receiver<UsageRecord>, callbacks: &Callbacks) {
    while let Ok(record) = rx.recv() {
        if callbacks.lock().is_empty() {
            continue;
        }
        let value = match serde_json::to_value(&record) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "usage record does not serialize; dropped");
                continue;
            }
        };
        // try_attach: during interpreter shutdown there is nobody left to tell.
        let attached = Python::try_attach(|py| {
            let listeners: Vec<Py<PyAny>> = callbacks.lock().iter().map(|cb| cb.clone_ref(py)).collect();
            let dict = match crate::convert::from_json(py, &value) {
                Ok(d) => d,
                Err(e) => {
                    e.write_unraisable(py, None);
                    return;
                }
            };
            for cb in listeners {
                // A failing callback must not stop the others or the thread: report it the way
                // Python reports errors in callbacks it cannot raise into.
                if let Err(e) = cb.call1(py, (dict.clone(),)) {
                    e.write_unraisable(py, Some(cb.bind(py)));
                }
            }
        });
        if attached.is_none() {
            break;
        }
    }
}
