//! RTP echo backend: every RTP datagram goes back to the address it came
//! from, for tests, demos and benchmarks of the proxy's RTP leg.
//!
//! The echo is *symmetric RTP* with per-source state, as a real endpoint
//! answering each peer would send it:
//!
//! - each source address gets its own random SSRC and its own sequence
//!   numbers, starting at a random value and rising by one per packet
//!   received from that source;
//! - the RTP timestamp, the marker bit, the payload type, CSRCs, header
//!   extension, payload and padding are sent back unchanged, so PCMU frames
//!   return bit-exact and keep their timing;
//! - a datagram that is not valid RTP (or is RTCP) is dropped and counted.
//!
//! Network impairments can be added: a fixed delay, jitter (a uniform offset
//! of ± the jitter added to the delay, never below zero — with jitter above
//! half the packet interval packets overtake each other, i.e. are
//! *reordered*), and random loss. The sequence number is assigned when a
//! packet arrives, before loss and delay, so a lost packet shows up as a gap
//! and a reordered one as out of order, exactly as on a real network. All
//! randomness comes from one generator seeded by [`EchoConfig::seed`], so a
//! run with a seed is repeatable.
//!
//! Everything is bounded: at most [`EchoConfig::max_sources`] sources are
//! remembered (idle ones are forgotten first, then the least recently heard
//! half), and at most [`EchoConfig::max_queued`] delayed packets wait (more
//! are dropped and counted).
//!
//! ## How to drive it
//!
//! [`Reflector`] is the sans-IO core: feed each datagram with
//! [`Reflector::handle_datagram`], feed the passage of time with
//! [`Reflector::handle_timeout`] when [`Reflector::poll_timeout`] is due, and
//! after every input drain [`Reflector::poll_transmit`] until it returns
//! `None`, sending each [`Transmit`]. [`EchoServer::spawn`] runs one on a
//! blocking UDP socket in its own thread, in batches: one `recvmmsg` takes
//! every datagram queued (up to 64) and one `sendmmsg` sends their echoes,
//! so a busy echo pays two syscalls per batch, not two per datagram.
//! Datagrams longer than 4 KiB are dropped as garbage. The socket asks the
//! kernel to stamp each datagram as it arrives (`SO_TIMESTAMPNS`), and
//! [`EchoStats::read_wait_us`] says how long datagrams waited for the
//! thread: on a shared benchmark core, the rig's part of a round trip.
//!
//! ```
//! use std::net::UdpSocket;
//! use std::time::Duration;
//! use voxproxy_rig::echo::{EchoConfig, EchoServer};
//! use voxproxy_core::rtp::{RtpHeader, RtpPacket};
//!
//! let echo = EchoServer::spawn(&EchoConfig::default())?;
//! let client = UdpSocket::bind("127.0.0.1:0")?;
//! client.set_read_timeout(Some(Duration::from_secs(5)))?;
//!
//! let mut datagram = [0u8; 172];
//! let len = RtpHeader::new(0, 7, 160, 0x1234).write(&[0xd5; 160], &mut datagram).unwrap();
//! client.send_to(&datagram[..len], echo.local_addr())?;
//!
//! let mut back = [0u8; 1500];
//! let (n, _) = client.recv_from(&mut back)?;
//! let packet = RtpPacket::parse(&back[..n]).unwrap();
//! assert_eq!((packet.payload_type(), packet.timestamp()), (0, 160));
//! assert_eq!(packet.payload(), &[0xd5; 160][..]);
//! assert_ne!(packet.ssrc(), 0x1234, "the echo speaks with its own SSRC");
//!
//! let stats = echo.shutdown();
//! assert_eq!((stats.received, stats.echoed), (1, 1));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use voxproxy_core::rtp::{RtpPacket, is_probably_rtcp};

use crate::mmsg::{RecvBatch, SendBatch};
use crate::sim::meter::{MAX_LATENCY_US, latency_micros};
use crate::sim::stamped::waited;
use voxproxy_core::time::{Instant, duration_nanos};

/// How long the echo thread blocks in `recv_from` at most, so that
/// [`EchoHandle::shutdown`] is noticed within this time.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Loss probabilities are held in parts per million.
const PPM: u32 = 1_000_000;

