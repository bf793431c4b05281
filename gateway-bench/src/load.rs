//! The load generator: HTTP/1.1 keep-alive connections over hyper, an open-loop fixed-rate
//! driver and a closed-loop saturation driver.
//!
//! Open loop: a dedicated OS thread ticks at the scheduled send times (std's `sleep` has
//! microsecond resolution; tokio's timer rounds to whole milliseconds, which at 1,000 req/s
//! would bunch requests) and hands each tick to the runtime, which sends the request on an
//! idle connection or opens a new one. Latency is measured from the *scheduled* time, so a
//! stall anywhere (server, connection shortage, the generator itself) shows up in the figures
//! instead of silently delaying the next requests (coordinated omission).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::schedule::RatePlan;
use crate::stats::{LatencySummary, new_histogram, record};

/// The API key the benchmark's gateway config defines.
pub const BENCH_API_KEY: &str = "sk-bench-000001";

/// The same key as an `Authorization` header, for OpenAI-style requests.
const BENCH_BEARER: &str = "Bearer sk-bench-000001";

/// The model named in requests (priced in the benchmark's gateway config).
pub const BENCH_MODEL: &str = "claude-sonnet-4-5";

/// A request slower than this counts as failed (and frees its connection slot).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Failure details kept per phase, for the report.
const MAX_FAILURE_SAMPLES: usize = 5;

/// Bytes of a non-200 body kept as a sample.
const MAX_SNIPPET: usize = 300;

/// Delay between the ticker's start and the first scheduled request, so the first tick is
/// not already late.
const START_LEAD: Duration = Duration::from_millis(20);

type Sender = SendRequest<Full<Bytes>>;

/// The JSON body of the benchmark request, padded with prose to exactly `size` bytes (or the
/// bare minimum when `size` is smaller than the envelope).
pub fn request_body(stream: bool, size: usize) -> Bytes {
    let envelope = |pad: &str| {
        let stream_field = if stream { r#""stream":true,"# } else { "" };
        format!(
            r#"{{"model":"{BENCH_MODEL}","max_tokens":64,{stream_field}"messages":[{{"role":"user","content":"{pad}"}}]}}"#
        )
    };
    let bare = envelope("").len();
    // Plain ASCII words: nothing to escape, so the byte count is exact.
    const WORDS: &str = "the quick brown fox jumps over the lazy dog and keeps benchmarking the gateway ";
    let pad: String = WORDS.chars().cycle().take(size.saturating_sub(bare)).collect();
    Bytes::from(envelope(&pad))
}

/// Finds a marker in a body that arrives in arbitrary frames (the marker may straddle two).
#[derive(Debug)]
pub struct MarkerScanner {
    marker: &'static [u8],
    carry: Vec<u8>,
    found: bool,
}

impl MarkerScanner {
    /// Looks for `marker`.
    pub fn new(marker: &'static str) -> Self {
        Self { marker: marker.as_bytes(), carry: Vec::new(), found: marker.is_empty() }
    }

    /// Scans the next piece of the body.
    pub fn feed(&mut self, data: &[u8]) {
        if self.found {
            return;
        }
        // Only the last marker.len() - 1 bytes of what came before can start a match.
        self.carry.extend_from_slice(data);
        if self.carry.windows(self.marker.len()).any(|w| w == self.marker) {
            self.found = true;
            self.carry = Vec::new();
            return;
        }
        let keep = self.marker.len() - 1;
        if self.carry.len() > keep {
            self.carry.drain(..self.carry.len() - keep);
        }
    }

    /// Whether the marker was seen.
    pub fn found(&self) -> bool {
        self.found
    }
}

/// One kind of request, pre-built so the hot path only clones cheap handles.
#[derive(Debug)]
pub struct RequestTemplate {
    body: Bytes,
    addr: SocketAddr,
    host: HeaderValue,
    marker: &'static str,
    chat: bool,
}

impl RequestTemplate {
    /// `POST /v1/messages` to `addr`, streaming or not, with a body of `body_bytes`.
    pub fn new(addr: SocketAddr, stream: bool, body_bytes: usize) -> anyhow::Result<Self> {
        Ok(Self {
            body: request_body(stream, body_bytes),
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            // A response counts only when complete: the stream's last event, or the usage
            // block at the end of a JSON message.
            marker: if stream { "message_stop" } else { "\"output_tokens\"" },
            chat: false,
        })
    }

    /// The same request in OpenAI chat form (`POST /v1/chat/completions`), which a gateway
    /// whose provider is Anthropic serves by translation.
    pub fn chat(addr: SocketAddr, stream: bool, body_bytes: usize) -> anyhow::Result<Self> {
        Ok(Self {
            // The body is the same JSON: model, max_tokens, stream, messages with a user turn.
            body: request_body(stream, body_bytes),
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            marker: if stream { "[DONE]" } else { "\"completion_tokens\"" },
            chat: true,
        })
    }

    /// Where the request goes: phases connect here, so a template built for the gateway
    /// always measures the gateway, whatever the phase is labelled.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Size of the request body.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    fn build(&self) -> Result<Request<Full<Bytes>>, http::Error> {
        let builder = Request::builder()
            .method(Method::POST)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let builder = if self.chat {
            builder
                .uri("/v1/chat/completions")
                .header("authorization", HeaderValue::from_static(BENCH_BEARER))
        } else {
            builder
                .uri("/v1/messages")
                .header("x-api-key", HeaderValue::from_static(BENCH_API_KEY))
                .header("anthropic-version", HeaderValue::from_static("2023-06-01"))
        };
        builder.body(Full::new(self.body.clone()))
    }
}

