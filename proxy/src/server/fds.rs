//! Running out of file descriptors, seen for what it is.
//!
//! Every call holds two descriptors for its whole life (the media
//! WebSocket's TCP connection and its RTP socket), and every webhook, scrape
//! or control request one for a moment. Under a low `RLIMIT_NOFILE` (the
//! classic `ulimit -n 1024`, or less) the process runs out long before
//! `limits.max_calls`. [`FdBudget`] keeps that from turning into calls that
//! are promised and then fail:
//!
//! - The voice webhook answers `<Reject reason="busy"/>` when one more call
//!   would leave fewer than [`FD_RESERVE`] descriptors free, or when any
//!   operation ran out of descriptors (`EMFILE`, or `ENFILE` for the whole
//!   system) in the last [`EXHAUSTED_HOLD`].
//! - Descriptors in use are estimated without a system call per request: the
//!   server counts its connections and RTP sockets, and the rest (listeners,
//!   rings, files, stdio) is measured from `/proc/self/fd` at most once per
//!   [`CALIBRATE_EVERY`].
//! - Every `EMFILE`/`ENFILE` is counted (`voxproxy_fd_exhausted_total`) and
//!   logged at most once per [`LOG_EVERY`], with how many were not logged.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Descriptors one call holds: its WebSocket connection and its RTP socket.
pub const FDS_PER_CALL: u64 = 2;
/// Descriptors kept free for webhooks, scrapes, the control API, TLS and the
/// call-record files while calls are admitted.
pub const FD_RESERVE: u64 = 16;
/// After an `EMFILE`/`ENFILE`, how long webhooks answer busy regardless of
/// the estimate (the estimate cannot see a system-wide shortage).
pub const EXHAUSTED_HOLD: Duration = Duration::from_secs(1);
/// How often the untracked descriptors are measured again.
pub const CALIBRATE_EVERY: Duration = Duration::from_secs(5);
/// At most one log line per this long about descriptor exhaustion.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// Whether `error` says the process or the system is out of descriptors.
#[must_use]
pub fn is_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(EMFILE | ENFILE))
}

/// The process's descriptor budget. Shared by every worker.
#[derive(Debug)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE`; `None` when unlimited or unknown.
    limit: Option<u64>,
    epoch: Instant,
    /// Descriptors the server does not count itself (listeners, rings, files).
    untracked: AtomicU64,
    /// When `untracked` was last measured, ms after `epoch` (0: never).
    calibrated_ms: AtomicU64,
    /// When descriptors last ran out, ms after `epoch` (0: never).
    exhausted_ms: AtomicU64,
    /// When a line was last logged, ms after `epoch` (0: never).
    logged_ms: AtomicU64,
    /// Events since the last line.
    unlogged: AtomicU64,
}

impl FdBudget {
    /// A budget under the soft limit `limit` (`None`: unlimited).
    #[must_use]
    pub fn new(limit: Option<u64>) -> FdBudget {
        FdBudget {
            limit,
            epoch: Instant::now(),
            untracked: AtomicU64::new(0),
            calibrated_ms: AtomicU64::new(0),
            exhausted_ms: AtomicU64::new(0),
            logged_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// The soft limit this budget works under.
    #[must_use]
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Milliseconds since `epoch`, never 0 (0 means "never" above).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether one more call fits: `tracked` is the descriptors the server
    /// counts itself (open connections plus leased RTP sockets).
    #[must_use]
    pub fn room_for_call(&self, tracked: u64) -> bool {
        let now = self.now_ms();
        let exhausted = self.exhausted_ms.load(Relaxed);
        if exhausted != 0 && now.saturating_sub(exhausted) < EXHAUSTED_HOLD.as_millis() as u64 {
            return false;
        }
        let Some(limit) = self.limit else { return true };
        let calibrated = self.calibrated_ms.load(Relaxed);
        if calibrated == 0 || now.saturating_sub(calibrated) >= CALIBRATE_EVERY.as_millis() as u64 {
            self.calibrated_ms.store(now, Relaxed);
            if let (Some(open), _) = crate::metrics::own_fds() {
                // The listing itself held one descriptor.
                self.untracked.store(open.saturating_sub(1).saturating_sub(tracked), Relaxed);
            }
        }
        self.untracked.load(Relaxed) + tracked + FDS_PER_CALL + FD_RESERVE <= limit
    }

    /// Records that `what` failed with `error` for want of a descriptor:
    /// counted, and logged at most once per [`LOG_EVERY`].
    pub fn exhausted(&self, metrics: &Metrics, what: &'static str, error: &io::Error) {
        metrics.fd_exhausted();
        let now = self.now_ms();
        self.exhausted_ms.store(now, Relaxed);
        self.log_limited(now, || {
            tracing::warn!(
                what,
                error = %error,
                limit = self.limit,
                "out of file descriptors: refusing calls as busy until some are free; raise the \
                 limit (systemd LimitNOFILE=, ulimit -n) or lower limits.max_calls"
            );
        });
    }

    /// Records that a webhook was answered busy because one more call would
    /// leave too few descriptors: logged at most once per [`LOG_EVERY`].
    pub fn refused_near_limit(&self) {
        let now = self.now_ms();
        self.log_limited(now, || {
            tracing::warn!(
                limit = self.limit,
                reserve = FD_RESERVE,
                "close to the file-descriptor limit: answering calls busy; raise the limit \
                 (systemd LimitNOFILE=, ulimit -n) or lower limits.max_calls"
            );
        });
    }

    fn log_limited(&self, now: u64, log: impl FnOnce()) {
        let last = self.logged_ms.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due && self.logged_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            let unlogged = self.unlogged.swap(0, Relaxed);
            if unlogged > 0 {
                tracing::warn!(events = unlogged, "descriptor shortage events since the last line");
            }
            log();
        } else {
            self.unlogged.fetch_add(1, Relaxed);
        }
    }
}

/// Descriptors one worker holds: its runtime's epoll or io_uring ring,
/// eventfds and timers, its listening socket and its admin listening
/// socket. Measured (`ls /proc/PID/fd` with 1 and 4 workers): 6 with epoll
/// and 7 with io_uring without an admin listener, so 8 with one.
pub const FDS_PER_WORKER: u64 = 8;

/// The open-file limit before and after [`raise_nofile_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
    /// The hard limit, as far as the soft one may go (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` as far as the hard limit allows (a
/// systemd unit's `LimitNOFILE=` or `ulimit -Hn`): the classic soft 1024
/// holds about 500 calls. An unlimited hard limit stops at the kernel's
/// `fs.nr_open`. Failing to raise it is not fatal: the start-up check then
/// works with the limit as it is.
#[must_use]
pub fn raise_nofile_limit() -> NofileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let ceiling = before
        .maximum
        .or_else(|| std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()));
    if let Some(ceiling) = ceiling
        && before.current.is_some_and(|soft| soft < ceiling)
    {
        let raised = Rlimit { current: Some(ceiling), maximum: before.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "could not raise the open-file limit to the hard limit");
        }
    }
    let now = getrlimit(Resource::Nofile);
    NofileLimit { before: before.current, now: now.current, hard: now.maximum }
}

