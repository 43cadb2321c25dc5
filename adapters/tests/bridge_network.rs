//! The call bridge between a simulated Twilio and a simulated RTP backend, on
//! virtual time, through an impairment model (loss, jitter that reorders,
//! duplication, loss bursts). No sockets, no clock: every run is exact and
//! repeatable from its seed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use voxproxy_adapters::bridge::{BackendCodec, BridgeConfig, BridgeEvent, CallBridge, EndReason, Output};
use voxproxy_adapters::media_stream::{
    self, AccountSid, CallSid, MediaFormat, Outbound, Start, StreamSid, Track, Tracks,
};
use voxproxy_core::Instant;
use voxproxy_core::g711;
use voxproxy_core::rtp::{RtpHeader, RtpPacket};

const BACKEND: &str = "127.0.0.1:40000";

fn backend_addr() -> SocketAddr {
    BACKEND.parse().expect("address")
}

fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

/// xorshift64*: a deterministic source of impairments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let mut unit = || ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let (u, v) = (unit(), unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// What the network does to datagrams on one direction of the RTP leg.
#[derive(Clone, Copy, Default)]
struct Impairment {
    /// Probability that a packet is lost.
    loss: f64,
    /// Probability that a loss burst starts, and its length in packets.
    burst: (f64, u64),
    /// Extra one-way delay, uniform in 0..jitter_ms (reorders when larger than ptime).
    jitter_ms: u64,
    /// Probability that a packet arrives twice.
    duplicate: f64,
    /// Standard deviation of a gaussian delay around 50 ms (floored at
    /// 1 ms), in milliseconds; replaces `jitter_ms` when above zero.
    gaussian_ms: f64,
}

/// A one-way datagram path: what goes in comes out later, maybe.
struct Link {
    rng: Rng,
    impairment: Impairment,
    in_flight: Vec<(Instant, u64, Vec<u8>)>,
    sent: u64,
    burst_left: u64,
    /// Indices (in send order) of datagrams the network dropped.
    dropped: Vec<u64>,
}

impl Link {
    fn new(seed: u64, impairment: Impairment) -> Self {
        Link {
            rng: Rng(seed | 1),
            impairment,
            in_flight: Vec::new(),
            sent: 0,
            burst_left: 0,
            dropped: Vec::new(),
        }
    }

    fn send(&mut self, now: Instant, datagram: &[u8]) {
        let index = self.sent;
        self.sent += 1;
        let imp = self.impairment;
        if self.burst_left > 0 || self.rng.chance(imp.loss) {
            self.burst_left = self.burst_left.saturating_sub(1);
            self.dropped.push(index);
            return;
        }
        if self.rng.chance(imp.burst.0) {
            self.burst_left = imp.burst.1.saturating_sub(1);
            self.dropped.push(index);
            return;
        }
        let copies = if self.rng.chance(imp.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if imp.gaussian_ms > 0.0 {
                let ms = 50.0 + imp.gaussian_ms * self.rng.gaussian();
                Duration::from_micros((ms * 1_000.0).max(1_000.0) as u64)
            } else {
                Duration::from_millis(1 + self.rng.below(imp.jitter_ms + 1))
            };
            self.in_flight.push((now + delay, index, datagram.to_vec()));
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.in_flight.iter().map(|(t, _, _)| *t).min()
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (pos, _) = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, (t, _, _))| *t <= now)
            .min_by_key(|(_, (t, i, _))| (*t, *i))?;
        Some(self.in_flight.remove(pos).2)
    }
}

/// Twilio's side: sends the caller's audio as Media Streams frames with
/// Twilio's pacing and fields, and plays what it receives the way Twilio
/// does (buffered, in real time, marks echoed when played, all pending
/// marks echoed at once on `clear`).
struct TwilioSim {
    sid: StreamSid,
    caller_audio: Vec<u8>,
    sent_frames: usize,
    sequence: u64,
    /// Caller audio frames whose media.timestamp is shifted by this much
    /// from index `.0` on (to simulate a gap in Twilio's audio).
    gap: Option<(usize, u64)>,
    /// From frame `.0` on, media.timestamp is this much later while frames
    /// keep arriving every 20 ms (Twilio's clock jumps, its pacing does not).
    timestamp_jump: Option<(usize, u64)>,
    dtmf_at: Vec<(u64, char)>,
    /// When each frame leaves Twilio, relative to its media time (a stall).
    stall: Option<(u64, u64)>,
    echo_marks: bool,
    stop_after_frames: Option<usize>,
    stopped: bool,
    // Playout model.
    play_until: Instant,
    marks: VecDeque<(Instant, String)>,
    received_audio: Vec<u8>,
    clears: usize,
}

impl TwilioSim {
    fn new(caller_audio: Vec<u8>) -> Self {
        TwilioSim {
            sid: StreamSid::new("MZ00000000000000000000000000000001").expect("sid"),
            caller_audio,
            sent_frames: 0,
            sequence: 0,
            gap: None,
            timestamp_jump: None,
            dtmf_at: Vec::new(),
            stall: None,
            echo_marks: true,
            stop_after_frames: None,
            stopped: false,
            play_until: Instant::ZERO,
            marks: VecDeque::new(),
            received_audio: Vec::new(),
            clears: 0,
        }
    }

    fn start_frame(&mut self) -> Vec<u8> {
        self.sequence += 1;
        let start = Start {
            sequence_number: self.sequence,
            stream_sid: self.sid,
            account_sid: AccountSid::new("AC00000000000000000000000000000001").expect("sid"),
            call_sid: CallSid::new("CA00000000000000000000000000000001").expect("sid"),
            tracks: Tracks { inbound: true, outbound: false },
            media_format: MediaFormat::mulaw_8k_mono(),
            custom_parameters: vec![("From".into(), "+15551230000".into())],
        };
        let mut out = Vec::new();
        media_stream::write_start(&mut out, &start);
        out
    }

    fn frames_total(&self) -> usize {
        let all = self.caller_audio.len() / 160;
        self.stop_after_frames.map_or(all, |n| n.min(all))
    }

    fn media_ms(&self, frame: usize) -> u64 {
        let shift = self.gap.filter(|(from, _)| frame >= *from).map_or(0, |(_, by)| by);
        frame as u64 * 20 + shift
    }

