//! The call bridge: one sans-IO state machine per call, between Twilio's
//! Media Streams WebSocket and the backend's RTP.
//!
//! ## How to drive it
//!
//! The proxy's per-call task is a loop: wait for a WebSocket frame, a UDP
//! datagram or [`CallBridge::poll_timeout`]; hand it in; then drain
//! [`CallBridge::poll_output`] into the sockets until it returns `None`.
//! Tests do the same on a virtual clock.
//!
//! ```
//! use voxproxy_adapters::bridge::{BridgeConfig, CallBridge, Output};
//! use voxproxy_core::Instant;
//!
//! let mut bridge = CallBridge::new(BridgeConfig::default(), Instant::ZERO).unwrap();
//! let mut start = br#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}},"streamSid":"MZ1"}"#.to_vec();
//! bridge.handle_twilio(Instant::ZERO, &mut start).unwrap();
//! // 20 ms of μ-law silence (0xFF), base64.
//! let payload = "/".repeat(212) + "/w==";
//! let mut media = format!(r#"{{"event":"media","sequenceNumber":"2","media":{{"track":"inbound","chunk":"1","timestamp":"0","payload":"{payload}"}},"streamSid":"MZ1"}}"#).into_bytes();
//! bridge.handle_twilio(Instant::from_millis(20), &mut media).unwrap();
//! let mut datagrams = 0;
//! while let Some(output) = bridge.poll_output() {
//!     match output {
//!         Output::Rtp(datagram) => { datagrams += 1; assert_eq!(datagram.len(), 12 + 160); }
//!         Output::Event(_) | Output::Twilio(_) | Output::Ping | Output::Close { .. } => {}
//!     }
//! }
//! assert_eq!(datagrams, 1);
//! ```
//!
//! ## What it does (docs/ARCHITECTURE.md, *Media path*)
//!
//! Twilio → backend: each `media` frame is base64-decoded into a per-call
//! buffer, decoded to PCM for the VAD, transcoded to the backend codec and
//! sent as RTP at the configured packet time, with the RTP timestamp derived
//! from `media.timestamp` (so a gap in Twilio's audio stays a gap) and the
//! marker bit on the first packet after one. `dtmf` becomes RFC 4733.
//! A fork that streams Twilio's `outbound` track (what the caller hears)
//! gets it as a second RTP stream on [`BridgeConfig::outbound_ssrc`], and
//! is one-way: backend RTP is counted and dropped.
//!
//! Backend → Twilio: RTP from the backend's address only, through the jitter
//! buffer (in-order packets leave at once; a missing packet is concealed at
//! its deadline), transcoded to μ-law, re-cut into 20 ms frames and sent as
//! `media`. The backend's talkspurts (RTP marker, silence, or a pause in its
//! packets) each end with a `mark`; Twilio's echo reports it played, or
//! cleared if a `clear` flushed it. Caller speech over unplayed backend audio
//! is a barge-in: `clear`, drop the rest of that talkspurt, an event.

mod config;
mod framer;
mod playout;
mod report;
mod signalled;
mod sip_leg;
#[cfg(test)]
mod size_tests;
mod taps;
#[cfg(test)]
mod tracks_tests;

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;

use voxproxy_core::g711;
use voxproxy_core::jitter::{Arrival, JitterBuffer, JitterConfig, JitterStats, PacketMeta, Playout};
use voxproxy_core::keepalive::{Keepalive, KeepaliveConfig, KeepaliveEvent};
use voxproxy_core::plc::{ConcealerConfig, LossConcealer};
use voxproxy_core::resample::{Downsampler, Upsampler};
use voxproxy_core::rtp::{self, RtpHeader, RtpPacket};
use voxproxy_core::telephone_event::{self, DtmfConfig, DtmfReceiver, DtmfReceiverConfig, DtmfSender};
use voxproxy_core::time::{Instant, earliest};
use voxproxy_core::vad::{TalkspurtConfig, TalkspurtDetector, TalkspurtEvent, Vad, VadConfig, VadMode};

pub use config::{BackendCodec, BridgeConfig, SUPPORTED_PTIMES_MS};
pub use framer::Framer;
pub use playout::{
    MARK_PREFIX, MAX_MARKS_IN_FLIGHT, MarkEcho, PlayoutTracker, parse_mark_name, write_mark_name,
};
pub use report::{BridgeEvent, CallStats, EndReason};
pub use sip_leg::{HungUpBy, LegOutcome, SipBackend};

use crate::media_stream::{self, Inbound, MessageError, Start, StreamSid, Track};
use crate::stream_token::STREAM_TOKEN_PARAMETER;

/// Samples in one 20 ms frame at 8 kHz: what Twilio gets from us and what
/// the VAD classifies.
pub const FRAME_SAMPLES: usize = 160;

/// Largest μ-law payload accepted in one Twilio `media` frame (half a second).
/// Twilio sends 20 ms; anything larger is refused as malformed.
pub const MAX_MEDIA_BYTES: usize = 4_000;

/// Largest backend RTP payload the jitter buffer stores: 20 ms of L16 at
/// 16 kHz, or 40 ms of L16 at 8 kHz.
pub const MAX_RTP_PAYLOAD: usize = 640;

/// Largest backend RTP payload a G.711 call's jitter buffer stores: 40 ms,
/// the longest `rtp.ptime_ms`. Half of [`MAX_RTP_PAYLOAD`], so a G.711 call
/// (nearly every call) holds 5 KB less per call; a longer G.711 packet is
/// dropped and counted as a bad payload (`rtp_bad_payload`).
pub const MAX_G711_RTP_PAYLOAD: usize = 320;

/// Samples of played audio the concealer keeps (80 ms at 8 kHz) to find a
/// pitch period to repeat.
const CONCEALER_HISTORY: usize = 640;

/// Largest uplink packet in samples: 40 ms at 8 kHz.
const MAX_UPLINK_PACKET: usize = 320;

/// Packets the jitter buffer can hold.
pub const JITTER_SLOTS: usize = 16;

/// Packets a G.711 call's jitter buffer holds when its hold spans few
/// packets (the default 60 ms at 20 ms ptime is three): 3 KB less per call
/// than [`JITTER_SLOTS`]. A longer hold gets [`JITTER_SLOTS`], boxed.
pub const SHORT_JITTER_SLOTS: usize = 8;

/// Outputs that may wait to be drained. The bridge produces a handful per
/// input; hitting this bound means the caller stopped draining.
pub const MAX_QUEUED_OUTPUTS: usize = 256;

/// Room for outputs (and pooled buffers) a new call starts with: a 20 ms
/// step yields a frame each way and an event or two. A burst grows it.
const INITIAL_QUEUED_OUTPUTS: usize = 8;

/// Capacity of a new output buffer: a `media` message carrying 20 ms of
/// μ-law (216 characters of base64) with the longest stream SID, which is
/// also enough for any G.711 datagram up to 40 ms, marks and clears. A
/// larger output (an L16 datagram) grows its buffer once, which the pool
/// then keeps.
const OUTPUT_BUFFER_BYTES: usize = 352;

/// DTMF digits from Twilio waiting to be sent while an earlier one plays.
pub const MAX_QUEUED_DIGITS: usize = 32;

/// RTP payload type of comfort noise (RFC 3389), used for keep-alives.
pub const COMFORT_NOISE_PAYLOAD_TYPE: u8 = 13;

/// What went wrong with an input. The bridge has already counted it in
/// [`CallStats`]; the call goes on unless [`CallBridge::is_finished`] says otherwise.
#[derive(Debug)]
#[non_exhaustive]
pub enum BridgeError {
    /// A setting is out of range.
    Config {
        /// The config key, as in the TOML file.
        key: &'static str,
        /// What the value must be.
        reason: &'static str,
    },
    /// A WebSocket frame from Twilio exceeded `limits.max_frame_bytes`.
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame from Twilio did not parse.
    Message(MessageError),
    /// A frame from Twilio came out of protocol order.
    OutOfOrder {
        /// The event that arrived.
        event: &'static str,
        /// What was wrong about its timing.
        reason: &'static str,
    },
    /// `start` did not prove it belongs to a call this deployment answered
    /// (see [`crate::stream_token`]); the stream is refused.
    Unauthorized {
        /// What was wrong.
        reason: &'static str,
    },
    /// Twilio's `start` announced audio the bridge cannot relay.
    UnsupportedMediaFormat {
        /// The announced encoding.
        encoding: String,
        /// The announced sample rate.
        sample_rate: u32,
        /// The announced channel count.
        channels: u16,
    },
    /// The call has already ended; the input was ignored.
    Ended,
    /// A signalled leg negotiated media the bridge cannot carry.
    UnusableMedia {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl core::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BridgeError::Config { key, reason } => write!(f, "invalid setting `{key}`: {reason}"),
            BridgeError::FrameTooLarge { len, max } => write!(
                f,
                "WebSocket frame of {len} bytes exceeds limits.max_frame_bytes ({max}); the frame was dropped"
            ),
            BridgeError::Message(e) => write!(f, "malformed Media Streams message: {e}"),
            BridgeError::OutOfOrder { event, reason } => {
                write!(f, "Media Streams `{event}` out of order: {reason}; the frame was ignored")
            }
            BridgeError::UnsupportedMediaFormat { encoding, sample_rate, channels } => write!(
                f,
                "stream announced {encoding} at {sample_rate} Hz with {channels} channel(s); only audio/x-mulaw 8000 Hz mono can be bridged"
            ),
            BridgeError::Ended => f.write_str("the call has already ended; input ignored"),
            BridgeError::UnusableMedia { reason } => write!(
                f,
                "the backend's SDP answer cannot be carried ({reason}); offer fewer codecs or change rtp.codec"
            ),
            BridgeError::Unauthorized { reason } => write!(
                f,
                "`start` refused: {reason}; only streams of calls this proxy's voice webhook answered are accepted"
            ),
        }
    }
}

