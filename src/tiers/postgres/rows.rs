//! Mapping between events and the columns of the event tables.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

use crate::event::{AuditEvent, Changes, FinancialInfo, SecurityInfo};
use crate::integrity::chain::{Link, PiiSeal};
use crate::tiers::stored::{decode_stored, paths_json, RowSource, StoredRow};
use crate::tiers::{Chain, PersistRequest, Table};

/// One batch's rows for one table, column by column, for `INSERT ... FROM UNNEST`.
/// Text and JSON columns borrow from the events: they are encoded straight into the
/// statement's parameters, not copied first.
#[derive(Default)]
pub(super) struct RowColumns<'e> {
    tenant_id: Vec<&'e str>,
    seq: Vec<i64>,
    id: Vec<Uuid>,
    occurred_at: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
    category: Vec<&'static str>,
    level: Vec<&'static str>,
    text: [Vec<Option<&'e str>>; TEXT_COLUMNS.len()],
    ip_address: Vec<Option<String>>,
    details: Vec<Option<Json<&'e Map<String, Value>>>>,
    changes: Vec<Option<Json<&'e Changes>>>,
    security: Vec<Option<Json<&'e SecurityInfo>>>,
    financial: Vec<Option<Json<&'e FinancialInfo>>>,
    prev_hash: Vec<Vec<u8>>,
    row_hash: Vec<Vec<u8>>,
    pii_salt: Vec<Vec<u8>>,
    pii_hash: Vec<Vec<u8>>,
    pii_paths: Vec<Option<Value>>,
}

const TEXT_COLUMNS: [&str; 14] = [
    "logger", "message", "event_type", "action", "status", "application", "user_id", "username",
    "email", "resource", "resource_id", "user_agent", "request_id", "session_id",
];

const JSON_COLUMNS: [&str; 4] = ["details", "changes", "security", "financial"];

fn text_values(event: &AuditEvent) -> [Option<&str>; TEXT_COLUMNS.len()] {
    [
        event.logger.as_deref(),
        event.message.as_deref(),
        event.event_type.as_deref(),
        event.action.as_deref(),
        event.status.map(|s| s.as_str()),
        event.application.as_deref(),
        event.user_id.as_deref(),
        event.username.as_deref(),
        event.email.as_deref(),
        event.resource.as_deref(),
        event.resource_id.as_deref(),
        event.user_agent.as_deref(),
        event.request_id.as_deref(),
        event.session_id.as_deref(),
    ]
}

impl<'e> RowColumns<'e> {
    pub(super) fn push(&mut self, request: &PersistRequest<'e>, link: &Link, seal: &PiiSeal) {
        let event = request.event;
        self.tenant_id.push(&event.tenant_id);
        self.seq.push(link.seq);
        self.id.push(event.id);
        self.occurred_at.push(event.timestamp);
        self.received_at.push(event.received_at);
        self.expires_at.push(request.expires_at);
        self.category.push(event.category.as_str());
        self.level.push(event.level.as_str());
        for (column, value) in self.text.iter_mut().zip(text_values(event)) {
            column.push(value);
        }
        self.ip_address.push(event.ip_address.map(|ip| ip.to_string()));
        self.details.push(event.details.as_ref().map(Json));
        self.changes.push(event.changes.as_ref().map(Json));
        self.security.push(event.security.as_ref().map(Json));
        self.financial.push(event.financial.as_ref().map(Json));
        self.prev_hash.push(link.prev_hash.to_vec());
        self.row_hash.push(link.row_hash.to_vec());
        self.pii_salt.push(seal.salt.to_vec());
        self.pii_hash.push(seal.hash.to_vec());
        self.pii_paths.push(paths_json(&request.pii_paths));
    }

    pub(super) fn len(&self) -> usize {
        self.id.len()
    }

    /// Binds the columns, in the order [`insert_sql`] numbers them, after the
    /// parameters `query` already has.
    pub(super) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        let mut query = query
            .bind(&self.tenant_id)
            .bind(&self.seq)
            .bind(&self.id)
            .bind(&self.occurred_at)
            .bind(&self.received_at)
            .bind(&self.expires_at)
            .bind(&self.category)
            .bind(&self.level);
        for column in &self.text {
            query = query.bind(column);
        }
        query
            .bind(&self.ip_address)
            .bind(&self.details)
            .bind(&self.changes)
            .bind(&self.security)
            .bind(&self.financial)
            .bind(&self.prev_hash)
            .bind(&self.row_hash)
            .bind(&self.pii_salt)
            .bind(&self.pii_hash)
            .bind(&self.pii_paths)
    }
}

/// A query being built with positional parameters.
pub(super) type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// The offsets, among the parameters [`RowColumns::bind`] adds, of the tenants and
/// the ids.
pub(super) const TENANT_PARAM: usize = 0;
pub(super) const ID_PARAM: usize = 2;

