//! `GET /audit/stream`: the live tail as Server-Sent Events (see [`crate::stream`]),
//! with the filters, permissions and tenant scope of `/audit/combined`.
//!
//! Each event is one SSE message whose `id` is the event id and whose `data` is the
//! event's JSON line. A client that reconnects with `Last-Event-ID` first gets the
//! events it missed while the node still holds them; when it no longer does, a
//! `reset` message says so. A client that falls too far behind gets a `dropped`
//! message and the stream ends.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
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
use crate::stream::{TailBatch, TailEvent};

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
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
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

    let subscription = state.tail.subscribe(last);
    let wanted = Arc::new(move |event: &TailEvent| {
        filters.tenant.as_deref().is_none_or(|tenant| event.tenant() == tenant) && memory::matches(&filters, &categories, event.item())
    });
    let reset = (!subscription.resumed).then(|| {
        Event::default().event("reset").data(r#"{"reason":"the events after Last-Event-ID are no longer held; following from now"}"#)
    });
    let missed: Vec<Event> =
        subscription.missed.iter().filter(|event| wanted(event)).map(|event| message(event)).collect();
    let held = stream::iter(reset.into_iter().chain(missed).map(Ok));
    // The batch being sent, and where in it.
    let pending: Option<(TailBatch, usize)> = None;
    let live = stream::unfold(Some((subscription.live, subscription.closing, pending)), move |state| {
        let wanted = wanted.clone();
        async move {
            let (mut receiver, mut closing, mut pending) = state?;
            loop {
                if let Some((batch, at)) = pending.as_mut() {
                    while *at < batch.len() {
                        let event = batch[*at].clone();
                        *at += 1;
                        if wanted(&event) {
                            return Some((Ok(message(&event)), Some((receiver, closing, pending))));
                        }
                    }
                }
                let received = tokio::select! {
                    received = receiver.recv() => received,
                    _ = closing.wait_for(|closing| *closing) => {
                        let notice = Event::default().event("closing").data(
                            r#"{"reason":"this node is shutting down; reconnect (to another node) with Last-Event-ID"}"#,
                        );
                        return Some((Ok(notice), None));
                    }
                };
                match received {
                    Ok(batch) => pending = Some((batch, 0)),
                    Err(RecvError::Lagged(missed)) => {
                        let notice = Event::default().event("dropped").data(format!(
                            r#"{{"reason":"the client fell {missed} batches of events behind; reconnect with Last-Event-ID"}}"#
                        ));
                        return Some((Ok(notice), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(held.chain(live)).keep_alive(KeepAlive::default()))
}

/// One event as an SSE message: its id, and its JSON line as the data.
fn message(event: &TailEvent) -> Event {
    Event::default().id(event.id.to_string()).data(String::from_utf8_lossy(event.line()))
}
