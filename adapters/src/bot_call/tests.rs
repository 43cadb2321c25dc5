use super::*;
use crate::bot::{BotConfig, BotProtocol};
use crate::bridge::BridgeConfig;

const SID: &str = "MZ1";

fn started_call(barge_in: bool) -> BotCall {
    let mut bridge =
        CallBridge::new(BridgeConfig { backend: None, ..BridgeConfig::default() }, Instant::ZERO)
            .expect("default config");
    let mut start = br#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"From":"+15550001","Tenant":"acme","voxproxy_route":"3"}},"streamSid":"MZ1"}"#.to_vec();
    bridge.handle_twilio(Instant::ZERO, &mut start).expect("start");
    let config = BotConfig { protocol: BotProtocol::Twilio, ..Default::default() };
    BotCall::new(bridge, config, barge_in, Instant::ZERO).expect("bot call")
}

fn media(ms: u64, mulaw: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    media_stream::base64::encode_append(mulaw, &mut payload);
    let payload = String::from_utf8(payload).unwrap();
    format!(
        r#"{{"event":"media","sequenceNumber":"2","media":{{"track":"inbound","chunk":"1","timestamp":"{ms}","payload":"{payload}"}},"streamSid":"{SID}"}}"#
    )
    .into_bytes()
}

fn bot_media(mulaw: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    media_stream::base64::encode_append(mulaw, &mut payload);
    let payload = String::from_utf8(payload).unwrap();
    format!(r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"{payload}"}}}}"#).into_bytes()
}

fn to_bot(call: &mut BotCall) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(message) = call.poll_bot() {
        out.push(match message {
            BotMessage::Text(t) => String::from_utf8(t.to_vec()).unwrap(),
            BotMessage::Binary(b) => format!("binary {}", b.len()),
            BotMessage::Close => "close".to_owned(),
        });
    }
    out
}

fn to_twilio(call: &mut BotCall) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(output) = call.poll_twilio() {
        out.push(match output {
            TwilioOutput::Text(t) => String::from_utf8(t.to_vec()).unwrap(),
            TwilioOutput::Ping => "ping".to_owned(),
            TwilioOutput::Event(e) => format!("event {}", e.name()),
            TwilioOutput::Close { code, reason } => format!("close {code} {reason}"),
        });
    }
    out
}

fn speech() -> Vec<u8> {
    let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/caller-speech.ulaw")).unwrap();
    raw[..raw.len() / 160 * 160].to_vec()
}

