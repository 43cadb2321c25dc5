//! One call of a load run: dial, then a sending and a receiving half that
//! run concurrently in the call's task and share its meter and playout.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use voxproxy_core::time::Instant;

use super::identity::{FrameIdentity, IDENTITY_LEN};
use super::meter::{CallMeter, latency_micros as micros};
use super::playout::{Playout, PlayoutEvent};
use super::report::{CallReport, Percentiles, PlaybackCounts};
use super::twilio::{CLOSE_TIMEOUT, CallParams, ServerFrame, TwilioCall, TwilioReceiver, TwilioSender};
use super::{RunContext, SimError};

/// One 20 ms frame of μ-law.
const FRAME_BYTES: usize = 160;
pub(super) const FRAME: Duration = Duration::from_millis(20);

/// How the receiving half ended.
#[derive(Debug)]
enum Receiving {
    Open,
    Closed,
    Failed(SimError),
}

/// What the two halves share.
#[derive(Debug)]
struct CallState {
    meter: CallMeter,
    playout: Playout,
    receiving: Receiving,
    media_messages: u64,
    unknown_events: u64,
}

fn lock(state: &Mutex<CallState>) -> MutexGuard<'_, CallState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RunContext {
    fn at(&self, t: std::time::Instant) -> Instant {
        Instant::ZERO + t.saturating_duration_since(self.epoch)
    }

    fn wall(&self, t: Instant) -> std::time::Instant {
        self.epoch + Duration::from_nanos(t.as_nanos())
    }
}

