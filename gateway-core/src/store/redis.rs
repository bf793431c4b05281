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
//! | `gw:{lim}:<tag>:sp` | hash | the spend state: `shape` and `mexp` (the marker: the shape the windows were rebuilt for, valid until `mexp` on the server's clock, refreshed by added spend), `r5`, `r24` (rolling sums) and `c5`, `c24` (their oldest bucket), `f5o`, `f5s` (fixed 5 h window: opened, spend), `ds`/`d`, `ws`/`w`, `ms`/`m`, `ts`/`t` (fixed day, week, month, total: window start and spend), `x` (its expiry) | a day after the newest fixed window it holds resets, and at least two days after the last spend; rounded up to the hour |
//! | `gw:{lim}:<tag>:b` | hash | bucket start (a second, ms) → spend billed in it, the last 24 h | a day after the newest bucket, plus a day |
//! | `gw:{lim}:<tag>:ids` | sorted set | request id → when taken, the last 10 minutes | 10 minutes after the last one |
//!
//! The rolling windows are kept per second ([`ROLLING_BUCKET_MS`]): a bucket leaves a window with
//! its last millisecond, so spend never leaves earlier than it should and at most 999 ms later,
//! and a subject holds at most 86,400 buckets whatever its traffic. Each bucket leaves once: the
//! cursors `c5`, `c24` only move forward, and the buckets between the old and the new cursor are
//! subtracted from the running sum. A fixed counter keeps its window's start, so a new window
//! starts from zero by itself. A request id taken in the last 10 minutes is not counted again.
//! The three spend keys of a subject have fixed names that [`StateStore::invalidate_spend`] and
//! [`StateStore::warm_spend`] replace exactly as the memory store replaces its book.
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
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Script, ServerErrorKind, Value};

