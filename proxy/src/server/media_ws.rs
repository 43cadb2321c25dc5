//! The media WebSocket after its upgrade: frames read and written by the
//! sans-IO [`voxproxy_adapters::websocket`] codec in two buffers the socket
//! borrows from its worker's spares while bytes wait in them (between
//! messages it holds none), on the TCP stream itself when the connection
//! is plain (hyper hands it back), so a media message costs no allocation
//! and no copy beyond the socket's own reads and writes.
//!
//! What tungstenite 0.30 did for the call before (its source and the
//! call's `WebSocketConfig`): a 4 KiB read buffer and a growing write buffer
//! per call, an allocation per message out, and two adapter layers (hyper's
//! boxed upgrade, tokio's I/O traits) around every read and write. The
//! numbers this change measured are in docs/capacity/rounds.md (*Memory and
//! user CPU, the media WebSocket round*).
//!
//! Pings are answered and a close is echoed here (RFC 6455 §5.5); the
//! writes wait in the write buffer for the caller's next flush, which
//! never blocks the call ([`MediaSocket::try_flush`]); at most
//! `max_write` bytes wait, then media messages are refused (dropped and
//! counted by the caller), while control frames still go. On an io_uring
//! worker the frames are written straight into the bytes the ring's
//! stream has waiting to be sent (they leave with the turn's other sends),
//! so that socket has no write buffer and a frame out is not copied again.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::runtime::{Spares, UringTcp};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use voxproxy_adapters::websocket::{self, Decoder, FrameError, Kind, Opcode, Payload};

/// Bytes read at a time: a media message is about 380, so this holds one
/// and the start of the next (every byte here is memory per call; two
/// messages arrive together only in a burst, and then the next read takes
/// the rest). A longer message grows the buffer, up to
/// `limits.max_frame_bytes` and a header, and it shrinks back after.
const READ_BUFFER: usize = 512;
/// What the write buffer starts with and shrinks back to after a slow
/// Twilio made it grow: one media message and its header.
const WRITE_BUFFER: usize = 512;
/// Spare buffers kept per worker thread, of each kind; more are freed.
const SPARE_KEPT: usize = 256;

/// The worker thread's spare read and write buffers. A media socket holds
/// one only while bytes wait in it (a frame partly read or not yet taken by
/// the call, frames not yet sent): between Twilio's messages, where a call
/// spends nearly all its time, it holds neither. Kept per call, the two
/// were 1 KiB of every call's memory; here they are as many as the worker's
/// calls have in use at once. A read buffer is kept at its full length
/// (reads go into initialized bytes), a write buffer empty.
/// What a burst left is freed by [`trim_spares`].
struct Spare {
    read: Spares<SPARE_KEPT>,
    write: Spares<SPARE_KEPT>,
}

thread_local! {
    static SPARE: std::cell::RefCell<Spare> =
        const { std::cell::RefCell::new(Spare { read: Spares::new(), write: Spares::new() }) };
}

/// Frees this worker thread's spare buffers that no media socket took
/// since the last call: a stall that had many sockets holding buffers at
/// once would otherwise leave them spare for the worker's life (a step in
/// resident memory). The worker's heartbeat calls it every second.
pub(crate) fn trim_spares() {
    SPARE.with_borrow_mut(|spare| {
        spare.read.trim();
        spare.write.trim();
    });
}

/// A read buffer of [`READ_BUFFER`] bytes: a spare one, else a new one.
fn take_read_buffer() -> Vec<u8> {
    SPARE.with_borrow_mut(|spare| spare.read.take()).unwrap_or_else(|| vec![0; READ_BUFFER])
}

/// An empty write buffer with room for [`WRITE_BUFFER`] bytes.
fn take_write_buffer() -> Vec<u8> {
    SPARE.with_borrow_mut(|spare| spare.write.take()).unwrap_or_else(|| Vec::with_capacity(WRITE_BUFFER))
}

/// Gives a socket's read buffer to the spares, unless it is not the usual
/// size (grown by a long message) or enough are spare.
fn give_back_read(buf: Vec<u8>) {
    if buf.len() == READ_BUFFER {
        SPARE.with_borrow_mut(|spare| spare.read.give(buf));
    }
}

/// Gives a write buffer to the spares, emptied and (after a burst) shrunk
/// back, as for [`give_back_read`].
fn give_back_write(mut buf: Vec<u8>) {
    buf.clear();
    if buf.capacity() > WRITE_BUFFER {
        buf.shrink_to(WRITE_BUFFER);
    }
    if buf.capacity() >= WRITE_BUFFER {
        SPARE.with_borrow_mut(|spare| spare.write.give(buf));
    }
}

