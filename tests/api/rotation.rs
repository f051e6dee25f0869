//! The file tier rotates by size, keeps N backups, and a tailer that tracks files by
//! path (as Promtail does) reads every line exactly once.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use tierlog::config::{FileSettings, FsyncPolicy};
use tierlog::event::{AuditEvent, EventParser, Limits};
use tierlog::tiers::files::RollingFiles;
use tierlog::tiers::EncodedBatch;

fn settings(dir: &std::path::Path, backups: usize, daily: bool) -> FileSettings {
    FileSettings {
        enabled: true,
        path: dir.join("audit.jsonl"),
        max_size_mb: 1,
        backup_count: backups,
        daily,
        fsync: FsyncPolicy::Batch,
        fsync_interval_ms: 1000,
        shipper_positions: PathBuf::new(),
        unshipped_cap_mb: 1024,
    }
}

fn events(n: usize) -> Vec<AuditEvent> {
    let parser = EventParser::new(Limits::default(), None, Utc::now());
    (0..n)
        .map(|i| parser.parse(i, json!({"category": "api", "message": format!("event {i}")})).expect("valid"))
        .collect()
}

/// Follows files by path like Promtail: remembers an offset per path and reads only
/// complete lines from it.
#[derive(Default)]
struct Tailer {
    offsets: HashMap<PathBuf, usize>,
    lines: Vec<String>,
}

impl Tailer {
    fn poll(&mut self, dir: &std::path::Path) {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit.") && n.ends_with(".jsonl")))
            .collect();
        paths.sort();
        for path in paths {
            let content = std::fs::read(&path).expect("read");
            let offset = self.offsets.entry(path).or_insert(0);
            let complete = content[*offset..].iter().rposition(|b| *b == b'\n').map(|p| *offset + p + 1);
            if let Some(end) = complete {
                let text = String::from_utf8(content[*offset..end].to_vec()).expect("utf8");
                self.lines.extend(text.lines().map(str::to_owned));
                *offset = end;
            }
        }
    }
}

fn ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn the_file_rotates_at_the_size_limit_keeping_n_backups_and_no_line_is_lost_or_doubled() {
    let dir = tempfile::tempdir().expect("dir");
    let files = RollingFiles::open_with_max_bytes(&settings(dir.path(), 3, false), 4096).expect("open");
    let all = events(400);
    let mut tailer = Tailer::default();
    for chunk in all.chunks(17) {
        let batch = EncodedBatch::new(chunk.to_vec());
        assert_eq!(files.append(&batch, Utc::now()).expect("append"), chunk.len());
        tailer.poll(dir.path());
    }
    let sent: Vec<String> = all.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids(&tailer.lines), sent, "the tailer saw every line once, in order");

    let kept = files.paths();
    assert_eq!(kept.len(), 4, "three backups and the open file");
    let on_disk = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(on_disk, 4, "older files are deleted");
    for path in &kept {
        let size = std::fs::metadata(path).expect("meta").len();
        assert!(size <= 4096, "{} is {size} bytes", path.display());
    }
    // The kept files hold the newest events, contiguous and in order.
    let kept_lines: Vec<String> = kept
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).expect("read").lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let kept_ids = ids(&kept_lines);
    assert_eq!(kept_ids, sent[sent.len() - kept_ids.len()..].to_vec());
}

#[test]
fn a_reopened_tier_continues_the_sequence_and_still_refuses_duplicates() {
    let dir = tempfile::tempdir().expect("dir");
    let all = events(50);
    {
        let files = RollingFiles::open_with_max_bytes(&settings(dir.path(), 10, false), 2048).expect("open");
        files.append(&EncodedBatch::new(all[..30].to_vec()), Utc::now()).expect("append");
    }
    // A crash mid-write leaves a torn last line.
    let newest = {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.path()).expect("dir").filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        paths.pop().expect("a file")
    };
    let mut torn = std::fs::read(&newest).expect("read");
    torn.extend_from_slice(b"{\"id\":\"half");
    std::fs::write(&newest, torn).expect("write");

    let files = RollingFiles::open_with_max_bytes(&settings(dir.path(), 10, false), 2048).expect("reopen");
    let retry = EncodedBatch::new(all.clone());
    assert_eq!(files.append(&retry, Utc::now()).expect("retry all"), 20, "only the 20 new events are written");
    let mut tailer = Tailer::default();
    tailer.poll(dir.path());
    let sent: Vec<String> = all.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids(&tailer.lines), sent);
}

#[test]
fn daily_rotation_starts_a_new_file_at_midnight() {
    let dir = tempfile::tempdir().expect("dir");
    let files = RollingFiles::open(&settings(dir.path(), 5, true)).expect("open");
    let all = events(4);
    let day1 = Utc.with_ymd_and_hms(2026, 11, 23, 23, 59, 59).single().expect("time");
    let day2 = Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 1).single().expect("time");
    files.append(&EncodedBatch::new(all[..2].to_vec()), day1).expect("append");
    files.append(&EncodedBatch::new(all[2..].to_vec()), day2).expect("append");
    let names: Vec<String> = files
        .paths()
        .iter()
        .map(|p| p.file_name().and_then(|n| n.to_str()).expect("name").to_owned())
        .collect();
    assert_eq!(names, vec!["audit.20261123.000001.jsonl", "audit.20261124.000002.jsonl"]);
}

