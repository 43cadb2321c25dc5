//! Writing a capture: records appended to a buffer the caller owns and
//! takes away in batches, within a byte budget.

use std::net::SocketAddr;

use voxproxy_core::Instant;

use super::format::LegKind;
use super::format::{
    BotStart, CaptureHeader, FORMAT_VERSION, MAGIC, RECORD_HEAD, Truncation, codec_code, digest,
    end_reason_code, event_code, kind, put_addr, put_bot_start, put_u16, put_u32, put_u64,
};
use super::header::{encode_header, encode_sip_start, leg_code};
use super::redact;
use crate::bot::BotMessage;
use crate::bot_call::TwilioOutput;
use crate::bridge::{BackendCodec, EndReason, Output};
use crate::sip::{CallInfo, SipLegConfig, Transmit};

/// The bytes of a `Truncated` and an `End` record: kept free under the
/// budget so both marks always fit.
const RESERVED: u64 = (RECORD_HEAD + 1 + RECORD_HEAD + 8) as u64;

/// Appends one call's capture to a buffer; see the [module docs](super).
///
/// Every method is a no-op once the capture has stopped (budget spent, or
/// [`Encoder::stop`]). Nothing here allocates in the steady state: the
/// buffer grows to the caller's batch size once and is reused after each
/// [`Encoder::take_into`].
#[derive(Debug)]
pub struct Encoder {
    buf: Vec<u8>,
    /// Bytes already taken away by the caller.
    taken: u64,
    max_bytes: u64,
    stopped: bool,
    /// Whether the end mark is written.
    ended: bool,
    /// The last deadline recorded, so an unchanged one costs nothing.
    deadline: Option<Option<Instant>>,
    /// A SIP message being redacted.
    scratch: Vec<u8>,
    /// Where the header's leg byte is, while it is still in `buf`.
    leg_at: usize,
}

impl Encoder {
    /// Starts a capture of at most `max_bytes` (at least the header's
    /// size): the prelude and the header go first.
    #[must_use]
    pub fn new(header: &CaptureHeader, max_bytes: u64, batch_capacity: usize) -> Encoder {
        let mut buf = Vec::with_capacity(batch_capacity.max(512));
        buf.extend_from_slice(&MAGIC);
        put_u16(&mut buf, FORMAT_VERSION);
        let start = begin(&mut buf, kind::HEADER);
        let leg_at = encode_header(&mut buf, header);
        end(&mut buf, start);
        let max_bytes = max_bytes.max(buf.len() as u64 + RESERVED);
        Encoder {
            buf,
            taken: 0,
            max_bytes,
            stopped: false,
            ended: false,
            deadline: None,
            scratch: Vec::new(),
            leg_at,
        }
    }

    /// Sets the header's leg, known only once the call has started; no
    /// effect once the header has been taken.
    pub fn set_leg(&mut self, leg: LegKind) {
        if self.taken == 0 {
            self.buf[self.leg_at] = leg_code(leg);
        }
    }

