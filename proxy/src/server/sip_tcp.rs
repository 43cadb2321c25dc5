//! The TCP side of `sip.listen`: one task per connection cuts its byte
//! stream into messages (`StreamFramer`, `Content-Length` framing) for the
//! listener's TCP server, and writes what that server sends back to the
//! peer. Bounded: `sip.max_tcp_connections` in all, [`MAX_PER_ADDRESS`] per
//! source address, [`IDLE`] without a byte closes one, [`WRITE_QUEUE`]
//! messages may wait for a slow peer (more are dropped), and a stream
//! that cannot be framed (oversize, malformed) is closed and counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use voxproxy_adapters::sip::StreamFramer;

/// TCP connections from one address.
pub(super) const MAX_PER_ADDRESS: usize = 8;
/// A connection without a byte for this long is closed (a PBX reconnects).
pub(super) const IDLE: Duration = Duration::from_secs(600);
/// Messages waiting to be written to one peer.
pub(super) const WRITE_QUEUE: usize = 32;
/// How long one message may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages from all connections waiting for the listener.
const INPUT_QUEUE: usize = 256;
/// Bytes read at once.
const READ_CHUNK: usize = 4096;

/// What a connection task tells the listener.
#[derive(Debug)]
pub(super) enum Input {
    /// One whole message from `peer`.
    Message(SocketAddr, Vec<u8>),
    /// The connection to `peer` closed.
    Closed(SocketAddr),
    /// A connection was closed because its stream could not be framed.
    Unframed,
}

/// The open connections, by peer address.
#[derive(Debug)]
pub(super) struct Connections {
    /// `sip.max_tcp_connections`.
    max: usize,
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    per_address: HashMap<IpAddr, usize>,
    tx: mpsc::Sender<Input>,
    rx: mpsc::Receiver<Input>,
}

impl Connections {
    /// At most `max` connections at once (`sip.max_tcp_connections`).
    pub(super) fn new(max: usize) -> Connections {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        Connections { max, writers: HashMap::new(), per_address: HashMap::new(), tx, rx }
    }

    /// Takes a new connection, or refuses it (`false`, the stream dropped)
    /// when it is over the bounds.
    pub(super) fn open(&mut self, stream: TcpStream, peer: SocketAddr) -> bool {
        let from_peer = self.per_address.get(&peer.ip()).copied().unwrap_or(0);
        if self.writers.len() >= self.max || from_peer >= MAX_PER_ADDRESS {
            return false;
        }
        let _ = stream.set_nodelay(true);
        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        self.writers.insert(peer, out_tx);
        *self.per_address.entry(peer.ip()).or_insert(0) += 1;
        tokio::task::spawn_local(serve(stream, peer, self.tx.clone(), out_rx));
        true
    }

    /// The next input from any connection.
    pub(super) async fn recv(&mut self) -> Option<Input> {
        self.rx.recv().await
    }

    /// Forgets a closed connection.
    pub(super) fn closed(&mut self, peer: SocketAddr) {
        if self.writers.remove(&peer).is_some()
            && let Some(n) = self.per_address.get_mut(&peer.ip())
        {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&peer.ip());
            }
        }
    }

    /// Queues a message for `peer`; dropped when its connection is gone or
    /// its queue is full (the PBX's transaction then times out).
    pub(super) fn send(&mut self, peer: SocketAddr, bytes: Vec<u8>) {
        match self.writers.get(&peer) {
            Some(writer) if writer.try_send(bytes).is_ok() => {}
            _ => tracing::debug!(%peer, "SIP over TCP: no open connection with room; message dropped"),
        }
    }
}

/// One connection: framed messages in, queued messages out.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tx: mpsc::Sender<Input>,
    mut out: mpsc::Receiver<Vec<u8>>,
) {
    let (mut read, mut write) = stream.into_split();
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            read = tokio::time::timeout(IDLE, read.read(&mut buf)) => {
                let n = match read {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                if !deliver(&mut framer, &buf[..n], peer, &tx).await {
                    break;
                }
            }
            bytes = out.recv() => {
                let Some(bytes) = bytes else { break };
                if !matches!(tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Input::Closed(peer)).await;
}

/// Frames `bytes` and hands every whole message on; `false` when the
/// stream cannot be framed (or the listener is gone): close it.
async fn deliver(
    framer: &mut StreamFramer,
    bytes: &[u8],
    peer: SocketAddr,
    tx: &mpsc::Sender<Input>,
) -> bool {
    if framer.push(bytes).is_err() {
        let _ = tx.send(Input::Unframed).await;
        return false;
    }
    loop {
        match framer.next_message() {
            Ok(Some(message)) => {
                if tx.send(Input::Message(peer, message.to_bytes())).await.is_err() {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(_) => {
                let _ = tx.send(Input::Unframed).await;
                return false;
            }
        }
    }
}
