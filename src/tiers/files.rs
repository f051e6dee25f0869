//! The file tier: rolling JSON-lines files, one event per line, shipped to Loki by
//! Promtail or Alloy and kept as a file backup.
//!
//! Files are named `<stem>.<yyyymmdd>.<seq>.<ext>` beside the configured path
//! (`logs/audit.jsonl` gives `logs/audit.20261123.000001.jsonl`). A file is created
//! under its final name and never renamed, so a shipper that tracks files by path
//! (Promtail does) reads every line exactly once across rotations; the shipper's glob
//! is `<stem>.*.<ext>`. At most `backup_count` closed files are kept besides the open
//! one, and more while the shipper has not read them to the end (when its positions
//! file is configured, see [`super::shipper`]), up to a cap. An id already present in
//! a kept file is not written again, so a retried request leaves one line per event.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::config::{FileSettings, FsyncPolicy};
use crate::tiers::shipper::ShipperPositions;
use crate::tiers::EncodedBatch;

/// A failed file operation, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn file_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> FileError + 'p {
    move |source| FileError { action, path: path.to_owned(), source }
}

/// What identifies an event for de-duplication. The tenant is shared by every key of
/// that tenant (see [`State::key`]), so a key costs no allocation of its own.
type EventKey = (Arc<str>, Uuid);

/// Sets of keys, hashed with a per-process random seed.
type KeySet = foldhash::HashSet<EventKey>;

/// A file that is no longer written, with the events it holds.
#[derive(Debug)]
struct ClosedFile {
    path: PathBuf,
    size: u64,
    keys: Vec<EventKey>,
}

/// The file being appended to.
#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    seq: u64,
    date: NaiveDate,
    file: File,
    size: u64,
    keys: Vec<EventKey>,
    /// Bytes written since the last fsync.
    unsynced: bool,
}

/// How files are named.
#[derive(Debug, Clone)]
struct Naming {
    dir: PathBuf,
    stem: String,
    ext: Option<String>,
}

impl Naming {
    fn new(path: &Path) -> Naming {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let ext = path.extension().map(|s| s.to_string_lossy().into_owned());
        Naming { dir, stem, ext }
    }

    fn path(&self, date: NaiveDate, seq: u64) -> PathBuf {
        let mut name = format!("{}.{}.{seq:06}", self.stem, date.format("%Y%m%d"));
        if let Some(ext) = &self.ext {
            name.push('.');
            name.push_str(ext);
        }
        self.dir.join(name)
    }

    /// The date and sequence of a file name this naming produced.
    fn parse(&self, name: &str) -> Option<(NaiveDate, u64)> {
        let rest = name.strip_prefix(&self.stem)?.strip_prefix('.')?;
        let rest = match &self.ext {
            Some(ext) => rest.strip_suffix(ext.as_str())?.strip_suffix('.')?,
            None => rest,
        };
        let (date, seq) = rest.split_once('.')?;
        if date.len() != 8 || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((NaiveDate::parse_from_str(date, "%Y%m%d").ok()?, seq.parse().ok()?))
    }

    /// The glob a shipper uses to find every file.
    fn glob(&self) -> String {
        match &self.ext {
            Some(ext) => format!("{}.*.{ext}", self.stem),
            None => format!("{}.*", self.stem),
        }
    }
}

struct State {
    current: Option<OpenFile>,
    closed: VecDeque<ClosedFile>,
    seen: KeySet,
    /// One shared string per tenant: every tenant with a key in `seen`, and any other
    /// looked up since a file was last deleted (each deletion prunes the rest).
    tenants: foldhash::HashSet<Arc<str>>,
    next_seq: u64,
}

impl State {
    /// The key of `(tenant, id)`, with the tenant's shared string.
    fn key(&mut self, tenant: &str, id: Uuid) -> EventKey {
        let tenant = match self.tenants.get(tenant) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = tenant.into();
                self.tenants.insert(shared.clone());
                shared
            }
        };
        (tenant, id)
    }
}

/// The rolling JSON-lines writer. Calls block; run them on a blocking thread.
pub struct RollingFiles {
    naming: Naming,
    max_bytes: u64,
    backup_count: usize,
    daily: bool,
    fsync: FsyncPolicy,
    /// The shipper's positions, read before a rotated file is deleted.
    shipper: Option<ShipperPositions>,
    /// Bytes of rotated files past `backup_count` kept for the shipper at most.
    unshipped_cap: u64,
    state: Mutex<State>,
    /// The last append's failure, cleared by the next success: readiness reports it.
    last_error: Mutex<Option<String>>,
}

