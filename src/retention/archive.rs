//! Archives: rows leaving Postgres, written as gzip NDJSON per tenant, table and day
//! with a signed manifest, and checked later with nothing but the public key.
//!
//! Layout: `<archive_path>/<tenant>/<table>/<yyyy-mm-dd>/<run>-<n>.ndjson.gz` and
//! `<...>.manifest.json` beside it. Each line holds a row's event and every chain
//! column, so each row's hash can be recomputed; rows that follow each other in a
//! chain must link. The manifest names the file's SHA-256, row count and sequence
//! range, and is signed with the checkpoint key. Both files are fsync'd (and renamed
//! into place, then the directory fsync'd) before the rows are deleted.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::format_timestamp;
use crate::integrity::chain::{hashes_of_value, link_hash, shard_of, PiiPath};
use crate::integrity::checkpoint::{sign_document, verify_document, Checkpoint, Keyring, Signer};
use crate::tiers::postgres::StoredRow;
use crate::tiers::Table;

/// Format name written into every manifest.
pub const FORMAT: &str = "tierlog.archive.v1";

/// One archived row as a JSON line.
pub fn row_line(row: &StoredRow) -> Value {
    json!({
        "table": row.table.as_str(),
        "seq": row.seq,
        "expires_at": format_timestamp(&row.expires_at),
        "prev_hash": hex::encode(&row.prev_hash),
        "row_hash": hex::encode(&row.row_hash),
        "pii_hash": hex::encode(&row.pii_hash),
        "pii_salt": row.pii_salt.as_ref().map(hex::encode),
        "pii_paths": row.pii_paths,
        "event": row.event,
    })
}

/// Writes rows to archive files, one per (tenant, day of the event), each with its
/// signed manifest; returns the manifests' paths once everything is durable.
pub fn write(
    root: &Path,
    signer: &Signer,
    table: Table,
    rows: &[StoredRow],
    run_id: Uuid,
    part: usize,
    now: DateTime<Utc>,
) -> std::io::Result<Vec<PathBuf>> {
    let mut groups: BTreeMap<(&str, String), Vec<&StoredRow>> = BTreeMap::new();
    for row in rows {
        let day = row.event.timestamp.format("%Y-%m-%d").to_string();
        groups.entry((row.event.tenant_id.as_str(), day)).or_default().push(row);
    }
    let mut manifests = Vec::new();
    for ((tenant, day), rows) in groups {
        let dir = root.join(tenant_dir(tenant)).join(table.as_str()).join(&day);
        fs::create_dir_all(&dir)?;
        let stem = format!("{run_id}-{part}");
        let data_name = format!("{stem}.ndjson.gz");
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        let mut line = Vec::with_capacity(2048);
        for row in &rows {
            line.clear();
            serde_json::to_writer(&mut line, &row_line(row))?;
            line.push(b'\n');
            encoder.write_all(&line)?;
        }
        let compressed = encoder.finish()?;
        write_durably(&dir.join(&data_name), &compressed)?;
        let mut manifest = Map::new();
        manifest.insert("format".into(), FORMAT.into());
        manifest.insert("tenant_id".into(), tenant.into());
        manifest.insert("table".into(), table.as_str().into());
        manifest.insert("day".into(), day.clone().into());
        manifest.insert("file".into(), data_name.into());
        manifest.insert("sha256".into(), hex::encode(Sha256::digest(&compressed)).into());
        manifest.insert("rows".into(), rows.len().into());
        manifest.insert("first_seq".into(), rows.first().map_or(0, |r| r.seq).into());
        manifest.insert("last_seq".into(), rows.last().map_or(0, |r| r.seq).into());
        manifest.insert("run_id".into(), run_id.to_string().into());
        manifest.insert("created_at".into(), format_timestamp(&now).into());
        manifest.insert("public_key".into(), signer.public().to_base64().into());
        let signed = sign_document(signer, manifest);
        let manifest_path = dir.join(format!("{stem}.manifest.json"));
        write_durably(&manifest_path, &serde_json::to_vec_pretty(&signed)?)?;
        manifests.push(manifest_path);
    }
    Ok(manifests)
}

/// Writes `bytes` to a temporary name, fsyncs, renames into place and fsyncs the
/// directory, so the file is either absent or whole after a crash.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The directory name of a tenant's archives: the id itself, which validation keeps
/// a safe path component; an id stored before that rule (`..`) is written as `%` and
/// its hex, which no valid id can be, so no archive is ever written outside the root.
pub fn tenant_dir(tenant: &str) -> String {
    if crate::event::parse::is_tenant_id(tenant) {
        tenant.to_owned()
    } else {
        format!("%{}", hex::encode(tenant))
    }
}