/// The connection under the WebSocket.
enum Io {
    /// Plain TCP, taken back from hyper: reads and writes go straight to it.
    Tcp(TcpStream),
    /// Plain TCP on an io_uring worker: through the worker's ring, which
    /// holds the frames waiting to be sent (the socket's own write buffer
    /// stays empty).
    Ring(UringTcp),
    /// Anything else hyper upgraded (TLS), through hyper's boxed stream.
    Upgraded(TokioIo<Upgraded>),
    /// The connection was lost moving it to the ring; every use says why.
    Lost(io::ErrorKind),
}

impl Io {
    /// Plain TCP: on the worker's io_uring when it has one, else as it is.
    fn tcp(tcp: TcpStream) -> Io {
        match UringTcp::from_tokio(tcp) {
            Ok(Ok(ring)) => Io::Ring(ring),
            Ok(Err(tcp)) => Io::Tcp(tcp),
            Err(e) => {
                tracing::warn!(error = %e, "WebSocket connection lost moving it to io_uring");
                Io::Lost(e.kind())
            }
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Ring(ring) => {
                let n = ready!(ring.poll_read(cx, buf.initialize_unfilled()))?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Io::Upgraded(up) => Pin::new(up).poll_read(cx, buf),
            Io::Lost(kind) => Poll::Ready(Err(lost(*kind))),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Io::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Ring(ring) => ring.poll_write(cx, buf),
            Io::Upgraded(up) => Pin::new(up).poll_write(cx, buf),
            Io::Lost(kind) => Poll::Ready(Err(lost(*kind))),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Ring(ring) => ring.poll_flush(cx),
            Io::Upgraded(up) => Pin::new(up).poll_flush(cx),
            Io::Lost(kind) => Poll::Ready(Err(lost(*kind))),
        }
    }
}

/// Lets `f` append frames where they wait to be sent, given how many
/// bytes wait beyond what the connection has taken: the ring's stream on
/// io_uring (which takes [`UringTcp::SEND_BUFFER`] bytes, as a socket's
/// send buffer would), else `wbuf` (of which `written` are sent). `None`
/// when the ring's stream takes no more (closed, or a send failed: the
/// next flush says which).
fn write_frames<R>(
    io: &mut Io,
    wbuf: &mut Vec<u8>,
    written: usize,
    f: impl FnOnce(&mut Vec<u8>, usize) -> R,
) -> Option<R> {
    match io {
        Io::Ring(ring) => ring.write_with(|pending| {
            let waiting = pending.len().saturating_sub(UringTcp::SEND_BUFFER);
            f(pending, waiting)
        }),
        _ => {
            if wbuf.capacity() == 0 {
                *wbuf = take_write_buffer();
            }
            Some(f(wbuf, wbuf.len() - written))
        }
    }
}

fn lost(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, "the connection was lost moving it to io_uring")
}

/// Why the media WebSocket cannot be read any more.
#[derive(Debug)]
#[non_exhaustive]
pub enum SocketError {
    /// Reading or writing the connection failed.
    Io(io::Error),
    /// The connection ended without a close frame.
    Dropped,
    /// The peer broke RFC 6455 or a size limit; answer with the error's close code.
    Frame(FrameError),
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::Io(e) => write!(f, "WebSocket connection failed: {e}"),
            SocketError::Dropped => f.write_str("WebSocket connection ended without a close frame"),
            SocketError::Frame(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SocketError {}

/// A message read from the peer; its payload is [`MediaSocket::payload_mut`]
/// until the next read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text,
    /// A binary message.
    Binary,
    /// A ping; the pong is queued.
    Ping,
    /// A pong.
    Pong,
    /// The peer's close, with its code; the reply is queued and nothing
    /// more is read.
    Close(Option<u16>),
}

/// What [`MediaSocket::ready`] found.
#[derive(Debug)]
pub enum Ready {
    /// A message, or why nothing more can be read.
    Read(Result<Received, SocketError>),
    /// Everything queued has been written (`Ok`), or the write failed.
    Flushed(io::Result<()>),
}

/// One media WebSocket, server side.
pub struct MediaSocket {
    io: Io,
    /// Read bytes: `head..tail` are not decoded yet. Always initialized, so
    /// reads go into it without unsafe code. Empty (a spare's, given back)
    /// while the socket waits with nothing read.
    rbuf: Vec<u8>,
    head: usize,
    tail: usize,
    /// Input bytes of the last message, dropped at the next read.
    consumed: usize,
    /// Where the last message's payload is.
    payload: Payload,
    /// A fragmented message being assembled (rare: Twilio sends one frame per message).
    message: Vec<u8>,
    decoder: Decoder,
    /// Frames queued to send; `written..` of them not yet sent. A spare's
    /// while frames wait, none once they are sent; unused on io_uring,
    /// where frames are written into the ring's stream.
    wbuf: Vec<u8>,
    written: usize,
    max_write: usize,
    close_sent: bool,
    close_received: bool,
}

impl MediaSocket {
    /// The socket over an upgraded connection: plain TCP is taken back from
    /// hyper (with any bytes it had read ahead), TLS stays in hyper's stream.
    pub fn new(upgraded: Upgraded, max_message: usize, max_write: usize) -> MediaSocket {
        let (io, ahead) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Io::tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (Io::Upgraded(TokioIo::new(upgraded)), bytes::Bytes::new()),
        };
        MediaSocket::with_io(io, &ahead, max_message, max_write)
    }

