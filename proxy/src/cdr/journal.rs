//! The journal of calls in progress: what lets a call cut by a crash still
//! get its record.
//!
//! # Location and format
//!
//! The journal lives next to the call-record file, hidden so log rotation
//! globs such as `cdr.jsonl*` leave it alone: for `cdr.path =
//! /var/lib/voxproxy/cdr.jsonl` it is `/var/lib/voxproxy/.cdr.jsonl.journal`.
//! It is JSON lines, one entry per line, written only by the call-record
//! thread:
//!
//! - `{"op":"start","id":7,"started_unix_ms":1700000000000,"record":{…}}`
//!   when a stream starts: `record` is the call's [`CallRecord`] as far as
//!   it is known then (SIDs, numbers, start time, worker, parameters).
//! - `{"op":"end","id":7}` once the call's real record is on disk.
//! - `{"op":"unwritten","id":7,"record":{…}}` when the real record could not
//!   be written (disk full): the next start writes this record instead.
//!
//! Ids are unique within one run; every start of the daemon recovers the
//! previous run's journal and begins a new, empty one.
//!
//! # Durability and cost
//!
//! Nothing is written per media frame: one line when a stream starts and one
//! when its record is written. Entries are grouped: the call-record thread
//! takes every job waiting in its queue (up to [`BATCH`]), appends the
//! records with one `fsync` of the call-record file, then the journal lines
//! with one `fsync` of the journal. A call's `end` entry is written only
//! after its record's `fsync`, so a crash can leave a record on disk whose
//! entry is still open; recovery therefore skips every open entry whose
//! record (same `call_sid`, `stream_sid` and `started_at`) is already in the
//! call-record file. No call is recorded twice and none is lost, except a
//! call whose `start` entry had not reached the disk (the few milliseconds of
//! one batch) when the power failed.
//!
//! While calls are open the journal's modification time is refreshed every
//! [`HEARTBEAT`], so after a crash it tells, to within that, when the daemon
//! was last alive: a recovered call's `ended_at` is that time and its
//! `end_reason` is `crash`. Its counters are zero: they lived in memory.
//! When the journal grows past [`COMPACT_BYTES`] it is rewritten with only the
//! open entries (write, `fsync`, rename).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{CallRecord, CdrError, rfc3339_utc, sync_parent};

/// The `end_reason` of a call whose record came from the journal.
pub const CRASH_END_REASON: &str = "crash";
/// How often the journal's modification time is refreshed while calls are
/// open: the precision of a recovered call's `ended_at`.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Journal size past which it is rewritten with only the open entries.
pub const COMPACT_BYTES: u64 = 4 << 20;
/// Jobs the call-record thread groups under one pair of `fsync`s.
pub const BATCH: usize = 256;

/// One call's entry in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JournalId(pub(super) u64);

