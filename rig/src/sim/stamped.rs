//! A TCP stream that remembers when the kernel received what it reads.
//!
//! The round trip the simulator measures ends when its own task handles a
//! frame. On a loaded rig core that can be well after the frame reached the
//! simulator's socket: the wait is the rig's, not the proxy's. With
//! `SO_TIMESTAMPNS` the kernel stamps each segment as it arrives, and every
//! read here (a `recvmsg`) keeps the stamp of the latest segment it took.
//! [`Arrival::wait`] is then how long the newest bytes read had waited for
//! the simulator, which the caller takes off the round trip to see what the
//! proxy and the network took. When a read takes several messages it
//! understates the wait of the earlier ones: a lower bound.
//!
//! A kernel that does not stamp (or a stamp from before the read) leaves
//! [`Arrival::wait`] at `None`, and the plain round trip stands.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, sockopt};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A [`TcpStream`] whose reads keep the kernel's receive stamp; see the
/// [module docs](self).
#[derive(Debug)]
pub struct StampedTcp {
    tcp: TcpStream,
    arrival: Arrival,
}

/// When the kernel received the bytes of the latest read, shared with the
/// stream's reader. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Arrival {
    /// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`, the stamps'
    /// clock); 0 before the first stamped read.
    nanos: Arc<AtomicU64>,
}

impl Arrival {
    /// How long ago, by `now`, the kernel received the newest bytes read;
    /// `None` without a stamp or if the stamp lies ahead of `now`.
    #[must_use]
    pub fn wait(&self, now: SystemTime) -> Option<Duration> {
        waited(self.nanos.load(Ordering::Relaxed), now)
    }

    fn set(&self, nanos: u64) {
        self.nanos.store(nanos, Ordering::Relaxed);
    }
}

/// How long before `now` the kernel stamped something at `stamp`
/// (nanoseconds since the Unix epoch, the stamps' clock); `None` for no
/// stamp (0) or a stamp ahead of `now`.
#[must_use]
pub fn waited(stamp: u64, now: SystemTime) -> Option<Duration> {
    if stamp == 0 {
        return None;
    }
    now.duration_since(UNIX_EPOCH + Duration::from_nanos(stamp)).ok()
}

impl StampedTcp {
    /// Wraps `tcp`, asking the kernel to stamp what it receives. If it
    /// refuses, reads still work and [`Arrival::wait`] stays `None`.
    #[must_use]
    pub fn new(tcp: TcpStream) -> Self {
        let _ = socket::setsockopt(&tcp, sockopt::ReceiveTimestampns, &true);
        StampedTcp { tcp, arrival: Arrival::default() }
    }

    /// The reader's view of the latest read's stamp.
    #[must_use]
    pub fn arrival(&self) -> Arrival {
        self.arrival.clone()
    }

    /// One `recvmsg` into `into`: the bytes read and the stamp, if any.
    fn recv(&self, into: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [IoSliceMut::new(into)];
        let msg = socket::recvmsg::<()>(self.tcp.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let mut stamp = None;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                let nanos = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
                stamp = u64::try_from(nanos).ok().filter(|&n| n > 0);
            }
        }
        Ok((msg.bytes, stamp))
    }
}

impl AsyncRead for StampedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match this.tcp.try_io(Interest::READABLE, || this.recv(unfilled)) {
                Ok((n, stamp)) => {
                    if let Some(nanos) = stamp {
                        this.arrival.set(nanos);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for StampedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_read_keeps_when_the_kernel_received_its_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut stamped = StampedTcp::new(client.unwrap());
        let (mut server, _) = server.unwrap();
        let arrival = stamped.arrival();
        assert_eq!(arrival.wait(SystemTime::now()), None, "nothing read yet");

        // Stamping switches on in the kernel a moment after it is first
        // asked for (a deferred static key), so give it time.
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.write_all(b"hello").await.unwrap();
        // The bytes sit in the socket while the reader is busy elsewhere.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), stamped.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"hello");
        let wait = arrival.wait(SystemTime::now()).expect("Linux stamps TCP segments");
        assert!(wait >= Duration::from_millis(25) && wait < Duration::from_secs(5), "{wait:?}");

        stamped.write_all(b"back").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back", "writes pass straight through");
    }

    #[test]
    fn a_stamp_ahead_of_now_is_no_wait() {
        let arrival = Arrival::default();
        let ahead = SystemTime::now() + Duration::from_secs(60);
        arrival.set(ahead.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
        assert_eq!(arrival.wait(SystemTime::now()), None);
    }
}
