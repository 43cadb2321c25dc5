//! Call records from the spool (`cdr.path`) to the store, in order.
//!
//! The call-record writer's promise is unchanged: a call's record is on the
//! local disk (`fsync`) before the call's resources are released. With a
//! store, that file is the spool: this task reads it from where it last
//! stopped and upserts each record into `voxproxy_call_records`, then moves
//! its cursor. While the database is down the records simply wait in the
//! file; when it is back they go in file order. The cursor (`<cdr.path>.store-offset`,
//! the file's inode and the byte offset) is saved after each batch the
//! database committed, so a crash replays at most one batch, and replaying
//! is harmless: rows are keyed by `call_sid` and a record replaces the row
//! of the same call (`ON CONFLICT DO UPDATE`), so the table holds each call
//! exactly once. After log rotation (SIGHUP) the old file is read to its end
//! through the descriptor already open, then the new one from its start.
//!
//! Bounds: one read is at most [`READ_BYTES`]; a line longer than that is
//! skipped and counted; a batch is at most [`BATCH`] records.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use crate::cdr::CallRecord;

/// Records upserted in one statement.
pub(super) const BATCH: usize = 256;
/// Bytes read from the spool at once; also the longest line accepted.
pub(super) const READ_BYTES: usize = 1 << 20;

/// Where the next unsent record starts.
#[derive(Debug)]
pub(super) struct Cursor {
    path: PathBuf,
    state_path: PathBuf,
    file: Option<File>,
    inode: u64,
    offset: u64,
    /// Dropping the rest of an over-long line.
    skipping: bool,
}

/// One record read from the spool, and the offset just past its line.
#[derive(Debug)]
pub(super) struct Line {
    pub(super) record: CallRecord,
    /// The line as JSON for the `jsonb` column.
    pub(super) json: String,
    pub(super) end: u64,
}

impl Cursor {
    /// The cursor saved beside `path`, or its start.
    pub(super) fn load(path: &Path) -> Cursor {
        let mut state_path = path.as_os_str().to_owned();
        state_path.push(".store-offset");
        let state_path = PathBuf::from(state_path);
        let (inode, offset) = std::fs::read_to_string(&state_path)
            .ok()
            .and_then(|text| {
                let (inode, offset) = text.trim().split_once(' ')?;
                Some((inode.parse().ok()?, offset.parse().ok()?))
            })
            .unwrap_or((0, 0));
        Cursor { path: path.to_owned(), state_path, file: None, inode, offset, skipping: false }
    }

    /// The cursor's file, opened (or reopened after a rotation once the old
    /// one is read to its end, `at_end`).
    fn file(&mut self, at_end: bool) -> std::io::Result<()> {
        let on_disk = std::fs::metadata(&self.path)?.ino();
        let rotated = on_disk != self.inode;
        if self.file.is_none() || (rotated && at_end) {
            if rotated {
                // A file the saved cursor does not name: read it from its start.
                self.inode = on_disk;
                self.offset = 0;
                self.skipping = false;
            }
            self.file = Some(File::open(&self.path)?);
        }
        Ok(())
    }

    /// Up to [`BATCH`] records after the cursor, and the unreadable lines
    /// skipped on the way (the cursor moves past those at once).
    pub(super) fn read(&mut self) -> std::io::Result<(Vec<Line>, u64)> {
        let (lines, skipped) = self.read_open(false)?;
        if !lines.is_empty() || skipped > 0 {
            return Ok((lines, skipped));
        }
        // Nothing left in this file: a rotated path is read from its start.
        self.read_open(true)
    }

    fn read_open(&mut self, at_end: bool) -> std::io::Result<(Vec<Line>, u64)> {
        // Opened first: a switch to a rotated path moves the offset to 0.
        self.file(at_end)?;
        let base = self.offset;
        let file = self.file.as_mut().expect("opened above");
        file.seek(SeekFrom::Start(base))?;
        let mut buffer = Vec::with_capacity(64 * 1024);
        file.take(READ_BYTES as u64).read_to_end(&mut buffer)?;
        let mut lines = Vec::new();
        let mut skipped = 0;
        let mut at = 0;
        while lines.len() < BATCH {
            let Some(newline) = buffer[at..].iter().position(|&b| b == b'\n') else { break };
            let line = &buffer[at..at + newline];
            at += newline + 1;
            let end = base + at as u64;
            if std::mem::take(&mut self.skipping) {
                self.offset = end;
                continue;
            }
            match parse(line) {
                Some((record, json)) => lines.push(Line { record, json, end }),
                // Counted once: the batch ends before it, the next read skips it.
                None if !lines.is_empty() => break,
                None => {
                    skipped += 1;
                    self.offset = end;
                }
            }
        }
        if at == 0 && buffer.len() == READ_BYTES {
            // A line longer than any record: drop it up to its newline.
            self.offset += READ_BYTES as u64;
            if !std::mem::replace(&mut self.skipping, true) {
                skipped += 1;
            }
        }
        Ok((lines, skipped))
    }

