//! [`StateStore`] on Redis, so that several gateway replicas share session bindings, provider
//! session counts, circuit breakers, cooldowns and the state of rate and spend limits.
//!
//! # Time
//! Every time-dependent decision uses the Redis server's clock (`TIME` inside the Lua scripts,
//! `TIME` in the read pipelines, relative expiries), never the replica's: replicas with skewed
//! clocks still agree on when a session left its window or a circuit went half-open. (Tests may
//! give the limit scripts a clock of their own: [`RedisStateOptions::clock`].)
//!
//! # Key layout
//! With the default prefix `gw:` (any prefix without `{`):
//!
//! | key | type | content | TTL |
//! | --- | --- | --- | --- |
//! | `gw:{s:<session>}:bind` | string | bound provider id | session TTL, refreshed on rebind and by the routing view's `GETEX` |
//! | `gw:{p:<id>}:sessions` | sorted set | session → last seen (server ms) | session TTL after the last admission |
//! | `gw:{p:<id>}:breaker` | hash | `failures`, `half_open_successes`, `opened_at_ms`, `last_failure` | 24 h + open period after the last change |
//! | `gw:{p:<id>}:cooldown` | string | cooldown end (server ms) | until the cooldown ends |
//!
//! Limits ([`crate::limit::state`]), per subject `<tag>` (`k:<id>`, `u:<id>`, `p:<id>`):
//!
//! | key | type | content | TTL |
//! | --- | --- | --- | --- |
//! | `gw:{lim}:<tag>:rpm` | sorted set | `<ms>:<request id>` → admitted at | 60 s after the last admission |
//! | `gw:{lim}:<tag>:ses` | sorted set | session → last seen | session TTL after the last admission |
//! | `gw:{lim}:<tag>:loaded` | string | the shape the spend windows were rebuilt for | 24 h, refreshed by added spend |
//! | `gw:{lim}:<tag>:ev` | hash | request id → cost, billed requests of the last 24 h | with `r5`, `r24`, `sum`: 48 h after the last event added |
//! | `gw:{lim}:<tag>:r5`, `:r24` | sorted set | request id → arrival, the last 5 h / 24 h | as `ev` |
//! | `gw:{lim}:<tag>:sum` | hash | `r5`, `r24`: running sums of those sets | as `ev` |
//! | `gw:{lim}:<tag>:f5` | hash | `opened`, `sum` of the fixed 5 h window | 24 h after the window closes |
//! | `gw:{lim}:<tag>:d`, `:w`, `:m` | hash | window start → spend (fixed day, week, month) | 24 h after the newest window's reset |
//! | `gw:{lim}:<tag>:t` | hash | total since → spend | 48 h, refreshed with the marker |
//!
//! Each counter is named by its window's start (a hash field of its kind's key), so a new window
//! starts from zero by itself, and the 10 spend keys of a subject have fixed names that
//! [`StateStore::invalidate_spend`] and [`StateStore::warm_spend`] can replace exactly as the
//! memory store replaces its book. A rolling event is added and removed once (sorted sets with
//! running sums), and a request id already in the last 24 h is not counted again. The marker
//! never outlives what it vouches for: the windows expire only once nothing in them counts any
//! more, and the total (which never resets) lives a day longer than the marker.
//!
//! The hash tag (`{…}`) names the logical entity, so every key a script or a multi-key command
//! touches (a provider's breaker and cooldown in [`StateStore::reset_breaker`]) lives in one
//! Redis Cluster slot. Limit keys all share `{lim}`: one admission checks the key, the user and
//! the candidate providers in one script, which a cluster allows only within one slot (so on a
//! cluster, one node carries all limit traffic). Reads across entities
//! ([`StateStore::routing_view`]) are one pipeline instead of one script, so they need no common
//! slot. Every key expires: Redis never fills up with the state of sessions and providers long
//! gone.
//!
//! # Writes
//! Each write is one Lua script run with `EVALSHA` (reloaded by the client on `NOSCRIPT`) or one
//! single-key command, so it is atomic across replicas. The limit scripts mirror `LimitBook`
//! (`src/limit/memory.rs`) step by step; `tests/limit_conformance.rs` runs the same cases against
//! both stores. An admission rides in one pipeline with the routing view's reads
//! ([`StateStore::admit_and_view`]): one round trip per request. The breaker script mirrors
//! [`BreakerRecord::on_success`] and [`BreakerRecord::on_failure`] line by line; the conformance
//! suite (`tests/state_conformance.rs`) drives both with the same outcomes and compares them.
//!
//! # Failures
//! Every call is bounded by [`RedisStateOptions::timeout`]; a timeout, a refused connection or a
//! server error is a [`StateError`], on which routing fails open. The connection is a
//! [`ConnectionManager`] that reconnects by itself (only the call in flight when a connection drops
//! fails). After a refused connection or a timeout, calls fail at once for [`UNAVAILABLE_BACKOFF`]
//! instead of each waiting for the timeout again, so an outage adds no latency to most requests.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Script, ServerErrorKind, Value};

use super::state::{AttemptResult, Clock, EpochMs, ProviderHealth, RoutingView, StateError, StateStore};
use crate::config::Id;
use crate::limit::spec::{SpendFrame, SpendWindow, Subject};
use crate::limit::state::{
    Admission, AdmissionCheck, LimitHit, LimitKind, SpendRecord, SpendSnapshot, SubjectCheck,
};
use crate::limit::window::{DAY_MS, FIVE_HOURS_MS, RPM_WINDOW_MS};
use crate::route::breaker::{BreakerConfig, BreakerRecord, BreakerStatus};

/// How long calls fail at once after Redis was found unreachable or too slow. Short, so that a
/// recovered Redis is used again within a second; long enough that an outage costs one timeout
/// per second per replica rather than one per request.
pub const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(1);

/// How long a breaker record outlives its last change, beyond its open period. A closed record
/// that only remembers a reason, or a half-open one nobody probed for a day, then disappears.
const BREAKER_IDLE_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Durations handed to Lua are clamped to 2^52 ms (142,000 years): Lua numbers are doubles, exact
/// only up to 2^53, and a larger open period behaves the same as this one.
const MAX_LUA_MS: u64 = 1 << 52;

/// How long a subject's "loaded" marker vouches for its spend windows without new spend: then
/// the next admission rebuilds them from the request log. Refreshed by every added spend.
const MARKER_TTL_MS: i64 = DAY_MS;

/// How late a spend record may arrive (a long stream, a retried write) and still find the fixed
/// windows it belongs to, as the memory book would: keys outlive their window's end by this much.
/// Also covers clock skew between replicas.
const LATE_MS: i64 = DAY_MS;

