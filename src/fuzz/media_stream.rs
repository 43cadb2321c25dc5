//! Fuzz entry points: Twilio Media Streams messages.

use serde_json::Value;
use voxproxy_adapters::media_stream::{
    self, Inbound, MessageError, Outbound, base64, parse_inbound, parse_outbound,
};

/// Parses arbitrary bytes as a frame from Twilio (and as one sent to Twilio).
///
/// Checks, so that a finding is a real bug:
/// - `serde_json` as an oracle: what it refuses as JSON we refuse too (except
///   numbers it rounds to infinity near the edge of the f64 range, where
///   parsers legitimately differ);
/// - the frame with a leading space (which skips the literal fast path for
///   Twilio-shaped `media` frames) parses to the same result;
/// - a parsed `media` payload decodes to exactly the length its base64 text
///   implies, and re-encodes to that text; the fields agree with the oracle;
/// - whatever parses, written back by the matching writer, parses to the
///   same event.
pub fn twilio_inbound(data: &[u8]) {
    let oracle = serde_json::from_slice::<Value>(data);
    let json_refused = match &oracle {
        Ok(_) => false,
        Err(e) => !e.to_string().starts_with("number out of range"),
    };

    let mut frame = data.to_vec();
    let mut audio = vec![0u8; data.len()];
    let inbound = parse_inbound(&mut frame, &mut audio);
    if json_refused {
        assert!(inbound.is_err(), "accepted what serde_json refuses as JSON: {inbound:?}");
    }

    let mut spaced = Vec::with_capacity(data.len() + 1);
    spaced.push(b' ');
    spaced.extend_from_slice(data);
    let mut spaced_audio = vec![0u8; data.len()];
    let spaced_inbound = parse_inbound(&mut spaced, &mut spaced_audio);
    match (&inbound, &spaced_inbound) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "a leading space changed the event"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("a leading space changed the outcome: {a:?} vs {b:?}"),
    }

    if let Ok(event) = &inbound {
        if let (Inbound::Media(media), Ok(value)) = (event, &oracle) {
            check_media_against_oracle(media, &audio, value);
            assert_eq!(audio[..media.payload_len], spaced_audio[..media.payload_len]);
        }
        if let (Inbound::Mark(mark), Ok(value)) = (event, &oracle) {
            assert_eq!(
                value["mark"]["name"].as_str(),
                Some(mark.name),
                "mark name differs from serde_json's"
            );
        }
        rewrite_and_reparse(event, &audio);
    }

    let mut frame = data.to_vec();
    let outbound = parse_outbound(&mut frame, &mut audio);
    if json_refused {
        assert!(outbound.is_err(), "accepted what serde_json refuses as JSON: {outbound:?}");
    }
    if let Ok(Outbound::Media { payload_len, .. }) = outbound
        && let Ok(value) = &oracle
    {
        let text = value["media"]["payload"].as_str().expect("a parsed payload is a string");
        assert_eq!(payload_len, base64::decoded_len(text.as_bytes()));
    }
}

fn check_media_against_oracle(media: &media_stream::Media, audio: &[u8], value: &Value) {
    let text = value["media"]["payload"].as_str().expect("a parsed payload is a string");
    assert_eq!(
        media.payload_len,
        base64::decoded_len(text.as_bytes()),
        "decoded length does not match the base64 length"
    );
    let mut encoded = Vec::new();
    base64::encode_append(&audio[..media.payload_len], &mut encoded);
    assert_eq!(encoded, text.as_bytes(), "payload does not re-encode to its text");
    assert_eq!(value["streamSid"].as_str(), Some(media.stream_sid.as_str()));
    assert_eq!(value["event"].as_str(), Some("media"));
    for (field, parsed) in [
        (&value["sequenceNumber"], media.sequence_number),
        (&value["media"]["chunk"], media.chunk),
        (&value["media"]["timestamp"], media.timestamp_ms),
    ] {
        let expected = match field {
            Value::String(s) => s.parse::<u64>().ok(),
            other => other.as_u64(),
        };
        assert_eq!(expected, Some(parsed), "an integer differs from serde_json's");
    }
}

fn rewrite_and_reparse(event: &Inbound<'_>, audio: &[u8]) {
    let mut out = Vec::new();
    let payload: &[u8] = match event {
        Inbound::Connected(c) => {
            media_stream::write_connected(&mut out, c);
            &[]
        }
        Inbound::Start(s) => {
            media_stream::write_start(&mut out, s);
            &[]
        }
        Inbound::Media(m) => {
            media_stream::write_inbound_media(&mut out, m, &audio[..m.payload_len]);
            &audio[..m.payload_len]
        }
        Inbound::Dtmf(d) => {
            media_stream::write_dtmf(&mut out, d);
            &[]
        }
        Inbound::Mark(m) => {
            media_stream::write_inbound_mark(&mut out, m);
            &[]
        }
        Inbound::Stop(s) => {
            media_stream::write_stop(&mut out, s);
            &[]
        }
        Inbound::Unknown { .. } => return,
    };
    let written = String::from_utf8_lossy(&out).into_owned();
    let mut again_audio = vec![0u8; payload.len()];
    let again: Result<Inbound<'_>, MessageError> = parse_inbound(&mut out, &mut again_audio);
    match again {
        Ok(again) => assert_eq!(&again, event, "write → parse changed the event:\n{written}"),
        Err(e) => panic!("written frame does not parse: {e}\n{written}"),
    }
    assert_eq!(again_audio, payload, "write → parse changed the audio");
}
