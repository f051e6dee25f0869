//! `GET /audit/stream`: the live tail as Server-Sent Events (see [`crate::stream`]),
//! with the filters, permissions and tenant scope of `/audit/combined`.
//!
//! Each event is one SSE message whose `id` is the event id and whose `data` is the
//! event's JSON line; the matching events that arrive within `stream.flush_ms`
//! (100 ms by default) go out in one write. A client that reconnects with
//! `Last-Event-ID` first gets the events it missed while the node still holds them; when it no longer does, a
//! `reset` message says so. A client that falls too far behind gets a `dropped`
//! message and the stream ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::body::{Body, Bytes};
use axum::http::{header, Response};
use futures_util::stream;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::Caller;
use super::openapi::*;
use super::query::{categories_for, record_read};
use super::AppState;
use crate::event::Category;
use crate::keys::Principal;
use crate::query::{memory, Filters};
use crate::stream::TailEvent;

/// `GET /audit/stream`: newly accepted events, as they are acknowledged.
#[utoipa::path(get, path = "/audit/stream", tag = "read",
    description = "Server-Sent Events: each accepted event visible to the key and matching the filters, as it is acknowledged; `Last-Event-ID` resumes for a short while",
    params(QueryParams, ("Last-Event-ID" = Option<uuid::Uuid>, Header, description = "the id of the last event received, to get what came after it")),
    responses((status = 200, description = "an event stream (text/event-stream)", content_type = "text/event-stream", body = String), CommonErrors))]
pub(super) async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response<Body>, ApiError> {
    let (filters, _) = Filters::parse(query.as_deref(), &principal, &[])?;
    let categories = categories_for(&principal, &Category::ALL, &filters)?;
    let last = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<Uuid>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id (a UUID)"))?,
        ),
    };
    record_read(&state, &principal, &filters, "GET /audit/stream", &caller, query.as_deref(), 0).await?;

    let subscription = state.tail.subscribe(last, filters.tenant.as_deref());
    // Most clients follow a tenant (and some categories) and nothing else: that is
    // decided without parsing each event.
    let only_tenant_and_category = filters.narrows_to_tenant_and_category_only();
    let wanted = Arc::new(move |event: &TailEvent| {
        filters.tenant.as_deref().is_none_or(|tenant| event.tenant() == tenant)
            && if only_tenant_and_category {
                event.category().is_some_and(|c| categories.contains(&c))
            } else {
                memory::matches(&filters, &categories, event.item())
            }
    });
    // What was missed (or a reset notice) first, as one chunk.
    let mut first = Vec::new();
    if !subscription.resumed {
        notice(&mut first, "reset", r#"{"reason":"the events after Last-Event-ID are no longer held; following from now"}"#);
    }
    for event in subscription.missed.iter().filter(|event| wanted(event)) {
        message(&mut first, event);
    }
    // Then the matching events of each batch, gathered for `stream.flush_ms` and
    // written as one chunk (one write per interval, not per batch or event), a
    // comment every 15 s while nothing comes, and a last notice when the client fell
    // behind or the node shuts down.
    let flush = Duration::from_millis(state.settings.stream.flush_ms);
    let due = (!first.is_empty()).then(Instant::now);
    let follow = Follow { receiver: subscription.live, closing: subscription.closing, chunk: first, due };
    let live = stream::unfold(Some(follow), move |follow| {
        let wanted = wanted.clone();
        async move {
            let mut f = follow?;
            loop {
                if !f.chunk.is_empty() && (f.chunk.len() >= MAX_CHUNK || f.due.is_some_and(|due| due <= Instant::now())) {
                    f.due = None;
                    let out = Bytes::from(std::mem::take(&mut f.chunk));
                    return Some((Ok::<_, Infallible>(out), Some(f)));
                }
                let wake = match f.due {
                    Some(due) if !f.chunk.is_empty() => due,
                    _ => Instant::now() + KEEP_ALIVE,
                };
                let received = tokio::select! {
                    received = f.receiver.recv() => received,
                    _ = f.closing.wait_for(|closing| *closing) => {
                        notice(&mut f.chunk, "closing", r#"{"reason":"this node is shutting down; reconnect (to another node) with Last-Event-ID"}"#);
                        return Some((Ok(Bytes::from(f.chunk)), None));
                    }
                    () = tokio::time::sleep_until(wake) => {
                        if f.chunk.is_empty() {
                            f.chunk.extend_from_slice(b":\n\n");
                        }
                        f.due = Some(Instant::now());
                        continue;
                    }
                };
                match received {
                    Ok(batch) => {
                        for event in batch.iter().filter(|event| wanted(event)) {
                            message(&mut f.chunk, event);
                        }
                        if !f.chunk.is_empty() && f.due.is_none() {
                            f.due = Some(Instant::now() + flush);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let reason = format!(r#"{{"reason":"the client fell {missed} batches of events behind; reconnect with Last-Event-ID"}}"#);
                        notice(&mut f.chunk, "dropped", &reason);
                        return Some((Ok(Bytes::from(f.chunk)), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    let response = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(live))
        .map_err(|e| ApiError::internal("stream response", &e))?;
    Ok(response)
}

/// How long a quiet stream waits before a comment keeps the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A chunk this large is written without waiting for the rest of its interval.
const MAX_CHUNK: usize = 256 * 1024;

/// One client's stream between writes.
struct Follow {
    receiver: tokio::sync::broadcast::Receiver<crate::stream::TailBatch>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// What is waiting to be written...
    chunk: Vec<u8>,
    /// ...and when (set when the chunk got its first bytes).
    due: Option<Instant>,
}

/// Appends a notice: an SSE message with an event name.
fn notice(out: &mut Vec<u8>, name: &str, data: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Appends one event as an SSE message: its id, and its JSON line as the data (a
/// JSON line holds no newline).
fn message(out: &mut Vec<u8>, event: &TailEvent) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(event.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(event.line());
    out.extend_from_slice(b"\n\n");
}