/// Why a request did not count as a success.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Transport(String),
    Timeout,
    Status(u16, String),
    Incomplete(usize),
}

impl Failure {
    fn key(&self) -> String {
        match self {
            Self::Connect(_) => "connect error".to_owned(),
            Self::Transport(_) => "transport error".to_owned(),
            Self::Timeout => format!("timeout ({}s)", REQUEST_TIMEOUT.as_secs()),
            Self::Status(code, _) => format!("HTTP {code}"),
            Self::Incomplete(_) => "incomplete body".to_owned(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Connect(e) | Self::Transport(e) => format!("{}: {e}", self.key()),
            Self::Timeout => self.key(),
            Self::Status(_, body) => format!("{}: {body}", self.key()),
            Self::Incomplete(bytes) => format!("{} after {bytes} bytes", self.key()),
        }
    }
}

/// When the phases of one exchange happened.
#[derive(Debug, Clone, Copy)]
struct Timing {
    first_byte: Instant,
    done: Instant,
}

async fn connect(addr: SocketAddr) -> Result<Sender, Failure> {
    let stream = TcpStream::connect(addr).await.map_err(|e| Failure::Connect(e.to_string()))?;
    // Small requests and responses: Nagle would add up to 40 ms (delayed ACK) per exchange.
    stream.set_nodelay(true).map_err(|e| Failure::Connect(e.to_string()))?;
    let (sender, connection) =
        http1::handshake(TokioIo::new(stream)).await.map_err(|e| Failure::Connect(e.to_string()))?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; errors surface on the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole response.
async fn exchange(sender: &mut Sender, template: &RequestTemplate) -> Result<Timing, Failure> {
    sender.ready().await.map_err(|e| Failure::Transport(e.to_string()))?;
    let request = template.build().map_err(|e| Failure::Transport(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| Failure::Transport(e.to_string()))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut scanner = MarkerScanner::new(template.marker);
    let mut first_byte = None;
    let mut bytes = 0usize;
    let mut snippet = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Transport(e.to_string()))?;
        if let Some(data) = frame.data_ref()
            && !data.is_empty()
        {
            first_byte.get_or_insert_with(Instant::now);
            bytes += data.len();
            scanner.feed(data);
            if !status.is_success() && snippet.len() < MAX_SNIPPET {
                snippet.extend_from_slice(&data[..data.len().min(MAX_SNIPPET - snippet.len())]);
            }
        }
    }
    let done = Instant::now();
    if status != http::StatusCode::OK {
        return Err(Failure::Status(status.as_u16(), String::from_utf8_lossy(&snippet).into_owned()));
    }
    if !scanner.found() {
        return Err(Failure::Incomplete(bytes));
    }
    Ok(Timing { first_byte: first_byte.unwrap_or(done), done })
}

/// Keep-alive connections to one address, with a cap on how many requests are in flight.
#[derive(Debug)]
struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Sender>>,
    in_flight: Arc<Semaphore>,
    opened: AtomicU64,
}

