//! Call recordings on disk: one two-channel 8 kHz PCM16 WAV per recorded
//! call (channel 1 the caller, channel 2 what the caller heard), written
//! by one writer thread so that no call loop ever waits for the disk.
//!
//! A call's [`CallRecording`] gathers the 20 ms slots its
//! [`RecordingTap`](voxproxy_adapters::recording::RecordingTap) yields into
//! batches of [`BATCH_SLOTS`] and queues each for the writer without
//! waiting and without waking it: the writer wakes every
//! [`WRITE_INTERVAL`] and writes what the calls queued, so a call costs the
//! writer one wake-up in total (at its end, so its file is complete
//! moments after its record) rather than one per batch (a channel send
//! per batch woke the writer 1000 times a second at 500 calls, each a
//! context switch on the workers' core). Written batches' buffers go back
//! to a bounded pool the calls take their next batch buffer from, so
//! batches cost no allocation once the pool is warm.
//!
//! The queue is bounded by the bytes it holds ([`MAX_QUEUED_BYTES`]): a
//! batch that does not fit is dropped and counted
//! (`voxproxy_recording_dropped_bytes_total`). Every batch carries its place
//! in the file, so a dropped one leaves silence of its length, never a
//! shift of what follows.
//!
//! Each batch is one `pwrite` of its audio; the header (RIFF and `data`
//! sizes) is rewritten in one more after each wake that wrote to the file
//! and once more at the end, so a `kill -9` leaves a file any player reads
//! up to the last batch written. What a crash loses: the tap's
//! 0.5 s of slack, the batch being gathered ([`BATCH_SLOTS`] × 20 ms = 1 s)
//! and at most one [`WRITE_INTERVAL`], so at most 1.75 s (plus what the page
//! cache had not written out, for a machine that lost power).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use voxproxy_adapters::recording::BLOCK_BYTES;

/// Slots in one batch: 1 s of audio, 32 KB.
pub const BATCH_SLOTS: usize = 50;
/// Bytes of one batch.
const BATCH_BYTES: usize = BATCH_SLOTS * BLOCK_BYTES;
/// How often the writer wakes to write the queued batches.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes of audio the writer's queue may hold: 64 MiB, 35 minutes of one
/// call, or 4 s of each of 500 calls when the disk stalls.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Written batches' buffers kept for the calls' next batches: 16 MiB. At
/// most one batch per call is in the pool at a time in the steady state,
/// so this serves 512 recorded calls without allocating; beyond, the
/// surplus is freed.
const MAX_SPARE_BUFFERS: usize = 512;
/// Bytes of the canonical WAV header the writer puts first.
pub const HEADER_BYTES: u64 = 44;
/// A RIFF file's size field is 32 bits: a recording stops growing there
/// (about 37 hours of two-channel 8 kHz PCM16) and counts what it dropped.
const MAX_DATA_BYTES: u64 = u32::MAX as u64 - HEADER_BYTES;

/// Counters of the recordings, shared by the calls and the writer.
#[derive(Debug, Default)]
pub struct RecordingStats {
    /// Files opened for recording.
    pub files: AtomicU64,
    /// Files that could not be created or written.
    pub errors: AtomicU64,
    /// Audio bytes written.
    pub bytes_written: AtomicU64,
    /// Audio bytes dropped because the writer's queue was full (or a file
    /// reached the WAV size limit).
    pub dropped_bytes: AtomicU64,
    /// Audio bytes waiting in the queue now.
    pub queued_bytes: AtomicUsize,
    /// Twilio-side recordings started (`recording.twilio`).
    pub twilio_started: AtomicU64,
    /// Twilio-side recordings whose REST request failed.
    pub twilio_failed: AtomicU64,
}

enum Job {
    Open { id: u64, path: PathBuf, failed: Arc<AtomicBool> },
    Write { id: u64, offset: u64, bytes: Vec<u8> },
    Close { id: u64, data_len: u64 },
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Open { id, .. } => write!(f, "Open({id})"),
            Job::Write { id, offset, .. } => write!(f, "Write({id}@{offset})"),
            Job::Close { id, .. } => write!(f, "Close({id})"),
        }
    }
}

