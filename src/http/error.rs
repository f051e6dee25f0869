//! The one HTTP error type: a status, a stable code, a message, and for validation
//! failures every bad field. 5xx causes are logged here, once, and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::event::FieldError;

/// An error answer in the JSON envelope `{"error": {"code", "message", "fields"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<FieldError>,
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    fields: &'a [FieldError],
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), fields: Vec::new(), retry_after: None }
    }

    /// 401: no key, or not a valid one.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the key lacks a permission.
    pub fn forbidden(permission: &str) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this key lacks the {permission} permission"))
    }

    /// 403: the key is bound to another tenant.
    pub fn forbidden_tenant() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this key is bound to another tenant")
    }

    /// 400: the request is malformed as a whole.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 400: items failed validation; nothing was written.
    pub fn validation(fields: Vec<FieldError>) -> ApiError {
        let items = {
            let mut indexes: Vec<usize> = fields.iter().map(|f| f.index).collect();
            indexes.dedup();
            indexes.len()
        };
        ApiError {
            fields,
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                format!("{items} event(s) failed validation; nothing was written"),
            )
        }
    }

    /// 413: the body, an event or the event count is over a limit.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 408: the client sent its body too slowly.
    pub fn request_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// 415: a content type tierlog does not read.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    /// 503 with `Retry-After`: nothing was acknowledged; the same request may be sent
    /// again.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message) }
    }

    /// 503: this node may not sign checkpoints (its key is not the deployment's, or
    /// the deployment's keys cannot be read).
    pub fn not_signing(e: crate::integrity::identity::NotSigning) -> ApiError {
        ApiError::unavailable("not_signing", format!("this node does not sign now: {e}"), 60)
    }

    /// 429: the key's rate limit is spent; `retry_after` seconds until it is not.
    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "this key's request rate is exceeded; retry later")
        }
    }

    /// 404: no such resource (or not visible to this key).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the path exists, but not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
    }

    /// 500: logged here with its cause, answered without it.
    pub fn internal(message: &str, cause: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(error = ?cause, "{message}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503: a read of the database failed; the cause is logged, not sent.
    pub fn read_failed(cause: sqlx::Error) -> ApiError {
        tracing::error!(error = ?cause, "database read failed");
        ApiError::unavailable("storage_unavailable", "the database cannot be read right now; retry later", 1)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope { error: Body { code: self.code, message: &self.message, fields: &self.fields } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
