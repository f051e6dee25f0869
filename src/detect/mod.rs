//! Detection: rules evaluated on every acknowledged event, alerts written back as
//! events.
//!
//! A writer hands each batch to [`Detector::offer`] once the batch is durable, as it
//! does to the live tail: without waiting. A full queue leaves the batch out of
//! detection (counted as skipped), so rules never slow or fail ingest. The
//! detector's task groups the batch's matching events (with the batches queued behind
//! it, up to 2,000 events) by rule and group, asks the
//! [`state`] (Redis, or the process in embedded mode) for the windows in one round
//! trip, claims the cool-downs of the groups that fired, and submits one
//! `security.alert` event per firing group through the pipeline ([`alert`]). The
//! store writes each alert's webhook messages in the alert's own transaction (see
//! [`crate::webhooks`]). A fault in all this is counted and logged; the events were
//! acknowledged before detection saw them.

pub mod alert;
pub mod rules;
pub mod saved;
pub mod state;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::clock::Clock;
use crate::event::{AuditEvent, Category};
use crate::ingest::Pipeline;
use crate::tiers::EncodedBatch;
use alert::{is_alert, Firing};
use rules::{Field, Rule, RuleKind};
use state::{Member, Observation, Outcome, WindowState};

/// How many acknowledged batches may wait for detection before batches are skipped.
const QUEUE_BATCHES: usize = 64;
/// The most events evaluated together when batches have queued.
const COALESCE_EVENTS: usize = 2000;

/// A rule ready to run: its fields parsed once.
#[derive(Debug)]
pub struct Compiled {
    /// Shared with every firing of the rule (a firing per matching event is common).
    pub rule: Arc<Rule>,
    group: Vec<(String, Field)>,
    distinct: Option<Field>,
    fields: Vec<(String, Field)>,
    limit: Option<f64>,
}

impl Compiled {
    fn new(rule: Rule) -> Compiled {
        let parse = |names: &[String]| names.iter().filter_map(|n| Field::parse(n).map(|f| (n.clone(), f))).collect();
        Compiled {
            group: parse(&rule.group_by),
            distinct: rule.distinct.as_deref().and_then(Field::parse),
            fields: parse(&rule.fields),
            limit: rule.limit.as_deref().and_then(|l| l.parse().ok()),
            rule: Arc::new(rule),
        }
    }
}

/// The rules in force: the deployment's, and each tenant with overrides its own.
#[derive(Debug, Default)]
pub struct Book {
    deployment: Arc<[Compiled]>,
    tenants: HashMap<String, Arc<[Compiled]>>,
}

impl Book {
    /// The enabled rules `tenant`'s events meet.
    pub fn rules_for(&self, tenant: &str) -> &[Compiled] {
        self.tenants.get(tenant).unwrap_or(&self.deployment)
    }
}

fn compile(rules: Vec<Rule>) -> Arc<[Compiled]> {
    rules.into_iter().filter(|r| r.enabled).map(Compiled::new).collect()
}

/// The layers of rules and the book made of them; shared by the detector and the
/// `/audit/rules` endpoints.
#[derive(Debug)]
pub struct RuleBook {
    /// Built-in rules with the configuration file's laid over them.
    configured: Vec<Rule>,
    /// Overrides saved through the API: `None` is the deployment's, `Some` a tenant's.
    saved: RwLock<BTreeMap<Option<String>, Vec<Rule>>>,
    book: RwLock<Arc<Book>>,
}

impl RuleBook {
    /// The book of the built-in rules and `configured` (from the configuration file).
    pub fn new(configured: &[Rule]) -> RuleBook {
        let configured = rules::overlay(&rules::builtin(), configured);
        let book = RuleBook { configured, saved: RwLock::default(), book: RwLock::default() };
        book.rebuild();
        book
    }

