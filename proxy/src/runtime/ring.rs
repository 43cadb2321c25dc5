//! The io_uring backend's ring: one per worker, driven from the worker's
//! tokio runtime, carrying the UDP traffic of every call on the worker and
//! the TCP stream of each call's media WebSocket.
//!
//! This is the crate's only module with `unsafe` code: handing memory to the
//! kernel (the provided-buffer ring the receives land in, the send slots a
//! send reads from) and reading back what the kernel wrote. Every block says
//! why it is sound; everything that uses the ring goes through the safe
//! methods of [`Driver`].
//!
//! - **Receives** are one multishot `recvmsg` per socket, armed once, with
//!   the worker's provided-buffer ring: each datagram is one completion
//!   carrying a buffer id and no system call. A completion is queued on its
//!   socket and wakes the task waiting on that socket. A socket with
//!   [`RECV_QUEUE`] datagrams waiting has its receive cancelled, so further
//!   datagrams wait in the kernel's socket buffer (as on epoll) rather than
//!   in the worker's shared buffers, until its task catches up and re-arms.
//!   The task is lent the payload where the kernel wrote it (the source
//!   address too stays there, read when the datagram is taken), and the
//!   buffer goes back to the ring once the task is done with it.
//!   A TCP stream is received the same way with a multishot `recv`: each
//!   completion is a chunk of the byte stream, read out in order, possibly
//!   over several reads; its chunks are never dropped (the buffers the ring
//!   shares bound them), and a completion of 0 bytes is the peer's end.
//! - **Sends** are copied into a send slot (a per-worker pool of boxed slots,
//!   recycled when their completion arrives, so no allocation per datagram)
//!   and queued as `send` entries with the destination address; the send
//!   future returns at once. A failure comes back with the socket's next send.
//!   A TCP stream has one send in flight at a time (two could complete out
//!   of order), sent whole (`MSG_WAITALL`): writes made while one is in
//!   flight wait in the stream's pending bytes (bounded) and leave when it
//!   completes, and a flush waits until nothing is pending or in flight.
//! - **Files**: every socket is put in the ring's registered-file table
//!   (at its index) and its operations name the slot, not the descriptor,
//!   which spares the kernel a file lookup per operation; without a table
//!   (an old kernel, a low `RLIMIT_NOFILE`) descriptors are used.
//! - **Submission** is batched: the first entry queued after a submission
//!   wakes the driver task ([`Driver::poll_drive`]), which tokio runs after
//!   the tasks already woken in this turn, so the sends of many calls leave in
//!   one `io_uring_enter`. The same task drains the completion queue when the
//!   ring's file descriptor turns readable (registered with tokio's epoll).

#![allow(unsafe_code)]

use std::alloc::Layout;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// Submission queue entries; a full queue is submitted at once (one extra
/// `io_uring_enter`), so this bounds nothing but the batch size.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries. The kernel keeps overflowing completions on
/// its own list (`IORING_FEAT_NODROP`) rather than lose them.
const CQ_ENTRIES: u32 = 8192;
/// Receive buffers in the provided-buffer ring (a power of two), all lent
/// to the kernel from the start. A buffer is held only from a datagram's
/// arrival until its call has read it, so this bounds datagrams waiting
/// across the worker, not calls; when all are waiting, sockets stop
/// receiving until buffers come back (see `starved`).
///
/// The ring hands buffers out in order, so every buffer is written within
/// the first [`RECV_BUFFERS`] datagrams: the pool is resident from the
/// first seconds of load, [`RECV_BUFFERS`] x [`RECV_BUFFER_BYTES`] = 1.1 MB
/// per worker, and never grows. (Until issue 13's soak, 256 buffers of 2 KiB
/// were lent at first and doubled when a stall held three quarters of them:
/// a stall after the ramp stepped resident memory up by 1.2 MB for good.)
pub(super) const RECV_BUFFERS: u16 = 1024;
const _: () =
    assert!(RECV_BUFFERS as usize >= 2 * RECV_QUEUE_MAX, "the ring must cover one flooded socket twice over");
/// Free buffers the ring waits for before re-arming starved sockets: a
/// sixteenth of them, so a stall's sockets come back in batches rather
/// than one buffer at a time.
const RESUME_FREE: u16 = RECV_BUFFERS / 16;
/// Bytes per receive buffer: 17 cache lines. The ring carries RTP, and the
/// longest L16 payload behind a 300-byte header (a full CSRC list and 228
/// bytes of extensions) is 940 bytes (`server::call` tests it fits). A
/// stream's chunks are at most this long each.
const RECV_BUFFER_BYTES: usize = 17 * 64;
/// The largest datagram received whole: a buffer less the kernel's 16-byte
/// `io_uring_recvmsg_out` header and the source address (`NAME_BYTES`). A
/// longer one is cut, as a `recvfrom` into a buffer of this size would.
pub const MAX_RECV_DATAGRAM: usize = RECV_BUFFER_BYTES - 16 - NAME_BYTES as usize;
/// Room for the source address in a receive buffer (`sockaddr_in6`).
const NAME_BYTES: u32 = 28;
/// The largest datagram sent; bigger sends are refused.
pub(super) const MAX_DATAGRAM: usize = 2048;
/// Datagrams waiting on one socket for its task before its receive is
/// paused (cancelled until the queue is empty), so one flooded port cannot
/// hold the worker's receive buffers.
pub(super) const RECV_QUEUE: usize = 8;
/// Datagrams one socket may hold at most: those that complete before the
/// pause takes effect (a burst already in the socket buffer arrives whole,
/// the kernel drains it into the ring at once). 2.5 s of 20 ms frames;
/// more are dropped and reported.
pub(super) const RECV_QUEUE_MAX: usize = 128;
/// Sends in flight on the worker at most; beyond this a send fails with
/// `WouldBlock` (the kernel is not taking datagrams: dropping is better than
/// growing without bound).
const MAX_SENDS: usize = 4096;
/// Bytes a stream holds written and not yet sent; a writer waits beyond
/// this (as for a full socket send buffer on epoll). One send takes them
/// all, so a turn's messages on one WebSocket leave in one `send`.
pub(super) const STREAM_PENDING: usize = 64 * 1024;
/// A stream's buffers grown past this by a burst are shrunk back once
/// empty, so a burst does not cost memory for the call's whole life. A
/// turn's media messages on one WebSocket are one of ~400 bytes, or two or
/// three when the worker is behind: kept at 1,024 bytes, every stream's two
/// buffers ratcheted up to 2 KiB at 1,000 calls on one core, 1.4 KiB per
/// call more than at 512 (the median of three interleaved pairs); the
/// reallocations this costs a worker that is behind did not show in its
/// CPU per frame.
pub(super) const STREAM_KEPT: usize = 512;
/// The buffer group id of the worker's receive buffers.
const BUFFER_GROUP: u16 = 0;
/// Slots in the ring's registered-file table at most (fewer when
/// `RLIMIT_NOFILE` is lower: the kernel refuses a table larger than it).
/// A socket whose index is past the table uses its plain descriptor.
const FIXED_FILES_MAX: u32 = 1 << 16;

/// What a completion belongs to, in the top two bits of `user_data`.
const KIND_RECV: u64 = 1 << 62;
const KIND_SEND: u64 = 2 << 62;
const KIND_CANCEL: u64 = 3 << 62;
const KIND_MASK: u64 = 3 << 62;

