//! Prometheus metrics: per-worker counters, summed on scrape.
//!
//! # How to drive it
//!
//! The server makes one [`Metrics`] for the process, with one
//! [`WorkerMetrics`] slot per worker thread, and shares it as an
//! `Arc<Metrics>`. Worker `i` records into [`Metrics::worker`]`(i)` and only
//! worker `i` does: every counter has a single writer, so recording is a
//! relaxed load and a relaxed store to memory that stays in that worker's
//! cache, with no lock, no read-modify-write and no allocation. The control
//! plane calls [`Metrics::render`] (for `GET /metrics`) or
//! [`Metrics::snapshot`] from any thread; they sum all workers with relaxed
//! loads, so a scrape may see one worker's counters a few nanoseconds older
//! than another's, which Prometheus tolerates.
//!
//! A call task reports its bridge's [`CallStats`] through
//! [`WorkerMetrics::add_call_stats`] about once a second and once more at the
//! end, each time with the statistics it reported last, so totals move during
//! long calls instead of jumping when they end.
//!
//! Two threads recording into the same [`WorkerMetrics`] at once is a misuse
//! that can lose increments (never memory safety, never a panic).
//!
//! ```
//! use std::sync::Arc;
//! use voxproxy::metrics::{Direction, Metrics, Route};
//! use voxproxy_adapters::bridge::{CallStats, EndReason};
//!
//! let metrics = Arc::new(Metrics::new(2, "epoll"));
//!
//! // On worker 1, while a call runs:
//! let worker = metrics.worker(1);
//! worker.http_request(Route::Media, 101);
//! worker.call_started();
//! let mut reported = CallStats::default();
//! let now = CallStats { twilio_frames_in: 50, twilio_frames_out: 48, ..CallStats::default() };
//! worker.add_call_stats(&reported, &now);
//! reported = now;
//! worker.observe_frame_processing(Direction::Inbound, 3_500);
//! let end = CallStats { twilio_frames_in: 60, ..reported };
//! worker.add_call_stats(&reported, &end);
//! worker.call_ended(EndReason::TwilioStop);
//!
//! // On the thread serving GET /metrics:
//! let mut body = String::new();
//! metrics.render(&mut body);
//! assert!(body.contains("voxproxy_twilio_frames_total{direction=\"in\"} 60\n"));
//! assert!(body.contains("voxproxy_calls_ended_total{reason=\"twilio_stop\"} 1\n"));
//! assert_eq!(metrics.snapshot().calls_active, 0);
//! ```
//!
//! # Exposition
//!
//! [`Metrics::render`] writes the Prometheus text format 0.0.4. Every series
//! of a fixed label set is always present, zero or not, so `rate()` works from
//! the first scrape. Direction labels `in`/`out` are seen from voxproxy on
//! that leg: `voxproxy_twilio_frames_total{direction="in"}` is frames received
//! from Twilio, `voxproxy_rtp_packets_total{direction="in"}` packets received
//! from the backend. HTTP requests are counted per route and status class
//! (`1xx` … `5xx`), which keeps the table at 55 series.
//!
//! The process gauges (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`) are read from `/proc/self` at scrape time on
//! Linux; one that cannot be read is left out of that scrape. CPU time is
//! kept by the kernel in clock ticks: the tick rate is read once from the
//! auxiliary vector (`AT_CLKTCK` in `/proc/self/auxv`, what `sysconf` reports)
//! rather than assumed to be 100 Hz; without it the CPU metric is left out.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use voxproxy_adapters::bridge::{CallStats, EndReason};

mod breakdown;
use crate::server::ports::PortPool;

mod sip;
pub use breakdown::BreakdownMetrics;
mod capture;
pub use capture::CaptureMetrics;
pub use sip::{SipMetrics, SipRefusal, SipSide};
mod bot;
pub use bot::{BotMetrics, BotTotals};
mod otel;
pub use otel::OtelMetrics;
mod store;
pub use store::{StoreEvent, StoreMetrics};
mod uring;
pub use uring::RingMetrics;

/// The process's metrics: one [`WorkerMetrics`] per worker thread plus the
/// process-wide gauges. See the [module documentation](self).
#[derive(Debug)]
pub struct Metrics {
    workers: Box<[WorkerMetrics]>,
    io_backend: &'static str,
    draining: AtomicBool,
    /// Kernel clock ticks per second, read once; `None` where unknown.
    clock_ticks: Option<u64>,
    /// Process-wide events of the daemon's life (signals, the call-record
    /// file, descriptors), recorded from any thread.
    lifecycle: Lifecycle,
    sip: SipMetrics,
    breakdown: BreakdownMetrics,
    capture: CaptureMetrics,
    bot: BotMetrics,
    otel: OtelMetrics,
    store: StoreMetrics,
    ring: RingMetrics,
    /// `voxproxy_max_calls`: `limits.max_calls` now (0 until the server sets it).
    max_calls: AtomicU64,
    /// The RTP port pool, read at scrape time for the port gauges.
    rtp_ports: OnceLock<Arc<PortPool>>,
    /// The log writer's dropped lines, read at scrape time.
    log_dropped: OnceLock<DroppedLines>,
}

/// Counters of the daemon's life, written from several threads (the signal
/// handler, the call-record writer, every worker), so each is an atomic
/// `fetch_add` rather than a single-writer [`Counter`].
#[derive(Debug, Default)]
struct Lifecycle {
    sighups: AtomicU64,
    cdr_reopen_errors: AtomicU64,
    cdr_torn_lines: AtomicU64,
    journal_recovered: AtomicU64,
    fd_exhausted: AtomicU64,
    cdr_syncs: AtomicU64,
    ledger: [AtomicU64; LEDGER_EVENTS.len()],
    /// `voxproxy_config_reloads_total`, in [`RELOAD_RESULTS`] order.
    config_reloads: [AtomicU64; RELOAD_RESULTS.len()],
}

/// Reads the log writer's count of dropped lines (kept by `tracing-appender`).
struct DroppedLines(Box<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for DroppedLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DroppedLines").field(&(self.0)()).finish()
    }
}

/// `result` labels of `voxproxy_config_reloads_total`: `ok` (the new
/// configuration serves new calls) and `error` (the file was refused; the
/// old configuration stays).
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "error"];

/// `event` labels of `voxproxy_call_ledger_total`, in [`Metrics::ledger`]
/// slot order: how each call's record came to be written, and callbacks
/// the table could not take.
pub const LEDGER_EVENTS: [&str; 9] = [
    "written_complete",
    "written_no_status_callback",
    "written_aged",
    "written_evicted",
    "written_shutdown",
    "late_callback",
    "untracked_full",
    "write_failed",
    "written_no_recording_status",
];

