//! Call captures on disk (docs/capture.md): one file per captured call,
//! written by one writer thread so that no call loop waits for the disk.
//!
//! A call's [`Capture`] records from the moment its bridge exists (the
//! route, and so whether the call is captured at all, is known only after
//! Twilio's `start`; until then records stay in memory, a few hundred
//! bytes). [`Capture::decide`] then opens the file or forgets the capture.
//! From then on the call hands its records to the writer in batches of
//! [`BATCH_BYTES`] without waiting. The queue is bounded by the bytes it
//! holds ([`MAX_QUEUED_BYTES`]): a batch that does not fit is dropped and
//! counted, and the capture stops there with a `Truncated` mark, since a
//! replay cannot go on past a hole. The per-call budget
//! (`capture.max_bytes`) ends a capture the same way.
//!
//! The format, the redaction of secrets and the replay are sans-IO, in
//! `voxproxy_adapters::capture`; this file only moves bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use voxproxy_adapters::bridge::BridgeConfig;
use voxproxy_adapters::capture::{CaptureHeader, Encoder, LegKind, Truncation};
use voxproxy_core::Instant;

/// Bytes a call gathers before handing them to the writer: about two
/// seconds of a call.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Bytes the writer's queue may hold: 2 s of each of 500 captured calls
/// when the disk stalls.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Counters of the captures, shared by the calls and the writer.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Capture files opened.
    pub files: AtomicU64,
    /// Files that could not be created or written.
    pub errors: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Bytes dropped because the writer's queue was full.
    pub dropped_bytes: AtomicU64,
    /// Captures that stopped before the call's end (size limit or queue full).
    pub truncated: AtomicU64,
    /// Bytes waiting in the queue now.
    pub queued_bytes: AtomicUsize,
}

enum Job {
    Open { id: u64, path: PathBuf },
    Write { id: u64, bytes: Vec<u8> },
    Close { id: u64, tail: Vec<u8> },
}

/// The writer thread's handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct CaptureWriter {
    jobs: mpsc::Sender<Job>,
    stats: Arc<CaptureStats>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Open { id, .. } => write!(f, "Open({id})"),
            Job::Write { id, bytes } => write!(f, "Write({id}, {})", bytes.len()),
            Job::Close { id, .. } => write!(f, "Close({id})"),
        }
    }
}

impl CaptureWriter {
    /// Starts the writer thread. It ends when every handle is dropped,
    /// after closing the files still open.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn(stats: Arc<CaptureStats>) -> std::io::Result<CaptureWriter> {
        let (jobs, rx) = mpsc::channel();
        let thread_stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("voxproxy-capture".to_owned())
            .spawn(move || writer_main(&rx, &thread_stats))?;
        Ok(CaptureWriter { jobs, stats, next_id: Arc::new(AtomicU64::new(1)) })
    }

    /// The shared counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<CaptureStats> {
        &self.stats
    }
}

/// The file name of a call's capture: `{CallSid}_{StreamSid}.vxcap`.
#[must_use]
pub fn file_for(dir: &std::path::Path, call_sid: &str, stream_sid: &str) -> PathBuf {
    crate::recording::file_for(dir, call_sid, stream_sid).with_extension("vxcap")
}

/// Whether a started call is captured: its route says so, or without a
/// route saying either way, `capture.enabled`.
#[must_use]
pub fn wanted(config: &crate::config::Config, bridge: &voxproxy_adapters::bridge::CallBridge) -> bool {
    use voxproxy_adapters::route::{ROUTE_PARAMETER, route_by_label};
    let route = bridge
        .stream()
        .and_then(|start| start.custom_parameter(ROUTE_PARAMETER))
        .and_then(|label| route_by_label(&config.routes, &config.default_route, label));
    route.and_then(|m| m.route.capture).unwrap_or(config.capture.enabled)
}

/// A call's capture, or nothing (every method is then a no-op): boxed,
/// so a call that is not captured pays one pointer.
#[derive(Debug, Default)]
pub struct Capture(Option<Box<Active>>);

#[derive(Debug)]
struct Active {
    encoder: Encoder,
    /// The file, once [`Capture::decide`] kept the capture.
    file: Option<(CaptureWriter, u64, PathBuf)>,
}