/// A socket registered with the driver: slot index and generation, so a
/// completion for a socket that has gone (and whose slot was reused) is
/// recognised as stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SocketId {
    index: u32,
    generation: u32,
}

impl SocketId {
    fn user_data(self) -> u64 {
        KIND_RECV | (u64::from(self.generation & 0x3fff_ffff) << 32) | u64::from(self.index)
    }

    fn from_user_data(data: u64) -> Self {
        SocketId { index: data as u32, generation: ((data >> 32) as u32) & 0x3fff_ffff }
    }
}

/// Counters of what the driver did, for tests and the worker's exit log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// `io_uring_enter` calls that submitted entries.
    pub submits: u64,
    /// Entries submitted.
    pub entries: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams dropped: their socket's queue was full, or the source
    /// address was not IPv4 or IPv6.
    pub dropped: u64,
    /// Times a socket's receive was paused because its task lagged.
    pub paused: u64,
    /// Sends whose completion reported an error.
    pub send_errors: u64,
    /// Times a socket's receive stopped because every buffer was waiting.
    pub starved: u64,
    /// The most receive buffers held at once (filled by the kernel, not
    /// yet read by their task), of the ring's 1,024.
    pub buffers_held_peak: u16,
    /// Sockets registered in the ring's file table now (the rest use
    /// their plain descriptor, which costs the kernel a file lookup per
    /// operation).
    pub fixed_files: u32,
    /// Bytes the streams' write buffers hold now (waiting, in flight and
    /// the worker's spares), capacity rather than contents: what they cost
    /// in memory.
    pub stream_buffers: usize,
}

/// Gives back what a burst grew an emptied socket queue to: a stall can
/// fill it to [`RECV_QUEUE_MAX`] (5 KiB), and a call that kept that for
/// its whole life would make every stall a step in resident memory. Only
/// after a burst, so the steady state allocates nothing.
fn settle(queue: &mut VecDeque<Datagram>) {
    if queue.is_empty() && queue.capacity() > RECV_QUEUE {
        queue.shrink_to(RECV_QUEUE);
    }
}

/// One datagram (or a stream's chunk) received and not yet taken by its
/// task. Six bytes: a datagram's source stays where the kernel wrote it,
/// in its buffer, and is read again when the datagram is taken. (With the
/// address here, 40 bytes, every socket's queue held 160 to 320 bytes at
/// rest, and a call has two sockets on the ring.)
#[derive(Debug)]
struct Datagram {
    buffer: u16,
    /// Where the payload starts in the buffer, and its length.
    offset: u16,
    len: u16,
}

#[derive(Debug, Default)]
struct SocketState {
    fd: RawFd,
    /// Registered in the ring's file table at the socket's index: its
    /// operations name the slot (`IOSQE_FIXED_FILE`), which spares the
    /// kernel a file lookup (`fget`/`fput`) per operation.
    fixed: bool,
    /// A TCP stream rather than a UDP socket.
    stream: bool,
    /// The stream's peer has ended it (a receive of 0 bytes).
    eof: bool,
    /// The stream's send in flight, if any.
    sending: Option<u32>,
    /// The stream's bytes written and not yet handed to the kernel.
    pending: Vec<u8>,
    /// The stream's bytes the kernel is sending (read by it until the
    /// send completes; moved to the send's slot if the stream goes first).
    in_flight: Vec<u8>,
    /// The stream is in `Inner::stream_sends`.
    dirty: bool,
    /// The task waiting for the stream's send to complete.
    write_waker: Option<Waker>,
    /// A multishot receive is in the kernel.
    armed: bool,
    /// Its last receive ended for want of buffers; re-armed when one returns.
    starved: bool,
    queue: VecDeque<Datagram>,
    /// Datagrams dropped since the task last heard about it.
    dropped: u64,
    recv_error: Option<io::Error>,
    send_error: Option<io::Error>,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct SocketSlot {
    generation: u32,
    state: Option<SocketState>,
}

/// One send's memory, which the kernel reads until the send completes.
/// Its buffer is as large as the largest send it carried (an RTP packet is
/// 172 bytes, a media message about 400), not [`MAX_DATAGRAM`]: a slot of a
/// full-size array cost 2 KiB each, and a turn at 1,000 calls keeps about as
/// many sends in flight (the io_uring backend's extra memory per call).
/// It is resized only while free, never while the kernel reads it.
struct SendSlot {
    addr: RawAddr,
    addr_len: u32,
    data: Vec<u8>,
}

/// A send's destination as the kernel reads it. 28 bytes: the 128 of a
/// `sockaddr_storage` (what `socket2::SockAddr` holds) cost every send slot
/// 100 bytes more, and the slots are kept at the most ever in flight.
#[repr(C)]
#[derive(Clone, Copy)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl RawAddr {
    /// `to` as a `sockaddr_in` or `sockaddr_in6`, and that one's length.
    fn new(to: SocketAddr) -> (RawAddr, u32) {
        match to {
            SocketAddr::V4(to) => {
                let v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: to.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.ip().octets()) },
                    sin_zero: [0; 8],
                };
                (RawAddr { v4 }, size_of::<libc::sockaddr_in>() as u32)
            }
            SocketAddr::V6(to) => {
                let v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: to.port().to_be(),
                    sin6_flowinfo: to.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: to.ip().octets() },
                    sin6_scope_id: to.scope_id(),
                };
                (RawAddr { v6 }, size_of::<libc::sockaddr_in6>() as u32)
            }
        }
    }
}

/// Who a send in flight belongs to, and how many bytes it must send.
#[derive(Clone, Copy, Debug)]
struct SendOwner {
    socket: SocketId,
    len: u32,
}

/// The worker's receive buffers and the ring that lends them to the kernel.
struct BufferRing {
    /// `RECV_BUFFERS` ring entries, page-aligned, shared with the kernel.
    entries: *mut types::BufRingEntry,
    /// `RECV_BUFFERS * RECV_BUFFER_BYTES` bytes the kernel writes into.
    memory: *mut u8,
    /// The next tail to publish.
    tail: u16,
    /// Buffers the kernel has filled and the driver not yet given back.
    held: u16,
    /// The most ever held at once.
    held_peak: u16,
}

impl BufferRing {
    fn entries_layout() -> Layout {
        let bytes = usize::from(RECV_BUFFERS) * size_of::<types::BufRingEntry>();
        Layout::from_size_align(bytes, 4096).expect("constant layout")
    }

    fn memory_layout() -> Layout {
        Layout::from_size_align(usize::from(RECV_BUFFERS) * RECV_BUFFER_BYTES, 64).expect("constant layout")
    }

