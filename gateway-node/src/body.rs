//! A gateway response as JavaScript reads it: status and headers at once, the body in chunks.
//!
//! Crossing between the JS thread and Tokio costs tens of microseconds each way, so the body is
//! read on the Rust side by a small task (a bounded queue of frames: memory stays small and a
//! slow reader slows the upstream, never the other way round) and JS takes what has arrived
//! synchronously (`poll`), awaiting (`next`) only when nothing is there yet. A body that is
//! complete when the response arrives (errors, most JSON answers) needs no task at all and is
//! handed over with the head (`takeComplete`). Nothing ever waits to fill a chunk: streams reach
//! JS as they arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use gateway_core::{GatewayBody, GatewayResponse};
use http_body_util::BodyExt;
use napi::Either;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Mutex, Notify, mpsc};

use crate::js_error;

/// Frames the reading task may hold before it waits for JS.
const QUEUE_FRAMES: usize = 16;
/// Data taken in one go (at the response, or per chunk) stops growing at this size.
const MAX_CHUNK: usize = 256 * 1024;

type Frame = Result<Bytes, String>;

/// Where reading stands.
struct Reader {
    /// Data already taken from the body or the queue, handed out first.
    ready: Vec<u8>,
    /// Frames from the reading task; `None` once the body ended (or was never needed because
    /// it was complete with the response). Dropping it stops the task, which drops the body:
    /// that is how the gateway learns the client went away (`client_abort`).
    queue: Option<mpsc::Receiver<Frame>>,
    /// A failure met behind data not yet handed out; reported right after it.
    error: Option<String>,
}

impl Reader {
    /// Moves the frames already queued into `ready`, without waiting.
    fn drain_queue(&mut self) {
        while self.ready.len() < MAX_CHUNK && self.error.is_none() {
            let Some(queue) = self.queue.as_mut() else {
                return;
            };
            match queue.try_recv() {
                Ok(Ok(data)) => self.ready.extend_from_slice(&data),
                Ok(Err(message)) => {
                    self.error = Some(message);
                    self.queue = None;
                }
                Err(TryRecvError::Disconnected) => self.queue = None,
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    /// `ready` as a buffer, or the pending error once `ready` is empty.
    fn take(&mut self) -> napi::Result<Option<Buffer>> {
        if !self.ready.is_empty() {
            return Ok(Some(Buffer::from(std::mem::take(&mut self.ready))));
        }
        match self.error.take() {
            Some(message) => Err(js_error(message)),
            None => Ok(None),
        }
    }

    /// No more data will come (nothing queued either).
    fn ended(&self) -> bool {
        self.queue.is_none() && self.ready.is_empty() && self.error.is_none()
    }
}

/// The body state shared by concurrent JS calls.
struct BodyState {
    reader: Mutex<Reader>,
    cancelled: AtomicBool,
    cancel: Notify,
}

/// One response of `Gateway.request`.
#[napi]
pub struct NativeResponse {
    status: u16,
    headers: Vec<String>,
    state: Arc<BodyState>,
}

/// Flattens headers as `[name, value, ...]`; values that are not UTF-8 are read as Latin-1,
/// as Node's own HTTP parser does.
pub(crate) fn flat_headers(headers: &http::HeaderMap) -> Vec<String> {
    let mut out = Vec::with_capacity(headers.len() * 2);
    for (name, value) in headers {
        out.push(name.as_str().to_owned());
        out.push(match value.to_str() {
            Ok(text) => text.to_owned(),
            Err(_) => value.as_bytes().iter().map(|&b| char::from(b)).collect(),
        });
    }
    out
}

/// The next data frame of `body`; trailers are skipped, `None` at the end.
async fn next_data(body: &mut GatewayBody) -> Option<Frame> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return Some(Ok(data)),
                _ => continue,
            },
            Err(e) => return Some(Err(format!("response body failed: {e}"))),
        }
    }
}

/// Reads `body` into `tx` until it ends, fails, or JS stops listening.
async fn pump(mut body: GatewayBody, tx: mpsc::Sender<Frame>) {
    loop {
        let frame = tokio::select! {
            biased;
            // Cancelled or collected: dropping the body here records the abort now, not when the
            // upstream next sends something.
            () = tx.closed() => return,
            frame = next_data(&mut body) => frame,
        };
        let Some(frame) = frame else {
            return;
        };
        let failed = frame.is_err();
        if tx.send(frame).await.is_err() || failed {
            return;
        }
    }
}

impl NativeResponse {
    /// Must run inside the Tokio runtime (it may spawn the reading task).
    pub(crate) fn new(resp: GatewayResponse) -> Self {
        let (parts, mut body) = resp.into_parts();
        let mut reader = Reader { ready: Vec::new(), queue: None, error: None };
        // What the body holds already is taken now (polled once, never awaited).
        let mut open = true;
        while open && reader.ready.len() < MAX_CHUNK {
            match next_data(&mut body).now_or_never() {
                Some(Some(Ok(data))) => reader.ready.extend_from_slice(&data),
                Some(Some(Err(message))) => {
                    reader.error = Some(message);
                    open = false;
                }
                Some(None) => open = false,
                None => break,
            }
        }
        if open {
            let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
            tokio::spawn(pump(body, tx));
            reader.queue = Some(rx);
        }
        Self {
            status: parts.status.as_u16(),
            headers: flat_headers(&parts.headers),
            state: Arc::new(BodyState {
                reader: Mutex::new(reader),
                cancelled: AtomicBool::new(false),
                cancel: Notify::new(),
            }),
        }
    }
}

