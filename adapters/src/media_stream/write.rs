//! Writing frames in both directions, each into a reused `Vec<u8>`.
//!
//! Every writer clears `out` and writes exactly one message, in the key order
//! of Twilio's documentation. Strings that may hold anything (mark names,
//! custom parameters, the `connected` fields) are JSON-escaped; SIDs need no
//! escaping by construction. Once `out` has the capacity of the largest
//! message, writing never allocates.

use voxproxy_core::g711::{self, Law};

use super::base64;
use super::{Connected, Dtmf, Mark, Media, Start, Stop, StreamSid};

/// Writes `{"event":"media","streamSid":…,"media":{"payload":…}}`: `mulaw`
/// (raw μ-law, 8 kHz, no header) queued for playing to the caller.
pub fn write_media(out: &mut Vec<u8>, stream_sid: &StreamSid, mulaw: &[u8]) {
    const HEAD: &[u8] = br#"{"event":"media","streamSid":""#;
    const MIDDLE: &[u8] = br#"","media":{"payload":""#;
    const TAIL: &[u8] = br#""}}"#;
    let sid = stream_sid.as_str().as_bytes();
    let text_len = base64::encoded_len(mulaw.len()).unwrap_or(usize::MAX);
    // One resize and plain slice copies: the frame's layout is known up
    // front, so no piece needs its own capacity check.
    let payload_at = HEAD.len() + sid.len() + MIDDLE.len();
    let total = payload_at.saturating_add(text_len).saturating_add(TAIL.len());
    out.clear();
    out.resize(total, 0);
    let (head, rest) = out.split_at_mut(HEAD.len());
    head.copy_from_slice(HEAD);
    let (sid_out, rest) = rest.split_at_mut(sid.len());
    sid_out.copy_from_slice(sid);
    let (middle, rest) = rest.split_at_mut(MIDDLE.len());
    middle.copy_from_slice(MIDDLE);
    let (text, tail) = rest.split_at_mut(rest.len() - TAIL.len());
    let _ = base64::encode(mulaw, text);
    tail.copy_from_slice(TAIL);
}

