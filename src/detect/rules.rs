//! Detection rules: what they look at, how they are written, and the built-in set.
//!
//! A rule has a `kind` (how it decides), a `when` (which events it looks at) and the
//! settings of its kind. Rules come from four layers, each replacing the rules of
//! the same name below it: the built-in set ([`builtin`]), the configuration file
//! (`[[detection.rules]]`), the deployment's overrides (`PUT /audit/rules` without a
//! tenant) and a tenant's overrides (`PUT /audit/rules` with `tenant_id`). A rule
//! with `enabled = false` switches off the rule of its name below it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{AuditEvent, Category, Level, Status};

/// How a rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// `threshold` or more matching events of one group within `window_seconds`.
    Threshold,
    /// `threshold` or more distinct values of `distinct` in one group within `window_seconds`.
    Distinct,
    /// Every matching event.
    Match,
    /// A financial amount above `limit`, or above `factor` times the tenant's recent
    /// mean (after `min_samples` amounts) in the same group (by default per currency).
    Amount,
    /// A value of one of `fields` (such as `ip_address`) that the group (such as
    /// `user_id`) has not shown within `window_seconds`; groups seen for the first
    /// time have nothing to compare with and do not fire.
    FirstSeen,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Threshold => "threshold",
            RuleKind::Distinct => "distinct",
            RuleKind::Match => "match",
            RuleKind::Amount => "amount",
            RuleKind::FirstSeen => "first_seen",
        }
    }
}

/// Which events a rule looks at: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Any of these categories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub categories: Vec<Category>,
    /// Any of these actions; `*` matches any run of characters (`*login*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Any of these `event_type`s (`*` as in `actions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// This outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub status: Option<Status>,
    /// This level or above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub level_at_least: Option<Level>,
    /// Any of these `security.event_type`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_event_types: Vec<String>,
    /// Any of these `security.severity`s (compared without case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_severities: Vec<String>,
    /// `changes` shows one of these keys changed (different before and after, or
    /// present on one side only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
}

/// One detection rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within its layer; 1-64 letters, digits, '.', '_' or '-'.
    pub name: String,
    pub kind: RuleKind,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub when: Condition,
    /// Event fields whose values make a group (`user_id`, `ip_address`,
    /// `details.<key>`, ...). Counts, cool-downs and norms are per tenant and group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// `distinct`: the field whose distinct values are counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<String>,
    /// `first_seen`: the fields whose new values fire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// `threshold` and `distinct`: how many within the window fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// `threshold`, `distinct` and `first_seen`: the sliding window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
    /// `amount`: a decimal limit; above it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `amount`: how many times the recent mean fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `amount`: amounts seen before the mean is trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    /// `low`, `medium`, `high` or `critical`: the alert's `security.severity`.
    #[serde(default = "high")]
    pub severity: String,
    /// After an alert, the same rule and group stay quiet this long.
    #[serde(default = "default_cooldown")]
    pub cooldown_seconds: u64,
}

fn yes() -> bool {
    true
}

fn high() -> String {
    "high".into()
}

fn default_cooldown() -> u64 {
    900
}

/// The most a window may span: 90 days.
const MAX_WINDOW_SECONDS: u64 = 90 * 86_400;
/// A threshold at most this: the window keeps this many members per group.
pub const MAX_THRESHOLD: u32 = 10_000;
/// Severities an alert may carry.
pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// An event field a rule may group by, count or watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Plain(&'static str),
    Detail(String),
}

const PLAIN_FIELDS: [&str; 19] = [
    "tenant_id",
    "user_id",
    "username",
    "email",
    "ip_address",
    "user_agent",
    "session_id",
    "request_id",
    "application",
    "logger",
    "resource",
    "resource_id",
    "action",
    "event_type",
    "security.event_type",
    "security.severity",
    "financial.account_id",
    "financial.currency",
    "financial.counterparty",
];

impl Field {
    /// Parses a field name; `None` names no field.
    pub fn parse(name: &str) -> Option<Field> {
        if let Some(key) = name.strip_prefix("details.") {
            return (!key.is_empty() && key.len() <= 128).then(|| Field::Detail(key.to_owned()));
        }
        PLAIN_FIELDS.iter().find(|f| **f == name).map(|f| Field::Plain(f))
    }

