//! Filtering and ordering events held as JSON (the hot tier's items), with the same
//! meaning as the SQL filters of the durable store.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::Filters;
use crate::event::Category;

/// The sort key of an item: (event time in microseconds, id); `None` if malformed.
pub fn sort_key(item: &Value) -> Option<(i64, Uuid)> {
    let time = DateTime::parse_from_rfc3339(item["timestamp"].as_str()?).ok()?.with_timezone(&Utc);
    let id = item["id"].as_str()?.parse().ok()?;
    Some((time.timestamp_micros(), id))
}

fn text_is(item: &Value, field: &str, wanted: &Option<String>) -> bool {
    wanted.as_deref().is_none_or(|w| item[field].as_str() == Some(w))
}

/// Whether `item` passes every filter but the cursor and limit, within `categories`.
pub fn matches(filters: &Filters, categories: &[Category], item: &Value) -> bool {
    let Some((micros, _)) = sort_key(item) else { return false };
    let category_ok = item["category"].as_str().and_then(Category::parse).is_some_and(|c| categories.contains(&c));
    let ip_ok = filters.ip.is_none_or(|net| {
        item["ip_address"].as_str().and_then(|ip| ip.parse::<IpAddr>().ok()).is_some_and(|ip| net.contains(ip))
    });
    let from_ok = filters.from.is_none_or(|from| micros >= from.timestamp_micros());
    let to_ok = filters.to.is_none_or(|to| micros < to.timestamp_micros());
    let status_ok = filters.status.is_none_or(|s| item["status"].as_str() == Some(s.as_str()));
    let q_ok = filters.q.as_deref().is_none_or(|q| matches_text(item, q));
    category_ok
        && ip_ok
        && from_ok
        && to_ok
        && status_ok
        && q_ok
        && text_is(item, "tenant_id", &filters.tenant)
        && text_is(item, "user_id", &filters.user_id)
        && text_is(item, "action", &filters.action)
        && text_is(item, "resource", &filters.resource)
        && text_is(item, "resource_id", &filters.resource_id)
        && text_is(item, "request_id", &filters.request_id)
}

/// Every word of `q` appears (case-insensitively) in the message, action or details.
fn matches_text(item: &Value, q: &str) -> bool {
    let haystack = format!(
        "{} {} {}",
        item["message"].as_str().unwrap_or(""),
        item["action"].as_str().unwrap_or(""),
        if item["details"].is_null() { String::new() } else { item["details"].to_string() }
    )
    .to_lowercase();
    q.split_whitespace().all(|word| haystack.contains(&word.trim_matches('"').to_lowercase()))
}

/// Sorts newest first by (event time, id), the order of every page.
pub fn sort_newest_first(items: &mut [Value]) {
    items.sort_by_key(|item| std::cmp::Reverse(sort_key(item)));
}
