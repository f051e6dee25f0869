//! Where rules keep what they have seen: sliding windows, first-seen sets, running
//! means and cool-downs. In Redis (shared by every node: several nodes count
//! together), or in the process (embedded mode, or no Redis configured).
//!
//! Each call takes a whole batch's observations: to Redis they go as one pipeline of
//! script calls (one call per rule and group), so a batch costs one round trip
//! however many rules it touches. Each script touches the keys of one group, tagged
//! (`{...}`) into one slot, so the same calls work on a Redis Cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use redis::Script;
use uuid::Uuid;

use crate::tiers::redis::RedisLink;
use crate::tiers::HotTierError;

/// What one rule saw of one group in one batch.
#[derive(Debug, Clone)]
pub enum Observation {
    /// Members entering a sliding window: `(member, time in ms, event id)`. For a
    /// threshold the member is the event id; for a distinct count, the counted value.
    Window { key: String, distinct: bool, window_ms: i64, cap: u32, threshold: u32, members: Vec<(String, i64, Uuid)> },
    /// Values shown by one group at `at_ms`; those not seen within `horizon_ms` are new.
    Seen { key: String, horizon_ms: i64, at_ms: i64, values: Vec<String> },
    /// Amounts, in order, for a running mean.
    Norm { key: String, amounts: Vec<f64> },
}

/// What the state answered for one [`Observation`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The members now in the window, and (when at the threshold or over) the ids
    /// of the latest events among them, newest first.
    Window { count: u64, ids: Vec<Uuid> },
    /// The values new to a group that had shown others before.
    Seen { new: Vec<String> },
    /// For each amount, the mean and count before it.
    Norm { before: Vec<(f64, u64)> },
}

/// How many event ids an alert carries.
pub const ALERT_IDS: usize = 20;
/// Weight of the newest amount in a running mean: about the last 100 amounts count.
pub const NORM_ALPHA: f64 = 2.0 / 101.0;
/// The most values a first-seen set keeps per group (least recent go first).
const SEEN_CAP: u32 = 1000;
/// How long a running mean outlives its last amount.
const NORM_TTL_MS: i64 = 90 * 86_400_000;

/// The state behind the rules.
pub trait WindowState: Send + Sync {
    /// Applies a batch's observations; one outcome per observation, in order.
    fn observe<'a>(&'a self, observations: &'a [Observation]) -> BoxFuture<'a, Result<Vec<Outcome>, HotTierError>>;

    /// Claims cool-downs: `true` for each key not claimed within its length (ms),
    /// which is then claimed.
    fn claim<'a>(&'a self, keys: &'a [(String, u64)]) -> BoxFuture<'a, Result<Vec<bool>, HotTierError>>;
}

