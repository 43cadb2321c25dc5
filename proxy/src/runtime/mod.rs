//! Worker threads and the I/O backends they run on.
//!
//! A worker is one OS thread pinned to one CPU, running tokio's
//! current-thread runtime (TCP, HTTP, WebSocket and timers on epoll). The
//! backend decides how the calls' RTP sockets are served: by the same epoll
//! ([`IoBackend::Epoll`]), or by one io_uring per worker
//! ([`IoBackend::Uring`], the `io-uring` crate; see `ring.rs`): multishot
//! receives into a provided-buffer ring and the sends of every call batched
//! into one submission per turn of the runtime. Everything a call
//! owns — its WebSocket, its RTP socket, its bridge and its timers — lives on
//! the worker that accepted its connection, so the media path takes no locks
//! and never hops threads.
//!
//! The two backends differ only in how UDP is done, behind [`RtpSocket`].
//! A receive is a readiness wait, then the datagram lent to a closure where
//! the backend holds it (the ring's buffer, or the epoll worker's one
//! receive buffer), so neither copies it nor makes a call hold a buffer. A
//! send takes an owned buffer and gives it back, which is what a
//! completion-based ring needs and a readiness-based socket can serve too.
//!
//! ```no_run
//! use voxproxy::runtime::{IoBackend, RtpSocket, Worker};
//!
//! let backend = IoBackend::Epoll;
//! let worker = Worker::spawn(0, backend, None, move || async move {
//!     let socket = backend.bind_rtp("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let (result, _buf) = socket.send_to(vec![0x80, 0, 0, 1], "127.0.0.1:4000".parse().unwrap()).await;
//!     result.is_ok()
//! })
//! .unwrap();
//! assert!(worker.join().unwrap());
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::Duration;

mod epoll;
mod ring;
mod spares;
mod uring;

pub use epoll::EpollUdp;
pub use ring::{MAX_RECV_DATAGRAM, RingStats};
pub(crate) use spares::Spares;
pub use uring::{UringTcp, UringUdp, ring_stats, trim_ring};

/// Which I/O backend a worker's runtime uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoBackend {
    /// RTP through one io_uring per worker; the rest on epoll.
    Uring,
    /// epoll through tokio's current-thread runtime.
    Epoll,
}

impl IoBackend {
    /// `uring` or `epoll`, as in metrics labels, call records and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            IoBackend::Uring => "uring",
            IoBackend::Epoll => "epoll",
        }
    }

    /// Whether io_uring can be used here: sets up a worker's ring and sends
    /// one datagram through it to a socket of its own, which must come back
    /// through the ring's receive within a second. `Err` says why not: a
    /// seccomp profile, gVisor and `kernel.io_uring_disabled` refuse
    /// `io_uring_setup`; kernels before 6.0 lack what the ring uses
    /// (provided-buffer rings, multishot `recvmsg`, `send` with an address);
    /// some sandboxes allow setup but refuse the operations themselves.
    pub fn probe_uring() -> Result<(), io::Error> {
        try_run_uring(|| async {
            let socket = IoBackend::Uring.bind_rtp("127.0.0.1:0".parse().expect("literal address"))?;
            let to = socket.local_addr()?;
            let (sent, _) = socket.send_to(vec![0x5a; 3], to).await;
            sent?;
            let round = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(vec![0; 8]));
            let (received, buf) = round.await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "a datagram through io_uring did not come back within 1 s",
                )
            })?;
            let (n, from) = received?;
            if (n, from) != (3, to) || buf[..3] != [0x5a; 3] {
                return Err(io::Error::other(format!(
                    "io_uring returned {n} bytes from {from}, not 3 from {to}"
                )));
            }
            Ok(())
        })?
    }

    /// Binds an RTP socket of this backend. Must be called on a worker of
    /// this backend (the io_uring socket registers with the thread's ring,
    /// and is refused elsewhere).
    pub fn bind_rtp(self, addr: SocketAddr) -> io::Result<RtpUdp> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(match self {
            IoBackend::Uring => RtpUdp::Uring(UringUdp::from_std(socket)?),
            IoBackend::Epoll => RtpUdp::Epoll(EpollUdp::from_std(socket)?),
        })
    }
}

impl fmt::Display for IoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of a receive: bytes and source on success, and the buffer back.
pub type RecvResult = (io::Result<(usize, SocketAddr)>, Vec<u8>);
/// The result of a send: bytes sent on success, and the buffer back.
pub type SendResult = (io::Result<usize>, Vec<u8>);

