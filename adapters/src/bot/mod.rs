//! The WebSocket bot leg: one sans-IO state machine per call between the
//! call bridge (which keeps talking to Twilio) and a voice bot reached over a
//! WebSocket, speaking one of two public protocols.
//!
//! - [`BotProtocol::Twilio`]: the bot sees exactly what Twilio would send it
//!   (`connected`, `start`, `media` every 20 ms with Twilio's string counters
//!   and timestamps, `dtmf`, `mark` echoes, `stop`) and may send `media`,
//!   `mark` and `clear`, which the leg applies towards Twilio.
//! - [`BotProtocol::L16`]: Vonage's WebSocket audio protocol. A text
//!   `websocket:connected` first, then binary 20 ms frames of little-endian
//!   16-bit mono PCM at 8, 16 or 24 kHz; from the bot, binary PCM of any
//!   length (re-framed to 20 ms), `{"action":"clear"}` (answered
//!   `websocket:cleared`) and `{"action":"notify","payload":…}` (echoed as
//!   `websocket:notify` once the audio before it has played); caller DTMF as
//!   `websocket:dtmf`.
//!
//! ## How to drive it
//!
//! The proxy's per-call task owns one [`BotLeg`] beside the bridge. Caller
//! events go in with `handle_caller_*` (the bridge has parsed Twilio's frames
//! already), bot messages with [`BotLeg::handle_bot_text`] and
//! [`BotLeg::handle_bot_binary`], the clock with [`BotLeg::handle_timeout`]
//! at [`BotLeg::poll_timeout`]. After each input, drain
//! [`BotLeg::poll_bot`] into the bot's WebSocket and [`BotLeg::poll_caller`]
//! into Twilio's (writing [`CallerAction::Audio`] with
//! [`media_stream::write_media`], [`CallerAction::Mark`] with
//! [`media_stream::write_mark`], [`CallerAction::Clear`] with
//! [`media_stream::write_clear`]). Twilio's mark echoes go back in with
//! [`BotLeg::handle_caller_mark`], which says whether the mark was the
//! leg's; the bridge's own barge-in `clear` with [`BotLeg::handle_caller_clear`].
//!
//! ```
//! use voxproxy_adapters::bot::{BotConfig, BotLeg, BotMessage, CallInfo, CallerAction};
//! use voxproxy_adapters::media_stream::{AccountSid, CallSid, StreamSid, Tracks};
//! use voxproxy_core::Instant;
//!
//! let info = CallInfo {
//!     call_sid: CallSid::new("CA1")?, account_sid: AccountSid::new("AC1")?, stream_sid: StreamSid::new("MZ1")?,
//!     from: "+15550001".into(), to: "+15550002".into(), custom_parameters: vec![],
//!     tracks: Tracks { inbound: true, outbound: false },
//! };
//! let mut leg = BotLeg::new(BotConfig::default(), &info, Instant::ZERO)?;
//! let mut to_bot = 0;
//! while let Some(BotMessage::Text(_)) = leg.poll_bot() { to_bot += 1; }
//! assert_eq!(to_bot, 2); // connected, start
//!
//! // The bot answers with 20 ms of audio and a mark.
//! let payload = "/".repeat(212) + "/w==";
//! let mut media = format!(r#"{{"event":"media","streamSid":"MZ1","media":{{"payload":"{payload}"}}}}"#).into_bytes();
//! leg.handle_bot_text(Instant::ZERO, &mut media)?;
//! leg.handle_bot_text(Instant::ZERO, &mut br#"{"event":"mark","streamSid":"MZ1","mark":{"name":"hi"}}"#.to_vec())?;
//! assert!(matches!(leg.poll_caller(), Some(CallerAction::Audio(a)) if a.len() == 160));
//! assert!(matches!(leg.poll_caller(), Some(CallerAction::Mark("vb-1"))));
//! // Twilio echoes the mark once played; the bot gets its own name back.
//! assert!(leg.handle_caller_mark(Instant::from_millis(20), "vb-1"));
//! let Some(BotMessage::Text(echo)) = leg.poll_bot() else { unreachable!() };
//! assert!(std::str::from_utf8(echo)?.contains(r#""mark":{"name":"hi"}"#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Bounds
//!
//! Everything from the bot is bounded: text messages to [`MAX_TEXT_BYTES`],
//! binary to [`MAX_BINARY_BYTES`], queued audio to
//! [`BotConfig::max_queued_ms`] (the excess is dropped and counted), marks
//! and notifies in flight to [`MAX_MARKS`], a notify payload to
//! [`MAX_NOTIFY_PAYLOAD`]. Messages waiting for a slow bot are bounded too
//! (32, of which at most 24 caller audio frames, 480 ms); past that, caller audio is
//! dropped and counted, never blocking the call. Bad bot input is a
//! [`BotError`], counted in [`BotStats::bad_messages`] and dropped.
//!
//! Audio towards Twilio leaves at most [`PLAYOUT_LEAD`] ahead of real time;
//! the rest waits here, where a `clear` takes effect at once (the `queue`
//! module's documentation has the reasoning). Hot paths allocate nothing:
//! the leg's buffers are reused from frame to frame.

