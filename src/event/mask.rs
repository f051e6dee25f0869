//! PII and secret masking at ingest: runs on every validated event before any tier
//! sees it, so a password or card number sent by mistake never reaches Redis,
//! Postgres or the files.
//!
//! Three kinds of rule, all from [`MaskingSettings`]:
//! - keys (`mask_keys`, `drop_keys`): at any depth of `details` and `changes`,
//!   matched by words, ignoring case and separators, so `password` catches
//!   `newPassword`, `password_hash` and `X-Password`;
//! - exact paths (`mask_paths`, `drop_paths`) such as `details.payload.raw`;
//! - value patterns over every string of the event (every free-text field, and every
//!   string of `details` and `changes`): built-in ones (card numbers with a Luhn
//!   check, bearer tokens, JWTs, API keys, `password=` and `"password":` assignments)
//!   and the operator's own regular expressions. Card numbers are also found among
//!   the JSON numbers of `details` and `changes`, and a string that holds a JSON
//!   document is masked as a document (its keys too), then written back.

use regex::{Captures, Regex, RegexSet};
use serde_json::{Map, Value};

use super::AuditEvent;
use crate::config::MaskingSettings;

/// What a masked value becomes.
pub const MASKED: &str = "[MASKED]";

/// The compiled masking rules.
#[derive(Debug)]
pub struct Masker {
    enabled: bool,
    mask_keys: Vec<KeyRule>,
    drop_keys: Vec<KeyRule>,
    /// What each key name seen so far calls for; key names repeat across events, so
    /// the word splitting and rule matching run once per name.
    verdicts: std::sync::RwLock<foldhash::HashMap<String, KeyAction>>,
    mask_paths: Vec<Vec<String>>,
    drop_paths: Vec<Vec<String>>,
    patterns: Vec<Pattern>,
    /// Every pattern at once: one pass tells which (if any) a string needs, since
    /// most strings need none.
    any_pattern: RegexSet,
    /// Whether card numbers are masked (the `card_number` pattern is on): then JSON
    /// numbers that are card numbers are masked too.
    cards: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    regex: Regex,
    replace: Replace,
}

#[derive(Debug, Clone)]
enum Replace {
    Text(String),
    /// Card numbers: only Luhn-valid digit runs, keeping the last four digits.
    Card,
}

const BUILT_IN: [&str; 5] = ["card_number", "bearer_token", "jwt", "api_key", "password_assignment"];