/// How an echo backend behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct EchoConfig {
    /// Address to bind the UDP socket to (port 0: any free port).
    pub listen: SocketAddr,
    /// Delay added to every echoed packet.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform offset in ±`jitter`
    /// (never below zero).
    pub jitter: Duration,
    /// Percentage of packets dropped at random, 0 to 100.
    pub loss_percent: f64,
    /// Seed of the random generator (SSRCs, first sequence numbers, loss,
    /// jitter); `None` draws one from the operating system.
    pub seed: Option<u64>,
    /// Most source addresses remembered at once.
    pub max_sources: usize,
    /// Most delayed packets waiting at once.
    pub max_queued: usize,
    /// A source not heard from for this long is forgotten when room is needed.
    pub source_idle: Duration,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_percent: 0.0,
            seed: None,
            max_sources: 65_536,
            max_queued: 65_536,
            source_idle: Duration::from_secs(60),
        }
    }
}

/// Why an echo backend could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum EchoError {
    /// `loss_percent` is not a number from 0 to 100.
    InvalidLoss {
        /// The value given.
        percent: f64,
    },
    /// `max_sources` or `max_queued` is zero.
    ZeroCapacity {
        /// Which setting.
        setting: &'static str,
    },
    /// The UDP socket could not be bound or set up.
    Socket {
        /// The address it was to be bound to.
        listen: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The operating system gave no random seed.
    Entropy(String),
}

impl fmt::Display for EchoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EchoError::InvalidLoss { percent } => {
                write!(f, "loss must be a percentage from 0 to 100, not {percent}")
            }
            EchoError::ZeroCapacity { setting } => write!(f, "{setting} must be at least 1"),
            EchoError::Socket { listen, source } => write!(f, "cannot listen for RTP on {listen}: {source}"),
            EchoError::Entropy(reason) => write!(f, "cannot seed the random generator: {reason}"),
        }
    }
}

impl std::error::Error for EchoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EchoError::Socket { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<EchoError> for io::Error {
    fn from(e: EchoError) -> io::Error {
        match e {
            EchoError::Socket { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// What an echo backend has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Datagrams received, valid or not.
    pub received: u64,
    /// RTP packets sent back (or, for delayed ones, handed to the socket).
    pub echoed: u64,
    /// Packets dropped by the simulated loss.
    pub dropped_loss: u64,
    /// Datagrams that were not RTP (or were RTCP).
    pub dropped_invalid: u64,
    /// Delayed packets dropped because the delay queue was full.
    pub dropped_queue_full: u64,
    /// Sources forgotten to make room for new ones.
    pub sources_evicted: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// How long received datagrams waited in the socket for the echo
    /// thread (the kernel's receive stamp to the read), in microseconds:
    /// median, 99th percentile and largest; 0 before any stamped datagram.
    /// The rig's share of a round trip measured through the echo. Filled
    /// by [`EchoServer`] (a [`Reflector`] never sees the socket).
    pub read_wait_us: [u64; 3],
}

/// A datagram to send: [`Reflector::poll_transmit`]'s output.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to send it (the address the original came from).
    pub destination: SocketAddr,
    /// The datagram.
    pub datagram: &'a [u8],
}

/// The echo's own voice towards one source address.
#[derive(Clone, Copy, Debug)]
struct Source {
    ssrc: u32,
    next_seq: u16,
    last_heard: Instant,
}

/// A delayed packet: ordered by due time, then by arrival, so packets due
/// at the same instant leave in the order they came.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    due: Instant,
    order: u64,
    destination: SocketAddr,
    buffer: usize,
}

/// SplitMix64: tiny, fast, and good enough for loss and jitter draws.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`); the modulo bias is below 2⁻³² for
    /// the bounds used here.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// The sans-IO echo: see the [module docs](self).
#[derive(Debug)]
pub struct Reflector {
    delay_nanos: u64,
    jitter_nanos: u64,
    loss_ppm: u32,
    max_sources: usize,
    max_queued: usize,
    source_idle: Duration,
    rng: SplitMix64,
    sources: HashMap<SocketAddr, Source>,
    now: Instant,
    /// Packet echoed without delay, waiting for `poll_transmit`.
    immediate: Option<(SocketAddr, usize)>,
    immediate_buf: Vec<u8>,
    queue: BinaryHeap<Reverse<Queued>>,
    /// Buffers of delayed packets, reused: `free` lists the idle ones.
    buffers: Vec<Vec<u8>>,
    free: Vec<usize>,
    /// Buffer handed out by the last `poll_transmit`, freed on the next one.
    lent: Option<usize>,
    order: u64,
    stats: EchoStats,
}

impl Reflector {
    /// A reflector for `config` (its `listen` address is not used here).
    ///
    /// # Errors
    /// [`EchoError::InvalidLoss`], [`EchoError::ZeroCapacity`], or
    /// [`EchoError::Entropy`] when no seed is given and the OS has none.
    pub fn new(config: &EchoConfig, now: Instant) -> Result<Self, EchoError> {
        if !(0.0..=100.0).contains(&config.loss_percent) {
            return Err(EchoError::InvalidLoss { percent: config.loss_percent });
        }
        if config.max_sources == 0 {
            return Err(EchoError::ZeroCapacity { setting: "max_sources" });
        }
        if config.max_queued == 0 {
            return Err(EchoError::ZeroCapacity { setting: "max_queued" });
        }
        let seed = match config.seed {
            Some(seed) => seed,
            None => getrandom::u64().map_err(|e| EchoError::Entropy(e.to_string()))?,
        };
        // The range check above bounds the product to 0..=1e6.
        let loss_ppm = (config.loss_percent / 100.0 * f64::from(PPM)).round() as u32;
        Ok(Reflector {
            delay_nanos: duration_nanos(config.delay),
            jitter_nanos: duration_nanos(config.jitter),
            loss_ppm,
            max_sources: config.max_sources,
            max_queued: config.max_queued,
            source_idle: config.source_idle,
            rng: SplitMix64(seed),
            sources: HashMap::new(),
            now,
            immediate: None,
            immediate_buf: Vec::with_capacity(1500),
            queue: BinaryHeap::new(),
            buffers: Vec::new(),
            free: Vec::new(),
            lent: None,
            order: 0,
            stats: EchoStats::default(),
        })
    }

