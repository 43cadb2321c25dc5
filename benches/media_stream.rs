//! Twilio Media Streams hot paths, and the alternatives they were chosen over.
//!
//! Targets (docs/ARCHITECTURE.md): a `media` event to PCM16 (JSON + base64 + μ-law) in
//! ≤ 150 ns per 20 ms frame; μ-law or PCM to the outbound `media` JSON in
//! ≤ 100 ns per frame. Frames are real-shaped: 160 μ-law bytes (216 base64
//! characters) and 34-character SIDs.
//!
//! Groups:
//! - `media_stream/parse_media`: the same work (JSON + base64 into a μ-law
//!   buffer) with the hand-written scanner, `serde_json` (borrowed
//!   deserialize), and `simd-json` (tape and borrowed-value APIs, buffers
//!   reused). The scanner is what ships; the others stay so the choice stays
//!   measured.
//! - `media_stream/media_to_pcm16`: the shipped path end to end.
//! - `media_stream/base64_decode`, `media_stream/base64_encode`: the
//!   hand-written codec against the `base64` crate, 160 bytes.
//! - `media_stream/write_media`: outbound frame from μ-law and from PCM16.

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use simd_json::prelude::*;
use voxproxy_adapters::media_stream::{self, Inbound, Media, StreamSid, Track, base64 as b64};
use voxproxy_core::g711::{self, Law};

const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

/// One 20 ms frame of something speech-like in μ-law.
fn mulaw_frame() -> Vec<u8> {
    (0..160)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            let sample = 6000.0 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                + 2000.0 * (2.0 * std::f64::consts::PI * 1330.0 * t).sin();
            g711::ulaw_encode(sample as i16)
        })
        .collect()
}

fn media_frame(mulaw: &[u8]) -> Vec<u8> {
    let media = Media {
        sequence_number: 1234,
        stream_sid: StreamSid::new(STREAM).unwrap(),
        track: Track::Inbound,
        chunk: 1233,
        timestamp_ms: 24660,
        payload_len: 0,
    };
    let mut out = Vec::new();
    media_stream::write_inbound_media(&mut out, &media, mulaw);
    out
}

#[derive(Deserialize)]
struct SerdeFrame<'a> {
    event: &'a str,
    #[serde(rename = "sequenceNumber")]
    sequence_number: &'a str,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
    #[serde(borrow)]
    media: Option<SerdeMedia<'a>>,
}

#[derive(Deserialize)]
struct SerdeMedia<'a> {
    track: &'a str,
    chunk: &'a str,
    timestamp: &'a str,
    payload: &'a str,
}

/// The serde_json path doing what `parse_inbound` does for `media` (minus
/// its validation of escapes, duplicate keys and bounds): fields out, numbers
/// parsed, payload decoded.
fn serde_json_media(frame: &[u8], audio: &mut [u8]) -> Option<(u64, u64, u64, usize)> {
    let f: SerdeFrame<'_> = serde_json::from_slice(frame).ok()?;
    let media = f.media?;
    if f.event != "media" || f.stream_sid.is_empty() || media.track != "inbound" {
        return None;
    }
    let n = STANDARD.decode_slice(media.payload, audio).ok()?;
    Some((f.sequence_number.parse().ok()?, media.chunk.parse().ok()?, media.timestamp.parse().ok()?, n))
}

fn simd_tape_media(
    frame: &mut [u8],
    buffers: &mut simd_json::Buffers,
    audio: &mut [u8],
) -> Option<(u64, u64, u64, usize)> {
    let tape = simd_json::to_tape_with_buffers(frame, buffers).ok()?;
    let v = tape.as_value();
    let media = v.get("media")?;
    if v.get("event")?.as_str()? != "media"
        || v.get("streamSid")?.as_str()?.is_empty()
        || media.get("track")?.as_str()? != "inbound"
    {
        return None;
    }
    let n = STANDARD.decode_slice(media.get("payload")?.as_str()?, audio).ok()?;
    Some((
        v.get("sequenceNumber")?.as_str()?.parse().ok()?,
        media.get("chunk")?.as_str()?.parse().ok()?,
        media.get("timestamp")?.as_str()?.parse().ok()?,
        n,
    ))
}

fn simd_borrowed_media(
    frame: &mut [u8],
    buffers: &mut simd_json::Buffers,
    audio: &mut [u8],
) -> Option<(u64, u64, u64, usize)> {
    let v = simd_json::to_borrowed_value_with_buffers(frame, buffers).ok()?;
    let media = v.get("media")?;
    if v.get_str("event")? != "media"
        || v.get_str("streamSid")?.is_empty()
        || media.get_str("track")? != "inbound"
    {
        return None;
    }
    let n = STANDARD.decode_slice(media.get_str("payload")?, audio).ok()?;
    Some((
        v.get_str("sequenceNumber")?.parse().ok()?,
        media.get_str("chunk")?.parse().ok()?,
        media.get_str("timestamp")?.parse().ok()?,
        n,
    ))
}

fn hand_media(frame: &mut [u8], audio: &mut [u8]) -> Option<(u64, u64, u64, usize)> {
    match media_stream::parse_inbound(frame, audio).ok()? {
        Inbound::Media(m) => Some((m.sequence_number, m.chunk, m.timestamp_ms, m.payload_len)),
        _ => None,
    }
}