    /// The field's value in `event`, as text; `None` when absent.
    pub fn value<'e>(&self, event: &'e AuditEvent) -> Option<Cow<'e, str>> {
        let s = |v: &'e Option<String>| v.as_deref().map(Cow::Borrowed);
        match self {
            Field::Plain(name) => match *name {
                "tenant_id" => Some(Cow::Borrowed(event.tenant_id.as_str())),
                "user_id" => s(&event.user_id),
                "username" => s(&event.username),
                "email" => s(&event.email),
                "ip_address" => event.ip_address.map(|ip| Cow::Owned(ip.to_string())),
                "user_agent" => s(&event.user_agent),
                "session_id" => s(&event.session_id),
                "request_id" => s(&event.request_id),
                "application" => s(&event.application),
                "logger" => s(&event.logger),
                "resource" => s(&event.resource),
                "resource_id" => s(&event.resource_id),
                "action" => s(&event.action),
                "event_type" => s(&event.event_type),
                "security.event_type" => event.security.as_ref().map(|x| Cow::Borrowed(x.event_type.as_str())),
                "security.severity" => event.security.as_ref().and_then(|x| s(&x.severity)),
                "financial.account_id" => event.financial.as_ref().and_then(|x| s(&x.account_id)),
                "financial.currency" => event.financial.as_ref().and_then(|x| s(&x.currency)),
                "financial.counterparty" => event.financial.as_ref().and_then(|x| s(&x.counterparty)),
                _ => None,
            },
            Field::Detail(key) => match event.details.as_ref()?.get(key)? {
                serde_json::Value::String(text) => Some(Cow::Borrowed(text.as_str())),
                serde_json::Value::Null => None,
                other => Some(Cow::Owned(other.to_string())),
            },
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Condition {
    /// Whether `event` meets every condition given.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        let any = |patterns: &[String], value: Option<&str>| {
            patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| glob(p, v)))
        };
        (self.categories.is_empty() || self.categories.contains(&event.category))
            && self.status.is_none_or(|s| event.status == Some(s))
            && self.level_at_least.is_none_or(|l| event.level >= l)
            && any(&self.actions, event.action.as_deref())
            && any(&self.event_types, event.event_type.as_deref())
            && any(&self.security_event_types, event.security.as_ref().map(|s| s.event_type.as_str()))
            && (self.security_severities.is_empty()
                || event.security.as_ref().and_then(|s| s.severity.as_deref()).is_some_and(|sev| {
                    self.security_severities.iter().any(|want| want.eq_ignore_ascii_case(sev))
                }))
            && (self.changed_fields.is_empty() || self.changed_fields.iter().any(|f| changed(event, f)))
    }
}

/// Whether `event.changes` shows `key` changed.
fn changed(event: &AuditEvent, key: &str) -> bool {
    let Some(changes) = &event.changes else { return false };
    let before = changes.before.as_ref().and_then(|m| m.get(key));
    let after = changes.after.as_ref().and_then(|m| m.get(key));
    (before.is_some() || after.is_some()) && before != after
}

