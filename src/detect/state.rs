//! Where rules keep what they have seen: sliding windows, first-seen sets, recent
//! means of amounts and cool-downs. In Redis (shared by every node: several nodes
//! count together), or in the process (embedded mode, or no Redis configured).
//!
//! Each call takes a whole batch's observations: to Redis they go as one pipeline of
//! plain commands (three to five per rule and group: a sorted set added to, counted
//! inside its window or read, and given its time to live; trimmed on about one
//! observation in eight), so a batch costs one round trip however many rules it
//! touches, and a second only for the groups at their threshold (the ids of their
//! latest events).
//! Plain commands cost Redis a fraction of what the same work costs as a script's
//! calls (a script call alone costs about ten plain commands), so there is no
//! script: the recent mean of amounts is kept as sums and counts per day, which
//! several nodes add to without reading first. Each group's keys are tagged
//! (`{...}`) into one slot, so the same commands work on a Redis Cluster.
//!
//! A window ends at the newest event of the batch that touches it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::tiers::redis::RedisLink;
use crate::tiers::HotTierError;

/// One event's part in a sliding window.
#[derive(Debug, Clone)]
pub struct Member<'e> {
    /// The counted value of a distinct count; `None` for a threshold, which counts
    /// events (the member is the event's id).
    pub value: Option<Cow<'e, str>>,
    /// The event's time, ms.
    pub at: i64,
    pub id: Uuid,
}

impl Member<'_> {
    /// The member as stored.
    fn text(&self) -> String {
        self.value.as_deref().map_or_else(|| self.id.to_string(), str::to_owned)
    }
}

/// What one rule saw of one group in one batch (borrowing the batch's events).
#[derive(Debug, Clone)]
pub enum Observation<'e> {
    /// Members entering a sliding window.
    Window { key: String, distinct: bool, window_ms: i64, cap: u32, threshold: u32, members: Vec<Member<'e>> },
    /// Values shown by one group at `at_ms`; those not seen within `horizon_ms` are new.
    Seen { key: String, horizon_ms: i64, at_ms: i64, values: Vec<String> },
    /// Amounts, in order, shown by one group on the (UTC) day of `at_ms`, against the
    /// group's mean over the [`NORM_DAYS`] days ending that day.
    Norm { key: String, at_ms: i64, amounts: Vec<f64> },
}

/// What the state answered for one [`Observation`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The members now in the window, and (when at the threshold or over) the ids
    /// of the latest events among them, newest first.
    Window { count: u64, ids: Vec<Uuid> },
    /// The values new to a group that had shown others before.
    Seen { new: Vec<String> },
    /// For each amount, the recent mean and the number of amounts it is of, before it.
    Norm { before: Vec<(f64, u64)> },
}

/// How many event ids an alert carries.
pub const ALERT_IDS: usize = 20;
/// The days (today included) whose amounts make a group's recent mean.
pub const NORM_DAYS: i64 = 7;
const DAY_MS: i64 = 86_400_000;
/// The most values a first-seen set keeps per group (least recent go first).
const SEEN_CAP: u32 = 1000;
/// The member of a first-seen set scored with the newest time it was added to (no
/// value is named so: values are `field=value`).
const LATEST: &str = "*latest";
/// How long a group's sums outlive its last amount.
const NORM_TTL_MS: i64 = (NORM_DAYS + 1) * DAY_MS;

/// The state behind the rules.
pub trait WindowState: Send + Sync {
    /// Applies a batch's observations; one outcome per observation, in order.
    fn observe<'a>(&'a self, observations: &'a [Observation<'_>]) -> BoxFuture<'a, Result<Vec<Outcome>, HotTierError>>;

    /// Claims cool-downs: `true` for each key not claimed within its length (ms),
    /// which is then claimed.
    fn claim<'a>(&'a self, keys: &'a [(String, u64)]) -> BoxFuture<'a, Result<Vec<bool>, HotTierError>>;
}

/// Rule state in Redis, shared by every node on it.
pub struct RedisState {
    link: Arc<RedisLink>,
}

/// How long a window's keys outlive its newest member.
const WINDOW_GRACE_MS: i64 = 60_000;

/// An argument written as it displays, straight into the command (no string made
/// for it): a group's key with its suffix, an exclusive bound, a hash field.
#[derive(Clone, Copy)]
struct Shown<T>(T);

