//! Signed checkpoints: a chain's head (tenant, table, sequence, hash, time) signed
//! with the service's Ed25519 key. Whoever holds the public key can check a chain
//! from a checkpoint, or an archive's manifest, without trusting the database: a
//! truncated chain falls short of its last checkpoint, and a forged or altered
//! checkpoint fails its signature.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::chain::canonical_json;
use crate::config::IntegritySettings;
use crate::event::format_timestamp;

/// An Ed25519 public key and its short id (the first 8 bytes of its SHA-256, hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl PublicKey {
    fn new(key: VerifyingKey) -> PublicKey {
        let id = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        PublicKey { key, id }
    }

    /// Parses base64 of the 32 key bytes (an `ed25519:` prefix is allowed).
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let text = text.trim();
        let text = text.strip_prefix("ed25519:").unwrap_or(text);
        let bytes = STANDARD.decode(text).map_err(|_| "is not base64".to_owned())?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| "must be 32 bytes".to_owned())?;
        VerifyingKey::from_bytes(&bytes).map(PublicKey::new).map_err(|_| "is not an Ed25519 public key".to_owned())
    }

    /// Base64 of the key bytes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }

    /// The key's id, stored beside every signature.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match Signature::from_slice(signature) {
            Ok(signature) => self.key.verify(message, &signature).is_ok(),
            Err(_) => false,
        }
    }
}

/// The keys whose signatures are accepted: the current one and earlier ones.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<PublicKey>,
}

impl Keyring {
    pub fn new(keys: Vec<PublicKey>) -> Keyring {
        Keyring { keys }
    }

    /// Checks a signature made by the key named `key_id`.
    pub fn verify(&self, key_id: &str, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let key = self.keys.iter().find(|k| k.id == key_id).ok_or(SignatureError::UnknownKey)?;
        if key.verify(message, signature) {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}

/// Why a signature is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureError {
    /// Signed by a key that is not trusted.
    UnknownKey,
    /// The signature does not match the signed content.
    Invalid,
}

/// The service's signing key.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("public", &self.public.id).finish_non_exhaustive()
    }
}

impl Signer {
    fn from_seed(seed: [u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(&seed);
        let public = PublicKey::new(key.verifying_key());
        Signer { key, public }
    }

    /// A signer from a base64 32-byte seed.
    pub fn from_seed_base64(text: &str) -> Result<Signer, String> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| "is not base64".to_owned())?;
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| "must be 32 bytes (base64)".to_owned())?;
        Ok(Signer::from_seed(seed))
    }

    /// A fresh random key (tests and tools).
    pub fn generate() -> Signer {
        Signer::from_seed(rand::random())
    }

    /// A fresh random key and its seed as base64 (what `integrity.signing_key` holds).
    pub fn generate_with_seed() -> (Signer, String) {
        let seed: [u8; 32] = rand::random();
        (Signer::from_seed(seed), STANDARD.encode(seed))
    }

    /// The key from settings: the configured seed, else the key file, created (mode
    /// 0600) when absent. Returns whether it was created.
    pub fn load_or_create(settings: &IntegritySettings) -> Result<(Signer, bool), String> {
        if !settings.signing_key.is_empty() {
            return Ok((Signer::from_seed_base64(&settings.signing_key)?, false));
        }
        let path = settings.signing_key_file.as_path();
        match std::fs::read_to_string(path) {
            Ok(text) => Signer::from_seed_base64(&text)
                .map(|s| (s, false))
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = Signer::generate();
                write_key_file(path, &STANDARD.encode(signer.key.to_bytes()))
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                Ok((signer, true))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }

    /// Signs a chain head.
    pub fn checkpoint(&self, head: ChainHead, reason: &str, created_at: DateTime<Utc>) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            head,
            // Stores keep microseconds; the checkpoint is what they will give back.
            created_at: crate::event::truncate_to_micros(created_at),
            reason: reason.to_owned(),
            key_id: self.public.id.clone(),
            signature: String::new(),
        };
        checkpoint.signature = STANDARD.encode(self.sign(&checkpoint.message()));
        checkpoint
    }
}

