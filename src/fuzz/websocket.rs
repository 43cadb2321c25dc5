//! Fuzz entry point: the media WebSocket's frame decoder.

use voxproxy_adapters::websocket::{Decoder, Kind, Opcode, Payload, write_client_frame};

/// WebSocket frames from a hostile client. The first byte picks the size
/// limit, the second the read size; the rest is the wire, fed in reads of
/// that size as a socket would. Whatever decodes must stay within the
/// limit and the input, text must be UTF-8, and every message decoded must
/// decode the same once written again as one frame.
pub fn websocket_frames(data: &[u8]) {
    let [limit, read, wire @ ..] = data else { return };
    let max = usize::from(*limit) * 16;
    let read = usize::from(*read).max(1);
    let mut decoder = Decoder::new(max);
    let (mut buffer, mut message) = (Vec::new(), Vec::new());
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buffer, &mut message) {
            Ok(Some(decoded)) => {
                assert!(decoded.consumed > 0 && decoded.consumed <= buffer.len(), "consumed out of range");
                assert!(message.len() <= max, "assembled past the limit");
                let payload = match &decoded.payload {
                    Payload::Input(range) => {
                        assert!(range.end <= decoded.consumed, "payload outside its frame");
                        buffer[range.clone()].to_vec()
                    }
                    Payload::Assembled => message.clone(),
                };
                round_trip(decoded.kind, &payload, max);
                buffer.drain(..decoded.consumed);
            }
            Ok(None) if fed < wire.len() => {
                let n = read.min(wire.len() - fed);
                buffer.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// A decoded message written again as one masked frame decodes the same.
fn round_trip(kind: Kind, payload: &[u8], max: usize) {
    let opcode = match kind {
        Kind::Text => {
            assert!(core::str::from_utf8(payload).is_ok(), "text that is not UTF-8");
            Opcode::Text
        }
        Kind::Binary => Opcode::Binary,
        Kind::Ping => Opcode::Ping,
        Kind::Pong => Opcode::Pong,
        Kind::Close(_) | Kind::Fragment => return,
    };
    let mut frame = Vec::new();
    write_client_frame(&mut frame, true, opcode, [9, 8, 7, 6], payload);
    let mut message = Vec::new();
    let again = Decoder::new(max).decode(&mut frame, &mut message).expect("a decoded message re-encodes");
    let again = again.expect("one whole frame");
    let Payload::Input(range) = again.payload else { panic!("one frame is not assembled") };
    assert_eq!((again.kind, &frame[range]), (kind, payload));
}
