//! `bot_call`: a whole [`BotCall`] (the call bridge and a Twilio-protocol
//! bot leg, barge-in on) driven by an arbitrary mix of Twilio frames
//! (well-formed or random), bot messages (well-formed or random), the bot
//! closing, the proxy closing and clock steps, checking after every step:
//! - every text for Twilio is JSON Twilio's own outbound parser reads, and
//!   every text for the bot is a Media Streams message;
//! - nothing but events follows the close towards Twilio;
//! - `poll_timeout` is never in the past, and the leg's bounds hold.

use core::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use voxproxy_adapters::bot::{BotConfig, BotMessage};
use voxproxy_adapters::bot_call::{BotCall, TwilioOutput};
use voxproxy_adapters::bridge::{BridgeConfig, CallBridge, EndReason};
use voxproxy_adapters::media_stream::{
    self, AccountSid, CallSid, MediaFormat, Start, StreamSid, Track, Tracks,
};
use voxproxy_core::Instant;

const STREAM: &str = "MZ00000000000000000000000000000001";

#[derive(Arbitrary, Debug)]
enum Step {
    TwilioText(Vec<u8>),
    TwilioMedia { len: u16, fill: u8 },
    TwilioMark { id: u8 },
    TwilioDtmf(char),
    TwilioStop,
    BotText(Vec<u8>),
    BotMedia { len: u16, fill: u8 },
    BotMark { len: u8 },
    BotClear,
    BotBinary(Vec<u8>),
    BotClosed,
    Hangup,
    Advance { ms: u16 },
    Timeout,
}

fn started(now: Instant) -> BotCall {
    let mut bridge = CallBridge::new(BridgeConfig { backend: None, ..BridgeConfig::default() }, now)
        .expect("default config");
    let start = Start {
        sequence_number: 1,
        stream_sid: StreamSid::new(STREAM).expect("valid sid"),
        account_sid: AccountSid::new("AC00000000000000000000000000000001").expect("valid sid"),
        call_sid: CallSid::new("CA00000000000000000000000000000001").expect("valid sid"),
        tracks: Tracks { inbound: true, outbound: false },
        media_format: MediaFormat::mulaw_8k_mono(),
        custom_parameters: vec![("From".to_owned(), "+1555\"0001".to_owned())],
    };
    let mut frame = Vec::new();
    media_stream::write_start(&mut frame, &start);
    bridge.handle_twilio(now, &mut frame).expect("start");
    BotCall::new(bridge, BotConfig { max_queued_ms: 400, ..BotConfig::default() }, true, now).expect("config")
}

/// The fuzz entry point.
pub fn bot_call(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut now = Instant::ZERO;
    let mut call = started(now);
    let sid = StreamSid::new(STREAM).expect("valid sid");
    let (mut sequence, mut media_ms) = (2u64, 0u64);
    let mut frame = Vec::new();
    let mut closed = false;
    while !u.is_empty() {
        let Ok(step) = Step::arbitrary(&mut u) else { break };
        let timed_out = matches!(step, Step::Timeout);
        match step {
            Step::TwilioText(mut text) => drop(call.handle_twilio(now, &mut text)),
            Step::TwilioMedia { len, fill } => {
                let len = usize::from(len % 800);
                let media = media_stream::Media {
                    sequence_number: sequence,
                    stream_sid: sid,
                    track: Track::Inbound,
                    chunk: sequence,
                    timestamp_ms: media_ms,
                    payload_len: len,
                };
                media_stream::write_inbound_media(&mut frame, &media, &vec![fill; len]);
                (sequence, media_ms) = (sequence + 1, media_ms + len as u64 / 8);
                drop(call.handle_twilio(now, &mut frame));
            }
            Step::TwilioMark { id } => {
                let name = format!("vb-{id}");
                let mark = media_stream::Mark { sequence_number: sequence, stream_sid: sid, name: &name };
                media_stream::write_inbound_mark(&mut frame, &mark);
                sequence += 1;
                drop(call.handle_twilio(now, &mut frame));
            }
            Step::TwilioDtmf(digit) => {
                let dtmf = media_stream::Dtmf {
                    sequence_number: sequence,
                    stream_sid: sid,
                    track: Track::Inbound,
                    digit,
                };
                media_stream::write_dtmf(&mut frame, &dtmf);
                sequence += 1;
                drop(call.handle_twilio(now, &mut frame));
            }
            Step::TwilioStop => call.handle_close(now, EndReason::TwilioStop),
            Step::BotText(mut text) => {
                let _ = call.handle_bot_text(now, &mut text);
            }
            Step::BotMedia { len, fill } => {
                media_stream::write_media(&mut frame, &sid, &vec![fill; usize::from(len % 4000)]);
                let _ = call.handle_bot_text(now, &mut frame);
            }
            Step::BotMark { len } => {
                media_stream::write_mark(&mut frame, &sid, &"m".repeat(usize::from(len)));
                let _ = call.handle_bot_text(now, &mut frame);
            }
            Step::BotClear => {
                media_stream::write_clear(&mut frame, &sid);
                let _ = call.handle_bot_text(now, &mut frame);
            }
            Step::BotBinary(bytes) => assert!(call.handle_bot_binary(now, &bytes).is_err()),
            Step::BotClosed => call.handle_bot_closed(now),
            Step::Hangup => call.handle_close(now, EndReason::Hangup),
            Step::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
            Step::Timeout => {
                // A deadline may lie behind a clock `Advance` moved without
                // telling the call: the driver then handles it at once. What
                // must hold is checked below: none is still due afterwards.
                if let Some(at) = call.poll_timeout() {
                    now = now.max(at);
                }
                call.handle_timeout(now);
            }
        }
        drain(&mut call, &mut closed);
        assert!(call.queued_ms() <= 400);
        // Once the clock has been handed in and the outputs taken, the next
        // deadline lies ahead (else the call loop would spin).
        if timed_out && let Some(at) = call.poll_timeout() {
            assert!(at > now, "a deadline already due after handle_timeout");
        }
    }
}

/// Takes and checks everything for both sides.
fn drain(call: &mut BotCall, closed: &mut bool) {
    while let Some(output) = call.poll_twilio() {
        match output {
            TwilioOutput::Text(text) => {
                assert!(!*closed, "a frame to Twilio after the close");
                let mut copy = text.to_vec();
                let mut audio = vec![0u8; copy.len()];
                media_stream::parse_outbound(&mut copy, &mut audio).unwrap_or_else(|e| {
                    panic!("Twilio could not read {:?}: {e}", String::from_utf8_lossy(text))
                });
            }
            TwilioOutput::Ping => assert!(!*closed, "a ping after the close"),
            TwilioOutput::Close { .. } => *closed = true,
            TwilioOutput::Event(_) => {}
        }
    }
    while let Some(message) = call.poll_bot() {
        if let BotMessage::Text(text) = message {
            let mut copy = text.to_vec();
            let mut audio = vec![0u8; copy.len()];
            media_stream::parse_inbound(&mut copy, &mut audio).unwrap_or_else(|e| {
                panic!("the bot could not read {:?}: {e}", String::from_utf8_lossy(text))
            });
        }
    }
}