    /// Whether the capture has stopped (and why nothing more is recorded).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Bytes waiting to be taken.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Bytes written so far, taken or not.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.taken + self.buf.len() as u64
    }

    /// Moves the waiting bytes to the end of `out`.
    pub fn take_into(&mut self, out: &mut Vec<u8>) {
        self.taken += self.buf.len() as u64;
        out.extend_from_slice(&self.buf);
        self.buf.clear();
    }

    /// Drops the waiting bytes (the caller could not write them) and
    /// stops with a mark: what follows the loss could not be replayed.
    pub fn drop_pending_and_stop(&mut self, why: Truncation) {
        self.buf.clear();
        self.stop(why);
    }

    /// Stops the capture here with a `Truncated` mark.
    pub fn stop(&mut self, why: Truncation) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.buf.push(kind::TRUNCATED);
        put_u32(&mut self.buf, 1);
        self.buf.push(why.code());
    }

    /// The call is over: an `End` mark (also after a truncation: the file
    /// is whole, if short), then nothing more.
    pub fn end(&mut self, now: Instant) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.stopped = true;
        let start = begin(&mut self.buf, kind::END);
        put_u64(&mut self.buf, now.as_nanos());
        end(&mut self.buf, start);
    }

    /// A text frame from Twilio as received (the stream token redacted),
    /// handed to the bridge after `handle_twilio_activity`.
    pub fn twilio_text(&mut self, now: Instant, frame: &[u8]) {
        let Some(start) = self.begin_timed(kind::TWILIO_TEXT, now) else { return };
        let at = self.buf.len();
        self.buf.extend_from_slice(frame);
        redact::stream_token(&mut self.buf[at..]);
        self.finish(start);
    }

    /// A binary frame from Twilio (the bridge sees an empty text frame).
    pub fn twilio_binary(&mut self, now: Instant) {
        self.timed(kind::TWILIO_BINARY, now);
    }

    /// Any other WebSocket message from Twilio (`handle_twilio_activity` only).
    pub fn twilio_activity(&mut self, now: Instant) {
        self.timed(kind::TWILIO_ACTIVITY, now);
    }

    /// `handle_close`.
    pub fn close(&mut self, now: Instant, reason: EndReason) {
        let Some(start) = self.begin_timed(kind::CLOSE, now) else { return };
        self.buf.push(end_reason_code(reason));
        self.finish(start);
    }

    /// A datagram on the call's RTP socket.
    pub fn rtp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(start) = self.begin_timed(kind::RTP, now) else { return };
        put_addr(&mut self.buf, Some(from));
        self.buf.extend_from_slice(datagram);
        self.finish(start);
    }

    /// `handle_timeout` of the bridge.
    pub fn timeout(&mut self, now: Instant) {
        self.timed(kind::TIMEOUT, now);
    }

    /// `set_backend`.
    pub fn set_backend(&mut self, now: Instant, backend: Option<SocketAddr>) {
        let Some(start) = self.begin_timed(kind::SET_BACKEND, now) else { return };
        put_addr(&mut self.buf, backend);
        self.finish(start);
    }

    /// `set_media`.
    pub fn set_media(&mut self, now: Instant, codec: BackendCodec, payload_type: u8, dtmf_payload_type: u8) {
        let Some(start) = self.begin_timed(kind::SET_MEDIA, now) else { return };
        self.buf.extend_from_slice(&[codec_code(codec), payload_type, dtmf_payload_type]);
        self.finish(start);
    }

    /// `SipBackend::new` with this configuration (credentials left out).
    pub fn sip_start(&mut self, now: Instant, config: &SipLegConfig, info: &CallInfo) {
        let Some(start) = self.begin_timed(kind::SIP_START, now) else { return };
        encode_sip_start(&mut self.buf, config, info);
        self.finish(start);
    }

    /// A SIP datagram from `from` (credentials redacted).
    pub fn sip_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(start) = self.begin_timed(kind::SIP_DATAGRAM, now) else { return };
        put_addr(&mut self.buf, Some(from));
        let at = self.buf.len();
        self.buf.extend_from_slice(bytes);
        redact::sip_credentials(&mut self.buf[at..]);
        self.finish(start);
    }

    /// SIP bytes from the TCP connection (credentials redacted where a
    /// whole header line is in this read).
    pub fn sip_stream(&mut self, now: Instant, bytes: &[u8]) {
        let Some(start) = self.begin_timed(kind::SIP_STREAM, now) else { return };
        let at = self.buf.len();
        self.buf.extend_from_slice(bytes);
        redact::sip_credentials(&mut self.buf[at..]);
        self.finish(start);
    }

    /// `SipBackend::handle_timeout`.
    pub fn sip_timeout(&mut self, now: Instant) {
        self.timed(kind::SIP_TIMEOUT, now);
    }

    /// `SipBackend::hangup`.
    pub fn sip_hangup(&mut self, now: Instant) {
        self.timed(kind::SIP_HANGUP, now);
    }

    /// `SipBackend::drive` while the leg had events for the bridge.
    pub fn sip_drive(&mut self, now: Instant) {
        self.timed(kind::SIP_DRIVE, now);
    }

    /// One output of the bridge, as the proxy polled it.
    pub fn output(&mut self, output: &Output<'_>) {
        match *output {
            Output::Twilio(bytes) => self.digested(kind::OUT_TWILIO, bytes),
            Output::Rtp(bytes) => self.digested(kind::OUT_RTP, bytes),
            Output::Ping => {
                if let Some(start) = self.begin(kind::OUT_PING) {
                    self.finish(start);
                }
            }
            Output::Event(event) => {
                let Some(start) = self.begin(kind::OUT_EVENT) else { return };
                let (code, value) = event_code(event);
                self.buf.push(code);
                put_u64(&mut self.buf, value);
                self.finish(start);
            }
            Output::Close { code, reason } => {
                let Some(start) = self.begin(kind::OUT_CLOSE) else { return };
                put_u16(&mut self.buf, code);
                self.buf.extend_from_slice(reason.as_bytes());
                self.finish(start);
            }
        }
    }

    /// `BotCall::new` with these settings.
    pub fn bot_start(&mut self, now: Instant, start: &BotStart) {
        let Some(begun) = self.begin_timed(kind::BOT_START, now) else { return };
        put_bot_start(&mut self.buf, start);
        self.finish(begun);
    }

    /// A text message from the bot, as received.
    pub fn bot_text(&mut self, now: Instant, frame: &[u8]) {
        let Some(start) = self.begin_timed(kind::BOT_TEXT, now) else { return };
        self.buf.extend_from_slice(frame);
        self.finish(start);
    }

    /// A binary message from the bot, as received.
    pub fn bot_binary(&mut self, now: Instant, data: &[u8]) {
        let Some(start) = self.begin_timed(kind::BOT_BINARY, now) else { return };
        self.buf.extend_from_slice(data);
        self.finish(start);
    }

    /// `BotCall::handle_bot_closed`.
    pub fn bot_closed(&mut self, now: Instant) {
        self.timed(kind::BOT_CLOSED, now);
    }

    /// `BotCall::handle_bot_failed`.
    pub fn bot_failed(&mut self, now: Instant) {
        self.timed(kind::BOT_FAILED, now);
    }

    /// One output of `BotCall::poll_twilio`, kept as the bridge's own
    /// outputs are.
    pub fn twilio_output(&mut self, output: &TwilioOutput<'_>) {
        self.output(&match *output {
            TwilioOutput::Text(bytes) => Output::Twilio(bytes),
            TwilioOutput::Ping => Output::Ping,
            TwilioOutput::Event(event) => Output::Event(event),
            TwilioOutput::Close { code, reason } => Output::Close { code, reason },
        });
    }

    /// One output of `BotCall::poll_bot`.
    pub fn bot_output(&mut self, message: &BotMessage<'_>) {
        match *message {
            BotMessage::Text(bytes) => self.digested(kind::OUT_BOT_TEXT, bytes),
            BotMessage::Binary(bytes) => self.digested(kind::OUT_BOT_BINARY, bytes),
            BotMessage::Close => {
                if let Some(start) = self.begin(kind::OUT_BOT_CLOSE) {
                    self.finish(start);
                }
            }
        }
    }

    /// One SIP message the leg sent.
    pub fn sip_output(&mut self, transmit: &Transmit) {
        if self.stopped {
            return;
        }
        let mut scratch = core::mem::take(&mut self.scratch);
        let (len, digest) = redact::transmit_digest(transmit, &mut scratch);
        self.scratch = scratch;
        let Some(start) = self.begin(kind::OUT_SIP) else { return };
        put_u32(&mut self.buf, len);
        put_u64(&mut self.buf, digest);
        self.finish(start);
    }

    /// The machine's next deadline, recorded when it changed.
    pub fn deadline(&mut self, at: Option<Instant>) {
        if self.deadline == Some(at) {
            return;
        }
        let Some(start) = self.begin(kind::OUT_DEADLINE) else { return };
        self.deadline = Some(at);
        match at {
            Some(at) => {
                self.buf.push(1);
                put_u64(&mut self.buf, at.as_nanos());
            }
            None => self.buf.push(0),
        }
        self.finish(start);
    }

    fn digested(&mut self, kind: u8, bytes: &[u8]) {
        let Some(start) = self.begin(kind) else { return };
        put_u32(&mut self.buf, u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        put_u64(&mut self.buf, digest(bytes));
        self.finish(start);
    }

    fn timed(&mut self, kind: u8, now: Instant) {
        if let Some(start) = self.begin_timed(kind, now) {
            self.finish(start);
        }
    }

    fn begin(&mut self, kind: u8) -> Option<usize> {
        (!self.stopped).then(|| begin(&mut self.buf, kind))
    }

    fn begin_timed(&mut self, kind: u8, now: Instant) -> Option<usize> {
        let start = self.begin(kind)?;
        put_u64(&mut self.buf, now.as_nanos());
        Some(start)
    }

    /// Closes the record begun at `start`, or takes it back and stops when
    /// it would pass the budget (or is longer than any record may be).
    fn finish(&mut self, start: usize) {
        let body = self.buf.len() - start - RECORD_HEAD;
        let over_budget = self.total() + RESERVED > self.max_bytes;
        if over_budget || body > super::MAX_RECORD_BYTES {
            self.buf.truncate(start);
            self.stop(Truncation::SizeLimit);
            return;
        }
        end(&mut self.buf, start);
    }
}

/// Starts a record: its kind and a length patched by [`end`].
fn begin(buf: &mut Vec<u8>, kind: u8) -> usize {
    let start = buf.len();
    buf.push(kind);
    put_u32(buf, 0);
    start
}

fn end(buf: &mut [u8], start: usize) {
    let len = u32::try_from(buf.len() - start - RECORD_HEAD).unwrap_or(u32::MAX);
    buf[start + 1..start + RECORD_HEAD].copy_from_slice(&len.to_le_bytes());
}
