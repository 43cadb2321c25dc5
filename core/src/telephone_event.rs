//! RFC 4733 telephone events (DTMF over RTP): the 4-byte payload, the DTMF
//! digit codes, a sender that turns one digit into its packet sequence, and
//! a receiver that turns a packet stream back into one report per event.
//!
//! ## Sending a digit
//!
//! [`DtmfSender`] is a sans-IO timer machine. Create it when the digit
//! starts, sleep until [`DtmfSender::poll_timeout`], call
//! [`DtmfSender::handle_timeout`], and send everything
//! [`DtmfSender::poll_packet`] yields with the session's telephone-event
//! payload type and the next sequence number of the audio stream (the
//! sender leaves sequence numbers to the caller because events share the
//! audio stream's sequence space). Every packet of one event carries the
//! event's start timestamp; the duration grows each packet interval; the
//! final packet (end bit set) goes out three times (RFC 4733 §2.5.1.4).
//! Events longer than 0xFFFF timestamp units are split into segments
//! (§2.5.1.3).
//!
//! ```
//! use voxproxy_core::telephone_event::{DtmfConfig, DtmfSender, TelephoneEvent};
//! use voxproxy_core::time::Instant;
//!
//! let config = DtmfConfig::default(); // 8 kHz, 20 ms packets, volume 10
//! let mut sender = DtmfSender::for_digit(&config, '5', 48_000, 800, Instant::ZERO)?;
//! let mut sent = Vec::new();
//! while let Some(deadline) = sender.poll_timeout() {
//!     sender.handle_timeout(deadline);
//!     while let Some(packet) = sender.poll_packet() {
//!         sent.push(TelephoneEvent::parse(&packet.payload)?);
//!     }
//! }
//! assert_eq!(sent.len(), 7); // 160, 320, 480, 640, then 800 with the end bit three times
//! assert!(sent[4..].iter().all(|e| e.end && e.duration == 800));
//! # Ok::<(), voxproxy_core::telephone_event::TelephoneEventError>(())
//! ```
//!
//! ## Receiving
//!
//! [`DtmfReceiver`] takes the RTP timestamp and payload of every
//! telephone-event packet and yields each event once, when it ends: by its
//! end bit, by the next event starting, or by silence for `end_timeout`
//! (all of an event's end packets may be lost).

use core::fmt;
use core::time::Duration;

use crate::seq::timestamp_delta;
use crate::time::Instant;

/// Size of one event in a payload.
pub const PAYLOAD_LEN: usize = 4;
/// Loudest volume code (volumes are 0 to -63 dBm0, stored as 0-63).
pub const MAX_VOLUME: u8 = 63;
/// The longest duration one segment can report (RFC 4733 §2.5.1.3).
pub const MAX_SEGMENT_DURATION: u16 = u16::MAX;

/// Everything that can be wrong with a telephone event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TelephoneEventError {
    /// The payload is not exactly 4 bytes. Payloads with several events
    /// (RFC 4733 §2.5.1.5) are not supported.
    Length(usize),
    /// A volume above 63 was given.
    Volume(u8),
    /// The character is not a DTMF digit (0-9, *, #, A-D).
    Digit(char),
    /// The caller's output buffer is smaller than 4 bytes.
    BufferTooSmall(usize),
    /// An event must last at least one timestamp unit.
    ZeroDuration,
    /// The packet interval must be at least one timestamp unit.
    ZeroPacketInterval,
    /// The RTP clock rate must not be zero.
    ZeroClockRate,
}

impl fmt::Display for TelephoneEventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TelephoneEventError::Length(len) => {
                write!(f, "telephone-event payload is {len} bytes, expected exactly {PAYLOAD_LEN}")
            }
            TelephoneEventError::Volume(v) => write!(f, "telephone-event volume {v} is above {MAX_VOLUME}"),
            TelephoneEventError::Digit(c) => write!(f, "{c:?} is not a DTMF digit (0-9, *, #, A-D)"),
            TelephoneEventError::BufferTooSmall(len) => {
                write!(
                    f,
                    "output buffer of {len} bytes is too small for a {PAYLOAD_LEN}-byte telephone event"
                )
            }
            TelephoneEventError::ZeroDuration => f.write_str("telephone-event duration must not be zero"),
            TelephoneEventError::ZeroPacketInterval => {
                f.write_str("telephone-event packet interval must not be zero")
            }
            TelephoneEventError::ZeroClockRate => f.write_str("telephone-event clock rate must not be zero"),
        }
    }
}

impl core::error::Error for TelephoneEventError {}

/// The event code of a DTMF digit: '0'-'9' → 0-9, '*' → 10, '#' → 11,
/// 'A'-'D' → 12-15 (lower case accepted).
#[must_use]
pub const fn dtmf_event(digit: char) -> Option<u8> {
    Some(match digit {
        '0'..='9' => digit as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => digit as u8 - b'A' + 12,
        'a'..='d' => digit as u8 - b'a' + 12,
        _ => return None,
    })
}

