//! Retention: how long persisted events are kept, and the job that removes them.
//!
//! Days come from, most specific first: the tenant's own days for the category, the
//! tenant's plan, the category default in configuration. The result fixes each
//! event's `expires_at` at ingest ([`crate::ingest::route`]); changing a policy later
//! affects only newer events. A tenant on legal hold keeps everything until the hold
//! is lifted. [`job`] deletes expired rows in bounded batches, [`archive`] writes them
//! to signed, compressed NDJSON first when archival is on.

pub mod archive;
pub mod job;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::event::Category;

/// Days per category.
pub type Days = BTreeMap<Category, u32>;

/// Reads days per category, each a whole number however JSON writes it (`30` or
/// `30.0`).
pub fn deserialize_days<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Days, D::Error> {
    let raw: BTreeMap<Category, serde_json::Number> = serde::Deserialize::deserialize(deserializer)?;
    raw.into_iter().map(|(category, number)| Ok((category, whole_days::<D::Error>(category, &number)?))).collect()
}

/// [`deserialize_days`] for a map of plans.
pub fn deserialize_plans<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, Days>, D::Error> {
    let raw: BTreeMap<String, BTreeMap<Category, serde_json::Number>> = serde::Deserialize::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(plan, days)| {
            let days = days.into_iter().map(|(category, n)| Ok((category, whole_days::<D::Error>(category, &n)?))).collect::<Result<Days, D::Error>>()?;
            Ok((plan, days))
        })
        .collect()
}

fn whole_days<E: serde::de::Error>(category: Category, number: &serde_json::Number) -> Result<u32, E> {
    let whole = number.as_u64().or_else(|| number.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX)).map(|f| f as u64));
    whole.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| E::custom(format!("{category}: days must be a whole number")))
}

/// Longest retention a policy may name (100 years).
pub const MAX_DAYS: u32 = 36_500;

/// One tenant's retention settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// A plan name from `plans`, or none (a plan that does not exist: 404).
    #[serde(default)]
    #[schema(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    pub plan: Option<String>,
    /// Days per category, overriding the plan and the defaults.
    #[serde(default, deserialize_with = "deserialize_days")]
    #[schema(value_type = crate::http::openapi::DaysSchema)]
    pub days: Days,
    /// While true, nothing of the tenant is deleted.
    #[serde(default)]
    pub legal_hold: bool,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub hold_reason: Option<String>,
}

/// Every retention policy in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policies {
    /// Category defaults from configuration.
    #[schema(value_type = Object)]
    pub defaults: Days,
    /// Named plans: days per category.
    #[schema(value_type = Object)]
    pub plans: BTreeMap<String, Days>,
    /// Tenants with their own settings.
    pub tenants: BTreeMap<String, TenantPolicy>,
}

impl Policies {
    /// The configured defaults alone.
    pub fn from_settings(settings: &Settings) -> Policies {
        let defaults = Category::ALL.into_iter().map(|c| (c, settings.category(c).retention_days)).collect();
        Policies { defaults, ..Policies::default() }
    }

    /// How many days `tenant`'s events of `category` are kept.
    pub fn days(&self, tenant: &str, category: Category) -> u32 {
        let tenant = self.tenants.get(tenant);
        tenant
            .and_then(|t| t.days.get(&category).copied())
            .or_else(|| {
                let plan = tenant?.plan.as_ref()?;
                self.plans.get(plan)?.get(&category).copied()
            })
            .or_else(|| self.defaults.get(&category).copied())
            .unwrap_or(MAX_DAYS)
    }

    /// Every number of days `category` is kept for some tenant: the default, each
    /// plan's and each tenant's own.
    pub fn lengths(&self, category: Category) -> std::collections::BTreeSet<u32> {
        let mut lengths: std::collections::BTreeSet<u32> = self.defaults.get(&category).copied().into_iter().collect();
        lengths.extend(self.plans.values().filter_map(|days| days.get(&category).copied()));
        lengths.extend(self.tenants.values().filter_map(|tenant| tenant.days.get(&category).copied()));
        if lengths.is_empty() {
            lengths.insert(MAX_DAYS);
        }
        lengths
    }

    /// Tenants whose rows must not be deleted.
    pub fn held_tenants(&self) -> Vec<String> {
        self.tenants.iter().filter(|(_, p)| p.legal_hold).map(|(t, _)| t.clone()).collect()
    }
}

/// Checks days given through the API.
pub fn validate_days(days: &Days, setting: &str) -> Result<(), String> {
    match days.iter().find(|(_, d)| **d == 0 || **d > MAX_DAYS) {
        Some((category, _)) => Err(format!("{setting}.{category}: must be between 1 and {MAX_DAYS} days")),
        None => Ok(()),
    }
}

/// The policies in force, shared by the ingest writers, the API and the job.
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    current: Arc<RwLock<Arc<Policies>>>,
}

impl PolicyHandle {
    pub fn new(policies: Policies) -> PolicyHandle {
        PolicyHandle { current: Arc::new(RwLock::new(Arc::new(policies))) }
    }

    /// The policies now.
    pub fn snapshot(&self) -> Arc<Policies> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the policies (after a load from the database).
    pub fn replace(&self, policies: Policies) {
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(policies),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(policies),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_days_beat_the_plan_which_beats_the_default() {
        let settings = Settings::defaults().expect("defaults");
        let mut policies = Policies::from_settings(&settings);
        policies.plans.insert("free".into(), [(Category::Auth, 7), (Category::Security, 30)].into());
        policies.tenants.insert(
            "acme".into(),
            TenantPolicy { plan: Some("free".into()), days: [(Category::Security, 400)].into(), ..TenantPolicy::default() },
        );
        assert_eq!(policies.days("acme", Category::Auth), 7);
        assert_eq!(policies.days("acme", Category::Security), 400);
        assert_eq!(policies.days("acme", Category::Financial), 2557);
        assert_eq!(policies.days("other", Category::Auth), 90);
        assert!(validate_days(&[(Category::Auth, 0)].into(), "plans.x").is_err());
        assert!(validate_days(&[(Category::Auth, 30)].into(), "plans.x").is_ok());
    }
}
