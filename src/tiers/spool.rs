//! The spool: where events bound for Postgres wait while Postgres is unreachable.
//!
//! A spooled event is acknowledged only after its record is appended and fsync'd, so
//! the spool is a system of record like the database it stands in for. Records are
//! replayed in order (see [`crate::ingest::replay`]) and deleted only after the
//! database has them; replay is idempotent because the store skips ids it holds.
//!
//! On disk: a directory of segment files `<seq>.spool`, oldest first, and a `cursor`
//! file naming the first record not yet replayed. Each record is
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 of the payload
//! payload JSON: {"table", "expires_at", "pii_paths", "event"}
//! ```
//!
//! A crash mid-append leaves a torn record at the end of the newest segment; it was
//! never acknowledged (the fsync had not returned), and opening the spool cuts it off.
//! A bad record anywhere else means the disk corrupted fsync'd data: the rest of that
//! segment is moved aside to `<seq>.spool.corrupt-<n>` for an operator and the spool
//! goes on with the next segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{PersistRequest, Table};
use crate::config::SpoolSettings;
use crate::event::AuditEvent;
use crate::integrity::chain::PiiPath;

const HEADER: usize = 8;
/// No single record is larger (events are at most `limits.max_event_bytes`).
const MAX_RECORD: u32 = 16 << 20;
const SUFFIX: &str = "spool";

/// A spool operation that failed; nothing of the append it was part of counts.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({used} of {max} bytes); persisted events are refused until Postgres returns")]
    Full { used: u64, max: u64 },
    #[error("spool: {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> SpoolError + 'p {
    move |source| SpoolError::Io { action, path: path.to_owned(), source }
}

/// One spooled event, as replay reads it back.
#[derive(Debug, Clone, Deserialize)]
pub struct SpooledRow {
    pub table: Table,
    pub expires_at: DateTime<Utc>,
    pub pii_paths: Vec<PiiPath>,
    pub event: AuditEvent,
}

impl SpooledRow {
    /// The row as the store takes it.
    pub fn request(&self) -> PersistRequest<'_> {
        PersistRequest { table: self.table, expires_at: self.expires_at, pii_paths: self.pii_paths.clone(), event: &self.event }
    }
}

#[derive(Serialize)]
struct RecordRef<'a> {
    table: Table,
    expires_at: &'a DateTime<Utc>,
    pii_paths: &'a [PiiPath],
    event: &'a AuditEvent,
}

/// Frames `requests` as spool records, ready for [`Spool::append`].
pub fn encode(requests: &[PersistRequest<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(requests.len() * 512);
    for request in requests {
        let record = RecordRef {
            table: request.table,
            expires_at: &request.expires_at,
            pii_paths: &request.pii_paths,
            event: request.event,
        };
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_writer(&mut out, &record).unwrap_or_default();
        let payload = &out[start + HEADER..];
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// Where replay stands: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    /// Bytes of whole, fsync'd records.
    len: u64,
}

struct State {
    /// Oldest first; appends go to the last.
    segments: VecDeque<Segment>,
    /// Append handle of the last segment.
    file: Option<File>,
    cursor: Position,
    next_seq: u64,
    quarantined: u64,
}

/// The spool's fill level, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SpoolStatus {
    /// Events waiting for Postgres.
    pub pending_events: u64,
    /// Bytes the spool's files hold.
    pub bytes: u64,
    /// The configured bound (`spool.max_bytes`).
    pub max_bytes: u64,
    /// Segment tails moved aside as corrupt when the spool was opened: an operator
    /// must look at the `*.spool.corrupt-N` files.
    pub quarantined: u64,
}

/// The spool directory, opened by one process.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    backlog: AtomicBool,
    pending_events: AtomicU64,
    bytes: AtomicU64,
    /// Set when an append was refused for want of room; cleared when replay frees some.
    full: AtomicBool,
}

