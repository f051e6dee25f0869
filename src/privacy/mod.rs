//! GDPR: erasing a data subject's personal values from every tier that can be
//! rewritten, and exporting everything held about them.
//!
//! The subject is a `user_id` within a tenant. Erasure touches:
//! - Postgres: see [`crate::tiers::postgres::erasure`]; chains keep verifying.
//! - Redis: the same edit on every held line of the tenant's lists.
//! - Not the JSON files or archives: files are append-only shipping buffers that
//!   rotate away (`files.backup_count` × `files.max_size_mb`) and whose lines are
//!   already in Loki, where Loki's retention or its delete API applies; archives are
//!   signed and kept until deleted by the operator. The receipt says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::integrity::chain::{PersonalPaths, PERSONAL_FIELDS};
use crate::tiers::postgres::erasure::erase_paths;
use crate::tiers::HotTier;

/// What the subject's `user_id` becomes: not derivable from the id (a random salt,
/// discarded, goes into it), stable within one erasure so the erased subject's
/// events still group together.
pub fn pseudonym(subject: &str) -> String {
    let salt: [u8; 32] = rand::random();
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(subject.as_bytes());
    format!("erased-{}", &hex::encode(hasher.finalize())[..24])
}

/// What erasure did, returned to the caller and recorded (without the subject id)
/// in the audit chain.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasureReceipt {
    pub erasure_id: Uuid,
    /// The erased subject, as the caller named it (not recorded in the chain).
    pub subject_id: String,
    /// What the subject's user_id now reads in every tier.
    pub subject_pseudonym: String,
    /// The tenant, or none for every tenant.
    pub tenant_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub erased_at: DateTime<Utc>,
    pub requested_by: String,
    /// Rows changed per table.
    #[schema(value_type = Object)]
    pub postgres_rows: BTreeMap<String, u64>,
    /// Hot-tier entries rewritten; none when Redis was unreachable (see
    /// `redis_error`): those entries expire with their list's TTL.
    pub redis_entries: Option<u64>,
    pub redis_error: Option<String>,
    /// Fields removed (user_id is replaced by the pseudonym).
    pub erased_fields: Vec<String>,
    /// Tiers this erasure does not rewrite, and why.
    pub not_erased: Vec<String>,
}

impl ErasureReceipt {
    /// The receipt as recorded in the chain: everything but the subject id.
    pub fn recorded(&self) -> Map<String, Value> {
        let mut value = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        value.remove("subject_id");
        value
    }
}

/// True when the JSON event was acted by `subject` (all personal fields go) or is
/// about them (only sealed paths go).
fn involvement(event: &Map<String, Value>, subject: &str) -> Option<bool> {
    let actor = event.get("user_id").and_then(Value::as_str) == Some(subject);
    let about = event.get("resource").and_then(Value::as_str) == Some("user")
        && event.get("resource_id").and_then(Value::as_str) == Some(subject);
    (actor || about).then_some(actor)
}

/// The erasure edit of one hot-tier line, `None` when it does not concern `subject`.
pub fn erase_line(line: &[u8], subject: &str, pseudonym: &str, personal: &PersonalPaths) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(line) else { return None };
    let actor = involvement(&event, subject)?;
    if actor {
        for field in PERSONAL_FIELDS {
            event.remove(field);
        }
        event.insert("user_id".into(), pseudonym.into());
    }
    let paths = personal.find_in(&Value::Object(event.clone()));
    let mut details = event.remove("details");
    let mut changes = event.remove("changes");
    erase_paths(&mut details, &mut changes, &paths);
    if let Some(details) = details {
        event.insert("details".into(), details);
    }
    if let Some(changes) = changes {
        event.insert("changes".into(), changes);
    }
    serde_json::to_vec(&Value::Object(event)).ok()
}

/// A data subject: a user id within one tenant, or (`None`) within every tenant.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub tenant: Option<&'a str>,
    pub id: &'a str,
}

/// Erases `subject` in Postgres and the hot tier. `personal_patterns` are the
/// configured personal paths (validated at start).
pub async fn erase(
    db: &crate::tiers::database::Database,
    hot: Option<&Arc<dyn HotTier>>,
    personal_patterns: &[String],
    subject: Subject<'_>,
    requested_by: &str,
    now: DateTime<Utc>,
) -> Result<ErasureReceipt, sqlx::Error> {
    let Subject { tenant, id: subject } = subject;
    let personal = &PersonalPaths::parse(personal_patterns).unwrap_or_default();
    let pseudonym = pseudonym(subject);
    let postgres_rows = db.erase_subject(tenant, subject, &pseudonym).await?;
    let (redis_entries, redis_error) = match hot {
        Some(hot) => {
            let edit = |line: &[u8]| erase_line(line, subject, &pseudonym, personal);
            match hot.rewrite(tenant, &edit).await {
                Ok(count) => (Some(count), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        None => (Some(0), None),
    };
    let mut erased_fields: Vec<String> = PERSONAL_FIELDS.iter().map(|f| (*f).to_owned()).collect();
    erased_fields.extend(personal_patterns.iter().cloned());
    Ok(ErasureReceipt {
        erasure_id: Uuid::now_v7(),
        subject_id: subject.to_owned(),
        subject_pseudonym: pseudonym,
        tenant_id: tenant.map(str::to_owned),
        erased_at: now,
        requested_by: requested_by.to_owned(),
        postgres_rows,
        redis_entries,
        redis_error,
        erased_fields,
        not_erased: vec![
            "JSON files: append-only shipping buffers, not rewritten; they rotate away after files.backup_count files, and their lines in Loki follow Loki's retention and delete API".into(),
            "archives: signed gzip files written by retention before this erasure are not rewritten; delete them under your archive policy".into(),
            "message: free text is not treated as personal; masking rules keep personal values out of it at ingest".into(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_loses_the_subjects_values_only() {
        let personal = PersonalPaths::parse(&["changes.*.email".into()]).expect("valid");
        let actor = json!({"user_id": "u1", "username": "ann", "email": "a@x", "ip_address": "10.0.0.1",
            "action": "auth.login", "changes": {"after": {"email": "new@x", "role": "admin"}}});
        let out = erase_line(&serde_json::to_vec(&actor).expect("json"), "u1", "erased-1", &personal).expect("edited");
        let out: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(out["user_id"], "erased-1");
        assert!(out.get("username").is_none() && out.get("email").is_none() && out.get("ip_address").is_none());
        assert_eq!(out["changes"]["after"]["email"], "[erased]");
        assert_eq!(out["changes"]["after"]["role"], "admin");
        assert_eq!(out["action"], "auth.login");

        let about = json!({"user_id": "admin", "username": "root", "resource": "user", "resource_id": "u1",
            "changes": {"before": {"email": "a@x"}}});
        let out = erase_line(&serde_json::to_vec(&about).expect("json"), "u1", "erased-1", &personal).expect("edited");
        let out: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(out["user_id"], "admin", "the actor of a change about the subject stays");
        assert_eq!(out["username"], "root");
        assert_eq!(out["changes"]["before"]["email"], "[erased]");

        let other = json!({"user_id": "u2"});
        assert!(erase_line(&serde_json::to_vec(&other).expect("json"), "u1", "erased-1", &personal).is_none());
        assert_ne!(pseudonym("u1"), pseudonym("u1"), "pseudonyms cannot be recomputed from the id");
    }
}