impl Capture {
    /// Starts capturing a call whose bridge was just created with
    /// `bridge` at `now`, when `wanted` (some call may be captured).
    #[must_use]
    pub fn begin(wanted: bool, bridge: &BridgeConfig, now: Instant, max_bytes: u64) -> Capture {
        if !wanted {
            return Capture(None);
        }
        let header = CaptureHeader {
            voxproxy_version: crate::build::VERSION_LINE.to_owned(),
            leg: LegKind::Rtp,
            created_at: now,
            bridge: BridgeConfig { stream_token: None, ..bridge.clone() },
        };
        // Small at first: most calls are decided against (or short), and
        // the buffer grows to a batch once for those that are kept.
        Capture(Some(Box::new(Active { encoder: Encoder::new(&header, max_bytes, 4096), file: None })))
    }

    /// Whether the call is being captured.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Records through the encoder, if the call is captured.
    pub fn with(&mut self, record: impl FnOnce(&mut Encoder)) {
        if let Some(active) = &mut self.0 {
            record(&mut active.encoder);
        }
    }

    /// The call has started: keep the capture (its file is `path`, its
    /// leg `leg`) or, with `None`, forget it.
    pub fn decide(&mut self, writer: &CaptureWriter, keep: Option<(PathBuf, LegKind)>) {
        let Some(active) = &mut self.0 else { return };
        let Some((path, leg)) = keep else {
            self.0 = None;
            return;
        };
        active.encoder.set_leg(leg);
        let id = writer.next_id.fetch_add(1, Ordering::Relaxed);
        // Control messages are one per call each way, bounded by the calls
        // running: only records are subject to the byte bound.
        let _ = writer.jobs.send(Job::Open { id, path: path.clone() });
        active.file = Some((writer.clone(), id, path));
    }

    /// The capture's file, once kept.
    #[must_use]
    pub fn path(&self) -> Option<&std::path::Path> {
        self.0.as_ref()?.file.as_ref().map(|(_, _, path)| path.as_path())
    }

    /// After each turn of the call's loop: a full batch goes to the writer.
    pub fn flush(&mut self) {
        let Some(Active { encoder, file: Some((writer, id, _)) }) = self.0.as_deref_mut() else { return };
        if encoder.pending() < BATCH_BYTES {
            return;
        }
        let stats = &writer.stats;
        let len = encoder.pending();
        if stats.queued_bytes.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            stats.dropped_bytes.fetch_add(len as u64, Ordering::Relaxed);
            encoder.drop_pending_and_stop(Truncation::QueueFull);
            return;
        }
        let mut bytes = Vec::with_capacity(len);
        encoder.take_into(&mut bytes);
        stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let _ = writer.jobs.send(Job::Write { id: *id, bytes });
    }

    /// The call is over: the end mark and the rest go to the writer, which
    /// closes the file.
    pub fn finish(&mut self, now: Instant) {
        let Some(mut active) = self.0.take() else { return };
        let Some((writer, id, _)) = active.file.take() else { return };
        if active.encoder.is_stopped() {
            writer.stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        active.encoder.end(now);
        let mut tail = Vec::with_capacity(active.encoder.pending());
        active.encoder.take_into(&mut tail);
        let _ = writer.jobs.send(Job::Close { id, tail });
    }
}

fn writer_main(rx: &mpsc::Receiver<Job>, stats: &CaptureStats) {
    let mut open: HashMap<u64, Option<File>> = HashMap::new();
    while let Ok(job) = rx.recv() {
        match job {
            Job::Open { id, path } => {
                let file = create(&path);
                match &file {
                    Ok(_) => stats.files.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "capture file not created; the call is not captured");
                        stats.errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
                open.insert(id, file.ok());
            }
            Job::Write { id, bytes } => {
                stats.queued_bytes.fetch_sub(bytes.len(), Ordering::Relaxed);
                write(&mut open, id, &bytes, stats);
            }
            Job::Close { id, tail } => {
                write(&mut open, id, &tail, stats);
                open.remove(&id);
            }
        }
    }
}

fn create(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let open = || std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(path);
    match open() {
        // A reload turned capture on after the start created no directory.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))?;
            open()
        }
        other => other,
    }
}