#[napi]
impl NativeResponse {
    /// The HTTP status.
    #[napi(getter)]
    pub fn status(&self) -> u32 {
        u32::from(self.status)
    }

    /// The headers as `[name, value, ...]`, names in lower case.
    #[napi(getter)]
    pub fn headers(&self) -> Vec<String> {
        self.headers.clone()
    }

    /// The whole body when all of it has arrived and none was read yet; else `null`.
    #[napi]
    pub fn take_complete(&self) -> Option<Buffer> {
        let mut reader = self.state.reader.try_lock().ok()?;
        if self.state.cancelled.load(Ordering::SeqCst) {
            return None;
        }
        reader.drain_queue();
        if reader.queue.is_some() || reader.error.is_some() {
            return None;
        }
        Some(Buffer::from(std::mem::take(&mut reader.ready)))
    }

    /// Synchronously: the data that has arrived (a `Buffer`), `true` at the end of the body,
    /// `false` when nothing has arrived yet (then `await next()`). Throws a body failure once.
    #[napi]
    pub fn poll(&self) -> napi::Result<Either<Buffer, bool>> {
        if self.state.cancelled.load(Ordering::SeqCst) {
            return Ok(Either::B(true));
        }
        // Another call is reading: treat as "nothing yet" and let `next` queue behind it.
        let Ok(mut reader) = self.state.reader.try_lock() else {
            return Ok(Either::B(false));
        };
        reader.drain_queue();
        if reader.ended() {
            return Ok(Either::B(true));
        }
        Ok(match reader.take()? {
            Some(data) => Either::A(data),
            None => Either::B(false),
        })
    }

    /// The next chunk as it arrives, or `null` at the end of the body (also after `cancel`).
    /// A body that fails rejects once; later calls give `null`.
    #[napi]
    pub async fn next(&self) -> napi::Result<Option<Buffer>> {
        let state = &self.state;
        let mut reader = state.reader.lock().await;
        reader.drain_queue();
        if let Some(data) = reader.take()? {
            return Ok(Some(data));
        }
        let Some(queue) = reader.queue.as_mut() else {
            return Ok(None);
        };
        let frame = tokio::select! {
            // A cancel that happened before this call started is seen here too.
            () = cancelled(state) => None,
            frame = queue.recv() => frame,
        };
        match frame {
            Some(Ok(data)) => {
                reader.drain_queue();
                if reader.ready.is_empty() {
                    return Ok(Some(Buffer::from(Vec::from(data))));
                }
                let mut joined = Vec::with_capacity(data.len() + reader.ready.len());
                joined.extend_from_slice(&data);
                joined.append(&mut reader.ready);
                Ok(Some(Buffer::from(joined)))
            }
            Some(Err(message)) => {
                reader.queue = None;
                Err(js_error(message))
            }
            None => {
                reader.queue = None;
                Ok(None)
            }
        }
    }

    /// The rest of the body, whole.
    #[napi]
    pub async fn read_all(&self) -> napi::Result<Buffer> {
        let state = &self.state;
        let mut reader = state.reader.lock().await;
        let mut out = std::mem::take(&mut reader.ready);
        if let Some(message) = reader.error.take() {
            return Err(js_error(message));
        }
        let Some(mut queue) = reader.queue.take() else {
            return Ok(Buffer::from(out));
        };
        loop {
            let frame = tokio::select! {
                () = cancelled(state) => return Err(js_error("response body was cancelled")),
                frame = queue.recv() => frame,
            };
            match frame {
                Some(Ok(data)) if out.is_empty() => out = Vec::from(data),
                Some(Ok(data)) => out.extend_from_slice(&data),
                Some(Err(message)) => return Err(js_error(message)),
                None => return Ok(Buffer::from(out)),
            }
        }
    }

    /// Stops reading: the body is dropped (a pending `next` gives `null`), which the gateway
    /// records as a client that went away unless the body had already ended.
    #[napi]
    pub fn cancel(&self) {
        self.state.cancelled.store(true, Ordering::SeqCst);
        self.state.cancel.notify_waiters();
        // Nobody reading: close now rather than when the JS object is collected. A reader in
        // progress sees the flag and gives up the queue itself.
        if let Ok(mut reader) = self.state.reader.try_lock() {
            *reader = Reader { ready: Vec::new(), queue: None, error: None };
        }
    }
}

/// Resolves once `cancel` was called.
async fn cancelled(state: &BodyState) {
    let notified = state.cancel.notified();
    tokio::pin!(notified);
    // Registered before the flag is read, so a cancel in between is not missed.
    notified.as_mut().enable();
    if state.cancelled.load(Ordering::SeqCst) {
        return;
    }
    notified.await;
}
