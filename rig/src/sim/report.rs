//! The result of a simulator run: per call and overall counters, latency
//! percentiles, a human table ([`SimReport::render_table`]), JSON (serde)
//! and an SVG plot of latency by percentile ([`render_svg`], [`write_svg`]).
//!
//! Latencies are in microseconds. The plot's x axis is the "nines" scale
//! (x = −log₁₀(1 − p/100): 0, 90, 99, 99.9, 99.99 are evenly spaced), the
//! y axis is milliseconds.
//!
//! ```
//! use hdrhistogram::Histogram;
//! use voxproxy_rig::sim::report::{CallReport, RunSettings, SimReport, render_svg};
//!
//! let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
//! for us in [800, 900, 1_000, 5_000] {
//!     latency.record(us).unwrap();
//! }
//! let call = CallReport { index: 0, setup_us: Some(1_500), ..CallReport::default() };
//! let report = SimReport::assemble(RunSettings::default(), 1.0, vec![call], &latency);
//! assert_eq!(report.calls.completed, 1);
//! // Three significant figures: 5,000 µs reads back within 0.1 %.
//! assert!((5_000..=5_005).contains(&report.latency_us.unwrap().max));
//! assert!(report.render_table().contains("round-trip latency"));
//! assert!(render_svg(&report).starts_with("<svg"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hdrhistogram::{Counter, Histogram};
use serde::Serialize;

use super::meter::{FrameCounts, MAX_LATENCY_US};
use super::playout::PlayoutStats;

/// Summary of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Largest value.
    pub max: u64,
}

impl Percentiles {
    /// The summary of `histogram`, or `None` if it is empty.
    #[must_use]
    pub fn of<T: Counter>(histogram: &Histogram<T>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        Some(Percentiles {
            count: histogram.len(),
            min: histogram.min(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p99_9: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        })
    }
}

/// One point of the latency-by-percentile curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile, in microseconds.
    pub latency_us: u64,
}

/// Points of the curve from 0 to the 99.99th percentile, evenly spaced on
/// the nines scale (20 per decade), then the maximum.
#[must_use]
pub fn latency_curve<T: Counter>(histogram: &Histogram<T>) -> Vec<CurvePoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<CurvePoint> = (0..=80)
        .map(|i| {
            let nines = f64::from(i) / 20.0;
            let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
            CurvePoint { percentile, latency_us: histogram.value_at_quantile(percentile / 100.0) }
        })
        .collect();
    points.push(CurvePoint { percentile: 100.0, latency_us: histogram.max() });
    points
}

/// How one call went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CallReport {
    /// Index of the call in the run, from 0 (also its frames' identity).
    pub index: u32,
    /// `CallSid`.
    pub call_sid: String,
    /// `streamSid`.
    pub stream_sid: String,
    /// `None` if the call completed, else why it failed.
    pub failure: Option<String>,
    /// The failure in full, with details.
    pub failure_detail: Option<String>,
    /// Webhook POST to WebSocket open and `start` sent, in microseconds.
    pub setup_us: Option<u64>,
    /// Frame counters.
    pub frames: FrameCounts,
    /// Round-trip latency of the frames that came back (1 % precision).
    pub latency_us: Option<Percentiles>,
    /// What was played back.
    pub playback: PlaybackCounts,
    /// `dtmf` messages sent.
    pub dtmf_sent: u64,
}

/// Playback counters (Twilio's side of the server's audio).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlaybackCounts {
    /// μ-law bytes received to play.
    pub media_bytes: u64,
    /// `media` messages received.
    pub media_messages: u64,
    /// Marks echoed (played plus cleared).
    pub marks_echoed: u64,
    /// Marks echoed because their audio played.
    pub marks_played: u64,
    /// Marks echoed because of a `clear`.
    pub marks_cleared: u64,
    /// `clear` messages received.
    pub clears: u64,
    /// μ-law bytes dropped unplayed by `clear`.
    pub cleared_bytes: u64,
    /// μ-law bytes discarded over the 10-minute buffer limit.
    pub discarded_bytes: u64,
    /// Messages with an event the simulator does not know.
    pub unknown_events: u64,
}