impl Metrics {
    /// Metrics for `workers` worker threads whose runtimes use `io_backend`
    /// (`"uring"` or `"epoll"`, exported as `voxproxy_io_backend_info{backend}`).
    #[must_use]
    pub fn new(workers: usize, io_backend: &'static str) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| WorkerMetrics::new()).collect(),
            io_backend,
            draining: AtomicBool::new(false),
            clock_ticks: std::fs::read("/proc/self/auxv").ok().and_then(|auxv| parse_clock_ticks(&auxv)),
            lifecycle: Lifecycle::default(),
            sip: SipMetrics::default(),
            breakdown: BreakdownMetrics::default(),
            capture: CaptureMetrics::default(),
            bot: BotMetrics::default(),
            otel: OtelMetrics::default(),
            store: StoreMetrics::default(),
            ring: RingMetrics::new(workers),
            max_calls: AtomicU64::new(0),
            rtp_ports: OnceLock::new(),
            log_dropped: OnceLock::new(),
        }
    }

    /// Sets `voxproxy_max_calls` (at start and on every reload).
    pub fn set_max_calls(&self, max_calls: u32) {
        self.max_calls.store(u64::from(max_calls), Relaxed);
    }

    /// Lets the scrape read the log writer's count of dropped lines
    /// (`voxproxy_log_dropped_lines_total`, [`crate::logging`]); the first
    /// reader given stays.
    pub fn watch_log_dropped_lines(&self, reader: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.log_dropped.set(DroppedLines(Box::new(reader)));
    }

    /// Lets the scrape read the RTP port pool for `voxproxy_rtp_ports` and
    /// `voxproxy_rtp_ports_free`; the first pool given stays.
    pub fn watch_rtp_ports(&self, pool: Arc<PortPool>) {
        let _ = self.rtp_ports.set(pool);
    }

    fn render_capacity(&self, x: &mut Exposition<'_>) {
        x.family("voxproxy_max_calls", "Concurrent calls allowed (limits.max_calls).", "gauge");
        x.sample("voxproxy_max_calls", &[], self.max_calls.load(Relaxed));
        if let Some(pool) = self.rtp_ports.get() {
            x.family("voxproxy_rtp_ports", "Ports of the RTP port range (rtp.ports).", "gauge");
            x.sample("voxproxy_rtp_ports", &[], pool.size());
            x.family("voxproxy_rtp_ports_free", "RTP ports no call holds now.", "gauge");
            x.sample("voxproxy_rtp_ports_free", &[], pool.available());
        }
    }

    /// A SIGHUP was handled: `voxproxy_sighup_total` +1.
    pub fn sighup(&self) {
        self.lifecycle.sighups.fetch_add(1, Relaxed);
    }

    /// A SIGHUP re-read the configuration: `voxproxy_config_reloads_total`
    /// +1 with `result="ok"` when it took effect, else `result="error"`.
    pub fn config_reload(&self, ok: bool) {
        self.lifecycle.config_reloads[usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// Reopening the call-record file failed (records keep going to the old
    /// file): `voxproxy_cdr_reopen_errors_total` +1.
    pub fn cdr_reopen_error(&self) {
        self.lifecycle.cdr_reopen_errors.fetch_add(1, Relaxed);
    }

    /// A torn last line of the call-record file was closed off:
    /// `voxproxy_cdr_torn_lines_total` +`n`.
    pub fn cdr_torn_lines(&self, n: u64) {
        self.lifecycle.cdr_torn_lines.fetch_add(n, Relaxed);
    }

    /// The table of calls in progress did `LEDGER_EVENTS[slot]`:
    /// `voxproxy_call_ledger_total{event}` +1.
    pub fn ledger(&self, slot: usize) {
        if let Some(counter) = self.lifecycle.ledger.get(slot) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// `n` calls cut by a crash got their records from the journal at
    /// start-up: `voxproxy_journal_recovered_calls_total` +`n`.
    pub fn journal_recovered(&self, n: u64) {
        self.lifecycle.journal_recovered.fetch_add(n, Relaxed);
    }

    /// An operation failed because the process (`EMFILE`) or the system
    /// (`ENFILE`) ran out of file descriptors: `voxproxy_fd_exhausted_total` +1.
    pub fn fd_exhausted(&self) {
        self.lifecycle.fd_exhausted.fetch_add(1, Relaxed);
    }

    /// The call-record file was `fsync`ed once for a group of records:
    /// `voxproxy_cdr_syncs_total` +1.
    pub fn cdr_sync(&self) {
        self.lifecycle.cdr_syncs.fetch_add(1, Relaxed);
    }

    /// `voxproxy_cdr_syncs_total` now.
    #[must_use]
    pub fn cdr_syncs(&self) -> u64 {
        self.lifecycle.cdr_syncs.load(Relaxed)
    }

    /// The slot of worker `index`, which only that worker's thread records
    /// into.
    ///
    /// # Panics
    ///
    /// If `index` is not below the `workers` given to [`Metrics::new`]; the
    /// index comes from the server's own worker loop, never from the network.
    #[must_use]
    pub fn worker(&self, index: usize) -> &WorkerMetrics {
        &self.workers[index]
    }

    /// How many worker slots there are.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The SIP counters (`voxproxy_sip_*`), shared by every SIP leg and the
    /// `sip.listen` server.
    #[must_use]
    pub fn sip(&self) -> &SipMetrics {
        &self.sip
    }

    /// The latency breakdown's histograms over every call and the
    /// recording writer's counters.
    #[must_use]
    pub fn breakdown(&self) -> &BreakdownMetrics {
        &self.breakdown
    }

    /// The capture writer's counters (`voxproxy_capture_*`).
    #[must_use]
    pub fn capture(&self) -> &CaptureMetrics {
        &self.capture
    }

    /// The io_uring workers' ring counters (`voxproxy_uring_*`).
    #[must_use]
    pub fn ring(&self) -> &RingMetrics {
        &self.ring
    }

    /// The WebSocket bot counters (`voxproxy_bot_*`), shared by every bot leg.
    #[must_use]
    pub fn bot(&self) -> &BotMetrics {
        &self.bot
    }

    /// The trace export counters (`voxproxy_otel_*`).
    #[must_use]
    pub fn otel(&self) -> &OtelMetrics {
        &self.otel
    }

    /// The PostgreSQL store's counters (`voxproxy_store_*`).
    #[must_use]
    pub fn store(&self) -> &StoreMetrics {
        &self.store
    }

    /// Sets the `voxproxy_draining` gauge (1 while the server drains).
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Relaxed);
    }

    /// Appends the whole Prometheus text exposition (format 0.0.4) to `out`,
    /// summing all workers.
    pub fn render(&self, out: &mut String) {
        let mut x = Exposition { out };

        x.family("voxproxy_calls_active", "Calls in progress.", "gauge");
        x.sample("voxproxy_calls_active", &[], self.calls_active());
        self.counter(&mut x, "voxproxy_calls_started_total", "Calls accepted.", |m| &m.calls_started);
        self.labeled(
            &mut x,
            "voxproxy_calls_ended_total",
            "Calls ended, by reason.",
            "reason",
            &END_REASON_NAMES,
            |m| &m.calls_ended,
        );
        self.labeled(
            &mut x,
            "voxproxy_calls_refused_total",
            "Calls refused before they started, by reason.",
            "reason",
            &RefuseReason::ALL.map(RefuseReason::name),
            |m| &m.calls_refused,
        );

        self.labeled(
            &mut x,
            "voxproxy_twilio_frames_total",
            "Twilio media frames received (in) and sent (out).",
            "direction",
            &IN_OUT,
            |m| &m.twilio_frames,
        );
        self.labeled(
            &mut x,
            "voxproxy_twilio_audio_bytes_total",
            "mu-law audio bytes received from (in) and sent to (out) Twilio.",
            "direction",
            &IN_OUT,
            |m| &m.twilio_audio_bytes,
        );
        self.labeled(
            &mut x,
            "voxproxy_twilio_rejected_frames_total",
            "WebSocket messages from Twilio that were rejected, by reason.",
            "reason",
            &TWILIO_REJECT_REASONS,
            |m| &m.twilio_rejected,
        );
        self.labeled(
            &mut x,
            "voxproxy_rtp_packets_total",
            "RTP packets received from (in) and sent to (out) the backend.",
            "direction",
            &IN_OUT,
            |m| &m.rtp_packets,
        );
        self.labeled(
            &mut x,
            "voxproxy_rtp_bytes_total",
            "RTP datagram bytes received from (in) and sent to (out) the backend.",
            "direction",
            &IN_OUT,
            |m| &m.rtp_bytes,
        );
        self.labeled(
            &mut x,
            "voxproxy_rtp_rejected_total",
            "Datagrams on RTP ports that were rejected, by reason.",
            "reason",
            &RTP_REJECT_REASONS,
            |m| &m.rtp_rejected,
        );
        self.counter(&mut x, "voxproxy_rtcp_received_total", "RTCP packets received on RTP ports.", |m| {
            &m.rtcp_received
        });
        self.counter(&mut x, "voxproxy_rtp_unsent_awaiting_backend_total", "RTP packets not sent because a latching backend (rtp.backend port 0) had not sent its first packet yet.", |m| {
            &m.rtp_unsent_awaiting_backend
        });
        self.counter(
            &mut x,
            "voxproxy_rtp_lost_packets_total",
            "Backend RTP packets declared lost by the jitter buffer.",
            |m| &m.rtp_lost,
        );
        self.counter(
            &mut x,
            "voxproxy_rtp_late_packets_total",
            "Backend RTP packets that arrived after their slot was concealed.",
            |m| &m.rtp_late,
        );
        self.counter(&mut x, "voxproxy_rtp_duplicate_packets_total", "Duplicate backend RTP packets.", |m| {
            &m.rtp_duplicate
        });
        self.counter(
            &mut x,
            "voxproxy_rtp_reordered_packets_total",
            "Backend RTP packets that arrived out of order but in time.",
            |m| &m.rtp_reordered,
        );
        self.counter(
            &mut x,
            "voxproxy_concealed_frames_total",
            "Frames of concealment audio sent to Twilio in place of lost packets.",
            |m| &m.concealed_frames,
        );
        self.counter(
            &mut x,
            "voxproxy_barge_ins_total",
            "Barge-ins: caller speech over backend audio.",
            |m| &m.barge_ins,
        );
        self.counter(
            &mut x,
            "voxproxy_barge_in_dropped_frames_total",
            "Backend audio frames dropped after a barge-in.",
            |m| &m.barge_in_dropped_frames,
        );
        self.labeled(
            &mut x,
            "voxproxy_dtmf_digits_total",
            "DTMF digits from the caller (twilio) and telephone events from the backend.",
            "source",
            &DTMF_SOURCES,
            |m| &m.dtmf_digits,
        );
        self.labeled(
            &mut x,
            "voxproxy_marks_total",
            "Marks sent to Twilio and echoed back as played or cleared.",
            "outcome",
            &MARK_OUTCOMES,
            |m| &m.marks,
        );
        self.counter(
            &mut x,
            "voxproxy_vad_segments_total",
            "Caller speech segments found by the VAD.",
            |m| &m.vad_segments,
        );
        self.counter(&mut x, "voxproxy_websocket_pings_total", "WebSocket pings sent to Twilio.", |m| {
            &m.websocket_pings
        });
        self.counter(&mut x, "voxproxy_rtp_keepalives_total", "RTP keep-alives sent to the backend.", |m| {
            &m.rtp_keepalives
        });
        self.counter(
            &mut x,
            "voxproxy_bridge_outputs_dropped_total",
            "Bridge outputs dropped because they were not drained (should stay 0).",
            |m| &m.bridge_outputs_dropped,
        );
        self.counter(
            &mut x,
            "voxproxy_backend_outages_total",
            "Backend outages: rtp.backend_timeout passed without RTP from a backend that had been sending.",
            |m| &m.backend_outages,
        );
        let outage = "voxproxy_backend_outage_seconds_total";
        x.family(
            outage,
            "Time without backend RTP during backend outages (added when each outage ends).",
            "counter",
        );
        x.sample(outage, &[], self.sum(|m| Some(&m.backend_outage_ms)) as f64 / 1_000.0);

        x.family(
            "voxproxy_backend_jitter_seconds",
            "Interarrival jitter of backend RTP (RFC 3550).",
            "histogram",
        );
        self.histogram(
            &mut x,
            "voxproxy_backend_jitter_seconds",
            None,
            &JITTER,
            |m| &m.jitter.buckets,
            |m| &m.jitter.sum,
        );
        x.family(
            "voxproxy_frame_processing_seconds",
            "Time voxproxy spent on one media frame, by direction.",
            "histogram",
        );
        for direction in Direction::ALL {
            let i = direction as usize;
            self.histogram(
                &mut x,
                "voxproxy_frame_processing_seconds",
                Some(("direction", direction.name())),
                &FRAME_PROCESSING,
                |m| &m.frame_processing[i].buckets,
                |m| &m.frame_processing[i].sum,
            );
        }

        x.family(
            "voxproxy_http_requests_total",
            "HTTP requests answered, by route and status code (series appear with their first request).",
            "counter",
        );
        for route in Route::ALL {
            for (index, code) in HTTP_CODE_LABELS.iter().enumerate() {
                let slot = route as usize * HTTP_CODE_LABELS.len() + index;
                let n = self.sum(|m| m.http_requests.get(slot));
                if n > 0 {
                    x.sample("voxproxy_http_requests_total", &[("route", route.name()), ("code", code)], n);
                }
            }
        }
        self.counter(
            &mut x,
            "voxproxy_http_body_too_large_total",
            "HTTP requests refused with 413 because the body was too large.",
            |m| &m.body_too_large,
        );
        x.family(
            "voxproxy_twilio_callbacks_total",
            "Twilio status callbacks accepted, by kind and the status they reported.",
            "counter",
        );
        for kind in CallbackKind::ALL {
            for (i, status) in kind.statuses().iter().enumerate() {
                let n = self.sum(|m| m.callbacks.get(kind.offset() + i));
                x.sample("voxproxy_twilio_callbacks_total", &[("kind", kind.name()), ("status", status)], n);
            }
        }
        self.labeled(
            &mut x,
            "voxproxy_twilio_callbacks_refused_total",
            "Twilio status callbacks refused with 400 because the body was not a valid callback, by kind.",
            "kind",
            &CallbackKind::ALL.map(CallbackKind::name),
            |m| &m.callbacks_refused,
        );
        self.counter(
            &mut x,
            "voxproxy_rate_limited_requests_total",
            "Webhook requests refused by the per-client rate limit.",
            |m| &m.rate_limited,
        );
        self.labeled(
            &mut x,
            "voxproxy_signature_failures_total",
            "Twilio requests with a missing or wrong signature, by kind.",
            "kind",
            &SignatureKind::ALL.map(SignatureKind::name),
            |m| &m.signature_failures,
        );
        self.labeled(
            &mut x,
            "voxproxy_websocket_errors_total",
            "WebSocket failures, by kind.",
            "kind",
            &WsErrorKind::ALL.map(WsErrorKind::name),
            |m| &m.websocket_errors,
        );
        self.counter(
            &mut x,
            "voxproxy_websocket_dropped_frames_total",
            "Frames to Twilio dropped because its WebSocket could not keep up.",
            |m| &m.websocket_dropped_frames,
        );
        self.labeled(
            &mut x,
            "voxproxy_rtp_socket_errors_total",
            "RTP socket send and receive errors.",
            "kind",
            &RtpErrorKind::ALL.map(RtpErrorKind::name),
            |m| &m.rtp_socket_errors,
        );
        self.counter(
            &mut x,
            "voxproxy_cdr_write_errors_total",
            "Call records that could not be written.",
            |m| &m.cdr_write_errors,
        );
        self.counter(
            &mut x,
            "voxproxy_events_dropped_total",
            "Control API events not delivered because the subscriber lagged.",
            |m| &m.events_dropped,
        );
        self.labeled(
            &mut x,
            "voxproxy_sse_subscribers_dropped_total",
            "Event stream subscribers disconnected: lagged (fell a whole event backlog behind) \
             or stalled (took no data for a while).",
            "reason",
            &SSE_DROP_REASONS,
            |m| &m.sse_subscribers_dropped,
        );

        let life = &self.lifecycle;
        for (name, help, value) in [
            (
                "voxproxy_sighup_total",
                "SIGHUPs handled (each reopens the call-record file and re-reads the configuration).",
                &life.sighups,
            ),
            (
                "voxproxy_cdr_reopen_errors_total",
                "Reopens of the call-record file that failed (records stay in the old file).",
                &life.cdr_reopen_errors,
            ),
            (
                "voxproxy_cdr_torn_lines_total",
                "Torn last lines of the call-record file closed off (left by a crash or a failed write).",
                &life.cdr_torn_lines,
            ),
            (
                "voxproxy_journal_recovered_calls_total",
                "Calls cut by a crash whose records were written from the journal at start-up.",
                &life.journal_recovered,
            ),
            (
                "voxproxy_fd_exhausted_total",
                "Operations that failed for want of a file descriptor (EMFILE or ENFILE).",
                &life.fd_exhausted,
            ),
            (
                "voxproxy_cdr_syncs_total",
                "fsyncs of the call-record file; records that finish together share one.",
                &life.cdr_syncs,
            ),
        ] {
            x.family(name, help, "counter");
            x.sample(name, &[], value.load(Relaxed));
        }

        x.family(
            "voxproxy_call_ledger_total",
            "Calls in progress whose one record was written, by why it was written then, and status \
             callbacks dropped (late: after the record; untracked_full: the table was full), and records \
             the writer refused (write_failed; the journal keeps them).",
            "counter",
        );
        for (event, value) in LEDGER_EVENTS.iter().zip(&life.ledger) {
            x.sample("voxproxy_call_ledger_total", &[("event", event)], value.load(Relaxed));
        }

        x.family(
            "voxproxy_config_reloads_total",
            "Configuration reloads on SIGHUP, by result (error: the file was refused, the old \
             configuration stays).",
            "counter",
        );
        for (result, value) in RELOAD_RESULTS.iter().zip(&life.config_reloads) {
            x.sample("voxproxy_config_reloads_total", &[("result", result)], value.load(Relaxed));
        }

        if let Some(DroppedLines(read)) = self.log_dropped.get() {
            x.family(
                "voxproxy_log_dropped_lines_total",
                "Log lines dropped because stderr did not keep up (the writer's queue was full).",
                "counter",
            );
            x.sample("voxproxy_log_dropped_lines_total", &[], read());
        }

        self.sip.render(&mut x);
        self.breakdown.render(&mut x);
        self.capture.render(&mut x);
        self.bot.render(&mut x);
        self.otel.render(&mut x);
        self.store.render(&mut x);
        self.ring.render(&mut x);

        x.family("voxproxy_io_backend_info", "The I/O backend the workers run on (always 1).", "gauge");
        x.sample("voxproxy_io_backend_info", &[("backend", self.io_backend)], 1);
        x.family("voxproxy_build_info", "The version and git revision of this build (always 1).", "gauge");
        x.sample(
            "voxproxy_build_info",
            &[("version", crate::build::VERSION), ("revision", crate::build::REVISION)],
            1,
        );
        self.render_capacity(&mut x);
        x.family("voxproxy_workers", "Worker threads.", "gauge");
        x.sample("voxproxy_workers", &[], self.workers.len());
        x.family("voxproxy_draining", "1 while the server drains, else 0.", "gauge");
        x.sample("voxproxy_draining", &[], u8::from(self.draining.load(Relaxed)));

        let process = ProcessStats::read(self.clock_ticks);
        if let Some(cpu) = process.cpu_time {
            x.family("process_cpu_seconds_total", "User and system CPU time spent, in seconds.", "counter");
            x.sample("process_cpu_seconds_total", &[], cpu.as_secs_f64());
        }
        if let Some(rss) = process.resident_memory_bytes {
            x.family("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge");
            x.sample("process_resident_memory_bytes", &[], rss);
        }
        if let Some(fds) = process.open_fds {
            x.family("process_open_fds", "Open file descriptors.", "gauge");
            x.sample("process_open_fds", &[], fds);
        }
        if let Some(max) = process.max_fds {
            x.family("process_max_fds", "Limit on open file descriptors.", "gauge");
            x.sample("process_max_fds", &[], max);
        }
        if let Some(start) = process.start_time_seconds {
            x.family(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch.",
                "gauge",
            );
            x.sample("process_start_time_seconds", &[], start);
        }
    }

    /// The main totals, summed over all workers, plus the process's CPU time
    /// and resident memory: for tests and the simulator's cost report.
    #[must_use]
    pub fn snapshot(&self) -> MetricsSnapshot {
        let process = ProcessStats::read(self.clock_ticks);
        let inbound = Direction::Inbound as usize;
        let outbound = Direction::Outbound as usize;
        MetricsSnapshot {
            calls_active: self.calls_active(),
            calls_started: self.sum(|m| Some(&m.calls_started)),
            calls_ended: self.sum_all(|m| &m.calls_ended),
            calls_refused: self.sum_all(|m| &m.calls_refused),
            twilio_frames_in: self.sum(|m| Some(&m.twilio_frames[IN])),
            twilio_frames_out: self.sum(|m| Some(&m.twilio_frames[OUT])),
            twilio_audio_bytes_in: self.sum(|m| Some(&m.twilio_audio_bytes[IN])),
            twilio_audio_bytes_out: self.sum(|m| Some(&m.twilio_audio_bytes[OUT])),
            rtp_packets_in: self.sum(|m| Some(&m.rtp_packets[IN])),
            rtp_packets_out: self.sum(|m| Some(&m.rtp_packets[OUT])),
            rtp_lost: self.sum(|m| Some(&m.rtp_lost)),
            rtp_late: self.sum(|m| Some(&m.rtp_late)),
            concealed_frames: self.sum(|m| Some(&m.concealed_frames)),
            websocket_dropped_frames: self.sum(|m| Some(&m.websocket_dropped_frames)),
            inbound_frames_timed: self.sum_all(|m| &m.frame_processing[inbound].buckets),
            inbound_processing: Duration::from_nanos(self.sum(|m| Some(&m.frame_processing[inbound].sum))),
            outbound_frames_timed: self.sum_all(|m| &m.frame_processing[outbound].buckets),
            outbound_processing: Duration::from_nanos(self.sum(|m| Some(&m.frame_processing[outbound].sum))),
            cpu_time: process.cpu_time,
            resident_memory_bytes: process.resident_memory_bytes,
        }
    }

    fn calls_active(&self) -> u64 {
        // Each worker's gauge is its own started minus ended, so a transient
        // underflow on one worker cannot borrow from another.
        self.workers.iter().map(|m| m.calls_active.get()).fold(0, u64::saturating_add)
    }

    /// One counter summed over workers; `None` from `pick` counts as 0.
    fn sum(&self, pick: impl Fn(&WorkerMetrics) -> Option<&Counter>) -> u64 {
        self.workers.iter().filter_map(pick).map(Counter::get).fold(0, u64::wrapping_add)
    }

    /// All counters of a slice summed over workers.
    fn sum_all(&self, pick: impl Fn(&WorkerMetrics) -> &[Counter]) -> u64 {
        self.workers.iter().flat_map(pick).map(Counter::get).fold(0, u64::wrapping_add)
    }

    fn counter(
        &self,
        x: &mut Exposition<'_>,
        name: &str,
        help: &str,
        pick: impl Fn(&WorkerMetrics) -> &Counter,
    ) {
        x.family(name, help, "counter");
        x.sample(name, &[], self.sum(|m| Some(pick(m))));
    }

    fn labeled(
        &self,
        x: &mut Exposition<'_>,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
        pick: impl Fn(&WorkerMetrics) -> &[Counter],
    ) {
        x.family(name, help, "counter");
        for (i, value) in values.iter().enumerate() {
            x.sample(name, &[(label, value)], self.sum(|m| pick(m).get(i)));
        }
    }

    fn histogram(
        &self,
        x: &mut Exposition<'_>,
        name: &str,
        label: Option<(&str, &str)>,
        spec: &HistogramSpec,
        buckets: impl Fn(&WorkerMetrics) -> &[Counter],
        sum: impl Fn(&WorkerMetrics) -> &Counter,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        let les = spec.le.iter().copied().chain(std::iter::once("+Inf"));
        for (i, le) in les.enumerate() {
            cumulative = cumulative.wrapping_add(self.sum(|m| buckets(m).get(i)));
            match label {
                Some(label) => x.sample(&bucket_name, &[label, ("le", le)], cumulative),
                None => x.sample(&bucket_name, &[("le", le)], cumulative),
            }
        }
        let labels: &[(&str, &str)] = match &label {
            Some(label) => std::slice::from_ref(label),
            None => &[],
        };
        // Sums are kept in the histogram's native unit (ns or µs) as integers
        // so the write path needs no floating point.
        let seconds = self.sum(|m| Some(sum(m))) as f64 / spec.units_per_second;
        x.sample(&format!("{name}_sum"), labels, seconds);
        x.sample(&format!("{name}_count"), labels, cumulative);
    }
}