/// What the calls hand the writer, under one lock taken once per batch.
#[derive(Debug, Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Buffers of written batches, for the calls' next ones.
    spare: Vec<Vec<u8>>,
    /// [`RecordingWriter::shutdown`] was called: write what is queued, then end.
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    stats: Arc<RecordingStats>,
    next_id: AtomicU64,
    /// Set (and signalled) when the writer thread has ended.
    ended: Mutex<bool>,
    ended_signal: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread's handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct RecordingWriter {
    shared: Arc<Shared>,
    thread: std::thread::Thread,
}

impl RecordingWriter {
    /// Starts the writer thread. It ends after [`RecordingWriter::shutdown`]
    /// or once every handle is dropped, having written what was queued.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn(stats: Arc<RecordingStats>) -> std::io::Result<RecordingWriter> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            stats,
            next_id: AtomicU64::new(1),
            ended: Mutex::new(false),
            ended_signal: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("voxproxy-recording".to_owned())
            .spawn(move || writer_main(&thread_shared))?;
        Ok(RecordingWriter { shared, thread: handle.thread().clone() })
    }

    /// The shared counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<RecordingStats> {
        &self.shared.stats
    }

    /// Starts a recording into `path` (created or truncated by the writer).
    #[must_use]
    pub fn start(&self, path: PathBuf) -> CallRecording {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let failed = Arc::new(AtomicBool::new(false));
        let batch = {
            let mut queue = self.shared.lock();
            // Control jobs are one per call each way, bounded by the calls
            // running: only audio is subject to the byte bound.
            queue.jobs.push(Job::Open { id, path: path.clone(), failed: Arc::clone(&failed) });
            queue.spare.pop()
        };
        CallRecording {
            writer: self.clone(),
            id,
            path,
            failed,
            batch: batch.unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES)),
            batch_offset: 0,
            data_len: 0,
        }
    }

    /// Writes what is queued and ends the writer, waiting at most `within`
    /// for it; whether it ended in time. Later batches are dropped (counted).
    pub fn shutdown(&self, within: Duration) -> bool {
        self.shared.lock().stopping = true;
        self.thread.unpark();
        let ended = self.shared.ended.lock().unwrap_or_else(PoisonError::into_inner);
        let (ended, _) = self
            .shared
            .ended_signal
            .wait_timeout_while(ended, within, |ended| !*ended)
            .unwrap_or_else(PoisonError::into_inner);
        *ended
    }
}

/// One call's recording: collects slots, hands batches to the writer.
#[derive(Debug)]
pub struct CallRecording {
    writer: RecordingWriter,
    id: u64,
    path: PathBuf,
    failed: Arc<AtomicBool>,
    batch: Vec<u8>,
    /// Offset in the `data` chunk of the batch's first byte.
    batch_offset: u64,
    /// Audio bytes recorded so far (written, queued or dropped).
    data_len: u64,
}

impl CallRecording {
    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the writer could not create or write the file.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Appends one 20 ms slot; a full batch goes to the writer.
    pub fn push(&mut self, block: &[u8; BLOCK_BYTES]) {
        if self.data_len + BLOCK_BYTES as u64 > MAX_DATA_BYTES {
            self.writer.shared.stats.dropped_bytes.fetch_add(BLOCK_BYTES as u64, Ordering::Relaxed);
            return;
        }
        self.batch.extend_from_slice(block);
        self.data_len += BLOCK_BYTES as u64;
        if self.batch.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Queues what is batched for the writer, or drops it (counted) when
    /// the queue is full; the batch buffer is then reused.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let len = self.batch.len();
        let shared = &self.writer.shared;
        let queued = shared.stats.queued_bytes.fetch_add(len, Ordering::AcqRel);
        let mut queue = shared.lock();
        if queued + len > MAX_QUEUED_BYTES || queue.stopping {
            drop(queue);
            shared.stats.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            shared.stats.dropped_bytes.fetch_add(len as u64, Ordering::Relaxed);
            self.batch.clear();
        } else {
            let next = queue.spare.pop().unwrap_or_default();
            let bytes = std::mem::replace(&mut self.batch, next);
            queue.jobs.push(Job::Write { id: self.id, offset: self.batch_offset, bytes });
            drop(queue);
            if self.batch.capacity() < BATCH_BYTES {
                // The pool was empty: allocated here, outside the lock.
                self.batch.reserve_exact(BATCH_BYTES);
            }
        }
        self.batch_offset = self.data_len;
    }