impl<T: std::fmt::Display> redis::ToRedisArgs for Shown<T> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(&self.0);
    }
}

/// One of a group's keys: the group's key and a suffix (`w` a window's members,
/// value -> ms; `d` a distinct count's latest event ids, id -> ms; `s` a first-seen
/// set, value -> ms; `m` the sums and counts of amounts per day; `c` a cool-down).
#[derive(Clone, Copy)]
struct Suffixed<'k>(&'k str, &'static str);

impl std::fmt::Display for Suffixed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

/// The group's key `key` with `suffix`, as a command argument.
fn part<'k>(key: &'k str, suffix: &'static str) -> Shown<Suffixed<'k>> {
    Shown(Suffixed(key, suffix))
}

/// A command on `key` with room for `args` more arguments of `bytes` in all (built
/// once, without regrowing).
fn command(name: &str, key: Shown<Suffixed<'_>>, args: usize, bytes: usize) -> redis::Cmd {
    let Shown(Suffixed(group, suffix)) = key;
    let mut cmd = redis::Cmd::with_capacity(args + 2, name.len() + group.len() + 1 + suffix.len() + bytes);
    cmd.arg(name).arg(key);
    cmd
}

/// Moves `cmd` into `pipe`; its reply is kept only when `reply`.
fn queue(pipe: &mut redis::Pipeline, cmd: &mut redis::Cmd, reply: bool) {
    pipe.add_command(std::mem::take(cmd));
    if !reply {
        pipe.ignore();
    }
}

/// What a window's first round trip left to do: fetch the ids of the latest events
/// (at the threshold or over) and trim it to its cap.
struct FollowUp {
    index: usize,
    count: u64,
}

impl RedisState {
    pub fn new(link: Arc<RedisLink>) -> RedisState {
        RedisState { link }
    }

