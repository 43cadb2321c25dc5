//! Call records: one JSON line per finished call, durable before the call's
//! resources are released.
//!
//! # How to drive it
//!
//! Fill a [`CallRecord`] from the bridge's statistics when a call ends, hand
//! it to the one [`CdrWriter`] of the process, and release the call's port,
//! socket and session entry only after [`CdrWriter::write`] returned `Ok`:
//! by then the line is on disk (`write` then `fsync`), so a crash right after
//! cannot lose it.
//!
//! The writer uses blocking std I/O and takes `&mut self`: it is meant to be
//! owned by one thread (a dedicated call-record thread fed by a channel, or
//! `spawn_blocking` with the writer moved in and out). Sharing it behind a
//! `Mutex` works too, but every caller then waits for the others' `fsync`.
//!
//! # File format and crash safety
//!
//! The file is JSON lines: one [`CallRecord`] object per line, each line
//! ending in `\n`, fields in the order of the struct, names in snake_case and
//! stable. The file is opened with `O_APPEND` and each record is one
//! `write` of the complete line, so a crash can at worst leave a partial
//! last line; earlier lines are never touched. A partial last line left by an
//! earlier crash, or by a failed write (disk full), is closed with a `\n`
//! before the next record, so the next record never merges into it: readers
//! skip the one unparsable line, and [`CdrWriter::torn_lines_repaired`]
//! counts them. A new file is created with mode `0640` (records hold phone
//! numbers). Naming a file that is not a regular file, such as `/dev/null`,
//! discards records without `fsync`.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use voxproxy::cdr::{CallRecord, CdrWriter, rfc3339_utc};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("cdr.jsonl");
//! let mut writer = CdrWriter::open(&path)?;
//!
//! let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let record = CallRecord {
//!     call_sid: "CA0123".into(),
//!     stream_sid: "MZ0123".into(),
//!     started_at: rfc3339_utc(started),
//!     ended_at: rfc3339_utc(started + Duration::from_secs(62)),
//!     duration_ms: 62_000,
//!     end_reason: "stop".into(),
//!     inbound_frames: 3100,
//!     custom_parameters: vec![("FirstName".into(), "Jane".into())],
//!     ..CallRecord::default()
//! };
//! writer.write(&record)?; // durable from here on: release the call's resources
//!
//! let text = std::fs::read_to_string(&path)?;
//! assert!(text.starts_with(r#"{"call_sid":"CA0123","stream_sid":"MZ0123","#));
//! assert!(text.contains(r#""started_at":"2023-11-14T22:13:20.000Z""#));
//! assert!(text.contains(r#""custom_parameters":{"FirstName":"Jane"}"#));
//! assert_eq!(serde_json::from_str::<CallRecord>(text.trim_end())?, record);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

pub mod journal;
pub mod ledger;

use journal::{Journal, JournalId, journal_path};

/// What is known about one finished call, written as one JSON line.
///
/// "Inbound" and "outbound" follow Twilio's track names: inbound is the
/// caller's audio (Twilio → voxproxy → backend), outbound is the backend's
/// audio (backend → voxproxy → Twilio). Field names are a stable contract:
/// add fields, never rename or remove them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallRecord {
    /// Twilio's call SID (`CA…`).
    pub call_sid: String,
    /// Twilio's media stream SID (`MZ…`).
    pub stream_sid: String,
    /// Twilio's account SID (`AC…`).
    pub account_sid: String,
    /// The caller, when the voice webhook passed it on as a stream parameter.
    pub from: Option<String>,
    /// The called number, when the voice webhook passed it on.
    pub to: Option<String>,
    /// When the media stream started, RFC 3339 UTC with milliseconds (see [`rfc3339_utc`]).
    pub started_at: String,
    /// When the call ended, same format as `started_at`.
    pub ended_at: String,
    /// Length of the stream in milliseconds, measured on the monotonic clock.
    pub duration_ms: u64,
    /// Why the call ended, a short snake_case word chosen by the proxy, such as
    /// `stop` (Twilio sent `stop`), `websocket_closed`, `idle_timeout`,
    /// `backend_timeout`, `deleted` (control API), `drain_timeout` or `error`.
    pub end_reason: String,
    /// The I/O backend of the worker that carried the call (`uring` or `epoll`).
    pub io_backend: String,
    /// Index of the worker thread that carried the call.
    pub worker: u32,
    /// `media` frames received from Twilio.
    pub inbound_frames: u64,
    /// Audio bytes received from Twilio (decoded payload, not base64).
    pub inbound_bytes: u64,
    /// `media` frames sent to Twilio.
    pub outbound_frames: u64,
    /// Audio bytes sent to Twilio (decoded payload, not base64).
    pub outbound_bytes: u64,
    /// RTP packets from the backend never received (counted at their playout deadline).
    pub rtp_lost: u64,
    /// RTP packets from the backend that arrived after their deadline and were dropped.
    pub rtp_late: u64,
    /// RTP packets from the backend received twice (the copy was dropped).
    pub rtp_duplicate: u64,
    /// RTP packets from the backend that arrived out of order but in time.
    pub rtp_reordered: u64,
    /// Frames synthesised by loss concealment in place of missing audio.
    pub concealed_frames: u64,
    /// Interarrival jitter of the backend's RTP at the end of the call (RFC 3550), microseconds.
    pub jitter_us: u64,
    /// Highest interarrival jitter seen during the call, microseconds.
    pub max_jitter_us: u64,
    /// Stretches of caller speech the VAD found.
    pub vad_segments: u64,
    /// Times caller speech cut off unplayed backend audio.
    pub barge_ins: u64,
    /// DTMF digits received from Twilio and relayed to the backend.
    pub dtmf_digits: u64,
    /// `mark` messages sent to Twilio.
    pub marks_sent: u64,
    /// Marks Twilio echoed because their audio played.
    pub marks_played: u64,
    /// Marks Twilio echoed because a `clear` discarded their audio.
    pub marks_cleared: u64,
    /// WebSocket messages from Twilio that could not be parsed.
    pub twilio_malformed: u64,
    /// Datagrams from the backend address that were not valid RTP.
    pub rtp_malformed: u64,
    /// Datagrams dropped because they came from an address other than the backend.
    pub rtp_foreign_source: u64,
    /// Backend outages: times the backend, after it had started sending,
    /// sent no RTP for `rtp.backend_timeout`.
    pub backend_outages: u64,
    /// Total time without backend RTP in those outages, in milliseconds: from
    /// the backend's last packet before each outage to its first packet after
    /// it, or to the end of the call.
    pub backend_outage_ms: u64,
    /// `start.customParameters`, written as a JSON object whose members keep
    /// this order. Names are unique (they come from one JSON object).
    #[serde(with = "ordered_object")]
    pub custom_parameters: Vec<(String, String)>,
    /// The route the call took: `routes[N]` or `default` (see
    /// `voxproxy_adapters::route::MatchedRoute::label`).
    pub route: Option<String>,
    /// The last call status Twilio reported (`completed`, `busy`, …).
    pub call_status: Option<String>,
    /// Every call status seen (the voice webhook's, then each status
    /// callback's), with when voxproxy received it; at most
    /// [`ledger::MAX_STATUS_EVENTS`].
    pub status_events: Vec<StatusEvent>,
    /// The forward's `DialCallStatus`, for a route with `forward_to`.
    pub dial_status: Option<String>,
    /// What the route's `on_missed` did (`stream`, `sms`, `hangup`) when the
    /// forward was missed or the leg failed.
    pub missed_action: Option<String>,
    /// Media streams the call had (0 for a call that never streamed).
    pub streams: u32,
    /// `media` frames of Twilio's `outbound` track (what the caller heard)
    /// received from a fork streaming both tracks (`track = "both_tracks"`);
    /// not counted in `inbound_frames`.
    pub outbound_track_frames: u64,
    /// RTP packets of that track sent to the backend on its own SSRC.
    pub outbound_track_rtp_packets: u64,
    /// SSRC of the RTP carrying the caller's audio to the backend (0 for a
    /// call that never streamed): how a recorder tells the tracks apart.
    pub rtp_ssrc: u32,
    /// SSRC of the `outbound` track's RTP, when the stream carried it.
    pub outbound_track_ssrc: Option<u32>,
    /// The `Call-ID` of the SIP dialog the call belongs to: voxproxy's
    /// INVITE to a `sip:` backend, or a PBX's INVITE through `sip.listen`.
    pub sip_call_id: Option<String>,
    /// Which way the SIP call went: `sip_to_twilio` (a PBX placed it
    /// through `sip.listen`); absent for voxproxy's own INVITE.
    pub sip_direction: Option<String>,
    /// The final SIP status of the INVITE: the PBX's answer to voxproxy's
    /// (200, 486 busy, 408 no answer in time, 487 cancelled, …), or what
    /// voxproxy answered a PBX's (200, or 486/480/503/487 for busy, no
    /// answer, failed, cancelled).
    pub sip_status: Option<u16>,
    /// Who ended a SIP call: `backend` (the PBX's BYE or CANCEL, or it
    /// stopped answering), `twilio` (Twilio's side hung up, or the call did
    /// not connect) or `voxproxy` (drain, control API, a failed leg).
    pub hung_up_by: Option<String>,
    /// The call's two-channel WAV (`recording.enabled`): channel 1 the
    /// caller, channel 2 what the caller heard. `None` when not recorded or
    /// when the file could not be written (`voxproxy_recording_errors_total`).
    pub recording_file: Option<String>,
    /// Where each millisecond went, for calls that streamed.
    pub latency: Option<Box<LatencyRecord>>,
    /// The backend leg of the stream: `rtp`, or `ws` for a WebSocket bot.
    pub leg: Option<String>,
    /// What happened on a `ws` leg.
    pub bot: Option<Box<BotRecord>>,
    /// The Twilio-side recording `recording.twilio` started, as its
    /// status callback (or the failed request) reported it.
    pub twilio_recording: Option<Box<TwilioRecording>>,
}

