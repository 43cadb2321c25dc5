//! `protocol = "l16"`: Vonage's WebSocket audio protocol.
//!
//! To the bot: `{"event":"websocket:connected","content-type":"audio/l16;rate=R",…}`
//! first (the call's metadata and custom parameters as extra top-level
//! fields, as Vonage passes an NCCO's `headers`), then binary 20 ms frames of
//! little-endian 16-bit mono PCM at rate R; `{"event":"websocket:dtmf","digit":"5"}`
//! for caller DTMF (without Vonage's `duration`: Twilio does not report one),
//! `{"event":"websocket:cleared"}` after a `clear`, and
//! `{"event":"websocket:notify","payload":…}` when a notify's audio has played.
//!
//! From the bot: binary PCM at rate R, any whole number of samples per
//! message; text `{"action":"clear"}` and `{"action":"notify","payload":…}`
//! (other keys ignored; the payload, any JSON value, is echoed byte for byte).

use voxproxy_core::g711;
use voxproxy_core::resample::{Downsampler, Upsampler};
use voxproxy_core::resample3::{Downsampler3, Upsampler3};

use super::outbox::{Kind, Outbox};
use super::{BotError, CallInfo, FRAME_BYTES, L16Rate, MAX_NOTIFY_PAYLOAD};
use crate::media_stream::json::{Scanner, syntax};
use crate::media_stream::{Excerpt, SyntaxError, push_string};

/// Keys of `websocket:connected` the leg writes itself; custom parameters
/// with these names are left out rather than written twice.
const RESERVED: [&str; 7] = ["event", "content-type", "callSid", "accountSid", "streamSid", "from", "to"];

/// Queues `websocket:connected`.
pub(crate) fn open(outbox: &mut Outbox, rate: L16Rate, info: &CallInfo) {
    outbox.push(Kind::Text, false, |out| {
        out.extend_from_slice(br#"{"event":"websocket:connected","content-type":"audio/l16;rate="#);
        out.extend_from_slice(rate_text(rate));
        out.push(b'"');
        let fields = [
            ("callSid", info.call_sid.as_str()),
            ("accountSid", info.account_sid.as_str()),
            ("streamSid", info.stream_sid.as_str()),
            ("from", info.from.as_str()),
            ("to", info.to.as_str()),
        ];
        let custom = info
            .custom_parameters
            .iter()
            .filter(|(name, _)| !RESERVED.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str(), value.as_str()));
        for (name, value) in fields.into_iter().chain(custom) {
            out.push(b',');
            push_string(out, name);
            out.push(b':');
            push_string(out, value);
        }
        out.push(b'}');
    });
}

fn rate_text(rate: L16Rate) -> &'static [u8] {
    match rate {
        L16Rate::Hz8000 => b"8000",
        L16Rate::Hz16000 => b"16000",
        L16Rate::Hz24000 => b"24000",
    }
}

/// Converts one 20 ms frame of caller μ-law to PCM at `rate` and queues it
/// as a binary message; `false` if the bot is too far behind. The
/// resamplers run either way, so their state follows the caller's time.
pub(crate) fn push_caller_frame(
    outbox: &mut Outbox,
    rate: L16Rate,
    up2: &mut Upsampler,
    up3: &mut Upsampler3,
    frame: &[u8; FRAME_BYTES],
) -> bool {
    let mut narrow = [0i16; FRAME_BYTES];
    for (s, &code) in narrow.iter_mut().zip(frame) {
        *s = g711::ulaw_decode(code);
    }
    let mut wide = [0i16; 3 * FRAME_BYTES];
    // The buffers are sized for the largest factor, so neither call can fail.
    let len = match rate {
        L16Rate::Hz8000 => {
            wide[..FRAME_BYTES].copy_from_slice(&narrow);
            FRAME_BYTES
        }
        L16Rate::Hz16000 => up2.upsample(&narrow, &mut wide).unwrap_or(0),
        L16Rate::Hz24000 => up3.upsample(&narrow, &mut wide).unwrap_or(0),
    };
    outbox.push(Kind::Binary, true, |out| {
        out.reserve(2 * len);
        for s in &wide[..len] {
            out.extend_from_slice(&s.to_le_bytes());
        }
    })
}