/// Where the journal of the call-record file `cdr_path` lives.
#[must_use]
pub fn journal_path(cdr_path: &Path) -> PathBuf {
    let name = cdr_path.file_name().map_or_else(|| "voxproxy-cdr".into(), |n| n.to_string_lossy());
    cdr_path.with_file_name(format!(".{name}.journal"))
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum EntryOut<'a> {
    Start { id: u64, started_unix_ms: u64, record: &'a CallRecord },
    End { id: u64 },
    Unwritten { id: u64, record: &'a CallRecord },
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum EntryIn {
    Start { id: u64, started_unix_ms: u64, record: CallRecord },
    End { id: u64 },
    Unwritten { id: u64, record: CallRecord },
}

/// What the previous run left open, ready to be written.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records to write: crash records, or records that could not be written then.
    pub records: Vec<CallRecord>,
    /// Open entries skipped because their record was already in the file.
    pub already_written: usize,
    /// Journal lines that could not be parsed (a torn last line after a crash).
    pub unreadable_lines: usize,
}

/// Reads the journal at `path` (none is fine) and the call-record file at
/// `cdr_path`, and returns the records of calls the previous run started
/// and never recorded.
pub fn recover(path: &Path, cdr_path: &Path) -> Result<Recovered, CdrError> {
    let inspect = |source| CdrError::Inspect { path: path.to_path_buf(), source };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(source) => return Err(inspect(source)),
    };
    let last_alive = file.metadata().and_then(|m| m.modified()).map_err(inspect)?;
    let mut open: HashMap<u64, (u64, CallRecord)> = HashMap::new();
    let mut ended = HashSet::new();
    let mut unwritten = HashMap::new();
    let mut recovered = Recovered::default();
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(inspect)?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<EntryIn>(&line) {
            Ok(EntryIn::Start { id, started_unix_ms, record }) => {
                open.insert(id, (started_unix_ms, record));
            }
            Ok(EntryIn::End { id }) => {
                ended.insert(id);
            }
            Ok(EntryIn::Unwritten { id, record }) => {
                unwritten.insert(id, record);
            }
            Err(_) => recovered.unreadable_lines += 1,
        }
    }
    // Order-independent: an `end` may precede its `start` in the file.
    open.retain(|id, _| !ended.contains(id));
    let mut pending: Vec<(u64, CallRecord)> = open
        .into_iter()
        .map(|(id, (started_ms, record))| match unwritten.remove(&id) {
            Some(record) => (id, record),
            None => (id, crash_record(record, started_ms, last_alive)),
        })
        .collect();
    // A compaction keeps only the `unwritten` line of an entry that has one
    // (its `start` is gone from the file): still a call to record.
    pending.extend(unwritten.into_iter().filter(|(id, _)| !ended.contains(id)));
    pending.sort_unstable_by_key(|(id, _)| *id);
    let before = pending.len();
    let written = recorded_keys(cdr_path, &pending)?;
    pending.retain(|(_, r)| !written.contains(&key(r)));
    recovered.already_written = before - pending.len();
    recovered.records = pending.into_iter().map(|(_, r)| r).collect();
    Ok(recovered)
}

/// The record of a call cut by a crash: what was known at its start, ended
/// when the daemon was last seen alive.
fn crash_record(mut record: CallRecord, started_unix_ms: u64, last_alive: SystemTime) -> CallRecord {
    let started = UNIX_EPOCH + Duration::from_millis(started_unix_ms);
    let ended = last_alive.max(started);
    record.ended_at = rfc3339_utc(ended);
    record.duration_ms =
        u64::try_from(ended.duration_since(started).unwrap_or_default().as_millis()).unwrap_or(u64::MAX);
    CRASH_END_REASON.clone_into(&mut record.end_reason);
    record
}

type Key = (String, String, String);

fn key(record: &CallRecord) -> Key {
    (record.call_sid.clone(), record.stream_sid.clone(), record.started_at.clone())
}

/// Which of `pending` already have a line in the call-record file. Reads the
/// whole file once, decoding only the three key fields of each line.
fn recorded_keys(cdr_path: &Path, pending: &[(u64, CallRecord)]) -> Result<HashSet<Key>, CdrError> {
    #[derive(Deserialize)]
    struct KeyFields {
        #[serde(default)]
        call_sid: String,
        #[serde(default)]
        stream_sid: String,
        #[serde(default)]
        started_at: String,
    }
    let wanted: HashSet<Key> = pending.iter().map(|(_, r)| key(r)).collect();
    let mut found = HashSet::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let inspect = |source| CdrError::Inspect { path: cdr_path.to_path_buf(), source };
    let file = match File::open(cdr_path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(source) => return Err(inspect(source)),
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(inspect)?;
        let Ok(fields) = serde_json::from_slice::<KeyFields>(&line) else { continue };
        let key = (fields.call_sid, fields.stream_sid, fields.started_at);
        if wanted.contains(&key) {
            found.insert(key);
        }
    }
    Ok(found)
}