impl Spool {
    /// Opens (creating) the directory, cuts a torn tail, quarantines corrupt records
    /// and counts what is left to replay.
    pub fn open(settings: &SpoolSettings) -> Result<Spool, SpoolError> {
        let dir = settings.path.clone();
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let cursor_path = dir.join("cursor");
        let cursor: Position = match fs::read(&cursor_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Position { segment: 0, offset: 0 }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Position { segment: 0, offset: 0 },
            Err(e) => return Err(io_error("read", &cursor_path)(e)),
        };
        let mut seqs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".spool")).and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            seqs.push(seq);
        }
        seqs.sort_unstable();
        let mut segments = VecDeque::new();
        let mut pending = 0u64;
        let mut quarantined = 0u64;
        let last = seqs.last().copied();
        for seq in seqs {
            let path = segment_path(&dir, seq);
            if seq < cursor.segment {
                // Replayed before a crash stopped its deletion.
                fs::remove_file(&path).map_err(io_error("remove", &path))?;
                continue;
            }
            let start = if seq == cursor.segment { cursor.offset } else { 0 };
            let scan = scan(&path, start)?;
            if let Some(bad_at) = scan.bad_at {
                if Some(seq) == last {
                    tracing::warn!(path = %path.display(), offset = bad_at, "spool: cutting a torn record (never acknowledged)");
                } else {
                    quarantined += 1;
                    let aside = path.with_extension(format!("{SUFFIX}.corrupt-{quarantined}"));
                    copy_tail(&path, bad_at, &aside)?;
                    tracing::error!(path = %path.display(), offset = bad_at, moved_to = %aside.display(), "spool: corrupt record; the rest of the segment was moved aside");
                }
                truncate(&path, bad_at)?;
            }
            pending += scan.records;
            segments.push_back(Segment { seq, len: scan.valid_len });
        }
        let next_seq = segments.back().map_or(cursor.segment.max(1), |s| s.seq + 1);
        let cursor = match segments.front() {
            Some(first) if first.seq != cursor.segment => Position { segment: first.seq, offset: 0 },
            _ => cursor,
        };
        let file = match segments.back() {
            Some(segment) => {
                let path = segment_path(&dir, segment.seq);
                Some(OpenOptions::new().append(true).open(&path).map_err(io_error("open", &path))?)
            }
            None => None,
        };
        let bytes = segments.iter().map(|s| s.len).sum();
        let spool = Spool {
            segment_bytes: (settings.max_bytes / 16).clamp(64 << 10, 64 << 20),
            max_bytes: settings.max_bytes,
            state: Mutex::new(State { segments, file, cursor, next_seq, quarantined }),
            backlog: AtomicBool::new(pending > 0),
            pending_events: AtomicU64::new(pending),
            bytes: AtomicU64::new(bytes),
            full: AtomicBool::new(false),
            dir,
        };
        if pending > 0 {
            tracing::warn!(events = pending, dir = %spool.dir.display(), "spool holds events not yet in Postgres; they are replayed first");
        }
        Ok(spool)
    }

    /// True while any event waits in the spool: then new events for Postgres are
    /// spooled behind them, so each chain keeps its order.
    pub fn has_backlog(&self) -> bool {
        self.backlog.load(Ordering::Acquire)
    }

    /// The fill level.
    pub fn status(&self) -> SpoolStatus {
        SpoolStatus {
            pending_events: self.pending_events.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            quarantined: self.quarantined(),
        }
    }

    /// True once an append was refused for want of room, until replay frees some.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `records` (from [`encode`], holding `events` records) and fsyncs them.
    /// Blocks; run it on a blocking thread. When it returns `Ok`, the records survive
    /// a crash.
    pub fn append(&self, records: &[u8], events: u64) -> Result<(), SpoolError> {
        let mut state = self.lock();
        let used = self.bytes.load(Ordering::Relaxed);
        if used + records.len() as u64 > self.max_bytes {
            self.full.store(true, Ordering::Relaxed);
            return Err(SpoolError::Full { used, max: self.max_bytes });
        }
        let rotate = state.segments.back().is_none_or(|s| s.len >= self.segment_bytes);
        if rotate {
            let seq = state.next_seq;
            let path = segment_path(&self.dir, seq);
            let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io_error("create", &path))?;
            sync_dir(&self.dir)?;
            state.next_seq += 1;
            if state.segments.is_empty() {
                state.cursor = Position { segment: seq, offset: 0 };
            }
            state.segments.push_back(Segment { seq, len: 0 });
            state.file = Some(file);
        }
        let State { segments, file, .. } = &mut *state;
        let (Some(segment), Some(file)) = (segments.back_mut(), file.as_mut()) else {
            unreachable!("a segment is open after rotation");
        };
        let path = segment_path(&self.dir, segment.seq);
        let written = file.write_all(records).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut whatever part of the records reached the file, so the next append
            // starts on a record boundary.
            let _ = file.set_len(segment.len);
            return Err(io_error("append to", &path)(e));
        }
        segment.len += records.len() as u64;
        self.bytes.fetch_add(records.len() as u64, Ordering::Relaxed);
        self.pending_events.fetch_add(events, Ordering::Relaxed);
        self.backlog.store(true, Ordering::Release);
        Ok(())
    }

    /// Up to `max` records from the replay cursor, with the position after them.
    /// Blocks; run it on a blocking thread.
    pub fn read(&self, max: usize) -> Result<(Vec<SpooledRow>, Position), SpoolError> {
        let (mut at, ends): (Position, Vec<(u64, u64)>) = {
            let state = self.lock();
            (state.cursor, state.segments.iter().map(|s| (s.seq, s.len)).collect())
        };
        let mut rows = Vec::new();
        for (seq, len) in ends {
            if seq < at.segment || rows.len() >= max {
                continue;
            }
            if seq > at.segment {
                at = Position { segment: seq, offset: 0 };
            }
            if at.offset >= len {
                continue;
            }
            let path = segment_path(&self.dir, seq);
            let mut file = File::open(&path).map_err(io_error("open", &path))?;
            file.seek(SeekFrom::Start(at.offset)).map_err(io_error("seek", &path))?;
            let mut reader = io::BufReader::with_capacity(1 << 20, file.take(len - at.offset));
            while rows.len() < max && at.offset < len {
                match read_record(&mut reader) {
                    Ok(Some((payload, size))) => {
                        let row: SpooledRow = serde_json::from_slice(&payload).map_err(|e| {
                            io_error("decode a record of", &path)(io::Error::new(io::ErrorKind::InvalidData, e))
                        })?;
                        rows.push(row);
                        at.offset += size;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(io_error("read", &path)(e)),
                }
            }
        }
        Ok((rows, at))
    }

    /// Records that everything before `to` (holding `events` records) is in the
    /// database: deletes replayed segments, and the whole spool once it is empty.
    pub fn advance(&self, to: Position, events: u64) -> Result<(), SpoolError> {
        let mut state = self.lock();
        state.cursor = to;
        let mut freed = 0;
        while let Some(first) = state.segments.front() {
            let replayed = first.seq < to.segment || (first.seq == to.segment && to.offset >= first.len);
            if !replayed {
                break;
            }
            let path = segment_path(&self.dir, first.seq);
            freed += first.len;
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
            state.segments.pop_front();
            if state.segments.is_empty() {
                // The next append starts a new segment.
                state.file = None;
            }
        }
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        if freed > 0 {
            self.full.store(false, Ordering::Relaxed);
        }
        let _ = self.pending_events.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(events)));
        let cursor_path = self.dir.join("cursor");
        if state.segments.is_empty() {
            self.pending_events.store(0, Ordering::Relaxed);
            state.cursor = Position { segment: state.next_seq, offset: 0 };
            match fs::remove_file(&cursor_path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &cursor_path)(e)),
            }
            self.backlog.store(false, Ordering::Release);
            return Ok(());
        }
        if let Some(first) = state.segments.front() {
            if first.seq > state.cursor.segment {
                state.cursor = Position { segment: first.seq, offset: 0 };
            }
        }
        write_atomically(&self.dir, "cursor", &serde_json::to_vec(&state.cursor).unwrap_or_default())
    }

    /// Segment tails moved aside as corrupt when the spool was opened.
    fn quarantined(&self) -> u64 {
        self.lock().quarantined
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:012}.{SUFFIX}"))
}

