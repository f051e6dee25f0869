//! What this node knows of presented keys: for each digest, the answer the database
//! last gave and when. A fresh answer saves the query on most requests; while the
//! database is unreachable, a key it vouched for within the grace period keeps
//! working (with any revocation this node has seen applied), and anything else is
//! refused. The answers can be kept in a file, so a node restarted during an outage
//! still knows the keys it had verified; the file holds digests and permissions,
//! never a secret.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::KeyInfo;

/// Digests the database did not know, remembered at most (a flood of made-up keys
/// must not push out the real ones, which are kept apart).
const MAX_UNKNOWN: usize = 10_000;
/// Known keys remembered at most.
const MAX_KNOWN: usize = 100_000;
/// The file is rewritten at most this often when only verification times moved.
const SAVE_EVERY: Duration = Duration::seconds(60);

/// The answers, by digest of the presented secret.
#[derive(Debug)]
pub struct VerifiedKeys {
    /// How long an answer is used without asking the database again.
    fresh_for: Duration,
    /// How long a key verified before an outage keeps working during it.
    grace: Duration,
    known: HashMap<[u8; 32], Verified>,
    unknown: HashMap<[u8; 32], DateTime<Utc>>,
    file: Option<PathBuf>,
    saved_at: Option<DateTime<Utc>>,
}

/// A key as the database described it, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Verified {
    key: KeyInfo,
    verified_at: DateTime<Utc>,
}

/// The file's layout.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    keys: Vec<SavedKey>,
}

#[derive(Serialize, Deserialize)]
struct SavedKey {
    digest: String,
    #[serde(flatten)]
    verified: Verified,
}

impl VerifiedKeys {
    /// Answers used for `fresh_for`, known keys trusted through an outage for
    /// `grace`; kept in `file` when given (read now if it exists).
    pub fn new(fresh_for: Duration, grace: Duration, file: Option<PathBuf>) -> VerifiedKeys {
        let mut keys = VerifiedKeys {
            fresh_for,
            grace,
            known: HashMap::new(),
            unknown: HashMap::new(),
            file,
            saved_at: None,
        };
        if let Some(path) = keys.file.clone() {
            match load(&path) {
                Ok(loaded) => {
                    tracing::info!(keys = loaded.len(), path = %path.display(), "verified keys loaded");
                    keys.known = loaded;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, path = %path.display(), "verified keys file unreadable; starting without it"),
            }
        }
        keys
    }

    /// The database's answer for `digest` if it is fresh: `Some(None)` for a digest it
    /// did not know.
    pub fn fresh(&self, digest: &[u8; 32], now: DateTime<Utc>) -> Option<Option<KeyInfo>> {
        if let Some(verified) = self.known.get(digest).filter(|v| now - v.verified_at < self.fresh_for) {
            return Some(Some(verified.key.clone()));
        }
        self.unknown.get(digest).filter(|at| now - **at < self.fresh_for).map(|_| None)
    }

    /// The key for `digest` while the database cannot be asked: known and verified
    /// within the grace period, or nothing.
    pub fn during_outage(&self, digest: &[u8; 32], now: DateTime<Utc>) -> Option<KeyInfo> {
        self.known.get(digest).filter(|v| now - v.verified_at < self.grace).map(|v| v.key.clone())
    }

    /// Records the database's answer for `digest`.
    pub fn record(&mut self, digest: &[u8; 32], answer: Option<KeyInfo>, now: DateTime<Utc>) {
        match answer {
            Some(key) => {
                self.unknown.remove(digest);
                let changed = self.known.get(digest).is_none_or(|v| v.key != key);
                if self.known.len() >= MAX_KNOWN && !self.known.contains_key(digest) {
                    let oldest = self.known.iter().min_by_key(|(_, v)| v.verified_at).map(|(d, _)| *d);
                    if let Some(oldest) = oldest {
                        self.known.remove(&oldest);
                    }
                }
                self.known.insert(*digest, Verified { key, verified_at: now });
                if changed || self.saved_at.is_none_or(|at| now - at >= SAVE_EVERY) {
                    self.save(now);
                }
            }
            None => {
                if self.known.remove(digest).is_some() {
                    self.save(now);
                }
                if self.unknown.len() >= MAX_UNKNOWN {
                    let fresh_for = self.fresh_for;
                    self.unknown.retain(|_, at| now - *at < fresh_for);
                    if self.unknown.len() >= MAX_UNKNOWN {
                        self.unknown.clear();
                    }
                }
                self.unknown.insert(*digest, now);
            }
        }
    }

    /// Makes every answer stale, so each key is asked of the database again at its
    /// next use (a node that may have missed revocation notices). Outage grace is
    /// kept.
    pub fn stale_all(&mut self, now: DateTime<Utc>) {
        let stale = now - self.fresh_for;
        for verified in self.known.values_mut() {
            verified.verified_at = verified.verified_at.min(stale);
        }
        self.unknown.clear();
    }

    /// Applies a revocation made through this node, or announced by another, at once.
    pub fn revoked(&mut self, id: Uuid, at: DateTime<Utc>) {
        let mut changed = false;
        for verified in self.known.values_mut().filter(|v| v.key.id == id && v.key.revoked_at.is_none()) {
            verified.key.revoked_at = Some(at);
            changed = true;
        }
        if changed {
            self.save(at);
        }
    }

