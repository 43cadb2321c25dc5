//! The bot's audio on its way to the caller: a bounded queue of μ-law with
//! the bot's marks (or notifies) between the bytes, released to Twilio at a
//! bounded lead over real time.
//!
//! ## Why a lead, and why 200 ms
//!
//! Bots synthesize faster than real time and send whole sentences at once.
//! Passing that straight through would park seconds of audio in the proxy's
//! socket buffer towards Twilio and in Twilio's own player. Twilio's `clear`
//! empties Twilio's player, but a `clear` written behind seconds of `media`
//! in the same TCP stream reaches Twilio only after all of it has been
//! transferred, and memory on both sides grows with the burst. So the queue
//! lives here, where `clear` is instant, and Twilio is kept only
//! [`PLAYOUT_LEAD`] ahead: enough to ride out jitter on the path to Twilio
//! (the bridge's own media towards Twilio is written the moment it exists,
//! so 200 ms is ten frames of cushion), little enough that a barge-in's
//! `clear` overtakes at most 200 ms of audio in flight.
//!
//! How far Twilio is ahead is estimated, not observed: Twilio plays what it
//! gets in order at real time, so its buffer runs dry at `playout_end`, which
//! each frame sent pushes 20 ms further (from now, if Twilio was idle). Marks
//! correct nothing here: they come back one round trip late.

use core::time::Duration;
use std::collections::VecDeque;

use voxproxy_core::Instant;

use super::FRAME_BYTES;

/// How far ahead of real time audio goes to Twilio (a config key candidate).
pub const PLAYOUT_LEAD: Duration = Duration::from_millis(200);

/// Marks and notifies the leg tracks at once, queued here or sent to Twilio
/// and not yet echoed (a config key candidate).
pub const MAX_MARKS: usize = 64;

/// One μ-law byte at 8 kHz.
const BYTE_TIME: Duration = Duration::from_micros(125);

/// A mark the bot sent: where it sits in the audio, and its text (reused).
#[derive(Debug)]
pub(crate) struct Marker {
    /// Leg-assigned, increasing from 1; Twilio sees it as `vb-<id>`.
    pub(crate) id: u64,
    /// Audio bytes queued (over the call) before it.
    pub(crate) position: u64,
    /// Whether it has been given to the caller side (sent to Twilio).
    pub(crate) sent: bool,
    /// The bot's mark name, or the notify payload as raw JSON.
    pub(crate) text: String,
}

/// What the queue releases next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// Up to one frame of μ-law, now in the caller's buffer: its length.
    Audio(usize),
    /// The mark with this id is due.
    Mark(u64),
}

/// Queue, marks and pacing for one call.
#[derive(Debug)]
pub(crate) struct PlayoutQueue {
    audio: VecDeque<u8>,
    max_bytes: usize,
    pub(crate) marks: VecDeque<Marker>,
    /// Text buffers of echoed marks, for reuse.
    spare: Vec<String>,
    next_id: u64,
    /// Bytes ever queued and ever released, over the call.
    queued: u64,
    released: u64,
    /// When Twilio's player runs dry, by estimate; `None` when it is idle.
    playout_end: Option<Instant>,
    /// Bytes refused because the queue was full.
    pub(crate) overflow_bytes: u64,
}

impl PlayoutQueue {
    pub(crate) fn new(max_bytes: usize) -> Self {
        PlayoutQueue {
            audio: VecDeque::new(),
            max_bytes,
            marks: VecDeque::with_capacity(MAX_MARKS),
            spare: Vec::with_capacity(MAX_MARKS),
            next_id: 1,
            queued: 0,
            released: 0,
            playout_end: None,
            overflow_bytes: 0,
        }
    }

    /// Appends μ-law; what does not fit is dropped and counted.
    pub(crate) fn push_audio(&mut self, mulaw: &[u8]) {
        let room = self.max_bytes - self.audio.len();
        let (kept, dropped) = mulaw.split_at(room.min(mulaw.len()));
        self.audio.extend(kept);
        self.queued += kept.len() as u64;
        self.overflow_bytes += dropped.len() as u64;
    }