/// A call's UDP socket towards the voice stack, as either backend provides it.
///
/// Receives are lent, not copied: once [`RtpSocket::poll_recv_ready`] is
/// ready, [`RtpSocket::try_recv_with`] hands the datagram's bytes to a
/// closure, where the io_uring kernel wrote them in the worker's ring, or in
/// the epoll worker's one receive buffer, so a call holds no receive buffer
/// of its own. Both backends cut a datagram longer than
/// [`MAX_RECV_DATAGRAM`], as a `recvfrom` into a buffer that long would.
/// Sends take an owned buffer: `send_to` sends all of `buf` and hands it
/// back, so a call reuses its buffers for its whole life.
pub trait RtpSocket {
    /// The local address (the port Twilio's audio leaves from and the voice
    /// stack sends to).
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Ready once a datagram (or a receive error) may be waiting; `Err`
    /// when waiting itself failed.
    fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Takes the next datagram and lends its bytes and source to `f`,
    /// returning what `f` returns; `Some(Err)` for a receive error (an
    /// ICMP error from the peer, datagrams dropped for a lagging call),
    /// `None` when none was waiting after all (wait again).
    fn try_recv_with<R>(&self, f: impl FnOnce(&[u8], SocketAddr) -> R) -> Option<io::Result<R>>;
    /// Receives one datagram into `buf`, cut to its length: a copy of what
    /// [`RtpSocket::try_recv_with`] lends, for callers that keep it.
    fn recv_from(&self, mut buf: Vec<u8>) -> impl Future<Output = RecvResult> {
        async move {
            loop {
                if let Err(e) = std::future::poll_fn(|cx| self.poll_recv_ready(cx)).await {
                    return (Err(e), buf);
                }
                let copied = self.try_recv_with(|bytes, from| {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    (n, from)
                });
                if let Some(result) = copied {
                    return (result, buf);
                }
            }
        }
    }
    /// Sends `buf` as one datagram to `target`.
    fn send_to(&self, buf: Vec<u8>, target: SocketAddr) -> impl Future<Output = SendResult>;
}

/// An RTP socket of whichever backend the worker runs.
#[derive(Debug)]
pub enum RtpUdp {
    /// Through io_uring.
    Uring(UringUdp),
    /// Through epoll.
    Epoll(EpollUdp),
}

impl RtpSocket for RtpUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            RtpUdp::Uring(s) => s.local_addr(),
            RtpUdp::Epoll(s) => s.local_addr(),
        }
    }

    fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            RtpUdp::Uring(s) => s.poll_recv_ready(cx),
            RtpUdp::Epoll(s) => s.poll_recv_ready(cx),
        }
    }

    fn try_recv_with<R>(&self, f: impl FnOnce(&[u8], SocketAddr) -> R) -> Option<io::Result<R>> {
        match self {
            RtpUdp::Uring(s) => s.try_recv_with(f),
            RtpUdp::Epoll(s) => s.try_recv_with(f),
        }
    }

    async fn send_to(&self, buf: Vec<u8>, target: SocketAddr) -> SendResult {
        match self {
            RtpUdp::Uring(s) => s.send_to(buf, target).await,
            RtpUdp::Epoll(s) => s.send_to(buf, target).await,
        }
    }
}

/// A running worker thread.
#[derive(Debug)]
pub struct Worker<T> {
    handle: JoinHandle<T>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts worker `index` on its own thread, pinned to `cpu` when given,
    /// running `main()` to completion on a fresh runtime of `backend`.
    /// `main` is called on the new thread, so the future it returns need not
    /// be `Send` (calls spawn `!Send` tasks with `tokio::task::spawn_local`).
    pub fn spawn<F, Fut>(
        index: usize,
        backend: IoBackend,
        cpu: Option<core_affinity::CoreId>,
        main: F,
    ) -> io::Result<Self>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let handle = thread::Builder::new().name(format!("voxproxy-w{index}")).spawn(move || {
            if let Some(cpu) = cpu
                && !core_affinity::set_for_current(cpu)
            {
                tracing::warn!(
                    worker = index,
                    cpu = cpu.id,
                    "could not pin the worker to its CPU; it runs unpinned"
                );
            }
            // The main future runs as a task of its own: the one `block_on`
            // drives is polled on every wake of the runtime (tokio's
            // `LocalSet::run_until`), so the worker's accept loop would poll
            // its listeners and its stop watch on every frame of every call.
            // A join handle costs almost nothing to poll.
            run_on(backend, move || async move {
                match tokio::task::spawn_local(main()).await {
                    Ok(output) => output,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => panic!("the worker's main task was cancelled: {e}"),
                }
            })
        })?;
        Ok(Worker { handle })
    }

    /// Waits for the worker's main future to finish.
    pub fn join(self) -> thread::Result<T> {
        self.handle.join()
    }
}

