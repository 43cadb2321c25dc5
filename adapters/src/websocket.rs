//! RFC 6455 frames on the server side of a WebSocket, sans-IO: the media
//! WebSocket's hot path reads and writes its frames here, in buffers the
//! caller owns and reuses, with no allocation per frame (the handshake stays
//! hyper's and tungstenite's).
//!
//! [`Decoder::decode`] takes the bytes read so far and returns the next
//! complete message: an unfragmented frame is unmasked in place and its
//! payload is a range of the input; a fragmented message is assembled in a
//! caller-owned buffer. It enforces what a server must: every client frame
//! masked (§5.1), no reserved bits or opcodes (§5.2), control frames of at
//! most 125 bytes and never fragmented (§5.5), continuations only inside a
//! fragmented message (§5.4), text that is UTF-8 (§8.1), and the caller's
//! size limit on every frame and message, checked from the header before
//! any payload is buffered. [`write_frame`] writes an unmasked server frame.
//!
//! ```
//! use voxproxy_adapters::websocket::{Decoder, Kind, Payload, write_frame, Opcode};
//! // A masked text frame "hi", as a browser would send it.
//! let mut input = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
//! let mut message = Vec::new();
//! let mut decoder = Decoder::new(1024);
//! let frame = decoder.decode(&mut input, &mut message).unwrap().unwrap();
//! assert_eq!(frame.kind, Kind::Text);
//! assert_eq!(frame.consumed, 8);
//! let Payload::Input(range) = frame.payload else { panic!() };
//! assert_eq!(&input[range], b"hi");
//!
//! let mut out = Vec::new();
//! write_frame(&mut out, Opcode::Text, b"hi");
//! assert_eq!(out, [0x81, 2, b'h', b'i']);
//! ```

use core::fmt;
use core::ops::Range;

/// Longest payload of a control frame (ping, pong, close), RFC 6455 §5.5.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A later fragment of a text or binary message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// The close handshake.
    Close,
    /// A ping, answered with a pong of the same payload.
    Ping,
    /// A pong.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Why a client's frames were refused; the connection must be closed with
/// [`FrameError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A reserved bit (RSV1–3) was set, but no extension was negotiated.
    ReservedBits,
    /// The opcode is one RFC 6455 reserves.
    UnknownOpcode(u8),
    /// A client frame without a mask (RFC 6455 §5.1 requires one).
    Unmasked,
    /// A ping, pong or close frame longer than 125 bytes.
    ControlTooLong(usize),
    /// A ping, pong or close frame without the FIN bit.
    FragmentedControl,
    /// A continuation frame with no fragmented message to continue.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message was unfinished.
    ExpectedContinuation,
    /// A frame or a fragmented message longer than the configured limit.
    TooBig {
        /// The frame's or message's length so far, in bytes.
        size: u64,
        /// The limit (`limits.max_frame_bytes` in the proxy).
        max: usize,
    },
    /// A text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// A close frame of one byte, or with a code no endpoint may send.
    InvalidClose,
}

impl FrameError {
    /// The close code that answers this error (RFC 6455 §7.4.1): 1009 for
    /// a message too big, 1007 for bad UTF-8, 1002 for the rest.
    #[must_use]
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooBig { .. } => 1009,
            FrameError::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => {
                f.write_str("WebSocket frame with a reserved bit set; no extension was negotiated")
            }
            FrameError::UnknownOpcode(op) => write!(f, "WebSocket frame with reserved opcode {op:#x}"),
            FrameError::Unmasked => {
                f.write_str("unmasked WebSocket frame from the client (RFC 6455 §5.1 requires a mask)")
            }
            FrameError::ControlTooLong(len) => {
                write!(f, "WebSocket control frame of {len} bytes; at most {MAX_CONTROL_PAYLOAD} are allowed")
            }
            FrameError::FragmentedControl => f.write_str("fragmented WebSocket control frame"),
            FrameError::UnexpectedContinuation => {
                f.write_str("WebSocket continuation frame without a message to continue")
            }
            FrameError::ExpectedContinuation => {
                f.write_str("new WebSocket message before the fragmented one was finished")
            }
            FrameError::TooBig { size, max } => {
                write!(f, "WebSocket message of {size} bytes exceeds limits.max_frame_bytes ({max})")
            }
            FrameError::InvalidUtf8 => f.write_str("WebSocket text that is not UTF-8"),
            FrameError::InvalidClose => f.write_str("WebSocket close frame with an invalid code or length"),
        }
    }
}

