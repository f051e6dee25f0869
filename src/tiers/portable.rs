//! Statements written once for both databases: ids as text, times as milliseconds,
//! flags as integers, parameters numbered `$1` (SQLite reads them as `?1`). The
//! tables of detection and webhooks (migration 0011, used as it is by both) are
//! read and written this way; [`Conn`] is a connection of either database and
//! [`execute`] and [`fetch`] run a statement on it.

use crate::tiers::database::Database;

/// A connection of either database.
pub enum Conn<'c> {
    Pg(&'c mut sqlx::PgConnection),
    Lite(&'c mut sqlx::SqliteConnection),
}

/// A statement written for Postgres (`$1`), as SQLite numbers its parameters (`?1`).
pub fn lite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Runs a statement on a [`Conn`]; the rows it changed.
macro_rules! execute_on {
    ($conn:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn {
            $crate::tiers::portable::Conn::Pg(c) => sqlx::query($sql)$(.bind($arg))*.execute(&mut **c).await.map(|r| r.rows_affected()),
            $crate::tiers::portable::Conn::Lite(c) => sqlx::query(&$crate::tiers::portable::lite($sql))$(.bind($arg))*.execute(&mut **c).await.map(|r| r.rows_affected()),
        }
    };
}

/// Runs a query on a [`Conn`] and maps each row with `|row| ...` (a `Result`).
macro_rules! fetch_on {
    ($conn:expr, $sql:expr, [$($arg:expr),* $(,)?], |$row:ident| $map:expr) => {
        match $conn {
            $crate::tiers::portable::Conn::Pg(c) => sqlx::query($sql)$(.bind($arg))*.fetch_all(&mut **c).await
                .and_then(|rows| rows.iter().map(|$row| $map).collect::<Result<Vec<_>, sqlx::Error>>()),
            $crate::tiers::portable::Conn::Lite(c) => sqlx::query(&$crate::tiers::portable::lite($sql))$(.bind($arg))*.fetch_all(&mut **c).await
                .and_then(|rows| rows.iter().map(|$row| $map).collect::<Result<Vec<_>, sqlx::Error>>()),
        }
    };
}

pub(crate) use execute_on as execute;
pub(crate) use fetch_on as fetch;

/// A pooled connection of either database.
pub enum Pooled {
    Pg(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Lite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl Pooled {
    /// A connection of `db`'s primary.
    pub async fn acquire(db: &Database) -> Result<Pooled, sqlx::Error> {
        Ok(match db {
            Database::Postgres(store) => Pooled::Pg(store.pool().acquire().await?),
            Database::Sqlite(store) => Pooled::Lite(store.pool().acquire().await?),
        })
    }

    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Pg(c) => Conn::Pg(&mut *c),
            Pooled::Lite(c) => Conn::Lite(&mut *c),
        }
    }
}
