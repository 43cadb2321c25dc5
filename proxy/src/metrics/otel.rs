//! `voxproxy_otel_*`: the OpenTelemetry trace export (`otel.endpoint`).
//!
//! Written by the threads that record spans (workers, after the fact) and
//! by the export thread, so each counter is an atomic `fetch_add`. What the
//! SDK's bounded queue drops when the collector falls behind is
//! `recorded − exported − failed` (less what is still queued): the SDK does
//! not report its drops one by one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use super::Exposition;

/// Trace export counters of the process.
#[derive(Debug, Default)]
pub struct OtelMetrics {
    recorded: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
    export_errors: AtomicU64,
    /// Whether the last export failed, so the log says when exports start
    /// and stop failing rather than once per failure.
    failing: AtomicBool,
}

impl OtelMetrics {
    /// A span was finished and handed to the exporter's queue.
    pub fn span_recorded(&self) {
        self.recorded.fetch_add(1, Relaxed);
    }

    /// An export of `spans` spans was accepted by the collector.
    pub fn exported(&self, spans: usize) {
        self.exported.fetch_add(spans as u64, Relaxed);
    }

    /// An export of `spans` spans failed (unreachable collector, a non-2xx
    /// answer, the timeout); those spans are lost.
    pub fn export_failed(&self, spans: usize) {
        self.export_errors.fetch_add(1, Relaxed);
        self.failed.fetch_add(spans as u64, Relaxed);
    }

    /// Whether the last export failed.
    #[must_use]
    pub fn failing(&self) -> bool {
        self.failing.load(Relaxed)
    }

    /// Notes whether the last export failed.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Relaxed);
    }

    /// `(recorded, exported, failed, export errors)` so far.
    #[must_use]
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let load = |c: &AtomicU64| c.load(Relaxed);
        (load(&self.recorded), load(&self.exported), load(&self.failed), load(&self.export_errors))
    }

    pub(super) fn render(&self, x: &mut Exposition<'_>) {
        let (recorded, exported, failed, errors) = self.totals();
        let spans = "voxproxy_otel_spans_total";
        x.family(
            spans,
            "OpenTelemetry spans by fate: recorded (queued for export), exported (accepted by the collector), failed (lost in a failed export).",
            "counter",
        );
        x.sample(spans, &[("result", "recorded")], recorded);
        x.sample(spans, &[("result", "exported")], exported);
        x.sample(spans, &[("result", "failed")], failed);
        let name = "voxproxy_otel_export_errors_total";
        x.family(
            name,
            "Trace exports to otel.endpoint that failed (unreachable, non-2xx, timeout).",
            "counter",
        );
        x.sample(name, &[], errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_spans_by_fate_and_failed_exports() {
        let m = OtelMetrics::default();
        m.span_recorded();
        m.span_recorded();
        m.span_recorded();
        m.exported(2);
        m.export_failed(1);
        assert_eq!(m.totals(), (3, 2, 1, 1));
        let mut out = String::new();
        m.render(&mut Exposition { out: &mut out });
        assert!(out.contains("voxproxy_otel_spans_total{result=\"recorded\"} 3\n"), "{out}");
        assert!(out.contains("voxproxy_otel_spans_total{result=\"failed\"} 1\n"), "{out}");
        assert!(out.contains("voxproxy_otel_export_errors_total 1\n"), "{out}");
    }
}
