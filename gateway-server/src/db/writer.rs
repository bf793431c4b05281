//! The background usage writer: the server's [`UsageSink`].
//!
//! `record()` hands the record to an unbounded channel and returns; it never blocks or awaits.
//! One task drains the channel in batches (up to [`WriterConfig::batch_size`] records or
//! [`WriterConfig::batch_delay`] after the oldest pending record, whichever comes first) and
//! writes each batch with [`Database::insert_usage_records`].
//!
//! Nothing is dropped:
//! - a failed batch stays queued and is retried with exponential backoff
//!   ([`WriterConfig::backoff_min`] doubling up to [`WriterConfig::backoff_max`]);
//! - while the database is failing, records queued beyond [`WriterConfig::spill_threshold`]
//!   are appended as JSON lines to the spill file (in chunks of about a batch), so memory stays
//!   bounded;
//! - [`UsageWriter::flush`] and [`UsageWriter::shutdown`] write everything queued, or spill it
//!   when the database is down;
//! - the spill file is replayed into the database at [`UsageWriter::start`] and after the
//!   database recovers. Replays are idempotent (`ON CONFLICT (request_id) DO NOTHING`).
//!
//! A replay first renames `<spill>` to `<spill>.replaying`, so records spilled meanwhile go to a
//! fresh file; a replay interrupted by a crash is resumed from `<spill>.replaying` next time.
//! Lines that cannot be parsed are moved to `<spill>.corrupt` for inspection.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_core::store::UsageSink;
use gateway_core::usage::UsageRecord;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Database, DbError};

/// Where the [`UsageWriter`] spills and how it batches. The defaults suit production; tests
/// shrink them. A path converts into a config with that spill path and default tuning.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// JSON-lines file for records the database cannot take. Default
    /// `./data/usage-spill.jsonl`.
    pub spill_path: PathBuf,
    /// Most records per database write. Default 1024, the largest single `INSERT` of the request
    /// log, so a full batch is one statement.
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill. Default 200 ms.
    pub batch_delay: Duration,
    /// While the database is failing, records queued beyond this many go to the spill file.
    /// Default 10,000.
    pub spill_threshold: usize,
    /// First retry delay after a failed write. Default 100 ms.
    pub backoff_min: Duration,
    /// Longest retry delay. Default 5 s.
    pub backoff_max: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            spill_path: PathBuf::from(DEFAULT_SPILL_PATH),
            batch_size: 1024,
            batch_delay: Duration::from_millis(200),
            spill_threshold: 10_000,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The spill file used when none is configured.
pub const DEFAULT_SPILL_PATH: &str = "./data/usage-spill.jsonl";

impl WriterConfig {
    /// Default tuning with the given spill file.
    pub fn with_spill_path(spill_path: impl Into<PathBuf>) -> Self {
        Self { spill_path: spill_path.into(), ..Self::default() }
    }
}

impl From<PathBuf> for WriterConfig {
    fn from(spill_path: PathBuf) -> Self {
        Self::with_spill_path(spill_path)
    }
}

impl From<&Path> for WriterConfig {
    fn from(spill_path: &Path) -> Self {
        Self::with_spill_path(spill_path)
    }
}

impl From<&str> for WriterConfig {
    fn from(spill_path: &str) -> Self {
        Self::with_spill_path(spill_path)
    }
}

impl From<String> for WriterConfig {
    fn from(spill_path: String) -> Self {
        Self::with_spill_path(spill_path)
    }
}

/// Counters of a [`UsageWriter`] since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records handed to `record()`.
    pub received: u64,
    /// Records written to the database (including replayed spill records).
    pub written: u64,
    /// Records appended to the spill file.
    pub spilled: u64,
    /// Records read back from spill files and written to the database.
    pub replayed: u64,
    /// Database writes that failed (and were retried).
    pub failed_writes: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    written: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
    failed_writes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WriterStats {
        WriterStats {
            received: self.received.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            failed_writes: self.failed_writes.load(Ordering::Relaxed),
        }
    }
}

