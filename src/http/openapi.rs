//! The OpenAPI 3.1 description, generated from the handlers' annotations, served at
//! `/openapi.json` with an offline Swagger UI at `/docs`.

use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// An audit event as sent (docs/api.md states every rule).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct WireEvent {
    /// Idempotency key; assigned (UUIDv7) when absent.
    #[schema(value_type = Option<String>, format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    id: Option<uuid::Uuid>,
    /// RFC 3339 with an offset; the receive time when absent; at most
    /// `limits.max_future_seconds` (default 3600) ahead of the server's clock.
    #[schema(format = DateTime, pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")]
    timestamp: Option<String>,
    /// auth, security, api, error, audit or financial.
    #[schema(pattern = "^(auth|security|api|error|audit|financial)$")]
    category: String,
    /// DEBUG, INFO (default), WARNING, ERROR or CRITICAL.
    #[schema(pattern = "^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")]
    level: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    logger: Option<String>,
    #[schema(max_length = 16384, pattern = "^[^\\x00]*$")]
    message: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    event_type: Option<String>,
    /// Dotted name such as auth.login_failed.
    #[schema(pattern = "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$", max_length = 128)]
    action: Option<String>,
    /// success, failure or error.
    #[schema(pattern = "^(success|failure|error)$")]
    status: Option<String>,
    #[schema(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    tenant_id: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    application: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    user_id: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    username: Option<String>,
    /// An e-mail address (holds an `@`).
    #[schema(max_length = 320, pattern = "^[^\\x00@]*@[^\\x00]*$")]
    email: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    resource: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    resource_id: Option<String>,
    /// IPv4 or IPv6.
    #[schema(value_type = Option<IpAddress>)]
    ip_address: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    user_agent: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    request_id: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    session_id: Option<String>,
    /// Any object, at most 16 levels deep; its strings hold no NUL, and its numbers
    /// must be kept exactly: 64-bit integers, or numbers a 64-bit float holds as
    /// written (no negative zero).
    details: Option<serde_json::Map<String, serde_json::Value>>,
    changes: Option<WireChanges>,
    security: Option<WireSecurity>,
    financial: Option<WireFinancial>,
}

/// An entity's values before and after a change; the same rules as `details`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct WireChanges {
    before: Option<serde_json::Map<String, serde_json::Value>>,
    after: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a security event is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct WireSecurity {
    /// rate_limited, ip_blocked, account_locked, lockout_reset, ...
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\x00]*$")]
    event_type: String,
    #[schema(pattern = "^(low|medium|high|critical)$")]
    severity: Option<String>,
}

/// A financial transaction.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct WireFinancial {
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    transaction_id: Option<String>,
    /// A decimal string such as "1250.00": up to 28 digits before the point and 10
    /// after, no exponent, no leading zeros.
    #[schema(pattern = "^-?(0|[1-9][0-9]{0,27})(\\.[0-9]{1,10})?$")]
    amount: Option<String>,
    #[schema(value_type = Option<Currency>)]
    currency: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    account_id: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    counterparty: Option<String>,
}

/// An ISO 4217 currency code.
pub struct Currency;

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(crate::event::currency::CODES))
            .description(Some("an ISO 4217 currency code"))
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

/// An IPv4 or IPv6 address.
pub struct IpAddress;

impl utoipa::PartialSchema for IpAddress {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        ip_formats().into()
    }
}

impl utoipa::ToSchema for IpAddress {}

fn ip_formats() -> utoipa::openapi::schema::AnyOfBuilder {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let ipv4 = r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$";
    AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv4))).pattern(Some(ipv4)))
        .item(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv6))).pattern(Some("^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$")))
}

/// An IP address, or a CIDR network (`10.0.0.0/8`, `2001:db8::/32`).
pub struct IpOrNetwork;

impl utoipa::PartialSchema for IpOrNetwork {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let ipv4_network = r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$";
        ip_formats()
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(ipv4_network)))
            .description(Some("an IP address or a CIDR network"))
            .into()
    }
}

impl utoipa::ToSchema for IpOrNetwork {}

/// The pattern of tenant ids and plan names.
pub const NAME_PATTERN: &str = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$";

fn string_matching(pattern: &str) -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String).pattern(Some(pattern))
}

/// Retention days per category: 1 to 36,500 each.
pub struct DaysSchema;

impl utoipa::PartialSchema for DaysSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        let categories = ["auth", "security", "api", "error", "audit", "financial"];
        let days = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(crate::retention::MAX_DAYS));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(categories))))
            .additional_properties(Some(AdditionalProperties::RefOr(days.into())))
            .description(Some("days per category"))
            .into()
    }
}

impl utoipa::ToSchema for DaysSchema {}

/// An object keyed by tenant ids or plan names, each member a `value`.
fn named_map(value: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(string_matching(NAME_PATTERN)))
        .additional_properties(Some(AdditionalProperties::RefOr(value)))
        .into()
}