    /// Queues the last batch and closes the file at its full length (a
    /// dropped batch at the end is silence, not a shorter file).
    pub fn finish(mut self) {
        self.flush();
        let mut queue = self.writer.shared.lock();
        queue.jobs.push(Job::Close { id: self.id, data_len: self.data_len });
        let batch = std::mem::take(&mut self.batch);
        if queue.spare.len() < MAX_SPARE_BUFFERS && batch.capacity() >= BATCH_BYTES {
            queue.spare.push(batch);
        }
        drop(queue);
        // The one wake-up a call costs: its file is complete moments after
        // its record names it, not a write interval later.
        self.writer.thread.unpark();
    }
}

/// A file the writer has open.
struct Open {
    file: File,
    path: PathBuf,
    failed: Arc<AtomicBool>,
    data_len: u64,
    /// Written to since its header was last fixed up.
    dirty: bool,
}

fn writer_main(shared: &Arc<Shared>) {
    let mut files: HashMap<u64, Open> = HashMap::new();
    let mut jobs = Vec::new();
    let mut spare = Vec::new();
    loop {
        std::thread::park_timeout(WRITE_INTERVAL);
        let last = {
            let mut queue = shared.lock();
            std::mem::swap(&mut jobs, &mut queue.jobs);
            // Only this thread's own handle left: no call can queue more.
            queue.stopping || Arc::strong_count(shared) == 1
        };
        for job in jobs.drain(..) {
            run(job, &mut files, &shared.stats, &mut spare);
        }
        for (&id, open) in &mut files {
            if std::mem::take(&mut open.dirty)
                && let Err(e) = write_sizes(&open.file, open.data_len)
            {
                give_up(open, id, &shared.stats, &e);
            }
        }
        files.retain(|_, open| !open.failed.load(Ordering::Relaxed));
        if !spare.is_empty() {
            let mut queue = shared.lock();
            let room = MAX_SPARE_BUFFERS.saturating_sub(queue.spare.len());
            queue.spare.extend(spare.drain(..).take(room));
            spare.clear();
        }
        if last {
            break;
        }
    }
    *shared.ended.lock().unwrap_or_else(PoisonError::into_inner) = true;
    shared.ended_signal.notify_all();
}

/// Runs one job; a written batch's buffer goes to `spare`.
fn run(job: Job, files: &mut HashMap<u64, Open>, stats: &RecordingStats, spare: &mut Vec<Vec<u8>>) {
    match job {
        Job::Open { id, path, failed } => match create(&path) {
            Ok(file) => {
                stats.files.fetch_add(1, Ordering::Relaxed);
                files.insert(id, Open { file, path, failed, data_len: 0, dirty: false });
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                failed.store(true, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), error = %e, "recording file cannot be created; the call is not recorded");
            }
        },
        Job::Write { id, offset, mut bytes } => {
            stats.queued_bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
            if let Some(open) = files.get_mut(&id) {
                let end = offset + bytes.len() as u64;
                match open.file.write_all_at(&bytes, HEADER_BYTES + offset) {
                    Ok(()) => {
                        open.data_len = open.data_len.max(end);
                        open.dirty = true;
                        stats.bytes_written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => fail(files, id, stats, &e),
                }
            }
            bytes.clear();
            spare.push(bytes);
        }
        Job::Close { id, data_len } => {
            let Some(open) = files.remove(&id) else { return };
            // A batch dropped at the end still counts as silence.
            let len = data_len.max(open.data_len);
            let result = open.file.set_len(HEADER_BYTES + len).and_then(|()| write_sizes(&open.file, len));
            if let Err(e) = result {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                open.failed.store(true, Ordering::Relaxed);
                tracing::warn!(path = %open.path.display(), error = %e, "recording file could not be finished");
            }
        }
    }
}

/// A header fix-up failed: the file is given up (counted, logged once; the
/// writer drops it from its table after the pass).
fn give_up(open: &Open, id: u64, stats: &RecordingStats, e: &std::io::Error) {
    stats.errors.fetch_add(1, Ordering::Relaxed);
    open.failed.store(true, Ordering::Relaxed);
    tracing::warn!(id, path = %open.path.display(), error = %e, "recording header could not be updated; the rest of the call is not recorded");
}

/// A write failed: the file is given up (counted, logged once).
fn fail(files: &mut HashMap<u64, Open>, id: u64, stats: &RecordingStats, e: &std::io::Error) {
    if let Some(open) = files.remove(&id) {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        open.failed.store(true, Ordering::Relaxed);
        tracing::warn!(path = %open.path.display(), error = %e, "recording write failed; the rest of the call is not recorded");
    }
}