enum Msg {
    Record(Box<UsageRecord>),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// How senders wake the writer task. It sleeps while its batch fills and is woken once the
/// batch is full (or on flush and shutdown), not once per record: the server's connections run
/// on runtimes of their own, and a wake-up across threads per record cost more CPU than the
/// record's whole database write.
#[derive(Default)]
struct Wake {
    /// Messages sent and not yet taken by the task.
    queued: AtomicUsize,
    /// The task is woken when `queued` reaches this (it sets it before sleeping).
    at: AtomicUsize,
    notify: Notify,
}

impl Wake {
    /// Counts a message about to be sent; wakes the task if that completes its batch.
    fn sent(&self) {
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if queued == self.at.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }
}

struct Shared {
    tx: mpsc::UnboundedSender<Msg>,
    wake: Arc<Wake>,
    task: Mutex<Option<JoinHandle<()>>>,
    spill_path: PathBuf,
    counters: Arc<Counters>,
}

/// Batches usage records into the database in the background. See the [module docs](self).
///
/// Cloning is cheap; all clones feed the same task. Create it inside a tokio runtime.
#[derive(Clone)]
pub struct UsageWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UsageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageWriter")
            .field("spill_path", &self.shared.spill_path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl UsageWriter {
    /// Creates the spill file's directory, replays a spill file left by an earlier run (if the
    /// database is reachable; otherwise that is retried after the first successful write) and
    /// starts the background task. `config` is a [`WriterConfig`] or just the spill path:
    /// `UsageWriter::start(db, "./data/usage-spill.jsonl")`.
    ///
    /// Fails only when the spill directory cannot be created; a database outage is not an
    /// error here.
    pub async fn start(db: Database, config: impl Into<WriterConfig>) -> Result<Self, DbError> {
        let config = config.into();
        let spill_path = config.spill_path.clone();
        if let Some(parent) = spill_path.parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent).await?;
        }
        let counters = Arc::new(Counters::default());
        let spill_pending = match replay_spill(&db, &spill_path, &counters).await {
            Ok(0) => false,
            Ok(n) => {
                tracing::info!(records = n, path = %spill_path.display(), "replayed usage spill file");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %spill_path.display(), "cannot replay usage spill file yet; will retry");
                true
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let wake = Arc::new(Wake { at: AtomicUsize::new(usize::MAX), ..Wake::default() });
        let worker = Worker {
            db,
            rx,
            wake: wake.clone(),
            config,
            counters: counters.clone(),
            backlog: VecDeque::new(),
            oldest: None,
            db_failing: false,
            spill_pending,
        };
        let task = tokio::spawn(worker.run());
        Ok(Self { shared: Arc::new(Shared { tx, wake, task: Mutex::new(Some(task)), spill_path, counters }) })
    }

    /// Waits until every record handed over before this call is in the database, or in the
    /// spill file if the database is failing.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.send_now(Msg::Flush(ack)) {
            // An error means the task is gone; then there is nothing left to wait for.
            let _ = done.await;
        }
    }

    /// Writes everything queued (to the database, or the spill file if it is failing), stops
    /// the background task and waits for it. Records handed over afterwards (through any clone)
    /// are appended to the spill file directly, to be replayed at the next start.
    pub async fn shutdown(&self) {
        let (ack, done) = oneshot::channel();
        if self.send_now(Msg::Shutdown(ack)) {
            let _ = done.await;
        }
        let task = self.shared.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "usage writer task failed");
        }
    }

    /// Sends a control message and wakes the task at once; `false` if the task is gone.
    fn send_now(&self, msg: Msg) -> bool {
        self.shared.wake.sent();
        let sent = self.shared.tx.send(msg).is_ok();
        self.shared.wake.notify.notify_one();
        sent
    }

    /// Counters since start.
    pub fn stats(&self) -> WriterStats {
        self.shared.counters.snapshot()
    }

    /// The spill file path given at start.
    pub fn spill_path(&self) -> &Path {
        &self.shared.spill_path
    }
}

impl UsageSink for UsageWriter {
    fn record(&self, record: UsageRecord) {
        self.shared.counters.received.fetch_add(1, Ordering::Relaxed);
        self.shared.wake.sent();
        if let Err(mpsc::error::SendError(msg)) = self.shared.tx.send(Msg::Record(Box::new(record)))
            && let Msg::Record(record) = msg
        {
            // The task has shut down: do not lose the record, spill it without blocking.
            spill_after_shutdown(self.shared.spill_path.clone(), *record, &self.shared.counters);
        }
    }
}