/// Plans by name, each with its days per category.
pub struct PlanMap;

impl utoipa::PartialSchema for PlanMap {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        named_map(<DaysSchema as utoipa::PartialSchema>::schema())
    }
}

impl utoipa::ToSchema for PlanMap {}

/// Tenant policies by tenant id.
pub struct TenantMap;

impl utoipa::PartialSchema for TenantMap {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        named_map(utoipa::openapi::Ref::from_schema_name("TenantPolicy").into())
    }
}

impl utoipa::ToSchema for TenantMap {}

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
    #[param(min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$")]
    user_id: Option<String>,
    #[param(min_length = 1, max_length = 128, pattern = "^[^\\x00]*$")]
    action: Option<String>,
    /// success, failure or error.
    #[param(pattern = "^(success|failure|error)$")]
    status: Option<String>,
    #[param(min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$")]
    resource: Option<String>,
    #[param(min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$")]
    resource_id: Option<String>,
    /// An address or a CIDR network.
    #[param(value_type = Option<IpOrNetwork>)]
    ip_address: Option<String>,
    #[param(min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$")]
    request_id: Option<String>,
    /// RFC 3339, inclusive.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339, exclusive.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Full-text search over message, action and details.
    #[param(min_length = 1, max_length = 256, pattern = "^[^\\x00]*$")]
    q: Option<String>,
}

/// Paging of the list and aggregate endpoints.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct PageParams {
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of a previous page; any other value is refused (400).
    #[param(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
    /// Add the exact number of matches.
    include_total: Option<bool>,
}

/// The window of the aggregate endpoints.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct WindowParams {
    /// The window when `from` is not given: 1 to 8760 hours (default 24).
    #[param(minimum = 1, maximum = 8760)]
    hours: Option<u32>,
}

/// How failed logins are grouped.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct FailureParams {
    /// ip (default) or user.
    #[param(pattern = "^(ip|user)$")]
    group_by: Option<String>,
    /// Leave out groups with fewer failures (1 to 1,000,000).
    #[param(minimum = 1, maximum = 1000000)]
    min_failures: Option<u32>,
}

/// A rule's name.
#[derive(ToSchema)]
#[schema(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
#[allow(dead_code)] // Read by the schema generator only.
pub struct RuleName(String);

/// A category applications send.
#[derive(ToSchema)]
#[schema(pattern = "^(auth|security|api|error|audit|financial)$")]
#[allow(dead_code)] // Read by the schema generator only.
pub struct SentCategory(String);

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
        super::otlp::logs,
        super::query::logs,
        super::query::security_events,
        super::query::financial,
        super::query::redis,
        super::query::combined,
        super::stream::stream,
        super::query::user_activity,
        super::lockouts::lockouts,
        super::reports::report,
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
        super::rules::get_rules,
        super::rules::put_rules,
        super::alerts::alerts,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::update,
        super::webhooks::delete,
        super::webhooks::test,
        super::webhooks::messages,
        super::webhooks::redeliver,
        super::subjects::erase,
        super::subjects::export,
        super::keys::create_key,
        super::keys::list_keys,
        super::keys::revoke_key,
        super::keys::whoami,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(RuleName, SentCategory, WireEvent, WireChanges, WireSecurity, WireFinancial, Currency, ErrorEnvelope, ErrorBody, IpOrNetwork, IpAddress, crate::retention::TenantPolicy)),
    modifiers(&BearerAuth, &PlainSummaries),
    security(("bearer" = [])),
    // The order /docs/ shows the groups in: sending events first, operations last.
    tags(
        (name = "ingest", description = "Send audit events"),
        (name = "read", description = "Read, search, count and export events"),
        (name = "keys", description = "API keys"),
        (name = "integrity", description = "Hash-chain verification and signed checkpoints"),
        (name = "retention", description = "Retention policies, legal hold and the retention job"),
        (name = "privacy", description = "GDPR erasure and a subject's data export"),
        (name = "detection", description = "Detection rules, their alerts, and the webhooks alerts are delivered to"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// Summaries are plain text in Swagger UI: the handler's first doc line loses the
/// method and path it starts with (shown beside it anyway) and its backticks.
struct PlainSummaries;

impl utoipa::Modify for PlainSummaries {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                if let Some(summary) = &mut operation.summary {
                    *summary = plain_summary(summary);
                }
            }
        }
    }
}

/// "`GET /readyz`: 200 while events can be acknowledged" becomes "200 while events can
/// be acknowledged", with its first letter raised.
fn plain_summary(summary: &str) -> String {
    let rest = match summary.strip_prefix('`').and_then(|s| s.split_once("`: ")) {
        Some((_, rest)) => rest,
        None => summary,
    };
    let plain = rest.replace('`', "");
    let mut chars = plain.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

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