use super::state::{AttemptResult, Clock, EpochMs, ProviderHealth, RoutingView, StateError, StateStore};
use crate::FastMap;
use crate::config::Id;
use crate::limit::spec::{SpendFrame, SpendWindow, Subject};
use crate::limit::state::{
    Admission, AdmissionCheck, LimitHit, LimitKind, REQUEST_ID_MEMORY_MS, SpendRecord, SpendSnapshot,
    SubjectCheck,
};
use crate::limit::window::{DAY_MS, FIVE_HOURS_MS, ROLLING_BUCKET_MS, RPM_WINDOW_MS};
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
/// connections.
#[derive(Clone)]
pub struct RedisStateStore {
    connections: Arc<Connections>,
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

/// One self-reconnecting connection per runtime that uses the store (see
/// [`crate::runtime_scope`]), opened on first use; callers on multi-threaded runtimes share one.
struct Connections {
    client: redis::Client,
    config: ConnectionManagerConfig,
    shared: ConnectionManager,
    per_runtime: RwLock<FastMap<std::thread::ThreadId, ConnectionManager>>,
}

impl Connections {
    fn current(&self) -> ConnectionManager {
        let Some(runtime) = crate::runtime_scope() else {
            return self.shared.clone();
        };
        if let Some(conn) = self.per_runtime.read().get(&runtime) {
            return conn.clone();
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(conn) => self.per_runtime.write().entry(runtime).or_insert(conn).clone(),
            // The same client and config made `shared`, so this does not happen; if it did, the
            // shared connection still works, only across threads.
            Err(_) => self.shared.clone(),
        }
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
/// first). Keys of one subject come as a table made by `subject`: `sp` (hash: every sum and
/// window start of the subject, its shape marker and the expiries; `SPEND_FIELDS`), `b`
/// (hash: bucket start → spend billed in that second, the last 24 h) and `ids` (sorted set:
/// request id → when taken, the last `IDS_MS`).
///
/// Calls into Redis cost more than the commands themselves (each one converts its arguments and
/// reply), so a subject's hash is read with one `HMGET`, its changes written with one `HSET`, and
/// the rolling windows move by whole seconds: most requests touch no bucket but their own.
///
/// Amounts are integers. A sum is computed in Lua only while Lua's doubles are exact (below 2^53
/// nano-dollars, $9,007,199); beyond that it is added by `HINCRBY` (exact, 64-bit). Comparisons
/// and the release instant use doubles, exact up to 2^53 per window.
const LIMIT_LIB: &str = r#"
local SPEND_KEYS = 3
local CHUNK = 1024
local EXACT = 9007199254740992
local FIELDS = {'shape', 'mexp', 'x', 'r5', 'r24', 'c5', 'c24', 'f5o', 'f5s',
  'ds', 'd', 'ws', 'w', 'ms', 'm', 'ts', 't'}

-- Now: the test clock's instant when one was sent, else the server's.
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  return now_ms()
end

-- The server's now, which the shape marker's expiry is kept on (as a TTL was before).
local function server_now(arg, now)
  if arg ~= '' then return now_ms() end
  return now
end

-- A stored number, or 0 for a missing one (Redis nil arrives as false).
local function num(v)
  if v then return tonumber(v) end
  return 0
end

local function subject(base)
  return {sp = KEYS[base + 1], b = KEYS[base + 2], ids = KEYS[base + 3], f = false, set = false}
end

-- Reads the subject's hash into s.f (field -> string or false); writes collect in s.set. One
-- constructor, so the table is sized once (allocations are most of what a script costs).
local function load(s)
  local v = redis.call('HMGET', s.sp, unpack(FIELDS))
  s.f = {shape = v[1], mexp = v[2], x = v[3], r5 = v[4], r24 = v[5], c5 = v[6], c24 = v[7],
    f5o = v[8], f5s = v[9], ds = v[10], d = v[11], ws = v[12], w = v[13], ms = v[14], m = v[15],
    ts = v[16], t = v[17]}
  s.set = {}
end

local function put(s, field, value)
  s.set[#s.set + 1] = field
  s.set[#s.set + 1] = value
  s.f[field] = value
end

local function flush(s)
  if #s.set > 0 then
    redis.call('HSET', s.sp, unpack(s.set))
    s.set = {}
  end
end

-- Adds an integer (a string) to an integer field: here while doubles are exact, else HINCRBY.
local function bump(s, field, amount)
  local old, a = num(s.f[field]), tonumber(amount)
  local new = old + a
  if math.abs(old) < EXACT and math.abs(a) < EXACT and math.abs(new) < EXACT then
    put(s, field, int(new))
  else
    flush(s)
    s.f[field] = tostring(redis.call('HINCRBY', s.sp, field, amount))
  end
end

local function clamp_ttl(ttl)
  return math.min(math.max(ttl, 1), MAX_TTL)
end

-- Makes key live at least ttl ms more; never shortens.
local function extend(key, ttl)
  ttl = clamp_ttl(ttl)
  local left = redis.call('PTTL', key)
  if left ~= -2 and left < ttl then redis.call('PEXPIRE', key, int(ttl)) end
end

-- The oldest bucket still in a rolling window of `length` at `now` (`rolling_first_bucket`).
local function first_bucket(now, length)
  local lowest = now - length - BUCKET + 2
  return lowest + (BUCKET - lowest % BUCKET) % BUCKET
end

-- Sum of the buckets in [from, to), and their fields. Reads the range field by field, or the
-- whole hash when that is smaller (after a long idle time).
local function range_sum(s, from, to)
  local total, fields = 0, {}
  local n = (to - from) / BUCKET
  if n > CHUNK and n > redis.call('HLEN', s.b) then
    local all = redis.call('HGETALL', s.b)
    for i = 1, #all, 2 do
      local b = tonumber(all[i])
      if b >= from and b < to then
        total = total + tonumber(all[i + 1])
        fields[#fields + 1] = all[i]
      end
    end
    return total, fields
  end
  local start = from
  while start < to do
    local names = {}
    local b = start
    while b < to and #names < CHUNK do
      names[#names + 1] = int(b)
      b = b + BUCKET
    end
    local values = redis.call('HMGET', s.b, unpack(names))
    for i = 1, #names do
      if values[i] then
        total = total + tonumber(values[i])
        fields[#fields + 1] = names[i]
      end
    end
    start = b
  end
  return total, fields
end

-- Moves the rolling windows to now (`SpendBook::expire`; `only` = 'r5' or 'r24' moves just that
-- one, which changes no sum the other answers): buckets that left are subtracted once (the
-- cursors c5, c24 never move back) and leave the 24 h hash. Request ids older than IDS_MS are
-- swept at the same time (once a second at most).
local function expire(s, now, only)
  local first = first_bucket(now, FIVE_H)
  local from = s.f.c5 and tonumber(s.f.c5) or nil
  if only ~= 'r24' and (from == nil or from < first) then
    if from ~= nil then
      local gone = range_sum(s, from, first)
      if gone ~= 0 then bump(s, 'r5', int(-gone)) end
    end
    put(s, 'c5', int(first))
  end
  if only == 'r5' then return end
  first = first_bucket(now, DAY)
  from = s.f.c24 and tonumber(s.f.c24) or nil
  if from == nil or from < first then
    if from ~= nil then
      local gone, fields = range_sum(s, from, first)
      if gone ~= 0 then bump(s, 'r24', int(-gone)) end
      for i = 1, #fields, CHUNK do
        redis.call('HDEL', s.b, unpack(fields, i, math.min(i + CHUNK - 1, #fields)))
      end
    end
    put(s, 'c24', int(first))
    redis.call('ZREMRANGEBYSCORE', s.ids, '-inf', int(now - IDS_MS))
  end
end

-- Takes a request id unless taken within IDS_MS (`SpendBook::take_id`).
local function take_id(s, id, now)
  if redis.call('ZADD', s.ids, 'NX', int(now), id) == 1 then return true end
  if tonumber(redis.call('ZSCORE', s.ids, id)) > now - IDS_MS then return false end
  redis.call('ZADD', s.ids, int(now), id)
  return true
end

-- Adds spend billed at `at` to the rolling windows it is still in (after expire). Returns true
-- when it opened a new bucket (the 24 h hash may have been created by it).
local function add_rolling(s, at, amount)
  local bucket = at - at % BUCKET
  if bucket < tonumber(s.f.c24) then return false end
  local sum = redis.call('HINCRBY', s.b, int(bucket), amount)
  bump(s, 'r24', amount)
  if bucket >= tonumber(s.f.c5) then bump(s, 'r5', amount) end
  return tostring(sum) == amount
end

-- Writes the hash and keeps it until `need` at least (rounded up to the hour, so that its TTL is
-- set about once an hour).
local function finish(s, now, need)
  local target = need - need % HOUR + HOUR
  local grow = num(s.f.x) < target
  if grow then put(s, 'x', int(target)) end
  flush(s)
  if grow then redis.call('PEXPIRE', s.sp, int(clamp_ttl(target - now))) end
end

-- How long the hash must live: the total's marker, the rolling sums as long as their buckets,
-- the fixed windows until they reset (plus LATE for records arriving late).
local function hash_need(now, newest, f5o, dr, wr, mr)
  local need = math.max(now + MARKER_TTL, tonumber(dr), tonumber(wr), tonumber(mr)) + LATE
  if newest then need = math.max(need, newest + DAY + LATE) end
  if f5o then need = math.max(need, f5o + FIVE_H + LATE) end
  return need
end

-- Adds to a fixed window's counter, which keeps its window's start: a new window starts from
-- zero, an older one than the newest counted is over and changes nothing.
local function count(s, field, start_field, start, amount)
  local stored = s.f[start_field]
  if stored == start then
    bump(s, field, amount)
  elseif not stored or tonumber(stored) < tonumber(start) then
    put(s, start_field, start)
    put(s, field, amount)
  end
end

-- When enough of the oldest buckets have left for sum to drop below limit; nil: never. Walks
-- forward from the window's first bucket, a chunk at a time, only as far as it takes.
local function release_at(s, cursor, length, limit, sum, now)
  local b = tonumber(s.f[cursor])
  local last = now - now % BUCKET
  while b <= last do
    local names = {}
    while b <= last and #names < CHUNK do
      names[#names + 1] = int(b)
      b = b + BUCKET
    end
    local values = redis.call('HMGET', s.b, unpack(names))
    for i = 1, #names do
      if values[i] then
        sum = sum - tonumber(values[i])
        if sum < limit then return tonumber(names[i]) + BUCKET - 1 + length end
      end
    end
  end
  -- Buckets after now (spend billed on a clock ahead of this one), in order.
  local later = {}
  local all = redis.call('HGETALL', s.b)
  for i = 1, #all, 2 do
    if tonumber(all[i]) > last then later[#later + 1] = {tonumber(all[i]), tonumber(all[i + 1])} end
  end
  table.sort(later, function(x, y) return x[1] < y[1] end)
  for _, e in ipairs(later) do
    sum = sum - e[2]
    if sum < limit then return e[1] + BUCKET - 1 + length end
  end
  return nil
end
"#;

/// KEYS: per check (subjects, then providers) the 3 spend keys of `LIMIT_LIB`, then `rpm`
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
local snow = server_now(ARGV[1], now)
local has_session, session, ttl = ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
local request_id = ARGV[5]
local nsub, nprov = tonumber(ARGV[6]), tonumber(ARGV[7])
local stride = SPEND_KEYS + 2
local checks = {}
local a = 7
for i = 1, nsub + nprov do
  local k = (i - 1) * stride
  -- One constructor per check: a table that grows is reallocated.
  checks[i] = {sp = KEYS[k + 1], b = KEYS[k + 2], ids = KEYS[k + 3], rpm_key = KEYS[k + 4], ses = KEYS[k + 5],
    rpm = tonumber(ARGV[a + 1]), conc = tonumber(ARGV[a + 2]), shape = ARGV[a + 3],
    ds = ARGV[a + 4], dr = ARGV[a + 5], ws = ARGV[a + 6], wr = ARGV[a + 7], ms = ARGV[a + 8],
    mr = ARGV[a + 9], ts = ARGV[a + 10], first = a + 12, nw = tonumber(ARGV[a + 11]), f = false, set = false}
  a = a + 11 + 2 * checks[i].nw
end

-- Windows missing or kept for another shape: rebuild first, count nothing.
local cold = {}
for i, c in ipairs(checks) do
  if c.nw > 0 then
    load(c)
    if c.f.shape ~= c.shape or num(c.f.mexp) <= snow then cold[#cold + 1] = tostring(i) end
  end
end
if #cold > 0 then return {'warm', unpack(cold)} end

-- A window's current spend (as stored, exact) and its reset ('' = none).
local function value(c, code)
  if code == 'r5' or code == 'r24' then
    expire(c, now, code)
    return c.f[code] or '0', ''
  elseif code == 'f5' then
    local opened = c.f.f5o and tonumber(c.f.f5o)
    if opened and opened + FIVE_H > now then return c.f.f5s or '0', int(opened + FIVE_H) end
    return '0', ''
  elseif code == 'd' then
    if c.f.ds == c.ds then return c.f.d or '0', c.dr end
    return '0', c.dr
  elseif code == 'w' then
    if c.f.ws == c.ws then return c.f.w or '0', c.wr end
    return '0', c.wr
  elseif code == 'm' then
    if c.f.ms == c.ms then return c.f.m or '0', c.mr end
    return '0', c.mr
  end
  if c.f.ts == c.ts then return c.f.t or '0', '' end
  return '0', ''
end

-- The first spend window at or over its limit: {code, current, limit, reset}, or nil.
local function spend_over(c)
  for w = c.first, c.first + 2 * c.nw - 1, 2 do
    local code, limit = ARGV[w], ARGV[w + 1]
    local current, reset = value(c, code)
    local lim = tonumber(limit)
    if tonumber(current) >= lim then
      local release = nil
      if code == 'r5' then
        release = release_at(c, 'c5', FIVE_H, lim, tonumber(current), now)
      elseif code == 'r24' then
        release = release_at(c, 'c24', DAY, lim, tonumber(current), now)
      end
      if release then reset = int(release) end
      return {code, current, limit, reset}
    end
  end
  return nil
end

-- Moved cursors are written whatever the answer (they describe the same sums).
local function flush_all()
  for _, c in ipairs(checks) do
    if c.set then flush(c) end
  end
end

for i = 1, nsub do
  local hit = spend_over(checks[i])
  if hit then
    flush_all()
    return {'reject', tostring(i), hit[1], hit[2], hit[3], hit[4], int(now)}
  end
end

if has_session then
  for i = 1, nsub do
    local c = checks[i]
    if c.conc > 0 then
      -- A session seen within the TTL is admitted without counting the others.
      local seen = redis.call('ZSCORE', c.ses, session)
      if not seen or tonumber(seen) <= now - ttl then
        redis.call('ZREMRANGEBYSCORE', c.ses, '-inf', int(now - ttl))
        local n = redis.call('ZCARD', c.ses)
        if n >= c.conc then
          flush_all()
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
      flush_all()
      local oldest = redis.call('ZRANGE', c.rpm_key, 0, 0, 'WITHSCORES')
      return {'reject', tostring(i), 'rpm', int(n), int(c.rpm), int(tonumber(oldest[2]) + RPM_MS), int(now)}
    end
  end
end

-- Everything passed: count. The newest member is now, so the whole set may go ttl after it.
local now_s = int(now)
for i = 1, nsub do
  local c = checks[i]
  if c.conc > 0 and has_session then
    redis.call('ZADD', c.ses, now_s, session)
    redis.call('PEXPIRE', c.ses, int(clamp_ttl(ttl)))
  end
  if c.rpm > 0 then
    -- Every admission counts, even one reusing a request id.
    local member, n = now_s .. ':' .. request_id, 0
    while redis.call('ZADD', c.rpm_key, 'NX', now_s, member) == 0 do
      n = n + 1
      member = now_s .. ':' .. request_id .. ':' .. n
    end
    redis.call('PEXPIRE', c.rpm_key, RPM_MS)
  end
end

local over = {'ok'}
for i = nsub + 1, nsub + nprov do
  if spend_over(checks[i]) then over[#over + 1] = tostring(i) end
end
flush_all()
return over
"#;

/// KEYS: per record the 3 spend keys. ARGV: now ('' = TIME); per record: shape, arrival,
/// request id, amount, the frame (as in `ADMIT_LUA`). `LimitBook::add_spend`, step by step.
const ADD_SPEND_LUA: &str = r#"
local now = clock(ARGV[1])
local snow = server_now(ARGV[1], now)
local a = 1
for r = 0, #KEYS / SPEND_KEYS - 1 do
  local s = subject(r * SPEND_KEYS)
  local shape, at, id, amount = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
  local ds, dr, ws, wr, ms, mr, ts =
    ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10], ARGV[a + 11]
  a = a + 11
  load(s)
  local marker = s.f.shape and num(s.f.mexp) > snow and s.f.shape
  if marker and marker ~= shape then
    -- Kept elsewhere now: what is here is stale, and the next admission rebuilds it.
    redis.call('DEL', s.sp, s.b, s.ids)
    s.f, marker = {}, false
  end
  -- Without a marker the spend still lands here: a rebuild overwrites it anyway.
  if take_id(s, id, now) then
    redis.call('PEXPIRE', s.ids, IDS_MS)
    expire(s, now)
    if add_rolling(s, at, amount) then extend(s.b, math.max(at - now, 0) + DAY + LATE) end
    local opened = s.f.f5o and tonumber(s.f.f5o)
    if opened and opened + FIVE_H > at then
      bump(s, 'f5s', amount)
    else
      opened = at
      put(s, 'f5o', int(at))
      put(s, 'f5s', amount)
    end
    count(s, 'd', 'ds', ds, amount)
    count(s, 'w', 'ws', ws, amount)
    count(s, 'm', 'ms', ms, amount)
    count(s, 't', 'ts', ts, amount)
    if marker then put(s, 'mexp', int(snow + MARKER_TTL)) end
    finish(s, now, hash_need(now, at, opened, dr, wr, mr))
  end
end
return 1
"#;

/// KEYS: per snapshot the 3 spend keys. ARGV: now ('' = TIME); per snapshot: shape, the frame
/// (as in `ADMIT_LUA`), daily, weekly, monthly and total spend, fixed 5 h opened ('' = none) and
/// spend, the number of events and per event its arrival, request id and amount. Replaces the
/// subjects' windows and marks them loaded: `LimitBook::warm`.
const WARM_LUA: &str = r#"
local now = clock(ARGV[1])
local snow = server_now(ARGV[1], now)
local a = 1
for r = 0, #KEYS / SPEND_KEYS - 1 do
  local s = subject(r * SPEND_KEYS)
  local shape = ARGV[a + 1]
  local ds, dr, ws, wr, ms, mr, ts =
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local daily, weekly, monthly, total = ARGV[a + 9], ARGV[a + 10], ARGV[a + 11], ARGV[a + 12]
  local opened, fixed_sum, nev = ARGV[a + 13], ARGV[a + 14], tonumber(ARGV[a + 15])
  a = a + 15
  redis.call('DEL', s.sp, s.b, s.ids)
  s.f, s.set = {}, {}
  expire(s, now)
  local newest = nil
  for _ = 1, nev do
    local at = tonumber(ARGV[a + 1])
    -- A request listed twice counts once (its first listing).
    if take_id(s, ARGV[a + 2], now) then add_rolling(s, at, ARGV[a + 3]) end
    if newest == nil or at > newest then newest = at end
    a = a + 3
  end
  local f5o = nil
  if opened ~= '' then
    f5o = tonumber(opened)
    put(s, 'f5o', opened)
    put(s, 'f5s', fixed_sum)
  end
  put(s, 'ds', ds)
  put(s, 'd', daily)
  put(s, 'ws', ws)
  put(s, 'w', weekly)
  put(s, 'ms', ms)
  put(s, 'm', monthly)
  put(s, 'ts', ts)
  put(s, 't', total)
  put(s, 'shape', shape)
  put(s, 'mexp', int(snow + MARKER_TTL))
  finish(s, now, hash_need(now, newest, f5o, dr, wr, mr))
  if newest then redis.call('PEXPIRE', s.b, int(clamp_ttl(math.max(newest - now, 0) + DAY + LATE))) end
  redis.call('PEXPIRE', s.ids, IDS_MS)
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
         {RPM_WINDOW_MS}, {LATE_MS}, {MARKER_TTL_MS}, {MAX_LUA_MS}\nlocal BUCKET, IDS_MS, HOUR = \
         {ROLLING_BUCKET_MS}, {REQUEST_ID_MEMORY_MS}, 3600000\n{LIMIT_LIB}{body}"
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
        let shared = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| StateError(format!("redis: {e}")))?;
        let store = Self {
            connections: Arc::new(Connections { client, config, shared, per_runtime: RwLock::default() }),
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
        let mut conn = store.connections.current();
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
        let mut conn = self.connections.current();
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
const SPEND_PARTS: [&str; 3] = ["sp", "b", "ids"];

/// The fields of a subject's `sp` hash, as `LIMIT_LIB` reads them (a test checks the two agree).
#[cfg(test)]
const SPEND_FIELDS: [&str; 17] = [
    "shape", "mexp", "x", "r5", "r24", "c5", "c24", "f5o", "f5s", "ds", "d", "ws", "w", "ms", "m", "ts", "t",
];

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
            let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
            let (time, record): (Value, Value) =
                self.call("breaker_status", pipe.query_async(&mut conn)).await?;
            // The state is derived by the same Rust code as for the memory store.
            Ok(BreakerStatus::of(&parse_breaker(record)?, &cfg, parse_time(time)?))
        })
    }

    fn reset_breaker(&self, provider: Id) -> BoxFuture<'_, Result<(), StateError>> {
        Box::pin(async move {
            let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
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
                let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
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
            let mut conn = self.connections.current();
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
    fn the_spend_fields_are_the_scripts() {
        let listed = SPEND_FIELDS.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ");
        let script: String = LIMIT_LIB.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(script.contains(&format!("local FIELDS = {{{listed}}}")), "{listed}");
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