    /// When frame `frame` leaves Twilio: 20 ms after its media time begins
    /// (it has to be recorded first), later during a stall.
    fn send_time(&self, frame: usize) -> Instant {
        let t = self.media_ms(frame) + 20;
        match self.stall {
            Some((from, until)) if t >= from && t < until => ms(until),
            _ => ms(t),
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let media = (self.sent_frames < self.frames_total()).then(|| self.send_time(self.sent_frames));
        let stop =
            (!self.stopped && self.sent_frames >= self.frames_total() && self.stop_after_frames.is_some())
                .then(|| ms(self.media_ms(self.sent_frames.saturating_sub(1)) + 40));
        let mark = self.marks.front().map(|(t, _)| *t).filter(|_| self.echo_marks);
        [media, stop, mark].into_iter().flatten().min()
    }

    /// Frames Twilio sends at `now`.
    fn poll_send(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.echo_marks
            && let Some((t, _)) = self.marks.front()
            && *t <= now
        {
            let (_, name) = self.marks.pop_front().expect("front");
            return Some(self.mark_echo(&name));
        }
        if self.sent_frames < self.frames_total() && self.send_time(self.sent_frames) <= now {
            let frame = self.sent_frames;
            let media_ms = self.media_ms(frame);
            if let Some(pos) = self.dtmf_at.iter().position(|(at, _)| *at <= media_ms) {
                let (_, digit) = self.dtmf_at.remove(pos);
                self.sequence += 1;
                let mut out = Vec::new();
                media_stream::write_dtmf(
                    &mut out,
                    &media_stream::Dtmf {
                        sequence_number: self.sequence,
                        stream_sid: self.sid,
                        track: Track::Inbound,
                        digit,
                    },
                );
                return Some(out);
            }
            self.sent_frames += 1;
            self.sequence += 1;
            let media = media_stream::Media {
                sequence_number: self.sequence,
                stream_sid: self.sid,
                track: Track::Inbound,
                chunk: frame as u64 + 1,
                timestamp_ms: media_ms
                    + self.timestamp_jump.filter(|(from, _)| frame >= *from).map_or(0, |(_, by)| by),
                payload_len: 160,
            };
            let mut out = Vec::new();
            media_stream::write_inbound_media(
                &mut out,
                &media,
                &self.caller_audio[frame * 160..(frame + 1) * 160],
            );
            return Some(out);
        }
        if !self.stopped && self.stop_after_frames.is_some() && self.sent_frames >= self.frames_total() {
            self.stopped = true;
            self.sequence += 1;
            let mut out = Vec::new();
            media_stream::write_stop(
                &mut out,
                &media_stream::Stop {
                    sequence_number: self.sequence,
                    stream_sid: self.sid,
                    account_sid: AccountSid::new("AC00000000000000000000000000000001").expect("sid"),
                    call_sid: CallSid::new("CA00000000000000000000000000000001").expect("sid"),
                },
            );
            return Some(out);
        }
        None
    }

    fn mark_echo(&mut self, name: &str) -> Vec<u8> {
        self.sequence += 1;
        let mut out = Vec::new();
        media_stream::write_inbound_mark(
            &mut out,
            &media_stream::Mark { sequence_number: self.sequence, stream_sid: self.sid, name },
        );
        out
    }

    /// A frame from the bridge arrives at Twilio.
    fn receive(&mut self, now: Instant, mut frame: Vec<u8>) -> Vec<Vec<u8>> {
        let mut audio = vec![0u8; 8192];
        let message =
            media_stream::parse_outbound(&mut frame, &mut audio).expect("bridge sends valid frames");
        match message {
            Outbound::Media { stream_sid, payload_len } => {
                assert_eq!(stream_sid, self.sid);
                self.received_audio.extend_from_slice(&audio[..payload_len]);
                let start = self.play_until.max(now);
                self.play_until = start + Duration::from_micros(payload_len as u64 * 125);
                Vec::new()
            }
            Outbound::Mark { name, .. } => {
                self.marks.push_back((self.play_until.max(now), name.to_owned()));
                Vec::new()
            }
            Outbound::Clear { .. } => {
                self.clears += 1;
                self.play_until = now;
                let names: Vec<String> = self.marks.drain(..).map(|(_, n)| n).collect();
                names.iter().map(|n| self.mark_echo(n)).collect()
            }
            other => panic!("unexpected frame from the bridge: {other:?}"),
        }
    }
}

/// The backend: either echoes every RTP packet back (symmetric RTP), or
/// plays its own audio stream at its own ptime.
enum BackendMode {
    Echo,
    Source {
        codec: BackendCodec,
        ptime_ms: u64,
        frames: Vec<Vec<u8>>,
        start_ms: u64,
        marker_every: Option<usize>,
    },
    Silent,
}

struct BackendSim {
    mode: BackendMode,
    next_frame: usize,
    seq: u16,
    received: Vec<Vec<u8>>,
}

impl BackendSim {
    fn next_send(&self) -> Option<Instant> {
        match &self.mode {
            BackendMode::Source { ptime_ms, frames, start_ms, .. } if self.next_frame < frames.len() => {
                Some(ms(start_ms + self.next_frame as u64 * ptime_ms))
            }
            _ => None,
        }
    }

    fn poll_send(&mut self, now: Instant) -> Option<Vec<u8>> {
        let due = self.next_send().filter(|t| *t <= now)?;
        let _ = due;
        let BackendMode::Source { codec, ptime_ms, frames, marker_every, .. } = &self.mode else {
            return None;
        };
        let i = self.next_frame;
        self.next_frame += 1;
        let ts = (i as u64 * ptime_ms * u64::from(codec.clock_rate()) / 1000) as u32;
        let mut header =
            RtpHeader::new(codec.default_payload_type(), self.seq, 0x1000_0000u32.wrapping_add(ts), 0xBACC);
        header.marker = i == 0 || marker_every.is_some_and(|n| i.is_multiple_of(n));
        self.seq = self.seq.wrapping_add(1);
        let mut out = vec![0u8; 12 + frames[i].len()];
        let len = header.write(&frames[i], &mut out).expect("fits");
        out.truncate(len);
        Some(out)
    }
}

struct Run {
    bridge: CallBridge,
    twilio: TwilioSim,
    backend: BackendSim,
    uplink: Link,
    downlink: Link,
    events: Vec<(Instant, BridgeEvent)>,
    closed: Option<(u16, &'static str)>,
    pings: usize,
}

impl Run {
    fn new(
        config: BridgeConfig,
        twilio: TwilioSim,
        backend: BackendMode,
        up: Impairment,
        down: Impairment,
    ) -> Self {
        Run {
            bridge: CallBridge::new(config, Instant::ZERO).expect("valid config"),
            twilio,
            backend: BackendSim { mode: backend, next_frame: 0, seq: 40_000, received: Vec::new() },
            uplink: Link::new(0x5eed_0001, up),
            downlink: Link::new(0x5eed_0002, down),
            events: Vec::new(),
            closed: None,
            pings: 0,
        }
    }

    fn drain(&mut self, now: Instant) {
        let mut to_twilio = Vec::new();
        while let Some(output) = self.bridge.poll_output() {
            match output {
                Output::Twilio(frame) => to_twilio.push(frame.to_vec()),
                Output::Rtp(datagram) => self.uplink.send(now, datagram),
                Output::Ping => self.pings += 1,
                Output::Event(event) => self.events.push((now, event)),
                Output::Close { code, reason } => self.closed = Some((code, reason)),
            }
        }
        // Frames reach Twilio over TCP: in order, without loss; its answers
        // (echoed marks after a clear) come straight back.
        for frame in to_twilio {
            for mut answer in self.twilio.receive(now, frame) {
                let _ = self.bridge.handle_twilio(now, &mut answer);
                self.drain_nested(now);
            }
        }
    }

    fn drain_nested(&mut self, now: Instant) {
        while let Some(output) = self.bridge.poll_output() {
            match output {
                Output::Twilio(_) => panic!("the bridge answered a mark echo with a frame"),
                Output::Rtp(datagram) => self.uplink.send(now, datagram),
                Output::Ping => self.pings += 1,
                Output::Event(event) => self.events.push((now, event)),
                Output::Close { code, reason } => self.closed = Some((code, reason)),
            }
        }
    }