    /// The book in force.
    pub fn snapshot(&self) -> Arc<Book> {
        self.book.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the saved overrides (as loaded from the database).
    pub fn replace_saved(&self, saved: BTreeMap<Option<String>, Vec<Rule>>) {
        *self.saved.write().unwrap_or_else(|p| p.into_inner()) = saved;
        self.rebuild();
    }

    /// The overrides saved for `scope` (`None`: the deployment's).
    pub fn saved(&self, scope: Option<&str>) -> Vec<Rule> {
        let saved = self.saved.read().unwrap_or_else(|p| p.into_inner());
        saved.get(&scope.map(str::to_owned)).cloned().unwrap_or_default()
    }

    /// Every rule in force for `tenant` (`None`: the deployment's), disabled ones
    /// included.
    pub fn effective(&self, tenant: Option<&str>) -> Vec<Rule> {
        let saved = self.saved.read().unwrap_or_else(|p| p.into_inner());
        let deployment = rules::overlay(&self.configured, saved.get(&None).map(Vec::as_slice).unwrap_or_default());
        match tenant.and_then(|t| saved.get(&Some(t.to_owned()))) {
            Some(own) => rules::overlay(&deployment, own),
            None => deployment,
        }
    }

    fn rebuild(&self) {
        let tenants: Vec<String> = {
            let saved = self.saved.read().unwrap_or_else(|p| p.into_inner());
            saved.keys().flatten().cloned().collect()
        };
        let book = Book {
            deployment: compile(self.effective(None)),
            tenants: tenants.into_iter().map(|t| (t.clone(), compile(self.effective(Some(&t))))).collect(),
        };
        *self.book.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(book);
    }
}

/// Detection counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct DetectCounters {
    /// Events left out of detection because its queue was full.
    pub skipped: AtomicU64,
    /// Batches whose detection failed (state unreachable, alert not written).
    pub faults: AtomicU64,
    /// Alerts written.
    pub alerts: AtomicU64,
}

/// The detector of one node.
#[derive(Debug)]
pub struct Detector {
    queue: mpsc::Sender<Arc<EncodedBatch>>,
    pub counters: Arc<DetectCounters>,
    pub book: Arc<RuleBook>,
}

/// What the detector's task needs, given once the pipeline exists.
pub struct Engine {
    pub book: Arc<RuleBook>,
    pub state: Arc<dyn WindowState>,
    /// Prefix of the state's keys (the Redis key prefix).
    pub prefix: String,
    pub clock: Clock,
    pub counters: Arc<DetectCounters>,
}

impl Detector {
    /// A detector over `book`; `None` when detection is switched off. Returns the
    /// receiving end for [`Engine::run`].
    pub fn new(book: Arc<RuleBook>) -> (Arc<Detector>, mpsc::Receiver<Arc<EncodedBatch>>) {
        let (queue, batches) = mpsc::channel(QUEUE_BATCHES);
        (Arc::new(Detector { queue, counters: Arc::default(), book }), batches)
    }

    /// Hands an acknowledged batch to detection, without waiting.
    pub fn offer(&self, batch: &Arc<EncodedBatch>) {
        if self.queue.try_send(batch.clone()).is_err() {
            self.counters.skipped.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        }
    }
}

/// A group's values, borrowed from its events where they hold them as text.
type Values<'e> = smallvec::SmallVec<[Cow<'e, str>; 2]>;

/// One rule's and group's share of a batch.
struct Group<'b, 'e> {
    tenant: &'e str,
    rule: &'b Compiled,
    values: Values<'e>,
    key: String,
    /// The newest event's time, ms.
    newest: i64,
    /// Window members (threshold, distinct).
    members: Vec<Member<'e>>,
    /// First-seen values (`field=value`), with their events.
    seen: Vec<(String, Uuid)>,
    /// Amounts, with their events.
    amounts: Vec<(f64, Uuid)>,
    category: Category,
}

impl Group<'_, '_> {
    /// The group's values, named by the rule's `group_by`.
    fn named(&self) -> Vec<(String, String)> {
        self.rule.group.iter().zip(&self.values).map(|((name, _), value)| (name.clone(), value.clone().into_owned())).collect()
    }
}

