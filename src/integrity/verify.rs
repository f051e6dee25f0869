//! Chain verification: walks one (tenant, table) chain in sequence order and names
//! the first link that does not hold. Pure: rows come from any store.

use serde::Serialize;

use super::chain::{pii_hash, row_hash, GENESIS_HASH};
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
    /// The chain ends before its recorded head: the newest rows were deleted.
    MissingTail { last_seq: i64, head_seq: i64 },
    /// Rows follow the recorded head: they were added outside tierlog.
    RowsBeyondHead { last_seq: i64, head_seq: i64 },
}

/// Walks a chain row by row.
#[derive(Debug, Clone)]
pub struct Verifier {
    next_seq: i64,
    prev_hash: Vec<u8>,
    checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier { next_seq: 1, prev_hash: GENESIS_HASH.to_vec(), checked: 0 }
    }
}

impl Verifier {
    /// A verifier for a chain from its first row.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Rows checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The last sequence number checked.
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// Checks the next row of the chain.
    pub fn check(&mut self, row: &StoredRow) -> Result<(), Break> {
        if row.seq != self.next_seq {
            return Err(Break::SequenceGap { expected: self.next_seq, found: row.seq });
        }
        if row.prev_hash != self.prev_hash {
            return Err(Break::BrokenLink { seq: row.seq });
        }
        let seal: [u8; 32] = row.pii_hash.as_slice().try_into().map_err(|_| Break::ContentChanged { seq: row.seq })?;
        let prev: [u8; 32] = self.prev_hash.as_slice().try_into().map_err(|_| Break::BrokenLink { seq: row.seq })?;
        let expected = row_hash(row.table.as_str(), row.seq, &prev, &row.expires_at, &seal, &row.event);
        if expected[..] != row.row_hash[..] {
            return Err(Break::ContentChanged { seq: row.seq });
        }
        // Without a salt the personal fields were erased: the seal stands on its own.
        if let Some(salt) = row.pii_salt.as_deref().and_then(|s| <[u8; 16]>::try_from(s).ok()) {
            if pii_hash(&row.event, &salt) != seal {
                return Err(Break::PersonalFieldsChanged { seq: row.seq });
            }
        }
        self.prev_hash = row.row_hash.clone();
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// Checks that the walk ended exactly at the recorded head.
    pub fn finish(&self, head_seq: i64) -> Result<(), Break> {
        let last_seq = self.last_seq();
        if last_seq < head_seq {
            return Err(Break::MissingTail { last_seq, head_seq });
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

    #[test]
    fn the_walk_must_end_exactly_at_the_recorded_head() {
        assert_eq!(Verifier::new().finish(0), Ok(()));
        assert_eq!(Verifier::new().finish(2), Err(Break::MissingTail { last_seq: 0, head_seq: 2 }));
        let walked = Verifier { next_seq: 4, prev_hash: GENESIS_HASH.to_vec(), checked: 3 };
        assert_eq!(walked.finish(3), Ok(()));
        assert_eq!(walked.finish(2), Err(Break::RowsBeyondHead { last_seq: 3, head_seq: 2 }));
    }
}
