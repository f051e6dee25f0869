//! Verifying a stored chain, whatever the database: a [`ChainSource`] reads one
//! (tenant, table, shard) chain's head, checkpoints, rows (decoded and hashed) and tombstones from one
//! consistent snapshot; [`verify`] walks them in sequence order with the
//! [`Verifier`] and builds the report.

use std::collections::VecDeque;

use serde::Serialize;

use super::stored::StoredRow;
use super::{BoxFuture, Chain, Table};
use crate::integrity::checkpoint::{Checkpoint, Keyring, SignatureError};
use crate::integrity::verify::{Anchor, Break, RowHashes, Tombstone, Verifier};

/// Tombstones read per round trip.
pub(crate) const TOMBSTONE_CHUNK: i64 = 5000;

/// The verdict on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    pub tenant_id: String,
    pub table: String,
    /// The writer shard whose chain this is (0 on a single node).
    pub shard: i32,
    /// Rows and tombstones checked.
    pub rows_checked: u64,
    /// The oldest sequence number still held (rows before it were deleted by
    /// retention and are vouched for by a signed checkpoint).
    pub first_seq: i64,
    /// The head recorded when the last row was written.
    pub head_seq: i64,
    /// Signed checkpoints of this chain whose signatures were checked.
    pub checkpoints: usize,
    pub ok: bool,
    /// The first link that does not hold.
    #[schema(value_type = Option<Object>)]
    pub first_break: Option<Break>,
    /// Every break found, in chain order, up to the first 100: the walk goes on
    /// after a break, so one bad row never hides another.
    #[schema(value_type = Vec<Object>)]
    pub breaks: Vec<Break>,
    /// How many breaks were found in all (more than `breaks` lists when over 100).
    pub break_count: u64,
}

/// A chunk of rows, each with its hashes.
pub(crate) type HashedRows = (Vec<StoredRow>, Vec<RowHashes>);

/// One chain as a database holds it, read from one snapshot.
pub(crate) trait ChainSource: Send {
    /// The recorded head's sequence number (the chain's base for no chain).
    fn head(&mut self) -> BoxFuture<'_, Result<i64, sqlx::Error>>;
    /// The oldest sequence number held as a row or a tombstone.
    fn first_held(&mut self) -> BoxFuture<'_, Result<Option<i64>, sqlx::Error>>;
    /// The chain's checkpoints, oldest sequence first.
    fn checkpoints(&mut self) -> BoxFuture<'_, Result<Vec<Checkpoint>, sqlx::Error>>;
    /// Up to `limit` tombstones after `after`.
    fn tombstones_after(&mut self, after: i64, limit: i64) -> BoxFuture<'_, Result<Vec<Tombstone>, sqlx::Error>>;
    /// The next rows after `after`, decoded and hashed; empty at the end.
    fn rows_after(&mut self, after: i64) -> BoxFuture<'_, Result<HashedRows, sqlx::Error>>;
}

/// Chains read as (tenant, table name, head seq), those of known tables, each with
/// its head.
pub(crate) fn known_chains(rows: Vec<(String, String, i64)>) -> Vec<(Chain, i64)> {
    rows.into_iter()
        .filter_map(|(tenant, name, seq)| Table::parse(&name).map(|table| (Chain::holding(&tenant, table, seq), seq)))
        .collect()
}

/// The checkpoints whose signatures hold, as anchors, and a break for each that
/// does not (it anchors nothing).
pub(crate) fn anchors(checkpoints: &[Checkpoint], keys: &Keyring) -> (Vec<Anchor>, Vec<Break>) {
    let mut anchors = Vec::new();
    let mut bad = Vec::new();
    for checkpoint in checkpoints {
        let seq = checkpoint.head.seq;
        match (checkpoint.verify(keys), checkpoint.hash_bytes()) {
            (Ok(()), Some(hash)) => anchors.push(Anchor { seq, hash }),
            (Err(reason), _) => bad.push(Break::BadCheckpoint { seq, reason }),
            (Ok(()), None) => bad.push(Break::BadCheckpoint { seq, reason: SignatureError::Invalid }),
        }
    }
    (anchors, bad)
}

