//! The figures of a compliance report ([`crate::report`]) for one tenant and
//! period, aggregated in Postgres: counts and sums in SQL, lists capped at
//! [`LIST_CAP`] rows (the report says when a list was cut).
//!
//! The kinds of authentication event are recognised by action, as the lockout
//! diagnostics recognise them ([`crate::query::lockouts`]): a login (`*login*`,
//! success), a failed login (`*login*` failed), a lockout (`*account_locked`,
//! `*.locked`, `*lockout*`), a reset (`*unlock*`, `*reset*`), a logout.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};

/// The most items a list of the report holds.
pub const LIST_CAP: i64 = 10_000;

const LOGIN: &str = "(action ILIKE '%login%' AND action NOT ILIKE '%fail%' AND status = 'success')";
const FAILED: &str = "(action ILIKE '%login%' AND (status = 'failure' OR action ILIKE '%fail%'))";
const LOCKOUT: &str = "(action ILIKE '%account_locked' OR action ILIKE '%.locked' OR action ILIKE '%lockout%')";
const RESET: &str = "(action ILIKE '%unlock%' OR action ILIKE '%reset%')";
const LOGOUT: &str = "(action ILIKE '%logout%')";
/// A change of who may do what: roles, permissions and configuration, in the
/// action or in the changed fields, and tierlog's own keys, rules and policies.
const PRIVILEGED: &str = "(action ~* '(role|permission|privilege|grant|config|setting)'
    OR changes->'before' ?| array['role','roles','permission','permissions','scopes','is_admin','config','settings']
    OR changes->'after' ?| array['role','roles','permission','permissions','scopes','is_admin','config','settings']
    OR action IN ('keys.created','keys.revoked','rules.changed','retention.changed','retention.plans_changed'))";

fn text(value: Option<String>) -> Value {
    value.map_or(Value::Null, Value::String)
}