fn built_in(name: &str) -> Option<(&'static str, Replace)> {
    Some(match name {
        "card_number" => (r"\b\d(?:[ -]?\d){12,18}\b", Replace::Card),
        "bearer_token" => (r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*", Replace::Text("$1 [MASKED]".into())),
        "jwt" => (r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+", Replace::Text(MASKED.into())),
        "api_key" => (
            r"\b(?:tlk_[A-Za-z0-9_-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abposr]-[A-Za-z0-9-]{10,})",
            Replace::Text(MASKED.into()),
        ),
        // `password=x`, `pwd: x`, and the JSON `"password": "x"` (the quote after the
        // name).
        "password_assignment" => (
            r#"(?i)\b(password|passwd|passphrase|pwd|pass|secret|credentials?)("?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&]+)"#,
            Replace::Text("$1$2[MASKED]".into()),
        ),
        _ => return None,
    })
}

/// Splits a key into lowercase words: `newPassword`, `new-password` and
/// `NEW_PASSWORD` all become `["new", "password"]`.
fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A key rule: its words, and the words run together.
#[derive(Debug, Clone)]
struct KeyRule {
    words: Vec<String>,
    joined: String,
}

impl KeyRule {
    fn new(raw: &str) -> Option<KeyRule> {
        let words = words(raw);
        (!words.is_empty()).then(|| KeyRule { joined: words.concat(), words })
    }

    /// True when the rule's words appear, in order and adjacent, among the key's
    /// words, or when the key written without separators equals the rule written
    /// without them (`apikey` against `api_key`).
    fn matches(&self, key_words: &[String], key_joined: &str) -> bool {
        key_words.windows(self.words.len()).any(|w| w == self.words.as_slice()) || key_joined == self.joined
    }
}

/// What a key of `details` or `changes` calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAction {
    Keep,
    Mask,
    Drop,
}

/// Key names remembered at most; beyond it verdicts are computed each time.
const VERDICT_CACHE: usize = 4096;

fn paths(setting: &str, raw: &[String]) -> Result<Vec<Vec<String>>, (String, String)> {
    raw.iter()
        .map(|p| {
            let segments: Vec<String> = p.split('.').map(str::to_owned).collect();
            if segments.len() < 2 || !matches!(segments[0].as_str(), "details" | "changes") || segments.iter().any(String::is_empty) {
                Err((setting.to_owned(), format!("`{p}` must be a dotted path starting with `details.` or `changes.`")))
            } else {
                Ok(segments)
            }
        })
        .collect()
}

impl Masker {
    /// Compiles the rules; a bad one is named as `(setting, reason)`.
    pub fn new(settings: &MaskingSettings) -> Result<Masker, (String, String)> {
        let mut patterns = Vec::new();
        for name in &settings.patterns {
            let (regex, replace) = built_in(name).ok_or_else(|| {
                ("masking.patterns".to_owned(), format!("`{name}` is not one of {}", BUILT_IN.join(", ")))
            })?;
            let regex = Regex::new(regex).map_err(|e| ("masking.patterns".to_owned(), e.to_string()))?;
            patterns.push(Pattern { regex, replace });
        }
        for custom in &settings.custom_patterns {
            let regex = Regex::new(&custom.regex)
                .map_err(|e| (format!("masking.custom_patterns.{}", custom.name), e.to_string()))?;
            patterns.push(Pattern { regex, replace: Replace::Text(custom.replacement.clone()) });
        }
        let key_words = |raw: &[String]| raw.iter().filter_map(|k| KeyRule::new(k)).collect();
        Ok(Masker {
            enabled: settings.enabled,
            mask_keys: key_words(&settings.mask_keys),
            drop_keys: key_words(&settings.drop_keys),
            mask_paths: paths("masking.mask_paths", &settings.mask_paths)?,
            drop_paths: paths("masking.drop_paths", &settings.drop_paths)?,
            cards: patterns.iter().any(|p| matches!(p.replace, Replace::Card)),
            any_pattern: RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))
                .map_err(|e| ("masking.patterns".to_owned(), e.to_string()))?,
            patterns,
            verdicts: Default::default(),
        })
    }

    /// A masker that changes nothing.
    pub fn disabled() -> Masker {
        Masker {
            enabled: false,
            mask_keys: Vec::new(),
            drop_keys: Vec::new(),
            mask_paths: Vec::new(),
            drop_paths: Vec::new(),
            patterns: Vec::new(),
            any_pattern: RegexSet::empty(),
            cards: false,
            verdicts: Default::default(),
        }
    }

    /// Masks `event` in place.
    pub fn apply(&self, event: &mut AuditEvent) {
        if !self.enabled {
            return;
        }
        let security = event.security.as_mut().map(|s| &mut s.event_type);
        let financial = event.financial.as_mut().map(|f| [&mut f.transaction_id, &mut f.account_id, &mut f.counterparty]);
        let free_text = [
            &mut event.logger,
            &mut event.message,
            &mut event.event_type,
            &mut event.action,
            &mut event.application,
            &mut event.user_id,
            &mut event.username,
            &mut event.email,
            &mut event.resource,
            &mut event.resource_id,
            &mut event.user_agent,
            &mut event.request_id,
            &mut event.session_id,
        ];
        for text in free_text.into_iter().chain(financial.into_iter().flatten()).filter_map(Option::as_mut).chain(security) {
            self.mask_text(text);
        }
        if let Some(details) = event.details.as_mut() {
            self.apply_paths(details, "details");
            self.walk(details);
        }
        if let Some(changes) = event.changes.as_mut() {
            for (side, map) in [("before", &mut changes.before), ("after", &mut changes.after)] {
                if let Some(map) = map.as_mut() {
                    self.apply_side_paths(map, side);
                    self.walk(map);
                }
            }
        }
    }

    fn apply_paths(&self, root: &mut Map<String, Value>, top: &str) {
        for path in self.drop_paths.iter().filter(|p| p[0] == top) {
            edit_path(root, &path[1..], |map, key| {
                map.remove(key);
            });
        }
        for path in self.mask_paths.iter().filter(|p| p[0] == top) {
            edit_path(root, &path[1..], |map, key| {
                if let Some(slot) = map.get_mut(key) {
                    *slot = Value::String(MASKED.into());
                }
            });
        }
    }

    /// `changes.before.x` paths apply to the `before` side, `changes.*.x` to both.
    fn apply_side_paths(&self, side_map: &mut Map<String, Value>, side: &str) {
        let applies = |p: &&Vec<String>| p[0] == "changes" && p.len() > 2 && (p[1] == side || p[1] == "*");
        for path in self.drop_paths.iter().filter(applies) {
            edit_path(side_map, &path[2..], |map, key| {
                map.remove(key);
            });
        }
        for path in self.mask_paths.iter().filter(applies) {
            edit_path(side_map, &path[2..], |map, key| {
                if let Some(slot) = map.get_mut(key) {
                    *slot = Value::String(MASKED.into());
                }
            });
        }
    }

    fn walk(&self, map: &mut Map<String, Value>) {
        let mut dropped = Vec::new();
        for (key, value) in map.iter_mut() {
            match self.key_action(key) {
                KeyAction::Drop => dropped.push(key.clone()),
                KeyAction::Mask => {
                    if !value.is_null() {
                        *value = Value::String(MASKED.into());
                    }
                }
                KeyAction::Keep => self.walk_value(value),
            }
        }
        for key in dropped {
            map.remove(&key);
        }
    }

    fn key_action(&self, key: &str) -> KeyAction {
        let cached = self.verdicts.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).copied();
        if let Some(action) = cached {
            return action;
        }
        let key_words = words(key);
        let joined = key_words.concat();
        let action = if self.drop_keys.iter().any(|rule| rule.matches(&key_words, &joined)) {
            KeyAction::Drop
        } else if self.mask_keys.iter().any(|rule| rule.matches(&key_words, &joined)) {
            KeyAction::Mask
        } else {
            KeyAction::Keep
        };
        let mut verdicts = self.verdicts.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if verdicts.len() < VERDICT_CACHE {
            verdicts.insert(key.to_owned(), action);
        }
        action
    }

    fn walk_value(&self, value: &mut Value) {
        match value {
            Value::Object(map) => self.walk(map),
            Value::Array(items) => items.iter_mut().for_each(|item| self.walk_value(item)),
            Value::String(text) => {
                let was_document = self.mask_document(text);
                if !was_document {
                    self.mask_text(text);
                }
            }
            Value::Number(number) if self.cards => {
                if let Some(masked) = number.as_u64().and_then(|n| card_mask(&n.to_string())) {
                    *value = Value::String(masked);
                }
            }
            _ => {}
        }
    }

    /// Masks a string that holds a JSON object or array as a document, so a secret
    /// under a key inside it is found; writes it back only when something changed.
    /// False when the string is no such document.
    fn mask_document(&self, text: &mut String) -> bool {
        let trimmed = text.trim_start();
        if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
            return false;
        }
        let Ok(mut document) = serde_json::from_str::<Value>(text) else { return false };
        let original = document.clone();
        self.walk_value(&mut document);
        if document != original {
            *text = serde_json::to_string(&document).unwrap_or_else(|_| MASKED.to_owned());
        }
        true
    }

    fn mask_text(&self, text: &mut String) {
        // Most strings need no pattern: the set's `is_match` answers that without
        // tracking which pattern matched.
        if !self.any_pattern.is_match(text) {
            return;
        }
        let needed = self.any_pattern.matches(text);
        for pattern in needed.iter().map(|i| &self.patterns[i]) {
            let replaced = match &pattern.replace {
                Replace::Text(with) => pattern.regex.replace_all(text, with.as_str()).into_owned(),
                Replace::Card => pattern.regex.replace_all(text, |caps: &Captures<'_>| mask_card(&caps[0])).into_owned(),
            };
            *text = replaced;
        }
    }
}