mod error;
mod l16;
mod outbox;
mod queue;
mod twilio;

use core::fmt::Write as _;

use voxproxy_core::Instant;
use voxproxy_core::resample::{Downsampler, Upsampler};
use voxproxy_core::resample3::{Downsampler3, Upsampler3};

pub use error::BotError;
pub use queue::{MAX_MARKS, PLAYOUT_LEAD};

use crate::bridge::Framer;
use crate::media_stream::{self, AccountSid, CallSid, StreamSid, Tracks};
use outbox::{Kind, Outbox};
use queue::{Marker, PlayoutQueue, Release};

/// μ-law bytes (8 kHz samples) in one 20 ms frame.
pub const FRAME_BYTES: usize = 160;

/// Largest text message accepted from the bot (a `media` of about 1.5 s).
/// The leg keeps a buffer of ¾ of this to decode a payload into.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Largest binary message accepted from the bot: 2 s of 24 kHz L16.
pub const MAX_BINARY_BYTES: usize = 96_000;

/// Longest `notify` payload (as JSON text) the leg keeps to echo.
pub const MAX_NOTIFY_PAYLOAD: usize = 2048;

/// Prefix of the marks the leg sends to Twilio; the rest is a decimal id.
/// The bridge's own marks use `vp-`, so the two never collide.
pub const MARK_PREFIX: &str = "vb-";

/// Default bound on the bot's audio waiting for Twilio.
pub const DEFAULT_MAX_QUEUED_MS: u32 = 30_000;

/// Largest accepted [`BotConfig::max_queued_ms`].
pub const MAX_MAX_QUEUED_MS: u32 = 300_000;

/// The wire protocol the bot speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BotProtocol {
    /// Twilio Media Streams (JSON text, base64 μ-law at 8 kHz).
    #[default]
    Twilio,
    /// Vonage's WebSocket audio protocol: binary 16-bit PCM at this rate.
    L16(L16Rate),
}

/// The sample rates of [`BotProtocol::L16`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L16Rate {
    /// 8000 Hz: Twilio's rate, no resampling.
    Hz8000,
    /// 16000 Hz: the half-band 8 ⇄ 16 kHz resampler.
    Hz16000,
    /// 24000 Hz: the factor-3 8 ⇄ 24 kHz resampler.
    Hz24000,
}

impl L16Rate {
    /// The rate for `hz`, if it is one of 8000, 16000 and 24000.
    #[must_use]
    pub const fn from_hz(hz: u32) -> Option<Self> {
        match hz {
            8000 => Some(L16Rate::Hz8000),
            16000 => Some(L16Rate::Hz16000),
            24000 => Some(L16Rate::Hz24000),
            _ => None,
        }
    }

    /// Samples per second.
    #[must_use]
    pub const fn hz(self) -> u32 {
        match self {
            L16Rate::Hz8000 => 8000,
            L16Rate::Hz16000 => 16000,
            L16Rate::Hz24000 => 24000,
        }
    }

    /// Samples at this rate per 8 kHz sample.
    const fn factor(self) -> usize {
        (self.hz() / 8000) as usize
    }
}