    /// Allocates the ring with every buffer in it, and registers it.
    fn new(ring: &IoUring) -> io::Result<Self> {
        // SAFETY: both layouts have a non-zero size.
        let entries =
            unsafe { std::alloc::alloc_zeroed(Self::entries_layout()) }.cast::<types::BufRingEntry>();
        // SAFETY: as above.
        let memory = unsafe { std::alloc::alloc(Self::memory_layout()) };
        if entries.is_null() || memory.is_null() {
            std::alloc::handle_alloc_error(Self::memory_layout());
        }
        let mut buffers = BufferRing { entries, memory, tail: 0, held: 0, held_peak: 0 };
        // SAFETY: `entries` is page-aligned, zeroed and holds RECV_BUFFERS
        // entries; it stays allocated until `Drop`, which runs only once
        // the kernel is done with the ring (see `Driver`'s `Drop`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(entries as u64, RECV_BUFFERS, BUFFER_GROUP, 0)?;
        }
        for id in 0..RECV_BUFFERS {
            buffers.push(id);
        }
        buffers.publish();
        Ok(buffers)
    }

    /// The kernel filled buffer `id`: the driver holds it until `give_back`.
    fn taken(&mut self, id: u16) {
        debug_assert!(id < RECV_BUFFERS);
        self.held += 1;
        self.held_peak = self.held_peak.max(self.held);
    }

    /// Buffers lent to the kernel, by the count of completions reaped.
    fn free(&self) -> u16 {
        RECV_BUFFERS - self.held
    }

    /// Gives a buffer the kernel filled back to it (visible once published).
    fn give_back(&mut self, id: u16) {
        debug_assert!(self.held > 0, "buffer {id} given back twice");
        self.held = self.held.saturating_sub(1);
        self.push(id);
    }

    /// Puts buffer `id` at the tail (visible to the kernel once published).
    fn push(&mut self, id: u16) {
        let slot = usize::from(self.tail & (RECV_BUFFERS - 1));
        // SAFETY: `slot` < RECV_BUFFERS, inside the allocation; the kernel
        // reads entries only between its head and the published tail, and
        // this one is past the published tail.
        let entry = unsafe { &mut *self.entries.add(slot) };
        // SAFETY: `id` < RECV_BUFFERS, so the offset is inside `memory`.
        entry.set_addr(unsafe { self.memory.add(usize::from(id) * RECV_BUFFER_BYTES) } as u64);
        entry.set_len(RECV_BUFFER_BYTES as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the pushed buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: `entries` is the ring's first entry; its `resv` field is
        // the tail the kernel reads, a u16 aligned as AtomicU16 requires, and
        // the kernel only reads it: a release store orders the entries
        // written above before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast_mut();
            std::sync::atomic::AtomicU16::from_ptr(tail)
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// The bytes the kernel wrote into buffer `id`: `len` from its start.
    fn get(&self, id: u16, len: usize) -> &[u8] {
        assert!(id < RECV_BUFFERS && len <= RECV_BUFFER_BYTES, "buffer {id} of {len} bytes");
        // SAFETY: in bounds (checked above); the kernel handed this buffer
        // back with its completion and gets it again only through `push`,
        // so nothing writes it while this borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.memory.add(usize::from(id) * RECV_BUFFER_BYTES), len) }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the kernel no longer
        // uses them (the ring was torn down first, see `Driver`).
        unsafe {
            std::alloc::dealloc(self.entries.cast(), Self::entries_layout());
            std::alloc::dealloc(self.memory, Self::memory_layout());
        }
    }
}

/// The ring and everything it lends the kernel.
struct Inner {
    ring: IoUring,
    buffers: BufferRing,
    /// The `msghdr` every multishot receive names: only its name and
    /// control lengths are read, by the kernel and by `RecvMsgOut::parse`.
    msghdr: Box<libc::msghdr>,
    sockets: Vec<SocketSlot>,
    free_sockets: Vec<u32>,
    /// Boxed: the kernel holds their addresses while the `Vec` grows.
    #[allow(clippy::vec_box)]
    sends: Vec<Box<SendSlot>>,
    /// Which socket each send slot in flight belongs to.
    send_owner: Vec<Option<SendOwner>>,
    free_sends: Vec<u32>,
    /// The fewest free send slots since the last [`Driver::trim`]: the
    /// bottom this many of the stack were not used since.
    free_sends_low: usize,
    /// Streams with bytes to send once their send in flight is done, sent
    /// at the next submission.
    stream_sends: Vec<SocketId>,
    stream_spares: StreamSpares,
    /// Sockets waiting for receive buffers, oldest first.
    starved: VecDeque<SocketId>,
    /// Sockets whose receive the last reap found lagging (reused buffer).
    pause: Vec<SocketId>,
    /// Entries queued and not yet submitted.
    queued: u32,
    /// Operations in the kernel (armed receives, sends, cancels).
    in_flight: usize,
    /// The driver task, woken when the first entry of a batch is queued.
    flusher: Option<Waker>,
    /// Slots in the ring's registered-file table (0: none registered).
    fixed_slots: u32,
    stats: RingStats,
}

/// A worker's io_uring: the receives and sends of all its UDP sockets.
pub(super) struct Driver {
    inner: RefCell<Inner>,
    fd: RawFd,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("fd", &self.fd).finish_non_exhaustive()
    }
}

impl AsRawFd for Driver {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Driver {
    /// Sets up a ring with its receive buffers. `Err` when the kernel
    /// refuses io_uring (seccomp, gVisor, `kernel.io_uring_disabled`) or is
    /// older than this driver needs: provided-buffer rings (5.19),
    /// multishot `recvmsg`, `send` with a destination and a single
    /// issuer (6.0).
    pub(super) fn new() -> io::Result<Self> {
        // One thread submits (the worker's), and completions wait for its
        // next system call rather than interrupt it (`COOP_TASKRUN`: no
        // IPI while it runs; a sleeping worker is still woken).
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_clamp()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(SQ_ENTRIES)?;
        if !ring.params().is_feature_nodrop() {
            return Err(unsupported("IORING_FEAT_NODROP (Linux 5.5)"));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::RecvMsg::CODE, "recvmsg"),
            (opcode::Send::CODE, "send"),
            (opcode::AsyncCancel::CODE, "async_cancel"),
        ] {
            if !probe.is_supported(code) {
                return Err(unsupported(name));
            }
        }
        let buffers = BufferRing::new(&ring).map_err(|e| {
            io::Error::new(e.kind(), format!("io_uring provided-buffer ring (Linux 5.19) refused: {e}"))
        })?;
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = NAME_BYTES;
        let fixed_slots = register_file_table(&ring);
        let fd = ring.as_raw_fd();
        Ok(Driver {
            fd,
            inner: RefCell::new(Inner {
                ring,
                buffers,
                msghdr,
                sockets: Vec::new(),
                free_sockets: Vec::new(),
                sends: Vec::new(),
                send_owner: Vec::new(),
                free_sends: Vec::new(),
                free_sends_low: 0,
                starved: VecDeque::new(),
                stream_sends: Vec::new(),
                stream_spares: StreamSpares::default(),
                pause: Vec::new(),
                queued: 0,
                in_flight: 0,
                flusher: None,
                fixed_slots,
                stats: RingStats::default(),
            }),
        })
    }

    /// What the driver has done so far.
    pub(super) fn stats(&self) -> RingStats {
        let inner = self.inner.borrow();
        let stream_buffers = inner
            .sockets
            .iter()
            .filter_map(|slot| slot.state.as_ref())
            .map(|state| state.pending.capacity() + state.in_flight.capacity())
            .sum::<usize>()
            + inner.stream_spares.0.bytes();
        RingStats { stream_buffers, buffers_held_peak: inner.buffers.held_peak, ..inner.stats }
    }

    /// Gives back what a busier moment left: the stream spares and the send
    /// slots' buffers not used since the last trim (a stall or a burst would
    /// otherwise leave them held for the worker's life, a step in resident
    /// memory). Call it now and then (the worker's heartbeat: every second);
    /// what the worker uses at least once per interval stays.
    pub(super) fn trim(&self) {
        let inner = &mut *self.inner.borrow_mut();
        inner.stream_spares.0.trim();
        let untouched = inner.free_sends_low.min(inner.free_sends.len());
        for &slot in &inner.free_sends[..untouched] {
            // Free: the kernel is not reading it.
            inner.sends[slot as usize].data = Vec::new();
        }
        inner.free_sends_low = inner.free_sends.len();
    }