/// Settings of a [`RedisStateStore`].
#[derive(Debug, Clone)]
pub struct RedisStateOptions {
    /// Prepended to every key, so that several gateways (or tests) share one Redis. Must not
    /// contain `{`, which would move the hash tag. Default `gw:`.
    pub prefix: String,
    /// Upper bound of every call, connecting included. Default 200 ms.
    pub timeout: Duration,
    /// **For tests.** When set, the limit scripts (admission, spend, rebuild) take "now" from
    /// this clock (sent as an argument) instead of the server's `TIME`, so that tests can step
    /// over a minute or a day. Routing state keeps the server clock either way. Default `None`;
    /// replicas in production must share the server's clock, so leave it unset there.
    pub clock: Option<Arc<dyn Clock>>,
}

impl Default for RedisStateOptions {
    fn default() -> Self {
        Self { prefix: "gw:".to_owned(), timeout: Duration::from_millis(200), clock: None }
    }
}

impl PartialEq for RedisStateOptions {
    fn eq(&self, other: &Self) -> bool {
        let same_clock = match (&self.clock, &other.clock) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.prefix == other.prefix && self.timeout == other.timeout && same_clock
    }
}

impl Eq for RedisStateOptions {}

/// Routing state shared by gateway replicas through Redis. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct RedisStateStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// The test clock of the limit scripts ([`RedisStateOptions::clock`]).
    clock: Option<Arc<dyn Clock>>,
    scripts: Arc<Scripts>,
    /// Until when calls fail at once (see [`UNAVAILABLE_BACKOFF`]).
    unavailable_until: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStateStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The Lua scripts, hashed once.
struct Scripts {
    acquire: Script,
    record: Script,
    cooldown: Script,
    admit: Script,
    add_spend: Script,
    warm: Script,
}

/// Shared by every script: server time in ms, and integers formatted without an exponent (Lua
/// numbers are doubles; `tostring` could print `1.7e+12`).
const LUA_PRELUDE: &str = r#"
-- Scripts that read TIME must be replicated as their effects (the only mode from Redis 7 on).
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n) return string.format('%d', n) end
"#;

/// KEYS[1] provider sessions (sorted set: session → last seen); ARGV session, limit, ttl_ms.
/// Returns 1 when admitted. Same rule as `MemoryStateStore`: entries seen at or before
/// `now - ttl` are gone; limit 0 admits everyone; a session already counted is admitted.
const ACQUIRE_LUA: &str = r#"
local now = now_ms()
local session, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - ttl))
local admitted = limit == 0
  or redis.call('ZSCORE', KEYS[1], session)
  or redis.call('ZCARD', KEYS[1]) < limit
if not admitted then return 0 end
redis.call('ZADD', KEYS[1], int(now), session)
-- Every member leaves the window within ttl of the newest admission: so may the whole set.
redis.call('PEXPIRE', KEYS[1], int(ttl))
return 1
"#;

/// KEYS[1] breaker hash; ARGV 'success'|'failure', failure_threshold, open_duration_ms,
/// half_open_success_threshold, reason (already cut to 300 chars), ttl_ms. Returns 1 when the
/// record changed. A line-by-line copy of `BreakerRecord::{state, on_success, on_failure}`.
const RECORD_LUA: &str = r#"
local key = KEYS[1]
local success = ARGV[1] == 'success'
local threshold, open_ms, half_open_threshold = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local reason, ttl_ms = ARGV[5], ARGV[6]

-- on_failure returns before touching anything (even the reason) when the breaker is disabled.
if not success and threshold == 0 then return 0 end

local now = now_ms()
local stored = redis.call('HMGET', key, 'failures', 'half_open_successes', 'opened_at_ms', 'last_failure')
local function num(v) if v then return tonumber(v) end return nil end
local failures = num(stored[1]) or 0
local half_open = num(stored[2]) or 0
local opened = num(stored[3])
local last = stored[4] or nil
local f0, h0, o0, l0 = failures, half_open, opened, last

-- BreakerRecord::state: derived from opened_at and the config, never stored.
local state
if threshold == 0 or opened == nil then
  state = 'closed'
elseif now < opened + open_ms then
  state = 'open'
else
  state = 'half_open'
end

if success then
  if state == 'closed' then
    failures = 0
  elseif state == 'half_open' then
    half_open = half_open + 1
    if half_open >= half_open_threshold then
      failures, half_open, opened, last = 0, 0, nil, nil
    end
  end
  -- Open: a success that started before the circuit opened changes nothing.
else
  last = reason
  if state == 'closed' then
    failures = failures + 1
    if failures >= threshold then
      opened = now
      half_open = 0
    end
  elseif state == 'half_open' then
    -- The probe failed: open again for a full period.
    failures = failures + 1
    opened = now
    half_open = 0
  else
    failures = failures + 1
  end
end

-- Unchanged: no write, and the TTL keeps counting from the last change.
if failures == f0 and half_open == h0 and opened == o0 and last == l0 then return 0 end
-- The default record is no record (as the memory store drops it).
if failures == 0 and half_open == 0 and opened == nil and last == nil then
  redis.call('DEL', key)
  return 1
end
redis.call('HSET', key, 'failures', int(failures), 'half_open_successes', int(half_open))
if opened then redis.call('HSET', key, 'opened_at_ms', int(opened)) else redis.call('HDEL', key, 'opened_at_ms') end
if last then redis.call('HSET', key, 'last_failure', last) else redis.call('HDEL', key, 'last_failure') end
redis.call('PEXPIRE', key, ttl_ms)
return 1
"#;

/// KEYS[1] cooldown; ARGV until_ms. Overwrites (as the memory store does); a cooldown already
/// over deletes the key. The key expires when the cooldown ends.
const COOLDOWN_LUA: &str = r#"
local now = now_ms()
local until_ms = tonumber(ARGV[1])
if until_ms <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
-- Capped so that a far-away end (saturated to i64::MAX) is still a valid expire time.
redis.call('SET', KEYS[1], ARGV[1], 'PX', int(math.min(until_ms - now, 4503599627370496)))
return 1
"#;

/// Shared by the limit scripts (after [`LUA_PRELUDE`] and the constants [`limit_script`] puts
/// first). Keys of one subject come as a table made by `subject`: `loaded` (the marker: the shape
/// the windows were rebuilt for), `ev` (hash: request id → amount, the last 24 h), `r5`, `r24`
/// (sorted sets: request id → arrival), `sum` (hash: running sums `r5`, `r24`), `f5` (hash: the
/// fixed 5 h window's `opened`, `sum`), `d`, `w`, `m`, `t` (hashes: window start → spend).
///
/// Amounts are added and stored exactly by Redis (`HINCRBY`, 64-bit); comparisons and the
/// release instant use Lua doubles, exact up to 2^53 nano-dollars ($9,007,199) per window.
const LIMIT_LIB: &str = r#"
local CHUNK = 256
local SPEND_KEYS = 10

