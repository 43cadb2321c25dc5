//! The drain timeout's word to one worker's calls.
//!
//! When `drain.timeout` runs out the server flips its process-wide
//! `shutdown` watch, and every call still up closes. Each call's loop waits
//! for that first in its `select!`, so the wait is polled on every frame:
//! a tokio `watch` receiver's `changed()` takes the channel's waiter lock on
//! each poll, which cost about 480 instructions per bridged frame, 2.5 % of
//! the proxy's user-space instructions (`benches/callgrind.sh`, 10 calls).
//! Here one task per worker watches the channel and wakes the worker's
//! calls; a call's poll reads a flag and compares its waker.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Whether the drain timeout has run out, and the calls waiting to hear it.
#[derive(Debug, Default)]
pub(crate) struct DrainSignal {
    closed: Cell<bool>,
    /// One slot per waiting call, reused once its call is done.
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl DrainSignal {
    /// True once the drain timeout has run out.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Marks the drain timeout run out and wakes every waiting call.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        let wakers: Vec<Waker> = self.waiters.borrow_mut().iter_mut().filter_map(Option::take).collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Closes this signal once `shutdown` says so (or its sender is gone,
    /// which only happens as the server itself goes).
    pub(crate) async fn watch(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let _ = shutdown.wait_for(|closed| *closed).await;
        self.close();
    }

    /// A wait that is ready once, when the drain timeout runs out.
    pub(crate) fn wait(&self) -> DrainWait<'_> {
        let slot = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut waiters = self.waiters.borrow_mut();
            waiters.push(None);
            waiters.len() - 1
        });
        DrainWait { signal: self, slot, fired: false }
    }
}

/// One call's wait for the drain timeout: ready once, then never again (a
/// call closing for the drain goes on to flush its goodbye).
#[derive(Debug)]
pub(crate) struct DrainWait<'a> {
    signal: &'a DrainSignal,
    slot: usize,
    fired: bool,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired {
            return Poll::Pending;
        }
        if self.signal.is_closed() {
            self.fired = true;
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        let waiter = &mut waiters[self.slot];
        if !waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waiter = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(waiter) = self.signal.waiters.borrow_mut().get_mut(self.slot) {
            *waiter = None;
        }
        self.signal.free.borrow_mut().push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll(wait: &mut DrainWait<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(wait).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn waiting_calls_are_woken_once_and_ready_once() {
        let signal = DrainSignal::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let (mut a, mut b) = (signal.wait(), signal.wait());
        assert_eq!(poll(&mut a, &waker), Poll::Pending);
        assert_eq!(poll(&mut a, &waker), Poll::Pending, "polled again, still one waker");
        assert_eq!(poll(&mut b, &waker), Poll::Pending);
        signal.close();
        assert_eq!(count.0.load(Ordering::Relaxed), 2, "each waiting call woken once");
        assert_eq!(poll(&mut a, &waker), Poll::Ready(()));
        assert_eq!(poll(&mut a, &waker), Poll::Pending, "ready once: the call goes on closing");
        assert_eq!(poll(&mut b, &waker), Poll::Ready(()));
    }

    #[test]
    fn a_call_that_starts_after_the_drain_is_ready_at_once() {
        let signal = DrainSignal::default();
        signal.close();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        assert_eq!(poll(&mut signal.wait(), &waker), Poll::Ready(()));
    }

    #[test]
    fn slots_of_finished_calls_are_reused() {
        let signal = DrainSignal::default();
        for _ in 0..100 {
            let first = signal.wait();
            let second = signal.wait();
            drop((first, second));
        }
        assert_eq!(signal.waiters.borrow().len(), 2, "two calls at most, two slots");
    }

    #[tokio::test]
    async fn the_shutdown_watch_closes_it() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let signal = DrainSignal::default();
        let watching = signal.watch(rx);
        tokio::pin!(watching);
        assert!(futures_util::poll!(&mut watching).is_pending());
        assert!(!signal.is_closed());
        tx.send_replace(true);
        assert!(futures_util::poll!(&mut watching).is_ready());
        assert!(signal.is_closed());
    }
}