#[test]
fn a_failed_rotation_gives_a_clear_error_and_a_retry_writes_each_line_once() {
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("logs");
    std::fs::create_dir(&dir).expect("mkdir");
    let files = RollingFiles::open_with_max_bytes(&settings(&dir, 10, false), 1024).expect("open");
    let all = events(40);
    files.append(&EncodedBatch::new(all[..2].to_vec()), Utc::now()).expect("first append");

    // Replace the directory by a plain file: creating the next file fails, even for root.
    let moved = root.path().join("logs.moved");
    std::fs::rename(&dir, &moved).expect("move dir away");
    std::fs::write(&dir, b"not a directory").expect("block the path");
    let error = files.append(&EncodedBatch::new(all.clone()), Utc::now()).expect_err("rotation must fail");
    let text = error.to_string();
    assert!(text.starts_with("create ") && text.contains("audit."), "the error names the action and file: {text}");

    std::fs::remove_file(&dir).expect("unblock");
    std::fs::rename(&moved, &dir).expect("restore dir");
    files.append(&EncodedBatch::new(all.clone()), Utc::now()).expect("retry succeeds");
    let mut tailer = Tailer::default();
    tailer.poll(&dir);
    let sent: Vec<String> = all.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids(&tailer.lines), sent, "every event once, in order, across the failure");
}

/// How a shipper writes its positions file.
#[derive(Clone, Copy)]
enum Shipper {
    Promtail,
    Alloy,
}

impl Tailer {
    /// Writes the offsets read so far as `shipper` does, under the directory the
    /// shipper sees (its own mount point, not tierlog's).
    fn save_positions(&self, shipper: Shipper, path: &std::path::Path) {
        let mut text = String::from("positions:\n");
        let mut entries: Vec<(String, usize)> = self
            .offsets
            .iter()
            .map(|(p, o)| (format!("/var/log/tierlog/{}", p.file_name().expect("name").to_string_lossy()), *o))
            .collect();
        entries.sort();
        for (seen_as, offset) in entries {
            match shipper {
                Shipper::Promtail => text.push_str(&format!("  {seen_as}: \"{offset}\"\n")),
                Shipper::Alloy => text.push_str(&format!(
                    "  ? path: {seen_as}\n    labels: '{{service=\"tierlog\"}}'\n  : \"{offset}\"\n"
                )),
            }
        }
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).expect("positions");
        std::fs::rename(&temporary, path).expect("positions");
    }
}

/// Writes 400 events in small batches while the shipper reads only at the start and
/// the end (a stall, as when Loki refuses pushes): returns what it read, how many
/// files were on disk at the stall's worst, and the unshipped bytes reported then.
fn ship_through_a_stall(shipper: Shipper, cap_mb: u64) -> (Vec<String>, Vec<String>, usize, Option<u64>) {
    let dir = tempfile::tempdir().expect("dir");
    let positions = dir.path().join("positions.yaml");
    let mut config = settings(dir.path(), 1, false);
    config.shipper_positions = positions.clone();
    config.unshipped_cap_mb = cap_mb;
    let files = RollingFiles::open_with_max_bytes(&config, 4096).expect("open");
    let all = events(400);
    let mut tailer = Tailer::default();
    let (mut most_files, mut unshipped) = (0, None);
    for (i, chunk) in all.chunks(17).enumerate() {
        files.append(&EncodedBatch::new(chunk.to_vec()), Utc::now()).expect("append");
        let stalled = (3..20).contains(&i);
        if !stalled {
            tailer.poll(dir.path());
            tailer.save_positions(shipper, &positions);
        }
        if i == 19 {
            most_files = files.paths().len();
            unshipped = files.unshipped_bytes();
        }
    }
    // The shipper catches up; the next rotations delete what it has read.
    tailer.poll(dir.path());
    tailer.save_positions(shipper, &positions);
    let late = events(60);
    files.append(&EncodedBatch::new(late.clone()), Utc::now()).expect("append");
    assert_eq!(files.unshipped_bytes().map(|b| b > 0), Some(true), "the last batch is not read yet");
    // The open file, one backup, and only the files of the last batch, still unread.
    assert!(files.paths().len() <= 6, "read files are deleted again: {:?}", files.paths());
    tailer.poll(dir.path());
    let sent = all.iter().chain(&late).map(|e| e.id.to_string()).collect();
    (sent, ids(&tailer.lines), most_files, unshipped)
}

#[test]
fn rotated_files_wait_for_a_stalled_promtail_and_every_line_is_shipped_once() {
    let (sent, shipped, most_files, unshipped) = ship_through_a_stall(Shipper::Promtail, 1024);
    assert!(most_files > 5, "files the shipper had not read were kept: {most_files}");
    assert!(unshipped.is_some_and(|b| b > 4096), "{unshipped:?}");
    assert_eq!(shipped, sent, "every line once, in order");
}

#[test]
fn rotated_files_wait_for_a_stalled_alloy_and_every_line_is_shipped_once() {
    let (sent, shipped, most_files, _) = ship_through_a_stall(Shipper::Alloy, 1024);
    assert!(most_files > 5, "{most_files}");
    assert_eq!(shipped, sent, "every line once, in order");
}

#[test]
fn past_the_cap_the_oldest_unread_files_are_deleted_anyway() {
    let (sent, shipped, most_files, _) = ship_through_a_stall(Shipper::Promtail, 0);
    assert!(most_files <= 2, "nothing kept past backup_count with a cap of 0: {most_files}");
    assert!(shipped.len() < sent.len(), "the stalled shipper lost the deleted files' lines");
}