    /// The commands of one observation; returns how many replies they give (the
    /// trims', the additions' and the times to live are ignored).
    fn commands(pipe: &mut redis::Pipeline, observation: &Observation<'_>) -> usize {
        match observation {
            Observation::Window { key, distinct, window_ms, members, .. } => {
                let newest = members.iter().map(|m| m.at).max().unwrap_or_default();
                let (w, ttl, edge) = (part(key, "w"), window_ms + WINDOW_GRACE_MS, newest - window_ms);
                let d = part(key, "d");
                if trims(members.iter().map(|m| m.id.as_u128() as u64)) {
                    queue(pipe, command("ZREMRANGEBYSCORE", w, 2, 24).arg("-inf").arg(edge), false);
                    if *distinct {
                        // The latest ids are all an alert names.
                        queue(pipe, command("ZREMRANGEBYRANK", d, 2, 8).arg(0).arg(-(ALERT_IDS as i64) - 1), false);
                    }
                }
                // GT keeps a member's latest time.
                let mut add = command("ZADD", w, 1 + 2 * members.len(), 2 + members.iter().map(|m| m.value.as_ref().map_or(36, |v| v.len()) + 13).sum::<usize>());
                add.arg("GT");
                let mut text = Uuid::encode_buffer();
                for m in members {
                    add.arg(m.at);
                    match &m.value {
                        Some(value) => add.arg(value.as_ref()),
                        None => add.arg(&*m.id.hyphenated().encode_lower(&mut text)),
                    };
                }
                queue(pipe, &mut add, false);
                if *distinct {
                    let mut ids = command("ZADD", d, 1 + 2 * members.len(), 2 + members.len() * 49);
                    ids.arg("GT");
                    for m in members {
                        ids.arg(m.at).arg(&*m.id.hyphenated().encode_lower(&mut text));
                    }
                    queue(pipe, &mut ids, false);
                    queue(pipe, command("PEXPIRE", d, 1, 12).arg(ttl), false);
                }
                // Inside the window: after its edge.
                queue(pipe, command("ZCOUNT", w, 2, 24).arg(Shown(format_args!("({edge}"))).arg("+inf"), true);
                queue(pipe, command("PEXPIRE", w, 1, 12).arg(ttl), false);
                1
            }
            Observation::Seen { key, horizon_ms, at_ms, values } => {
                // The set's values, and the sentinel LATEST scored with the newest
                // time any value was added: the group showed some value within the
                // horizon when the sentinel's score lies inside it.
                let (s, edge) = (part(key, "s"), at_ms - horizon_ms);
                if trims([*at_ms as u64]) {
                    queue(pipe, command("ZREMRANGEBYSCORE", s, 2, 24).arg("-inf").arg(edge), false);
                    // The sentinel holds the top score: the lowest ranks are values.
                    queue(pipe, command("ZREMRANGEBYRANK", s, 2, 8).arg(0).arg(-i64::from(SEEN_CAP) - 2), false);
                }
                let bytes = values.iter().map(String::len).sum::<usize>() + LATEST.len();
                queue(pipe, command("ZMSCORE", s, values.len() + 1, bytes).arg(values).arg(LATEST), true);
                let mut add = command("ZADD", s, 3 + 2 * values.len(), 2 + bytes + 13 * (values.len() + 1));
                add.arg("GT");
                for value in values.iter().map(String::as_str).chain([LATEST]) {
                    add.arg(*at_ms).arg(value);
                }
                queue(pipe, &mut add, false);
                queue(pipe, command("PEXPIRE", s, 1, 12).arg(*horizon_ms), false);
                1
            }
            Observation::Norm { key, at_ms, amounts } => {
                // A hash of `s:<day>` (sum) and `n:<day>` (count) per day: read the
                // recent days, then add today's amounts (the reads see the sums as
                // they were before this batch; the mean before each of its amounts
                // is worked out here).
                let (h, day) = (part(key, "m"), at_ms.div_euclid(DAY_MS));
                let fields = |cmd: &mut redis::Cmd, days: std::ops::Range<i64>| {
                    for d in days {
                        cmd.arg(Shown(format_args!("s:{d}"))).arg(Shown(format_args!("n:{d}")));
                    }
                };
                if trims([*at_ms as u64]) {
                    // The days that left the mean lately (older ones left with the key).
                    let mut hdel = command("HDEL", h, 2 * NORM_DAYS as usize, 24 * NORM_DAYS as usize);
                    fields(&mut hdel, day - 2 * NORM_DAYS + 1..day - NORM_DAYS + 1);
                    queue(pipe, &mut hdel, false);
                }
                let mut hmget = command("HMGET", h, 2 * NORM_DAYS as usize, 24 * NORM_DAYS as usize);
                fields(&mut hmget, day - NORM_DAYS + 1..day + 1);
                queue(pipe, &mut hmget, true);
                queue(pipe, command("HINCRBYFLOAT", h, 2, 40).arg(Shown(format_args!("s:{day}"))).arg(amounts.iter().sum::<f64>()), false);
                queue(pipe, command("HINCRBY", h, 2, 24).arg(Shown(format_args!("n:{day}"))).arg(amounts.len()), false);
                queue(pipe, command("PEXPIRE", h, 1, 12).arg(NORM_TTL_MS), false);
                1
            }
        }
    }

    /// Sends `pipes` at once (one for a single server; one per observation for a
    /// cluster, whose observations go to different slots).
    async fn send(&self, pipes: &[redis::Pipeline]) -> Result<Vec<Vec<redis::Value>>, HotTierError> {
        let connection = self.link.connection().await?;
        let replies = futures_util::future::join_all(pipes.iter().map(|pipe| {
            let mut connection = connection.clone();
            async move { pipe.query_async::<Vec<redis::Value>>(&mut connection).await }
        }))
        .await;
        replies.into_iter().map(|r| r.map_err(HotTierError::Redis)).collect()
    }

    /// Like [`RedisState::send`]; when a single server's connection turns out to be
    /// dead (Redis restarted while nothing used it), once more on a fresh one, as
    /// the hot tier does, so that a stale connection is not taken for a Redis down.
    async fn send_fresh(&self, pipes: Vec<redis::Pipeline>) -> Result<Vec<Vec<redis::Value>>, HotTierError> {
        match self.send(&pipes).await {
            Err(HotTierError::Redis(e)) if !self.link.is_cluster() && (e.is_connection_dropped() || e.is_io_error()) => {
                tracing::debug!(error = %e, "redis connection lost; sending the rule commands again on a fresh one");
                self.link.reset().await;
                self.send(&pipes).await
            }
            other => other,
        }
    }

