//! Writing frames in both directions, each into a reused `Vec<u8>`.
//!
//! Every writer clears `out` and writes exactly one message, in the key order
//! of Twilio's documentation. Strings that may hold anything (mark names,
//! custom parameters, the `connected` fields) are JSON-escaped; SIDs need no
//! escaping by construction. Once `out` has the capacity of the largest
//! message, writing never allocates.

use super::base64;
use super::{Connected, Dtmf, Mark, Media, Start, Stop, StreamSid};

/// Writes `{"event":"media","streamSid":…,"media":{"payload":…}}`: `mulaw`
/// (raw μ-law, 8 kHz, no header) queued for playing to the caller.
pub fn write_media(out: &mut Vec<u8>, stream_sid: &StreamSid, mulaw: &[u8]) {
    out.clear();
    out.reserve(64 + stream_sid.as_str().len() + base64::encoded_len(mulaw.len()).unwrap_or(0));
    out.extend_from_slice(br#"{"event":"media","streamSid":""#);
    out.extend_from_slice(stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","media":{"payload":""#);
    base64::encode_append(mulaw, out);
    out.extend_from_slice(br#""}}"#);
}

/// Writes `{"event":"mark","streamSid":…,"mark":{"name":…}}`: Twilio echoes
/// it once the audio sent before it has played (or a `clear` flushed it).
pub fn write_mark(out: &mut Vec<u8>, stream_sid: &StreamSid, name: &str) {
    out.clear();
    out.extend_from_slice(br#"{"event":"mark","streamSid":""#);
    out.extend_from_slice(stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","mark":{"name":"#);
    push_string(out, name);
    out.extend_from_slice(b"}}");
}

/// Writes `{"event":"clear","streamSid":…}`: Twilio drops the audio it has
/// queued and echoes every pending mark.
pub fn write_clear(out: &mut Vec<u8>, stream_sid: &StreamSid) {
    out.clear();
    out.extend_from_slice(br#"{"event":"clear","streamSid":""#);
    out.extend_from_slice(stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// Writes Twilio's `connected` event (fields that are `None` are left out).
pub fn write_connected(out: &mut Vec<u8>, connected: &Connected<'_>) {
    out.clear();
    out.extend_from_slice(br#"{"event":"connected""#);
    if let Some(protocol) = connected.protocol {
        out.extend_from_slice(br#","protocol":"#);
        push_string(out, protocol);
    }
    if let Some(version) = connected.version {
        out.extend_from_slice(br#","version":"#);
        push_string(out, version);
    }
    out.push(b'}');
}

/// Writes Twilio's `start` event, with `streamSid` both inside `start` and at
/// the top level, as Twilio does.
pub fn write_start(out: &mut Vec<u8>, start: &Start) {
    out.clear();
    out.extend_from_slice(br#"{"event":"start","sequenceNumber":"#);
    push_quoted_u64(out, start.sequence_number);
    out.extend_from_slice(br#","start":{"accountSid":""#);
    out.extend_from_slice(start.account_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","streamSid":""#);
    out.extend_from_slice(start.stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","callSid":""#);
    out.extend_from_slice(start.call_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","tracks":["#);
    let mut names = [start.tracks.inbound.then_some("inbound"), start.tracks.outbound.then_some("outbound")]
        .into_iter()
        .flatten();
    if let Some(first) = names.next() {
        push_string(out, first);
        for name in names {
            out.push(b',');
            push_string(out, name);
        }
    }
    out.extend_from_slice(br#"],"mediaFormat":{"encoding":"#);
    push_string(out, &start.media_format.encoding);
    out.extend_from_slice(br#","sampleRate":"#);
    push_u64(out, u64::from(start.media_format.sample_rate));
    out.extend_from_slice(br#","channels":"#);
    push_u64(out, u64::from(start.media_format.channels));
    out.extend_from_slice(br#"},"customParameters":{"#);
    for (i, (name, value)) in start.custom_parameters.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_string(out, name);
        out.push(b':');
        push_string(out, value);
    }
    out.extend_from_slice(br#"}},"streamSid":""#);
    out.extend_from_slice(start.stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// Writes Twilio's `media` event carrying `mulaw`; `media.payload_len` is
/// ignored in favour of `mulaw.len()`.
pub fn write_inbound_media(out: &mut Vec<u8>, media: &Media, mulaw: &[u8]) {
    out.clear();
    out.reserve(160 + media.stream_sid.as_str().len() + base64::encoded_len(mulaw.len()).unwrap_or(0));
    out.extend_from_slice(br#"{"event":"media","sequenceNumber":"#);
    push_quoted_u64(out, media.sequence_number);
    out.extend_from_slice(br#","media":{"track":""#);
    out.extend_from_slice(media.track.name().as_bytes());
    out.extend_from_slice(br#"","chunk":"#);
    push_quoted_u64(out, media.chunk);
    out.extend_from_slice(br#","timestamp":"#);
    push_quoted_u64(out, media.timestamp_ms);
    out.extend_from_slice(br#","payload":""#);
    base64::encode_append(mulaw, out);
    out.extend_from_slice(br#""},"streamSid":""#);
    out.extend_from_slice(media.stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// Writes Twilio's `dtmf` event (track as `inbound_track`, Twilio's spelling there).
pub fn write_dtmf(out: &mut Vec<u8>, dtmf: &Dtmf) {
    out.clear();
    out.extend_from_slice(br#"{"event":"dtmf","streamSid":""#);
    out.extend_from_slice(dtmf.stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","sequenceNumber":"#);
    push_quoted_u64(out, dtmf.sequence_number);
    out.extend_from_slice(br#","dtmf":{"track":""#);
    out.extend_from_slice(dtmf.track.track_name().as_bytes());
    out.extend_from_slice(br#"","digit":"#);
    let mut utf8 = [0u8; 4];
    push_string(out, dtmf.digit.encode_utf8(&mut utf8));
    out.extend_from_slice(b"}}");
}

/// Writes the `mark` event Twilio sends back when a mark has played.
pub fn write_inbound_mark(out: &mut Vec<u8>, mark: &Mark<'_>) {
    out.clear();
    out.extend_from_slice(br#"{"event":"mark","sequenceNumber":"#);
    push_quoted_u64(out, mark.sequence_number);
    out.extend_from_slice(br#","streamSid":""#);
    out.extend_from_slice(mark.stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","mark":{"name":"#);
    push_string(out, mark.name);
    out.extend_from_slice(b"}}");
}

/// Writes Twilio's `stop` event.
pub fn write_stop(out: &mut Vec<u8>, stop: &Stop) {
    out.clear();
    out.extend_from_slice(br#"{"event":"stop","sequenceNumber":"#);
    push_quoted_u64(out, stop.sequence_number);
    out.extend_from_slice(br#","stop":{"accountSid":""#);
    out.extend_from_slice(stop.account_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","callSid":""#);
    out.extend_from_slice(stop.call_sid.as_str().as_bytes());
    out.extend_from_slice(br#""},"streamSid":""#);
    out.extend_from_slice(stop.stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// Appends `text` as a JSON string, quotes included.
fn push_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.push(b'"');
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            0..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0F)]);
        } else {
            out.extend_from_slice(short);
        }
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Twilio sends counters as strings holding digits.
fn push_quoted_u64(out: &mut Vec<u8>, n: u64) {
    out.push(b'"');
    push_u64(out, n);
    out.push(b'"');
}
