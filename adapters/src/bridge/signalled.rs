//! What a signalled leg (SIP) changes in a running bridge: where RTP goes,
//! the negotiated codec and payload types, hold. A plain RTP leg knows all
//! of that from the configuration; a SIP leg learns it from the peer's SDP,
//! possibly several times (early media, the answer, a re-INVITE).

use std::net::{Ipv4Addr, SocketAddr};

use voxproxy_core::Instant;

use super::{BridgeError, CallBridge, DownlinkJitter, MAX_RTP_PAYLOAD, jitter_config};
use crate::sdp::Direction;
use crate::sip::Media;

impl CallBridge {
    /// Makes the bridge wait for signalled media: until
    /// [`CallBridge::apply_media`], no datagram is accepted as backend audio
    /// (counted as foreign) and nothing is sent (counted as unsent). The
    /// configured RTP backend, if any, is forgotten.
    pub fn await_signalled_media(&mut self) {
        // An unspecified address latches nothing: no datagram comes from it.
        self.config.backend = Some(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        self.backend_peer = None;
    }

    /// Applies the media a signalled leg negotiated: RTP goes to (and is
    /// accepted only from) `media.address`, in its codec and payload type,
    /// with Twilio's DTMF on its `telephone-event` type (none if it has
    /// none); `sendonly` or `inactive` holds the call (no audio either way).
    /// Allowed at any time, since a re-INVITE may move the media mid-call.
    ///
    /// # Errors
    /// [`BridgeError::UnusableMedia`] when the answer cannot be carried
    /// with this bridge's packet time; nothing was changed.
    pub fn apply_media(&mut self, now: Instant, media: &Media) -> Result<(), BridgeError> {
        let packet_bytes = media.codec.bytes_per_ms() * self.config.ptime.as_millis() as usize;
        if packet_bytes > MAX_RTP_PAYLOAD {
            return Err(BridgeError::UnusableMedia { reason: "codec too wide for rtp.ptime_ms" });
        }
        if media.payload_type > 127 || (72..=76).contains(&media.payload_type) {
            return Err(BridgeError::UnusableMedia { reason: "audio payload type out of range" });
        }
        let dtmf = media.telephone_event.filter(|&pt| pt <= 127 && pt != media.payload_type);
        if media.address.port() == 0 || media.address.ip().is_unspecified() {
            // RFC 3264 §8.4: no address to send to (hold in RFC 2543 style).
            self.backend_peer = None;
        } else {
            self.config.backend = Some(media.address);
            self.backend_peer = Some(media.address);
        }
        let codec_changed = media.codec != self.config.codec;
        self.config.codec = media.codec;
        self.config.payload_type = media.payload_type;
        // A new codec needs slots of its own size and clock (the packet was
        // checked to fit above, so the configuration is valid).
        if codec_changed && let Ok(jitter) = jitter_config(&self.config) {
            self.downlink.jitter = DownlinkJitter::new(media.codec, self.config.ptime, jitter, now);
        }
        self.dtmf_out = dtmf.is_some();
        self.keepalive_in_codec = true;
        if let Some(pt) = dtmf {
            self.config.dtmf_payload_type = pt;
        }
        self.held = matches!(media.direction, Direction::SendOnly | Direction::Inactive);
        Ok(())
    }

    /// Whether a signalled leg holds the call.
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.held
    }
}