fn write_key_file(path: &Path, content: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Signs chain heads read as (tenant, table, seq, hash bytes).
pub fn sign_heads(
    signer: &Signer,
    heads: Vec<(String, String, i64, Vec<u8>)>,
    reason: &str,
    created_at: DateTime<Utc>,
) -> Vec<Checkpoint> {
    heads
        .into_iter()
        .map(|(tenant_id, table, seq, hash)| {
            signer.checkpoint(ChainHead { tenant_id, table, seq, hash: hex::encode(hash) }, reason, created_at)
        })
        .collect()
}

/// A chain's head: the last row's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainHead {
    pub tenant_id: String,
    pub table: String,
    pub seq: i64,
    /// Hex SHA-256 of the row at `seq`.
    pub hash: String,
}

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    #[serde(flatten)]
    pub head: ChainHead,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// `periodic`, `on_demand` or `retention`.
    pub reason: String,
    /// Id of the signing key.
    pub key_id: String,
    /// Base64 Ed25519 signature over the canonical JSON of the other fields.
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: canonical JSON of every field but the signature.
    pub fn message(&self) -> Vec<u8> {
        canonical_json(&json!({
            "type": "tierlog.checkpoint.v1",
            "tenant_id": self.head.tenant_id,
            "table": self.head.table,
            "seq": self.head.seq,
            "hash": self.head.hash,
            "created_at": format_timestamp(&self.created_at),
            "reason": self.reason,
            "key_id": self.key_id,
        }))
    }

    /// Checks the signature.
    pub fn verify(&self, keys: &Keyring) -> Result<(), SignatureError> {
        let signature = STANDARD.decode(&self.signature).map_err(|_| SignatureError::Invalid)?;
        keys.verify(&self.key_id, &self.message(), &signature)
    }

    /// The head hash as bytes, when well-formed.
    pub fn hash_bytes(&self) -> Option<[u8; 32]> {
        hex::decode(&self.head.hash).ok().and_then(|b| b.as_slice().try_into().ok())
    }
}

/// Signs an arbitrary JSON document (an archive manifest): adds `key_id` and
/// `signature` over the canonical JSON of the rest.
pub fn sign_document(signer: &Signer, mut document: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    document.remove("signature");
    document.insert("key_id".into(), signer.public.id.clone().into());
    let signature = signer.sign(&canonical_json(&Value::Object(document.clone())));
    document.insert("signature".into(), STANDARD.encode(signature).into());
    document
}

/// Checks a document signed by [`sign_document`].
pub fn verify_document(keys: &Keyring, document: &serde_json::Map<String, Value>) -> Result<(), SignatureError> {
    let mut unsigned = document.clone();
    let signature = unsigned.remove("signature").and_then(|s| s.as_str().map(str::to_owned)).ok_or(SignatureError::Invalid)?;
    let key_id = unsigned.get("key_id").and_then(Value::as_str).ok_or(SignatureError::UnknownKey)?.to_owned();
    let signature = STANDARD.decode(signature).map_err(|_| SignatureError::Invalid)?;
    keys.verify(&key_id, &canonical_json(&Value::Object(unsigned)), &signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> ChainHead {
        ChainHead { tenant_id: "acme".into(), table: "audit_logs".into(), seq: 42, hash: hex::encode([7u8; 32]) }
    }

    #[test]
    fn a_checkpoint_verifies_until_any_field_changes() {
        let signer = Signer::generate();
        let keys = Keyring::new(vec![signer.public().clone()]);
        let checkpoint = signer.checkpoint(head(), "on_demand", Utc::now());
        assert_eq!(checkpoint.verify(&keys), Ok(()));

        let mut moved = checkpoint.clone();
        moved.head.seq = 41;
        assert_eq!(moved.verify(&keys), Err(SignatureError::Invalid));
        let mut rehashed = checkpoint.clone();
        rehashed.head.hash = hex::encode([8u8; 32]);
        assert_eq!(rehashed.verify(&keys), Err(SignatureError::Invalid));

        let forger = Signer::generate();
        let forged = forger.checkpoint(head(), "on_demand", Utc::now());
        assert_eq!(forged.verify(&keys), Err(SignatureError::UnknownKey));
        let mut claimed = forged.clone();
        claimed.key_id = checkpoint.key_id.clone();
        assert_eq!(claimed.verify(&keys), Err(SignatureError::Invalid));
    }

    #[test]
    fn keys_round_trip_through_base64_and_the_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = IntegritySettings {
            signing_key: String::new(),
            signing_key_file: dir.path().join("keys/signing.key"),
            trusted_public_keys: Vec::new(),
            checkpoint_interval_seconds: 0,
        };
        let (first, created) = Signer::load_or_create(&settings).expect("created");
        assert!(created);
        let (again, created) = Signer::load_or_create(&settings).expect("loaded");
        assert!(!created);
        assert_eq!(first.public(), again.public());
        assert_eq!(PublicKey::parse(&first.public().to_base64()).expect("parses"), *first.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&settings.signing_key_file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn signed_documents_detect_edits() {
        let signer = Signer::generate();
        let keys = Keyring::new(vec![signer.public().clone()]);
        let mut doc = serde_json::Map::new();
        doc.insert("rows".into(), 10.into());
        let signed = sign_document(&signer, doc);
        assert_eq!(verify_document(&keys, &signed), Ok(()));
        let mut edited = signed.clone();
        edited.insert("rows".into(), 9.into());
        assert_eq!(verify_document(&keys, &edited), Err(SignatureError::Invalid));
    }
}