/// The archived rows of one writer shard's chain.
#[derive(Debug, Clone, Serialize)]
pub struct ShardRange {
    pub shard: i32,
    pub first_seq: i64,
    pub last_seq: i64,
    pub rows: usize,
}

/// The verdict on the archived rows of one tenant's table (the chains of every
/// writer shard).
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveChainReport {
    pub tenant_id: String,
    pub table: String,
    pub files: usize,
    pub rows: usize,
    /// The archived range of each writer shard's chain.
    pub shards: Vec<ShardRange>,
    /// Checkpoints from the checkpoint export that fall on archived rows and match.
    pub checkpoints_matched: usize,
    pub ok: bool,
    pub problems: Vec<String>,
}

struct ArchivedRow {
    seq: i64,
    prev_hash: [u8; 32],
    row_hash: [u8; 32],
}

fn hex32(value: Option<&Value>) -> Option<[u8; 32]> {
    hex::decode(value?.as_str()?).ok()?.as_slice().try_into().ok()
}

/// Checks one archived line: its content and personal values against its hashes.
fn check_line(line: &Value, table: &str) -> Result<ArchivedRow, String> {
    let seq = line["seq"].as_i64().ok_or("seq is missing")?;
    let fail = |what: &str| format!("seq {seq}: {what}");
    if line["table"].as_str() != Some(table) {
        return Err(fail("belongs to another table"));
    }
    let prev_hash = hex32(line.get("prev_hash")).ok_or_else(|| fail("prev_hash is malformed"))?;
    let row_hash = hex32(line.get("row_hash")).ok_or_else(|| fail("row_hash is malformed"))?;
    let pii_hash = hex32(line.get("pii_hash")).ok_or_else(|| fail("pii_hash is malformed"))?;
    let expires_at = line["expires_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| fail("expires_at is malformed"))?
        .to_utc();
    let pii_paths: Vec<PiiPath> =
        serde_json::from_value(line["pii_paths"].clone()).map_err(|_| fail("pii_paths is malformed"))?;
    let salt: Option<[u8; 16]> = match &line["pii_salt"] {
        Value::Null => None,
        Value::String(s) => Some(
            hex::decode(s).ok().and_then(|b| b.as_slice().try_into().ok()).ok_or_else(|| fail("pii_salt is malformed"))?,
        ),
        _ => return Err(fail("pii_salt is malformed")),
    };
    let event = line["event"].as_object().cloned().ok_or_else(|| fail("event is missing"))?;
    let (content, pii) = hashes_of_value(table, &pii_hash, &pii_paths, event, salt.as_ref());
    if link_hash(seq, &expires_at, &prev_hash, &content) != row_hash {
        return Err(fail("content changed (hash mismatch)"));
    }
    if pii.is_some_and(|p| p != pii_hash) {
        return Err(fail("personal fields changed"));
    }
    Ok(ArchivedRow { seq, prev_hash, row_hash })
}

fn manifests_under(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if dir.is_file() {
        found.push(dir.to_path_buf());
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            manifests_under(&path, found)?;
        } else if path.to_string_lossy().ends_with(".manifest.json") {
            found.push(path);
        }
    }
    Ok(())
}

