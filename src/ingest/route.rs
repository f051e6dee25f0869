//! Which tiers an event goes to, from the per-category policy in configuration.

use chrono::{DateTime, Duration, Utc};

use crate::config::Settings;
use crate::event::{AuditEvent, Category};
use crate::integrity::chain::PersonalPaths;
use crate::retention::{Policies, PolicyHandle};
use crate::tiers::{EncodedBatch, HotEntry, PersistRequest, Table};

/// One category's resolved policy.
#[derive(Debug, Clone, Copy)]
struct CategoryRoute {
    category: Category,
    persist: crate::config::CategoryPolicy,
    ttl_seconds: u64,
    max_len: u64,
}

/// The routing table of a running service.
#[derive(Debug, Clone)]
pub struct Routing {
    routes: Vec<CategoryRoute>,
    personal: PersonalPaths,
    policies: PolicyHandle,
}

impl Routing {
    /// Resolves every category's policy from validated settings, with the configured
    /// retention defaults only.
    pub fn new(settings: &Settings) -> Routing {
        Routing::with_policies(settings, PolicyHandle::new(Policies::from_settings(settings)))
    }

    /// Like [`Routing::new`], following the shared retention `policies`.
    pub fn with_policies(settings: &Settings, policies: PolicyHandle) -> Routing {
        let routes = Category::ALL
            .into_iter()
            .map(|category| CategoryRoute {
                category,
                persist: *settings.category(category),
                ttl_seconds: settings.redis_ttl(category),
                max_len: settings.redis_max_len(category),
            })
            .collect();
        // Validated with the rest of the settings.
        let personal = PersonalPaths::parse(&settings.privacy.personal_paths).unwrap_or_default();
        Routing { routes, personal, policies }
    }

    fn route(&self, category: Category) -> &CategoryRoute {
        // `new` covers every category.
        &self.routes[Category::ALL.iter().position(|c| *c == category).unwrap_or(0)]
    }

    /// The table `event` is persisted to, if its category and level call for it.
    pub fn table(&self, event: &AuditEvent) -> Option<Table> {
        self.route(event.category).persist.table_for(event.level)
    }

    /// Per table, every number of days its rows are kept for: what its time
    /// partitions must be made ahead for.
    pub fn retention_lengths(&self) -> std::collections::BTreeMap<Table, std::collections::BTreeSet<u32>> {
        let policies = self.policies.snapshot();
        let mut lengths: std::collections::BTreeMap<Table, std::collections::BTreeSet<u32>> = Default::default();
        for route in &self.routes {
            // The most severe level is persisted whenever any level is.
            if let Some(table) = route.persist.table_for(crate::event::Level::Critical) {
                lengths.entry(table).or_default().extend(policies.lengths(route.category));
            }
        }
        lengths
    }

    /// When a persisted `event` expires: fixed at ingest from the policy then in force.
    pub fn expires_at(&self, policies: &Policies, event: &AuditEvent) -> DateTime<Utc> {
        let days = policies.days(&event.tenant_id, event.category);
        event.received_at + Duration::days(i64::from(days))
    }

    /// The durable writes of a batch.
    pub fn persist_requests<'a>(&self, batch: &'a EncodedBatch) -> Vec<PersistRequest<'a>> {
        let policies = self.policies.snapshot();
        batch
            .events
            .iter()
            .filter_map(|event| {
                self.table(event).map(|table| PersistRequest {
                    table,
                    expires_at: self.expires_at(&policies, event),
                    pii_paths: self.personal.find(event),
                    event,
                })
            })
            .collect()
    }

    /// The hot-tier writes of a batch (every event).
    pub fn hot_entries<'a>(&self, batch: &'a EncodedBatch) -> Vec<HotEntry<'a>> {
        batch
            .iter()
            .map(|(event, line)| {
                let route = self.route(event.category);
                debug_assert_eq!(route.category, event.category);
                HotEntry { event, line, ttl_seconds: route.ttl_seconds, max_len: route.max_len }
            })
            .collect()
    }
}