/// Summed totals at one moment; see [`Metrics::snapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Calls in progress.
    pub calls_active: u64,
    /// Calls accepted since start.
    pub calls_started: u64,
    /// Calls ended since start, for any reason.
    pub calls_ended: u64,
    /// Calls refused since start, for any reason.
    pub calls_refused: u64,
    /// Media frames received from Twilio.
    pub twilio_frames_in: u64,
    /// Media frames sent to Twilio.
    pub twilio_frames_out: u64,
    /// μ-law bytes received from Twilio.
    pub twilio_audio_bytes_in: u64,
    /// μ-law bytes sent to Twilio.
    pub twilio_audio_bytes_out: u64,
    /// RTP packets received from the backend.
    pub rtp_packets_in: u64,
    /// RTP packets sent to the backend.
    pub rtp_packets_out: u64,
    /// Backend packets declared lost.
    pub rtp_lost: u64,
    /// Backend packets that came too late.
    pub rtp_late: u64,
    /// Concealment frames sent to Twilio.
    pub concealed_frames: u64,
    /// Frames to Twilio dropped by WebSocket backpressure.
    pub websocket_dropped_frames: u64,
    /// Inbound frames whose processing time was observed.
    pub inbound_frames_timed: u64,
    /// Total processing time of those inbound frames.
    pub inbound_processing: Duration,
    /// Outbound frames whose processing time was observed.
    pub outbound_frames_timed: u64,
    /// Total processing time of those outbound frames.
    pub outbound_processing: Duration,
    /// User plus system CPU time of the process, where `/proc` tells.
    pub cpu_time: Option<Duration>,
    /// Resident memory of the process in bytes, where `/proc` tells.
    pub resident_memory_bytes: Option<u64>,
}

/// One worker's counters. Only the owning worker thread records into it; see
/// the [module documentation](self).
// Aligned to two cache lines (the adjacent-line prefetcher pairs them) so
// neighbouring workers' slots never share one.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerMetrics {
    calls_active: Counter,
    calls_started: Counter,
    calls_ended: [Counter; END_REASON_NAMES.len()],
    calls_refused: [Counter; RefuseReason::ALL.len()],
    twilio_frames: [Counter; 2],
    twilio_audio_bytes: [Counter; 2],
    twilio_rejected: [Counter; TWILIO_REJECT_REASONS.len()],
    rtp_packets: [Counter; 2],
    rtp_bytes: [Counter; 2],
    rtp_rejected: [Counter; RTP_REJECT_REASONS.len()],
    rtcp_received: Counter,
    rtp_unsent_awaiting_backend: Counter,
    rtp_lost: Counter,
    rtp_late: Counter,
    rtp_duplicate: Counter,
    rtp_reordered: Counter,
    concealed_frames: Counter,
    barge_ins: Counter,
    barge_in_dropped_frames: Counter,
    dtmf_digits: [Counter; DTMF_SOURCES.len()],
    marks: [Counter; MARK_OUTCOMES.len()],
    vad_segments: Counter,
    websocket_pings: Counter,
    rtp_keepalives: Counter,
    bridge_outputs_dropped: Counter,
    backend_outages: Counter,
    /// Milliseconds, rendered as seconds.
    backend_outage_ms: Counter,
    jitter: Histogram<JITTER_SLOTS>,
    frame_processing: [Histogram<FRAME_PROCESSING_SLOTS>; 2],
    http_requests: [Counter; Route::ALL.len() * HTTP_CODE_LABELS.len()],
    body_too_large: Counter,
    rate_limited: Counter,
    callbacks: [Counter; CALLBACK_SLOTS],
    callbacks_refused: [Counter; CallbackKind::ALL.len()],
    signature_failures: [Counter; SignatureKind::ALL.len()],
    websocket_errors: [Counter; WsErrorKind::ALL.len()],
    websocket_dropped_frames: Counter,
    rtp_socket_errors: [Counter; RtpErrorKind::ALL.len()],
    cdr_write_errors: Counter,
    events_dropped: Counter,
    sse_subscribers_dropped: [Counter; SSE_DROP_REASONS.len()],
}

