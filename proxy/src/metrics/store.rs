//! `voxproxy_store_*`: the PostgreSQL store (`store.url`). Rendered only
//! when the store is configured, so a deployment without one shows none.
//!
//! Written by the store's own thread and read at scrape time: plain
//! atomics, a handful of additions per record, sync or event.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use super::Exposition;

/// What the store reports. See `metrics/store.rs`'s module documentation.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    enabled: AtomicBool,
    up: AtomicBool,
    records_written: AtomicU64,
    records_unreadable: AtomicU64,
    spool_bytes: AtomicU64,
    errors: AtomicU64,
    events_sent: AtomicU64,
    events_received: AtomicU64,
    events_truncated: AtomicU64,
    events_dropped: AtomicU64,
}

/// What happened to one event on its way between instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// Sent with `NOTIFY` to the other instances.
    Sent,
    /// Received from another instance and passed to this one's subscribers.
    Received,
    /// Sent, but cut to its ids because it was over the `NOTIFY` bound.
    Truncated,
    /// Lost: the database was down, or a notification was unreadable.
    Dropped,
}

impl StoreMetrics {
    /// The store is configured: its metrics are rendered from now on.
    pub fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    /// Whether the registry connection is up (`voxproxy_store_up`).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Relaxed);
    }

    /// Whether the registry connection is up now.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Bytes of the spool not in the database yet, as last measured.
    #[must_use]
    pub fn spool_bytes(&self) -> u64 {
        self.spool_bytes.load(Relaxed)
    }

    /// `n` call records reached the database.
    pub fn records_written(&self, n: u64) {
        self.records_written.fetch_add(n, Relaxed);
    }

    /// A spool line that is not a record (torn, too long) was skipped.
    pub fn record_unreadable(&self) {
        self.records_unreadable.fetch_add(1, Relaxed);
    }

    /// Bytes of the spool not in the database yet.
    pub fn set_spool_bytes(&self, bytes: u64) {
        self.spool_bytes.store(bytes, Relaxed);
    }

    /// A database round trip failed or timed out.
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// An event crossed (or failed to cross) between instances.
    pub fn event(&self, what: StoreEvent) {
        let counter = match what {
            StoreEvent::Sent => &self.events_sent,
            StoreEvent::Received => &self.events_received,
            StoreEvent::Truncated => &self.events_truncated,
            StoreEvent::Dropped => &self.events_dropped,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(super) fn render(&self, x: &mut Exposition<'_>) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        x.family("voxproxy_store_up", "1 while the connection to the store (store.url) is up.", "gauge");
        x.sample("voxproxy_store_up", &[], u8::from(self.up.load(Relaxed)));
        for (name, help, kind, value) in [
            (
                "voxproxy_store_records_written_total",
                "Call records written to the store (a replayed record counts again).",
                "counter",
                &self.records_written,
            ),
            (
                "voxproxy_store_records_unreadable_total",
                "Spool lines that are no call record (torn by a crash, or over 1 MiB) and were skipped.",
                "counter",
                &self.records_unreadable,
            ),
            (
                "voxproxy_store_spool_bytes",
                "Bytes of the call-record spool (cdr.path) not yet in the store.",
                "gauge",
                &self.spool_bytes,
            ),
            (
                "voxproxy_store_errors_total",
                "Store round trips that failed or timed out (store.query_timeout).",
                "counter",
                &self.errors,
            ),
        ] {
            x.family(name, help, kind);
            x.sample(name, &[], value.load(Relaxed));
        }
        let events = "voxproxy_store_events_total";
        x.family(
            events,
            "Call events between instances (LISTEN/NOTIFY): sent, received, truncated (over 8000 bytes, \
             sent as ids only), dropped (store down or unreadable).",
            "counter",
        );
        for (label, value) in [
            ("sent", &self.events_sent),
            ("received", &self.events_received),
            ("truncated", &self.events_truncated),
            ("dropped", &self.events_dropped),
        ] {
            x.sample(events, &[("result", label)], value.load(Relaxed));
        }
    }
}
