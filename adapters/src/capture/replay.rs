//! Replaying a capture: a fresh bridge (and SIP leg) from the header, the
//! recorded inputs on the recorded virtual clock, and every output checked
//! against the capture at the point the proxy polled it.
//!
//! Outputs are polled lazily, exactly where the capture says the proxy
//! polled one, so the machines see the same interleaving of inputs and
//! polls as in production (the bridge's output queue is bounded, and a
//! SIP leg's drive depends on what the bridge has already done).

use std::net::SocketAddr;

use memchr::memmem;
use voxproxy_core::Instant;
use voxproxy_core::time::earliest;

use super::format::{BotStart, CaptureHeader, OutputRecord, SipStart, Truncation, digest};
use super::reader::{CaptureError, Reader, Record};
use super::redact;
use crate::bot::BotMessage;
use crate::bot_call::{BotCall, TwilioOutput};
use crate::bridge::{BackendCodec, BridgeEvent, CallBridge, CallStats, Output, SipBackend};

/// Timeline entries kept for `--report`; later ones are counted only.
pub const MAX_TIMELINE: usize = 100_000;

/// Something that happened in the call, for `voxproxy replay --report`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timeline {
    /// The bridge was created (the WebSocket opened).
    Created,
    /// The route pointed the call at a backend.
    Backend(Option<SocketAddr>),
    /// The backend's media format was set (a PBX's offer).
    Media(BackendCodec),
    /// The first datagram on the call's RTP socket, from this address.
    FirstDatagram(SocketAddr),
    /// The SIP leg sent its INVITE to this target.
    SipInvite(String),
    /// The SIP leg was answered (200 OK).
    SipAnswered,
    /// The SIP leg ended; the final status, if any.
    SipEnded(Option<u16>),
    /// The call became a bot call (its bot answered, or not: see what follows).
    BotStarted,
    /// A bridge event.
    Event(BridgeEvent),
    /// A `mark` went to Twilio: the end of a backend talkspurt.
    MarkSent,
    /// A `clear` went to Twilio.
    Clear,
    /// The bridge closed the stream.
    Closed {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
    /// The capture stopped early.
    Truncated(Truncation),
    /// The call's end.
    End,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// Virtual time.
    pub at: Instant,
    /// What.
    pub what: Timeline,
}

/// The first output that did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Inputs fed before it (the last one's index is this minus one).
    pub inputs: u64,
    /// Index of the output among the outputs (0-based).
    pub output_index: u64,
    /// The time of the last input fed.
    pub at: Option<Instant>,
    /// What kind of output the capture has there.
    pub kind: &'static str,
    /// What the capture has.
    pub expected: String,
    /// What the replay produced ("nothing" when it produced none).
    pub got: String,
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// The capture's header.
    pub header: CaptureHeader,
    /// Inputs fed.
    pub inputs: u64,
    /// Outputs compared (all equal up to `difference`).
    pub outputs: u64,
    /// The first difference, if any.
    pub difference: Option<Difference>,
    /// Why the capture stopped early, if it did.
    pub truncated: Option<Truncation>,
    /// Whether the capture has its end mark (a crash leaves none).
    pub complete: bool,
    /// The replayed bridge's counters at the end.
    pub stats: CallStats,
    /// The call's timeline.
    pub timeline: Vec<TimelineEntry>,
    /// Timeline entries past [`MAX_TIMELINE`], not kept.
    pub timeline_dropped: u64,
}

/// The machines being replayed and what the replay has seen.
struct Replayer {
    bridge: CallBridge,
    sip: Option<SipBackend>,
    /// The bot call, once `BotStart` moved the bridge into it.
    bot: Option<BotCall>,
    frame: Vec<u8>,
    scratch: Vec<u8>,
    last_at: Option<Instant>,
    answered: bool,
    seen_datagram: bool,
    report: ReplayReport,
}

