//! `voxproxy_capture_*`: the capture writer's counters (`crate::capture`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

use super::Exposition;
use crate::capture::CaptureStats;

/// The capture writer's counters, once the server has started it.
#[derive(Debug, Default)]
pub struct CaptureMetrics {
    stats: Mutex<Option<Arc<CaptureStats>>>,
}

impl CaptureMetrics {
    /// Shows the capture writer's counters from now on.
    pub fn set(&self, stats: Arc<CaptureStats>) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    pub(super) fn render(&self, x: &mut Exposition<'_>) {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone().unwrap_or_default();
        let rows: [(&str, &str, &str, u64); 6] = [
            (
                "voxproxy_capture_files_total",
                "Call captures started (files created).",
                "counter",
                stats.files.load(Relaxed),
            ),
            (
                "voxproxy_capture_errors_total",
                "Call captures that could not be created or written.",
                "counter",
                stats.errors.load(Relaxed),
            ),
            (
                "voxproxy_capture_written_bytes_total",
                "Bytes written to call captures.",
                "counter",
                stats.bytes_written.load(Relaxed),
            ),
            (
                "voxproxy_capture_dropped_bytes_total",
                "Bytes of call captures dropped because the writer's queue was full (the capture stops there, marked truncated).",
                "counter",
                stats.dropped_bytes.load(Relaxed),
            ),
            (
                "voxproxy_capture_truncated_total",
                "Call captures that stopped before the call's end (capture.max_bytes or a full queue).",
                "counter",
                stats.truncated.load(Relaxed),
            ),
            (
                "voxproxy_capture_queued_bytes",
                "Bytes waiting for the capture writer.",
                "gauge",
                stats.queued_bytes.load(Relaxed) as u64,
            ),
        ];
        for (name, help, kind, value) in rows {
            x.family(name, help, kind);
            x.sample(name, &[], value);
        }
    }
}