/// The DTMF digit of an event code 0-15 (upper case for A-D).
#[must_use]
pub const fn dtmf_digit(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => (b'0' + event) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + event - 12) as char,
        _ => return None,
    })
}

/// One telephone event as carried in a payload (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (0-15 are the DTMF digits).
    pub event: u8,
    /// The end bit: this is the final packet of the event.
    pub end: bool,
    /// Power level as 0 to -63 dBm0, stored as 0-63.
    pub volume: u8,
    /// Duration so far, in timestamp units, from the packet's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads a 4-byte payload. The reserved bit is ignored, as RFC 4733
    /// §2.3.3 requires of receivers.
    pub fn parse(payload: &[u8]) -> Result<Self, TelephoneEventError> {
        let &[event, flags, d0, d1] = payload else {
            return Err(TelephoneEventError::Length(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte payload (reserved bit clear).
    pub fn to_bytes(&self) -> Result<[u8; PAYLOAD_LEN], TelephoneEventError> {
        if self.volume > MAX_VOLUME {
            return Err(TelephoneEventError::Volume(self.volume));
        }
        let [d0, d1] = self.duration.to_be_bytes();
        Ok([self.event, (u8::from(self.end) << 7) | self.volume, d0, d1])
    }

    /// Writes the payload into `out`; returns 4.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, TelephoneEventError> {
        let bytes = self.to_bytes()?;
        let len = out.len();
        out.get_mut(..PAYLOAD_LEN).ok_or(TelephoneEventError::BufferTooSmall(len))?.copy_from_slice(&bytes);
        Ok(PAYLOAD_LEN)
    }
}

/// A packet for the caller to send: put `payload` after an RTP header with
/// this `marker` and `timestamp`, the telephone-event payload type and the
/// audio stream's next sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEventPacket {
    /// Set on the first packet of the event only.
    pub marker: bool,
    /// RTP timestamp: the start of the event (or of its segment).
    pub timestamp: u32,
    /// The 4-byte telephone-event payload.
    pub payload: [u8; PAYLOAD_LEN],
}

/// A tiny fixed-capacity FIFO; pushing into a full one drops the oldest item.
#[derive(Clone, Copy, Debug)]
struct Outbox<T: Copy, const N: usize> {
    items: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> Outbox<T, N> {
    const fn new() -> Self {
        Outbox { items: [None; N], head: 0, len: 0 }
    }

    fn push(&mut self, item: T) {
        if self.len == N {
            self.head = (self.head + 1) % N;
            self.len -= 1;
        }
        self.items[(self.head + self.len) % N] = Some(item);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        item
    }

    fn clear(&mut self) {
        *self = Self::new();
    }
}

/// Settings of a [`DtmfSender`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfConfig {
    /// RTP clock rate of the telephone-event payload type (usually 8000).
    pub clock_rate: u32,
    /// Time between packets in timestamp units (RFC 4733 suggests the
    /// audio packet interval, at most 50 ms).
    pub packet_interval: u16,
    /// Volume code sent with each packet, 0-63 (0 dBm0 to -63 dBm0).
    pub volume: u8,
}

impl Default for DtmfConfig {
    /// 8 kHz, 20 ms (160 units), -10 dBm0.
    fn default() -> Self {
        DtmfConfig { clock_rate: 8_000, packet_interval: 160, volume: 10 }
    }
}

/// How many times the final packet of an event or segment goes out (RFC
/// 4733 §2.5.1.4: the final packet is sent three times).
const FINAL_TRANSMISSIONS: u8 = 3;

/// Sends one telephone event as RFC 4733 packets; see the [module docs](self).
///
/// Timing: the event occupies timestamps `start_timestamp ..
/// start_timestamp + duration` and starts at `now` given to `new`. Packet
/// `k` (k = 1, 2, …) is due one packet interval after packet `k-1` and
/// reports the duration up to its own time, like an audio packet that
/// carries the interval just captured; the packet whose time reaches the
/// event's duration is the final one. A caller that wakes late gets only
/// the packets of the latest due interval (stale updates are worthless),
/// but always all three final packets, one per wake-up.
#[derive(Clone, Debug)]
pub struct DtmfSender {
    event: u8,
    volume: u8,
    start_timestamp: u32,
    duration: u32,
    interval: u16,
    clock_rate: u32,
    started: Instant,
    /// Index of the next packet interval to process (the first is 1).
    next_tick: u64,
    /// Segment index reported by the last processed interval.
    segment: u32,
    /// Start timestamp of the segment that ended most recently and how
    /// often its final packet has gone out.
    closed_segment: Option<(u32, u8)>,
    final_sent: u8,
    marker_sent: bool,
    outbox: Outbox<TelephoneEventPacket, 2>,
}

impl DtmfSender {
    /// Starts sending `event` at `now`, lasting `duration` timestamp units
    /// from `start_timestamp`.
    pub fn new(
        config: &DtmfConfig,
        event: u8,
        start_timestamp: u32,
        duration: u32,
        now: Instant,
    ) -> Result<Self, TelephoneEventError> {
        if config.volume > MAX_VOLUME {
            return Err(TelephoneEventError::Volume(config.volume));
        }
        if config.packet_interval == 0 {
            return Err(TelephoneEventError::ZeroPacketInterval);
        }
        if config.clock_rate == 0 {
            return Err(TelephoneEventError::ZeroClockRate);
        }
        if duration == 0 {
            return Err(TelephoneEventError::ZeroDuration);
        }
        Ok(DtmfSender {
            event,
            volume: config.volume,
            start_timestamp,
            duration,
            interval: config.packet_interval,
            clock_rate: config.clock_rate,
            started: now,
            next_tick: 1,
            segment: 0,
            closed_segment: None,
            final_sent: 0,
            marker_sent: false,
            outbox: Outbox::new(),
        })
    }

    /// Like [`DtmfSender::new`] for a DTMF digit ('0'-'9', '*', '#', 'A'-'D').
    pub fn for_digit(
        config: &DtmfConfig,
        digit: char,
        start_timestamp: u32,
        duration: u32,
        now: Instant,
    ) -> Result<Self, TelephoneEventError> {
        let event = dtmf_event(digit).ok_or(TelephoneEventError::Digit(digit))?;
        Self::new(config, event, start_timestamp, duration, now)
    }

    /// The event code being sent.
    #[must_use]
    pub fn event(&self) -> u8 {
        self.event
    }

    /// The RTP timestamp just after the event: where a following event may
    /// start at the earliest.
    #[must_use]
    pub fn end_timestamp(&self) -> u32 {
        self.start_timestamp.wrapping_add(self.duration)
    }

    /// Whether every packet, the three final ones included, has been handed out.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.final_sent >= FINAL_TRANSMISSIONS && self.outbox.len == 0
    }

    /// Timestamp units from the start to packet interval `tick`.
    fn tick_units(&self, tick: u64) -> u64 {
        tick.saturating_mul(u64::from(self.interval))
    }

    /// When packet interval `tick` is due: rounded up to the nanosecond, so
    /// that [`DtmfSender::latest_due_tick`] agrees with it exactly.
    fn deadline(&self, tick: u64) -> Instant {
        let nanos = u128::from(self.tick_units(tick)) * 1_000_000_000;
        let nanos = nanos.div_ceil(u128::from(self.clock_rate));
        self.started.saturating_add(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    fn latest_due_tick(&self, now: Instant) -> u64 {
        let elapsed = u128::from((now - self.started).as_nanos() as u64);
        let ticks = elapsed * u128::from(self.clock_rate) / (1_000_000_000 * u128::from(self.interval));
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    fn segment_timestamp(&self, segment: u32) -> u32 {
        self.start_timestamp.wrapping_add(segment.wrapping_mul(u32::from(MAX_SEGMENT_DURATION)))
    }

    fn queue(&mut self, timestamp: u32, end: bool, duration: u16) {
        let event = TelephoneEvent { event: self.event, end, volume: self.volume, duration };
        // `new` checked the volume, so encoding cannot fail.
        let Ok(payload) = event.to_bytes() else { return };
        let marker = !self.marker_sent;
        self.marker_sent = true;
        self.outbox.push(TelephoneEventPacket { marker, timestamp, payload });
    }

    /// Time passed; queues the packets of the latest due packet interval.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.final_sent >= FINAL_TRANSMISSIONS || now < self.deadline(self.next_tick) {
            return;
        }
        let tick = self.latest_due_tick(now).max(self.next_tick);
        self.next_tick = tick.saturating_add(1);
        self.outbox.clear();

        let elapsed = self.tick_units(tick).min(u64::from(self.duration)) as u32;
        // Interval k of segment s covers (s × 0xFFFF, (s+1) × 0xFFFF]; a
        // duration landing exactly on a boundary closes the earlier segment.
        let segment = (elapsed - 1) / u32::from(MAX_SEGMENT_DURATION);
        let in_segment = (elapsed - segment * u32::from(MAX_SEGMENT_DURATION)) as u16;
        if segment > self.segment {
            // A packet interval never spans more than one boundary (the
            // interval is at most 0xFFFF); after a very late wake-up only the
            // most recent closed segment is worth finishing.
            self.closed_segment = Some((self.segment_timestamp(segment - 1), 0));
            self.segment = segment;
        }
        if let Some((timestamp, sent)) = self.closed_segment.filter(|(_, sent)| *sent < FINAL_TRANSMISSIONS) {
            // Later segments' final packets carry no end bit: the event goes on.
            self.queue(timestamp, false, MAX_SEGMENT_DURATION);
            self.closed_segment = Some((timestamp, sent + 1));
        }
        let end = elapsed == self.duration;
        self.queue(self.segment_timestamp(segment), end, in_segment);
        if end {
            self.final_sent += 1;
        }
    }

    /// The next packet to send, if any. Drain until `None` after every
    /// [`DtmfSender::handle_timeout`]; undrained packets are replaced by the
    /// next interval's.
    #[must_use]
    pub fn poll_packet(&mut self) -> Option<TelephoneEventPacket> {
        self.outbox.pop()
    }

    /// When [`DtmfSender::handle_timeout`] is next needed; `None` once the
    /// last final packet is out.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.final_sent < FINAL_TRANSMISSIONS).then(|| self.deadline(self.next_tick))
    }
}

