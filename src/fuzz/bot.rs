//! `bot_messages`: a [`BotLeg`] in either protocol (Twilio, or L16 at any
//! rate) driven by an arbitrary sequence of bot messages (well-formed,
//! mangled or random text and binary), caller events, mark echoes, clears
//! and clock steps, with its invariants checked after every step:
//! - every text message to the bot is JSON (Twilio protocol: one Twilio's
//!   own parser reads back);
//! - audio to the caller comes in frames of 1–160 bytes and never more than
//!   the playout lead ahead of real time;
//! - queued audio, messages for the bot and marks stay within their bounds;
//! - `poll_timeout` is never in the past, and nothing follows a close.

use core::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use voxproxy_adapters::bot::{
    BotConfig, BotLeg, BotMessage, BotProtocol, CallInfo, CallerAction, L16Rate, PLAYOUT_LEAD,
};
use voxproxy_adapters::media_stream::{self, AccountSid, CallSid, StreamSid, Tracks};
use voxproxy_core::Instant;

const STREAM: &str = "MZ00000000000000000000000000000001";
const MAX_QUEUED_MS: u32 = 400;

#[derive(Arbitrary, Debug)]
enum Step {
    BotText(Vec<u8>),
    BotBinary(Vec<u8>),
    /// A well-formed message of the bot's protocol, optionally with one byte flipped.
    BotMessage {
        kind: u8,
        len: u16,
        flip: Option<(u16, u8)>,
    },
    CallerMedia {
        len: u8,
        fill: u8,
    },
    CallerDtmf(char),
    MarkEcho {
        id: u8,
        foreign: bool,
    },
    BargeIn,
    CallerStop,
    BotClosed,
    Advance {
        ms: u16,
    },
    Timeout,
    DrainBot {
        max: u8,
    },
}