impl PlaybackCounts {
    /// Counters from a playout buffer's statistics and the message count.
    #[must_use]
    pub fn from_playout(stats: &PlayoutStats, media_messages: u64, unknown_events: u64) -> Self {
        PlaybackCounts {
            media_bytes: stats.media_bytes,
            media_messages,
            marks_echoed: stats.marks_played + stats.marks_cleared + stats.marks_overflowed,
            marks_played: stats.marks_played + stats.marks_overflowed,
            marks_cleared: stats.marks_cleared,
            clears: stats.clears,
            cleared_bytes: stats.cleared_bytes,
            discarded_bytes: stats.discarded_bytes,
            unknown_events,
        }
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &PlaybackCounts) {
        self.media_bytes += other.media_bytes;
        self.media_messages += other.media_messages;
        self.marks_echoed += other.marks_echoed;
        self.marks_played += other.marks_played;
        self.marks_cleared += other.marks_cleared;
        self.clears += other.clears;
        self.cleared_bytes += other.cleared_bytes;
        self.discarded_bytes += other.discarded_bytes;
        self.unknown_events += other.unknown_events;
    }
}

/// Call counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    /// Calls placed.
    pub attempted: u64,
    /// Calls whose media stream opened.
    pub connected: u64,
    /// Calls that ran to the end without error.
    pub completed: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Failed calls by reason.
    pub failures: BTreeMap<String, u64>,
}

/// What the run was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunSettings {
    /// Server URL.
    pub url: String,
    /// Concurrent calls.
    pub calls: u32,
    /// Media seconds per call.
    pub seconds: f64,
    /// Calls started per second.
    pub ramp_per_second: f64,
    /// Audio sent: a file, or the built-in test signal.
    pub audio: String,
    /// DTMF digits sent per call.
    pub dtmf: String,
    /// Whether requests were signed.
    pub signed: bool,
}

/// The whole report of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SimReport {
    /// What was asked.
    pub settings: RunSettings,
    /// Wall-clock length of the run, in seconds.
    pub duration_seconds: f64,
    /// Calls.
    pub calls: CallCounts,
    /// Setup time of the calls that connected, in microseconds (exact).
    pub setup_us: Option<Percentiles>,
    /// Round-trip latency of every frame that came back, in microseconds
    /// (3 significant figures).
    pub latency_us: Option<Percentiles>,
    /// Frames of all calls.
    pub frames: FrameCounts,
    /// Playback of all calls.
    pub playback: PlaybackCounts,
    /// `dtmf` messages sent.
    pub dtmf_sent: u64,
    /// How late the simulator sent each media frame against its 20 ms
    /// schedule, in microseconds: the rig's own pacing. The round trip is
    /// timed from the actual send and leaves it out; the proxy sees it as
    /// Twilio's lateness (`voxproxy_twilio_burst_seconds`).
    pub send_lateness_us: Option<Percentiles>,
    /// The round trip less the simulator's own wait to read each frame
    /// back (the kernel's receive stamp to the frame's handling), in
    /// microseconds: what the proxy, the backend and the kernel took, with
    /// the rig's receive queue left out. `None` without receive stamps.
    pub latency_at_kernel_us: Option<Percentiles>,
    /// That wait, in microseconds (a lower bound when one read took
    /// several frames: the stamp is the newest segment's).
    pub receive_wait_us: Option<Percentiles>,
    /// Latency by percentile, for plotting.
    pub latency_curve: Vec<CurvePoint>,
    /// The run second by second: when its tail happened.
    pub timeline: Vec<super::timeline::SecondSummary>,
    /// Every call.
    pub per_call: Vec<CallReport>,
    /// What the proxy spent, when the run was told whose cost to measure.
    pub proxy_cost: Option<super::cost::ProxyCost>,
}

