//! Batched UDP for the echo backend: `recvmmsg` and `sendmmsg`.
//!
//! One echo socket serves every call of a load run, so the datagrams that
//! queued while the echo thread was descheduled come in with one syscall and
//! their echoes leave with one more, instead of two syscalls per datagram.
//! The standard library, socket2 and rustix have no `recvmmsg`; nix has
//! both calls but its wrappers tie every buffer to one borrow per call,
//! which a loop that keeps its buffers cannot express: this module is the
//! crate's one use of `unsafe`, two `libc` calls over buffers it owns.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams one syscall moves at most.
pub(crate) const BATCH: usize = 64;

/// Bytes kept of each received datagram; a longer one is dropped (RTP of a
/// call is a few hundred bytes).
pub(crate) const SLOT_BYTES: usize = 4096;

/// Control bytes kept per datagram, in `u64`s (so aligned for `cmsghdr`):
/// room for one `SCM_TIMESTAMPNS` (a 16-byte header and a 16-byte timespec).
const CONTROL_WORDS: usize = 8;

/// Received datagrams: up to [`BATCH`] slots of [`SLOT_BYTES`], each with
/// the kernel's receive stamp when the socket asked for one
/// (`SO_TIMESTAMPNS`).
pub(crate) struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    truncated: [bool; BATCH],
    addrs: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    /// Receive stamps, nanoseconds since the Unix epoch; 0 for none.
    stamps: [u64; BATCH],
    count: usize,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid (AF_UNSPEC) value.
        let zeroed: libc::sockaddr_storage = unsafe { mem::zeroed() };
        Self {
            bufs: vec![0; BATCH * SLOT_BYTES],
            lens: [0; BATCH],
            truncated: [false; BATCH],
            addrs: vec![zeroed; BATCH],
            controls: vec![[0; CONTROL_WORDS]; BATCH],
            stamps: [0; BATCH],
            count: 0,
        }
    }

    /// Blocks (up to the socket's read timeout) for one datagram, then takes
    /// whatever else is already queued, up to [`BATCH`]. Returns how many.
    ///
    /// # Errors
    /// The socket's error: `WouldBlock`/`TimedOut` when nothing came.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        let mut iovecs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        // SAFETY: mmsghdr is plain old data; all zeroes is an empty header.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, (iov, hdr)) in iovecs.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            iov.iov_base = self.bufs[i * SLOT_BYTES..].as_mut_ptr().cast();
            iov.iov_len = SLOT_BYTES;
            hdr.msg_hdr.msg_name = std::ptr::from_mut(&mut self.addrs[i]).cast();
            hdr.msg_hdr.msg_namelen = socklen::<libc::sockaddr_storage>();
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = CONTROL_WORDS * size_of::<u64>();
        }
        // SAFETY: every header points at its own iovec (alive on this stack
        // frame) over a disjoint SLOT_BYTES slice of `bufs`, at its own
        // sockaddr_storage and at its own control words, each with its true
        // length; the kernel writes within those.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.count = usize::try_from(n).unwrap_or(0).min(BATCH);
        for (i, hdr) in hdrs.iter().enumerate().take(self.count) {
            self.lens[i] = (hdr.msg_len as usize).min(SLOT_BYTES);
            self.truncated[i] = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.stamps[i] = receive_stamp(&hdr.msg_hdr);
        }
        Ok(self.count)
    }

    /// When the kernel received the `i`-th datagram of the last
    /// [`RecvBatch::recv`], in nanoseconds since the Unix epoch; `None`
    /// without a stamp.
    pub(crate) fn stamp(&self, i: usize) -> Option<u64> {
        self.stamps.get(i).copied().filter(|&nanos| i < self.count && nanos > 0)
    }

    /// The `i`-th datagram of the last [`RecvBatch::recv`]: its source and
    /// bytes (empty if it was longer than a slot, so the caller drops it as
    /// garbage). `None` past the batch or for a source that is not IP.
    pub(crate) fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.count {
            return None;
        }
        let from = from_storage(&self.addrs[i])?;
        let bytes = if self.truncated[i] { &[][..] } else { &self.bufs[i * SLOT_BYTES..][..self.lens[i]] };
        Some((from, bytes))
    }
}

/// Datagrams to send, copied in by [`SendBatch::push`], sent by
/// [`SendBatch::flush`].
pub(crate) struct SendBatch {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
    dests: Vec<libc::sockaddr_storage>,
    dest_lens: Vec<libc::socklen_t>,
}

