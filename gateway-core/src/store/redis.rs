//! [`StateStore`] on Redis, so that several gateway replicas share session bindings, provider
//! session counts, circuit breakers and cooldowns.
//!
//! # Time
//! Every time-dependent decision uses the Redis server's clock (`TIME` inside the Lua scripts,
//! `TIME` in the read pipelines, relative expiries), never the replica's: replicas with skewed
//! clocks still agree on when a session left its window or a circuit went half-open.
//!
//! # Key layout
//! With the default prefix `gw:` (any prefix without `{`):
//!
//! | key | type | content | TTL |
//! | --- | --- | --- | --- |
//! | `gw:{s:<session>}:bind` | string | bound provider id | session TTL, refreshed on rebind |
//! | `gw:{p:<id>}:sessions` | sorted set | session → last seen (server ms) | session TTL after the last admission |
//! | `gw:{p:<id>}:breaker` | hash | `failures`, `half_open_successes`, `opened_at_ms`, `last_failure` | 24 h + open period after the last change |
//! | `gw:{p:<id>}:cooldown` | string | cooldown end (server ms) | until the cooldown ends |
//!
//! The hash tag (`{…}`) names the logical entity, so every key a script or a multi-key command
//! touches (a provider's breaker and cooldown in [`StateStore::reset_breaker`]) lives in one
//! Redis Cluster slot. Reads across entities ([`StateStore::routing_view`]) are one pipeline
//! instead of one script, so they need no common slot. Every key expires: Redis never fills up
//! with the state of sessions and providers long gone.
//!
//! # Writes
//! Each write is one Lua script run with `EVALSHA` (reloaded by the client on `NOSCRIPT`) or one
//! single-key command, so it is atomic across replicas. The breaker script mirrors
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
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Script, Value};

use super::state::{AttemptResult, EpochMs, ProviderHealth, RoutingView, StateError, StateStore};
use crate::config::Id;
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

/// Settings of a [`RedisStateStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStateOptions {
    /// Prepended to every key, so that several gateways (or tests) share one Redis. Must not
    /// contain `{`, which would move the hash tag. Default `gw:`.
    pub prefix: String,
    /// Upper bound of every call, connecting included. Default 200 ms.
    pub timeout: Duration,
}

impl Default for RedisStateOptions {
    fn default() -> Self {
        Self { prefix: "gw:".to_owned(), timeout: Duration::from_millis(200) }
    }
}

/// Routing state shared by gateway replicas through Redis. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct RedisStateStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    scripts: std::sync::Arc<Scripts>,
    /// Until when calls fail at once (see [`UNAVAILABLE_BACKOFF`]).
    unavailable_until: std::sync::Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStateStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The Lua scripts, hashed once.
struct Scripts {
    acquire: Script,
    record: Script,
    cooldown: Script,
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

/// Fields of the breaker hash, in the order the reads ask for them.
const BREAKER_FIELDS: [&str; 4] = ["failures", "half_open_successes", "opened_at_ms", "last_failure"];

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_PRELUDE}{body}"))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse<T: redis::FromRedisValue>(value: Value, what: &str) -> Result<T, StateError> {
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
            scripts: std::sync::Arc::new(Scripts {
                acquire: script(ACQUIRE_LUA),
                record: script(RECORD_LUA),
                cooldown: script(COOLDOWN_LUA),
            }),
            unavailable_until: Default::default(),
        };
        // Connect now, so the first request does not pay for it; load the scripts for the same
        // reason (EVALSHA would load them on NOSCRIPT anyway).
        let mut conn = store.conn.clone();
        let scripts = store.scripts.clone();
        let warm_up = store
            .call("connect", async move {
                for s in [&scripts.acquire, &scripts.record, &scripts.cooldown] {
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
    ) -> BoxFuture<'a, Result<RoutingView, StateError>> {
        Box::pin(async move {
            // One pipeline, not one script: the keys belong to several entities, hence to several
            // cluster slots. Each entity's value is read by one command, so it is consistent.
            let mut pipe = redis::pipe();
            pipe.cmd("TIME");
            if let Some(s) = session {
                pipe.cmd("GET").arg(self.binding_key(s));
            }
            for &p in providers {
                pipe.cmd("HMGET").arg(self.breaker_key(p)).arg(&BREAKER_FIELDS[..]);
                pipe.cmd("GET").arg(self.cooldown_key(p));
            }
            let mut conn = self.conn.clone();
            let replies: Vec<Value> = self.call("routing_view", pipe.query_async(&mut conn)).await?;
            let mut replies = replies.into_iter();
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
                let cooldown_until_ms =
                    parse::<Option<EpochMs>>(next()?, "cooldown")?.filter(|t| *t > now_ms);
                health.push(ProviderHealth { breaker, cooldown_until_ms });
            }
            Ok(RoutingView { binding, health, now_ms })
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
