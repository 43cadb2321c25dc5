//! The epoll backend's UDP socket: tokio's readiness-based socket behind the
//! owned-buffer [`RtpSocket`](super::RtpSocket) interface.

use std::io;
use std::net::SocketAddr;

use super::{RecvResult, SendResult};

/// A UDP socket on tokio's epoll reactor.
#[derive(Debug)]
pub struct EpollUdp {
    socket: tokio::net::UdpSocket,
}

impl EpollUdp {
    /// Wraps a bound, non-blocking std socket. Must run inside a tokio runtime.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Self> {
        Ok(EpollUdp { socket: tokio::net::UdpSocket::from_std(socket)? })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram into `buf` (its whole length is usable).
    pub async fn recv_from(&self, mut buf: Vec<u8>) -> RecvResult {
        let result = self.socket.recv_from(&mut buf).await;
        (result, buf)
    }

    /// Sends `buf` to `target`. A full socket buffer is waited out, which on
    /// UDP means the kernel's send queue, never the peer.
    pub async fn send_to(&self, buf: Vec<u8>, target: SocketAddr) -> SendResult {
        // try first: a datagram socket is almost always writable, and this
        // skips registering interest with the reactor.
        let result = match self.socket.try_send_to(&buf, target) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.send_to(&buf, target).await,
            other => other,
        };
        (result, buf)
    }
}
