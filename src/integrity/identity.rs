//! One checkpoint signing identity for a deployment of many nodes.
//!
//! Every node is given the same Ed25519 key (`integrity.signing_key`, or the file at
//! `integrity.signing_key_file`, mounted as a secret). The database records which
//! public keys count and which one is current (`signing_keys`):
//!
//! - the first node of a new deployment makes its key current;
//! - a node whose key is not current refuses to start, naming the setting;
//! - before each signing (periodic or on-demand checkpoints, retention's checkpoints
//!   and archive manifests) a node checks its key is still current, so after a
//!   rotation (`tierlog signing-key promote`) a node not yet restarted with the new
//!   key stops signing, says so in `/readyz` and its log, and goes on ingesting;
//! - verification on any node accepts every registered key, current or retired, and
//!   the keys in `integrity.trusted_public_keys`.
//!
//! The embedded store has one node, whose key is the deployment's.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::checkpoint::{Keyring, PublicKey, Signer};
use crate::tiers::database::Database;
use crate::tiers::postgres::signing_keys::{self, SigningKeyRow};

/// Whether this node signs, as last checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SigningStatus {
    /// `signing`, `not_signing`, or `unchecked` (the database has not answered yet).
    pub state: &'static str,
    /// This node's key id.
    pub key_id: String,
    /// The deployment's current key id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_key_id: Option<String>,
}

/// Why this node does not sign.
#[derive(Debug, thiserror::Error)]
pub enum NotSigning {
    #[error(
        "this node's checkpoint signing key {node} is not the deployment's current key {deployment}; \
         give every node the same key (integrity.signing_key or integrity.signing_key_file), \
         or make this one current with `tierlog signing-key promote`"
    )]
    ForeignKey { node: String, deployment: String },
    #[error("the deployment's signing keys cannot be read: {0}")]
    Unreachable(#[from] sqlx::Error),
}

/// A node's signing key and the deployment's view of it.
#[derive(Debug)]
pub struct SigningIdentity {
    signer: Arc<Signer>,
    /// `integrity.trusted_public_keys`.
    configured: Vec<PublicKey>,
    status: Mutex<SigningStatus>,
}

impl SigningIdentity {
    pub fn new(signer: Arc<Signer>, configured: Vec<PublicKey>) -> SigningIdentity {
        let status = SigningStatus { state: "unchecked", key_id: signer.public().id().to_owned(), deployment_key_id: None };
        SigningIdentity { signer, configured, status: Mutex::new(status) }
    }

    /// This node's signer, whether or not it may sign: for its public key. Whatever
    /// is signed goes through [`Self::signer_for`].
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// The status as last checked.
    pub fn status(&self) -> SigningStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, rows: &[SigningKeyRow]) -> Result<(), NotSigning> {
        let mine = self.signer.public().id();
        let current = rows.iter().find(|row| row.current).map(|row| row.key.id().to_owned());
        let signing = current.as_deref() == Some(mine);
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let was = status.state;
        *status = SigningStatus {
            state: if signing { "signing" } else { "not_signing" },
            key_id: mine.to_owned(),
            deployment_key_id: current.clone(),
        };
        drop(status);
        if signing {
            if was == "not_signing" {
                tracing::info!(key_id = mine, "this node's key is the deployment's signing key again; signing");
            }
            return Ok(());
        }
        let error = NotSigning::ForeignKey { node: mine.to_owned(), deployment: current.unwrap_or_else(|| "(none)".into()) };
        if was != "not_signing" {
            tracing::error!(error = %error, "not signing checkpoints");
        }
        Err(error)
    }

    /// At start: makes this node's key the deployment's when none is yet, and fails
    /// when another key is current.
    pub async fn enroll(&self, db: &Database) -> Result<(), NotSigning> {
        let Database::Postgres(pg) = db else { return self.record_embedded() };
        let rows = signing_keys::enroll(pg.pool(), self.signer.public()).await?;
        self.record(&rows)
    }

    fn record_embedded(&self) -> Result<(), NotSigning> {
        let id = self.signer.public().id().to_owned();
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) =
            SigningStatus { state: "signing", key_id: id.clone(), deployment_key_id: Some(id) };
        Ok(())
    }

    /// The signer, when this node's key is the deployment's current one (asked of
    /// the database each time: signing is periodic, and a rotation must stop a stale
    /// node at its next signing).
    pub async fn signer_for(&self, db: &Database) -> Result<&Arc<Signer>, NotSigning> {
        match db {
            Database::Postgres(pg) => {
                let rows = signing_keys::enroll(pg.pool(), self.signer.public()).await?;
                self.record(&rows)?;
            }
            Database::Sqlite(_) => self.record_embedded()?,
        }
        Ok(&self.signer)
    }

    /// The keys whose signatures count: this node's, the configured ones, and every
    /// key the deployment registered (only the first two when the database cannot
    /// say).
    pub async fn keyring(&self, db: &Database) -> Keyring {
        let mut keys = vec![self.signer.public().clone()];
        keys.extend(self.configured.iter().cloned());
        if let Database::Postgres(pg) = db {
            match signing_keys::all(pg.pool()).await {
                Ok(rows) => keys.extend(rows.into_iter().map(|row| row.key)),
                Err(e) => tracing::warn!(error = %e, "registered signing keys unreadable; verifying with the configured ones"),
            }
        }
        keys.dedup_by(|a, b| a.id() == b.id());
        Keyring::new(keys)
    }
}
