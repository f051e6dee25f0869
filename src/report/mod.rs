//! Compliance reports: for one tenant and period, what auditors ask for —
//! authentication, privileged changes, access to the logs themselves, security and
//! financial activity, the data lifecycle and the integrity of every chain — as one
//! JSON document signed with the deployment's checkpoint key (Ed25519), so that it
//! can be checked offline (`tierlog verify-report`).
//!
//! The figures come from the system of record ([`crate::tiers::postgres::report`]);
//! the signature covers the canonical JSON of the whole document
//! ([`crate::integrity::checkpoint::sign_document`]).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::event::Category;
use crate::integrity::checkpoint::{sign_document, verify_document, Keyring, PublicKey, Signer};
use crate::retention::Policies;
use crate::tiers::chain_walk::ChainReport;
use crate::tiers::database::Database;

/// The version of the report's layout.
pub const FORMAT: &str = "tierlog.compliance-report.v1";

pub mod html;
pub mod pdf;

/// One report's scope.
#[derive(Debug, Clone)]
pub struct Period {
    pub tenant: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Period {
    /// Reads `from` and `to` (RFC 3339). `to` defaults to now and `from` to 30 days
    /// before it; `from` must come before `to` and not before `horizon` (the
    /// longest retention: nothing older can still be held). The error names the
    /// parameter.
    pub fn parse(
        tenant: String,
        from: Option<&str>,
        to: Option<&str>,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
    ) -> Result<Period, (&'static str, String)> {
        let read = |name: &'static str, raw: &str| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| (name, format!("{name}: must be an RFC 3339 date-time such as 2026-11-01T00:00:00Z")))
        };
        let to = match to {
            Some(raw) => read("to", raw)?,
            None => now,
        };
        let from = match from {
            Some(raw) => read("from", raw)?,
            None => to - chrono::Duration::days(30),
        };
        if from >= to {
            return Err(("from", "from: must be before to".into()));
        }
        if from < horizon {
            return Err(("from", format!("from: is before the retention horizon ({}); nothing that old is held", horizon.to_rfc3339())));
        }
        Ok(Period { tenant, from, to })
    }
}

/// The earliest time any of the tenant's events can still be held.
pub fn horizon(policies: &Policies, tenant: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    let longest = Category::ALL.into_iter().map(|c| policies.days(tenant, c)).max().unwrap_or(0);
    now - chrono::Duration::days(i64::from(longest))
}

/// What the integrity section is made of.
pub struct Integrity {
    pub chains: Vec<ChainReport>,
    pub checkpoints: Vec<Value>,
}

/// Gathers the report of `period` and signs it.
pub async fn build(
    database: &Database,
    period: &Period,
    policies: &Policies,
    keyring: &Keyring,
    signer: &Signer,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, ReportError> {
    let Database::Postgres(store) = database else { return Err(ReportError::NeedsPostgres) };
    // The figures and the verification of every chain, side by side.
    let verified = async {
        let mut reports = Vec::new();
        for (chain, _) in database.chains(Some(&period.tenant), None).await? {
            reports.push(database.verify_chain(keyring, &chain).await?);
        }
        Ok::<_, sqlx::Error>(reports)
    };
    let gathered = crate::tiers::postgres::report::gather(store.pool(), &period.tenant, period.from, period.to);
    let (sections, chains) = tokio::try_join!(gathered, verified)?;
    let checkpoints: Vec<Value> = database
        .list_checkpoints(Some(&period.tenant), None, 10_000)
        .await?
        .into_iter()
        .filter(|c| c.created_at < period.to)
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect();
    let breaks: Vec<Value> = chains.iter().filter(|c| !c.ok).map(|c| serde_json::to_value(c).unwrap_or(Value::Null)).collect();
    let retention: Map<String, Value> = Category::ALL
        .into_iter()
        .map(|c| (c.as_str().to_owned(), Value::from(policies.days(&period.tenant, c))))
        .collect();
    let mut document = Map::new();
    document.insert("format".into(), FORMAT.into());
    document.insert("tenant_id".into(), period.tenant.clone().into());
    document.insert("from".into(), time(period.from));
    document.insert("to".into(), time(period.to));
    document.insert("generated_at".into(), time(now));
    document.insert("generator".into(), format!("tierlog {}", env!("CARGO_PKG_VERSION")).into());
    if let Value::Object(sections) = sections {
        document.extend(sections);
    }
    if let Some(Value::Object(lifecycle)) = document.get_mut("lifecycle") {
        lifecycle.insert("retention_days_in_force".into(), Value::Object(retention));
        lifecycle.insert("legal_hold".into(), Value::Bool(policies.tenants.get(&period.tenant).is_some_and(|t| t.legal_hold)));
    }
    document.insert(
        "integrity".into(),
        json!({
            "ok": breaks.is_empty(),
            "chains_verified": chains.len(),
            "rows_checked": chains.iter().map(|c| c.rows_checked).sum::<u64>(),
            "breaks": breaks,
            "chains": chains,
            "checkpoints": checkpoints,
        }),
    );
    Ok(sign_document(signer, document))
}

fn time(at: DateTime<Utc>) -> Value {
    Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Checks a signed report against a public key (base64, as `GET
/// /audit/checkpoints/public-key` gives it).
pub fn verify(report: &Value, public_key: &str) -> Result<(), String> {
    let key = PublicKey::parse(public_key)?;
    let Value::Object(document) = report else { return Err("the report is not a JSON object".into()) };
    if document.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!("not a {FORMAT} document"));
    }
    verify_document(&Keyring::new(vec![key]), document).map_err(|e| format!("the signature does not hold: {e:?}"))
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("compliance reports are made from Postgres; this node runs on the embedded store")]
    NeedsPostgres,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