    /// Registers a socket; its receive is armed on the first wait for a
    /// datagram (`poll_recv_ready`) or for bytes (`poll_read`).
    /// `fd` must stay open until [`Driver::deregister`].
    pub(super) fn register(&self, fd: RawFd) -> SocketId {
        self.register_state(SocketState { fd, ..SocketState::default() })
    }

    /// Registers a connected TCP stream: read with [`Driver::poll_read`],
    /// written with [`Driver::poll_write`]. `fd` must stay open until
    /// [`Driver::deregister`].
    pub(super) fn register_stream(&self, fd: RawFd) -> SocketId {
        self.register_state(SocketState { fd, stream: true, ..SocketState::default() })
    }

    fn register_state(&self, state: SocketState) -> SocketId {
        let inner = &mut *self.inner.borrow_mut();
        let index = inner.free_sockets.pop().unwrap_or_else(|| {
            inner.sockets.push(SocketSlot::default());
            u32::try_from(inner.sockets.len() - 1).expect("fewer than 2^32 sockets")
        });
        let fixed = index < inner.fixed_slots && inner.set_fixed_file(index, state.fd);
        let slot = &mut inner.sockets[index as usize];
        slot.generation = slot.generation.wrapping_add(1) & 0x3fff_ffff;
        slot.state = Some(SocketState { fixed, ..state });
        if fixed {
            inner.stats.fixed_files += 1;
        }
        SocketId { index, generation: slot.generation }
    }

    /// Forgets a socket: its waiting datagrams go back to the ring and its
    /// receive is cancelled (the kernel holds its own reference to the
    /// socket until then, so the caller may close the descriptor now).
    pub(super) fn deregister(&self, id: SocketId) {
        let inner = &mut *self.inner.borrow_mut();
        if inner.state(id).is_none() {
            return;
        }
        let Some(state) = inner.sockets[id.index as usize].state.take() else { return };
        for datagram in &state.queue {
            inner.buffers.give_back(datagram.buffer);
        }
        inner.buffers.publish();
        inner.free_sockets.push(id.index);
        if state.armed {
            // The kernel holds the socket until this completes.
            inner.cancel_receive(id);
        }
        if let Some(slot) = state.sending {
            // The kernel reads the stream's bytes until the send completes:
            // its slot keeps them alive from now on.
            inner.sends[slot as usize].data = state.in_flight;
            // A send the peer is not taking (the caller's flush gave up)
            // must not hold the connection open.
            inner.cancel(KIND_SEND | u64::from(slot));
        }
        inner.stream_spares.give(state.pending);
        // Entries naming the socket go to the kernel now, while its slot
        // (or descriptor) still names it: once the caller closes the
        // descriptor, or the slot is emptied or given to the next socket,
        // an entry submitted later would reach nothing, or the wrong socket.
        // In the kernel each operation holds its own reference to the file.
        inner.submit();
        if state.fixed {
            inner.stats.fixed_files -= 1;
            inner.set_fixed_file(id.index, -1);
        }
    }

    /// Ready once socket `id` has a datagram (or an error) for
    /// [`Driver::try_recv_with`]; arms its receive and waits otherwise.
    pub(super) fn poll_recv_ready(&self, id: SocketId, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &mut *self.inner.borrow_mut();
        let Some(state) = inner.state(id) else {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed")));
        };
        if !state.queue.is_empty() || state.recv_error.is_some() || state.dropped > 0 {
            return Poll::Ready(Ok(()));
        }
        if let Err(e) = inner.arm(id) {
            return Poll::Ready(Err(e));
        }
        inner.wait(id, cx);
        Poll::Pending
    }

    /// Takes the next datagram for socket `id` and lends its payload, in
    /// the ring buffer the kernel wrote it to, to `f`: no copy. The buffer
    /// goes back to the kernel once `f` returns. `None` when none waits.
    pub(super) fn try_recv_with<R>(
        &self,
        id: SocketId,
        f: impl FnOnce(&[u8], SocketAddr) -> R,
    ) -> Option<io::Result<R>> {
        let (datagram, from, memory) = {
            let inner = &mut *self.inner.borrow_mut();
            let Some(state) = inner.state(id) else {
                return Some(Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed")));
            };
            if let Some(e) = state.recv_error.take() {
                return Some(Err(e));
            }
            if state.dropped > 0 {
                let dropped = std::mem::take(&mut state.dropped);
                return Some(Err(io::Error::other(format!(
                    "{dropped} datagrams dropped: more than {RECV_QUEUE_MAX} were waiting for the call"
                ))));
            }
            let datagram = state.queue.pop_front()?;
            settle(&mut state.queue);
            let end = usize::from(datagram.offset) + usize::from(datagram.len);
            let Some(from) = source(inner.buffers.get(datagram.buffer, end), &inner.msghdr) else {
                // Read and checked on arrival, from bytes nothing has
                // written since: this does not happen.
                inner.recycle(datagram.buffer);
                return Some(Err(io::Error::new(io::ErrorKind::InvalidData, "datagram source unreadable")));
            };
            (datagram, from, inner.buffers.memory)
        };
        let start = usize::from(datagram.buffer) * RECV_BUFFER_BYTES + usize::from(datagram.offset);
        assert!(
            usize::from(datagram.offset) + usize::from(datagram.len) <= RECV_BUFFER_BYTES,
            "a datagram within its buffer"
        );
        // SAFETY: the range lies inside buffer `datagram.buffer` (asserted),
        // inside `memory`, which lives until the driver drops (`&self`
        // keeps it). The driver holds that buffer: the kernel does not
        // write it until `recycle` below puts it back in the ring. The
        // `RefCell` is released first, so `f` may use the ring.
        let payload = unsafe { std::slice::from_raw_parts(memory.add(start), usize::from(datagram.len)) };
        let out = f(payload, from);
        self.inner.borrow_mut().recycle(datagram.buffer);
        Some(Ok(out))
    }

    /// Reads the next bytes of stream `id` into `out`: `Ok(0)` at the
    /// peer's end (or for an empty `out`); pending until bytes arrive.
    pub(super) fn poll_read(
        &self,
        id: SocketId,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut *self.inner.borrow_mut();
        if inner.state(id).is_none() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed")));
        }
        let mut n = 0;
        while n < out.len()
            && let Some(state) = live(&mut inner.sockets, id)
            && let Some(chunk) = state.queue.front_mut()
        {
            let bytes = inner.buffers.get(chunk.buffer, usize::from(chunk.offset) + usize::from(chunk.len));
            let take = usize::from(chunk.len).min(out.len() - n);
            let start = usize::from(chunk.offset);
            out[n..n + take].copy_from_slice(&bytes[start..start + take]);
            n += take;
            if take < usize::from(chunk.len) {
                // `take` < `len` <= u16::MAX.
                chunk.offset += take as u16;
                chunk.len -= take as u16;
            } else {
                let buffer = chunk.buffer;
                state.queue.pop_front();
                settle(&mut state.queue);
                inner.recycle(buffer);
            }
        }
        let state = inner.state(id).expect("checked above");
        if n > 0 || out.is_empty() || state.eof {
            return Poll::Ready(Ok(n));
        }
        if let Some(e) = state.recv_error.take() {
            return Poll::Ready(Err(e));
        }
        if let Err(e) = inner.arm(id) {
            return Poll::Ready(Err(e));
        }
        inner.wait(id, cx);
        Poll::Pending
    }

