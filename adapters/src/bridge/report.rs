//! What a bridge tells the outside world: events as they happen, and the
//! statistics that end up in the call record.

/// Something that happened on the call, for the control API's event stream
/// and for logs. Media times are Twilio's `media.timestamp` (milliseconds
/// since the stream started), so they survive network stalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeEvent {
    /// Twilio's `start` arrived; [`CallBridge::stream`](crate::bridge::CallBridge::stream) now has the ids.
    StreamStarted,
    /// The caller started talking (VAD onset), at this media time.
    SpeechStarted {
        /// Media time of the first speech frame, in milliseconds.
        media_ms: u64,
    },
    /// The caller stopped talking (after the VAD hangover).
    SpeechStopped {
        /// Media time of the first non-speech frame, in milliseconds.
        media_ms: u64,
    },
    /// The caller pressed a key; it went to the backend as RFC 4733.
    Dtmf {
        /// `0`-`9`, `*`, `#` or `A`-`D`.
        digit: char,
    },
    /// The backend sent a telephone event (reported once per event).
    BackendDtmf {
        /// The digit, or `?` for a non-DTMF event code.
        digit: char,
    },
    /// Twilio has played the audio before one of our marks.
    MarkPlayed {
        /// The mark's id (its name is `vp-<id>`).
        id: u64,
    },
    /// A mark came back because of a `clear`: its audio was not played.
    MarkCleared {
        /// The mark's id.
        id: u64,
    },
    /// Caller speech over unplayed backend audio: `clear` was sent and the
    /// rest of the backend's talkspurt is being dropped.
    BargeIn {
        /// Media time of the caller's speech onset, in milliseconds.
        media_ms: u64,
    },
    /// No RTP from the backend for `backend_timeout`: an outage began
    /// (counted in [`CallStats::backend_outages`]).
    BackendTimeout,
    /// Backend RTP is flowing again after a [`BridgeEvent::BackendTimeout`].
    BackendResumed {
        /// How long the backend sent nothing, from its last packet before the
        /// outage to this one, in milliseconds (added to
        /// [`CallStats::backend_outage_ms`]).
        silent_ms: u64,
    },
    /// Twilio's `stop` arrived.
    StreamStopped,
}

impl BridgeEvent {
    /// A stable snake_case name, used in logs, metrics and server-sent events.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            BridgeEvent::StreamStarted => "stream_started",
            BridgeEvent::SpeechStarted { .. } => "speech_started",
            BridgeEvent::SpeechStopped { .. } => "speech_stopped",
            BridgeEvent::Dtmf { .. } => "dtmf",
            BridgeEvent::BackendDtmf { .. } => "backend_dtmf",
            BridgeEvent::MarkPlayed { .. } => "mark_played",
            BridgeEvent::MarkCleared { .. } => "mark_cleared",
            BridgeEvent::BargeIn { .. } => "barge_in",
            BridgeEvent::BackendTimeout => "backend_timeout",
            BridgeEvent::BackendResumed { .. } => "backend_resumed",
            BridgeEvent::StreamStopped => "stream_stopped",
        }
    }
}

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// Twilio sent `stop` (the caller or the call flow hung up).
    TwilioStop,
    /// The WebSocket closed or failed without a `stop`.
    WebSocketClosed,
    /// Twilio sent nothing for `idle_timeout`.
    IdleTimeout,
    /// Ended through the control API (`DELETE /v1/sessions/{streamSid}`).
    Hangup,
    /// The proxy was draining and `drain.timeout` ran out.
    Drain,
    /// The proxy could not serve the call (for example no free RTP port).
    Refused,
    /// No `start` arrived within `start_timeout` of the WebSocket opening.
    StartTimeout,
    /// `start` lacked a valid stream token for its `callSid`, or its ids
    /// did not have Twilio's shape.
    Unauthorized,
    /// Another live call already has this `streamSid`.
    DuplicateStream,
    /// The backend leg failed (the proxy decides when: it closes the stream
    /// so Twilio goes on with the call's fallback).
    BackendFailed,
    /// The backend hung up an established call: a SIP BYE from the PBX, or
    /// a WebSocket bot closing its connection.
    BackendHangup,
}

impl EndReason {
    /// A stable snake_case name for records and metrics labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            EndReason::TwilioStop => "twilio_stop",
            EndReason::WebSocketClosed => "websocket_closed",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Hangup => "hangup",
            EndReason::Drain => "drain",
            EndReason::Refused => "refused",
            EndReason::StartTimeout => "start_timeout",
            EndReason::Unauthorized => "unauthorized",
            EndReason::DuplicateStream => "duplicate_stream",
            EndReason::BackendFailed => "backend_failed",
            EndReason::BackendHangup => "backend_hangup",
        }
    }

    /// The WebSocket close code and reason to send for this ending.
    #[must_use]
    pub const fn close_frame(self) -> (u16, &'static str) {
        match self {
            EndReason::TwilioStop | EndReason::Hangup | EndReason::WebSocketClosed => (1000, "call ended"),
            EndReason::BackendHangup => (1000, "backend hung up"),
            EndReason::IdleTimeout => (1001, "idle timeout"),
            EndReason::Drain => (1001, "server draining"),
            EndReason::Refused => (1013, "no capacity, try again later"),
            // 1008: policy violation (RFC 6455 §7.4.1).
            EndReason::StartTimeout => (1008, "no start message in time"),
            EndReason::Unauthorized => (1008, "start not authorized for this call"),
            EndReason::DuplicateStream => (1008, "streamSid already in use"),
            // 1011: the server cannot go on (RFC 6455 §7.4.1).
            EndReason::BackendFailed => (1011, "backend failed"),
        }
    }
}

