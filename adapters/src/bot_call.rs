//! One call to a WebSocket bot: the [`CallBridge`] keeps talking to Twilio
//! (parsing, keep-alive, VAD, `start`/`stop`, close codes) and a
//! [`BotLeg`] talks to the bot, with this state machine routing between
//! them. Sans-IO like both: the proxy's per-call task hands it Twilio's
//! frames, the bot's messages and the clock, and drains
//! [`BotCall::poll_twilio`] and [`BotCall::poll_bot`] into the two sockets.
//!
//! What it decides:
//!
//! - Each Twilio frame goes to the bridge first (which counts and refuses
//!   bad ones); an accepted frame is then read again from a copy for the
//!   leg: caller audio of the `inbound` track, DTMF, the leg's own mark
//!   echoes (`vb-<n>`) and `stop`. The bridge's parser works in place, so
//!   the copy is what lets both see the frame; it is one reused buffer.
//! - Barge-in: with `barge_in` on, the caller starting to speak (the
//!   bridge's VAD onset) while bot audio is queued here or still playing at
//!   Twilio sends Twilio a `clear` and empties the leg's queue, which tells
//!   the bot as its protocol does (marks echoed, or notifies dropped). A bot
//!   that clears by itself is not disturbed: by the time its `clear` comes
//!   nothing is left to clear.
//! - Who ends the call: Twilio's `stop` or close sends the bot `stop` and a
//!   close; the bot closing ends the stream with
//!   [`EndReason::BackendHangup`], so the record says the bot hung up.
//!
//! The bridge has no RTP backend on such a call; whatever RTP it would send
//! is dropped here unread.

use core::time::Duration;

use voxproxy_core::Instant;
use voxproxy_core::time::earliest;

use crate::bot::{BotConfig, BotError, BotLeg, BotMessage, BotStats, CallInfo, CallerAction};
use crate::bridge::{BridgeError, BridgeEvent, CallBridge, EndReason, MAX_MEDIA_BYTES, Output};
use crate::media_stream::{self, Inbound, StreamSid, Track};
use crate::route::ROUTE_PARAMETER;

/// Something for Twilio's side, from [`BotCall::poll_twilio`]. Borrowed
/// data is valid until the next call into the [`BotCall`].
#[derive(Debug, PartialEq, Eq)]
pub enum TwilioOutput<'a> {
    /// Send this text frame (UTF-8 JSON) on Twilio's WebSocket.
    Text(&'a [u8]),
    /// Send a WebSocket ping to Twilio.
    Ping,
    /// Something happened; publish it (events API, logs).
    Event(BridgeEvent),
    /// Close Twilio's WebSocket with this code and reason; the call is over.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
}

/// What the routing itself counted, beside the bridge's and the leg's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BotCallStats {
    /// Clears sent to Twilio because the caller spoke over the bot.
    pub barge_ins: u64,
}

/// One call between Twilio and a bot. See the [module docs](self).
#[derive(Debug)]
pub struct BotCall {
    bridge: CallBridge,
    leg: BotLeg,
    barge_in: bool,
    /// Twilio plays nothing sent on a fork: the bot's audio is not sent.
    one_way: bool,
    stream_sid: StreamSid,
    /// A copy of Twilio's frame for the leg's parse.
    copy: Vec<u8>,
    /// Caller audio decoded from `copy`.
    audio: Vec<u8>,
    /// The Twilio frame being lent out.
    out: Vec<u8>,
    /// A barge-in `clear` not yet handed out.
    clear_due: bool,
    /// When the bot audio sent to Twilio runs out, by estimate.
    playing_until: Instant,
    now: Instant,
    stats: BotCallStats,
}

