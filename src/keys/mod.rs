//! API keys: generation, storage (only a SHA-256 digest), permissions, tenant binding,
//! expiry and revocation.
//!
//! Keys look like `tlk_<43 base64url characters>` (256 random bits). They are looked up
//! by the digest of the presented secret, so the secret itself is never compared or
//! stored; the bootstrap key from configuration is compared in constant time.

mod cache;
mod store;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub use store::{KeyStore, KeyStoreError, NewKey, DEFAULT_OUTAGE_GRACE};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Permission {
    #[serde(rename = "events.write")]
    EventsWrite,
    #[serde(rename = "logs.auth.view")]
    LogsAuthView,
    #[serde(rename = "logs.actions.view")]
    LogsActionsView,
    #[serde(rename = "logs.security.view")]
    LogsSecurityView,
    #[serde(rename = "logs.financial.view")]
    LogsFinancialView,
    #[serde(rename = "logs.export")]
    LogsExport,
    #[serde(rename = "logs.verify")]
    LogsVerify,
    #[serde(rename = "logs.delete")]
    LogsDelete,
    #[serde(rename = "logs.configure")]
    LogsConfigure,
    #[serde(rename = "keys.manage")]
    KeysManage,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 10] = [
        Permission::EventsWrite,
        Permission::LogsAuthView,
        Permission::LogsActionsView,
        Permission::LogsSecurityView,
        Permission::LogsFinancialView,
        Permission::LogsExport,
        Permission::LogsVerify,
        Permission::LogsDelete,
        Permission::LogsConfigure,
        Permission::KeysManage,
    ];

    /// The permission's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::EventsWrite => "events.write",
            Permission::LogsAuthView => "logs.auth.view",
            Permission::LogsActionsView => "logs.actions.view",
            Permission::LogsSecurityView => "logs.security.view",
            Permission::LogsFinancialView => "logs.financial.view",
            Permission::LogsExport => "logs.export",
            Permission::LogsVerify => "logs.verify",
            Permission::LogsDelete => "logs.delete",
            Permission::LogsConfigure => "logs.configure",
            Permission::KeysManage => "keys.manage",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;

    fn from_str(name: &str) -> Result<Permission, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| format!("unknown permission {name:?}"))
    }
}

/// Parses a comma-separated permission list.
pub fn parse_permissions(list: &str) -> Result<Vec<Permission>, String> {
    let mut permissions: Vec<Permission> =
        list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    permissions.sort();
    permissions.dedup();
    if permissions.is_empty() {
        return Err("at least one permission is required".into());
    }
    Ok(permissions)
}

/// A freshly generated secret and what is stored of it.
#[derive(Clone)]
pub struct Secret {
    /// The key as given to its holder; shown once.
    pub plaintext: String,
    /// The first characters, kept to recognise the key in listings.
    pub prefix: String,
    /// SHA-256 of the plaintext: what is stored and looked up.
    pub digest: [u8; 32],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Secret {
    /// 256 random bits, base64url-encoded behind `tlk_`.
    pub fn generate() -> Secret {
        let bytes: [u8; 32] = rand::random();
        let plaintext = format!("tlk_{}", base64url(&bytes));
        Secret { prefix: plaintext[..12].to_owned(), digest: digest(&plaintext), plaintext }
    }
}

/// The stored digest of a presented key.
pub fn digest(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A stored key's public description (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    /// `None`: the key may act on every tenant.
    pub tenant_id: Option<String>,
    pub permissions: Vec<Permission>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl KeyInfo {
    /// Whether the key may be used at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Id of the key, for audit records; `bootstrap` for the configured key.
    pub key_id: String,
    /// The tenant the key is bound to; `None` for all-tenant keys.
    pub tenant: Option<String>,
    pub permissions: Vec<Permission>,
}

impl Principal {
    /// The configured bootstrap key: every permission, every tenant.
    pub fn bootstrap() -> Principal {
        Principal { key_id: "bootstrap".into(), tenant: None, permissions: Permission::ALL.to_vec() }
    }

    /// Whether the key holds `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// Whether the key may act on `tenant`.
    pub fn may_access_tenant(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|bound| bound == tenant)
    }
}

/// Compares a presented key with the bootstrap key in constant time.
pub fn is_bootstrap(presented: &str, bootstrap_digest: &[u8; 32]) -> bool {
    bool::from(digest(presented).ct_eq(bootstrap_digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_random_and_stored_only_as_a_digest() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.plaintext.len(), 4 + 43);
        assert!(a.plaintext[4..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(a.digest, digest(&a.plaintext));
        assert!(a.plaintext.starts_with(&a.prefix));
        assert!(!format!("{a:?}").contains(&a.plaintext));
    }

    #[test]
    fn checking_a_key_takes_as_long_whether_it_nearly_matches_or_not() {
        // A presented key is hashed before any comparison, and digests are compared in
        // constant time, so a guess sharing a long prefix with the real key is not
        // answered faster or slower than one sharing nothing. Measured as the fastest
        // of many interleaved batches, which ignores scheduling noise.
        let real = Secret::generate();
        let mut near = real.plaintext.clone();
        near.pop();
        near.push(if real.plaintext.ends_with('A') { 'B' } else { 'A' });
        let far = Secret::generate().plaintext;
        let batch = |key: &str| {
            let started = std::time::Instant::now();
            for _ in 0..200 {
                assert!(!is_bootstrap(std::hint::black_box(key), &real.digest));
            }
            started.elapsed()
        };
        let (mut fastest_near, mut fastest_far) = (std::time::Duration::MAX, std::time::Duration::MAX);
        // Enough rounds that the fastest of each is the machine's floor even while other
        // work runs beside the test.
        for _ in 0..1000 {
            fastest_near = fastest_near.min(batch(&near));
            fastest_far = fastest_far.min(batch(&far));
        }
        let ratio = fastest_near.as_secs_f64() / fastest_far.as_secs_f64();
        assert!((0.8..1.25).contains(&ratio), "near {fastest_near:?} vs far {fastest_far:?}");
        assert!(is_bootstrap(&real.plaintext, &real.digest));
    }

    #[test]
    fn permissions_parse_from_a_list_and_refuse_unknown_names() {
        assert_eq!(
            parse_permissions("logs.auth.view, events.write,events.write"),
            Ok(vec![Permission::EventsWrite, Permission::LogsAuthView])
        );
        assert!(parse_permissions("events.write,logs.everything").is_err());
        assert!(parse_permissions("").is_err());
    }

    #[test]
    fn a_tenant_bound_principal_reaches_only_its_tenant() {
        let bound = Principal { key_id: "k".into(), tenant: Some("acme".into()), permissions: vec![] };
        assert!(bound.may_access_tenant("acme"));
        assert!(!bound.may_access_tenant("other"));
        assert!(Principal::bootstrap().may_access_tenant("other"));
    }

    #[test]
    fn base64url_matches_the_standard_alphabet_without_padding() {
        assert_eq!(base64url(b"\xfb\xff\xbf"), "-_-_");
        assert_eq!(base64url(b"hello"), "aGVsbG8");
    }
}
