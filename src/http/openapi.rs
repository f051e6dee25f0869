//! The OpenAPI 3.1 description, generated from the handlers' annotations, served at
//! `/openapi.json` with an offline Swagger UI at `/docs`.

use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// An audit event as sent (see the README for every rule).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct WireEvent {
    /// Idempotency key; assigned (UUIDv7) when absent.
    id: Option<uuid::Uuid>,
    /// RFC 3339; the receive time when absent.
    #[schema(format = DateTime)]
    timestamp: Option<String>,
    /// auth, security, api, error, audit or financial.
    #[schema(pattern = "^(auth|security|api|error|audit|financial)$")]
    category: String,
    /// DEBUG, INFO (default), WARNING, ERROR or CRITICAL.
    #[schema(pattern = "^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")]
    level: Option<String>,
    logger: Option<String>,
    message: Option<String>,
    event_type: Option<String>,
    /// Dotted name such as auth.login_failed.
    #[schema(pattern = "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$", max_length = 100)]
    action: Option<String>,
    /// success, failure or error.
    #[schema(pattern = "^(success|failure|error)$")]
    status: Option<String>,
    #[schema(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    tenant_id: Option<String>,
    application: Option<String>,
    user_id: Option<String>,
    username: Option<String>,
    email: Option<String>,
    resource: Option<String>,
    resource_id: Option<String>,
    /// IPv4 or IPv6.
    ip_address: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    session_id: Option<String>,
    details: Option<serde_json::Map<String, serde_json::Value>>,
    /// {"before": {...}, "after": {...}}
    changes: Option<serde_json::Map<String, serde_json::Value>>,
    /// {"event_type": "...", "severity": "low|medium|high|critical"}
    security: Option<serde_json::Map<String, serde_json::Value>>,
    /// {"transaction_id", "amount" (decimal string), "currency", "account_id", "counterparty"}
    financial: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The error envelope of every 4xx and 5xx answer.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct ErrorEnvelope {
    error: ErrorBody,
}

/// The body of [`ErrorEnvelope`].
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct ErrorBody {
    code: String,
    message: String,
    /// For validation failures: every bad field, with its item index.
    fields: Option<Vec<crate::event::FieldError>>,
}

/// The error answers every authenticated endpoint may give.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // Read by the schema generator only.
pub enum CommonErrors {
    /// A malformed request: the message names the parameter or field.
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// No key, or an invalid, expired or revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// The key lacks the permission, or names another tenant.
    #[response(status = 403)]
    Forbidden(ErrorEnvelope),
    /// A tier is unavailable; nothing was done; retry.
    #[response(status = 503)]
    Unavailable(ErrorEnvelope),
}

/// The common filters of the read endpoints.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct QueryParams {
    /// One tenant (keys bound to a tenant may name only their own).
    #[param(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    tenant_id: Option<String>,
    /// auth, security, api, error, audit or financial.
    #[param(pattern = "^(auth|security|api|error|audit|financial)$")]
    category: Option<String>,
    user_id: Option<String>,
    action: Option<String>,
    /// success, failure or error.
    #[param(pattern = "^(success|failure|error)$")]
    status: Option<String>,
    resource: Option<String>,
    resource_id: Option<String>,
    /// An address or a CIDR network.
    ip_address: Option<String>,
    request_id: Option<String>,
    /// RFC 3339, inclusive.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339, exclusive.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Full-text search over message, action and details.
    q: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Add the exact number of matches.
    include_total: Option<bool>,
}

/// Extra parameters of the aggregate endpoints.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct WindowParams {
    /// The window when `from` is not given: 1 to 8760 hours (default 24).
    #[param(minimum = 1, maximum = 8760)]
    hours: Option<u32>,
    /// failed-logins only: ip (default) or user.
    #[param(pattern = "^(ip|user)$")]
    group_by: Option<String>,
    /// failed-logins only: leave out groups with fewer failures.
    min_failures: Option<u32>,
}

/// Extra parameters of the export.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct ExportParams {
    /// ndjson (default) or csv.
    #[param(pattern = "^(ndjson|csv)$")]
    format: Option<String>,
    /// audit_logs, security_events or financial_audit_logs (default: every table).
    #[param(pattern = "^(audit_logs|security_events|financial_audit_logs)$")]
    table: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tierlog", description = "Tiered audit-logging backend: Redis hot tier, tamper-evident Postgres, rolling JSON-lines files."),
    paths(
        super::ingest::ingest,
        super::query::logs,
        super::query::security_events,
        super::query::financial,
        super::query::redis,
        super::query::combined,
        super::query::user_activity,
        super::stats::stats,
        super::stats::failed_logins,
        super::export::export,
        super::verify::verify,
        super::verify::list_checkpoints,
        super::verify::create_checkpoints,
        super::verify::public_key,
        super::retention::get_retention,
        super::retention::put_retention,
        super::retention::run_retention,
        super::subjects::erase,
        super::subjects::export,
        super::keys::create_key,
        super::keys::list_keys,
        super::keys::revoke_key,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(WireEvent, ErrorEnvelope, ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