    /// Appends `data` to stream `id`'s bytes waiting to be sent, as much
    /// as fits in [`STREAM_PENDING`]: `Ok(n)` once appended, pending while
    /// it is full. They leave in the turn's submission, one `send` per
    /// stream for everything written since its last send. A failure in the
    /// kernel is returned by the next write or flush.
    pub(super) fn poll_write(
        &self,
        id: SocketId,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut *self.inner.borrow_mut();
        let Some(state) = live(&mut inner.sockets, id) else {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed")));
        };
        if let Some(e) = state.send_error.take() {
            return Poll::Ready(Err(e));
        }
        let n = data.len().min(STREAM_PENDING - state.pending.len());
        if n == 0 && !data.is_empty() {
            store_waker(&mut state.write_waker, cx);
            return Poll::Pending;
        }
        inner.stream_spares.lend(&mut state.pending);
        state.pending.extend_from_slice(&data[..n]);
        inner.schedule_stream_send(id);
        Poll::Ready(Ok(n))
    }

    /// Lends stream `id`'s bytes waiting to be sent to `f`, which appends
    /// to them where they wait (a writer that frames its messages there
    /// needs no buffer of its own, nor a copy); they leave as
    /// [`Driver::poll_write`]'s do. `f` keeps its own bound (the vector's
    /// length is what waits) and must not use the ring. `None`, with `f`
    /// not called, once the stream is closed or a send failed: the next
    /// flush reports why.
    pub(super) fn write_with<R>(&self, id: SocketId, f: impl FnOnce(&mut Vec<u8>) -> R) -> Option<R> {
        let inner = &mut *self.inner.borrow_mut();
        let state = live(&mut inner.sockets, id).filter(|state| state.send_error.is_none())?;
        inner.stream_spares.lend(&mut state.pending);
        let out = f(&mut state.pending);
        inner.schedule_stream_send(id);
        Some(out)
    }

    /// Ready once every byte written to stream `id` has been sent: `Err`
    /// if a send failed.
    pub(super) fn poll_flush(&self, id: SocketId, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &mut *self.inner.borrow_mut();
        let Some(state) = inner.state(id) else {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed")));
        };
        if state.send_error.is_none() && (state.sending.is_some() || !state.pending.is_empty()) {
            store_waker(&mut state.write_waker, cx);
            return Poll::Pending;
        }
        Poll::Ready(state.send_error.take().map_or(Ok(()), Err))
    }

    /// Queues `data` as one datagram from socket `id` to `to`. `Ok` means
    /// queued: a failure in the kernel is returned by the socket's next send.
    pub(super) fn send(&self, id: SocketId, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        if data.len() > MAX_DATAGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("datagram of {} bytes: at most {MAX_DATAGRAM} are sent", data.len()),
            ));
        }
        let inner = &mut *self.inner.borrow_mut();
        let Some(state) = inner.state(id) else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed"));
        };
        let (fd, fixed) = (state.fd, state.fixed);
        let earlier = state.send_error.take();
        let Some(slot) = inner.send_slot(MAX_SENDS) else {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{MAX_SENDS} datagrams already waiting for the kernel"),
            ));
        };
        let send = &mut inner.sends[slot as usize];
        (send.addr, send.addr_len) = RawAddr::new(to);
        send.data.clear();
        send.data.extend_from_slice(data);
        inner.send_owner[slot as usize] = Some(SendOwner { socket: id, len: data.len() as u32 });
        let (data_ptr, addr, addr_len) =
            (send.data.as_ptr(), (&raw const send.addr).cast::<libc::sockaddr>(), send.addr_len);
        let entry = with_target!(fixed, id.index, fd, |target| opcode::Send::new(
            target,
            data_ptr,
            data.len() as u32
        )
        .dest_addr(addr)
        .dest_addr_len(addr_len)
        .build())
        .user_data(KIND_SEND | u64::from(slot));
        if let Err(e) = inner.push(&entry) {
            inner.send_owner[slot as usize] = None;
            inner.free_sends.push(slot);
            return Err(e);
        }
        match earlier {
            Some(e) => Err(e),
            None => Ok(data.len()),
        }
    }

    /// Watches the ring's descriptor with tokio's reactor: readable when
    /// completions are waiting. Must be called inside the runtime.
    pub(super) fn watch(
        self: &std::rc::Rc<Self>,
    ) -> io::Result<tokio::io::unix::AsyncFd<std::rc::Rc<Driver>>> {
        // SAFETY: the descriptor is the ring's, open for as long as the
        // driver lives, and the `AsyncFd` holds the driver.
        let watch = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                std::rc::Rc::clone(self),
                tokio::io::Interest::READABLE,
            )
        };
        watch.map_err(io::Error::from)
    }

    /// The driver task's body: submits what was queued, and drains the
    /// completion queue whenever the ring's descriptor is readable. Never
    /// ready unless tokio's reactor fails.
    pub(super) fn poll_drive(
        &self,
        cx: &mut Context<'_>,
        ready: &tokio::io::unix::AsyncFd<std::rc::Rc<Driver>>,
    ) -> Poll<io::Error> {
        let inner = &mut *self.inner.borrow_mut();
        if !inner.flusher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            inner.flusher = Some(cx.waker().clone());
        }
        inner.submit();
        loop {
            match ready.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    guard.clear_ready();
                    inner.reap();
                    // Cancels and re-arms queued while reaping go now.
                    inner.submit();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(e),
                Poll::Pending => break,
            }
        }
        // Sends that completed inside the submit above.
        inner.reap();
        // Only now, with every completion the kernel has posted reaped, is
        // the count of free buffers true (buffers it fills later go to
        // armed sockets and starved ones alike).
        if !inner.starved.is_empty() {
            inner.resume_starved();
            inner.submit();
        }
        Poll::Pending
    }
}

impl Drop for Driver {
    /// The kernel must be done with the buffers before they are freed:
    /// every socket is gone (each holds the driver), so only cancels,
    /// cancelled receives and sends remain; wait for them, bounded. Should
    /// the kernel not finish in time, the memory is leaked rather than freed
    /// under it.
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        let timeout = types::Timespec::new().nsec(10_000_000);
        for _ in 0..100 {
            inner.reap();
            if inner.in_flight == 0 {
                return;
            }
            let args = types::SubmitArgs::new().timespec(&timeout);
            if let Err(e) = inner.ring.submitter().submit_with_args(1, &args)
                && e.raw_os_error() != Some(libc::ETIME)
                && e.raw_os_error() != Some(libc::EINTR)
            {
                break;
            }
        }
        tracing::warn!(in_flight = inner.in_flight, "io_uring operations did not finish: buffers leaked");
        let sends = std::mem::take(&mut inner.sends);
        std::mem::forget(sends);
        // The buffer ring is replaced by an empty one that owns nothing.
        let buffers = std::mem::replace(
            &mut inner.buffers,
            BufferRing {
                entries: std::ptr::null_mut(),
                memory: std::ptr::null_mut(),
                tail: 0,
                held: 0,
                held_peak: 0,
            },
        );
        std::mem::forget(buffers);
    }
}