    /// Feeds one datagram received from `from`. Drain
    /// [`poll_transmit`](Self::poll_transmit) afterwards.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.now = self.now.max(now);
        self.stats.received += 1;
        if is_probably_rtcp(datagram) || RtpPacket::parse(datagram).is_err() {
            self.stats.dropped_invalid += 1;
            return;
        }
        let (ssrc, seq) = self.next_voice(from);
        if self.loss_ppm > 0 && self.rng.below(u64::from(PPM)) < u64::from(self.loss_ppm) {
            self.stats.dropped_loss += 1;
            return;
        }
        if self.delay_nanos == 0 && self.jitter_nanos == 0 {
            if self.immediate.is_some() {
                // The caller did not drain the previous packet: it is lost,
                // as on a socket whose send buffer overflowed.
                self.stats.send_errors += 1;
            }
            rewrite_into(&mut self.immediate_buf, datagram, seq, ssrc);
            self.immediate = Some((from, self.immediate_buf.len()));
            self.stats.echoed += 1;
            return;
        }
        if self.queue.len() >= self.max_queued {
            self.stats.dropped_queue_full += 1;
            return;
        }
        let due = self.now.saturating_add(Duration::from_nanos(self.draw_delay()));
        let buffer = match self.free.pop() {
            Some(index) => index,
            None => {
                self.buffers.push(Vec::new());
                self.buffers.len() - 1
            }
        };
        rewrite_into(&mut self.buffers[buffer], datagram, seq, ssrc);
        self.order += 1;
        self.queue.push(Reverse(Queued { due, order: self.order, destination: from, buffer }));
    }

    /// Feeds the passage of time (call when [`poll_timeout`](Self::poll_timeout)
    /// is due). Drain [`poll_transmit`](Self::poll_transmit) afterwards.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The next datagram to send, if one is due.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        if let Some(index) = self.lent.take() {
            self.free.push(index);
        }
        if let Some((destination, len)) = self.immediate.take() {
            return Some(Transmit {
                destination,
                datagram: self.immediate_buf.get(..len).unwrap_or_default(),
            });
        }
        if self.queue.peek().is_none_or(|Reverse(q)| q.due > self.now) {
            return None;
        }
        let Reverse(queued) = self.queue.pop()?;
        self.lent = Some(queued.buffer);
        self.stats.echoed += 1;
        Some(Transmit {
            destination: queued.destination,
            datagram: self.buffers.get(queued.buffer).map_or(&[][..], Vec::as_slice),
        })
    }

    /// When the next delayed packet is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(q)| q.due)
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> EchoStats {
        self.stats
    }

    /// Counts a datagram the socket would not send.
    pub fn note_send_error(&mut self) {
        self.stats.send_errors += 1;
    }

    /// The SSRC and next sequence number towards `from`, remembering it.
    fn next_voice(&mut self, from: SocketAddr) -> (u32, u16) {
        let now = self.now;
        if !self.sources.contains_key(&from) && self.sources.len() >= self.max_sources {
            self.make_room();
        }
        let fresh = Source {
            ssrc: self.rng.next_u64() as u32,
            next_seq: self.rng.next_u64() as u16,
            last_heard: now,
        };
        let source = self.sources.entry(from).or_insert(fresh);
        source.last_heard = now;
        let seq = source.next_seq;
        source.next_seq = seq.wrapping_add(1);
        (source.ssrc, seq)
    }

    /// Forgets idle sources; if none is idle, the least recently heard half.
    /// Halving keeps the cost linear in the table per half-table of new
    /// sources, so a flood of new addresses costs O(1) per packet.
    fn make_room(&mut self) {
        let before = self.sources.len();
        let idle_since = self.now.saturating_sub(self.source_idle);
        self.sources.retain(|_, s| s.last_heard > idle_since);
        if self.sources.len() >= self.max_sources {
            let mut heard: Vec<Instant> = self.sources.values().map(|s| s.last_heard).collect();
            let len = heard.len();
            // Keep the newest half: everything after the value at `cut`.
            let keep = (self.max_sources / 2).clamp(1, len);
            let cut = (len - keep).min(len - 1);
            let (_, &mut threshold, _) = heard.select_nth_unstable(cut);
            // Ties at the threshold go too, which can only free more room.
            self.sources.retain(|_, s| s.last_heard > threshold);
        }
        self.stats.sources_evicted += (before - self.sources.len()) as u64;
    }

    fn draw_delay(&mut self) -> u64 {
        if self.jitter_nanos == 0 {
            return self.delay_nanos;
        }
        let span = self.jitter_nanos.saturating_mul(2).saturating_add(1);
        let offset = self.rng.below(span);
        // delay − jitter + offset, floored at zero.
        self.delay_nanos.saturating_add(offset).saturating_sub(self.jitter_nanos)
    }
}