    fn with_io(io: Io, ahead: &[u8], max_message: usize, max_write: usize) -> MediaSocket {
        let rbuf = if ahead.is_empty() {
            Vec::new()
        } else {
            let mut rbuf = vec![0u8; READ_BUFFER.max(ahead.len())];
            rbuf[..ahead.len()].copy_from_slice(ahead);
            rbuf
        };
        MediaSocket {
            io,
            rbuf,
            head: 0,
            tail: ahead.len(),
            consumed: 0,
            payload: Payload::Input(0..0),
            message: Vec::new(),
            decoder: Decoder::new(max_message),
            wbuf: Vec::new(),
            written: 0,
            max_write,
            close_sent: false,
            close_received: false,
        }
    }

    /// The payload of the last message read: a text or binary message's
    /// bytes, a ping's data, or a close frame's reason.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        match &self.payload {
            Payload::Input(range) => &mut self.rbuf[range.clone()],
            Payload::Assembled => &mut self.message,
        }
    }

    /// Whether queued bytes are waiting for the connection to take them
    /// (never on io_uring: the ring's stream takes every frame queued).
    pub fn is_blocked(&self) -> bool {
        self.written < self.wbuf.len()
    }

    /// Queues a text message; `false` (nothing queued) when it would take
    /// the waiting bytes past the bound, or the close was already sent.
    pub fn queue_text(&mut self, text: &str) -> bool {
        self.queue(Opcode::Text, text.as_bytes())
    }

    /// Queues an empty ping (the keep-alive); `false` as for [`Self::queue_text`].
    pub fn queue_ping(&mut self) -> bool {
        self.queue(Opcode::Ping, &[])
    }

    /// Queues a close frame once (later calls do nothing), past the bound:
    /// the peer must learn why.
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        if !self.close_sent {
            self.close_sent = true;
            write_frames(&mut self.io, &mut self.wbuf, self.written, |out, _| {
                websocket::write_close(out, code, reason);
            });
        }
    }

    fn queue(&mut self, opcode: Opcode, payload: &[u8]) -> bool {
        if self.close_sent {
            return false;
        }
        let max_write = self.max_write;
        write_frames(&mut self.io, &mut self.wbuf, self.written, |out, waiting| {
            let fits = waiting + websocket::MAX_HEADER + payload.len() <= max_write;
            if fits {
                websocket::write_frame(out, opcode, payload);
            }
            fits
        })
        .unwrap_or(false)
    }

    /// Writes what the connection takes now without waiting: `Ok(true)`
    /// when nothing is left queued.
    pub fn try_flush(&mut self) -> io::Result<bool> {
        let waker = std::task::Waker::noop();
        match self.poll_flush(&mut Context::from_waker(waker)) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(false),
        }
    }

    /// Writes everything queued, waiting for the connection as long as it takes.
    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// The next message when `reading`, or the end of a blocked write when
    /// `writing`: whichever comes first (one future, so the call's loop
    /// waits on the socket once). Pends forever when neither is wanted.
    pub async fn ready(&mut self, reading: bool, writing: bool) -> Ready {
        poll_fn(|cx| {
            if writing
                && self.is_blocked()
                && let Poll::Ready(result) = self.poll_flush(cx)
            {
                return Poll::Ready(Ready::Flushed(result));
            }
            if reading && !self.close_received {
                return self.poll_recv(cx).map(Ready::Read);
            }
            Poll::Pending
        })
        .await
    }

    /// The next message (cancel-safe: every byte read stays in the buffer).
    #[cfg(test)]
    pub async fn recv(&mut self) -> Result<Received, SocketError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.wbuf.len() {
            let n = ready!(self.io.poll_write(cx, &self.wbuf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        if self.wbuf.capacity() > 0 {
            give_back_write(std::mem::take(&mut self.wbuf));
        }
        self.io.poll_flush(cx)
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, SocketError>> {
        loop {
            self.head += std::mem::take(&mut self.consumed);
            if let Some(received) = self.decode_next().map_err(SocketError::Frame)? {
                return Poll::Ready(Ok(received));
            }
            self.make_room();
            let mut buf = ReadBuf::new(&mut self.rbuf[self.tail..]);
            let read = self.io.poll_read(cx, &mut buf);
            let n = buf.filled().len();
            if read.is_pending() && self.head == self.tail {
                // Nothing waits in the buffer: a spare until bytes arrive.
                (self.head, self.tail) = (0, 0);
                give_back_read(std::mem::take(&mut self.rbuf));
                return Poll::Pending;
            }
            ready!(read).map_err(SocketError::Io)?;
            if n == 0 {
                return Poll::Ready(Err(SocketError::Dropped));
            }
            self.tail += n;
        }
    }

    /// The next complete message in the buffer, answering pings and closes.
    fn decode_next(&mut self) -> Result<Option<Received>, FrameError> {
        loop {
            let Some(decoded) =
                self.decoder.decode(&mut self.rbuf[self.head..self.tail], &mut self.message)?
            else {
                return Ok(None);
            };
            let at = self.head;
            self.consumed = decoded.consumed;
            self.payload = match decoded.payload {
                Payload::Input(range) => Payload::Input(at + range.start..at + range.end),
                Payload::Assembled => Payload::Assembled,
            };
            let received = match decoded.kind {
                Kind::Fragment => {
                    self.head += std::mem::take(&mut self.consumed);
                    continue;
                }
                Kind::Text => Received::Text,
                Kind::Binary => Received::Binary,
                Kind::Pong => Received::Pong,
                Kind::Ping => {
                    // A peer that pings but does not read gets no more
                    // pongs once the bound is reached (one answering the
                    // latest ping is enough, RFC 6455 §5.5.3).
                    if !self.close_sent {
                        let (max_write, data) = (self.max_write, &self.rbuf[self.input_range()]);
                        write_frames(&mut self.io, &mut self.wbuf, self.written, |out, waiting| {
                            if waiting <= max_write {
                                websocket::write_frame(out, Opcode::Pong, data);
                            }
                        });
                    }
                    Received::Ping
                }
                Kind::Close(code) => {
                    self.close_received = true;
                    // Echo the code (RFC 6455 §5.5.1); an empty close gets an empty one.
                    if !self.close_sent {
                        self.close_sent = true;
                        write_frames(&mut self.io, &mut self.wbuf, self.written, |out, _| match code {
                            Some(code) => websocket::write_close(out, code, ""),
                            None => websocket::write_frame(out, Opcode::Close, &[]),
                        });
                    }
                    Received::Close(code)
                }
            };
            return Ok(Some(received));
        }
    }

    fn input_range(&self) -> Range<usize> {
        match &self.payload {
            Payload::Input(range) => range.clone(),
            Payload::Assembled => 0..0,
        }
    }

    /// Room to read into: the undecoded bytes moved to the front, and the
    /// buffer grown to hold the frame they start (bounded by the decoder's
    /// limit, which refuses longer frames from their header), or shrunk
    /// back once a long one is gone.
    fn make_room(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = take_read_buffer();
        }
        let pending = self.tail - self.head;
        if self.head > 0 {
            self.rbuf.copy_within(self.head..self.tail, 0);
            (self.head, self.tail) = (0, pending);
        }
        let needed = self.decoder.frame_len(&self.rbuf[..pending]).unwrap_or(0).max(pending + 1);
        if needed > self.rbuf.len() {
            self.rbuf.resize(needed.max(READ_BUFFER), 0);
        } else if self.rbuf.len() > READ_BUFFER && needed <= READ_BUFFER {
            self.rbuf.truncate(READ_BUFFER);
            self.rbuf.shrink_to_fit();
        }
    }
}

impl Drop for MediaSocket {
    /// The buffers go to the worker's spares for the next call.
    fn drop(&mut self) {
        give_back_read(std::mem::take(&mut self.rbuf));
        give_back_write(std::mem::take(&mut self.wbuf));
    }
}

#[cfg(test)]
#[path = "media_ws_tests.rs"]
mod tests;
