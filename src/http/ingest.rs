//! `POST /audit/events`: one event, a JSON array, or NDJSON.
//!
//! Checks run cheapest first, and nothing is queued until every item passed:
//! key (401/403), content type and encoding (415), size (413, compressed and
//! decompressed), framing and count (400/413), then
//! each item's fields (400 naming index, field and reason).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::auth::require;
use super::error::ApiError;
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::event::body::{split_items, BodyError, BodyFormat};
use crate::event::{AuditEvent, EventParser, FieldError};
use crate::ingest::{SubmitError, WriteError};
use crate::tiers::spool::SpoolError;
use crate::keys::{Permission, Principal};
use crate::telemetry::Counters;

/// How the body is compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentEncoding {
    Identity,
    Gzip,
}

impl ContentEncoding {
    /// The request's encoding: none, `identity` or `gzip`; any other is refused (415)
    /// before the body is read.
    fn of(headers: &HeaderMap) -> Result<ContentEncoding, ApiError> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else { return Ok(ContentEncoding::Identity) };
        match value.to_str().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Ok("" | "identity") => Ok(ContentEncoding::Identity),
            Ok("gzip" | "x-gzip") => Ok(ContentEncoding::Gzip),
            _ => Err(ApiError::unsupported_media_type("Content-Encoding: send the body as it is or gzip-compressed (gzip)")),
        }
    }

    /// The body as sent before compression, at most `limit` bytes of it (413 past
    /// that, so a small compressed body cannot expand without bound).
    async fn decode(self, body: axum::body::Bytes, limit: usize) -> Result<axum::body::Bytes, ApiError> {
        if self == ContentEncoding::Identity {
            return Ok(body);
        }
        let inflated = tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut out = Vec::new();
            let read = flate2::read::MultiGzDecoder::new(body.as_ref()).take(limit as u64 + 1).read_to_end(&mut out);
            read.map(|_| out)
        })
        .await
        .map_err(|_| ApiError::bad_request("the gzip body could not be read"))?
        .map_err(|_| ApiError::bad_request("Content-Encoding says gzip but the body is not valid gzip"))?;
        if inflated.len() > limit {
            return Err(ApiError::too_large(format!("the body is larger than {limit} bytes once decompressed")));
        }
        Ok(inflated.into())
    }
}

/// The acknowledgement: every listed event is durable in its system of record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    /// How many events the request held.
    pub accepted: usize,
    /// Their ids, in request order (assigned ones included).
    pub ids: Vec<Uuid>,
}

#[tracing::instrument(skip_all, fields(key.id = %principal.key_id, events = tracing::field::Empty))]
#[utoipa::path(post, path = "/audit/events", tag = "ingest",
    request_body(content = Vec<WireEvent>, description = "one event, an array of events (application/json), or one event per line (application/x-ndjson)"),
    responses((status = 200, description = "every event is durable", body = IngestResponse), (status = 408, description = "the body arrived too slowly", body = ErrorEnvelope), (status = 413, description = "over a size limit", body = ErrorEnvelope), (status = 415, description = "unsupported content type", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn ingest(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    require(&principal, Permission::EventsWrite)?;
    let limits = state.settings.limits;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = BodyFormat::from_content_type(content_type).ok_or_else(|| {
        ApiError::unsupported_media_type(
            "send application/json (an event or an array of events) or application/x-ndjson",
        )
    })?;
    let bytes = read_body(&state, &headers, body).await?;
    let items = split_items(&bytes, format, limits.max_event_bytes, limits.max_batch_events).map_err(|e| match e {
        BodyError::EventTooLarge { .. } | BodyError::TooManyEvents { .. } => ApiError::too_large(e.to_string()),
        BodyError::NumbersOutOfRange(fields) => ApiError::validation(fields),
        _ => ApiError::bad_request(e.to_string()),
    })?;
    tracing::Span::current().record("events", items.len());

    let parser = EventParser::new(limits, principal.tenant.clone(), Utc::now());
    let mut events: Vec<AuditEvent> = Vec::with_capacity(items.len());
    let mut problems: Vec<FieldError> = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parser.parse_item(index, item) {
            Ok(mut event) => {
                // Before any tier sees it.
                state.masker.apply(&mut event);
                events.push(event);
            }
            Err(mut errors) => problems.append(&mut errors),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }

    if events.is_empty() {
        return Ok(Json(IngestResponse { accepted: 0, ids: Vec::new() }));
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    state.pipeline.submit(events).await.map_err(|e| submit_error(e, state.settings.ingest.retry_after_seconds))?;
    Counters::add(&state.counters.bytes_accepted, bytes.len() as u64);
    Ok(Json(IngestResponse { accepted: ids.len(), ids }))
}

/// The request's body as sent before compression: refused past
/// `limits.max_request_bytes` (declared, read or decompressed), when it arrives too
/// slowly, or in an encoding other than none or gzip.
pub(super) async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, ApiError> {
    let limits = state.settings.limits;
    let encoding = ContentEncoding::of(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || ApiError::too_large(format!("the body is larger than {} bytes", limits.max_request_bytes));
    if declared.is_some_and(|len| len > limits.max_request_bytes) {
        return Err(too_large());
    }
    let deadline = std::time::Duration::from_millis(state.settings.server.body_timeout_ms);
    let bytes = tokio::time::timeout(deadline, axum::body::to_bytes(body, limits.max_request_bytes))
        .await
        .map_err(|_| ApiError::request_timeout(format!("the body did not arrive within {} ms; nothing was written", deadline.as_millis())))?
        .map_err(|e| {
            if e.into_inner().is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::bad_request("the body could not be read")
            }
        })?;
    encoding.decode(bytes, limits.max_request_bytes).await
}

/// Why accepted events were not acknowledged, as a 503 with `Retry-After`.
pub(super) fn submit_error(e: SubmitError, retry_after: u64) -> ApiError {
    match e {
        SubmitError::QueueFull => ApiError::unavailable(
            "queue_full",
            "the ingest queue is full; nothing was written, retry later",
            retry_after,
        ),
        SubmitError::ShuttingDown => {
            ApiError::unavailable("shutting_down", "tierlog is shutting down; retry on another node", retry_after)
        }
        SubmitError::Failed(e) if matches!(*e, WriteError::Spool(SpoolError::Full { .. })) => ApiError::unavailable(
            "spool_full",
            "Postgres is unreachable and the spool is full; nothing was acknowledged, retry with the same ids",
            retry_after,
        ),
        SubmitError::Failed(_) => ApiError::unavailable(
            "storage_unavailable",
            "the events could not be made durable; nothing was acknowledged, retry with the same ids",
            retry_after,
        ),
    }
}