/// Copies `datagram` into `out` with the echo's sequence number and SSRC.
fn rewrite_into(out: &mut Vec<u8>, datagram: &[u8], seq: u16, ssrc: u32) {
    out.clear();
    out.extend_from_slice(datagram);
    // The datagram parsed as RTP, so it has the 12-byte fixed header.
    if let Some(header) = out.get_mut(..12) {
        header[2..4].copy_from_slice(&seq.to_be_bytes());
        header[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }
}

/// The counters shared between the echo thread and its handle.
#[derive(Debug, Default)]
struct SharedStats {
    received: AtomicU64,
    echoed: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_invalid: AtomicU64,
    dropped_queue_full: AtomicU64,
    sources_evicted: AtomicU64,
    send_errors: AtomicU64,
    read_wait_us: [AtomicU64; 3],
}

impl SharedStats {
    fn publish(&self, s: &EchoStats) {
        self.received.store(s.received, Ordering::Relaxed);
        self.echoed.store(s.echoed, Ordering::Relaxed);
        self.dropped_loss.store(s.dropped_loss, Ordering::Relaxed);
        self.dropped_invalid.store(s.dropped_invalid, Ordering::Relaxed);
        self.dropped_queue_full.store(s.dropped_queue_full, Ordering::Relaxed);
        self.sources_evicted.store(s.sources_evicted, Ordering::Relaxed);
        self.send_errors.store(s.send_errors, Ordering::Relaxed);
    }

    fn publish_waits(&self, waits: &ReadWaits) {
        for (slot, value) in self.read_wait_us.iter().zip(waits.summary()) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    fn read(&self) -> EchoStats {
        EchoStats {
            received: self.received.load(Ordering::Relaxed),
            echoed: self.echoed.load(Ordering::Relaxed),
            dropped_loss: self.dropped_loss.load(Ordering::Relaxed),
            dropped_invalid: self.dropped_invalid.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            sources_evicted: self.sources_evicted.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            read_wait_us: self.read_wait_us.each_ref().map(|v| v.load(Ordering::Relaxed)),
        }
    }
}

/// The read waits of stamped datagrams, in microseconds.
struct ReadWaits {
    histogram: hdrhistogram::Histogram<u64>,
}

impl ReadWaits {
    fn new() -> Self {
        // The simulator's latency bounds, two significant figures.
        let histogram = hdrhistogram::Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
            .unwrap_or_else(|_| unreachable!("constant bounds are valid"));
        ReadWaits { histogram }
    }

    /// Records that a datagram stamped `stamp` (ns since the Unix epoch)
    /// was read at `read`; a stamp after the read is no wait.
    fn record(&mut self, stamp: u64, read: SystemTime) {
        let wait = waited(stamp, read).unwrap_or_default();
        self.histogram.saturating_record(latency_micros(wait));
    }

    /// Median, 99th percentile and largest, µs; zeros when empty.
    fn summary(&self) -> [u64; 3] {
        let h = &self.histogram;
        if h.is_empty() {
            return [0; 3];
        }
        [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()]
    }
}

/// Starts echo backends: see [`EchoServer::spawn`].
#[derive(Debug)]
pub struct EchoServer;

impl EchoServer {
    /// Binds `config.listen` and echoes on a dedicated thread until the
    /// handle is shut down or dropped.
    ///
    /// # Errors
    /// The socket could not be bound, or the configuration is invalid
    /// (an [`EchoError`] turned into [`io::ErrorKind::InvalidInput`]).
    pub fn spawn(config: &EchoConfig) -> io::Result<EchoHandle> {
        let epoch = std::time::Instant::now();
        let reflector = Reflector::new(config, Instant::ZERO)?;
        let socket =
            bind(config.listen).map_err(|source| EchoError::Socket { listen: config.listen, source })?;
        socket.set_read_timeout(Some(SHUTDOWN_POLL))?;
        let local_addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SharedStats::default());
        let thread = std::thread::Builder::new().name("voxproxy-echo".into()).spawn({
            let stop = Arc::clone(&stop);
            let stats = Arc::clone(&stats);
            move || echo_loop(&socket, reflector, epoch, &stop, &stats)
        })?;
        Ok(EchoHandle { local_addr, stop, stats, thread: Some(thread) })
    }
}

/// Socket buffers asked for (the kernel may cap them, e.g. at
/// `net.core.rmem_max`): bursts from thousands of calls must not overflow
/// while the echo thread is descheduled.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn bind(listen: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(listen), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops sooner.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&listen.into())?;
    // Best effort: receive stamps only feed the read-wait statistics.
    let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimestampns, &true);
    Ok(socket.into())
}