/// Places call `index` and runs it to the end.
pub(super) async fn run_call(ctx: &RunContext, index: u32, shard: usize) -> CallReport {
    let mut params = CallParams::random();
    params.from = format!("+1415555{:04}", index % 10_000);
    let mut report = CallReport {
        index,
        call_sid: params.call_sid.as_str().to_owned(),
        stream_sid: params.stream_sid.as_str().to_owned(),
        ..CallReport::default()
    };
    let result = match TwilioCall::dial(&ctx.config.url, ctx.config.auth_token.as_deref(), params).await {
        Ok(call) => {
            report.setup_us = Some(u64::try_from(call.setup_time().as_micros()).unwrap_or(u64::MAX));
            ctx.progress.calls_up.fetch_add(1, Ordering::Relaxed);
            let result = stream(ctx, index, shard, call, &mut report).await;
            ctx.progress.calls_up.fetch_sub(1, Ordering::Relaxed);
            result
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        ctx.progress.calls_failed.fetch_add(1, Ordering::Relaxed);
        report.failure = Some(e.reason());
        report.failure_detail = Some(e.to_string());
    }
    report
}

async fn stream(
    ctx: &RunContext,
    index: u32,
    shard: usize,
    call: TwilioCall,
    report: &mut CallReport,
) -> Result<(), SimError> {
    let (mut sender, mut receiver) = call.into_split();
    let started = std::time::Instant::now();
    // The run's call count is bounded by the identity's call field.
    let meter = CallMeter::new(u16::try_from(index).unwrap_or(u16::MAX));
    let state = Mutex::new(CallState {
        meter,
        playout: Playout::new(ctx.at(started)),
        receiving: Receiving::Open,
        media_messages: 0,
        unknown_events: 0,
    });
    let wake = Notify::new();
    let done = Notify::new();
    let sending = async {
        let result = send_half(ctx, index, shard, &mut sender, &state, &wake, started).await;
        done.notify_one();
        result
    };
    let receiving = receive_half(ctx, shard, &mut receiver, &state, &wake, &done);
    let (sent, ()) = tokio::join!(sending, receiving);

    let mut state = state.into_inner().unwrap_or_else(PoisonError::into_inner);
    report.frames = state.meter.finish();
    report.latency_us = Percentiles::of(state.meter.latency());
    report.playback =
        PlaybackCounts::from_playout(&state.playout.stats(), state.media_messages, state.unknown_events);
    report.dtmf_sent = *sent.as_ref().unwrap_or(&0);
    sent.map(|_| ())
}

/// Sends media on schedule, DTMF, mark echoes, then `stop`. Returns the
/// number of DTMF digits sent.
async fn send_half(
    ctx: &RunContext,
    index: u32,
    shard: usize,
    sender: &mut TwilioSender,
    state: &Mutex<CallState>,
    wake: &Notify,
    started: std::time::Instant,
) -> Result<u64, SimError> {
    let config = &ctx.config;
    let frames = u32::try_from(config.media.as_millis() / FRAME.as_millis()).unwrap_or(u32::MAX).max(1);
    let media_end = started + FRAME * frames;
    let audio = &ctx.audio;
    // Callers start at different points of the audio, so they do not all
    // talk in unison.
    let mut cursor = (index as usize).wrapping_mul(7_919 * FRAME_BYTES) % audio.len().max(1);
    let digits: Vec<char> = config.dtmf.chars().collect();
    let digit_at = |i: usize| started + config.media.mul_f64((i + 1) as f64 / (digits.len() + 1) as f64);
    let mut next_digit = 0usize;
    let mut next_frame = 0u32;
    let mut payload = [0u8; FRAME_BYTES];
    let mut echoes: Vec<PlayoutEvent> = Vec::new();
    let mut drain_until: Option<std::time::Instant> = None;

    loop {
        let mark_due = lock(state).playout.poll_timeout().map(|t| ctx.wall(t));
        let frame_due = (next_frame < frames).then(|| started + FRAME * next_frame);
        let digit_due = (next_digit < digits.len()).then(|| digit_at(next_digit));
        // While draining, look again every frame time for the last frames.
        let drain_due = drain_until.map(|until| (std::time::Instant::now() + FRAME).min(until));
        let deadline = [mark_due, frame_due, digit_due, drain_due].into_iter().flatten().min();
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
        let now = std::time::Instant::now();
        {
            let mut s = lock(state);
            match std::mem::replace(&mut s.receiving, Receiving::Open) {
                Receiving::Open => {}
                Receiving::Closed => return Err(SimError::ClosedEarly { after: now - started }),
                Receiving::Failed(e) => return Err(e),
            }
            s.playout.handle_timeout(ctx.at(now));
            echoes.extend(std::iter::from_fn(|| s.playout.poll_event()));
        }
        for echo in echoes.drain(..) {
            sender.send_mark_echo(echo.name()).await?;
        }
        while next_frame < frames && started + FRAME * next_frame <= now {
            fill(&mut payload, audio, &mut cursor);
            // `frames` is bounded by MAX_MEDIA, within the identity's frame range.
            if let Some(id) = FrameIdentity::new(u16::try_from(index).unwrap_or(u16::MAX), next_frame) {
                id.write(&mut payload[..IDENTITY_LEN]);
            }
            let sent_at = std::time::Instant::now();
            lock(state).meter.on_sent(next_frame, ctx.at(sent_at));
            ctx.record_send_lateness(
                shard,
                sent_at,
                sent_at.saturating_duration_since(started + FRAME * next_frame),
            );
            ctx.progress.frames_sent.fetch_add(1, Ordering::Relaxed);
            sender.send_media_at(u64::from(next_frame) * 20, &payload).await?;
            next_frame += 1;
        }
        while next_digit < digits.len() && digit_at(next_digit) <= now {
            sender.send_dtmf(digits[next_digit]).await?;
            next_digit += 1;
        }
        if next_frame >= frames && next_digit >= digits.len() {
            let until = *drain_until.get_or_insert(media_end.max(now) + config.grace);
            if lock(state).meter.outstanding() == 0 || now >= until {
                break;
            }
        }
    }
    sender.send_stop_and_close().await?;
    Ok(next_digit as u64)
}

/// Copies the next frame of the looping audio, a slice at a time (one
/// division per wrap of the audio, not one per byte).
fn fill(payload: &mut [u8; FRAME_BYTES], audio: &[u8], cursor: &mut usize) {
    if audio.is_empty() {
        payload.fill(0xff);
        return;
    }
    let mut filled = 0;
    while filled < FRAME_BYTES {
        *cursor %= audio.len();
        let run = (FRAME_BYTES - filled).min(audio.len() - *cursor);
        payload[filled..filled + run].copy_from_slice(&audio[*cursor..*cursor + run]);
        filled += run;
        *cursor += run;
    }
}

/// Reads the server's messages until it closes (or, once the sending half
/// is done, until it closes or [`CLOSE_TIMEOUT`] passes).
async fn receive_half(
    ctx: &RunContext,
    shard: usize,
    receiver: &mut TwilioReceiver,
    state: &Mutex<CallState>,
    wake: &Notify,
    done: &Notify,
) {
    let arrival = receiver.arrival();
    let mut closing: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        let frame = tokio::select! {
            frame = receiver.next_frame() => frame,
            () = done.notified(), if closing.is_none() => {
                closing = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                continue;
            }
            () = tokio::time::sleep_until(closing.unwrap_or(far)), if closing.is_some() => break,
        };
        let now = ctx.at(std::time::Instant::now());
        match frame {
            Ok(Some(ServerFrame::Media(audio))) => {
                let mut s = lock(state);
                s.media_messages += 1;
                let mut matched = 0u64;
                {
                    let wait = arrival.wait(std::time::SystemTime::now());
                    let mut histogram = ctx.latency[shard].lock().unwrap_or_else(PoisonError::into_inner);
                    let mut at_kernel =
                        ctx.latency_at_kernel[shard].lock().unwrap_or_else(PoisonError::into_inner);
                    let mut waits = ctx.receive_wait[shard].lock().unwrap_or_else(PoisonError::into_inner);
                    let mut timeline = ctx.timeline();
                    let since_start = Duration::from_nanos(now.as_nanos());
                    s.meter.on_media(now, audio, |rtt| {
                        histogram.saturating_record(micros(rtt));
                        timeline.record_round_trip(since_start, micros(rtt));
                        if let Some(wait) = wait {
                            at_kernel.saturating_record(micros(rtt.saturating_sub(wait)));
                            waits.saturating_record(micros(wait));
                        }
                        matched += 1;
                    });
                }
                s.playout.handle_media(now, audio.len());
                let echo_due = s.playout.has_events();
                drop(s);
                ctx.progress.frames_received.fetch_add(matched, Ordering::Relaxed);
                if echo_due {
                    wake.notify_one();
                }
            }
            Ok(Some(ServerFrame::Mark(name))) => {
                lock(state).playout.handle_mark(now, name);
                wake.notify_one();
            }
            Ok(Some(ServerFrame::Clear)) => {
                let mut s = lock(state);
                s.playout.handle_clear(now);
                s.meter.reset_scanner();
                drop(s);
                wake.notify_one();
            }
            Ok(Some(ServerFrame::Unknown(_))) => lock(state).unknown_events += 1,
            Ok(None) => {
                if closing.is_none() {
                    lock(state).receiving = Receiving::Closed;
                    wake.notify_one();
                }
                break;
            }
            Err(e) => {
                if closing.is_none() {
                    lock(state).receiving = Receiving::Failed(e);
                    wake.notify_one();
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_loops_over_the_audio_as_a_byte_at_a_time_copy_would() {
        for len in [1usize, 7, 159, 160, 161, 1000] {
            let audio: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (mut cursor, mut expected_at) = (len / 2, len / 2);
            let mut payload = [0u8; FRAME_BYTES];
            for _ in 0..5 {
                fill(&mut payload, &audio, &mut cursor);
                for byte in payload {
                    assert_eq!(byte, audio[expected_at % len], "audio of {len} bytes");
                    expected_at += 1;
                }
            }
        }
        let mut payload = [0u8; FRAME_BYTES];
        fill(&mut payload, &[], &mut 0);
        assert_eq!(payload, [0xff; FRAME_BYTES], "no audio is silence");
    }
}