struct Scan {
    records: u64,
    valid_len: u64,
    bad_at: Option<u64>,
}

/// Walks a segment from `start`, checking every record.
fn scan(path: &Path, start: u64) -> Result<Scan, SpoolError> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let total = file.metadata().map_err(io_error("stat", path))?.len();
    if start > total {
        return Ok(Scan { records: 0, valid_len: total, bad_at: None });
    }
    file.seek(SeekFrom::Start(start)).map_err(io_error("seek", path))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let mut offset = start;
    let mut records = 0;
    loop {
        if offset == total {
            return Ok(Scan { records, valid_len: offset, bad_at: None });
        }
        match read_record(&mut reader) {
            Ok(Some((payload, size))) if serde_json::from_slice::<SpooledRow>(&payload).is_ok() => {
                records += 1;
                offset += size;
            }
            Ok(_) | Err(_) => return Ok(Scan { records, valid_len: offset, bad_at: Some(offset) }),
        }
    }
}

/// One record's payload and its size on disk; `None` at a clean end. A short or
/// mismatching record is an `InvalidData` error.
fn read_record(reader: &mut impl Read) -> io::Result<Option<(Vec<u8>, u64)>> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = reader.read(&mut header[got..])?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(invalid("short header")) };
        }
        got += n;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return Err(invalid("record length out of range"));
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).map_err(|_| invalid("short payload"))?;
    if crc32fast::hash(&payload) != crc {
        return Err(invalid("checksum mismatch"));
    }
    Ok(Some((payload, HEADER as u64 + u64::from(len))))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn truncate(path: &Path, len: u64) -> Result<(), SpoolError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_error("open", path))?;
    file.set_len(len).map_err(io_error("truncate", path))?;
    file.sync_all().map_err(io_error("fsync", path))
}