/// A running echo backend. Dropping it stops it too.
#[derive(Debug)]
pub struct EchoHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
    thread: Option<JoinHandle<()>>,
}

impl EchoHandle {
    /// The address the echo listens on (and answers from).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> EchoStats {
        self.stats.read()
    }

    /// Stops the echo thread (within about 100 ms) and returns the final counters.
    pub fn shutdown(mut self) -> EchoStats {
        self.stop_thread();
        self.stats.read()
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread only ever returns; a panic in it has already been reported.
            let _ = thread.join();
        }
    }
}

impl Drop for EchoHandle {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn echo_loop(
    socket: &UdpSocket,
    mut reflector: Reflector,
    epoch: std::time::Instant,
    stop: &AtomicBool,
    stats: &SharedStats,
) {
    let now = || Instant::ZERO + epoch.elapsed();
    // Batched: what queued while this thread was descheduled comes in with
    // one `recvmmsg` and its echoes leave with one `sendmmsg` (`mmsg`).
    let mut incoming = RecvBatch::new();
    let mut outgoing = SendBatch::new();
    let mut waits = ReadWaits::new();
    let mut waits_published = now();
    let mut timeout = SHUTDOWN_POLL;
    while !stop.load(Ordering::Relaxed) {
        // Wake for the next delayed packet, or at least every SHUTDOWN_POLL.
        let wanted = reflector.poll_timeout().map_or(SHUTDOWN_POLL, |due| {
            due.saturating_duration_since(now()).clamp(Duration::from_micros(50), SHUTDOWN_POLL)
        });
        if wanted != timeout && socket.set_read_timeout(Some(wanted)).is_ok() {
            timeout = wanted;
        }
        let due_now = reflector.poll_timeout().is_some_and(|due| due <= now());
        if due_now {
            reflector.handle_timeout(now());
        } else {
            match incoming.recv(socket) {
                Ok(count) => {
                    let at = now();
                    let read = SystemTime::now();
                    for stamp in (0..count).filter_map(|i| incoming.stamp(i)) {
                        waits.record(stamp, read);
                    }
                    for (from, datagram) in (0..count).filter_map(|i| incoming.get(i)) {
                        reflector.handle_datagram(at, from, datagram);
                        // The reflector holds one undelayed echo: drain it
                        // before the next datagram overwrites it.
                        queue_transmits(&mut reflector, &mut outgoing);
                    }
                }
                // Timeouts, and ICMP errors some systems report on UDP sockets.
                Err(_) => reflector.handle_timeout(now()),
            }
        }
        queue_transmits(&mut reflector, &mut outgoing);
        let failed = if outgoing.len() > 0 { outgoing.flush(socket) } else { 0 };
        for _ in 0..failed {
            reflector.note_send_error();
        }
        stats.publish(&reflector.stats());
        // Percentiles walk the histogram: once a second is plenty.
        if now().saturating_duration_since(waits_published) >= Duration::from_secs(1) {
            stats.publish_waits(&waits);
            waits_published = now();
        }
    }
    stats.publish(&reflector.stats());
    stats.publish_waits(&waits);
}

fn queue_transmits(reflector: &mut Reflector, outgoing: &mut SendBatch) {
    while let Some(transmit) = reflector.poll_transmit() {
        outgoing.push(transmit.destination, transmit.datagram);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;
    use voxproxy_core::rtp::RtpHeader;

    fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 12 + payload.len()];
        let header = RtpHeader { marker, ..RtpHeader::new(0, seq, ts, 0xdead_beef) };
        let n = header.write(payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn drain(r: &mut Reflector) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(t) = r.poll_transmit() {
            out.push((t.destination, t.datagram.to_vec()));
        }
        out
    }

    fn seeded(seed: u64) -> EchoConfig {
        EchoConfig { seed: Some(seed), ..EchoConfig::default() }
    }

    #[test]
    fn echoes_payload_timestamp_and_marker_with_own_ssrc_and_sequence() {
        let mut r = Reflector::new(&seeded(1), Instant::ZERO).unwrap();
        let payload: Vec<u8> = (0..160u8).collect();
        let sent = rtp(100, 8_000, true, &payload);
        r.handle_datagram(Instant::ZERO, addr(1), &sent);
        let out = drain(&mut r);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, addr(1));
        let back = RtpPacket::parse(&out[0].1).unwrap();
        assert_eq!(back.payload(), &payload[..]);
        assert_eq!((back.timestamp(), back.marker(), back.payload_type()), (8_000, true, 0));
        assert_ne!(back.ssrc(), 0xdead_beef);
        // Everything but sequence number and SSRC is byte-identical.
        assert_eq!(out[0].1[..2], sent[..2]);
        assert_eq!(out[0].1[4..8], sent[4..8]);
        assert_eq!(out[0].1[12..], sent[12..]);
    }