impl std::error::Error for BridgeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BridgeError::Message(e) => Some(e),
            _ => None,
        }
    }
}

impl From<MessageError> for BridgeError {
    fn from(e: MessageError) -> Self {
        BridgeError::Message(e)
    }
}

/// The next thing the caller must do, from [`CallBridge::poll_output`].
/// Borrowed data is valid until the next call into the bridge.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Send this text frame (UTF-8 JSON) on the WebSocket to Twilio.
    Twilio(&'a [u8]),
    /// Send a WebSocket ping to Twilio.
    Ping,
    /// Send this datagram to the backend's RTP address.
    Rtp(&'a [u8]),
    /// Something happened; publish it (events API, logs, metrics).
    Event(BridgeEvent),
    /// Close the WebSocket with this code and reason. The call is over: write
    /// its record ([`CallBridge::stats`], [`CallBridge::end_reason`]) and free it.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
}

#[derive(Debug)]
enum Queued {
    Twilio(Vec<u8>),
    Rtp(Vec<u8>),
    Ping,
    Event(BridgeEvent),
    Close(EndReason),
}

/// Outputs waiting to be drained, with a pool of byte buffers so that the
/// steady state allocates nothing: a buffer goes back to the pool when the
/// caller asks for the next output.
///
/// Queue, pool and buffers start at what a call in steady state holds (a
/// few outputs per input) and grow only under a burst, such as the jitter
/// buffer releasing a run of packets at once; what they grew to stays for
/// the next burst, up to [`MAX_QUEUED_OUTPUTS`].
#[derive(Debug)]
struct OutputQueue {
    queue: VecDeque<Queued>,
    in_hand: Option<Queued>,
    pool: Vec<Vec<u8>>,
    dropped: u64,
}

impl OutputQueue {
    fn new() -> Self {
        OutputQueue {
            queue: VecDeque::with_capacity(INITIAL_QUEUED_OUTPUTS),
            in_hand: None,
            pool: Vec::with_capacity(INITIAL_QUEUED_OUTPUTS),
            dropped: 0,
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        let mut buf = self.pool.pop().unwrap_or_else(|| Vec::with_capacity(OUTPUT_BUFFER_BYTES));
        buf.clear();
        buf
    }

    fn push(&mut self, item: Queued) {
        if self.queue.len() >= MAX_QUEUED_OUTPUTS {
            self.dropped += 1;
            self.recycle(item);
            return;
        }
        self.queue.push_back(item);
    }

    fn recycle(&mut self, item: Queued) {
        if let Queued::Twilio(buf) | Queued::Rtp(buf) = item
            && self.pool.len() < MAX_QUEUED_OUTPUTS
        {
            self.pool.push(buf);
        }
    }

    fn next(&mut self) -> Option<Output<'_>> {
        if let Some(done) = self.in_hand.take() {
            self.recycle(done);
        }
        self.in_hand = self.queue.pop_front();
        Some(match self.in_hand.as_ref()? {
            Queued::Twilio(buf) => Output::Twilio(buf),
            Queued::Rtp(buf) => Output::Rtp(buf),
            Queued::Ping => Output::Ping,
            Queued::Event(event) => Output::Event(*event),
            Queued::Close(reason) => {
                let (code, reason) = reason.close_frame();
                Output::Close { code, reason }
            }
        })
    }
}

/// Twilio → backend: RTP packetization of the caller's audio.
#[derive(Debug)]
struct Uplink {
    sequence: u16,
    /// μ-law of the packet being filled, and the media time of its first byte.
    pending: Vec<u8>,
    pending_start_ms: u64,
    /// Media time just after the last audio received; a later start is a gap.
    next_media_ms: Option<u64>,
    marker_due: bool,
    upsampler: Upsampler,
    dtmf: Option<DtmfSender>,
    /// RTP timestamp just after the last digit sent: a new event must start
    /// later (RFC 4733 §2.5.1.2), even when no audio came in between.
    dtmf_next_timestamp: Option<u32>,
    digits: VecDeque<char>,
    vad: Vad,
    talkspurt: TalkspurtDetector,
    /// μ-law waiting to make up a whole 20 ms frame for the VAD.
    vad_framer: Framer<u8, FRAME_SAMPLES>,
    /// Media time of the first sample in `vad_framer`.
    vad_frame_ms: u64,
    /// When the last caller audio arrived: a talkspurt cannot outlast the
    /// audio by more than [`CALLER_AUDIO_TIMEOUT`].
    last_media_rx: Option<Instant>,
}

/// Twilio → backend: Twilio's `outbound` track (what the caller hears), on
/// a fork that streams it, as a second RTP stream with its own SSRC,
/// sequence and timestamp origin. Packetized like the caller's audio, but
/// without VAD or DTMF: those belong to the caller.
#[derive(Debug)]
struct OutboundTrack {
    sequence: u16,
    pending: Vec<u8>,
    pending_start_ms: u64,
    next_media_ms: Option<u64>,
    marker_due: bool,
    upsampler: Upsampler,
}

/// Backend → Twilio: jitter buffer, concealment, transcoding and playout tracking.
/// The backend's jitter buffer, its slots sized to the codec and its slot
/// count to the hold: G.711 with a hold of a few packets (the common case,
/// 3.1 KB) inline, anything larger boxed, so the bridge is not the size of
/// its largest variant.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "the inline G.711 buffer is the point: boxing it would move the memory, not save it"
)]
enum DownlinkJitter {
    G711(JitterBuffer<SHORT_JITTER_SLOTS, MAX_G711_RTP_PAYLOAD>),
    G711Long(Box<JitterBuffer<JITTER_SLOTS, MAX_G711_RTP_PAYLOAD>>),
    L16(Box<JitterBuffer<JITTER_SLOTS, MAX_RTP_PAYLOAD>>),
}

/// Calls the same method on whichever buffer the call has.
macro_rules! each_jitter {
    ($self:expr, $jb:ident => $body:expr) => {
        match $self {
            DownlinkJitter::G711($jb) => $body,
            DownlinkJitter::G711Long($jb) => $body,
            DownlinkJitter::L16($jb) => $body,
        }
    };
}

impl DownlinkJitter {
    /// The buffer for `codec` at `ptime` under `config`: G.711 gets
    /// [`SHORT_JITTER_SLOTS`] inline when its hold ([`JitterConfig::max_delay`])
    /// spans at most [`SHORT_JITTER_SLOTS`] − 2 packets: a packet is then
    /// released or given up on before the slots can fill with packets
    /// arriving at their pace, with one slot of slack either side.
    fn new(codec: BackendCodec, ptime: Duration, config: JitterConfig, now: Instant) -> Self {
        let short_hold = ptime.saturating_mul(SHORT_JITTER_SLOTS as u32 - 2);
        match codec {
            BackendCodec::Pcmu | BackendCodec::Pcma if config.max_delay <= short_hold => {
                DownlinkJitter::G711(JitterBuffer::new(config, now))
            }
            BackendCodec::Pcmu | BackendCodec::Pcma => {
                DownlinkJitter::G711Long(Box::new(JitterBuffer::new(config, now)))
            }
            BackendCodec::L16Narrowband | BackendCodec::L16Wideband => {
                DownlinkJitter::L16(Box::new(JitterBuffer::new(config, now)))
            }
        }
    }

    /// Largest payload a slot holds.
    fn max_payload(&self) -> usize {
        match self {
            DownlinkJitter::G711(_) | DownlinkJitter::G711Long(_) => MAX_G711_RTP_PAYLOAD,
            DownlinkJitter::L16(_) => MAX_RTP_PAYLOAD,
        }
    }

    fn handle_packet(&mut self, now: Instant, meta: PacketMeta, payload: &[u8]) -> Arrival {
        each_jitter!(self, jb => jb.handle_packet(now, meta, payload))
    }

    fn handle_timeout(&mut self, now: Instant) {
        each_jitter!(self, jb => jb.handle_timeout(now));
    }

    fn poll_playout(&mut self) -> Option<Playout<'_>> {
        each_jitter!(self, jb => jb.poll_playout())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        each_jitter!(self, jb => jb.poll_timeout())
    }

    fn stats(&self) -> JitterStats {
        each_jitter!(self, jb => jb.stats())
    }

    fn last_wait(&self) -> Option<Duration> {
        each_jitter!(self, jb => jb.last_wait())
    }
}