/// Replays a whole capture held in memory.
///
/// # Errors
/// [`CaptureError`] when the file is not a readable capture (a difference
/// is not an error: it is in the report).
pub fn replay(bytes: &[u8]) -> Result<ReplayReport, CaptureError> {
    let (reader, header) = Reader::new(bytes)?;
    let bridge = CallBridge::new(header.bridge.clone(), header.created_at)
        .map_err(|_| CaptureError::BadHeader { reason: "the bridge refuses the header's settings" })?;
    let mut r = Replayer {
        bridge,
        sip: None,
        bot: None,
        frame: Vec::with_capacity(1024),
        scratch: Vec::new(),
        last_at: None,
        answered: false,
        seen_datagram: false,
        report: ReplayReport {
            header: header.clone(),
            inputs: 0,
            outputs: 0,
            difference: None,
            truncated: None,
            complete: false,
            stats: CallStats::default(),
            timeline: Vec::new(),
            timeline_dropped: 0,
        },
    };
    r.note(header.created_at, Timeline::Created);
    for record in reader {
        let record = record?;
        match record {
            Record::Output(expected) => {
                let got = r.next_output(&expected);
                if got.as_ref() != Some(&expected) {
                    r.differs(&expected, got.map(|g| g.to_string()));
                    break;
                }
                r.report.outputs += 1;
            }
            Record::Truncated(why) => {
                r.report.truncated = Some(why);
                let at = r.last_at.unwrap_or(header.created_at);
                r.note(at, Timeline::Truncated(why));
            }
            Record::End { at } => {
                r.report.complete = true;
                r.note(at, Timeline::End);
            }
            input => {
                r.report.inputs += 1;
                r.last_at = input.at();
                r.apply(input);
            }
        }
    }
    if r.report.complete && r.report.truncated.is_none() && r.report.difference.is_none() {
        r.check_nothing_left();
    }
    r.report.stats = r.bot.as_ref().map_or_else(|| r.bridge.stats(), |bot| bot.bridge().stats());
    Ok(r.report)
}

impl Replayer {
    fn note(&mut self, at: Instant, what: Timeline) {
        if self.report.timeline.len() < MAX_TIMELINE {
            self.report.timeline.push(TimelineEntry { at, what });
        } else {
            self.report.timeline_dropped += 1;
        }
    }

    fn apply(&mut self, input: Record<'_>) {
        if let Record::BotStart { at, start } = input {
            self.start_bot(at, start);
            return;
        }
        if self.bot.is_some() {
            self.apply_bot(&input);
            return;
        }
        let bridge = &mut self.bridge;
        match input {
            Record::TwilioText { at, frame } => {
                bridge.handle_twilio_activity(at);
                self.frame.clear();
                self.frame.extend_from_slice(frame);
                let _ = bridge.handle_twilio(at, &mut self.frame);
            }
            Record::TwilioBinary { at } => {
                bridge.handle_twilio_activity(at);
                let _ = bridge.handle_twilio(at, &mut []);
            }
            Record::TwilioActivity { at } => bridge.handle_twilio_activity(at),
            Record::Close { at, reason } => bridge.handle_close(at, reason),
            Record::Rtp { at, from, datagram } => {
                bridge.handle_rtp(at, from, datagram);
                if !std::mem::replace(&mut self.seen_datagram, true) {
                    self.note(at, Timeline::FirstDatagram(from));
                }
            }
            Record::Timeout { at } => bridge.handle_timeout(at),
            Record::SetBackend { at, backend } => {
                let _ = bridge.set_backend(backend);
                self.note(at, Timeline::Backend(backend));
            }
            Record::SetMedia { at, codec, payload_type, dtmf_payload_type } => {
                let _ = bridge.set_media(at, codec, payload_type, dtmf_payload_type);
                self.note(at, Timeline::Media(codec));
            }
            Record::SipStart { at, start } => self.start_sip(at, *start),
            Record::SipDatagram { at, from, bytes } => {
                if let Some(sip) = &mut self.sip {
                    sip.handle_datagram(at, from, bytes);
                }
            }
            Record::SipStream { at, bytes } => {
                if let Some(sip) = &mut self.sip {
                    let _ = sip.handle_stream(at, bytes);
                }
            }
            Record::SipTimeout { at } => {
                if let Some(sip) = &mut self.sip {
                    sip.handle_timeout(at);
                }
            }
            Record::SipHangup { at } => {
                if let Some(sip) = &mut self.sip {
                    sip.hangup(at);
                }
            }
            Record::SipDrive { at } => self.drive_sip(at),
            // Bot inputs before the bot started: production never makes
            // them, and a damaged file's are ignored.
            Record::BotStart { .. }
            | Record::BotText { .. }
            | Record::BotBinary { .. }
            | Record::BotClosed { .. }
            | Record::BotFailed { .. }
            | Record::Output(_)
            | Record::Truncated(_)
            | Record::End { .. } => {}
        }
    }