fn copy_tail(path: &Path, from: u64, to: &Path) -> Result<(), SpoolError> {
    let mut source = File::open(path).map_err(io_error("open", path))?;
    source.seek(SeekFrom::Start(from)).map_err(io_error("seek", path))?;
    let mut target = File::create(to).map_err(io_error("create", to))?;
    io::copy(&mut source, &mut target).map_err(io_error("copy to", to))?;
    target.sync_all().map_err(io_error("fsync", to))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("fsync directory", dir))
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SpoolError> {
    let target = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary).map_err(io_error("create", &temporary))?;
    file.write_all(bytes).and_then(|()| file.sync_data()).map_err(io_error("write", &temporary))?;
    fs::rename(&temporary, &target).map_err(io_error("rename", &target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventParser, Limits};
    use serde_json::json;

    fn settings(dir: &Path, max_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            enabled: true,
            path: dir.join("spool"),
            max_bytes,
            replay_batch_events: 100,
            retry_interval_ms: 10,
        }
    }

    fn events(n: usize, tag: &str) -> Vec<AuditEvent> {
        let parser = EventParser::new(Limits::default(), None, Utc::now());
        (0..n)
            .map(|i| {
                let item = json!({
                    "category": "financial", "tenant_id": "acme", "message": format!("{tag} {i}\nnext line\u{1b}[31m"),
                    "user_id": "u-1", "ip_address": "2001:db8::1", "details": {"n": i, "big": 1e300, "nested": {"x": [1.5, "y"]}},
                    "changes": {"before": {"email": "a@example.com"}, "after": {"email": "b@example.com"}},
                    "financial": {"amount": "12.30", "currency": "EUR"}
                });
                parser.parse(i, item).expect("valid event")
            })
            .collect()
    }

    fn records(events: &[AuditEvent]) -> Vec<u8> {
        let requests: Vec<PersistRequest<'_>> = events
            .iter()
            .map(|event| PersistRequest {
                table: Table::FinancialAuditLogs,
                expires_at: event.received_at,
                pii_paths: vec![vec!["changes".into(), "before".into(), "email".into()]],
                event,
            })
            .collect();
        encode(&requests)
    }

    fn append(spool: &Spool, events: &[AuditEvent]) {
        spool.append(&records(events), events.len() as u64).expect("append");
    }

    /// Appends batches until the spool has `count` segments; returns what it sent.
    fn fill_segments(spool: &Spool, dir: &Path, count: usize) -> Vec<AuditEvent> {
        let mut sent = Vec::new();
        while segments(dir).len() < count {
            let batch = events(20, "fill");
            append(spool, &batch);
            sent.extend(batch);
        }
        sent
    }

    fn read_all(spool: &Spool) -> (Vec<SpooledRow>, Position) {
        spool.read(usize::MAX).expect("read")
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(dir.join("spool"))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == SUFFIX))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn records_come_back_exactly_in_order_and_the_spool_empties_after_replay() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::open(&settings(dir.path(), 1 << 20)).expect("open");
        assert!(!spool.has_backlog());
        let first = events(3, "a");
        let second = events(2, "b");
        append(&spool, &first);
        append(&spool, &second);
        assert!(spool.has_backlog());
        assert_eq!(spool.status().pending_events, 5);

        let (rows, to) = read_all(&spool);
        let back: Vec<&AuditEvent> = rows.iter().map(|r| &r.event).collect();
        let sent: Vec<&AuditEvent> = first.iter().chain(&second).collect();
        assert_eq!(back, sent, "every field survives the round trip, in order");
        assert_eq!(rows[0].pii_paths, vec![vec!["changes".to_owned(), "before".into(), "email".into()]]);
        assert_eq!(rows[0].table, Table::FinancialAuditLogs);

        spool.advance(to, 5).expect("advance");
        assert!(!spool.has_backlog());
        assert_eq!(spool.status().pending_events, 0);
        assert_eq!(spool.status().bytes, 0);
        assert!(segments(dir.path()).is_empty(), "replayed segments are deleted");
        append(&spool, &events(1, "c"));
        assert_eq!(read_all(&spool).0.len(), 1, "appends after a drain start a new segment");
    }

    #[test]
    fn a_torn_tail_is_cut_and_every_whole_record_survives_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::open(&settings(dir.path(), 1 << 20)).expect("open");
        let kept = events(4, "kept");
        append(&spool, &kept);
        drop(spool);
        // A crash mid-append: half of the next record reached the file.
        let torn = records(&events(1, "torn"));
        let path = segments(dir.path()).pop().expect("segment");
        let whole = fs::metadata(&path).expect("stat").len();
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&torn[..torn.len() / 2]).expect("tear");
        drop(file);

        let spool = Spool::open(&settings(dir.path(), 1 << 20)).expect("reopen");
        assert_eq!(fs::metadata(&path).expect("stat").len(), whole, "the torn bytes are cut");
        assert_eq!(spool.status().pending_events, 4);
        assert!(spool.has_backlog(), "a reopened spool with records replays them first");
        let after = events(1, "after");
        append(&spool, &after);
        let (rows, _) = read_all(&spool);
        let back: Vec<&AuditEvent> = rows.iter().map(|r| &r.event).collect();
        let expected: Vec<&AuditEvent> = kept.iter().chain(&after).collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_drops_only_that_record() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::open(&settings(dir.path(), 1 << 20)).expect("open");
        let kept = events(3, "kept");
        append(&spool, &kept);
        append(&spool, &events(1, "damaged"));
        drop(spool);
        let path = segments(dir.path()).pop().expect("segment");
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 10;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).expect("write");

        let spool = Spool::open(&settings(dir.path(), 1 << 20)).expect("reopen");
        let (rows, _) = read_all(&spool);
        assert_eq!(rows.iter().map(|r| r.event.clone()).collect::<Vec<_>>(), kept);
    }

    #[test]
    fn corruption_inside_an_older_segment_is_moved_aside_and_later_segments_still_replay() {
        let dir = tempfile::tempdir().expect("dir");
        // 64 KiB segments: a few appends fill one.
        let config = settings(dir.path(), 1 << 20);
        let spool = Spool::open(&config).expect("open");
        let sent = fill_segments(&spool, dir.path(), 3);
        drop(spool);
        let first = segments(dir.path()).remove(0);
        let mut bytes = fs::read(&first).expect("read");
        let header = u32::from_le_bytes(bytes[0..4].try_into().expect("len")) as usize + HEADER;
        bytes[header + HEADER + 5] ^= 0xff; // inside the second record's payload
        fs::write(&first, &bytes).expect("write");

        let spool = Spool::open(&config).expect("reopen");
        assert_eq!(spool.status().quarantined, 1, "the operator sees it in /readyz");
        let aside = first.with_extension(format!("{SUFFIX}.corrupt-1"));
        assert_eq!(fs::metadata(&aside).expect("moved aside").len() as usize, bytes.len() - header);
        let (rows, _) = read_all(&spool);
        let per_segment = sent.len() - rows.len();
        assert!(per_segment > 1, "the rest of the first segment is set aside");
        assert_eq!(rows[0].event, sent[0], "records before the damage replay");
        assert_eq!(rows.last().map(|r| &r.event), sent.last(), "later segments replay");
    }

    #[test]
    fn the_cursor_survives_a_restart_and_replayed_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let config = settings(dir.path(), 1 << 20);
        let spool = Spool::open(&config).expect("open");
        let sent = fill_segments(&spool, dir.path(), 3);
        let first_segment = scan(&segments(dir.path())[0], 0).expect("scan").records as usize;
        let done = first_segment + 5;
        let (rows, to) = spool.read(done).expect("read");
        assert_eq!(rows.len(), done);
        spool.advance(to, done as u64).expect("advance");
        assert_eq!(segments(dir.path()).len(), 2, "a fully replayed segment is deleted");
        drop(spool);

        let spool = Spool::open(&config).expect("reopen");
        assert_eq!(spool.status().pending_events, (sent.len() - done) as u64);
        let (rows, _) = read_all(&spool);
        assert_eq!(rows.iter().map(|r| r.event.clone()).collect::<Vec<_>>(), sent[done..].to_vec());
    }

    #[test]
    fn a_full_spool_refuses_the_append_whole_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::open(&settings(dir.path(), 20_000)).expect("open");
        let mut accepted = 0;
        let refused = loop {
            match spool.append(&records(&events(5, "x")), 5) {
                Ok(()) => accepted += 5,
                Err(e) => break e,
            }
        };
        assert!(matches!(refused, SpoolError::Full { .. }), "{refused:?}");
        assert!(spool.is_full());
        assert_eq!(read_all(&spool).0.len(), accepted);
        assert!(spool.status().bytes <= 20_000);
    }
}
