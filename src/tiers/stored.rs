//! A persisted row as every durable store gives it back: the event and its chain
//! columns, decoded the same way from Postgres and SQLite rows.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::Table;
use crate::event::{AuditEvent, Category, Level, Status};
use crate::integrity::chain::PiiPath;

/// A persisted row with its chain columns.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub table: Table,
    pub event: AuditEvent,
    pub expires_at: DateTime<Utc>,
    pub seq: i64,
    pub prev_hash: Vec<u8>,
    pub row_hash: Vec<u8>,
    pub pii_salt: Option<Vec<u8>>,
    pub pii_hash: Vec<u8>,
    pub pii_paths: Vec<PiiPath>,
}

/// `pii_paths` as stored: NULL when there are none.
pub(crate) fn paths_json(paths: &[PiiPath]) -> Option<Value> {
    (!paths.is_empty()).then(|| serde_json::to_value(paths).unwrap_or(Value::Null))
}

impl StoredRow {
    /// The event as JSON plus the server's fields: table, sequence and hash.
    pub fn to_item(&self) -> Value {
        let mut item = serde_json::to_value(&self.event).unwrap_or(Value::Null);
        if let Some(object) = item.as_object_mut() {
            object.insert("table".into(), self.table.as_str().into());
            object.insert("seq".into(), self.seq.into());
            object.insert("hash".into(), hex::encode(&self.row_hash).into());
        }
        item
    }
}

/// Typed access to one stored row's columns, whatever the database.
pub(crate) trait RowSource {
    fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn id(&self) -> Result<Uuid, sqlx::Error>;
    fn instant(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;
    /// The client address as text.
    fn ip_text(&self) -> Result<Option<String>, sqlx::Error>;
    fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<Option<T>, sqlx::Error>;
}

pub(crate) fn decode_err(column: &str, what: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_owned(), source: what.to_owned().into() }
}

fn required<T>(value: Option<T>, column: &str) -> Result<T, sqlx::Error> {
    value.ok_or_else(|| decode_err(column, "is NULL"))
}

/// Decodes a row of an event table.
pub(crate) fn decode_stored<R: RowSource>(table: Table, row: &R) -> Result<StoredRow, sqlx::Error> {
    let text = |column: &str| row.text(column);
    let category = required(text("category")?, "category")?;
    let level = required(text("level")?, "level")?;
    let status = text("status")?
        .map(|s| match s.as_str() {
            "success" => Ok(Status::Success),
            "failure" => Ok(Status::Failure),
            "error" => Ok(Status::Error),
            _ => Err(decode_err("status", "unknown status")),
        })
        .transpose()?;
    let ip_address = row
        .ip_text()?
        .map(|ip| ip.parse::<IpAddr>().map_err(|_| decode_err("ip_address", "not an address")))
        .transpose()?;
    let event = AuditEvent {
        id: row.id()?,
        timestamp: row.instant("occurred_at")?,
        received_at: row.instant("received_at")?,
        tenant_id: required(text("tenant_id")?, "tenant_id")?,
        category: Category::parse(&category).ok_or_else(|| decode_err("category", "unknown category"))?,
        level: Level::parse(&level).ok_or_else(|| decode_err("level", "unknown level"))?,
        logger: text("logger")?,
        message: text("message")?,
        event_type: text("event_type")?,
        action: text("action")?,
        status,
        application: text("application")?,
        user_id: text("user_id")?,
        username: text("username")?,
        email: text("email")?,
        resource: text("resource")?,
        resource_id: text("resource_id")?,
        ip_address,
        user_agent: text("user_agent")?,
        request_id: text("request_id")?,
        session_id: text("session_id")?,
        details: row.json("details")?,
        changes: row.json("changes")?,
        security: row.json("security")?,
        financial: row.json("financial")?,
    };
    Ok(StoredRow {
        table,
        event,
        expires_at: row.instant("expires_at")?,
        seq: row.int("seq")?,
        prev_hash: required(row.bytes("prev_hash")?, "prev_hash")?,
        row_hash: required(row.bytes("row_hash")?, "row_hash")?,
        pii_salt: row.bytes("pii_salt")?,
        pii_hash: required(row.bytes("pii_hash")?, "pii_hash")?,
        pii_paths: row.json("pii_paths")?.unwrap_or_default(),
    })
}