fn write(open: &mut HashMap<u64, Option<File>>, id: u64, bytes: &[u8], stats: &CaptureStats) {
    let Some(slot) = open.get_mut(&id) else { return };
    let Some(file) = slot else { return };
    match file.write_all(bytes) {
        Ok(()) => {
            stats.bytes_written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, "capture file not written; the rest of the call is not captured");
            stats.errors.fetch_add(1, Ordering::Relaxed);
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use voxproxy_adapters::capture::Reader;

    use super::*;

    fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the writer did not get there in 5 s");
    }

    fn records(path: &std::path::Path) -> Vec<String> {
        let bytes = std::fs::read(path).expect("the capture exists");
        let (reader, _) = Reader::new(&bytes).expect("a capture");
        reader.map(|r| r.expect("a record").name().to_owned()).collect()
    }

    /// The records written so far, while the writer may be mid-write: the
    /// file may not exist yet, and its last record may be cut.
    fn records_so_far(path: &std::path::Path) -> Vec<String> {
        let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
        let Ok((reader, _)) = Reader::new(&bytes) else { return Vec::new() };
        reader.map_while(Result::ok).map(|r| r.name().to_owned()).collect()
    }

    fn frame(n: usize) -> Vec<u8> {
        vec![b'a'; n]
    }

    #[test]
    fn a_kept_capture_is_written_in_batches_and_ended() {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = CaptureWriter::spawn(Arc::default()).expect("writer");
        let mut capture = Capture::begin(true, &BridgeConfig::default(), Instant::ZERO, 1 << 30);
        capture.with(|c| c.twilio_text(Instant::ZERO, b"{}"));
        let path = dir.path().join("a.vxcap");
        capture.decide(&writer, Some((path.clone(), LegKind::Sip)));
        for i in 0..300 {
            capture.with(|c| c.twilio_text(Instant::from_millis(i), &frame(400)));
            capture.flush();
        }
        let stats = Arc::clone(writer.stats());
        wait_for(|| stats.bytes_written.load(Ordering::Relaxed) >= BATCH_BYTES as u64);
        capture.finish(Instant::from_millis(300));
        wait_for(|| records_so_far(&path).last().map(String::as_str) == Some("end mark"));
        let names = records(&path);
        assert_eq!(names.len(), 302, "the early frame, 300 more and the end");
        let (_, header) = Reader::new(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(header.leg, LegKind::Sip, "the leg decided after the start is in the header");
        assert_eq!((stats.files.load(Ordering::Relaxed), stats.truncated.load(Ordering::Relaxed)), (1, 0));
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_capture_not_kept_writes_nothing() {
        let writer = CaptureWriter::spawn(Arc::default()).expect("writer");
        let mut capture = Capture::begin(true, &BridgeConfig::default(), Instant::ZERO, 1 << 30);
        capture.with(|c| c.twilio_text(Instant::ZERO, b"{}"));
        capture.decide(&writer, None);
        assert!(!capture.is_on());
        capture.finish(Instant::ZERO);
        assert_eq!(writer.stats().files.load(Ordering::Relaxed), 0);
        assert!(!Capture::begin(false, &BridgeConfig::default(), Instant::ZERO, 1 << 30).is_on());
    }

    #[test]
    fn a_full_queue_drops_the_batch_counts_it_and_marks_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = CaptureWriter::spawn(Arc::default()).expect("writer");
        let mut capture = Capture::begin(true, &BridgeConfig::default(), Instant::ZERO, 1 << 30);
        let path = dir.path().join("b.vxcap");
        capture.decide(&writer, Some((path.clone(), LegKind::Rtp)));
        // The first batch goes out; then the writer is as good as stalled.
        for i in 0..200 {
            capture.with(|c| c.twilio_text(Instant::from_millis(i), &frame(400)));
            capture.flush();
        }
        let stats = Arc::clone(writer.stats());
        wait_for(|| stats.queued_bytes.load(Ordering::Relaxed) == 0);
        stats.queued_bytes.fetch_add(MAX_QUEUED_BYTES, Ordering::Relaxed);
        for i in 200..400 {
            capture.with(|c| c.twilio_text(Instant::from_millis(i), &frame(400)));
            capture.flush();
        }
        assert!(stats.dropped_bytes.load(Ordering::Relaxed) >= BATCH_BYTES as u64);
        capture.finish(Instant::from_millis(400));
        wait_for(|| records_so_far(&path).last().map(String::as_str) == Some("end mark"));
        let names = records(&path);
        assert_eq!(names[names.len() - 2], "truncation mark", "{names:?}");
        assert!(names.len() < 300, "nothing after the dropped batch was written: {} records", names.len());
        assert_eq!(stats.truncated.load(Ordering::Relaxed), 1);
    }
}