    #[test]
    fn each_source_has_its_own_continuous_sequence_and_ssrc() {
        let mut r = Reflector::new(&seeded(2), Instant::ZERO).unwrap();
        let mut seen: HashMap<SocketAddr, Vec<(u16, u32)>> = HashMap::new();
        for i in 0..10u16 {
            for port in [1, 2] {
                // The sources' own sequence numbers jump about; the echo's must not.
                r.handle_datagram(
                    Instant::ZERO,
                    addr(port),
                    &rtp(i * 7 + port, 160 * u32::from(i), false, &[1]),
                );
                for (to, d) in drain(&mut r) {
                    let p = RtpPacket::parse(&d).unwrap();
                    seen.entry(to).or_default().push((p.sequence_number(), p.ssrc()));
                }
            }
        }
        let a = &seen[&addr(1)];
        let b = &seen[&addr(2)];
        assert_eq!((a.len(), b.len()), (10, 10));
        for list in [a, b] {
            for pair in list.windows(2) {
                assert_eq!(pair[1].0, pair[0].0.wrapping_add(1));
                assert_eq!(pair[1].1, pair[0].1);
            }
        }
        assert_ne!(a[0].1, b[0].1, "two sources get two SSRCs");
    }

    #[test]
    fn garbage_and_rtcp_are_dropped_and_counted() {
        let mut r = Reflector::new(&seeded(3), Instant::ZERO).unwrap();
        let rtcp_rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        for junk in [&b"hello"[..], &[0u8; 40][..], &rtcp_rr[..], &[]] {
            r.handle_datagram(Instant::ZERO, addr(1), junk);
            assert!(r.poll_transmit().is_none());
        }
        let s = r.stats();
        assert_eq!((s.received, s.dropped_invalid, s.echoed), (4, 4, 0));
    }

    fn survivors(seed: u64, loss: f64) -> Vec<u32> {
        let config = EchoConfig { loss_percent: loss, ..seeded(seed) };
        let mut r = Reflector::new(&config, Instant::ZERO).unwrap();
        let mut kept = Vec::new();
        for i in 0..1000u16 {
            r.handle_datagram(Instant::ZERO, addr(1), &rtp(i, u32::from(i) * 160, false, &[0]));
            kept.extend(drain(&mut r).iter().map(|(_, d)| RtpPacket::parse(d).unwrap().timestamp()));
        }
        kept
    }

    #[test]
    fn loss_is_deterministic_for_a_seed_and_roughly_the_rate_asked() {
        let a = survivors(42, 20.0);
        assert_eq!(a, survivors(42, 20.0));
        assert_ne!(a, survivors(43, 20.0));
        // 1000 draws at 20 %: 800 expected, σ ≈ 12.6.
        assert!((720..=880).contains(&a.len()), "{} survived", a.len());
        assert_eq!(survivors(7, 0.0).len(), 1000);
        assert!(survivors(7, 100.0).is_empty());
    }