impl Pool {
    fn new(addr: SocketAddr, max_connections: usize) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
            in_flight: Arc::new(Semaphore::new(max_connections.max(1))),
            opened: AtomicU64::new(0),
        }
    }

    /// Opens `n` connections up front, so the measured part does not pay for handshakes.
    async fn prefill(&self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let sender = connect(self.addr).await.map_err(|f| anyhow::anyhow!("{}", f.detail()))?;
            self.opened.fetch_add(1, Ordering::Relaxed);
            self.idle.lock().push(sender);
        }
        Ok(())
    }

    /// Waits for an in-flight slot, then takes an idle connection or opens one. The wait is
    /// part of the measured latency (it starts at the scheduled time).
    async fn checkout(&self) -> Result<(OwnedSemaphorePermit, Sender), Failure> {
        let permit =
            self.in_flight.clone().acquire_owned().await.map_err(|e| Failure::Transport(e.to_string()))?;
        loop {
            // Most recently used first: keeps the working set of connections small and warm.
            let popped = self.idle.lock().pop();
            match popped {
                Some(sender) if !sender.is_closed() => return Ok((permit, sender)),
                Some(_) => {}
                None => break,
            }
        }
        let sender = connect(self.addr).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok((permit, sender))
    }

    fn checkin(&self, sender: Sender) {
        if !sender.is_closed() {
            self.idle.lock().push(sender);
        }
    }
}

/// Results of one phase (one target, one scenario, one round).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    /// `direct` or `gateway`.
    pub target: String,
    /// Offered rate for open-loop phases.
    pub offered_rate: Option<u64>,
    /// Closed-loop connections.
    pub connections: Option<usize>,
    /// Requests in the measured part (sent, or completed for closed loop).
    pub measured_requests: u64,
    /// Every request sent in the phase, warm-up included (to compare with the gateway's
    /// request log).
    pub sent_total: u64,
    /// Measured requests that succeeded (200 and a complete body).
    pub ok: u64,
    /// Measured requests that failed.
    pub failed: u64,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// The first few failures in detail.
    pub failure_samples: Vec<String>,
    /// Length of the measured window (seconds).
    pub seconds: f64,
    /// Successful requests per second over the window.
    pub rps: f64,
    /// Time to the last byte of the response (from the scheduled send time in open loop).
    pub latency: LatencySummary,
    /// Time to the first body byte.
    pub ttfb: LatencySummary,
    /// How late the generator dispatched requests after their scheduled time (open loop).
    pub send_lag: Option<LatencySummary>,
    /// TCP connections opened.
    pub connections_opened: u64,
    /// CPU time used during the phase, filled in by the caller.
    pub cpu: CpuUse,
    /// gateway-server's RSS right after the phase (bytes), filled in by the caller: a
    /// steady climb over phases would be a leak.
    pub gateway_rss_after: u64,
    /// cargo/rustc processes running when the phase ended, filled in by the caller: their
    /// presence marks the phase's figures as disturbed.
    pub competing_builds: usize,
}

/// CPU time spent by each process during a phase (milliseconds, 10 ms resolution).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    /// gateway-server (0 in direct phases, where it only idles).
    pub gateway_ms: u64,
    /// mock-upstream.
    pub mock_ms: u64,
    /// The benchmark itself (load generator, ticker).
    pub client_ms: u64,
    /// The Redis server with `--redis-url`, when it runs on this machine (0 otherwise). It
    /// serves all its clients: another program using it during the phase counts here too.
    pub redis_ms: u64,
    /// Every other process on the machine (builds, test runs): busy CPU time of the whole
    /// machine minus the four above.
    pub other_ms: u64,
    /// `other_ms` as a share of the machine's capacity over the phase (percent of all CPUs):
    /// a few percent is background noise, much more means the figures are disturbed.
    pub other_load_pct: f64,
}

/// Accumulates one phase's measurements; shared by the request tasks.
struct Recorder {
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
    send_lag: Histogram<u64>,
    ok: u64,
    failures: BTreeMap<String, u64>,
    samples: Vec<String>,
    last_done: Option<Instant>,
}

impl Recorder {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: new_histogram()?,
            ttfb: new_histogram()?,
            send_lag: new_histogram()?,
            ok: 0,
            failures: BTreeMap::new(),
            samples: Vec::new(),
            last_done: None,
        })
    }

    fn outcome(&mut self, start: Instant, outcome: Result<Timing, Failure>) {
        match outcome {
            Ok(timing) => {
                self.ok += 1;
                record(&mut self.latency, timing.done.saturating_duration_since(start));
                record(&mut self.ttfb, timing.first_byte.saturating_duration_since(start));
                self.last_done = Some(self.last_done.map_or(timing.done, |d| d.max(timing.done)));
            }
            Err(failure) => {
                *self.failures.entry(failure.key()).or_default() += 1;
                if self.samples.len() < MAX_FAILURE_SAMPLES {
                    self.samples.push(failure.detail());
                }
            }
        }
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn into_stats(self, target: &str, measured_requests: u64, seconds: f64, opened: u64) -> PhaseStats {
        let failed = self.failed();
        PhaseStats {
            target: target.to_owned(),
            offered_rate: None,
            connections: None,
            measured_requests,
            sent_total: 0,
            ok: self.ok,
            failed,
            failures: self.failures,
            failure_samples: self.samples,
            seconds,
            rps: rate_per_sec(self.ok, seconds),
            latency: LatencySummary::from_histogram(&self.latency),
            ttfb: LatencySummary::from_histogram(&self.ttfb),
            send_lag: (!self.send_lag.is_empty()).then(|| LatencySummary::from_histogram(&self.send_lag)),
            connections_opened: opened,
            cpu: CpuUse::default(),
            gateway_rss_after: 0,
            competing_builds: 0,
        }
    }
}

