//! The caller's VAD through the real binary: a buzzing line is not speech,
//! and a talkspurt cut off by a pause or a jump in Twilio's timestamps ends,
//! so the caller's next words barge in on the backend.

use std::time::Duration;

use crate::audio::{self, FRAME};
use crate::harness::{ADMIN_TOKEN, Backend, FromProxy, Io, Proxy, TwilioCall, WAIT};

both_io!(
    buzzing_line_does_not_barge_in,
    speech_after_a_pause_barges_in,
    speech_after_a_timestamp_jump_barges_in
);

/// `frames` 20 ms frames of mains buzz as μ-law: 50 Hz and its harmonics up
/// to 4 kHz at 1/k amplitude (a ground loop's sawtooth-like spectrum), at
/// `dbfs` RMS.
fn mains_buzz(frames: usize, dbfs: f64) -> Vec<Vec<u8>> {
    let n = frames * FRAME;
    let raw: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 / 8_000.0;
            (1..80).map(|k| (2.0 * std::f64::consts::PI * 50.0 * f64::from(k) * t).sin() / f64::from(k)).sum()
        })
        .collect();
    let rms = (raw.iter().map(|v| v * v).sum::<f64>() / n as f64).sqrt();
    let gain = 32_768.0 * 10f64.powf(dbfs / 20.0) / rms;
    let pcm: Vec<i16> = raw.iter().map(|v| (v * gain).round() as i16).collect();
    audio::encode(&pcm).chunks(FRAME).map(<[u8]>::to_vec).collect()
}

/// Lets the backend learn the proxy's RTP address from one caller frame.
async fn open_uplink(call: &mut TwilioCall, backend: &mut Backend, frame: &[u8]) {
    call.send_media(frame).await;
    backend.recv_audio(1, 0).await;
}

async fn buzzing_line_does_not_barge_in(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    // The line: buzz at -45 dBFS for the whole call, 4 s of it;
    // the backend answers from 1 s on with 2 s of speech. Twilio never
    // echoes marks, so all of the backend's audio stays unplayed. Half a
    // second into the answer the caller's audio pauses for 0.5 s: that
    // ends any caller talkspurt, so a buzz taken for speech would start a
    // new one, over the backend.
    let buzz = mains_buzz(200, -45.0);
    open_uplink(&mut call, &mut backend, &buzz[0]).await;
    let answer = audio::caller_speech(0.3, 2.0);
    let mut answer_frames = answer.chunks(FRAME);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut sent, mut media) = (0usize, 0usize);
    for (i, frame) in buzz.iter().enumerate().skip(1) {
        tick.tick().await;
        if !(75..100).contains(&i) {
            call.send_media(frame).await;
        }
        if i >= 50
            && let Some(payload) = answer_frames.next()
        {
            backend.send_audio(0, payload, 160, sent == 0).await;
            sent += 1;
        }
        while let Some(message) = call.next(Duration::ZERO).await {
            match message {
                FromProxy::Media(_) => media += 1,
                FromProxy::Mark(_) => {}
                FromProxy::Clear => panic!("the buzz barged in after {media} of {sent} backend frames"),
                FromProxy::Closed(code) => panic!("the proxy closed the call: {code:?}"),
            }
        }
    }
    // What is still in flight.
    let drained = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Some(message) = call.next(drained.saturating_duration_since(tokio::time::Instant::now())).await
    {
        match message {
            FromProxy::Media(_) => media += 1,
            FromProxy::Mark(_) => {}
            other => panic!("{other:?} after {media} of {sent} backend frames"),
        }
    }
    assert_eq!(sent, 100);
    assert!(media >= sent, "every backend frame reached the caller: {media} of {sent}");
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["barge_ins"].as_u64(), Some(0), "{record}");
    assert_eq!(record["vad_segments"].as_u64(), Some(0), "the buzz is no speech at all: {record}");
}

