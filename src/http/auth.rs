//! Who is calling: the bearer key, resolved to a [`Principal`].
//!
//! The bootstrap key from configuration (`TIERLOG_BOOTSTRAP_KEY`, only when set) is
//! compared in constant time against its digest; any other key is looked up by its
//! SHA-256 digest in the key store.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::keys::{self, KeyStore, Permission, Principal};
use crate::tiers::redis::RedisLink;

/// Everything that can vouch for a key.
#[derive(Clone)]
pub struct Authenticator {
    bootstrap_digest: Option<[u8; 32]>,
    store: Option<Arc<KeyStore>>,
    limiter: Option<Arc<super::rate::RateLimiter>>,
}

impl Authenticator {
    /// Accepts the bootstrap key (when non-empty) and the keys in `store`.
    pub fn new(bootstrap_key: &str, store: Option<Arc<KeyStore>>) -> Authenticator {
        let bootstrap_digest = (!bootstrap_key.is_empty()).then(|| keys::digest(bootstrap_key));
        Authenticator { bootstrap_digest, store, limiter: None }
    }

    /// Limits every key (the bootstrap key included) to `per_second` requests, with
    /// bursts of `burst`: one budget across the nodes sharing `redis` when given.
    pub fn with_rate_limit(mut self, per_second: f64, burst: u32, redis: Option<(Arc<RedisLink>, &str)>) -> Authenticator {
        let limiter = match redis {
            Some((link, prefix)) => super::rate::RateLimiter::shared(per_second, burst, link, prefix),
            None => super::rate::RateLimiter::new(per_second, burst),
        };
        self.limiter = Some(Arc::new(limiter));
        self
    }

    /// The rate limiter, when limits are on.
    pub fn limiter(&self) -> Option<&Arc<super::rate::RateLimiter>> {
        self.limiter.as_ref()
    }

    /// The key store, when keys are stored.
    pub fn store(&self) -> Option<&Arc<KeyStore>> {
        self.store.as_ref()
    }

    /// The principal of a presented key.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, ApiError> {
        if let Some(bootstrap) = &self.bootstrap_digest {
            if keys::is_bootstrap(presented, bootstrap) {
                return Ok(Principal::bootstrap());
            }
        }
        let Some(store) = &self.store else {
            return Err(ApiError::unauthorized("invalid API key"));
        };
        match store.authenticate(&keys::digest(presented)).await {
            Ok(Some(principal)) => Ok(principal),
            Ok(None) => Err(ApiError::unauthorized("invalid, expired or revoked API key")),
            Err(e) => {
                tracing::error!(error = ?e, "key lookup failed");
                Err(ApiError::unavailable("auth_unavailable", "keys cannot be checked right now; retry later", 1))
            }
        }
    }
}

/// Refuses with 403 unless `principal` holds `permission`.
pub fn require(principal: &Principal, permission: Permission) -> Result<(), ApiError> {
    if principal.can(permission) {
        Ok(())
    } else {
        Err(ApiError::forbidden(permission.as_str()))
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
        let principal = state.auth.authenticate(presented).await?;
        if let Some(limiter) = &state.auth.limiter {
            limiter.check(&principal.key_id).await.map_err(ApiError::rate_limited)?;
        }
        Ok(principal)
    }
}