/// Converts the bot's PCM at `rate` to μ-law at 8 kHz, handing it to `sink`
/// block by block; returns the μ-law bytes produced. `data` holds a whole
/// number of samples (checked by the caller).
pub(crate) fn bot_audio(
    rate: L16Rate,
    down2: &mut Downsampler,
    down3: &mut Downsampler3,
    data: &[u8],
    mut sink: impl FnMut(&[u8]),
) -> usize {
    // One block is 20 ms at the bot's rate at most.
    let mut wide = [0i16; 3 * FRAME_BYTES];
    let mut narrow = [0i16; FRAME_BYTES];
    let mut mulaw = [0u8; FRAME_BYTES];
    let mut produced = 0;
    for block in data.chunks(2 * rate.factor() * FRAME_BYTES) {
        let wide = &mut wide[..block.len() / 2];
        for (s, pair) in wide.iter_mut().zip(block.chunks_exact(2)) {
            *s = i16::from_le_bytes([pair[0], pair[1]]);
        }
        // A block of 20 ms at the bot's rate yields at most 160 samples
        // (161 never: the output count rounds up only a partial triple/pair
        // that a full block does not have), so these cannot fail.
        let len = match rate {
            L16Rate::Hz8000 => {
                narrow[..wide.len()].copy_from_slice(wide);
                wide.len()
            }
            L16Rate::Hz16000 => down2.downsample(wide, &mut narrow).unwrap_or(0),
            L16Rate::Hz24000 => down3.downsample(wide, &mut narrow).unwrap_or(0),
        };
        for (code, &s) in mulaw.iter_mut().zip(&narrow[..len]) {
            *code = g711::ulaw_encode(s);
        }
        sink(&mulaw[..len]);
        produced += len;
    }
    produced
}

/// Queues `websocket:dtmf`.
pub(crate) fn push_dtmf(outbox: &mut Outbox, digit: char) -> bool {
    outbox.push(Kind::Text, false, |out| {
        out.extend_from_slice(br#"{"event":"websocket:dtmf","digit":"#);
        let mut utf8 = [0u8; 4];
        push_string(out, digit.encode_utf8(&mut utf8));
        out.push(b'}');
    })
}

/// Queues `websocket:cleared`.
pub(crate) fn push_cleared(outbox: &mut Outbox) -> bool {
    outbox.push(Kind::Text, false, |out| out.extend_from_slice(br#"{"event":"websocket:cleared"}"#))
}

/// Queues `websocket:notify` with `payload` (raw JSON, or empty for none).
pub(crate) fn push_notify(outbox: &mut Outbox, payload: &str) -> bool {
    outbox.push(Kind::Text, false, |out| {
        out.extend_from_slice(br#"{"event":"websocket:notify""#);
        if !payload.is_empty() {
            out.extend_from_slice(br#","payload":"#);
            out.extend_from_slice(payload.as_bytes());
        }
        out.push(b'}');
    })
}

/// A text message from an L16 bot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromBot<'f> {
    /// `{"action":"clear"}`.
    Clear,
    /// `{"action":"notify","payload":…}`: the payload's JSON text (empty when absent).
    Notify(&'f str),
}

/// Reads one text message: an object with a string `action` and, for
/// `notify`, any JSON `payload`; other keys are validated and ignored.
pub(crate) fn parse(frame: &mut [u8]) -> Result<FromBot<'_>, BotError> {
    let mut s = Scanner::new(frame);
    s.eat(b'{')?;
    let mut first = true;
    let (mut action, mut payload) = (None, None);
    while let Some(key) = s.next_key(&mut first)? {
        let is_action = s.bytes(key.clone()) == b"action";
        let is_payload = s.bytes(key) == b"payload";
        let duplicate = (is_action && action.is_some()) || (is_payload && payload.is_some());
        if duplicate {
            return Err(BotError::DuplicateKey { key: if is_action { "action" } else { "payload" } });
        }
        if is_action {
            if s.byte() != Some(b'"') {
                return Err(BotError::ActionNotAString);
            }
            action = Some(s.string()?);
        } else if is_payload {
            let start = s.pos();
            s.skip_value(1)?;
            payload = Some(start..s.pos());
        } else {
            s.skip_value(1)?;
        }
    }
    s.end()?;
    let frame = s.into_frame();
    let action = action.map(|r| &frame[r]).ok_or(BotError::MissingAction)?;
    match action {
        b"clear" => Ok(FromBot::Clear),
        b"notify" => {
            let payload = payload.map_or(&[][..], |r| &frame[r]);
            if payload.len() > MAX_NOTIFY_PAYLOAD {
                return Err(BotError::PayloadTooLarge { len: payload.len(), max: MAX_NOTIFY_PAYLOAD });
            }
            // The scanner validated the payload's strings as UTF-8 and
            // everything else in JSON is ASCII, so this holds; checked anyway.
            let text = core::str::from_utf8(payload).map_err(|_| syntax(0, SyntaxError::InvalidUtf8))?;
            Ok(FromBot::Notify(text))
        }
        other => Err(BotError::UnknownAction { action: Excerpt::from_bytes(other) }),
    }
}
