//! Chain verification: walks one (tenant, table, shard) chain in sequence order over its
//! rows and the tombstones retention left, and names the first link that does not
//! hold. Pure: rows come from any store (Postgres, an archive).
//!
//! A chain may start after row 1 once retention has deleted its oldest rows; it must
//! then start right after a signed checkpoint, whose hash the first remaining row
//! points at. Every signed checkpoint inside the walked range must match the row at
//! its sequence, and the walk must reach the newest checkpoint: deleting the newest
//! rows and rewinding `chain_heads` is caught by the signature, not by the database.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::chain::{hashes, link_hash, shard_base, shard_of, GENESIS_HASH};
use super::checkpoint::SignatureError;
use crate::tiers::postgres::StoredRow;

/// What is wrong at a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Break {
    /// Sequence numbers jump or repeat: rows were deleted or inserted.
    SequenceGap { expected: i64, found: i64 },
    /// The row does not point at its predecessor's hash: rows were reordered,
    /// inserted or replaced.
    BrokenLink { seq: i64 },
    /// The row's content no longer matches its hash: a column was changed.
    ContentChanged { seq: i64 },
    /// The personal fields no longer match their seal.
    PersonalFieldsChanged { seq: i64 },
    /// The chain ends before its recorded head or its newest signed checkpoint: the
    /// newest rows were deleted.
    MissingTail { last_seq: i64, head_seq: i64 },
    /// Rows follow the recorded head: they were added outside tierlog.
    RowsBeyondHead { last_seq: i64, head_seq: i64 },
    /// A tombstone says a row was deleted before it expired.
    DeletedBeforeExpiry { seq: i64 },
    /// The oldest remaining row follows deleted ones, and no signed checkpoint
    /// anchors it.
    UnanchoredStart { first_seq: i64 },
    /// A signed checkpoint names another hash than the row at its sequence holds.
    CheckpointMismatch { seq: i64 },
    /// A checkpoint's signature does not hold: it was forged or altered.
    BadCheckpoint { seq: i64, reason: SignatureError },
}

/// What retention leaves of a deleted row: enough to keep the chain linked and to
/// show that the row had expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub seq: i64,
    pub expires_at: DateTime<Utc>,
    pub deleted_at: DateTime<Utc>,
    pub prev_hash: Vec<u8>,
    pub content_hash: Vec<u8>,
    pub row_hash: Vec<u8>,
}

/// A chain position vouched for by a signed checkpoint (signature already checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub hash: [u8; 32],
}

/// What a row's own content hashes to: its content hash (none when its stored seal
/// is malformed) and whether its personal values still match their seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowHashes {
    pub content: Option<[u8; 32]>,
    pub personal_ok: bool,
}

impl RowHashes {
    /// Hashes one row.
    pub fn of(row: &StoredRow) -> RowHashes {
        let Some(seal) = hash32(&row.pii_hash) else { return RowHashes { content: None, personal_ok: false } };
        let salt = row.pii_salt.as_deref().and_then(|s| <[u8; 16]>::try_from(s).ok());
        let (content, personal) = hashes(row.table.as_str(), &seal, &row.pii_paths, &row.event, salt.as_ref());
        // Without a salt the personal values were erased: the seal stands on its own.
        RowHashes { content: Some(content), personal_ok: personal.is_none_or(|p| p == seal) }
    }
}

/// Breaks listed in full in a report; past this many only the count goes on.
pub const MAX_LISTED_BREAKS: usize = 100;

/// Every break a walk found: the first [`MAX_LISTED_BREAKS`] of them and the count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakLog {
    listed: Vec<Break>,
    count: u64,
}

impl BreakLog {
    /// Records one break.
    pub fn push(&mut self, broken: Break) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED_BREAKS {
            self.listed.push(broken);
        }
    }

    /// The breaks listed, in the order they were found.
    pub fn listed(&self) -> &[Break] {
        &self.listed
    }

    /// How many breaks were found in all.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The breaks, listed and counted.
    pub fn into_parts(self) -> (Vec<Break>, u64) {
        (self.listed, self.count)
    }
}

/// Walks a chain entry by entry. A break is recorded and the walk goes on from what
/// the entry itself holds, so one altered row can never hide another: each check
/// returns the entry's first break (callers that stop at one can), and every break
/// of the walk stays in [`Verifier::breaks`].
#[derive(Debug, Clone)]
pub struct Verifier {
    next_seq: i64,
    /// The hash the next entry must link to; `None` when the start is not anchored,
    /// so nothing is known to link to.
    prev_hash: Option<[u8; 32]>,
    checked: u64,
    /// Checkpoints after the start, oldest first.
    anchors: Vec<Anchor>,
    next_anchor: usize,
    breaks: BreakLog,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            next_seq: 1,
            prev_hash: Some(GENESIS_HASH),
            checked: 0,
            anchors: Vec::new(),
            next_anchor: 0,
            breaks: BreakLog::default(),
        }
    }
}

