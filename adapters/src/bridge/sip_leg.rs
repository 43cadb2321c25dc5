//! The SIP leg of a call driven together with its bridge: every decision
//! about what a [`LegEvent`] means for the call lives here, so the proxy
//! only moves SIP bytes and RTP datagrams.
//!
//! Why a separate driver rather than a leg inside [`CallBridge`]: the bridge
//! stays the one media state machine (and keeps its zero-allocation frame
//! path, which SIP signalling would not share), and the plain RTP leg pays
//! nothing for SIP. The driver owns the [`SipLeg`]; after every input it
//! hands the leg's events to the bridge ([`SipBackend::drive`]) and tells
//! the proxy the one thing the bridge cannot do itself: end the Twilio call
//! when the PBX hung up (docs/ARCHITECTURE.md, *Legs*).

use voxproxy_core::Instant;

use super::{CallBridge, EndReason as CallEnd};
use crate::sip::{
    CallInfo, EndReason, LegEvent, LegState, SipCounters, SipError, SipLeg, SipLegConfig, Transmit,
};

/// Who ended the SIP leg, for the call record: whoever sent what ended it
/// (docs/ARCHITECTURE.md, *Who hung up*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HungUpBy {
    /// The Twilio side (the caller, the call flow, the control API, a drain).
    Twilio,
    /// The PBX: its BYE, or a final response rejecting the INVITE (busy
    /// 486, decline 603, 5xx, an unanswered auth challenge).
    Backend,
    /// voxproxy's own timers or checks: no final response to the INVITE
    /// (Timer B, 408), the ring timeout (480), an answer it could not use
    /// (488), a PBX gone silent (keep-alive, session timer, 2xx never ACKed).
    Voxproxy,
}

impl HungUpBy {
    /// `twilio` or `backend`, as in call records.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            HungUpBy::Twilio => "twilio",
            HungUpBy::Backend => "backend",
            HungUpBy::Voxproxy => "voxproxy",
        }
    }
}

/// What the proxy must do besides draining the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegOutcome {
    /// The call never came up (4xx-6xx, timeout, unusable answer): the
    /// bridge is closing the stream with [`CallEnd::BackendFailed`]; mark
    /// the call so Twilio's `<Connect action>` plays the route's fallback.
    Failed {
        /// The final SIP status (408 for a timeout).
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The PBX ended an established call: the bridge is closing the stream
    /// with [`CallEnd::BackendHangup`]; with REST credentials, also
    /// complete the Twilio call so the caller is not left on the TwiML
    /// after `</Connect>`.
    RemoteHangup,
}

/// A [`SipLeg`] and what it told the bridge. See the [module docs](self).
#[derive(Debug)]
pub struct SipBackend {
    leg: SipLeg,
    final_status: Option<u16>,
    hung_up_by: Option<HungUpBy>,
    answered_at: Option<Instant>,
}

impl SipBackend {
    /// Starts the leg (its INVITE is queued) and makes `bridge` wait for
    /// the media the answer will name.
    ///
    /// # Errors
    /// [`SipError`] when the configuration cannot make an INVITE.
    pub fn new(
        config: SipLegConfig,
        info: &CallInfo,
        now: Instant,
        bridge: &mut CallBridge,
    ) -> Result<Self, SipError> {
        let leg = SipLeg::new(config, info, now)?;
        bridge.await_signalled_media();
        Ok(Self { leg, final_status: None, hung_up_by: None, answered_at: None })
    }

    /// The leg itself (Call-ID, state, counters).
    #[must_use]
    pub fn leg(&self) -> &SipLeg {
        &self.leg
    }

    /// The SIP Call-ID.
    #[must_use]
    pub fn call_id(&self) -> &str {
        self.leg.call_id()
    }

    /// Where the leg stands.
    #[must_use]
    pub fn state(&self) -> LegState {
        self.leg.state()
    }

    /// The leg's traffic counters.
    #[must_use]
    pub fn counters(&self) -> &SipCounters {
        self.leg.counters()
    }

    /// The final response to the INVITE (200 once answered), if any yet.
    #[must_use]
    pub fn final_status(&self) -> Option<u16> {
        self.final_status
    }

    /// Who ended the leg, once it has ended.
    #[must_use]
    pub fn hung_up_by(&self) -> Option<HungUpBy> {
        self.hung_up_by
    }