impl Rule {
    /// Checks the rule; the error names the field (prefixed with `at`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        let bad = |field: &str, why: &str| Err(format!("{at}.{field}: {why}"));
        if !crate::event::parse::is_tenant_id(&self.name) {
            return bad("name", "1-64 letters, digits, '.', '_' or '-'");
        }
        if !self.enabled {
            // A switch-off needs only its name.
            return Ok(());
        }
        if self.description.as_ref().is_some_and(|d| d.chars().count() > 1024) {
            return bad("description", "at most 1024 characters");
        }
        if !SEVERITIES.contains(&self.severity.as_str()) {
            return bad("severity", "one of low, medium, high, critical");
        }
        if self.cooldown_seconds > MAX_WINDOW_SECONDS {
            return bad("cooldown_seconds", "at most 7776000 (90 days)");
        }
        for (i, f) in self.group_by.iter().enumerate() {
            if Field::parse(f).is_none() {
                return bad(&format!("group_by[{i}]"), "not an event field (user_id, ip_address, details.<key>, ...)");
            }
        }
        if self.group_by.len() > 4 {
            return bad("group_by", "at most 4 fields");
        }
        for (name, list) in [("when.actions", &self.when.actions), ("when.event_types", &self.when.event_types)] {
            if list.iter().any(|p| p.is_empty() || p.len() > 256) {
                return bad(name, "patterns are 1-256 characters");
            }
        }
        let windowed = matches!(self.kind, RuleKind::Threshold | RuleKind::Distinct | RuleKind::FirstSeen);
        match self.window_seconds {
            None if windowed => return bad("window_seconds", "required for this kind"),
            Some(w) if windowed && (w == 0 || w > MAX_WINDOW_SECONDS) => {
                return bad("window_seconds", "1 to 7776000 (90 days)");
            }
            Some(_) if !windowed => return bad("window_seconds", "only threshold, distinct and first_seen rules have a window"),
            _ => {}
        }
        let counted = matches!(self.kind, RuleKind::Threshold | RuleKind::Distinct);
        match self.threshold {
            None if counted => return bad("threshold", "required for this kind"),
            Some(t) if counted && (t == 0 || t > MAX_THRESHOLD) => return bad("threshold", "1 to 10000"),
            Some(_) if !counted => return bad("threshold", "only threshold and distinct rules have a threshold"),
            _ => {}
        }
        match (&self.distinct, self.kind) {
            (None, RuleKind::Distinct) => return bad("distinct", "required for a distinct rule"),
            (Some(f), RuleKind::Distinct) if Field::parse(f).is_none() => return bad("distinct", "not an event field"),
            (Some(_), kind) if kind != RuleKind::Distinct => return bad("distinct", "only distinct rules count distinct values"),
            _ => {}
        }
        if self.kind == RuleKind::FirstSeen {
            if self.fields.is_empty() {
                return bad("fields", "required for a first_seen rule");
            }
            if self.group_by.is_empty() {
                return bad("group_by", "required for a first_seen rule (whose values are new: a user's, ...)");
            }
            for (i, f) in self.fields.iter().enumerate() {
                if Field::parse(f).is_none() {
                    return bad(&format!("fields[{i}]"), "not an event field");
                }
            }
        } else if !self.fields.is_empty() {
            return bad("fields", "only first_seen rules watch fields");
        }
        if self.kind == RuleKind::Amount {
            if self.limit.is_none() && self.factor.is_none() {
                return bad("limit", "an amount rule needs a limit, a factor or both");
            }
            if let Some(limit) = &self.limit {
                if !limit.parse::<f64>().is_ok_and(|l| l.is_finite() && l >= 0.0) || limit.len() > 40 {
                    return bad("limit", "a non-negative decimal string such as \"10000.00\"");
                }
            }
            if let Some(factor) = self.factor {
                if !(factor.is_finite() && factor > 1.0 && factor <= 1e6) {
                    return bad("factor", "a number above 1 and at most 1000000");
                }
            }
            if self.min_samples.is_some_and(|n| n == 0 || n > 100_000) {
                return bad("min_samples", "1 to 100000");
            }
        } else {
            for (field, given) in [("limit", self.limit.is_some()), ("factor", self.factor.is_some()), ("min_samples", self.min_samples.is_some())] {
                if given {
                    return bad(field, "only amount rules have it");
                }
            }
        }
        Ok(())
    }

    /// The window in milliseconds (0 for kinds without one).
    pub fn window_ms(&self) -> i64 {
        self.window_seconds.unwrap_or(0).saturating_mul(1000).min(i64::MAX as u64) as i64
    }
}

/// Checks a list of rules: each valid, names unique. Errors name `at[i].field`.
pub fn validate_list(rules: &[Rule], at: &str) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    if rules.len() > 200 {
        return Err(format!("{at}: at most 200 rules"));
    }
    for (i, rule) in rules.iter().enumerate() {
        rule.validate(&format!("{at}[{i}]"))?;
        if !names.insert(rule.name.as_str()) {
            return Err(format!("{at}[{i}].name: {} is named twice", rule.name));
        }
    }
    Ok(())
}

/// `upper` laid over `lower` by name: a rule of `upper` replaces its namesake.
pub fn overlay(lower: &[Rule], upper: &[Rule]) -> Vec<Rule> {
    let mut merged: BTreeMap<&str, &Rule> = lower.iter().map(|r| (r.name.as_str(), r)).collect();
    for rule in upper {
        merged.insert(rule.name.as_str(), rule);
    }
    let mut out: Vec<Rule> = Vec::with_capacity(merged.len());
    // Keep the lower layer's order, then the new names in the upper layer's order.
    for rule in lower.iter().chain(upper) {
        if let Some(chosen) = merged.remove(rule.name.as_str()) {
            out.push(chosen.clone());
        }
    }
    out
}

fn rule(name: &str, kind: RuleKind, description: &str) -> Rule {
    Rule {
        name: name.into(),
        kind,
        enabled: true,
        description: Some(description.into()),
        when: Condition::default(),
        group_by: Vec::new(),
        distinct: None,
        fields: Vec::new(),
        threshold: None,
        window_seconds: None,
        limit: None,
        factor: None,
        min_samples: None,
        severity: high(),
        cooldown_seconds: default_cooldown(),
    }
}