fn parse_media(c: &mut Criterion) {
    let mulaw = mulaw_frame();
    let frame = media_frame(&mulaw);
    let mut audio = [0u8; 1024];
    let expected = Some((1234, 1233, 24660, 160));
    // Every contender must agree before it is timed.
    let mut scratch = frame.clone();
    let mut buffers = simd_json::Buffers::new(frame.len());
    assert_eq!(hand_media(&mut scratch, &mut audio), expected);
    assert_eq!(audio[..160], mulaw[..]);
    assert_eq!(serde_json_media(&frame, &mut audio), expected);
    scratch.copy_from_slice(&frame);
    assert_eq!(simd_tape_media(&mut scratch, &mut buffers, &mut audio), expected);
    scratch.copy_from_slice(&frame);
    assert_eq!(simd_borrowed_media(&mut scratch, &mut buffers, &mut audio), expected);

    let mut group = c.benchmark_group("media_stream/parse_media");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    // The in-place parsers get a fresh copy each time; the copy (~330 bytes) is
    // timed for all of them, serde_json included, so they stay comparable.
    group.bench_function("hand_scanner", |b| {
        b.iter(|| {
            scratch.copy_from_slice(black_box(&frame));
            black_box(hand_media(&mut scratch, &mut audio))
        })
    });
    group.bench_function("serde_json_borrowed", |b| {
        b.iter(|| {
            scratch.copy_from_slice(black_box(&frame));
            black_box(serde_json_media(&scratch, &mut audio))
        })
    });
    group.bench_function("simd_json_tape", |b| {
        b.iter(|| {
            scratch.copy_from_slice(black_box(&frame));
            black_box(simd_tape_media(&mut scratch, &mut buffers, &mut audio))
        })
    });
    group.bench_function("simd_json_borrowed_value", |b| {
        b.iter(|| {
            scratch.copy_from_slice(black_box(&frame));
            black_box(simd_borrowed_media(&mut scratch, &mut buffers, &mut audio))
        })
    });
    group.finish();
}

fn media_to_pcm16(c: &mut Criterion) {
    let mulaw = mulaw_frame();
    let frame = media_frame(&mulaw);
    let mut scratch = frame.clone();
    let mut audio = [0u8; 1024];
    let mut pcm = [0i16; 1024];
    let mut group = c.benchmark_group("media_stream/media_to_pcm16");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("parse_inbound_pcm16", |b| {
        b.iter(|| {
            scratch.copy_from_slice(black_box(&frame));
            let event = media_stream::parse_inbound_pcm16(&mut scratch, &mut audio, &mut pcm);
            black_box(matches!(event, Ok(Inbound::Media(_))))
        })
    });
    // The copy alone, to subtract from the figure above.
    group.bench_function("frame_copy_only", |b| {
        b.iter(|| {
            scratch.copy_from_slice(black_box(&frame));
            black_box(&mut scratch);
        })
    });
    // What a caller whose frame buffer is disposable pays: no copy.
    group.bench_function("parse_inbound_pcm16_no_copy", |b| {
        b.iter_batched_ref(
            || frame.clone(),
            |f| {
                let event = media_stream::parse_inbound_pcm16(f, &mut audio, &mut pcm);
                black_box(matches!(event, Ok(Inbound::Media(_))))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn base64_codecs(c: &mut Criterion) {
    let mulaw = mulaw_frame();
    let text = STANDARD.encode(&mulaw);
    let mut out = [0u8; 256];
    assert_eq!(b64::decode(text.as_bytes(), &mut out), Ok(160));
    assert_eq!(out[..160], mulaw[..]);

    let mut group = c.benchmark_group("media_stream/base64_decode");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("hand", |b| b.iter(|| black_box(b64::decode(black_box(text.as_bytes()), &mut out))));
    group.bench_function("base64_crate", |b| {
        b.iter(|| black_box(STANDARD.decode_slice(black_box(text.as_bytes()), &mut out).ok()))
    });
    group.finish();

    let mut text_out = [0u8; 256];
    let mut group = c.benchmark_group("media_stream/base64_encode");
    group.throughput(Throughput::Bytes(mulaw.len() as u64));
    group.bench_function("hand", |b| b.iter(|| black_box(b64::encode(black_box(&mulaw), &mut text_out))));
    group.bench_function("base64_crate", |b| {
        b.iter(|| black_box(STANDARD.encode_slice(black_box(&mulaw), &mut text_out).ok()))
    });
    group.finish();
}

fn write_media(c: &mut Criterion) {
    let mulaw = mulaw_frame();
    let pcm: Vec<i16> = mulaw.iter().map(|&m| g711::ulaw_decode(m)).collect();
    let sid = StreamSid::new(STREAM).unwrap();
    let mut out = Vec::with_capacity(512);
    let mut group = c.benchmark_group("media_stream/write_media");
    group.throughput(Throughput::Bytes(mulaw.len() as u64));
    group.bench_function("from_mulaw", |b| {
        b.iter(|| {
            media_stream::write_media(&mut out, &sid, black_box(&mulaw));
            black_box(out.len())
        })
    });
    group.bench_function("from_pcm16", |b| {
        b.iter(|| {
            media_stream::write_media_pcm16(&mut out, &sid, black_box(&pcm));
            black_box(out.len())
        })
    });
    group.bench_function("from_pcm16_two_step", |b| {
        let mut codes = [0u8; 160];
        b.iter(|| {
            let n = g711::encode(Law::Mu, black_box(&pcm), &mut codes).unwrap_or(0);
            media_stream::write_media(&mut out, &sid, &codes[..n]);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, parse_media, media_to_pcm16, base64_codecs, write_media);
criterion_main!(benches);