impl Engine {
    /// Takes batches until the detector is dropped.
    pub async fn run(self, mut batches: mpsc::Receiver<Arc<EncodedBatch>>, pipeline: Pipeline) {
        // Alerts are written while the next batches are evaluated (a write waits for
        // its batch to be durable); at most this many writes at once, then evaluation
        // waits, and detection's queue fills up rather than memory.
        let writes = Arc::new(tokio::sync::Semaphore::new(ALERT_WRITES));
        while let Some(first) = batches.recv().await {
            // The batches that queued meanwhile go with it, up to a bound: one round
            // trip to the state for them all, and a group spread over them is one
            // observation.
            let mut taken = vec![first];
            let mut events = taken[0].events.len();
            while events < COALESCE_EVENTS {
                let Ok(more) = batches.try_recv() else { break };
                events += more.events.len();
                taken.push(more);
            }
            let firings = match self.evaluate(taken.iter().flat_map(|b| b.events.iter())).await {
                Ok(firings) => firings,
                Err(e) => {
                    self.counters.faults.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, events, "rules could not be evaluated on a batch");
                    continue;
                }
            };
            drop(taken);
            if firings.is_empty() {
                continue;
            }
            let now = self.clock.now();
            let alerts: Vec<AuditEvent> = firings.iter().map(|f| f.to_event(now)).collect();
            let Ok(permit) = writes.clone().acquire_owned().await else { return };
            let (pipeline, counters) = (pipeline.clone(), self.counters.clone());
            tokio::spawn(async move {
                let count = alerts.len() as u64;
                if submit(&pipeline, alerts, &counters).await {
                    counters.alerts.fetch_add(count, Ordering::Relaxed);
                }
                drop(permit);
            });
        }
    }

    fn group_key<'v>(&self, tenant: &str, rule: &str, values: impl IntoIterator<Item = &'v str>) -> String {
        group_key(&self.prefix, tenant, rule, values)
    }

    /// The firings of a batch of events (in the order accepted).
    pub async fn evaluate<'e>(&self, events: impl IntoIterator<Item = &'e AuditEvent>) -> Result<Vec<Firing>, crate::tiers::HotTierError> {
        let book = self.book.snapshot();
        // Per tenant, rule (its place in the tenant's rules) and group values, which
        // borrow from the events; the state's key is made once per group.
        let events: Vec<&'e AuditEvent> = events.into_iter().collect();
        let mut groups: foldhash::HashMap<(&'e str, usize, Values<'e>), Group<'_, 'e>> =
            foldhash::HashMap::with_capacity_and_hasher(events.len(), Default::default());
        let mut matches: Vec<Firing> = Vec::new();
        for event in events {
            if event.category == Category::Access || is_alert(event) {
                continue;
            }
            for (index, compiled) in book.rules_for(&event.tenant_id).iter().enumerate() {
                let rule = &compiled.rule;
                if !rule.when.matches(event) {
                    continue;
                }
                let Some(values) = compiled.group.iter().map(|(_, field)| field.value(event)).collect::<Option<Values<'e>>>() else {
                    continue;
                };
                let at = event.timestamp.timestamp_millis();
                if rule.kind == RuleKind::Match {
                    matches.push(Firing {
                        tenant: event.tenant_id.clone(),
                        rule: rule.clone(),
                        group: compiled.group.iter().zip(values).map(|((name, _), value)| (name.clone(), value.into_owned())).collect(),
                        count: 1,
                        event_ids: vec![event.id],
                        source_category: event.category,
                        facts: Map::new(),
                        key: None,
                    });
                    continue;
                }
                let group = groups.entry((event.tenant_id.as_str(), index, values)).or_insert_with(|| Group {
                    tenant: &event.tenant_id,
                    rule: compiled,
                    // Moved out of the map's key once the events are grouped.
                    values: Values::new(),
                    key: String::new(),
                    newest: i64::MIN,
                    members: Vec::new(),
                    seen: Vec::new(),
                    amounts: Vec::new(),
                    category: event.category,
                });
                match rule.kind {
                    RuleKind::Threshold => group.members.push(Member { value: None, at, id: event.id }),
                    RuleKind::Distinct => {
                        if let Some(value) = compiled.distinct.as_ref().and_then(|f| f.value(event)) {
                            group.members.push(Member { value: Some(value), at, id: event.id });
                        }
                    }
                    RuleKind::FirstSeen => {
                        for (name, field) in &compiled.fields {
                            if let Some(value) = field.value(event) {
                                group.seen.push((format!("{name}={value}"), event.id));
                            }
                        }
                    }
                    RuleKind::Amount => {
                        let amount = event.financial.as_ref().and_then(|f| f.amount.as_deref()).and_then(|a| a.parse::<f64>().ok());
                        if let Some(amount) = amount.filter(|a| a.is_finite()) {
                            group.amounts.push((amount, event.id));
                        }
                    }
                    RuleKind::Match => {}
                }
                group.newest = group.newest.max(at);
            }
        }
        let mut groups: Vec<Group<'_, 'e>> = groups
            .into_iter()
            .filter(|(_, g)| !g.members.is_empty() || !g.seen.is_empty() || !g.amounts.is_empty())
            .map(|((_, _, values), group)| Group { values, ..group })
            .collect();
        let mut observations = Vec::with_capacity(groups.len());
        let mut observed = Vec::with_capacity(groups.len());
        let mut firings = Vec::new();
        for (i, group) in groups.iter_mut().enumerate() {
            let rule = &group.rule.rule;
            group.key = self.group_key(group.tenant, &rule.name, group.values.iter().map(|v| v.as_ref()));
            match rule.kind {
                RuleKind::Threshold | RuleKind::Distinct => {
                    let threshold = rule.threshold.unwrap_or(1);
                    observations.push(Observation::Window {
                        key: group.key.clone(),
                        distinct: rule.kind == RuleKind::Distinct,
                        window_ms: rule.window_ms(),
                        cap: threshold.max(100).saturating_mul(2),
                        threshold,
                        // A window's members are not needed again (its ids come back).
                        members: std::mem::take(&mut group.members),
                    });
                    observed.push(i);
                }
                RuleKind::FirstSeen => {
                    let mut values: Vec<String> = group.seen.iter().map(|(v, _)| v.clone()).collect();
                    values.sort_unstable();
                    values.dedup();
                    observations.push(Observation::Seen { key: group.key.clone(), horizon_ms: rule.window_ms(), at_ms: group.newest, values });
                    observed.push(i);
                }
                RuleKind::Amount => {
                    for (amount, id) in &group.amounts {
                        if let Some(limit) = group.rule.limit.filter(|limit| amount > limit) {
                            let mut facts = Map::new();
                            facts.insert("amount".into(), Value::from(*amount));
                            facts.insert("limit".into(), Value::from(limit));
                            firings.push(self.firing(&*group, 1, vec![*id], facts));
                        }
                    }
                    if rule.factor.is_some() {
                        let amounts = group.amounts.iter().map(|(a, _)| *a).collect();
                        observations.push(Observation::Norm { key: group.key.clone(), at_ms: group.newest, amounts });
                        observed.push(i);
                    }
                }
                RuleKind::Match => {}
            }
        }
        let outcomes = self.state.observe(&observations).await?;
        for (i, outcome) in observed.into_iter().zip(outcomes) {
            let group = &groups[i];
            let rule = &group.rule.rule;
            match outcome {
                Outcome::Window { count, ids } if count >= u64::from(rule.threshold.unwrap_or(1)) => {
                    firings.push(self.firing(group, count, ids, Map::new()));
                }
                Outcome::Seen { new } if !new.is_empty() => {
                    let ids: Vec<Uuid> = group.seen.iter().filter(|(v, _)| new.contains(v)).map(|(_, id)| *id).rev().take(state::ALERT_IDS).collect();
                    let mut facts = Map::new();
                    facts.insert("new_values".into(), Value::from(new.clone()));
                    firings.push(self.firing(group, new.len() as u64, ids, facts));
                }
                Outcome::Norm { before } => {
                    let factor = rule.factor.unwrap_or(f64::INFINITY);
                    let min = u64::from(rule.min_samples.unwrap_or(20));
                    for ((amount, id), (mean, n)) in group.amounts.iter().zip(before) {
                        if n >= min && mean > 0.0 && *amount > factor * mean {
                            let mut facts = Map::new();
                            facts.insert("amount".into(), Value::from(*amount));
                            facts.insert("recent_mean".into(), Value::from(mean));
                            facts.insert("factor".into(), Value::from(factor));
                            firings.push(self.firing(group, 1, vec![*id], facts));
                        }
                    }
                }
                _ => {}
            }
        }
        firings.extend(matches);
        self.cool_down(firings).await
    }

    fn firing(&self, group: &Group<'_, '_>, count: u64, event_ids: Vec<Uuid>, facts: Map<String, Value>) -> Firing {
        Firing {
            key: Some(group.key.clone()),
            tenant: group.tenant.to_owned(),
            rule: group.rule.rule.clone(),
            group: group.named(),
            count,
            event_ids,
            source_category: group.category,
            facts,
        }
    }

    /// Keeps one firing per rule and group within its cool-down (rules without one
    /// keep all).
    async fn cool_down(&self, firings: Vec<Firing>) -> Result<Vec<Firing>, crate::tiers::HotTierError> {
        let mut kept = Vec::new();
        let mut claims = Vec::new();
        let mut claimed_in_batch = std::collections::HashSet::new();
        for firing in firings {
            if firing.rule.cooldown_seconds == 0 {
                kept.push((firing, None));
                continue;
            }
            // A match's group has no key yet: made here, for the rules with a cool-down.
            let key = match &firing.key {
                Some(key) => key.clone(),
                None => self.group_key(&firing.tenant, &firing.rule.name, firing.group.iter().map(|(_, v)| v.as_str())),
            };
            if claimed_in_batch.insert(key.clone()) {
                claims.push((key, firing.rule.cooldown_seconds * 1000));
                kept.push((firing, Some(claims.len() - 1)));
            }
        }
        let granted = self.state.claim(&claims).await?;
        Ok(kept.into_iter().filter(|(_, claim)| claim.is_none_or(|i| granted[i])).map(|(f, _)| f).collect())
    }
}