#[test]
fn the_bot_sees_twilio_s_messages_without_voxproxy_s_route_label() {
    let mut call = started_call(true);
    let opening = to_bot(&mut call);
    assert_eq!(opening.len(), 2, "{opening:?}");
    assert!(opening[0].contains(r#""event":"connected""#));
    assert!(opening[1].contains(r#""Tenant":"acme""#), "{}", opening[1]);
    assert!(!opening[1].contains("voxproxy_route"), "{}", opening[1]);

    let frame: Vec<u8> = (0..160u32).map(|i| (i * 7 % 256) as u8).collect();
    call.handle_twilio(Instant::from_millis(20), &mut media(0, &frame)).unwrap();
    let sent = to_bot(&mut call);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let mut expected = Vec::new();
    media_stream::base64::encode_append(&frame, &mut expected);
    assert!(sent[0].contains(core::str::from_utf8(&expected).unwrap()), "bit-exact: {}", sent[0]);

    call.handle_twilio(Instant::from_millis(30), &mut br#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"3","dtmf":{"track":"inbound_track","digit":"5"}}"#.to_vec()).unwrap();
    let sent = to_bot(&mut call);
    assert!(sent.iter().any(|m| m.contains(r#""digit":"5""#)), "{sent:?}");
}

#[test]
fn bot_audio_and_marks_reach_twilio_and_the_mark_echo_reaches_the_bot() {
    let mut call = started_call(true);
    let _ = to_bot(&mut call);
    let audio = vec![0x55u8; 160];
    call.handle_bot_text(Instant::from_millis(20), &mut bot_media(&audio)).unwrap();
    call.handle_bot_text(
        Instant::from_millis(20),
        &mut br#"{"event":"mark","streamSid":"MZ1","mark":{"name":"done"}}"#.to_vec(),
    )
    .unwrap();
    let out: Vec<String> = to_twilio(&mut call).into_iter().filter(|m| !m.starts_with("event ")).collect();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].contains(r#""event":"media""#) && out[0].contains("VVVV"), "{}", out[0]);
    assert!(out[1].contains(r#""name":"vb-1""#), "{}", out[1]);
    assert!(to_bot(&mut call).is_empty(), "no echo before Twilio played it");
    call.handle_twilio(
        Instant::from_millis(40),
        &mut br#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"vb-1"}}"#.to_vec(),
    )
    .unwrap();
    let echo = to_bot(&mut call);
    assert!(echo.len() == 1 && echo[0].contains(r#""name":"done""#), "{echo:?}");
}

fn speak_over_bot(barge_in: bool) -> (BotCall, Vec<String>) {
    let mut call = started_call(barge_in);
    let _ = to_bot(&mut call);
    // Two seconds of bot audio: most of it waits here.
    for _ in 0..10 {
        call.handle_bot_text(Instant::from_millis(20), &mut bot_media(&[0x55; 1600])).unwrap();
    }
    let _ = to_twilio(&mut call);
    assert!(call.queued_ms() > 1000);
    let mut out = Vec::new();
    for (i, frame) in speech().chunks(160).take(50).enumerate() {
        let now = Instant::from_millis(40 + 20 * i as u64);
        call.handle_twilio(now, &mut media(20 * i as u64, frame)).unwrap();
        call.handle_timeout(now);
        out.extend(to_twilio(&mut call));
    }
    (call, out)
}

#[test]
fn caller_speech_over_the_bot_clears_twilio_and_the_queue_when_barge_in_is_on() {
    let (mut call, out) = speak_over_bot(true);
    assert!(out.iter().any(|m| m == "event speech_started"), "{out:?}");
    let clears = out.iter().filter(|m| m.contains(r#""event":"clear""#)).count();
    assert_eq!(clears, 1, "{out:?}");
    assert_eq!(call.stats().barge_ins, 1);
    assert_eq!(call.queued_ms(), 0);
    // The bot hears of it as from Twilio: nothing was marked, so no echo,
    // but the leg counts the clear.
    assert_eq!(call.bot_stats().caller_clears, 1);
    let _ = to_bot(&mut call);
}

#[test]
fn caller_speech_leaves_the_bot_alone_when_barge_in_is_off() {
    let (call, out) = speak_over_bot(false);
    assert!(out.iter().any(|m| m == "event speech_started"), "{out:?}");
    assert!(!out.iter().any(|m| m.contains(r#""event":"clear""#)), "{out:?}");
    assert_eq!(call.stats().barge_ins, 0);
    assert!(call.queued_ms() > 0);
}

#[test]
fn the_bot_closing_ends_the_call_as_the_backend_s_doing() {
    let mut call = started_call(true);
    call.handle_bot_closed(Instant::from_millis(100));
    assert!(call.is_finished());
    assert_eq!(call.bridge().end_reason(), Some(EndReason::BackendHangup));
    let out = to_twilio(&mut call);
    assert_eq!(out.last().map(String::as_str), Some("close 1000 backend hung up"), "{out:?}");
}

#[test]
fn twilio_s_stop_sends_the_bot_stop_and_a_close() {
    let mut call = started_call(true);
    let _ = to_bot(&mut call);
    call.handle_twilio(
        Instant::from_millis(100),
        &mut br#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#.to_vec(),
    )
    .unwrap();
    let sent = to_bot(&mut call);
    assert!(sent.len() == 2 && sent[0].contains(r#""event":"stop""#) && sent[1] == "close", "{sent:?}");
    assert_eq!(call.bridge().end_reason(), Some(EndReason::TwilioStop));
}

#[test]
fn a_failed_bot_is_a_failed_leg() {
    let mut call = started_call(true);
    call.handle_bot_failed(Instant::from_millis(10));
    assert_eq!(call.bridge().end_reason(), Some(EndReason::BackendFailed));
    assert!(to_twilio(&mut call).last().is_some_and(|m| m.starts_with("close 1011")));
}

/// Every slot of the recording as (caller, heard) μ-law codes, one per 20 ms.
fn recorded_slots(call: BotCall, now: Instant) -> Vec<(u8, u8)> {
    let mut bridge = call.into_bridge();
    bridge.finish_recording();
    let mut slots = Vec::new();
    while let Some(block) = bridge.poll_recording(now) {
        let pair = |at: usize| i16::from_le_bytes([block[at], block[at + 1]]);
        slots.push((voxproxy_core::g711::ulaw_encode(pair(0)), voxproxy_core::g711::ulaw_encode(pair(2))));
    }
    slots
}

#[test]
fn a_recorded_bot_call_holds_the_caller_and_the_bot_as_the_caller_heard_it() {
    let mut call = started_call(false);
    call.start_recording();
    let _ = to_bot(&mut call);
    for i in 0..6u8 {
        let now = Instant::from_millis(20 + 20 * u64::from(i));
        call.handle_twilio(now, &mut media(20 * u64::from(i), &[0x10 + i; 160])).unwrap();
        if i == 1 {
            // 40 ms of bot audio while the second caller frame is in.
            call.handle_bot_text(now, &mut bot_media(&[0x55; 320])).unwrap();
        }
        let _ = to_twilio(&mut call);
        assert!(call.poll_recording(now).is_none(), "nothing is final within the slack");
    }
    let slots = recorded_slots(call, Instant::from_millis(200));
    let caller: Vec<u8> = slots.iter().map(|s| s.0).take(6).collect();
    assert_eq!(caller, (0x10..0x16).collect::<Vec<u8>>(), "the caller, frame by frame");
    let heard: Vec<u8> = slots.iter().map(|s| s.1).collect();
    assert_eq!(heard, [0xFF, 0xFF, 0x55, 0x55, 0xFF, 0xFF], "the bot, when it was sent, after silence");
}

#[test]
fn a_barge_in_cuts_the_recorded_bot_audio_the_caller_never_heard() {
    let (call, out) = speak_over_bot(true);
    assert!(out.iter().any(|m| m.contains(r#""event":"clear""#)));
    let unrecorded = recorded_slots(call, Instant::from_millis(5_000));
    assert!(unrecorded.is_empty(), "not recording: nothing recorded");

    let mut call = started_call(true);
    call.start_recording();
    let _ = to_bot(&mut call);
    call.handle_twilio(Instant::from_millis(20), &mut media(0, &[0xFF; 160])).unwrap();
    // Two seconds of bot audio at once: Twilio is sent it ahead of playing.
    for _ in 0..10 {
        call.handle_bot_text(Instant::from_millis(20), &mut bot_media(&[0x55; 1600])).unwrap();
    }
    let _ = to_twilio(&mut call);
    let mut cleared = false;
    for (i, frame) in speech().chunks(160).take(50).enumerate() {
        let now = Instant::from_millis(40 + 20 * i as u64);
        call.handle_twilio(now, &mut media(20 + 20 * i as u64, frame)).unwrap();
        call.handle_timeout(now);
        cleared |= to_twilio(&mut call).iter().any(|m| m.contains(r#""event":"clear""#));
    }
    assert!(cleared, "the caller barged in");
    let heard: Vec<u8> = recorded_slots(call, Instant::from_millis(5_000)).iter().map(|s| s.1).collect();
    let bot_slots = heard.iter().filter(|&&c| c == 0x55).count();
    assert!(bot_slots > 0 && bot_slots < 50, "heard until the clear, not the 100 slots sent: {bot_slots}");
}