/// A Twilio-side recording in a call record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TwilioRecording {
    /// `RecordingSid` (`RE…`), once Twilio gave one.
    pub sid: Option<String>,
    /// The latest `RecordingStatus`: `in-progress`, `completed`, `absent`;
    /// `failed` when voxproxy's request to start it failed.
    pub status: String,
    /// `RecordingUrl`: the audio, fetched with the account's credentials.
    pub url: Option<String>,
    /// `RecordingDuration` in seconds, on `completed`.
    pub duration_s: Option<u32>,
    /// `RecordingChannels`.
    pub channels: Option<u8>,
    /// Why the request failed, or Twilio's `ErrorCode` when not 0.
    pub error: Option<String>,
}

/// A call's latency breakdown, in microseconds: for backend → Twilio the
/// time packets waited in the jitter buffer, the network's RFC 3550
/// jitter, concealment and voxproxy's processing; for Twilio → backend
/// voxproxy's processing and how late Twilio's frames came against their
/// timestamps. Percentiles are bucket bounds (see
/// `voxproxy_adapters::latency::BOUNDS_US`), maxima exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyRecord {
    /// Backend packets played out of the jitter buffer.
    pub jitter_buffer_packets: u64,
    /// Their median wait.
    pub jitter_buffer_wait_p50_us: u64,
    /// Their 99th percentile wait.
    pub jitter_buffer_wait_p99_us: u64,
    /// Their longest wait.
    pub jitter_buffer_wait_max_us: u64,
    /// RFC 3550 interarrival jitter of the backend's RTP at the end.
    pub network_jitter_us: u64,
    /// The largest it was during the call.
    pub max_network_jitter_us: u64,
    /// Frames concealed for lost backend packets.
    pub concealed_frames: u64,
    /// voxproxy's time per backend datagram, median.
    pub backend_processing_p50_us: u64,
    /// … 99th percentile.
    pub backend_processing_p99_us: u64,
    /// voxproxy's time per Twilio frame, median.
    pub twilio_processing_p50_us: u64,
    /// … 99th percentile.
    pub twilio_processing_p99_us: u64,
    /// How late Twilio's frames came against their media timestamps, median.
    pub twilio_burst_p50_us: u64,
    /// … 99th percentile.
    pub twilio_burst_p99_us: u64,
    /// … the latest.
    pub twilio_burst_max_us: u64,
}

impl From<&voxproxy_adapters::latency::LatencySummary> for LatencyRecord {
    fn from(s: &voxproxy_adapters::latency::LatencySummary) -> Self {
        LatencyRecord {
            jitter_buffer_packets: s.jitter_buffer_wait.count,
            jitter_buffer_wait_p50_us: s.jitter_buffer_wait.p50_us,
            jitter_buffer_wait_p99_us: s.jitter_buffer_wait.p99_us,
            jitter_buffer_wait_max_us: s.jitter_buffer_wait.max_us,
            network_jitter_us: s.network_jitter_us,
            max_network_jitter_us: s.max_network_jitter_us,
            concealed_frames: s.concealed_frames,
            backend_processing_p50_us: s.backend_processing.p50_us,
            backend_processing_p99_us: s.backend_processing.p99_us,
            twilio_processing_p50_us: s.twilio_processing.p50_us,
            twilio_processing_p99_us: s.twilio_processing.p99_us,
            twilio_burst_p50_us: s.twilio_burst.p50_us,
            twilio_burst_p99_us: s.twilio_burst.p99_us,
            twilio_burst_max_us: s.twilio_burst.max_us,
        }
    }
}

