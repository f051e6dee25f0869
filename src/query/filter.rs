//! Query-string filters, validated strictly: an unknown parameter, a bad value or a
//! tenant the key may not see is an error, never ignored.

use std::net::IpAddr;

use base64::Engine;
use chrono::{DateTime, Datelike as _, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::parse::{is_tenant_id, TENANT_ID_RULE};
use crate::event::{Category, Status};
use crate::keys::Principal;

/// Why a query was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{param}: {reason}")]
    Invalid { param: String, reason: String },
    #[error("this key is bound to another tenant")]
    ForeignTenant,
}

fn invalid(param: &str, reason: impl Into<String>) -> QueryError {
    QueryError::Invalid { param: param.to_owned(), reason: reason.into() }
}

/// An address or a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFilter {
    pub addr: IpAddr,
    /// `None` for a single address.
    pub prefix: Option<u8>,
}

impl IpFilter {
    /// Parses an address or a CIDR network.
    pub fn parse(raw: &str) -> Result<IpFilter, QueryError> {
        let bad = || invalid("ip_address", "must be an IP address or a CIDR network such as 10.0.0.0/8");
        let (addr, prefix) = match raw.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (raw, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix.is_some_and(|p| p > max) {
            return Err(bad());
        }
        Ok(IpFilter { addr, prefix })
    }

    /// Whether `ip` falls inside the filter.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip, self.prefix) {
            (_, _, None) => self.addr == ip,
            (IpAddr::V4(net), IpAddr::V4(ip), Some(p)) => {
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - u32::from(p)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip), Some(p)) => {
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - u32::from(p)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The filter as Postgres `inet` text.
    pub fn to_inet(&self) -> String {
        match self.prefix {
            Some(p) => format!("{}/{p}", self.addr),
            None => self.addr.to_string(),
        }
    }
}

/// The position after which the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Event time of the last item, in microseconds since the epoch.
    pub t: i64,
    /// Id of the last item.
    pub id: Uuid,
}

impl Cursor {
    /// The cursor after an item at `time` with `id`.
    pub fn after(time: DateTime<Utc>, id: Uuid) -> Cursor {
        Cursor { t: time.timestamp_micros(), id }
    }

    /// The opaque text form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(raw: &str) -> Result<Cursor, QueryError> {
        let bad = || invalid("cursor", "is not a cursor this service issued");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        // Event times are years 0 to 9999: a cursor outside them was not issued here,
        // and every tier would read it differently.
        let issued = DateTime::from_timestamp_micros(cursor.t).is_some_and(|t| (0..=9999).contains(&t.year()));
        if !issued {
            return Err(bad());
        }
        Ok(cursor)
    }

    /// The event time as an instant.
    pub fn time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.t).unwrap_or_default()
    }

    /// Whether an item at (`time`, `id`) comes after this cursor (newest first).
    pub fn precedes(&self, time: DateTime<Utc>, id: Uuid) -> bool {
        (time.timestamp_micros(), id) < (self.t, self.id)
    }
}

/// A validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters {
    /// The only tenant to read; `None` for all (all-tenant keys without `tenant_id`).
    pub tenant: Option<String>,
    pub category: Option<Category>,
    pub user_id: Option<String>,
    pub action: Option<String>,
    pub status: Option<Status>,
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    pub ip: Option<IpFilter>,
    pub request_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub q: Option<String>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub include_total: bool,
}

/// The largest page.
pub const MAX_LIMIT: usize = 1000;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 100;

impl Filters {
    /// Whether these filters narrow by nothing but tenant and category.
    pub fn narrows_to_tenant_and_category_only(&self) -> bool {
        let Filters { tenant: _, category: _, user_id, action, status, resource, resource_id, ip, request_id, from, to, q, limit: _, cursor: _, include_total: _ } = self;
        user_id.is_none()
            && action.is_none()
            && status.is_none()
            && resource.is_none()
            && resource_id.is_none()
            && ip.is_none()
            && request_id.is_none()
            && from.is_none()
            && to.is_none()
            && q.is_none()
    }