    /// Whether another mark can be tracked.
    pub(crate) fn has_mark_room(&self) -> bool {
        self.marks.len() < MAX_MARKS
    }

    /// Places a mark after the audio queued so far; `fill` writes its text.
    /// The caller checks [`PlayoutQueue::has_mark_room`] first.
    pub(crate) fn push_mark(&mut self, fill: impl FnOnce(&mut String)) {
        let mut text = self.spare.pop().unwrap_or_default();
        text.clear();
        fill(&mut text);
        let id = self.next_id;
        self.next_id += 1;
        self.marks.push_back(Marker { id, position: self.queued, sent: false, text });
    }

    /// Gives a marker's text buffer back for reuse.
    pub(crate) fn recycle(&mut self, marker: Marker) {
        if self.spare.len() < MAX_MARKS {
            self.spare.push(marker.text);
        }
    }

    /// Empties the audio queue; Twilio's player is being cleared too. The
    /// markers are the caller's to take (from `marks`) and echo or drop.
    pub(crate) fn clear_audio(&mut self) {
        self.released += self.audio.len() as u64;
        self.audio.clear();
        self.playout_end = None;
    }

    /// The first marker not yet sent, if it is due (all audio before it released).
    fn due_mark(&self) -> Option<&Marker> {
        self.marks.iter().find(|m| !m.sent).filter(|m| m.position <= self.released)
    }

    /// Bytes that may go in the next frame: up to a frame, stopping at the
    /// next unsent mark so that the mark follows exactly its audio.
    fn next_frame_len(&self) -> usize {
        let until_mark = self
            .marks
            .iter()
            .find(|m| !m.sent)
            .map_or(usize::MAX, |m| usize::try_from(m.position - self.released).unwrap_or(usize::MAX));
        FRAME_BYTES.min(self.audio.len()).min(until_mark)
    }

    /// Whether a frame of `len` bytes should wait: a short frame at the tail
    /// (no mark right after it) waits for more audio while Twilio still has
    /// something to play, so that bots sending odd-sized chunks still get
    /// full 20 ms frames.
    fn holds_partial(&self, len: usize, now: Instant) -> bool {
        let mark_follows = self.due_after(len);
        len < FRAME_BYTES
            && len == self.audio.len()
            && !mark_follows
            && self.playout_end.is_some_and(|e| e > now)
    }

    fn due_after(&self, len: usize) -> bool {
        self.marks.iter().find(|m| !m.sent).is_some_and(|m| m.position <= self.released + len as u64)
    }

    /// When Twilio may take `len` more bytes: once they would leave it no
    /// more than [`PLAYOUT_LEAD`] ahead of real time.
    fn send_at(&self, len: usize) -> Instant {
        self.playout_end
            .map_or(Instant::ZERO, |end| (end + BYTE_TIME * len as u32).saturating_sub(PLAYOUT_LEAD))
    }

    /// Releases the next due item at `now`, copying audio into `frame`.
    pub(crate) fn release(&mut self, now: Instant, frame: &mut [u8; FRAME_BYTES]) -> Option<Release> {
        if let Some(mark) = self.due_mark() {
            let id = mark.id;
            if let Some(m) = self.marks.iter_mut().find(|m| m.id == id) {
                m.sent = true;
            }
            return Some(Release::Mark(id));
        }
        let len = self.next_frame_len();
        if len == 0 || self.send_at(len) > now || self.holds_partial(len, now) {
            return None;
        }
        for (slot, byte) in frame.iter_mut().zip(self.audio.drain(..len)) {
            *slot = byte;
        }
        self.released += len as u64;
        let start = self.playout_end.filter(|&e| e > now).unwrap_or(now);
        self.playout_end = Some(start + BYTE_TIME * len as u32);
        Some(Release::Audio(len))
    }