/// `reason` labels of `voxproxy_sse_subscribers_dropped_total`, in
/// [`SseDrop`] order.
const SSE_DROP_REASONS: [&str; 2] = ["lagged", "stalled"];

/// Which Twilio status callback (`kind` label of
/// `voxproxy_twilio_callbacks_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallbackKind {
    /// `POST /twilio/status`: `CallStatus`.
    CallStatus,
    /// `POST /twilio/stream-status`: `StreamEvent`.
    StreamStatus,
    /// `POST /twilio/dial-status`: `DialCallStatus`.
    DialStatus,
    /// `POST /twilio/recording-status`: `RecordingStatus`.
    RecordingStatus,
}

impl CallbackKind {
    /// Every kind, in label order.
    pub const ALL: [CallbackKind; 4] = [
        CallbackKind::CallStatus,
        CallbackKind::StreamStatus,
        CallbackKind::DialStatus,
        CallbackKind::RecordingStatus,
    ];

    /// The `kind` label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            CallbackKind::CallStatus => "call_status",
            CallbackKind::StreamStatus => "stream_status",
            CallbackKind::DialStatus => "dial_status",
            CallbackKind::RecordingStatus => "recording_status",
        }
    }

    /// The `status` label values of this kind; a value Twilio adds later is
    /// counted as `other`, so the label set stays bounded whatever arrives.
    #[must_use]
    pub const fn statuses(self) -> &'static [&'static str] {
        match self {
            CallbackKind::CallStatus => &[
                "queued",
                "initiated",
                "ringing",
                "in-progress",
                "completed",
                "busy",
                "failed",
                "no-answer",
                "canceled",
                "other",
            ],
            CallbackKind::StreamStatus => &["stream-started", "stream-stopped", "stream-error", "other"],
            CallbackKind::DialStatus => {
                &["completed", "answered", "busy", "no-answer", "failed", "canceled", "other"]
            }
            CallbackKind::RecordingStatus => &["in-progress", "completed", "absent", "other"],
        }
    }

    /// First slot of this kind in the flat counter array.
    const fn offset(self) -> usize {
        match self {
            CallbackKind::CallStatus => 0,
            CallbackKind::StreamStatus => 10,
            CallbackKind::DialStatus => 14,
            CallbackKind::RecordingStatus => 21,
        }
    }
}

/// Slots of `voxproxy_twilio_callbacks_total`: every kind's statuses.
const CALLBACK_SLOTS: usize = 25;

/// Why an event stream subscriber was disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SseDrop {
    /// It fell a whole event backlog behind.
    Lagged,
    /// It took no data for the stall timeout.
    Stalled,
}

impl WorkerMetrics {
    fn new() -> WorkerMetrics {
        WorkerMetrics {
            calls_active: Counter::default(),
            calls_started: Counter::default(),
            calls_ended: Default::default(),
            calls_refused: Default::default(),
            twilio_frames: Default::default(),
            twilio_audio_bytes: Default::default(),
            twilio_rejected: Default::default(),
            rtp_packets: Default::default(),
            rtp_bytes: Default::default(),
            rtp_rejected: Default::default(),
            rtcp_received: Counter::default(),
            rtp_unsent_awaiting_backend: Counter::default(),
            rtp_lost: Counter::default(),
            rtp_late: Counter::default(),
            rtp_duplicate: Counter::default(),
            rtp_reordered: Counter::default(),
            concealed_frames: Counter::default(),
            barge_ins: Counter::default(),
            barge_in_dropped_frames: Counter::default(),
            dtmf_digits: Default::default(),
            marks: Default::default(),
            vad_segments: Counter::default(),
            websocket_pings: Counter::default(),
            rtp_keepalives: Counter::default(),
            bridge_outputs_dropped: Counter::default(),
            backend_outages: Counter::default(),
            backend_outage_ms: Counter::default(),
            jitter: Histogram::new(),
            frame_processing: [Histogram::new(), Histogram::new()],
            http_requests: std::array::from_fn(|_| Counter::default()),
            body_too_large: Counter::default(),
            rate_limited: Counter::default(),
            callbacks: std::array::from_fn(|_| Counter::default()),
            callbacks_refused: Default::default(),
            signature_failures: Default::default(),
            websocket_errors: Default::default(),
            websocket_dropped_frames: Counter::default(),
            rtp_socket_errors: Default::default(),
            cdr_write_errors: Counter::default(),
            events_dropped: Counter::default(),
            sse_subscribers_dropped: Default::default(),
        }
    }

    /// A call was accepted: `voxproxy_calls_active` +1,
    /// `voxproxy_calls_started_total` +1.
    pub fn call_started(&self) {
        self.calls_active.add(1);
        self.calls_started.add(1);
    }

    /// A call this worker started has ended: `voxproxy_calls_active` −1 and
    /// `voxproxy_calls_ended_total{reason}` +1, with the reason's
    /// [`EndReason::name`] (`other` for a reason this build does not know).
    pub fn call_ended(&self, reason: EndReason) {
        self.calls_active.sub(1);
        if let Some(counter) = self.calls_ended.get(end_reason_slot(reason)) {
            counter.add(1);
        }
    }

    /// A call was refused before it started:
    /// `voxproxy_calls_refused_total{reason}` +1.
    pub fn call_refused(&self, reason: RefuseReason) {
        self.calls_refused[reason as usize].add(1);
    }

    /// Adds what a call's counters grew by since it last reported: `prev` is
    /// the [`CallStats`] passed as `now` last time (all zero the first time).
    /// A field that went down (which the bridge never does) adds 0, so a
    /// counter never goes backwards. The jitter fields are levels, not
    /// counters, and are left out: see [`WorkerMetrics::observe_jitter_us`].
    pub fn add_call_stats(&self, prev: &CallStats, now: &CallStats) {
        // Destructured without `..` so a field added to CallStats cannot be
        // forgotten here: it fails to compile until it is exported.
        let CallStats {
            twilio_frames_in,
            // A fork's second track: in the call record only, so that
            // `twilio_frames_total{direction="in"}` stays the caller's
            // frames (what the per-frame cost figures divide by). Its RTP
            // is in `rtp_packets_out`.
            twilio_outbound_track_frames_in: _,
            rtp_outbound_track_packets_out: _,
            rtp_dropped_one_way,
            rtp_dropped_on_hold,
            twilio_audio_bytes_in,
            twilio_frames_out,
            twilio_audio_bytes_out,
            twilio_malformed,
            twilio_unknown_events,
            twilio_oversize,
            twilio_out_of_order,
            // A refused `start` never becomes a call whose stats are
            // reported: it is counted as `calls_refused{reason="invalid_start"}`.
            twilio_unauthorized: _,
            rtp_packets_out,
            rtp_bytes_out,
            rtp_packets_in,
            rtp_bytes_in,
            rtp_malformed,
            rtp_foreign_source,
            rtp_unknown_payload_type,
            rtp_bad_payload,
            rtcp_in,
            rtp_unsent_awaiting_backend,
            rtp_lost,
            rtp_late,
            rtp_duplicate,
            rtp_reordered,
            concealed_frames,
            barge_in_dropped_frames,
            jitter_us: _,
            max_jitter_us: _,
            vad_segments,
            barge_ins,
            dtmf_digits,
            backend_dtmf_events,
            marks_sent,
            marks_played,
            marks_cleared,
            pings_sent,
            rtp_keepalives_sent,
            outputs_dropped,
            backend_outages,
            backend_outage_ms,
        } = *now;

        self.twilio_frames[IN].add(twilio_frames_in.saturating_sub(prev.twilio_frames_in));
        self.twilio_frames[OUT].add(twilio_frames_out.saturating_sub(prev.twilio_frames_out));
        self.twilio_audio_bytes[IN].add(twilio_audio_bytes_in.saturating_sub(prev.twilio_audio_bytes_in));
        self.twilio_audio_bytes[OUT].add(twilio_audio_bytes_out.saturating_sub(prev.twilio_audio_bytes_out));
        self.twilio_rejected[0].add(twilio_malformed.saturating_sub(prev.twilio_malformed));
        self.twilio_rejected[1].add(twilio_unknown_events.saturating_sub(prev.twilio_unknown_events));
        self.twilio_rejected[2].add(twilio_oversize.saturating_sub(prev.twilio_oversize));
        self.twilio_rejected[3].add(twilio_out_of_order.saturating_sub(prev.twilio_out_of_order));
        self.rtp_packets[IN].add(rtp_packets_in.saturating_sub(prev.rtp_packets_in));
        self.rtp_packets[OUT].add(rtp_packets_out.saturating_sub(prev.rtp_packets_out));
        self.rtp_bytes[IN].add(rtp_bytes_in.saturating_sub(prev.rtp_bytes_in));
        self.rtp_bytes[OUT].add(rtp_bytes_out.saturating_sub(prev.rtp_bytes_out));
        self.rtp_rejected[0].add(rtp_malformed.saturating_sub(prev.rtp_malformed));
        self.rtp_rejected[1].add(rtp_foreign_source.saturating_sub(prev.rtp_foreign_source));
        self.rtp_rejected[2].add(rtp_unknown_payload_type.saturating_sub(prev.rtp_unknown_payload_type));
        self.rtp_rejected[3].add(rtp_bad_payload.saturating_sub(prev.rtp_bad_payload));
        self.rtp_rejected[4].add(rtp_dropped_one_way.saturating_sub(prev.rtp_dropped_one_way));
        self.rtp_rejected[5].add(rtp_dropped_on_hold.saturating_sub(prev.rtp_dropped_on_hold));
        self.rtcp_received.add(rtcp_in.saturating_sub(prev.rtcp_in));
        self.rtp_unsent_awaiting_backend
            .add(rtp_unsent_awaiting_backend.saturating_sub(prev.rtp_unsent_awaiting_backend));
        self.rtp_lost.add(rtp_lost.saturating_sub(prev.rtp_lost));
        self.rtp_late.add(rtp_late.saturating_sub(prev.rtp_late));
        self.rtp_duplicate.add(rtp_duplicate.saturating_sub(prev.rtp_duplicate));
        self.rtp_reordered.add(rtp_reordered.saturating_sub(prev.rtp_reordered));
        self.concealed_frames.add(concealed_frames.saturating_sub(prev.concealed_frames));
        self.barge_in_dropped_frames
            .add(barge_in_dropped_frames.saturating_sub(prev.barge_in_dropped_frames));
        self.vad_segments.add(vad_segments.saturating_sub(prev.vad_segments));
        self.barge_ins.add(barge_ins.saturating_sub(prev.barge_ins));
        self.dtmf_digits[0].add(dtmf_digits.saturating_sub(prev.dtmf_digits));
        self.dtmf_digits[1].add(backend_dtmf_events.saturating_sub(prev.backend_dtmf_events));
        self.marks[0].add(marks_sent.saturating_sub(prev.marks_sent));
        self.marks[1].add(marks_played.saturating_sub(prev.marks_played));
        self.marks[2].add(marks_cleared.saturating_sub(prev.marks_cleared));
        self.websocket_pings.add(pings_sent.saturating_sub(prev.pings_sent));
        self.rtp_keepalives.add(rtp_keepalives_sent.saturating_sub(prev.rtp_keepalives_sent));
        self.bridge_outputs_dropped.add(outputs_dropped.saturating_sub(prev.outputs_dropped));
        self.backend_outages.add(backend_outages.saturating_sub(prev.backend_outages));
        self.backend_outage_ms.add(backend_outage_ms.saturating_sub(prev.backend_outage_ms));
    }

