//! `voxproxy_uring_*`: what the io_uring workers' rings did
//! ([`RingStats`]), summed over the workers (the held-buffer peak is the
//! largest of theirs). Each worker publishes its ring's counters with its
//! heartbeat, once a second, so a scrape may trail by that much; on epoll
//! there is no ring and none of these families is rendered.
//!
//! They say whether the ring keeps up: receives `starved` for want of
//! buffers, sockets `paused` because their call lagged, datagrams
//! `dropped` past a socket's queue, and how many entries each system call
//! carried (`entries` over `submits`).

use std::sync::{Mutex, PoisonError};

use super::Exposition;
use crate::runtime::RingStats;

/// How one family combines the workers' values.
#[derive(Clone, Copy)]
enum Combine {
    Sum,
    Max,
}

/// One family: name, help, type, how a worker's value is read, how the
/// workers' values combine.
type Family = (&'static str, &'static str, &'static str, fn(&RingStats) -> u64, Combine);

const FAMILIES: [Family; 10] = [
    (
        "voxproxy_uring_submits_total",
        "io_uring_enter calls that submitted entries (io_uring workers).",
        "counter",
        |s| s.submits,
        Combine::Sum,
    ),
    (
        "voxproxy_uring_entries_total",
        "Entries (sends, receives, cancels) submitted to io_uring; over submits, the batch per system call.",
        "counter",
        |s| s.entries,
        Combine::Sum,
    ),
    (
        "voxproxy_uring_received_total",
        "Datagrams and stream chunks received through io_uring.",
        "counter",
        |s| s.received,
        Combine::Sum,
    ),
    (
        "voxproxy_uring_dropped_total",
        "Datagrams io_uring received and dropped: their socket had 128 waiting, or the source was not IP.",
        "counter",
        |s| s.dropped,
        Combine::Sum,
    ),
    (
        "voxproxy_uring_paused_total",
        "Times a socket's io_uring receive was paused because its call had 8 datagrams waiting.",
        "counter",
        |s| s.paused,
        Combine::Sum,
    ),
    (
        "voxproxy_uring_starved_total",
        "Times a socket's io_uring receive stopped because every receive buffer was waiting for its call.",
        "counter",
        |s| s.starved,
        Combine::Sum,
    ),
    (
        "voxproxy_uring_send_errors_total",
        "io_uring sends whose completion reported an error.",
        "counter",
        |s| s.send_errors,
        Combine::Sum,
    ),
    (
        "voxproxy_uring_fixed_files",
        "Sockets in the rings' registered-file tables (the rest use plain descriptors).",
        "gauge",
        |s| u64::from(s.fixed_files),
        Combine::Sum,
    ),
    (
        "voxproxy_uring_stream_buffer_bytes",
        "Bytes the media WebSockets' io_uring write buffers hold (in use and spare).",
        "gauge",
        |s| s.stream_buffers as u64,
        Combine::Sum,
    ),
    (
        "voxproxy_uring_buffers_held_peak",
        "The most receive buffers one worker's ring had waiting for their calls at once (of 1,024).",
        "gauge",
        |s| u64::from(s.buffers_held_peak),
        Combine::Max,
    ),
];

/// Each io_uring worker's last published ring counters.
#[derive(Debug)]
pub struct RingMetrics {
    workers: Box<[Mutex<Option<RingStats>>]>,
}

impl RingMetrics {
    pub(super) fn new(workers: usize) -> RingMetrics {
        RingMetrics { workers: (0..workers).map(|_| Mutex::new(None)).collect() }
    }

    /// Worker `worker`'s ring counters as of now (ignored past the last worker).
    pub fn set(&self, worker: usize, stats: RingStats) {
        if let Some(slot) = self.workers.get(worker) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
        }
    }

    pub(super) fn render(&self, x: &mut Exposition<'_>) {
        let published: Vec<RingStats> = self
            .workers
            .iter()
            .filter_map(|slot| *slot.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        if published.is_empty() {
            return;
        }
        for (name, help, kind, read, combine) in FAMILIES {
            let values = published.iter().map(read);
            let value = match combine {
                Combine::Sum => values.sum(),
                Combine::Max => values.max().unwrap_or(0),
            };
            x.family(name, help, kind);
            x.sample(name, &[], value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(metrics: &RingMetrics) -> String {
        let mut out = String::new();
        metrics.render(&mut Exposition { out: &mut out });
        out
    }

    #[test]
    fn nothing_is_rendered_until_a_ring_publishes_then_workers_combine() {
        let metrics = RingMetrics::new(2);
        assert_eq!(rendered(&metrics), "", "epoll workers publish nothing");
        let a = RingStats {
            submits: 10,
            entries: 300,
            starved: 2,
            buffers_held_peak: 40,
            ..RingStats::default()
        };
        let b =
            RingStats { submits: 5, entries: 100, starved: 1, buffers_held_peak: 90, ..RingStats::default() };
        metrics.set(0, a);
        metrics.set(1, b);
        metrics.set(7, a);
        let text = rendered(&metrics);
        for line in [
            "voxproxy_uring_submits_total 15",
            "voxproxy_uring_entries_total 400",
            "voxproxy_uring_starved_total 3",
            "voxproxy_uring_buffers_held_peak 90",
            "voxproxy_uring_dropped_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE").count(), FAMILIES.len());
    }
}