impl Inner {
    /// Puts `fd` (-1: nothing) in slot `index` of the registered-file
    /// table; `false` if the kernel refused (the socket then uses `fd`).
    fn set_fixed_file(&mut self, index: u32, fd: RawFd) -> bool {
        match self.ring.submitter().register_files_update(index, &[fd]) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, index, "io_uring: registered-file slot not updated");
                false
            }
        }
    }

    /// A free send slot, or a new one while fewer than `bound` exist.
    fn send_slot(&mut self, bound: usize) -> Option<u32> {
        let slot = self.free_sends.pop();
        self.free_sends_low = self.free_sends_low.min(self.free_sends.len());
        slot.or_else(|| {
            (self.sends.len() < bound).then(|| {
                let (addr, addr_len) = RawAddr::new(SocketAddr::from(([0, 0, 0, 0], 0)));
                self.sends.push(Box::new(SendSlot { addr, addr_len, data: Vec::new() }));
                self.send_owner.push(None);
                u32::try_from(self.sends.len() - 1).expect("fewer than 2^32 sends")
            })
        })
    }

    /// Arms socket `id`'s multishot receive unless it is armed, starved of
    /// buffers or at its stream's end.
    fn arm(&mut self, id: SocketId) -> io::Result<()> {
        let msghdr = &raw const *self.msghdr;
        let Some(state) = self.state(id) else { return Ok(()) };
        if state.armed || state.starved || state.eof {
            return Ok(());
        }
        state.armed = true;
        let (fd, fixed) = (state.fd, state.fixed);
        let entry = if state.stream {
            with_target!(fixed, id.index, fd, |target| opcode::RecvMulti::new(target, BUFFER_GROUP).build())
        } else {
            with_target!(fixed, id.index, fd, |target| opcode::RecvMsgMulti::new(
                target,
                msghdr,
                BUFFER_GROUP
            )
            .build())
        };
        let result = self.push(&entry.user_data(id.user_data()));
        if result.is_err()
            && let Some(state) = self.state(id)
        {
            state.armed = false;
        }
        result
    }

    /// Socket `id`'s receive wakes `cx` when something arrives.
    fn wait(&mut self, id: SocketId, cx: &Context<'_>) {
        if let Some(state) = self.state(id) {
            store_waker(&mut state.waker, cx);
        }
    }

    /// Cancels the operation whose `user_data` is `target`.
    fn cancel(&mut self, target: u64) {
        let cancel = opcode::AsyncCancel::new(target).build().user_data(KIND_CANCEL);
        if let Err(e) = self.push(&cancel) {
            tracing::debug!(error = %e, "io_uring: a cancel could not be queued");
        }
    }

    /// The live state of socket `id`, if it is still registered.
    fn state(&mut self, id: SocketId) -> Option<&mut SocketState> {
        live(&mut self.sockets, id)
    }

    /// Queues one entry; the first of a batch wakes the driver task, which
    /// submits them all once this turn's other tasks have run.
    /// `Err` only when the queue is full and the kernel takes nothing.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for attempt in 0..2 {
            // SAFETY: every entry points at memory that outlives the
            // operation: send slots are freed only on their completion or
            // leaked, the receive `msghdr` and buffers live as long as the
            // driver, whose drop waits for the kernel.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                break;
            }
            if attempt == 1 {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "io_uring submission queue full and the kernel takes no more",
                ));
            }
            // Full: submit this batch now, then make room in the
            // completion queue should the kernel have refused for want of it.
            self.submit();
            self.reap();
        }
        self.queued += 1;
        self.in_flight += 1;
        if self.queued == 1
            && let Some(flusher) = &self.flusher
        {
            flusher.wake_by_ref();
        }
        Ok(())
    }

    /// Stream `id` sends its pending bytes in this turn's submission,
    /// unless it has none or a send in flight (whose completion starts the
    /// next).
    fn schedule_stream_send(&mut self, id: SocketId) {
        if let Some(state) = live(&mut self.sockets, id)
            && !state.pending.is_empty()
            && state.sending.is_none()
            && !state.dirty
        {
            state.dirty = true;
            self.stream_sends.push(id);
            self.wake_flusher();
        }
    }

    /// Wakes the driver task to submit (idempotent within a turn).
    fn wake_flusher(&self) {
        if let Some(flusher) = &self.flusher {
            flusher.wake_by_ref();
        }
    }

    /// Queues one `send` per stream with bytes pending and none in flight.
    fn start_stream_sends(&mut self) {
        let mut streams = std::mem::take(&mut self.stream_sends);
        for id in streams.drain(..) {
            let Some(state) = live(&mut self.sockets, id) else { continue };
            state.dirty = false;
            if state.sending.is_some() || state.pending.is_empty() {
                continue;
            }
            // The pending bytes become the send's (no copy); its
            // completion gives the buffer to the spares (`settle_stream`).
            debug_assert!(state.in_flight.capacity() == 0, "a completed send's buffer was given back");
            std::mem::swap(&mut state.pending, &mut state.in_flight);
            let (fd, fixed) = (state.fd, state.fixed);
            let (data, len) = (state.in_flight.as_ptr(), state.in_flight.len() as u32);
            // The slot only names the send (its owner, its completion).
            let slot = self.send_slot(usize::MAX).expect("no bound");
            let entry = with_target!(fixed, id.index, fd, |target| opcode::Send::new(target, data, len)
                .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
                .build())
            .user_data(KIND_SEND | u64::from(slot));
            match self.push(&entry) {
                Ok(()) => {
                    self.send_owner[slot as usize] = Some(SendOwner { socket: id, len });
                    if let Some(state) = live(&mut self.sockets, id) {
                        state.sending = Some(slot);
                    }
                }
                Err(e) => {
                    self.free_sends.push(slot);
                    if let Some(state) = live(&mut self.sockets, id) {
                        settle_stream(state, &mut self.stream_spares);
                        state.send_error = Some(e);
                        if let Some(waker) = state.write_waker.take() {
                            waker.wake();
                        }
                    }
                }
            }
        }
        // Kept for its capacity; a stream made dirty meanwhile is in `self`'s.
        streams.append(&mut self.stream_sends);
        self.stream_sends = streams;
    }

    /// Hands the queued entries (and the streams' pending bytes) to the kernel.
    fn submit(&mut self) {
        if !self.stream_sends.is_empty() {
            self.start_stream_sends();
        }
        if self.queued == 0 {
            return;
        }
        match self.ring.submit() {
            Ok(n) => {
                self.stats.submits += 1;
                self.stats.entries += n as u64;
                self.queued = self.queued.saturating_sub(n as u32);
            }
            // EBUSY/EAGAIN: the completion queue is backed up; the next
            // reap makes room and the next drive submits again.
            Err(e) => tracing::debug!(error = %e, "io_uring submit deferred"),
        }
    }

    /// Returns a buffer to the ring. Starved sockets wait for the driver's
    /// turn (see `resume_starved`).
    fn recycle(&mut self, buffer: u16) {
        self.buffers.give_back(buffer);
        self.buffers.publish();
        if !self.starved.is_empty() && self.buffers.free() >= RESUME_FREE {
            self.wake_flusher();
        }
    }

    /// Re-arms starved sockets, oldest first, once [`RESUME_FREE`] buffers
    /// are free: up to half of them, as each such socket has at least one
    /// datagram waiting in the kernel and armed sockets keep receiving
    /// into the rest.
    ///
    /// The ring arms them itself: their tasks have nothing to read until a
    /// datagram arrives, which wakes them. (Waking each task to arm, one
    /// per buffer that came back, cost a task poll per starved receive and
    /// starved most of them again at once: the buffer had gone to an armed
    /// socket before the re-armed one's entry was submitted.)
    fn resume_starved(&mut self) {
        let free = self.buffers.free();
        if free < RESUME_FREE {
            return;
        }
        let mut n = free / 2;
        while n > 0
            && let Some(id) = self.starved.pop_front()
        {
            let Some(state) = self.state(id) else { continue };
            if !state.starved {
                continue;
            }
            state.starved = false;
            n -= 1;
            // A socket with datagrams waiting stays paused: its task arms
            // it once it has read them, as after any pause.
            if state.queue.is_empty()
                && self.arm(id).is_err()
                && let Some(waker) = self.state(id).and_then(|state| state.waker.take())
            {
                // The submission queue is full and the kernel takes
                // nothing: the task's next poll arms it, or reports why not.
                waker.wake();
            }
        }
    }

    /// Handles every completion waiting in the queue.
    fn reap(&mut self) {
        loop {
            // One at a time (the queue's head moves as each is taken), so
            // handling a completion can use all of `self`.
            let next = self.ring.completion().next();
            let Some(cqe) = next else { break };
            let data = cqe.user_data();
            match data & KIND_MASK {
                KIND_RECV => {
                    let buffer = cqueue::buffer_select(cqe.flags());
                    if let Some(buffer) = buffer {
                        self.buffers.taken(buffer);
                    }
                    received(
                        &mut self.sockets,
                        &mut self.buffers,
                        &mut self.starved,
                        &mut self.stats,
                        &mut self.pause,
                        &self.msghdr,
                        SocketId::from_user_data(data),
                        &cqe,
                        buffer,
                    );
                    if !cqueue::more(cqe.flags()) {
                        self.in_flight -= 1;
                    }
                }
                KIND_SEND => {
                    self.in_flight -= 1;
                    self.sent((data & 0xffff_ffff) as usize, cqe.result());
                }
                _ => self.in_flight -= 1,
            }
        }
        let mut pause = std::mem::take(&mut self.pause);
        for id in pause.drain(..) {
            self.cancel_receive(id);
        }
        self.pause = pause;
    }

    /// Cancels socket `id`'s multishot receive; its last completion
    /// (`ECANCELED`) marks it disarmed.
    fn cancel_receive(&mut self, id: SocketId) {
        self.cancel(id.user_data());
    }

    /// Send slot `slot` completed with `result`.
    fn sent(&mut self, slot: usize, result: i32) {
        let Some(owner) = self.send_owner.get_mut(slot).and_then(Option::take) else { return };
        self.free_sends.push(slot as u32);
        // A closed stream's last send left its bytes here: not kept.
        if self.sends[slot].data.capacity() > MAX_DATAGRAM {
            self.sends[slot].data = Vec::new();
        }
        let failed = result < 0;
        if failed {
            self.stats.send_errors += 1;
        }
        let Some(state) = live(&mut self.sockets, owner.socket) else { return };
        if failed {
            state.send_error = Some(io::Error::from_raw_os_error(-result));
        } else if state.stream && result.cast_unsigned() < owner.len {
            // MSG_WAITALL sends a stream's bytes whole or fails: a short
            // send means the connection broke on the way.
            state.send_error = Some(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("the connection took {result} of {} bytes", owner.len),
            ));
        }
        if state.stream {
            state.sending = None;
            settle_stream(state, &mut self.stream_spares);
            if let Some(waker) = state.write_waker.take() {
                waker.wake();
            }
            self.schedule_stream_send(owner.socket);
        }
    }
}

