//! Whole calls through the sans-IO bot leg on virtual time, in both
//! protocols: a simulated caller, a simulated Twilio player (plays 20 ms
//! per tick, echoes a mark once the audio before it has played, and every
//! pending mark on `clear`, as Twilio does), and a simulated bot.

use std::collections::VecDeque;

use voxproxy_adapters::bot::{BotConfig, BotLeg, BotMessage, BotProtocol, CallInfo, CallerAction, L16Rate};
use voxproxy_adapters::media_stream::{self, AccountSid, CallSid, Inbound, StreamSid, Tracks};
use voxproxy_core::{Instant, g711};

const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

fn info() -> CallInfo {
    CallInfo {
        call_sid: CallSid::new("CA3f8e6d7c2b1a4f5e9d0c8b7a6f5e4d3c").expect("sid"),
        account_sid: AccountSid::new("AC2c2b4c5b1f0e4d0b9a8c7d6e5f4a3b2c").expect("sid"),
        stream_sid: StreamSid::new(STREAM).expect("sid"),
        from: "+15550001".to_owned(),
        to: "+15550002".to_owned(),
        custom_parameters: vec![("persona".to_owned(), "support".to_owned())],
        tracks: Tracks { inbound: true, outbound: false },
    }
}

/// Twilio's player: a buffer of audio and marks, played at real time.
#[derive(Default)]
struct Player {
    queue: VecDeque<Item>,
    played: Vec<u8>,
    /// Largest amount of audio ever waiting in the player, in bytes.
    max_buffered: usize,
    clears: usize,
}

enum Item {
    Audio(u8),
    Mark(String),
}

impl Player {
    fn take(&mut self, leg: &mut BotLeg) {
        while let Some(action) = leg.poll_caller() {
            match action {
                CallerAction::Audio(audio) => self.queue.extend(audio.iter().map(|&b| Item::Audio(b))),
                CallerAction::Mark(name) => self.queue.push_back(Item::Mark(name.to_owned())),
                CallerAction::Clear => {
                    self.clears += 1;
                    let marks: Vec<String> = self
                        .queue
                        .drain(..)
                        .filter_map(|i| if let Item::Mark(m) = i { Some(m) } else { None })
                        .collect();
                    for m in marks {
                        assert!(leg.handle_caller_mark(Instant::ZERO, &m));
                    }
                }
            }
        }
        let buffered = self.queue.iter().filter(|i| matches!(i, Item::Audio(_))).count();
        self.max_buffered = self.max_buffered.max(buffered);
    }

    /// Plays 20 ms at `now`; echoes marks reached.
    fn tick(&mut self, now: Instant, leg: &mut BotLeg) {
        let mut played = 0;
        while let Some(item) = self.queue.front() {
            match item {
                Item::Audio(b) if played < 160 => {
                    self.played.push(*b);
                    played += 1;
                }
                Item::Audio(_) => break,
                Item::Mark(name) => assert!(leg.handle_caller_mark(now, name)),
            }
            self.queue.pop_front();
        }
    }
}

/// What the bot received, in order.
#[derive(Default)]
struct Bot {
    texts: Vec<(Instant, String)>,
    pcm: Vec<i16>,
    closed: bool,
}

impl Bot {
    fn take(&mut self, now: Instant, leg: &mut BotLeg) {
        while let Some(message) = leg.poll_bot() {
            assert!(!self.closed, "a message after the close");
            match message {
                BotMessage::Text(t) => self.texts.push((now, String::from_utf8(t.to_vec()).expect("UTF-8"))),
                BotMessage::Binary(b) => {
                    self.pcm.extend(b.chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]])));
                }
                BotMessage::Close => self.closed = true,
            }
        }
    }

    fn when(&self, needle: &str) -> Option<Instant> {
        self.texts.iter().find(|(_, t)| t.contains(needle)).map(|(at, _)| *at)
    }
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// One 20 ms tick: the caller's frame in, everything drained, Twilio plays.
fn tick(t: u64, leg: &mut BotLeg, player: &mut Player, bot: &mut Bot, caller: &[u8]) {
    let now = ms(t);
    leg.handle_timeout(now);
    leg.handle_caller_media(now, caller, t);
    player.take(leg);
    player.tick(now, leg);
    player.take(leg);
    bot.take(now, leg);
}

