//! Reading chains for verification, 5,000 rows at a time, so any length verifies in
//! flat memory.

use serde::Serialize;
use sqlx::{PgPool, Row};

use super::rows::stored_row;
use crate::integrity::verify::{Break, Verifier};
use crate::tiers::Table;

/// Rows read per round trip.
const CHUNK: i64 = 5000;

/// The verdict on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    pub tenant_id: String,
    pub table: String,
    pub rows_checked: u64,
    /// The head recorded when the last row was written.
    pub head_seq: i64,
    pub ok: bool,
    /// The first link that does not hold.
    #[schema(value_type = Option<Object>)]
    pub first_break: Option<Break>,
}

/// The chains that exist, optionally of one tenant and one table.
pub async fn chains(pool: &PgPool, tenant: Option<&str>, table: Option<Table>) -> Result<Vec<(String, Table, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tenant_id, table_name, seq FROM chain_heads
         WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR table_name = $2) AND seq > 0
         ORDER BY tenant_id, table_name",
    )
    .bind(tenant)
    .bind(table.map(Table::as_str))
    .fetch_all(pool)
    .await?;
    let mut chains = Vec::new();
    for row in rows {
        let name: String = row.try_get("table_name")?;
        if let Some(table) = Table::parse(&name) {
            chains.push((row.try_get("tenant_id")?, table, row.try_get("seq")?));
        }
    }
    Ok(chains)
}

/// Verifies one chain against its recorded head.
pub async fn verify_chain(pool: &PgPool, tenant: &str, table: Table, head_seq: i64) -> Result<ChainReport, sqlx::Error> {
    let mut verifier = Verifier::new();
    let mut after = 0i64;
    let mut first_break = None;
    'chunks: loop {
        let sql = format!(
            "SELECT *, host(ip_address) AS ip_text FROM {table} WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(&sql).bind(tenant).bind(after).bind(CHUNK).fetch_all(pool).await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let stored = stored_row(table, row)?;
            after = stored.seq;
            if let Err(broken) = verifier.check(&stored) {
                first_break = Some(broken);
                break 'chunks;
            }
        }
    }
    if first_break.is_none() {
        first_break = verifier.finish(head_seq).err();
    }
    Ok(ChainReport {
        tenant_id: tenant.to_owned(),
        table: table.as_str().to_owned(),
        rows_checked: verifier.checked(),
        head_seq,
        ok: first_break.is_none(),
        first_break,
    })
}
