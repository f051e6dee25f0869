//! Chain verification: walks one (tenant, table) chain in sequence order over its
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

use super::chain::{hashes, link_hash, GENESIS_HASH};
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

/// Walks a chain entry by entry.
#[derive(Debug, Clone)]
pub struct Verifier {
    next_seq: i64,
    prev_hash: [u8; 32],
    checked: u64,
    /// Checkpoints after the start, oldest first.
    anchors: Vec<Anchor>,
    next_anchor: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier { next_seq: 1, prev_hash: GENESIS_HASH, checked: 0, anchors: Vec::new(), next_anchor: 0 }
    }
}

fn hash32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

impl Verifier {
    /// A verifier for a chain from its first row, with no checkpoints.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// A verifier for a chain whose oldest held entry is `first_seq` (the head + 1
    /// when nothing is held), with the chain's verified checkpoints.
    pub fn starting_at(first_seq: i64, mut anchors: Vec<Anchor>) -> Result<Verifier, Break> {
        anchors.sort_by_key(|a| a.seq);
        let mut verifier = Verifier::default();
        if first_seq > 1 {
            let anchor = anchors
                .iter()
                .find(|a| a.seq == first_seq - 1)
                .ok_or(Break::UnanchoredStart { first_seq })?;
            verifier.next_seq = first_seq;
            verifier.prev_hash = anchor.hash;
        }
        verifier.anchors = anchors.into_iter().filter(|a| a.seq >= first_seq).collect();
        Ok(verifier)
    }

    /// Entries checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The last sequence number checked.
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    fn expect_position(&self, seq: i64, prev_hash: &[u8]) -> Result<(), Break> {
        if seq != self.next_seq {
            return Err(Break::SequenceGap { expected: self.next_seq, found: seq });
        }
        if prev_hash != self.prev_hash {
            return Err(Break::BrokenLink { seq });
        }
        Ok(())
    }

    fn advance(&mut self, seq: i64, row_hash: [u8; 32]) -> Result<(), Break> {
        if let Some(anchor) = self.anchors.get(self.next_anchor) {
            if anchor.seq == seq {
                if anchor.hash != row_hash {
                    return Err(Break::CheckpointMismatch { seq });
                }
                self.next_anchor += 1;
            }
        }
        self.prev_hash = row_hash;
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// Checks the next row of the chain.
    pub fn check(&mut self, row: &StoredRow) -> Result<(), Break> {
        self.check_hashed(row, &RowHashes::of(row))
    }

    /// Like [`Verifier::check`] with the row's hashes computed beforehand (they
    /// depend on the row alone, so many rows can be hashed in parallel).
    pub fn check_hashed(&mut self, row: &StoredRow, hashes: &RowHashes) -> Result<(), Break> {
        self.expect_position(row.seq, &row.prev_hash)?;
        let seq = row.seq;
        let stored = hash32(&row.row_hash).ok_or(Break::ContentChanged { seq })?;
        let content = hashes.content.ok_or(Break::ContentChanged { seq })?;
        if link_hash(seq, &row.expires_at, &self.prev_hash, &content) != stored {
            return Err(Break::ContentChanged { seq });
        }
        if !hashes.personal_ok {
            return Err(Break::PersonalFieldsChanged { seq });
        }
        self.advance(seq, stored)
    }

    /// Checks the next entry when it is a deleted row's tombstone.
    pub fn check_tombstone(&mut self, tombstone: &Tombstone) -> Result<(), Break> {
        let seq = tombstone.seq;
        self.expect_position(seq, &tombstone.prev_hash)?;
        let content = hash32(&tombstone.content_hash).ok_or(Break::ContentChanged { seq })?;
        let stored = hash32(&tombstone.row_hash).ok_or(Break::ContentChanged { seq })?;
        if link_hash(seq, &tombstone.expires_at, &self.prev_hash, &content) != stored {
            return Err(Break::ContentChanged { seq });
        }
        if tombstone.deleted_at < tombstone.expires_at {
            return Err(Break::DeletedBeforeExpiry { seq });
        }
        self.advance(seq, stored)
    }

    /// Checks that the walk ended exactly at the recorded head and reached every
    /// checkpoint.
    pub fn finish(&self, head_seq: i64) -> Result<(), Break> {
        let last_seq = self.last_seq();
        let newest_checkpoint = self.anchors.last().map_or(0, |a| a.seq);
        let must_reach = head_seq.max(newest_checkpoint);
        if last_seq < must_reach {
            return Err(Break::MissingTail { last_seq, head_seq: must_reach });
        }
        if last_seq > head_seq {
            return Err(Break::RowsBeyondHead { last_seq, head_seq });
        }
        Ok(())
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
        let walked = Verifier { next_seq: 4, ..Verifier::default() };
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
        assert_eq!(Verifier::starting_at(5, Vec::new()).err(), Some(Break::UnanchoredStart { first_seq: 5 }));
        let fifth = tombstone(5, anchor_hash, 1);
        let anchors = vec![Anchor { seq: 4, hash: anchor_hash }, Anchor { seq: 6, hash: [1; 32] }];
        let mut verifier = Verifier::starting_at(5, anchors.clone()).expect("anchored");
        assert_eq!(verifier.check_tombstone(&fifth), Ok(()));
        assert_eq!(verifier.finish(5), Err(Break::MissingTail { last_seq: 5, head_seq: 6 }));

        let wrong = vec![Anchor { seq: 4, hash: anchor_hash }, Anchor { seq: 5, hash: [1; 32] }];
        let mut verifier = Verifier::starting_at(5, wrong).expect("anchored");
        assert_eq!(verifier.check_tombstone(&fifth), Err(Break::CheckpointMismatch { seq: 5 }));
    }
}
