//! The media socket over a loopback TCP pair, the test playing Twilio's
//! side with hand-built masked frames.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use voxproxy_adapters::websocket::{Opcode, write_client_frame};

use super::*;

const MASK: [u8; 4] = [1, 2, 3, 4];
const WAIT: Duration = Duration::from_secs(5);

/// The socket (server side, `max` bytes per message and `max_write` queued)
/// and the client's end of the connection.
async fn pair(max: usize, max_write: usize) -> (MediaSocket, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (MediaSocket::with_io(Io::Tcp(server), &[], max, max_write), client)
}

fn frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_client_frame(&mut out, true, opcode, MASK, payload);
    out
}

async fn recv(ws: &mut MediaSocket) -> Result<Received, SocketError> {
    tokio::time::timeout(WAIT, ws.recv()).await.expect("a message in time")
}

/// Reads exactly `n` bytes the server sent.
async fn read_n(client: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, client.read_exact(&mut buf)).await.expect("in time").expect("read");
    buf
}

#[tokio::test]
async fn messages_in_one_read_or_split_over_many_come_out_in_place() {
    let (mut ws, mut client) = pair(4096, 8192).await;
    let long = "m".repeat(3000);
    let mut wire = frame(Opcode::Text, b"first");
    wire.extend(frame(Opcode::Text, b"second"));
    wire.extend(frame(Opcode::Text, long.as_bytes()));
    // Written in small pieces: the long message grows the read buffer.
    for piece in wire.chunks(700) {
        client.write_all(piece).await.expect("write");
        tokio::task::yield_now().await;
    }
    for expected in ["first", "second", long.as_str()] {
        assert_eq!(recv(&mut ws).await.expect("message"), Received::Text);
        assert_eq!(ws.payload_mut(), expected.as_bytes());
    }
    // The buffer is back to its usual size for the next message.
    client.write_all(&frame(Opcode::Binary, b"x")).await.expect("write");
    assert_eq!(recv(&mut ws).await.expect("message"), Received::Binary);
    assert_eq!(ws.rbuf.len(), READ_BUFFER);
}

#[tokio::test]
async fn a_ping_is_answered_and_a_close_is_echoed() {
    let (mut ws, mut client) = pair(1024, 8192).await;
    client.write_all(&frame(Opcode::Ping, b"are you there")).await.expect("write");
    assert_eq!(recv(&mut ws).await.expect("ping"), Received::Ping);
    assert!(ws.try_flush().expect("flush"));
    assert_eq!(read_n(&mut client, 15).await, [&[0x8A, 13][..], b"are you there"].concat());

    client.write_all(&frame(Opcode::Close, &[0x03, 0xE8, b'o', b'k'])).await.expect("write");
    assert_eq!(recv(&mut ws).await.expect("close"), Received::Close(Some(1000)));
    // Nothing more goes out after the close reply.
    assert!(!ws.queue_text("late"));
    tokio::time::timeout(WAIT, ws.flush()).await.expect("in time").expect("flush");
    assert_eq!(read_n(&mut client, 4).await, [0x88, 2, 0x03, 0xE8]);
}

#[tokio::test]
async fn an_oversize_frame_is_refused_before_its_payload_arrives() {
    let (mut ws, mut client) = pair(1024, 8192).await;
    let wire = frame(Opcode::Text, &[b'a'; 5000]);
    // Only the header is sent: the refusal cannot wait for the payload.
    client.write_all(&wire[..8]).await.expect("write");
    match recv(&mut ws).await {
        Err(SocketError::Frame(FrameError::TooBig { size: 5000, max: 1024 })) => {}
        other => panic!("expected TooBig, got {other:?}"),
    }
    assert!(ws.rbuf.len() <= READ_BUFFER, "the payload was never buffered");
}

#[tokio::test]
async fn a_connection_that_ends_without_a_close_is_dropped() {
    let (mut ws, client) = pair(1024, 8192).await;
    drop(client);
    assert!(matches!(recv(&mut ws).await, Err(SocketError::Dropped)));
}

#[tokio::test]
async fn queued_bytes_are_bounded_while_the_peer_does_not_read() {
    let (mut ws, _client) = pair(1024, 8192).await;
    let message = "x".repeat(400);
    let mut queued = 0usize;
    let mut refused = 0usize;
    // The client never reads: its receive window and the server's send
    // buffer fill, then the socket's own bound refuses media.
    for _ in 0..20_000 {
        if ws.queue_text(&message) {
            queued += 1;
        } else {
            refused += 1;
        }
        let _ = ws.try_flush().expect("no error while merely blocked");
        if refused > 10 {
            break;
        }
    }
    assert!(refused > 10, "nothing refused after {queued} messages");
    assert!(ws.is_blocked());
    assert!(ws.wbuf.len() - ws.written <= 8192, "queued past the bound");
    // A close still goes in past the bound.
    ws.queue_close(1000, "call ended");
    assert!(ws.wbuf.ends_with(b"call ended"));
}

#[tokio::test]
async fn a_socket_between_messages_holds_no_buffers_and_reuses_the_workers_spares() {
    use futures_util::FutureExt as _;
    let (mut ws, mut client) = pair(1024, 8192).await;
    for round in 0..3 {
        client.write_all(&frame(Opcode::Text, b"media")).await.expect("write");
        assert_eq!(recv(&mut ws).await.expect("message"), Received::Text);
        assert_eq!(ws.payload_mut(), b"media", "the payload stays until the next read");
        assert!(ws.queue_text("mark"));
        assert!(ws.try_flush().expect("flush"));
        assert_eq!(ws.wbuf.capacity(), 0, "round {round}: the sent frames' buffer is a spare again");
        assert_eq!(read_n(&mut client, 6).await, [&[0x81, 4][..], b"mark"].concat());
        // Waiting for the next message, with nothing read: no read buffer.
        assert!(ws.recv().now_or_never().is_none());
        assert_eq!(ws.rbuf.capacity(), 0, "round {round}: the read buffer is a spare while waiting");
        // This thread's spares hold the two, ready for the next message.
        let spares = SPARE.with_borrow(|spare| (spare.read.len(), spare.write.len()));
        assert!(spares.0 >= 1 && spares.1 >= 1, "{spares:?}");
    }
    // A frame cut across reads keeps its buffer while the rest is awaited.
    let wire = frame(Opcode::Text, b"cut in two");
    client.write_all(&wire[..5]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(ws.recv().now_or_never().is_none());
    assert!(ws.rbuf.len() >= READ_BUFFER, "the first part waits in the buffer");
    client.write_all(&wire[5..]).await.expect("write");
    assert_eq!(recv(&mut ws).await.expect("message"), Received::Text);
    assert_eq!(ws.payload_mut(), b"cut in two");
}
