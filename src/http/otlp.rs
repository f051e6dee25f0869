//! `POST /v1/logs`: OpenTelemetry log export requests (OTLP/HTTP), in protobuf or
//! JSON, gzip-compressed or not, each log record taken as one audit event
//! ([`crate::event::otlp`] maps it).
//!
//! The request as a whole is checked like a body of `POST /audit/events` (key,
//! content type and encoding, size, framing, number of records), and refused with
//! the same errors. Then, as OTLP asks, the records that map to valid events are
//! accepted with the same durability, and the others are counted and described in
//! the response's partial success instead of failing the whole request.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Response, StatusCode};
use chrono::Utc;
use prost::Message;

use super::auth::require;
use super::error::ApiError;
use super::ingest::{read_body, submit_error};
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::event::otlp::{self, ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse};
use crate::event::{AuditEvent, EventParser};
use crate::keys::{Permission, Principal};
use crate::telemetry::Counters;

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(ApiError::unsupported_media_type(
                "send an OTLP ExportLogsServiceRequest as application/x-protobuf or application/json",
            )),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// The JSON encoding of an export request, as the API description shows it (the
/// OTLP specification defines the rest of each record).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // A description: requests are read by the OTLP types.
pub struct ExportLogsRequest {
    #[serde(rename = "resourceLogs", default)]
    resource_logs: Vec<ResourceLogsJson>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ResourceLogsJson {
    /// `{"attributes": [{"key": ..., "value": {"stringValue": ...}}]}`
    resource: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "scopeLogs", default)]
    scope_logs: Vec<ScopeLogsJson>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ScopeLogsJson {
    /// `{"name": "app.audit"}`
    scope: Option<serde_json::Map<String, serde_json::Value>>,
    /// Each a log record: `timeUnixNano`, `severityNumber`, `body`, `attributes`, ...
    #[serde(rename = "logRecords", default)]
    log_records: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// How many refused records a partial success describes by position and reason.
const DESCRIBED: usize = 5;

/// `POST /v1/logs`: OTLP/HTTP log export.
#[tracing::instrument(skip_all, fields(key.id = %principal.key_id, records = tracing::field::Empty))]
#[utoipa::path(post, path = "/v1/logs", tag = "ingest",
    description = "OpenTelemetry logs (OTLP/HTTP): an ExportLogsServiceRequest as protobuf (application/x-protobuf) or JSON (application/json), gzip-compressed or not. Each log record becomes an event (mapping in docs/otlp.md); records that cannot be mapped are refused in the response's partialSuccess, the others are durable when it returns.",
    request_body(content = ExportLogsRequest, content_type = "application/json", description = "an OTLP ExportLogsServiceRequest (JSON encoding); application/x-protobuf is accepted too"),
    responses((status = 200, description = "the records not counted in partialSuccess.rejectedLogRecords are durable", body = serde_json::Value), (status = 413, description = "over a size limit", body = ErrorEnvelope), (status = 415, description = "unsupported content type", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn logs(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    require(&principal, Permission::EventsWrite)?;
    let limits = state.settings.limits;
    let encoding = Encoding::of(&headers)?;
    let bytes = read_body(&state, &headers, body).await?;
    let request = match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(bytes.as_ref())
            .map_err(|e| ApiError::bad_request(format!("the body is not an OTLP ExportLogsServiceRequest in protobuf: {e}")))?,
        Encoding::Json => otlp::from_json(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not an OTLP ExportLogsServiceRequest in JSON: {e}")))?,
    };
    let records = otlp::count(&request);
    tracing::Span::current().record("records", records);
    if records > limits.max_batch_events {
        return Err(ApiError::too_large(format!(
            "the request holds {records} log records, more than the {} a request may have",
            limits.max_batch_events
        )));
    }

    let parser = EventParser::new(limits, principal.tenant.clone(), Utc::now());
    let mut events: Vec<AuditEvent> = Vec::with_capacity(records);
    let mut refused = Vec::new();
    for (index, item) in otlp::events(&request, limits.max_event_bytes).into_iter().enumerate() {
        let parsed = item.and_then(|item| {
            parser.parse(index, item).map_err(|errors| {
                errors.iter().map(|e| if e.field.is_empty() { e.reason.clone() } else { format!("{}: {}", e.field, e.reason) }).collect::<Vec<_>>().join("; ")
            })
        });
        match parsed {
            Ok(mut event) => {
                state.masker.apply(&mut event);
                events.push(event);
            }
            Err(reason) => refused.push((index, reason)),
        }
    }
    drop(request);
    if !events.is_empty() {
        state.pipeline.submit(events).await.map_err(|e| submit_error(e, state.settings.ingest.retry_after_seconds))?;
        Counters::add(&state.counters.bytes_accepted, bytes.len() as u64);
    }
    let partial_success = (!refused.is_empty()).then(|| {
        let mut message = refused
            .iter()
            .take(DESCRIBED)
            .map(|(index, reason)| format!("log record {index}: {reason}"))
            .collect::<Vec<_>>()
            .join(" | ");
        if refused.len() > DESCRIBED {
            message.push_str(&format!(" | and {} more", refused.len() - DESCRIBED));
        }
        ExportLogsPartialSuccess { rejected_log_records: refused.len() as i64, error_message: message }
    });
    if !refused.is_empty() {
        tracing::info!(refused = refused.len(), records, "OTLP log records refused");
    }
    let response = ExportLogsServiceResponse { partial_success };
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&response).map_err(|e| ApiError::internal("OTLP response", &e))?,
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, encoding.content_type())
        .body(Body::from(Bytes::from(body)))
        .map_err(|e| ApiError::internal("OTLP response", &e))
}
