//! The io_uring backend's UDP socket: tokio-uring's completion-based socket,
//! whose operations own their buffers until the kernel is done with them.
//!
//! Receives go through the ring. A send is first tried as a plain
//! non-blocking `sendto` on the same socket: tokio-uring hands queued
//! operations to the kernel only when the worker runs out of ready tasks,
//! so under load a send through the ring waits up to one full pass over the
//! worker's calls, while `sendto` leaves at once. Only when the kernel's
//! send buffer is full does the send go through the ring and wait there.

use std::io;
use std::net::SocketAddr;

use super::{RecvResult, SendResult};

/// A UDP socket whose receives and sends go through the worker's io_uring.
pub struct UringUdp {
    socket: tokio_uring::net::UdpSocket,
    /// The same socket, for immediate non-blocking sends.
    direct: std::net::UdpSocket,
}

impl std::fmt::Debug for UringUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringUdp").field("local_addr", &self.socket.local_addr().ok()).finish()
    }
}

impl UringUdp {
    /// Wraps a bound, non-blocking std socket. Must run on a tokio-uring runtime.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Self> {
        let direct = socket.try_clone()?;
        Ok(UringUdp { socket: tokio_uring::net::UdpSocket::from_std(socket), direct })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram into `buf` (its whole length is usable).
    pub async fn recv_from(&self, buf: Vec<u8>) -> RecvResult {
        self.socket.recv_from(buf).await
    }

    /// Sends all of `buf` to `target`: at once when the socket can take it,
    /// through the ring when it cannot.
    pub async fn send_to(&self, buf: Vec<u8>, target: SocketAddr) -> SendResult {
        match self.direct.send_to(&buf, target) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.send_to(buf, target).await,
            result => (result, buf),
        }
    }
}