-- Now: the test clock's instant when one was sent, else the server's.
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  return now_ms()
end

-- A stored number, or 0 for a missing one (Redis nil arrives as false).
local function num(v)
  if v then return tonumber(v) end
  return 0
end

local function subject(base)
  return {
    loaded = KEYS[base + 1], ev = KEYS[base + 2], r5 = KEYS[base + 3], r24 = KEYS[base + 4],
    sum = KEYS[base + 5], f5 = KEYS[base + 6], d = KEYS[base + 7], w = KEYS[base + 8],
    m = KEYS[base + 9], t = KEYS[base + 10],
  }
end

local function spend_keys(s)
  return s.loaded, s.ev, s.r5, s.r24, s.sum, s.f5, s.d, s.w, s.m, s.t
end

local function clamp_ttl(ttl)
  return math.min(math.max(ttl, 1), MAX_TTL)
end

-- Makes key live at least ttl ms more; never shortens (other content of it may need longer).
local function extend(key, ttl)
  ttl = clamp_ttl(ttl)
  local left = redis.call('PTTL', key)
  if left ~= -2 and left < ttl then redis.call('PEXPIRE', key, int(ttl)) end
end

-- The rolling keys of a subject expire at one instant, so that a running sum never outlives the
-- events it adds up (nor they it).
local function extend_rolling(s, ttl)
  local target = clamp_ttl(ttl)
  local keys = {s.r5, s.r24, s.ev, s.sum}
  for _, k in ipairs(keys) do
    local left = redis.call('PTTL', k)
    if left > target then target = left end
  end
  for _, k in ipairs(keys) do redis.call('PEXPIRE', k, int(target)) end
end

-- Events at or before now - length leave zkey, their amounts leave its sum. Each event leaves
-- once, so this costs O(log n) per event, not a scan per admission.
local function leave(s, zkey, field, length, now, forget)
  local bound = int(now - length)
  while true do
    local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', bound, 'LIMIT', 0, CHUNK)
    if #gone == 0 then return end
    local amounts = redis.call('HMGET', s.ev, unpack(gone))
    local total = 0
    for i = 1, #gone do total = total + num(amounts[i]) end
    redis.call('ZREM', zkey, unpack(gone))
    if forget then redis.call('HDEL', s.ev, unpack(gone)) end
    if total ~= 0 then redis.call('HINCRBY', s.sum, field, int(-total)) end
    if #gone < CHUNK then return end
  end
end

-- The 5 h window first: its events' amounts stay in ev until they leave the 24 h window.
local function expire_rolling(s, now)
  leave(s, s.r5, 'r5', FIVE_H, now, false)
  leave(s, s.r24, 'r24', DAY, now, true)
end

-- Adds a billed request to the rolling windows (call expire_rolling first; TTLs are the
-- caller's). False when its id is already among the last 24 h: it was counted before (a retried
-- record, or a rebuild that read it from the log), and the whole record is skipped.
local function add_event(s, at, id, amount, now)
  if redis.call('HEXISTS', s.ev, id) == 1 then return false end
  if at > now - FIVE_H then
    redis.call('ZADD', s.r5, int(at), id)
    redis.call('HINCRBY', s.sum, 'r5', amount)
  end
  if at > now - DAY then
    redis.call('ZADD', s.r24, int(at), id)
    redis.call('HSET', s.ev, id, amount)
    redis.call('HINCRBY', s.sum, 'r24', amount)
  end
  return true
end

-- How long the rolling keys must live after an event at `at`: until it left the 24 h window.
local function rolling_ttl(at, now)
  return math.max(at - now, 0) + DAY + LATE
end

-- When enough of the oldest events have left zkey for sum to drop below limit; events of one
-- instant leave together. Reads the oldest events only as far as it takes. nil: never.
local function release_at(s, zkey, length, limit, sum)
  local start, prev = 0, nil
  while true do
    local batch = redis.call('ZRANGE', zkey, start, start + CHUNK - 1, 'WITHSCORES')
    if #batch == 0 then break end
    local ids = {}
    for i = 1, #batch, 2 do ids[#ids + 1] = batch[i] end
    local amounts = redis.call('HMGET', s.ev, unpack(ids))
    for i = 1, #ids do
      local at = tonumber(batch[2 * i])
      if prev ~= nil and at ~= prev and sum < limit then return prev + length end
      sum = sum - num(amounts[i])
      prev = at
    end
    start = start + CHUNK
  end
  if prev ~= nil and sum < limit then return prev + length end
  return nil
end
"#;

/// KEYS: per check (subjects, then providers) the 10 spend keys of `LIMIT_LIB`, then `rpm`
/// (sorted set: member → admission instant) and `ses` (sorted set: session → last seen).
/// ARGV: now ('' = TIME), has session ('1'/'0'), session, session TTL, request id, number of
/// subjects, number of providers; then per check: rpm, concurrent sessions, shape, the frame
/// (daily start and reset, weekly start and reset, monthly start and reset, total since), the
/// number of spend windows and per window its code and limit.
///
/// Returns `{'warm', i...}` (1-based check indices), `{'reject', i, kind, current, limit, reset
/// or '', now}` or `{'ok', i...}` (providers over a limit). `LimitBook::admit`, step by step.
const ADMIT_LUA: &str = r#"
local now = clock(ARGV[1])
local has_session, session, ttl = ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
local request_id = ARGV[5]
local nsub, nprov = tonumber(ARGV[6]), tonumber(ARGV[7])
local stride = SPEND_KEYS + 2
local checks = {}
local a = 7
for i = 1, nsub + nprov do
  local c = subject((i - 1) * stride)
  c.rpm_key, c.ses = KEYS[(i - 1) * stride + SPEND_KEYS + 1], KEYS[(i - 1) * stride + SPEND_KEYS + 2]
  c.rpm, c.conc, c.shape = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]
  c.ds, c.dr, c.ws, c.wr, c.ms, c.mr, c.ts =
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10]
  local nw = tonumber(ARGV[a + 11])
  a = a + 11
  c.windows = {}
  for w = 1, nw do
    c.windows[w] = {ARGV[a + 1], ARGV[a + 2]}
    a = a + 2
  end
  checks[i] = c
end

