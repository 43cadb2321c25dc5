//! The WebSocket bot leg per 20 ms frame, each way and per protocol: what
//! the leg adds to a bridged frame besides the WebSocket I/O.
//! Uplink: one caller frame (μ-law, as the bridge has it) in, drained to one
//! message for the bot. Downlink: one 20 ms bot message in (Twilio `media`
//! text, or L16 binary), 20 ms of virtual time, drained to one frame for
//! Twilio.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use voxproxy_adapters::bot::{BotConfig, BotLeg, BotMessage, BotProtocol, CallInfo, CallerAction, L16Rate};
use voxproxy_adapters::media_stream::{self, AccountSid, CallSid, StreamSid, Tracks};
use voxproxy_core::{Instant, g711};

const SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

fn leg(protocol: BotProtocol) -> BotLeg {
    let info = CallInfo {
        call_sid: CallSid::new("CA8f5f5b6e8f1b4b1e8e3c8a0e2d1c0b9a").expect("sid"),
        account_sid: AccountSid::new("AC25e16e9a716a4a1786a7c83f58e30482").expect("sid"),
        stream_sid: StreamSid::new(SID).expect("sid"),
        from: "+15550001".to_owned(),
        to: "+15550002".to_owned(),
        custom_parameters: Vec::new(),
        tracks: Tracks { inbound: true, outbound: false },
    };
    let mut leg =
        BotLeg::new(BotConfig { protocol, ..BotConfig::default() }, &info, Instant::ZERO).expect("config");
    while leg.poll_bot().is_some() {}
    leg
}

fn voice(n: usize, rate: f64) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            (6000.0 * (t * 2.0 * std::f64::consts::PI * 180.0).sin()
                + 2500.0 * (t * 2.0 * std::f64::consts::PI * 720.0).sin()) as i16
        })
        .collect()
}

fn protocols() -> [(BotProtocol, &'static str); 4] {
    [
        (BotProtocol::Twilio, "twilio"),
        (BotProtocol::L16(L16Rate::Hz8000), "l16_8k"),
        (BotProtocol::L16(L16Rate::Hz16000), "l16_16k"),
        (BotProtocol::L16(L16Rate::Hz24000), "l16_24k"),
    ]
}

fn uplink(c: &mut Criterion) {
    let mut group = c.benchmark_group("bot_leg_uplink_20ms");
    let mulaw: Vec<u8> = voice(160, 8000.0).iter().map(|&s| g711::ulaw_encode(s)).collect();
    for (protocol, name) in protocols() {
        let mut leg = leg(protocol);
        let mut ms = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                ms += 20;
                leg.handle_caller_media(Instant::from_millis(ms), black_box(&mulaw), ms);
                let mut bytes = 0;
                while let Some(message) = leg.poll_bot() {
                    if let BotMessage::Text(m) | BotMessage::Binary(m) = message {
                        bytes += black_box(m).len();
                    }
                }
                bytes
            })
        });
    }
    group.finish();
}

fn downlink(c: &mut Criterion) {
    let mut group = c.benchmark_group("bot_leg_downlink_20ms");
    let sid = StreamSid::new(SID).expect("sid");
    for (protocol, name) in protocols() {
        let mut leg = leg(protocol);
        let factor = match protocol {
            BotProtocol::L16(rate) => rate.hz() as usize / 8000,
            BotProtocol::Twilio => 1,
        };
        let pcm = voice(160 * factor, 8000.0 * factor as f64);
        let binary: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mulaw: Vec<u8> = voice(160, 8000.0).iter().map(|&s| g711::ulaw_encode(s)).collect();
        let mut text = Vec::new();
        media_stream::write_media(&mut text, &sid, &mulaw);
        let mut scratch = text.clone();
        let mut now = Instant::ZERO;
        group.bench_function(name, |b| {
            b.iter(|| {
                now += Duration::from_millis(20);
                if protocol == BotProtocol::Twilio {
                    scratch.copy_from_slice(&text);
                    leg.handle_bot_text(now, black_box(&mut scratch)).expect("media");
                } else {
                    leg.handle_bot_binary(now, black_box(&binary)).expect("pcm");
                }
                let mut bytes = 0;
                while let Some(action) = leg.poll_caller() {
                    if let CallerAction::Audio(a) = action {
                        bytes += black_box(a).len();
                    }
                }
                bytes
            })
        });
    }
    group.finish();
}

criterion_group!(benches, uplink, downlink);
criterion_main!(benches);
