//! `voxproxy_jitter_buffer_wait_seconds`, `voxproxy_twilio_burst_seconds`
//! (the latency breakdown's histograms over every call) and
//! `voxproxy_recording_*` (the recording writer).
//!
//! Calls keep their own [`Histogram`]s (per frame, no allocation, no
//! sharing) and add what changed since their last report here about once a
//! second and at the end, like [`super::SipMetrics`]: one short lock per
//! call per second.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

use voxproxy_adapters::latency::{BOUNDS_US, BUCKETS, Histogram, LatencyBreakdown};

use super::Exposition;
use crate::recording::RecordingStats;

/// Buckets and sum (µs) of one histogram family.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    buckets: [u64; BUCKETS],
    sum_us: u64,
}

impl Totals {
    fn add(&mut self, reported: &Histogram, now: &Histogram) {
        for ((t, n), r) in self.buckets.iter_mut().zip(now.buckets()).zip(reported.buckets()) {
            *t += u64::from(n.saturating_sub(*r));
        }
        self.sum_us += now.sum_us().saturating_sub(reported.sum_us());
    }
}

/// The latency histograms of every call, and the recording writer's counters.
#[derive(Debug, Default)]
pub struct BreakdownMetrics {
    /// Jitter buffer wait, Twilio burst.
    totals: Mutex<[Totals; 2]>,
    recording: Mutex<Option<Arc<RecordingStats>>>,
}

impl BreakdownMetrics {
    /// Adds `now − reported` of a call's breakdown.
    pub fn add(&self, reported: &LatencyBreakdown, now: &LatencyBreakdown) {
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        totals[0].add(&reported.jitter_wait, &now.jitter_wait);
        totals[1].add(&reported.twilio_burst, &now.twilio_burst);
    }

    /// Shows the recording writer's counters from now on.
    pub fn set_recording(&self, stats: Arc<RecordingStats>) {
        *self.recording.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    pub(super) fn render(&self, x: &mut Exposition<'_>) {
        let totals = *self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        let families = [
            (
                "voxproxy_jitter_buffer_wait_seconds",
                "Time each backend RTP packet waited in the jitter buffer before playout to Twilio.",
            ),
            (
                "voxproxy_twilio_burst_seconds",
                "How late each Twilio media frame arrived against its media timestamp (0: on time).",
            ),
        ];
        for ((name, help), t) in families.iter().zip(&totals) {
            x.family(name, help, "histogram");
            let bucket = format!("{name}_bucket");
            let mut cumulative = 0;
            for (bound, n) in BOUNDS_US.iter().zip(&t.buckets) {
                cumulative += n;
                let le = format!("{}", f64::from(*bound) / 1e6);
                x.sample(&bucket, &[("le", &le)], cumulative);
            }
            cumulative += t.buckets[BUCKETS - 1];
            x.sample(&bucket, &[("le", "+Inf")], cumulative);
            x.sample(&format!("{name}_sum"), &[], t.sum_us as f64 / 1e6);
            x.sample(&format!("{name}_count"), &[], cumulative);
        }
        let stats = self.recording.lock().unwrap_or_else(PoisonError::into_inner).clone().unwrap_or_default();
        let counters: [(&str, &str, &str, u64); 5] = [
            (
                "voxproxy_recording_files_total",
                "Call recordings started (files created).",
                "counter",
                stats.files.load(Relaxed),
            ),
            (
                "voxproxy_recording_errors_total",
                "Call recordings that could not be created, written or finished.",
                "counter",
                stats.errors.load(Relaxed),
            ),
            (
                "voxproxy_recording_written_bytes_total",
                "Audio bytes written to call recordings.",
                "counter",
                stats.bytes_written.load(Relaxed),
            ),
            (
                "voxproxy_recording_dropped_bytes_total",
                "Audio bytes of call recordings dropped because the writer's queue was full (silence in the file).",
                "counter",
                stats.dropped_bytes.load(Relaxed),
            ),
            (
                "voxproxy_recording_queued_bytes",
                "Audio bytes waiting for the recording writer.",
                "gauge",
                stats.queued_bytes.load(Relaxed) as u64,
            ),
        ];
        for (name, help, kind, value) in counters {
            x.family(name, help, kind);
            x.sample(name, &[], value);
        }
        let name = "voxproxy_twilio_recordings_total";
        x.family(
            name,
            "Twilio-side recordings requested (recording.twilio), by how the request ended.",
            "counter",
        );
        x.sample(name, &[("result", "started")], stats.twilio_started.load(Relaxed));
        x.sample(name, &[("result", "failed")], stats.twilio_failed.load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn adds_deltas_and_renders_cumulative_buckets() {
        let metrics = BreakdownMetrics::default();
        let mut call = LatencyBreakdown::default();
        call.jitter_wait.record(Duration::ZERO);
        call.jitter_wait.record(Duration::from_millis(25));
        metrics.add(&LatencyBreakdown::default(), &call);
        let reported = call;
        call.jitter_wait.record(Duration::from_millis(25));
        metrics.add(&reported, &call);
        let mut body = String::new();
        metrics.render(&mut Exposition { out: &mut body });
        assert!(body.contains("voxproxy_jitter_buffer_wait_seconds_bucket{le=\"0\"} 1\n"), "{body}");
        assert!(body.contains("voxproxy_jitter_buffer_wait_seconds_bucket{le=\"0.02\"} 1\n"), "{body}");
        assert!(body.contains("voxproxy_jitter_buffer_wait_seconds_bucket{le=\"0.03\"} 3\n"), "{body}");
        assert!(body.contains("voxproxy_jitter_buffer_wait_seconds_count 3\n"), "{body}");
        assert!(body.contains("voxproxy_jitter_buffer_wait_seconds_sum 0.05\n"), "{body}");
        assert!(body.contains("voxproxy_twilio_burst_seconds_count 0\n"), "{body}");
        assert!(body.contains("voxproxy_recording_dropped_bytes_total 0\n"), "{body}");
    }
}