/// The state's key of a rule's group: `{prefix}:v1:rule:{tenant|rule|digest}`, the
/// digest (of the group's values) keeping them out of key names, the braces keeping
/// a group's keys in one Redis Cluster slot. Nodes of any version must agree on it.
fn group_key<'v>(prefix: &str, tenant: &str, rule: &str, values: impl IntoIterator<Item = &'v str>) -> String {
    let mut hash = Sha256::new();
    for value in values {
        hash.update(value.as_bytes());
        hash.update([0]);
    }
    let mut digest = [0u8; 24];
    hex::encode_to_slice(&hash.finalize()[..12], &mut digest).expect("24 hex digits");
    let mut key = String::with_capacity(prefix.len() + tenant.len() + rule.len() + 38);
    for part in [prefix, ":v1:rule:{", tenant, "|", rule, "|", std::str::from_utf8(&digest).expect("hex is ascii"), "}"] {
        key.push_str(part);
    }
    key
}

/// How many alert writes may be under way at once.
const ALERT_WRITES: usize = 16;

/// Submits alerts, trying again for a minute while the queue is full or the store
/// cannot take them.
async fn submit(pipeline: &Pipeline, alerts: Vec<AuditEvent>, counters: &DetectCounters) -> bool {
    for attempt in 0..60 {
        match pipeline.submit(alerts.clone()).await {
            Ok(()) => return true,
            Err(crate::ingest::SubmitError::ShuttingDown) => break,
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!(error = %e, alerts = alerts.len(), "alerts not written yet; trying again");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    counters.faults.fetch_add(1, Ordering::Relaxed);
    tracing::error!(alerts = alerts.len(), "alerts could not be written");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_keep_their_format() {
        // What every node writes: a changed format would start every window afresh.
        let mut hash = Sha256::new();
        hash.update(b"u-1\0198.51.100.7\0");
        let digest = hex::encode(&hash.finalize()[..12]);
        assert_eq!(
            group_key("tierlog", "acme", "failed-logins-per-user", ["u-1", "198.51.100.7"]),
            format!("tierlog:v1:rule:{{acme|failed-logins-per-user|{digest}}}")
        );
        assert_ne!(group_key("p", "t", "r", ["a", "b"]), group_key("p", "t", "r", ["ab"]), "values are separated");
    }
}