    /// Moves the cursor past `end` and saves it (write, then rename: a
    /// crash leaves the old cursor or the new one, never half of one).
    pub(super) fn advance(&mut self, end: u64) -> std::io::Result<()> {
        self.offset = end;
        let mut temp = self.state_path.as_os_str().to_owned();
        temp.push(".tmp");
        std::fs::write(&temp, format!("{} {}\n", self.inode, self.offset))?;
        std::fs::rename(&temp, &self.state_path)
    }

    /// Where the cursor stands (past skipped lines too).
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes of the spool after the cursor (the current file only).
    pub(super) fn behind(&self) -> u64 {
        std::fs::metadata(&self.path)
            .map_or(0, |m| if m.ino() == self.inode { m.len().saturating_sub(self.offset) } else { m.len() })
    }
}

/// A spool line as a record with a `call_sid`, and its JSON for `jsonb`;
/// `None` for a torn or foreign line.
fn parse(line: &[u8]) -> Option<(CallRecord, String)> {
    let record: CallRecord = serde_json::from_slice(line).ok()?;
    if record.call_sid.is_empty() {
        return None;
    }
    // `jsonb` refuses the NUL character that JSON allows (a caller's custom
    // parameter may hold one): it becomes U+FFFD in the store's copy.
    let json = std::str::from_utf8(line).ok()?.replace("\\u0000", "\\ufffd");
    Some((record, json))
}

/// A record's time for a `timestamptz` column: RFC 3339 as
/// [`crate::cdr::rfc3339_utc`] writes it, anything else `None` (a
/// malformed time must not make the database refuse the whole batch).
fn timestamp(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let ok = b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z';
    ok.then_some(text)
}

/// One statement for a whole batch: the columns as arrays, unnested into
/// rows (one round trip, where a statement per record waits for each).
const UPSERT: &str = "INSERT INTO voxproxy_call_records
        (call_sid, stream_sid, instance_id, started_at, ended_at, route, leg, end_reason, record)
     SELECT c, s, $1, b::timestamptz, e::timestamptz, r, l, x, j::jsonb
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
          AS u(c, s, b, e, r, l, x, j)
     ON CONFLICT (call_sid) DO UPDATE SET
        stream_sid = EXCLUDED.stream_sid, instance_id = EXCLUDED.instance_id,
        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, route = EXCLUDED.route,
        leg = EXCLUDED.leg, end_reason = EXCLUDED.end_reason, record = EXCLUDED.record,
        written_at = now()";

/// The lines to write: the last of each `call_sid` (the file's order, as
/// upserting them one by one would leave; one statement may not update a
/// row twice).
fn last_of_each_call(lines: &[Line]) -> Vec<&Line> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&Line> =
        lines.iter().rev().filter(|l| seen.insert(l.record.call_sid.as_str())).collect();
    kept.reverse();
    kept
}