    /// Everything of `tenant` (all tenants with `None`), a page of the default size.
    pub fn of_tenant(tenant: Option<String>) -> Filters {
        Filters {
            tenant,
            category: None,
            user_id: None,
            action: None,
            status: None,
            resource: None,
            resource_id: None,
            ip: None,
            request_id: None,
            from: None,
            to: None,
            q: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
            include_total: false,
        }
    }

    /// Parses a query string for `principal`; `extra` names endpoint-specific
    /// parameters that are allowed and returned untouched.
    pub fn parse(
        query: Option<&str>,
        principal: &Principal,
        extra: &[&str],
    ) -> Result<(Filters, Vec<(String, String)>), QueryError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| invalid("query", "is not a valid query string"))?;
        let mut filters = Filters::of_tenant(principal.tenant.clone());
        let mut rest = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in pairs {
            if seen.contains(&key) {
                return Err(invalid(&key, "is given more than once"));
            }
            seen.push(key.clone());
            let text = |max: usize| -> Result<Option<String>, QueryError> {
                if value.is_empty() || value.chars().count() > max || value.contains('\0') {
                    Err(invalid(&key, format!("must be 1-{max} characters")))
                } else {
                    Ok(Some(value.clone()))
                }
            };
            match key.as_str() {
                "tenant_id" => {
                    if !is_tenant_id(&value) {
                        return Err(invalid("tenant_id", TENANT_ID_RULE));
                    }
                    if !principal.may_access_tenant(&value) {
                        return Err(QueryError::ForeignTenant);
                    }
                    filters.tenant = Some(value);
                }
                "category" => {
                    filters.category = Some(Category::parse(&value).ok_or_else(|| {
                        invalid("category", "must be one of auth, security, api, error, audit, financial")
                    })?);
                }
                "status" => {
                    filters.status = Some(match value.as_str() {
                        "success" => Status::Success,
                        "failure" => Status::Failure,
                        "error" => Status::Error,
                        _ => return Err(invalid("status", "must be one of success, failure, error")),
                    });
                }
                "user_id" => filters.user_id = text(1024)?,
                "action" => filters.action = text(128)?,
                "resource" => filters.resource = text(1024)?,
                "resource_id" => filters.resource_id = text(1024)?,
                "request_id" => filters.request_id = text(1024)?,
                "q" => filters.q = text(256)?,
                "ip_address" => filters.ip = Some(IpFilter::parse(&value)?),
                "from" | "to" => {
                    let at = DateTime::parse_from_rfc3339(&value)
                        .map_err(|_| invalid(&key, "must be an RFC 3339 date-time such as 2026-11-23T00:00:00Z"))?
                        .with_timezone(&Utc);
                    if key == "from" {
                        filters.from = Some(at);
                    } else {
                        filters.to = Some(at);
                    }
                }
                "limit" => {
                    filters.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| invalid("limit", format!("must be a whole number from 1 to {MAX_LIMIT}")))?;
                }
                "cursor" => filters.cursor = Some(Cursor::decode(&value)?),
                "include_total" => {
                    filters.include_total = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid("include_total", "must be true or false")),
                    };
                }
                other if extra.contains(&other) => rest.push((key, value)),
                other => return Err(invalid(other, "is not a known parameter")),
            }
        }
        // `from` at or after `to` is an empty window: every reader answers it with
        // nothing, as it would any window holding no event.
        Ok((filters, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Permission;

    fn admin() -> Principal {
        Principal::bootstrap()
    }

    fn bound() -> Principal {
        Principal { key_id: "k".into(), tenant: Some("acme".into()), permissions: vec![Permission::LogsAuthView] }
    }

    fn error_param(query: &str, principal: &Principal) -> String {
        match Filters::parse(Some(query), principal, &[]) {
            Err(QueryError::Invalid { param, .. }) => param,
            Err(QueryError::ForeignTenant) => "foreign tenant".into(),
            Ok(_) => "accepted".into(),
        }
    }

    #[test]
    fn every_filter_parses() {
        let (f, rest) = Filters::parse(
            Some("tenant_id=acme&category=auth&user_id=u1&action=auth.login&status=failure&resource=user&resource_id=7&ip_address=10.0.0.0%2F8&request_id=r1&from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00%2B01:00&q=timeout&limit=50&include_total=true&hours=24"),
            &admin(),
            &["hours"],
        )
        .expect("valid");
        assert_eq!(f.tenant.as_deref(), Some("acme"));
        assert_eq!(f.category, Some(Category::Auth));
        assert_eq!(f.status, Some(Status::Failure));
        assert_eq!(f.ip.map(|ip| ip.to_inet()), Some("10.0.0.0/8".into()));
        assert_eq!(f.to.map(|t| t.to_rfc3339()), Some("2026-11-01T23:00:00+00:00".into()));
        assert_eq!(f.limit, 50);
        assert!(f.include_total);
        assert_eq!(rest, vec![("hours".to_owned(), "24".to_owned())]);
    }

    #[test]
    fn a_window_that_ends_before_it_starts_is_valid_and_empty() {
        let (f, _) = Filters::parse(Some("from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z"), &admin(), &[]).expect("valid");
        assert!(f.from > f.to);
    }

    #[test]
    fn malformed_filters_name_the_parameter() {
        let cases = [
            ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
            ("from=yesterday", "from"), ("ip_address=10.0.0.0/33", "ip_address"), ("ip_address=300.1.1.1", "ip_address"),
            ("category=everything", "category"), ("status=ok", "status"), ("cursor=abc", "cursor"),
            ("user_id=%27%3B%20DROP%20TABLE%20audit_logs%3B--&sort=asc", "sort"), ("limit=5&limit=6", "limit"),
            ("tenant_id=a%20b", "tenant_id"),
            ("include_total=yes", "include_total"), ("user_id=", "user_id"),
        ];
        for (query, param) in cases {
            assert_eq!(error_param(query, &admin()), param, "{query}");
        }
    }

    #[test]
    fn a_bound_key_is_scoped_to_its_tenant() {
        let (f, _) = Filters::parse(None, &bound(), &[]).expect("valid");
        assert_eq!(f.tenant.as_deref(), Some("acme"));
        assert_eq!(error_param("tenant_id=other", &bound()), "foreign tenant");
        assert!(Filters::parse(Some("tenant_id=acme"), &bound(), &[]).is_ok());
    }

    #[test]
    fn cursors_with_times_no_event_can_have_are_refused() {
        let forge = |t: i64| {
            let json = format!("{{\"t\":{t},\"id\":\"{}\"}}", Uuid::nil());
            format!("cursor={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
        };
        for t in [i64::MAX, i64::MIN, 253_402_300_800_000_000] {
            let error = Filters::parse(Some(&forge(t)), &admin(), &[]).expect_err("refused");
            assert!(format!("{error:?}").contains("cursor"), "{t}: {error:?}");
        }
        assert!(Filters::parse(Some(&forge(1_800_000_000_000_000)), &admin(), &[]).is_ok());
    }

    #[test]
    fn cursors_round_trip_and_order_newest_first() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T12:00:00.000001Z").expect("ts").to_utc();
        let id = Uuid::now_v7();
        let cursor = Cursor::after(at, id);
        let (f, _) = Filters::parse(Some(&format!("cursor={}", cursor.encode())), &admin(), &[]).expect("valid");
        assert_eq!(f.cursor, Some(cursor));
        assert!(cursor.precedes(at - chrono::Duration::microseconds(1), id));
        assert!(!cursor.precedes(at, id));
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net = IpFilter::parse("10.1.0.0/16").expect("net");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        let v6 = IpFilter::parse("2001:db8::/32").expect("net");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("10.1.0.1".parse().expect("ip")));
    }
}
