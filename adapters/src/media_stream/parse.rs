//! Reading frames in both directions.
//!
//! One pass when `event` comes first, as Twilio sends it: every value this
//! event uses is read where it stands (the payload decoded as it is
//! scanned), everything else is validated as JSON and skipped. When `event`
//! comes later, the values before it are skipped with their positions noted,
//! and read once the event is known. Either way unknown keys, and known keys
//! that belong to other events, are validated but otherwise ignored.

use core::ops::{Range, RangeInclusive};

use voxproxy_core::g711::{self, Law};

use super::base64::{self, Base64Error};
use super::error::{Excerpt, Field, MessageError};
use super::json::{Scanner, find_special};
use super::sid::{AccountSid, CallSid, SidError, StreamSid};
use super::{
    Connected, Dtmf, Inbound, MAX_CONNECTED_FIELD_LEN, MAX_CUSTOM_PARAMETERS, MAX_ENCODING_LEN,
    MAX_EVENT_LEN, MAX_MARK_NAME_LEN, MAX_PARAMETER_NAME_LEN, MAX_PARAMETER_VALUE_LEN, MAX_TRACKS, Mark,
    Media, MediaFormat, Outbound, Start, Stop, Track, Tracks,
};

/// Parses one text frame from Twilio.
///
/// For `media` the payload is decoded into the start of `audio`
/// ([`Media::payload_len`] bytes); strings in the result borrow from `frame`,
/// whose escaped strings are rewritten in place. Allocates only for `start`.
///
/// # Errors
/// [`MessageError`] when the frame is not JSON, not an object, or a field this
/// event needs is absent or invalid, or the payload does not fit `audio`. An
/// unknown `event` is not an error: it yields [`Inbound::Unknown`].
pub fn parse_inbound<'f>(frame: &'f mut [u8], audio: &mut [u8]) -> Result<Inbound<'f>, MessageError> {
    if let Some(media) = twilio_media(frame, audio) {
        return Ok(Inbound::Media(media));
    }
    let mut s = Scanner::new(frame);
    let (kind, event, v) = read_message(&mut s, Direction::Inbound, audio)?;
    Ok(match kind {
        Kind::Media => {
            let MediaBody { track, chunk, timestamp_ms, payload_len } =
                v.media.ok_or(missing(Field::Media))?;
            Inbound::Media(Media {
                sequence_number: v.sequence_number.ok_or(missing(Field::SequenceNumber))?,
                stream_sid: v.stream_sid.ok_or(missing(Field::StreamSid))?,
                track: track.ok_or(missing(Field::MediaTrack))?,
                chunk: chunk.ok_or(missing(Field::MediaChunk))?,
                timestamp_ms: timestamp_ms.ok_or(missing(Field::MediaTimestamp))?,
                payload_len,
            })
        }
        Kind::Dtmf => {
            let (track, digit) = v.dtmf.ok_or(missing(Field::Dtmf))?;
            Inbound::Dtmf(Dtmf {
                sequence_number: v.sequence_number.ok_or(missing(Field::SequenceNumber))?,
                stream_sid: v.stream_sid.ok_or(missing(Field::StreamSid))?,
                track,
                digit,
            })
        }
        Kind::Mark => {
            let sequence_number = v.sequence_number.ok_or(missing(Field::SequenceNumber))?;
            let stream_sid = v.stream_sid.ok_or(missing(Field::StreamSid))?;
            let name = v.mark.ok_or(missing(Field::Mark))?;
            Inbound::Mark(Mark { sequence_number, stream_sid, name: text_at(s.into_frame(), name)? })
        }
        Kind::Stop => {
            let (account_sid, call_sid) = v.stop.ok_or(missing(Field::Stop))?;
            Inbound::Stop(Stop {
                sequence_number: v.sequence_number.ok_or(missing(Field::SequenceNumber))?,
                stream_sid: v.stream_sid.ok_or(missing(Field::StreamSid))?,
                account_sid,
                call_sid,
            })
        }
        Kind::Start => {
            let sequence_number = v.sequence_number.ok_or(missing(Field::SequenceNumber))?;
            let body = v.start.ok_or(missing(Field::Start))?;
            let stream_sid = match (body.stream_sid, v.stream_sid) {
                (Some(inner), Some(outer)) if inner != outer => return Err(MessageError::StreamSidMismatch),
                (Some(sid), _) | (None, Some(sid)) => sid,
                (None, None) => return Err(missing(Field::StartStreamSid)),
            };
            Inbound::Start(Box::new(Start {
                sequence_number,
                stream_sid,
                account_sid: body.account_sid.ok_or(missing(Field::StartAccountSid))?,
                call_sid: body.call_sid.ok_or(missing(Field::StartCallSid))?,
                tracks: body.tracks.ok_or(missing(Field::StartTracks))?,
                media_format: body.media_format.ok_or(missing(Field::MediaFormat))?,
                custom_parameters: body.custom_parameters.unwrap_or_default(),
            }))
        }
        Kind::Connected => {
            let frame = s.into_frame();
            Inbound::Connected(Connected {
                protocol: v.protocol.map(|r| text_at(frame, r)).transpose()?,
                version: v.version.map(|r| text_at(frame, r)).transpose()?,
            })
        }
        Kind::Clear | Kind::Unknown => Inbound::Unknown { event: text_at(s.into_frame(), event)? },
    })
}

/// [`parse_inbound`], and for `media` also the audio as 16-bit linear PCM:
/// the payload's μ-law lands in `mulaw` and its expansion (G.711, one sample
/// per byte) in `pcm`, both [`Media::payload_len`] long. The bridge wants
/// both: μ-law to relay untouched to a PCMU backend, PCM for voice activity
/// detection. Allocates only for `start`.
///
/// # Errors
/// As [`parse_inbound`]; [`MessageError::AudioBufferTooSmall`] also when
/// `pcm` is shorter than the payload.
pub fn parse_inbound_pcm16<'f>(
    frame: &'f mut [u8],
    mulaw: &mut [u8],
    pcm: &mut [i16],
) -> Result<Inbound<'f>, MessageError> {
    let event = parse_inbound(frame, mulaw)?;
    if let Inbound::Media(media) = &event {
        let codes = mulaw.get(..media.payload_len).unwrap_or_default();
        g711::decode(Law::Mu, codes, pcm).map_err(|_| MessageError::AudioBufferTooSmall {
            needed: media.payload_len,
            capacity: pcm.len(),
        })?;
    }
    Ok(event)
}

/// Parses one text frame sent to Twilio (what [`write_media`](super::write_media),
/// [`write_mark`](super::write_mark) and [`write_clear`](super::write_clear)
/// write), with the same rules as [`parse_inbound`]. Never allocates.
///
/// # Errors
/// As [`parse_inbound`]; an unknown `event` yields [`Outbound::Unknown`].
pub fn parse_outbound<'f>(frame: &'f mut [u8], audio: &mut [u8]) -> Result<Outbound<'f>, MessageError> {
    let mut s = Scanner::new(frame);
    let (kind, event, v) = read_message(&mut s, Direction::Outbound, audio)?;
    Ok(match kind {
        Kind::Media => {
            let stream_sid = v.stream_sid.ok_or(missing(Field::StreamSid))?;
            let payload_len = v.media.ok_or(missing(Field::Media))?.payload_len;
            Outbound::Media { stream_sid, payload_len }
        }
        Kind::Mark => {
            let stream_sid = v.stream_sid.ok_or(missing(Field::StreamSid))?;
            let name = v.mark.ok_or(missing(Field::Mark))?;
            Outbound::Mark { stream_sid, name: text_at(s.into_frame(), name)? }
        }
        Kind::Clear => Outbound::Clear { stream_sid: v.stream_sid.ok_or(missing(Field::StreamSid))? },
        _ => Outbound::Unknown { event: text_at(s.into_frame(), event)? },
    })
}