fn hash32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

/// The breaks of one entry, the first of which its check returns.
struct EntryBreaks<'v> {
    log: &'v mut BreakLog,
    first: Option<Break>,
}

impl EntryBreaks<'_> {
    fn push(&mut self, broken: Break) {
        if self.first.is_none() {
            self.first = Some(broken.clone());
        }
        self.log.push(broken);
    }

    fn result(self) -> Result<(), Break> {
        self.first.map_or(Ok(()), Err)
    }
}

impl Verifier {
    /// A verifier for a chain from its first row, with no checkpoints.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// A verifier for a chain whose oldest held entry is `first_seq` (the head + 1
    /// when nothing is held), with the chain's verified checkpoints. A start after
    /// deleted rows that no checkpoint anchors is an [`Break::UnanchoredStart`]: it is
    /// returned and recorded, and the returned verifier walks on from the first
    /// entry's own link.
    pub fn starting_at(first_seq: i64, mut anchors: Vec<Anchor>) -> (Verifier, Option<Break>) {
        anchors.sort_by_key(|a| a.seq);
        let mut verifier = Verifier { next_seq: first_seq, ..Verifier::default() };
        let mut unanchored = None;
        // The chain's own first position: its shard's base + 1.
        if first_seq > shard_base(shard_of(first_seq - 1)) + 1 {
            verifier.prev_hash = anchors.iter().find(|a| a.seq == first_seq - 1).map(|a| a.hash);
            if verifier.prev_hash.is_none() {
                let broken = Break::UnanchoredStart { first_seq };
                verifier.breaks.push(broken.clone());
                unanchored = Some(broken);
            }
        }
        verifier.anchors = anchors.into_iter().filter(|a| a.seq >= first_seq).collect();
        (verifier, unanchored)
    }

    /// Entries checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The last sequence number checked.
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// Records a break found outside the entries (a bad checkpoint signature).
    pub fn record(&mut self, broken: Break) {
        self.breaks.push(broken);
    }

    /// Every break found so far.
    pub fn breaks(&self) -> &BreakLog {
        &self.breaks
    }