/// How many parameters [`RowColumns::bind`] adds.
pub(super) const INSERT_PARAMS: usize = 8 + TEXT_COLUMNS.len() + 1 + JSON_COLUMNS.len() + 5;

/// `INSERT INTO table ... SELECT ... FROM unnest(...)` over the parameters `$first`
/// onwards. `guard`, when given, is a relation joined in and a condition on it: no
/// row is inserted unless the condition holds.
pub(super) fn insert_sql(table: Table, first: usize, guard: Option<(&str, &str)>) -> String {
    let text_list = TEXT_COLUMNS.join(", ");
    let json_list = JSON_COLUMNS.join(", ");
    let param = |i: usize, ty: &str| format!("${}::{ty}[]", first + i);
    let fixed = ["text", "int8", "uuid", "timestamptz", "timestamptz", "timestamptz", "text", "text"];
    let mut params: Vec<String> = fixed.iter().enumerate().map(|(i, ty)| param(i, ty)).collect();
    params.extend((0..TEXT_COLUMNS.len()).map(|i| param(fixed.len() + i, "text")));
    params.push(param(fixed.len() + TEXT_COLUMNS.len(), "text"));
    let json_base = fixed.len() + TEXT_COLUMNS.len() + 1;
    params.extend((0..JSON_COLUMNS.len()).map(|i| param(json_base + i, "jsonb")));
    let hash_base = json_base + JSON_COLUMNS.len();
    params.extend(["bytea", "bytea", "bytea", "bytea", "jsonb"].iter().enumerate().map(|(i, ty)| param(hash_base + i, ty)));
    debug_assert_eq!(params.len(), INSERT_PARAMS);
    let (guard_from, guard_where) = match guard {
        Some((relation, condition)) => (format!(", {relation}"), format!(" WHERE {condition}")),
        None => (String::new(), String::new()),
    };
    format!(
        "INSERT INTO {table} (tenant_id, seq, id, occurred_at, received_at, expires_at, category, level,
             {text_list}, ip_address, {json_list}, prev_hash, row_hash, pii_salt, pii_hash, pii_paths)
         SELECT r.tenant_id, r.seq, r.id, r.occurred_at, r.received_at, r.expires_at, r.category, r.level,
             {r_text}, r.ip::inet, {r_json}, r.prev_hash, r.row_hash, r.pii_salt, r.pii_hash, r.pii_paths
         FROM unnest({params})
         AS r(tenant_id, seq, id, occurred_at, received_at, expires_at, category, level,
             {text_list}, ip, {json_list}, prev_hash, row_hash, pii_salt, pii_hash, pii_paths){guard_from}{guard_where}",
        r_text = TEXT_COLUMNS.map(|c| format!("r.{c}")).join(", "),
        r_json = JSON_COLUMNS.map(|c| format!("r.{c}")).join(", "),
        params = params.join(", "),
    )
}

/// The columns a [`StoredRow`] is read from: every stored column except the
/// generated ones (the search vector is large and never needed to rebuild a row).
pub(crate) const ROW_SELECT: &str = "tenant_id, seq, id, occurred_at, received_at, expires_at, category, level, logger, \
     message, event_type, action, status, application, user_id, username, email, resource, resource_id, \
     host(ip_address) AS ip_text, user_agent, request_id, session_id, details, changes, security, financial, \
     prev_hash, row_hash, pii_salt, pii_hash, pii_paths";

pub(super) async fn read_chain_after(pool: &PgPool, chain: &Chain, after: i64, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
    let table = chain.table;
    let sql = format!("SELECT {ROW_SELECT} FROM {table} WHERE tenant_id = $1 AND seq > $2 AND seq < $4 ORDER BY seq LIMIT $3");
    let rows = sqlx::query(&sql).bind(&chain.tenant).bind(after).bind(limit).bind(chain.end()).fetch_all(pool).await?;
    rows.iter().map(|row| stored_row(table, row)).collect()
}

fn json_column<T: serde::de::DeserializeOwned>(row: &PgRow, column: &str) -> Result<Option<T>, sqlx::Error> {
    // Decoded straight from the column's bytes, without an intermediate Value.
    let value: Option<sqlx::types::Json<T>> = row.try_get(column)?;
    Ok(value.map(|json| json.0))
}

impl RowSource for PgRow {
    fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn id(&self) -> Result<Uuid, sqlx::Error> {
        self.try_get("id")
    }

    fn instant(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        self.try_get(column)
    }

    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        self.try_get(column)
    }

    fn ip_text(&self) -> Result<Option<String>, sqlx::Error> {
        self.try_get("ip_text")
    }

    fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<Option<T>, sqlx::Error> {
        json_column(self, column)
    }
}

pub(super) fn stored_row(table: Table, row: &PgRow) -> Result<StoredRow, sqlx::Error> {
    decode_stored(table, row)
}