#[allow(clippy::cast_precision_loss)] // Request counts are far below 2^52.
fn rate_per_sec(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

/// Settings of an open-loop phase.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Rate and durations.
    pub plan: RatePlan,
    /// Cap on concurrent requests (and so connections).
    pub max_connections: usize,
    /// Connections opened before the first request.
    pub prefill: usize,
}

/// Sends requests at a fixed rate regardless of how fast responses come back.
pub async fn open_loop(
    target: &str,
    addr: SocketAddr,
    template: Arc<RequestTemplate>,
    settings: OpenLoop,
) -> anyhow::Result<PhaseStats> {
    let plan = settings.plan;
    let pool = Arc::new(Pool::new(addr, settings.max_connections));
    pool.prefill(settings.prefill).await?;
    let recorder = Arc::new(Mutex::new(Recorder::new()?));

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let start = Instant::now() + START_LEAD;
    let ticker = std::thread::Builder::new().name("ticker".to_owned()).spawn(move || {
        for index in 0..plan.total_count() {
            let due = start + plan.offset(index);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // Behind schedule: send at once, never skip. Stop if the receiver is gone.
            if tx.send(index).is_err() {
                break;
            }
        }
    })?;

    let mut tasks = JoinSet::new();
    while let Some(index) = rx.recv().await {
        let scheduled = start + plan.offset(index);
        let measured = plan.is_measured(index);
        if measured {
            record(&mut recorder.lock().send_lag, Instant::now().saturating_duration_since(scheduled));
        }
        let (pool, template, recorder) = (pool.clone(), template.clone(), recorder.clone());
        tasks.spawn(async move {
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let (permit, mut sender) = pool.checkout().await?;
                let result = exchange(&mut sender, &template).await;
                if result.is_ok() {
                    pool.checkin(sender);
                }
                drop(permit);
                result
            })
            .await
            .unwrap_or(Err(Failure::Timeout));
            if measured {
                recorder.lock().outcome(scheduled, outcome);
            }
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    if ticker.join().is_err() {
        anyhow::bail!("the ticker thread panicked");
    }

    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| anyhow::anyhow!("request tasks still hold the recorder"))?
        .into_inner();
    // The window runs from the first measured send to the last measured completion, so a
    // gateway that falls behind the offered rate shows a lower RPS.
    let window_start = start + plan.offset(plan.warmup_count());
    let window_end = (start + plan.warmup + plan.measure).max(recorder.last_done.unwrap_or(window_start));
    let seconds = window_end.saturating_duration_since(window_start).as_secs_f64();
    let mut stats =
        recorder.into_stats(target, plan.measured_count(), seconds, pool.opened.load(Ordering::Relaxed));
    stats.offered_rate = Some(plan.rate);
    stats.sent_total = plan.total_count();
    Ok(stats)
}

/// Settings of a closed-loop phase.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    /// Connections, each with one request in flight at all times.
    pub connections: usize,
    /// Time before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub measure: Duration,
}