fn time(at: DateTime<Utc>) -> Value {
    Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Every section that comes from the event tables.
pub async fn gather(pool: &PgPool, tenant: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Value, sqlx::Error> {
    let period = "tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3";
    let auth = format!("{period} AND category = 'auth'");

    // The authentication figures per day: the period's authentication events counted
    // by day, action and status first (a hash aggregate on plain columns), and only
    // those few groups matched against the kinds of event.
    let by_day_sql = format!(
        "SELECT day, sum(n) FILTER (WHERE {LOGIN})::int8 AS logins, sum(n) FILTER (WHERE {FAILED})::int8 AS failed,
                sum(n) FILTER (WHERE {LOCKOUT})::int8 AS lockouts, sum(n) FILTER (WHERE {RESET})::int8 AS resets,
                sum(n) FILTER (WHERE {LOGOUT})::int8 AS logouts, sum(n)::int8 AS events
         FROM (SELECT to_char(date_trunc('day', occurred_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day, action, status, count(*) AS n
               FROM audit_logs WHERE {auth} GROUP BY 1, 2, 3) AS grouped
         GROUP BY day ORDER BY day"
    );
    let by_day = sqlx::query(&by_day_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);
    // The ten users and the ten addresses with the most failed logins: one scan of
    // the failures, grouped both ways and ranked in Postgres.
    let failing_sql = format!(
        "SELECT user_id, ip, not_user, failed FROM (
             SELECT user_id, host(ip_address) AS ip, GROUPING(user_id) AS not_user, count(*) AS failed,
                    row_number() OVER (PARTITION BY GROUPING(user_id)
                                       ORDER BY count(*) DESC, user_id, host(ip_address)) AS rank
             FROM audit_logs WHERE {auth} AND {FAILED}
             GROUP BY GROUPING SETS ((user_id), (host(ip_address)))
             HAVING coalesce(user_id, host(ip_address)) IS NOT NULL) AS ranked
         WHERE rank <= 10 ORDER BY not_user, rank"
    );
    let failing = sqlx::query(&failing_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);
    // Each lockout and the next unlock or reset of the same user (unless another
    // lockout comes first).
    let outer_lockout = LOCKOUT.replace("action", "l.action");
    let lockouts_sql = format!(
        "SELECT l.id, l.occurred_at, l.user_id, l.action, r.occurred_at AS ended_at, r.action AS ended_by
         FROM audit_logs l
         LEFT JOIN LATERAL (
             SELECT occurred_at, action FROM audit_logs
             WHERE tenant_id = l.tenant_id AND category = 'auth' AND user_id = l.user_id
               AND occurred_at > l.occurred_at AND ({RESET} OR {LOCKOUT})
             ORDER BY occurred_at LIMIT 1) r ON r.action ~* '(unlock|reset)'
         WHERE l.tenant_id = $1 AND l.occurred_at >= $2 AND l.occurred_at < $3 AND l.category = 'auth' AND {outer_lockout}
         ORDER BY l.occurred_at, l.id LIMIT {LIST_CAP}"
    );
    let lockouts = sqlx::query(&lockouts_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);

    let changes_sql = format!(
        "SELECT id, occurred_at, action, user_id, username, resource, resource_id, changes->'before' AS before,
                changes->'after' AS after, count(*) OVER () AS total
         FROM audit_logs WHERE {period} AND category = 'audit' AND {PRIVILEGED}
         ORDER BY occurred_at, id LIMIT {LIST_CAP}"
    );
    let changes = sqlx::query(&changes_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);

    let access_by_action_sql = format!(
        "SELECT action, count(*) AS n FROM audit_logs WHERE {period} AND category = 'access' GROUP BY 1 ORDER BY 1"
    );
    let access_by_action = sqlx::query(&access_by_action_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);
    let access_sql = format!(
        "SELECT id, occurred_at, action, user_id, username, details->>'endpoint' AS endpoint,
                details->>'result_count' AS result_count, host(ip_address) AS ip
         FROM audit_logs WHERE {period} AND category = 'access'
           AND action IN ('logs.exported','logs.verified','subject.erased','subject.exported','checkpoints.exported','reports.generated')
         ORDER BY occurred_at, id LIMIT {LIST_CAP}"
    );
    let access = sqlx::query(&access_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);

    let security_sql = format!(
        "SELECT coalesce(security->>'event_type', event_type, action) AS kind, coalesce(security->>'severity', '') AS severity,
                count(*) AS n
         FROM security_events WHERE {period} GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let security = sqlx::query(&security_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);
    let financial_sql = format!(
        "SELECT coalesce(financial->>'currency', '') AS currency, coalesce(status, '') AS status, count(*) AS n,
                sum(CASE WHEN financial->>'amount' ~ '^-?[0-9]+(\\.[0-9]+)?$' THEN (financial->>'amount')::numeric END)::text AS amount
         FROM financial_audit_logs WHERE {period} GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let financial = sqlx::query(&financial_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);

    // Tierlog's own records of the tenant's data lifecycle.
    let lifecycle_sql = format!(
        "SELECT id, occurred_at, action, details FROM audit_logs
         WHERE {period} AND action IN ('retention.run','retention.changed','retention.plans_changed','subject.erased')
         ORDER BY occurred_at, id LIMIT {LIST_CAP}"
    );
    let lifecycle = sqlx::query(&lifecycle_sql).bind(tenant).bind(from).bind(to).fetch_all(pool);

    // Independent queries, side by side on the read pool: the four long scans, then
    // the short ones (at most five connections at once, leaving the pool to others;
    // the chains' verification takes one more).
    let (by_day, failing, lockouts, changes) = tokio::try_join!(by_day, failing, lockouts, changes)?;
    let (access_by_action, access, security, financial, lifecycle) =
        tokio::try_join!(access_by_action, access, security, financial, lifecycle)?;
    let count = |row: &sqlx::postgres::PgRow, column: &str| row.try_get::<i64, _>(column).unwrap_or(0);
    // The totals are the days' sums.
    let total = |column: &str| by_day.iter().map(|r| count(r, column)).sum::<i64>();
    let ranked = |column: &str, name: &str, per_user: bool| -> Value {
        failing
            .iter()
            .filter(|r| (r.get::<i32, _>("not_user") == 0) == per_user)
            .filter_map(|r| Some(json!({name: r.get::<Option<String>, _>(column)?, "failures": count(r, "failed")})))
            .collect()
    };
    let change_total = changes.first().map_or(0, |r| count(r, "total"));
    let lifecycle_items: Vec<Value> = lifecycle
        .iter()
        .map(|r| {
            // A receipt says what was done, never whose data it was.
            let mut details: serde_json::Map<String, Value> = match r.get::<Option<Value>, _>("details") {
                Some(Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            };
            details.retain(|key, _| !key.contains("subject") && key != "user_id" && key != "query");
            json!({"id": r.get::<uuid::Uuid, _>("id"), "at": time(r.get("occurred_at")), "action": r.get::<Option<String>, _>("action"), "details": details})
        })
        .collect();
    let of_action = |wanted: &[&str]| -> Vec<Value> {
        lifecycle_items.iter().filter(|item| wanted.iter().any(|w| item["action"] == *w)).cloned().collect()
    };
    Ok(json!({
        "authentication": {
            "totals": {
                "logins": total("logins"),
                "failed_logins": total("failed"),
                "lockouts": total("lockouts"),
                "resets": total("resets"),
                "logouts": total("logouts"),
                "auth_events": total("events"),
            },
            "by_day": by_day.iter().map(|r| json!({
                "day": r.get::<String, _>("day"),
                "logins": count(r, "logins"),
                "failed_logins": count(r, "failed"),
                "lockouts": count(r, "lockouts"),
                "resets": count(r, "resets"),
            })).collect::<Vec<_>>(),
            "top_failing_users": ranked("user_id", "user_id", true),
            "top_failing_ips": ranked("ip", "ip_address", false),
            "lockouts": lockouts.iter().map(|r| {
                let at: DateTime<Utc> = r.get("occurred_at");
                let ended: Option<DateTime<Utc>> = r.get("ended_at");
                json!({
                    "id": r.get::<uuid::Uuid, _>("id"),
                    "user_id": text(r.get("user_id")),
                    "at": time(at),
                    "ended_at": ended.map_or(Value::Null, time),
                    "ended_by": text(r.get("ended_by")),
                    "locked_seconds": ended.map(|e| (e - at).num_seconds()),
                })
            }).collect::<Vec<_>>(),
        },
        "privileged_changes": {
            "count": change_total,
            "truncated": change_total > LIST_CAP,
            "items": changes.iter().map(|r| json!({
                "id": r.get::<uuid::Uuid, _>("id"),
                "at": time(r.get("occurred_at")),
                "action": text(r.get("action")),
                "user_id": text(r.get("user_id")),
                "username": text(r.get("username")),
                "resource": text(r.get("resource")),
                "resource_id": text(r.get("resource_id")),
                "before": r.get::<Option<Value>, _>("before"),
                "after": r.get::<Option<Value>, _>("after"),
            })).collect::<Vec<_>>(),
        },
        "log_access": {
            "by_action": access_by_action.iter().map(|r| (r.get::<Option<String>, _>("action").unwrap_or_default(), Value::from(count(r, "n")))).collect::<serde_json::Map<_, _>>(),
            "exports_verifications_erasures": access.iter().map(|r| json!({
                "id": r.get::<uuid::Uuid, _>("id"),
                "at": time(r.get("occurred_at")),
                "action": text(r.get("action")),
                "by": text(r.get::<Option<String>, _>("username").or_else(|| r.get("user_id"))),
                "endpoint": text(r.get("endpoint")),
                "result_count": text(r.get("result_count")),
                "ip_address": text(r.get("ip")),
            })).collect::<Vec<_>>(),
        },
        "security": security.iter().map(|r| json!({
            "event_type": r.get::<Option<String>, _>("kind"),
            "severity": r.get::<String, _>("severity"),
            "count": count(r, "n"),
        })).collect::<Vec<_>>(),
        "financial": financial.iter().map(|r| json!({
            "currency": r.get::<String, _>("currency"),
            "status": r.get::<String, _>("status"),
            "count": count(r, "n"),
            "amount": text(r.get("amount")),
        })).collect::<Vec<_>>(),
        "lifecycle": {
            "retention_runs": of_action(&["retention.run"]),
            "retention_changes": of_action(&["retention.changed", "retention.plans_changed"]),
            "erasures": of_action(&["subject.erased"]),
        },
    }))
}