impl std::error::Error for FrameError {}

/// What a complete message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A text message (UTF-8, checked).
    Text,
    /// A binary message.
    Binary,
    /// A ping; the payload is what the pong must carry.
    Ping,
    /// A pong.
    Pong,
    /// A close frame: its code (none when the frame was empty) and the
    /// reason, which is the payload after the code.
    Close(Option<u16>),
    /// A fragment of an unfinished message, moved into the message buffer:
    /// nothing to deliver yet; drop the consumed input and decode on.
    Fragment,
}

/// Where a decoded message's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// In the input, unmasked in place (a single-frame message or a control
    /// frame); for a close frame, the reason after the code.
    Input(Range<usize>),
    /// In the caller's message buffer (a fragmented message, assembled).
    Assembled,
}

/// One complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// What it is.
    pub kind: Kind,
    /// Where its payload is.
    pub payload: Payload,
    /// Input bytes it used, which the caller drops once done with the payload.
    pub consumed: usize,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: Opcode,
    mask: [u8; 4],
    len: usize,
    header_len: usize,
}

/// The header at the start of `input`, `None` until all of it is there.
fn parse_header(input: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *input else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, at): (u64, usize) = match b1 & 0x7F {
        126 => match input.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match input.get(2..10) {
            Some(b) => (u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(FrameError::ControlTooLong(usize::try_from(len).unwrap_or(usize::MAX)));
        }
    } else if len > max as u64 {
        // Refused from the header: the payload is never buffered.
        return Err(FrameError::TooBig { size: len, max });
    }
    let Some(m) = input.get(at..at + 4) else { return Ok(None) };
    let len = usize::try_from(len).map_err(|_| FrameError::TooBig { size: len, max })?;
    Ok(Some(Header { fin, opcode, mask: [m[0], m[1], m[2], m[3]], len, header_len: at + 4 }))
}

/// Unmasks (or masks: it is its own inverse) a frame's payload, a word at a time.
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let key = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ key;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= k;
    }
}

/// The close code and where the reason is, of a close frame's payload.
fn parse_close(payload: &[u8]) -> Result<(Option<u16>, Range<usize>), FrameError> {
    match payload {
        [] => Ok((None, 0..0)),
        [_] => Err(FrameError::InvalidClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // §7.4: 1000–1014 minus the ones never sent on the wire, and
            // 3000–4999 for applications.
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(FrameError::InvalidClose);
            }
            if core::str::from_utf8(reason).is_err() {
                return Err(FrameError::InvalidUtf8);
            }
            Ok((Some(code), 2..payload.len()))
        }
    }
}

/// The server side's reading state: what a fragmented message has so far.
#[derive(Debug, Clone)]
pub struct Decoder {
    max: usize,
    /// The data opcode of a fragmented message being assembled.
    fragmented: Option<Opcode>,
}

impl Decoder {
    /// A decoder that refuses frames and messages over `max_message` bytes.
    #[must_use]
    pub fn new(max_message: usize) -> Decoder {
        Decoder { max: max_message, fragmented: None }
    }

    /// Input bytes a frame starting at `input` needs in all, once its header
    /// is there; callers size their read buffer with it (bounded by the limit).
    #[must_use]
    pub fn frame_len(&self, input: &[u8]) -> Option<usize> {
        parse_header(input, self.max).ok().flatten().map(|h| h.header_len + h.len)
    }

