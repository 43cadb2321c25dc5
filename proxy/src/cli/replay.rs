//! `voxproxy replay FILE`: feeds a call capture (docs/capture.md) to a
//! fresh bridge on virtual time and checks every output against the
//! capture's digests. The replay itself is sans-IO, in
//! `voxproxy_adapters::capture::replay`; this file reads the file and
//! prints.
//!
//! Exit codes: 0 when every output is identical, 1 at the first
//! difference, 2 when the file cannot be read as a capture.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use voxproxy_adapters::capture::{ReplayReport, Timeline, TimelineEntry, replay};

/// Largest capture read: `capture.max_bytes` at its largest.
const MAX_FILE_BYTES: u64 = 4 << 30;

/// Arguments of `voxproxy replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A capture file (`capture.dir/{CallSid}_{StreamSid}.vxcap`).
    pub file: PathBuf,
    /// Also print the call's timeline (start, leg setup, talkspurts,
    /// marks, DTMF, clear, end) and its counters.
    #[arg(long)]
    pub report: bool,
}

/// Runs `voxproxy replay`.
pub fn run(args: &ReplayArgs) -> ExitCode {
    let bytes = match read(&args.file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("voxproxy replay: {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let report = match replay(&bytes) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("voxproxy replay: {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let mut out = String::new();
    if args.report {
        timeline(&report, &mut out);
    }
    verdict(&report, &mut out);
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if report.difference.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn read(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{len} bytes is larger than any capture ({MAX_FILE_BYTES} bytes at most)"
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The last line: identical, or the first difference.
fn verdict(report: &ReplayReport, out: &mut String) {
    use std::fmt::Write as _;
    let (inputs, outputs) = (report.inputs, report.outputs);
    match &report.difference {
        None => {
            let _ = write!(out, "replayed {inputs} inputs, {outputs} outputs: identical");
            if let Some(why) = report.truncated {
                let _ = write!(out, " (the capture stops early: {why})");
            } else if !report.complete {
                out.push_str(" (the capture has no end mark: the proxy stopped mid-call)");
            }
            out.push('\n');
        }
        Some(d) => {
            let at = d
                .at
                .map_or_else(|| "before any input".to_owned(), |at| format!("at {}", ms(&report.header, at)));
            let _ = writeln!(
                out,
                "replayed {inputs} inputs, {outputs} outputs: DIFFERENT at output #{} ({}), after input #{} {at}\n  expected: {}\n  got:      {}",
                d.output_index, d.kind, d.inputs, d.expected, d.got
            );
        }
    }
}

fn ms(header: &voxproxy_adapters::capture::CaptureHeader, at: voxproxy_core::Instant) -> String {
    let nanos = at.as_nanos().saturating_sub(header.created_at.as_nanos());
    format!("{}.{:03} ms", nanos / 1_000_000, (nanos / 1_000) % 1_000)
}

fn timeline(report: &ReplayReport, out: &mut String) {
    use std::fmt::Write as _;
    let h = &report.header;
    let c = &h.bridge;
    let _ = writeln!(
        out,
        "capture by {}: {} leg, {} {} ms, jitter up to {} ms, VAD mode {}, barge-in {}",
        h.voxproxy_version,
        h.leg.name(),
        c.codec.name(),
        c.ptime.as_millis(),
        c.jitter_max_delay.as_millis(),
        c.vad_mode,
        if c.barge_in { "on" } else { "off" }
    );
    out.push_str("timeline (from the WebSocket's open):\n");
    for entry in &report.timeline {
        let _ = writeln!(out, "  {:>12}  {}", ms(h, entry.at), describe(entry));
    }
    if report.timeline_dropped > 0 {
        let _ = writeln!(out, "  … {} later entries not shown", report.timeline_dropped);
    }
    let s = &report.stats;
    let _ = writeln!(
        out,
        "stats: twilio frames in {} out {}; rtp packets in {} out {}; lost {} late {} duplicate {} reordered {} concealed {}; \
         jitter {} µs (max {}); speech segments {}; barge-ins {}; dtmf {} (backend {}); marks sent {} played {} cleared {}; \
         malformed twilio {} rtp {}; foreign rtp {}",
        s.twilio_frames_in,
        s.twilio_frames_out,
        s.rtp_packets_in,
        s.rtp_packets_out,
        s.rtp_lost,
        s.rtp_late,
        s.rtp_duplicate,
        s.rtp_reordered,
        s.concealed_frames,
        s.jitter_us,
        s.max_jitter_us,
        s.vad_segments,
        s.barge_ins,
        s.dtmf_digits,
        s.backend_dtmf_events,
        s.marks_sent,
        s.marks_played,
        s.marks_cleared,
        s.twilio_malformed,
        s.rtp_malformed,
        s.rtp_foreign_source,
    );
}

fn describe(entry: &TimelineEntry) -> String {
    use voxproxy_adapters::bridge::BridgeEvent as E;
    match &entry.what {
        Timeline::Created => "WebSocket opened".to_owned(),
        Timeline::Backend(Some(addr)) => format!("route: backend {addr}"),
        Timeline::Backend(None) => "route: no backend".to_owned(),
        Timeline::Media(codec) => format!("backend media set by the PBX's offer: {}", codec.name()),
        Timeline::FirstDatagram(from) => format!("first backend datagram, from {from}"),
        Timeline::SipInvite(target) => format!("SIP INVITE to {target}"),
        Timeline::BotStarted => "bot leg started".to_owned(),
        Timeline::SipAnswered => "SIP leg answered (200)".to_owned(),
        Timeline::SipEnded(status) => {
            format!(
                "SIP leg ended (final status {})",
                status.map_or_else(|| "none".to_owned(), |s| s.to_string())
            )
        }
        Timeline::Event(E::StreamStarted) => "stream started".to_owned(),
        Timeline::Event(E::SpeechStarted { media_ms }) => {
            format!("caller talkspurt starts (media {media_ms} ms)")
        }
        Timeline::Event(E::SpeechStopped { media_ms }) => {
            format!("caller talkspurt ends (media {media_ms} ms)")
        }
        Timeline::Event(E::Dtmf { digit }) => format!("caller DTMF {digit}"),
        Timeline::Event(E::BackendDtmf { digit }) => format!("backend DTMF {digit}"),
        Timeline::Event(E::MarkPlayed { id }) => format!("mark {id} played"),
        Timeline::Event(E::MarkCleared { id }) => format!("mark {id} cleared"),
        Timeline::Event(E::BargeIn { media_ms }) => {
            format!("barge-in (caller speech at media {media_ms} ms)")
        }
        Timeline::Event(E::BackendTimeout) => "backend silent: outage starts".to_owned(),
        Timeline::Event(E::BackendResumed { silent_ms }) => format!("backend back after {silent_ms} ms"),
        Timeline::Event(E::StreamStopped) => "Twilio stop".to_owned(),
        Timeline::MarkSent => "backend talkspurt ends: mark sent".to_owned(),
        Timeline::Clear => "clear sent".to_owned(),
        Timeline::Closed { code, reason } => format!("stream closed {code} \"{reason}\""),
        Timeline::Truncated(why) => format!("capture stops: {why}"),
        Timeline::End => "call ended".to_owned(),
        other => format!("{other:?}"),
    }
}