impl RollingFiles {
    /// Opens the directory, learns the ids of the kept files, cuts a torn last line
    /// (a write interrupted by a crash, never acknowledged) and resumes the newest file.
    pub fn open(settings: &FileSettings) -> Result<RollingFiles, FileError> {
        let naming = Naming::new(&settings.path);
        fs::create_dir_all(&naming.dir).map_err(file_error("create directory", &naming.dir))?;
        let mut found: Vec<(u64, NaiveDate, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&naming.dir).map_err(file_error("list", &naming.dir))? {
            let entry = entry.map_err(file_error("list", &naming.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((date, seq)) = naming.parse(&name) {
                found.push((seq, date, entry.path()));
            }
        }
        found.sort();
        let mut state = State {
            current: None,
            closed: VecDeque::new(),
            seen: KeySet::default(),
            tenants: HashSet::default(),
            next_seq: found.last().map(|(seq, _, _)| seq + 1).unwrap_or(1),
        };
        let newest = found.pop();
        for (_, _, path) in found {
            let keys = read_keys(&path, &mut state)?;
            state.seen.extend(keys.iter().cloned());
            let size = fs::metadata(&path).map_err(file_error("stat", &path))?.len();
            state.closed.push_back(ClosedFile { path, size, keys });
        }
        if let Some((seq, date, path)) = newest {
            cut_torn_tail(&path)?;
            let keys = read_keys(&path, &mut state)?;
            state.seen.extend(keys.iter().cloned());
            let file = OpenOptions::new().append(true).open(&path).map_err(file_error("open", &path))?;
            let size = file.metadata().map_err(file_error("stat", &path))?.len();
            state.current = Some(OpenFile { path, seq, date, file, size, keys, unsynced: false });
        }
        let files = RollingFiles {
            naming,
            max_bytes: settings.max_size_mb.saturating_mul(1024 * 1024),
            backup_count: settings.backup_count,
            daily: settings.daily,
            fsync: settings.fsync,
            shipper: (!settings.shipper_positions.as_os_str().is_empty())
                .then(|| ShipperPositions::new(settings.shipper_positions.clone())),
            unshipped_cap: settings.unshipped_cap_mb.saturating_mul(1024 * 1024),
            state: Mutex::new(state),
            last_error: Mutex::new(None),
        };
        Ok(files)
    }

    /// Like [`RollingFiles::open`] with the size limit in bytes, for tests of rotation.
    pub fn open_with_max_bytes(settings: &FileSettings, max_bytes: u64) -> Result<RollingFiles, FileError> {
        let mut files = RollingFiles::open(settings)?;
        files.max_bytes = max_bytes.max(1);
        Ok(files)
    }

    /// The glob (relative to [`RollingFiles::dir`]) matching every file written.
    pub fn glob(&self) -> String {
        self.naming.glob()
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.naming.dir
    }

    /// Appends one line per event not yet in a kept file, rotating by size and day,
    /// and fsyncs per policy before returning. Returns how many lines were written.
    /// A failed write is cut back so no partial line remains; lines of the call that
    /// reached a file before the failure stay and are recognised when it is retried.
    pub fn append(&self, batch: &EncodedBatch, now: DateTime<Utc>) -> Result<usize, FileError> {
        let result = self.append_lines(batch, now);
        let mut last_error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *last_error = result.as_ref().err().map(|e| format!("{e}: {}", e.source));
        result
    }

    /// Whether files can be written: the directory exists and the last append worked.
    pub fn health(&self) -> Result<(), String> {
        if !self.naming.dir.is_dir() {
            return Err(format!("{} is not a directory", self.naming.dir.display()));
        }
        match self.last_error.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(error) => Err(format!("last write failed: {error}")),
            None => Ok(()),
        }
    }

    fn append_lines(&self, batch: &EncodedBatch, now: DateTime<Utc>) -> Result<usize, FileError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch_keys = KeySet::default();
        let mut pending = Pending { batch, runs: Vec::new(), bytes: 0, keys: Vec::new() };
        let mut written = 0;
        let today = now.date_naive();
        for (i, event) in batch.events.iter().enumerate() {
            let key = state.key(&event.tenant_id, event.id);
            if state.seen.contains(&key) || !batch_keys.insert(key.clone()) {
                continue;
            }
            let line_bytes = batch.line_with_newline(i).len() as u64;
            let needs_new_file = match &state.current {
                None => true,
                Some(open) => {
                    let size = open.size + pending.bytes;
                    (size > 0 && size + line_bytes > self.max_bytes) || (self.daily && open.date != today)
                }
            };
            if needs_new_file {
                written += self.flush(&mut state, &mut pending)?;
                self.rotate(&mut state, today)?;
            }
            pending.push(i, line_bytes, key);
        }
        written += self.flush(&mut state, &mut pending)?;
        if let Some(open) = state.current.as_mut() {
            if self.fsync == FsyncPolicy::Batch && open.unsynced {
                open.file.sync_data().map_err(file_error("fsync", &open.path))?;
                open.unsynced = false;
            }
        }
        Ok(written)
    }