    /// Writes the known keys to the file (best effort: it only serves restarts
    /// during an outage).
    fn save(&mut self, now: DateTime<Utc>) {
        self.saved_at = Some(now);
        let Some(path) = &self.file else { return };
        let saved = Saved {
            version: 1,
            keys: self
                .known
                .iter()
                .map(|(digest, verified)| SavedKey { digest: hex::encode(digest), verified: verified.clone() })
                .collect(),
        };
        if let Err(e) = write_file(path, &saved) {
            tracing::warn!(error = %e, path = %path.display(), "cannot save verified keys");
        }
    }
}

fn load(path: &Path) -> std::io::Result<HashMap<[u8; 32], Verified>> {
    let saved: Saved = serde_json::from_slice(&std::fs::read(path)?)?;
    if saved.version != 1 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unknown version {}", saved.version)));
    }
    Ok(saved
        .keys
        .into_iter()
        .filter_map(|k| {
            let digest: [u8; 32] = hex::decode(&k.digest).ok()?.try_into().ok()?;
            Some((digest, k.verified))
        })
        .collect())
}

/// Writes `saved` beside `path` and renames it into place, readable by the owner
/// only.
fn write_file(path: &Path, saved: &Saved) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    std::io::Write::write_all(&mut file, &serde_json::to_vec(saved)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Permission;

    fn key(id: u128) -> KeyInfo {
        KeyInfo {
            id: Uuid::from_u128(id),
            name: "writer".into(),
            prefix: "tlk_abcdefgh".into(),
            tenant_id: Some("acme".into()),
            permissions: vec![Permission::EventsWrite],
            created_at: DateTime::from_timestamp(1_800_000_000, 0).expect("ts"),
            created_by: "cli".into(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    fn keys(file: Option<PathBuf>) -> VerifiedKeys {
        VerifiedKeys::new(Duration::seconds(10), Duration::hours(1), file)
    }

    #[test]
    fn answers_are_fresh_for_a_while_and_known_keys_last_through_an_outage_within_the_grace() {
        let now = Utc::now();
        let mut cache = keys(None);
        cache.record(&[1; 32], Some(key(1)), now);
        cache.record(&[2; 32], None, now);
        assert_eq!(cache.fresh(&[1; 32], now + Duration::seconds(9)), Some(Some(key(1))));
        assert_eq!(cache.fresh(&[2; 32], now + Duration::seconds(9)), Some(None));
        assert_eq!(cache.fresh(&[1; 32], now + Duration::seconds(10)), None);
        assert_eq!(cache.fresh(&[3; 32], now), None);
        assert_eq!(cache.during_outage(&[1; 32], now + Duration::minutes(59)), Some(key(1)));
        assert_eq!(cache.during_outage(&[1; 32], now + Duration::minutes(60)), None);
        // Unknown keys are never let in during an outage.
        assert_eq!(cache.during_outage(&[2; 32], now), None);
    }

    #[test]
    fn a_revocation_seen_here_applies_at_once_and_a_key_the_database_forgot_is_dropped() {
        let now = Utc::now();
        let mut cache = keys(None);
        cache.record(&[1; 32], Some(key(1)), now);
        cache.record(&[2; 32], Some(key(2)), now);
        cache.revoked(Uuid::from_u128(1), now);
        assert!(cache.during_outage(&[1; 32], now).is_some_and(|k| k.revoked_at == Some(now)));
        cache.record(&[2; 32], None, now);
        assert_eq!(cache.during_outage(&[2; 32], now), None);
    }

    #[test]
    fn a_flood_of_unknown_digests_does_not_push_out_known_keys() {
        let now = Utc::now();
        let mut cache = keys(None);
        cache.record(&[0; 32], Some(key(1)), now);
        for i in 0..(MAX_UNKNOWN as u32 + 50) {
            let mut digest = [9u8; 32];
            digest[..4].copy_from_slice(&i.to_be_bytes());
            cache.record(&digest, None, now);
        }
        assert!(cache.unknown.len() <= MAX_UNKNOWN);
        assert_eq!(cache.fresh(&[0; 32], now), Some(Some(key(1))));
    }

    #[test]
    fn known_keys_survive_a_restart_through_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys").join("verified-keys.json");
        let now = Utc::now();
        let mut cache = keys(Some(path.clone()));
        cache.record(&[1; 32], Some(key(1)), now);
        cache.record(&[2; 32], Some(key(2)), now);
        cache.revoked(Uuid::from_u128(2), now);
        cache.record(&[3; 32], None, now);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("saved").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let restarted = keys(Some(path));
        assert_eq!(restarted.during_outage(&[1; 32], now + Duration::minutes(5)), Some(key(1)));
        assert!(restarted.during_outage(&[2; 32], now).is_some_and(|k| k.revoked_at.is_some()));
        assert_eq!(restarted.during_outage(&[3; 32], now), None);
        // Loaded answers are not fresh: the database is asked first when it answers.
        assert_eq!(restarted.fresh(&[1; 32], now + Duration::seconds(11)), None);
    }
}
