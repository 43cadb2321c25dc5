//! Settings of one call bridge.

use core::time::Duration;
use std::net::SocketAddr;

use crate::bridge::BridgeError;
use crate::stream_token::StreamTokenKey;

/// The audio codec spoken on the RTP leg towards the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendCodec {
    /// G.711 μ-law, 8 kHz: Twilio's own format, passed through untouched.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
    /// 16-bit linear PCM, big-endian (RFC 3551), 8 kHz.
    L16Narrowband,
    /// 16-bit linear PCM, big-endian, 16 kHz (resampled to and from Twilio's 8 kHz).
    L16Wideband,
}

impl BackendCodec {
    /// Every codec, in the order config files list them.
    pub const ALL: [BackendCodec; 4] =
        [BackendCodec::Pcmu, BackendCodec::Pcma, BackendCodec::L16Narrowband, BackendCodec::L16Wideband];

    /// The name used in config files and on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            BackendCodec::Pcmu => "pcmu",
            BackendCodec::Pcma => "pcma",
            BackendCodec::L16Narrowband => "l16-8k",
            BackendCodec::L16Wideband => "l16-16k",
        }
    }

    /// Parses a config name (`pcmu`, `pcma`, `l16-8k`, `l16-16k`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<BackendCodec> {
        BackendCodec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// RTP clock rate in Hz.
    #[must_use]
    pub const fn clock_rate(self) -> u32 {
        match self {
            BackendCodec::L16Wideband => 16_000,
            _ => 8_000,
        }
    }

    /// The byte that fills a payload of silence: μ-law and A-law code zero
    /// as 0xFF and 0xD5; linear PCM's zero is 0x00 in either byte.
    #[must_use]
    pub const fn silence_byte(self) -> u8 {
        match self {
            BackendCodec::Pcmu => 0xFF,
            BackendCodec::Pcma => 0xD5,
            BackendCodec::L16Narrowband | BackendCodec::L16Wideband => 0x00,
        }
    }

    /// Payload bytes per millisecond of audio.
    #[must_use]
    pub const fn bytes_per_ms(self) -> usize {
        match self {
            BackendCodec::Pcmu | BackendCodec::Pcma => 8,
            BackendCodec::L16Narrowband => 16,
            BackendCodec::L16Wideband => 32,
        }
    }

    /// The payload type used unless configured otherwise: the static types of
    /// RFC 3551 for G.711, dynamic ones for L16 at these rates.
    #[must_use]
    pub const fn default_payload_type(self) -> u8 {
        match self {
            BackendCodec::Pcmu => 0,
            BackendCodec::Pcma => 8,
            BackendCodec::L16Narrowband => 96,
            BackendCodec::L16Wideband => 97,
        }
    }
}

/// Everything a [`CallBridge`](crate::bridge::CallBridge) needs to know about
/// its call. [`BridgeConfig::default`] works on one machine; the proxy fills
/// `ssrc`, `initial_sequence` and `initial_timestamp` with random values per
/// call (RFC 3550 §5.1), since the bridge has no randomness of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Where backend RTP must come from and go to; datagrams from anywhere
    /// else are dropped and counted. Port 0 latches (symmetric RTP): the
    /// first datagram from this IP address fixes the port, for voice stacks
    /// that pick a port per call (Asterisk external media); until then
    /// nothing is sent. `None` accepts any source (tests).
    pub backend: Option<SocketAddr>,
    /// Codec on the RTP leg.
    pub codec: BackendCodec,
    /// RTP payload type for audio (both directions).
    pub payload_type: u8,
    /// Packet time of the RTP we send: 10, 20, 30 or 40 ms.
    pub ptime: Duration,
    /// RTP payload type of RFC 4733 telephone events (both directions).
    pub dtmf_payload_type: u8,
    /// How long each DTMF digit from Twilio lasts on the RTP leg. Twilio
    /// reports digits without a duration.
    pub dtmf_duration: Duration,
    /// Upper bound on how long the jitter buffer holds an out-of-order packet.
    pub jitter_max_delay: Duration,
    /// VAD aggressiveness for the caller's speech, 0 (permissive) to 3.
    pub vad_mode: u8,
    /// Whether caller speech over unplayed backend audio sends `clear`.
    pub barge_in: bool,
    /// WebSocket ping after this much quiet on the socket.
    pub ping_interval: Duration,
    /// The call ends when Twilio has sent nothing for this long.
    pub idle_timeout: Duration,
    /// RTP keep-alive towards the backend while the Twilio side is silent.
    pub rtp_keepalive_interval: Duration,
    /// A `backend_timeout` event after this long without backend RTP.
    pub backend_timeout: Duration,
    /// Silence from the backend after which its talkspurt is over (a mark is sent).
    pub talkspurt_gap: Duration,
    /// Largest WebSocket text frame accepted from Twilio, in bytes.
    pub max_frame_bytes: usize,
    /// The call ends (no record: it never started) when `start` has not
    /// arrived this long after the WebSocket opened. Twilio sends
    /// `connected` and `start` at once, so 10 s is generous.
    pub start_timeout: Duration,
    /// With a key, `start` must carry the token of its `callSid` (see
    /// [`crate::stream_token`]) and Twilio-shaped ids, or the stream is
    /// refused. `None` accepts any `start` (signature checks off, tests).
    pub stream_token: Option<StreamTokenKey>,
    /// SSRC of the RTP we send.
    pub ssrc: u32,
    /// First RTP sequence number we send.
    pub initial_sequence: u16,
    /// RTP timestamp of `media.timestamp` 0.
    pub initial_timestamp: u32,
    /// SSRC of the second RTP stream, which carries Twilio's `outbound`
    /// track (what the caller hears) when a fork streams it. Must differ
    /// from `ssrc` (RFC 3550 §8: one SSRC per stream in a session).
    pub outbound_ssrc: u32,
    /// First RTP sequence number of the `outbound` track's stream.
    pub outbound_initial_sequence: u16,
    /// RTP timestamp of the `outbound` track's `media.timestamp` 0.
    pub outbound_initial_timestamp: u32,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            backend: None,
            codec: BackendCodec::Pcmu,
            payload_type: BackendCodec::Pcmu.default_payload_type(),
            ptime: Duration::from_millis(20),
            dtmf_payload_type: 101,
            dtmf_duration: Duration::from_millis(100),
            jitter_max_delay: Duration::from_millis(60),
            vad_mode: 2,
            barge_in: true,
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            rtp_keepalive_interval: Duration::from_secs(1),
            backend_timeout: Duration::from_secs(5),
            talkspurt_gap: Duration::from_millis(100),
            max_frame_bytes: 16 * 1024,
            start_timeout: Duration::from_secs(10),
            stream_token: None,
            ssrc: 0x5650_0001,
            initial_sequence: 0,
            initial_timestamp: 0,
            outbound_ssrc: 0x5650_0002,
            outbound_initial_sequence: 0,
            outbound_initial_timestamp: 0,
        }
    }
}