    /// When the 2xx arrived.
    #[must_use]
    pub fn answered_at(&self) -> Option<Instant> {
        self.answered_at
    }

    /// A UDP datagram from the SIP socket.
    pub fn handle_datagram(&mut self, now: Instant, from: std::net::SocketAddr, bytes: &[u8]) {
        self.leg.handle_datagram(now, from, bytes);
    }

    /// Bytes from the TCP connection.
    ///
    /// # Errors
    /// The stream cannot be resynchronised: close the connection.
    pub fn handle_stream(&mut self, now: Instant, bytes: &[u8]) -> Result<(), SipError> {
        self.leg.handle_stream(now, bytes)
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.leg.handle_timeout(now);
    }

    /// The Twilio side of the call ended: CANCEL or BYE (the proxy then
    /// keeps driving the leg, bounded, until [`SipBackend::is_finished`]).
    pub fn hangup(&mut self, now: Instant) {
        if self.hung_up_by.is_none() && self.leg.state() != LegState::Ended {
            self.hung_up_by = Some(HungUpBy::Twilio);
        }
        self.leg.hangup(now);
    }

    /// The next SIP message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.leg.poll_transmit()
    }

    /// When [`SipBackend::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.leg.poll_timeout()
    }

    /// Whether the leg is over and owes no message any more.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.leg.is_finished()
    }

    /// Hands the leg's events to `bridge`; call after every `handle_*`.
    /// Returns what the proxy must do besides draining the bridge.
    #[must_use]
    pub fn drive(&mut self, now: Instant, bridge: &mut CallBridge) -> Option<LegOutcome> {
        let mut outcome = None;
        while let Some(event) = self.leg.poll_event() {
            if let Some(o) = self.on_event(now, bridge, event) {
                outcome.get_or_insert(o);
            }
        }
        outcome
    }

    fn on_event(&mut self, now: Instant, bridge: &mut CallBridge, event: LegEvent) -> Option<LegOutcome> {
        match event {
            LegEvent::Ringing => None,
            LegEvent::EarlyMedia(media) | LegEvent::MediaChanged(media) => self.apply(now, bridge, &media),
            LegEvent::Answered(media) => {
                self.final_status = Some(200);
                self.answered_at = Some(now);
                self.apply(now, bridge, &media)
            }
            LegEvent::Failed { status, reason, by_remote } => {
                self.final_status = Some(status);
                self.hung_up_by.get_or_insert(if by_remote { HungUpBy::Backend } else { HungUpBy::Voxproxy });
                self.fail(now, bridge, status, reason)
            }
            LegEvent::Ended { by_remote, reason } => {
                if reason == EndReason::PeerGone {
                    // The PBX went silent; voxproxy's timer ended the call.
                    self.hung_up_by.get_or_insert(HungUpBy::Voxproxy);
                } else if by_remote {
                    self.hung_up_by.get_or_insert(HungUpBy::Backend);
                }
                if self.final_status.is_none() && reason == EndReason::LocalHangup {
                    // Cancelled while ringing (RFC 3261 §9.1: the INVITE ends 487).
                    self.final_status = Some(487);
                }
                if by_remote && !bridge.is_finished() {
                    bridge.handle_close(now, CallEnd::BackendHangup);
                    return Some(LegOutcome::RemoteHangup);
                }
                None
            }
        }
    }

    fn apply(
        &mut self,
        now: Instant,
        bridge: &mut CallBridge,
        media: &crate::sip::Media,
    ) -> Option<LegOutcome> {
        match bridge.apply_media(now, media) {
            Ok(()) => None,
            Err(e) => {
                self.hung_up_by.get_or_insert(HungUpBy::Voxproxy);
                self.leg.hangup(now);
                self.final_status.get_or_insert(488);
                self.fail(now, bridge, 488, e.to_string())
            }
        }
    }

    fn fail(
        &mut self,
        now: Instant,
        bridge: &mut CallBridge,
        status: u16,
        reason: String,
    ) -> Option<LegOutcome> {
        if bridge.is_finished() {
            return None;
        }
        bridge.handle_close(now, CallEnd::BackendFailed);
        Some(LegOutcome::Failed { status, reason })
    }
}

#[cfg(test)]
#[path = "sip_leg_tests.rs"]
mod tests;