/// The built-in rules, each on unless configured off.
pub fn builtin() -> Vec<Rule> {
    let failed_auth = Condition { categories: vec![Category::Auth], status: Some(Status::Failure), ..Condition::default() };
    vec![
        Rule {
            when: failed_auth.clone(),
            group_by: vec!["user_id".into()],
            threshold: Some(5),
            window_seconds: Some(15 * 60),
            ..rule("failed-logins-per-user", RuleKind::Threshold, "5 failed logins of one user within 15 minutes")
        },
        Rule {
            when: failed_auth.clone(),
            group_by: vec!["ip_address".into()],
            threshold: Some(20),
            window_seconds: Some(5 * 60),
            ..rule("failed-logins-per-ip", RuleKind::Threshold, "20 failed logins from one IP address within 5 minutes")
        },
        Rule {
            when: failed_auth,
            group_by: vec!["ip_address".into()],
            distinct: Some("user_id".into()),
            threshold: Some(10),
            window_seconds: Some(10 * 60),
            severity: "critical".into(),
            ..rule("credential-stuffing", RuleKind::Distinct, "one IP address failing against 10 or more users within 10 minutes")
        },
        Rule {
            when: Condition { security_event_types: vec!["account_locked".into()], ..Condition::default() },
            group_by: vec!["user_id".into()],
            cooldown_seconds: 300,
            ..rule("account-locked", RuleKind::Match, "an account was locked")
        },
        Rule {
            when: Condition {
                changed_fields: ["role", "roles", "permission", "permissions"].map(String::from).to_vec(),
                ..Condition::default()
            },
            group_by: vec!["resource".into(), "resource_id".into()],
            cooldown_seconds: 60,
            ..rule("privilege-change", RuleKind::Match, "a role or permission changed (before/after in changes)")
        },
        Rule {
            when: Condition { categories: vec![Category::Security], level_at_least: Some(Level::Critical), ..Condition::default() },
            group_by: vec!["security.event_type".into()],
            severity: "critical".into(),
            cooldown_seconds: 300,
            ..rule("critical-security-event", RuleKind::Match, "a security event at CRITICAL")
        },
        Rule {
            when: Condition { categories: vec![Category::Financial], ..Condition::default() },
            group_by: vec!["financial.currency".into()],
            factor: Some(10.0),
            min_samples: Some(20),
            cooldown_seconds: 0,
            ..rule("large-amount", RuleKind::Amount, "an amount 10 times the tenant's mean over the last 7 days in its currency (add a limit per tenant)")
        },
        Rule {
            when: Condition { categories: vec![Category::Auth], status: Some(Status::Success), ..Condition::default() },
            group_by: vec!["user_id".into()],
            fields: vec!["ip_address".into(), "user_agent".into()],
            window_seconds: Some(30 * 86_400),
            severity: "medium".into(),
            cooldown_seconds: 0,
            ..rule("new-login-source", RuleKind::FirstSeen, "a user's login from an IP address or user agent not seen for that user in 30 days")
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_written() {
        assert!(glob("*login*", "auth.login_failed"));
        assert!(glob("auth.*", "auth.login"));
        assert!(!glob("auth.*", "billing.auth.login"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn the_builtin_rules_are_valid_and_named_once() {
        validate_list(&builtin(), "rules").unwrap();
    }

    #[test]
    fn a_bad_rule_names_its_field() {
        let mut r = builtin().remove(0);
        r.threshold = Some(0);
        assert_eq!(r.validate("rules[0]").unwrap_err(), "rules[0].threshold: 1 to 10000");
        let mut r = builtin().remove(0);
        r.group_by = vec!["nope".into()];
        assert!(r.validate("x").unwrap_err().starts_with("x.group_by[0]:"));
        let mut r = builtin().remove(6);
        r.limit = Some("ten".into());
        assert!(r.validate("x").unwrap_err().starts_with("x.limit:"));
    }

    #[test]
    fn an_upper_layer_replaces_by_name_and_adds_new_rules() {
        let lower = builtin();
        let mut changed = lower[0].clone();
        changed.threshold = Some(3);
        let extra = Rule { name: "extra".into(), ..lower[3].clone() };
        let merged = overlay(&lower, &[extra, changed]);
        assert_eq!(merged.len(), lower.len() + 1);
        assert_eq!(merged[0].threshold, Some(3));
        assert_eq!(merged.last().unwrap().name, "extra");
    }
}
