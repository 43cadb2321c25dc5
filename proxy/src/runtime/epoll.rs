//! The epoll backend's UDP socket: tokio's readiness reactor behind the
//! [`RtpSocket`](super::RtpSocket) interface, receiving into the worker's
//! one buffer and lending it.
//!
//! One syscall per datagram received. A plain readiness loop costs two: the
//! `recvfrom` that returns the datagram, then one that returns `EAGAIN`,
//! which is how tokio learns the queue is empty and clears the socket's
//! readiness. Here every receive is a `recvmmsg` with room for two: one back
//! means the queue was empty when the kernel looked, so readiness is cleared
//! at once; two back means there may be more, so it is left set and the
//! second datagram is kept for the next receive.
//!
//! Clearing readiness after a short batch strands nothing: mio registers the
//! socket edge-triggered, so a datagram that arrives after the `recvmmsg` is a
//! new edge, which the reactor reports at its next poll; and the worker's
//! runtime is single-threaded, so the reactor cannot poll between the
//! `recvmmsg` and the clear (tokio's `try_io` also keeps any readiness the
//! reactor reported after the operation began).

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::task::{Context, Poll};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

use super::{MAX_RECV_DATAGRAM, SendResult};

/// A UDP socket on tokio's epoll reactor.
#[derive(Debug)]
pub struct EpollUdp {
    socket: tokio::net::UdpSocket,
    /// The second datagram of the last two-datagram batch, delivered by the
    /// next receive without a syscall. Allocated only when one is kept.
    early: RefCell<Option<Box<Early>>>,
}

/// A datagram received ahead of its turn.
#[derive(Debug)]
struct Early {
    bytes: Vec<u8>,
    from: SocketAddr,
}

/// What one `recvmmsg` brought: the first datagram (in the caller's buffer)
/// and, when the queue held more, the second.
struct Batch {
    len: usize,
    from: SocketAddr,
    second: Option<Box<Early>>,
}

/// The worker's `recvmmsg` headers and the buffers a batch lands in: one
/// set per worker thread rather than per call (every receive runs to
/// completion on the worker, so they are never shared).
struct Scratch {
    headers: MultiHeaders<SockaddrStorage>,
    /// The first datagram's buffer ([`MAX_RECV_DATAGRAM`] bytes).
    first: Vec<u8>,
    spare: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

impl EpollUdp {
    /// Wraps a bound, non-blocking std socket. Must run inside a tokio runtime.
    pub fn from_std(socket: UdpSocket) -> io::Result<Self> {
        Ok(EpollUdp { socket: tokio::net::UdpSocket::from_std(socket)?, early: RefCell::new(None) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Ready once a datagram (or an error) may wait for
    /// [`Self::try_recv_with`].
    pub fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.early.borrow().is_some() {
            return Poll::Ready(Ok(()));
        }
        self.socket.poll_recv_ready(cx)
    }

    /// Receives the next datagram into the worker's buffer and lends it to
    /// `f` (a call holds no receive buffer of its own); `None` when none
    /// was waiting after all.
    pub fn try_recv_with<R>(&self, f: impl FnOnce(&[u8], SocketAddr) -> R) -> Option<io::Result<R>> {
        let early = self.early.borrow_mut().take();
        if let Some(early) = early {
            return Some(Ok(f(&early.bytes, early.from)));
        }
        // Out of the scratch while `f` runs, so `f` may receive too.
        let mut buf = SCRATCH
            .with(|cell| cell.borrow_mut().as_mut().map(|s| std::mem::take(&mut s.first)))
            .unwrap_or_default();
        buf.resize(MAX_RECV_DATAGRAM, 0);
        // tokio clears the socket's readiness when the operation says
        // `WouldBlock`: a batch of one says so (the queue was empty) and
        // hands its datagram out through `alone`.
        let mut alone = None;
        let result = self.socket.try_io(tokio::io::Interest::READABLE, || {
            let batch = recv_batch(&self.socket, &mut buf)?;
            if batch.second.is_some() {
                return Ok(batch);
            }
            alone = Some(batch);
            Err(io::ErrorKind::WouldBlock.into())
        });
        let out = match (result, alone) {
            (_, Some(batch)) | (Ok(batch), None) => {
                *self.early.borrow_mut() = batch.second;
                Some(Ok(f(&buf[..batch.len], batch.from)))
            }
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => None,
            // ICMP errors (port unreachable) come back here; readiness
            // stays, so the datagrams behind one are still read.
            (Err(e), None) => Some(Err(e)),
        };
        SCRATCH.with(|cell| {
            if let Some(scratch) = cell.borrow_mut().as_mut() {
                scratch.first = buf;
            }
        });
        out
    }

    /// Sends `buf` to `target`. A full socket buffer is waited out, which on
    /// UDP means the kernel's send queue, never the peer.
    pub async fn send_to(&self, buf: Vec<u8>, target: SocketAddr) -> SendResult {
        // try first: a datagram socket is almost always writable, and this
        // skips registering interest with the reactor.
        // The wait is polled rather than `send_to(..).await` for the same
        // reason as the receive's: tokio's future is 432 bytes a call.
        let result = match self.socket.try_send_to(&buf, target) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::future::poll_fn(|cx| self.socket.poll_send_to(cx, &buf, target)).await
            }
            other => other,
        };
        (result, buf)
    }
}

/// One `recvmmsg` with room for two datagrams, the first into `buf`.
fn recv_batch(socket: &tokio::net::UdpSocket, buf: &mut [u8]) -> io::Result<Batch> {
    SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        let Scratch { headers, spare, .. } = cell.get_or_insert_with(|| Scratch {
            headers: MultiHeaders::preallocate(2, None),
            first: Vec::new(),
            spare: Vec::new(),
        });
        // The second datagram is truncated exactly as the first would be.
        spare.resize(buf.len(), 0);
        let mut slices = [[IoSliceMut::new(buf)], [IoSliceMut::new(spare)]];
        let mut got = [None; 2];
        let results = recvmmsg(socket.as_raw_fd(), headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        for (slot, message) in got.iter_mut().zip(results) {
            *slot = Some((message.bytes, message.address));
        }
        let Some((len, address)) = got[0] else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let from = address.as_ref().and_then(std_addr).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "a datagram without an IP source address")
        })?;
        let second = got[1].and_then(|(len, address)| {
            let from = address.as_ref().and_then(std_addr)?;
            Some(Box::new(Early { bytes: spare[..len.min(spare.len())].to_vec(), from }))
        });
        Ok(Batch { len: len.min(buf.len()), from, second })
    })
}