    /// Records one observation of backend jitter in microseconds (a call's
    /// current [`CallStats::jitter_us`], typically at each stats report) in
    /// `voxproxy_backend_jitter_seconds`.
    pub fn observe_jitter_us(&self, us: u64) {
        self.jitter.observe(&JITTER, us);
    }

    /// Records how long one media frame took to get through voxproxy, in
    /// nanoseconds, in `voxproxy_frame_processing_seconds{direction}`. A
    /// binary search over 13 bounds and two stores: fine per frame.
    pub fn observe_frame_processing(&self, direction: Direction, nanos: u64) {
        self.frame_processing[direction as usize].observe(&FRAME_PROCESSING, nanos);
    }

    /// A Twilio request failed signature validation:
    /// `voxproxy_signature_failures_total{kind}` +1.
    pub fn signature_failure(&self, kind: SignatureKind) {
        self.signature_failures[kind as usize].add(1);
    }

    /// A status callback of `kind` reported `status`:
    /// `voxproxy_twilio_callbacks_total{kind,status}` +1 (`other` for a
    /// status this version does not know).
    pub fn callback(&self, kind: CallbackKind, status: &str) {
        let statuses = kind.statuses();
        let index = statuses.iter().position(|s| *s == status).unwrap_or(statuses.len() - 1);
        if let Some(counter) = self.callbacks.get(kind.offset() + index) {
            counter.add(1);
        }
    }

    /// A status callback's body was refused (400):
    /// `voxproxy_twilio_callbacks_refused_total{kind}` +1.
    pub fn callback_refused(&self, kind: CallbackKind) {
        self.callbacks_refused[kind as usize].add(1);
    }

    /// A webhook was refused by the rate limit:
    /// `voxproxy_rate_limited_requests_total` +1.
    pub fn rate_limited(&self) {
        self.rate_limited.add(1);
    }

    /// An HTTP request on `route` was answered with `status`:
    /// `voxproxy_http_requests_total{route, code}` +1, where `code` is the
    /// status as a number (`"200"`); a status the server never sends (none
    /// is, a test reads the server's code for them) counts as `"other"`.
    pub fn http_request(&self, route: Route, status: u16) {
        let index = HTTP_CODES.iter().position(|&c| c == status).unwrap_or(HTTP_CODES.len());
        if let Some(counter) = self.http_requests.get(route as usize * HTTP_CODE_LABELS.len() + index) {
            counter.add(1);
        }
    }

    /// A request body was over the limit (413):
    /// `voxproxy_http_body_too_large_total` +1.
    pub fn body_too_large(&self) {
        self.body_too_large.add(1);
    }

    /// A WebSocket failed: `voxproxy_websocket_errors_total{kind}` +1.
    pub fn websocket_error(&self, kind: WsErrorKind) {
        self.websocket_errors[kind as usize].add(1);
    }

    /// `n` frames to Twilio were dropped because its WebSocket could not
    /// keep up: `voxproxy_websocket_dropped_frames_total` +`n`.
    pub fn websocket_frames_dropped(&self, n: u64) {
        self.websocket_dropped_frames.add(n);
    }

    /// An RTP socket call failed: `voxproxy_rtp_socket_errors_total{kind}` +1.
    pub fn rtp_error(&self, kind: RtpErrorKind) {
        self.rtp_socket_errors[kind as usize].add(1);
    }

    /// A call record could not be written: `voxproxy_cdr_write_errors_total`
    /// +1.
    pub fn cdr_write_error(&self) {
        self.cdr_write_errors.add(1);
    }

    /// `n` control API events were not delivered to a lagging subscriber:
    /// `voxproxy_events_dropped_total` +`n`.
    pub fn events_dropped(&self, n: u64) {
        self.events_dropped.add(n);
    }

    /// An event stream subscriber was disconnected:
    /// `voxproxy_sse_subscribers_dropped_total{reason}` +1.
    pub fn sse_subscriber_dropped(&self, reason: SseDrop) {
        self.sse_subscribers_dropped[reason as usize].add(1);
    }
}

/// Why a call was refused before it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// Every RTP port of the range was taken.
    NoRtpPort,
    /// `limits.max_calls` calls were already in progress.
    MaxCalls,
    /// The server is draining.
    Draining,
    /// A connection over a worker's connection bound (its share of
    /// `limits.max_calls` plus room for webhooks and scrapes) was closed at once.
    ConnectionLimit,
    /// The process is out of file descriptors (or too close to its limit to
    /// carry one more call).
    FdLimit,
    /// A connection from a client address (IPv4 address, IPv6 /64) that
    /// already held its share of a worker's connections was closed at once.
    AddressConnectionLimit,
    /// A media WebSocket sent no `start` in time; it held no call place.
    NoStart,
    /// A `start` without a valid stream token for its `callSid`, or with
    /// ids not shaped like Twilio's.
    InvalidStart,
    /// A `start` whose `streamSid` another live call already has.
    DuplicateStream,
    /// A voice webhook with a malformed `CallSid`/`AccountSid`, an oversize
    /// `From`/`To` or a missing field got a 400.
    InvalidWebhook,
    /// The caller placed more than `limits.calls_per_caller_per_minute`
    /// calls in a minute: answered busy.
    CallerRate,
}

impl RefuseReason {
    /// Every reason, in label order.
    pub const ALL: [RefuseReason; 11] = [
        RefuseReason::NoRtpPort,
        RefuseReason::MaxCalls,
        RefuseReason::Draining,
        RefuseReason::ConnectionLimit,
        RefuseReason::FdLimit,
        RefuseReason::AddressConnectionLimit,
        RefuseReason::NoStart,
        RefuseReason::InvalidStart,
        RefuseReason::DuplicateStream,
        RefuseReason::InvalidWebhook,
        RefuseReason::CallerRate,
    ];

    /// The `reason` label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            RefuseReason::NoRtpPort => "no_rtp_port",
            RefuseReason::MaxCalls => "max_calls",
            RefuseReason::Draining => "draining",
            RefuseReason::ConnectionLimit => "connection_limit",
            RefuseReason::FdLimit => "fd_limit",
            RefuseReason::AddressConnectionLimit => "address_connection_limit",
            RefuseReason::NoStart => "no_start",
            RefuseReason::InvalidStart => "invalid_start",
            RefuseReason::DuplicateStream => "duplicate_stream",
            RefuseReason::InvalidWebhook => "invalid_webhook",
            RefuseReason::CallerRate => "caller_rate",
        }
    }
}

/// Which way a media frame travels, in Twilio's track names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The caller's audio: Twilio → voxproxy → backend.
    Inbound,
    /// The backend's audio: backend → voxproxy → Twilio.
    Outbound,
}

impl Direction {
    /// Both directions, in label order.
    pub const ALL: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

    /// The `direction` label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Which Twilio signature failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureKind {
    /// `X-Twilio-Signature` of a webhook (`POST /twilio/...`).
    Webhook,
    /// `X-Twilio-Signature` of the Media Streams WebSocket handshake.
    WebSocket,
}

impl SignatureKind {
    /// Both kinds, in label order.
    pub const ALL: [SignatureKind; 2] = [SignatureKind::Webhook, SignatureKind::WebSocket];

    /// The `kind` label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            SignatureKind::Webhook => "webhook",
            SignatureKind::WebSocket => "websocket",
        }
    }
}

/// The routes of the HTTP listener, for `voxproxy_http_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /twilio/voice`.
    Voice,
    /// `POST /twilio/status`.
    Status,
    /// `POST /twilio/stream-status`.
    StreamStatus,
    /// `POST /twilio/dial-status` (the forward's `<Dial action>`).
    DialStatus,
    /// `POST /twilio/stream-ended` (the stream's `<Connect action>`).
    StreamEnded,
    /// `GET /twilio/media` (WebSocket upgrade; 101 counts as `1xx`).
    Media,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `/v1/sessions` and `/v1/sessions/{streamSid}`.
    Sessions,
    /// `GET /v1/events`.
    Events,
    /// `POST /v1/calls`.
    Calls,
    /// `GET /v1/config`.
    Config,
    /// `GET /v1/health`.
    Health,
    /// Any other path.
    NotFound,
    /// `POST /twilio/recording-status` (a Twilio-side recording's status).
    RecordingStatus,
}

impl Route {
    /// Every route, in label order.
    pub const ALL: [Route; 16] = [
        Route::Voice,
        Route::Status,
        Route::StreamStatus,
        Route::DialStatus,
        Route::StreamEnded,
        Route::Media,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Sessions,
        Route::Events,
        Route::Calls,
        Route::Config,
        Route::Health,
        Route::NotFound,
        Route::RecordingStatus,
    ];

    /// The `route` label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Route::Voice => "voice",
            Route::Status => "status",
            Route::StreamStatus => "stream_status",
            Route::DialStatus => "dial_status",
            Route::StreamEnded => "stream_ended",
            Route::Media => "media",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Sessions => "sessions",
            Route::Events => "events",
            Route::Calls => "calls",
            Route::Config => "config",
            Route::Health => "health",
            Route::NotFound => "not_found",
            Route::RecordingStatus => "recording_status",
        }
    }
}

/// How a WebSocket failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WsErrorKind {
    /// The upgrade handshake failed.
    Handshake,
    /// The peer broke the WebSocket protocol.
    Protocol,
    /// A message was over `limits.max_frame_bytes` (closed with 1009).
    Oversize,
    /// The connection failed underneath (reset, timeout).
    Io,
}

impl WsErrorKind {
    /// Every kind, in label order.
    pub const ALL: [WsErrorKind; 4] =
        [WsErrorKind::Handshake, WsErrorKind::Protocol, WsErrorKind::Oversize, WsErrorKind::Io];

    /// The `kind` label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            WsErrorKind::Handshake => "handshake",
            WsErrorKind::Protocol => "protocol",
            WsErrorKind::Oversize => "oversize",
            WsErrorKind::Io => "io",
        }
    }
}

/// Which RTP socket operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RtpErrorKind {
    /// Sending a datagram to the backend.
    Send,
    /// Receiving from the socket.
    Recv,
}

impl RtpErrorKind {
    /// Both kinds, in label order.
    pub const ALL: [RtpErrorKind; 2] = [RtpErrorKind::Send, RtpErrorKind::Recv];

    /// The `kind` label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            RtpErrorKind::Send => "send",
            RtpErrorKind::Recv => "recv",
        }
    }
}

const IN: usize = 0;
const OUT: usize = 1;
const IN_OUT: [&str; 2] = ["in", "out"];
const TWILIO_REJECT_REASONS: [&str; 4] = ["malformed", "unknown_event", "oversize", "out_of_order"];
/// `one_way`: backend RTP on a fork, which plays nothing back to Twilio.
const RTP_REJECT_REASONS: [&str; 6] =
    ["malformed", "foreign_source", "unknown_payload_type", "bad_payload", "one_way", "on_hold"];
const DTMF_SOURCES: [&str; 2] = ["twilio", "backend"];
const MARK_OUTCOMES: [&str; 3] = ["sent", "played", "cleared"];
/// The HTTP statuses the server answers with, the `code` labels of
/// `voxproxy_http_requests_total` (a fixed table keeps the counters a flat
/// array with no allocation per request).
const HTTP_CODES: [u16; 19] =
    [101, 200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409, 413, 426, 429, 500, 502, 503, 504];
/// [`HTTP_CODES`] as labels, then `other`.
const HTTP_CODE_LABELS: [&str; 20] = [
    "101", "200", "201", "202", "204", "400", "401", "403", "404", "405", "408", "409", "413", "426", "429",
    "500", "502", "503", "504", "other",
];

/// `reason` labels of `voxproxy_calls_ended_total`: the known
/// [`EndReason`]s, then `other` for variants added after this was written.
const END_REASON_NAMES: [&str; 9] = [
    EndReason::TwilioStop.name(),
    EndReason::WebSocketClosed.name(),
    EndReason::IdleTimeout.name(),
    EndReason::Hangup.name(),
    EndReason::Drain.name(),
    EndReason::Refused.name(),
    EndReason::BackendFailed.name(),
    EndReason::BackendHangup.name(),
    "other",
];