    /// Runs until `end` or until the call closes; bounded by construction
    /// (every step advances virtual time or consumes a queued item).
    fn run_until(&mut self, end: Instant) -> Instant {
        let mut start = self.twilio.start_frame();
        self.bridge.handle_twilio(Instant::ZERO, &mut start).expect("start parses");
        self.drain(Instant::ZERO);
        let mut now = Instant::ZERO;
        for _ in 0..2_000_000 {
            if self.closed.is_some() {
                return now;
            }
            let next = [
                self.bridge.poll_timeout(),
                self.twilio.next_event(),
                self.backend.next_send(),
                self.uplink.next_due(),
                self.downlink.next_due(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|t| *t <= end) else { return now };
            now = next.max(now);
            if let Some(mut frame) = self.twilio.poll_send(now) {
                let _ = self.bridge.handle_twilio(now, &mut frame);
            } else if let Some(datagram) = self.uplink.pop_due(now) {
                if matches!(self.backend.mode, BackendMode::Echo) {
                    self.downlink.send(now, &datagram);
                }
                self.backend.received.push(datagram);
            } else if let Some(datagram) = self.backend.poll_send(now) {
                self.downlink.send(now, &datagram);
            } else if let Some(datagram) = self.downlink.pop_due(now) {
                self.bridge.handle_rtp(now, backend_addr(), &datagram);
            } else {
                self.bridge.handle_timeout(now);
            }
            self.drain(now);
        }
        panic!("simulation did not finish");
    }

    fn event_names(&self) -> Vec<&'static str> {
        self.events.iter().map(|(_, e)| e.name()).collect()
    }
}

/// A backend talking PCMU at 20 ms from t = 100 ms, one talkspurt.
fn pcmu_source(frames: Vec<Vec<u8>>) -> BackendMode {
    BackendMode::Source { codec: BackendCodec::Pcmu, ptime_ms: 20, frames, start_ms: 100, marker_every: None }
}

fn config() -> BridgeConfig {
    BridgeConfig {
        backend: Some(backend_addr()),
        initial_timestamp: 1_000,
        initial_sequence: 65_530,
        ..BridgeConfig::default()
    }
}

/// Distinct pseudo-random μ-law frames, so any reordering, duplication or
/// corruption shows up in a byte comparison.
fn marked_frames(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..n).map(|_| (0..len).map(|_| rng.next() as u8).collect()).collect()
}

fn quiet_caller(frames: usize) -> Vec<u8> {
    vec![0xFF; frames * 160]
}

fn speech() -> Vec<u8> {
    let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/caller-speech.ulaw"))
        .expect("fixture");
    raw[..raw.len() / 160 * 160].to_vec()
}

#[test]
fn caller_audio_reaches_the_backend_bit_exact_with_timestamps_from_twilio() {
    let caller: Vec<u8> = marked_frames(100, 160, 7).concat();
    let mut twilio = TwilioSim::new(caller.clone());
    twilio.gap = Some((50, 200)); // Twilio's audio jumps 200 ms ahead at frame 50.
    let mut run =
        Run::new(config(), twilio, BackendMode::Silent, Impairment::default(), Impairment::default());
    run.run_until(ms(3_000));
    let packets: Vec<(bool, u8, u16, u32, Vec<u8>)> = run
        .backend
        .received
        .iter()
        .map(|d| RtpPacket::parse(d).expect("valid RTP"))
        .filter(|p| p.payload_type() == 0)
        .map(|p| (p.marker(), p.payload_type(), p.sequence_number(), p.timestamp(), p.payload().to_vec()))
        .collect();
    assert_eq!(packets.len(), 100);
    for (i, (marker, _, seq, ts, payload)) in packets.iter().enumerate() {
        assert_eq!(payload[..], caller[i * 160..(i + 1) * 160], "frame {i} payload");
        assert_eq!(*seq, 65_530u16.wrapping_add(i as u16), "sequence numbers wrap and stay consecutive");
        let media_ms = i as u32 * 20 + if i >= 50 { 200 } else { 0 };
        assert_eq!(*ts, 1_000 + media_ms * 8, "frame {i} timestamp follows media.timestamp");
        assert_eq!(
            *marker,
            i == 0 || i == 50,
            "marker on the first packet and after the gap only (frame {i})"
        );
    }
    let stats = run.bridge.stats();
    assert_eq!(stats.twilio_frames_in, 100);
    assert_eq!(stats.twilio_malformed + stats.twilio_out_of_order, 0);
}

#[test]
fn backend_audio_reaches_twilio_bit_exact_through_jitter_reordering_and_duplicates() {
    let frames = marked_frames(400, 160, 11);
    let backend = pcmu_source(frames.clone());
    // Up to 45 ms of extra delay reorders packets two or three deep.
    let down = Impairment { jitter_ms: 45, duplicate: 0.05, ..Impairment::default() };
    let config = BridgeConfig { jitter_max_delay: Duration::from_millis(120), ..config() };
    let mut run = Run::new(config, TwilioSim::new(quiet_caller(450)), backend, Impairment::default(), down);
    run.run_until(ms(9_500));
    let stats = run.bridge.stats();
    assert!(stats.rtp_reordered > 10, "the impairment reordered packets: {stats:?}");
    assert!(stats.rtp_duplicate > 5, "and duplicated some: {stats:?}");
    assert!(
        stats.max_jitter_us >= stats.jitter_us && stats.max_jitter_us > 5_000,
        "jitter measured: {stats:?}"
    );
    // A packet overtaken by the stream's very first packet cannot be played
    // (that would reorder the audio): it is late. Nothing else may be.
    let out = &run.twilio.received_audio;
    let first = frames.iter().position(|f| out.starts_with(f)).expect("the output starts with a sent frame");
    assert!(first <= 2, "only packets overtaken at the very start can be late, not {first}");
    assert_eq!((stats.rtp_lost, stats.rtp_late, stats.concealed_frames), (0, first as u64, 0), "{stats:?}");
    assert_eq!(*out, frames[first..].concat(), "bit-exact and in order");
}

#[test]
fn lost_backend_packets_are_concealed_and_everything_else_is_bit_exact() {
    let frames = marked_frames(500, 160, 13);
    let backend = pcmu_source(frames.clone());
    let down = Impairment { loss: 0.03, burst: (0.01, 3), jitter_ms: 8, ..Impairment::default() };
    let mut run = Run::new(config(), TwilioSim::new(quiet_caller(560)), backend, Impairment::default(), down);
    run.run_until(ms(11_000));
    let stats = run.bridge.stats();
    let dropped = &run.downlink.dropped;
    assert!(dropped.len() > 15, "the network dropped packets: {}", dropped.len());
    // The last packets' loss cannot be detected (nothing follows them).
    let detectable: Vec<u64> = dropped.iter().copied().filter(|&i| i < 499).collect();
    assert_eq!(stats.rtp_lost, detectable.len() as u64, "every detectable loss is counted once: {stats:?}");
    assert_eq!(stats.concealed_frames, stats.rtp_lost);
    assert_eq!(stats.rtp_late, 0);
    let out = &run.twilio.received_audio;
    assert_eq!(
        out.len(),
        160 * (500 - (dropped.len() - detectable.len())),
        "concealment fills every gap exactly"
    );
    for (i, frame) in frames.iter().enumerate().take(499) {
        let got = &out[i * 160..(i + 1) * 160];
        if detectable.contains(&(i as u64)) {
            assert_ne!(got, &frame[..], "frame {i} was lost, so it cannot be the original");
        } else if i > 0 && detectable.contains(&(i as u64 - 1)) {
            // The first 4 ms after a loss are crossfaded from the concealment
            // into the real audio (no click); the rest is untouched.
            assert_eq!(got[32..], frame[32..], "frame {i} after a loss: bit-exact past the crossfade");
        } else {
            assert_eq!(got, &frame[..], "frame {i} arrived and must be bit-exact");
        }
    }
}

#[test]
fn heavy_gaussian_jitter_loses_at_most_one_percent_of_packets_late() {
    // 15 ms gaussian jitter, 2 % loss, 1 % duplicates (issue 9): at most 1 %
    // of the packets may arrive after their slot was concealed.
    let packets = 6_000;
    let frames = marked_frames(packets, 160, 19);
    let down = Impairment { loss: 0.02, duplicate: 0.01, gaussian_ms: 15.0, ..Impairment::default() };
    let mut run = Run::new(
        config(),
        TwilioSim::new(quiet_caller(packets + 50)),
        pcmu_source(frames),
        Impairment::default(),
        down,
    );
    run.run_until(ms(packets as u64 * 20 + 1_000));
    let stats = run.bridge.stats();
    let late = 100.0 * stats.rtp_late as f64 / packets as f64;
    eprintln!("late {late:.2} % {stats:?}");
    assert!(late <= 1.0, "late loss {late:.2} %: {stats:?}");
}

#[test]
fn backend_ptimes_are_repacketized_into_twenty_ms_frames() {
    for ptime_ms in [10u64, 30, 40] {
        let bytes = (ptime_ms * 8) as usize;
        let frames = marked_frames(60, bytes, 17 + ptime_ms);
        let backend = BackendMode::Source {
            codec: BackendCodec::Pcmu,
            ptime_ms,
            frames: frames.clone(),
            start_ms: 50,
            marker_every: None,
        };
        let mut run = Run::new(
            config(),
            TwilioSim::new(quiet_caller(200)),
            backend,
            Impairment::default(),
            Impairment::default(),
        );
        run.run_until(ms(4_000));
        assert_eq!(run.twilio.received_audio, frames.concat(), "ptime {ptime_ms}");
        let stats = run.bridge.stats();
        assert_eq!(stats.twilio_audio_bytes_out as usize, 60 * bytes);
        // Whole 20 ms frames, plus at most one short frame at each talkspurt end.
        assert!(
            stats.twilio_frames_out as usize <= 60 * bytes / 160 + stats.marks_sent as usize,
            "{stats:?}"
        );
    }
}

#[test]
fn transcoding_paths_round_trip_through_an_echoing_backend() {
    let caller = speech();
    for codec in [BackendCodec::Pcma, BackendCodec::L16Narrowband, BackendCodec::L16Wideband] {
        // The echo of the caller's own voice would be a barge-in.
        let config = BridgeConfig { barge_in: false, ..config().with_codec(codec) };
        let mut run = Run::new(
            config,
            TwilioSim::new(caller.clone()),
            BackendMode::Echo,
            Impairment::default(),
            Impairment::default(),
        );
        run.run_until(ms(6_000));
        let sent: Vec<i16> = caller.iter().map(|&c| g711::ulaw_decode(c)).collect();
        let got: Vec<i16> = run.twilio.received_audio.iter().map(|&c| g711::ulaw_decode(c)).collect();
        let stats = run.bridge.stats();
        assert_eq!(
            stats.rtp_lost + stats.rtp_malformed + stats.barge_in_dropped_frames,
            0,
            "{codec:?}: {stats:?}"
        );
        // Our own keep-alives (comfort noise) come back from the echo and are not audio.
        assert_eq!(stats.rtp_unknown_payload_type, stats.rtp_keepalives_sent, "{codec:?}: {stats:?}");
        // The resampler delays the signal by its group delay; find the best
        // alignment within 5 ms and measure the signal-to-error ratio there.
        let best =
            (0..40).map(|lag| snr_db(&sent, got.get(lag..).unwrap_or_default())).fold(f64::MIN, f64::max);
        let floor = match codec {
            BackendCodec::Pcma => 30.0,
            BackendCodec::L16Narrowband => 60.0,
            _ => 25.0,
        };
        assert!(best > floor, "{codec:?}: round trip SNR {best:.1} dB");
        assert!(
            got.len() + 320 >= sent.len(),
            "{codec:?}: {} of {} samples came back",
            got.len(),
            sent.len()
        );
    }
}

fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
    let n = reference.len().min(test.len());
    if n == 0 {
        return f64::MIN;
    }
    let (mut signal, mut noise) = (0f64, 0f64);
    for i in 0..n {
        let r = f64::from(reference[i]);
        signal += r * r;
        noise += (r - f64::from(test[i])).powi(2);
    }
    10.0 * (signal / noise.max(1.0)).log10()
}