fn edit_path(root: &mut Map<String, Value>, path: &[String], edit: impl FnOnce(&mut Map<String, Value>, &str)) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut map = root;
    for key in parents {
        match map.get_mut(key).and_then(Value::as_object_mut) {
            Some(next) => map = next,
            None => return,
        }
    }
    edit(map, last);
}

fn mask_card(candidate: &str) -> String {
    card_mask(candidate).unwrap_or_else(|| candidate.to_owned())
}

/// The mask of a card number (digits, maybe spaced or dashed), keeping its last four
/// digits; `None` when it is no card number.
fn card_mask(candidate: &str) -> Option<String> {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    // Payment card numbers never start with 0 (ISO/IEC 7812 issuer category 0 is not
    // a card network); without this, zero runs such as a nil UUID would be masked.
    if !(13..=19).contains(&digits.len()) || digits[0] == 0 || !luhn(&digits) {
        return None;
    }
    let last4: String = digits[digits.len() - 4..].iter().map(|d| char::from(b'0' + *d as u8)).collect();
    Some(format!("[MASKED-CARD ****{last4}]"))
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| if i % 2 == 1 { let x = d * 2; if x > 9 { x - 9 } else { x } } else { *d })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::event::{EventParser, Limits};
    use chrono::Utc;
    use serde_json::json;

    fn masked(item: Value) -> Value {
        let settings = Settings::defaults().expect("defaults");
        let masker = Masker::new(&settings.masking).expect("rules compile");
        let mut event = EventParser::new(Limits::default(), None, Utc::now()).parse(0, item).expect("valid");
        masker.apply(&mut event);
        serde_json::to_value(&event).expect("json")
    }

    #[test]
    fn default_rules_mask_secrets_by_key_at_any_depth() {
        let out = masked(json!({"category": "auth", "details": {
            "password": "hunter2", "newPassword": "x", "nested": {"X-Api-Key": "abc", "session_token": "t"},
            "list": [{"client_secret": "s"}], "keep": "visible", "pin": 1234, "shipping": "box"}}));
        let d = &out["details"];
        assert_eq!(d["password"], MASKED);
        assert_eq!(d["newPassword"], MASKED);
        assert_eq!(d["nested"]["X-Api-Key"], MASKED);
        assert_eq!(d["nested"]["session_token"], MASKED);
        assert_eq!(d["list"][0]["client_secret"], MASKED);
        assert_eq!(d["pin"], MASKED);
        assert_eq!(d["keep"], "visible");
        assert_eq!(d["shipping"], "box");
    }

    #[test]
    fn value_patterns_mask_cards_tokens_and_keys_in_free_text() {
        let out = masked(json!({"category": "audit",
            "message": "paid with 4111 1111 1111 1111, order 1234567890123 ok; Authorization: Bearer abc.def-ghi password=s3cret!",
            "changes": {"before": {"note": "key sk_live_abcdefghijklmnop"}, "after": {"jwt": "eyJhbGciOi.eyJzdWIiOiIx.sig"}}}));
        let message = out["message"].as_str().expect("message");
        assert!(message.contains("[MASKED-CARD ****1111]"), "{message}");
        assert!(message.contains("order 1234567890123"), "a non-Luhn number stays: {message}");
        let nil = masked(json!({"category": "audit", "message": "ref 00000000-0000-0000-0000-000000000000"}));
        assert_eq!(nil["message"], "ref 00000000-0000-0000-0000-000000000000", "zero runs are not cards");
        assert!(message.contains("Bearer [MASKED]"), "{message}");
        assert!(message.contains("password=[MASKED]"), "{message}");
        assert!(!message.contains("s3cret") && !message.contains("abc.def"), "{message}");
        assert_eq!(out["changes"]["before"]["note"], "key [MASKED]");
        assert_eq!(out["changes"]["after"]["jwt"], MASKED);
    }

    #[test]
    fn paths_and_custom_patterns_follow_configuration() {
        let mut settings = Settings::defaults().expect("defaults");
        settings.masking.drop_paths = vec!["details.raw".into(), "changes.*.blob".into()];
        settings.masking.mask_paths = vec!["details.account.iban".into()];
        settings.masking.custom_patterns = vec![crate::config::CustomPattern {
            name: "ssn".into(),
            regex: r"\b\d{3}-\d{2}-\d{4}\b".into(),
            replacement: "[SSN]".into(),
        }];
        let masker = Masker::new(&settings.masking).expect("compiles");
        let mut event = EventParser::new(Limits::default(), None, Utc::now())
            .parse(0, json!({"category": "audit", "message": "ssn 123-45-6789",
                "details": {"raw": "x", "account": {"iban": "DE89"}},
                "changes": {"before": {"blob": 1, "a": 1}, "after": {"blob": 2}}}))
            .expect("valid");
        masker.apply(&mut event);
        let out = serde_json::to_value(&event).expect("json");
        assert_eq!(out["message"], "ssn [SSN]");
        assert!(out["details"].get("raw").is_none());
        assert_eq!(out["details"]["account"]["iban"], MASKED);
        assert!(out["changes"]["before"].get("blob").is_none());
        assert_eq!(out["changes"]["before"]["a"], 1);

        settings.masking.custom_patterns[0].regex = "(".into();
        let err = Masker::new(&settings.masking).expect_err("bad regex");
        assert_eq!(err.0, "masking.custom_patterns.ssn");
        settings.masking.custom_patterns.clear();
        settings.masking.patterns = vec!["nope".into()];
        assert!(Masker::new(&settings.masking).is_err());
    }
}