/// [`write_media`] for 16-bit linear PCM: the samples are μ-law-encoded
/// (G.711) block by block on a small stack buffer on their way into the
/// base64 text; nothing goes through the heap.
pub fn write_media_pcm16(out: &mut Vec<u8>, stream_sid: &StreamSid, pcm: &[i16]) {
    // A multiple of 3 bytes, so the base64 of consecutive blocks concatenates
    // into the base64 of the whole (padding only ever at the very end).
    const BLOCK: usize = 240;
    out.clear();
    out.reserve(64 + stream_sid.as_str().len() + base64::encoded_len(pcm.len()).unwrap_or(0));
    out.extend_from_slice(br#"{"event":"media","streamSid":""#);
    out.extend_from_slice(stream_sid.as_str().as_bytes());
    out.extend_from_slice(br#"","media":{"payload":""#);
    let mut mulaw = [0u8; BLOCK];
    for samples in pcm.chunks(BLOCK) {
        // The block never exceeds the buffer, so this cannot fail.
        let n = g711::encode(Law::Mu, samples, &mut mulaw).unwrap_or(0);
        base64::encode_append(mulaw.get(..n).unwrap_or_default(), out);
    }
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
pub(crate) fn push_string(out: &mut Vec<u8>, text: &str) {
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

#[cfg(test)]
mod tests {
    use super::super::{
        AccountSid, CallSid, Inbound, MAX_CUSTOM_PARAMETERS, MAX_MARK_NAME_LEN, MediaFormat, Outbound, Track,
        Tracks, parse_inbound, parse_outbound,
    };
    use super::*;
    use proptest::prelude::*;

    const ACCOUNT: &str = "AC2c2b4c5b1f0e4d0b9a8c7d6e5f4a3b2c";
    const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";
    const CALL: &str = "CA3f8e6d7c2b1a4f5e9d0c8b7a6f5e4d3c";

    fn sid() -> StreamSid {
        StreamSid::new(STREAM).unwrap()
    }

    fn text(out: &[u8]) -> &str {
        core::str::from_utf8(out).unwrap()
    }

    #[test]
    fn outbound_shapes_are_twilios() {
        let mut out = Vec::new();
        write_media(&mut out, &sid(), &[158, 143, 137, 134, 134, 137, 142, 156, 210]);
        assert_eq!(
            text(&out),
            format!(r#"{{"event":"media","streamSid":"{STREAM}","media":{{"payload":"no+JhoaJjpzS"}}}}"#)
        );
        write_mark(&mut out, &sid(), "my label");
        assert_eq!(
            text(&out),
            format!(r#"{{"event":"mark","streamSid":"{STREAM}","mark":{{"name":"my label"}}}}"#)
        );
        write_clear(&mut out, &sid());
        assert_eq!(text(&out), format!(r#"{{"event":"clear","streamSid":"{STREAM}"}}"#));
    }

    #[test]
    fn pcm16_is_mulaw_encoded_on_the_way() {
        // G.711: 0 -> 0xFF, -1 -> 0x7F (one's complement), 8828 -> 0x9E, 32767 -> 0x80.
        let mut out = Vec::new();
        write_media_pcm16(&mut out, &sid(), &[0, -1, 8828, 32767]);
        let mut expected = Vec::new();
        write_media(&mut expected, &sid(), &[0xFF, 0x7F, 0x9E, 0x80]);
        assert_eq!(text(&out), text(&expected));
        // Longer than one internal block, and not a multiple of 3.
        let pcm: Vec<i16> = (0..1001).map(|i| (i * 37 % 65536 - 32768) as i16).collect();
        let mulaw: Vec<u8> = pcm.iter().map(|&s| g711::ulaw_encode(s)).collect();
        write_media_pcm16(&mut out, &sid(), &pcm);
        write_media(&mut expected, &sid(), &mulaw);
        assert_eq!(out, expected);
    }

    #[test]
    fn inbound_shapes_are_twilios() {
        let mut out = Vec::new();
        write_connected(&mut out, &Connected { protocol: Some("Call"), version: Some("1.0.0") });
        assert_eq!(text(&out), r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);

        let start = Start {
            sequence_number: 1,
            stream_sid: sid(),
            account_sid: AccountSid::new(ACCOUNT).unwrap(),
            call_sid: CallSid::new(CALL).unwrap(),
            tracks: Tracks { inbound: true, outbound: false },
            media_format: MediaFormat::mulaw_8k_mono(),
            custom_parameters: vec![("FirstName".to_owned(), "Jane".to_owned())],
        };
        write_start(&mut out, &start);
        assert_eq!(
            text(&out),
            format!(
                r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"{ACCOUNT}","streamSid":"{STREAM}","callSid":"{CALL}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{"FirstName":"Jane"}}}},"streamSid":"{STREAM}"}}"#
            )
        );

        let media = Media {
            sequence_number: 4,
            stream_sid: sid(),
            track: Track::Inbound,
            chunk: 2,
            timestamp_ms: 5,
            payload_len: 0,
        };
        write_inbound_media(&mut out, &media, &[158, 143, 137, 134, 134, 137, 142, 156, 210]);
        assert_eq!(
            text(&out),
            format!(
                r#"{{"event":"media","sequenceNumber":"4","media":{{"track":"inbound","chunk":"2","timestamp":"5","payload":"no+JhoaJjpzS"}},"streamSid":"{STREAM}"}}"#
            )
        );

        write_dtmf(
            &mut out,
            &Dtmf { sequence_number: 5, stream_sid: sid(), track: Track::Inbound, digit: '1' },
        );
        assert_eq!(
            text(&out),
            format!(
                r#"{{"event":"dtmf","streamSid":"{STREAM}","sequenceNumber":"5","dtmf":{{"track":"inbound_track","digit":"1"}}}}"#
            )
        );

        write_inbound_mark(&mut out, &Mark { sequence_number: 4, stream_sid: sid(), name: "my label" });
        assert_eq!(
            text(&out),
            format!(
                r#"{{"event":"mark","sequenceNumber":"4","streamSid":"{STREAM}","mark":{{"name":"my label"}}}}"#
            )
        );

        let stop = Stop {
            sequence_number: 5,
            stream_sid: sid(),
            account_sid: AccountSid::new(ACCOUNT).unwrap(),
            call_sid: CallSid::new(CALL).unwrap(),
        };
        write_stop(&mut out, &stop);
        assert_eq!(
            text(&out),
            format!(
                r#"{{"event":"stop","sequenceNumber":"5","stop":{{"accountSid":"{ACCOUNT}","callSid":"{CALL}"}},"streamSid":"{STREAM}"}}"#
            )
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_mark(&mut out, &sid(), "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{1f}é😀");
        assert!(
            text(&out).ends_with(r#""mark":{"name":"a\"b\\c\nd\re\tf\bg\fh\u0001i\u001fé😀"}}"#),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn a_reused_buffer_stops_growing() {
        let mut out = Vec::new();
        write_media(&mut out, &sid(), &[0u8; 160]);
        let capacity = out.capacity();
        let ptr = out.as_ptr();
        for _ in 0..3 {
            write_media(&mut out, &sid(), &[0x55u8; 160]);
            write_mark(&mut out, &sid(), "m");
            write_clear(&mut out, &sid());
        }
        assert_eq!((out.capacity(), out.as_ptr()), (capacity, ptr));
    }

    fn sid_text(prefix: &'static str) -> impl Strategy<Value = String> {
        prop_oneof!["[0-9a-f]{32}".prop_map(move |hex| format!("{prefix}{hex}")), "[!#-\\[\\]-~]{1,64}",]
    }

    fn stream_sid() -> impl Strategy<Value = StreamSid> {
        sid_text("MZ").prop_map(|s| StreamSid::new(&s).unwrap())
    }

    fn track() -> impl Strategy<Value = Track> {
        prop_oneof![Just(Track::Inbound), Just(Track::Outbound)]
    }

    /// Any text, including quotes, backslashes, control characters and non-ASCII.
    fn any_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..24).prop_map(move |chars| {
            let mut s: String = chars.into_iter().collect();
            while s.len() > max {
                s.pop();
            }
            s
        })
    }

    fn parse(out: &mut [u8], audio: &mut [u8]) -> Inbound<'static> {
        // Copy out of the borrowed frame so the test can compare owned values.
        match parse_inbound(out, audio).unwrap() {
            Inbound::Mark(m) => Inbound::Mark(Mark { name: String::leak(m.name.to_owned()), ..m }),
            Inbound::Connected(c) => Inbound::Connected(Connected {
                protocol: c.protocol.map(|p| &*String::leak(p.to_owned())),
                version: c.version.map(|v| &*String::leak(v.to_owned())),
            }),
            Inbound::Unknown { event } => Inbound::Unknown { event: String::leak(event.to_owned()) },
            Inbound::Start(s) => Inbound::Start(s),
            Inbound::Media(m) => Inbound::Media(m),
            Inbound::Dtmf(d) => Inbound::Dtmf(d),
            Inbound::Stop(s) => Inbound::Stop(s),
        }
    }

    proptest! {
        #[test]
        fn inbound_media_round_trips(
            sequence_number in any::<u64>(), stream_sid in stream_sid(), track in track(),
            chunk in any::<u64>(), timestamp_ms in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let media = Media { sequence_number, stream_sid, track, chunk, timestamp_ms, payload_len: payload.len() };
            let mut out = Vec::new();
            write_inbound_media(&mut out, &media, &payload);
            let mut audio = vec![0u8; payload.len()];
            prop_assert_eq!(parse(&mut out, &mut audio), Inbound::Media(media));
            prop_assert_eq!(audio, payload);
        }

        #[test]
        fn inbound_control_events_round_trip(
            sequence_number in any::<u64>(), stream_sid in stream_sid(), track in track(),
            digit in proptest::sample::select(&b"0123456789*#ABCD"[..]),
            name in any_text(MAX_MARK_NAME_LEN),
            account in sid_text("AC"), call in sid_text("CA"),
            protocol in proptest::option::of(any_text(64)), version in proptest::option::of(any_text(64)),
        ) {
            let mut out = Vec::new();
            let mut audio = [0u8; 0];
            let dtmf = Dtmf { sequence_number, stream_sid, track, digit: char::from(digit) };
            write_dtmf(&mut out, &dtmf);
            prop_assert_eq!(parse(&mut out, &mut audio), Inbound::Dtmf(dtmf));

            let mark = Mark { sequence_number, stream_sid, name: &name };
            write_inbound_mark(&mut out, &mark);
            prop_assert_eq!(parse(&mut out, &mut audio), Inbound::Mark(mark));

            let stop = Stop {
                sequence_number, stream_sid,
                account_sid: AccountSid::new(&account).unwrap(),
                call_sid: CallSid::new(&call).unwrap(),
            };
            write_stop(&mut out, &stop);
            prop_assert_eq!(parse(&mut out, &mut audio), Inbound::Stop(stop));

            let connected = Connected { protocol: protocol.as_deref(), version: version.as_deref() };
            write_connected(&mut out, &connected);
            prop_assert_eq!(parse(&mut out, &mut audio), Inbound::Connected(connected));
        }

        #[test]
        fn inbound_start_round_trips(
            sequence_number in any::<u64>(), stream_sid in stream_sid(),
            account in sid_text("AC"), call in sid_text("CA"),
            tracks in prop_oneof![
                Just(Tracks { inbound: true, outbound: false }),
                Just(Tracks { inbound: false, outbound: true }),
                Just(Tracks { inbound: true, outbound: true }),
            ],
            encoding in any_text(64), sample_rate in 1..=u32::MAX, channels in 1..=u16::MAX,
            custom_parameters in proptest::collection::vec((any_text(64), any_text(256)), 0..MAX_CUSTOM_PARAMETERS),
        ) {
            let start = Start {
                sequence_number, stream_sid,
                account_sid: AccountSid::new(&account).unwrap(),
                call_sid: CallSid::new(&call).unwrap(),
                tracks,
                media_format: MediaFormat { encoding, sample_rate, channels },
                custom_parameters,
            };
            let mut out = Vec::new();
            write_start(&mut out, &start);
            prop_assert_eq!(parse(&mut out, &mut []), Inbound::Start(Box::new(start)));
        }

        #[test]
        fn outbound_round_trips(
            stream_sid in stream_sid(),
            payload in proptest::collection::vec(any::<u8>(), 0..400),
            name in any_text(MAX_MARK_NAME_LEN),
        ) {
            let mut out = Vec::new();
            let mut audio = vec![0u8; payload.len()];
            write_media(&mut out, &stream_sid, &payload);
            prop_assert_eq!(
                parse_outbound(&mut out, &mut audio),
                Ok(Outbound::Media { stream_sid, payload_len: payload.len() })
            );
            prop_assert_eq!(&audio, &payload);

            write_mark(&mut out, &stream_sid, &name);
            prop_assert_eq!(parse_outbound(&mut out, &mut audio), Ok(Outbound::Mark { stream_sid, name: &name }));

            write_clear(&mut out, &stream_sid);
            prop_assert_eq!(parse_outbound(&mut out, &mut audio), Ok(Outbound::Clear { stream_sid }));
        }
    }
}