/// Keeps `connections` requests in flight back to back: the highest throughput the target
/// sustains (with this client).
pub async fn closed_loop(
    target: &str,
    addr: SocketAddr,
    template: Arc<RequestTemplate>,
    settings: ClosedLoop,
) -> anyhow::Result<PhaseStats> {
    let recorder = Arc::new(Mutex::new(Recorder::new()?));
    let opened = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    // Connect everything before the clock starts.
    let mut senders = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections.max(1) {
        senders.push(connect(addr).await.map_err(|f| anyhow::anyhow!("{}", f.detail()))?);
        opened.fetch_add(1, Ordering::Relaxed);
    }
    let window_start = Instant::now() + settings.warmup;
    let window_end = window_start + settings.measure;

    let mut tasks = JoinSet::new();
    for sender in senders {
        let (template, recorder, opened, sent_total) =
            (template.clone(), recorder.clone(), opened.clone(), sent.clone());
        tasks.spawn(async move {
            let mut sender = Some(sender);
            loop {
                let sent = Instant::now();
                if sent >= window_end {
                    break;
                }
                let outcome = match sender.as_mut() {
                    Some(s) => {
                        sent_total.fetch_add(1, Ordering::Relaxed);
                        tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, &template))
                            .await
                            .unwrap_or(Err(Failure::Timeout))
                    }
                    None => match connect(addr).await {
                        Ok(s) => {
                            opened.fetch_add(1, Ordering::Relaxed);
                            sender = Some(s);
                            continue;
                        }
                        Err(failure) => {
                            // Do not spin on a refused connection.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            Err(failure)
                        }
                    },
                };
                if outcome.is_err() {
                    // The connection state is unknown after a failure: start afresh.
                    sender = None;
                }
                let done = Instant::now();
                // Count what completes inside the window (a request straddling its start
                // counts: its cost lands in the window).
                if done >= window_start && done < window_end {
                    recorder.lock().outcome(sent, outcome);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}

    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| anyhow::anyhow!("request tasks still hold the recorder"))?
        .into_inner();
    let completed = recorder.ok + recorder.failed();
    let mut stats = recorder.into_stats(
        target,
        completed,
        settings.measure.as_secs_f64(),
        opened.load(Ordering::Relaxed),
    );
    stats.connections = Some(settings.connections);
    stats.sent_total = sent.load(Ordering::Relaxed);
    Ok(stats)
}

/// Sends one request and checks it succeeds: catches a misconfigured gateway before a run
/// full of errors.
pub async fn probe(addr: SocketAddr, template: &RequestTemplate) -> anyhow::Result<()> {
    let mut sender = connect(addr).await.map_err(|f| anyhow::anyhow!("{}", f.detail()))?;
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, template))
        .await
        .unwrap_or(Err(Failure::Timeout))
        .map(|_| ())
        .map_err(|f| anyhow::anyhow!("{}", f.detail()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_is_exactly_the_requested_size_and_valid_json() {
        for stream in [false, true] {
            let body = request_body(stream, 1024);
            assert_eq!(body.len(), 1024);
            let json: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(json["model"], BENCH_MODEL);
            assert_eq!(json["stream"].as_bool(), stream.then_some(true));
            assert_eq!(json["messages"][0]["role"], "user");
        }
    }

    #[test]
    fn request_body_smaller_than_the_envelope_is_the_envelope() {
        let body = request_body(false, 10);
        assert!(body.len() > 10);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(json["messages"][0]["content"], "");
    }

    #[test]
    fn templates_carry_their_destination() {
        let gateway = SocketAddr::from(([127, 0, 0, 1], 4000));
        let plain = RequestTemplate::new(gateway, false, 1024).expect("template");
        let chat = RequestTemplate::chat(gateway, false, 1024).expect("template");
        assert_eq!((plain.addr(), chat.addr()), (gateway, gateway));
        let request = chat.build().expect("request");
        assert_eq!(request.uri(), "/v1/chat/completions");
        assert_eq!(request.headers()[HOST], "127.0.0.1:4000");
    }

    #[test]
    fn marker_is_found_across_frame_boundaries() {
        let mut scanner = MarkerScanner::new("message_stop");
        for piece in ["event: content_block_stop\n\nevent: mess", "age_st", "op\ndata: {}\n\n"] {
            scanner.feed(piece.as_bytes());
        }
        assert!(scanner.found());
    }

    #[test]
    fn marker_absent_is_not_found() {
        let mut scanner = MarkerScanner::new("message_stop");
        scanner.feed(b"event: message_start\n\n");
        scanner.feed(b"event: message_st");
        assert!(!scanner.found());
        // The carry stays bounded by the marker length.
        assert!(scanner.carry.len() < "message_stop".len());
    }

    #[test]
    fn failure_keys_group_by_kind() {
        assert_eq!(Failure::Status(502, "x".to_owned()).key(), "HTTP 502");
        assert_eq!(Failure::Incomplete(7).detail(), "incomplete body after 7 bytes");
        assert_eq!(Failure::Connect("refused".to_owned()).detail(), "connect error: refused");
    }

    #[test]
    fn rate_of_an_empty_window_is_zero() {
        assert_eq!(rate_per_sec(10, 0.0), 0.0);
        assert_eq!(rate_per_sec(1_000, 0.5), 2_000.0);
    }
}