    /// When [`PlayoutQueue::release`] next has something, if anything waits.
    pub(crate) fn next_release(&self, now: Instant) -> Option<Instant> {
        if self.due_mark().is_some() {
            return Some(now);
        }
        let len = self.next_frame_len();
        if len == 0 {
            return None;
        }
        let at = self.send_at(len).max(now);
        if self.holds_partial(len, at) {
            // Held until Twilio's player would otherwise run dry.
            return self.playout_end.map(|e| e.max(at));
        }
        Some(at)
    }

    /// Audio bytes waiting.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.audio.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn a_burst_goes_out_at_the_lead_then_at_real_time() {
        let mut q = PlayoutQueue::new(100 * FRAME_BYTES);
        q.push_audio(&[1; 50 * FRAME_BYTES]);
        let mut frame = [0; FRAME_BYTES];
        let mut sent = 0;
        while let Some(Release::Audio(n)) = q.release(ms(0), &mut frame) {
            assert_eq!(n, FRAME_BYTES);
            sent += 1;
        }
        // 200 ms of lead is ten frames; the eleventh waits until 20 ms.
        assert_eq!(sent, 10);
        assert_eq!(q.next_release(ms(0)), Some(ms(20)));
        assert_eq!(q.release(ms(19), &mut frame), None);
        assert_eq!(q.release(ms(20), &mut frame), Some(Release::Audio(FRAME_BYTES)));
        assert_eq!(q.release(ms(20), &mut frame), None);
        assert_eq!(q.queued_bytes(), 39 * FRAME_BYTES);
    }

    #[test]
    fn a_mark_follows_exactly_its_audio_and_a_short_tail_is_held() {
        let mut q = PlayoutQueue::new(100 * FRAME_BYTES);
        let mut frame = [0; FRAME_BYTES];
        q.push_audio(&[1; 250]);
        q.push_mark(|t| t.push('a'));
        q.push_audio(&[2; 100]);
        assert_eq!(q.release(ms(0), &mut frame), Some(Release::Audio(160)));
        assert_eq!(q.release(ms(0), &mut frame), Some(Release::Audio(90)), "cut short at the mark");
        assert_eq!(q.release(ms(0), &mut frame), Some(Release::Mark(1)));
        // 100 bytes left, no mark after them, Twilio busy until 31.25 ms: held.
        assert_eq!(q.release(ms(0), &mut frame), None);
        assert_eq!(q.next_release(ms(0)), Some(Instant::from_micros(31_250)));
        q.push_audio(&[3; 60]);
        assert_eq!(q.release(ms(0), &mut frame), Some(Release::Audio(160)));
        assert_eq!(&frame[..101], &[[2u8; 100].as_slice(), &[3]].concat()[..]);
        q.push_audio(&[4; 10]);
        assert_eq!(q.release(ms(1), &mut frame), None, "held while Twilio plays");
        assert_eq!(q.release(ms(52), &mut frame), Some(Release::Audio(10)), "sent before Twilio runs dry");
    }

    #[test]
    fn overflow_is_counted_and_clear_returns_every_marker() {
        let mut q = PlayoutQueue::new(2 * FRAME_BYTES);
        q.push_audio(&[0; 300]);
        q.push_mark(|t| t.push('x'));
        q.push_audio(&[0; 100]);
        assert_eq!((q.queued_bytes(), q.overflow_bytes), (320, 80));
        let mut frame = [0; FRAME_BYTES];
        assert_eq!(q.release(ms(0), &mut frame), Some(Release::Audio(160)));
        q.clear_audio();
        let ids: Vec<(u64, bool)> = q.marks.drain(..).map(|m| (m.id, m.sent)).collect();
        assert_eq!(ids, [(1, false)]);
        assert_eq!((q.queued_bytes(), q.next_release(ms(0))), (0, None));
        // After a clear Twilio is idle: a new burst gets the full lead again.
        q.push_audio(&[0; 320]);
        assert_eq!(q.release(ms(1), &mut frame), Some(Release::Audio(160)));
        q.push_mark(|t| t.push('y'));
        assert_eq!(q.release(ms(1), &mut frame), Some(Release::Audio(160)));
        assert_eq!(q.release(ms(1), &mut frame), Some(Release::Mark(2)));
    }
}