/// A WebSocket bot leg in a call record (`leg = "ws"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BotRecord {
    /// `twilio`, or `l16` with its rate (`l16-16000`).
    pub protocol: String,
    /// How long the bot's TCP, TLS and WebSocket handshakes took, ms
    /// (absent when the bot could not be reached).
    pub connect_ms: Option<u64>,
    /// Who ended the stream: `twilio`, `bot` or `voxproxy` (hangup, drain,
    /// timeouts, a failed leg).
    pub ended_by: String,
    /// WebSocket messages received from the bot.
    pub messages_in: u64,
    /// WebSocket messages sent to the bot.
    pub messages_out: u64,
    /// Bot messages refused (malformed, too large, out of protocol) and dropped.
    pub bad_messages: u64,
    /// Caller audio frames dropped because the bot was not reading.
    pub frames_to_bot_dropped: u64,
    /// Events for the bot (echoes, DTMF) dropped because it was not reading.
    pub events_to_bot_dropped: u64,
    /// μ-law bytes of bot audio queued for the caller.
    pub bot_audio_bytes: u64,
    /// μ-law bytes of bot audio dropped over `ws.max_queued_ms`.
    pub bot_audio_dropped_bytes: u64,
    /// The bot's marks (or notifies) echoed after their audio played.
    pub marks_played: u64,
    /// Marks echoed, or notifies dropped, because a clear discarded their audio.
    pub marks_cleared: u64,
    /// `clear`s from the bot.
    pub bot_clears: u64,
}

/// One call status in a record's `status_events`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// The `CallStatus`.
    pub status: String,
    /// When voxproxy received it, RFC 3339 UTC with milliseconds.
    pub at: String,
}

/// Writes `(name, value)` pairs as a JSON object and reads them back in the
/// order they appear, so records keep Twilio's order and stay easy to query
/// (`.custom_parameters.FirstName`).
mod ordered_object {
    use std::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        pairs: &[(String, String)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(pairs)
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// Why a call record could not be written. Each message names the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum CdrError {
    /// The file could not be opened or created (missing directory, no
    /// permission, a directory in its place).
    Open {
        /// The call-record file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The end of the file could not be read to look for a torn last line.
    Inspect {
        /// The call-record file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The record could not be encoded as JSON.
    Encode {
        /// The call-record file.
        path: PathBuf,
        /// What the encoder said.
        source: serde_json::Error,
    },
    /// Appending to the file failed (disk full, I/O error); part of the line
    /// may be in the file and is closed off before the next record.
    Write {
        /// The call-record file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The data or the new file's directory entry could not be flushed to
    /// disk; the record may be lost in a crash.
    Sync {
        /// The file or directory that could not be flushed.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
}

impl fmt::Display for CdrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdrError::Open { path, source } => write!(
                f,
                "cannot open call-record file {} for appending: {source}; check that its directory \
                 exists and is writable, or change cdr.path",
                path.display()
            ),
            CdrError::Inspect { path, source } => {
                write!(f, "cannot read the end of call-record file {}: {source}", path.display())
            }
            CdrError::Encode { path, source } => {
                write!(f, "cannot encode a call record for {} as JSON: {source}", path.display())
            }
            CdrError::Write { path, source } => {
                write!(f, "cannot append a call record to {}: {source}", path.display())
            }
            CdrError::Sync { path, source } => {
                write!(f, "cannot flush call records in {} to disk: {source}", path.display())
            }
        }
    }
}

impl core::error::Error for CdrError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            CdrError::Open { source, .. }
            | CdrError::Inspect { source, .. }
            | CdrError::Write { source, .. }
            | CdrError::Sync { source, .. } => Some(source),
            CdrError::Encode { source, .. } => Some(source),
        }
    }
}

/// Appends [`CallRecord`]s to a JSON-lines file, one durable line each. See
/// the [module docs](self).
#[derive(Debug)]
pub struct CdrWriter {
    file: File,
    path: PathBuf,
    /// Reused for every record, so steady state does not allocate.
    line: Vec<u8>,
    /// Whether the file is a regular file, which can be inspected and synced.
    regular: bool,
    /// Whether the file may end in a partial line (after a failed write).
    check_tail: bool,
    torn_lines_repaired: u64,
    /// Part of `torn_lines_repaired` already handed to [`CdrWriter::take_torn_lines`].
    torn_reported: u64,
}