/// The open journal of this run. Owned by the call-record thread.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    /// Ids of the calls in progress: what a compaction keeps. Only the ids:
    /// the lines are in the file, and keeping each call's start line here
    /// cost about 2 KB of memory per call (the record's JSON in a grown
    /// buffer) to save re-reading 4 MiB once per [`COMPACT_BYTES`] written.
    open: HashSet<u64>,
    /// Calls whose `end` came before their `start` (the start waited in a
    /// full queue): their start is not written at all.
    ended_early: HashSet<u64>,
    /// Lines waiting for [`Journal::commit`].
    staged: Vec<u8>,
    last_touch: Instant,
}

impl Journal {
    /// Starts an empty journal at `path`, replacing the previous run's (whose
    /// records must be on disk by now), and makes that durable.
    pub fn create(path: &Path) -> Result<Journal, CdrError> {
        let file = open_new(path)?;
        sync_parent(path)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            len: 0,
            open: HashSet::new(),
            ended_early: HashSet::new(),
            staged: Vec::with_capacity(16 * 1024),
            last_touch: Instant::now(),
        })
    }

    /// The journal file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls started and not yet retired.
    #[must_use]
    pub fn open_entries(&self) -> usize {
        self.open.len()
    }

    /// Stages the `start` entry of call `id`.
    pub fn stage_start(&mut self, id: u64, started_unix_ms: u64, record: &CallRecord) {
        if self.ended_early.remove(&id) {
            return;
        }
        self.stage(&EntryOut::Start { id, started_unix_ms, record });
        self.open.insert(id);
    }

    /// Stages the `end` entry of call `id`: its record is on disk.
    pub fn stage_end(&mut self, id: u64) {
        if !self.open.remove(&id) {
            self.ended_early.insert(id);
            return;
        }
        self.stage(&EntryOut::End { id });
    }

    /// Stages the record call `id` could not write, for the next start to write.
    pub fn stage_unwritten(&mut self, id: u64, record: &CallRecord) {
        if self.open.contains(&id) {
            // A compaction keeps this newer entry (with the real record)
            // instead of the start.
            self.stage(&EntryOut::Unwritten { id, record });
        }
    }

    fn stage(&mut self, entry: &EntryOut<'_>) {
        if serde_json::to_writer(&mut self.staged, entry).is_ok() {
            self.staged.push(b'\n');
        }
    }

    /// Writes the staged lines with one `fsync`, then compacts if the file
    /// grew past [`COMPACT_BYTES`].
    pub fn commit(&mut self) -> Result<(), CdrError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let write = |source| CdrError::Write { path: self.path.clone(), source };
        self.file.write_all(&self.staged).map_err(write)?;
        self.len += self.staged.len() as u64;
        self.staged.clear();
        self.file.sync_data().map_err(|source| CdrError::Sync { path: self.path.clone(), source })?;
        self.last_touch = Instant::now();
        if self.len > COMPACT_BYTES {
            self.compact()?;
        }
        Ok(())
    }

    /// Refreshes the modification time if calls are open and nothing was
    /// written for [`HEARTBEAT`]: the daemon is alive.
    pub fn heartbeat(&mut self) -> Result<(), CdrError> {
        if self.open.is_empty() || self.last_touch.elapsed() < HEARTBEAT {
            return Ok(());
        }
        self.last_touch = Instant::now();
        self.file
            .set_modified(SystemTime::now())
            .map_err(|source| CdrError::Write { path: self.path.clone(), source })
    }

    /// The last line (a `start`, or the `unwritten` that replaced it) of
    /// every open entry, read back from the file, in the file's order.
    fn open_lines(&self) -> Result<Vec<Vec<u8>>, CdrError> {
        #[derive(Deserialize)]
        struct IdField {
            id: u64,
        }
        let inspect = |source| CdrError::Inspect { path: self.path.clone(), source };
        let file = File::open(&self.path).map_err(inspect)?;
        let mut last: HashMap<u64, usize> = HashMap::with_capacity(self.open.len());
        let mut lines = Vec::with_capacity(self.open.len());
        for line in BufReader::new(file).split(b'\n') {
            let mut line = line.map_err(inspect)?;
            let Ok(IdField { id }) = serde_json::from_slice(&line) else { continue };
            if !self.open.contains(&id) {
                continue;
            }
            line.push(b'\n');
            match last.get(&id) {
                Some(&at) => lines[at] = line,
                None => {
                    last.insert(id, lines.len());
                    lines.push(line);
                }
            }
        }
        Ok(lines)
    }

    /// Rewrites the journal with only the open entries.
    fn compact(&mut self) -> Result<(), CdrError> {
        let mut temp_name = self.path.as_os_str().to_owned();
        temp_name.push(".compact");
        let temp = PathBuf::from(temp_name);
        let mut file = open_new(&temp)?;
        let write = |source| CdrError::Write { path: temp.clone(), source };
        let mut len = 0;
        for line in self.open_lines()? {
            file.write_all(&line).map_err(write)?;
            len += line.len() as u64;
        }
        file.sync_data().map_err(|source| CdrError::Sync { path: temp.clone(), source })?;
        std::fs::rename(&temp, &self.path).map_err(write)?;
        sync_parent(&self.path)?;
        self.file = file;
        self.len = len;
        Ok(())
    }
}