/// Creates the file (mode 0640: calls are personal data) with its header.
fn create(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(path)?;
    file.write_all_at(&wav_header(0), 0)?;
    Ok(file)
}

/// Rewrites the RIFF and `data` sizes for `data_len` bytes of audio: the
/// whole header in one write.
fn write_sizes(file: &File, data_len: u64) -> std::io::Result<()> {
    let data = u32::try_from(data_len).unwrap_or(u32::MAX - 36);
    file.write_all_at(&wav_header(data), 0)
}

/// The canonical 44-byte header of two-channel 8 kHz PCM16.
#[must_use]
pub fn wav_header(data_len: u32) -> [u8; 44] {
    const CHANNELS: u16 = 2;
    const RATE: u32 = 8_000;
    const BITS: u16 = 16;
    let align = CHANNELS * BITS / 8;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(RATE * u32::from(align)).to_le_bytes());
    h[32..34].copy_from_slice(&align.to_le_bytes());
    h[34..36].copy_from_slice(&BITS.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// The file of a call's recording: `{dir}/{CallSid}_{StreamSid}.wav`, with
/// anything but letters and digits in the ids replaced (without a stream
/// token, ids are whatever the `start` said: never a path).
#[must_use]
pub fn file_for(dir: &Path, call_sid: &str, stream_sid: &str) -> PathBuf {
    let clean = |id: &str| -> String {
        let s: String =
            id.chars().take(64).map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        if s.is_empty() { "unknown".to_owned() } else { s }
    };
    dir.join(format!("{}_{}.wav", clean(call_sid), clean(stream_sid)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxproxy_adapters::wav;

    fn block(code: i16) -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        for (i, s) in b.chunks_exact_mut(2).enumerate() {
            let v = if i % 2 == 0 { code } else { -code };
            s.copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the writer did not get there in 5 s");
    }

    #[test]
    fn a_recording_is_a_valid_stereo_wav_during_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RecordingWriter::spawn(Arc::default()).unwrap();
        let path = file_for(dir.path(), "CA1", "MZ2");
        let mut rec = writer.start(path.clone());
        for i in 0..BATCH_SLOTS as i16 {
            rec.push(&block(i * 100));
        }
        // One batch written: the header already says so (what a crash leaves).
        let stats = Arc::clone(writer.stats());
        wait_for(|| stats.bytes_written.load(Ordering::Relaxed) == (BATCH_SLOTS * BLOCK_BYTES) as u64);
        let bytes = std::fs::read(&path).unwrap();
        let parsed = wav::parse(&bytes).unwrap();
        assert!(!parsed.truncated);
        assert_eq!(parsed.format.to_string(), "8000 Hz stereo PCM16");
        assert_eq!(parsed.data.len(), BATCH_SLOTS * BLOCK_BYTES);

        rec.push(&block(7));
        rec.finish();
        wait_for(|| {
            std::fs::metadata(&path).unwrap().len() == HEADER_BYTES + ((BATCH_SLOTS + 1) * BLOCK_BYTES) as u64
        });
        wait_for(|| {
            wav::parse(&std::fs::read(&path).unwrap()).unwrap().data.len() > BATCH_SLOTS * BLOCK_BYTES
        });
        let bytes = std::fs::read(&path).unwrap();
        let samples = wav::parse(&bytes).unwrap().decode().unwrap();
        assert_eq!(samples.len(), (BATCH_SLOTS + 1) * SLOT_PAIRS * 2);
        assert_eq!((samples[0], samples[1]), (0, 0));
        assert_eq!((samples[2 * SLOT_PAIRS], samples[2 * SLOT_PAIRS + 1]), (100, -100));
        assert_eq!(samples[samples.len() - 2..], [7, -7]);
        assert_eq!(stats.files.load(Ordering::Relaxed), 1);
        assert_eq!(stats.dropped_bytes.load(Ordering::Relaxed), 0);
    }

    const SLOT_PAIRS: usize = BLOCK_BYTES / 4;

    #[test]
    fn an_uncreatable_file_is_counted_and_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let writer = RecordingWriter::spawn(Arc::default()).unwrap();
        let rec = writer.start(blocker.join("sub").join("a.wav"));
        let stats = Arc::clone(writer.stats());
        wait_for(|| stats.errors.load(Ordering::Relaxed) == 1);
        assert!(rec.failed());
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_keeps_the_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let stats: Arc<RecordingStats> = Arc::default();
        let writer = RecordingWriter::spawn(Arc::clone(&stats)).unwrap();
        let path = dir.path().join("q.wav");
        let mut rec = writer.start(path.clone());
        // Pretend the queue is full: the next batch is dropped.
        stats.queued_bytes.fetch_add(MAX_QUEUED_BYTES, Ordering::AcqRel);
        for _ in 0..BATCH_SLOTS {
            rec.push(&block(1_000));
        }
        assert_eq!(stats.dropped_bytes.load(Ordering::Relaxed), (BATCH_SLOTS * BLOCK_BYTES) as u64);
        stats.queued_bytes.fetch_sub(MAX_QUEUED_BYTES, Ordering::AcqRel);
        rec.push(&block(5));
        rec.finish();
        let want = HEADER_BYTES + ((BATCH_SLOTS + 1) * BLOCK_BYTES) as u64;
        wait_for(|| std::fs::metadata(&path).is_ok_and(|m| m.len() == want));
        wait_for(|| stats.bytes_written.load(Ordering::Relaxed) == BLOCK_BYTES as u64);
        let bytes = std::fs::read(&path).unwrap();
        let samples = wav::parse(&bytes).unwrap().decode().unwrap();
        assert!(
            samples[..BATCH_SLOTS * SLOT_PAIRS * 2].iter().all(|&s| s == 0),
            "the dropped batch is silence"
        );
        assert_eq!(samples[BATCH_SLOTS * SLOT_PAIRS * 2], 5, "what follows stays in its place");
    }

    #[test]
    fn calls_never_wake_the_writer_and_shutdown_writes_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let stats: Arc<RecordingStats> = Arc::default();
        let writer = RecordingWriter::spawn(Arc::clone(&stats)).unwrap();
        let path = dir.path().join("s.wav");
        let mut rec = writer.start(path.clone());
        for _ in 0..BATCH_SLOTS {
            rec.push(&block(300));
        }
        rec.push(&block(9));
        rec.finish();
        assert!(writer.shutdown(Duration::from_secs(5)), "the writer ended");
        // Written by the time shutdown returned: nothing waits for a later wake.
        assert_eq!(stats.bytes_written.load(Ordering::Relaxed), ((BATCH_SLOTS + 1) * BLOCK_BYTES) as u64);
        let samples = wav::parse(&std::fs::read(&path).unwrap()).unwrap().decode().unwrap();
        assert_eq!(samples.len(), (BATCH_SLOTS + 1) * SLOT_PAIRS * 2);
        assert_eq!(samples[samples.len() - 2..], [9, -9]);

        // After the shutdown a batch is dropped and counted, never queued for ever.
        let mut late = writer.start(dir.path().join("late.wav"));
        for _ in 0..BATCH_SLOTS {
            late.push(&block(1));
        }
        assert_eq!(stats.dropped_bytes.load(Ordering::Relaxed), BATCH_BYTES as u64);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn written_batches_buffers_are_reused_by_the_next_batches() {
        let dir = tempfile::tempdir().unwrap();
        let stats: Arc<RecordingStats> = Arc::default();
        let writer = RecordingWriter::spawn(Arc::clone(&stats)).unwrap();
        let mut rec = writer.start(dir.path().join("r.wav"));
        for _ in 0..BATCH_SLOTS {
            rec.push(&block(2));
        }
        wait_for(|| stats.bytes_written.load(Ordering::Relaxed) == BATCH_BYTES as u64);
        wait_for(|| writer.shared.lock().spare.len() == 1);
        let pooled = writer.shared.lock().spare[0].as_ptr();
        for _ in 0..BATCH_SLOTS {
            rec.push(&block(3));
        }
        assert_eq!(rec.batch.as_ptr(), pooled, "the written batch's buffer took the next batch");
        assert!(writer.shared.lock().spare.is_empty());
        rec.finish();
    }

    #[test]
    fn file_names_never_leave_the_directory() {
        let dir = Path::new("/rec");
        assert_eq!(file_for(dir, "CAabc", "MZdef"), Path::new("/rec/CAabc_MZdef.wav"));
        assert_eq!(file_for(dir, "../../etc", "x/y"), Path::new("/rec/______etc_x_y.wav"));
        assert_eq!(file_for(dir, "", ""), Path::new("/rec/unknown_unknown.wav"));
    }
}