impl SendBatch {
    pub(crate) fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(BATCH * 256),
            spans: Vec::with_capacity(BATCH),
            dests: Vec::with_capacity(BATCH),
            dest_lens: Vec::with_capacity(BATCH),
        }
    }

    /// Queues `datagram` for `dest`.
    pub(crate) fn push(&mut self, dest: SocketAddr, datagram: &[u8]) {
        let (storage, len) = to_storage(dest);
        self.spans.push((self.bytes.len(), datagram.len()));
        self.bytes.extend_from_slice(datagram);
        self.dests.push(storage);
        self.dest_lens.push(len);
    }

    /// Datagrams queued and not yet sent.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Sends everything queued, [`BATCH`] per syscall; returns how many the
    /// socket refused (a refused datagram is skipped, the rest still go).
    pub(crate) fn flush(&mut self, socket: &UdpSocket) -> u64 {
        let mut failed = 0u64;
        let mut next = 0;
        while next < self.spans.len() {
            match self.send_from(socket, next) {
                Ok(sent) => next += sent,
                Err(_) => {
                    failed += 1;
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.spans.clear();
        self.dests.clear();
        self.dest_lens.clear();
        failed
    }

    /// One `sendmmsg` of up to [`BATCH`] datagrams from index `first`;
    /// returns how many went (at least one) or the first one's error.
    fn send_from(&mut self, socket: &UdpSocket, first: usize) -> io::Result<usize> {
        let count = (self.spans.len() - first).min(BATCH);
        let mut iovecs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        // SAFETY: mmsghdr is plain old data; all zeroes is an empty header.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for i in 0..count {
            let (start, len) = self.spans[first + i];
            iovecs[i].iov_base = self.bytes[start..].as_mut_ptr().cast();
            iovecs[i].iov_len = len;
            hdrs[i].msg_hdr.msg_name = std::ptr::from_mut(&mut self.dests[first + i]).cast();
            hdrs[i].msg_hdr.msg_namelen = self.dest_lens[first + i];
            hdrs[i].msg_hdr.msg_iov = &raw mut iovecs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `count` headers each point at one iovec over a
        // span inside `bytes` and at a filled sockaddr of the stated length;
        // the kernel only reads them (and writes msg_len).
        let n = unsafe {
            libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT)
        };
        match usize::try_from(n) {
            Ok(0) | Err(_) => Err(io::Error::last_os_error()),
            Ok(sent) => Ok(sent),
        }
    }
}

/// The `SCM_TIMESTAMPNS` stamp among the control messages `recvmmsg`
/// wrote for `hdr`, in nanoseconds since the Unix epoch; 0 for none.
fn receive_stamp(hdr: &libc::msghdr) -> u64 {
    let mut stamp = 0;
    // SAFETY: `hdr` is a header `recvmmsg` filled: its control pointer is
    // one of `RecvBatch::controls` (aligned for cmsghdr) and its control
    // length the bytes the kernel wrote there, so the CMSG_* walk stays
    // inside them, and each message's data holds its stated type.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET
                && c.cmsg_type == libc::SCM_TIMESTAMPNS
                && c.cmsg_len as usize >= libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                let nanos = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
                stamp = u64::try_from(nanos).unwrap_or(0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    stamp
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            let sin = unsafe { &mut *std::ptr::from_mut(&mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            socklen::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            let sin6 = unsafe { &mut *std::ptr::from_mut(&mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            socklen::<libc::sockaddr_in6>()
        }
    };
    (storage, len)
}

fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (its family says so) into storage large enough.
            let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn addresses_survive_the_round_trip_through_sockaddr() {
        for addr in ["127.0.0.1:5004", "[::1]:40000", "[fe80::1%3]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, _) = to_storage(addr);
            assert_eq!(from_storage(&storage), Some(addr));
        }
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_whole_with_its_sources() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        echo.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut out = SendBatch::new();
        // More than one syscall's worth, from two sources.
        for i in 0..(BATCH + 6) {
            out.push(echo.local_addr().unwrap(), &[u8::try_from(i).unwrap(); 3]);
        }
        assert_eq!(out.len(), BATCH + 6);
        assert_eq!(out.flush(&a), 0);
        assert_eq!(out.len(), 0);
        out.push(echo.local_addr().unwrap(), b"from b");
        assert_eq!(out.flush(&b), 0);
        let mut got = Vec::new();
        let mut batch = RecvBatch::new();
        while got.len() < BATCH + 7 {
            let n = batch.recv(&echo).unwrap();
            assert!(n <= BATCH);
            got.extend((0..n).map(|i| batch.get(i).map(|(f, d)| (f, d.to_vec())).unwrap()));
        }
        for (i, (from, bytes)) in got.iter().take(BATCH + 6).enumerate() {
            assert_eq!(*from, a.local_addr().unwrap());
            assert_eq!(bytes, &[u8::try_from(i).unwrap(); 3]);
        }
        assert_eq!(got[BATCH + 6], (b.local_addr().unwrap(), b"from b".to_vec()));
        assert!(batch.get(BATCH).is_none());
    }

    #[test]
    fn an_oversized_datagram_comes_back_empty_and_nothing_waits_forever() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        echo.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&vec![7u8; SLOT_BYTES + 1], echo.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(&echo).unwrap(), 1);
        assert_eq!(batch.get(0).unwrap().1, &[] as &[u8]);
        let err = batch.recv(&echo).unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{err}");
    }
}