    /// Checks one entry's position, link and row hash, then moves past it. After a
    /// gap or a broken link, the entry's own `prev_hash` stands in for the expected
    /// one, so its content is still checked; after a content change, the stored row
    /// hash is what the next entry links to.
    fn check_entry(
        &mut self,
        seq: i64,
        prev_hash: &[u8],
        expires_at: &DateTime<Utc>,
        content: Option<[u8; 32]>,
        row_hash: &[u8],
        extra: impl FnOnce(&mut EntryBreaks<'_>),
    ) -> Result<(), Break> {
        let mut found = EntryBreaks { log: &mut self.breaks, first: None };
        let mut expected_prev = self.prev_hash;
        if seq != self.next_seq {
            found.push(Break::SequenceGap { expected: self.next_seq, found: seq });
            // The gap explains a link that does not hold.
            expected_prev = None;
        }
        let own_prev = hash32(prev_hash);
        if expected_prev.is_some_and(|expected| prev_hash != expected) {
            found.push(Break::BrokenLink { seq });
        }
        let stored = hash32(row_hash);
        let content_ok = match (stored, content, own_prev) {
            (Some(stored), Some(content), Some(prev)) => link_hash(seq, expires_at, &prev, &content) == stored,
            _ => false,
        };
        if !content_ok {
            found.push(Break::ContentChanged { seq });
        }
        extra(&mut found);
        // Checkpoints on rows that are gone are reported by the gap.
        while self.anchors.get(self.next_anchor).is_some_and(|a| a.seq < seq) {
            self.next_anchor += 1;
        }
        if let Some(anchor) = self.anchors.get(self.next_anchor).filter(|a| a.seq == seq) {
            if Some(anchor.hash) != stored {
                found.push(Break::CheckpointMismatch { seq });
            }
            self.next_anchor += 1;
        }
        let result = found.result();
        // A malformed stored hash links nothing: the next entry is checked against its
        // own link.
        self.prev_hash = stored;
        self.next_seq = seq + 1;
        self.checked += 1;
        result
    }

    /// Checks the next row of the chain.
    pub fn check(&mut self, row: &StoredRow) -> Result<(), Break> {
        self.check_hashed(row, &RowHashes::of(row))
    }

    /// Like [`Verifier::check`] with the row's hashes computed beforehand (they
    /// depend on the row alone, so many rows can be hashed in parallel).
    pub fn check_hashed(&mut self, row: &StoredRow, hashes: &RowHashes) -> Result<(), Break> {
        let seq = row.seq;
        self.check_entry(seq, &row.prev_hash, &row.expires_at, hashes.content, &row.row_hash, |found| {
            if !hashes.personal_ok {
                found.push(Break::PersonalFieldsChanged { seq });
            }
        })
    }

    /// Checks the next entry when it is a deleted row's tombstone.
    pub fn check_tombstone(&mut self, tombstone: &Tombstone) -> Result<(), Break> {
        let seq = tombstone.seq;
        let content = hash32(&tombstone.content_hash);
        let early = tombstone.deleted_at < tombstone.expires_at;
        self.check_entry(seq, &tombstone.prev_hash, &tombstone.expires_at, content, &tombstone.row_hash, |found| {
            if early {
                found.push(Break::DeletedBeforeExpiry { seq });
            }
        })
    }

    /// Checks that the walk ended exactly at the recorded head and reached every
    /// checkpoint.
    pub fn finish(&mut self, head_seq: i64) -> Result<(), Break> {
        let last_seq = self.last_seq();
        let newest_checkpoint = self.anchors.last().map_or(0, |a| a.seq);
        let must_reach = head_seq.max(newest_checkpoint);
        let broken = if last_seq < must_reach {
            Break::MissingTail { last_seq, head_seq: must_reach }
        } else if last_seq > head_seq {
            Break::RowsBeyondHead { last_seq, head_seq }
        } else {
            return Ok(());
        };
        self.breaks.push(broken.clone());
        Err(broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tombstone(seq: i64, prev: [u8; 32], deleted_days: i64) -> Tombstone {
        let expires_at = DateTime::from_timestamp(1_800_000_000, 0).expect("ts");
        let content = [seq as u8; 32];
        let row_hash = link_hash(seq, &expires_at, &prev, &content);
        Tombstone {
            seq,
            expires_at,
            deleted_at: expires_at + chrono::Duration::days(deleted_days),
            prev_hash: prev.to_vec(),
            content_hash: content.to_vec(),
            row_hash: row_hash.to_vec(),
        }
    }

    #[test]
    fn the_walk_must_end_exactly_at_the_recorded_head() {
        assert_eq!(Verifier::new().finish(0), Ok(()));
        assert_eq!(Verifier::new().finish(2), Err(Break::MissingTail { last_seq: 0, head_seq: 2 }));
        let mut walked = Verifier { next_seq: 4, ..Verifier::default() };
        assert_eq!(walked.finish(3), Ok(()));
        assert_eq!(walked.finish(2), Err(Break::RowsBeyondHead { last_seq: 3, head_seq: 2 }));
    }

    #[test]
    fn tombstones_link_and_must_have_expired() {
        let first = tombstone(1, GENESIS_HASH, 1);
        let second = tombstone(2, hash32(&first.row_hash).expect("32"), 0);
        let mut verifier = Verifier::new();
        assert_eq!(verifier.check_tombstone(&first), Ok(()));
        assert_eq!(verifier.check_tombstone(&second), Ok(()));
        assert_eq!(verifier.finish(2), Ok(()));

        let early = tombstone(1, GENESIS_HASH, -1);
        assert_eq!(Verifier::new().check_tombstone(&early), Err(Break::DeletedBeforeExpiry { seq: 1 }));
        let mut forged = tombstone(1, GENESIS_HASH, 1);
        forged.expires_at -= chrono::Duration::days(30);
        assert_eq!(Verifier::new().check_tombstone(&forged), Err(Break::ContentChanged { seq: 1 }));
    }

    #[test]
    fn a_chain_after_deleted_rows_needs_a_checkpoint_and_must_reach_the_newest() {
        let anchor_hash = [9u8; 32];
        assert_eq!(Verifier::starting_at(5, Vec::new()).1, Some(Break::UnanchoredStart { first_seq: 5 }));
        let fifth = tombstone(5, anchor_hash, 1);
        let anchors = vec![Anchor { seq: 4, hash: anchor_hash }, Anchor { seq: 6, hash: [1; 32] }];
        let (mut verifier, unanchored) = Verifier::starting_at(5, anchors.clone());
        assert_eq!(unanchored, None);
        assert_eq!(verifier.check_tombstone(&fifth), Ok(()));
        assert_eq!(verifier.finish(5), Err(Break::MissingTail { last_seq: 5, head_seq: 6 }));

        let wrong = vec![Anchor { seq: 4, hash: anchor_hash }, Anchor { seq: 5, hash: [1; 32] }];
        let (mut verifier, _) = Verifier::starting_at(5, wrong);
        assert_eq!(verifier.check_tombstone(&fifth), Err(Break::CheckpointMismatch { seq: 5 }));
    }

    #[test]
    fn a_shards_chain_starts_at_its_base_from_the_genesis_hash_and_needs_an_anchor_past_it() {
        let base = shard_base(3);
        let (mut verifier, unanchored) = Verifier::starting_at(base + 1, Vec::new());
        assert_eq!(unanchored, None, "a shard's first row follows the genesis hash");
        assert_eq!(verifier.check_tombstone(&tombstone(base + 1, GENESIS_HASH, 1)), Ok(()));
        assert_eq!(verifier.finish(base + 1), Ok(()));
        // A row numbered as shard 0's first does not open shard 3's chain.
        let (mut verifier, _) = Verifier::starting_at(base + 1, Vec::new());
        assert_eq!(verifier.check_tombstone(&tombstone(1, GENESIS_HASH, 1)), Err(Break::SequenceGap { expected: base + 1, found: 1 }));
        // Past its first rows, a shard's chain needs a checkpoint like any other.
        assert_eq!(Verifier::starting_at(base + 5, Vec::new()).1, Some(Break::UnanchoredStart { first_seq: base + 5 }));
        // An empty chain (nothing held, head at the base) is whole.
        assert_eq!(Verifier::starting_at(base + 1, Vec::new()).0.finish(base), Ok(()));
    }

    /// A valid chain of `len` tombstones.
    fn tombstone_chain(len: i64) -> Vec<Tombstone> {
        let mut chain: Vec<Tombstone> = Vec::new();
        for seq in 1..=len {
            let prev = chain.last().map_or(GENESIS_HASH, |t| hash32(&t.row_hash).expect("32"));
            chain.push(tombstone(seq, prev, 1));
        }
        chain
    }

    fn walk(chain: &[Tombstone]) -> BreakLog {
        let mut verifier = Verifier::new();
        for tomb in chain {
            let _ = verifier.check_tombstone(tomb);
        }
        let _ = verifier.finish(chain.last().map_or(0, |t| t.seq));
        verifier.breaks().clone()
    }

    #[test]
    fn the_walk_goes_on_after_a_break_and_reports_every_later_one() {
        assert_eq!(walk(&tombstone_chain(6)).count(), 0);
        let mut chain = tombstone_chain(6);
        chain[1].expires_at -= chrono::Duration::days(1);
        chain[3].deleted_at = chain[3].expires_at - chrono::Duration::days(1);
        chain[5].prev_hash = vec![7; 32];
        let log = walk(&chain);
        assert_eq!(
            log.listed(),
            [
                Break::ContentChanged { seq: 2 },
                Break::DeletedBeforeExpiry { seq: 4 },
                Break::BrokenLink { seq: 6 },
                Break::ContentChanged { seq: 6 },
            ]
        );
        assert_eq!(log.count(), 4);
    }

    #[test]
    fn a_removed_entry_is_one_gap_and_the_rows_after_it_still_verify() {
        let mut chain = tombstone_chain(5);
        chain.remove(2);
        chain[3].expires_at += chrono::Duration::days(1);
        let log = walk(&chain);
        assert_eq!(log.listed(), [Break::SequenceGap { expected: 3, found: 4 }, Break::ContentChanged { seq: 5 }]);
    }

    #[test]
    fn an_unanchored_start_is_reported_and_the_rows_after_it_are_still_checked() {
        let chain = tombstone_chain(4);
        let (mut verifier, unanchored) = Verifier::starting_at(3, Vec::new());
        assert_eq!(unanchored, Some(Break::UnanchoredStart { first_seq: 3 }));
        let mut third = chain[2].clone();
        assert_eq!(verifier.check_tombstone(&third), Ok(()));
        third.seq = 4;
        third.prev_hash = chain[2].row_hash.clone();
        assert_eq!(verifier.check_tombstone(&third), Err(Break::ContentChanged { seq: 4 }));
        assert_eq!(verifier.breaks().count(), 2);
    }

    #[test]
    fn the_list_of_breaks_is_bounded_and_the_count_is_not() {
        let mut chain = tombstone_chain(150);
        for tomb in &mut chain {
            tomb.deleted_at = tomb.expires_at - chrono::Duration::seconds(1);
        }
        let log = walk(&chain);
        assert_eq!(log.listed().len(), MAX_LISTED_BREAKS);
        assert_eq!(log.count(), 150);
        assert_eq!(log.listed()[99], Break::DeletedBeforeExpiry { seq: 100 });
    }
}
