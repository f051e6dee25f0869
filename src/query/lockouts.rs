//! Lockout diagnostics: each lockout of one user, with the failed attempts that led
//! to it and the reset that ended it, from that user's authentication events.
//!
//! - A **lockout** is an event whose action names one (`*.account_locked`,
//!   `*.locked`, `*lockout*`) or a security event of type `account_locked`.
//! - Its **attempts** are the user's failed logins (`*login*` with status `failure`)
//!   within `window` before it, and after the lockout before it, oldest first.
//! - Its **reset** is the first later event that unlocks the account or resets its
//!   password (`*unlock*`, `*password_reset*`, `*reset*`), if any.

use serde::Serialize;
use serde_json::Value;

/// One event as diagnostics show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Step {
    pub id: String,
    pub timestamp: String,
    pub action: Option<String>,
    /// The event's status (`failure` for a failed attempt).
    pub outcome: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub message: Option<String>,
}

/// One lockout and what surrounds it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Lockout {
    pub lockout: Step,
    /// The failed attempts within the window before the lockout, oldest first.
    pub attempts: Vec<Step>,
    /// How many distinct addresses and user agents those attempts came from.
    pub distinct_ips: usize,
    pub distinct_user_agents: usize,
    /// The event that ended it (an unlock or a reset), if one came.
    pub reset: Option<Step>,
    /// Seconds from the lockout to its reset.
    pub locked_seconds: Option<i64>,
}

fn text<'v>(event: &'v Value, field: &str) -> Option<&'v str> {
    event.get(field).and_then(Value::as_str)
}

fn step(event: &Value) -> Step {
    let owned = |field: &str| text(event, field).map(str::to_owned);
    Step {
        id: owned("id").unwrap_or_default(),
        timestamp: owned("timestamp").unwrap_or_default(),
        action: owned("action"),
        outcome: owned("status"),
        ip_address: owned("ip_address"),
        user_agent: owned("user_agent"),
        message: owned("message"),
    }
}

/// Whether `event` locks an account.
pub fn is_lockout(event: &Value) -> bool {
    let action = text(event, "action").unwrap_or("").to_ascii_lowercase();
    action.ends_with("account_locked")
        || action.ends_with(".locked")
        || action.contains("lockout")
        || event.pointer("/security/event_type").and_then(Value::as_str) == Some("account_locked")
}

/// Whether `event` is a failed login attempt.
pub fn is_failed_attempt(event: &Value) -> bool {
    let action = text(event, "action").unwrap_or("").to_ascii_lowercase();
    action.contains("login") && (text(event, "status") == Some("failure") || action.contains("fail"))
}

/// Whether `event` ends a lockout.
pub fn is_reset(event: &Value) -> bool {
    let action = text(event, "action").unwrap_or("").to_ascii_lowercase();
    action.contains("unlock") || action.contains("reset")
}

fn time(event: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    text(event, "timestamp").and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&chrono::Utc))
}

/// The lockouts among `events` (one user's, any order), oldest first, each with the
/// failed attempts within `window` before it.
pub fn diagnose(events: &[Value], window: chrono::Duration) -> Vec<Lockout> {
    let mut timeline: Vec<(chrono::DateTime<chrono::Utc>, &Value)> = events.iter().filter_map(|e| Some((time(e)?, e))).collect();
    timeline.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| text(a.1, "id").cmp(&text(b.1, "id"))));
    let mut lockouts = Vec::new();
    // Attempts already counted for an earlier lockout do not count again.
    let mut counted_until: Option<chrono::DateTime<chrono::Utc>> = None;
    for (i, (at, event)) in timeline.iter().enumerate() {
        if !is_lockout(event) {
            continue;
        }
        let since = *at - window;
        let attempts: Vec<Step> = timeline[..i]
            .iter()
            .filter(|(t, e)| *t >= since && counted_until.is_none_or(|c| *t > c) && is_failed_attempt(e))
            .map(|(_, e)| step(e))
            .collect();
        let reset = timeline[i + 1..].iter().find(|(_, e)| is_reset(e) || is_lockout(e)).filter(|(_, e)| is_reset(e));
        let distinct = |pick: fn(&Step) -> Option<&String>| {
            attempts.iter().filter_map(pick).collect::<std::collections::BTreeSet<_>>().len()
        };
        lockouts.push(Lockout {
            lockout: step(event),
            distinct_ips: distinct(|s| s.ip_address.as_ref()),
            distinct_user_agents: distinct(|s| s.user_agent.as_ref()),
            attempts,
            reset: reset.map(|(_, e)| step(e)),
            locked_seconds: reset.map(|(t, _)| (*t - *at).num_seconds()),
        });
        counted_until = Some(*at);
    }
    lockouts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: &str, minute: u32, action: &str, status: &str, ip: &str) -> Value {
        json!({"id": id, "timestamp": format!("2026-11-02T10:{minute:02}:00Z"), "action": action, "status": status,
               "ip_address": ip, "user_agent": "curl/8"})
    }

    #[test]
    fn a_lockout_gets_the_attempts_inside_its_window_and_its_reset() {
        let events = vec![
            ev("a0", 0, "auth.login_failed", "failure", "203.0.113.1"), // outside the 15 min window
            ev("a1", 20, "auth.login_failed", "failure", "203.0.113.1"),
            ev("ok", 21, "auth.login", "success", "203.0.113.1"),
            ev("a2", 22, "auth.login_failed", "failure", "198.51.100.2"),
            ev("a3", 23, "auth.login_failed", "failure", "198.51.100.2"),
            ev("L1", 24, "auth.account_locked", "failure", "198.51.100.2"),
            ev("a4", 25, "auth.login_failed", "failure", "198.51.100.2"),
            ev("R1", 30, "auth.account_unlocked", "success", "192.0.2.9"),
            ev("L2", 38, "auth.account_locked", "failure", "198.51.100.2"),
        ];
        let found = diagnose(&events, chrono::Duration::minutes(15));
        assert_eq!(found.len(), 2);
        let ids = |steps: &[Step]| steps.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&found[0].attempts), ["a1", "a2", "a3"]);
        assert_eq!((found[0].distinct_ips, found[0].distinct_user_agents), (2, 1));
        assert_eq!(found[0].reset.as_ref().unwrap().id, "R1");
        assert_eq!(found[0].locked_seconds, Some(6 * 60));
        // The attempt after the first lockout counts for the second, which no reset ended.
        assert_eq!(ids(&found[1].attempts), ["a4"]);
        assert_eq!(found[1].reset, None);
    }
}