/// A stream's send has completed (or was never queued): its buffer goes
/// to the worker's spares. The pending bytes become the send's at each
/// submission (`Inner::start_stream_sends`), so a stream at rest, all sent,
/// holds no buffer.
fn settle_stream(state: &mut SocketState, spares: &mut StreamSpares) {
    spares.give(std::mem::take(&mut state.in_flight));
}

/// The worker's spare stream write buffers. A stream takes one when it is
/// written with nothing pending and gives it back when its send completes,
/// so the worker holds as many as its streams have in use at once, not one
/// or two per stream: 512 bytes or more of every call's memory at 1,000
/// calls, where a stream at rest between Twilio's messages is the rule.
#[derive(Debug, Default)]
struct StreamSpares(super::Spares<{ StreamSpares::KEPT }>);

impl StreamSpares {
    /// Spare buffers kept at most; more are freed. 512 KiB per worker.
    const KEPT: usize = 1024;

    /// Gives `pending` a spare buffer, unless it has one.
    fn lend(&mut self, pending: &mut Vec<u8>) {
        if pending.capacity() == 0
            && let Some(buffer) = self.0.take()
        {
            *pending = buffer;
        }
    }

    /// Takes `buffer` back, emptied and shrunk to [`STREAM_KEPT`] after a burst.
    fn give(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        if buffer.capacity() > STREAM_KEPT {
            buffer.shrink_to(STREAM_KEPT);
        }
        if buffer.capacity() > 0 {
            self.0.give(buffer);
        }
    }
}

/// One receive completion for `id`.
#[allow(clippy::too_many_arguments)] // the disjoint fields of `Inner` it needs
fn received(
    sockets: &mut [SocketSlot],
    buffers: &mut BufferRing,
    starved: &mut VecDeque<SocketId>,
    stats: &mut RingStats,
    pause: &mut Vec<SocketId>,
    msghdr: &libc::msghdr,
    id: SocketId,
    cqe: &cqueue::Entry,
    buffer: Option<u16>,
) {
    let state = sockets
        .get_mut(id.index as usize)
        .filter(|slot| slot.generation == id.generation)
        .and_then(|slot| slot.state.as_mut());
    let Some(state) = state else {
        // A socket that has gone: its buffer goes straight back.
        if let Some(buffer) = buffer {
            buffers.give_back(buffer);
            buffers.publish();
        }
        return;
    };
    if !cqueue::more(cqe.flags()) {
        state.armed = false;
    }
    let result = cqe.result();
    if result < 0 {
        match -result {
            libc::ENOBUFS => {
                stats.starved += 1;
                state.starved = true;
                starved.push_back(id);
            }
            // Paused (or closing): a task that found its queue empty
            // while the cancel was on its way waits for this to re-arm.
            libc::ECANCELED => {
                if let Some(waker) = state.waker.take() {
                    waker.wake();
                }
            }
            errno => {
                state.recv_error = Some(io::Error::from_raw_os_error(errno));
                if let Some(waker) = state.waker.take() {
                    waker.wake();
                }
            }
        }
        return;
    }
    if state.stream {
        stream_received(id, state, buffers, stats, pause, result, buffer);
        return;
    }
    let Some(buffer) = buffer else { return };
    let bytes = buffers.get(buffer, (result as usize).min(RECV_BUFFER_BYTES));
    let parsed = types::RecvMsgOut::parse(bytes, msghdr).ok().and_then(|out| {
        socket_addr(out.name_data())?;
        let offset = out.payload_data().as_ptr() as usize - bytes.as_ptr() as usize;
        Some((offset, out.payload_data().len()))
    });
    match parsed {
        Some((offset, len)) if state.queue.len() < RECV_QUEUE_MAX => {
            stats.received += 1;
            if state.queue.len() + 1 == RECV_QUEUE && state.armed {
                stats.paused += 1;
                pause.push(id);
            }
            state.queue.push_back(Datagram { buffer, offset: offset as u16, len: len as u16 });
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        }
        _ => {
            stats.dropped += 1;
            state.dropped += 1;
            buffers.give_back(buffer);
            buffers.publish();
        }
    }
}