-- Windows missing or kept for another shape: rebuild first, count nothing.
local cold = {}
for i, c in ipairs(checks) do
  if #c.windows > 0 and redis.call('GET', c.loaded) ~= c.shape then cold[#cold + 1] = tostring(i) end
end
if #cold > 0 then return {'warm', unpack(cold)} end

-- A window's current spend (as stored, exact) and its reset ('' = none).
local function value(c, code)
  if code == 'r5' or code == 'r24' then
    if not c.expired then
      expire_rolling(c, now)
      c.expired = true
    end
    return redis.call('HGET', c.sum, code) or '0', ''
  elseif code == 'f5' then
    local f = redis.call('HMGET', c.f5, 'opened', 'sum')
    if f[1] and tonumber(f[1]) + FIVE_H > now then return f[2] or '0', int(tonumber(f[1]) + FIVE_H) end
    return '0', ''
  elseif code == 'd' then
    return redis.call('HGET', c.d, c.ds) or '0', c.dr
  elseif code == 'w' then
    return redis.call('HGET', c.w, c.ws) or '0', c.wr
  elseif code == 'm' then
    return redis.call('HGET', c.m, c.ms) or '0', c.mr
  end
  return redis.call('HGET', c.t, c.ts) or '0', ''
end

-- The first spend window at or over its limit: {code, current, limit, reset}, or nil.
local function spend_over(c)
  for _, w in ipairs(c.windows) do
    local code, limit = w[1], w[2]
    local current, reset = value(c, code)
    local lim = tonumber(limit)
    if tonumber(current) >= lim then
      local release = nil
      if code == 'r5' then
        release = release_at(c, c.r5, FIVE_H, lim, tonumber(current))
      elseif code == 'r24' then
        release = release_at(c, c.r24, DAY, lim, tonumber(current))
      end
      if release then reset = int(release) end
      return {code, current, limit, reset}
    end
  end
  return nil
end

for i = 1, nsub do
  local hit = spend_over(checks[i])
  if hit then return {'reject', tostring(i), hit[1], hit[2], hit[3], hit[4], int(now)} end
end

if has_session then
  for i = 1, nsub do
    local c = checks[i]
    if c.conc > 0 then
      redis.call('ZREMRANGEBYSCORE', c.ses, '-inf', int(now - ttl))
      if not redis.call('ZSCORE', c.ses, session) then
        local n = redis.call('ZCARD', c.ses)
        if n >= c.conc then
          local oldest = redis.call('ZRANGE', c.ses, 0, 0, 'WITHSCORES')
          return {'reject', tostring(i), 'ses', int(n), int(c.conc), int(tonumber(oldest[2]) + ttl), int(now)}
        end
      end
    end
  end
end

for i = 1, nsub do
  local c = checks[i]
  if c.rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', c.rpm_key, '-inf', int(now - RPM_MS))
    local n = redis.call('ZCARD', c.rpm_key)
    if n >= c.rpm then
      local oldest = redis.call('ZRANGE', c.rpm_key, 0, 0, 'WITHSCORES')
      return {'reject', tostring(i), 'rpm', int(n), int(c.rpm), int(tonumber(oldest[2]) + RPM_MS), int(now)}
    end
  end
end

-- Everything passed: count.
for i = 1, nsub do
  local c = checks[i]
  if c.conc > 0 and has_session then
    redis.call('ZADD', c.ses, int(now), session)
    extend(c.ses, ttl)
  end
  if c.rpm > 0 then
    -- Every admission counts, even one reusing a request id.
    local member, n = int(now) .. ':' .. request_id, 0
    while redis.call('ZADD', c.rpm_key, 'NX', int(now), member) == 0 do
      n = n + 1
      member = int(now) .. ':' .. request_id .. ':' .. n
    end
    extend(c.rpm_key, RPM_MS)
  end
end

local over = {'ok'}
for i = nsub + 1, nsub + nprov do
  if spend_over(checks[i]) then over[#over + 1] = tostring(i) end
end
return over
"#;

/// KEYS: per record the 10 spend keys. ARGV: now ('' = TIME); per record: shape, arrival,
/// request id, amount, the frame (as in `ADMIT_LUA`). `LimitBook::add_spend`, step by step.
const ADD_SPEND_LUA: &str = r#"
local now = clock(ARGV[1])
local a = 1
for r = 0, #KEYS / SPEND_KEYS - 1 do
  local s = subject(r * SPEND_KEYS)
  local shape, at, id, amount = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
  local ds, dr, ws, wr, ms, mr, ts =
    ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10], ARGV[a + 11]
  a = a + 11
  local marker = redis.call('GET', s.loaded)
  if marker and marker ~= shape then
    -- Kept elsewhere now: what is here is stale, and the next admission rebuilds it.
    redis.call('DEL', spend_keys(s))
    marker = false
  end
  -- Without a marker the spend still lands here: a rebuild overwrites it anyway.
  expire_rolling(s, now)
  if add_event(s, at, id, amount, now) then
    extend_rolling(s, rolling_ttl(at, now))
    local opened = redis.call('HGET', s.f5, 'opened')
    if opened and tonumber(opened) + FIVE_H > at then
      redis.call('HINCRBY', s.f5, 'sum', amount)
    else
      opened = int(at)
      redis.call('HSET', s.f5, 'opened', opened, 'sum', amount)
    end
    extend(s.f5, math.max(tonumber(opened) + FIVE_H - now, 0) + LATE)
    -- Each counter is named by its window's start: counters of earlier windows go, a new
    -- window starts from zero by itself.
    for _, counter in ipairs({{s.d, ds, dr}, {s.w, ws, wr}, {s.m, ms, mr}, {s.t, ts, ''}}) do
      local key, start = counter[1], counter[2]
      for _, field in ipairs(redis.call('HKEYS', key)) do
        if tonumber(field) < tonumber(start) then redis.call('HDEL', key, field) end
      end
      redis.call('HINCRBY', key, start, amount)
      -- The total never resets: it lives as long as any marker vouching for it.
      local ttl = MARKER_TTL + LATE
      if counter[3] ~= '' then ttl = math.max(tonumber(counter[3]) - now, 0) + LATE end
      extend(key, ttl)
    end
    if marker then redis.call('PEXPIRE', s.loaded, MARKER_TTL) end
  end
end
return 1
"#;