impl CdrWriter {
    /// Opens `path` for appending, creating it (mode `0640`) if needed, and
    /// closes off a partial last line left by a crash.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CdrError> {
        let path = path.as_ref().to_path_buf();
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        let file = options.open(&path).map_err(|source| CdrError::Open { path: path.clone(), source })?;
        let meta = file.metadata().map_err(|source| CdrError::Inspect { path: path.clone(), source })?;
        let regular = meta.is_file();
        let mut writer = CdrWriter {
            file,
            path,
            line: Vec::with_capacity(2048),
            regular,
            check_tail: regular,
            torn_lines_repaired: 0,
            torn_reported: 0,
        };
        if regular {
            if meta.len() == 0 {
                // Probably just created: make its directory entry durable too,
                // or a crash could lose the whole file.
                writer.sync_directory()?;
            }
            writer.repair_tail()?;
        }
        Ok(writer)
    }

    /// The file records are appended to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many partial last lines (from a crash or a failed write) this
    /// writer has closed off with a `\n`.
    #[must_use]
    pub fn torn_lines_repaired(&self) -> u64 {
        self.torn_lines_repaired
    }

    /// [`CdrWriter::torn_lines_repaired`] since the last call, for a counter.
    pub fn take_torn_lines(&mut self) -> u64 {
        let n = self.torn_lines_repaired - self.torn_reported;
        self.torn_reported = self.torn_lines_repaired;
        n
    }

    /// Appends `record` as one line and flushes it to disk. When this returns
    /// `Ok`, the record survives a crash; release the call's resources after.
    pub fn write(&mut self, record: &CallRecord) -> Result<(), CdrError> {
        self.append(record)?;
        self.sync()
    }

    /// Appends `record` as one line without flushing it: several records
    /// share one [`CdrWriter::sync`], which must follow before any of them
    /// counts as durable.
    pub fn append(&mut self, record: &CallRecord) -> Result<(), CdrError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)
            .map_err(|source| CdrError::Encode { path: self.path.clone(), source })?;
        self.line.push(b'\n');
        if self.check_tail {
            self.repair_tail()?;
        }
        if let Err(source) = self.file.write_all(&self.line) {
            self.check_tail = self.regular;
            return Err(CdrError::Write { path: self.path.clone(), source });
        }
        Ok(())
    }

    /// Whether the file is a regular file (not `/dev/null` or a pipe): only
    /// then are records kept, and only then does a journal make sense.
    #[must_use]
    pub fn is_regular(&self) -> bool {
        self.regular
    }

    /// Ends the file with `\n` if it ends mid-line, and syncs that. The
    /// repair is logged once, naming the file and the torn line's length.
    fn repair_tail(&mut self) -> Result<(), CdrError> {
        let inspect = |source| CdrError::Inspect { path: self.path.clone(), source };
        let len = self.file.metadata().map_err(inspect)?.len();
        if len > 0 {
            let torn = torn_tail_len(&mut self.file, len).map_err(inspect)?;
            if torn > 0 {
                self.file
                    .write_all(b"\n")
                    .map_err(|source| CdrError::Write { path: self.path.clone(), source })?;
                self.sync()?;
                self.torn_lines_repaired += 1;
                tracing::warn!(
                    path = %self.path.display(),
                    torn_bytes = torn,
                    "call-record file ended in a torn line (a crash or a failed write): closed it off \
                     with a newline; readers skip that one unparsable line"
                );
            }
        }
        self.check_tail = false;
        Ok(())
    }

    /// Flushes every appended record to disk.
    pub fn sync(&self) -> Result<(), CdrError> {
        if !self.regular {
            return Ok(());
        }
        self.file.sync_data().map_err(|source| CdrError::Sync { path: self.path.clone(), source })
    }

    fn sync_directory(&self) -> Result<(), CdrError> {
        sync_parent(&self.path)
    }
}

/// How far back from the end a torn line is measured; a longer one is
/// reported as at least this long.
const TORN_SCAN_BYTES: u64 = 1 << 20;

/// Bytes after the last `\n` of a file of `len` bytes (0 when it ends in
/// one), looking back at most [`TORN_SCAN_BYTES`]. Moves only the read
/// position; `O_APPEND` writes still go to the end.
fn torn_tail_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut chunk = [0u8; 4096];
    let mut end = len;
    while end > 0 && len - end < TORN_SCAN_BYTES {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..usize::try_from(end - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(at) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(len - (start + at as u64 + 1));
        }
        end = start;
    }
    Ok(len - end)
}

/// Makes the directory entries of `path`'s directory durable (a new or
/// renamed file). File systems that cannot sync a directory are accepted.
fn sync_parent(path: &Path) -> Result<(), CdrError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported) => Ok(()),
        Err(source) => Err(CdrError::Sync { path: dir.to_path_buf(), source }),
    }
}

/// Milliseconds from 1970 to 0000-01-01T00:00:00Z and to the end of 9999,
/// the years RFC 3339 can write.
const MIN_MS: i128 = -62_167_219_200_000;
const MAX_MS: i128 = 253_402_300_799_999;

/// Formats a wall-clock time as RFC 3339 in UTC with milliseconds, such as
/// `2023-11-14T22:13:20.000Z`. Times outside the years 0000 to 9999 are
/// clamped to them; below a millisecond is dropped (rounded towards the past).
#[must_use]
pub fn rfc3339_utc(time: SystemTime) -> String {
    let ms: i128 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_millis()).unwrap_or(i128::MAX),
        // Before 1970: round towards the past, like the positive side.
        Err(before) => {
            let d = before.duration();
            let whole = i128::try_from(d.as_millis()).unwrap_or(i128::MAX);
            -whole - i128::from(d.subsec_nanos() % 1_000_000 != 0)
        }
    };
    let ms = ms.clamp(MIN_MS, MAX_MS);
    // In range, so these fit comfortably in i64.
    let seconds = i64::try_from(ms.div_euclid(1000)).unwrap_or(0);
    let millis = ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Proleptic Gregorian date of a day counted from 1970-01-01, after Howard
/// Hinnant's `civil_from_days`: shift to a calendar that starts in March so
/// the leap day falls at the end of the year, then count 400-year eras.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// What the call-record thread is asked to do.
///
/// Records are boxed: the queue preallocates [`CdrService::QUEUE`] slots
/// of the largest job and touches every one, so with a record inline the
/// empty queue alone was 3.1 MB resident (heaptrack of the proxy at start).
enum Job {
    /// A stream started: journal it.
    Started { id: u64, started_unix_ms: u64, record: Box<CallRecord> },
    /// A call's record as it now stands: what a crash writes instead of
    /// the `start` entry's.
    Stash { id: u64, record: Box<CallRecord> },
    /// A call ended: write its record, then retire its journal entry.
    Write { record: Box<CallRecord>, journal: Option<JournalId>, done: Done },
    /// Reopen the call-record file at the same path (log rotation).
    Reopen { done: Done },
}

type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// A [`CdrWriter`] and the [`Journal`] of calls in progress on their own
/// thread, so a slow disk's `fsync` never stalls a worker's other calls.
/// Calls hand their record over and wait for the answer before they release
/// their resources.
#[derive(Clone, Debug)]
pub struct CdrService {
    sender: crossbeam_channel::Sender<Job>,
    next_id: Arc<AtomicU64>,
    journaling: bool,
    /// Cleared when the writer thread ends for any reason (a panic included).
    alive: Arc<AtomicBool>,
    /// `CallSid`s whose records this start recovered from the journal.
    recovered: Arc<Vec<String>>,
}

/// Clears the writer's `alive` flag when its thread ends, even by a panic.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Job::Started { .. } => "Started",
            Job::Stash { .. } => "Stash",
            Job::Write { .. } => "Write",
            Job::Reopen { .. } => "Reopen",
        })
    }
}

impl CdrService {
    /// Jobs waiting for the disk before writers are told to wait.
    pub const QUEUE: usize = 4096;