impl BotCall {
    /// A bot call for `bridge`, whose `start` has been accepted, at `now`.
    /// The bot's opening messages are queued; extra `parameters` (the route's)
    /// are already among `start`'s custom parameters.
    ///
    /// # Errors
    /// [`BotError::Config`] for a bad `config`, or when the bridge has no
    /// stream yet (a caller bug, reported rather than panicking).
    pub fn new(
        bridge: CallBridge,
        config: BotConfig,
        barge_in: bool,
        now: Instant,
    ) -> Result<Self, BotError> {
        let Some(start) = bridge.stream() else {
            return Err(BotError::Config { key: "ws", reason: "a bot call needs a started stream" });
        };
        let parameter = |name: &str| start.custom_parameter(name).unwrap_or_default().to_owned();
        let info = CallInfo {
            call_sid: start.call_sid,
            account_sid: start.account_sid,
            stream_sid: start.stream_sid,
            from: parameter("From"),
            to: parameter("To"),
            // The route label is voxproxy's own bookkeeping, not the bot's.
            custom_parameters: start
                .custom_parameters
                .iter()
                .filter(|(name, _)| name != ROUTE_PARAMETER)
                .cloned()
                .collect(),
            tracks: start.tracks,
        };
        let leg = BotLeg::new(config, &info, now)?;
        Ok(BotCall {
            one_way: bridge.is_one_way(),
            stream_sid: info.stream_sid,
            bridge,
            leg,
            barge_in,
            copy: Vec::with_capacity(1024),
            audio: vec![0; MAX_MEDIA_BYTES],
            out: Vec::with_capacity(512),
            clear_due: false,
            playing_until: now,
            now,
            stats: BotCallStats::default(),
        })
    }

    /// The bridge (its stream, counters and end reason).
    #[must_use]
    pub fn bridge(&self) -> &CallBridge {
        &self.bridge
    }

    /// The bridge, once the call is over: its record (and recording) are
    /// finished from it.
    #[must_use]
    pub fn into_bridge(self) -> CallBridge {
        self.bridge
    }

    /// The bot leg's counters.
    #[must_use]
    pub fn bot_stats(&self) -> BotStats {
        self.leg.stats()
    }

    /// The routing's own counters.
    #[must_use]
    pub fn stats(&self) -> BotCallStats {
        self.stats
    }

    /// Bot audio waiting here for Twilio, in ms.
    #[must_use]
    pub fn queued_ms(&self) -> u64 {
        self.leg.queued_ms()
    }