    #[test]
    fn lost_packets_leave_gaps_in_the_echo_sequence() {
        let config = EchoConfig { loss_percent: 50.0, ..seeded(9) };
        let mut r = Reflector::new(&config, Instant::ZERO).unwrap();
        let mut seqs = Vec::new();
        for i in 0..100u16 {
            r.handle_datagram(Instant::ZERO, addr(1), &rtp(i, 0, false, &[0]));
            seqs.extend(drain(&mut r).iter().map(|(_, d)| RtpPacket::parse(d).unwrap().sequence_number()));
        }
        let first = seqs[0];
        let span = seqs.last().unwrap().wrapping_sub(first);
        assert!(usize::from(span) + 1 > seqs.len(), "gaps where packets were lost");
        assert!(seqs.windows(2).all(|w| w[1].wrapping_sub(w[0]) >= 1));
    }

    #[test]
    fn delay_holds_packets_until_due_and_keeps_order() {
        let config = EchoConfig { delay: Duration::from_millis(30), ..seeded(4) };
        let mut r = Reflector::new(&config, Instant::ZERO).unwrap();
        r.handle_datagram(Instant::ZERO, addr(1), &rtp(0, 0, false, &[0]));
        r.handle_datagram(Instant::from_millis(20), addr(1), &rtp(1, 160, false, &[0]));
        assert!(r.poll_transmit().is_none(), "nothing due before 30 ms");
        assert_eq!(r.poll_timeout(), Some(Instant::from_millis(30)));
        r.handle_timeout(Instant::from_millis(29));
        assert!(r.poll_transmit().is_none());
        r.handle_timeout(Instant::from_millis(50));
        let ts: Vec<u32> =
            drain(&mut r).iter().map(|(_, d)| RtpPacket::parse(d).unwrap().timestamp()).collect();
        assert_eq!(ts, [0, 160]);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn jitter_may_reorder_but_delivers_everything_within_its_bounds() {
        let config =
            EchoConfig { delay: Duration::from_millis(50), jitter: Duration::from_millis(40), ..seeded(5) };
        let mut r = Reflector::new(&config, Instant::ZERO).unwrap();
        for i in 0..200u32 {
            r.handle_datagram(Instant::from_millis(u64::from(i) * 20), addr(1), &rtp(0, i, false, &[0]));
        }
        // Time was only fed by the arrivals: packets due by 3980 ms could go,
        // but none has been drained yet, so the whole run comes out below.
        // The last packet (sent at 3980 ms) is due by 3980 + 90 ms.
        r.handle_timeout(Instant::from_millis(3980 + 90));
        let order: Vec<u32> =
            drain(&mut r).iter().map(|(_, d)| RtpPacket::parse(d).unwrap().timestamp()).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>());
        // ±40 ms at 20 ms spacing reorders some packets (seeded, so always the same run).
        assert_ne!(order, sorted);
    }

    #[test]
    fn full_delay_queue_drops_and_counts() {
        let config = EchoConfig { delay: Duration::from_secs(1), max_queued: 3, ..seeded(6) };
        let mut r = Reflector::new(&config, Instant::ZERO).unwrap();
        for i in 0..5 {
            r.handle_datagram(Instant::ZERO, addr(1), &rtp(i, 0, false, &[0]));
        }
        assert_eq!(r.stats().dropped_queue_full, 2);
        r.handle_timeout(Instant::from_millis(1000));
        assert_eq!(drain(&mut r).len(), 3);
    }

    #[test]
    fn source_table_is_bounded() {
        let config = EchoConfig { max_sources: 4, ..seeded(8) };
        let mut r = Reflector::new(&config, Instant::ZERO).unwrap();
        for port in 0..100 {
            r.handle_datagram(Instant::from_millis(port.into()), addr(port), &rtp(0, 0, false, &[0]));
            assert_eq!(drain(&mut r).len(), 1);
            assert!(r.sources.len() <= 4);
        }
        assert!(r.stats().sources_evicted >= 96);
    }

    #[test]
    fn invalid_config_is_refused() {
        assert!(matches!(
            Reflector::new(&EchoConfig { loss_percent: 101.0, ..seeded(1) }, Instant::ZERO),
            Err(EchoError::InvalidLoss { .. })
        ));
        assert!(matches!(
            Reflector::new(&EchoConfig { max_queued: 0, ..seeded(1) }, Instant::ZERO),
            Err(EchoError::ZeroCapacity { .. })
        ));
    }

    #[test]
    fn server_echoes_on_loopback_and_counts_garbage() {
        let echo = EchoServer::spawn(&seeded(11)).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.send_to(b"not rtp", echo.local_addr()).unwrap();
        let payload: Vec<u8> = (0..160).map(|i| (i * 7 % 256) as u8).collect();
        let mut seqs = Vec::new();
        for i in 0..20u16 {
            client.send_to(&rtp(i, u32::from(i) * 160, i == 0, &payload), echo.local_addr()).unwrap();
            let mut buf = [0u8; 1500];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(from, echo.local_addr());
            let p = RtpPacket::parse(&buf[..n]).unwrap();
            assert_eq!(p.payload(), &payload[..]);
            assert_eq!((p.timestamp(), p.marker()), (u32::from(i) * 160, i == 0));
            seqs.push(p.sequence_number());
        }
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        let stats = echo.shutdown();
        assert_eq!((stats.received, stats.echoed, stats.dropped_invalid), (21, 20, 1));
    }