/// One receive completion of `result` >= 0 bytes for a stream.
fn stream_received(
    id: SocketId,
    state: &mut SocketState,
    buffers: &mut BufferRing,
    stats: &mut RingStats,
    pause: &mut Vec<SocketId>,
    result: i32,
    buffer: Option<u16>,
) {
    let len = usize::try_from(result).unwrap_or(0).min(RECV_BUFFER_BYTES);
    match buffer {
        Some(buffer) if len > 0 => {
            stats.received += 1;
            // Unlike datagrams, a stream's bytes are never dropped: what
            // arrives before the pause takes effect is bounded by the ring's
            // buffers, which its task hands back as it reads.
            if state.queue.len() + 1 == RECV_QUEUE && state.armed {
                stats.paused += 1;
                pause.push(id);
            }
            state.queue.push_back(Datagram { buffer, offset: 0, len: len as u16 });
        }
        other => {
            // The peer's end: a receive of 0 bytes (and the last).
            if let Some(buffer) = other {
                buffers.give_back(buffer);
                buffers.publish();
            }
            state.eof = true;
        }
    }
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

/// An operation's target: registered-file slot `index` when `fixed`,
/// else descriptor `fd` (the crate's two target types have no common
/// public type, so the builder is written once and expanded for each).
macro_rules! with_target {
    ($fixed:expr, $index:expr, $fd:expr, |$target:ident| $build:expr) => {
        if $fixed {
            let $target = types::Fixed($index);
            $build
        } else {
            let $target = types::Fd($fd);
            $build
        }
    };
}
use with_target;

/// Sets up an empty registered-file table as large as `RLIMIT_NOFILE`
/// allows, up to [`FIXED_FILES_MAX`]; returns its size, 0 when the
/// kernel refuses (before 5.19, or a limit): sockets then use plain
/// descriptors and nothing else changes.
fn register_file_table(ring: &IoUring) -> u32 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `getrlimit` writes only the `rlimit` it is given.
    let slots = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0 {
        u32::try_from(limit.rlim_cur).unwrap_or(u32::MAX).min(FIXED_FILES_MAX)
    } else {
        0
    };
    if slots == 0 {
        return 0;
    }
    match ring.submitter().register_files_sparse(slots) {
        Ok(()) => slots,
        Err(e) => {
            tracing::info!(error = %e, "io_uring: no registered-file table; sockets use plain descriptors");
            0
        }
    }
}

/// The live state of socket `id` in `sockets`, if it is still registered.
fn live(sockets: &mut [SocketSlot], id: SocketId) -> Option<&mut SocketState> {
    let slot = sockets.get_mut(id.index as usize)?;
    if slot.generation == id.generation { slot.state.as_mut() } else { None }
}

/// Stores `cx`'s waker in `slot` unless the same task is already there.
fn store_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// The source of the datagram whose `recvmsg` output begins `bytes`
/// (through the end of its payload): `None` unless IPv4 or IPv6.
fn source(bytes: &[u8], msghdr: &libc::msghdr) -> Option<SocketAddr> {
    socket_addr(types::RecvMsgOut::parse(bytes, msghdr).ok()?.name_data())
}

/// A source address as the kernel wrote it (`sockaddr_in` or `sockaddr_in6`).
fn socket_addr(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(name.get(..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope)))
        }
        _ => None,
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("io_uring here lacks {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the kernel reads for `addr`.
    fn raw_bytes(to: SocketAddr) -> Vec<u8> {
        let (addr, len) = RawAddr::new(to);
        // SAFETY: `RawAddr` is `len` (at most 28) bytes of plain integers,
        // every byte written: both variants are built whole, and the
        // shorter one is read only as far as its own length.
        unsafe { std::slice::from_raw_parts((&raw const addr).cast::<u8>(), len as usize) }.to_vec()
    }

    #[test]
    fn send_addresses_are_the_sockaddrs_the_system_builds() {
        for to in [
            "127.0.0.1:5004".parse().unwrap(),
            "203.0.113.9:1".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("2001:db8::1".parse().unwrap(), 40000, 0x0a_bcde, 7)),
        ] {
            let system = socket2::SockAddr::from(to);
            // SAFETY: `as_ptr` points at a `sockaddr_storage` whose first
            // `len` bytes are the address.
            let expected =
                unsafe { std::slice::from_raw_parts(system.as_ptr().cast::<u8>(), system.len() as usize) };
            assert_eq!(raw_bytes(to), expected, "{to}");
            assert_eq!(socket_addr(expected), Some(to), "read back as written: {to}");
        }
    }

    #[test]
    fn stream_spares_lend_to_empty_buffers_only_and_keep_a_bounded_few() {
        let mut spares = StreamSpares::default();
        let mut pending = Vec::new();
        spares.lend(&mut pending);
        assert_eq!(pending.capacity(), 0, "nothing spare yet");
        pending.extend_from_slice(&[1; 400]);
        // The send completes: its buffer, burst-sized, comes back shrunk.
        let mut burst = vec![0u8; 4 * STREAM_KEPT];
        burst.extend_from_slice(&pending);
        spares.give(burst);
        assert_eq!(spares.0.bytes(), STREAM_KEPT);
        // A stream with a buffer of its own keeps it.
        spares.lend(&mut pending);
        assert_eq!(pending.len(), 400);
        let mut empty = Vec::new();
        spares.lend(&mut empty);
        assert_eq!((empty.capacity(), empty.len()), (STREAM_KEPT, 0));
        assert_eq!(spares.0.bytes(), 0);
        // Empty vectors are not kept; past the bound, buffers are freed.
        spares.give(Vec::new());
        for _ in 0..StreamSpares::KEPT + 10 {
            spares.give(Vec::with_capacity(64));
        }
        assert_eq!(spares.0.len(), StreamSpares::KEPT);
        // A trim frees what was not taken since the last: nothing the
        // first time (the interval starts), then the untouched bottom.
        spares.0.trim();
        assert_eq!(spares.0.len(), StreamSpares::KEPT);
        let mut taken = Vec::new();
        for _ in 0..3 {
            let mut pending = Vec::new();
            spares.lend(&mut pending);
            taken.push(pending);
        }
        spares.0.trim();
        assert_eq!(spares.0.len(), 0, "the {} never taken are freed", StreamSpares::KEPT - 3);
        for pending in taken {
            spares.give(pending);
        }
        spares.0.trim();
        assert_eq!(spares.0.len(), 3, "given back during the interval: kept");
        spares.0.trim();
        assert_eq!(spares.0.len(), 0, "untouched for a whole interval: freed");
    }

    #[test]
    fn a_socket_queue_gives_back_what_a_burst_grew_it_to_once_empty() {
        let datagram = || Datagram { buffer: 0, offset: 0, len: 1 };
        let mut queue = VecDeque::new();
        for _ in 0..RECV_QUEUE_MAX {
            queue.push_back(datagram());
        }
        let grown = queue.capacity();
        assert!(grown >= RECV_QUEUE_MAX);
        queue.pop_front();
        settle(&mut queue);
        assert_eq!(queue.capacity(), grown, "kept while datagrams wait");
        queue.clear();
        settle(&mut queue);
        assert!(queue.capacity() <= RECV_QUEUE, "{}", queue.capacity());
        // The steady state (one datagram at a time) keeps its room.
        queue.push_back(datagram());
        let steady = queue.capacity();
        queue.pop_front();
        settle(&mut queue);
        assert_eq!(queue.capacity(), steady);
    }
}