#[test]
fn dtmf_from_twilio_becomes_rfc_4733_events_on_the_audio_stream() {
    let mut twilio = TwilioSim::new(quiet_caller(100));
    twilio.dtmf_at = vec![(400, '5'), (400, '#')];
    let mut run =
        Run::new(config(), twilio, BackendMode::Silent, Impairment::default(), Impairment::default());
    run.run_until(ms(2_500));
    let packets: Vec<RtpPacket<'_>> =
        run.backend.received.iter().map(|d| RtpPacket::parse(d).expect("rtp")).collect();
    let seqs: Vec<u16> = packets.iter().map(RtpPacket::sequence_number).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "one sequence space, no gaps");
    let events: Vec<&RtpPacket<'_>> = packets.iter().filter(|p| p.payload_type() == 101).collect();
    let digits: Vec<(u8, bool)> =
        events.iter().map(|p| (p.payload()[0], p.payload()[1] & 0x80 != 0)).collect();
    let fives = digits.iter().filter(|(e, _)| *e == 5).count();
    let hashes = digits.iter().filter(|(e, _)| *e == 11).count();
    // 100 ms at 20 ms intervals: 5 packets, the last of them the first of three end packets.
    assert_eq!((fives, hashes), (7, 7), "{digits:?}");
    assert_eq!(digits.iter().filter(|(_, end)| *end).count(), 6, "three end packets per digit");
    assert!(events[0].marker() && !events[1].marker(), "marker on an event's first packet only");
    assert_eq!(run.bridge.stats().dtmf_digits, 2);
    assert!(run.event_names().iter().filter(|n| **n == "dtmf").count() == 2);
}

#[test]
fn marks_follow_each_backend_talkspurt_and_are_reported_played() {
    // Three bursts of backend "speech" separated by pauses in its packets.
    let mut frames = Vec::new();
    let burst = speech();
    for _ in 0..3 {
        frames.extend(burst[..160 * 50].chunks(160).map(<[u8]>::to_vec));
    }
    let mut run = Run::new(
        config(),
        TwilioSim::new(quiet_caller(700)),
        BackendMode::Silent,
        Impairment::default(),
        Impairment::default(),
    );
    // Packets 0-49, 50-99, 100-149 sent as three separate talkspurts, 2 s apart.
    let mut t = 200u64;
    let mut sends = Vec::new();
    for (seq, (i, f)) in (1u16..).zip(frames.iter().enumerate()) {
        if i % 50 == 0 && i > 0 {
            t += 2_000;
        }
        let mut h = RtpHeader::new(0, seq, i as u32 * 160, 0xB0B);
        h.marker = i % 50 == 0;
        let mut d = vec![0u8; 200];
        let n = h.write(f, &mut d).expect("fits");
        d.truncate(n);
        sends.push((t, d));
        t += 20;
    }
    run.backend.mode = BackendMode::Silent;
    for (t, d) in sends {
        run.downlink.in_flight.push((ms(t), 0, d));
    }
    run.run_until(ms(9_000));
    let stats = run.bridge.stats();
    assert_eq!(stats.marks_sent, 3, "{stats:?}");
    assert_eq!(stats.marks_played, 3);
    assert_eq!(stats.marks_cleared, 0);
    let played: Vec<u64> = run
        .events
        .iter()
        .filter_map(|(_, e)| if let BridgeEvent::MarkPlayed { id } = e { Some(*id) } else { None })
        .collect();
    assert_eq!(played, [1, 2, 3]);
    assert!(!run.bridge.has_unplayed_audio());
}

