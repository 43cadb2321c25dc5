//! `GET /v1/events`: server-sent events, and the bounds on a subscriber.
//!
//! A subscriber that does not read costs the proxy a connection and, while
//! the kernel and hyper still take its data, nothing else: events wait in
//! one shared ring of [`EventHub::CAPACITY`](super::directory::EventHub::CAPACITY)
//! events. Two rules keep it from staying forever:
//!
//! - **lagged**: a subscriber that falls a whole ring behind has lost
//!   events anyway; its stream ends (it may reconnect and start afresh);
//! - **stalled**: once hyper has stopped asking for the next frame (its
//!   buffer and the socket's are full because the client does not read)
//!   for [`SSE_STALL_TIMEOUT`], the connection task closes the connection.
//!
//! Both are counted in `voxproxy_sse_subscribers_dropped_total{reason}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use hyper::body::Frame;
use tokio::sync::broadcast;

use super::MetricsHandle;
use super::directory::PublishedEvent;
use crate::metrics::SseDrop;

/// A comment is sent this often, so a dead subscriber is noticed and a
/// live one always has data flowing (the stall rule relies on it).
pub(crate) const SSE_HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a subscriber may leave a frame untaken before it is dropped:
/// two heartbeats.
pub(crate) const SSE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the connection task looks for a stall.
pub(crate) const SSE_STALL_CHECK: Duration = Duration::from_secs(5);

/// Whether an event stream's last frame was taken by hyper. Shared by the
/// body (which hyper requires to be `Send`) and the connection task, on one
/// worker thread; atomics only because of that bound.
#[derive(Debug)]
pub(crate) struct SseWatch {
    active: AtomicBool,
    /// Origin of `waiting_ns`.
    origin: Instant,
    /// Nanoseconds after `origin` when the last frame was handed over, while
    /// the next has not been asked for; [`NOT_WAITING`] otherwise.
    waiting_ns: AtomicU64,
}

const NOT_WAITING: u64 = u64::MAX;

impl Default for SseWatch {
    fn default() -> Self {
        SseWatch {
            active: AtomicBool::new(false),
            origin: Instant::now(),
            waiting_ns: AtomicU64::new(NOT_WAITING),
        }
    }
}

impl SseWatch {
    /// Whether this connection carries an event stream.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// A frame was handed to hyper at `now`.
    fn yielded(&self, now: Instant) {
        let ns =
            u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(NOT_WAITING - 1);
        self.waiting_ns.store(ns, Ordering::Relaxed);
    }

    /// Hyper asked for the next frame: the previous one was taken.
    fn taken(&self) {
        self.waiting_ns.store(NOT_WAITING, Ordering::Relaxed);
    }

    /// Whether a frame has waited to be taken for `timeout` or more.
    pub(crate) fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        let ns = self.waiting_ns.load(Ordering::Relaxed);
        self.is_active()
            && ns != NOT_WAITING
            && now.saturating_duration_since(self.origin + Duration::from_nanos(ns)) >= timeout
    }
}

/// The body of `GET /v1/events`: a hello comment, then each event, with a
/// heartbeat comment every `heartbeat`; it ends when the subscriber lags.
pub(crate) fn event_stream(
    receiver: broadcast::Receiver<PublishedEvent>,
    heartbeat: Duration,
    watch: Arc<SseWatch>,
    metrics: MetricsHandle,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + use<> {
    watch.active.store(true, Ordering::Relaxed);
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let hello = Bytes::from_static(b": voxproxy events\n\n");
    let state = (receiver, ticks, Some(hello), watch, metrics);
    futures_util::stream::unfold(state, |(mut receiver, mut ticks, hello, watch, metrics)| async move {
        watch.taken();
        let bytes = match hello {
            Some(hello) => hello,
            None => tokio::select! {
                event = receiver.recv() => match event {
                    Ok(event) => Bytes::from(format!("event: {}\ndata: {}\n\n", event.name, event.json)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics.get().events_dropped(n);
                        metrics.get().sse_subscriber_dropped(SseDrop::Lagged);
                        tracing::info!(lost = n, "event subscriber fell a whole backlog behind; disconnected");
                        return None;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = ticks.tick() => Bytes::from_static(b": keep-alive\n\n"),
            },
        };
        watch.yielded(Instant::now());
        Some((Ok(Frame::data(bytes)), (receiver, ticks, None, watch, metrics)))
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;
    use crate::metrics::Metrics;
    use crate::server::directory::{CallEvent, EventHub};

    fn handle() -> MetricsHandle {
        MetricsHandle { metrics: Arc::new(Metrics::new(1, "epoll")), index: 0 }
    }

    fn data(frame: Frame<Bytes>) -> String {
        String::from_utf8(frame.into_data().expect("data frame").to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn a_reader_gets_every_event_and_a_subscriber_a_whole_backlog_behind_is_ended() {
        let hub = EventHub::new();
        let metrics = handle();
        let watch = Arc::new(SseWatch::default());
        let stream =
            event_stream(hub.subscribe(), Duration::from_secs(3600), Arc::clone(&watch), metrics.clone());
        futures_util::pin_mut!(stream);
        assert!(data(stream.next().await.expect("hello").expect("frame")).starts_with(": voxproxy"));
        hub.publish("MZ1", "CA1", &CallEvent::Ended { reason: "hangup" });
        let first = data(stream.next().await.expect("event").expect("frame"));
        assert!(first.starts_with("event: call_ended\ndata: {"), "{first}");
        // The subscriber stops reading while the ring overflows.
        for _ in 0..=EventHub::CAPACITY {
            hub.publish("MZ1", "CA1", &CallEvent::Ended { reason: "hangup" });
        }
        assert!(stream.next().await.is_none(), "a lagged subscriber's stream ends");
        let mut rendered = String::new();
        metrics.metrics.render(&mut rendered);
        assert!(
            rendered.contains("voxproxy_sse_subscribers_dropped_total{reason=\"lagged\"} 1"),
            "{rendered}"
        );
        assert!(rendered.contains("voxproxy_events_dropped_total 1\n"), "{rendered}");
    }

    #[tokio::test]
    async fn a_frame_left_untaken_is_a_stall_and_a_taken_one_is_not() {
        let hub = EventHub::new();
        let watch = Arc::new(SseWatch::default());
        assert!(!watch.is_active());
        let stream = event_stream(hub.subscribe(), Duration::from_secs(3600), Arc::clone(&watch), handle());
        futures_util::pin_mut!(stream);
        assert!(watch.is_active());
        let t0 = Instant::now();
        assert!(!watch.stalled(t0 + Duration::from_secs(999), SSE_STALL_TIMEOUT), "nothing handed over yet");
        let _hello = stream.next().await;
        let handed = Instant::now();
        assert!(!watch.stalled(handed + Duration::from_secs(29), SSE_STALL_TIMEOUT));
        assert!(watch.stalled(handed + SSE_STALL_TIMEOUT, SSE_STALL_TIMEOUT), "hyper never asked again");
        // Hyper asks for the next frame: nothing to send is no stall.
        let next = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
        assert!(next.is_err(), "no event, no frame");
        assert!(!watch.stalled(handed + Duration::from_secs(999), SSE_STALL_TIMEOUT));
    }
}