/// Upserts `lines` with one statement (one transaction).
pub(super) async fn upsert(
    client: &Client,
    instance_id: &str,
    lines: &[Line],
) -> Result<(), tokio_postgres::Error> {
    let lines = last_of_each_call(lines);
    let column = |f: fn(&Line) -> Option<&str>| lines.iter().map(|l| f(l)).collect::<Vec<Option<&str>>>();
    let call_sids = column(|l| Some(&l.record.call_sid));
    let stream_sids = column(|l| Some(&l.record.stream_sid));
    let started = column(|l| timestamp(&l.record.started_at));
    let ended = column(|l| timestamp(&l.record.ended_at));
    let routes = column(|l| l.record.route.as_deref());
    let legs = column(|l| l.record.leg.as_deref());
    let reasons = column(|l| Some(&l.record.end_reason));
    let json = column(|l| Some(&l.json));
    client
        .execute(
            UPSERT,
            &[&instance_id, &call_sids, &stream_sids, &started, &ended, &routes, &legs, &reasons, &json],
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn record(n: u32) -> String {
        let record =
            CallRecord { call_sid: format!("CA{n}"), end_reason: "stop".into(), ..CallRecord::default() };
        serde_json::to_string(&record).unwrap() + "\n"
    }

    /// Reads and advances until the spool is empty: the call SIDs in
    /// order, and the lines skipped.
    fn drain(cursor: &mut Cursor) -> (Vec<String>, u64) {
        let (mut sids, mut skipped) = (Vec::new(), 0);
        loop {
            let (lines, n) = cursor.read().unwrap();
            skipped += n;
            if lines.is_empty() && n == 0 {
                return (sids, skipped);
            }
            sids.extend(lines.iter().map(|l| l.record.call_sid.clone()));
            cursor.advance(lines.last().map_or(cursor.offset(), |l| l.end)).unwrap();
        }
    }

    #[test]
    fn reads_records_in_order_skips_torn_lines_and_resumes_from_the_saved_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        std::fs::write(&path, format!("{}{{\"call_sid\":\"CA\n{}{}", record(1), record(2), "{\"call"))
            .unwrap();
        let mut cursor = Cursor::load(&path);
        assert_eq!(drain(&mut cursor), (vec!["CA1".to_owned(), "CA2".to_owned()], 1));
        // The torn last line is not consumed until its newline comes; a
        // new cursor starts where the saved one stopped.
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(format!("\n{}", record(3)).as_bytes()).unwrap();
        let mut again = Cursor::load(&path);
        assert_eq!(drain(&mut again), (vec!["CA3".to_owned()], 1));
        assert_eq!(again.behind(), 0);
    }

    #[test]
    fn a_rotated_file_is_finished_then_the_new_one_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        std::fs::write(&path, record(1)).unwrap();
        let mut cursor = Cursor::load(&path);
        let (lines, _) = cursor.read().unwrap();
        cursor.advance(lines[0].end).unwrap();
        // The writer appends one more, then the file is rotated.
        let mut old = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        old.write_all(record(2).as_bytes()).unwrap();
        std::fs::rename(&path, dir.path().join("cdr.jsonl.1")).unwrap();
        std::fs::write(&path, record(3)).unwrap();
        let (lines, _) = cursor.read().unwrap();
        assert_eq!(lines[0].record.call_sid, "CA2", "the old file first");
        cursor.advance(lines[0].end).unwrap();
        let (lines, _) = cursor.read().unwrap();
        assert_eq!(lines[0].record.call_sid, "CA3");
        cursor.advance(lines[0].end).unwrap();
        assert!(cursor.read().unwrap().0.is_empty());
        assert_eq!(cursor.behind(), 0);
    }

    #[test]
    fn an_over_long_line_is_skipped_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let long = "x".repeat(READ_BYTES + 10);
        std::fs::write(&path, format!("{long}\n{}", record(7))).unwrap();
        let mut cursor = Cursor::load(&path);
        let (lines, skipped) = cursor.read().unwrap();
        assert_eq!((lines.len(), skipped), (0, 1));
        let (lines, _) = cursor.read().unwrap();
        assert_eq!(lines[0].record.call_sid, "CA7");
    }

    #[test]
    fn a_batch_keeps_the_last_record_of_each_call_in_file_order() {
        let line = |sid: &str, reason: &str| Line {
            record: CallRecord { call_sid: sid.into(), end_reason: reason.into(), ..CallRecord::default() },
            json: String::new(),
            end: 0,
        };
        let lines =
            [line("CA1", "crash"), line("CA2", "stop"), line("CA1", "twilio_stop"), line("CA3", "stop")];
        let kept: Vec<_> = last_of_each_call(&lines)
            .iter()
            .map(|l| (l.record.call_sid.as_str(), l.record.end_reason.as_str()))
            .collect();
        assert_eq!(kept, [("CA2", "stop"), ("CA1", "twilio_stop"), ("CA3", "stop")]);
    }

    #[test]
    fn only_well_formed_times_reach_the_timestamp_columns() {
        assert_eq!(timestamp("2023-11-14T22:13:20.123Z"), Some("2023-11-14T22:13:20.123Z"));
        for bad in ["", "2023-11-14", "2023-11-14T22:13:20.123+01:00", "2023-11-14T22:13:20Z'; drop"] {
            assert_eq!(timestamp(bad), None, "{bad}");
        }
        let (_, json) = parse(br#"{"call_sid":"CA1","from":"a\u0000b"}"#).unwrap();
        assert!(json.contains("a\\ufffdb"), "{json}");
    }
}
