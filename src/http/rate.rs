//! Per-key rate limits: `rate_limit.requests_per_second`, with bursts of
//! `rate_limit.burst`. A request beyond it is answered 429 with `Retry-After`, before
//! any work is done for it.
//!
//! With Redis, every node spends one budget per key: GCRA (the generic cell rate
//! algorithm) keeps a single timestamp per key in Redis, moved by one script call per
//! request, on Redis's own clock. While Redis cannot answer, each node falls back to
//! its own token bucket (so the budget is per node until Redis is back), and counts
//! the checks made that way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ::redis::Script;

use crate::tiers::redis::RedisLink;
use crate::tiers::HotTierError;

/// GCRA on Redis's clock. KEYS[1]: the key's theoretical arrival time (µs). ARGV:
/// emission interval (µs per request), burst tolerance (µs). Returns 0 when the
/// request is let in, else the µs until one would be.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed_at = tat - tolerance
if now < allowed_at then return math.ceil(allowed_at - now) end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return 0
"#;

/// Per-key limits: shared through Redis when there is one, else (and while it is
/// down) this node's buckets.
pub struct RateLimiter {
    local: LocalBuckets,
    shared: Option<Shared>,
    /// Checks made with the local buckets because Redis could not answer.
    local_fallbacks: AtomicU64,
}

struct Shared {
    link: Arc<RedisLink>,
    prefix: String,
    script: Script,
}

impl RateLimiter {
    /// This node's buckets only.
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter { local: LocalBuckets::new(per_second, burst), shared: None, local_fallbacks: AtomicU64::new(0) }
    }

    /// One budget per key across every node sharing `link`; keys under `prefix`.
    pub fn shared(per_second: f64, burst: u32, link: Arc<RedisLink>, prefix: &str) -> RateLimiter {
        let shared = Shared { link, prefix: prefix.to_owned(), script: Script::new(GCRA_SCRIPT) };
        RateLimiter { shared: Some(shared), ..RateLimiter::new(per_second, burst) }
    }

    /// Checks made on this node's buckets because Redis could not answer.
    pub fn local_fallbacks(&self) -> u64 {
        self.local_fallbacks.load(Ordering::Relaxed)
    }

    /// Takes one request from `key`'s budget; when it is spent, the seconds until it
    /// is not.
    pub async fn check(&self, key: &str) -> Result<(), u64> {
        if let Some(shared) = &self.shared {
            match self.check_shared(shared, key).await {
                Ok(verdict) => return verdict,
                Err(e) => {
                    self.local_fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "shared rate limit unavailable; using this node's");
                }
            }
        }
        self.local.check(key)
    }

    async fn check_shared(&self, shared: &Shared, key: &str) -> Result<Result<(), u64>, HotTierError> {
        let interval = 1e6 / self.local.per_second;
        let tolerance = (self.local.burst - 1.0) * interval;
        let redis_key = format!("{}:{}:{{rl:{key}}}:gcra", shared.prefix, crate::tiers::redis::KEY_VERSION);
        let wait_us: u64 = shared
            .link
            .guarded(shared.link.timeout(), async {
                let mut connection = shared.link.connection().await?;
                let mut invocation = shared.script.key(&redis_key);
                invocation.arg(interval).arg(tolerance);
                invocation.invoke_async(&mut connection).await.map_err(HotTierError::Redis)
            })
            .await?;
        Ok(if wait_us == 0 { Ok(()) } else { Err(wait_us.div_ceil(1_000_000).max(1)) })
    }
}

/// The token buckets of every key seen on this node.
#[derive(Debug)]
struct LocalBuckets {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

impl LocalBuckets {
    fn new(per_second: f64, burst: u32) -> LocalBuckets {
        LocalBuckets { per_second, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; when none is left, the seconds until one is.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            // Full buckets are the same as no bucket: drop them.
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_gets_its_burst_then_its_rate_and_keys_are_apart() {
        let limiter = LocalBuckets::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("a", t0), Ok(()));
        }
        assert_eq!(limiter.check_at("a", t0), Err(1));
        assert_eq!(limiter.check_at("b", t0), Ok(()), "another key has its own bucket");
        assert_eq!(limiter.check_at("a", t0 + Duration::from_millis(500)), Ok(()), "refilled at 2/s");
        assert!(limiter.check_at("a", t0 + Duration::from_millis(500)).is_err());
        assert_eq!(limiter.check_at("a", t0 + Duration::from_secs(60)), Ok(()));
    }
}
