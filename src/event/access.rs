//! Events tierlog records about its own use: every read, export and key change
//! becomes an `access` event, chained in `audit_logs` like the events it protects,
//! in a category of its own that views and stats leave out unless asked for.

use chrono::Utc;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{truncate_to_micros, AuditEvent, Category, Level, Status, DEFAULT_TENANT};

/// One use of the API or the CLI.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    /// Who: a key id, `bootstrap` or `cli`.
    pub actor: &'a str,
    /// Dotted action, e.g. `keys.created`, `logs.viewed`.
    pub action: &'a str,
    /// The tenant whose data was touched; `default` when none.
    pub tenant: Option<&'a str>,
    /// The endpoint or command, e.g. `GET /audit/logs`.
    pub endpoint: &'a str,
    pub request_id: Option<&'a str>,
    /// What was asked and found: filters, counts, ids.
    pub details: Map<String, Value>,
}

impl AccessRecord<'_> {
    /// The audit event for this use.
    pub fn to_event(&self) -> AuditEvent {
        let now = truncate_to_micros(Utc::now());
        let mut details = self.details.clone();
        details.insert("key_id".into(), self.actor.into());
        details.insert("endpoint".into(), self.endpoint.into());
        AuditEvent {
            id: Uuid::now_v7(),
            timestamp: now,
            received_at: now,
            tenant_id: self.tenant.unwrap_or(DEFAULT_TENANT).to_owned(),
            category: Category::Access,
            level: Level::Info,
            logger: Some("tierlog.access".into()),
            message: Some(format!("{} by {}", self.action, self.actor)),
            event_type: Some("api_access".into()),
            action: Some(self.action.into()),
            status: Some(Status::Success),
            application: Some("tierlog".into()),
            user_id: Some(format!("key:{}", self.actor)),
            username: None,
            email: None,
            resource: Some(self.endpoint.into()),
            resource_id: None,
            ip_address: None,
            user_agent: None,
            request_id: self.request_id.map(str::to_owned),
            session_id: None,
            details: Some(details),
            changes: None,
            security: None,
            financial: None,
        }
    }
}