#[derive(Debug)]
struct Downlink {
    jitter: DownlinkJitter,
    concealer: LossConcealer<CONCEALER_HISTORY>,
    downsampler: Downsampler,
    telephone_events: DtmfReceiver,
    mulaw_framer: Framer<u8, FRAME_SAMPLES>,
    pcm_framer: Framer<i16, FRAME_SAMPLES>,
    vad: Vad,
    talkspurt: TalkspurtDetector,
    /// Media clock of what we played out (20 ms per frame), for the talkspurt detector.
    frames_out: u64,
    /// Frames sent to Twilio since the last mark.
    unmarked_frames: u64,
    /// After a barge-in: drop backend audio until its talkspurt ends.
    dropping: bool,
    last_rx: Option<Instant>,
    timed_out: bool,
    playout: PlayoutTracker,
    mark_name: String,
}

/// One call between Twilio and the backend. See the [module docs](self).
#[derive(Debug)]
pub struct CallBridge {
    config: BridgeConfig,
    stream: Option<Box<Start>>,
    ended: Option<EndReason>,
    stats: CallStats,
    out: OutputQueue,
    uplink: Uplink,
    outbound: OutboundTrack,
    downlink: Downlink,
    /// The stream is a fork (`<Start><Stream>`): Twilio plays nothing sent
    /// back on it, so backend RTP is counted and dropped. Known from
    /// `start.tracks` naming `outbound`, which only forks can ask for.
    one_way: bool,
    twilio_keepalive: Keepalive,
    rtp_keepalive: Keepalive,
    /// Where backend RTP comes from and goes to, once known.
    backend_peer: Option<SocketAddr>,
    /// When the WebSocket opened: `start` is due by `start_timeout` after.
    opened: Instant,
    /// The latest `now` handed in, for the taps of code that has none.
    now: Instant,
    /// Where each millisecond went ([`CallBridge::latency`]); boxed, a
    /// kilobyte of histograms that the frame path only increments.
    latency: Box<crate::latency::LatencyBreakdown>,
    /// Set while the call is recorded ([`CallBridge::start_recording`]).
    recording: Option<Box<crate::recording::RecordingTap>>,
    /// A signalled leg put the call on hold (the peer's SDP is `sendonly`
    /// or `inactive`): no audio either way until it resumes.
    held: bool,
    /// Whether Twilio's DTMF goes out as RFC 4733: a signalled leg whose
    /// peer offered no `telephone-event` takes none.
    dtmf_out: bool,
    /// RTP keep-alives are silence in the call's codec rather than comfort
    /// noise: set once a signalled leg applied its media, since our SDP
    /// offers no CN.
    keepalive_in_codec: bool,
}

/// What one backend packet decodes to on its way to Twilio: used within
/// one [`CallBridge::drain_jitter_buffer`] and never kept, so one per
/// worker thread rather than 2,560 bytes of heap in every call's bridge.
struct DownlinkScratch {
    pcm: [i16; MAX_RTP_PAYLOAD / 2],
    narrow: [i16; MAX_RTP_PAYLOAD],
    mulaw: [u8; MAX_RTP_PAYLOAD],
}

thread_local! {
    /// The μ-law of the Twilio frame being handled ([`CallBridge::handle_twilio`]).
    static TWILIO_AUDIO: core::cell::RefCell<[u8; MAX_MEDIA_BYTES]> =
        const { core::cell::RefCell::new([0; MAX_MEDIA_BYTES]) };
    static DOWNLINK_SCRATCH: core::cell::RefCell<DownlinkScratch> = const {
        core::cell::RefCell::new(DownlinkScratch {
            pcm: [0; MAX_RTP_PAYLOAD / 2],
            narrow: [0; MAX_RTP_PAYLOAD],
            mulaw: [0; MAX_RTP_PAYLOAD],
        })
    };
}

fn talkspurt_detector(config: TalkspurtConfig, now: Instant) -> TalkspurtDetector {
    // Only the bridge's own constant configs come here; every bridge test
    // constructs both, so an invalid one could not ship.
    TalkspurtDetector::new(config, now).expect("the bridge's talkspurt configs are valid constants")
}

/// Caller audio that stops arriving ends the caller's talkspurt after this
/// long: as long as the talkspurt's hangover (15 frames of 20 ms), since no
/// audio is as good as silence for deciding that speech is over. Without
/// it a talkspurt open when the audio stalled would stay open, and the
/// caller's next words would not be a new talkspurt, so not a barge-in.
/// A candidate for a config key.
pub const CALLER_AUDIO_TIMEOUT: Duration = Duration::from_millis(300);

/// The backend's talkspurts: a short onset (TTS starts cleanly) and a
/// 200 ms hangover so a mark does not land between two words.
const BACKEND_TALKSPURT: TalkspurtConfig =
    TalkspurtConfig { onset_frames: 1, onset_window: 1, hangover_frames: 10 };

/// The jitter buffer's settings for `config`'s codec and ptime.
fn jitter_config(config: &BridgeConfig) -> Result<JitterConfig, BridgeError> {
    let packet_bytes = config.codec.bytes_per_ms() * config.ptime.as_millis() as usize;
    // A backend answers in the ptime we send, and the jitter buffer's
    // slots hold MAX_RTP_PAYLOAD bytes.
    if packet_bytes > MAX_RTP_PAYLOAD {
        return Err(BridgeError::Config {
            key: "rtp.ptime_ms",
            reason: "too long for this codec: L16 at 16 kHz allows 10 or 20 ms",
        });
    }
    Ok(JitterConfig {
        clock_rate: config.codec.clock_rate(),
        max_delay: config.jitter_max_delay,
        // Before any jitter is measured the adaptive hold would be zero
        // and the first reordered pair would turn into a loss. One packet
        // time costs nothing while packets arrive in order (they never wait).
        min_delay: config.ptime.min(config.jitter_max_delay),
        ..JitterConfig::default()
    })
}

impl CallBridge {
    /// A bridge for a call whose WebSocket opened at `now`.
    ///
    /// # Errors
    /// [`BridgeError::Config`] naming the first invalid setting.
    pub fn new(config: BridgeConfig, now: Instant) -> Result<Self, BridgeError> {
        config.validate()?;
        let backend_peer = config.backend.filter(|a| a.port() != 0);
        let vad_mode = VadMode::try_from(config.vad_mode)
            .map_err(|_| BridgeError::Config { key: "vad.mode", reason: "must be 0, 1, 2 or 3" })?;
        let jitter = jitter_config(&config)?;
        let twilio_keepalive = Keepalive::new(
            KeepaliveConfig {
                interval: config.ping_interval,
                max_backoff: config.ping_interval,
                idle_timeout: Some(config.idle_timeout),
                max_unanswered: None,
                refresh_on_receive: true,
            },
            now,
        );
        let rtp_keepalive = Keepalive::new(
            KeepaliveConfig {
                interval: config.rtp_keepalive_interval,
                max_backoff: config.rtp_keepalive_interval,
                idle_timeout: None,
                max_unanswered: None,
                // A NAT or firewall binding is refreshed by what we send only.
                refresh_on_receive: false,
            },
            now,
        );
        let ptime_samples = 8 * config.ptime.as_millis() as usize;
        Ok(CallBridge {
            uplink: Uplink {
                sequence: config.initial_sequence,
                pending: Vec::with_capacity(ptime_samples),
                pending_start_ms: 0,
                next_media_ms: None,
                marker_due: true,
                upsampler: Upsampler::new(),
                dtmf: None,
                dtmf_next_timestamp: None,
                // Grown by the first digits (at most MAX_QUEUED_DIGITS): most
                // calls never send one.
                digits: VecDeque::new(),
                vad: Vad::new(VadConfig { mode: vad_mode }),
                talkspurt: talkspurt_detector(TalkspurtConfig::default(), Instant::ZERO),
                vad_framer: Framer::new(),
                vad_frame_ms: 0,
                last_media_rx: None,
            },
            outbound: OutboundTrack {
                sequence: config.outbound_initial_sequence,
                // Reserved by the first `outbound` track audio (forks only).
                pending: Vec::new(),
                pending_start_ms: 0,
                next_media_ms: None,
                marker_due: true,
                upsampler: Upsampler::new(),
            },
            one_way: false,
            downlink: Downlink {
                jitter: DownlinkJitter::new(config.codec, config.ptime, jitter, now),
                concealer: LossConcealer::new(ConcealerConfig {
                    sample_rate: 8_000,
                    ..ConcealerConfig::default()
                }),
                downsampler: Downsampler::new(),
                telephone_events: DtmfReceiver::new(DtmfReceiverConfig::default(), now),
                // L16 payloads hold half as many samples as bytes; G.711 and
                // concealment at most one sample per payload byte.
                mulaw_framer: Framer::new(),
                pcm_framer: Framer::new(),
                vad: Vad::new(VadConfig { mode: VadMode::Quality }),
                talkspurt: talkspurt_detector(BACKEND_TALKSPURT, Instant::ZERO),
                frames_out: 0,
                unmarked_frames: 0,
                dropping: false,
                last_rx: None,
                timed_out: false,
                playout: PlayoutTracker::new(),
                mark_name: String::with_capacity(24),
            },
            config,
            stream: None,
            ended: None,
            stats: CallStats::default(),
            out: OutputQueue::new(),
            twilio_keepalive,
            rtp_keepalive,
            backend_peer,
            opened: now,
            now,
            latency: Box::default(),
            recording: None,
            held: false,
            dtmf_out: true,
            keepalive_in_codec: false,
        })
    }