fn well_formed(protocol: BotProtocol, kind: u8, len: u16) -> (bool, Vec<u8>) {
    let sid = StreamSid::new(STREAM).expect("valid sid");
    let mut out = Vec::new();
    match (protocol, kind % 4) {
        (BotProtocol::Twilio, 0) => {
            media_stream::write_media(&mut out, &sid, &vec![0x5A; usize::from(len % 4000)])
        }
        (BotProtocol::Twilio, 1) => {
            media_stream::write_mark(&mut out, &sid, &"m".repeat(usize::from(len % 300)))
        }
        (BotProtocol::Twilio, 2) => media_stream::write_clear(&mut out, &sid),
        (BotProtocol::Twilio, _) => {
            out.extend_from_slice(br#"{"event":"media","streamSid":"MZ1","media":{"payload":""}}"#)
        }
        (BotProtocol::L16(_), 0) => return (false, vec![0x11; usize::from(len)]),
        (BotProtocol::L16(_), 1) => {
            out = format!(
                r#"{{"action":"notify","payload":{{"n":{len},"s":"{}"}}}}"#,
                "p".repeat(usize::from(len % 3000))
            )
            .into_bytes();
        }
        (BotProtocol::L16(_), 2) => out.extend_from_slice(br#"{"action":"clear"}"#),
        (BotProtocol::L16(_), _) => out.extend_from_slice(br#"{"action":"notify"}"#),
    }
    (true, out)
}

fn info() -> CallInfo {
    CallInfo {
        call_sid: CallSid::new("CA00000000000000000000000000000001").expect("valid sid"),
        account_sid: AccountSid::new("AC00000000000000000000000000000001").expect("valid sid"),
        stream_sid: StreamSid::new(STREAM).expect("valid sid"),
        from: "+15550001".to_owned(),
        to: "+15550002".to_owned(),
        custom_parameters: vec![("k\"ey".to_owned(), "v\u{1}".to_owned())],
        tracks: Tracks { inbound: true, outbound: false },
    }
}

/// Takes and checks up to `max` messages for the bot; notes the close.
fn drain_bot(leg: &mut BotLeg, protocol: BotProtocol, max: usize, closed: &mut bool) {
    for _ in 0..max {
        let Some(message) = leg.poll_bot() else { return };
        assert!(!*closed, "a message after the close");
        match message {
            BotMessage::Text(text) => {
                let mut frame = text.to_vec();
                if protocol == BotProtocol::Twilio {
                    let mut audio_buf = vec![0u8; frame.len()];
                    media_stream::parse_inbound(&mut frame, &mut audio_buf)
                        .unwrap_or_else(|e| panic!("unreadable message to the bot: {e}"));
                } else {
                    serde_json::from_slice::<serde_json::Value>(&frame).expect("JSON to the bot");
                }
            }
            BotMessage::Binary(pcm) => {
                assert!(matches!(protocol, BotProtocol::L16(_)), "binary on the Twilio protocol");
                assert!(matches!(pcm.len(), 320 | 640 | 960), "{} bytes is not 20 ms", pcm.len());
            }
            BotMessage::Close => *closed = true,
        }
    }
}

/// The fuzz entry point.
pub fn bot_messages(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let protocol = match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 => BotProtocol::Twilio,
        1 => BotProtocol::L16(L16Rate::Hz8000),
        2 => BotProtocol::L16(L16Rate::Hz16000),
        _ => BotProtocol::L16(L16Rate::Hz24000),
    };
    let config = BotConfig { protocol, max_queued_ms: MAX_QUEUED_MS };
    let mut leg = BotLeg::new(config, &info(), Instant::ZERO).expect("valid config");
    let mut now = Instant::ZERO;
    // The latest time the leg has been given: `Advance` moves `now` alone.
    let mut fed = Instant::ZERO;
    let mut closed = false;
    // Audio bytes sent to the caller since Twilio's player was last idle or cleared.
    let mut burst: Option<(Instant, u64)> = None;
    // `arbitrary` yields default values once the data runs out, so stop there.
    while !u.is_empty() {
        let Ok(step) = Step::arbitrary(&mut u) else { break };
        // Every step but these hands the leg the time.
        let unseen = matches!(step, Step::Advance { .. } | Step::DrainBot { .. });
        match step {
            Step::BotText(mut text) => drop(leg.handle_bot_text(now, &mut text)),
            Step::BotBinary(bytes) => drop(leg.handle_bot_binary(now, &bytes)),
            Step::BotMessage { kind, len, flip } => {
                let (text, mut bytes) = well_formed(protocol, kind, len);
                if let Some((at, byte)) = flip
                    && !bytes.is_empty()
                {
                    let i = usize::from(at) % bytes.len();
                    bytes[i] = byte;
                }
                let result = if text {
                    leg.handle_bot_text(now, &mut bytes)
                } else {
                    leg.handle_bot_binary(now, &bytes)
                };
                if let Err(e) = result {
                    assert!(!e.to_string().is_empty());
                }
            }
            Step::CallerMedia { len, fill } => {
                leg.handle_caller_media(now, &vec![fill; usize::from(len)], now.as_micros() / 1000);
            }
            Step::CallerDtmf(digit) => {
                let valid = matches!(digit.to_ascii_uppercase(), '0'..='9' | '*' | '#' | 'A'..='D');
                assert_eq!(leg.handle_caller_dtmf(now, digit), valid && !leg.is_finished());
            }
            Step::MarkEcho { id, foreign } => {
                let name = if foreign { format!("vp-{id}") } else { format!("vb-{id}") };
                assert_eq!(leg.handle_caller_mark(now, &name), !foreign);
            }
            Step::BargeIn => {
                leg.handle_caller_clear(now);
                burst = None;
            }
            Step::CallerStop => leg.handle_caller_stop(now),
            Step::BotClosed => leg.handle_bot_closed(now),
            Step::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
            Step::Timeout => {
                if let Some(at) = leg.poll_timeout() {
                    assert!(at >= fed, "timeout before the leg's own time");
                    // Past when the clock ran on unseen: handle it now.
                    now = now.max(at);
                }
                leg.handle_timeout(now);
            }
            Step::DrainBot { max } => drain_bot(&mut leg, protocol, usize::from(max), &mut closed),
        }
        if !unseen {
            fed = now;
        }
        drain_caller(&mut leg, now, &mut burst);
        assert!(leg.queued_ms() <= u64::from(MAX_QUEUED_MS));
        assert!(leg.queued_for_bot() <= 32);
        // A deadline may lie behind a clock the leg has not been shown yet
        // (the driver then handles it at once), never behind its own time.
        if let Some(at) = leg.poll_timeout() {
            assert!(at >= fed, "timeout before the leg's own time");
        }
    }
    drain_bot(&mut leg, protocol, usize::MAX, &mut closed);
}

fn drain_caller(leg: &mut BotLeg, now: Instant, burst: &mut Option<(Instant, u64)>) {
    while let Some(action) = leg.poll_caller() {
        match action {
            CallerAction::Audio(audio) => {
                assert!((1..=160).contains(&audio.len()), "{}-byte frame", audio.len());
                let (start, sent) = burst.get_or_insert((now, 0));
                *sent += audio.len() as u64;
                let elapsed_bytes = now.saturating_duration_since(*start).as_micros() as u64 / 125;
                let lead_bytes = PLAYOUT_LEAD.as_micros() as u64 / 125;
                assert!(
                    *sent <= elapsed_bytes + lead_bytes,
                    "{sent} bytes sent after {elapsed_bytes} played"
                );
            }
            CallerAction::Mark(name) => assert!(name.starts_with("vb-"), "{name}"),
            CallerAction::Clear => *burst = None,
        }
    }
}