/// Settings of a [`DtmfReceiver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfReceiverConfig {
    /// Silence after which an event whose end packets were all lost is
    /// reported as ended.
    pub end_timeout: Duration,
}

impl Default for DtmfReceiverConfig {
    /// 250 ms: five update intervals at the 50 ms RFC 4733 allows at most,
    /// so only a burst of loss, not a slow sender, ends an event early.
    fn default() -> Self {
        DtmfReceiverConfig { end_timeout: Duration::from_millis(250) }
    }
}

/// Why a received event was considered over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventEnd {
    /// A packet with the end bit arrived.
    EndBit,
    /// Nothing arrived for `end_timeout`: the end packets were lost.
    Timeout,
    /// The next event started before this one's end packets arrived.
    Superseded,
}

/// One telephone event as reported by a [`DtmfReceiver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// Event code; [`dtmf_digit`] maps 0-15 to digits.
    pub event: u8,
    /// RTP timestamp of the event's start.
    pub timestamp: u32,
    /// Longest duration heard, in timestamp units, long-event segments added up.
    pub duration: u32,
    /// Volume of the last packet heard.
    pub volume: u8,
    /// What ended it.
    pub ending: EventEnd,
}

/// Timestamps this far behind the newest event are late packets of old
/// events, not new events; further back they are taken as a new timeline
/// (a sender restart). 2^20 units is 131 s at 8 kHz.
const STALE_WINDOW: i32 = 1 << 20;

