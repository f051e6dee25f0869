//! The rule overrides saved through `PUT /audit/rules` (table `detection_rules`:
//! scope `*` for the deployment's, a tenant id for a tenant's), in either database.

use std::collections::BTreeMap;

use sqlx::Row;

use super::rules::Rule;
use crate::tiers::portable::{execute, fetch, Conn};

/// Every saved rule override: `None` the deployment's, `Some` a tenant's.
pub async fn saved_rules(conn: &mut Conn<'_>) -> Result<BTreeMap<Option<String>, Vec<Rule>>, sqlx::Error> {
    let rows = fetch!(conn, "SELECT scope, rules FROM detection_rules", [],
        |row| Ok((row.try_get::<String, _>("scope")?, row.try_get::<String, _>("rules")?)))?;
    rows.into_iter()
        .map(|(scope, rules)| {
            let rules: Vec<Rule> = serde_json::from_str(&rules).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok(((scope != "*").then_some(scope), rules))
        })
        .collect()
}

/// Saves the overrides of one scope (`None`: the deployment's); an empty list
/// removes them.
pub async fn save_rules(conn: &mut Conn<'_>, scope: Option<&str>, rules: &[Rule], now: i64) -> Result<(), sqlx::Error> {
    let scope = scope.unwrap_or("*");
    if rules.is_empty() {
        execute!(conn, "DELETE FROM detection_rules WHERE scope = $1", scope)?;
    } else {
        execute!(conn,
            "INSERT INTO detection_rules (scope, rules, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (scope) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
            scope, serde_json::to_string(rules).unwrap_or_default(), now)?;
    }
    Ok(())
}