    /// One round trip for `items`: their commands (`add` says how many replies an
    /// item's give) and, per item, its replies.
    async fn round_trip<T>(&self, items: &[T], add: impl Fn(&mut redis::Pipeline, &T) -> usize) -> Result<Vec<Vec<redis::Value>>, HotTierError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // One pipeline for a single server; one per item for a cluster (an item's keys
        // share a slot, different items' do not).
        let mut pipes = vec![redis::Pipeline::with_capacity(if self.link.is_cluster() { 4 } else { 4 * items.len() })];
        let mut counts = Vec::with_capacity(items.len());
        for item in items {
            if self.link.is_cluster() && !pipes[pipes.len() - 1].is_empty() {
                pipes.push(redis::pipe());
            }
            counts.push(add(pipes.last_mut().expect("a pipeline"), item));
        }
        let replies: Vec<redis::Value> = self.link.guarded(self.link.timeout(), self.send_fresh(pipes)).await?.into_iter().flatten().collect();
        if replies.len() != counts.iter().sum::<usize>() {
            return Err(HotTierError::Redis(redis::RedisError::from((redis::ErrorKind::Client, "short reply from the rule commands"))));
        }
        let mut replies = replies.into_iter();
        Ok(counts.into_iter().map(|n| replies.by_ref().take(n).collect()).collect())
    }
}

fn texts(value: &redis::Value) -> Vec<String> {
    match value {
        redis::Value::Array(items) => items.iter().filter_map(|v| redis::from_redis_value_ref::<String>(v).ok()).collect(),
        _ => Vec::new(),
    }
}

fn number(value: Option<&redis::Value>) -> u64 {
    value.and_then(|v| redis::from_redis_value_ref::<u64>(v).ok()).unwrap_or(0)
}

/// An observation's outcome from its replies (a window's ids come later).
fn decode(observation: &Observation<'_>, replies: &[redis::Value]) -> Outcome {
    match observation {
        Observation::Window { .. } => Outcome::Window { count: number(replies.first()), ids: Vec::new() },
        Observation::Seen { values, at_ms, horizon_ms, .. } => {
            // A value is new unless held within the horizon; the group had shown
            // values (ours or others) when the sentinel, last, is within it too.
            let edge = (at_ms - horizon_ms) as f64;
            let held: Vec<Option<f64>> = replies.first().and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
            let inside = |i: usize| held.get(i).copied().flatten().is_some_and(|at| at > edge);
            let known = inside(values.len());
            let new: Vec<String> = values.iter().enumerate().filter(|(i, _)| known && !inside(*i)).map(|(_, v)| v.clone()).collect();
            Outcome::Seen { new }
        }
        Observation::Norm { amounts, .. } => {
            // The days' sums and counts, in pairs (absent days are nil).
            let held: Vec<Option<String>> = replies.first().and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
            let (mut sum, mut n) = (0.0, 0);
            for pair in held.chunks(2) {
                sum += pair[0].as_deref().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
                n += pair.get(1).and_then(|c| c.as_deref()).and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
            }
            Outcome::Norm { before: running_means(sum, n, amounts) }
        }
    }
}

/// The mean and count before each of `amounts`, from `sum` of `n` amounts before them.
fn running_means(mut sum: f64, mut n: u64, amounts: &[f64]) -> Vec<(f64, u64)> {
    amounts
        .iter()
        .map(|x| {
            let before = (if n == 0 { 0.0 } else { sum / n as f64 }, n);
            sum += x;
            n += 1;
            before
        })
        .collect()
}

/// Whether an observation also trims its keys (about one in eight, chosen by its
/// events' ids or its time): the count itself only looks inside the window, so what
/// fell out of it can wait for a trim. The choice takes the top bits of a
/// multiplicative hash, not the low bits: times given in whole seconds are all
/// multiples of 8 ms.
fn trims(bits: impl IntoIterator<Item = u64>) -> bool {
    bits.into_iter().any(|b| b.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61 == 0)
}

