//! What a capture never holds: secrets are overwritten with `x` in place,
//! keeping every length (so a redacted SIP message still frames the same
//! way and a replay sees the same byte counts).
//!
//! * The stream token in Twilio's `start` (`voxproxy_stream_token`: an
//!   HMAC under the auth token that opens a stream for its call). A replay
//!   does not check it, so its value does not matter there.
//! * `Authorization` and `Proxy-Authorization` header values in SIP
//!   messages either way (user name, realm, nonce and the digest
//!   response). The SIP password itself is never captured; a replay
//!   answers challenges with placeholders, and the digest of each SIP
//!   message sent is taken with these values redacted, so it still
//!   matches.
//!
//! Twilio's `X-Twilio-Signature` and the REST credentials never reach the
//! call's machines, so they cannot reach a capture either.

use memchr::memmem;

use super::format::{digest, put_addr};
use crate::sip::{Transmit, Transport};
use crate::stream_token::STREAM_TOKEN_PARAMETER;

/// Overwrites the value of every `"voxproxy_stream_token": "…"` in a JSON
/// text with `x`.
pub fn stream_token(json: &mut [u8]) {
    let name = STREAM_TOKEN_PARAMETER.as_bytes();
    let mut from = 0;
    while let Some(found) = memmem::find(&json[from..], name) {
        let at = from + found;
        let after_name = at + name.len();
        from = after_name;
        // `"name"` then optional blanks, `:`, blanks, `"value"`.
        if at == 0 || json[at - 1] != b'"' || json.get(after_name) != Some(&b'"') {
            continue;
        }
        let mut i = after_name + 1;
        i += blanks(&json[i..]);
        if json.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        i += blanks(&json[i..]);
        if json.get(i) != Some(&b'"') {
            continue;
        }
        i += 1;
        while i < json.len() && json[i] != b'"' {
            // An escaped character is a backslash and one more byte; the
            // backslash is overwritten too, so nothing of the value is left.
            if json[i] == b'\\' && i + 1 < json.len() {
                json[i] = b'x';
                i += 1;
            }
            json[i] = b'x';
            i += 1;
        }
        from = i;
    }
}

fn blanks(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count()
}

/// Overwrites the values of `Authorization` and `Proxy-Authorization`
/// header fields (and their continuation lines) in the head of a SIP
/// message, or of every message in a stream of them.
pub fn sip_credentials(message: &mut [u8]) {
    let mut lines = Lines::default();
    while let Some((line, value_from)) = lines.next(message) {
        if let Some(from) = value_from {
            for b in &mut message[line.start + from..line.end] {
                if !matches!(*b, b'\r' | b'\n' | b' ' | b'\t') {
                    *b = b'x';
                }
            }
        }
    }
}

/// Copies a SIP message to `out` with each credentials header's whole
/// value (continuation lines included) replaced by one `x`: the same
/// text whatever the user name and password were, so a replay's message
/// has the capture's digest.
fn collapse_credentials(message: &[u8], out: &mut Vec<u8>) {
    let mut lines = Lines::default();
    while let Some((line, value_from)) = lines.next(message) {
        let text = &message[line];
        match value_from {
            // A continuation line of a credentials header.
            Some(0) => {}
            Some(from) => {
                out.extend_from_slice(&text[..from]);
                out.extend_from_slice(b" x\r\n");
            }
            None => out.extend_from_slice(text),
        }
    }
}

/// Walks the lines of SIP text (each with its line ending), telling where
/// a credentials header's value starts in each: 0 for its continuation
/// lines, `None` for any other line.
#[derive(Default)]
struct Lines {
    start: usize,
    secret: bool,
}

impl Lines {
    fn next(&mut self, message: &[u8]) -> Option<(core::ops::Range<usize>, Option<usize>)> {
        let start = self.start;
        if start >= message.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &message[start..]).map_or(message.len(), |i| start + i + 1);
        let line = &message[start..end];
        let value_from = if matches!(line.first(), Some(b' ' | b'\t')) {
            self.secret.then_some(0)
        } else {
            let colon = line.iter().position(|&b| b == b':');
            self.secret = colon.is_some_and(|colon| {
                let name = line[..colon].trim_ascii();
                name.eq_ignore_ascii_case(b"authorization")
                    || name.eq_ignore_ascii_case(b"proxy-authorization")
            });
            colon.filter(|_| self.secret).map(|colon| colon + 1)
        };
        self.start = end;
        Some((start..end, value_from))
    }
}

/// The length and digest a capture keeps of a SIP message sent: over its
/// destination, transport and bytes with credentials collapsed (the
/// length is the collapsed message's).
pub(super) fn transmit_digest(transmit: &Transmit, scratch: &mut Vec<u8>) -> (u32, u64) {
    scratch.clear();
    put_addr(scratch, Some(transmit.dest));
    scratch.push(match transmit.transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    });
    let at = scratch.len();
    collapse_credentials(&transmit.bytes, scratch);
    (u32::try_from(scratch.len() - at).unwrap_or(u32::MAX), digest(scratch))
}