#[derive(Clone, Copy, Debug)]
struct CurrentEvent {
    event: u8,
    timestamp: u32,
    segment_timestamp: u32,
    /// Durations of the segments before the current one, summed.
    earlier_segments: u32,
    segment_duration: u16,
    volume: u8,
    last_heard: Instant,
}

impl CurrentEvent {
    fn report(&self, ending: EventEnd) -> ReceivedEvent {
        ReceivedEvent {
            event: self.event,
            timestamp: self.timestamp,
            duration: self.earlier_segments.saturating_add(u32::from(self.segment_duration)),
            volume: self.volume,
            ending,
        }
    }
}

/// Turns received telephone-event packets into one [`ReceivedEvent`] per
/// event; see the [module docs](self).
///
/// Packets are told apart by RTP timestamp: every packet of one event (or
/// one segment of a long event) carries the same one, so repeats, updates
/// and the three final packets fold into one report. Packets older than the
/// newest event are dropped as late. Call [`DtmfReceiver::reset`] when the
/// stream's SSRC changes.
#[derive(Clone, Debug)]
pub struct DtmfReceiver {
    config: DtmfReceiverConfig,
    current: Option<CurrentEvent>,
    /// Segment timestamp of the newest event seen (current or finished).
    newest: Option<u32>,
    outbox: Outbox<ReceivedEvent, 4>,
}

impl DtmfReceiver {
    /// A receiver that has heard nothing yet.
    #[must_use]
    pub fn new(config: DtmfReceiverConfig, _now: Instant) -> Self {
        DtmfReceiver { config, current: None, newest: None, outbox: Outbox::new() }
    }

    fn finish(&mut self, ending: EventEnd) {
        if let Some(current) = self.current.take() {
            self.outbox.push(current.report(ending));
        }
    }