    /// Decodes the frame at the start of `input`. Returns `Ok(None)` when
    /// more input is needed. A fragment of a longer message is moved into
    /// `message` ([`Kind::Fragment`]); the fragment that completes it
    /// returns the whole message there ([`Payload::Assembled`]). `message`
    /// must be left alone while a message is being assembled. After an
    /// error the connection is done: close it.
    pub fn decode(&mut self, input: &mut [u8], message: &mut Vec<u8>) -> Result<Option<Decoded>, FrameError> {
        let Some(header) = parse_header(input, self.max)? else { return Ok(None) };
        let start = header.header_len;
        let end = start + header.len;
        if input.len() < end {
            return Ok(None);
        }
        let payload = &mut input[start..end];
        apply_mask(payload, header.mask);
        let (kind, payload) = match header.opcode {
            Opcode::Close => {
                let (code, reason) = parse_close(payload)?;
                (Kind::Close(code), Payload::Input(start + reason.start..start + reason.end))
            }
            Opcode::Ping => (Kind::Ping, Payload::Input(start..end)),
            Opcode::Pong => (Kind::Pong, Payload::Input(start..end)),
            _ => self.data_frame(header, start..end, input, message)?,
        };
        Ok(Some(Decoded { kind, payload, consumed: end }))
    }

    /// A text, binary or continuation frame whose payload is unmasked at
    /// `range` of `input`: what it is and where its message is.
    fn data_frame(
        &mut self,
        header: Header,
        range: Range<usize>,
        input: &[u8],
        message: &mut Vec<u8>,
    ) -> Result<(Kind, Payload), FrameError> {
        let kind = match (header.opcode, self.fragmented) {
            (Opcode::Continuation, None) => return Err(FrameError::UnexpectedContinuation),
            (Opcode::Continuation, Some(first)) => first,
            (_, Some(_)) => return Err(FrameError::ExpectedContinuation),
            (opcode, None) => opcode,
        };
        if header.fin && self.fragmented.is_none() {
            // The usual case: one frame, read where it lies.
            if kind == Opcode::Text && core::str::from_utf8(&input[range.clone()]).is_err() {
                return Err(FrameError::InvalidUtf8);
            }
            return Ok((data_kind(kind), Payload::Input(range)));
        }
        if self.fragmented.is_none() {
            message.clear();
        }
        let size = message.len() + range.len();
        if size > self.max {
            return Err(FrameError::TooBig { size: size as u64, max: self.max });
        }
        message.extend_from_slice(&input[range]);
        if !header.fin {
            self.fragmented = Some(kind);
            return Ok((Kind::Fragment, Payload::Assembled));
        }
        self.fragmented = None;
        if kind == Opcode::Text && core::str::from_utf8(message).is_err() {
            return Err(FrameError::InvalidUtf8);
        }
        Ok((data_kind(kind), Payload::Assembled))
    }
}

fn data_kind(opcode: Opcode) -> Kind {
    if opcode == Opcode::Text { Kind::Text } else { Kind::Binary }
}

/// Appends one unmasked, final server frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.push(0x80 | opcode.bits());
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut at a character
/// boundary to fit the 125 bytes of a control frame) to `out`.
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    write_frame(out, Opcode::Close, &payload[..2 + cut]);
}

/// Appends the client frame a browser would send (masked with `mask`) to
/// `out`: for tests, fuzzing and the simulator's side of the wire.
pub fn write_client_frame(out: &mut Vec<u8>, fin: bool, opcode: Opcode, mask: [u8; 4], payload: &[u8]) {
    let first = out.len();
    write_frame(out, opcode, payload);
    if !fin {
        out[first] &= 0x7F;
    }
    out[first + 1] |= 0x80;
    let payload_at = out.len() - payload.len();
    let tail = out.split_off(payload_at);
    out.extend_from_slice(&mask);
    let at = out.len();
    out.extend_from_slice(&tail);
    apply_mask(&mut out[at..], mask);
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