/// Decodes and hashes rows on every core: both depend on each row alone.
pub(crate) fn decode_and_hash<R: Sync>(
    raw: &[R],
    decode: impl Fn(&R) -> Result<StoredRow, sqlx::Error> + Sync,
) -> Result<HashedRows, sqlx::Error> {
    let work = |part: &[R]| -> Result<Vec<(StoredRow, RowHashes)>, sqlx::Error> {
        part.iter()
            .map(|row| {
                let stored = decode(row)?;
                let hashes = RowHashes::of(&stored);
                Ok((stored, hashes))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let done: Vec<(StoredRow, RowHashes)> = if threads < 2 || raw.len() < 256 {
        work(raw)?
    } else {
        let per = raw.len().div_ceil(threads);
        let parts: Vec<Result<Vec<(StoredRow, RowHashes)>, sqlx::Error>> = std::thread::scope(|scope| {
            let work = &work;
            let handles: Vec<_> = raw.chunks(per).map(|part| scope.spawn(move || work(part))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(sqlx::Error::Protocol("row decoder panicked".into()))))
                .collect()
        });
        let mut all = Vec::with_capacity(raw.len());
        for part in parts {
            all.extend(part?);
        }
        all
    };
    Ok(done.into_iter().unzip())
}

/// Verifies one chain from `source` against its head and signed checkpoints,
/// reporting every break, not just the first.
pub(crate) async fn verify(source: &mut impl ChainSource, keys: &Keyring, chain: &Chain) -> Result<ChainReport, sqlx::Error> {
    let head_seq = source.head().await?;
    let (anchors, bad_checkpoints) = anchors(&source.checkpoints().await?, keys);
    let checkpoint_count = anchors.len() + bad_checkpoints.len();
    let first_seq = source.first_held().await?.unwrap_or(head_seq + 1);
    let (mut verifier, _) = Verifier::starting_at(first_seq, anchors);
    for bad in bad_checkpoints {
        verifier.record(bad);
    }
    walk(source, &mut verifier, first_seq - 1).await?;
    let _ = verifier.finish(head_seq);
    let rows_checked = verifier.checked();
    let (breaks, break_count) = verifier.breaks().clone().into_parts();
    Ok(ChainReport {
        tenant_id: chain.tenant.clone(),
        table: chain.table.as_str().to_owned(),
        shard: chain.shard,
        rows_checked,
        first_seq,
        head_seq,
        checkpoints: checkpoint_count,
        ok: break_count == 0,
        first_break: breaks.first().cloned(),
        breaks,
        break_count,
    })
}

/// The tombstone buffer ran dry inside a stretch of rows.
struct NeedTombstones;

/// Checks `rows`, and the buffered tombstones that fall before each of them. Breaks
/// are recorded in the verifier and the walk goes on.
fn check_rows(
    verifier: &mut Verifier,
    rows: &[StoredRow],
    hashes: &[RowHashes],
    tombs: &mut VecDeque<Tombstone>,
    tombs_done: bool,
) -> Result<(), NeedTombstones> {
    for (row, hashes) in rows.iter().zip(hashes) {
        if row.seq <= verifier.last_seq() {
            continue;
        }
        while let Some(tomb) = tombs.front().filter(|t| t.seq < row.seq) {
            let _ = verifier.check_tombstone(tomb);
            tombs.pop_front();
            if tombs.is_empty() && !tombs_done {
                return Err(NeedTombstones);
            }
        }
        let _ = verifier.check_hashed(row, hashes);
    }
    Ok(())
}

/// Walks rows and tombstones after `after` in sequence order.
async fn walk(source: &mut impl ChainSource, verifier: &mut Verifier, after: i64) -> Result<(), sqlx::Error> {
    let mut tombs: VecDeque<Tombstone> = source.tombstones_after(after, TOMBSTONE_CHUNK).await?.into();
    let mut tombs_done = (tombs.len() as i64) < TOMBSTONE_CHUNK;
    loop {
        let (rows, hashes) = source.rows_after(verifier.last_seq()).await?;
        if rows.is_empty() {
            break;
        }
        if check_rows(verifier, &rows, &hashes, &mut tombs, tombs_done).is_err() {
            tombs.extend(source.tombstones_after(verifier.last_seq(), TOMBSTONE_CHUNK).await?);
            tombs_done = (tombs.len() as i64) < TOMBSTONE_CHUNK;
        }
    }
    // Tombstones after the last row.
    loop {
        while let Some(tomb) = tombs.pop_front() {
            let _ = verifier.check_tombstone(&tomb);
        }
        if tombs_done {
            return Ok(());
        }
        tombs.extend(source.tombstones_after(verifier.last_seq(), TOMBSTONE_CHUNK).await?);
        tombs_done = (tombs.len() as i64) < TOMBSTONE_CHUNK;
    }
}