    /// Opens the file (see [`CdrWriter::open`]), writes the records of calls
    /// a crash cut in the previous run (see [`journal`]), starts a new
    /// journal and starts the writer thread, which ends when every clone of
    /// the service is dropped. Call this before serving. A file that is not
    /// a regular file (`/dev/null`) gets no journal.
    pub fn spawn(path: impl AsRef<Path>, metrics: Arc<Metrics>) -> Result<Self, CdrError> {
        let path = path.as_ref().to_path_buf();
        let mut writer = CdrWriter::open(&path)?;
        metrics.cdr_torn_lines(writer.take_torn_lines());
        let (journal, recovered) = if writer.is_regular() {
            let (journal, recovered) = recover(&mut writer, &metrics)?;
            (Some(journal), recovered)
        } else {
            (None, Vec::new())
        };
        let journaling = journal.is_some();
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(Self::QUEUE);
        let mut thread = WriterThread { path, writer, journal, metrics };
        let alive = Arc::new(AtomicBool::new(true));
        let guard = AliveGuard(Arc::clone(&alive));
        std::thread::Builder::new()
            .name("voxproxy-cdr".into())
            .spawn(move || {
                let _guard = guard;
                thread.run(&receiver);
            })
            .map_err(|source| CdrError::Open { path: PathBuf::from("<cdr writer thread>"), source })?;
        Ok(CdrService {
            sender,
            next_id: Arc::new(AtomicU64::new(1)),
            journaling,
            alive,
            recovered: Arc::new(recovered),
        })
    }

    /// Whether the writer thread still runs (for `/v1/health`).
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Jobs waiting for the writer thread (for `/v1/health`): a queue that
    /// grows means the disk is slower than the calls ending.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.sender.len()
    }

    /// The `CallSid`s of the calls whose records this start wrote from the
    /// previous run's journal: a status callback for one of them that
    /// arrives now must not make a second record.
    #[must_use]
    pub fn recovered_call_sids(&self) -> &[String] {
        &self.recovered
    }

    /// Journals a call whose stream just started, so a crash before its
    /// record is written still leaves one at the next start. Never waits:
    /// with a full queue the entry is handed over from a blocking-pool thread.
    /// `None` when there is no journal (records go to `/dev/null`).
    #[must_use]
    pub fn journal_start(&self, record: CallRecord, started: SystemTime) -> Option<JournalId> {
        if !self.journaling {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started_unix_ms =
            u64::try_from(started.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(0);
        let job = Job::Started { id, started_unix_ms, record: Box::new(record) };
        if let Err(crossbeam_channel::TrySendError::Full(job)) = self.sender.try_send(job) {
            let sender = self.sender.clone();
            drop(tokio::task::spawn_blocking(move || sender.send(job).is_ok()));
        }
        Some(JournalId(id))
    }

    /// Replaces the journal's `start` entry of `id` (a call first journaled
    /// by a status callback whose stream has now started: the record is the
    /// stream's). Never waits.
    pub fn journal_restart(&self, id: JournalId, record: CallRecord, started: SystemTime) {
        let started_unix_ms =
            u64::try_from(started.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(0);
        self.hand_over(Job::Started { id: id.0, started_unix_ms, record: Box::new(record) });
    }

    /// Keeps `record` in the journal as the call's record so far: a crash
    /// before its real record writes this one (a stream's counters survive
    /// while the call waits for its final status). Never waits.
    pub fn journal_stash(&self, id: JournalId, record: CallRecord) {
        self.hand_over(Job::Stash { id: id.0, record: Box::new(record) });
    }

    fn hand_over(&self, job: Job) {
        if !self.journaling {
            return;
        }
        if let Err(crossbeam_channel::TrySendError::Full(job)) = self.sender.try_send(job) {
            let sender = self.sender.clone();
            drop(tokio::task::spawn_blocking(move || sender.send(job).is_ok()));
        }
    }

    /// As [`CdrService::write`] for many records, from a thread outside the
    /// async runtime (the table of calls in progress): hands them all over
    /// first, so the writer puts them under one `fsync`, then blocks until
    /// each is on disk. One result per record, in order.
    #[must_use]
    pub fn write_all_blocking(
        &self,
        records: Vec<(CallRecord, Option<JournalId>)>,
    ) -> Vec<Result<(), String>> {
        let stopped = || Err("the call-record writer has stopped".to_owned());
        let waits: Vec<_> = records
            .into_iter()
            .map(|(record, journal)| {
                let (done, wait) = tokio::sync::oneshot::channel();
                self.sender.send(Job::Write { record: Box::new(record), journal, done }).ok().map(|()| wait)
            })
            .collect();
        waits
            .into_iter()
            .map(|wait| wait.map_or_else(stopped, |w| w.blocking_recv().unwrap_or_else(|_| stopped())))
            .collect()
    }

    /// Writes `record` durably and retires its journal entry. `Err` carries
    /// a sentence for the log; the caller should then log the record itself
    /// (it is also kept in the journal and written at the next start).
    pub async fn write(&self, record: CallRecord, journal: Option<JournalId>) -> Result<(), String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Job::Write { record: Box::new(record), journal, done }).await?;
        wait.await.unwrap_or_else(|_| Err("the call-record writer has stopped".into()))
    }

    /// Reopens the call-record file at its path, for log rotation: records
    /// written after this go to a fresh file there. On failure records keep
    /// going to the old file.
    pub async fn reopen(&self) -> Result<(), String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Job::Reopen { done }).await?;
        wait.await.unwrap_or_else(|_| Err("the call-record writer has stopped".into()))
    }

    async fn send(&self, job: Job) -> Result<(), String> {
        // `send` blocks only when 4,096 jobs wait for the disk; checking
        // with try_send first keeps the worker's thread from ever blocking.
        match self.sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(job)) => {
                let sender = self.sender.clone();
                match tokio::task::spawn_blocking(move || sender.send(job).is_ok()).await {
                    Ok(true) => Ok(()),
                    _ => Err("the call-record writer has stopped".into()),
                }
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                Err("the call-record writer has stopped".into())
            }
        }
    }
}

/// Writes the previous run's unrecorded calls and starts a fresh journal;
/// returns it and the recovered calls' `CallSid`s.
fn recover(writer: &mut CdrWriter, metrics: &Metrics) -> Result<(Journal, Vec<String>), CdrError> {
    let path = journal_path(writer.path());
    let recovered = journal::recover(&path, writer.path())?;
    for record in &recovered.records {
        writer.append(record)?;
    }
    writer.sync()?;
    let count = recovered.records.len();
    if count > 0 || recovered.already_written > 0 || recovered.unreadable_lines > 0 {
        tracing::warn!(
            journal = %path.display(),
            recovered = count,
            already_written = recovered.already_written,
            unreadable_lines = recovered.unreadable_lines,
            "the previous run stopped with calls in progress (a crash or kill -9): wrote their records \
             with end_reason \"crash\""
        );
    }
    metrics.journal_recovered(count as u64);
    // Only now that those records are on disk may the old journal go.
    let sids = recovered.records.into_iter().map(|r| r.call_sid).collect();
    Ok((Journal::create(&path)?, sids))
}