/// The fast path for the one frame that matters for speed: a `media` event
/// laid out exactly as Twilio writes it, byte for byte, with no escapes and
/// no whitespace inside. Such a frame is matched literally, its payload
/// decoded on the way. Anything else, including every frame with an error,
/// returns `None` and goes to the general parser, which would have read a
/// matching frame to the same values (a property the tests and the fuzz
/// target check by parsing each frame with and without a leading space). It
/// never writes to the frame, so falling back is always safe.
fn twilio_media(frame: &[u8], audio: &mut [u8]) -> Option<Media> {
    let rest = frame.strip_prefix(br#"{"event":"media","sequenceNumber":""#)?;
    let (sequence_number, rest) = quoted_digits(rest)?;
    let rest = rest.strip_prefix(br#","media":{"track":""#)?;
    let (track, rest) = if let Some(rest) = rest.strip_prefix(br#"inbound""#) {
        (Track::Inbound, rest)
    } else {
        (Track::Outbound, rest.strip_prefix(br#"outbound""#)?)
    };
    let rest = rest.strip_prefix(br#","chunk":""#)?;
    let (chunk, rest) = quoted_digits(rest)?;
    let rest = rest.strip_prefix(br#","timestamp":""#)?;
    let (timestamp_ms, rest) = quoted_digits(rest)?;
    let rest = rest.strip_prefix(br#","payload":""#)?;
    let (consumed, written) = base64::decode_prefix(rest, audio);
    // Only padding and at most one group can be left before the quote; an
    // escape or anything else outside the alphabet fails `decode`.
    let (tail, rest) = rest.get(consumed..)?.split_once_quote()?;
    let payload_len = written + base64::decode(tail, audio.get_mut(written..)?).ok()?;
    let rest = rest.strip_prefix(br#"},"streamSid":""#)?;
    let (sid, rest) = rest.split_once_quote()?;
    // A valid SID has no quote, backslash or control character, hence no escapes.
    let stream_sid = StreamSid::from_bytes(sid).ok()?;
    let rest = rest.strip_prefix(b"}")?;
    rest.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).then_some(Media {
        sequence_number,
        stream_sid,
        track,
        chunk,
        timestamp_ms,
        payload_len,
    })
}

/// Digits up to a closing quote, as the general parser reads a string of digits.
fn quoted_digits(text: &[u8]) -> Option<(u64, &[u8])> {
    let (digits_text, rest) = text.split_once_quote()?;
    Some((digits(digits_text)?, rest))
}

trait SplitOnceQuote {
    /// The bytes before the first `"` and those after it, if no backslash,
    /// control character or non-ASCII byte comes first.
    fn split_once_quote(&self) -> Option<(&[u8], &[u8])>;
}

impl SplitOnceQuote for [u8] {
    fn split_once_quote(&self) -> Option<(&[u8], &[u8])> {
        let mut at = find_special(self, 0);
        // `find_special` leaves the last few bytes to the caller.
        while let Some(&b) = self.get(at) {
            match b {
                b'"' => return Some((self.get(..at)?, self.get(at + 1..)?)),
                b'\\' | ..0x20 | 0x80.. => return None,
                _ => at += 1,
            }
        }
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Twilio → us.
    Inbound,
    /// Us → Twilio.
    Outbound,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connected,
    Start,
    Media,
    Dtmf,
    Mark,
    Stop,
    Clear,
    Unknown,
}

impl Kind {
    fn of(event: &[u8], direction: Direction) -> Kind {
        match (direction, event) {
            (Direction::Inbound, b"media") | (Direction::Outbound, b"media") => Kind::Media,
            (Direction::Inbound, b"mark") | (Direction::Outbound, b"mark") => Kind::Mark,
            (Direction::Inbound, b"connected") => Kind::Connected,
            (Direction::Inbound, b"start") => Kind::Start,
            (Direction::Inbound, b"dtmf") => Kind::Dtmf,
            (Direction::Inbound, b"stop") => Kind::Stop,
            (Direction::Outbound, b"clear") => Kind::Clear,
            _ => Kind::Unknown,
        }
    }

    /// Whether this event reads the top-level value `key`.
    fn uses(self, key: Key) -> bool {
        match self {
            Kind::Connected => matches!(key, Key::Protocol | Key::Version),
            Kind::Start => matches!(key, Key::SequenceNumber | Key::StreamSid | Key::Start),
            Kind::Media => matches!(key, Key::SequenceNumber | Key::StreamSid | Key::Media),
            Kind::Dtmf => matches!(key, Key::SequenceNumber | Key::StreamSid | Key::Dtmf),
            Kind::Mark => matches!(key, Key::SequenceNumber | Key::StreamSid | Key::Mark),
            Kind::Stop => matches!(key, Key::SequenceNumber | Key::StreamSid | Key::Stop),
            Kind::Clear => key == Key::StreamSid,
            Kind::Unknown => false,
        }
    }
}

/// The known top-level keys other than `event`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    SequenceNumber,
    StreamSid,
    Protocol,
    Version,
    Start,
    Media,
    Dtmf,
    Mark,
    Stop,
}

impl Key {
    const ALL: [Key; 9] = [
        Key::SequenceNumber,
        Key::StreamSid,
        Key::Protocol,
        Key::Version,
        Key::Start,
        Key::Media,
        Key::Dtmf,
        Key::Mark,
        Key::Stop,
    ];

    fn of(key: &[u8]) -> Option<Key> {
        Some(match key {
            b"sequenceNumber" => Key::SequenceNumber,
            b"streamSid" => Key::StreamSid,
            b"protocol" => Key::Protocol,
            b"version" => Key::Version,
            b"start" => Key::Start,
            b"media" => Key::Media,
            b"dtmf" => Key::Dtmf,
            b"mark" => Key::Mark,
            b"stop" => Key::Stop,
            _ => return None,
        })
    }

    fn field(self) -> Field {
        match self {
            Key::SequenceNumber => Field::SequenceNumber,
            Key::StreamSid => Field::StreamSid,
            Key::Protocol => Field::Protocol,
            Key::Version => Field::Version,
            Key::Start => Field::Start,
            Key::Media => Field::Media,
            Key::Dtmf => Field::Dtmf,
            Key::Mark => Field::Mark,
            Key::Stop => Field::Stop,
        }
    }
}

/// The top-level values read so far; which ones are required depends on the event.
#[derive(Default)]
struct Values {
    sequence_number: Option<u64>,
    stream_sid: Option<StreamSid>,
    protocol: Option<Range<usize>>,
    version: Option<Range<usize>>,
    start: Option<StartBody>,
    media: Option<MediaBody>,
    dtmf: Option<(Track, char)>,
    mark: Option<Range<usize>>,
    stop: Option<(AccountSid, CallSid)>,
}

/// The `media` object; track, chunk and timestamp are never read outbound.
struct MediaBody {
    track: Option<Track>,
    chunk: Option<u64>,
    timestamp_ms: Option<u64>,
    payload_len: usize,
}

#[derive(Default)]
struct StartBody {
    account_sid: Option<AccountSid>,
    stream_sid: Option<StreamSid>,
    call_sid: Option<CallSid>,
    tracks: Option<Tracks>,
    media_format: Option<MediaFormat>,
    custom_parameters: Option<Vec<(String, String)>>,
}

/// Validates the frame as one JSON object and reads the values its event
/// uses: the event, where its name lies, and those values.
fn read_message(
    s: &mut Scanner<'_>,
    direction: Direction,
    audio: &mut [u8],
) -> Result<(Kind, Range<usize>, Values), MessageError> {
    s.skip_ws();
    if s.byte() != Some(b'{') {
        s.skip_value(0)?;
        s.end()?;
        return Err(MessageError::NotAnObject);
    }
    s.seek(s.pos() + 1);
    let mut event: Option<(Kind, Range<usize>)> = None;
    let mut values = Values::default();
    // Where each key seen before `event` lies, to read it once the event is known.
    let mut deferred: [Option<usize>; Key::ALL.len()] = [None; Key::ALL.len()];
    let mut seen = 0u16;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        let name = s.bytes(key);
        if name == b"event" {
            let range = string(s, Field::Event, MAX_EVENT_LEN)?;
            let kind = Kind::of(s.bytes(range.clone()), direction);
            put(&mut event, Field::Event, (kind, range))?;
            continue;
        }
        let Some(key) = Key::of(name) else {
            s.skip_value(1)?;
            continue;
        };
        let bit = 1 << key as u16;
        if seen & bit != 0 {
            return Err(MessageError::DuplicateField { field: key.field() });
        }
        seen |= bit;
        match &event {
            Some((kind, _)) if kind.uses(key) => read_value(s, key, direction, &mut values, audio)?,
            Some(_) => s.skip_value(1)?,
            None => {
                deferred[key as usize] = Some(s.pos());
                s.skip_value(1)?;
            }
        }
    }
    s.end()?;
    let (kind, range) = event.ok_or(missing(Field::Event))?;
    for key in Key::ALL {
        if let Some(at) = deferred[key as usize]
            && kind.uses(key)
        {
            s.seek(at);
            read_value(s, key, direction, &mut values, audio)?;
        }
    }
    Ok((kind, range, values))
}

/// Reads the value of top-level `key` at the cursor into `values`.
fn read_value(
    s: &mut Scanner<'_>,
    key: Key,
    direction: Direction,
    values: &mut Values,
    audio: &mut [u8],
) -> Result<(), MessageError> {
    match key {
        Key::SequenceNumber => values.sequence_number = Some(integer(s, Field::SequenceNumber)?),
        Key::StreamSid => values.stream_sid = Some(sid(s, Field::StreamSid, StreamSid::from_bytes)?),
        Key::Protocol => values.protocol = Some(string(s, Field::Protocol, MAX_CONNECTED_FIELD_LEN)?),
        Key::Version => values.version = Some(string(s, Field::Version, MAX_CONNECTED_FIELD_LEN)?),
        Key::Start => values.start = Some(start_object(s)?),
        Key::Media => values.media = Some(media_object(s, direction, audio)?),
        Key::Dtmf => values.dtmf = Some(dtmf_object(s)?),
        Key::Mark => values.mark = Some(mark_object(s)?),
        Key::Stop => values.stop = Some(stop_object(s)?),
    }
    Ok(())
}

fn start_object(s: &mut Scanner<'_>) -> Result<StartBody, MessageError> {
    object(s, Field::Start)?;
    let mut body = StartBody::default();
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match s.bytes(key) {
            b"accountSid" => {
                let v = sid(s, Field::StartAccountSid, AccountSid::from_bytes)?;
                put(&mut body.account_sid, Field::StartAccountSid, v)?;
            }
            b"streamSid" => {
                let v = sid(s, Field::StartStreamSid, StreamSid::from_bytes)?;
                put(&mut body.stream_sid, Field::StartStreamSid, v)?;
            }
            b"callSid" => {
                let v = sid(s, Field::StartCallSid, CallSid::from_bytes)?;
                put(&mut body.call_sid, Field::StartCallSid, v)?;
            }
            b"tracks" => {
                let v = tracks_array(s)?;
                put(&mut body.tracks, Field::StartTracks, v)?;
            }
            b"mediaFormat" => {
                let v = media_format_object(s)?;
                put(&mut body.media_format, Field::MediaFormat, v)?;
            }
            b"customParameters" => {
                let v = custom_parameters_object(s)?;
                put(&mut body.custom_parameters, Field::CustomParameters, v)?;
            }
            _ => s.skip_value(2)?,
        }
    }
    Ok(body)
}

/// The `media` object: the payload, and inbound also track, chunk and
/// timestamp (whose absence the caller reports).
fn media_object(
    s: &mut Scanner<'_>,
    direction: Direction,
    audio: &mut [u8],
) -> Result<MediaBody, MessageError> {
    object(s, Field::Media)?;
    let inbound = direction == Direction::Inbound;
    let mut track = None;
    let mut chunk = None;
    let mut timestamp = None;
    let mut payload = None;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match s.bytes(key) {
            b"payload" => {
                let v = self::payload(s, audio)?;
                put(&mut payload, Field::MediaPayload, v)?;
            }
            b"track" if inbound => {
                let v = self::track(s, Field::MediaTrack)?;
                put(&mut track, Field::MediaTrack, v)?;
            }
            b"chunk" if inbound => {
                let v = integer(s, Field::MediaChunk)?;
                put(&mut chunk, Field::MediaChunk, v)?;
            }
            b"timestamp" if inbound => {
                let v = integer(s, Field::MediaTimestamp)?;
                put(&mut timestamp, Field::MediaTimestamp, v)?;
            }
            _ => s.skip_value(2)?,
        }
    }
    Ok(MediaBody {
        track,
        chunk,
        timestamp_ms: timestamp,
        payload_len: payload.ok_or(missing(Field::MediaPayload))?,
    })
}

fn dtmf_object(s: &mut Scanner<'_>) -> Result<(Track, char), MessageError> {
    object(s, Field::Dtmf)?;
    let mut track = None;
    let mut digit = None;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match s.bytes(key) {
            b"track" => {
                let v = self::track(s, Field::DtmfTrack)?;
                put(&mut track, Field::DtmfTrack, v)?;
            }
            b"digit" => {
                let range = string(s, Field::DtmfDigit, usize::MAX)?;
                let v = match s.bytes(range.clone()) {
                    &[d @ (b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D')] => char::from(d),
                    &[d @ b'a'..=b'd'] => char::from(d.to_ascii_uppercase()),
                    other => {
                        return Err(MessageError::InvalidValue {
                            field: Field::DtmfDigit,
                            value: Excerpt::from_bytes(other),
                            expected: "one of 0-9, *, #, A-D",
                        });
                    }
                };
                put(&mut digit, Field::DtmfDigit, v)?;
            }
            _ => s.skip_value(2)?,
        }
    }
    Ok((track.ok_or(missing(Field::DtmfTrack))?, digit.ok_or(missing(Field::DtmfDigit))?))
}

fn mark_object(s: &mut Scanner<'_>) -> Result<Range<usize>, MessageError> {
    object(s, Field::Mark)?;
    let mut name = None;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        if s.bytes(key) == b"name" {
            let v = string(s, Field::MarkName, MAX_MARK_NAME_LEN)?;
            put(&mut name, Field::MarkName, v)?;
        } else {
            s.skip_value(2)?;
        }
    }
    name.ok_or(missing(Field::MarkName))
}

fn stop_object(s: &mut Scanner<'_>) -> Result<(AccountSid, CallSid), MessageError> {
    object(s, Field::Stop)?;
    let mut account_sid = None;
    let mut call_sid = None;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match s.bytes(key) {
            b"accountSid" => {
                let v = sid(s, Field::StopAccountSid, AccountSid::from_bytes)?;
                put(&mut account_sid, Field::StopAccountSid, v)?;
            }
            b"callSid" => {
                let v = sid(s, Field::StopCallSid, CallSid::from_bytes)?;
                put(&mut call_sid, Field::StopCallSid, v)?;
            }
            _ => s.skip_value(2)?,
        }
    }
    Ok((account_sid.ok_or(missing(Field::StopAccountSid))?, call_sid.ok_or(missing(Field::StopCallSid))?))
}

fn tracks_array(s: &mut Scanner<'_>) -> Result<Tracks, MessageError> {
    const FIELD: Field = Field::StartTracks;
    if s.byte() != Some(b'[') {
        return Err(wrong_type(FIELD, "an array of track names"));
    }
    s.seek(s.pos() + 1);
    s.skip_ws();
    let mut tracks = Tracks::default();
    if s.byte() == Some(b']') {
        s.seek(s.pos() + 1);
    } else {
        let mut count = 0;
        loop {
            count += 1;
            if count > MAX_TRACKS {
                return Err(MessageError::TooManyEntries { field: FIELD, max: MAX_TRACKS });
            }
            s.skip_ws();
            match track(s, FIELD)? {
                Track::Inbound => tracks.inbound = true,
                Track::Outbound => tracks.outbound = true,
            }
            s.skip_ws();
            match s.byte() {
                Some(b',') => s.seek(s.pos() + 1),
                Some(b']') => {
                    s.seek(s.pos() + 1);
                    break;
                }
                _ => {
                    // Not a separator: let the scanner name the offending byte.
                    s.eat(b']')?;
                }
            }
        }
    }
    if tracks == Tracks::default() {
        return Err(MessageError::InvalidValue {
            field: FIELD,
            value: Excerpt::new("[]"),
            expected: "at least one track",
        });
    }
    Ok(tracks)
}

fn media_format_object(s: &mut Scanner<'_>) -> Result<MediaFormat, MessageError> {
    object(s, Field::MediaFormat)?;
    let mut encoding = None;
    let mut sample_rate = None;
    let mut channels = None;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match s.bytes(key) {
            b"encoding" => {
                let range = string(s, Field::MediaFormatEncoding, MAX_ENCODING_LEN)?;
                let v = s.text(range)?.to_owned();
                put(&mut encoding, Field::MediaFormatEncoding, v)?;
            }
            b"sampleRate" => {
                let v = integer_in(s, Field::MediaFormatSampleRate, 1..=u64::from(u32::MAX))?;
                put(&mut sample_rate, Field::MediaFormatSampleRate, v)?;
            }
            b"channels" => {
                let v = integer_in(s, Field::MediaFormatChannels, 1..=u64::from(u16::MAX))?;
                put(&mut channels, Field::MediaFormatChannels, v)?;
            }
            _ => s.skip_value(3)?,
        }
    }
    Ok(MediaFormat {
        encoding: encoding.ok_or(missing(Field::MediaFormatEncoding))?,
        // `integer_in` bounded both, so the conversions cannot fail.
        sample_rate: sample_rate
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(missing(Field::MediaFormatSampleRate))?,
        channels: channels.and_then(|v| u16::try_from(v).ok()).ok_or(missing(Field::MediaFormatChannels))?,
    })
}

fn custom_parameters_object(s: &mut Scanner<'_>) -> Result<Vec<(String, String)>, MessageError> {
    const FIELD: Field = Field::CustomParameters;
    object(s, FIELD)?;
    let mut parameters = Vec::new();
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        if parameters.len() == MAX_CUSTOM_PARAMETERS {
            return Err(MessageError::TooManyEntries { field: FIELD, max: MAX_CUSTOM_PARAMETERS });
        }
        if key.len() > MAX_PARAMETER_NAME_LEN {
            return Err(MessageError::TooLong { field: FIELD, len: key.len(), max: MAX_PARAMETER_NAME_LEN });
        }
        let name = s.text(key)?.to_owned();
        if s.byte() != Some(b'"') {
            return Err(wrong_type(FIELD, "an object whose values are strings"));
        }
        let value = string(s, FIELD, MAX_PARAMETER_VALUE_LEN)?;
        parameters.push((name, s.text(value)?.to_owned()));
    }
    // The call keeps its `start` for its life: no room for parameters that
    // never come (a push starts the list at four).
    parameters.shrink_to_fit();
    Ok(parameters)
}

/// The payload string at the cursor, decoded into `audio` as it is scanned:
/// whole base64 groups go straight from the frame to the decoder, and only
/// the end of the string (padding, the closing quote, or an escape) takes the
/// general string path.
fn payload(s: &mut Scanner<'_>, audio: &mut [u8]) -> Result<usize, MessageError> {
    if s.byte() != Some(b'"') {
        return Err(wrong_type(Field::MediaPayload, "a string"));
    }
    let start = s.pos() + 1;
    let (consumed, written) = base64::decode_prefix(s.bytes(start..usize::MAX), audio);
    let rest = s.string_tail(start + consumed)?;
    let rest_out = audio.get_mut(written..).unwrap_or_default();
    match base64::decode(s.bytes(rest), rest_out) {
        Ok(n) => Ok(written + n),
        Err(Base64Error::OutputTooSmall { needed, .. }) => {
            Err(MessageError::AudioBufferTooSmall { needed: written + needed, capacity: audio.len() })
        }
        Err(e) => Err(MessageError::Payload(e.shifted(consumed))),
    }
}

fn track(s: &mut Scanner<'_>, field: Field) -> Result<Track, MessageError> {
    let range = string(s, field, usize::MAX)?;
    match s.bytes(range) {
        b"inbound" | b"inbound_track" => Ok(Track::Inbound),
        b"outbound" | b"outbound_track" => Ok(Track::Outbound),
        other => Err(MessageError::InvalidValue {
            field,
            value: Excerpt::from_bytes(other),
            expected: "\"inbound\" or \"outbound\" (with or without \"_track\")",
        }),
    }
}

fn sid<T>(
    s: &mut Scanner<'_>,
    field: Field,
    make: fn(&[u8]) -> Result<T, SidError>,
) -> Result<T, MessageError> {
    let range = string(s, field, usize::MAX)?;
    make(s.bytes(range)).map_err(|error| MessageError::InvalidSid { field, error })
}

/// A string value at the cursor, unescaped, at most `max` bytes.
fn string(s: &mut Scanner<'_>, field: Field, max: usize) -> Result<Range<usize>, MessageError> {
    if s.byte() != Some(b'"') {
        return Err(wrong_type(field, "a string"));
    }
    let range = s.string()?;
    if range.len() > max {
        return Err(MessageError::TooLong { field, len: range.len(), max });
    }
    Ok(range)
}

/// A non-negative integer at the cursor, as a JSON number or a string of digits.
fn integer(s: &mut Scanner<'_>, field: Field) -> Result<u64, MessageError> {
    integer_in(s, field, 0..=u64::MAX)
}

fn integer_in(s: &mut Scanner<'_>, field: Field, allowed: RangeInclusive<u64>) -> Result<u64, MessageError> {
    let range = match s.byte() {
        Some(b'"') => s.string()?,
        Some(b'-' | b'0'..=b'9') => {
            let number = s.number()?;
            if !number.integer || number.negative {
                return Err(invalid_integer(s, field, number.range));
            }
            number.range
        }
        _ => return Err(wrong_type(field, "an integer (a number or a string of digits)")),
    };
    match digits(s.bytes(range.clone())) {
        Some(v) if allowed.contains(&v) => Ok(v),
        _ => Err(invalid_integer(s, field, range)),
    }
}

fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &d| {
        let digit = d.checked_sub(b'0').filter(|&v| v < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn invalid_integer(s: &Scanner<'_>, field: Field, range: Range<usize>) -> MessageError {
    MessageError::InvalidInteger { field, value: Excerpt::from_bytes(s.bytes(range)) }
}

/// An object at the cursor: steps inside it.
fn object(s: &mut Scanner<'_>, field: Field) -> Result<(), MessageError> {
    if s.byte() != Some(b'{') {
        return Err(wrong_type(field, "an object"));
    }
    s.seek(s.pos() + 1);
    Ok(())
}

fn put<T>(slot: &mut Option<T>, field: Field, value: T) -> Result<(), MessageError> {
    match slot.replace(value) {
        Some(_) => Err(MessageError::DuplicateField { field }),
        None => Ok(()),
    }
}

fn missing(field: Field) -> MessageError {
    MessageError::MissingField { field }
}

fn wrong_type(field: Field, expected: &'static str) -> MessageError {
    MessageError::WrongType { field, expected }
}

fn text_at(frame: &[u8], range: Range<usize>) -> Result<&str, MessageError> {
    let at = range.start;
    core::str::from_utf8(frame.get(range).unwrap_or_default())
        .map_err(|_| super::json::syntax(at, super::error::SyntaxError::InvalidUtf8))
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_SID_LEN, SyntaxError};
    use super::*;

    const ACCOUNT: &str = "AC2c2b4c5b1f0e4d0b9a8c7d6e5f4a3b2c";
    const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";
    const CALL: &str = "CA3f8e6d7c2b1a4f5e9d0c8b7a6f5e4d3c";

    // The shapes of twilio.md, with real-looking SIDs.
    fn connected() -> String {
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned()
    }
    fn start_frame() -> String {
        format!(
            r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"{ACCOUNT}","streamSid":"{STREAM}","callSid":"{CALL}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{"FirstName":"Jane"}}}},"streamSid":"{STREAM}"}}"#
        )
    }
    fn media_frame() -> String {
        format!(
            r#"{{"event":"media","sequenceNumber":"4","media":{{"track":"inbound","chunk":"2","timestamp":"5","payload":"no+JhoaJjpzS"}},"streamSid":"{STREAM}"}}"#
        )
    }
    fn dtmf_frame() -> String {
        format!(
            r#"{{"event":"dtmf","streamSid":"{STREAM}","sequenceNumber":"5","dtmf":{{"track":"inbound_track","digit":"1"}}}}"#
        )
    }
    fn mark_frame() -> String {
        format!(
            r#"{{"event":"mark","sequenceNumber":"4","streamSid":"{STREAM}","mark":{{"name":"my label"}}}}"#
        )
    }
    fn stop_frame() -> String {
        format!(
            r#"{{"event":"stop","sequenceNumber":"5","stop":{{"accountSid":"{ACCOUNT}","callSid":"{CALL}"}},"streamSid":"{STREAM}"}}"#
        )
    }
    /// base64 "no+JhoaJjpzS", decoded independently.
    const PAYLOAD: [u8; 9] = [158, 143, 137, 134, 134, 137, 142, 156, 210];

    fn sid() -> StreamSid {
        StreamSid::new(STREAM).unwrap()
    }

    /// Parses `frame` and hands the result (with the audio buffer) to `check`.
    fn with_parsed(frame: &str, check: impl FnOnce(Result<Inbound<'_>, MessageError>, &[u8])) {
        let mut frame = frame.as_bytes().to_vec();
        let mut audio = [0u8; 512];
        let result = parse_inbound(&mut frame, &mut audio);
        check(result, &audio);
    }

    fn parse_err(frame: &str) -> MessageError {
        let mut frame = frame.as_bytes().to_vec();
        let mut audio = [0u8; 512];
        match parse_inbound(&mut frame, &mut audio) {
            Ok(event) => panic!("accepted: {event:?}"),
            Err(e) => e,
        }
    }

    fn media(frame: &str) -> (Media, Vec<u8>) {
        let mut out = None;
        with_parsed(frame, |result, audio| match result {
            Ok(Inbound::Media(media)) => out = Some((media, audio[..media.payload_len].to_vec())),
            other => panic!("{other:?}"),
        });
        out.unwrap()
    }

    #[test]
    fn connected_as_documented() {
        with_parsed(&connected(), |result, _| {
            assert_eq!(
                result,
                Ok(Inbound::Connected(Connected { protocol: Some("Call"), version: Some("1.0.0") }))
            );
        });
        with_parsed(r#"{"event":"connected"}"#, |result, _| {
            assert_eq!(result, Ok(Inbound::Connected(Connected { protocol: None, version: None })));
        });
    }

    #[test]
    fn start_as_documented() {
        with_parsed(&start_frame(), |result, _| {
            let expected = Start {
                sequence_number: 1,
                stream_sid: sid(),
                account_sid: AccountSid::new(ACCOUNT).unwrap(),
                call_sid: CallSid::new(CALL).unwrap(),
                tracks: Tracks { inbound: true, outbound: false },
                media_format: MediaFormat {
                    encoding: "audio/x-mulaw".to_owned(),
                    sample_rate: 8000,
                    channels: 1,
                },
                custom_parameters: vec![("FirstName".to_owned(), "Jane".to_owned())],
            };
            assert_eq!(result, Ok(Inbound::Start(Box::new(expected))));
        });
    }

    #[test]
    fn media_as_documented() {
        let (media, audio) = media(&media_frame());
        assert_eq!(
            media,
            Media {
                sequence_number: 4,
                stream_sid: sid(),
                track: Track::Inbound,
                chunk: 2,
                timestamp_ms: 5,
                payload_len: 9
            }
        );
        assert_eq!(audio, PAYLOAD);
    }

    #[test]
    fn media_of_a_real_20ms_frame() {
        // 160 bytes, 216 base64 characters; bytes from an independent encoder.
        let payload = "pU3KGCUwux1tEyze1iN7LtkeP3IfyxlxF0SU1kk8nVw0YL4xIB5p/tqg7ui5mX9cfCmZ/a/lkyU81lSvTfrXFCegrrP+6SMvivIhH57kkcWxC+y1Vjv8Hm+TQn7LyP4pVeXNjkbcjtS3wnZNKlpNdncG+F2GkAJK1r2jQBvpyMvMyTX2zR9hImrhUziuGjQATTO6DSRqwEyBsbryPjv57g==";
        let frame = media_frame().replace("no+JhoaJjpzS", payload);
        let (media, audio) = media(&frame);
        assert_eq!(media.payload_len, 160);
        assert_eq!(audio[..4], [0xa5, 0x4d, 0xca, 0x18]);
        assert_eq!(audio[156..], [0x3e, 0x3b, 0xf9, 0xee]);
    }

    #[test]
    fn media_to_pcm16() {
        let mut frame = media_frame().into_bytes();
        let mut mulaw = [0u8; 16];
        let mut pcm = [0i16; 16];
        let Ok(Inbound::Media(media)) = parse_inbound_pcm16(&mut frame, &mut mulaw, &mut pcm) else {
            panic!()
        };
        assert_eq!(mulaw[..media.payload_len], PAYLOAD);
        // G.711 μ-law expansion of 158 (0x9E), 210 (0xD2), worked by hand:
        // 0x9E: inverted 0x61, exponent 6, mantissa 1 -> ((2+33) << 8) - 132 = 8828.
        // 0xD2: inverted 0x2D, exponent 2, mantissa 13 -> ((26+33) << 4) - 132 = 812.
        assert_eq!((pcm[0], pcm[8]), (8828, 812));

        let mut frame = media_frame().into_bytes();
        let mut short = [0i16; 8];
        assert_eq!(
            parse_inbound_pcm16(&mut frame, &mut mulaw, &mut short),
            Err(MessageError::AudioBufferTooSmall { needed: 9, capacity: 8 })
        );
        let mut frame = mark_frame().into_bytes();
        assert!(matches!(parse_inbound_pcm16(&mut frame, &mut mulaw, &mut short), Ok(Inbound::Mark(_))));
    }

    #[test]
    fn dtmf_mark_and_stop_as_documented() {
        with_parsed(&dtmf_frame(), |result, _| {
            assert_eq!(
                result,
                Ok(Inbound::Dtmf(Dtmf {
                    sequence_number: 5,
                    stream_sid: sid(),
                    track: Track::Inbound,
                    digit: '1'
                }))
            );
        });
        let mut frame = mark_frame().into_bytes();
        let range = frame.as_ptr_range();
        let mut audio = [0u8; 0];
        let Ok(Inbound::Mark(mark)) = parse_inbound(&mut frame, &mut audio) else { panic!() };
        assert_eq!(mark, Mark { sequence_number: 4, stream_sid: sid(), name: "my label" });
        assert!(range.contains(&mark.name.as_ptr()), "the name is borrowed from the frame");
        with_parsed(&stop_frame(), |result, _| {
            assert_eq!(
                result,
                Ok(Inbound::Stop(Stop {
                    sequence_number: 5,
                    stream_sid: sid(),
                    account_sid: AccountSid::new(ACCOUNT).unwrap(),
                    call_sid: CallSid::new(CALL).unwrap(),
                }))
            );
        });
    }

    #[test]
    fn numbers_where_strings_are_documented_and_the_reverse() {
        let frame = media_frame()
            .replace(r#""sequenceNumber":"4""#, r#""sequenceNumber":4"#)
            .replace(r#""chunk":"2""#, r#""chunk":2"#)
            .replace(r#""timestamp":"5""#, r#""timestamp": 18446744073709551615"#);
        let (media, _) = media(&frame);
        assert_eq!((media.sequence_number, media.chunk, media.timestamp_ms), (4, 2, u64::MAX));

        let frame =
            start_frame().replace("8000", r#""8000""#).replace(r#""channels":1"#, r#""channels":"1""#);
        with_parsed(&frame, |result, _| {
            let Ok(Inbound::Start(start)) = result else { panic!("{result:?}") };
            assert_eq!((start.media_format.sample_rate, start.media_format.channels), (8000, 1));
        });
    }

    #[test]
    fn keys_in_any_order_with_whitespace_and_unknown_keys() {
        let frame = format!(
            " {{ \"extra\" : [1, {{\"x\": [true, false, null, -1.5e3]}}, \"\\\"\"] ,\n\t\"streamSid\" : \"{STREAM}\" ,\r\n \
             \"media\" : {{ \"payload\" : \"no+JhoaJjpzS\", \"timestamp\" : \"5\", \"future\": {{}}, \"chunk\" : \"2\", \
             \"track\" : \"inbound_track\" }}, \"start\": 17, \"sequenceNumber\" : \"4\", \"event\" : \"media\" }} \n"
        );
        let (media, audio) = media(&frame);
        assert_eq!(
            (media.sequence_number, media.chunk, media.timestamp_ms, media.track),
            (4, 2, 5, Track::Inbound)
        );
        assert_eq!(media.stream_sid, sid());
        assert_eq!(audio, PAYLOAD);
    }

    #[test]
    fn escapes_in_every_string() {
        // "MZ" spelled with \u escapes; payload's '/' and '+' escaped; event name escaped.
        let frame = media_frame()
            .replace("\"media\",", "\"m\\u0065dia\",")
            .replace(&format!("\"{STREAM}\""), &format!("\"\\u004d\\u005a{}\"", &STREAM[2..]))
            .replace("no+JhoaJjpzS", "no\\u002bJhoaJjpzS")
            .replace("\"chunk\"", "\"ch\\u0075nk\"");
        let (media, audio) = media(&frame);
        assert_eq!(media.stream_sid, sid());
        assert_eq!(media.chunk, 2);
        assert_eq!(audio, PAYLOAD);

        let frame = mark_frame().replace("my label", r#"tab\there \"quoted\" caf\u00e9 \ud83d\ude00 \/"#);
        with_parsed(&frame, |result, _| {
            let Ok(Inbound::Mark(mark)) = result else { panic!("{result:?}") };
            assert_eq!(mark.name, "tab\there \"quoted\" café 😀 /");
        });
    }

    #[test]
    fn unknown_events_are_not_errors() {
        with_parsed(r#"{"event":"clear","streamSid":"MZ1","whatever":[{}]}"#, |result, _| {
            assert_eq!(result, Ok(Inbound::Unknown { event: "clear" }));
        });
        with_parsed(r#"{"sequenceNumber":{"not":"checked"},"event":"futur\u0065"}"#, |result, _| {
            assert_eq!(result, Ok(Inbound::Unknown { event: "future" }));
        });
    }

    #[test]
    fn fields_of_other_events_are_ignored() {
        // A media event carrying a broken mark object and a broken start object.
        let frame = media_frame().replacen('{', r#"{"mark":{"name":5},"start":[],"dtmf":"x","#, 1);
        assert_eq!(media(&frame).1, PAYLOAD);
    }

    #[test]
    fn dtmf_digits() {
        for (text, digit) in [("0", '0'), ("9", '9'), ("*", '*'), ("#", '#'), ("A", 'A'), ("d", 'D')] {
            with_parsed(&dtmf_frame().replace(r#""digit":"1""#, &format!(r#""digit":"{text}""#)), |r, _| {
                let Ok(Inbound::Dtmf(dtmf)) = r else { panic!("{r:?}") };
                assert_eq!(dtmf.digit, digit);
            });
        }
        for bad in ["", "12", "E", "x", "é"] {
            let frame = dtmf_frame().replace(r#""digit":"1""#, &format!(r#""digit":"{bad}""#));
            assert!(
                matches!(parse_err(&frame), MessageError::InvalidValue { field: Field::DtmfDigit, value, .. } if value.as_str() == bad),
                "{bad}"
            );
        }
    }

    fn missing(frame: &str, remove: &str, field: Field) {
        assert!(frame.contains(remove), "{remove}");
        let frame = frame.replacen(remove, "", 1);
        assert_eq!(parse_err(&frame), MessageError::MissingField { field }, "{frame}");
    }

    #[test]
    fn every_required_field_is_required() {
        let m = media_frame();
        missing(&m, r#""event":"media","#, Field::Event);
        missing(&m, r#""sequenceNumber":"4","#, Field::SequenceNumber);
        missing(&m, &format!(r#","streamSid":"{STREAM}""#), Field::StreamSid);
        missing(
            &m,
            r#""media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"no+JhoaJjpzS"},"#,
            Field::Media,
        );
        missing(&m, r#""track":"inbound","#, Field::MediaTrack);
        missing(&m, r#""chunk":"2","#, Field::MediaChunk);
        missing(&m, r#""timestamp":"5","#, Field::MediaTimestamp);
        missing(&m, r#","payload":"no+JhoaJjpzS""#, Field::MediaPayload);

        let s = start_frame();
        missing(&s, r#""sequenceNumber":"1","#, Field::SequenceNumber);
        missing(&s, &format!(r#""accountSid":"{ACCOUNT}","#), Field::StartAccountSid);
        missing(&s, &format!(r#""callSid":"{CALL}","#), Field::StartCallSid);
        missing(&s, r#""tracks":["inbound"],"#, Field::StartTracks);
        missing(
            &s,
            r#""mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"#,
            Field::MediaFormat,
        );
        missing(&s, r#""encoding":"audio/x-mulaw","#, Field::MediaFormatEncoding);
        missing(&s, r#""sampleRate":8000,"#, Field::MediaFormatSampleRate);
        missing(&s, r#","channels":1"#, Field::MediaFormatChannels);
        let both_sids_gone = s.replacen(&format!(r#""streamSid":"{STREAM}","#), "", 1);
        missing(&both_sids_gone, &format!(r#","streamSid":"{STREAM}""#), Field::StartStreamSid);
        let start_object = &s[s.find(r#""start":{"#).unwrap()..s.find(r#"}},"streamSid""#).unwrap() + 3];
        missing(&s, start_object, Field::Start);

        let d = dtmf_frame();
        missing(&d, r#""sequenceNumber":"5","#, Field::SequenceNumber);
        missing(&d, &format!(r#""streamSid":"{STREAM}","#), Field::StreamSid);
        missing(&d, r#","dtmf":{"track":"inbound_track","digit":"1"}"#, Field::Dtmf);
        missing(&d, r#""track":"inbound_track","#, Field::DtmfTrack);
        missing(&d, r#","digit":"1""#, Field::DtmfDigit);

        let k = mark_frame();
        missing(&k, r#""sequenceNumber":"4","#, Field::SequenceNumber);
        missing(&k, &format!(r#""streamSid":"{STREAM}","#), Field::StreamSid);
        missing(&k, r#","mark":{"name":"my label"}"#, Field::Mark);
        missing(&k, r#""name":"my label""#, Field::MarkName);

        let p = stop_frame();
        missing(&p, r#""sequenceNumber":"5","#, Field::SequenceNumber);
        missing(&p, &format!(r#","streamSid":"{STREAM}""#), Field::StreamSid);
        missing(&p, &format!(r#""stop":{{"accountSid":"{ACCOUNT}","callSid":"{CALL}"}},"#), Field::Stop);
        missing(&p, &format!(r#""accountSid":"{ACCOUNT}","#), Field::StopAccountSid);
        missing(&p, &format!(r#","callSid":"{CALL}""#), Field::StopCallSid);
    }

    #[test]
    fn start_custom_parameters_are_optional_and_keep_their_order() {
        let frame = start_frame().replace(r#","customParameters":{"FirstName":"Jane"}"#, "");
        with_parsed(&frame, |r, _| {
            let Ok(Inbound::Start(start)) = r else { panic!("{r:?}") };
            assert!(start.custom_parameters.is_empty());
        });
        let frame =
            start_frame().replace(r#"{"FirstName":"Jane"}"#, r#"{"Z":"1","A":"caf\u00e9","M":"","Z":"2"}"#);
        with_parsed(&frame, |r, _| {
            let Ok(Inbound::Start(start)) = r else { panic!("{r:?}") };
            let names: Vec<_> =
                start.custom_parameters.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            assert_eq!(names, [("Z", "1"), ("A", "café"), ("M", ""), ("Z", "2")]);
            assert_eq!(start.custom_parameter("Z"), Some("1"));
            assert_eq!(start.custom_parameter("B"), None);
        });
    }

    #[test]
    fn start_stream_sid_from_either_place() {
        let inner_only = start_frame().replacen(&format!(r#","streamSid":"{STREAM}"}}"#), "}", 1);
        assert_ne!(inner_only, start_frame());
        let outer_only = start_frame().replacen(&format!(r#""streamSid":"{STREAM}","#), "", 1);
        for frame in [inner_only, outer_only] {
            with_parsed(&frame, |r, _| {
                let Ok(Inbound::Start(start)) = r else { panic!("{r:?}") };
                assert_eq!(start.stream_sid, sid());
            });
        }
        let mismatch = start_frame().replacen(STREAM, "MZ0", 1);
        assert_eq!(parse_err(&mismatch), MessageError::StreamSidMismatch);
    }

    #[test]
    fn start_tracks() {
        for (tracks, expected) in [
            (r#"["inbound","outbound"]"#, Tracks { inbound: true, outbound: true }),
            (r#"[ "outbound_track" ]"#, Tracks { inbound: false, outbound: true }),
            (r#"["inbound","inbound"]"#, Tracks { inbound: true, outbound: false }),
        ] {
            with_parsed(&start_frame().replace(r#"["inbound"]"#, tracks), |r, _| {
                let Ok(Inbound::Start(start)) = r else { panic!("{r:?}") };
                assert_eq!(start.tracks, expected);
            });
        }
        let err = |tracks: &str| parse_err(&start_frame().replace(r#"["inbound"]"#, tracks));
        assert!(matches!(err("[]"), MessageError::InvalidValue { field: Field::StartTracks, .. }));
        assert!(matches!(err(r#"["both"]"#), MessageError::InvalidValue { field: Field::StartTracks, .. }));
        assert_eq!(
            err(r#""inbound""#),
            MessageError::WrongType { field: Field::StartTracks, expected: "an array of track names" }
        );
        assert_eq!(err("[1]"), MessageError::WrongType { field: Field::StartTracks, expected: "a string" });
        assert_eq!(
            err(r#"["inbound","inbound","inbound","inbound","inbound"]"#),
            MessageError::TooManyEntries { field: Field::StartTracks, max: MAX_TRACKS }
        );
        assert!(matches!(err(r#"["inbound" "outbound"]"#), MessageError::Syntax { .. }));
    }

    #[test]
    fn wrong_values() {
        let m = media_frame();
        let invalid_integer = |from: &str, to: &str, field: Field, text: &str| {
            let frame = m.replace(from, to);
            assert_eq!(
                parse_err(&frame),
                MessageError::InvalidInteger { field, value: Excerpt::new(text) },
                "{frame}"
            );
        };
        invalid_integer(r#""4""#, r#""-4""#, Field::SequenceNumber, "-4");
        invalid_integer(r#""4""#, "-4", Field::SequenceNumber, "-4");
        invalid_integer(r#""4""#, "4.0", Field::SequenceNumber, "4.0");
        invalid_integer(r#""4""#, "4e0", Field::SequenceNumber, "4e0");
        invalid_integer(r#""4""#, r#""""#, Field::SequenceNumber, "");
        invalid_integer(r#""4""#, r#"" 4""#, Field::SequenceNumber, " 4");
        invalid_integer(r#""2""#, r#""18446744073709551616""#, Field::MediaChunk, "18446744073709551616");
        invalid_integer(r#""5""#, "18446744073709551616", Field::MediaTimestamp, "18446744073709551616");
        assert_eq!(
            parse_err(&m.replace(r#""4""#, "true")),
            MessageError::WrongType {
                field: Field::SequenceNumber,
                expected: "an integer (a number or a string of digits)"
            }
        );
        assert!(matches!(
            parse_err(&m.replace(r#""track":"inbound""#, r#""track":"both""#)),
            MessageError::InvalidValue { field: Field::MediaTrack, .. }
        ));
        assert_eq!(
            parse_err(&m.replace(STREAM, "")),
            MessageError::InvalidSid { field: Field::StreamSid, error: SidError::Empty }
        );
        let long_sid = "M".repeat(MAX_SID_LEN + 1);
        assert_eq!(
            parse_err(&m.replace(STREAM, &long_sid)),
            MessageError::InvalidSid {
                field: Field::StreamSid,
                error: SidError::TooLong { len: MAX_SID_LEN + 1 }
            }
        );
        assert_eq!(
            parse_err(&m.replace(r#""media",""#, r#"5,""#)),
            MessageError::WrongType { field: Field::Event, expected: "a string" }
        );
        let long_event = "e".repeat(MAX_EVENT_LEN + 1);
        assert_eq!(
            parse_err(&m.replace(r#""media",""#, &format!(r#""{long_event}",""#))),
            MessageError::TooLong { field: Field::Event, len: MAX_EVENT_LEN + 1, max: MAX_EVENT_LEN }
        );
        assert_eq!(
            parse_err(&m.replace(
                r#""media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"no+JhoaJjpzS"}"#,
                r#""media":[1]"#
            )),
            MessageError::WrongType { field: Field::Media, expected: "an object" }
        );
        let long_name = "n".repeat(MAX_MARK_NAME_LEN + 1);
        assert_eq!(
            parse_err(&mark_frame().replace("my label", &long_name)),
            MessageError::TooLong {
                field: Field::MarkName,
                len: MAX_MARK_NAME_LEN + 1,
                max: MAX_MARK_NAME_LEN
            }
        );
        assert!(matches!(
            parse_err(&start_frame().replace("8000", "0")),
            MessageError::InvalidInteger { field: Field::MediaFormatSampleRate, .. }
        ));
        assert!(matches!(
            parse_err(&start_frame().replace(r#""channels":1"#, r#""channels":65536"#)),
            MessageError::InvalidInteger { field: Field::MediaFormatChannels, .. }
        ));
    }

    #[test]
    fn duplicates_of_known_fields() {
        let m = media_frame();
        assert_eq!(
            parse_err(&m.replacen('{', r#"{"event":"media","#, 1)),
            MessageError::DuplicateField { field: Field::Event }
        );
        assert_eq!(
            parse_err(&m.replace(r#""chunk":"2""#, r#""chunk":"2","chunk":"3""#)),
            MessageError::DuplicateField { field: Field::MediaChunk }
        );
        assert_eq!(
            parse_err(&m.replace(r#""payload""#, r#""payload":"","payload""#)),
            MessageError::DuplicateField { field: Field::MediaPayload }
        );
    }

    #[test]
    fn custom_parameter_bounds() {
        let many: Vec<String> = (0..=MAX_CUSTOM_PARAMETERS).map(|i| format!(r#""p{i}":"v""#)).collect();
        let frame = start_frame().replace(r#"{"FirstName":"Jane"}"#, &format!("{{{}}}", many.join(",")));
        assert_eq!(
            parse_err(&frame),
            MessageError::TooManyEntries { field: Field::CustomParameters, max: MAX_CUSTOM_PARAMETERS }
        );
        let frame = start_frame().replace("Jane", &"v".repeat(MAX_PARAMETER_VALUE_LEN + 1));
        assert!(matches!(parse_err(&frame), MessageError::TooLong { field: Field::CustomParameters, .. }));
        let frame = start_frame().replace("FirstName", &"k".repeat(MAX_PARAMETER_NAME_LEN + 1));
        assert!(matches!(parse_err(&frame), MessageError::TooLong { field: Field::CustomParameters, .. }));
        let frame = start_frame().replace(r#""Jane""#, "7");
        assert!(matches!(parse_err(&frame), MessageError::WrongType { field: Field::CustomParameters, .. }));
    }

    #[test]
    fn payload_errors() {
        let m = media_frame();
        assert_eq!(
            parse_err(&m.replace("no+JhoaJjpzS", "no+JhoaJjpz")),
            MessageError::Payload(Base64Error::InvalidLength { len: 11 })
        );
        assert_eq!(
            parse_err(&m.replace("no+JhoaJjpzS", "no-JhoaJjpzS")),
            MessageError::Payload(Base64Error::InvalidByte { offset: 2, byte: b'-' })
        );
        let mut frame = m.into_bytes();
        let mut audio = [0u8; 8];
        assert_eq!(
            parse_inbound(&mut frame, &mut audio),
            Err(MessageError::AudioBufferTooSmall { needed: 9, capacity: 8 })
        );
    }

    #[test]
    fn not_json_or_not_an_object() {
        assert_eq!(parse_err("[1,2]"), MessageError::NotAnObject);
        assert_eq!(parse_err(r#" "media" "#), MessageError::NotAnObject);
        assert_eq!(parse_err("{}"), MessageError::MissingField { field: Field::Event });
        let syntax = |frame: &str| match parse_err(frame) {
            MessageError::Syntax { offset, error } => (offset, error),
            other => panic!("{frame}: {other:?}"),
        };
        assert_eq!(syntax(""), (0, SyntaxError::UnexpectedEnd));
        assert_eq!(syntax(&(media_frame() + "x")), (media_frame().len(), SyntaxError::TrailingData));
        let truncated = &media_frame()[..40];
        assert_eq!(syntax(truncated).1, SyntaxError::UnexpectedEnd);
        assert_eq!(syntax(r#"{"event":"media",}"#), (17, SyntaxError::UnexpectedByte(b'}')));
        assert_eq!(syntax("{\"event\":\"me\ndia\"}"), (12, SyntaxError::ControlCharacter(b'\n')));
        assert_eq!(syntax(r#"{"event":"media","x":01}"#).1, SyntaxError::UnexpectedByte(b'1'));
        assert_eq!(syntax(r#"{"event":"media","x":1e999}"#).1, SyntaxError::NumberOutOfRange);
        let mut bad_utf8 = media_frame().into_bytes();
        bad_utf8.splice(1..1, b"\"\xc0\xaf\":1,".iter().copied());
        let mut audio = [0u8; 16];
        assert!(matches!(
            parse_inbound(&mut bad_utf8, &mut audio),
            Err(MessageError::Syntax { offset: 2, error: SyntaxError::InvalidUtf8 })
        ));
    }

    proptest::proptest! {
        /// The literal fast path and the general parser agree on Twilio-shaped
        /// media frames and on near misses of them: a leading space sends a
        /// frame down the general path.
        #[test]
        fn fast_path_agrees_with_the_general_parser(
            sequence_number in proptest::prelude::any::<u64>(),
            chunk in 0u64..100_000,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::sample::select(&b"\"\\ =/+A0}{,:-u"[..]), 0u8..3), 0..3),
        ) {
            let media = Media {
                sequence_number,
                stream_sid: sid(),
                track: Track::Inbound,
                chunk,
                timestamp_ms: chunk * 20,
                payload_len: payload.len(),
            };
            let mut frame = Vec::new();
            super::super::write_inbound_media(&mut frame, &media, &payload);
            for (at, byte, op) in edits {
                let at = at % frame.len();
                match op {
                    0 => frame[at] = byte,
                    1 => frame.insert(at, byte),
                    _ => { frame.remove(at); }
                }
            }
            let mut spaced = [b" ".as_slice(), &frame].concat();
            let (mut fast_audio, mut general_audio) = ([0u8; 256], [0u8; 256]);
            let fast = parse_inbound(&mut frame, &mut fast_audio);
            let general = parse_inbound(&mut spaced, &mut general_audio);
            match (fast, general) {
                (Ok(a), Ok(b)) => {
                    proptest::prop_assert_eq!(&a, &b);
                    if let Inbound::Media(m) = a {
                        proptest::prop_assert_eq!(&fast_audio[..m.payload_len], &general_audio[..m.payload_len]);
                    }
                }
                (Err(_), Err(_)) => {}
                (a, b) => proptest::prop_assert!(false, "fast {a:?} vs general {b:?}"),
            }
        }
    }

    #[test]
    fn outbound_frames() {
        let mut audio = [0u8; 16];
        let mut frame =
            format!(r#"{{"event":"media","streamSid":"{STREAM}","media":{{"payload":"no+JhoaJjpzS"}}}}"#)
                .into_bytes();
        assert_eq!(
            parse_outbound(&mut frame, &mut audio),
            Ok(Outbound::Media { stream_sid: sid(), payload_len: 9 })
        );
        assert_eq!(audio[..9], PAYLOAD);
        let mut frame =
            format!(r#"{{"event":"mark","streamSid":"{STREAM}","mark":{{"name":"my label"}}}}"#).into_bytes();
        assert_eq!(
            parse_outbound(&mut frame, &mut audio),
            Ok(Outbound::Mark { stream_sid: sid(), name: "my label" })
        );
        let mut frame = format!(r#"{{"event":"clear","streamSid":"{STREAM}"}}"#).into_bytes();
        assert_eq!(parse_outbound(&mut frame, &mut audio), Ok(Outbound::Clear { stream_sid: sid() }));
        let mut frame = br#"{"event":"stop"}"#.to_vec();
        assert_eq!(parse_outbound(&mut frame, &mut audio), Ok(Outbound::Unknown { event: "stop" }));
        let mut frame = br#"{"event":"clear"}"#.to_vec();
        assert_eq!(
            parse_outbound(&mut frame, &mut audio),
            Err(MessageError::MissingField { field: Field::StreamSid })
        );
    }
}