fn end_reason_slot(reason: EndReason) -> usize {
    match reason {
        EndReason::TwilioStop => 0,
        EndReason::WebSocketClosed => 1,
        EndReason::IdleTimeout => 2,
        EndReason::Hangup => 3,
        EndReason::Drain => 4,
        EndReason::Refused => 5,
        EndReason::BackendFailed => 6,
        EndReason::BackendHangup => 7,
        _ => 8,
    }
}

/// The fixed buckets of one histogram: upper bounds in the unit it is
/// recorded in, the same bounds in seconds as `le` label text, and how many
/// units make a second.
struct HistogramSpec {
    bounds: &'static [u64],
    le: &'static [&'static str],
    units_per_second: f64,
}

const JITTER_SLOTS: usize = 9;
const JITTER: HistogramSpec = HistogramSpec {
    bounds: &[500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000],
    le: &["0.0005", "0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1"],
    units_per_second: 1e6,
};

const FRAME_PROCESSING_SLOTS: usize = 14;
const FRAME_PROCESSING: HistogramSpec = HistogramSpec {
    bounds: &[
        1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
        5_000_000, 10_000_000,
    ],
    le: &[
        "0.000001", "0.000002", "0.000005", "0.00001", "0.00002", "0.00005", "0.0001", "0.0002", "0.0005",
        "0.001", "0.002", "0.005", "0.01",
    ],
    units_per_second: 1e9,
};

// One slot per bound plus +Inf, and one label per bound.
const _: () = assert!(JITTER.bounds.len() + 1 == JITTER_SLOTS && JITTER.le.len() == JITTER.bounds.len());
const _: () = assert!(
    FRAME_PROCESSING.bounds.len() + 1 == FRAME_PROCESSING_SLOTS
        && FRAME_PROCESSING.le.len() == FRAME_PROCESSING.bounds.len()
);

/// Per-bucket (not cumulative) counts, the last one for +Inf; rendering
/// accumulates them, so `_count` is the +Inf bucket by construction.
#[derive(Debug)]
struct Histogram<const SLOTS: usize> {
    buckets: [Counter; SLOTS],
    sum: Counter,
}

impl<const SLOTS: usize> Histogram<SLOTS> {
    fn new() -> Self {
        Histogram { buckets: std::array::from_fn(|_| Counter::default()), sum: Counter::default() }
    }

    fn observe(&self, spec: &HistogramSpec, value: u64) {
        // `le` is inclusive: a value equal to a bound belongs to that bucket.
        let slot = spec.bounds.partition_point(|&bound| bound < value);
        if let Some(bucket) = self.buckets.get(slot) {
            bucket.add(1);
        }
        self.sum.add(value);
    }
}

/// A counter with one writer: a load and a store instead of an atomic
/// read-modify-write, which the single-writer rule makes safe to do.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).saturating_sub(n), Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Writes families and samples of the text exposition format.
struct Exposition<'a> {
    out: &'a mut String,
}

impl Exposition<'_> {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        // Formatting into a String cannot fail.
        let _ = writeln!(self.out, " {value}");
    }
}

/// CPU time, resident memory and open file descriptors of another process
/// (`/proc/<pid>`), as the simulator reports the cost of a `voxproxy serve`
/// it drives. `None` where `/proc` does not tell.
#[must_use]
pub fn process_usage(pid: u32) -> ProcessUsage {
    let clock_ticks = std::fs::read("/proc/self/auxv").ok().and_then(|auxv| parse_clock_ticks(&auxv));
    usage_of(&ProcessStats::read_dir(&format!("/proc/{pid}"), clock_ticks))
}

/// [`process_usage`] without `open_fds`: listing `/proc/<pid>/fd` costs a
/// directory entry per descriptor (thousands in a loaded proxy), too much for
/// a sampler that looks several times a second.
#[must_use]
pub fn process_cpu_and_memory(pid: u32) -> ProcessUsage {
    let clock_ticks = std::fs::read("/proc/self/auxv").ok().and_then(|auxv| parse_clock_ticks(&auxv));
    usage_of(&ProcessStats::read_parts(&format!("/proc/{pid}"), clock_ticks, false))
}

fn usage_of(stats: &ProcessStats) -> ProcessUsage {
    ProcessUsage {
        cpu_time: stats.cpu_time,
        user_time: stats.user_time,
        system_time: stats.system_time,
        resident_memory_bytes: stats.resident_memory_bytes,
        open_fds: stats.open_fds,
    }
}

/// What [`process_usage`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessUsage {
    /// User plus system CPU time.
    pub cpu_time: Option<Duration>,
    /// User CPU time alone (`utime`): what the process's own code spent.
    pub user_time: Option<Duration>,
    /// System CPU time alone (`stime`): what the kernel spent on its behalf
    /// (socket calls, wake-ups, page faults).
    pub system_time: Option<Duration>,
    /// `VmRSS`.
    pub resident_memory_bytes: Option<u64>,
    /// Entries of `/proc/<pid>/fd`.
    pub open_fds: Option<u64>,
}

/// What `/proc/self` tells about the process; each part is `None` when it
/// could not be read or parsed.
#[derive(Debug, Default)]
struct ProcessStats {
    cpu_time: Option<Duration>,
    user_time: Option<Duration>,
    system_time: Option<Duration>,
    resident_memory_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    fn read(clock_ticks: Option<u64>) -> ProcessStats {
        Self::read_dir("/proc/self", clock_ticks)
    }

    fn read_dir(dir: &str, clock_ticks: Option<u64>) -> ProcessStats {
        Self::read_parts(dir, clock_ticks, true)
    }

    /// Everything, or everything but the descriptors, open and allowed (`fds: false`).
    fn read_parts(dir: &str, clock_ticks: Option<u64>, fds: bool) -> ProcessStats {
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok();
        let times = stat.as_deref().and_then(parse_stat);
        let ticks_to_duration = |ticks: u64| {
            let hz = clock_ticks.filter(|&hz| hz > 0)?;
            let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(hz);
            Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
        };
        let boot_time = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(parse_boot_time);
        ProcessStats {
            cpu_time: times.and_then(|t| ticks_to_duration(t.utime.saturating_add(t.stime))),
            user_time: times.and_then(|t| ticks_to_duration(t.utime)),
            system_time: times.and_then(|t| ticks_to_duration(t.stime)),
            resident_memory_bytes: std::fs::read_to_string(format!("{dir}/status"))
                .ok()
                .as_deref()
                .and_then(parse_vm_rss_bytes),
            open_fds: if fds {
                std::fs::read_dir(format!("{dir}/fd")).ok().map(|fds| fds.count() as u64)
            } else {
                None
            },
            max_fds: if fds {
                std::fs::read_to_string(format!("{dir}/limits")).ok().as_deref().and_then(parse_max_fds)
            } else {
                None
            },
            start_time_seconds: match (times, boot_time) {
                (Some(t), Some(boot)) => {
                    ticks_to_duration(t.start_ticks).map(|since_boot| boot as f64 + since_boot.as_secs_f64())
                }
                _ => None,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatTimes {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// `utime`, `stime` and `starttime` (fields 14, 15 and 22) of
/// `/proc/self/stat`. Field 2 is the command name in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<StatTimes> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state).
    let mut fields = rest.split_ascii_whitespace();
    let utime = fields.nth(14 - 3)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    let start_ticks = fields.nth(22 - 16)?.parse().ok()?;
    Some(StatTimes { utime, stime, start_ticks })
}

/// `AT_CLKTCK` from the auxiliary vector: pairs of native-endian words
/// (type, value), ending with type 0.
fn parse_clock_ticks(auxv: &[u8]) -> Option<u64> {
    const AT_NULL: u64 = 0;
    const AT_CLKTCK: u64 = 17;
    const WORD: usize = size_of::<usize>();
    let word = |bytes: &[u8]| -> Option<u64> {
        let mut buf = [0u8; WORD];
        buf.copy_from_slice(bytes.get(..WORD)?);
        u64::try_from(usize::from_ne_bytes(buf)).ok()
    };
    for pair in auxv.chunks_exact(2 * WORD) {
        let kind = word(pair)?;
        match kind {
            AT_NULL => return None,
            AT_CLKTCK => return word(pair.get(WORD..)?),
            _ => {}
        }
    }
    None
}

/// `VmRSS` of `/proc/self/status`, which the kernel writes in kB (KiB).
fn parse_vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// `btime` of `/proc/stat`: boot time in seconds since the Unix epoch.
fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()
}

/// This process's open file descriptors and their soft limit
/// (`RLIMIT_NOFILE`), from `/proc/self`: `None` for what cannot be read (or
/// an unlimited limit). Costs a directory listing of every open descriptor,
/// so it is for start-up, not for every request.
#[must_use]
pub fn own_fds() -> (Option<u64>, Option<u64>) {
    let stats = ProcessStats {
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|fds| fds.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(parse_max_fds),
        ..ProcessStats::default()
    };
    (stats.open_fds, stats.max_fds)
}

/// The soft limit of `Max open files` in `/proc/self/limits`; `None` when
/// unlimited.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The samples of an exposition, keyed by `name{labels}` as rendered,
    /// after checking the text against the 0.0.4 format rules the tests care
    /// about. Panics with the offending line on any violation.
    fn check_exposition(text: &str) -> BTreeMap<String, f64> {
        fn valid_name(name: &str) -> bool {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }

        /// Splits `name{k="v",...} value` into name, (label, value) pairs and value.
        fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
            let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
            let name = &line[..name_end];
            assert!(valid_name(name), "bad metric name: {line}");
            let mut labels = Vec::new();
            let mut rest = &line[name_end..];
            if let Some(inner) = rest.strip_prefix('{') {
                let mut chars = inner.char_indices().peekable();
                let end = loop {
                    let (start, c) = chars.next().unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    if c == '}' {
                        break start;
                    }
                    let mut key = String::from(c);
                    loop {
                        let (_, c) = chars.next().unwrap_or_else(|| panic!("bad label: {line}"));
                        if c == '=' {
                            break;
                        }
                        key.push(c);
                    }
                    assert!(valid_name(&key) && !key.starts_with("__"), "bad label name: {line}");
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "unquoted label: {line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().unwrap_or_else(|| panic!("unterminated value: {line}")).1 {
                            '"' => break,
                            '\\' => match chars.next().map(|(_, c)| c) {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                _ => panic!("bad escape: {line}"),
                            },
                            '\n' => panic!("raw newline in label: {line}"),
                            c => value.push(c),
                        }
                    }
                    assert!(labels.iter().all(|(k, _)| *k != key), "label repeated: {line}");
                    labels.push((key, value));
                    match chars.next() {
                        Some((_, ',')) => {}
                        Some((i, '}')) => break i,
                        _ => panic!("bad label separator: {line}"),
                    }
                };
                rest = &inner[end + 1..];
            }
            let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before value: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            (name.to_owned(), labels, value)
        }