    /// Feeds the RTP timestamp and payload of one telephone-event packet.
    /// A malformed payload is refused and changes nothing.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), TelephoneEventError> {
        let packet = TelephoneEvent::parse(payload)?;
        if let Some(current) = self.current.as_mut().filter(|c| c.event == packet.event) {
            let next_segment = current.segment_timestamp.wrapping_add(u32::from(MAX_SEGMENT_DURATION));
            if timestamp == current.segment_timestamp {
                current.segment_duration = current.segment_duration.max(packet.duration);
            } else if timestamp == next_segment {
                // A long event moved on to its next segment: the previous
                // one ran to the maximum, whether or not its final packet came.
                current.earlier_segments =
                    current.earlier_segments.saturating_add(u32::from(MAX_SEGMENT_DURATION));
                current.segment_timestamp = timestamp;
                current.segment_duration = packet.duration;
                self.newest = Some(timestamp);
            } else {
                return self.start_or_drop(now, timestamp, packet);
            }
            current.volume = packet.volume;
            current.last_heard = now;
            if packet.end {
                self.finish(EventEnd::EndBit);
            }
            return Ok(());
        }
        self.start_or_drop(now, timestamp, packet)
    }

    fn start_or_drop(
        &mut self,
        now: Instant,
        timestamp: u32,
        packet: TelephoneEvent,
    ) -> Result<(), TelephoneEventError> {
        if let Some(newest) = self.newest {
            let delta = timestamp_delta(timestamp, newest);
            if delta <= 0 && delta > -STALE_WINDOW {
                // A repeat of a finished event's packets, or a late packet.
                return Ok(());
            }
        }
        self.finish(EventEnd::Superseded);
        self.newest = Some(timestamp);
        self.current = Some(CurrentEvent {
            event: packet.event,
            timestamp,
            segment_timestamp: timestamp,
            earlier_segments: 0,
            segment_duration: packet.duration,
            volume: packet.volume,
            last_heard: now,
        });
        if packet.end {
            self.finish(EventEnd::EndBit);
        }
        Ok(())
    }

    /// Time passed: ends an event that has gone silent for `end_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.finish(EventEnd::Timeout);
        }
    }

    /// Forgets the stream (new SSRC): an event in progress is reported as
    /// superseded, and timestamps start afresh.
    pub fn reset(&mut self) {
        self.finish(EventEnd::Superseded);
        self.newest = None;
    }

    /// The next finished event, if any. Drain until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ReceivedEvent> {
        self.outbox.pop()
    }

    /// When [`DtmfReceiver::handle_timeout`] is next needed: the silence
    /// deadline of the event in progress.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_heard + self.config.end_timeout)
    }

    /// The event in progress, if any: its code and start timestamp.
    #[must_use]
    pub fn current(&self) -> Option<(u8, u32)> {
        self.current.map(|c| (c.event, c.timestamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    /// Runs a sender to completion on virtual time; returns (ms, packet) pairs.
    fn run(sender: &mut DtmfSender) -> Vec<(u64, TelephoneEventPacket)> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let Some(deadline) = sender.poll_timeout() else { break };
            sender.handle_timeout(deadline);
            while let Some(p) = sender.poll_packet() {
                out.push((deadline.as_nanos() / 1_000_000, p));
            }
        }
        out
    }

    fn packet(marker: bool, timestamp: u32, payload: [u8; 4]) -> TelephoneEventPacket {
        TelephoneEventPacket { marker, timestamp, payload }
    }

    #[test]
    fn digit_codes() {
        let digits = "0123456789*#ABCD";
        for (code, digit) in digits.chars().enumerate() {
            assert_eq!(dtmf_event(digit), Some(code as u8));
            assert_eq!(dtmf_digit(code as u8), Some(digit));
        }
        assert_eq!(dtmf_event('d'), Some(15));
        assert_eq!(dtmf_event('E'), None);
        assert_eq!(dtmf_event('5'), Some(5));
        assert_eq!(dtmf_digit(16), None);
    }

    #[test]
    fn payload_layout() {
        // Event 11 (#), end bit, reserved bit set (ignored), volume 10, duration 800.
        let e = TelephoneEvent::parse(&[11, 0x80 | 0x40 | 10, 0x03, 0x20]).unwrap();
        assert_eq!(e, TelephoneEvent { event: 11, end: true, volume: 10, duration: 800 });
        assert_eq!(e.to_bytes().unwrap(), [11, 0x8a, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(TelephoneEventError::Length(3)));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3, 4, 5]), Err(TelephoneEventError::Length(5)));
        assert_eq!(TelephoneEvent { volume: 64, ..e }.to_bytes(), Err(TelephoneEventError::Volume(64)));
        let mut small = [0u8; 3];
        assert_eq!(e.write(&mut small), Err(TelephoneEventError::BufferTooSmall(3)));
    }

    #[test]
    fn a_100ms_digit_at_20ms_8khz() {
        // RFC 4733 §2.5.1.2-§2.5.1.4, worked by hand: digit '1' (event 1),
        // volume 10, starting at timestamp 8000 at t = 0, lasting 800 units.
        // One packet each 20 ms (160 units), all with timestamp 8000, the
        // first with the marker; durations 160, 320, 480, 640; at 100 ms the
        // duration reaches 800 and the final packet (E bit → 0x8a) goes out
        // at 100, 120 and 140 ms.
        let config = DtmfConfig::default();
        let mut s = DtmfSender::for_digit(&config, '1', 8_000, 800, ms(0)).unwrap();
        assert_eq!(s.poll_timeout(), Some(ms(20)));
        let expected = [
            (20, packet(true, 8_000, [1, 0x0a, 0x00, 0xa0])),
            (40, packet(false, 8_000, [1, 0x0a, 0x01, 0x40])),
            (60, packet(false, 8_000, [1, 0x0a, 0x01, 0xe0])),
            (80, packet(false, 8_000, [1, 0x0a, 0x02, 0x80])),
            (100, packet(false, 8_000, [1, 0x8a, 0x03, 0x20])),
            (120, packet(false, 8_000, [1, 0x8a, 0x03, 0x20])),
            (140, packet(false, 8_000, [1, 0x8a, 0x03, 0x20])),
        ];
        assert_eq!(run(&mut s), expected);
        assert!(s.is_finished());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn early_wakeups_do_nothing_and_late_ones_skip_stale_updates() {
        let mut s = DtmfSender::new(&DtmfConfig::default(), 5, 0, 800, ms(1_000)).unwrap();
        s.handle_timeout(ms(1_019));
        assert_eq!(s.poll_packet(), None);
        // Woken at 1065 ms: intervals 1-3 are due; only the third is sent.
        s.handle_timeout(ms(1_065));
        assert_eq!(s.poll_packet(), Some(packet(true, 0, [5, 0x0a, 0x01, 0xe0])));
        assert_eq!(s.poll_packet(), None);
        assert_eq!(s.poll_timeout(), Some(ms(1_080)));
        // Woken far too late: the final packet still goes out three times.
        let mut finals = 0;
        for t in [5_000, 6_000, 7_000, 8_000] {
            s.handle_timeout(ms(t));
            while let Some(p) = s.poll_packet() {
                assert_eq!(p.payload, [5, 0x8a, 0x03, 0x20]);
                finals += 1;
            }
        }
        assert_eq!(finals, 3);
        assert!(s.is_finished());
    }

    #[test]
    fn short_event_is_one_final_packet_sent_three_times() {
        let mut s = DtmfSender::new(&DtmfConfig::default(), 9, 7, 100, ms(0)).unwrap();
        let sent = run(&mut s);
        let expected = [
            (20, packet(true, 7, [9, 0x8a, 0x00, 100])),
            (40, packet(false, 7, [9, 0x8a, 0x00, 100])),
            (60, packet(false, 7, [9, 0x8a, 0x00, 100])),
        ];
        assert_eq!(sent, expected);
    }

    #[test]
    fn long_event_is_split_into_segments() {
        // RFC 4733 §2.5.1.3 by hand: 140000 units in intervals of 20000
        // (2.5 s at 8 kHz). Segments: [0, 65535] at T, (65535, 131070] at
        // T+65535, (131070, 140000] at T+131070. Every closed segment's
        // final packet (duration 0xFFFF, no end bit) goes out three times
        // alongside the ongoing updates; only the last segment ends with E.
        const T: u32 = u32::MAX - 10; // the segment timestamps wrap
        let config = DtmfConfig { packet_interval: 20_000, ..DtmfConfig::default() };
        let mut s = DtmfSender::new(&config, 4, T, 140_000, ms(0)).unwrap();
        let seg1 = T.wrapping_add(65_535);
        let seg2 = T.wrapping_add(131_070);
        let seg0_final = [4, 0x0a, 0xff, 0xff];
        let seg1_final = [4, 0x0a, 0xff, 0xff];
        let expected = [
            (2_500, packet(true, T, [4, 0x0a, 0x4e, 0x20])),      // 20000
            (5_000, packet(false, T, [4, 0x0a, 0x9c, 0x40])),     // 40000
            (7_500, packet(false, T, [4, 0x0a, 0xea, 0x60])),     // 60000
            (10_000, packet(false, T, seg0_final)),               // segment 0 closed
            (10_000, packet(false, seg1, [4, 0x0a, 0x38, 0x81])), // 80000 - 65535 = 14465
            (12_500, packet(false, T, seg0_final)),
            (12_500, packet(false, seg1, [4, 0x0a, 0x86, 0xa1])), // 34465
            (15_000, packet(false, T, seg0_final)),
            (15_000, packet(false, seg1, [4, 0x0a, 0xd4, 0xc1])), // 54465
            (17_500, packet(false, seg1, seg1_final)),            // segment 1 closed
            (17_500, packet(false, seg2, [4, 0x8a, 0x22, 0xe2])), // 140000 - 131070 = 8930, end
            (20_000, packet(false, seg1, seg1_final)),
            (20_000, packet(false, seg2, [4, 0x8a, 0x22, 0xe2])),
            (22_500, packet(false, seg1, seg1_final)),
            (22_500, packet(false, seg2, [4, 0x8a, 0x22, 0xe2])),
        ];
        assert_eq!(run(&mut s), expected);
    }

    #[test]
    fn sender_refuses_bad_settings() {
        let c = DtmfConfig::default();
        assert_eq!(
            DtmfSender::for_digit(&c, 'x', 0, 800, ms(0)).unwrap_err(),
            TelephoneEventError::Digit('x')
        );
        assert_eq!(DtmfSender::new(&c, 1, 0, 0, ms(0)).unwrap_err(), TelephoneEventError::ZeroDuration);
        let bad = DtmfConfig { volume: 64, ..c };
        assert_eq!(DtmfSender::new(&bad, 1, 0, 1, ms(0)).unwrap_err(), TelephoneEventError::Volume(64));
        let bad = DtmfConfig { packet_interval: 0, ..c };
        assert_eq!(
            DtmfSender::new(&bad, 1, 0, 1, ms(0)).unwrap_err(),
            TelephoneEventError::ZeroPacketInterval
        );
        let bad = DtmfConfig { clock_rate: 0, ..c };
        assert_eq!(DtmfSender::new(&bad, 1, 0, 1, ms(0)).unwrap_err(), TelephoneEventError::ZeroClockRate);
    }

    fn payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let [d0, d1] = duration.to_be_bytes();
        [event, (u8::from(end) << 7) | 10, d0, d1]
    }

    fn drain(r: &mut DtmfReceiver) -> Vec<ReceivedEvent> {
        core::iter::from_fn(|| r.poll_event()).collect()
    }

    fn received(event: u8, timestamp: u32, duration: u32, ending: EventEnd) -> ReceivedEvent {
        ReceivedEvent { event, timestamp, duration, volume: 10, ending }
    }

    #[test]
    fn receiver_reports_once_despite_repeats() {
        let mut r = DtmfReceiver::new(DtmfReceiverConfig::default(), ms(0));
        let mut t = 0;
        for (end, d) in [(false, 160), (false, 320), (false, 320), (false, 480), (false, 640), (true, 800)] {
            t += 20;
            r.handle_packet(ms(t), 8_000, &payload(1, end, d)).unwrap();
            if !end {
                assert_eq!(drain(&mut r), []);
            }
        }
        assert_eq!(drain(&mut r), [received(1, 8_000, 800, EventEnd::EndBit)]);
        // The two retransmitted final packets, and a late update, change nothing.
        r.handle_packet(ms(140), 8_000, &payload(1, true, 800)).unwrap();
        r.handle_packet(ms(150), 8_000, &payload(1, false, 640)).unwrap();
        r.handle_packet(ms(160), 8_000, &payload(1, true, 800)).unwrap();
        assert_eq!(drain(&mut r), []);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn receiver_times_out_when_every_end_packet_is_lost() {
        let config = DtmfReceiverConfig { end_timeout: Duration::from_millis(100) };
        let mut r = DtmfReceiver::new(config, ms(0));
        // The first packet (marker) is lost too.
        r.handle_packet(ms(40), 500, &payload(7, false, 320)).unwrap();
        r.handle_packet(ms(60), 500, &payload(7, false, 480)).unwrap();
        assert_eq!(r.current(), Some((7, 500)));
        assert_eq!(r.poll_timeout(), Some(ms(160)));
        r.handle_timeout(ms(159));
        assert_eq!(drain(&mut r), []);
        r.handle_timeout(ms(160));
        assert_eq!(drain(&mut r), [received(7, 500, 480, EventEnd::Timeout)]);
        // The end packet straggling in afterwards is not a new event.
        r.handle_packet(ms(300), 500, &payload(7, true, 800)).unwrap();
        assert_eq!(drain(&mut r), []);
    }

    #[test]
    fn receiver_ends_an_event_when_the_next_one_starts() {
        let mut r = DtmfReceiver::new(DtmfReceiverConfig::default(), ms(0));
        r.handle_packet(ms(0), 1_000, &payload(2, false, 160)).unwrap();
        // Digit 2's end packets are lost; digit 3 starts 1600 units later.
        r.handle_packet(ms(200), 2_600, &payload(3, false, 160)).unwrap();
        assert_eq!(drain(&mut r), [received(2, 1_000, 160, EventEnd::Superseded)]);
        // A late update of digit 2 is dropped; the same digit pressed again
        // later (new timestamp) is a new event.
        r.handle_packet(ms(210), 1_000, &payload(2, false, 320)).unwrap();
        r.handle_packet(ms(220), 2_600, &payload(3, true, 400)).unwrap();
        r.handle_packet(ms(400), 4_000, &payload(3, true, 400)).unwrap();
        assert_eq!(
            drain(&mut r),
            [received(3, 2_600, 400, EventEnd::EndBit), received(3, 4_000, 400, EventEnd::EndBit)]
        );
    }

    #[test]
    fn receiver_handles_reordering_and_end_only_events() {
        let mut r = DtmfReceiver::new(DtmfReceiverConfig::default(), ms(0));
        r.handle_packet(ms(0), 0, &payload(4, false, 160)).unwrap();
        // The final packet overtakes the last update.
        r.handle_packet(ms(40), 0, &payload(4, true, 480)).unwrap();
        r.handle_packet(ms(41), 0, &payload(4, false, 320)).unwrap();
        assert_eq!(drain(&mut r), [received(4, 0, 480, EventEnd::EndBit)]);
        // Only a final packet of the next event arrives.
        r.handle_packet(ms(500), 4_000, &payload(5, true, 800)).unwrap();
        assert_eq!(drain(&mut r), [received(5, 4_000, 800, EventEnd::EndBit)]);
        assert_eq!(r.handle_packet(ms(501), 9_000, &[1, 2]), Err(TelephoneEventError::Length(2)));
        assert_eq!(r.current(), None);
    }

    #[test]
    fn receiver_adds_up_long_event_segments() {
        let mut r = DtmfReceiver::new(DtmfReceiverConfig::default(), ms(0));
        let t = u32::MAX - 100;
        r.handle_packet(ms(0), t, &payload(0, false, 60_000)).unwrap();
        // The segment's final packet is lost; the next segment arrives.
        r.handle_packet(ms(10), t.wrapping_add(65_535), &payload(0, false, 1_000)).unwrap();
        r.handle_packet(ms(20), t.wrapping_add(65_535), &payload(0, true, 8_930)).unwrap();
        assert_eq!(drain(&mut r), [received(0, t, 65_535 + 8_930, EventEnd::EndBit)]);
    }

    #[test]
    fn receiver_reset_starts_a_fresh_timeline() {
        let mut r = DtmfReceiver::new(DtmfReceiverConfig::default(), ms(0));
        r.handle_packet(ms(0), 10_000, &payload(1, false, 160)).unwrap();
        r.reset();
        assert_eq!(drain(&mut r), [received(1, 10_000, 160, EventEnd::Superseded)]);
        // Without the reset this earlier timestamp would be dropped as late.
        r.handle_packet(ms(10), 9_000, &payload(2, true, 160)).unwrap();
        assert_eq!(drain(&mut r), [received(2, 9_000, 160, EventEnd::EndBit)]);
    }

    #[test]
    fn sender_and_receiver_agree() {
        let config = DtmfConfig { packet_interval: 400, ..DtmfConfig::default() };
        let mut s = DtmfSender::for_digit(&config, '#', 123, 70_000, ms(0)).unwrap();
        let mut r = DtmfReceiver::new(DtmfReceiverConfig::default(), ms(0));
        for (at, p) in run(&mut s) {
            r.handle_packet(ms(at), p.timestamp, &p.payload).unwrap();
        }
        assert_eq!(drain(&mut r), [received(11, 123, 70_000, EventEnd::EndBit)]);
    }

    proptest! {
        #[test]
        fn payload_round_trips(bytes in any::<[u8; 4]>()) {
            let e = TelephoneEvent::parse(&bytes).unwrap();
            let mut expected = bytes;
            expected[1] &= !0x40; // the reserved bit is not kept
            prop_assert_eq!(e.to_bytes().unwrap(), expected);
        }

        /// Whatever the duration and interval, the sender emits durations
        /// that never decrease within a segment, the end bit only on the
        /// last three packets, and a total that the receiver adds up right.
        #[test]
        fn sender_covers_the_whole_duration(
            (interval, duration) in (1u16..=u16::MAX, 1u32..2_000).prop_flat_map(|(interval, ticks)| {
                let i = u32::from(interval);
                (Just(interval), (i * (ticks - 1) + 1)..=(i * ticks))
            })
        ) {
            let config = DtmfConfig { packet_interval: interval, ..DtmfConfig::default() };
            let mut s = DtmfSender::new(&config, 3, 77, duration, ms(0)).unwrap();
            let sent = run(&mut s);
            prop_assert!(s.is_finished());
            let ends: Vec<_> = sent.iter().filter(|(_, p)| p.payload[1] & 0x80 != 0).collect();
            prop_assert_eq!(ends.len(), 3);
            prop_assert!(sent.iter().filter(|(_, p)| p.marker).count() == 1 && sent[0].1.marker);
            let mut r = DtmfReceiver::new(DtmfReceiverConfig::default(), ms(0));
            for (at, p) in &sent {
                r.handle_packet(ms(*at), p.timestamp, &p.payload).unwrap();
            }
            let reports = drain(&mut r);
            prop_assert_eq!(reports, [received(3, 77, duration, EventEnd::EndBit)]);
        }
    }
}
