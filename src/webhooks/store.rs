//! Webhook endpoints and the outbox, in Postgres or the embedded store. The
//! statements are the same on both (ids as text, times as milliseconds, flags as
//! integers), run on either by [`crate::tiers::portable`].

use std::collections::BTreeMap;

use sqlx::Row;
use uuid::Uuid;

use super::{Endpoint, Message, MessageState};
use crate::tiers::portable::Conn;
use crate::tiers::portable::{execute, fetch, lite};
use crate::detect::alert::is_alert;
use crate::event::AuditEvent;

fn uuid(text: String) -> Result<Uuid, sqlx::Error> {
    text.parse().map_err(|e: uuid::Error| sqlx::Error::Decode(e.into()))
}

fn list(text: String) -> Result<Vec<String>, sqlx::Error> {
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(e.into()))
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, rules, categories, enabled, created_at, updated_at";

macro_rules! endpoint_row {
    ($row:ident) => {
        Ok::<Endpoint, sqlx::Error>(Endpoint {
            id: uuid($row.try_get("id")?)?,
            tenant_id: $row.try_get("tenant_id")?,
            url: $row.try_get("url")?,
            description: $row.try_get("description")?,
            rules: list($row.try_get("rules")?)?,
            categories: list($row.try_get("categories")?)?,
            enabled: $row.try_get::<i32, _>("enabled")? != 0,
            created_at: super::time($row.try_get("created_at")?),
            updated_at: super::time($row.try_get("updated_at")?),
        })
    };
}

const MESSAGE_COLUMNS: &str = "id, endpoint_id, tenant_id, event_id, event_type, state, attempts, created_at, \
     next_attempt_at, retry_until, last_attempt_at, last_status, last_error, delivered_at";

macro_rules! message_row {
    ($row:ident) => {
        Ok::<Message, sqlx::Error>(Message {
            id: uuid($row.try_get("id")?)?,
            endpoint_id: uuid($row.try_get("endpoint_id")?)?,
            tenant_id: $row.try_get("tenant_id")?,
            event_id: uuid($row.try_get("event_id")?)?,
            event_type: $row.try_get("event_type")?,
            state: MessageState::parse(&$row.try_get::<String, _>("state")?),
            attempts: $row.try_get("attempts")?,
            created_at: super::time($row.try_get("created_at")?),
            next_attempt_at: super::time($row.try_get("next_attempt_at")?),
            retry_until: $row.try_get::<Option<i64>, _>("retry_until")?.map(super::time),
            last_attempt_at: $row.try_get::<Option<i64>, _>("last_attempt_at")?.map(super::time),
            last_status: $row.try_get("last_status")?,
            last_error: $row.try_get("last_error")?,
            delivered_at: $row.try_get::<Option<i64>, _>("delivered_at")?.map(super::time),
        })
    };
}

/// The webhook messages of the alerts among `events`, written on `conn` (the
/// transaction that writes the alerts): one per enabled endpoint of the alert's
/// tenant that takes its rule and category. An alert already queued for an
/// endpoint is not queued again.
pub async fn enqueue_alerts<'e>(conn: &mut Conn<'_>, events: impl Iterator<Item = &'e AuditEvent>) -> Result<u64, sqlx::Error> {
    let mut queued = 0;
    let mut endpoints: BTreeMap<String, Vec<(String, Vec<String>, Vec<String>)>> = BTreeMap::new();
    for alert in events.filter(|e| is_alert(e)) {
        if !endpoints.contains_key(&alert.tenant_id) {
            let found = fetch!(conn, "SELECT id, rules, categories FROM webhook_endpoints WHERE tenant_id = $1 AND enabled = 1",
                [alert.tenant_id.as_str()],
                |row| Ok((row.try_get::<String, _>("id")?, list(row.try_get("rules")?)?, list(row.try_get("categories")?)?)))?;
            endpoints.insert(alert.tenant_id.clone(), found);
        }
        let detail = |key: &str| alert.details.as_ref().and_then(|d| d.get(key)).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let (rule, category) = (detail("rule"), detail("source_category"));
        let payload = super::payload(alert);
        let at = alert.received_at.timestamp_millis();
        for (endpoint, rules, categories) in &endpoints[&alert.tenant_id] {
            if (!rules.is_empty() && !rules.contains(&rule)) || (!categories.is_empty() && !categories.contains(&category)) {
                continue;
            }
            queued += execute!(conn,
                "INSERT INTO webhook_messages (id, endpoint_id, tenant_id, event_id, event_type, payload, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
                Uuid::now_v7().to_string(), endpoint.as_str(), alert.tenant_id.as_str(), alert.id.to_string(),
                crate::detect::alert::ALERT_ACTION, payload.as_str(), at)?;
        }
    }
    Ok(queued)
}