    #[test]
    fn server_echoes_a_burst_that_queued_before_it_read() {
        // The echo reads what queued in batches: every datagram of a burst
        // from several sources comes back, each to its own source.
        let echo = EchoServer::spawn(&seeded(17)).unwrap();
        let clients: Vec<UdpSocket> = (0..4).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for i in 0..100u16 {
            for (c, client) in clients.iter().enumerate() {
                client.send_to(&rtp(i, 0, false, &[c as u8; 20]), echo.local_addr()).unwrap();
            }
        }
        let mut buf = [0u8; 256];
        for (c, client) in clients.iter().enumerate() {
            client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            for _ in 0..100 {
                let (n, _) = client.recv_from(&mut buf).unwrap();
                assert_eq!(RtpPacket::parse(&buf[..n]).unwrap().payload(), &[c as u8; 20]);
            }
        }
        let stats = echo.shutdown();
        assert_eq!((stats.received, stats.echoed, stats.send_errors), (400, 400, 0));
    }

    #[test]
    fn server_measures_how_long_datagrams_waited_to_be_read() {
        let echo = EchoServer::spawn(&seeded(19)).unwrap();
        // The kernel turns receive stamps on a moment after a socket first
        // asks (a deferred switch): datagrams before that carry none.
        std::thread::sleep(Duration::from_millis(50));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        for i in 0..20u16 {
            client.send_to(&rtp(i, 0, false, &[7; 20]), echo.local_addr()).unwrap();
            client.recv_from(&mut buf).unwrap();
        }
        let [p50, p99, max] = echo.shutdown().read_wait_us;
        assert!(0 < p50 && p50 <= p99 && p99 <= max, "{p50} {p99} {max}");
        assert!(max < 2_000_000, "a wait of {max} µs on an idle loopback");
    }

    #[test]
    fn read_waits_summarise_in_microseconds() {
        let mut waits = ReadWaits::new();
        assert_eq!(waits.summary(), [0; 3], "nothing recorded");
        let at = |nanos| UNIX_EPOCH + Duration::from_nanos(nanos);
        waits.record(1_000_000_000, at(1_000_250_000));
        waits.record(2_000_000_000, at(1_999_000_000)); // stamped after the read: no wait
        let [p50, p99, max] = waits.summary();
        assert_eq!(p50, 1);
        assert!((248..=252).contains(&p99) && p99 == max, "{p99} {max}");
    }

    #[test]
    fn server_keeps_one_sequence_per_source() {
        let echo = EchoServer::spawn(&seeded(13)).unwrap();
        let clients: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let mut seen: Vec<Vec<(u16, u32)>> = vec![Vec::new(), Vec::new()];
        for i in 0..10u16 {
            for (c, client) in clients.iter().enumerate() {
                client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                client.send_to(&rtp(i * 3, 0, false, &[c as u8; 20]), echo.local_addr()).unwrap();
                let mut buf = [0u8; 1500];
                let (n, _) = client.recv_from(&mut buf).unwrap();
                let p = RtpPacket::parse(&buf[..n]).unwrap();
                assert_eq!(p.payload(), &[c as u8; 20][..], "each source gets its own packets back");
                seen[c].push((p.sequence_number(), p.ssrc()));
            }
        }
        for list in &seen {
            assert!(list.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1) && w[1].1 == w[0].1));
        }
        assert_ne!(seen[0][0].1, seen[1][0].1);
        drop(echo);
    }

    #[test]
    fn server_honours_the_delay() {
        let config = EchoConfig { delay: Duration::from_millis(50), ..seeded(12) };
        let echo = EchoServer::spawn(&config).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sent_at = std::time::Instant::now();
        for i in 0..3u32 {
            client.send_to(&rtp(0, i, false, &[0]), echo.local_addr()).unwrap();
        }
        let mut order = Vec::new();
        for _ in 0..3 {
            let mut buf = [0u8; 1500];
            let (n, _) = client.recv_from(&mut buf).unwrap();
            order.push(RtpPacket::parse(&buf[..n]).unwrap().timestamp());
        }
        assert!(sent_at.elapsed() >= Duration::from_millis(50), "not before the delay");
        assert_eq!(order, [0, 1, 2]);
        drop(echo);
    }
}