impl SimReport {
    /// Assembles the report from the calls and the run's latency histogram.
    #[must_use]
    pub fn assemble(
        settings: RunSettings,
        duration_seconds: f64,
        mut per_call: Vec<CallReport>,
        latency: &Histogram<u64>,
    ) -> SimReport {
        per_call.sort_by_key(|c| c.index);
        let mut calls = CallCounts::default();
        let mut frames = FrameCounts::default();
        let mut playback = PlaybackCounts::default();
        let mut dtmf_sent = 0;
        let mut setup = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
            .unwrap_or_else(|_| unreachable!("constant bounds are valid"));
        for call in &per_call {
            calls.attempted += 1;
            if let Some(us) = call.setup_us {
                calls.connected += 1;
                setup.saturating_record(us.max(1));
            }
            match &call.failure {
                None => calls.completed += 1,
                Some(reason) => {
                    calls.failed += 1;
                    *calls.failures.entry(reason.clone()).or_default() += 1;
                }
            }
            frames.add(&call.frames);
            playback.add(&call.playback);
            dtmf_sent += call.dtmf_sent;
        }
        SimReport {
            settings,
            duration_seconds,
            calls,
            setup_us: Percentiles::of(&setup),
            latency_us: Percentiles::of(latency),
            frames,
            playback,
            dtmf_sent,
            send_lateness_us: None,
            latency_at_kernel_us: None,
            receive_wait_us: None,
            latency_curve: latency_curve(latency),
            timeline: Vec::new(),
            per_call,
            proxy_cost: None,
        }
    }

    /// A table for people, as printed by `voxproxy sim` without `--json`.
    #[must_use]
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "voxproxy sim: {} calls × {} s against {} ({} calls/s ramp, audio: {}{})",
            s.calls,
            s.seconds,
            s.url,
            s.ramp_per_second,
            s.audio,
            if s.signed { ", signed" } else { ", unsigned" }
        );
        let _ = writeln!(out, "run took {:.1} s", self.duration_seconds);
        let c = &self.calls;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "calls      attempted {:>8}  connected {:>8}  completed {:>8}  failed {:>8}",
            c.attempted, c.connected, c.completed, c.failed
        );
        for (reason, count) in &c.failures {
            let _ = writeln!(out, "  failed: {count:>6} × {reason}");
        }
        let f = &self.frames;
        let _ = writeln!(
            out,
            "frames     sent {:>10}  received {:>10}  missing {:>8}  late {:>6}",
            f.sent, f.received, f.missing, f.late
        );
        let _ = writeln!(
            out,
            "           out of order {:>6}  duplicates {:>6}  unidentified {:>8}  misrouted {:>6}",
            f.out_of_order, f.duplicates, f.unidentified, f.misrouted
        );
        let p = &self.playback;
        let _ = writeln!(
            out,
            "playback   media bytes {:>12}  marks echoed {:>6} ({} played, {} cleared)  clears {:>5}  dtmf sent {}",
            p.media_bytes, p.marks_echoed, p.marks_played, p.marks_cleared, p.clears, self.dtmf_sent
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<24}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "ms", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, value) in [
            ("round-trip latency", &self.latency_us),
            ("  less sim's read wait", &self.latency_at_kernel_us),
            ("  sim's read wait", &self.receive_wait_us),
            ("simulator sent late", &self.send_lateness_us),
            ("call setup", &self.setup_us),
        ] {
            match value {
                Some(v) => {
                    let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
                    let _ = writeln!(
                        out,
                        "{:<24}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
                        name,
                        v.count,
                        ms(v.p50),
                        ms(v.p90),
                        ms(v.p99),
                        ms(v.p99_9),
                        ms(v.max)
                    );
                }
                None => {
                    let _ = writeln!(out, "{name:<24}{:>10}", "none");
                }
            }
        }
        if let Some(worst) = self.timeline.iter().filter(|s| s.frames > 0).max_by_key(|s| s.p99_us) {
            let ms = |us: u64| us as f64 / 1000.0;
            let _ = writeln!(
                out,
                "worst second            {:>4}  p50 {:.3}  p99 {:.3}  max {:.3} ms over {} frames back, {} sent (up to {:.3} ms late)",
                worst.second,
                ms(worst.p50_us),
                ms(worst.p99_us),
                ms(worst.max_us),
                worst.frames,
                worst.sent,
                ms(worst.send_late_max_us)
            );
        }
        if let Some(cost) = &self.proxy_cost {
            let _ = writeln!(out);
            let us = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} µs"));
            let kib =
                |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.1} KiB", v / 1024.0));
            let _ = writeln!(
                out,
                "proxy cost ({}): CPU {} per bridged frame over {} frames; media path {} per frame",
                cost.measured,
                us(cost.cpu_us_per_frame),
                cost.frames,
                us(cost.processing_us_per_frame)
            );
            let _ = writeln!(
                out,
                "           memory {} per active call ({} calls at the peak); open fds {} before, {} after",
                kib(cost.rss_bytes_per_call),
                cost.calls_at_peak,
                cost.open_fds_before.map_or_else(|| "n/a".to_owned(), |v| v.to_string()),
                cost.open_fds_after.map_or_else(|| "n/a".to_owned(), |v| v.to_string()),
            );
            if let Some(steady) = &cost.steady {
                let _ = writeln!(
                    out,
                    "           steady window ({} calls up, {:.1} s, {} frames): CPU {} per frame (user {}, system {})",
                    steady.calls,
                    steady.seconds,
                    steady.frames,
                    us(steady.cpu_us_per_frame),
                    us(steady.user_us_per_frame),
                    us(steady.system_us_per_frame),
                );
            }
        }
        out
    }
}