/// KEYS: per snapshot the 10 spend keys. ARGV: now ('' = TIME); per snapshot: shape, the frame
/// (as in `ADMIT_LUA`), daily, weekly, monthly and total spend, fixed 5 h opened ('' = none) and
/// spend, the number of events and per event its arrival, request id and amount. Replaces the
/// subjects' windows and marks them loaded: `LimitBook::warm`.
const WARM_LUA: &str = r#"
local now = clock(ARGV[1])
local a = 1
for r = 0, #KEYS / SPEND_KEYS - 1 do
  local s = subject(r * SPEND_KEYS)
  local shape = ARGV[a + 1]
  local ds, dr, ws, wr, ms, mr, ts =
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local daily, weekly, monthly, total = ARGV[a + 9], ARGV[a + 10], ARGV[a + 11], ARGV[a + 12]
  local opened, fixed_sum, nev = ARGV[a + 13], ARGV[a + 14], tonumber(ARGV[a + 15])
  a = a + 15
  redis.call('DEL', spend_keys(s))
  local newest = nil
  for _ = 1, nev do
    local at = tonumber(ARGV[a + 1])
    -- A request listed twice counts once (its first listing).
    add_event(s, at, ARGV[a + 2], ARGV[a + 3], now)
    if newest == nil or at > newest then newest = at end
    a = a + 3
  end
  if newest then extend_rolling(s, rolling_ttl(newest, now)) end
  if opened ~= '' then
    redis.call('HSET', s.f5, 'opened', opened, 'sum', fixed_sum)
    extend(s.f5, math.max(tonumber(opened) + FIVE_H - now, 0) + LATE)
  end
  for _, counter in ipairs({{s.d, ds, daily, dr}, {s.w, ws, weekly, wr}, {s.m, ms, monthly, mr}}) do
    redis.call('HSET', counter[1], counter[2], counter[3])
    extend(counter[1], math.max(tonumber(counter[4]) - now, 0) + LATE)
  end
  redis.call('HSET', s.t, ts, total)
  extend(s.t, MARKER_TTL + LATE)
  redis.call('SET', s.loaded, shape, 'PX', MARKER_TTL)
end
return 1
"#;

/// Fields of the breaker hash, in the order the reads ask for them.
const BREAKER_FIELDS: [&str; 4] = ["failures", "half_open_successes", "opened_at_ms", "last_failure"];

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_PRELUDE}{body}"))
}

/// A limit script: the prelude, the window constants (from the Rust ones, so both stores agree),
/// [`LIMIT_LIB`] and the body.
fn limit_script(body: &str) -> Script {
    Script::new(&format!(
        "{LUA_PRELUDE}\nlocal FIVE_H, DAY, RPM_MS, LATE, MARKER_TTL, MAX_TTL = {FIVE_HOURS_MS}, {DAY_MS}, \
         {RPM_WINDOW_MS}, {LATE_MS}, {MARKER_TTL_MS}, {MAX_LUA_MS}\n{LIMIT_LIB}{body}"
    ))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse<T: redis::FromRedisValue>(value: Value, what: &str) -> Result<T, StateError> {
    if let Value::ServerError(e) = value {
        // A failed command in a pipeline that ignores errors (the others still answered).
        return Err(StateError(format!("redis {what}: {}", RedisError::from(e))));
    }
    redis::from_redis_value(value).map_err(|e| StateError(format!("redis: unexpected {what}: {e}")))
}

/// Server time from a `TIME` reply, in ms (as the scripts compute it).
fn parse_time(value: Value) -> Result<EpochMs, StateError> {
    let (secs, micros): (i64, i64) = parse(value, "TIME reply")?;
    Ok(secs.saturating_mul(1000).saturating_add(micros / 1000))
}

/// A breaker record from an `HMGET` of [`BREAKER_FIELDS`]. Missing fields read as the default.
fn parse_breaker(value: Value) -> Result<BreakerRecord, StateError> {
    let fields: Vec<Option<String>> = parse(value, "breaker record")?;
    let field = |i: usize| fields.get(i).cloned().flatten();
    let number = |i: usize| -> Result<Option<i64>, StateError> {
        field(i)
            .map(|s| s.parse::<i64>().map_err(|e| StateError(format!("redis: breaker field {i} {s:?}: {e}"))))
            .transpose()
    };
    let count = |i: usize| -> Result<u32, StateError> {
        Ok(number(i)?.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)).unwrap_or(0))
    };
    Ok(BreakerRecord {
        failures: count(0)?,
        half_open_successes: count(1)?,
        opened_at_ms: number(2)?,
        last_failure: field(3),
    })
}

