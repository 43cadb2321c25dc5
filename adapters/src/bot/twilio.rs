//! `protocol = "twilio"`: the bot sees Twilio's own messages, written by the
//! simulator-side writers of [`media_stream`], and sends Twilio's outbound
//! messages, read by [`media_stream::parse_outbound`].

use super::outbox::{Kind, Outbox};
use super::{BotError, CallInfo};
use crate::media_stream::{
    self, AccountSid, CallSid, Connected, Dtmf, Excerpt, MediaFormat, Outbound, Start, Stop, StreamSid, Track,
};

/// What Twilio sends in `connected`.
const CONNECTED: Connected<'static> = Connected { protocol: Some("Call"), version: Some("1.0.0") };

/// Queues `connected` and `start` (sequence number 1). Runs once per call
/// (it clones the call's strings into a [`Start`]).
pub(crate) fn open(outbox: &mut Outbox, info: &CallInfo) {
    outbox.push(Kind::Text, false, |out| media_stream::write_connected(out, &CONNECTED));
    let start = Start {
        sequence_number: 1,
        stream_sid: info.stream_sid,
        account_sid: info.account_sid,
        call_sid: info.call_sid,
        tracks: info.tracks,
        media_format: MediaFormat::mulaw_8k_mono(),
        custom_parameters: info.custom_parameters.clone(),
    };
    outbox.push(Kind::Text, false, |out| media_stream::write_start(out, &start));
}

fn next(sequence: &mut u64) -> u64 {
    let n = *sequence;
    *sequence += 1;
    n
}

/// Queues a `dtmf` event; `false` if the bot is too far behind.
pub(crate) fn push_dtmf(outbox: &mut Outbox, sequence: &mut u64, stream_sid: StreamSid, digit: char) -> bool {
    let dtmf = Dtmf { sequence_number: next(sequence), stream_sid, track: Track::Inbound, digit };
    outbox.push(Kind::Text, false, |out| media_stream::write_dtmf(out, &dtmf))
}

/// Queues the `mark` echo Twilio would send for the bot's mark `name`.
pub(crate) fn push_mark_echo(
    outbox: &mut Outbox,
    sequence: &mut u64,
    stream_sid: StreamSid,
    name: &str,
) -> bool {
    let mark = media_stream::Mark { sequence_number: next(sequence), stream_sid, name };
    outbox.push(Kind::Text, false, |out| media_stream::write_inbound_mark(out, &mark))
}

/// Queues `stop`, with the call's SIDs as Twilio sends them.
pub(crate) fn push_stop(
    outbox: &mut Outbox,
    sequence: &mut u64,
    stream_sid: StreamSid,
    sids: (AccountSid, CallSid),
) -> bool {
    let (account_sid, call_sid) = sids;
    let stop = Stop { sequence_number: next(sequence), stream_sid, account_sid, call_sid };
    outbox.push(Kind::Text, false, |out| media_stream::write_stop(out, &stop))
}

/// A message from a Twilio-protocol bot.
pub(crate) enum FromBot<'f> {
    /// This many bytes of μ-law, at the front of the audio buffer.
    Media(usize),
    /// A mark to echo once the audio before it has played.
    Mark(&'f str),
    /// Drop the queued audio.
    Clear,
}

/// Reads one text message from the bot, decoding `media` into `audio`.
pub(crate) fn parse<'f>(
    frame: &'f mut [u8],
    audio: &mut [u8],
    ours: StreamSid,
) -> Result<FromBot<'f>, BotError> {
    let (sid, message) = match media_stream::parse_outbound(frame, audio)? {
        Outbound::Media { stream_sid, payload_len } => (stream_sid, FromBot::Media(payload_len)),
        Outbound::Mark { stream_sid, name } => (stream_sid, FromBot::Mark(name)),
        Outbound::Clear { stream_sid } => (stream_sid, FromBot::Clear),
        Outbound::Unknown { event } => return Err(BotError::UnknownEvent { event: Excerpt::new(event) }),
    };
    if sid != ours {
        return Err(BotError::StreamSidMismatch);
    }
    Ok(message)
}