    /// `BotCall::new` takes the bridge, as production's does; the replay's
    /// `bridge` is then a spare never fed again (built from the header, so
    /// the start cannot fail where the first one did not).
    fn start_bot(&mut self, at: Instant, start: BotStart) {
        let Ok(spare) = CallBridge::new(self.report.header.bridge.clone(), at) else { return };
        let bridge = std::mem::replace(&mut self.bridge, spare);
        // A refused one: production closed such a call without a bot, and
        // nothing follows.
        if let Ok(bot) = BotCall::new(bridge, start.config, start.barge_in, at) {
            self.bot = Some(bot);
            self.note(at, Timeline::BotStarted);
        }
    }

    /// An input of a bot call, handed to the `BotCall` as the proxy does.
    fn apply_bot(&mut self, input: &Record<'_>) {
        let Some(bot) = &mut self.bot else { return };
        match *input {
            Record::TwilioText { at, frame } => {
                bot.handle_twilio_activity(at);
                self.frame.clear();
                self.frame.extend_from_slice(frame);
                let _ = bot.handle_twilio(at, &mut self.frame);
            }
            Record::TwilioBinary { at } => {
                bot.handle_twilio_activity(at);
                let _ = bot.handle_twilio(at, &mut []);
            }
            Record::TwilioActivity { at } => bot.handle_twilio_activity(at),
            Record::Close { at, reason } => bot.handle_close(at, reason),
            Record::Timeout { at } => bot.handle_timeout(at),
            Record::BotText { at, frame } => {
                self.frame.clear();
                self.frame.extend_from_slice(frame);
                let _ = bot.handle_bot_text(at, &mut self.frame);
            }
            Record::BotBinary { at, data } => {
                let _ = bot.handle_bot_binary(at, data);
            }
            Record::BotClosed { at } => bot.handle_bot_closed(at),
            Record::BotFailed { at } => bot.handle_bot_failed(at),
            // A bot call has no RTP or SIP leg: production never records these.
            _ => {}
        }
    }