/// x position of a percentile on the nines scale, capped at 4 (99.99).
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-4);
    (-rest.log10()).clamp(0.0, 4.0)
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&v| v >= value).unwrap_or(10.0 * magnitude)
}

/// The latency-by-percentile plot of `report` as a standalone SVG document.
#[must_use]
pub fn render_svg(report: &SimReport) -> String {
    const W: f64 = 720.0;
    const H: f64 = 440.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 60.0;
    const BOTTOM: f64 = 60.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let points: Vec<&CurvePoint> = report.latency_curve.iter().filter(|p| p.percentile <= 99.99).collect();
    let top_ms = nice_ceiling(points.iter().map(|p| p.latency_us as f64 / 1000.0).fold(0.0, f64::max));
    let x = |percentile: f64| LEFT + nines(percentile) / 4.0 * plot_w;
    let y = |ms: f64| TOP + plot_h - (ms / top_ms).min(1.0) * plot_h;

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let title = match &report.latency_us {
        Some(l) => format!(
            "Round-trip latency, {} calls: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            report.settings.calls,
            l.p50 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.p99_9 as f64 / 1000.0,
            l.max as f64 / 1000.0
        ),
        None => format!("Round-trip latency, {} calls: no frame came back", report.settings.calls),
    };
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"30\" text-anchor=\"middle\" font-size=\"14\">{}</text>",
        W / 2.0,
        escape(&title)
    );
    // Grid and axis labels.
    for (i, label) in ["0", "90", "99", "99.9", "99.99"].iter().enumerate() {
        let gx = LEFT + i as f64 / 4.0 * plot_w;
        let _ = writeln!(
            svg,
            "<line x1=\"{gx:.1}\" y1=\"{TOP}\" x2=\"{gx:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            "<text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            TOP + plot_h + 18.0
        );
    }
    for i in 0..=5 {
        let ms = top_ms * f64::from(i) / 5.0;
        let gy = y(ms);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\" stroke=\"#ddd\"/>",
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            gy + 4.0,
            trim_number(ms)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        LEFT + plot_w / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">latency (ms)</text>",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#333\"/>"
    );
    if !points.is_empty() {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.percentile), y(p.latency_us as f64 / 1000.0)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes [`render_svg`] of `report` to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write_svg(report: &SimReport, path: &Path) -> io::Result<()> {
    std::fs::write(path, render_svg(report))
}

