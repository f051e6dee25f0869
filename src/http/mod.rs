//! The HTTP API: routes, the shared state, errors and authentication.

mod access;
pub mod auth;
mod console;
pub mod error;
mod export;
pub mod extract;
mod health;
mod ingest;
mod reports;
mod lockouts;
mod otlp;
pub mod keys;
pub mod openapi;
mod query;
pub mod rate;
pub mod serve;
pub mod retention;
pub mod rules;
mod webhooks;
mod alerts;
mod stats;
mod stream;
mod subjects;
mod verify;

use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::clock::Clock;
use crate::config::Settings;
use crate::event::mask::Masker;
use crate::retention::PolicyHandle;
use crate::ingest::Pipeline;
use crate::query::IpFilter;
use crate::telemetry::Counters;
use crate::tiers::files::RollingFiles;
use crate::tiers::spool::Spool;
use crate::tiers::database::Database;
use crate::tiers::{DurableStore, HotTier};

/// What every handler may use. Axum clones the state for every request (and its
/// middleware), so it is one shared pointer rather than a score of them.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of a service built from `shared`.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub settings: Arc<Settings>,
    pub pipeline: Pipeline,
    pub auth: auth::Authenticator,
    /// Peers whose X-Forwarded-For / X-Real-IP headers are believed.
    pub trusted_proxies: Arc<[IpFilter]>,
    pub counters: Arc<Counters>,
    pub store: Option<Arc<dyn DurableStore>>,
    /// The system of record's reader side (Postgres or the embedded store).
    pub database: Option<Database>,
    pub hot: Option<Arc<dyn HotTier>>,
    pub files: Option<Arc<RollingFiles>>,
    /// Where events for Postgres wait while it is unreachable.
    pub spool: Option<Arc<Spool>>,
    /// The checkpoint signing key, and the keys whose signatures are accepted.
    pub integrity: Arc<crate::integrity::identity::SigningIdentity>,
    /// Retention policies in force.
    pub policies: PolicyHandle,
    /// Time for retention and checkpoints (tests move it forward).
    pub clock: Clock,
    /// Masking rules applied at ingest.
    pub masker: Arc<Masker>,
    /// The background-work lease this node holds or waits for.
    pub lease: Arc<crate::cluster::lease::Lease>,
    /// The live tail of accepted events.
    pub tail: Arc<crate::stream::Tail>,
    /// Detection rules on accepted events (when on).
    pub detector: Option<Arc<crate::detect::Detector>>,
    /// The direct push to Loki (when `loki.push_url` is set).
    pub loki: Option<Arc<crate::ship::loki::LokiPush>>,
    /// The webhook client (when webhooks are on).
    pub webhooks: Option<crate::webhooks::deliver::Sender>,
    pub deliveries: Arc<crate::webhooks::deliver::DeliveryCounters>,
}


impl AppState {
    /// The database reader, or 404 when no database is configured.
    pub fn reader(&self) -> Result<&Database, error::ApiError> {
        self.database.as_ref().ok_or_else(|| error::ApiError::not_found("no database is configured"))
    }
}

/// The complete router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/audit/events", post(ingest::ingest))
        .route("/v1/logs", post(otlp::logs))
        .route("/audit/keys", post(keys::create_key).get(keys::list_keys))
        .route("/audit/keys/{id}", delete(keys::revoke_key))
        .route("/audit/whoami", get(keys::whoami))
        .route("/audit/logs", get(query::logs))
        .route("/audit/security-events", get(query::security_events))
        .route("/audit/financial", get(query::financial))
        .route("/audit/redis", get(query::redis))
        .route("/audit/combined", get(query::combined))
        .route("/audit/stream", get(stream::stream))
        .route("/audit/stats", get(stats::stats))
        .route("/audit/export", get(export::export))
        .route("/audit/verify", get(verify::verify))
        .route("/audit/reports", get(reports::report))
        .route("/audit/checkpoints", get(verify::list_checkpoints).post(verify::create_checkpoints))
        .route("/audit/checkpoints/public-key", get(verify::public_key))
        .route("/audit/retention", get(retention::get_retention).put(retention::put_retention))
        .route("/audit/retention/run", post(retention::run_retention))
        .route("/audit/subjects/{id}/erase", post(subjects::erase))
        .route("/audit/subjects/{id}/export", get(subjects::export))
        .route("/audit/failed-logins", get(stats::failed_logins))
        .route("/audit/users/{id}/activity", get(query::user_activity))
        .route("/audit/users/{id}/lockouts", get(lockouts::lockouts))
        .route("/audit/rules", get(rules::get_rules).put(rules::put_rules))
        .route("/audit/alerts", get(alerts::alerts))
        .route("/audit/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/audit/webhooks/{id}", axum::routing::put(webhooks::update).delete(webhooks::delete))
        .route("/audit/webhooks/{id}/test", post(webhooks::test))
        .route("/audit/webhooks/{id}/messages", get(webhooks::messages))
        .route("/audit/webhooks/{id}/messages/{message_id}/redeliver", post(webhooks::redeliver))
        .route("/", get(console::root))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), time_reads))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()))
        .fallback(no_such_path)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unusable_request_id))
}

/// 404 for a path the API does not have, in the error envelope.
async fn no_such_path(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::not_found(format!("no such path: {}; the API is listed at /docs/", uri.path()))
}

/// 405 for a path the API has, called with another method, in the error envelope
/// (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::method_not_allowed(format!("{} does not take {method}; see the Allow header", uri.path()))
}

/// Whether a client's `X-Request-ID` is kept: 1 to 128 visible ASCII characters.
pub fn is_usable_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 128 && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Drops an `X-Request-ID` that is not usable, so a fresh one is generated, echoed and
/// recorded instead of whatever was sent.
async fn drop_unusable_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    if request.headers().get("x-request-id").is_some_and(|v| !is_usable_request_id(v.as_bytes())) {
        request.headers_mut().remove("x-request-id");
    }
    request
}

/// Times every read of the `/audit` API into `tierlog_query_seconds{endpoint}`.
async fn time_reads(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let endpoint = (request.method() == axum::http::Method::GET)
        .then(|| request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned()))
        .flatten()
        .filter(|path| path.starts_with("/audit/"));
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(endpoint) = endpoint {
        state.counters.metrics.query(&endpoint).record(started.elapsed().as_secs_f64());
    }
    response
}
