//! Who is calling: the bearer key, checked in constant time.
//!
//! Until managed API keys exist, the only key is the bootstrap key from
//! configuration (`TIERLOG_BOOTSTRAP_KEY`): every permission, every tenant. Only its
//! SHA-256 digest is kept in memory.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::header;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    EventsWrite,
}

impl Permission {
    /// The permission's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::EventsWrite => "events.write",
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Stable id of the key, for audit records (never the key itself).
    pub key_id: String,
    /// The tenant the key is bound to; `None` for all-tenant keys.
    pub tenant: Option<String>,
    all_permissions: bool,
}

impl Principal {
    /// Refuses with 403 unless the key holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.all_permissions {
            Ok(())
        } else {
            Err(ApiError::forbidden(permission.as_str()))
        }
    }
}

/// The keys a service accepts.
#[derive(Debug, Clone)]
pub struct KeyRing {
    bootstrap_digest: Option<[u8; 32]>,
}

impl KeyRing {
    /// A key ring holding the bootstrap key, if one is configured (non-empty).
    pub fn new(bootstrap_key: &str) -> KeyRing {
        let bootstrap_digest = (!bootstrap_key.is_empty()).then(|| Sha256::digest(bootstrap_key.as_bytes()).into());
        KeyRing { bootstrap_digest }
    }

    /// The principal for a presented key.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let expected = self.bootstrap_digest?;
        if bool::from(digest.ct_eq(&expected)) {
            Some(Principal { key_id: "bootstrap".into(), tenant: None, all_permissions: true })
        } else {
            None
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key> header"))?;
        let presented = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be \"Bearer <key>\""))?;
        state.keys.authenticate(presented).ok_or_else(|| ApiError::unauthorized("invalid API key"))
    }
}
