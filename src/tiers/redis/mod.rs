//! The Redis hot tier: per-tenant, per-category lists of recent events.
//!
//! Keys (all of a tenant's share the `{t:<tenant>}` hash tag, hence one Cluster slot):
//!
//! - `<prefix>:v1:{t:<tenant>}:<category>:events`: LIST of JSON lines, newest first,
//!   trimmed to the category's length cap;
//! - `<prefix>:v1:{t:<tenant>}:<category>:ids`: ZSET of the ids in that list, scored
//!   in push order, so a retried event is not pushed twice.
//!
//! Each batch is one script call per tenant: for each of its lists, push new ids,
//! trim list and id set back to the cap when the push went past it, refresh the TTL
//! of both keys, atomically. To a single server the calls go as one pipeline; to a
//! Redis Cluster each goes to its slot's master, all at once ([`RedisLink`]).

mod link;

use std::collections::BTreeMap;
use std::sync::Arc;

use ::redis::{AsyncCommands, Script};

pub use link::{Connection, RedisLink};

use super::{BoxFuture, HotEntry, HotTier, HotTierError, LineEdit};
use crate::config::RedisSettings;
use crate::event::Category;

/// Version segment of every key; bump it when the layout changes.
pub const KEY_VERSION: &str = "v1";

/// The list holding a tenant's recent events of one category.
pub fn events_key(prefix: &str, tenant: &str, category: Category) -> String {
    format!("{prefix}:{KEY_VERSION}:{{t:{tenant}}}:{category}:events")
}

/// The id set that de-duplicates pushes to [`events_key`].
pub fn ids_key(prefix: &str, tenant: &str, category: Category) -> String {
    format!("{prefix}:{KEY_VERSION}:{{t:{tenant}}}:{category}:ids")
}

