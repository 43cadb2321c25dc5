//! Fuzz entry points for what the proxy crate parses: the configuration file
//! an operator writes, datagrams the echo backend receives, and the audio in
//! which the simulator looks for frame identities.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use voxproxy::config::{Config, ServeArgs};
use voxproxy_adapters::route::{OnMissed, StreamMode};
use voxproxy_core::Instant;
use voxproxy_core::rtp::RtpPacket;
use voxproxy_rig::echo::{EchoConfig, Reflector};
use voxproxy_rig::sim::identity::{FrameIdentity, IDENTITY_LEN, IdentityScanner};

/// Any text as `voxproxy.toml`, with the first line (if it looks like one)
/// as a `VOXPROXY_*` variable: a config is accepted or refused with an
/// error naming a key, never a panic. An accepted one is internally sound.
pub fn config_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (env_line, file) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("VOXPROXY_") => (Some(first), rest),
        _ => (None, text.as_ref()),
    };
    let mut env = vec![("TWILIO_AUTH_TOKEN".to_owned(), "0123456789abcdef".to_owned())];
    if let Some((name, value)) = env_line.and_then(|l| l.split_once('=')) {
        env.push((name.to_owned(), value.to_owned()));
    }
    match Config::from_sources(Some((Path::new("fuzz.toml"), file)), &ServeArgs::default(), env) {
        Ok(config) => {
            assert!(config.rtp.ports.low <= config.rtp.ports.high);
            assert!(config.keepalive.ping_interval < config.keepalive.idle_timeout);
            assert!(!config.server.public_url.as_str().ends_with('/'));
            // An accepted route can be answered: a fork always has a forward to
            // keep the call up, and an SMS always has its text.
            for route in &config.routes {
                assert!(route.mode != StreamMode::Fork || route.forward_to.is_some());
                assert!(route.on_missed != OnMissed::Sms || route.sms_text.is_some());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A sequence of datagrams (each prefixed by a length byte and a source
/// byte) through the echo backend with delay, jitter and loss: every
/// transmit is a valid RTP packet sent back to a source that sent one, and
/// the counters add up.
pub fn echo_datagrams(data: &[u8]) {
    let config = EchoConfig {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(3),
        loss_percent: 10.0,
        seed: Some(7),
        max_sources: 4,
        max_queued: 16,
        ..EchoConfig::default()
    };
    let Ok(mut echo) = Reflector::new(&config, Instant::ZERO) else { return };
    let mut senders: Vec<SocketAddr> = Vec::new();
    let mut rest = data;
    let mut now = Instant::ZERO;
    while let [len, source, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(take);
        rest = next;
        now = now.saturating_add(Duration::from_millis(u64::from(source & 0x0f)));
        let from = SocketAddr::from(([127, 0, 0, 1], 40_000 + u16::from(source >> 4)));
        if RtpPacket::parse(datagram).is_ok() && !senders.contains(&from) {
            senders.push(from);
        }
        echo.handle_datagram(now, from, datagram);
        echo.handle_timeout(now);
        while let Some(transmit) = echo.poll_transmit() {
            assert!(senders.contains(&transmit.destination), "echo to a stranger");
            assert!(RtpPacket::parse(transmit.datagram).is_ok(), "echo of something that is not RTP");
        }
    }
    let stats = echo.stats();
    assert!(stats.echoed + stats.dropped_invalid <= stats.received);
}

/// Arbitrary audio split into payloads: the simulator's identity scanner
/// never panics on garbage, reports only identities that could have been
/// written, and finds one that was written wherever the payload is cut.
pub fn sim_identity(data: &[u8]) {
    let Some((&split, audio)) = data.split_first() else { return };
    let mut scanner = IdentityScanner::new();
    let cut = usize::from(split).min(audio.len());
    let mut found = Vec::new();
    scanner.scan(&audio[..cut], |id| found.push(id));
    scanner.scan(&audio[cut..], |id| found.push(id));
    for id in &found {
        assert!(FrameIdentity::new(id.call, id.frame).is_some());
    }
    // Written identities are found again, wherever the payload is cut.
    let id = FrameIdentity::new(u16::from(split), u32::from(split) * 3).expect("in range");
    let mut frame = audio.to_vec();
    frame.resize(frame.len().max(IDENTITY_LEN), 0x7f);
    id.write(&mut frame[..IDENTITY_LEN]);
    let mut scanner = IdentityScanner::new();
    let mut again = Vec::new();
    let cut = cut.min(frame.len());
    scanner.scan(&frame[..cut], |found| again.push(found));
    scanner.scan(&frame[cut..], |found| again.push(found));
    assert!(again.contains(&id), "a written identity was not found");
}
