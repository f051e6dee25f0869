//! Records every use of the read and management API as an `audit` event, written
//! through the normal pipeline into the same hash chains as everything else.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::extract::Caller;
use super::AppState;
use crate::event::access::AccessRecord;
use crate::ingest::SubmitError;
use crate::keys::Principal;

/// One API use to record.
pub struct Access<'a> {
    /// Dotted action, e.g. `keys.created`, `logs.viewed`.
    pub action: &'a str,
    /// The tenant whose data was touched; the key's own tenant when `None`.
    pub tenant: Option<&'a str>,
    /// The endpoint, e.g. `GET /audit/logs`.
    pub endpoint: &'a str,
    /// Who called: request id, address, user agent.
    pub caller: &'a Caller,
    /// What was asked and found: filters, counts, ids.
    pub details: Map<String, Value>,
}

/// Writes the access event and waits until it is durable; a read whose record cannot
/// be written is refused, so no access goes unrecorded.
pub async fn record(state: &AppState, principal: &Principal, access: Access<'_>) -> Result<(), ApiError> {
    let record = AccessRecord {
        actor: &principal.key_id,
        action: access.action,
        tenant: access.tenant.or(principal.tenant.as_deref()),
        endpoint: access.endpoint,
        request_id: access.caller.request_id.as_deref(),
        details: access.details,
    };
    let mut event = record.to_event();
    event.ip_address = access.caller.ip;
    event.user_agent = access.caller.user_agent.clone();
    state.pipeline.submit(vec![event]).await.map_err(|e| {
        let retry = state.settings.ingest.retry_after_seconds;
        match e {
            SubmitError::QueueFull => {
                ApiError::unavailable("queue_full", "the access record could not be queued; retry later", retry)
            }
            _ => ApiError::unavailable("storage_unavailable", "the access record could not be written; retry later", retry),
        }
    })
}