        assert!(text.ends_with('\n'), "exposition must end with a newline");
        let mut samples = BTreeMap::new();
        let mut helped = BTreeSet::new();
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        let mut seen_families = BTreeSet::new();
        let mut current: Option<String> = None;
        // Histogram state of the current family: label set without `le` →
        // (last cumulative count, saw +Inf).
        let mut buckets: BTreeMap<String, (f64, Option<f64>)> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has a text");
                assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "bad type: {line}");
                assert!(helped.contains(name), "TYPE before HELP for {name}");
                assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none(), "TYPE twice for {name}");
                assert!(seen_families.insert(name.to_owned()), "family {name} split up");
                current = Some(name.to_owned());
                buckets.clear();
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line: {line:?}");
            let (name, labels, value) = parse_sample(line);
            let family = current.clone().unwrap_or_else(|| panic!("sample before TYPE: {line}"));
            let kind = &typed[&family];
            if kind == "histogram" {
                let others: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                let key = format!("{others:?}");
                if name == format!("{family}_bucket") {
                    let le = &labels.iter().find(|(k, _)| k == "le").expect("bucket has le").1;
                    let entry = buckets.entry(key).or_insert((0.0, None));
                    assert!(entry.1.is_none(), "bucket after +Inf: {line}");
                    assert!(value >= entry.0, "buckets not cumulative: {line}");
                    entry.0 = value;
                    if le == "+Inf" {
                        entry.1 = Some(value);
                    } else {
                        le.parse::<f64>().unwrap_or_else(|_| panic!("bad le: {line}"));
                    }
                } else if name == format!("{family}_count") {
                    let inf =
                        buckets.get(&key).and_then(|b| b.1).unwrap_or_else(|| panic!("no +Inf: {line}"));
                    assert_eq!(value, inf, "_count differs from the +Inf bucket: {line}");
                } else {
                    assert_eq!(name, format!("{family}_sum"), "sample outside its family: {line}");
                }
            } else {
                assert_eq!(name, family, "sample outside its family: {line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter without _total: {line}");
                }
            }
            let key = line.rsplit_once(' ').expect("checked above").0.to_owned();
            assert!(samples.insert(key, value).is_none(), "sample repeated: {line}");
        }
        assert_eq!(helped.len(), typed.len(), "HELP without TYPE");
        samples
    }

    fn rendered(metrics: &Metrics) -> BTreeMap<String, f64> {
        let mut text = String::new();
        metrics.render(&mut text);
        check_exposition(&text)
    }

    #[test]
    fn exposition_is_well_formed_when_empty_and_when_busy() {
        let metrics = Metrics::new(3, "uring");
        let empty = rendered(&metrics);
        assert_eq!(empty["voxproxy_calls_active"], 0.0);
        assert_eq!(empty["voxproxy_workers"], 3.0);
        assert_eq!(empty["voxproxy_io_backend_info{backend=\"uring\"}"], 1.0);
        assert_eq!(empty["voxproxy_draining"], 0.0);

        for (i, w) in (0..3).map(|i| (i, metrics.worker(i))) {
            w.call_started();
            w.observe_frame_processing(Direction::Outbound, 40_000 * (i as u64 + 1));
            w.observe_jitter_us(3_000);
            w.http_request(Route::Voice, 200);
            w.websocket_error(WsErrorKind::Protocol);
        }
        metrics.set_draining(true);
        let busy = rendered(&metrics);
        assert_eq!(busy["voxproxy_calls_active"], 3.0);
        assert_eq!(busy["voxproxy_draining"], 1.0);
        assert_eq!(busy["voxproxy_http_requests_total{route=\"voice\",code=\"200\"}"], 3.0);
        assert_eq!(busy["voxproxy_websocket_errors_total{kind=\"protocol\"}"], 3.0);
        // Same families, same series, whatever the values; only HTTP
        // requests appear by (route, code) as they are answered.
        let fixed = |m: &BTreeMap<String, f64>| {
            m.keys().filter(|k| !k.starts_with("voxproxy_http_requests_total")).cloned().collect::<Vec<_>>()
        };
        assert_eq!(fixed(&empty), fixed(&busy));
    }

    #[test]
    fn process_metrics_come_from_proc_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let samples = rendered(&Metrics::new(1, "epoll"));
        assert!(samples["process_resident_memory_bytes"] > 0.0);
        assert!(samples["process_open_fds"] >= 3.0);
        assert!(samples.contains_key("process_cpu_seconds_total"));
        let start = samples["process_start_time_seconds"];
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(start > 1.6e9 && start <= now + 1.0, "start time {start}");
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new(1, "a\"b\\c\nd");
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(text.contains("voxproxy_io_backend_info{backend=\"a\\\"b\\\\c\\nd\"} 1\n"));
        check_exposition(&text);
    }

    #[test]
    fn call_stats_deltas_reach_the_right_series() {
        let metrics = Metrics::new(1, "epoll");
        let w = metrics.worker(0);
        // Every field of `now` is its field of `prev` plus a distinct delta,
        // written out here so the expectations below do not come from the
        // code under test. The jitter fields must not be counted.
        let prev = CallStats {
            twilio_frames_in: 1000,
            twilio_outbound_track_frames_in: 40,
            rtp_outbound_track_packets_out: 41,
            rtp_dropped_one_way: 42,
            rtp_dropped_on_hold: 43,
            twilio_audio_bytes_in: 160_000,
            twilio_frames_out: 900,
            twilio_audio_bytes_out: 144_000,
            twilio_malformed: 1,
            twilio_unknown_events: 2,
            twilio_oversize: 3,
            twilio_out_of_order: 4,
            twilio_unauthorized: 0,
            rtp_packets_out: 1005,
            rtp_bytes_out: 172_860,
            rtp_packets_in: 905,
            rtp_bytes_in: 155_660,
            rtp_malformed: 5,
            rtp_foreign_source: 6,
            rtp_unknown_payload_type: 7,
            rtp_bad_payload: 8,
            rtcp_in: 9,
            rtp_unsent_awaiting_backend: 31,
            rtp_lost: 10,
            rtp_late: 11,
            rtp_duplicate: 12,
            rtp_reordered: 13,
            concealed_frames: 14,
            barge_in_dropped_frames: 15,
            jitter_us: 4_000,
            max_jitter_us: 9_000,
            vad_segments: 16,
            barge_ins: 17,
            dtmf_digits: 18,
            backend_dtmf_events: 19,
            marks_sent: 20,
            marks_played: 21,
            marks_cleared: 22,
            pings_sent: 23,
            rtp_keepalives_sent: 24,
            outputs_dropped: 25,
            backend_outages: 26,
            backend_outage_ms: 27_000,
        };
        let now = CallStats {
            twilio_frames_in: 1050,
            twilio_outbound_track_frames_in: 40 + 140,
            rtp_outbound_track_packets_out: 41 + 141,
            rtp_dropped_one_way: 42 + 142,
            rtp_dropped_on_hold: 43 + 143,
            twilio_audio_bytes_in: 168_000,
            twilio_frames_out: 951,
            twilio_audio_bytes_out: 152_160,
            twilio_malformed: 1 + 101,
            twilio_unknown_events: 2 + 102,
            twilio_oversize: 3 + 103,
            twilio_out_of_order: 4 + 104,
            twilio_unauthorized: 0,
            rtp_packets_out: 1057,
            rtp_bytes_out: 181_804,
            rtp_packets_in: 958,
            rtp_bytes_in: 164_776,
            rtp_malformed: 5 + 105,
            rtp_foreign_source: 6 + 106,
            rtp_unknown_payload_type: 7 + 107,
            rtp_bad_payload: 8 + 108,
            rtcp_in: 9 + 109,
            rtp_unsent_awaiting_backend: 31 + 131,
            rtp_lost: 10 + 110,
            rtp_late: 11 + 111,
            rtp_duplicate: 12 + 112,
            rtp_reordered: 13 + 113,
            concealed_frames: 14 + 114,
            barge_in_dropped_frames: 15 + 115,
            jitter_us: 5_000,
            max_jitter_us: 9_500,
            vad_segments: 16 + 116,
            barge_ins: 17 + 117,
            dtmf_digits: 18 + 118,
            backend_dtmf_events: 19 + 119,
            marks_sent: 20 + 120,
            marks_played: 21 + 121,
            marks_cleared: 22 + 122,
            pings_sent: 23 + 123,
            rtp_keepalives_sent: 24 + 124,
            outputs_dropped: 25 + 125,
            backend_outages: 26 + 126,
            backend_outage_ms: 27_000 + 12_750,
        };
        w.add_call_stats(&prev, &now);
        let expected: &[(&str, f64)] = &[
            ("voxproxy_twilio_frames_total{direction=\"in\"}", 50.0),
            ("voxproxy_twilio_frames_total{direction=\"out\"}", 51.0),
            ("voxproxy_twilio_audio_bytes_total{direction=\"in\"}", 8_000.0),
            ("voxproxy_twilio_audio_bytes_total{direction=\"out\"}", 8_160.0),
            ("voxproxy_twilio_rejected_frames_total{reason=\"malformed\"}", 101.0),
            ("voxproxy_twilio_rejected_frames_total{reason=\"unknown_event\"}", 102.0),
            ("voxproxy_twilio_rejected_frames_total{reason=\"oversize\"}", 103.0),
            ("voxproxy_twilio_rejected_frames_total{reason=\"out_of_order\"}", 104.0),
            ("voxproxy_rtp_packets_total{direction=\"out\"}", 52.0),
            ("voxproxy_rtp_bytes_total{direction=\"out\"}", 8_944.0),
            ("voxproxy_rtp_packets_total{direction=\"in\"}", 53.0),
            ("voxproxy_rtp_bytes_total{direction=\"in\"}", 9_116.0),
            ("voxproxy_rtp_rejected_total{reason=\"malformed\"}", 105.0),
            ("voxproxy_rtp_rejected_total{reason=\"foreign_source\"}", 106.0),
            ("voxproxy_rtp_rejected_total{reason=\"unknown_payload_type\"}", 107.0),
            ("voxproxy_rtp_rejected_total{reason=\"bad_payload\"}", 108.0),
            ("voxproxy_rtp_rejected_total{reason=\"one_way\"}", 142.0),
            ("voxproxy_rtp_rejected_total{reason=\"on_hold\"}", 143.0),
            ("voxproxy_rtcp_received_total", 109.0),
            ("voxproxy_rtp_unsent_awaiting_backend_total", 131.0),
            ("voxproxy_rtp_lost_packets_total", 110.0),
            ("voxproxy_rtp_late_packets_total", 111.0),
            ("voxproxy_rtp_duplicate_packets_total", 112.0),
            ("voxproxy_rtp_reordered_packets_total", 113.0),
            ("voxproxy_concealed_frames_total", 114.0),
            ("voxproxy_barge_in_dropped_frames_total", 115.0),
            ("voxproxy_vad_segments_total", 116.0),
            ("voxproxy_barge_ins_total", 117.0),
            ("voxproxy_dtmf_digits_total{source=\"twilio\"}", 118.0),
            ("voxproxy_dtmf_digits_total{source=\"backend\"}", 119.0),
            ("voxproxy_marks_total{outcome=\"sent\"}", 120.0),
            ("voxproxy_marks_total{outcome=\"played\"}", 121.0),
            ("voxproxy_marks_total{outcome=\"cleared\"}", 122.0),
            ("voxproxy_websocket_pings_total", 123.0),
            ("voxproxy_rtp_keepalives_total", 124.0),
            ("voxproxy_bridge_outputs_dropped_total", 125.0),
            ("voxproxy_backend_outages_total", 126.0),
            ("voxproxy_backend_outage_seconds_total", 12.75),
            ("voxproxy_backend_jitter_seconds_count", 0.0),
        ];
        let samples = rendered(&metrics);
        for (series, value) in expected {
            assert_eq!(samples.get(*series), Some(value), "{series}");
        }

        // The next report starts from `now`; a field that went backwards
        // adds nothing, the others keep adding.
        let later = CallStats { twilio_frames_in: 1060, rtp_lost: 0, ..now };
        w.add_call_stats(&now, &later);
        let samples = rendered(&metrics);
        assert_eq!(samples["voxproxy_twilio_frames_total{direction=\"in\"}"], 60.0);
        assert_eq!(samples["voxproxy_rtp_lost_packets_total"], 110.0);
        assert_eq!(samples["voxproxy_twilio_frames_total{direction=\"out\"}"], 51.0);

        let snapshot = metrics.snapshot();
        assert_eq!(
            (
                snapshot.twilio_frames_in,
                snapshot.twilio_frames_out,
                snapshot.rtp_packets_in,
                snapshot.rtp_lost
            ),
            (60, 51, 53, 110)
        );
    }

    #[test]
    fn workers_are_summed() {
        let metrics = Metrics::new(2, "epoll");
        let (a, b) = (metrics.worker(0), metrics.worker(1));
        a.call_started();
        a.call_started();
        b.call_started();
        a.call_ended(EndReason::Hangup);
        b.call_ended(EndReason::Hangup);
        b.call_refused(RefuseReason::NoRtpPort);
        a.add_call_stats(&CallStats::default(), &CallStats { twilio_frames_in: 7, ..CallStats::default() });
        b.add_call_stats(&CallStats::default(), &CallStats { twilio_frames_in: 5, ..CallStats::default() });
        a.signature_failure(SignatureKind::WebSocket);
        b.signature_failure(SignatureKind::WebSocket);
        a.rate_limited();
        b.websocket_frames_dropped(4);
        a.websocket_frames_dropped(3);
        b.rtp_error(RtpErrorKind::Recv);
        a.cdr_write_error();
        b.events_dropped(9);
        b.sse_subscriber_dropped(SseDrop::Stalled);
        a.body_too_large();
        a.observe_frame_processing(Direction::Inbound, 1_500);
        b.observe_frame_processing(Direction::Inbound, 2_500);

        let s = rendered(&metrics);
        assert_eq!(s["voxproxy_calls_active"], 1.0);
        assert_eq!(s["voxproxy_calls_started_total"], 3.0);
        assert_eq!(s["voxproxy_calls_ended_total{reason=\"hangup\"}"], 2.0);
        assert_eq!(s["voxproxy_calls_refused_total{reason=\"no_rtp_port\"}"], 1.0);
        assert_eq!(s["voxproxy_twilio_frames_total{direction=\"in\"}"], 12.0);
        assert_eq!(s["voxproxy_signature_failures_total{kind=\"websocket\"}"], 2.0);
        assert_eq!(s["voxproxy_signature_failures_total{kind=\"webhook\"}"], 0.0);
        assert_eq!(s["voxproxy_rate_limited_requests_total"], 1.0);
        assert_eq!(s["voxproxy_websocket_dropped_frames_total"], 7.0);
        assert_eq!(s["voxproxy_rtp_socket_errors_total{kind=\"recv\"}"], 1.0);
        assert_eq!(s["voxproxy_cdr_write_errors_total"], 1.0);
        assert_eq!(s["voxproxy_events_dropped_total"], 9.0);
        assert_eq!(s["voxproxy_sse_subscribers_dropped_total{reason=\"stalled\"}"], 1.0);
        assert_eq!(s["voxproxy_sse_subscribers_dropped_total{reason=\"lagged\"}"], 0.0);
        assert_eq!(s["voxproxy_http_body_too_large_total"], 1.0);
        assert_eq!(s["voxproxy_frame_processing_seconds_count{direction=\"inbound\"}"], 2.0);
        assert!((s["voxproxy_frame_processing_seconds_sum{direction=\"inbound\"}"] - 4e-6).abs() < 1e-12);

        let snap = metrics.snapshot();
        assert_eq!(
            (snap.calls_active, snap.calls_started, snap.calls_ended, snap.calls_refused),
            (1, 3, 2, 1)
        );
        assert_eq!((snap.inbound_frames_timed, snap.inbound_processing), (2, Duration::from_nanos(4_000)));
        assert_eq!(snap.websocket_dropped_frames, 7);
    }

    #[test]
    fn calls_active_never_goes_below_zero() {
        let metrics = Metrics::new(2, "epoll");
        metrics.worker(0).call_started();
        metrics.worker(1).call_ended(EndReason::Drain);
        assert_eq!(metrics.snapshot().calls_active, 1);
    }

    #[test]
    fn end_reasons_use_their_names() {
        let reasons = [
            EndReason::TwilioStop,
            EndReason::WebSocketClosed,
            EndReason::IdleTimeout,
            EndReason::Hangup,
            EndReason::Drain,
            EndReason::Refused,
        ];
        for reason in reasons {
            let metrics = Metrics::new(1, "epoll");
            metrics.worker(0).call_ended(reason);
            let s = rendered(&metrics);
            assert_eq!(s[&format!("voxproxy_calls_ended_total{{reason=\"{}\"}}", reason.name())], 1.0);
            assert_eq!(s["voxproxy_calls_ended_total{reason=\"other\"}"], 0.0);
        }
    }

    #[test]
    fn http_statuses_are_labelled_by_number() {
        let metrics = Metrics::new(1, "epoll");
        let w = metrics.worker(0);
        for status in [101, 200, 200, 204, 403, 413, 503, 299, 999] {
            w.http_request(Route::Media, status);
        }
        w.http_request(Route::NotFound, 404);
        let s = rendered(&metrics);
        let media = |code: &str| {
            s.get(&format!("voxproxy_http_requests_total{{route=\"media\",code=\"{code}\"}}")).copied()
        };
        assert_eq!(
            [media("101"), media("200"), media("204"), media("403"), media("413"), media("503")],
            [Some(1.0), Some(2.0), Some(1.0), Some(1.0), Some(1.0), Some(1.0)]
        );
        assert_eq!(media("other"), Some(2.0), "299 and 999 are no status the server sends");
        assert_eq!(media("404"), None, "a series appears with its first request");
        assert_eq!(s["voxproxy_http_requests_total{route=\"not_found\",code=\"404\"}"], 1.0);
    }

    /// Every status the server's code answers with has its own `code`
    /// label: read from the source, so a new status cannot land in `other`.
    #[test]
    fn every_status_the_server_sends_has_a_label() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/server");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for name in text.split("StatusCode::").skip(1) {
                let name: String = name.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
                if name.is_empty() {
                    continue;
                }
                let code = status_of(&name);
                assert!(HTTP_CODES.contains(&code), "StatusCode::{name} ({code}) is not in HTTP_CODES");
                seen += 1;
            }
        }
        assert!(seen > 20, "the server's statuses were found ({seen})");
        assert_eq!(HTTP_CODE_LABELS.len(), HTTP_CODES.len() + 1);
        for (code, label) in HTTP_CODES.iter().zip(HTTP_CODE_LABELS) {
            assert_eq!(code.to_string(), label);
        }
    }

    /// The number of an `http::StatusCode` constant, by its name (the
    /// canonical reason upper-cased, as the `http` crate names them).
    fn status_of(name: &str) -> u16 {
        (100..600)
            .filter_map(|n| http::StatusCode::from_u16(n).ok())
            .find(|s| {
                s.canonical_reason().is_some_and(|r| r.to_ascii_uppercase().replace([' ', '-'], "_") == name)
            })
            .map_or(0, |s| s.as_u16())
    }

    #[test]
    fn build_info_and_capacity_are_exported() {
        let metrics = Metrics::new(1, "epoll");
        metrics.set_max_calls(2000);
        let pool = PortPool::new(
            std::net::Ipv4Addr::LOCALHOST.into(),
            crate::config::PortRange { low: 40000, high: 40009 },
        );
        metrics.watch_rtp_ports(Arc::clone(&pool));
        let s = rendered(&metrics);
        assert_eq!(s["voxproxy_max_calls"], 2000.0);
        assert_eq!(s["voxproxy_rtp_ports"], 10.0);
        assert_eq!(s["voxproxy_rtp_ports_free"], 10.0);
        assert_eq!(s["voxproxy_io_backend_info{backend=\"epoll\"}"], 1.0);
        let build = format!(
            "voxproxy_build_info{{version=\"{}\",revision=\"{}\"}}",
            crate::build::VERSION,
            crate::build::REVISION
        );
        assert_eq!(s[&build], 1.0);
    }

    #[test]
    fn enum_tables_match_discriminants() {
        assert!(Route::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        assert!(CallbackKind::ALL.iter().enumerate().all(|(i, k)| *k as usize == i));
        // The kinds' status slots tile the flat array exactly.
        let mut next = 0;
        for kind in CallbackKind::ALL {
            assert_eq!(kind.offset(), next, "{kind:?}");
            next += kind.statuses().len();
        }
        assert_eq!(next, CALLBACK_SLOTS);
        assert!(RefuseReason::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        assert!(Direction::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        assert!(SignatureKind::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        assert!(WsErrorKind::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        assert!(RtpErrorKind::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
    }

    #[test]
    fn le_labels_match_bounds() {
        for spec in [&JITTER, &FRAME_PROCESSING] {
            for (bound, le) in spec.bounds.iter().zip(spec.le) {
                let seconds: f64 = le.parse().unwrap();
                assert!((seconds * spec.units_per_second - *bound as f64).abs() < 1e-6, "{le} vs {bound}");
            }
        }
    }

    /// Cumulative bucket counts of one frame-processing direction, in `le`
    /// order ending with +Inf.
    fn frame_buckets(metrics: &Metrics, direction: &str) -> Vec<f64> {
        let s = rendered(metrics);
        let les = [
            "0.000001", "0.000002", "0.000005", "0.00001", "0.00002", "0.00005", "0.0001", "0.0002",
            "0.0005", "0.001", "0.002", "0.005", "0.01", "+Inf",
        ];
        les.iter()
            .map(|le| {
                s[&format!(
                    "voxproxy_frame_processing_seconds_bucket{{direction=\"{direction}\",le=\"{le}\"}}"
                )]
            })
            .collect()
    }

    #[test]
    fn histogram_bounds_are_inclusive() {
        let metrics = Metrics::new(1, "epoll");
        let w = metrics.worker(0);
        // 0 and exactly 1 µs go in le=1µs; 1 ns more goes in le=2µs; exactly
        // 10 ms is the last finite bucket; anything above is only in +Inf.
        for nanos in [0, 1_000, 1_001, 2_000, 499_999, 500_000, 500_001, 10_000_000, 10_000_001, u64::MAX / 2]
        {
            w.observe_frame_processing(Direction::Outbound, nanos);
        }
        let expected_cumulative = [2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 6.0, 7.0, 7.0, 7.0, 8.0, 10.0];
        assert_eq!(frame_buckets(&metrics, "outbound"), expected_cumulative);
        assert_eq!(frame_buckets(&metrics, "inbound"), [0.0; 14]);

        w.observe_jitter_us(500);
        w.observe_jitter_us(501);
        w.observe_jitter_us(100_001);
        let s = rendered(&metrics);
        let jitter = |le: &str| s[&format!("voxproxy_backend_jitter_seconds_bucket{{le=\"{le}\"}}")];
        assert_eq!([jitter("0.0005"), jitter("0.001"), jitter("0.1"), jitter("+Inf")], [1.0, 2.0, 2.0, 3.0]);
        assert!((s["voxproxy_backend_jitter_seconds_sum"] - 0.101002).abs() < 1e-9);
    }

    #[test]
    fn parses_proc_stat_with_awkward_command_names() {
        // Fields 3.. of a real line, after a command name holding ") (".
        let line = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(line), Some(StatTimes { utime: 250, stime: 75, start_ticks: 123_456 }));
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn parses_clock_ticks_from_auxv() {
        let mut auxv = Vec::new();
        for (kind, value) in [(6usize, 4096usize), (17, 250), (0, 0)] {
            auxv.extend_from_slice(&kind.to_ne_bytes());
            auxv.extend_from_slice(&value.to_ne_bytes());
        }
        assert_eq!(parse_clock_ticks(&auxv), Some(250));
        assert_eq!(parse_clock_ticks(&auxv[..2 * size_of::<usize>()]), None);
        assert_eq!(parse_clock_ticks(&[]), None);
        if cfg!(target_os = "linux") {
            assert!(Metrics::new(1, "epoll").clock_ticks.is_some_and(|hz| hz > 0));
        }
    }

    #[test]
    fn parses_status_limits_and_boot_time() {
        let status = "Name:\tvoxproxy\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_bytes(status), Some(5_242_880));
        assert_eq!(parse_vm_rss_bytes("VmRSS: lots\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds("Max open files            unlimited            unlimited    files\n"),
            None
        );
        assert_eq!(parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
    }
}