    /// The settings this bridge runs with.
    #[must_use]
    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// The longest RTP payload from the backend this bridge accepts (320
    /// bytes of G.711, 640 of L16); a longer one is rejected as bad. The
    /// socket's receive buffer needs no more room than this behind a header.
    #[must_use]
    pub fn max_rtp_payload(&self) -> usize {
        self.downlink.jitter.max_payload()
    }

    /// Twilio's `start`: stream, call and account ids, custom parameters.
    /// `None` until it arrived.
    #[must_use]
    pub fn stream(&self) -> Option<&Start> {
        self.stream.as_deref()
    }

    /// The call's counters so far, with the jitter buffer's folded in.
    #[must_use]
    pub fn stats(&self) -> CallStats {
        let mut stats = self.stats;
        let jb = self.downlink.jitter.stats();
        stats.rtp_lost = jb.lost;
        stats.rtp_late = jb.late;
        stats.rtp_duplicate = jb.duplicate;
        stats.rtp_reordered = jb.reordered;
        stats.rtp_bad_payload += jb.too_large;
        stats.jitter_us = jb.jitter_micros;
        stats.outputs_dropped = self.out.dropped;
        stats
    }

    /// Why the call ended, once it has.
    #[must_use]
    pub fn end_reason(&self) -> Option<EndReason> {
        self.ended
    }

    /// Whether the stream is one-way (a fork that announced Twilio's
    /// `outbound` track): the backend only listens, so its silence is not a
    /// failed leg and its audio goes nowhere.
    #[must_use]
    pub fn is_one_way(&self) -> bool {
        self.one_way
    }