    /// Whether the call is over.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.bridge.is_finished()
    }

    /// One text frame from Twilio (`frame` is scratch afterwards).
    ///
    /// # Errors
    /// The bridge's [`BridgeError`]; the frame was counted and dropped.
    pub fn handle_twilio(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), BridgeError> {
        self.tick(now);
        self.copy.clear();
        self.copy.extend_from_slice(frame);
        self.bridge.handle_twilio(now, frame)?;
        // The bridge accepted it, so it parses again the same way.
        let Ok(message) = media_stream::parse_inbound(&mut self.copy, &mut self.audio) else { return Ok(()) };
        match message {
            Inbound::Media(media) if media.track != Track::Outbound => {
                let len = media.payload_len.min(self.audio.len());
                self.leg.handle_caller_media(now, &self.audio[..len], media.timestamp_ms);
            }
            Inbound::Dtmf(dtmf) => {
                self.leg.handle_caller_dtmf(now, dtmf.digit);
            }
            Inbound::Mark(mark) => {
                // Not the leg's: the bridge's, handled already.
                self.leg.handle_caller_mark(now, mark.name);
            }
            Inbound::Stop(_) => self.leg.handle_caller_stop(now),
            _ => {}
        }
        Ok(())
    }

    /// A WebSocket control frame from Twilio (ping, pong).
    pub fn handle_twilio_activity(&mut self, now: Instant) {
        self.tick(now);
        self.bridge.handle_twilio_activity(now);
    }

    /// The proxy ends the call, or Twilio's WebSocket is gone: the bot gets
    /// `stop` (Twilio protocol) and a close.
    pub fn handle_close(&mut self, now: Instant, reason: EndReason) {
        self.tick(now);
        self.bridge.handle_close(now, reason);
        self.leg.handle_caller_stop(now);
    }

    /// The bot's WebSocket could not be opened or failed: the stream is
    /// closed as a failed leg (the route's fallback follows).
    pub fn handle_bot_failed(&mut self, now: Instant) {
        self.tick(now);
        self.leg.handle_bot_closed(now);
        self.bridge.handle_close(now, EndReason::BackendFailed);
    }

    /// The bot closed its WebSocket: the call ends, the bot having hung up.
    pub fn handle_bot_closed(&mut self, now: Instant) {
        self.tick(now);
        self.leg.handle_bot_closed(now);
        self.bridge.handle_close(now, EndReason::BackendHangup);
    }

    /// A text message from the bot (`frame` is scratch afterwards).
    ///
    /// # Errors
    /// The leg's [`BotError`]; the message was counted and dropped.
    pub fn handle_bot_text(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), BotError> {
        self.tick(now);
        self.leg.handle_bot_text(now, frame)
    }

    /// A binary message from the bot.
    ///
    /// # Errors
    /// The leg's [`BotError`]; the message was counted and dropped.
    pub fn handle_bot_binary(&mut self, now: Instant, data: &[u8]) -> Result<(), BotError> {
        self.tick(now);
        self.leg.handle_bot_binary(now, data)
    }

    /// The clock reached [`BotCall::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.bridge.handle_timeout(now);
        self.leg.handle_timeout(now);
    }

    /// When [`BotCall::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Once the stream is closed nothing more goes to Twilio, so the
        // leg's releases are moot: reporting them would keep a deadline
        // due for ever and make a driver spin (found by the bot_call fuzz
        // target).
        let leg = if self.bridge.is_finished() { None } else { self.leg.poll_timeout() };
        earliest(self.bridge.poll_timeout(), leg)
    }

    /// The next message for the bot.
    #[must_use]
    pub fn poll_bot(&mut self) -> Option<BotMessage<'_>> {
        self.leg.poll_bot()
    }

    /// The next thing for Twilio's side: the bridge's outputs first (pings,
    /// events, the close), then a barge-in `clear`, then the bot's audio,
    /// marks and clears as the playout lead allows. Call until `None`.
    #[must_use]
    pub fn poll_twilio(&mut self) -> Option<TwilioOutput<'_>> {
        while let Some(output) = self.bridge.poll_output() {
            match output {
                Output::Rtp(_) => {}
                Output::Ping => return Some(TwilioOutput::Ping),
                Output::Close { code, reason } => return Some(TwilioOutput::Close { code, reason }),
                Output::Twilio(text) => {
                    // Copied so the borrow ends here (the bridge has no
                    // backend audio on a bot call, so this is rare).
                    self.out.clear();
                    self.out.extend_from_slice(text);
                    return Some(TwilioOutput::Text(&self.out));
                }
                Output::Event(event) => {
                    if let BridgeEvent::SpeechStarted { .. } = event {
                        self.caller_spoke();
                    }
                    return Some(TwilioOutput::Event(event));
                }
            }
        }
        if self.bridge.is_finished() {
            return None;
        }
        if core::mem::take(&mut self.clear_due) {
            self.bridge.record_clear(self.now);
            media_stream::write_clear(&mut self.out, &self.stream_sid);
            return Some(TwilioOutput::Text(&self.out));
        }
        loop {
            let action = self.leg.poll_caller()?;
            if self.one_way {
                // A fork's player plays nothing: the bot's audio goes nowhere.
                continue;
            }
            match action {
                CallerAction::Audio(mulaw) => {
                    let from = self.playing_until.max(self.now);
                    self.playing_until = from + Duration::from_micros(125 * mulaw.len() as u64);
                    self.bridge.record_heard(self.now, mulaw);
                    media_stream::write_media(&mut self.out, &self.stream_sid, mulaw);
                }
                CallerAction::Mark(name) => media_stream::write_mark(&mut self.out, &self.stream_sid, name),
                CallerAction::Clear => {
                    self.playing_until = self.now;
                    self.bridge.record_clear(self.now);
                    media_stream::write_clear(&mut self.out, &self.stream_sid);
                }
            }
            return Some(TwilioOutput::Text(&self.out));
        }
    }

    /// Starts recording the call (see [`CallBridge::start_recording`]):
    /// the caller as the bridge receives it, and the bot's audio as it goes
    /// to Twilio.
    pub fn start_recording(&mut self) {
        self.bridge.start_recording();
    }

    /// The next final 20 ms of the recording (see
    /// [`CallBridge::poll_recording`]). Call until `None` after every turn.
    #[must_use]
    pub fn poll_recording(&mut self, now: Instant) -> Option<&[u8; crate::recording::BLOCK_BYTES]> {
        self.bridge.poll_recording(now)
    }

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The caller started speaking: a barge-in if the bot is being heard.
    fn caller_spoke(&mut self) {
        let speaking = self.leg.queued_ms() > 0 || self.playing_until > self.now;
        if !self.barge_in || self.one_way || !speaking {
            return;
        }
        self.stats.barge_ins += 1;
        self.clear_due = true;
        self.playing_until = self.now;
        self.leg.handle_caller_clear(self.now);
    }
}

#[cfg(test)]
mod tests;
