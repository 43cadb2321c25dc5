use super::*;
use crate::media_stream::{Inbound, Track, parse_inbound};
use proptest::prelude::*;

const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

fn info() -> CallInfo {
    CallInfo {
        call_sid: CallSid::new("CA3f8e6d7c2b1a4f5e9d0c8b7a6f5e4d3c").unwrap(),
        account_sid: AccountSid::new("AC2c2b4c5b1f0e4d0b9a8c7d6e5f4a3b2c").unwrap(),
        stream_sid: StreamSid::new(STREAM).unwrap(),
        from: "+15550001".to_owned(),
        to: "+15550002".to_owned(),
        custom_parameters: vec![
            ("lang".to_owned(), "en \"GB\"".to_owned()),
            ("from".to_owned(), "x".to_owned()),
        ],
        tracks: Tracks { inbound: true, outbound: false },
    }
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn leg(protocol: BotProtocol) -> BotLeg {
    BotLeg::new(BotConfig { protocol, max_queued_ms: 1000 }, &info(), ms(0)).unwrap()
}

/// Everything queued for the bot, as owned messages: text as `String`.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Text(String),
    Binary(Vec<u8>),
    Close,
}

fn drain_bot(leg: &mut BotLeg) -> Vec<Out> {
    let mut out = Vec::new();
    while let Some(m) = leg.poll_bot() {
        out.push(match m {
            BotMessage::Text(t) => Out::Text(String::from_utf8(t.to_vec()).unwrap()),
            BotMessage::Binary(b) => Out::Binary(b.to_vec()),
            BotMessage::Close => Out::Close,
        });
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Act {
    Audio(Vec<u8>),
    Mark(String),
    Clear,
}

fn drain_caller(leg: &mut BotLeg) -> Vec<Act> {
    let mut out = Vec::new();
    while let Some(a) = leg.poll_caller() {
        out.push(match a {
            CallerAction::Audio(a) => Act::Audio(a.to_vec()),
            CallerAction::Mark(m) => Act::Mark(m.to_owned()),
            CallerAction::Clear => Act::Clear,
        });
    }
    out
}

fn bot_media(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    media_stream::write_media(&mut out, &StreamSid::new(STREAM).unwrap(), payload);
    out
}

fn bot_mark(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    media_stream::write_mark(&mut out, &StreamSid::new(STREAM).unwrap(), name);
    out
}

fn bot_clear() -> Vec<u8> {
    let mut out = Vec::new();
    media_stream::write_clear(&mut out, &StreamSid::new(STREAM).unwrap());
    out
}

#[test]
fn twilio_bot_sees_twilios_opening_and_media_bit_exact() {
    let mut leg = leg(BotProtocol::Twilio);
    let opening = drain_bot(&mut leg);
    assert_eq!(
        opening[0],
        Out::Text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned())
    );
    let Out::Text(start) = &opening[1] else { panic!("{opening:?}") };
    let mut start = start.clone().into_bytes();
    let Inbound::Start(start) = parse_inbound(&mut start, &mut []).unwrap() else { panic!() };
    assert_eq!((start.sequence_number, start.stream_sid.as_str()), (1, STREAM));
    assert_eq!(start.custom_parameter("lang"), Some("en \"GB\""));
    assert!(start.media_format.is_mulaw_8k_mono());
    assert_eq!(opening.len(), 2);

    for i in 0..3u8 {
        let audio: Vec<u8> = (0..160).map(|n| n as u8 ^ i).collect();
        leg.handle_caller_media(ms(20 * u64::from(i)), &audio, 20 * u64::from(i));
        let [Out::Text(frame)] = &drain_bot(&mut leg)[..] else { panic!() };
        // The counters are strings, as Twilio writes them.
        assert!(frame.starts_with(&format!(r#"{{"event":"media","sequenceNumber":"{}""#, 2 + i)), "{frame}");
        let mut frame = frame.clone().into_bytes();
        let mut decoded = [0u8; 200];
        let Inbound::Media(m) = parse_inbound(&mut frame, &mut decoded).unwrap() else { panic!() };
        assert_eq!(
            (m.sequence_number, m.chunk, m.timestamp_ms),
            (2 + u64::from(i), 1 + u64::from(i), 20 * u64::from(i))
        );
        assert_eq!((m.track, &decoded[..m.payload_len]), (Track::Inbound, &audio[..]));
    }
    assert!(!leg.handle_caller_dtmf(ms(60), 'x'), "not a DTMF digit");
    assert!(!leg.handle_caller_dtmf(ms(60), '\u{90a50}'));
    assert!(drain_bot(&mut leg).is_empty());
    assert!(leg.handle_caller_dtmf(ms(60), '5'));
    let [Out::Text(dtmf)] = &drain_bot(&mut leg)[..] else { panic!() };
    assert_eq!(
        dtmf,
        &format!(
            r#"{{"event":"dtmf","streamSid":"{STREAM}","sequenceNumber":"5","dtmf":{{"track":"inbound_track","digit":"5"}}}}"#
        )
    );
    leg.handle_caller_stop(ms(80));
    let out = drain_bot(&mut leg);
    assert!(
        matches!(&out[0], Out::Text(t) if t.starts_with(r#"{"event":"stop","sequenceNumber":"6""#)),
        "{out:?}"
    );
    assert_eq!(out[1], Out::Close);
    assert!(leg.is_finished());
    assert_eq!(leg.handle_bot_text(ms(81), &mut bot_clear()), Err(BotError::Finished));
}

#[test]
fn twilio_marks_echo_after_play_and_at_once_on_clear() {
    let mut leg = leg(BotProtocol::Twilio);
    drain_bot(&mut leg);
    leg.handle_bot_text(ms(0), &mut bot_media(&[1; 320])).unwrap();
    leg.handle_bot_text(ms(0), &mut bot_mark("first")).unwrap();
    leg.handle_bot_text(ms(0), &mut bot_media(&[2; 100])).unwrap();
    leg.handle_bot_text(ms(0), &mut bot_mark("second")).unwrap();
    leg.handle_bot_text(ms(0), &mut bot_media(&[3; 160])).unwrap();
    leg.handle_bot_text(ms(0), &mut bot_mark("third")).unwrap();
    assert_eq!(
        drain_caller(&mut leg),
        [
            Act::Audio(vec![1; 160]),
            Act::Audio(vec![1; 160]),
            Act::Mark("vb-1".into()),
            Act::Audio(vec![2; 100]),
            Act::Mark("vb-2".into()),
            Act::Audio(vec![3; 160]),
            Act::Mark("vb-3".into()),
        ]
    );
    assert!(drain_bot(&mut leg).is_empty(), "nothing echoed before Twilio plays it");
    assert!(!leg.handle_caller_mark(ms(40), "vp-1"), "the bridge's own mark");
    assert!(leg.handle_caller_mark(ms(52), "vb-2"));
    // Echoing vb-2 implies vb-1 played too, in order.
    let echoes = drain_bot(&mut leg);
    assert_eq!(echoes.len(), 2);
    assert!(
        matches!(&echoes[0], Out::Text(t) if t.contains(r#""name":"first""#) && t.contains(r#""sequenceNumber":"2""#))
    );
    assert!(matches!(&echoes[1], Out::Text(t) if t.contains(r#""name":"second""#)));
    // More audio and a mark, then the bot clears: vb-3 (at Twilio) and the
    // queued mark are echoed now, in order, and Twilio gets a clear.
    leg.handle_bot_text(ms(53), &mut bot_media(&[4; 1600])).unwrap();
    leg.handle_bot_text(ms(53), &mut bot_mark("fourth")).unwrap();
    leg.handle_bot_text(ms(53), &mut bot_clear()).unwrap();
    let echoes = drain_bot(&mut leg);
    assert!(
        matches!(&echoes[..], [Out::Text(a), Out::Text(b)] if a.contains("third") && b.contains("fourth")),
        "{echoes:?}"
    );
    assert_eq!(drain_caller(&mut leg), [Act::Clear]);
    assert!(leg.handle_caller_mark(ms(60), "vb-3"), "a late echo of a cleared mark is still the leg's");
    assert!(drain_bot(&mut leg).is_empty(), "and is not echoed twice");
    assert_eq!(leg.queued_ms(), 0);
    let stats = leg.stats();
    assert_eq!((stats.marks_played, stats.marks_cleared, stats.bot_clears), (2, 2, 1));
}

#[test]
fn twilio_bad_input_is_counted_and_dropped() {
    let mut leg = leg(BotProtocol::Twilio);
    let other = StreamSid::new("MZother").unwrap();
    let mut foreign = Vec::new();
    media_stream::write_media(&mut foreign, &other, &[0; 10]);
    assert_eq!(leg.handle_bot_text(ms(0), &mut foreign), Err(BotError::StreamSidMismatch));
    assert!(matches!(leg.handle_bot_text(ms(0), &mut b"{".to_vec()), Err(BotError::Message(_))));
    assert!(matches!(
        leg.handle_bot_text(ms(0), &mut br#"{"event":"dance","streamSid":"MZ1"}"#.to_vec()),
        Err(BotError::UnknownEvent { event }) if event.as_str() == "dance"
    ));
    assert_eq!(leg.handle_bot_binary(ms(0), &[0; 4]), Err(BotError::UnexpectedBinary));
    let mut big = vec![b' '; MAX_TEXT_BYTES + 1];
    assert!(matches!(leg.handle_bot_text(ms(0), &mut big), Err(BotError::TooLarge { text: true, .. })));
    for _ in 0..MAX_MARKS {
        leg.handle_bot_text(ms(0), &mut bot_mark("m")).unwrap();
    }
    assert_eq!(
        leg.handle_bot_text(ms(0), &mut bot_mark("m")),
        Err(BotError::TooManyMarks { max: MAX_MARKS })
    );
    assert_eq!(leg.stats().bad_messages, 6);
    assert_eq!(leg.queued_ms(), 0);
    // Every error reads as a sentence naming what to do or what was wrong.
    let text = BotError::StreamSidMismatch.to_string();
    assert!(text.contains("streamSid"), "{text}");
}

#[test]
fn a_burst_is_paced_bounded_and_counted() {
    let mut leg = leg(BotProtocol::Twilio);
    drain_bot(&mut leg);
    // 2 s of audio at once into a 1 s queue: half is dropped and counted.
    for _ in 0..10 {
        leg.handle_bot_text(ms(0), &mut bot_media(&[7; 1600])).unwrap();
    }
    assert_eq!(leg.queued_ms(), 1000);
    assert_eq!(leg.stats().bot_audio_dropped_bytes, 8000);
    // The lead: 200 ms go at once, then one frame per 20 ms.
    assert_eq!(drain_caller(&mut leg).len(), 10);
    assert_eq!(leg.poll_timeout(), Some(ms(20)));
    let mut now = 20;
    let mut sent = 10;
    while let Some(at) = leg.poll_timeout() {
        assert_eq!(at, ms(now));
        leg.handle_timeout(at);
        sent += drain_caller(&mut leg).len();
        now += 20;
    }
    assert_eq!((sent, now), (50, 20 + 40 * 20));
    assert_eq!(leg.stats().frames_to_caller, 50);
}

#[test]
fn a_barge_in_from_the_bridge_empties_the_queue_without_a_second_clear() {
    let mut leg = leg(BotProtocol::L16(L16Rate::Hz8000));
    drain_bot(&mut leg);
    leg.handle_bot_binary(ms(0), &[0; 8000]).unwrap();
    leg.handle_bot_text(ms(0), &mut br#"{"action":"notify","payload":{"id":1}}"#.to_vec()).unwrap();
    assert_eq!(drain_caller(&mut leg).len(), 10);
    leg.handle_caller_clear(ms(5));
    assert_eq!(drain_caller(&mut leg), []);
    assert_eq!(leg.poll_timeout(), None);
    assert!(drain_bot(&mut leg).is_empty(), "the notify's audio never played: no echo");
    assert_eq!((leg.stats().caller_clears, leg.stats().marks_cleared), (1, 1));
}

#[test]
fn l16_opening_audio_and_dtmf_at_each_rate() {
    for (rate, bytes) in [(L16Rate::Hz8000, 320), (L16Rate::Hz16000, 640), (L16Rate::Hz24000, 960)] {
        let mut leg = leg(BotProtocol::L16(rate));
        let [Out::Text(open)] = &drain_bot(&mut leg)[..] else { panic!() };
        assert_eq!(
            open,
            &format!(
                r#"{{"event":"websocket:connected","content-type":"audio/l16;rate={}","callSid":"CA3f8e6d7c2b1a4f5e9d0c8b7a6f5e4d3c","accountSid":"AC2c2b4c5b1f0e4d0b9a8c7d6e5f4a3b2c","streamSid":"{STREAM}","from":"+15550001","to":"+15550002","lang":"en \"GB\""}}"#,
                rate.hz()
            )
        );
        // Twilio's 30 ms become one 20 ms frame now and one later.
        leg.handle_caller_media(ms(0), &[0xFF; 240], 0);
        assert!(matches!(&drain_bot(&mut leg)[..], [Out::Binary(b)] if b.len() == bytes));
        leg.handle_caller_media(ms(30), &[0xFF; 80], 30);
        assert!(matches!(&drain_bot(&mut leg)[..], [Out::Binary(b)] if b.len() == bytes));
        assert!(leg.handle_caller_dtmf(ms(40), '#'));
        assert_eq!(
            drain_bot(&mut leg),
            [Out::Text(r##"{"event":"websocket:dtmf","digit":"#"}"##.to_owned())]
        );
        leg.handle_caller_stop(ms(60));
        assert_eq!(drain_bot(&mut leg), [Out::Close]);
    }
}

#[test]
fn l16_pcm_is_decoded_and_resampled_losslessly_at_8k() {
    let mut leg = leg(BotProtocol::L16(L16Rate::Hz8000));
    drain_bot(&mut leg);
    let mulaw: Vec<u8> = (0..160).map(|n| (n * 3) as u8).collect();
    leg.handle_caller_media(ms(0), &mulaw, 0);
    let [Out::Binary(pcm)] = &drain_bot(&mut leg)[..] else { panic!() };
    let samples: Vec<i16> = pcm.chunks(2).map(|p| i16::from_le_bytes([p[0], p[1]])).collect();
    let expected: Vec<i16> = mulaw.iter().map(|&c| voxproxy_core::g711::ulaw_decode(c)).collect();
    assert_eq!(samples, expected);
    // And back: the bot's PCM, odd-sized chunks, re-framed to 20 ms.
    let mut bytes = Vec::new();
    for s in &samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    leg.handle_bot_binary(ms(0), &bytes[..100]).unwrap();
    leg.handle_bot_binary(ms(0), &bytes[100..]).unwrap();
    assert_eq!(drain_caller(&mut leg), [Act::Audio(mulaw)]);
}

#[test]
fn l16_clear_and_notify() {
    let mut leg = leg(BotProtocol::L16(L16Rate::Hz16000));
    drain_bot(&mut leg);
    leg.handle_bot_binary(ms(0), &[0; 640]).unwrap();
    leg.handle_bot_text(
        ms(0),
        &mut br#" { "payload" : {"a":[1,"x\u00e9"]}, "action":"notify", "extra":null } "#.to_vec(),
    )
    .unwrap();
    leg.handle_bot_text(ms(0), &mut br#"{"action":"notify"}"#.to_vec()).unwrap();
    assert_eq!(
        drain_caller(&mut leg),
        [Act::Audio(vec![0xFF; 160]), Act::Mark("vb-1".into()), Act::Mark("vb-2".into())]
    );
    assert!(leg.handle_caller_mark(ms(20), "vb-2"));
    assert_eq!(
        drain_bot(&mut leg),
        [
            Out::Text(r#"{"event":"websocket:notify","payload":{"a":[1,"x\u00e9"]}}"#.to_owned()),
            Out::Text(r#"{"event":"websocket:notify"}"#.to_owned()),
        ]
    );
    leg.handle_bot_binary(ms(20), &[0; 6400]).unwrap();
    leg.handle_bot_text(ms(20), &mut br#"{"action":"clear"}"#.to_vec()).unwrap();
    assert_eq!(drain_bot(&mut leg), [Out::Text(r#"{"event":"websocket:cleared"}"#.to_owned())]);
    assert_eq!(drain_caller(&mut leg), [Act::Clear]);
    assert_eq!(leg.queued_ms(), 0);
}

#[test]
fn l16_bad_input_is_counted_and_dropped() {
    let mut leg = leg(BotProtocol::L16(L16Rate::Hz24000));
    type Check = fn(&BotError) -> bool;
    let cases: Vec<(&[u8], Check)> = vec![
        (
            br#"{"action":"dance"}"#,
            |e| matches!(e, BotError::UnknownAction { action } if action.as_str() == "dance"),
        ),
        (br#"{"event":"x"}"#, |e| matches!(e, BotError::MissingAction)),
        (br#"{"action":1}"#, |e| matches!(e, BotError::ActionNotAString)),
        (br#"{"action":"clear","action":"clear"}"#, |e| {
            matches!(e, BotError::DuplicateKey { key: "action" })
        }),
        (br#"{"action":"clear"} x"#, |e| matches!(e, BotError::Message(_))),
        (br#"["action"]"#, |e| matches!(e, BotError::Message(_))),
        (br#"{"action":"notify","payload":"#, |e| matches!(e, BotError::Message(_))),
    ];
    for (text, check) in &cases {
        let err = leg.handle_bot_text(ms(0), &mut text.to_vec()).unwrap_err();
        assert!(check(&err), "{}: {err:?}", String::from_utf8_lossy(text));
        assert!(!err.to_string().is_empty());
    }
    let big = format!(r#"{{"action":"notify","payload":"{}"}}"#, "x".repeat(MAX_NOTIFY_PAYLOAD));
    assert!(matches!(
        leg.handle_bot_text(ms(0), &mut big.into_bytes()),
        Err(BotError::PayloadTooLarge { .. })
    ));
    assert_eq!(leg.handle_bot_binary(ms(0), &[0; 3]), Err(BotError::OddLength { len: 3 }));
    assert!(matches!(
        leg.handle_bot_binary(ms(0), &vec![0; MAX_BINARY_BYTES + 2]),
        Err(BotError::TooLarge { text: false, .. })
    ));
    assert_eq!(leg.stats().bad_messages, cases.len() as u64 + 3);
    assert_eq!(leg.queued_ms(), 0);
}

#[test]
fn a_slow_bot_loses_caller_audio_before_events() {
    let mut leg = leg(BotProtocol::Twilio);
    for i in 0..100 {
        leg.handle_caller_media(ms(20 * i), &[0xFF; 160], 20 * i);
    }
    assert!(leg.handle_caller_dtmf(ms(2000), '1'));
    let stats = leg.stats();
    // Two opening messages, then audio frames fill the rest of the audio slots.
    let fit = outbox::AUDIO_SLOTS as u64 - 2;
    assert_eq!(
        (stats.frames_to_bot, stats.frames_to_bot_dropped, stats.events_to_bot_dropped),
        (fit, 100 - fit, 0)
    );
    let out = drain_bot(&mut leg);
    assert!(matches!(out.last(), Some(Out::Text(t)) if t.contains("dtmf")));
}

#[test]
fn config_is_checked() {
    for max_queued_ms in [0, 19, MAX_MAX_QUEUED_MS + 1] {
        let config = BotConfig { protocol: BotProtocol::Twilio, max_queued_ms };
        assert!(matches!(BotLeg::new(config, &info(), ms(0)), Err(BotError::Config { .. })));
    }
    assert_eq!(L16Rate::from_hz(24000), Some(L16Rate::Hz24000));
    assert_eq!(L16Rate::from_hz(44100), None);
    assert_eq!(parse_mark_name("vb-12"), Some(12));
    for bad in ["vb-", "vb-x", "vp-1", "vb-1 ", "vb-99999999999999999999999"] {
        assert_eq!(parse_mark_name(bad), None, "{bad}");
    }
}

/// One step of a hostile bot and a live caller.
#[derive(Clone, Debug)]
enum Step {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    CallerMedia(u16),
    CallerMark(u64),
    BargeIn,
    Advance(u16),
    DrainSome(u8),
}

fn step() -> impl Strategy<Value = Step> {
    let text = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(bot_media(&[5; 300])),
        Just(bot_mark("m")),
        Just(bot_clear()),
        Just(br#"{"action":"notify","payload":[1]}"#.to_vec()),
        Just(br#"{"action":"clear"}"#.to_vec()),
    ];
    prop_oneof![
        text.prop_map(Step::Text),
        proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Step::Binary),
        (0u16..400).prop_map(Step::CallerMedia),
        (0u64..40).prop_map(Step::CallerMark),
        Just(Step::BargeIn),
        (0u16..500).prop_map(Step::Advance),
        any::<u8>().prop_map(Step::DrainSome),
    ]
}

proptest! {
    /// Whatever the bot and the caller do, nothing panics, every bound holds,
    /// audio never goes more than the lead ahead of real time, and a played
    /// echo never reaches the bot before its mark went to Twilio.
    #[test]
    fn hostile_sequences_keep_every_bound(
        protocol in prop_oneof![
            Just(BotProtocol::Twilio),
            Just(BotProtocol::L16(L16Rate::Hz8000)),
            Just(BotProtocol::L16(L16Rate::Hz16000)),
            Just(BotProtocol::L16(L16Rate::Hz24000)),
        ],
        steps in proptest::collection::vec(step(), 0..60),
    ) {
        let mut leg = BotLeg::new(BotConfig { protocol, max_queued_ms: 500 }, &info(), ms(0)).unwrap();
        let mut now = ms(0);
        let mut sent_bytes = 0u64;
        let mut first_send: Option<Instant> = None;
        for step in steps {
            match step {
                Step::Text(mut t) => { let _ = leg.handle_bot_text(now, &mut t); }
                Step::Binary(b) => { let _ = leg.handle_bot_binary(now, &b); }
                Step::CallerMedia(n) => leg.handle_caller_media(now, &vec![0x55; usize::from(n)], now.as_micros() / 1000),
                Step::CallerMark(id) => {
                    let name = format!("vb-{id}");
                    prop_assert!(leg.handle_caller_mark(now, &name));
                }
                Step::BargeIn => { leg.handle_caller_clear(now); sent_bytes = 0; first_send = None; }
                Step::Advance(d) => { now += core::time::Duration::from_millis(u64::from(d)); leg.handle_timeout(now); }
                Step::DrainSome(n) => { for _ in 0..n { if leg.poll_bot().is_none() { break; } } }
            }
            while let Some(action) = leg.poll_caller() {
                match action {
                    CallerAction::Audio(a) => {
                        prop_assert!(!a.is_empty() && a.len() <= FRAME_BYTES);
                        let start = *first_send.get_or_insert(now);
                        sent_bytes += a.len() as u64;
                        // Bytes sent since the first, at 8 per ms, stay
                        // within real time plus the 200 ms lead.
                        let elapsed_bytes = now.saturating_duration_since(start).as_micros() as u64 / 125;
                        prop_assert!(sent_bytes <= elapsed_bytes + 1600);
                    }
                    CallerAction::Clear => { sent_bytes = 0; first_send = None; }
                    CallerAction::Mark(name) => prop_assert!(parse_mark_name(name).is_some()),
                }
            }
            prop_assert!(leg.queued_ms() <= 500);
            prop_assert!(leg.queued_for_bot() <= outbox::SLOTS);
            if let Some(at) = leg.poll_timeout() { prop_assert!(at >= now); }
        }
    }
}