    /// Whether the call is over (a [`Output::Close`] was or will be yielded).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.ended.is_some()
    }

    /// Whether backend audio sent to Twilio is still waiting to be played.
    #[must_use]
    pub fn has_unplayed_audio(&self) -> bool {
        self.downlink.playout.has_unplayed() || self.downlink.unmarked_frames > 0
    }

    /// Feeds one WebSocket text frame from Twilio (parsed in place, so it is
    /// `mut`). Drain [`CallBridge::poll_output`] afterwards.
    ///
    /// # Errors
    /// Any [`BridgeError`] other than `Config`; the frame was counted and
    /// dropped, and the call goes on.
    pub fn handle_twilio(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), BridgeError> {
        if self.ended.is_some() {
            return Err(BridgeError::Ended);
        }
        self.now = now;
        self.twilio_keepalive.handle_received(now);
        if frame.len() > self.config.max_frame_bytes {
            self.stats.twilio_oversize += 1;
            return Err(BridgeError::FrameTooLarge { len: frame.len(), max: self.config.max_frame_bytes });
        }
        // The decoded audio is copied on (into the uplink's packet, the
        // VAD's frame, the recording) before this call returns, so it lives
        // in the thread's buffer, not in every call. Offered no more than
        // this frame's payload can decode to (three bytes per four of
        // base64, so never more than 3/4 of the frame).
        let need = (frame.len() / 4 * 3 + 3).min(MAX_MEDIA_BYTES);
        TWILIO_AUDIO.with_borrow_mut(|audio| self.handle_twilio_with(now, frame, &mut audio[..need]))
    }

    /// [`CallBridge::handle_twilio`] once the frame's size was checked,
    /// decoding any audio into `audio`.
    fn handle_twilio_with(
        &mut self,
        now: Instant,
        frame: &mut [u8],
        audio: &mut [u8],
    ) -> Result<(), BridgeError> {
        let message = match media_stream::parse_inbound(frame, audio) {
            Ok(message) => message,
            Err(e) => {
                self.stats.twilio_malformed += 1;
                return Err(e.into());
            }
        };
        match message {
            Inbound::Connected(_) => Ok(()),
            Inbound::Start(start) => self.on_start(now, start),
            Inbound::Media(media) => {
                if self.stream.is_none() {
                    self.stats.twilio_out_of_order += 1;
                    return Err(BridgeError::OutOfOrder { event: "media", reason: "before start" });
                }
                let audio = &audio[..media.payload_len.min(audio.len())];
                if media.track == Track::Outbound {
                    if self.one_way {
                        self.stats.twilio_outbound_track_frames_in += 1;
                        self.on_outbound_media(now, media.timestamp_ms, audio);
                    }
                    return Ok(());
                }
                self.stats.twilio_frames_in += 1;
                self.stats.twilio_audio_bytes_in += audio.len() as u64;
                self.tap_from_twilio(now, media.timestamp_ms, audio);
                self.on_media(now, media.timestamp_ms, audio);
                Ok(())
            }
            Inbound::Dtmf(dtmf) => {
                if self.stream.is_none() {
                    self.stats.twilio_out_of_order += 1;
                    return Err(BridgeError::OutOfOrder { event: "dtmf", reason: "before start" });
                }
                self.stats.dtmf_digits += 1;
                self.out.push(Queued::Event(BridgeEvent::Dtmf { digit: dtmf.digit }));
                if self.uplink.digits.len() < MAX_QUEUED_DIGITS {
                    self.uplink.digits.push_back(dtmf.digit);
                }
                self.drive_dtmf(now);
                Ok(())
            }
            Inbound::Mark(mark) => {
                match self.downlink.playout.handle_echo(mark.name) {
                    MarkEcho::Played(id) => {
                        self.stats.marks_played += 1;
                        self.out.push(Queued::Event(BridgeEvent::MarkPlayed { id }));
                    }
                    MarkEcho::Cleared(id) => {
                        self.stats.marks_cleared += 1;
                        self.out.push(Queued::Event(BridgeEvent::MarkCleared { id }));
                    }
                    MarkEcho::Unknown => {}
                }
                Ok(())
            }
            Inbound::Stop(_) => {
                // The last words of both tracks still go out.
                self.flush_uplink(now);
                self.flush_outbound(now);
                self.out.push(Queued::Event(BridgeEvent::StreamStopped));
                self.end(now, EndReason::TwilioStop);
                Ok(())
            }
            Inbound::Unknown { .. } => {
                self.stats.twilio_unknown_events += 1;
                Ok(())
            }
        }
    }

    /// A WebSocket control frame (pong, ping) arrived: Twilio is alive.
    pub fn handle_twilio_activity(&mut self, now: Instant) {
        self.twilio_keepalive.handle_received(now);
    }

    /// Where RTP outputs go: the configured backend, or with a latching
    /// backend (port 0) the address its first packet came from; `None` while
    /// that is not known yet (and with no backend configured).
    #[must_use]
    pub fn backend_peer(&self) -> Option<SocketAddr> {
        self.backend_peer
    }

    /// Points the call at another RTP backend (the route the stream's `start`
    /// named). Only before the first RTP datagram either way, so nothing
    /// already latched or sent is redirected; `false` (and no change) after.
    pub fn set_backend(&mut self, backend: Option<SocketAddr>) -> bool {
        if self.stats.twilio_frames_in > 0
            || self.stats.twilio_outbound_track_frames_in > 0
            || self.downlink.last_rx.is_some()
        {
            return false;
        }
        self.config.backend = backend;
        self.backend_peer = backend.filter(|a| a.port() != 0);
        true
    }

    /// Changes the RTP leg's format to what a signalled leg negotiated (an
    /// SDP offer or answer): codec, audio and DTMF payload types. Only
    /// before any media either way, like [`CallBridge::set_backend`];
    /// `Err` (and no change) after that, or for a combination the bridge
    /// refuses at start (the error names it).
    ///
    /// # Errors
    /// [`BridgeError::Config`] for invalid settings or media already flowing.
    pub fn set_media(
        &mut self,
        now: Instant,
        codec: BackendCodec,
        payload_type: u8,
        dtmf_payload_type: u8,
    ) -> Result<(), BridgeError> {
        if self.stats.twilio_frames_in > 0
            || self.stats.twilio_outbound_track_frames_in > 0
            || self.downlink.last_rx.is_some()
        {
            return Err(BridgeError::Config { key: "rtp.codec", reason: "media is already flowing" });
        }
        let mut next = self.config.clone();
        (next.codec, next.payload_type, next.dtmf_payload_type) = (codec, payload_type, dtmf_payload_type);
        next.validate()?;
        let jitter = jitter_config(&next)?;
        self.downlink.jitter = DownlinkJitter::new(next.codec, next.ptime, jitter, now);
        self.config = next;
        Ok(())
    }

    /// Feeds one UDP datagram that arrived on the call's RTP socket from `from`.
    /// Anything that is not usable backend audio is counted and dropped.
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if self.ended.is_some() {
            return;
        }
        self.now = now;
        match (self.config.backend, self.backend_peer) {
            (Some(_), Some(peer)) if peer != from => {
                self.stats.rtp_foreign_source += 1;
                return;
            }
            (Some(latch), None) => {
                // Not latched yet: only a plausible answer fixes the port.
                if latch.ip() != from.ip() || !self.is_latchable(datagram) {
                    self.stats.rtp_foreign_source += 1;
                    return;
                }
                self.backend_peer = Some(from);
            }
            _ => {}
        }
        if rtp::is_probably_rtcp(datagram) {
            self.stats.rtcp_in += 1;
            return;
        }
        let packet = match RtpPacket::parse(datagram) {
            Ok(packet) => packet,
            Err(_) => {
                self.stats.rtp_malformed += 1;
                return;
            }
        };
        self.stats.rtp_packets_in += 1;
        self.stats.rtp_bytes_in += datagram.len() as u64;
        let down = &mut self.downlink;
        if down.timed_out {
            down.timed_out = false;
            let silent = down.last_rx.map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
            let silent_ms = silent.as_millis() as u64;
            self.stats.backend_outage_ms = self.stats.backend_outage_ms.saturating_add(silent_ms);
            self.out.push(Queued::Event(BridgeEvent::BackendResumed { silent_ms }));
        }
        down.last_rx = Some(now);
        if self.one_way {
            self.stats.rtp_dropped_one_way += 1;
            return;
        }
        if self.held {
            self.stats.rtp_dropped_on_hold += 1;
            return;
        }
        let payload_type = packet.payload_type();
        if payload_type == self.config.dtmf_payload_type {
            if down.telephone_events.handle_packet(now, packet.timestamp(), packet.payload()).is_err() {
                self.stats.rtp_bad_payload += 1;
            }
            self.drain_backend_dtmf();
            return;
        }
        if payload_type != self.config.payload_type {
            self.stats.rtp_unknown_payload_type += 1;
            return;
        }
        let payload = packet.payload();
        let is_l16 = matches!(self.config.codec, BackendCodec::L16Narrowband | BackendCodec::L16Wideband);
        if payload.is_empty() || (is_l16 && payload.len() % 2 != 0) {
            self.stats.rtp_bad_payload += 1;
            return;
        }
        let meta = PacketMeta {
            ssrc: packet.ssrc(),
            sequence: packet.sequence_number(),
            timestamp: packet.timestamp(),
            marker: packet.marker(),
        };
        let _ = down.jitter.handle_packet(now, meta, payload);
        self.stats.max_jitter_us = self.stats.max_jitter_us.max(down.jitter.stats().jitter_micros);
        self.drain_jitter_buffer();
    }

    /// Whether a datagram may fix a latching backend's port: the stream has
    /// started (so there is a call to answer) and it is RTP version 2, not
    /// RTCP, of the configured audio or telephone-event payload type, with a
    /// payload this codec can carry. Anything else on the backend's host that
    /// speaks first (a stray DNS answer, a port scan, a stale stream) does
    /// not take the call's audio. A process there that sends well-formed RTP
    /// of the right type first still can: README "Latching backends".
    fn is_latchable(&self, datagram: &[u8]) -> bool {
        if self.stream.is_none() || rtp::is_probably_rtcp(datagram) {
            return false;
        }
        let Ok(packet) = RtpPacket::parse(datagram) else { return false };
        let payload_type = packet.payload_type();
        if payload_type == self.config.dtmf_payload_type {
            // RFC 4733 events are 4 bytes each.
            return !packet.payload().is_empty() && packet.payload().len() % 4 == 0;
        }
        let len = packet.payload().len();
        let is_l16 = matches!(self.config.codec, BackendCodec::L16Narrowband | BackendCodec::L16Wideband);
        payload_type == self.config.payload_type
            && len > 0
            && len <= self.downlink.jitter.max_payload()
            && (!is_l16 || len % 2 == 0)
    }

    /// Time passed: `now` is at or after [`CallBridge::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended.is_some() {
            return;
        }
        self.now = now;
        if self.stream.is_none() && now >= self.opened + self.config.start_timeout {
            // A socket that answers pings but never starts would hold its
            // place forever.
            self.end(now, EndReason::StartTimeout);
            return;
        }
        self.twilio_keepalive.handle_timeout(now);
        while let Some(event) = self.twilio_keepalive.poll_event() {
            match event {
                KeepaliveEvent::SendKeepalive => {
                    self.stats.pings_sent += 1;
                    self.out.push(Queued::Ping);
                }
                KeepaliveEvent::IdleTimeout | KeepaliveEvent::Unresponsive => {
                    self.end(now, EndReason::IdleTimeout);
                    return;
                }
            }
        }
        if self.stream.is_some() {
            self.rtp_keepalive.handle_timeout(now);
            while let Some(event) = self.rtp_keepalive.poll_event() {
                if event == KeepaliveEvent::SendKeepalive {
                    self.send_rtp_keepalive(now);
                }
            }
        }
        if self.uplink.talkspurt.in_talkspurt()
            && self.uplink.last_media_rx.is_some_and(|last| now >= last + CALLER_AUDIO_TIMEOUT)
        {
            // The caller's audio stopped arriving mid-talkspurt.
            let resume_ms = self.uplink.next_media_ms.unwrap_or(0);
            self.end_caller_talkspurt(resume_ms);
        }
        self.downlink.jitter.handle_timeout(now);
        self.drain_jitter_buffer();
        self.downlink.telephone_events.handle_timeout(now);
        self.drain_backend_dtmf();
        self.drive_dtmf(now);
        let down = &mut self.downlink;
        if let Some(last) = down.last_rx {
            if now >= last + self.config.talkspurt_gap && (down.talkspurt.in_talkspurt() || down.dropping) {
                // The backend paused: its talkspurt is over.
                self.finish_backend_talkspurt();
            }
            if !self.downlink.timed_out && now >= last + self.config.backend_timeout {
                self.downlink.timed_out = true;
                self.stats.backend_outages += 1;
                self.out.push(Queued::Event(BridgeEvent::BackendTimeout));
            }
        }
    }

    /// The WebSocket is gone, or the proxy ends the call (`Hangup`, `Drain`).
    /// For a reason other than [`EndReason::WebSocketClosed`] a close frame
    /// is yielded.
    pub fn handle_close(&mut self, now: Instant, reason: EndReason) {
        self.end(now, reason);
    }

    /// The next thing to do. Call until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        self.out.next()
    }

    /// When [`CallBridge::handle_timeout`] is next needed; `None` once ended.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        let mut next = self.twilio_keepalive.poll_timeout();
        if self.stream.is_some() {
            next = earliest(next, self.rtp_keepalive.poll_timeout());
        } else {
            next = earliest(next, Some(self.opened + self.config.start_timeout));
        }
        next = earliest(next, self.downlink.jitter.poll_timeout());
        next = earliest(next, self.downlink.telephone_events.poll_timeout());
        next = earliest(next, self.uplink.dtmf.as_ref().and_then(DtmfSender::poll_timeout));
        if self.uplink.talkspurt.in_talkspurt() {
            next = earliest(next, self.uplink.last_media_rx.map(|last| last + CALLER_AUDIO_TIMEOUT));
        }
        if let Some(last) = self.downlink.last_rx {
            if self.downlink.talkspurt.in_talkspurt() || self.downlink.dropping {
                next = earliest(next, Some(last + self.config.talkspurt_gap));
            }
            if !self.downlink.timed_out {
                next = earliest(next, Some(last + self.config.backend_timeout));
            }
        }
        next
    }

    fn end(&mut self, now: Instant, reason: EndReason) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(reason);
        let down = &mut self.downlink;
        if let (true, Some(last)) = (down.timed_out, down.last_rx) {
            // An outage the call ended in lasted until the end: the record
            // must say so, since no `BackendResumed` will.
            down.timed_out = false;
            let silent_ms = now.saturating_duration_since(last).as_millis() as u64;
            self.stats.backend_outage_ms = self.stats.backend_outage_ms.saturating_add(silent_ms);
        }
        if reason != EndReason::WebSocketClosed {
            self.out.push(Queued::Close(reason));
        }
    }

    fn on_start(&mut self, now: Instant, mut start: Box<Start>) -> Result<(), BridgeError> {
        if self.stream.is_some() {
            self.stats.twilio_out_of_order += 1;
            return Err(BridgeError::OutOfOrder { event: "start", reason: "a second start on one stream" });
        }
        if let Err(reason) = self.authorize(&start) {
            self.stats.twilio_unauthorized += 1;
            self.end(now, EndReason::Unauthorized);
            return Err(BridgeError::Unauthorized { reason });
        }
        // The token has done its work; nothing downstream reports it.
        start.custom_parameters.retain(|(name, _)| name != STREAM_TOKEN_PARAMETER);
        let format = &start.media_format;
        if !format.is_mulaw_8k_mono() {
            self.stats.twilio_malformed += 1;
            return Err(BridgeError::UnsupportedMediaFormat {
                encoding: format.encoding.clone(),
                sample_rate: format.sample_rate,
                channels: format.channels,
            });
        }
        // Bidirectional streams (`<Connect><Stream>`) carry the inbound
        // track only; a stream with the outbound track is a fork.
        self.one_way = start.tracks.outbound;
        self.stream = Some(start);
        self.out.push(Queued::Event(BridgeEvent::StreamStarted));
        Ok(())
    }

    /// With a stream token key: Twilio-shaped ids and the token of `callSid`.
    fn authorize(&self, start: &Start) -> Result<(), &'static str> {
        let Some(key) = &self.config.stream_token else { return Ok(()) };
        if !start.call_sid.is_twilio_format()
            || !start.account_sid.is_twilio_format()
            || !start.stream_sid.is_twilio_format()
        {
            return Err("callSid, accountSid and streamSid must be a two-letter prefix and 32 hex digits");
        }
        match start.custom_parameter(STREAM_TOKEN_PARAMETER) {
            None => Err("no stream token among the custom parameters"),
            Some(token) if !key.verify(start.call_sid.as_str(), token) => {
                Err("the stream token is not the one issued for this callSid")
            }
            Some(_) => Ok(()),
        }
    }

    fn stream_sid(&self) -> Option<StreamSid> {
        self.stream.as_ref().map(|s| s.stream_sid)
    }

    /// RTP timestamp of media time `ms`.
    fn rtp_timestamp(&self, ms: u64) -> u32 {
        let units = ms.wrapping_mul(u64::from(self.config.codec.clock_rate() / 1000));
        self.config.initial_timestamp.wrapping_add(units as u32)
    }

    fn on_media(&mut self, now: Instant, timestamp_ms: u64, audio: &[u8]) {
        // A frame that starts later than the previous one ended is a gap in
        // the caller's audio: flush what is pending so timestamps stay true,
        // and mark the first packet after it (RFC 3551 §4.1). A frame that
        // starts earlier (a sender restarting its clock) is taken as is.
        if self.uplink.next_media_ms.is_some_and(|next| timestamp_ms > next + 1) {
            self.flush_uplink(now);
            self.uplink.marker_due = true;
        }
        // Either way the caller's audio is not continuous: whatever talkspurt
        // was open ended with the audio before the jump.
        if self.uplink.next_media_ms.is_some_and(|next| timestamp_ms.abs_diff(next) > 1) {
            self.end_caller_talkspurt(timestamp_ms);
        }
        self.uplink.last_media_rx = Some(now);
        self.uplink.next_media_ms = Some(timestamp_ms + audio.len() as u64 / 8);
        self.detect_caller_speech(timestamp_ms, audio);
        self.packetize_uplink(now, timestamp_ms, audio);
    }

    /// Runs the caller's audio through the VAD in exact 20 ms frames. The
    /// framer holds μ-law, half the bytes of PCM; each whole frame is
    /// decoded once, to the same samples as decoding piece by piece.
    fn detect_caller_speech(&mut self, timestamp_ms: u64, audio: &[u8]) {
        let len = audio.len();
        let mut at = 0;
        while at < len {
            let Uplink { vad, talkspurt, vad_framer, vad_frame_ms, .. } = &mut self.uplink;
            if vad_framer.buffered() == 0 {
                *vad_frame_ms = timestamp_ms + at as u64 / 8;
            }
            let take = (FRAME_SAMPLES - vad_framer.buffered()).min(len - at);
            let frame_ms = *vad_frame_ms;
            vad_framer.push(&audio[at..at + take], |frame| {
                let mut pcm = [0i16; FRAME_SAMPLES];
                let _ = g711::decode(g711::Law::Mu, frame, &mut pcm);
                let speech = vad.classify(&pcm).unwrap_or(false);
                talkspurt.handle_frame(Instant::from_millis(frame_ms), speech);
            });
            at += take;
            while let Some(event) = self.uplink.talkspurt.poll_event() {
                self.on_caller_talkspurt(event);
            }
        }
    }

    /// Cuts the caller's audio into RTP packets of the configured ptime.
    fn packetize_uplink(&mut self, now: Instant, timestamp_ms: u64, audio: &[u8]) {
        let len = audio.len();
        let packet_bytes = 8 * self.config.ptime.as_millis() as usize;
        let mut at = 0;
        while at < len {
            let up = &mut self.uplink;
            if up.pending.is_empty() {
                up.pending_start_ms = timestamp_ms + at as u64 / 8;
            }
            let take = (packet_bytes - up.pending.len()).min(len - at);
            up.pending.extend_from_slice(&audio[at..at + take]);
            at += take;
            if self.uplink.pending.len() == packet_bytes {
                self.flush_uplink(now);
            }
        }
    }

    /// Ends the caller's talkspurt (if one is open) where the audio received
    /// so far ends, and starts talkspurt detection afresh at media time
    /// `resume_ms`: the next audio is not a continuation of the last.
    fn end_caller_talkspurt(&mut self, resume_ms: u64) {
        let end = Instant::from_millis(self.uplink.next_media_ms.unwrap_or(0));
        let up = &mut self.uplink;
        up.talkspurt.handle_end_of_stream(end);
        up.vad_framer.clear();
        while let Some(event) = self.uplink.talkspurt.poll_event() {
            self.on_caller_talkspurt(event);
        }
        // A fresh detector: the media clock may have gone backwards, and
        // frames from before the gap must not count towards the next onset.
        self.uplink.talkspurt =
            talkspurt_detector(TalkspurtConfig::default(), Instant::from_millis(resume_ms));
    }

    /// Handles an edge of the caller's talkspurts.
    fn on_caller_talkspurt(&mut self, event: TalkspurtEvent) {
        match event {
            TalkspurtEvent::SpeechStart { at } => {
                let media_ms = at.as_nanos() / 1_000_000;
                self.stats.vad_segments += 1;
                self.out.push(Queued::Event(BridgeEvent::SpeechStarted { media_ms }));
                if self.config.barge_in && self.has_unplayed_audio() {
                    self.barge_in(media_ms);
                }
            }
            TalkspurtEvent::SpeechEnd { at } => {
                let media_ms = at.as_nanos() / 1_000_000;
                self.out.push(Queued::Event(BridgeEvent::SpeechStopped { media_ms }));
            }
        }
    }

    fn barge_in(&mut self, media_ms: u64) {
        let Some(sid) = self.stream_sid() else { return };
        let mut buf = self.out.buffer();
        media_stream::write_clear(&mut buf, &sid);
        self.push_twilio(buf);
        if let Some(tap) = self.recording.as_deref_mut() {
            tap.handle_clear(self.now);
        }
        let down = &mut self.downlink;
        down.playout.handle_clear();
        down.unmarked_frames = 0;
        down.mulaw_framer.clear();
        down.pcm_framer.clear();
        // Whatever the backend still sends of this talkspurt is stale now;
        // its next talkspurt is an answer to the caller and plays.
        down.dropping = down.talkspurt.in_talkspurt();
        self.stats.barge_ins += 1;
        self.out.push(Queued::Event(BridgeEvent::BargeIn { media_ms }));
    }

    /// Sends the pending uplink audio as one RTP packet.
    fn flush_uplink(&mut self, now: Instant) {
        if self.uplink.pending.is_empty() {
            return;
        }
        let timestamp = self.rtp_timestamp(self.uplink.pending_start_ms);
        let up = &mut self.uplink;
        let mut header = RtpHeader::new(self.config.payload_type, up.sequence, timestamp, self.config.ssrc);
        header.marker = core::mem::take(&mut up.marker_due);
        up.sequence = up.sequence.wrapping_add(1);
        let mut buf = self.out.buffer();
        buf.resize(datagram_len(self.config.codec, up.pending.len()), 0);
        let Ok(at) = header.write_header(&mut buf) else { return };
        let written = encode_uplink(self.config.codec, &mut up.upsampler, &up.pending, &mut buf[at..]);
        up.pending.clear();
        buf.truncate(at + written);
        self.push_rtp(now, buf);
    }

    /// The `outbound` track's μ-law `audio`: gaps and packetization as for
    /// the caller's ([`CallBridge::on_media`]).
    fn on_outbound_media(&mut self, now: Instant, timestamp_ms: u64, audio: &[u8]) {
        let len = audio.len();
        if self.outbound.next_media_ms.is_some_and(|next| timestamp_ms > next + 1) {
            self.flush_outbound(now);
            self.outbound.marker_due = true;
        }
        self.outbound.next_media_ms = Some(timestamp_ms + len as u64 / 8);
        let packet_bytes = 8 * self.config.ptime.as_millis() as usize;
        if self.outbound.pending.capacity() == 0 {
            // Only forks stream this track: other calls never pay for its packet.
            self.outbound.pending.reserve_exact(packet_bytes);
        }
        let mut at = 0;
        while at < len {
            let track = &mut self.outbound;
            if track.pending.is_empty() {
                track.pending_start_ms = timestamp_ms + at as u64 / 8;
            }
            let take = (packet_bytes - track.pending.len()).min(len - at);
            track.pending.extend_from_slice(&audio[at..at + take]);
            at += take;
            if self.outbound.pending.len() == packet_bytes {
                self.flush_outbound(now);
            }
        }
    }

    /// Sends the pending `outbound` track audio as one RTP packet on its own SSRC.
    fn flush_outbound(&mut self, now: Instant) {
        if self.outbound.pending.is_empty() {
            return;
        }
        let units =
            self.outbound.pending_start_ms.wrapping_mul(u64::from(self.config.codec.clock_rate() / 1000));
        let timestamp = self.config.outbound_initial_timestamp.wrapping_add(units as u32);
        let track = &mut self.outbound;
        let mut header =
            RtpHeader::new(self.config.payload_type, track.sequence, timestamp, self.config.outbound_ssrc);
        header.marker = core::mem::take(&mut track.marker_due);
        track.sequence = track.sequence.wrapping_add(1);
        let mut buf = self.out.buffer();
        buf.resize(datagram_len(self.config.codec, track.pending.len()), 0);
        let Ok(at) = header.write_header(&mut buf) else { return };
        let written = encode_uplink(self.config.codec, &mut track.upsampler, &track.pending, &mut buf[at..]);
        track.pending.clear();
        buf.truncate(at + written);
        self.stats.rtp_outbound_track_packets_out += 1;
        self.push_rtp(now, buf);
    }

    fn push_rtp(&mut self, now: Instant, buf: Vec<u8>) {
        if self.config.backend.is_some() && self.backend_peer.is_none() {
            self.stats.rtp_unsent_awaiting_backend += 1;
            self.out.recycle(Queued::Rtp(buf));
            return;
        }
        if self.held {
            self.stats.rtp_dropped_on_hold += 1;
            self.out.recycle(Queued::Rtp(buf));
            return;
        }
        self.stats.rtp_packets_out += 1;
        self.stats.rtp_bytes_out += buf.len() as u64;
        self.rtp_keepalive.handle_sent(now);
        self.out.push(Queued::Rtp(buf));
    }

    fn push_twilio(&mut self, buf: Vec<u8>) {
        self.out.push(Queued::Twilio(buf));
    }

    /// The RTP timestamp of the next uplink sample: where DTMF and
    /// keep-alives sit on the media clock.
    fn uplink_timestamp_now(&self) -> u32 {
        let ms = if self.uplink.pending.is_empty() {
            self.uplink.next_media_ms.unwrap_or(0)
        } else {
            self.uplink.pending_start_ms
        };
        self.rtp_timestamp(ms)
    }

    fn send_rtp_keepalive(&mut self, now: Instant) {
        let timestamp = self.uplink_timestamp_now();
        // A plain RTP backend gets comfort noise at -127 dBov (RFC 3389):
        // every G.711 stack knows it, and it is silence if played. A
        // signalled peer was offered no CN (RFC 6263 §4.2 allows it only
        // when negotiated), so it gets one packet of silence in the codec
        // it answered with, which any stack plays.
        let (payload_type, fill, payload_len) = if self.keepalive_in_codec {
            let codec = self.config.codec;
            (
                self.config.payload_type,
                codec.silence_byte(),
                codec.bytes_per_ms() * self.config.ptime.as_millis() as usize,
            )
        } else {
            (COMFORT_NOISE_PAYLOAD_TYPE, 127, 1)
        };
        let header = RtpHeader::new(payload_type, self.uplink.sequence, timestamp, self.config.ssrc);
        self.uplink.sequence = self.uplink.sequence.wrapping_add(1);
        let payload_len = payload_len.min(MAX_RTP_PAYLOAD);
        let mut buf = self.out.buffer();
        buf.resize(rtp::HEADER_LEN + payload_len, 0);
        let payload = [fill; MAX_RTP_PAYLOAD];
        let Ok(len) = header.write(&payload[..payload_len], &mut buf) else { return };
        buf.truncate(len);
        self.stats.rtp_keepalives_sent += 1;
        self.push_rtp(now, buf);
    }

    /// Sends what the current digit has due; when it is done, starts the
    /// next queued one. Each pass of the loop returns or takes a queued
    /// digit, so it ends.
    fn drive_dtmf(&mut self, now: Instant) {
        loop {
            if self.uplink.dtmf.is_none() {
                if !self.dtmf_out {
                    // The peer takes no telephone-event: the digit was reported only.
                    self.uplink.digits.clear();
                    return;
                }
                let Some(digit) = self.uplink.digits.pop_front() else { return };
                self.uplink.dtmf = self.dtmf_sender(digit, now);
                if let Some(sender) = &self.uplink.dtmf {
                    self.uplink.dtmf_next_timestamp = Some(sender.end_timestamp());
                }
                continue;
            }
            if let Some(sender) = self.uplink.dtmf.as_mut() {
                sender.handle_timeout(now);
            }
            while let Some(packet) = self.uplink.dtmf.as_mut().and_then(DtmfSender::poll_packet) {
                let mut header = RtpHeader::new(
                    self.config.dtmf_payload_type,
                    self.uplink.sequence,
                    packet.timestamp,
                    self.config.ssrc,
                );
                header.marker = packet.marker;
                self.uplink.sequence = self.uplink.sequence.wrapping_add(1);
                let mut buf = self.out.buffer();
                buf.resize(rtp::HEADER_LEN + packet.payload.len(), 0);
                if let Ok(len) = header.write(&packet.payload, &mut buf) {
                    buf.truncate(len);
                    self.push_rtp(now, buf);
                }
            }
            if !self.uplink.dtmf.as_ref().is_some_and(DtmfSender::is_finished) {
                return;
            }
            self.uplink.dtmf = None;
        }
    }

    /// A sender for one digit, starting at the uplink's current media time.
    fn dtmf_sender(&self, digit: char, now: Instant) -> Option<DtmfSender> {
        let rate = self.config.codec.clock_rate();
        let dtmf = DtmfConfig {
            clock_rate: rate,
            packet_interval: rtp::timestamp_for(Duration::from_millis(20), rate) as u16,
            volume: 10,
        };
        let duration = rtp::timestamp_for(self.config.dtmf_duration, rate);
        let mut start = self.uplink_timestamp_now();
        if let Some(next) = self.uplink.dtmf_next_timestamp
            && voxproxy_core::seq::timestamp_delta(next, start) > 0
        {
            start = next;
        }
        // The parser only lets DTMF digits through, so this cannot fail; a
        // digit it could not send would simply be skipped.
        DtmfSender::for_digit(&dtmf, digit, start, duration, now).ok()
    }

    fn drain_backend_dtmf(&mut self) {
        while let Some(event) = self.downlink.telephone_events.poll_event() {
            self.stats.backend_dtmf_events += 1;
            let digit = telephone_event::dtmf_digit(event.event).unwrap_or('?');
            self.out.push(Queued::Event(BridgeEvent::BackendDtmf { digit }));
        }
    }

    /// The downlink media clock as an [`Instant`] (20 ms per frame played).
    fn downlink_clock(frames_out: u64) -> Instant {
        Instant::from_millis(frames_out * 20)
    }

    fn drain_jitter_buffer(&mut self) {
        DOWNLINK_SCRATCH.with_borrow_mut(|scratch| self.drain_jitter_buffer_with(scratch));
    }

    fn drain_jitter_buffer_with(&mut self, scratch: &mut DownlinkScratch) {
        let codec = self.config.codec;
        let rate = u64::from(codec.clock_rate());
        loop {
            let down = &mut self.downlink;
            let (samples, marker) = match down.jitter.poll_playout() {
                None => break,
                Some(Playout::Packet { meta, payload }) => {
                    let n = decode_backend(
                        codec,
                        payload,
                        &mut scratch.pcm,
                        &mut scratch.narrow,
                        &mut down.downsampler,
                        &mut scratch.mulaw,
                    );
                    if let Some(n) = n {
                        let resuming = down.concealer.is_concealing();
                        down.concealer.handle_frame(&mut scratch.narrow[..n]);
                        if resuming {
                            // The concealer blended the loss into the start of
                            // this frame. Re-encode only what it changed: μ-law
                            // decode → encode is not the identity (0x7F → 0xFF).
                            for (code, &sample) in scratch.mulaw[..n].iter_mut().zip(&scratch.narrow[..n]) {
                                if g711::ulaw_decode(*code) != sample {
                                    *code = g711::ulaw_encode(sample);
                                }
                            }
                        }
                    }
                    (n, meta.marker)
                }
                Some(Playout::Lost { duration, .. }) => {
                    let n = ((u64::from(duration) * 8_000 / rate) as usize).min(scratch.narrow.len());
                    down.concealer.conceal(&mut scratch.narrow[..n]);
                    let _ = g711::encode(g711::Law::Mu, &scratch.narrow[..n], &mut scratch.mulaw[..n]);
                    self.stats.concealed_frames += 1;
                    (Some(n), false)
                }
            };
            if let Some(waited) = self.downlink.jitter.last_wait() {
                self.latency.jitter_wait.record(waited);
            }
            if marker && (self.downlink.talkspurt.in_talkspurt() || self.downlink.dropping) {
                // The backend says a new talkspurt begins: the last one is over.
                self.finish_backend_talkspurt();
            }
            match samples {
                Some(n) => self.play_downlink(&scratch.narrow[..n], &scratch.mulaw[..n]),
                None => self.stats.rtp_bad_payload += 1,
            }
        }
    }

    /// Sends backend audio, as μ-law in `mulaw` and as PCM in `narrow` (the
    /// same samples), towards Twilio in 20 ms frames.
    fn play_downlink(&mut self, narrow: &[i16], mulaw: &[u8]) {
        let Some(sid) = self.stream_sid() else { return };
        let n = mulaw.len().min(narrow.len());
        let mut at = 0;
        while at < n {
            // Both framers always hold the same number of samples.
            let down = &mut self.downlink;
            if down.mulaw_framer.buffered() == 0
                && let (Some(pcm), Some(m)) = (narrow[at..n].first_chunk(), mulaw[at..n].first_chunk())
            {
                // A whole frame with nothing buffered: played where it
                // lies, without a pass through the framers.
                at += FRAME_SAMPLES;
                self.play_frame(sid, pcm, m);
                continue;
            }
            let take = (FRAME_SAMPLES - down.mulaw_framer.buffered()).min(n - at);
            let mut frame_done = None;
            down.pcm_framer.push(&narrow[at..at + take], |pcm| {
                frame_done = Some(*pcm);
            });
            let mut mulaw_frame = None;
            down.mulaw_framer.push(&mulaw[at..at + take], |m| mulaw_frame = Some(*m));
            at += take;
            if let (Some(pcm), Some(m)) = (frame_done, mulaw_frame) {
                self.play_frame(sid, &pcm, &m);
            }
        }
    }

    /// One 20 ms frame of backend audio: through the backend's VAD, then to
    /// Twilio unless a barge-in is dropping it.
    fn play_frame(&mut self, sid: StreamSid, pcm: &[i16; FRAME_SAMPLES], mulaw: &[u8; FRAME_SAMPLES]) {
        let down = &mut self.downlink;
        let clock = Self::downlink_clock(down.frames_out);
        down.frames_out += 1;
        let speech = down.vad.classify(pcm).unwrap_or(false);
        down.talkspurt.handle_frame(clock, speech);
        self.drain_backend_talkspurt();
        let down = &mut self.downlink;
        if down.dropping {
            self.stats.barge_in_dropped_frames += 1;
            return;
        }
        // Only speech counts as unplayed: a backend that streams silence
        // between utterances (Asterisk external media does) must not
        // make every word from the caller a barge-in.
        if down.talkspurt.in_talkspurt() {
            down.unmarked_frames += 1;
        }
        self.tap_to_twilio(mulaw);
        let mut buf = self.out.buffer();
        media_stream::write_media(&mut buf, &sid, mulaw);
        self.stats.twilio_frames_out += 1;
        self.stats.twilio_audio_bytes_out += FRAME_SAMPLES as u64;
        self.push_twilio(buf);
    }

    /// Ends the backend's talkspurt now, whatever its VAD says.
    fn finish_backend_talkspurt(&mut self) {
        let clock = Self::downlink_clock(self.downlink.frames_out);
        self.downlink.talkspurt.handle_end_of_stream(clock);
        self.drain_backend_talkspurt();
        self.end_backend_talkspurt();
    }

    fn drain_backend_talkspurt(&mut self) {
        while let Some(event) = self.downlink.talkspurt.poll_event() {
            if let TalkspurtEvent::SpeechEnd { .. } = event {
                self.end_backend_talkspurt();
            }
        }
    }

    /// The backend finished an utterance: send what is buffered and a mark
    /// behind it, and stop dropping after a barge-in.
    fn end_backend_talkspurt(&mut self) {
        let Some(sid) = self.stream_sid() else { return };
        let down = &mut self.downlink;
        down.pcm_framer.clear();
        if let Some(partial) = down.mulaw_framer.take_partial()
            && !down.dropping
        {
            if let Some(tap) = self.recording.as_deref_mut() {
                tap.handle_to_twilio(self.now, partial);
            }
            let mut buf = self.out.buffer();
            media_stream::write_media(&mut buf, &sid, partial);
            self.stats.twilio_frames_out += 1;
            self.stats.twilio_audio_bytes_out += partial.len() as u64;
            self.downlink.unmarked_frames += 1;
            self.push_twilio(buf);
        }
        let down = &mut self.downlink;
        down.dropping = false;
        if down.unmarked_frames == 0 {
            return;
        }
        down.unmarked_frames = 0;
        let id = down.playout.next_mark();
        write_mark_name(id, &mut down.mark_name);
        let mut buf = self.out.buffer();
        media_stream::write_mark(&mut buf, &sid, &self.downlink.mark_name);
        self.stats.marks_sent += 1;
        self.push_twilio(buf);
    }
}