/// Whether any of `tenants` has an enabled endpoint (so a batch of their alerts
/// has messages to write): one query.
pub async fn any_endpoint(conn: &mut Conn<'_>, tenants: &[&str]) -> Result<bool, sqlx::Error> {
    if tenants.is_empty() {
        return Ok(false);
    }
    let places: Vec<String> = (1..=tenants.len()).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT count(*) FROM webhook_endpoints WHERE enabled = 1 AND tenant_id IN ({})", places.join(", "));
    let found: i64 = match conn {
        Conn::Pg(c) => tenants.iter().fold(sqlx::query_scalar(&sql), |q, t| q.bind(*t)).fetch_one(&mut **c).await?,
        Conn::Lite(c) => tenants.iter().fold(sqlx::query_scalar(&lite(&sql)), |q, t| q.bind(*t)).fetch_one(&mut **c).await?,
    };
    Ok(found > 0)
}

/// Saves a new endpoint.
pub async fn create_endpoint(conn: &mut Conn<'_>, endpoint: &Endpoint, secret: &str) -> Result<(), sqlx::Error> {
    execute!(conn,
        "INSERT INTO webhook_endpoints (id, tenant_id, url, secret, description, rules, categories, enabled, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        endpoint.id.to_string(), endpoint.tenant_id.as_str(), endpoint.url.as_str(), secret, endpoint.description.as_deref(),
        serde_json::to_string(&endpoint.rules).unwrap_or_default(), serde_json::to_string(&endpoint.categories).unwrap_or_default(),
        i32::from(endpoint.enabled), endpoint.created_at.timestamp_millis())?;
    Ok(())
}

/// Replaces an endpoint's settings (a new secret when given).
pub async fn update_endpoint(conn: &mut Conn<'_>, endpoint: &Endpoint, secret: Option<&str>) -> Result<(), sqlx::Error> {
    execute!(conn,
        "UPDATE webhook_endpoints SET url = $2, description = $3, rules = $4, categories = $5, enabled = $6, updated_at = $7,
             secret = COALESCE($8, secret) WHERE id = $1",
        endpoint.id.to_string(), endpoint.url.as_str(), endpoint.description.as_deref(),
        serde_json::to_string(&endpoint.rules).unwrap_or_default(), serde_json::to_string(&endpoint.categories).unwrap_or_default(),
        i32::from(endpoint.enabled), endpoint.updated_at.timestamp_millis(), secret)?;
    Ok(())
}

/// Deletes an endpoint and its messages.
pub async fn delete_endpoint(conn: &mut Conn<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    execute!(conn, "DELETE FROM webhook_messages WHERE endpoint_id = $1", id.to_string())?;
    Ok(execute!(conn, "DELETE FROM webhook_endpoints WHERE id = $1", id.to_string())? > 0)
}

/// The endpoints of `tenant` (`None`: all), oldest first.
pub async fn endpoints(conn: &mut Conn<'_>, tenant: Option<&str>) -> Result<Vec<Endpoint>, sqlx::Error> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY created_at, id");
    fetch!(conn, &sql, [tenant], |row| endpoint_row!(row))
}

/// One endpoint and its secret.
pub async fn endpoint(conn: &mut Conn<'_>, id: Uuid) -> Result<Option<(Endpoint, String)>, sqlx::Error> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS}, secret FROM webhook_endpoints WHERE id = $1");
    let found = fetch!(conn, &sql, [id.to_string()], |row| Ok((endpoint_row!(row)?, row.try_get::<String, _>("secret")?)))?;
    Ok(found.into_iter().next())
}