impl RedisStateStore {
    /// A store on the Redis at `url` (`redis://[:password@]host:port[/db]`, `rediss://` needs a
    /// TLS feature of `redis` that this crate leaves off).
    ///
    /// Fails only on an invalid URL. An unreachable Redis is logged and tried again in the
    /// background: the gateway starts anyway and routes fail-open until Redis answers.
    pub async fn connect(url: &str, options: RedisStateOptions) -> Result<Self, StateError> {
        let client = redis::Client::open(url).map_err(|e| StateError(format!("redis url: {e}")))?;
        // Our own timeout bounds every call; the manager's connect timeout only keeps a dead
        // attempt from lingering, and its retries are few because calls retry anyway.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout.max(Duration::from_secs(1))))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StateError(format!("redis: {e}")))?;
        let store = Self {
            conn,
            prefix: options.prefix,
            timeout: options.timeout,
            clock: options.clock,
            scripts: Arc::new(Scripts {
                acquire: script(ACQUIRE_LUA),
                record: script(RECORD_LUA),
                cooldown: script(COOLDOWN_LUA),
                admit: limit_script(ADMIT_LUA),
                add_spend: limit_script(ADD_SPEND_LUA),
                warm: limit_script(WARM_LUA),
            }),
            unavailable_until: Default::default(),
        };
        // Connect now, so the first request does not pay for it; load the scripts for the same
        // reason (EVALSHA would load them on NOSCRIPT anyway).
        let mut conn = store.conn.clone();
        let scripts = store.scripts.clone();
        let warm_up = store
            .call("connect", async move {
                for s in [
                    &scripts.acquire,
                    &scripts.record,
                    &scripts.cooldown,
                    &scripts.admit,
                    &scripts.add_spend,
                    &scripts.warm,
                ] {
                    s.load_async(&mut conn).await?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = warm_up {
            tracing::warn!("redis state store not reachable yet, routing fails open until it is: {e}");
        }
        Ok(store)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn binding_key(&self, session: &str) -> String {
        binding_key(&self.prefix, session)
    }

    fn sessions_key(&self, provider: Id) -> String {
        provider_key(&self.prefix, provider, "sessions")
    }

    fn breaker_key(&self, provider: Id) -> String {
        provider_key(&self.prefix, provider, "breaker")
    }

    fn cooldown_key(&self, provider: Id) -> String {
        provider_key(&self.prefix, provider, "cooldown")
    }

    fn limit_key(&self, subject: Subject, part: &str) -> String {
        limit_key(&self.prefix, subject, part)
    }

    /// "Now" for the limit scripts: the test clock's, or '' for the server's `TIME`.
    fn now_arg(&self) -> String {
        self.clock.as_ref().map(|c| c.now_ms().to_string()).unwrap_or_default()
    }

    /// The admission script with its keys and arguments ([`ADMIT_LUA`]).
    fn admit_invocation(&self, check: &AdmissionCheck) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.scripts.admit.prepare_invoke();
        let ttl = check.session_ttl_ms.clamp(0, i64::try_from(MAX_LUA_MS).unwrap_or(i64::MAX));
        invocation
            .arg(self.now_arg())
            .arg(if check.session.is_some() { "1" } else { "0" })
            .arg(check.session.as_deref().unwrap_or(""))
            .arg(ttl)
            .arg(&check.request_id)
            .arg(check.subjects.len())
            .arg(check.providers.len());
        for c in check.subjects.iter().chain(&check.providers) {
            spend_keys(&mut invocation, &self.prefix, c.subject);
            invocation.key(self.limit_key(c.subject, "rpm")).key(self.limit_key(c.subject, "ses"));
            invocation.arg(c.rpm).arg(c.concurrent_sessions).arg(&c.shape);
            frame_args(&mut invocation, &c.frame);
            invocation.arg(c.spend.len());
            for (window, limit) in &c.spend {
                invocation.arg(window_code(*window)).arg(limit.0);
            }
        }
        invocation
    }

    /// Adds the reads of a routing view to a pipeline; [`parse_view`] reads their replies.
    fn push_view(
        &self,
        pipe: &mut redis::Pipeline,
        session: Option<&str>,
        providers: &[Id],
        keep_binding: Option<Duration>,
    ) {
        // Not one script: the keys belong to several entities, hence to several cluster slots.
        // Each entity's value is read by one command, so it is consistent.
        pipe.cmd("TIME");
        if let Some(s) = session {
            let key = self.binding_key(s);
            // GETEX (Redis 6.2) reads and refreshes in one command: a session that stays on its
            // provider costs no write of its own. A zero TTL keeps it for no time, as
            // `bind_session` does (PX refuses 0).
            match keep_binding.map(|ttl| ms(ttl).min(MAX_LUA_MS)) {
                None => pipe.cmd("GET").arg(key),
                Some(0) => pipe.cmd("GETDEL").arg(key),
                Some(ttl_ms) => pipe.cmd("GETEX").arg(key).arg("PX").arg(ttl_ms),
            };
        }
        for &p in providers {
            pipe.cmd("HMGET").arg(self.breaker_key(p)).arg(&BREAKER_FIELDS[..]);
            pipe.cmd("GET").arg(self.cooldown_key(p));
        }
    }

    /// One pipeline: the admission script, then the routing view's reads.
    async fn admit_and_view_once(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        session: Option<&str>,
        providers: &[Id],
        keep_binding: Option<Duration>,
    ) -> Result<Vec<Value>, StateError> {
        let mut pipe = redis::pipe();
        // Each reply is judged alone: a failed admission must not cost the routing view.
        pipe.ignore_errors();
        pipe.invoke_script(invocation);
        self.push_view(&mut pipe, session, providers, keep_binding);
        let mut conn = self.conn.clone();
        self.call("admit_and_view", pipe.query_async(&mut conn)).await
    }

    /// Runs one call with the timeout and the unavailability backoff.
    async fn call<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = RedisResult<T>> + Send,
    ) -> Result<T, StateError> {
        if let Some(until) = *self.unavailable_until.lock()
            && Instant::now() < until
        {
            return Err(StateError(format!(
                "redis {what}: unavailable, not retried for up to {UNAVAILABLE_BACKOFF:?}"
            )));
        }
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if is_unreachable(&e) {
                    self.back_off();
                }
                Err(StateError(format!("redis {what}: {e}")))
            }
            Err(_) => {
                self.back_off();
                Err(StateError(format!("redis {what}: no answer within {:?}", self.timeout)))
            }
        }
    }

    fn back_off(&self) {
        *self.unavailable_until.lock() = Some(Instant::now() + UNAVAILABLE_BACKOFF);
    }
}

/// The key of a session's binding; the session is its hash tag.
fn binding_key(prefix: &str, session: &str) -> String {
    format!("{prefix}{{s:{session}}}:bind")
}

/// The key of one part of a provider's state; the provider is the hash tag, so a script or
/// command may touch several parts of one provider on a cluster.
fn provider_key(prefix: &str, provider: Id, part: &str) -> String {
    format!("{prefix}{{p:{provider}}}:{part}")
}

/// A routing view from the replies of [`RedisStateStore::push_view`]'s reads.
fn parse_view(
    replies: &mut impl Iterator<Item = Value>,
    session: Option<&str>,
    providers: &[Id],
) -> Result<RoutingView, StateError> {
    let mut next = || replies.next().ok_or_else(|| StateError("redis: short pipeline reply".into()));
    let now_ms = parse_time(next()?)?;
    let binding = match session {
        Some(_) => parse::<Option<Id>>(next()?, "binding")?,
        None => None,
    };
    let mut health = Vec::with_capacity(providers.len());
    for _ in providers {
        let breaker = parse_breaker(next()?)?;
        // The key expires when the cooldown ends; the filter covers the last millisecond.
        let cooldown_until_ms = parse::<Option<EpochMs>>(next()?, "cooldown")?.filter(|t| *t > now_ms);
        health.push(ProviderHealth { breaker, cooldown_until_ms });
    }
    Ok(RoutingView { binding, health, now_ms })
}

/// The parts of a subject's spend state, in the order `LIMIT_LIB`'s `subject` reads them.
const SPEND_PARTS: [&str; 10] = ["loaded", "ev", "r5", "r24", "sum", "f5", "d", "w", "m", "t"];

/// The key of one part of a subject's limit state. Every limit key carries the one hash tag
/// `{lim}`, so that a script may touch the keys of several subjects (key, user, providers) and
/// still be valid on a cluster.
fn limit_key(prefix: &str, subject: Subject, part: &str) -> String {
    format!("{prefix}{{lim}}:{}:{part}", subject.tag())
}

/// Adds the spend keys of `subject` to a script invocation.
fn spend_keys(invocation: &mut redis::ScriptInvocation<'_>, prefix: &str, subject: Subject) {
    for part in SPEND_PARTS {
        invocation.key(limit_key(prefix, subject, part));
    }
}

