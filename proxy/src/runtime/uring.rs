//! The io_uring backend's UDP socket: tokio-uring's completion-based socket,
//! whose operations own their buffers until the kernel is done with them.

use std::io;
use std::net::SocketAddr;

use super::{RecvResult, SendResult};

/// A UDP socket whose receives and sends go through the worker's io_uring.
pub struct UringUdp {
    socket: tokio_uring::net::UdpSocket,
}

impl std::fmt::Debug for UringUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringUdp").field("local_addr", &self.socket.local_addr().ok()).finish()
    }
}

impl UringUdp {
    /// Wraps a bound std socket. Must run on a tokio-uring runtime.
    #[must_use]
    pub fn from_std(socket: std::net::UdpSocket) -> Self {
        UringUdp { socket: tokio_uring::net::UdpSocket::from_std(socket) }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram into `buf` (its whole length is usable).
    pub async fn recv_from(&self, buf: Vec<u8>) -> RecvResult {
        self.socket.recv_from(buf).await
    }

    /// Sends all of `buf` to `target`.
    pub async fn send_to(&self, buf: Vec<u8>, target: SocketAddr) -> SendResult {
        self.socket.send_to(buf, target).await
    }
}