/// The standard library's form of an IPv4 or IPv6 socket address.
fn std_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::net::SocketAddr;

    use crate::runtime::{IoBackend, RtpSocket as _, RtpUdp, run_on};

    /// An epoll RTP socket on this thread's runtime, its address, and a
    /// plain socket to send to it from.
    fn socket_and_sender() -> (RtpUdp, SocketAddr, std::net::UdpSocket) {
        let socket = IoBackend::Epoll.bind_rtp("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = socket.local_addr().unwrap();
        (socket, to, std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// Receives `count` datagrams, each within a second, as their first bytes.
    async fn receive(socket: &RtpUdp, count: usize) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 64];
        for _ in 0..count {
            let round = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(buf));
            let (got, back) = round.await.expect("a datagram within a second: none may be stranded");
            let (len, _) = got.unwrap();
            assert_eq!(len, 3);
            seen.push(back[0]);
            buf = back;
        }
        seen
    }

    #[test]
    fn no_datagram_is_stranded_whatever_the_bursts() {
        let result = run_on(IoBackend::Epoll, || async {
            let (socket, to, sender) = socket_and_sender();
            let mut next = 0u8;
            let mut order = Vec::new();
            // Single datagrams (batches of one: readiness cleared), bursts
            // that leave one kept for later, and bursts longer than a batch.
            for burst in [1usize, 2, 3, 1, 5, 4, 1, 7] {
                for _ in 0..burst {
                    sender.send_to(&[next, 0, 0], to).unwrap();
                    next += 1;
                }
                order.extend(receive(&socket, burst).await);
            }
            let none = tokio::time::timeout(Duration::from_millis(50), socket.recv_from(vec![0; 8])).await;
            (order, next, none.is_err())
        });
        let (order, sent, then_nothing) = result;
        assert_eq!(order, (0..sent).collect::<Vec<_>>(), "every datagram, once, in order");
        assert!(then_nothing, "nothing is delivered twice");
    }

    #[test]
    fn a_long_datagram_is_truncated_to_the_buffer_in_either_slot() {
        let result = run_on(IoBackend::Epoll, || async {
            let (socket, to, sender) = socket_and_sender();
            sender.send_to(&[1; 10], to).unwrap();
            sender.send_to(&[2; 10], to).unwrap();
            let mut lens = Vec::new();
            let mut buf = vec![0u8; 4];
            for _ in 0..2 {
                let (got, back) = socket.recv_from(buf).await;
                lens.push((got.unwrap().0, back[0]));
                buf = back;
            }
            lens
        });
        assert_eq!(result, [(4, 1), (4, 2)]);
    }

    #[test]
    fn datagrams_are_lent_whole_up_to_the_limit_both_backends_share() {
        use crate::runtime::MAX_RECV_DATAGRAM;
        let result = run_on(IoBackend::Epoll, || async {
            let (socket, to, sender) = socket_and_sender();
            // Nothing waits: `None`, not an error.
            let nothing = socket.try_recv_with(|bytes, _| bytes.len());
            let mut lens = Vec::new();
            for len in [MAX_RECV_DATAGRAM, MAX_RECV_DATAGRAM + 1, 4000] {
                sender.send_to(&vec![7; len], to).unwrap();
                let lent = loop {
                    std::future::poll_fn(|cx| socket.poll_recv_ready(cx)).await.unwrap();
                    let seen = socket.try_recv_with(|bytes, from| {
                        assert_eq!(from, sender.local_addr().unwrap());
                        assert!(bytes.iter().all(|&b| b == 7));
                        bytes.len()
                    });
                    if let Some(seen) = seen {
                        break seen.unwrap();
                    }
                };
                lens.push(lent);
            }
            (nothing.is_none(), lens)
        });
        let (nothing, lens) = result;
        assert!(nothing);
        assert_eq!(lens, [MAX_RECV_DATAGRAM; 3], "whole up to the limit, cut beyond it");
    }
}