/// Adds a frame's fixed windows, in the order the limit scripts read them.
fn frame_args(invocation: &mut redis::ScriptInvocation<'_>, f: &SpendFrame) {
    invocation
        .arg(f.daily_start)
        .arg(f.daily_reset)
        .arg(f.weekly_start)
        .arg(f.weekly_reset)
        .arg(f.monthly_start)
        .arg(f.monthly_reset)
        .arg(f.total_since);
}

/// A spend window as the limit scripts name it.
const fn window_code(window: SpendWindow) -> &'static str {
    match window {
        SpendWindow::FiveHourRolling => "r5",
        SpendWindow::DailyRolling => "r24",
        SpendWindow::FiveHourFixed => "f5",
        SpendWindow::DailyFixed => "d",
        SpendWindow::Weekly => "w",
        SpendWindow::Monthly => "m",
        SpendWindow::Total => "t",
    }
}

fn window_of(code: &str) -> Option<SpendWindow> {
    SpendWindow::ALL.into_iter().find(|w| window_code(*w) == code)
}

/// The admission script's reply ([`ADMIT_LUA`]) as an [`Admission`].
fn parse_admission(check: &AdmissionCheck, value: Value) -> Result<Admission, StateError> {
    let reply: Vec<String> = parse(value, "admission reply")?;
    let bad = || StateError(format!("redis: unexpected admission reply {reply:?}"));
    let all: Vec<&SubjectCheck> = check.subjects.iter().chain(&check.providers).collect();
    let checked = |i: &str| {
        i.parse::<usize>()
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| all.get(i).copied())
            .ok_or_else(bad)
    };
    let int = |n: &str| n.parse::<i64>().map_err(|_| bad());
    let Some((tag, rest)) = reply.split_first() else { return Err(bad()) };
    match (tag.as_str(), rest) {
        ("warm", cold) => Ok(Admission::NeedsWarm(
            cold.iter().map(|i| checked(i).map(|c| c.subject)).collect::<Result<_, _>>()?,
        )),
        ("ok", over) => Ok(Admission::Admitted {
            providers_over: over
                .iter()
                .map(|i| checked(i).map(|c| c.subject.id))
                .collect::<Result<_, _>>()?,
        }),
        ("reject", [i, kind, current, limit, reset, now]) => {
            let kind = match kind.as_str() {
                "rpm" => LimitKind::Rpm,
                "ses" => LimitKind::ConcurrentSessions,
                code => LimitKind::Spend(window_of(code).ok_or_else(bad)?),
            };
            Ok(Admission::Rejected(LimitHit {
                subject: checked(i)?.subject,
                kind,
                current: int(current)?,
                limit: int(limit)?,
                reset_at_ms: if reset.is_empty() { None } else { Some(int(reset)?) },
                now_ms: int(now)?,
            }))
        }
        _ => Err(bad()),
    }
}

/// Errors that say Redis cannot be reached now, worth backing off for. A connection that merely
/// dropped (Redis restarted, an idle connection cut) is not one: the manager reconnects at once
/// and the next call waits for that, within its timeout.
fn is_unreachable(e: &RedisError) -> bool {
    e.is_connection_refusal() || e.is_timeout()
}