/// Creates (or truncates) `path` for appending, mode `0640` like the records.
fn open_new(path: &Path) -> Result<File, CdrError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    // Not O_APPEND: only this handle writes, always at its own end.
    options.open(path).map_err(|source| CdrError::Open { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> CallRecord {
        CallRecord {
            call_sid: format!("CA{n:032x}"),
            stream_sid: format!("MZ{n:032x}"),
            started_at: rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n)),
            from: Some("+15550100".into()),
            worker: 1,
            io_backend: "epoll".into(),
            ..CallRecord::default()
        }
    }

    fn started_ms(n: u64) -> u64 {
        (1_700_000_000 + n) * 1000
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cdr = dir.path().join("cdr.jsonl");
        let journal = journal_path(&cdr);
        (dir, cdr, journal)
    }

    #[test]
    fn the_journal_is_hidden_next_to_the_records() {
        assert_eq!(
            journal_path(Path::new("/var/lib/vp/cdr.jsonl")),
            Path::new("/var/lib/vp/.cdr.jsonl.journal")
        );
        assert_eq!(journal_path(Path::new("cdr.jsonl")), Path::new(".cdr.jsonl.journal"));
    }

    #[test]
    fn open_calls_come_back_as_crash_records_and_ended_ones_do_not() {
        let (_dir, cdr, path) = setup();
        let mut journal = Journal::create(&path).unwrap();
        for n in 0..4 {
            journal.stage_start(n, started_ms(n), &record(n));
        }
        journal.stage_end(1);
        journal.commit().unwrap();
        // An end that overtook its start: both are retired.
        journal.stage_end(9);
        journal.stage_start(9, started_ms(9), &record(9));
        journal.commit().unwrap();
        drop(journal);

        let recovered = recover(&path, &cdr).unwrap();
        let sids: Vec<&str> = recovered.records.iter().map(|r| r.call_sid.as_str()).collect();
        assert_eq!(sids, [record(0).call_sid, record(2).call_sid, record(3).call_sid]);
        for r in &recovered.records {
            assert_eq!(r.end_reason, CRASH_END_REASON);
            assert!(r.ended_at >= r.started_at, "{r:?}");
            assert_eq!(r.from.as_deref(), Some("+15550100"));
        }
        assert_eq!(recovered.already_written, 0);
    }

    #[test]
    fn a_record_already_in_the_file_is_not_written_again() {
        let (_dir, cdr, path) = setup();
        let mut journal = Journal::create(&path).unwrap();
        journal.stage_start(1, started_ms(1), &record(1));
        journal.stage_start(2, started_ms(2), &record(2));
        journal.commit().unwrap();
        // The crash came after call 1's record reached the file but before its `end` entry.
        let mut written = record(1);
        written.end_reason = "stop".into();
        let mut writer = super::super::CdrWriter::open(&cdr).unwrap();
        writer.write(&written).unwrap();

        let recovered = recover(&path, &cdr).unwrap();
        assert_eq!(recovered.records.len(), 1);
        assert_eq!(recovered.records[0].call_sid, record(2).call_sid);
        assert_eq!(recovered.already_written, 1);
    }

    #[test]
    fn an_unwritten_record_is_recovered_as_it_was() {
        let (_dir, cdr, path) = setup();
        let mut journal = Journal::create(&path).unwrap();
        journal.stage_start(1, started_ms(1), &record(1));
        let mut real = record(1);
        real.end_reason = "stop".into();
        real.inbound_frames = 42;
        journal.stage_unwritten(1, &real);
        journal.commit().unwrap();
        let recovered = recover(&path, &cdr).unwrap();
        assert_eq!(recovered.records, vec![real]);
    }

    #[test]
    fn an_unwritten_record_survives_a_compaction() {
        // A compaction keeps only the `unwritten` line of such an entry (the
        // table of calls in progress stashes every streamed call's record so).
        let (_dir, cdr, path) = setup();
        let mut journal = Journal::create(&path).unwrap();
        journal.stage_start(1, started_ms(1), &record(1));
        let mut real = record(1);
        real.end_reason = "twilio_stop".into();
        journal.stage_unwritten(1, &real);
        journal.stage_start(2, started_ms(2), &record(2));
        journal.stage_unwritten(2, &record(2));
        journal.stage_end(2);
        journal.commit().unwrap();
        journal.compact().unwrap();
        let recovered = recover(&path, &cdr).unwrap();
        assert_eq!(recovered.records, vec![real], "recorded once, and not the ended one");
    }

    #[test]
    fn a_torn_journal_line_is_skipped_and_counted() {
        let (_dir, cdr, path) = setup();
        let mut journal = Journal::create(&path).unwrap();
        journal.stage_start(1, started_ms(1), &record(1));
        journal.commit().unwrap();
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"op":"start","id":2,"started_unix"#).unwrap();
        let recovered = recover(&path, &cdr).unwrap();
        assert_eq!(recovered.records.len(), 1);
        assert_eq!(recovered.unreadable_lines, 1);
    }

    #[test]
    fn no_journal_means_nothing_to_recover() {
        let (_dir, cdr, path) = setup();
        let recovered = recover(&path, &cdr).unwrap();
        assert!(recovered.records.is_empty());
    }

    #[test]
    fn compaction_keeps_exactly_the_open_entries() {
        let (_dir, cdr, path) = setup();
        let mut journal = Journal::create(&path).unwrap();
        let mut n = 0;
        while journal.staged.len() as u64 <= COMPACT_BYTES / 8 {
            journal.stage_start(n, started_ms(n), &record(n));
            journal.stage_end(n);
            n += 1;
        }
        journal.stage_start(n, started_ms(n), &record(n));
        journal.commit().unwrap();
        journal.compact().unwrap();
        // What is left is the one open entry: the size of a journal that
        // only ever held it.
        let mut alone = Journal::create(&path.with_extension("alone")).unwrap();
        alone.stage_start(n, started_ms(n), &record(n));
        alone.commit().unwrap();
        assert_eq!(journal.len, alone.len);
        // Appends after a compaction land in the new file.
        journal.stage_start(n + 1, started_ms(n + 1), &record(n + 1));
        journal.commit().unwrap();
        let recovered = recover(&path, &cdr).unwrap();
        let sids: Vec<_> = recovered.records.iter().map(|r| r.call_sid.clone()).collect();
        assert_eq!(sids, [record(n).call_sid, record(n + 1).call_sid]);
    }
}