#[test]
fn caller_speech_over_unplayed_backend_audio_barges_in() {
    // The backend talks for 6 s from t = 0.1 s; Twilio buffers it all at
    // once (the backend sends 10x faster than real time), so most of it is
    // unplayed when the caller starts speaking at about 1 s.
    let mut caller = quiet_caller(50);
    caller.extend(speech());
    let talk: Vec<Vec<u8>> = speech().chunks(160).cycle().take(300).map(<[u8]>::to_vec).collect();
    let backend = BackendMode::Source {
        codec: BackendCodec::Pcmu,
        ptime_ms: 2,
        frames: talk,
        start_ms: 100,
        marker_every: None,
    };
    let config = BridgeConfig { jitter_max_delay: Duration::from_millis(20), ..config() };
    let mut run =
        Run::new(config, TwilioSim::new(caller), backend, Impairment::default(), Impairment::default());
    run.run_until(ms(5_000));
    let names = run.event_names();
    assert!(names.contains(&"speech_started"), "{names:?}");
    assert!(names.contains(&"barge_in"), "{names:?}");
    let stats = run.bridge.stats();
    assert!(stats.barge_ins >= 1);
    assert!(run.twilio.clears >= 1, "clear sent to Twilio");
    let first_barge =
        run.events.iter().position(|(_, e)| matches!(e, BridgeEvent::BargeIn { .. })).expect("barge-in");
    let speech_at = run
        .events
        .iter()
        .find_map(
            |(_, e)| if let BridgeEvent::SpeechStarted { media_ms } = e { Some(*media_ms) } else { None },
        )
        .expect("speech");
    assert!((900..1_400).contains(&speech_at), "caller speech starts after 1 s of silence: {speech_at}");
    let _ = first_barge;
}

/// The caller talks from 0.3 s and is mid-word at 1.2 s, when its audio is
/// interrupted; then 0.2 s of quiet and its next sentence. The backend
/// starts answering at 1.3 s, ten times faster than real time, so its audio
/// is unplayed when the caller's next sentence comes.
fn interrupted_caller_over_backend(twilio: impl FnOnce(&mut TwilioSim)) -> Run {
    let speech = speech();
    let mut caller = speech[..60 * 160].to_vec();
    caller.extend_from_slice(&speech[80 * 160..145 * 160]);
    let mut sim = TwilioSim::new(caller);
    twilio(&mut sim);
    let talk: Vec<Vec<u8>> = speech.chunks(160).cycle().take(150).map(<[u8]>::to_vec).collect();
    let backend = BackendMode::Source {
        codec: BackendCodec::Pcmu,
        ptime_ms: 2,
        frames: talk,
        start_ms: 1_300,
        marker_every: None,
    };
    let config = BridgeConfig { jitter_max_delay: Duration::from_millis(20), ..config() };
    let mut run = Run::new(config, sim, backend, Impairment::default(), Impairment::default());
    run.run_until(ms(5_000));
    run
}