/// The call-record thread's state.
struct WriterThread {
    path: PathBuf,
    writer: CdrWriter,
    journal: Option<Journal>,
    metrics: Arc<Metrics>,
}

impl WriterThread {
    fn run(&mut self, receiver: &crossbeam_channel::Receiver<Job>) {
        let mut batch = Vec::with_capacity(journal::BATCH);
        loop {
            match receiver.recv_timeout(journal::HEARTBEAT) {
                Ok(job) => batch.push(job),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            // Group whatever else is waiting under the same fsyncs.
            while batch.len() < journal::BATCH {
                let Ok(job) = receiver.try_recv() else { break };
                batch.push(job);
            }
            self.run_batch(&mut batch);
            if let Some(journal) = &mut self.journal
                && let Err(e) = journal.heartbeat()
            {
                tracing::warn!(error = %e, "cannot refresh the journal's time");
            }
        }
    }

    fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let mut appended: Vec<(Done, Option<JournalId>, CallRecord)> = Vec::new();
        let mut answers: Vec<(Done, Result<(), String>)> = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Started { id, started_unix_ms, record } => {
                    if let Some(journal) = &mut self.journal {
                        journal.stage_start(id, started_unix_ms, &record);
                    }
                }
                Job::Stash { id, record } => {
                    if let Some(journal) = &mut self.journal {
                        journal.stage_unwritten(id, &record);
                    }
                }
                Job::Write { record, journal, done } => match self.writer.append(&record) {
                    Ok(()) => appended.push((done, journal, *record)),
                    Err(e) => self.unwritten(done, journal, &record, &e, &mut answers),
                },
                Job::Reopen { done } => {
                    // Records appended so far belong to the old file: settle them first.
                    self.settle(&mut appended, &mut answers);
                    answers.push((done, self.reopen()));
                }
            }
        }
        self.settle(&mut appended, &mut answers);
        if let Some(journal) = &mut self.journal
            && let Err(e) = journal.commit()
        {
            tracing::error!(error = %e, "cannot write the journal of calls in progress");
        }
        for (done, result) in answers {
            // The call may have given up waiting; the record is written regardless.
            let _ = done.send(result);
        }
        self.metrics.cdr_torn_lines(self.writer.take_torn_lines());
    }

    /// One `fsync` for every record appended; then their entries retire.
    fn settle(
        &mut self,
        appended: &mut Vec<(Done, Option<JournalId>, CallRecord)>,
        answers: &mut Vec<(Done, Result<(), String>)>,
    ) {
        if appended.is_empty() {
            return;
        }
        let synced = self.writer.sync();
        if self.writer.is_regular() {
            self.metrics.cdr_sync();
        }
        match synced {
            Ok(()) => {
                for (done, id, _) in appended.drain(..) {
                    if let (Some(journal), Some(id)) = (&mut self.journal, id) {
                        journal.stage_end(id.0);
                    }
                    answers.push((done, Ok(())));
                }
            }
            Err(e) => {
                // The lines may or may not be on disk: recovery looks in the
                // file before writing any of them again.
                for (done, id, record) in appended.drain(..) {
                    self.unwritten(done, id, &record, &e, answers);
                }
            }
        }
    }

    fn unwritten(
        &mut self,
        done: Done,
        id: Option<JournalId>,
        record: &CallRecord,
        error: &CdrError,
        answers: &mut Vec<(Done, Result<(), String>)>,
    ) {
        if let (Some(journal), Some(id)) = (&mut self.journal, id) {
            journal.stage_unwritten(id.0, record);
        }
        answers.push((done, Err(error.to_string())));
    }

    fn reopen(&mut self) -> Result<(), String> {
        match CdrWriter::open(&self.path) {
            Ok(writer) => {
                self.metrics.cdr_torn_lines(self.writer.take_torn_lines());
                self.writer = writer;
                Ok(())
            }
            Err(e) => {
                self.metrics.cdr_reopen_error();
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_service_reports_its_writer_alive_until_the_thread_ends() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new(1, "epoll"));
        let service = CdrService::spawn(dir.path().join("cdr.jsonl"), metrics).unwrap();
        assert!(service.is_alive());
        assert_eq!(service.queued(), 0);
        let alive = Arc::clone(&service.alive);
        // The thread ends once every sender is gone; the guard clears the flag.
        drop(service);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "the writer thread never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// 2,000 calls ending together (a drain) share a few `fsync`s: the
    /// writer thread takes every record waiting, up to `journal::BATCH`,
    /// under one. `VOXPROXY_CDR_BENCH_DIR` puts the file on a disk of your
    /// choice (the temp dir may be tmpfs, where fsync costs nothing) and
    /// the test prints the time against one `fsync` per record (measured:
    /// 0.39 s with 9 fsyncs against 10.3 s with 2,000, debug build, ext4 on
    /// a shared virtual disk).
    #[test]
    fn a_drain_of_2000_calls_shares_its_fsyncs() {
        const CALLS: u64 = 2_000;
        let base = std::env::var_os("VOXPROXY_CDR_BENCH_DIR").map(PathBuf::from);
        let dir = match &base {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let metrics = Arc::new(Metrics::new(1, "epoll"));
        let service = CdrService::spawn(dir.path().join("grouped.jsonl"), Arc::clone(&metrics)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let started = std::time::Instant::now();
        let results = runtime.block_on(async {
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let tasks: Vec<_> = (0..CALLS)
                        .map(|n| {
                            let service = service.clone();
                            tokio::task::spawn_local(async move { service.write(sample(n), None).await })
                        })
                        .collect();
                    let mut results = Vec::new();
                    for task in tasks {
                        results.push(task.await.unwrap());
                    }
                    results
                })
                .await
        });
        let grouped = started.elapsed();
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(lines(&dir.path().join("grouped.jsonl")).len(), CALLS as usize);
        let syncs = metrics.cdr_syncs();
        assert!(
            (CALLS / journal::BATCH as u64..=CALLS / 20).contains(&syncs),
            "{syncs} fsyncs for {CALLS} records"
        );

        if base.is_none() {
            return;
        }
        // Measured only on request: 2,000 fsyncs take seconds on a disk.
        let mut one_by_one = CdrWriter::open(dir.path().join("sequential.jsonl")).unwrap();
        let started = std::time::Instant::now();
        for n in 0..CALLS {
            one_by_one.write(&sample(n)).unwrap();
        }
        let sequential = started.elapsed();
        eprintln!(
            "{CALLS} records: grouped {grouped:?} with {syncs} fsyncs; one fsync each {sequential:?} \
             (dir {})",
            dir.path().display()
        );
    }

    fn sample(n: u64) -> CallRecord {
        CallRecord {
            call_sid: format!("CA{n:032x}"),
            stream_sid: format!("MZ{n:032x}"),
            account_sid: "AC00000000000000000000000000000000".into(),
            from: Some("+15550100".into()),
            to: None,
            started_at: "2024-01-02T03:04:05.006Z".into(),
            ended_at: "2024-01-02T03:05:05.006Z".into(),
            duration_ms: 60_000 + n,
            end_reason: "stop".into(),
            io_backend: "epoll".into(),
            worker: 1,
            inbound_frames: 3000,
            inbound_bytes: 480_000,
            outbound_frames: 2990,
            outbound_bytes: 478_400,
            rtp_lost: 3,
            rtp_late: 1,
            rtp_duplicate: 2,
            rtp_reordered: 4,
            concealed_frames: 3,
            jitter_us: 1250,
            max_jitter_us: 9000,
            vad_segments: 7,
            barge_ins: 1,
            dtmf_digits: 4,
            marks_sent: 6,
            marks_played: 5,
            marks_cleared: 1,
            twilio_malformed: 0,
            rtp_malformed: 0,
            rtp_foreign_source: 2,
            backend_outages: 1,
            backend_outage_ms: 6_240,
            custom_parameters: vec![
                ("Zeta".into(), "last \"quoted\"\n".into()),
                ("Alpha".into(), "ü".into()),
            ],
            route: Some("routes[0]".into()),
            call_status: Some("completed".into()),
            status_events: vec![StatusEvent {
                status: "completed".into(),
                at: "2026-01-01T00:01:00.000Z".into(),
            }],
            dial_status: Some("no-answer".into()),
            missed_action: Some("stream".into()),
            streams: 1,
            outbound_track_frames: 250,
            outbound_track_rtp_packets: 250,
            rtp_ssrc: 0x5650_0001,
            outbound_track_ssrc: Some(0x5650_0002),
            sip_call_id: Some("a84b4c76e66710@pbx.example.com".into()),
            sip_direction: Some("sip_to_twilio".into()),
            sip_status: Some(200),
            hung_up_by: Some("pbx".into()),
            recording_file: Some("/var/rec/CA_MZ.wav".into()),
            latency: Some(Box::new(LatencyRecord {
                jitter_buffer_packets: 2_990,
                jitter_buffer_wait_max_us: 13_000,
                twilio_burst_p99_us: 40_000,
                ..LatencyRecord::default()
            })),
            leg: Some("ws".to_owned()),
            bot: Some(Box::new(BotRecord {
                protocol: "l16-16000".to_owned(),
                messages_in: 3,
                ..BotRecord::default()
            })),
            twilio_recording: Some(Box::new(TwilioRecording {
                sid: Some("RE0123456789abcdef0123456789abcdef".into()),
                status: "completed".into(),
                url: Some("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1".into()),
                duration_s: Some(60),
                channels: Some(2),
                error: None,
            })),
        }
    }

    #[test]
    fn a_call_record_stays_small() {
        // The ledger holds one per call in progress, from the voice webhook
        // to the end: memory per call. 1,080 bytes with the latency, bot and
        // Twilio recording parts inline; boxed, they cost 8 bytes each in
        // calls without them.
        let size = size_of::<CallRecord>();
        eprintln!("CallRecord: {size} bytes");
        assert!(size <= 728, "CallRecord grew to {size} bytes");
        // The writer's queue preallocates and touches CdrService::QUEUE
        // slots of a job: 3.1 MB resident with the record inline.
        assert!(size_of::<Job>() <= 64, "a job is {} bytes", size_of::<Job>());
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().split_inclusive('\n').map(str::to_owned).collect()
    }

    #[test]
    fn lines_are_json_objects_that_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let mut writer = CdrWriter::open(&path).unwrap();
        for n in 0..3 {
            writer.write(&sample(n)).unwrap();
        }
        let lines = lines(&path);
        assert_eq!(lines.len(), 3);
        for (n, line) in (0..).zip(&lines) {
            assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["call_sid"], format!("CA{n:032x}"));
            assert_eq!(value["to"], serde_json::Value::Null);
            assert_eq!(value["rtp_foreign_source"], 2);
            assert_eq!((&value["backend_outages"], &value["backend_outage_ms"]), (&1.into(), &6_240.into()));
            assert_eq!(serde_json::from_str::<CallRecord>(line).unwrap(), sample(n));
        }
        assert_eq!(writer.torn_lines_repaired(), 0);
    }

    #[test]
    fn field_names_are_the_documented_ones_in_order() {
        let line = serde_json::to_string(&CallRecord::default()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let names: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        let expected = [
            "call_sid",
            "stream_sid",
            "account_sid",
            "from",
            "to",
            "started_at",
            "ended_at",
            "duration_ms",
            "end_reason",
            "io_backend",
            "worker",
            "inbound_frames",
            "inbound_bytes",
            "outbound_frames",
            "outbound_bytes",
            "rtp_lost",
            "rtp_late",
            "rtp_duplicate",
            "rtp_reordered",
            "concealed_frames",
            "jitter_us",
            "max_jitter_us",
            "vad_segments",
            "barge_ins",
            "dtmf_digits",
            "marks_sent",
            "marks_played",
            "marks_cleared",
            "twilio_malformed",
            "rtp_malformed",
            "rtp_foreign_source",
            "backend_outages",
            "backend_outage_ms",
            "custom_parameters",
            "route",
            "call_status",
            "status_events",
            "dial_status",
            "missed_action",
            "streams",
            "outbound_track_frames",
            "outbound_track_rtp_packets",
            "rtp_ssrc",
            "outbound_track_ssrc",
            "sip_call_id",
            "sip_direction",
            "sip_status",
            "hung_up_by",
            "recording_file",
            "latency",
            "leg",
            "bot",
            "twilio_recording",
        ];
        // serde_json's Map is sorted unless preserve_order is on; compare as sets
        // here and check the order on the raw text.
        let mut sorted_names = names.clone();
        sorted_names.sort_unstable();
        let mut sorted_expected = expected.to_vec();
        sorted_expected.sort_unstable();
        assert_eq!(sorted_names, sorted_expected);
        let positions: Vec<usize> =
            expected.iter().map(|n| line.find(&format!("\"{n}\":")).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
    }

    #[test]
    fn custom_parameters_are_an_object_in_their_order() {
        let line = serde_json::to_string(&sample(0)).unwrap();
        assert!(line.contains(r#","custom_parameters":{"Zeta":"last \"quoted\"\n","Alpha":"ü"},"#), "{line}");
    }

    #[test]
    fn reading_tolerates_missing_fields() {
        let record: CallRecord = serde_json::from_str(r#"{"call_sid":"CA1","rtp_lost":9}"#).unwrap();
        assert_eq!(record, CallRecord { call_sid: "CA1".into(), rtp_lost: 9, ..CallRecord::default() });
    }

    #[test]
    fn reopening_appends_after_earlier_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        CdrWriter::open(&path).unwrap().write(&sample(1)).unwrap();
        let mut writer = CdrWriter::open(&path).unwrap();
        writer.write(&sample(2)).unwrap();
        let lines = lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(serde_json::from_str::<CallRecord>(&lines[0]).unwrap(), sample(1));
        assert_eq!(serde_json::from_str::<CallRecord>(&lines[1]).unwrap(), sample(2));
        assert_eq!(writer.torn_lines_repaired(), 0);
    }

    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let whole = serde_json::to_string(&sample(1)).unwrap();
        let torn = &whole[..whole.len() / 2];
        std::fs::write(&path, format!("{whole}\n{torn}")).unwrap();

        let mut writer = CdrWriter::open(&path).unwrap();
        assert_eq!(writer.torn_lines_repaired(), 1);
        writer.write(&sample(2)).unwrap();

        let lines = lines(&path);
        assert_eq!(lines, vec![format!("{whole}\n"), format!("{torn}\n"), lines[2].clone()]);
        assert!(serde_json::from_str::<CallRecord>(&lines[1]).is_err());
        assert_eq!(serde_json::from_str::<CallRecord>(&lines[2]).unwrap(), sample(2));
    }

    #[test]
    fn an_unwritable_path_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("cdr.jsonl");
        let err = CdrWriter::open(&missing).unwrap_err();
        assert!(matches!(err, CdrError::Open { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

        // A directory where the file should be.
        let err = CdrWriter::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_are_not_world_readable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let _writer = CdrWriter::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "mode {mode:o}");
    }

    #[cfg(unix)]
    #[test]
    fn dev_null_discards_records() {
        let mut writer = CdrWriter::open("/dev/null").unwrap();
        writer.write(&sample(1)).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_append_names_the_file() {
        // /dev/full refuses every write with "no space left on device".
        let mut writer = CdrWriter::open("/dev/full").unwrap();
        let err = writer.write(&sample(1)).unwrap_err();
        assert!(matches!(err, CdrError::Write { .. }));
        assert!(err.to_string().contains("/dev/full"), "{err}");
    }

    fn at(ms: i64) -> SystemTime {
        let magnitude = Duration::from_millis(ms.unsigned_abs());
        if ms >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
    }

    #[test]
    fn timestamps_at_known_instants() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(at(-1)), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH - Duration::from_micros(1)), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::from_micros(1999)), "1970-01-01T00:00:00.001Z");
        assert_eq!(rfc3339_utc(at(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(at(1_700_000_000_123)), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_utc(at(4_107_542_399_000)), "2100-02-28T23:59:59.000Z");
        assert_eq!(rfc3339_utc(at(4_107_542_400_000)), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(at(-62_167_219_200_000)), "0000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(at(-62_167_219_200_001)), "0000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(at(i64::MAX)), "9999-12-31T23:59:59.999Z");
    }

    /// Slow but obviously right: walk whole years, then whole months.
    fn naive_rfc3339(ms: i64) -> String {
        let is_leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = ms.div_euclid(86_400_000);
        let ms_of_day = ms.rem_euclid(86_400_000);
        let mut year = 1970;
        loop {
            let len = if is_leap(year) { 366 } else { 365 };
            if days >= len {
                days -= len;
                year += 1;
            } else if days < 0 {
                year -= 1;
                days += if is_leap(year) { 366 } else { 365 };
            } else {
                break;
            }
        }
        let mut month = 1;
        for len in [31, if is_leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
            if days < len {
                break;
            }
            days -= len;
            month += 1;
        }
        format!(
            "{year:04}-{month:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            days + 1,
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000
        )
    }

    proptest! {
        #[test]
        fn timestamps_match_a_naive_calendar(ms in -30_000_000_000_000i64..=30_000_000_000_000) {
            prop_assert_eq!(rfc3339_utc(at(ms)), naive_rfc3339(ms));
        }

        #[test]
        fn records_round_trip_through_json(
            sids in "[A-Za-z0-9]{0,34}",
            reason in "\\PC{0,20}",
            counters in proptest::collection::vec(any::<u64>(), 22),
            params in proptest::collection::vec(("\\PC{1,12}", "\\PC{0,12}"), 0..5),
            from in proptest::option::of("\\PC{0,16}"),
        ) {
            let mut params = params;
            params.dedup_by(|a, b| a.0 == b.0);
            let names: std::collections::HashSet<_> = params.iter().map(|p| p.0.clone()).collect();
            prop_assume!(names.len() == params.len());
            let record = CallRecord {
                call_sid: sids.clone(),
                stream_sid: sids.clone(),
                account_sid: sids,
                from,
                end_reason: reason,
                inbound_frames: counters[0],
                inbound_bytes: counters[1],
                outbound_frames: counters[2],
                outbound_bytes: counters[3],
                rtp_lost: counters[4],
                rtp_late: counters[5],
                rtp_duplicate: counters[6],
                rtp_reordered: counters[7],
                concealed_frames: counters[8],
                jitter_us: counters[9],
                max_jitter_us: counters[10],
                vad_segments: counters[11],
                barge_ins: counters[12],
                dtmf_digits: counters[13],
                marks_sent: counters[14],
                marks_played: counters[15],
                marks_cleared: counters[16],
                twilio_malformed: counters[17],
                rtp_malformed: counters[18],
                rtp_foreign_source: counters[19],
                backend_outages: counters[20],
                backend_outage_ms: counters[21],
                custom_parameters: params,
                ..CallRecord::default()
            };
            let line = serde_json::to_string(&record).unwrap();
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(serde_json::from_str::<CallRecord>(&line).unwrap(), record);
        }
    }
}