/// Bytes of the RTP datagram carrying `samples` of 8 kHz audio in `codec`:
/// what its buffer is sized to, rather than the largest datagram.
fn datagram_len(codec: BackendCodec, samples: usize) -> usize {
    rtp::HEADER_LEN + (samples * codec.bytes_per_ms() / 8).min(MAX_RTP_PAYLOAD)
}

/// Encodes one packet of Twilio μ-law for the backend codec into `out`;
/// returns the bytes written.
fn encode_uplink(codec: BackendCodec, upsampler: &mut Upsampler, mulaw: &[u8], out: &mut [u8]) -> usize {
    match codec {
        BackendCodec::Pcmu => {
            out[..mulaw.len()].copy_from_slice(mulaw);
            mulaw.len()
        }
        BackendCodec::Pcma => g711::transcode(g711::Law::Mu, g711::Law::A, mulaw, out).unwrap_or(0),
        BackendCodec::L16Narrowband => {
            let mut pcm = [0i16; MAX_UPLINK_PACKET];
            let n = g711::decode(g711::Law::Mu, mulaw, &mut pcm).unwrap_or(0);
            write_l16(&pcm[..n], out)
        }
        BackendCodec::L16Wideband => {
            let mut pcm = [0i16; MAX_UPLINK_PACKET];
            let mut wide = [0i16; 2 * MAX_UPLINK_PACKET];
            let n = g711::decode(g711::Law::Mu, mulaw, &mut pcm).unwrap_or(0);
            let n = upsampler.upsample(&pcm[..n], &mut wide).unwrap_or(0);
            write_l16(&wide[..n], out)
        }
    }
}