impl WindowState for RedisState {
    fn observe<'a>(&'a self, observations: &'a [Observation<'_>]) -> BoxFuture<'a, Result<Vec<Outcome>, HotTierError>> {
        Box::pin(async move {
            let replies = self.round_trip(observations, RedisState::commands).await?;
            let mut outcomes: Vec<Outcome> = observations.iter().zip(&replies).map(|(o, r)| decode(o, r)).collect();
            // Windows at their threshold: the ids of their latest events, and the
            // trim of those over their cap (a flood keeps the newest members).
            let mut follow: Vec<FollowUp> = Vec::new();
            for (index, (observation, outcome)) in observations.iter().zip(&outcomes).enumerate() {
                if let (Observation::Window { threshold, .. }, Outcome::Window { count, .. }) = (observation, outcome) {
                    if *count >= u64::from(*threshold) {
                        follow.push(FollowUp { index, count: *count });
                    }
                }
            }
            let latest = self
                .round_trip(&follow, |pipe, f| {
                    let Observation::Window { key, distinct, window_ms, cap, members, .. } = &observations[f.index] else { return 0 };
                    let (w, edge) = (part(key, "w"), members.iter().map(|m| m.at).max().unwrap_or_default() - window_ms);
                    pipe.cmd("ZREMRANGEBYSCORE").arg(w).arg("-inf").arg(edge).ignore();
                    if f.count > u64::from(*cap) {
                        pipe.cmd("ZREMRANGEBYRANK").arg(w).arg(0).arg(-i64::from(*cap) - 1).ignore();
                    }
                    if *distinct {
                        pipe.cmd("ZREVRANGEBYSCORE").arg(part(key, "d")).arg("+inf").arg(Shown(format_args!("({edge}"))).arg("LIMIT").arg(0).arg(ALERT_IDS);
                    } else {
                        pipe.cmd("ZREVRANGE").arg(w).arg(0).arg(ALERT_IDS as i64 - 1);
                    }
                    1
                })
                .await?;
            for (f, replies) in follow.iter().zip(latest) {
                let Observation::Window { cap, .. } = &observations[f.index] else { continue };
                let ids = replies.first().map(texts).unwrap_or_default().iter().filter_map(|s| s.parse().ok()).take(ALERT_IDS).collect();
                outcomes[f.index] = Outcome::Window { count: f.count.min(u64::from(*cap)), ids };
            }
            Ok(outcomes)
        })
    }

    fn claim<'a>(&'a self, keys: &'a [(String, u64)]) -> BoxFuture<'a, Result<Vec<bool>, HotTierError>> {
        Box::pin(async move {
            let replies = self
                .round_trip(keys, |pipe, (key, ms)| {
                    pipe.cmd("SET").arg(part(key, "c")).arg(1).arg("NX").arg("PX").arg((*ms).max(1));
                    1
                })
                .await?;
            Ok(replies.iter().map(|r| !matches!(r.first(), Some(redis::Value::Nil) | None)).collect())
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
    /// key -> day -> (sum, count)
    norms: HashMap<String, std::collections::BTreeMap<i64, (f64, u64)>>,
    cooldowns: HashMap<String, std::time::Instant>,
}

impl MemoryState {
    fn apply(memory: &mut Memory, observation: &Observation<'_>) -> Outcome {
        match observation {
            Observation::Window { key, window_ms, cap, threshold, members, .. } => {
                let window = memory.windows.entry(key.clone()).or_default();
                // The window ends at the batch's newest member, as in Redis.
                let newest = members.iter().map(|m| m.at).max().unwrap_or(i64::MIN);
                for m in members {
                    let held = window.entry(m.text()).or_insert((m.at, m.id));
                    if held.0 < m.at {
                        *held = (m.at, m.id);
                    }
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
            Observation::Norm { key, at_ms, amounts } => {
                let day = at_ms.div_euclid(DAY_MS);
                let days = memory.norms.entry(key.clone()).or_default();
                days.retain(|d, _| *d > day - NORM_DAYS);
                let (sum, n) = days.values().fold((0.0, 0), |(s, n), (ds, dn)| (s + ds, n + dn));
                let today = days.entry(day).or_insert((0.0, 0));
                *today = (today.0 + amounts.iter().sum::<f64>(), today.1 + amounts.len() as u64);
                Outcome::Norm { before: running_means(sum, n, amounts) }
            }
        }
    }
}

impl WindowState for MemoryState {
    fn observe<'a>(&'a self, observations: &'a [Observation<'_>]) -> BoxFuture<'a, Result<Vec<Outcome>, HotTierError>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_observation_in_eight_trims_whatever_the_times_precision() {
        let base = 1_700_000_000_000u64;
        for step in [1, 1000, 60_000] {
            let trimmed = (0..8000u64).filter(|i| trims([base + i * step])).count();
            assert!((800..1200).contains(&trimmed), "times {step} ms apart: {trimmed} of 8000 trim");
        }
        let ids = (0..8000).filter(|_| trims([Uuid::new_v4().as_u128() as u64])).count();
        assert!((800..1200).contains(&ids), "random ids: {ids} of 8000 trim");
    }
}