/// The caller's talkspurt edges as (wall time, event name, media time).
fn caller_edges(run: &Run) -> Vec<(u64, &'static str, u64)> {
    run.events
        .iter()
        .filter_map(|(at, e)| match e {
            BridgeEvent::SpeechStarted { media_ms } | BridgeEvent::SpeechStopped { media_ms } => {
                Some((at.as_nanos() / 1_000_000, e.name(), *media_ms))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_caller_talkspurt_ends_when_its_audio_stops_arriving() {
    // Frames due between 1.22 s and 2.5 s arrive in a burst at 2.5 s, with
    // their timestamps intact: nothing in the audio says it paused.
    let run = interrupted_caller_over_backend(|t| t.stall = Some((1_220, 2_500)));
    let edges = caller_edges(&run);
    // The last frame before the stall arrived at 1.2 s; 300 ms later the
    // talkspurt is over, ending where that audio ended.
    assert!(
        edges.contains(&(1_500, "speech_stopped", 1_200)),
        "the talkspurt ends 300 ms after the audio stopped arriving: {edges:?}"
    );
    let restarted = edges.iter().find(|(at, name, _)| *at >= 2_500 && *name == "speech_started");
    assert!(restarted.is_some(), "the caller's next sentence is a new talkspurt: {edges:?}");
    assert!(run.bridge.stats().barge_ins >= 1, "and it barges in on the unplayed backend audio");
    assert!(run.twilio.clears >= 1, "clear sent to Twilio");
}

#[test]
fn a_caller_talkspurt_ends_when_twilio_s_timestamp_jumps() {
    // Frames keep arriving every 20 ms, but from frame 60 on their
    // media.timestamp is 1 s later: the audio in between never came.
    let run = interrupted_caller_over_backend(|t| t.timestamp_jump = Some((60, 1_000)));
    let edges = caller_edges(&run);
    assert!(
        edges.contains(&(1_220, "speech_stopped", 1_200)),
        "the talkspurt ends where the audio before the jump ended: {edges:?}"
    );
    let restarted = edges.iter().find(|(_, name, media)| *name == "speech_started" && *media >= 2_200);
    assert!(restarted.is_some(), "the caller's next sentence is a new talkspurt: {edges:?}");
    assert!(run.bridge.stats().barge_ins >= 1, "and it barges in on the unplayed backend audio");
    assert!(run.twilio.clears >= 1, "clear sent to Twilio");
}

#[test]
fn a_backend_streaming_silence_after_its_answer_is_not_barged_in_on() {
    // Asterisk-style: one utterance, then continuous silence packets; the
    // caller speaks long after the utterance has played.
    let mut frames: Vec<Vec<u8>> = speech().chunks(160).take(60).map(<[u8]>::to_vec).collect();
    frames.extend(std::iter::repeat_n(vec![0xFFu8; 160], 300));
    let backend = BackendMode::Source {
        codec: BackendCodec::Pcmu,
        ptime_ms: 20,
        frames,
        start_ms: 100,
        marker_every: None,
    };
    let mut caller = quiet_caller(250);
    caller.extend(speech());
    let mut run =
        Run::new(config(), TwilioSim::new(caller), backend, Impairment::default(), Impairment::default());
    run.run_until(ms(8_000));
    let stats = run.bridge.stats();
    assert!(stats.vad_segments >= 1, "the caller spoke: {stats:?}");
    assert_eq!(stats.marks_sent, 1, "one utterance, one mark: {stats:?}");
    assert_eq!(stats.marks_played, 1);
    assert_eq!(stats.barge_ins, 0, "nothing unplayed when the caller spoke: {stats:?}");
    assert_eq!(run.twilio.clears, 0);
    assert_eq!(stats.twilio_audio_bytes_out, 360 * 160, "silence is still relayed");
}

#[test]
fn marks_pending_at_a_clear_are_reported_cleared_not_played() {
    let mut caller = quiet_caller(100);
    caller.extend(speech());
    // Two short backend utterances close together, sent faster than real
    // time, so both marks are pending when the caller barges in.
    let talk: Vec<Vec<u8>> = speech().chunks(160).take(100).map(<[u8]>::to_vec).collect();
    let backend = BackendMode::Source {
        codec: BackendCodec::Pcmu,
        ptime_ms: 1,
        frames: talk,
        start_ms: 100,
        marker_every: Some(50),
    };
    let mut run =
        Run::new(config(), TwilioSim::new(caller), backend, Impairment::default(), Impairment::default());
    run.run_until(ms(6_000));
    let stats = run.bridge.stats();
    assert!(stats.marks_sent >= 1, "{stats:?}");
    assert!(stats.barge_ins >= 1, "{stats:?}");
    assert_eq!(
        stats.marks_played + stats.marks_cleared,
        stats.marks_sent,
        "every mark echoed once: {stats:?}"
    );
    assert!(stats.marks_cleared >= 1, "marks pending at the clear come back cleared: {stats:?}");
    let cleared_after_clear = run.events.iter().any(|(_, e)| matches!(e, BridgeEvent::MarkCleared { .. }));
    assert!(cleared_after_clear);
}

#[test]
fn twilio_going_quiet_gets_pings_then_ends_the_call_as_idle() {
    let mut twilio = TwilioSim::new(quiet_caller(10));
    twilio.echo_marks = false;
    let config = BridgeConfig {
        ping_interval: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(7),
        ..config()
    };
    let mut run = Run::new(config, twilio, BackendMode::Silent, Impairment::default(), Impairment::default());
    let ended = run.run_until(ms(60_000));
    assert_eq!(run.closed, Some(EndReason::IdleTimeout.close_frame()));
    assert_eq!(run.bridge.end_reason(), Some(EndReason::IdleTimeout));
    assert_eq!(ended, ms(200 + 7_000), "idle timeout counts from the last frame Twilio sent");
    assert!(run.pings >= 2, "pinged while quiet: {}", run.pings);
    assert!(run.bridge.stats().rtp_keepalives_sent >= 5, "kept the backend's binding alive");
    assert_eq!(run.bridge.poll_timeout(), None);
}

#[test]
fn stop_ends_the_call_and_backend_silence_is_reported() {
    let mut twilio = TwilioSim::new(quiet_caller(400));
    twilio.stop_after_frames = Some(400);
    let backend = BackendMode::Source {
        codec: BackendCodec::Pcmu,
        ptime_ms: 20,
        frames: marked_frames(50, 160, 3),
        start_ms: 100,
        marker_every: None,
    };
    let config = BridgeConfig { backend_timeout: Duration::from_secs(2), ..config() };
    let mut run = Run::new(config, twilio, backend, Impairment::default(), Impairment::default());
    run.run_until(ms(20_000));
    assert_eq!(run.bridge.end_reason(), Some(EndReason::TwilioStop));
    let names = run.event_names();
    assert_eq!(names.first(), Some(&"stream_started"));
    assert!(names.contains(&"backend_timeout"), "{names:?}");
    assert_eq!(names.last(), Some(&"stream_stopped"));
}

#[test]
fn a_twilio_network_stall_keeps_timestamps_not_arrival_times() {
    let caller: Vec<u8> = marked_frames(100, 160, 5).concat();
    let mut twilio = TwilioSim::new(caller);
    twilio.stall = Some((600, 1_400)); // Frames due between 0.6 s and 1.4 s arrive in a burst at 1.4 s.
    let mut run =
        Run::new(config(), twilio, BackendMode::Silent, Impairment::default(), Impairment::default());
    run.run_until(ms(3_000));
    let ts: Vec<u32> = run
        .backend
        .received
        .iter()
        .map(|d| RtpPacket::parse(d).expect("rtp"))
        .filter(|p| p.payload_type() == 0)
        .map(|p| p.timestamp())
        .collect();
    assert_eq!(ts.len(), 100);
    assert!(ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 160), "a burst is not a gap");
}

#[test]
fn rtp_from_a_foreign_source_and_garbage_are_counted_and_dropped() {
    let mut bridge = CallBridge::new(config(), Instant::ZERO).expect("config");
    let mut start = TwilioSim::new(Vec::new()).start_frame();
    bridge.handle_twilio(Instant::ZERO, &mut start).expect("start");
    let mut packet = vec![0u8; 172];
    let n = RtpHeader::new(0, 1, 0, 9).write(&[0xFF; 160], &mut packet).expect("fits");
    bridge.handle_rtp(ms(1), "127.0.0.1:40001".parse().expect("addr"), &packet[..n]);
    bridge.handle_rtp(ms(2), backend_addr(), b"\x00\x01garbage");
    bridge.handle_rtp(ms(3), backend_addr(), &[]);
    let mut unknown_pt = vec![0u8; 172];
    let n2 = RtpHeader::new(33, 2, 160, 9).write(&[0xFF; 160], &mut unknown_pt).expect("fits");
    bridge.handle_rtp(ms(4), backend_addr(), &unknown_pt[..n2]);
    let stats = bridge.stats();
    assert_eq!(stats.rtp_foreign_source, 1);
    assert_eq!(stats.rtp_malformed, 2);
    assert_eq!(stats.rtp_unknown_payload_type, 1);
    assert_eq!(stats.twilio_frames_out, 0);
}

#[test]
fn malformed_and_out_of_order_twilio_frames_are_counted_not_fatal() {
    let mut bridge = CallBridge::new(config(), Instant::ZERO).expect("config");
    let mut media = br#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"//8="},"streamSid":"MZ1"}"#.to_vec();
    assert!(bridge.handle_twilio(ms(1), &mut media.clone()).is_err(), "media before start");
    assert!(bridge.handle_twilio(ms(2), &mut b"{not json".to_vec()).is_err());
    assert!(bridge.handle_twilio(ms(3), &mut br#"{"event":"surprise"}"#.to_vec()).is_ok());
    let mut huge = vec![b' '; 20_000];
    assert!(matches!(
        bridge.handle_twilio(ms(4), &mut huge),
        Err(voxproxy_adapters::bridge::BridgeError::FrameTooLarge { .. })
    ));
    let mut start = TwilioSim::new(Vec::new()).start_frame();
    bridge.handle_twilio(ms(5), &mut start).expect("start");
    assert!(bridge.handle_twilio(ms(6), &mut start.clone()).is_err(), "a second start");
    bridge.handle_twilio(ms(7), &mut media).expect("media after start");
    let stats = bridge.stats();
    assert_eq!(
        (
            stats.twilio_out_of_order,
            stats.twilio_malformed,
            stats.twilio_unknown_events,
            stats.twilio_oversize
        ),
        (2, 1, 1, 1)
    );
    assert!(!bridge.is_finished());
}

#[test]
fn a_ptime_whose_packets_would_not_fit_is_refused_naming_the_key() {
    for (codec, ptime, ok) in [
        (BackendCodec::L16Wideband, 20, true),
        (BackendCodec::L16Wideband, 30, false),
        (BackendCodec::L16Narrowband, 40, true),
        (BackendCodec::Pcmu, 40, true),
        (BackendCodec::Pcmu, 25, false),
    ] {
        let config = BridgeConfig { ptime: Duration::from_millis(ptime), ..config().with_codec(codec) };
        match CallBridge::new(config, Instant::ZERO) {
            Ok(_) => assert!(ok, "{codec:?} at {ptime} ms must be refused"),
            Err(e) => {
                assert!(!ok, "{codec:?} at {ptime} ms must be accepted: {e}");
                assert!(e.to_string().contains("rtp.ptime_ms"), "{e}");
            }
        }
    }
}

/// Drains every output and counts the RTP datagrams among them.
fn drain_counting_rtp(bridge: &mut CallBridge) -> usize {
    let mut sent_rtp = 0;
    while let Some(out) = bridge.poll_output() {
        sent_rtp += usize::from(matches!(out, Output::Rtp(_)));
    }
    sent_rtp
}

#[test]
fn a_latching_backend_is_learned_from_its_first_packet_and_then_enforced() {
    let latch: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let config = BridgeConfig { backend: Some(latch), ..config() };
    let mut bridge = CallBridge::new(config, Instant::ZERO).expect("config");
    let mut twilio = TwilioSim::new(vec![0xFF; 160 * 3]);
    let mut start = twilio.start_frame();
    bridge.handle_twilio(Instant::ZERO, &mut start).expect("start");
    let mut first = twilio.poll_send(ms(20)).expect("first media frame");
    bridge.handle_twilio(ms(20), &mut first).expect("media");
    let sent_rtp = drain_counting_rtp(&mut bridge);
    assert_eq!(sent_rtp, 0, "nothing goes out before the backend's port is known");
    assert_eq!(bridge.stats().rtp_unsent_awaiting_backend, 1);
    assert_eq!(bridge.backend_peer(), None);

    let mut packet = vec![0u8; 172];
    let n = RtpHeader::new(0, 1, 0, 9).write(&[0xFF; 160], &mut packet).expect("fits");
    bridge.handle_rtp(ms(25), "10.0.0.9:5004".parse().expect("addr"), &packet[..n]);
    assert_eq!(bridge.backend_peer(), None, "another host does not latch");
    let asterisk: SocketAddr = "127.0.0.1:17234".parse().expect("addr");
    bridge.handle_rtp(ms(26), asterisk, &packet[..n]);
    assert_eq!(bridge.backend_peer(), Some(asterisk));
    bridge.handle_rtp(ms(27), "127.0.0.1:17236".parse().expect("addr"), &packet[..n]);
    assert_eq!(bridge.stats().rtp_foreign_source, 2, "the other host and then another port of the same host");

    while bridge.poll_output().is_some() {}
    let mut second = twilio.poll_send(ms(40)).expect("second media frame");
    bridge.handle_twilio(ms(40), &mut second).expect("media");
    let sent_rtp = drain_counting_rtp(&mut bridge);
    assert_eq!(sent_rtp, 1, "audio flows once latched");
}

#[test]
fn digits_without_audio_between_them_still_get_their_own_timestamps() {
    let mut bridge = CallBridge::new(config(), Instant::ZERO).expect("config");
    let mut twilio = TwilioSim::new(vec![0xFF; 160]);
    let mut start = twilio.start_frame();
    bridge.handle_twilio(Instant::ZERO, &mut start).expect("start");
    let mut media = twilio.poll_send(ms(20)).expect("the one media frame");
    bridge.handle_twilio(ms(20), &mut media).expect("media");
    let mut events: Vec<(u8, u32, bool)> = Vec::new();
    let mut collect = |bridge: &mut CallBridge| {
        while let Some(out) = bridge.poll_output() {
            if let Output::Rtp(d) = out {
                let p = RtpPacket::parse(d).expect("rtp");
                if p.payload_type() == 101 {
                    events.push((p.payload()[0], p.timestamp(), p.payload()[1] & 0x80 != 0));
                }
            }
        }
    };
    collect(&mut bridge);
    // Twilio sends no more audio: both digits arrive on a stalled media clock.
    for (at, digit) in [(100, '1'), (400, '2')] {
        let mut frame = Vec::new();
        twilio.sequence += 1;
        media_stream::write_dtmf(
            &mut frame,
            &media_stream::Dtmf {
                sequence_number: twilio.sequence,
                stream_sid: twilio.sid,
                track: Track::Inbound,
                digit,
            },
        );
        bridge.handle_twilio(ms(at), &mut frame).expect("dtmf");
        let mut t = at;
        while t < at + 300 {
            bridge.handle_timeout(ms(t));
            collect(&mut bridge);
            t += 5;
        }
    }
    let first: Vec<u32> = events.iter().filter(|e| e.0 == 1).map(|e| e.1).collect();
    let second: Vec<u32> = events.iter().filter(|e| e.0 == 2).map(|e| e.1).collect();
    assert!(!first.is_empty() && !second.is_empty(), "{events:?}");
    assert!(first.iter().all(|&t| t == first[0]) && second.iter().all(|&t| t == second[0]));
    // 100 ms of event at 8 kHz: the second digit starts no earlier than 800 units later.
    let gap = second[0].wrapping_sub(first[0]);
    assert!((800..8_000).contains(&gap), "second event starts {gap} units after the first");
}

/// Serves every deadline of `bridge` up to `until`, collecting its events.
fn advance(bridge: &mut CallBridge, until: Instant, events: &mut Vec<(Instant, BridgeEvent)>) {
    loop {
        while let Some(output) = bridge.poll_output() {
            if let Output::Event(event) = output {
                events.push((until, event));
            }
        }
        match bridge.poll_timeout().filter(|t| *t <= until) {
            Some(deadline) => {
                bridge.handle_timeout(deadline);
                while let Some(output) = bridge.poll_output() {
                    if let Output::Event(event) = output {
                        events.push((deadline, event));
                    }
                }
            }
            None => return,
        }
    }
}

#[test]
fn backend_outages_are_counted_with_their_silence_until_resumed_or_hung_up() {
    let config = BridgeConfig { backend_timeout: Duration::from_secs(1), ..config() };
    let mut bridge = CallBridge::new(config, Instant::ZERO).expect("valid config");
    let mut start = TwilioSim::new(quiet_caller(1)).start_frame();
    bridge.handle_twilio(Instant::ZERO, &mut start).expect("start parses");
    let mut events = Vec::new();
    let mut seq = 0u16;
    // The backend talks at 20 ms in [from, to) milliseconds.
    let mut talk = |bridge: &mut CallBridge, events: &mut Vec<_>, from: u64, to: u64| {
        for t in (from..to).step_by(20) {
            advance(bridge, ms(t), events);
            let header = RtpHeader::new(0, seq, u32::from(seq) * 160, 0xBACC);
            seq = seq.wrapping_add(1);
            let mut datagram = vec![0u8; 12 + 160];
            let len = header.write(&[0xFF; 160], &mut datagram).expect("fits");
            bridge.handle_rtp(ms(t), backend_addr(), &datagram[..len]);
            advance(bridge, ms(t), events);
        }
    };
    talk(&mut bridge, &mut events, 100, 2_100); // last packet at 2,080 ms
    // Quiet for 2,920 ms: an outage from 3,080 ms (1 s after the last packet).
    talk(&mut bridge, &mut events, 5_000, 6_000); // last packet at 5,980 ms
    assert_eq!(bridge.stats().backend_outages, 1);
    assert_eq!(bridge.stats().backend_outage_ms, 2_920);
    // Quiet again, and the call ends in the middle of it, at 8,000 ms.
    advance(&mut bridge, ms(8_000), &mut events);
    let mid_outage = bridge.stats();
    assert_eq!((mid_outage.backend_outages, mid_outage.backend_outage_ms), (2, 2_920), "added when it ends");
    bridge.handle_close(ms(8_000), EndReason::Hangup);
    let stats = bridge.stats();
    assert_eq!(stats.backend_outages, 2);
    assert_eq!(stats.backend_outage_ms, 2_920 + 2_020, "the second outage lasted until the hang-up");
    let outage_events: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e, BridgeEvent::BackendTimeout | BridgeEvent::BackendResumed { .. }))
        .copied()
        .collect();
    assert_eq!(
        outage_events,
        [
            (ms(3_080), BridgeEvent::BackendTimeout),
            (ms(5_000), BridgeEvent::BackendResumed { silent_ms: 2_920 }),
            (ms(6_980), BridgeEvent::BackendTimeout),
        ]
    );
}

/// A `start` frame for `call_sid` with these custom parameters.
fn start_with(call_sid: &str, parameters: Vec<(String, String)>) -> Vec<u8> {
    let start = Start {
        sequence_number: 1,
        stream_sid: StreamSid::new("MZ00000000000000000000000000000001").expect("sid"),
        account_sid: AccountSid::new("AC00000000000000000000000000000001").expect("sid"),
        call_sid: CallSid::new(call_sid).expect("sid"),
        tracks: Tracks { inbound: true, outbound: false },
        media_format: MediaFormat::mulaw_8k_mono(),
        custom_parameters: parameters,
    };
    let mut out = Vec::new();
    media_stream::write_start(&mut out, &start);
    out
}

fn close_of(bridge: &mut CallBridge) -> Option<(u16, &'static str)> {
    let mut close = None;
    while let Some(output) = bridge.poll_output() {
        if let Output::Close { code, reason } = output {
            close = Some((code, reason));
        }
    }
    close
}

#[test]
fn a_websocket_that_never_starts_ends_at_the_start_deadline_even_while_it_answers_pings() {
    let mut bridge = CallBridge::new(config(), Instant::ZERO).expect("config");
    assert!(bridge.poll_timeout().expect("a deadline") <= ms(10_000));
    let mut now = Instant::ZERO;
    while !bridge.is_finished() && now < ms(60_000) {
        now = bridge.poll_timeout().expect("a deadline while the call runs");
        bridge.handle_timeout(now);
        // The peer answers every ping at once.
        bridge.handle_twilio_activity(now);
    }
    assert_eq!(bridge.end_reason(), Some(EndReason::StartTimeout));
    assert_eq!(now, ms(10_000), "the deadline is start_timeout after the WebSocket opened");
    assert_eq!(close_of(&mut bridge), Some((1008, "no start message in time")));
}

#[test]
fn a_started_stream_has_no_start_deadline() {
    let mut bridge = CallBridge::new(config(), Instant::ZERO).expect("config");
    let mut twilio = TwilioSim::new(vec![0xFF; 160]);
    let mut start = twilio.start_frame();
    bridge.handle_twilio(ms(5), &mut start).expect("start");
    for t in (1_000..20_000).step_by(1_000) {
        bridge.handle_twilio_activity(ms(t));
        bridge.handle_timeout(ms(t));
    }
    assert!(!bridge.is_finished(), "{:?}", bridge.end_reason());
}

#[test]
fn with_a_token_key_start_needs_the_token_of_its_call_and_twilio_shaped_ids() {
    use voxproxy_adapters::stream_token::{STREAM_TOKEN_PARAMETER, StreamTokenKey};
    let key = StreamTokenKey::new("auth-token").expect("key");
    let call = "CA00000000000000000000000000000001";
    let other = "CA00000000000000000000000000000002";
    let token = |sid: &str| (STREAM_TOKEN_PARAMETER.to_owned(), key.token(sid));
    let from = ("From".to_owned(), "+15551230000".to_owned());
    let refused: [(&str, Vec<(String, String)>); 4] = [
        (call, vec![from.clone()]),
        (call, vec![from.clone(), token(other)]),
        (call, vec![(STREAM_TOKEN_PARAMETER.to_owned(), "00".repeat(32))]),
        ("CA1", vec![token("CA1")]),
    ];
    for (sid, parameters) in refused {
        let config = BridgeConfig { stream_token: Some(key.clone()), ..config() };
        let mut bridge = CallBridge::new(config, Instant::ZERO).expect("config");
        let mut frame = start_with(sid, parameters.clone());
        let result = bridge.handle_twilio(ms(1), &mut frame);
        assert!(
            matches!(result, Err(voxproxy_adapters::bridge::BridgeError::Unauthorized { .. })),
            "{sid} {parameters:?}: {result:?}"
        );
        assert_eq!(bridge.end_reason(), Some(EndReason::Unauthorized));
        assert_eq!(bridge.stats().twilio_unauthorized, 1);
        assert_eq!(close_of(&mut bridge), Some((1008, "start not authorized for this call")));
    }

    let config = BridgeConfig { stream_token: Some(key.clone()), ..config() };
    let mut bridge = CallBridge::new(config, Instant::ZERO).expect("config");
    let mut frame = start_with(call, vec![from.clone(), token(call)]);
    bridge.handle_twilio(ms(1), &mut frame).expect("the right token is accepted");
    assert!(!bridge.is_finished());
    assert_eq!(
        bridge.stream().expect("started").custom_parameters,
        vec![from],
        "the token is not reported anywhere"
    );
}

#[test]
fn without_a_token_key_the_token_parameter_is_still_not_reported() {
    use voxproxy_adapters::stream_token::STREAM_TOKEN_PARAMETER;
    let mut bridge = CallBridge::new(config(), Instant::ZERO).expect("config");
    let mut frame = start_with("CA1", vec![(STREAM_TOKEN_PARAMETER.to_owned(), "x".to_owned())]);
    bridge.handle_twilio(ms(1), &mut frame).expect("accepted without a key");
    assert!(bridge.stream().expect("started").custom_parameters.is_empty());
}

#[test]
fn a_latching_backend_latches_only_a_plausible_rtp_answer_after_start() {
    let latch: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let config = BridgeConfig { backend: Some(latch), ..config() };
    let mut bridge = CallBridge::new(config, Instant::ZERO).expect("config");
    let rogue: SocketAddr = "127.0.0.1:5353".parse().expect("addr");
    let mut audio = vec![0u8; 172];
    let n = RtpHeader::new(0, 1, 0, 9).write(&[0xFF; 160], &mut audio).expect("fits");
    let audio = &audio[..n];
    bridge.handle_rtp(ms(1), rogue, audio);
    assert_eq!(bridge.backend_peer(), None, "nothing latches before start");

    let mut twilio = TwilioSim::new(vec![0xFF; 160]);
    let mut start = twilio.start_frame();
    bridge.handle_twilio(ms(2), &mut start).expect("start");
    let mut wrong_type = vec![0u8; 172];
    let w = RtpHeader::new(8, 1, 0, 9).write(&[0xD5; 160], &mut wrong_type).expect("fits");
    let rtcp = [0x80u8, 200, 0, 6, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let empty = {
        let mut b = vec![0u8; 12];
        let e = RtpHeader::new(0, 1, 0, 9).write(&[], &mut b).expect("fits");
        b.truncate(e);
        b
    };
    for (what, datagram) in [
        ("a DNS-like answer", &b"\x12\x34\x81\x80\x00\x01\x00\x01"[..]),
        ("RTP of another payload type", &wrong_type[..w]),
        ("RTCP", &rtcp[..]),
        ("RTP without payload", &empty[..]),
        ("not RTP version 2", &[0x40u8; 172][..]),
    ] {
        bridge.handle_rtp(ms(3), rogue, datagram);
        assert_eq!(bridge.backend_peer(), None, "{what} does not latch");
    }
    assert_eq!(bridge.stats().rtp_foreign_source, 6, "each refused candidate is counted");
    let asterisk: SocketAddr = "127.0.0.1:17234".parse().expect("addr");
    bridge.handle_rtp(ms(4), asterisk, audio);
    assert_eq!(bridge.backend_peer(), Some(asterisk), "valid RTP of the audio type latches");
    bridge.handle_rtp(ms(5), rogue, audio);
    assert_eq!(bridge.backend_peer(), Some(asterisk), "and stays");
}
