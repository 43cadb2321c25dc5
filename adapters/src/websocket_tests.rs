//! The frame decoder against hand-built client frames, and proptests: any
//! messages, fragmented any way and read in any pieces, come out whole.

use proptest::prelude::*;

use super::*;

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

fn client(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_client_frame(&mut out, fin, opcode, MASK, payload);
    out
}

/// The payload of what `decode` returned.
fn payload<'a>(decoded: &Decoded, input: &'a [u8], message: &'a [u8]) -> &'a [u8] {
    match &decoded.payload {
        Payload::Input(range) => &input[range.clone()],
        Payload::Assembled => message,
    }
}

/// The first message of `input` (past any fragments), and the input it used.
fn decode_one(input: &mut [u8], max: usize) -> Result<Option<(Kind, Vec<u8>, usize)>, FrameError> {
    let mut message = Vec::new();
    let mut decoder = Decoder::new(max);
    let mut at = 0;
    loop {
        let Some(d) = decoder.decode(&mut input[at..], &mut message)? else { return Ok(None) };
        at += d.consumed;
        if d.kind != Kind::Fragment {
            return Ok(Some((d.kind, payload(&d, &input[at - d.consumed..], &message).to_vec(), at)));
        }
    }
}

#[test]
fn the_rfc_examples_decode() {
    // RFC 6455 §5.7: a masked "Hello".
    let mut input = vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(decode_one(&mut input, 1024), Ok(Some((Kind::Text, b"Hello".to_vec(), 11))));
    // An unmasked "Hello" from a client is refused.
    let mut input = vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(decode_one(&mut input, 1024), Err(FrameError::Unmasked));
    // A server's unmasked frames are what write_frame produces.
    let mut out = Vec::new();
    write_frame(&mut out, Opcode::Text, b"Hello");
    assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
}

#[test]
fn lengths_use_the_16_and_64_bit_forms() {
    for len in [0usize, 125, 126, 65_535, 65_536] {
        let body = vec![b'a'; len];
        let mut out = Vec::new();
        write_frame(&mut out, Opcode::Binary, &body);
        let header = match len {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        };
        assert_eq!(out.len(), header + len, "len {len}");
        let mut input = client(true, Opcode::Binary, &body);
        let (kind, got, consumed) = decode_one(&mut input, 1 << 20).unwrap().unwrap();
        assert_eq!((kind, got.len(), consumed), (Kind::Binary, len, input.len()));
    }
}

#[test]
fn partial_input_waits_for_more() {
    let frame = client(true, Opcode::Text, &[b'x'; 300]);
    for cut in 0..frame.len() {
        let mut input = frame[..cut].to_vec();
        assert_eq!(decode_one(&mut input, 1024), Ok(None), "cut at {cut}");
    }
}

#[test]
fn oversize_frames_are_refused_from_the_header_alone() {
    let frame = client(true, Opcode::Text, &[b'x'; 2000]);
    // Only the 4-byte header is there: no payload is waited for.
    let mut input = frame[..4].to_vec();
    assert_eq!(decode_one(&mut input, 1000), Err(FrameError::TooBig { size: 2000, max: 1000 }));
    assert_eq!(FrameError::TooBig { size: 2000, max: 1000 }.close_code(), 1009);
    // A 64-bit length with the top bit set is as refused as any other.
    let mut input = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    assert!(matches!(decode_one(&mut input, 1000), Err(FrameError::TooBig { .. })));
}

#[test]
fn a_fragmented_message_over_the_limit_is_refused() {
    let mut input = client(false, Opcode::Text, &[b'x'; 600]);
    input.extend(client(true, Opcode::Continuation, &[b'x'; 600]));
    assert_eq!(decode_one(&mut input, 1000), Err(FrameError::TooBig { size: 1200, max: 1000 }));
}

#[test]
fn fragments_assemble_and_control_frames_interleave() {
    let mut input = client(false, Opcode::Text, b"hel");
    input.extend(client(true, Opcode::Ping, b"p"));
    input.extend(client(false, Opcode::Continuation, b"lo "));
    input.extend(client(true, Opcode::Continuation, b"world"));
    let mut decoder = Decoder::new(1024);
    let mut message = Vec::new();
    let mut at = 0;
    let mut got = Vec::new();
    while at < input.len() {
        let d = decoder.decode(&mut input[at..], &mut message).unwrap().unwrap();
        got.push((d.kind, payload(&d, &input[at..], &message).to_vec()));
        at += d.consumed;
    }
    let fragment = (Kind::Fragment, b"hel".to_vec());
    assert_eq!(got[..2], [fragment, (Kind::Ping, b"p".to_vec())]);
    assert_eq!(got[3], (Kind::Text, b"hello world".to_vec()));
}