/// Verifies every archive under `dir` (or the one manifest `dir` names) with
/// `keys` alone, and matches the given checkpoints (signatures checked) against the
/// archived rows.
pub fn verify(dir: &Path, keys: &Keyring, checkpoints: &[Checkpoint]) -> std::io::Result<Vec<ArchiveChainReport>> {
    let mut manifests = Vec::new();
    manifests_under(dir, &mut manifests)?;
    manifests.sort();
    let mut chains: BTreeMap<(String, String), (ArchiveChainReport, Vec<ArchivedRow>)> = BTreeMap::new();
    for path in manifests {
        let manifest: Map<String, Value> = serde_json::from_slice(&fs::read(&path)?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        let tenant = manifest.get("tenant_id").and_then(Value::as_str).unwrap_or("?").to_owned();
        let table = manifest.get("table").and_then(Value::as_str).unwrap_or("?").to_owned();
        let (report, rows) = chains.entry((tenant.clone(), table.clone())).or_insert_with(|| {
            (
                ArchiveChainReport {
                    tenant_id: tenant,
                    table: table.clone(),
                    files: 0,
                    rows: 0,
                    shards: Vec::new(),
                    checkpoints_matched: 0,
                    ok: true,
                    problems: Vec::new(),
                },
                Vec::new(),
            )
        });
        report.files += 1;
        let name = path.display().to_string();
        if let Err(reason) = verify_document(keys, &manifest) {
            report.problems.push(format!("{name}: manifest signature: {reason:?}"));
            continue;
        }
        let data_path = path.with_file_name(manifest.get("file").and_then(Value::as_str).unwrap_or_default());
        let compressed = match fs::read(&data_path) {
            Ok(bytes) => bytes,
            Err(e) => {
                report.problems.push(format!("{}: {e}", data_path.display()));
                continue;
            }
        };
        if Some(hex::encode(Sha256::digest(&compressed)).as_str()) != manifest.get("sha256").and_then(Value::as_str) {
            report.problems.push(format!("{}: SHA-256 differs from the manifest", data_path.display()));
            continue;
        }
        let mut text = String::new();
        if let Err(e) = GzDecoder::new(compressed.as_slice()).read_to_string(&mut text) {
            report.problems.push(format!("{}: {e}", data_path.display()));
            continue;
        }
        let mut count = 0usize;
        for line in BufReader::new(text.as_bytes()).lines() {
            let line = line?;
            count += 1;
            match serde_json::from_str::<Value>(&line).map_err(|e| e.to_string()).and_then(|v| check_line(&v, &table)) {
                Ok(row) => rows.push(row),
                Err(problem) => report.problems.push(format!("{}: {problem}", data_path.display())),
            }
        }
        if Some(count as u64) != manifest.get("rows").and_then(Value::as_u64) {
            report.problems.push(format!("{}: {count} rows, the manifest says otherwise", data_path.display()));
        }
    }
    let mut reports = Vec::new();
    for ((tenant, table), (mut report, mut rows)) in chains {
        rows.sort_by_key(|r| r.seq);
        // A batch archived again after its delete failed to commit is identical.
        rows.dedup_by(|a, b| a.seq == b.seq && a.row_hash == b.row_hash);
        for pair in rows.windows(2) {
            if pair[1].seq == pair[0].seq {
                report.problems.push(format!("seq {} is archived twice", pair[1].seq));
            } else if pair[1].seq == pair[0].seq + 1 && pair[1].prev_hash != pair[0].row_hash {
                report.problems.push(format!("seq {}: does not link to seq {}", pair[1].seq, pair[0].seq));
            }
        }
        for checkpoint in checkpoints.iter().filter(|c| c.head.tenant_id == tenant && c.head.table == table) {
            let Some(row) = rows.iter().find(|r| r.seq == checkpoint.head.seq) else { continue };
            if checkpoint.verify(keys).is_err() {
                report.problems.push(format!("checkpoint at seq {}: bad signature", checkpoint.head.seq));
            } else if checkpoint.hash_bytes() != Some(row.row_hash) {
                report.problems.push(format!("checkpoint at seq {}: hash differs from the archived row", checkpoint.head.seq));
            } else {
                report.checkpoints_matched += 1;
            }
        }
        report.rows = rows.len();
        for row in &rows {
            let shard = shard_of(row.seq);
            match report.shards.last_mut() {
                Some(range) if range.shard == shard => {
                    range.last_seq = row.seq;
                    range.rows += 1;
                }
                _ => report.shards.push(ShardRange { shard, first_seq: row.seq, last_seq: row.seq, rows: 1 }),
            }
        }
        report.ok = report.problems.is_empty();
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventParser, Limits};

    #[test]
    fn a_tenant_id_that_is_not_a_safe_path_component_is_archived_inside_the_root() {
        assert_eq!(tenant_dir("acme"), "acme");
        assert_eq!(tenant_dir(".."), "%2e2e");
        assert_eq!(tenant_dir("."), "%2e");
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("archive");
        let mut event = EventParser::new(Limits::default(), None, Utc::now())
            .parse(0, serde_json::json!({"category": "auth"}))
            .expect("valid");
        // As a row stored before tenant ids had to be path components.
        event.tenant_id = "..".into();
        let row = StoredRow {
            table: Table::AuditLogs,
            event,
            expires_at: Utc::now(),
            seq: 1,
            prev_hash: vec![0; 32],
            row_hash: vec![1; 32],
            pii_salt: None,
            pii_hash: vec![2; 32],
            pii_paths: Vec::new(),
        };
        let signer = Signer::generate();
        let written = write(&root, &signer, Table::AuditLogs, &[row], Uuid::nil(), 1, Utc::now()).expect("archived");
        assert!(!written.is_empty());
        for path in written {
            assert!(path.starts_with(root.join("%2e2e")), "{}", path.display());
        }
        assert!(!dir.path().join("audit_logs").exists(), "nothing escaped the archive root");
    }
}