/// An endpoint's messages, newest first, of one state when given.
pub async fn messages(
    conn: &mut Conn<'_>,
    endpoint: Uuid,
    state: Option<MessageState>,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE endpoint_id = $1 AND ($2 IS NULL OR state = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3"
    );
    fetch!(conn, &sql, [endpoint.to_string(), state.map(MessageState::as_str), limit], |row| message_row!(row))
}

/// One message of an endpoint.
pub async fn message(conn: &mut Conn<'_>, endpoint: Uuid, id: Uuid) -> Result<Option<Message>, sqlx::Error> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE endpoint_id = $1 AND id = $2");
    Ok(fetch!(conn, &sql, [endpoint.to_string(), id.to_string()], |row| message_row!(row))?.into_iter().next())
}

/// Queues a message again from `now`, retried until `retry_until`.
pub async fn redeliver(conn: &mut Conn<'_>, id: Uuid, now: i64, retry_until: i64) -> Result<bool, sqlx::Error> {
    Ok(execute!(conn,
        "UPDATE webhook_messages SET state = 'pending', next_attempt_at = $2, retry_until = $3, delivered_at = NULL WHERE id = $1",
        id.to_string(), now, retry_until)? > 0)
}

/// A message claimed for one attempt, with its endpoint.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub payload: String,
    pub attempts: i32,
    pub created_at: i64,
    pub retry_until: Option<i64>,
}

/// Claims up to `limit` messages due at `now` (of enabled endpoints), oldest due
/// first: each counts one more attempt and is not due again before `until` (when a
/// node dies during the attempt, another sends it again then).
pub async fn claim_due(conn: &mut Conn<'_>, now: i64, until: i64, limit: i64) -> Result<Vec<Claimed>, sqlx::Error> {
    let pick = "SELECT m.id FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id
                WHERE m.state = 'pending' AND m.next_attempt_at <= $1 AND e.enabled = 1
                ORDER BY m.next_attempt_at, m.created_at LIMIT $3";
    let locking = match conn {
        Conn::Pg(_) => " FOR UPDATE OF m SKIP LOCKED",
        Conn::Lite(_) => "",
    };
    let sql = format!(
        "UPDATE webhook_messages SET attempts = attempts + 1, next_attempt_at = $2, last_attempt_at = $1
         WHERE id IN ({pick}{locking}) RETURNING id, endpoint_id, payload, attempts, created_at, retry_until"
    );
    fetch!(conn, &sql, [now, until, limit], |row| Ok(Claimed {
        id: uuid(row.try_get("id")?)?,
        endpoint_id: uuid(row.try_get("endpoint_id")?)?,
        payload: row.try_get("payload")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        retry_until: row.try_get("retry_until")?,
    }))
}

/// How an attempt ended, as the outbox records it.
pub enum Recorded<'a> {
    Delivered { status: u16 },
    /// Tried again at `next` (ms).
    Retry { next: i64, status: Option<u16>, error: &'a str },
    /// Retries are over.
    Dead { status: Option<u16>, error: &'a str },
}

/// Records an attempt's outcome at `now`.
pub async fn record(conn: &mut Conn<'_>, id: Uuid, now: i64, outcome: Recorded<'_>) -> Result<(), sqlx::Error> {
    let id = id.to_string();
    match outcome {
        Recorded::Delivered { status } => execute!(conn,
            "UPDATE webhook_messages SET state = 'delivered', delivered_at = $2, last_status = $3, last_error = NULL WHERE id = $1",
            id, now, i32::from(status))?,
        Recorded::Retry { next, status, error } => execute!(conn,
            "UPDATE webhook_messages SET next_attempt_at = $2, last_status = $3, last_error = $4 WHERE id = $1 AND state = 'pending'",
            id, next, status.map(i32::from), error)?,
        Recorded::Dead { status, error } => execute!(conn,
            "UPDATE webhook_messages SET state = 'dead', last_status = $2, last_error = $3 WHERE id = $1 AND state = 'pending'",
            id, status.map(i32::from), error)?,
    };
    Ok(())
}

/// Counts of messages per state, for `/metrics`.
pub async fn state_counts(conn: &mut Conn<'_>) -> Result<Vec<(String, i64)>, sqlx::Error> {
    fetch!(conn, "SELECT state, count(*) AS n FROM webhook_messages GROUP BY state", [],
        |row| Ok((row.try_get::<String, _>("state")?, row.try_get::<i64, _>("n")?)))
}