    /// What the bot call has where the capture has `expected`.
    fn next_bot_output(&mut self, expected: &OutputRecord<'_>) -> Option<OutputRecord<'static>> {
        let at = self.last_at.unwrap_or(Instant::ZERO);
        let bot = self.bot.as_mut()?;
        let (record, note) = match expected {
            OutputRecord::Deadline(_) => (OutputRecord::Deadline(bot.poll_timeout()), None),
            OutputRecord::Bot { .. } | OutputRecord::BotClose => (bot_record(bot.poll_bot()?), None),
            _ => twilio_record(&bot.poll_twilio()?),
        };
        if let Some(note) = note {
            self.note(at, note);
        }
        Some(record)
    }

    fn start_sip(&mut self, at: Instant, start: SipStart) {
        let target = start.config.target.to_string();
        // A leg that could not start in production fails the same way here.
        self.sip = SipBackend::new(start.config, &start.info, at, &mut self.bridge).ok();
        if self.sip.is_some() {
            self.note(at, Timeline::SipInvite(target));
        }
    }

    fn drive_sip(&mut self, at: Instant) {
        let Some(sip) = &mut self.sip else { return };
        let _ = sip.drive(at, &mut self.bridge);
        let (answered, ended, status) = (
            sip.answered_at().is_some(),
            sip.leg().state() == crate::sip::LegState::Ended,
            sip.final_status(),
        );
        if answered && !std::mem::replace(&mut self.answered, true) {
            self.note(at, Timeline::SipAnswered);
        }
        if ended && !self.report.timeline.iter().any(|e| matches!(e.what, Timeline::SipEnded(_))) {
            self.note(at, Timeline::SipEnded(status));
        }
    }

    /// What the replay has where the capture has `expected`.
    fn next_output(&mut self, expected: &OutputRecord<'_>) -> Option<OutputRecord<'static>> {
        if self.bot.is_some() {
            return self.next_bot_output(expected);
        }
        match expected {
            OutputRecord::Deadline(_) => {
                let sip_due = self.sip.as_ref().and_then(SipBackend::poll_timeout);
                Some(OutputRecord::Deadline(earliest(self.bridge.poll_timeout(), sip_due)))
            }
            OutputRecord::Sip { .. } => {
                let transmit = self.sip.as_mut()?.poll_transmit()?;
                let (len, digest) = redact::transmit_digest(&transmit, &mut self.scratch);
                Some(OutputRecord::Sip { len, digest })
            }
            _ => self.next_bridge_output(),
        }
    }

    fn next_bridge_output(&mut self) -> Option<OutputRecord<'static>> {
        let at = self.last_at.unwrap_or(Instant::ZERO);
        let (record, note) = match self.bridge.poll_output()? {
            Output::Twilio(bytes) => {
                let note = if memmem::find(bytes, br#""event":"mark""#).is_some() {
                    Some(Timeline::MarkSent)
                } else if memmem::find(bytes, br#""event":"clear""#).is_some() {
                    Some(Timeline::Clear)
                } else {
                    None
                };
                (OutputRecord::Twilio { len: len32(bytes), digest: digest(bytes) }, note)
            }
            Output::Rtp(bytes) => (OutputRecord::Rtp { len: len32(bytes), digest: digest(bytes) }, None),
            Output::Ping => (OutputRecord::Ping, None),
            Output::Event(event) => (OutputRecord::Event(event), Some(Timeline::Event(event))),
            Output::Close { code, reason } => {
                (OutputRecord::Close { code, reason }, Some(Timeline::Closed { code, reason }))
            }
        };
        if let Some(note) = note {
            self.note(at, note);
        }
        Some(record)
    }

    fn differs(&mut self, expected: &OutputRecord<'_>, got: Option<String>) {
        self.report.difference = Some(Difference {
            inputs: self.report.inputs,
            output_index: self.report.outputs,
            at: self.last_at,
            kind: expected.name(),
            expected: expected.to_string(),
            got: got.unwrap_or_else(|| "nothing".to_owned()),
        });
    }

    /// A complete capture drained everything: anything the replay still
    /// has is an output production never made.
    fn check_nothing_left(&mut self) {
        let extra = if let Some(bot) = &mut self.bot {
            // Not the bot's side: messages left for a bot whose socket is
            // gone (it hung up, or never answered) are dropped unread.
            bot.poll_twilio().map(|o| twilio_record(&o).0)
        } else {
            self.leftover_bridge_output()
        };
        if let Some(extra) = extra {
            self.report.difference = Some(Difference {
                inputs: self.report.inputs,
                output_index: self.report.outputs,
                at: self.last_at,
                kind: extra.name(),
                expected: "nothing (the capture ends)".to_owned(),
                got: extra.to_string(),
            });
        }
    }

    fn leftover_bridge_output(&mut self) -> Option<OutputRecord<'static>> {
        match self.next_bridge_output() {
            Some(extra) => Some(extra),
            None => self.sip.as_mut().and_then(SipBackend::poll_transmit).map(|t| {
                let (len, digest) = redact::transmit_digest(&t, &mut self.scratch);
                OutputRecord::Sip { len, digest }
            }),
        }
    }
}

/// A `poll_twilio` output as the capture keeps it, and what the timeline notes.
fn twilio_record(output: &TwilioOutput<'_>) -> (OutputRecord<'static>, Option<Timeline>) {
    match *output {
        TwilioOutput::Text(bytes) => {
            let note = if memmem::find(bytes, br#""event":"mark""#).is_some() {
                Some(Timeline::MarkSent)
            } else if memmem::find(bytes, br#""event":"clear""#).is_some() {
                Some(Timeline::Clear)
            } else {
                None
            };
            (OutputRecord::Twilio { len: len32(bytes), digest: digest(bytes) }, note)
        }
        TwilioOutput::Ping => (OutputRecord::Ping, None),
        TwilioOutput::Event(event) => (OutputRecord::Event(event), Some(Timeline::Event(event))),
        TwilioOutput::Close { code, reason } => {
            (OutputRecord::Close { code, reason }, Some(Timeline::Closed { code, reason }))
        }
    }
}

/// A `poll_bot` output as the capture keeps it.
fn bot_record(message: BotMessage<'_>) -> OutputRecord<'static> {
    match message {
        BotMessage::Text(bytes) => {
            OutputRecord::Bot { binary: false, len: len32(bytes), digest: digest(bytes) }
        }
        BotMessage::Binary(bytes) => {
            OutputRecord::Bot { binary: true, len: len32(bytes), digest: digest(bytes) }
        }
        BotMessage::Close => OutputRecord::BotClose,
    }
}

fn len32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}
