//! A firing rule's alert: a `security` event (`security.alert`) that goes through the
//! normal pipeline, so it is chained, searchable, on the dashboards and tailed.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::rules::Rule;
use crate::event::{truncate_to_micros, AuditEvent, Category, Level, SecurityInfo};

/// The action (and `event_type`) of every alert. Applications cannot send it.
pub const ALERT_ACTION: &str = "security.alert";
/// The logger of every alert.
pub const ALERT_LOGGER: &str = "tierlog.detect";

/// Whether `event` is one of tierlog's alerts (rules never look at those).
pub fn is_alert(event: &AuditEvent) -> bool {
    event.category == Category::Security && event.action.as_deref() == Some(ALERT_ACTION)
}

/// What a rule saw when it fired.
#[derive(Debug, Clone)]
pub struct Firing {
    pub tenant: String,
    pub rule: std::sync::Arc<Rule>,
    /// The group's fields and values.
    pub group: Vec<(String, String)>,
    /// Events (or distinct values) in the window; 1 for a single match.
    pub count: u64,
    /// The ids of the events that triggered it, newest first (at most 20).
    pub event_ids: Vec<Uuid>,
    /// The category of the triggering events.
    pub source_category: Category,
    /// Kind-specific facts: the amount and mean, the new values.
    pub facts: Map<String, Value>,
    /// The rule's and group's key in the rule state (its cool-down's too), when made.
    pub key: Option<String>,
}

fn level_of(severity: &str) -> Level {
    match severity {
        "low" => Level::Info,
        "medium" => Level::Warning,
        "critical" => Level::Critical,
        _ => Level::Error,
    }
}

impl Firing {
    /// The alert event, stamped `now`.
    pub fn to_event(&self, now: DateTime<Utc>) -> AuditEvent {
        let now = truncate_to_micros(now);
        let group: Map<String, Value> = self.group.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let mut details = Map::new();
        details.insert("rule".into(), self.rule.name.clone().into());
        details.insert("kind".into(), self.rule.kind.as_str().into());
        if let Some(text) = &self.rule.description {
            details.insert("description".into(), text.clone().into());
        }
        details.insert("group".into(), Value::Object(group));
        details.insert("count".into(), self.count.into());
        if let Some(threshold) = self.rule.threshold {
            details.insert("threshold".into(), threshold.into());
        }
        if let Some(window) = self.rule.window_seconds {
            details.insert("window_seconds".into(), window.into());
        }
        details.insert("event_ids".into(), json!(self.event_ids.iter().map(Uuid::to_string).collect::<Vec<_>>()));
        details.insert("source_category".into(), self.source_category.as_str().into());
        details.extend(self.facts.clone());
        let described: Vec<String> = self.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let message = format!(
            "rule {} fired: {} ({} event{}{})",
            self.rule.name,
            self.rule.description.as_deref().unwrap_or(self.rule.kind.as_str()),
            self.count,
            if self.count == 1 { "" } else { "s" },
            if described.is_empty() { String::new() } else { format!(", {}", described.join(" ")) },
        );
        let value = |field: &str| self.group.iter().find(|(k, _)| k == field).map(|(_, v)| v.clone());
        AuditEvent {
            id: Uuid::now_v7(),
            timestamp: now,
            received_at: now,
            tenant_id: self.tenant.clone(),
            category: Category::Security,
            level: level_of(&self.rule.severity),
            logger: Some(ALERT_LOGGER.into()),
            message: Some(message),
            event_type: Some(ALERT_ACTION.into()),
            action: Some(ALERT_ACTION.into()),
            status: None,
            application: Some("tierlog".into()),
            user_id: value("user_id"),
            username: value("username"),
            email: None,
            resource: Some("rule".into()),
            resource_id: Some(self.rule.name.clone()),
            ip_address: value("ip_address").and_then(|ip| ip.parse().ok()),
            user_agent: None,
            request_id: None,
            session_id: None,
            details: Some(details),
            changes: None,
            security: Some(SecurityInfo { event_type: "alert".into(), severity: Some(self.rule.severity.clone()) }),
            financial: None,
        }
    }
}