/// How many calls `limit` descriptors hold when `open` are open now and
/// `workers` workers are still to start; `None` when unlimited.
#[must_use]
pub fn calls_that_fit(limit: Option<u64>, open: u64, workers: u64) -> Option<u64> {
    let limit = limit?;
    Some(limit.saturating_sub(open + workers * FDS_PER_WORKER + FD_RESERVE) / FDS_PER_CALL)
}

/// The sentence refusing a start whose `max_calls` do not fit in `limit`
/// descriptors; `None` when they fit.
#[must_use]
pub fn too_few_descriptors(max_calls: u32, limit: Option<u64>, fit: Option<u64>) -> Option<String> {
    let (limit, fit) = (limit?, fit?);
    (fit < u64::from(max_calls)).then(|| {
        let needed = u64::from(max_calls) * FDS_PER_CALL + (limit - fit * FDS_PER_CALL);
        format!(
            "limits.max_calls = {max_calls} needs about {needed} open files ({FDS_PER_CALL} per call) but the \
             hard limit allows {limit}, which holds {fit} calls: raise it (systemd LimitNOFILE={needed} or \
             more, ulimit -Hn) or lower limits.max_calls to {fit}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_check_counts_workers_reserve_and_two_descriptors_per_call() {
        // 1024 - 20 open - 2 workers * 8 - 16 reserve = 972: 486 calls.
        assert_eq!(calls_that_fit(Some(1024), 20, 2), Some(486));
        assert_eq!(calls_that_fit(None, 20, 2), None);
        assert_eq!(calls_that_fit(Some(10), 20, 2), Some(0));
        assert_eq!(too_few_descriptors(486, Some(1024), Some(486)), None);
        let refused = too_few_descriptors(2000, Some(1024), Some(486)).unwrap();
        assert!(refused.contains("limits.max_calls = 2000"), "{refused}");
        assert!(refused.contains("LimitNOFILE=4052"), "{refused}");
        assert!(refused.contains("lower limits.max_calls to 486"), "{refused}");
        assert!(!refused.contains('\n'), "one sentence: {refused}");
        assert_eq!(too_few_descriptors(2000, None, None), None);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise_nofile_limit();
        // Raising is idempotent, and never above the hard limit.
        assert_eq!(raise_nofile_limit().now, limit.now);
        if let (Some(now), Some(hard)) = (limit.now, limit.hard) {
            assert_eq!(now, hard);
        }
    }

    #[test]
    fn exhaustion_errors_are_recognised() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(EMFILE)));
        assert!(is_exhaustion(&io::Error::from_raw_os_error(ENFILE)));
        assert!(!is_exhaustion(&io::Error::from(io::ErrorKind::AddrInUse)));
        // The constants are Linux's: check them against what the OS says.
        let emfile = io::Error::from_raw_os_error(EMFILE).to_string();
        assert!(emfile.contains("Too many open files"), "{emfile}");
        let enfile = io::Error::from_raw_os_error(ENFILE).to_string();
        assert!(enfile.contains("Too many open files in system"), "{enfile}");
    }

    #[test]
    fn the_budget_counts_tracked_descriptors_against_the_limit() {
        let (open, _) = crate::metrics::own_fds();
        let open = open.unwrap();
        let budget = FdBudget::new(Some(open + FD_RESERVE + 10 * FDS_PER_CALL));
        assert!(budget.room_for_call(0));
        // Tracked descriptors are on top of what was measured at calibration.
        assert!(budget.room_for_call(9 * FDS_PER_CALL));
        assert!(!budget.room_for_call(11 * FDS_PER_CALL));
        assert!(FdBudget::new(None).room_for_call(u64::MAX / 2));
    }

    #[test]
    fn exhaustion_refuses_for_a_while_and_is_counted() {
        let metrics = Metrics::new(1, "epoll");
        let budget = FdBudget::new(None);
        assert!(budget.room_for_call(0));
        let error = io::Error::from_raw_os_error(EMFILE);
        for _ in 0..100 {
            budget.exhausted(&metrics, "accept", &error);
        }
        assert!(!budget.room_for_call(0));
        assert_eq!(budget.unlogged.load(Relaxed), 99, "one line for 100 events");
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("voxproxy_fd_exhausted_total 100\n"), "{out}");
    }
}
