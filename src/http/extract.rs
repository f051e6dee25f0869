//! Extractors whose rejections use the JSON error envelope.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::query::IpFilter;

/// A JSON body; malformed or mistyped bodies are answered 400, others per their kind.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let text = rejection.body_text();
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::unsupported_media_type("send application/json"),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(text),
        _ => ApiError::bad_request(text),
    }
}

/// Who is calling: the request id (set by the request-id layer when absent), the
/// client address and the user agent. The address comes from `X-Forwarded-For` or
/// `X-Real-IP` only when the direct peer is a configured trusted proxy.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub request_id: Option<String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// The client address for a request from `peer` with `headers`.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpFilter]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(peer) {
        return Some(peer);
    }
    // Walk X-Forwarded-For from the nearest hop back; the first untrusted hop is the
    // client. Entries that are not addresses end the walk (they cannot be trusted).
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return Some(ip),
            Err(_) => return Some(peer),
        }
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(Some(peer))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let text = |name: &str, max: usize| {
            parts.headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(max).collect::<String>())
        };
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(Caller {
            request_id: text("x-request-id", 128),
            ip: client_ip(peer, &parts.headers, &state.trusted_proxies),
            user_agent: text("user-agent", 512),
        })
    }
}

/// A path segment parsed as a UUID, 400 otherwise.
pub struct PathUuid(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathUuid {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))?;
        raw.parse().map(PathUuid).map_err(|_| ApiError::bad_request(format!("{raw:?} is not a UUID")))
    }
}

/// Parses a query string strictly: only `known` names, each at most once.
pub fn strict_params(
    query: Option<&str>,
    known: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::bad_request("query: is not a valid query string"))?;
    let mut params = std::collections::BTreeMap::new();
    for (key, value) in pairs {
        if !known.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("{key}: is not a known parameter")));
        }
        if params.insert(key.clone(), value).is_some() {
            return Err(ApiError::bad_request(format!("{key}: is given more than once")));
        }
    }
    Ok(params)
}

/// The common start of a tenant-scoped handler: the permission, the strict query
/// (`tenant_id` is always known) and the tenant it is about.
pub fn scoped_request(
    principal: &crate::keys::Principal,
    permission: crate::keys::Permission,
    query: Option<&str>,
    known: &[&str],
) -> Result<(std::collections::BTreeMap<String, String>, Option<String>), ApiError> {
    super::auth::require(principal, permission)?;
    let mut names = vec!["tenant_id"];
    names.extend_from_slice(known);
    let params = strict_params(query, &names)?;
    let tenant = tenant_scope(principal, params.get("tenant_id").map(String::as_str))?;
    Ok((params, tenant))
}

/// The tenant a request is about: the one asked for (which the key must reach), else
/// the key's own; `None` means every tenant (all-tenant keys only).
pub fn tenant_scope(principal: &crate::keys::Principal, asked: Option<&str>) -> Result<Option<String>, ApiError> {
    match asked {
        Some(tenant) => {
            if !crate::event::parse::is_tenant_id(tenant) {
                return Err(ApiError::bad_request(format!("tenant_id: {}", crate::event::parse::TENANT_ID_RULE)));
            }
            if !principal.may_access_tenant(tenant) {
                return Err(ApiError::forbidden_tenant());
            }
            Ok(Some(tenant.to_owned()))
        }
        None => Ok(principal.tenant.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().expect("header"));
        }
        map
    }

    #[test]
    fn forwarded_headers_count_only_behind_a_trusted_proxy() {
        let trusted = vec![IpFilter::parse("10.0.0.0/8").expect("net")];
        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let stranger: IpAddr = "203.0.113.50".parse().expect("ip");
        let forged = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(client_ip(Some(stranger), &forged, &trusted), Some(stranger), "untrusted peers cannot claim an address");
        let chain = headers(&[("x-forwarded-for", "198.51.100.1, 192.0.2.7, 10.0.0.9")]);
        assert_eq!(client_ip(Some(proxy), &chain, &trusted), "192.0.2.7".parse().ok(), "nearest untrusted hop");
        let real = headers(&[("x-real-ip", "192.0.2.8")]);
        assert_eq!(client_ip(Some(proxy), &real, &trusted), "192.0.2.8".parse().ok());
        assert_eq!(client_ip(Some(proxy), &HeaderMap::new(), &trusted), Some(proxy));
        let garbage = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(Some(proxy), &garbage, &trusted), Some(proxy));
    }
}