impl StateStore for RedisStateStore {
    fn routing_view<'a>(
        &'a self,
        session: Option<&'a str>,
        providers: &'a [Id],
        keep_binding: Option<Duration>,
    ) -> BoxFuture<'a, Result<RoutingView, StateError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            self.push_view(&mut pipe, session, providers, keep_binding);
            let mut conn = self.conn.clone();
            let replies: Vec<Value> = self.call("routing_view", pipe.query_async(&mut conn)).await?;
            parse_view(&mut replies.into_iter(), session, providers)
        })
    }

    fn acquire_provider_session<'a>(
        &'a self,
        provider: Id,
        session: &'a str,
        limit: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut invocation = self.scripts.acquire.key(self.sessions_key(provider));
            invocation.arg(session).arg(limit).arg(ms(ttl).min(MAX_LUA_MS));
            let admitted: i64 =
                self.call("acquire_provider_session", invocation.invoke_async(&mut conn)).await?;
            Ok(admitted == 1)
        })
    }

    fn record_attempt<'a>(
        &'a self,
        provider: Id,
        cfg: BreakerConfig,
        result: AttemptResult,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let open_ms = cfg.open_duration_ms.min(MAX_LUA_MS);
            // Cut here as `on_failure` does (300 chars, not bytes: Lua would count bytes).
            let reason: String = reason.chars().take(300).collect();
            let kind = match result {
                AttemptResult::Success => "success",
                AttemptResult::Failure => "failure",
            };
            let mut conn = self.conn.clone();
            let mut invocation = self.scripts.record.key(self.breaker_key(provider));
            invocation
                .arg(kind)
                .arg(cfg.failure_threshold)
                .arg(open_ms)
                .arg(cfg.half_open_success_threshold)
                .arg(reason)
                // Never shorter than the open period: the record must outlive it to go half-open.
                .arg(BREAKER_IDLE_TTL_MS + open_ms);
            let _changed: i64 = self.call("record_attempt", invocation.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn bind_session<'a>(
        &'a self,
        session: &'a str,
        provider: Id,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let key = self.binding_key(session);
            let ttl_ms = ms(ttl).min(MAX_LUA_MS);
            // One single-key command, atomic; the expiry counts on the server's clock. A zero TTL
            // (which SET refuses) binds for no time at all: nothing to keep.
            let mut cmd;
            if ttl_ms == 0 {
                cmd = redis::cmd("DEL");
                cmd.arg(&key);
            } else {
                cmd = redis::cmd("SET");
                cmd.arg(&key).arg(provider).arg("PX").arg(ttl_ms);
            }
            self.call("bind_session", cmd.exec_async(&mut conn)).await
        })
    }

    fn set_cooldown(&self, provider: Id, until_ms: EpochMs) -> BoxFuture<'_, Result<(), StateError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut invocation = self.scripts.cooldown.key(self.cooldown_key(provider));
            invocation.arg(until_ms);
            let _set: i64 = self.call("set_cooldown", invocation.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn breaker_status(
        &self,
        provider: Id,
        cfg: BreakerConfig,
    ) -> BoxFuture<'_, Result<BreakerStatus, StateError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("TIME").cmd("HMGET").arg(self.breaker_key(provider)).arg(&BREAKER_FIELDS[..]);
            let mut conn = self.conn.clone();
            let (time, record): (Value, Value) =
                self.call("breaker_status", pipe.query_async(&mut conn)).await?;
            // The state is derived by the same Rust code as for the memory store.
            Ok(BreakerStatus::of(&parse_breaker(record)?, &cfg, parse_time(time)?))
        })
    }

    fn reset_breaker(&self, provider: Id) -> BoxFuture<'_, Result<(), StateError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            // Both keys carry the provider's hash tag: one atomic DEL, also on a cluster.
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.breaker_key(provider)).arg(self.cooldown_key(provider));
            self.call("reset_breaker", cmd.exec_async(&mut conn)).await
        })
    }

    fn admit<'a>(&'a self, check: &'a AdmissionCheck) -> BoxFuture<'a, Result<Admission, StateError>> {
        Box::pin(async move {
            if check.is_empty() {
                return Ok(Admission::Admitted { providers_over: Vec::new() });
            }
            let mut conn = self.conn.clone();
            let invocation = self.admit_invocation(check);
            let reply: Value = self.call("admit", invocation.invoke_async(&mut conn)).await?;
            parse_admission(check, reply)
        })
    }

    fn admit_and_view<'a>(
        &'a self,
        check: &'a AdmissionCheck,
        session: Option<&'a str>,
        providers: &'a [Id],
        keep_binding: Option<Duration>,
    ) -> BoxFuture<'a, (Result<Admission, StateError>, Result<RoutingView, StateError>)> {
        Box::pin(async move {
            if check.is_empty() {
                let admission = Ok(Admission::Admitted { providers_over: Vec::new() });
                return (admission, self.routing_view(session, providers, keep_binding).await);
            }
            let invocation = self.admit_invocation(check);
            let mut replies = self.admit_and_view_once(&invocation, session, providers, keep_binding).await;
            // A pipeline does not load a missing script by itself (a restarted or flushed Redis):
            // load it and send the pipeline again; the script did not run, the reads are reads.
            let no_script = |r: &Result<Vec<Value>, StateError>| {
                matches!(r.as_ref().map(|v| v.first()), Ok(Some(Value::ServerError(e)))
                    if e.kind() == Some(ServerErrorKind::NoScript))
            };
            if no_script(&replies) {
                let mut conn = self.conn.clone();
                let loaded = self.call("admit_and_view", invocation.load_async(&mut conn)).await;
                replies = match loaded {
                    // The first pipeline's GETEX already refreshed the binding; again is harmless.
                    Ok(_) => self.admit_and_view_once(&invocation, session, providers, keep_binding).await,
                    Err(e) => Err(e),
                };
            }
            let replies = match replies {
                Ok(replies) => replies,
                Err(e) => return (Err(e.clone()), Err(e)),
            };
            let mut replies = replies.into_iter();
            let admission = match replies.next() {
                Some(reply) => parse_admission(check, reply),
                None => Err(StateError("redis: short pipeline reply".into())),
            };
            (admission, parse_view(&mut replies, session, providers))
        })
    }

    fn add_spend<'a>(&'a self, records: &'a [SpendRecord]) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            // One script for the key's, the user's and the provider's spend: one round trip.
            let mut invocation = self.scripts.add_spend.prepare_invoke();
            invocation.arg(self.now_arg());
            for r in records {
                spend_keys(&mut invocation, &self.prefix, r.subject);
                invocation.arg(&r.shape).arg(r.at_ms).arg(&r.request_id).arg(r.amount.0);
                frame_args(&mut invocation, &r.frame);
            }
            let mut conn = self.conn.clone();
            let _: i64 = self.call("add_spend", invocation.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn warm_spend<'a>(&'a self, snapshots: &'a [SpendSnapshot]) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            if snapshots.is_empty() {
                return Ok(());
            }
            let mut invocation = self.scripts.warm.prepare_invoke();
            invocation.arg(self.now_arg());
            for s in snapshots {
                spend_keys(&mut invocation, &self.prefix, s.subject);
                invocation.arg(&s.shape);
                frame_args(&mut invocation, &s.frame);
                invocation.arg(s.daily.0).arg(s.weekly.0).arg(s.monthly.0).arg(s.total.0);
                match s.fixed_5h {
                    Some((opened, spent)) => invocation.arg(opened).arg(spent.0),
                    None => invocation.arg("").arg(0),
                };
                invocation.arg(s.events.len());
                for (at, id, amount) in &s.events {
                    invocation.arg(*at).arg(id).arg(amount.0);
                }
            }
            let mut conn = self.conn.clone();
            let _: i64 = self.call("warm_spend", invocation.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn invalidate_spend<'a>(&'a self, subjects: &'a [Subject]) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            if subjects.is_empty() {
                return Ok(());
            }
            // Every spend key of these subjects, as the memory store forgets the whole book; one
            // DEL, atomic (one hash tag, so also on a cluster). RPM and sessions stay.
            let mut cmd = redis::cmd("DEL");
            for &subject in subjects {
                for part in SPEND_PARTS {
                    cmd.arg(self.limit_key(subject, part));
                }
            }
            let mut conn = self.conn.clone();
            self.call("invalidate_spend", cmd.exec_async(&mut conn)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_entity_as_hash_tag() {
        let o = RedisStateOptions::default();
        assert_eq!((o.prefix.as_str(), o.timeout), ("gw:", Duration::from_millis(200)));
        assert_eq!(binding_key("gw:", "abc-1"), "gw:{s:abc-1}:bind");
        assert_eq!(provider_key("gw:", 7, "breaker"), "gw:{p:7}:breaker");
        assert_eq!(provider_key("gw:", 7, "cooldown"), "gw:{p:7}:cooldown");
    }

    #[test]
    fn breaker_fields_parse_leniently_when_missing() {
        let value = Value::Array(vec![Value::BulkString(b"3".to_vec()), Value::Nil, Value::Nil, Value::Nil]);
        let record = parse_breaker(value).expect("parse");
        assert_eq!(record, BreakerRecord { failures: 3, ..Default::default() });
        let value = Value::Array(vec![
            Value::BulkString(b"5".to_vec()),
            Value::BulkString(b"1".to_vec()),
            Value::BulkString(b"1712345678901".to_vec()),
            Value::BulkString(b"upstream 529".to_vec()),
        ]);
        let record = parse_breaker(value).expect("parse");
        assert_eq!(record.opened_at_ms, Some(1_712_345_678_901));
        assert_eq!(record.half_open_successes, 1);
        assert_eq!(record.last_failure.as_deref(), Some("upstream 529"));
    }

    #[test]
    fn time_reply_to_ms() {
        let value = Value::Array(vec![
            Value::BulkString(b"1712345678".to_vec()),
            Value::BulkString(b"901234".to_vec()),
        ]);
        assert_eq!(parse_time(value).expect("time"), 1_712_345_678_901);
    }
}