/// Packet times the bridge can send and repacketize from.
pub const SUPPORTED_PTIMES_MS: [u64; 4] = [10, 20, 30, 40];

impl BridgeConfig {
    /// The config with the codec changed and its default payload type.
    #[must_use]
    pub fn with_codec(mut self, codec: BackendCodec) -> Self {
        self.codec = codec;
        self.payload_type = codec.default_payload_type();
        self
    }

    /// Checks the settings; the error names the offending key.
    pub fn validate(&self) -> Result<(), BridgeError> {
        let bad = |key: &'static str, reason: &'static str| Err(BridgeError::Config { key, reason });
        let ptime_ms = self.ptime.as_millis();
        if !self.ptime.subsec_nanos().is_multiple_of(1_000_000)
            || !SUPPORTED_PTIMES_MS.iter().any(|&p| u128::from(p) == ptime_ms)
        {
            return bad("rtp.ptime_ms", "must be 10, 20, 30 or 40");
        }
        if self.payload_type > 127 {
            return bad("rtp.payload_type", "must be at most 127");
        }
        if self.dtmf_payload_type > 127 || self.dtmf_payload_type == self.payload_type {
            return bad(
                "rtp.dtmf_payload_type",
                "must be at most 127 and differ from the audio payload type",
            );
        }
        if (72..=76).contains(&self.payload_type) || (72..=76).contains(&self.dtmf_payload_type) {
            return bad("rtp.payload_type", "72-76 collide with RTCP packet types (RFC 5761)");
        }
        if self.outbound_ssrc == self.ssrc {
            return bad("rtp.ssrc", "the outbound track's SSRC must differ from the inbound one's");
        }
        if self.vad_mode > 3 {
            return bad("vad.mode", "must be 0, 1, 2 or 3");
        }
        if self.jitter_max_delay > Duration::from_secs(1) {
            return bad("jitter.max_delay_ms", "must be at most 1000 ms");
        }
        if self.dtmf_duration < Duration::from_millis(40) || self.dtmf_duration > Duration::from_secs(5) {
            return bad("rtp.dtmf_duration", "must be between 40 ms and 5 s");
        }
        if self.max_frame_bytes < 1024 {
            return bad("limits.max_frame_bytes", "must be at least 1024");
        }
        for (key, d) in [
            ("keepalive.ping_interval", self.ping_interval),
            ("keepalive.idle_timeout", self.idle_timeout),
            ("rtp.keepalive_interval", self.rtp_keepalive_interval),
            ("rtp.backend_timeout", self.backend_timeout),
            ("rtp.talkspurt_gap", self.talkspurt_gap),
            ("start_timeout", self.start_timeout),
        ] {
            if d.is_zero() {
                return Err(BridgeError::Config { key, reason: "must be longer than zero" });
            }
        }
        Ok(())
    }
}