#[test]
fn protocol_violations_are_refused_with_their_close_code() {
    let cases: [(Vec<u8>, FrameError); 8] = [
        (vec![0xC1, 0x80, 1, 2, 3, 4], FrameError::ReservedBits),
        (vec![0x83, 0x80, 1, 2, 3, 4], FrameError::UnknownOpcode(3)),
        (vec![0x8B, 0x80, 1, 2, 3, 4], FrameError::UnknownOpcode(0xB)),
        (client(false, Opcode::Ping, b""), FrameError::FragmentedControl),
        (client(true, Opcode::Ping, &[0; 126]), FrameError::ControlTooLong(126)),
        (client(true, Opcode::Continuation, b"x"), FrameError::UnexpectedContinuation),
        (client(true, Opcode::Text, &[0xC3, 0x28]), FrameError::InvalidUtf8),
        (client(true, Opcode::Close, &[3]), FrameError::InvalidClose),
    ];
    for (mut input, error) in cases {
        assert_eq!(decode_one(&mut input, 1024), Err(error), "{input:02x?}");
        assert_eq!(error.close_code(), if error == FrameError::InvalidUtf8 { 1007 } else { 1002 });
        assert!(!error.to_string().is_empty());
    }
    let mut input = client(false, Opcode::Text, b"a");
    input.extend(client(true, Opcode::Text, b"b"));
    assert_eq!(decode_one(&mut input, 1024), Err(FrameError::ExpectedContinuation));
}

#[test]
fn close_frames_carry_a_valid_code_and_reason() {
    let mut frame = Vec::new();
    write_close(&mut frame, 1000, "bye");
    assert_eq!(frame, [0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
    let mut input = client(true, Opcode::Close, &frame[2..]);
    assert_eq!(decode_one(&mut input, 1024), Ok(Some((Kind::Close(Some(1000)), b"bye".to_vec(), 11))));
    let mut input = client(true, Opcode::Close, b"");
    assert_eq!(decode_one(&mut input, 1024), Ok(Some((Kind::Close(None), Vec::new(), 6))));
    for code in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
        let mut input = client(true, Opcode::Close, &code.to_be_bytes());
        assert_eq!(decode_one(&mut input, 1024), Err(FrameError::InvalidClose), "code {code}");
    }
    let mut input = client(true, Opcode::Close, &[0x03, 0xE8, 0xFF]);
    assert_eq!(decode_one(&mut input, 1024), Err(FrameError::InvalidUtf8));
    // A long reason is cut at a character boundary to fit 125 bytes.
    let mut frame = Vec::new();
    write_close(&mut frame, 1011, &"é".repeat(100));
    assert_eq!(frame[1], 2 + 122);
    assert!(core::str::from_utf8(&frame[4..]).is_ok());
}

/// One message of a proptest stream: its kind, payload and fragment sizes.
#[derive(Debug, Clone)]
struct Sent {
    text: bool,
    payload: Vec<u8>,
    cuts: Vec<usize>,
}

fn sent() -> impl Strategy<Value = Sent> {
    (any::<bool>(), prop::collection::vec(any::<u8>(), 0..400), prop::collection::vec(1usize..100, 0..4))
        .prop_map(|(text, payload, cuts)| {
            // Text must be UTF-8: map bytes onto printable ASCII.
            let payload = if text { payload.iter().map(|b| b' ' + b % 95).collect() } else { payload };
            Sent { text, payload, cuts }
        })
}

/// The client frames of `message`, fragmented at its cuts.
fn frames_of(message: &Sent, mask: [u8; 4], out: &mut Vec<u8>) {
    let first = if message.text { Opcode::Text } else { Opcode::Binary };
    let mut pieces = Vec::new();
    let mut rest = &message.payload[..];
    for &cut in &message.cuts {
        let (head, tail) = rest.split_at(cut.min(rest.len()));
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);
    let last = pieces.len() - 1;
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { first } else { Opcode::Continuation };
        write_client_frame(out, i == last, opcode, mask, piece);
    }
}

proptest! {
    #[test]
    fn any_messages_in_any_pieces_come_out_whole(
        messages in prop::collection::vec(sent(), 1..8),
        mask in any::<[u8; 4]>(),
        read_sizes in prop::collection::vec(1usize..300, 1..20),
    ) {
        let mut wire = Vec::new();
        for m in &messages {
            frames_of(m, mask, &mut wire);
        }
        // Feed the wire as a socket would, in reads of varying size, into
        // a buffer the decoder consumes from the front.
        let mut decoder = Decoder::new(4096);
        let mut buffer = Vec::new();
        let mut message = Vec::new();
        let mut got = Vec::new();
        let mut fed = 0;
        let mut reads = read_sizes.iter().cycle();
        while got.len() < messages.len() {
            if let Some(d) = decoder.decode(&mut buffer, &mut message).expect("valid frames") {
                if d.kind != Kind::Fragment {
                    got.push((d.kind, payload(&d, &buffer, &message).to_vec()));
                }
                buffer.drain(..d.consumed);
                continue;
            }
            prop_assert!(fed < wire.len(), "decoder wants more than was sent");
            let n = (*reads.next().expect("cycle")).min(wire.len() - fed);
            buffer.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
        }
        prop_assert!(buffer.is_empty() && fed == wire.len());
        for (m, (kind, payload)) in messages.iter().zip(got) {
            prop_assert_eq!(kind, if m.text { Kind::Text } else { Kind::Binary });
            prop_assert_eq!(&payload, &m.payload);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_overrun(mut input in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut decoder = Decoder::new(256);
        let mut message = Vec::new();
        let len = input.len();
        let mut at = 0;
        while let Ok(Some(d)) = decoder.decode(&mut input[at..], &mut message) {
            prop_assert!(d.consumed > 0 && at + d.consumed <= len);
            prop_assert!(message.len() <= 256);
            if let Payload::Input(range) = d.payload {
                prop_assert!(range.end <= d.consumed);
            }
            at += d.consumed;
        }
    }
}