/// How the leg behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BotConfig {
    /// The bot's protocol.
    pub protocol: BotProtocol,
    /// Most of the bot's audio (in ms at 8 kHz) kept waiting for Twilio;
    /// more is dropped and counted. 20 ..= [`MAX_MAX_QUEUED_MS`].
    pub max_queued_ms: u32,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig { protocol: BotProtocol::Twilio, max_queued_ms: DEFAULT_MAX_QUEUED_MS }
    }
}

/// What the leg tells the bot about the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// Twilio's call SID.
    pub call_sid: CallSid,
    /// The account's SID.
    pub account_sid: AccountSid,
    /// The stream SID the bot sees (and must use in its messages, on the Twilio protocol).
    pub stream_sid: StreamSid,
    /// The caller's number (L16 `websocket:connected` only).
    pub from: String,
    /// The called number (L16 `websocket:connected` only).
    pub to: String,
    /// `customParameters` (Twilio) or extra `websocket:connected` fields (L16).
    pub custom_parameters: Vec<(String, String)>,
    /// The tracks announced in `start` (Twilio).
    pub tracks: Tracks,
}

/// A message for the bot's WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BotMessage<'a> {
    /// A text frame (UTF-8 JSON).
    Text(&'a [u8]),
    /// A binary frame (L16 audio).
    Binary(&'a [u8]),
    /// Close the WebSocket normally; nothing follows.
    Close,
}

/// Something to send to Twilio on the bot's behalf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerAction<'a> {
    /// Up to 20 ms of μ-law for a `media` message.
    Audio(&'a [u8]),
    /// A `mark` with this name (the leg's, `vb-<n>`).
    Mark(&'a str),
    /// A `clear`: the bot interrupted itself.
    Clear,
}

/// Counters of one leg, for metrics and the call record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BotStats {
    /// Bot messages refused (each one a [`BotError`]).
    pub bad_messages: u64,
    /// Caller audio frames queued for the bot.
    pub frames_to_bot: u64,
    /// Caller audio frames dropped because the bot was not reading.
    pub frames_to_bot_dropped: u64,
    /// Events for the bot (echoes, DTMF) dropped because it was not reading.
    pub events_to_bot_dropped: u64,
    /// μ-law bytes of bot audio queued for the caller.
    pub bot_audio_bytes: u64,
    /// μ-law bytes of bot audio dropped because the queue was full.
    pub bot_audio_dropped_bytes: u64,
    /// Audio messages released towards Twilio.
    pub frames_to_caller: u64,
    /// Marks (or notifies) echoed to the bot after their audio played.
    pub marks_played: u64,
    /// Marks echoed (Twilio protocol) or notifies dropped (L16) because a
    /// clear discarded their audio.
    pub marks_cleared: u64,
    /// `clear`s from the bot.
    pub bot_clears: u64,
    /// Clears from the bridge (barge-in) that emptied the leg's queue.
    pub caller_clears: u64,
}

/// The per-protocol state: counters (Twilio) or resamplers (L16).
#[derive(Debug)]
enum Codec {
    Twilio {
        /// The next `sequenceNumber` (`start` was 1).
        sequence: u64,
        /// The next `media.chunk`.
        chunk: u64,
        /// Where a bot `media` payload is decoded.
        audio: Vec<u8>,
        /// For `stop`.
        sids: (AccountSid, CallSid),
    },
    L16 {
        rate: L16Rate,
        /// Caller μ-law re-cut into 20 ms.
        uplink: Box<Framer<u8, FRAME_BYTES>>,
        up2: Upsampler,
        up3: Upsampler3,
        down2: Downsampler,
        down3: Downsampler3,
    },
}

/// One call's bot leg. See the module documentation.
#[derive(Debug)]
pub struct BotLeg {
    codec: Codec,
    stream_sid: StreamSid,
    now: Instant,
    outbox: Outbox,
    queue: PlayoutQueue,
    /// The frame [`BotLeg::poll_caller`] lends out.
    frame: [u8; FRAME_BYTES],
    /// The mark name [`BotLeg::poll_caller`] lends out.
    mark_name: String,
    /// The bot asked for a `clear` not yet handed to the caller side.
    pending_clear: bool,
    finished: bool,
    stats: BotStats,
}

impl BotLeg {
    /// A leg for a call that starts at `now`; the bot's opening messages
    /// (`connected` and `start`, or `websocket:connected`) are queued.
    ///
    /// # Errors
    /// [`BotError::Config`] if `max_queued_ms` is out of range.
    pub fn new(config: BotConfig, info: &CallInfo, now: Instant) -> Result<Self, BotError> {
        if !(20..=MAX_MAX_QUEUED_MS).contains(&config.max_queued_ms) {
            return Err(BotError::Config { key: "ws.max_queued_ms", reason: "must be 20 ..= 300000" });
        }
        let codec = match config.protocol {
            BotProtocol::Twilio => Codec::Twilio {
                sequence: 2,
                chunk: 1,
                audio: vec![0; MAX_TEXT_BYTES / 4 * 3],
                sids: (info.account_sid, info.call_sid),
            },
            BotProtocol::L16(rate) => Codec::L16 {
                rate,
                uplink: Box::new(Framer::new()),
                up2: Upsampler::new(),
                up3: Upsampler3::new(),
                down2: Downsampler::new(),
                down3: Downsampler3::new(),
            },
        };
        let max_bytes = config.max_queued_ms as usize * FRAME_BYTES / 20;
        let mut leg = BotLeg {
            codec,
            stream_sid: info.stream_sid,
            now,
            outbox: Outbox::new(),
            queue: PlayoutQueue::new(max_bytes),
            frame: [0; FRAME_BYTES],
            mark_name: String::with_capacity(MARK_PREFIX.len() + 20),
            pending_clear: false,
            finished: false,
            stats: BotStats::default(),
        };
        match &leg.codec {
            Codec::Twilio { .. } => twilio::open(&mut leg.outbox, info),
            Codec::L16 { rate, .. } => l16::open(&mut leg.outbox, *rate, info),
        }
        Ok(leg)
    }

    /// The clock moved to `now` (call it at [`BotLeg::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// One chunk of the caller's μ-law (normally 20 ms), with Twilio's
    /// `media.timestamp` for it.
    pub fn handle_caller_media(&mut self, now: Instant, mulaw: &[u8], timestamp_ms: u64) {
        self.handle_timeout(now);
        if self.finished {
            return;
        }
        let stats = &mut self.stats;
        match &mut self.codec {
            Codec::Twilio { sequence, chunk, .. } => {
                let media = media_stream::Media {
                    sequence_number: *sequence,
                    stream_sid: self.stream_sid,
                    track: media_stream::Track::Inbound,
                    chunk: *chunk,
                    timestamp_ms,
                    payload_len: mulaw.len(),
                };
                // Counters advance even when the bot is not reading, so it
                // sees the gap as Twilio's loss would show.
                *sequence += 1;
                *chunk += 1;
                let queued = self.outbox.push(Kind::Text, true, |out| {
                    media_stream::write_inbound_media(out, &media, mulaw);
                });
                count(stats, queued);
            }
            Codec::L16 { rate, uplink, up2, up3, .. } => {
                let (rate, outbox) = (*rate, &mut self.outbox);
                uplink.push(mulaw, |frame| {
                    let queued = l16::push_caller_frame(outbox, rate, up2, up3, frame);
                    count(stats, queued);
                });
            }
        }
    }

    /// The caller pressed `digit` (`0`–`9`, `*`, `#`, `A`–`D`; a lower-case
    /// letter is taken as upper case). Returns `false`, sending nothing, for
    /// any other character or after the call ended.
    pub fn handle_caller_dtmf(&mut self, now: Instant, digit: char) -> bool {
        self.handle_timeout(now);
        let digit = digit.to_ascii_uppercase();
        if self.finished || !matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D') {
            return false;
        }
        let queued = match &mut self.codec {
            Codec::Twilio { sequence, .. } => {
                twilio::push_dtmf(&mut self.outbox, sequence, self.stream_sid, digit)
            }
            Codec::L16 { .. } => l16::push_dtmf(&mut self.outbox, digit),
        };
        if !queued {
            self.stats.events_to_bot_dropped += 1;
        }
        true
    }

    /// Twilio echoed mark `name`. Returns whether it was one of this leg's
    /// marks (`vb-<n>`, even a late echo of a cleared one); if not, it is
    /// the bridge's. A played mark echoes the bot's mark (or notify), and
    /// every earlier one still waiting: Twilio plays in order.
    pub fn handle_caller_mark(&mut self, now: Instant, name: &str) -> bool {
        self.handle_timeout(now);
        let Some(id) = parse_mark_name(name) else { return false };
        if !self.queue.marks.iter().any(|m| m.id == id && m.sent) {
            return true;
        }
        while let Some(marker) = self.queue.marks.pop_front() {
            let last = marker.id == id;
            self.stats.marks_played += 1;
            self.echo(&marker, true);
            self.queue.recycle(marker);
            if last {
                break;
            }
        }
        true
    }

    /// The bridge sent Twilio a `clear` of its own (a barge-in): the leg's
    /// queued audio is dropped with it.
    pub fn handle_caller_clear(&mut self, now: Instant) {
        self.handle_timeout(now);
        self.stats.caller_clears += 1;
        self.clear();
    }

    /// The caller's stream ended: the bot gets `stop` (Twilio protocol) and a close.
    pub fn handle_caller_stop(&mut self, now: Instant) {
        self.handle_timeout(now);
        if self.finished {
            return;
        }
        if let Codec::Twilio { sequence, sids, .. } = &mut self.codec {
            twilio::push_stop(&mut self.outbox, sequence, self.stream_sid, *sids);
        }
        self.outbox.push(Kind::Close, false, |_| {});
        self.finished = true;
    }

    /// The bot closed its WebSocket (or the proxy lost it): the call ends;
    /// nothing more goes to either side.
    pub fn handle_bot_closed(&mut self, now: Instant) {
        self.handle_timeout(now);
        self.finished = true;
    }

    /// A text message from the bot. `frame` is scratch afterwards (strings
    /// are unescaped in place).
    ///
    /// # Errors
    /// Any [`BotError`]; the message was counted and dropped.
    pub fn handle_bot_text(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), BotError> {
        self.handle_timeout(now);
        let result = self.bot_text(frame);
        self.stats.bad_messages += u64::from(result.is_err());
        result
    }

    /// A binary message from the bot.
    ///
    /// # Errors
    /// Any [`BotError`]; the message was counted and dropped.
    pub fn handle_bot_binary(&mut self, now: Instant, data: &[u8]) -> Result<(), BotError> {
        self.handle_timeout(now);
        let result = self.bot_binary(data);
        self.stats.bad_messages += u64::from(result.is_err());
        result
    }

    /// The next message for the bot; it borrows the leg until the next call.
    #[must_use]
    pub fn poll_bot(&mut self) -> Option<BotMessage<'_>> {
        self.outbox.pop().map(|(kind, bytes)| match kind {
            Kind::Text => BotMessage::Text(bytes),
            Kind::Binary => BotMessage::Binary(bytes),
            Kind::Close => BotMessage::Close,
        })
    }

    /// The next thing to send to Twilio now, if any: a pending `clear`, then
    /// the bot's audio and marks as the playout lead allows.
    #[must_use]
    pub fn poll_caller(&mut self) -> Option<CallerAction<'_>> {
        if core::mem::take(&mut self.pending_clear) {
            return Some(CallerAction::Clear);
        }
        if self.finished {
            return None;
        }
        match self.queue.release(self.now, &mut self.frame)? {
            Release::Audio(len) => {
                self.stats.frames_to_caller += 1;
                Some(CallerAction::Audio(&self.frame[..len]))
            }
            Release::Mark(id) => {
                self.mark_name.clear();
                self.mark_name.push_str(MARK_PREFIX);
                // Writing into a String cannot fail.
                let _ = write!(self.mark_name, "{id}");
                Some(CallerAction::Mark(&self.mark_name))
            }
        }
    }

    /// When [`BotLeg::handle_timeout`] is next due: the next frame's release time.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished { None } else { self.queue.next_release(self.now) }
    }

    /// The leg's counters.
    #[must_use]
    pub fn stats(&self) -> BotStats {
        BotStats { bot_audio_dropped_bytes: self.queue.overflow_bytes, ..self.stats }
    }

    /// Whether the call is over for the leg (caller stop or bot close).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Bot audio waiting for Twilio, in ms.
    #[must_use]
    pub fn queued_ms(&self) -> u64 {
        self.queue.queued_bytes() as u64 / 8
    }

    /// Messages waiting for the bot.
    #[must_use]
    pub fn queued_for_bot(&self) -> usize {
        self.outbox.len()
    }

    fn bot_text(&mut self, frame: &mut [u8]) -> Result<(), BotError> {
        if self.finished {
            return Err(BotError::Finished);
        }
        if frame.len() > MAX_TEXT_BYTES {
            return Err(BotError::TooLarge { text: true, len: frame.len(), max: MAX_TEXT_BYTES });
        }
        match &mut self.codec {
            Codec::Twilio { audio, .. } => match twilio::parse(frame, audio, self.stream_sid)? {
                twilio::FromBot::Media(len) => {
                    self.stats.bot_audio_bytes += len as u64;
                    self.queue.push_audio(&audio[..len]);
                }
                twilio::FromBot::Mark(name) => self.push_mark(|t| t.push_str(name))?,
                twilio::FromBot::Clear => self.bot_clear(),
            },
            Codec::L16 { .. } => match l16::parse(frame)? {
                l16::FromBot::Clear => self.bot_clear(),
                l16::FromBot::Notify(payload) => self.push_mark(|t| t.push_str(payload))?,
            },
        }
        Ok(())
    }

    fn bot_binary(&mut self, data: &[u8]) -> Result<(), BotError> {
        if self.finished {
            return Err(BotError::Finished);
        }
        let Codec::L16 { rate, down2, down3, .. } = &mut self.codec else {
            return Err(BotError::UnexpectedBinary);
        };
        if data.len() > MAX_BINARY_BYTES {
            return Err(BotError::TooLarge { text: false, len: data.len(), max: MAX_BINARY_BYTES });
        }
        if !data.len().is_multiple_of(2) {
            return Err(BotError::OddLength { len: data.len() });
        }
        let queue = &mut self.queue;
        let bytes = l16::bot_audio(*rate, down2, down3, data, |mulaw| queue.push_audio(mulaw));
        self.stats.bot_audio_bytes += bytes as u64;
        Ok(())
    }

    fn push_mark(&mut self, fill: impl FnOnce(&mut String)) -> Result<(), BotError> {
        if !self.queue.has_mark_room() {
            return Err(BotError::TooManyMarks { max: MAX_MARKS });
        }
        self.queue.push_mark(fill);
        Ok(())
    }

    fn bot_clear(&mut self) {
        self.stats.bot_clears += 1;
        self.pending_clear = true;
        self.clear();
        if let Codec::L16 { .. } = self.codec
            && !l16::push_cleared(&mut self.outbox)
        {
            self.stats.events_to_bot_dropped += 1;
        }
    }

    /// Empties the queue as Twilio's player is cleared: every mark waiting
    /// is echoed now (Twilio protocol, as Twilio does on `clear`) or dropped
    /// (L16: a notify means "played", and this audio never will be).
    fn clear(&mut self) {
        let mut markers = core::mem::take(&mut self.queue.marks);
        self.queue.clear_audio();
        for marker in markers.drain(..) {
            self.stats.marks_cleared += 1;
            if let Codec::Twilio { .. } = self.codec {
                self.echo(&marker, false);
            }
            self.queue.recycle(marker);
        }
        // Hand the (empty) ring back so its capacity is reused.
        self.queue.marks = markers;
        if let Codec::L16 { down2, down3, .. } = &mut self.codec {
            // The next audio is a new utterance: do not smear the old one into it.
            down2.reset();
            down3.reset();
        }
    }

    /// Tells the bot a mark (or notify) is done: `played`, or cleared.
    fn echo(&mut self, marker: &Marker, played: bool) {
        let queued = match &mut self.codec {
            Codec::Twilio { sequence, .. } => {
                twilio::push_mark_echo(&mut self.outbox, sequence, self.stream_sid, &marker.text)
            }
            Codec::L16 { .. } => played && l16::push_notify(&mut self.outbox, &marker.text),
        };
        if !queued && played {
            self.stats.events_to_bot_dropped += 1;
        }
    }
}

fn count(stats: &mut BotStats, queued: bool) {
    if queued {
        stats.frames_to_bot += 1;
    } else {
        stats.frames_to_bot_dropped += 1;
    }
}

/// The id of a mark named `vb-<id>`, or `None` for any other name.
#[must_use]
pub fn parse_mark_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(MARK_PREFIX)?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
