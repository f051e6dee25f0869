//! The in-process hot tier: the same per-tenant, per-category lists as the Redis
//! tier, with the same semantics (newest first, an id held once, trimmed to the
//! list's cap on every push, the whole list expiring `ttl` after its last push), kept
//! in this process. Used when no Redis URL is configured; its contents go with the
//! process, as a cache's may.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{BoxFuture, HotEntry, HotTier, HotTierError, LineEdit};
use crate::clock::Clock;
use crate::event::Category;

#[derive(Debug, Default)]
struct List {
    /// Newest first.
    lines: VecDeque<(Uuid, Vec<u8>)>,
    ids: HashSet<Uuid>,
    expires_at: Option<DateTime<Utc>>,
}

impl List {
    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Hot lists in this process.
#[derive(Debug, Default)]
pub struct MemoryHotTier {
    lists: Mutex<HashMap<(String, Category), List>>,
    clock: Clock,
    pushes: std::sync::atomic::AtomicU64,
}

/// Expired lists are swept every this many pushes.
const SWEEP_EVERY: u64 = 1024;

impl MemoryHotTier {
    /// An empty tier following `clock` for expiry.
    pub fn new(clock: Clock) -> MemoryHotTier {
        MemoryHotTier { lists: Mutex::default(), clock, pushes: Default::default() }
    }

    fn lists(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Category), List>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_now(&self, entries: &[HotEntry<'_>]) {
        let now = self.clock.now();
        let mut lists = self.lists();
        for entry in entries {
            let key = (entry.event.tenant_id.clone(), entry.event.category);
            let list = lists.entry(key).or_default();
            if list.expired(now) {
                *list = List::default();
            }
            if list.ids.insert(entry.event.id) {
                list.lines.push_front((entry.event.id, entry.line.to_vec()));
            }
            while list.lines.len() as u64 > entry.max_len {
                if let Some((id, _)) = list.lines.pop_back() {
                    list.ids.remove(&id);
                }
            }
            list.expires_at = Some(now + Duration::seconds(i64::try_from(entry.ttl_seconds).unwrap_or(i64::MAX / 2)));
        }
        let pushes = self.pushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if pushes % SWEEP_EVERY == 0 {
            lists.retain(|_, list| !list.expired(now));
        }
    }

    fn matching<'a>(
        lists: &'a mut HashMap<(String, Category), List>,
        tenant: Option<&'a str>,
        categories: &'a [Category],
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = &'a mut List> + 'a {
        lists.iter_mut().filter_map(move |((t, c), list)| {
            let wanted = tenant.is_none_or(|tenant| tenant == t) && categories.contains(c) && !list.expired(now);
            wanted.then_some(list)
        })
    }
}

impl HotTier for MemoryHotTier {
    fn push<'a>(&'a self, entries: &'a [HotEntry<'a>]) -> BoxFuture<'a, Result<(), HotTierError>> {
        Box::pin(async move {
            self.push_now(entries);
            Ok(())
        })
    }

    fn recent<'a>(
        &'a self,
        tenant: Option<&'a str>,
        categories: &'a [Category],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, HotTierError>> {
        Box::pin(async move {
            let now = self.clock.now();
            let mut lists = self.lists();
            let lines = MemoryHotTier::matching(&mut lists, tenant, categories, now)
                .flat_map(|list| list.lines.iter().map(|(_, line)| line.clone()).collect::<Vec<_>>())
                .collect();
            Ok(lines)
        })
    }

    fn rewrite<'a>(&'a self, tenant: Option<&'a str>, edit: &'a LineEdit<'a>) -> BoxFuture<'a, Result<u64, HotTierError>> {
        Box::pin(async move {
            let now = self.clock.now();
            let mut lists = self.lists();
            let mut replaced = 0;
            for list in MemoryHotTier::matching(&mut lists, tenant, &Category::ALL, now) {
                for (_, line) in list.lines.iter_mut() {
                    if let Some(new) = edit(line) {
                        *line = new;
                        replaced += 1;
                    }
                }
            }
            Ok(replaced)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), HotTierError>> {
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AuditEvent, EventParser, Limits};
    use serde_json::json;

    fn events(n: usize, tenant: &str, category: &str) -> Vec<AuditEvent> {
        let parser = EventParser::new(Limits::default(), None, Utc::now());
        (0..n)
            .map(|i| parser.parse(i, json!({"category": category, "tenant_id": tenant, "message": format!("m{i}")})).expect("valid"))
            .collect()
    }

    fn entries<'a>(events: &'a [AuditEvent], lines: &'a [Vec<u8>], max_len: u64, ttl: u64) -> Vec<HotEntry<'a>> {
        events.iter().zip(lines).map(|(event, line)| HotEntry { event, line, ttl_seconds: ttl, max_len }).collect()
    }

    fn messages(lines: &[Vec<u8>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| serde_json::from_slice::<serde_json::Value>(l).expect("json")["message"].as_str().expect("m").to_owned())
            .collect()
    }

    #[tokio::test]
    async fn lists_keep_the_newest_once_and_are_trimmed_to_their_cap() {
        let tier = MemoryHotTier::new(Clock::default());
        let acme = events(5, "acme", "auth");
        let lines: Vec<Vec<u8>> = acme.iter().map(AuditEvent::to_json_line).collect();
        tier.push(&entries(&acme, &lines, 3, 60)).await.expect("push");
        tier.push(&entries(&acme[4..], &lines[4..], 3, 60)).await.expect("a retry is not pushed twice");
        let held = tier.recent(Some("acme"), &[Category::Auth]).await.expect("recent");
        assert_eq!(messages(&held), ["m4", "m3", "m2"]);
        assert!(tier.recent(Some("beta"), &[Category::Auth]).await.expect("recent").is_empty());
        assert!(tier.recent(None, &[Category::Api]).await.expect("recent").is_empty());
        assert_eq!(tier.recent(None, &Category::ALL).await.expect("recent").len(), 3);
        // An id trimmed out of the list may come back, as with the Redis tier.
        tier.push(&entries(&acme[..1], &lines[..1], 3, 60)).await.expect("push");
        assert_eq!(messages(&tier.recent(Some("acme"), &[Category::Auth]).await.expect("recent")), ["m0", "m4", "m3"]);
    }

    #[tokio::test]
    async fn a_list_expires_ttl_after_its_last_push() {
        let clock = Clock::default();
        let tier = MemoryHotTier::new(clock.clone());
        let acme = events(2, "acme", "auth");
        let lines: Vec<Vec<u8>> = acme.iter().map(AuditEvent::to_json_line).collect();
        tier.push(&entries(&acme[..1], &lines[..1], 10, 60)).await.expect("push");
        clock.advance(Duration::seconds(50));
        tier.push(&entries(&acme[1..], &lines[1..], 10, 60)).await.expect("push refreshes the TTL");
        clock.advance(Duration::seconds(50));
        assert_eq!(tier.recent(Some("acme"), &[Category::Auth]).await.expect("recent").len(), 2);
        clock.advance(Duration::seconds(11));
        assert!(tier.recent(Some("acme"), &[Category::Auth]).await.expect("recent").is_empty());
        let edit = |_: &[u8]| Some(b"{}".to_vec());
        assert_eq!(tier.rewrite(None, &edit).await.expect("rewrite"), 0, "expired lists are gone");
    }
}