/// `KEYS`: the window (member -> time) and, for a distinct count, member -> event id.
/// `ARGV`: window ms, cap, threshold, distinct flag, then (member, ms, id) triples.
const WINDOW_SCRIPT: &str = r#"
local window, cap, threshold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local distinct = ARGV[4] == '1'
local newest = -1
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if top[2] then newest = tonumber(top[2]) end
-- Members in chunks (Lua's unpack takes a few thousand values at most); GT keeps a
-- member's latest time.
local adds, ids = {}, {}
local function flush()
  if #adds > 0 then redis.call('ZADD', KEYS[1], 'GT', unpack(adds)) end
  if #ids > 0 then redis.call('HSET', KEYS[2], unpack(ids)) end
  adds, ids = {}, {}
end
for i = 5, #ARGV, 3 do
  local at = tonumber(ARGV[i + 1])
  adds[#adds + 1] = at
  adds[#adds + 1] = ARGV[i]
  if distinct then
    ids[#ids + 1] = ARGV[i]
    ids[#ids + 1] = ARGV[i + 2]
  end
  if at > newest then newest = at end
  if #adds >= 2000 then flush() end
end
flush()
local edge = newest - window
if distinct then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', edge)
  for s = 1, #gone, 1000 do redis.call('HDEL', KEYS[2], unpack(gone, s, math.min(s + 999, #gone))) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', edge)
local count = redis.call('ZCARD', KEYS[1])
if count > cap then
  if distinct then
    local gone = redis.call('ZRANGE', KEYS[1], 0, count - cap - 1)
    for s = 1, #gone, 1000 do redis.call('HDEL', KEYS[2], unpack(gone, s, math.min(s + 999, #gone))) end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, count - cap - 1)
  count = cap
end
redis.call('PEXPIRE', KEYS[1], window + 60000)
if distinct then redis.call('PEXPIRE', KEYS[2], window + 60000) end
local out = {count}
if count >= threshold then
  local latest = redis.call('ZREVRANGE', KEYS[1], 0, 19)
  if distinct then
    for _, id in ipairs(redis.call('HMGET', KEYS[2], unpack(latest))) do
      if id then table.insert(out, id) end
    end
  else
    for _, id in ipairs(latest) do table.insert(out, id) end
  end
end
return out
"#;

/// `KEYS`: value -> last seen ms. `ARGV`: at ms, horizon ms, cap, values.
const SEEN_SCRIPT: &str = r#"
local at, horizon, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at - horizon)
local count = redis.call('ZCARD', KEYS[1])
local new = {}
local values = {}
for i = 4, #ARGV do values[#values + 1] = ARGV[i] end
if count > 0 then
  local held = redis.call('ZMSCORE', KEYS[1], unpack(values))
  for i, score in ipairs(held) do
    if not score then table.insert(new, values[i]) end
  end
end
local adds = {}
for _, value in ipairs(values) do
  adds[#adds + 1] = at
  adds[#adds + 1] = value
end
redis.call('ZADD', KEYS[1], 'GT', unpack(adds))
count = count + #values
if count > cap then
  count = redis.call('ZCARD', KEYS[1])
  if count > cap then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, count - cap - 1) end
end
redis.call('PEXPIRE', KEYS[1], horizon)
return new
"#;

/// `KEYS`: a hash of `mean` and `n`. `ARGV`: alpha, ttl ms, then amounts. Returns
/// (mean, n) before each amount, as strings.
const NORM_SCRIPT: &str = r#"
local alpha = tonumber(ARGV[1])
local mean = tonumber(redis.call('HGET', KEYS[1], 'mean') or '0')
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local out = {}
for i = 3, #ARGV do
  local x = tonumber(ARGV[i])
  table.insert(out, string.format('%.17g', mean))
  table.insert(out, tostring(n))
  if n == 0 then mean = x else mean = mean + alpha * (x - mean) end
  n = n + 1
end
redis.call('HSET', KEYS[1], 'mean', string.format('%.17g', mean), 'n', tostring(n))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return out
"#;

/// Rule state in Redis, shared by every node on it.
pub struct RedisState {
    link: Arc<RedisLink>,
    window: Script,
    seen: Script,
    norm: Script,
}

impl RedisState {
    pub fn new(link: Arc<RedisLink>) -> RedisState {
        RedisState { link, window: Script::new(WINDOW_SCRIPT), seen: Script::new(SEEN_SCRIPT), norm: Script::new(NORM_SCRIPT) }
    }

    fn invocation(&self, observation: &Observation) -> redis::ScriptInvocation<'_> {
        match observation {
            Observation::Window { key, distinct, window_ms, cap, threshold, members } => {
                let mut call = self.window.prepare_invoke();
                call.key(format!("{key}:w")).key(format!("{key}:i"));
                call.arg(*window_ms).arg(*cap).arg(*threshold).arg(if *distinct { "1" } else { "0" });
                for (member, at, id) in members {
                    call.arg(member.as_str()).arg(*at).arg(id.to_string());
                }
                call
            }
            Observation::Seen { key, horizon_ms, at_ms, values } => {
                let mut call = self.seen.prepare_invoke();
                call.key(format!("{key}:s")).arg(*at_ms).arg(*horizon_ms).arg(SEEN_CAP);
                for value in values {
                    call.arg(value.as_str());
                }
                call
            }
            Observation::Norm { key, amounts } => {
                let mut call = self.norm.prepare_invoke();
                call.key(format!("{key}:n")).arg(NORM_ALPHA).arg(NORM_TTL_MS);
                for amount in amounts {
                    call.arg(*amount);
                }
                call
            }
        }
    }

    /// Sends `pipes` at once (one for a single server; one per call for a cluster,
    /// whose calls go to different slots), loading the scripts when Redis has
    /// forgotten them.
    async fn send(&self, pipes: Vec<redis::Pipeline>) -> Result<Vec<redis::Value>, HotTierError> {
        let mut connection = self.link.connection().await?;
        let replies = futures_util::future::join_all(pipes.iter().map(|pipe| {
            let mut connection = connection.clone();
            async move { pipe.query_async::<Vec<redis::Value>>(&mut connection).await }
        }))
        .await;
        // A restarted Redis has forgotten the scripts: every call of such a pipeline
        // failed, so it is sent again whole once they are loaded.
        let mut forgotten = Vec::new();
        let mut answers = Vec::with_capacity(pipes.len());
        for (i, reply) in replies.into_iter().enumerate() {
            match reply {
                Ok(values) => answers.push(values),
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    forgotten.push(i);
                    answers.push(Vec::new());
                }
                Err(e) => return Err(HotTierError::Redis(e)),
            }
        }
        if !forgotten.is_empty() {
            for script in [&self.window, &self.seen, &self.norm] {
                script.load_async(&mut connection).await.map_err(HotTierError::Redis)?;
            }
            for i in forgotten {
                answers[i] = pipes[i].query_async::<Vec<redis::Value>>(&mut connection).await.map_err(HotTierError::Redis)?;
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Like [`RedisState::send`]; when a single server's connection turns out to be
    /// dead (Redis restarted while nothing used it), once more on a fresh one, as
    /// the hot tier does, so that a stale connection is not taken for a Redis down.
    async fn send_fresh(&self, pipes: Vec<redis::Pipeline>) -> Result<Vec<redis::Value>, HotTierError> {
        match self.send(pipes.clone()).await {
            Err(HotTierError::Redis(e)) if !self.link.is_cluster() && (e.is_connection_dropped() || e.is_io_error()) => {
                tracing::debug!(error = %e, "redis connection lost; sending the rule calls again on a fresh one");
                self.link.reset().await;
                self.send(pipes).await
            }
            other => other,
        }
    }

    fn pipelines<T>(&self, items: &[T], mut add: impl FnMut(&mut redis::Pipeline, &T)) -> Vec<redis::Pipeline> {
        if self.link.is_cluster() {
            items.iter().map(|item| {
                let mut pipe = redis::pipe();
                add(&mut pipe, item);
                pipe
            }).collect()
        } else {
            let mut pipe = redis::pipe();
            items.iter().for_each(|item| add(&mut pipe, item));
            vec![pipe]
        }
    }
}

fn texts(value: &redis::Value) -> Vec<String> {
    match value {
        redis::Value::Array(items) => items.iter().filter_map(|v| redis::from_redis_value::<String>(v.clone()).ok()).collect(),
        _ => Vec::new(),
    }
}

fn decode(observation: &Observation, value: &redis::Value) -> Outcome {
    match observation {
        Observation::Window { .. } => {
            let items = match value {
                redis::Value::Array(items) => items.as_slice(),
                _ => &[],
            };
            let count = items.first().and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok()).unwrap_or(0);
            let ids = items.iter().skip(1).filter_map(|v| redis::from_redis_value::<String>(v.clone()).ok()).filter_map(|s| s.parse().ok()).collect();
            Outcome::Window { count, ids }
        }
        Observation::Seen { .. } => Outcome::Seen { new: texts(value) },
        Observation::Norm { .. } => {
            let items = texts(value);
            let before = items.chunks(2).map(|pair| (pair[0].parse().unwrap_or(0.0), pair.get(1).and_then(|n| n.parse().ok()).unwrap_or(0))).collect();
            Outcome::Norm { before }
        }
    }
}

impl WindowState for RedisState {
    fn observe<'a>(&'a self, observations: &'a [Observation]) -> BoxFuture<'a, Result<Vec<Outcome>, HotTierError>> {
        Box::pin(async move {
            if observations.is_empty() {
                return Ok(Vec::new());
            }
            let pipes = self.pipelines(observations, |pipe, o| {
                pipe.invoke_script(&self.invocation(o));
            });
            let values = self.link.guarded(self.link.timeout(), self.send_fresh(pipes)).await?;
            if values.len() != observations.len() {
                return Err(HotTierError::Redis(redis::RedisError::from((redis::ErrorKind::Client, "short reply from a rule script"))));
            }
            Ok(observations.iter().zip(&values).map(|(o, v)| decode(o, v)).collect())
        })
    }

    fn claim<'a>(&'a self, keys: &'a [(String, u64)]) -> BoxFuture<'a, Result<Vec<bool>, HotTierError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let pipes = self.pipelines(keys, |pipe, (key, ms)| {
                pipe.cmd("SET").arg(format!("{key}:c")).arg(1).arg("NX").arg("PX").arg((*ms).max(1));
            });
            let values = self.link.guarded(self.link.timeout(), self.send_fresh(pipes)).await?;
            Ok(values.iter().map(|v| !matches!(v, redis::Value::Nil)).collect())
        })
    }
}

/// Rule state in this process (embedded mode): the same answers as [`RedisState`].
#[derive(Default)]
pub struct MemoryState {
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    /// key -> member -> (ms, event id)
    windows: HashMap<String, HashMap<String, (i64, Uuid)>>,
    seen: HashMap<String, HashMap<String, i64>>,
    norms: HashMap<String, (f64, u64)>,
    cooldowns: HashMap<String, std::time::Instant>,
}

impl MemoryState {
    fn apply(memory: &mut Memory, observation: &Observation) -> Outcome {
        match observation {
            Observation::Window { key, window_ms, cap, threshold, members, .. } => {
                let window = memory.windows.entry(key.clone()).or_default();
                let mut newest = window.values().map(|(at, _)| *at).max().unwrap_or(i64::MIN);
                for (member, at, id) in members {
                    let held = window.entry(member.clone()).or_insert((*at, *id));
                    if held.0 < *at {
                        *held = (*at, *id);
                    }
                    newest = newest.max(*at);
                }
                let edge = newest - window_ms;
                window.retain(|_, (at, _)| *at > edge);
                let mut by_time: Vec<(i64, String, Uuid)> = window.iter().map(|(m, (at, id))| (*at, m.clone(), *id)).collect();
                by_time.sort();
                let excess = by_time.len().saturating_sub(*cap as usize);
                for (_, member, _) in by_time.drain(..excess) {
                    window.remove(&member);
                }
                let count = by_time.len() as u64;
                let ids = if count >= u64::from(*threshold) {
                    by_time.iter().rev().take(ALERT_IDS).map(|(_, _, id)| *id).collect()
                } else {
                    Vec::new()
                };
                Outcome::Window { count, ids }
            }
            Observation::Seen { key, horizon_ms, at_ms, values } => {
                let set = memory.seen.entry(key.clone()).or_default();
                set.retain(|_, at| *at > at_ms - horizon_ms);
                let known = !set.is_empty();
                let mut new = Vec::new();
                for value in values {
                    match set.get_mut(value) {
                        None => {
                            if known {
                                new.push(value.clone());
                            }
                            set.insert(value.clone(), *at_ms);
                        }
                        Some(at) => *at = (*at).max(*at_ms),
                    }
                }
                if set.len() > SEEN_CAP as usize {
                    let mut by_time: Vec<(i64, String)> = set.iter().map(|(v, at)| (*at, v.clone())).collect();
                    by_time.sort();
                    for (_, value) in by_time.into_iter().take(set.len() - SEEN_CAP as usize) {
                        set.remove(&value);
                    }
                }
                Outcome::Seen { new }
            }
            Observation::Norm { key, amounts } => {
                let (mean, n) = memory.norms.entry(key.clone()).or_insert((0.0, 0));
                let mut before = Vec::with_capacity(amounts.len());
                for x in amounts {
                    before.push((*mean, *n));
                    *mean = if *n == 0 { *x } else { *mean + NORM_ALPHA * (x - *mean) };
                    *n += 1;
                }
                Outcome::Norm { before }
            }
        }
    }
}

impl WindowState for MemoryState {
    fn observe<'a>(&'a self, observations: &'a [Observation]) -> BoxFuture<'a, Result<Vec<Outcome>, HotTierError>> {
        let mut memory = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let outcomes = observations.iter().map(|o| MemoryState::apply(&mut memory, o)).collect();
        Box::pin(async move { Ok(outcomes) })
    }

    fn claim<'a>(&'a self, keys: &'a [(String, u64)]) -> BoxFuture<'a, Result<Vec<bool>, HotTierError>> {
        let mut memory = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        memory.cooldowns.retain(|_, until| *until > now);
        let claimed = keys
            .iter()
            .map(|(key, ms)| {
                if memory.cooldowns.contains_key(key) {
                    return false;
                }
                memory.cooldowns.insert(key.clone(), now + std::time::Duration::from_millis(*ms));
                true
            })
            .collect();
        Box::pin(async move { Ok(claimed) })
    }
}