/// Appends a record that arrived after shutdown to the spill file, off the async threads.
fn spill_after_shutdown(path: PathBuf, record: UsageRecord, counters: &Arc<Counters>) {
    let counters = counters.clone();
    let write = move || {
        let result = encode_lines(std::slice::from_ref(&record))
            .map_err(std::io::Error::other)
            .and_then(|text| append_blocking(&path, text.as_bytes()));
        match result {
            Ok(()) => {
                counters.spilled.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(
                error = %e,
                request_id = %record.request_id,
                "usage record after shutdown could not be spilled; it is lost"
            ),
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(write);
        }
        // No runtime (e.g. called from a plain thread at exit): blocking here is acceptable.
        Err(_) => write(),
    }
}

fn append_blocking(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

fn encode_lines(records: &[UsageRecord]) -> Result<String, serde_json::Error> {
    let mut text = String::new();
    for record in records {
        text.push_str(&serde_json::to_string(record)?);
        text.push('\n');
    }
    Ok(text)
}

/// Appends records as JSON lines (one `write` call, then fsync), creating the file and its
/// directory when missing.
async fn append_records(path: &Path, records: &[UsageRecord]) -> Result<(), DbError> {
    let text = encode_lines(records)?;
    append_bytes(path, text.as_bytes()).await?;
    Ok(())
}

async fn append_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
    file.write_all(bytes).await?;
    file.sync_data().await
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Replays `<path>.replaying` (left by an interrupted replay) and then `<path>` into the
/// database, removing each file once all its records are written. Returns how many records
/// were read.
async fn replay_spill(db: &Database, path: &Path, counters: &Counters) -> Result<u64, DbError> {
    let work = with_suffix(path, ".replaying");
    let mut total = 0;
    if tokio::fs::try_exists(&work).await? {
        total += replay_file(db, &work, path, counters).await?;
        tokio::fs::remove_file(&work).await?;
    }
    if tokio::fs::try_exists(path).await? {
        tokio::fs::rename(path, &work).await?;
        total += replay_file(db, &work, path, counters).await?;
        tokio::fs::remove_file(&work).await?;
    }
    Ok(total)
}

const REPLAY_BATCH: usize = 500;

async fn replay_file(
    db: &Database,
    file: &Path,
    spill_path: &Path,
    counters: &Counters,
) -> Result<u64, DbError> {
    let mut lines = BufReader::new(tokio::fs::File::open(file).await?).lines();
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    let mut corrupt = String::new();
    let mut total = 0u64;
    let mut line_no = 0u64;
    while let Some(line) = lines.next_line().await? {
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<UsageRecord>(&line) {
            Ok(record) => batch.push(record),
            Err(e) => {
                tracing::warn!(line = line_no, error = %e, file = %file.display(), "unparsable usage spill line moved to .corrupt");
                corrupt.push_str(&line);
                corrupt.push('\n');
            }
        }
        if batch.len() >= REPLAY_BATCH {
            db.insert_usage_records(&batch).await?;
            total += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        db.insert_usage_records(&batch).await?;
        total += batch.len() as u64;
    }
    if !corrupt.is_empty() {
        append_bytes(&with_suffix(spill_path, ".corrupt"), corrupt.as_bytes()).await?;
    }
    counters.written.fetch_add(total, Ordering::Relaxed);
    counters.replayed.fetch_add(total, Ordering::Relaxed);
    Ok(total)
}

/// What to do after handling a message.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Exit,
}

struct Worker {
    db: Database,
    rx: mpsc::UnboundedReceiver<Msg>,
    wake: Arc<Wake>,
    config: WriterConfig,
    counters: Arc<Counters>,
    /// Records received and not yet written or spilled, oldest first.
    backlog: VecDeque<UsageRecord>,
    /// When the oldest record of the backlog arrived.
    oldest: Option<Instant>,
    /// The last database write failed.
    db_failing: bool,
    /// The spill file may hold records to replay once the database works.
    spill_pending: bool,
}

impl Worker {
    async fn run(mut self) {
        let mut backoff = self.config.backoff_min;
        let mut inbox = Vec::with_capacity(self.config.batch_size.clamp(1, 1024));
        loop {
            // Wait for work.
            if self.backlog.is_empty() {
                let msg = self.rx.recv().await;
                if self.received(msg).await == Next::Exit {
                    return;
                }
                continue;
            }

            // Let the batch fill until it is full or its oldest record has waited long enough,
            // taking messages in bulk and sleeping in between (see `Wake`).
            let deadline = self.oldest.unwrap_or_else(Instant::now) + self.config.batch_delay;
            let batch_deadline = tokio::time::sleep_until(deadline);
            tokio::pin!(batch_deadline);
            while self.backlog.len() < self.config.batch_size {
                if self.take_ready(&mut inbox, self.config.batch_size - self.backlog.len()).await
                    == Next::Exit
                {
                    return;
                }
                let room = self.config.batch_size.saturating_sub(self.backlog.len());
                if self.backlog.is_empty() || room == 0 || Instant::now() >= deadline {
                    break;
                }
                let woken = self.wake.notify.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                self.wake.at.store(room, Ordering::Release);
                // Whatever arrived between taking and arming is taken at once.
                if self.wake.queued.load(Ordering::Acquire) >= room {
                    continue;
                }
                tokio::select! {
                    () = woken => {}
                    () = &mut batch_deadline => {}
                }
            }
            self.wake.at.store(usize::MAX, Ordering::Release);
            if self.backlog.is_empty() {
                // A flush inside the loop above already wrote everything.
                continue;
            }

            if self.write_batch().await {
                backoff = self.config.backoff_min;
                continue;
            }

            // The database is failing: wait, still accepting records (and spilling overflow).
            let retry_at = Instant::now() + backoff;
            backoff = (backoff * 2).min(self.config.backoff_max);
            loop {
                tokio::select! {
                    msg = self.rx.recv() => {
                        if self.received(msg).await == Next::Exit {
                            return;
                        }
                    }
                    () = tokio::time::sleep_until(retry_at) => break,
                }
            }
        }
    }

    /// Handles what `recv` returned: a message, or `None` once every sender is gone.
    async fn received(&mut self, msg: Option<Msg>) -> Next {
        match msg {
            Some(msg) => {
                self.wake.queued.fetch_sub(1, Ordering::AcqRel);
                self.handle(msg).await
            }
            None => self.finish().await,
        }
    }

    /// Takes up to `room` messages already in the channel, without waiting, and handles them.
    async fn take_ready(&mut self, inbox: &mut Vec<Msg>, room: usize) -> Next {
        let mut disconnected = false;
        while inbox.len() < room {
            match self.rx.try_recv() {
                Ok(msg) => inbox.push(msg),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        self.wake.queued.fetch_sub(inbox.len(), Ordering::AcqRel);
        if self.handle_all(inbox).await == Next::Exit {
            return Next::Exit;
        }
        if disconnected { self.finish().await } else { Next::Continue }
    }

    async fn handle(&mut self, msg: Msg) -> Next {
        match msg {
            Msg::Record(record) => {
                self.push(*record).await;
                Next::Continue
            }
            Msg::Flush(ack) => {
                self.drain().await;
                let _ = ack.send(());
                Next::Continue
            }
            Msg::Shutdown(ack) => self.finish_with(std::iter::once(Msg::Shutdown(ack))).await,
        }
    }

    /// Handles messages received together, in order. What was sent after a shutdown request
    /// is still written before the acknowledgement.
    async fn handle_all(&mut self, inbox: &mut Vec<Msg>) -> Next {
        let mut msgs = inbox.drain(..);
        while let Some(msg) = msgs.next() {
            if let Msg::Shutdown(ack) = msg {
                return self.finish_with(std::iter::once(Msg::Shutdown(ack)).chain(msgs)).await;
            }
            if self.handle(msg).await == Next::Exit {
                return Next::Exit;
            }
        }
        Next::Continue
    }

    /// Takes every message still in the (closed or abandoned) channel, drains, and exits.
    async fn finish(&mut self) -> Next {
        self.finish_with(std::iter::empty()).await
    }

    /// Like [`Self::finish`], with `taken` (already out of the channel) ahead of what is left in it.
    async fn finish_with(&mut self, taken: impl Iterator<Item = Msg>) -> Next {
        self.rx.close();
        let mut acks = Vec::new();
        let mut absorb = |msg| match msg {
            Msg::Record(record) => self.backlog.push_back(*record),
            Msg::Flush(ack) | Msg::Shutdown(ack) => acks.push(ack),
        };
        taken.for_each(&mut absorb);
        while let Ok(msg) = self.rx.try_recv() {
            absorb(msg);
        }
        self.drain().await;
        for ack in acks {
            let _ = ack.send(());
        }
        Next::Exit
    }

    async fn push(&mut self, record: UsageRecord) {
        if self.backlog.is_empty() {
            self.oldest = Some(Instant::now());
        }
        self.backlog.push_back(record);
        // Spill in chunks of a batch, so that an outage costs one file write per batch rather
        // than per record.
        if self.db_failing
            && self.backlog.len() >= self.config.spill_threshold + self.config.batch_size.max(1)
        {
            self.spill_overflow().await;
        }
    }

    /// Writes the oldest batch; `true` on success.
    async fn write_batch(&mut self) -> bool {
        let n = self.backlog.len().min(self.config.batch_size.max(1));
        let result = {
            let batch = &self.backlog.make_contiguous()[..n];
            self.db.insert_usage_records(batch).await
        };
        match result {
            Ok(()) => {
                self.backlog.drain(..n);
                self.oldest = if self.backlog.is_empty() { None } else { Some(Instant::now()) };
                self.counters.written.fetch_add(n as u64, Ordering::Relaxed);
                if self.db_failing {
                    tracing::info!("request log database writable again");
                }
                self.db_failing = false;
                if self.spill_pending {
                    self.try_replay().await;
                }
                true
            }
            Err(e) => {
                self.counters.failed_writes.fetch_add(1, Ordering::Relaxed);
                if !self.db_failing {
                    tracing::warn!(error = %e, queued = self.backlog.len(), "writing usage records failed; retrying with backoff");
                } else {
                    tracing::debug!(error = %e, queued = self.backlog.len(), "writing usage records failed again");
                }
                self.db_failing = true;
                if self.backlog.len() > self.config.spill_threshold {
                    self.spill_overflow().await;
                }
                false
            }
        }
    }

    async fn try_replay(&mut self) {
        match replay_spill(&self.db, &self.config.spill_path, &self.counters).await {
            Ok(n) => {
                self.spill_pending = false;
                if n > 0 {
                    tracing::info!(records = n, "replayed usage spill file");
                }
            }
            Err(e) => tracing::warn!(error = %e, "replaying usage spill file failed; will retry"),
        }
    }

    /// Moves the records beyond the threshold (the newest ones) to the spill file.
    async fn spill_overflow(&mut self) {
        let keep = self.config.spill_threshold;
        if self.backlog.len() <= keep {
            return;
        }
        let overflow: Vec<UsageRecord> = self.backlog.split_off(keep).into();
        self.spill(overflow).await;
    }

    /// Appends records to the spill file; if even that fails, they go back to the backlog
    /// (memory is the last place left).
    async fn spill(&mut self, records: Vec<UsageRecord>) {
        match append_records(&self.config.spill_path, &records).await {
            Ok(()) => {
                self.counters.spilled.fetch_add(records.len() as u64, Ordering::Relaxed);
                self.spill_pending = true;
                tracing::warn!(records = records.len(), path = %self.config.spill_path.display(), "database failing: usage records spilled to file");
            }
            Err(e) => {
                tracing::error!(error = %e, records = records.len(), path = %self.config.spill_path.display(), "cannot write usage spill file; keeping records in memory");
                self.backlog.extend(records);
            }
        }
    }

    /// Writes the whole backlog now; if the database fails, spills what is left.
    async fn drain(&mut self) {
        while !self.backlog.is_empty() {
            if !self.write_batch().await {
                let rest: Vec<UsageRecord> = self.backlog.drain(..).collect();
                self.oldest = None;
                self.spill(rest).await;
                break;
            }
        }
        if !self.db_failing && self.spill_pending {
            self.try_replay().await;
        }
    }
}