/// Per-call counters: what goes into the call record and the metrics.
/// Every input the bridge rejects is counted in exactly one field here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// `media` frames of the caller's (`inbound`) track received from Twilio.
    pub twilio_frames_in: u64,
    /// `media` frames of the `outbound` track (what the caller hears)
    /// received from a fork that streams it.
    pub twilio_outbound_track_frames_in: u64,
    /// RTP audio packets sent to the backend on the `outbound` track's own
    /// SSRC (also counted in [`CallStats::rtp_packets_out`]).
    pub rtp_outbound_track_packets_out: u64,
    /// RTP dropped (both directions) while a signalled leg held the call
    /// (the peer's SDP said `sendonly` or `inactive`).
    pub rtp_dropped_on_hold: u64,
    /// Backend RTP dropped because the stream is one-way (a fork: Twilio
    /// plays nothing sent back on it); also counted in `rtp_packets_in`.
    pub rtp_dropped_one_way: u64,
    /// μ-law audio bytes received from Twilio.
    pub twilio_audio_bytes_in: u64,
    /// `media` frames sent to Twilio.
    pub twilio_frames_out: u64,
    /// μ-law audio bytes sent to Twilio.
    pub twilio_audio_bytes_out: u64,
    /// Frames from Twilio that failed to parse.
    pub twilio_malformed: u64,
    /// Frames from Twilio with an event name we do not know.
    pub twilio_unknown_events: u64,
    /// Frames from Twilio over `max_frame_bytes`.
    pub twilio_oversize: u64,
    /// Frames from Twilio out of protocol order (media before start, a second start).
    pub twilio_out_of_order: u64,
    /// `start` messages refused for a missing or wrong stream token or
    /// ids without Twilio's shape.
    pub twilio_unauthorized: u64,
    /// RTP packets sent to the backend (audio, DTMF and keep-alives).
    pub rtp_packets_out: u64,
    /// RTP bytes sent to the backend (whole datagrams).
    pub rtp_bytes_out: u64,
    /// RTP packets received from the backend.
    pub rtp_packets_in: u64,
    /// RTP bytes received from the backend (whole datagrams).
    pub rtp_bytes_in: u64,
    /// Datagrams that were not valid RTP.
    pub rtp_malformed: u64,
    /// Datagrams from an address other than the backend's.
    pub rtp_foreign_source: u64,
    /// RTP packets not sent because the backend's port was still to be
    /// learned from its first packet (`backend` with port 0).
    pub rtp_unsent_awaiting_backend: u64,
    /// RTP with a payload type that is neither audio nor telephone-event.
    pub rtp_unknown_payload_type: u64,
    /// RTP whose payload size does not fit the codec (odd L16, too large).
    pub rtp_bad_payload: u64,
    /// RTCP packets received on the RTP port.
    pub rtcp_in: u64,
    /// Backend packets declared lost by the jitter buffer.
    pub rtp_lost: u64,
    /// Backend packets that arrived after their slot was concealed.
    pub rtp_late: u64,
    /// Duplicate backend packets.
    pub rtp_duplicate: u64,
    /// Backend packets that arrived out of order but in time.
    pub rtp_reordered: u64,
    /// 20 ms frames of concealment audio sent in place of lost packets.
    pub concealed_frames: u64,
    /// Backend audio frames dropped after a barge-in.
    pub barge_in_dropped_frames: u64,
    /// Interarrival jitter of the backend stream (RFC 3550), microseconds.
    pub jitter_us: u64,
    /// Highest jitter seen during the call, microseconds.
    pub max_jitter_us: u64,
    /// Caller speech segments (VAD).
    pub vad_segments: u64,
    /// Barge-ins (clears sent because the caller spoke over backend audio).
    pub barge_ins: u64,
    /// DTMF digits from the caller.
    pub dtmf_digits: u64,
    /// Telephone events from the backend.
    pub backend_dtmf_events: u64,
    /// Marks sent to Twilio.
    pub marks_sent: u64,
    /// Marks echoed as played.
    pub marks_played: u64,
    /// Marks echoed because of a clear.
    pub marks_cleared: u64,
    /// WebSocket pings sent.
    pub pings_sent: u64,
    /// RTP keep-alives sent to the backend.
    pub rtp_keepalives_sent: u64,
    /// Outputs dropped because the caller did not drain them (should stay 0).
    pub outputs_dropped: u64,
    /// Backend outages: times the backend sent no RTP for `backend_timeout`
    /// after it had started sending (one [`BridgeEvent::BackendTimeout`] each).
    pub backend_outages: u64,
    /// Total time without backend RTP in those outages, in milliseconds: from
    /// the backend's last packet before each outage to its first packet after
    /// it, or to the end of the call. An outage still going on is added when
    /// it ends, so during one this lags behind [`CallStats::backend_outages`].
    pub backend_outage_ms: u64,
}