fn trim_number(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentile of sorted values, computed without hdrhistogram.
    fn nearest_rank(sorted: &[u64], percentile: f64) -> u64 {
        let rank = ((percentile / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank - 1]
    }

    fn close(actual: u64, expected: u64) -> bool {
        // Three significant figures: within 0.1 % (plus one unit).
        actual.abs_diff(expected) <= expected / 1000 + 1
    }

    #[test]
    fn percentiles_match_an_independent_computation() {
        // A skewed distribution: 9,000 values around 2 ms, 1,000 spread up to 50 ms.
        let mut values: Vec<u64> = (0..9_000u64).map(|i| 1_500 + (i * 7919) % 1_000).collect();
        values.extend((0..1_000u64).map(|i| 3_000 + i * 47));
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for &v in &values {
            h.record(v).unwrap();
        }
        values.sort_unstable();
        let p = Percentiles::of(&h).unwrap();
        assert_eq!(p.count, 10_000);
        for (got, pct) in [(p.p50, 50.0), (p.p90, 90.0), (p.p99, 99.0), (p.p99_9, 99.9)] {
            let want = nearest_rank(&values, pct);
            assert!(close(got, want), "p{pct}: {got} vs {want}");
        }
        assert!(close(p.max, *values.last().unwrap()));
        assert!(close(p.min, values[0]));
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        assert!((p.mean - mean).abs() / mean < 0.001);
    }

    fn sample_report() -> SimReport {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let ok = CallReport { index: 1, setup_us: Some(52_000), ..CallReport::default() };
        let failed = CallReport {
            index: 0,
            failure: Some("voice webhook answered HTTP 403".into()),
            ..CallReport::default()
        };
        let settings =
            RunSettings { url: "http://x".into(), calls: 2, seconds: 1.0, ..RunSettings::default() };
        SimReport::assemble(settings, 1.5, vec![ok, failed], &h)
    }

    #[test]
    fn assemble_counts_calls_and_failures() {
        let r = sample_report();
        assert_eq!((r.calls.attempted, r.calls.connected, r.calls.completed, r.calls.failed), (2, 1, 1, 1));
        assert_eq!(r.calls.failures.get("voice webhook answered HTTP 403"), Some(&1));
        assert_eq!(r.per_call[0].index, 0, "calls are listed in order");
        assert!(close(r.setup_us.unwrap().max, 52_000), "setup times are not clamped");
        let table = r.render_table();
        assert!(table.contains("voice webhook answered HTTP 403"), "{table}");
        assert!(table.contains("round-trip latency"), "{table}");
    }

    #[test]
    fn table_names_the_second_with_the_worst_tail() {
        use super::super::timeline::SecondSummary;
        let mut r = sample_report();
        assert!(!r.render_table().contains("worst second"), "no timeline, no line");
        let second = |second, p99_us| SecondSummary {
            second,
            sent: 50,
            frames: 50,
            p99_us,
            ..SecondSummary::default()
        };
        r.timeline =
            vec![second(0, 900), second(1, 23_400), SecondSummary { second: 2, ..SecondSummary::default() }];
        let table = r.render_table();
        let line = table.lines().find(|l| l.starts_with("worst second")).unwrap();
        assert!(line.contains("   1  p50") && line.contains("p99 23.400"), "{line}");
    }

    #[test]
    fn curve_is_monotonic_and_spans_the_nines() {
        let r = sample_report();
        let curve = &r.latency_curve;
        assert_eq!(curve.first().unwrap().percentile, 0.0);
        assert!((curve[80].percentile - 99.99).abs() < 1e-9);
        assert!(
            curve.windows(2).all(|w| w[0].latency_us <= w[1].latency_us && w[0].percentile < w[1].percentile)
        );
        assert!(close(curve.last().unwrap().latency_us, 100_000));
    }

    #[test]
    fn svg_is_well_formed_and_shows_the_percentiles() {
        let r = sample_report();
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        let l = r.latency_us.unwrap();
        for value in [l.p50, l.p99, l.p99_9, l.max] {
            let text = format!("{:.3} ms", value as f64 / 1000.0);
            assert!(svg.contains(&text), "{text} missing");
        }
        for label in [">90<", ">99<", ">99.9<", ">99.99<"] {
            assert!(svg.contains(label), "{label} missing");
        }
        // Every opened element is closed or self-closed.
        let opened = svg.matches('<').count();
        let self_closed = svg.matches("/>").count();
        let closing = svg.matches("</").count();
        assert_eq!(opened - self_closed - closing, closing, "balanced tags");
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn svg_without_data_still_renders() {
        let r = SimReport::assemble(RunSettings::default(), 0.0, Vec::new(), &Histogram::new(3).unwrap());
        let svg = render_svg(&r);
        assert!(svg.contains("no frame came back") && !svg.contains("<polyline"));
    }

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), 4.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(0.07), 0.1);
    }
}