/// Decodes one backend payload to 8 kHz: PCM into `narrow`, μ-law into
/// `mulaw`; returns the sample count, or `None` if it does not fit.
fn decode_backend(
    codec: BackendCodec,
    payload: &[u8],
    pcm: &mut [i16],
    narrow: &mut [i16],
    downsampler: &mut Downsampler,
    mulaw: &mut [u8],
) -> Option<usize> {
    match codec {
        BackendCodec::Pcmu => {
            let n = payload.len();
            // μ-law passes through untouched: decode → encode is not the
            // identity for every code (0x7F), and passthrough must be bit-exact.
            mulaw.get_mut(..n)?.copy_from_slice(payload);
            g711::decode(g711::Law::Mu, payload, narrow).ok()
        }
        BackendCodec::Pcma => {
            let n = g711::transcode(g711::Law::A, g711::Law::Mu, payload, mulaw).ok()?;
            g711::decode(g711::Law::A, payload, narrow).ok()?;
            Some(n)
        }
        BackendCodec::L16Narrowband => {
            let n = read_l16(payload, narrow)?;
            g711::encode(g711::Law::Mu, &narrow[..n], mulaw).ok()
        }
        BackendCodec::L16Wideband => {
            let wide = read_l16(payload, pcm)?;
            let n = downsampler.downsample(&pcm[..wide], narrow).ok()?;
            g711::encode(g711::Law::Mu, &narrow[..n], mulaw).ok()
        }
    }
}

/// Big-endian L16 (RFC 3551 §4.5.11) into PCM; `None` if `out` is too small.
fn read_l16(payload: &[u8], out: &mut [i16]) -> Option<usize> {
    let n = payload.len() / 2;
    for (sample, bytes) in out.get_mut(..n)?.iter_mut().zip(payload.chunks_exact(2)) {
        *sample = i16::from_be_bytes([bytes[0], bytes[1]]);
    }
    Some(n)
}

/// PCM into big-endian L16; returns bytes written (truncated to fit `out`).
fn write_l16(pcm: &[i16], out: &mut [u8]) -> usize {
    let mut written = 0;
    for (bytes, sample) in out.chunks_exact_mut(2).zip(pcm) {
        bytes.copy_from_slice(&sample.to_be_bytes());
        written += 2;
    }
    written
}