async fn speech_after_a_pause_barges_in(io: Io) {
    caller_interrupted_then_talks_over_backend(io, Interruption::Pause).await;
}

async fn speech_after_a_timestamp_jump_barges_in(io: Io) {
    caller_interrupted_then_talks_over_backend(io, Interruption::TimestampJump).await;
}

/// How the caller's first sentence is cut off.
#[derive(Clone, Copy, PartialEq)]
enum Interruption {
    /// No audio for a second, then the audio goes on where it stopped.
    Pause,
    /// Audio without pause, but `media.timestamp` jumps 2 s ahead.
    TimestampJump,
}

/// The caller talks; the backend starts its answer while the caller's talkspurt
/// is still open (no barge-in: the caller spoke first); then the caller's audio
/// is interrupted, and its next sentence, over the backend, is a barge-in.
async fn caller_interrupted_then_talks_over_backend(io: Io, interruption: Interruption) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend.arg()]);
    let mut events = proxy.events().await;
    let mut call = TwilioCall::start(&proxy).await;
    open_uplink(&mut call, &mut backend, &[0xFF; FRAME]).await;

    // 0.3 s to 1.1 s of the recording: the caller's first sentence.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for frame in audio::caller_speech(0.3, 0.8).chunks(FRAME) {
        tick.tick().await;
        call.send_media(frame).await;
    }
    let started = events.wait_for("speech_started", &call.stream_sid, WAIT).await;
    assert!(started["media_ms"].as_u64().is_some_and(|ms| ms < 800), "{started}");

    // The backend begins its answer. The caller goes on to 1.6 s (the rest
    // of its sentence) or falls silent for a second.
    let backend_speech = audio::caller_speech(0.3, 1.2);
    let mut backend_frames = backend_speech.chunks(FRAME).cycle();
    let rest_of_sentence = audio::caller_speech(1.1, 0.5);
    for i in 0..50 {
        tick.tick().await;
        backend.send_audio(0, backend_frames.next().expect("cycle"), 160, i == 0).await;
        if interruption == Interruption::TimestampJump
            && let Some(frame) = rest_of_sentence.chunks(FRAME).nth(i)
        {
            call.send_media(frame).await;
        }
    }
    let audio_end_ms = call.media_ms;
    let jump_ms = if interruption == Interruption::TimestampJump { 2_000 } else { 0 };
    call.media_ms += jump_ms;

    // The caller's next sentence (after 0.2 s of quiet) over the backend.
    let caller_speech = audio::caller_speech(1.6, 1.2);
    let mut caller_frames = caller_speech.chunks(FRAME);
    let mut media_before_clear = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                backend.send_audio(0, backend_frames.next().expect("cycle"), 160, false).await;
                let frame = caller_frames.next().expect("a `clear` while the caller's second sentence plays");
                call.send_media(frame).await;
            }
            message = call.next(Duration::from_secs(5)) => match message {
                Some(FromProxy::Clear) => break,
                Some(FromProxy::Media(_)) => media_before_clear += 1,
                Some(FromProxy::Mark(_)) => {}
                other => panic!("unexpected {other:?} before the barge-in"),
            },
        }
    }
    assert!(media_before_clear > 0, "the backend's audio reached Twilio before the barge-in");
    let stopped = events.wait_for("speech_stopped", &call.stream_sid, WAIT).await;
    assert!(
        stopped["media_ms"].as_u64().is_some_and(|ms| ms <= audio_end_ms),
        "the first talkspurt ended with the audio before the interruption ({audio_end_ms} ms): {stopped}"
    );
    let barge = events.wait_for("barge_in", &call.stream_sid, WAIT).await;
    assert!(
        barge["media_ms"].as_u64().is_some_and(|ms| ms >= audio_end_ms + jump_ms),
        "the barge-in is at the caller's second sentence: {barge}"
    );
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    assert!(record["barge_ins"].as_u64() >= Some(1), "{record}");
}