/// Runs `main()` to completion on a new single-threaded runtime of `backend`
/// on the current thread, with a `LocalSet` so `spawn_local` works.
///
/// # Panics
///
/// If the runtime cannot be built (io_uring refused after a successful probe,
/// or the process is out of file descriptors): a worker without a runtime
/// cannot do anything, so the thread stops and the server notices the join.
pub fn run_on<F, Fut>(backend: IoBackend, main: F) -> Fut::Output
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    match backend {
        IoBackend::Uring => try_run_uring(main).expect("io_uring worker (the probe at start succeeded)"),
        IoBackend::Epoll => {
            let (runtime, local) = current_thread().expect("tokio current-thread runtime");
            local.block_on(&runtime, main())
        }
    }
}

/// tokio's current-thread runtime as every worker runs it, with a
/// `LocalSet` for `spawn_local`.
fn current_thread() -> io::Result<(tokio::runtime::Runtime, tokio::task::LocalSet)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().event_interval(61).build()?;
    Ok((runtime, tokio::task::LocalSet::new()))
}

/// [`run_on`] for io_uring: the epoll worker's runtime plus this thread's
/// ring and the task driving it. `Err` when the ring cannot be set up.
fn try_run_uring<F, Fut>(main: F) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let driver = std::rc::Rc::new(ring::Driver::new()?);
    let (runtime, local) = current_thread()?;
    let installed = uring::install(std::rc::Rc::clone(&driver));
    local.spawn_local(uring::drive(std::rc::Rc::clone(&driver)));
    let output = local.block_on(&runtime, main());
    // The driver task and every socket go before the ring (its drop waits
    // for the kernel to finish with the buffers).
    drop(local);
    drop(installed);
    let stats = driver.stats();
    tracing::debug!(?stats, "io_uring worker finished");
    Ok(output)
}

/// `N` random bytes from the operating system. Without an entropy source
/// (never seen on Linux) the bytes come from the clock and the process ID:
/// unpredictability is lost, uniqueness mostly kept, and nothing stops.
#[must_use]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = (nanos ^ u128::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = seed.rotate_left((i % 16) as u32 * 8).to_le_bytes()[0];
        }
    }
    bytes
}

/// The CPUs the process may run on, for pinning workers round-robin.
#[must_use]
pub fn usable_cpus() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Converts between the wall of `std::time::Instant` and the call bridge's
/// `voxproxy_core::time::Instant` (nanoseconds since this process's epoch).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    #[must_use]
    pub fn new() -> Self {
        Clock { epoch: std::time::Instant::now() }
    }

    /// The current time as the bridge sees it.
    #[must_use]
    pub fn now(&self) -> voxproxy_core::time::Instant {
        self.to_core(std::time::Instant::now())
    }

    /// `at` on the bridge's time line.
    #[must_use]
    pub fn to_core(&self, at: std::time::Instant) -> voxproxy_core::time::Instant {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        voxproxy_core::time::Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// A bridge deadline as a tokio instant, for `sleep_until`.
    #[must_use]
    pub fn to_tokio(&self, at: voxproxy_core::time::Instant) -> tokio::time::Instant {
        let offset = Duration::from_nanos(at.as_nanos());
        // A deadline centuries away cannot be represented; a year is "never" enough.
        let at = self
            .epoch
            .checked_add(offset)
            .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(365 * 86_400));
        tokio::time::Instant::from_std(at)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_round(backend: IoBackend) {
        let worker = Worker::spawn(0, backend, None, move || async move {
            let a = backend.bind_rtp("127.0.0.1:0".parse().unwrap()).unwrap();
            let b = backend.bind_rtp("127.0.0.1:0".parse().unwrap()).unwrap();
            let to = b.local_addr().unwrap();
            let (sent, _) = a.send_to(vec![1, 2, 3], to).await;
            assert_eq!(sent.unwrap(), 3);
            let recv = tokio::time::timeout(Duration::from_secs(5), b.recv_from(vec![0; 64]));
            let (got, buf) = recv.await.expect("datagram within 5 s");
            let (n, from) = got.unwrap();
            assert_eq!(from, a.local_addr().unwrap());
            buf[..n].to_vec()
        })
        .unwrap();
        assert_eq!(worker.join().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn epoll_socket_round_trip() {
        echo_round(IoBackend::Epoll);
    }

    #[test]
    fn uring_socket_round_trip_when_the_kernel_allows_it() {
        match IoBackend::probe_uring() {
            Ok(()) => echo_round(IoBackend::Uring),
            // The end-to-end tests say loudly when uring is unavailable; here
            // the epoll test covers the shared code.
            Err(e) => eprintln!("io_uring unavailable here ({e}); uring socket not tested"),
        }
    }

    #[test]
    fn clock_round_trips_deadlines() {
        let clock = Clock::new();
        let later = clock.now().saturating_add(Duration::from_millis(20));
        let tokio_at = clock.to_tokio(later);
        let back = clock.to_core(tokio_at.into_std());
        assert_eq!(back, later);
    }
}