/// One call per tenant and batch (a tenant's keys share a Cluster slot). KEYS: the
/// events and ids key of each of the tenant's lists in the batch, in pairs. ARGV, per
/// list in the same order: max_len, ttl, count, then the `count` ids, then their
/// `count` payloads (both oldest first; the caller sends each id once per call). Ids
/// already in a list's id set are not pushed again. New ids are scored after the
/// highest score in the set, so the set keeps push order without a counter key; it is
/// read with one ZMSCORE and extended with one ZADD and one LPUSH per 500 events.
/// When no id is known (the usual case) the payloads go to LPUSH straight from ARGV,
/// without being copied into a Lua table first; list and id set are trimmed when the
/// push took the list over its cap.
const PUSH_SCRIPT: &str = r#"
local step = 500
local a = 1
local pushed = 0
for k = 1, #KEYS, 2 do
  local events, ids = KEYS[k], KEYS[k + 1]
  local max_len, ttl, count = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local first_id = a + 3
  local first_payload = first_id + count
  local last = 0
  local top = redis.call('ZRANGE', ids, -1, -1, 'WITHSCORES')
  if top[2] then
    last = tonumber(top[2])
  end
  local known = nil
  for s = 0, count - 1, step do
    local e = math.min(s + step, count) - 1
    local scores = redis.call('ZMSCORE', ids, unpack(ARGV, first_id + s, first_id + e))
    for j = 1, e - s + 1 do
      if scores[j] then
        known = known or {}
        known[s + j] = true
      end
    end
  end
  local new = count
  local length = 0
  if known == nil then
    for s = 0, count - 1, step do
      local e = math.min(s + step, count) - 1
      local members = {}
      for i = s, e do
        members[#members + 1] = last + i + 1
        members[#members + 1] = ARGV[first_id + i]
      end
      redis.call('ZADD', ids, 'NX', unpack(members))
      length = redis.call('LPUSH', events, unpack(ARGV, first_payload + s, first_payload + e))
    end
  else
    local members, payloads = {}, {}
    for i = 0, count - 1 do
      if not known[i + 1] then
        last = last + 1
        members[#members + 1] = last
        members[#members + 1] = ARGV[first_id + i]
        payloads[#payloads + 1] = ARGV[first_payload + i]
      end
    end
    new = #payloads
    for s = 1, new, step do
      local e = math.min(s + step - 1, new)
      redis.call('ZADD', ids, 'NX', unpack(members, 2 * s - 1, 2 * e))
      length = redis.call('LPUSH', events, unpack(payloads, s, e))
    end
  end
  -- The id set grows and shrinks with its list, so both are over the cap together.
  if length > max_len then
    redis.call('LTRIM', events, 0, max_len - 1)
    redis.call('ZREMRANGEBYRANK', ids, 0, -max_len - 1)
  end
  redis.call('EXPIRE', events, ttl)
  redis.call('EXPIRE', ids, ttl)
  pushed = pushed + new
  a = first_payload + count
end
return pushed
"#;

/// The Redis hot tier. Redis is a cache: when it fails, callers count the miss and
/// go on; the [`RedisLink`] stops trying for `retry_interval` so a dead Redis costs
/// ingest one timeout per interval, not one per batch.
pub struct RedisHotTier {
    link: Arc<RedisLink>,
    prefix: String,
    script: Script,
}

impl RedisHotTier {
    /// A hot tier for `settings`; does not connect yet.
    pub fn new(settings: &RedisSettings) -> Result<RedisHotTier, ::redis::RedisError> {
        Ok(RedisHotTier::over(Arc::new(RedisLink::new(settings)?), settings))
    }

    /// A hot tier sharing `link` with the node's other users of Redis.
    pub fn over(link: Arc<RedisLink>, settings: &RedisSettings) -> RedisHotTier {
        RedisHotTier { link, prefix: settings.key_prefix.clone(), script: Script::new(PUSH_SCRIPT) }
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn push_batch(&self, entries: &[HotEntry<'_>]) -> Result<(), HotTierError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.link.guarded(self.link.timeout(), self.push_pipeline(entries)).await
    }

    /// The batch's pipelines: one script call per tenant, all in one pipeline for a
    /// single server, one pipeline per tenant (hence per slot) for a cluster.
    fn push_commands(&self, entries: &[HotEntry<'_>]) -> Vec<::redis::Pipeline> {
        let mut lists: BTreeMap<(&str, Category), Vec<&HotEntry<'_>>> = BTreeMap::new();
        let mut seen: foldhash::HashSet<_> = Default::default();
        for entry in entries {
            // Each id once per list and call: the script pushes every id it does not know.
            if seen.insert((entry.event.tenant_id.as_str(), entry.event.category, entry.event.id)) {
                lists.entry((entry.event.tenant_id.as_str(), entry.event.category)).or_default().push(entry);
            }
        }
        let mut pipes = vec![::redis::pipe()];
        let mut lists = lists.iter().peekable();
        while let Some(((tenant, _), _)) = lists.peek() {
            let tenant = *tenant;
            let mut invocation = self.script.prepare_invoke();
            while let Some(((_, category), list)) = lists.next_if(|((t, _), _)| *t == tenant) {
                let first = list[0];
                invocation
                    .key(events_key(&self.prefix, tenant, *category))
                    .key(ids_key(&self.prefix, tenant, *category))
                    .arg(first.max_len)
                    .arg(first.ttl_seconds)
                    .arg(list.len());
                for entry in list {
                    invocation.arg(entry.event.id.to_string());
                }
                for entry in list {
                    invocation.arg(entry.line);
                }
            }
            if self.link.is_cluster() && !pipes[pipes.len() - 1].is_empty() {
                pipes.push(::redis::pipe());
            }
            let last = pipes.len() - 1;
            pipes[last].invoke_script(&invocation).ignore();
        }
        pipes
    }

    /// Sends the batch's pipelines, all at once.
    async fn push_pipeline(&self, entries: &[HotEntry<'_>]) -> Result<(), HotTierError> {
        let pipes = self.push_commands(entries);
        let sent = futures_util::future::join_all(pipes.iter().map(|pipe| self.push_one(pipe))).await;
        sent.into_iter().collect()
    }

    /// Sends one pipeline; when a single server's connection turns out to be dead
    /// (Redis restarted while this node was idle, so nothing noticed), sends it once
    /// more on a fresh connection before the batch counts as a miss (the cluster
    /// client reconnects and retries by itself). A repeat adds nothing: the script
    /// skips ids its list already holds.
    async fn push_one(&self, pipe: &::redis::Pipeline) -> Result<(), HotTierError> {
        match self.send_push(pipe).await {
            Err(HotTierError::Redis(e)) if !self.link.is_cluster() && (e.is_connection_dropped() || e.is_io_error()) => {
                tracing::debug!(error = %e, "redis connection lost; pushing again on a fresh one");
                self.link.reset().await;
                self.send_push(pipe).await
            }
            other => other,
        }
    }

    async fn send_push(&self, pipe: &::redis::Pipeline) -> Result<(), HotTierError> {
        let mut connection = self.link.connection().await?;
        match pipe.query_async::<()>(&mut connection).await {
            // A restarted Redis has forgotten the script: load it and send again.
            Err(e) if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) => {
                self.script.load_async(&mut connection).await.map_err(HotTierError::Redis)?;
                pipe.query_async::<()>(&mut connection).await.map_err(HotTierError::Redis)
            }
            other => other.map_err(HotTierError::Redis),
        }
    }
}

/// Replaces entries in one list, each only if it is still there (pushes may have
/// moved it): `ARGV` holds (old, new) pairs.
const REWRITE_SCRIPT: &str = r#"
local replaced = 0
for i = 1, #ARGV, 2 do
  local index = redis.call('LPOS', KEYS[1], ARGV[i])
  if index then
    redis.call('LSET', KEYS[1], index, ARGV[i + 1])
    replaced = replaced + 1
  end
end
return replaced
"#;

impl RedisHotTier {
    /// The events lists of `categories` for one tenant or (SCAN) all of them.
    async fn list_keys(
        &self,
        connection: &mut Connection,
        tenant: Option<&str>,
        categories: &[Category],
    ) -> Result<Vec<String>, HotTierError> {
        let mut keys = Vec::new();
        for category in categories {
            match tenant {
                Some(tenant) => keys.push(events_key(&self.prefix, tenant, *category)),
                None => {
                    let pattern = format!("{}:{KEY_VERSION}:{{t:*}}:{category}:events", self.prefix);
                    keys.extend(self.link.scan(connection, &pattern).await?);
                }
            }
        }
        Ok(keys)
    }

    /// Runs `work` unless in back-off, within `4 × timeout`, and records the outcome.
    async fn guarded<T>(&self, work: impl std::future::Future<Output = Result<T, HotTierError>>) -> Result<T, HotTierError> {
        self.link.guarded(self.link.timeout() * 4, work).await
    }

    async fn read_lists(&self, tenant: Option<&str>, categories: &[Category]) -> Result<Vec<Vec<u8>>, HotTierError> {
        self.guarded(async {
            let mut connection = self.link.connection().await?;
            let keys = self.list_keys(&mut connection, tenant, categories).await?;
            if keys.is_empty() {
                // No list to read (no category asked for, or no tenant has events
                // yet): an empty pipeline is an error to Redis, which would mark the
                // hot tier down and make the next batches skip it.
                return Ok(Vec::new());
            }
            if self.link.is_cluster() && tenant.is_none() {
                // Keys of many tenants live in many slots: one request each, at once.
                let reads = keys.iter().map(|key| {
                    let mut connection = connection.clone();
                    async move { connection.lrange::<_, Vec<Vec<u8>>>(key, 0, -1).await }
                });
                let lists = futures_util::future::try_join_all(reads).await.map_err(HotTierError::Redis)?;
                return Ok(lists.into_iter().flatten().collect());
            }
            let mut pipe = ::redis::pipe();
            for key in &keys {
                pipe.lrange(key, 0, -1);
            }
            let lists: Vec<Vec<Vec<u8>>> = pipe.query_async(&mut connection).await.map_err(HotTierError::Redis)?;
            Ok(lists.into_iter().flatten().collect())
        })
        .await
    }

    async fn rewrite_lists(&self, tenant: Option<&str>, edit: &LineEdit<'_>) -> Result<u64, HotTierError> {
        self.guarded(async {
            let mut connection = self.link.connection().await?;
            let script = Script::new(REWRITE_SCRIPT);
            let mut replaced = 0u64;
            for key in self.list_keys(&mut connection, tenant, &Category::ALL).await? {
                let lines: Vec<Vec<u8>> = connection.lrange(&key, 0, -1).await.map_err(HotTierError::Redis)?;
                let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                    lines.into_iter().filter_map(|old| edit(&old).map(|new| (old, new))).collect();
                if pairs.is_empty() {
                    continue;
                }
                let mut invocation = script.key(&key);
                for (old, new) in &pairs {
                    invocation.arg(old.as_slice()).arg(new.as_slice());
                }
                let count: u64 = invocation.invoke_async(&mut connection).await.map_err(HotTierError::Redis)?;
                replaced += count;
            }
            Ok(replaced)
        })
        .await
    }
}

impl HotTier for RedisHotTier {
    fn recent<'a>(
        &'a self,
        tenant: Option<&'a str>,
        categories: &'a [Category],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, HotTierError>> {
        Box::pin(self.read_lists(tenant, categories))
    }

    fn push<'a>(&'a self, entries: &'a [HotEntry<'a>]) -> BoxFuture<'a, Result<(), HotTierError>> {
        Box::pin(self.push_batch(entries))
    }

    fn rewrite<'a>(&'a self, tenant: Option<&'a str>, edit: &'a LineEdit<'a>) -> BoxFuture<'a, Result<u64, HotTierError>> {
        Box::pin(self.rewrite_lists(tenant, edit))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), HotTierError>> {
        Box::pin(async move {
            let ping = async {
                let mut connection = self.link.connection().await?;
                ::redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map_err(HotTierError::Redis)
                    .map(|_| ())
            };
            let timeout = self.link.timeout();
            tokio::time::timeout(timeout, ping).await.unwrap_or(Err(HotTierError::Timeout(timeout.as_millis() as u64)))
        })
    }
}