    /// Fsyncs the open file if it has unsynced lines (the interval policy's tick, and
    /// shutdown).
    pub fn sync(&self) -> Result<(), FileError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = state.current.as_mut() {
            if open.unsynced {
                open.file.sync_data().map_err(file_error("fsync", &open.path))?;
                open.unsynced = false;
            }
        }
        Ok(())
    }

    /// Paths of the kept files, oldest first.
    pub fn paths(&self) -> Vec<PathBuf> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut paths: Vec<PathBuf> = state.closed.iter().map(|c| c.path.clone()).collect();
        paths.extend(state.current.as_ref().map(|open| open.path.clone()));
        paths
    }

    /// Writes `pending` to the open file; on failure cuts the file back so no partial
    /// line stays behind.
    fn flush(&self, state: &mut State, pending: &mut Pending<'_>) -> Result<usize, FileError> {
        if pending.keys.is_empty() {
            return Ok(0);
        }
        let Some(open) = state.current.as_mut() else { return Ok(0) };
        if let Err(source) = write_all_vectored(&mut open.file, &mut pending.slices()) {
            let _ = open.file.set_len(open.size);
            return Err(FileError { action: "write", path: open.path.clone(), source });
        }
        open.size += pending.bytes;
        open.unsynced = true;
        let count = pending.keys.len();
        state.seen.extend(pending.keys.iter().cloned());
        open.keys.append(&mut pending.keys);
        pending.runs.clear();
        pending.bytes = 0;
        Ok(count)
    }

    /// Closes the open file (fsynced unless the policy is `never`) and starts the next
    /// one, then deletes the oldest files beyond `backup_count`.
    fn rotate(&self, state: &mut State, today: NaiveDate) -> Result<(), FileError> {
        let path = self.naming.path(today, state.next_seq);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(file_error("create", &path))?;
        if self.fsync != FsyncPolicy::Never {
            File::open(&self.naming.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(file_error("fsync directory", &self.naming.dir))?;
        }
        let opened = OpenFile { path, seq: state.next_seq, date: today, file, size: 0, keys: Vec::new(), unsynced: false };
        state.next_seq += 1;
        if let Some(old) = state.current.replace(opened) {
            if self.fsync != FsyncPolicy::Never && old.unsynced {
                old.file.sync_data().map_err(file_error("fsync", &old.path))?;
            }
            tracing::debug!(file.path = %old.path.display(), file.seq = old.seq, "file rotated");
            state.closed.push_back(ClosedFile { path: old.path, size: old.size, keys: old.keys });
        }
        self.delete_old(state)
    }

    /// Deletes the rotated files past `backup_count`, oldest first: each once the
    /// shipper has read it to the end (at once without a positions file). Files kept
    /// for the shipper take at most `unshipped_cap` bytes; past it the oldest go
    /// anyway, and the log says how much the shipper never read.
    fn delete_old(&self, state: &mut State) -> Result<(), FileError> {
        let excess = state.closed.len().saturating_sub(self.backup_count);
        if excess == 0 {
            return Ok(());
        }
        let shipped = self.shipper.as_ref().map(|shipper| {
            shipper.read().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "shipper positions unreadable; keeping rotated files as unread");
                Default::default()
            })
        });
        let unread = |file: &ClosedFile| match &shipped {
            None => 0,
            Some(offsets) => {
                let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                file.size.saturating_sub(offsets.get(&name).copied().unwrap_or(0))
            }
        };
        let mut doomed: Vec<usize> = (0..excess).filter(|&i| unread(&state.closed[i]) == 0).collect();
        let kept: Vec<usize> = (0..excess).filter(|i| !doomed.contains(i)).collect();
        let mut kept_bytes: u64 = kept.iter().map(|&i| state.closed[i].size).sum();
        for &i in &kept {
            if kept_bytes <= self.unshipped_cap {
                break;
            }
            let file = &state.closed[i];
            tracing::error!(
                file.path = %file.path.display(),
                unshipped_bytes = unread(file),
                cap_bytes = self.unshipped_cap,
                "deleting a rotated file the shipper has not finished reading: files.unshipped_cap_mb reached; those lines never reach Loki"
            );
            kept_bytes -= file.size;
            doomed.push(i);
        }
        doomed.sort_unstable();
        for (removed, index) in doomed.into_iter().enumerate() {
            self.delete_closed(state, index - removed)?;
        }
        Ok(())
    }

    /// Deletes the closed file at `index` and forgets its events.
    fn delete_closed(&self, state: &mut State, index: usize) -> Result<(), FileError> {
        let Some(file) = state.closed.remove(index) else { return Ok(()) };
        match fs::remove_file(&file.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                let path = file.path.clone();
                state.closed.insert(index, file);
                return Err(FileError { action: "delete", path, source });
            }
        }
        for key in &file.keys {
            state.seen.remove(key);
        }
        drop(file);
        // Tenants whose every key went with the file: only this set holds them.
        state.tenants.retain(|tenant| Arc::strong_count(tenant) > 1);
        Ok(())
    }

    /// Bytes of the kept files the shipper has not read yet; `None` without a
    /// positions file.
    pub fn unshipped_bytes(&self) -> Option<u64> {
        let offsets = self.shipper.as_ref()?.read().ok()?;
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let files = state.closed.iter().map(|f| (&f.path, f.size)).chain(state.current.iter().map(|f| (&f.path, f.size)));
        Some(
            files
                .map(|(path, size)| {
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    size.saturating_sub(offsets.get(&name).copied().unwrap_or(0))
                })
                .sum(),
        )
    }
}