#[test]
fn twilio_protocol_call_end_to_end() {
    let sid = StreamSid::new(STREAM).expect("sid");
    let mut leg = BotLeg::new(BotConfig::default(), &info(), Instant::ZERO).expect("config");
    let (mut player, mut bot) = (Player::default(), Bot::default());
    bot.take(Instant::ZERO, &mut leg);
    assert!(bot.texts[0].1.starts_with(r#"{"event":"connected""#));
    assert!(bot.texts[1].1.contains(r#""customParameters":{"persona":"support"}"#));

    // The bot greets: 2 s at once, in four 0.5 s messages, marks after the 2nd and 4th.
    let greeting: Vec<u8> = (0..16_000u32).map(|i| (i % 251) as u8).collect();
    let mut frame = Vec::new();
    for (i, part) in greeting.chunks(4000).enumerate() {
        media_stream::write_media(&mut frame, &sid, part);
        leg.handle_bot_text(Instant::ZERO, &mut frame).expect("media");
        if i % 2 == 1 {
            media_stream::write_mark(&mut frame, &sid, &format!("greeting-{i}"));
            leg.handle_bot_text(Instant::ZERO, &mut frame).expect("mark");
        }
    }
    let caller_audio: Vec<u8> = (0..200 * 160u32).map(|i| (i * 7 % 256) as u8).collect();
    for (n, chunk) in caller_audio.chunks(160).enumerate().take(150) {
        let t = 20 * n as u64;
        if t == 1000 {
            assert!(leg.handle_caller_dtmf(ms(t), '7'));
        }
        tick(t, &mut leg, &mut player, &mut bot, chunk);
    }
    // Both directions bit-exact, Twilio's counters consecutive.
    let mut received = Vec::new();
    let mut audio = vec![0u8; 4096];
    for (i, (_, text)) in bot.texts.iter().filter(|(_, t)| t.contains(r#""event":"media""#)).enumerate() {
        let mut frame = text.clone().into_bytes();
        let Inbound::Media(m) = media_stream::parse_inbound(&mut frame, &mut audio).expect("Twilio's shape")
        else {
            panic!("not media")
        };
        assert_eq!((m.chunk, m.timestamp_ms), (i as u64 + 1, 20 * i as u64));
        received.extend_from_slice(&audio[..m.payload_len]);
    }
    assert_eq!(received, caller_audio[..150 * 160]);
    assert_eq!(&player.played[..16_000], &greeting[..]);
    // The player never held more than the lead (200 ms) plus the frame being played.
    assert!(player.max_buffered <= 1600 + 160, "{} bytes buffered at Twilio", player.max_buffered);
    // Marks echoed once their audio played: 1 s and 2 s into the greeting.
    let first = bot.when(r#""name":"greeting-1""#).expect("first mark echoed");
    let second = bot.when(r#""name":"greeting-3""#).expect("second mark echoed");
    assert!(first >= ms(980) && first <= ms(1020), "{first:?}");
    assert!(second >= ms(1980) && second <= ms(2020), "{second:?}");
    assert!(bot.when(r#""digit":"7""#).is_some_and(|at| at == ms(1000)));

    // The bot talks again, then interrupts itself half a second in.
    for _ in 0..4 {
        media_stream::write_media(&mut frame, &sid, &[0x42; 4000]);
        leg.handle_bot_text(ms(3000), &mut frame).expect("media");
    }
    media_stream::write_mark(&mut frame, &sid, "cut");
    leg.handle_bot_text(ms(3000), &mut frame).expect("mark");
    let played_before = player.played.len();
    for (n, chunk) in caller_audio.chunks(160).enumerate().skip(150).take(30) {
        let t = 20 * n as u64;
        if t == 3500 {
            media_stream::write_clear(&mut frame, &sid);
            leg.handle_bot_text(ms(t), &mut frame).expect("clear");
        }
        tick(t, &mut leg, &mut player, &mut bot, chunk);
    }
    assert_eq!(player.clears, 1);
    assert_eq!(bot.when(r#""name":"cut""#), Some(ms(3500)), "a cleared mark is echoed at the clear");
    let after = player.played.len() - played_before;
    assert!((3500..=4200).contains(&after), "{after} bytes played of the interrupted answer");
    assert_eq!(leg.queued_ms(), 0);

    leg.handle_caller_stop(ms(4000));
    bot.take(ms(4000), &mut leg);
    assert!(bot.texts.last().expect("stop").1.starts_with(r#"{"event":"stop""#));
    assert!(bot.closed);
    assert_eq!(leg.stats().bad_messages, 0);
}

/// Best normalized cross-correlation of `got` against `want` over lags 0..max_lag.
fn best_correlation(want: &[f64], got: &[f64], max_lag: usize) -> f64 {
    (0..max_lag)
        .map(|lag| {
            let n = want.len().min(got.len().saturating_sub(lag));
            let (a, b) = (&want[..n], &got[lag..lag + n]);
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
            dot / (na * nb).max(f64::MIN_POSITIVE)
        })
        .fold(f64::MIN, f64::max)
}

fn tone(hz: f64, rate: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| 8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate).sin()).collect()
}

#[test]
fn l16_protocol_call_end_to_end_at_each_rate() {
    for rate in [L16Rate::Hz8000, L16Rate::Hz16000, L16Rate::Hz24000] {
        let hz = f64::from(rate.hz());
        let config = BotConfig { protocol: BotProtocol::L16(rate), ..BotConfig::default() };
        let mut leg = BotLeg::new(config, &info(), Instant::ZERO).expect("config");
        let (mut player, mut bot) = (Player::default(), Bot::default());
        bot.take(Instant::ZERO, &mut leg);
        let expected =
            format!(r#"{{"event":"websocket:connected","content-type":"audio/l16;rate={}""#, rate.hz());
        assert!(bot.texts[0].1.starts_with(&expected), "{}", bot.texts[0].1);
        assert!(bot.texts[0].1.ends_with(r#""persona":"support"}"#), "{}", bot.texts[0].1);

        // The bot answers with 1 s of a 700 Hz tone in odd-sized binary
        // messages, then a notify.
        let answer: Vec<i16> = tone(700.0, hz, rate.hz() as usize).iter().map(|&s| s as i16).collect();
        let bytes: Vec<u8> = answer.iter().flat_map(|s| s.to_le_bytes()).collect();
        for part in bytes.chunks(1234) {
            leg.handle_bot_binary(Instant::ZERO, part).expect("pcm");
        }
        leg.handle_bot_text(
            Instant::ZERO,
            &mut br#"{"action":"notify","payload":{"said":"hello"}}"#.to_vec(),
        )
        .expect("notify");
        // The caller speaks a 1 kHz tone for 1.2 s, and presses 5.
        let caller: Vec<u8> =
            tone(1000.0, 8000.0, 9600).iter().map(|&s| g711::ulaw_encode(s as i16)).collect();
        for (n, chunk) in caller.chunks(160).enumerate() {
            if n == 10 {
                assert!(leg.handle_caller_dtmf(ms(200), '5'));
            }
            tick(20 * n as u64, &mut leg, &mut player, &mut bot, chunk);
        }
        // Caller → bot: 20 ms frames at the bot's rate, the same tone.
        let want = tone(1000.0, hz, bot.pcm.len());
        let got: Vec<f64> = bot.pcm.iter().map(|&s| f64::from(s)).collect();
        let c = best_correlation(&want[..want.len() - 200], &got, 100);
        eprintln!("{} Hz: caller→bot correlation {c:.5}", rate.hz());
        assert!(c >= 0.99, "{rate:?}: caller → bot correlation {c}");
        assert_eq!(bot.pcm.len(), 60 * 160 * rate.hz() as usize / 8000);
        // Bot → caller: μ-law at 8 kHz, the same tone.
        let played: Vec<f64> = player.played.iter().map(|&b| f64::from(g711::ulaw_decode(b))).collect();
        let want = tone(700.0, 8000.0, 7800);
        let c = best_correlation(&want, &played, 100);
        eprintln!("{} Hz: bot→caller correlation {c:.5}", rate.hz());
        assert!(c >= 0.99, "{rate:?}: bot → caller correlation {c}");
        // The notify comes back once the whole second has played, not before.
        let notified = bot.when("websocket:notify").expect("notify echoed");
        assert!(notified >= ms(980) && notified <= ms(1040), "{notified:?}");
        assert!(
            bot.texts.iter().any(|(_, t)| t == r#"{"event":"websocket:notify","payload":{"said":"hello"}}"#)
        );
        assert!(bot.texts.iter().any(|(_, t)| t == r#"{"event":"websocket:dtmf","digit":"5"}"#));

        // A clear mid-answer: acknowledged, Twilio cleared, the notify dropped.
        leg.handle_bot_binary(ms(1200), &bytes).expect("pcm");
        leg.handle_bot_text(ms(1200), &mut br#"{"action":"notify","payload":2}"#.to_vec()).expect("notify");
        leg.handle_bot_text(ms(1300), &mut br#"{"action":"clear"}"#.to_vec()).expect("clear");
        player.take(&mut leg);
        bot.take(ms(1300), &mut leg);
        assert_eq!(player.clears, 1);
        assert_eq!(bot.texts.last().map(|(_, t)| t.as_str()), Some(r#"{"event":"websocket:cleared"}"#));
        assert_eq!(leg.queued_ms(), 0);
        leg.handle_bot_closed(ms(1400));
        assert!(leg.is_finished() && leg.poll_timeout().is_none());
        assert_eq!(leg.stats().bad_messages, 0);
    }
}