/// Lines of a batch waiting to be written to the open file: runs of consecutive
/// lines, so a batch without duplicates is one slice of its buffer.
struct Pending<'b> {
    batch: &'b EncodedBatch,
    /// Ranges of line indexes.
    runs: Vec<(usize, usize)>,
    bytes: u64,
    keys: Vec<EventKey>,
}

impl Pending<'_> {
    fn push(&mut self, line: usize, bytes: u64, key: EventKey) {
        match self.runs.last_mut() {
            Some((_, end)) if *end == line => *end += 1,
            _ => self.runs.push((line, line + 1)),
        }
        self.bytes += bytes;
        self.keys.push(key);
    }

    fn slices(&self) -> Vec<IoSlice<'_>> {
        self.runs.iter().map(|&(from, to)| IoSlice::new(self.batch.lines_with_newlines(from, to))).collect()
    }
}

/// Writes every slice, in order, in as few calls as the kernel allows.
fn write_all_vectored(file: &mut File, mut rest: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the file took no bytes")),
            Ok(written) => IoSlice::advance_slices(&mut rest, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The (tenant, id) of every complete line of a file; lines that do not parse are
/// skipped (they cannot be retries of anything).
fn read_keys(path: &Path, state: &mut State) -> Result<Vec<EventKey>, FileError> {
    #[derive(serde::Deserialize)]
    struct Line {
        id: Uuid,
        tenant_id: String,
    }
    let file = File::open(path).map_err(file_error("open", path))?;
    let mut keys = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(file_error("read", path))?;
        if let Ok(parsed) = serde_json::from_slice::<Line>(&line) {
            keys.push(state.key(&parsed.tenant_id, parsed.id));
        }
    }
    Ok(keys)
}

/// Truncates a file after its last newline.
fn cut_torn_tail(path: &Path) -> Result<(), FileError> {
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(file_error("open", path))?;
    let len = file.metadata().map_err(file_error("stat", path))?.len();
    if len == 0 {
        return Ok(());
    }
    // Scan backwards in blocks for the last newline.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(file_error("seek", path))?;
        io::Read::read_exact(&mut file, chunk).map_err(file_error("read", path))?;
        if let Some(pos) = chunk.iter().rposition(|b| *b == b'\n') {
            let keep = start + pos as u64 + 1;
            if keep < len {
                tracing::warn!(file.path = %path.display(), bytes = len - keep, "cutting torn last line");
                file.set_len(keep).map_err(file_error("truncate", path))?;
                file.sync_all().map_err(file_error("fsync", path))?;
            }
            return Ok(());
        }
        end = start;
    }
    file.set_len(0).map_err(file_error("truncate", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileSettings;
    use crate::event::{AuditEvent, EventParser, Limits};

    fn one_backup(dir: &Path) -> FileSettings {
        FileSettings {
            enabled: true,
            path: dir.join("audit.jsonl"),
            max_size_mb: 1,
            backup_count: 1,
            daily: false,
            fsync: FsyncPolicy::Batch,
            fsync_interval_ms: 1000,
            shipper_positions: PathBuf::new(),
            unshipped_cap_mb: 1024,
        }
    }

    fn event(tenant: &str, id: Uuid) -> AuditEvent {
        let parser = EventParser::new(Limits::default(), None, Utc::now());
        let item = serde_json::json!({"category": "api", "tenant_id": tenant, "id": id.to_string()});
        parser.parse(0, item).expect("valid")
    }

    #[test]
    fn a_batch_with_known_and_repeated_ids_writes_each_new_line_once_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = one_backup(dir.path());
        let files = RollingFiles::open(&settings).expect("open");
        let [a, b, c, d] = ["acme", "acme", "other", "acme"].map(|tenant| event(tenant, Uuid::now_v7()));
        assert_eq!(files.append(&EncodedBatch::new(vec![b.clone()]), Utc::now()).expect("append"), 1);
        // Known, repeated and new ids interleaved: the new lines are written in runs.
        let batch = EncodedBatch::new(vec![a.clone(), b.clone(), c.clone(), a.clone(), b.clone(), d.clone()]);
        assert_eq!(files.append(&batch, Utc::now()).expect("append"), 3);
        let mut want = Vec::new();
        for event in [&b, &a, &c, &d] {
            want.extend(event.to_json_line());
            want.push(b'\n');
        }
        let paths = files.paths();
        assert_eq!(paths.len(), 1);
        assert_eq!(String::from_utf8(std::fs::read(&paths[0]).expect("read")).expect("utf-8"), String::from_utf8(want).expect("utf-8"));
    }

    #[test]
    fn keys_are_per_tenant_and_a_tenant_leaves_with_its_last_file() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = one_backup(dir.path());
        // One line per file: every append after the first rotates.
        let files = RollingFiles::open_with_max_bytes(&settings, 1).expect("open");
        let append = |events: Vec<AuditEvent>| files.append(&EncodedBatch::new(events), Utc::now()).expect("append");
        let shared = Uuid::now_v7();
        assert_eq!(append(vec![event("gone", shared), event("kept", shared)]), 2, "one id, two tenants: two events");
        let tenants = |files: &RollingFiles| {
            let mut names: Vec<String> = files.state.lock().expect("state").tenants.iter().map(|t| t.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(tenants(&files), ["gone", "kept"]);

        let later = Uuid::now_v7();
        assert_eq!(append(vec![event("kept", later)]), 1);
        // Three files were written; the one holding "gone" and the first "kept" line
        // is deleted, so "gone" has no key left.
        assert_eq!(files.paths().len(), 2);
        assert_eq!(tenants(&files), ["kept"]);
        assert_eq!(append(vec![event("kept", later)]), 0, "a kept event is not written twice");
        assert_eq!(append(vec![event("gone", shared)]), 1, "an event whose file is gone is written again");
        assert_eq!(tenants(&files), ["gone", "kept"]);
    }

    #[test]
    fn names_round_trip_and_share_one_glob() {
        let naming = Naming::new(Path::new("logs/audit.jsonl"));
        let date = NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
        let path = naming.path(date, 42);
        assert_eq!(path, PathBuf::from("logs/audit.20261123.000042.jsonl"));
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(naming.parse(name), Some((date, 42)));
        assert_eq!(naming.parse("audit.jsonl"), None);
        assert_eq!(naming.parse("other.20261123.000001.jsonl"), None);
        assert_eq!(naming.glob(), "audit.*.jsonl");
    }
}
