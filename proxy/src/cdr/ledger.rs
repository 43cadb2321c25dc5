//! The calls in progress, keyed by `CallSid`: what turns the voice webhook,
//! Twilio's status callbacks, the forward's outcome and the stream's own
//! record into ONE call record per Twilio call, written once.
//!
//! Sans-IO: every input carries the time (`now` on the monotonic clock for
//! the rules, `wall` as RFC 3339 text for the record), [`Ledger::poll_ready`]
//! hands out the records to write, [`Ledger::poll_timeout`] says when to ask
//! again. The proxy owns the clock, the journal and the writer.
//!
//! # When a call's record is written
//!
//! - Its final call status (`completed`, `busy`, `no-answer`, `failed`,
//!   `canceled`) has arrived and none of its streams is still open: at once.
//! - Its last stream ended (or the forward's outcome ended the call) and no
//!   call status callback was ever seen for it: [`FINAL_STATUS_WAIT`] later,
//!   since a number without a status callback URL never sends one. A call
//!   that did send status callbacks waits for the final one.
//! - Otherwise [`MAX_AGE`] after it was first seen (longer than Twilio's
//!   4-hour call limit), unless a stream is open: a stream's own bounds end it.
//! - The table is full ([`MAX_CALLS`]): the oldest call without an open
//!   stream is written early with what is known, and counted.
//!
//! A call whose Twilio-side recording was requested
//! ([`Ledger::handle_recording_requested`]) also waits for the recording's
//! final status callback (`completed` or `absent`), which Twilio posts once
//! the audio is processed, after the call ended; at most
//! [`RECORDING_STATUS_WAIT`] after its media ended. So the record has the
//! recording's URL and is still written once: never amended later.
//!
//! A written call leaves a tombstone for [`TOMBSTONE_AGE`] (at most
//! [`MAX_CALLS`] of them): a callback arriving after its record is counted as
//! late and dropped, so no call is recorded twice.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::journal::JournalId;
use super::{CallRecord, StatusEvent};

/// Most calls tracked at once.
pub const MAX_CALLS: usize = 10_000;
/// Most status events kept per call (Twilio sends at most five kinds).
pub const MAX_STATUS_EVENTS: usize = 16;
/// Wait for a final status after a call's media ended, when no status
/// callback was seen for it.
pub const FINAL_STATUS_WAIT: Duration = Duration::from_secs(2);
/// Longest a call is tracked without an open stream: Twilio ends every call
/// after 4 hours.
pub const MAX_AGE: Duration = Duration::from_secs(4 * 3600 + 600);
/// Longest a call's record waits, after its media ended, for the final
/// status callback of its Twilio-side recording (Twilio posts it once the
/// audio is processed). A candidate for a config key.
pub const RECORDING_STATUS_WAIT: Duration = Duration::from_secs(300);
/// How long a written call's `CallSid` is remembered.
pub const TOMBSTONE_AGE: Duration = Duration::from_secs(600);

/// What a call status event says, as the ledger needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusInput<'a> {
    /// `CallSid`.
    pub call_sid: &'a str,
    /// `AccountSid`.
    pub account_sid: &'a str,
    /// `From`.
    pub from: &'a str,
    /// `To`.
    pub to: &'a str,
    /// `CallStatus`.
    pub status: &'a str,
    /// Whether `status` ends the call.
    pub is_final: bool,
}

/// One call in progress.
#[derive(Debug)]
struct Entry {
    first_seen: Instant,
    /// Set when the call's media ended (last stream, or the forward's
    /// outcome hung up): starts [`FINAL_STATUS_WAIT`].
    media_ended: Option<Instant>,
    callbacks_seen: bool,
    final_seen: bool,
    streams_open: u32,
    streams: u32,
    /// The proxy gave up on the call's backend leg.
    leg_failed: bool,
    /// A Twilio-side recording was requested and its final status has not
    /// arrived: the record waits for it.
    recording_pending: bool,
    journal: Option<JournalId>,
    record: CallRecord,
}

/// A record to write, and the journal entry to retire with it.
#[derive(Debug, PartialEq, Eq)]
pub struct Ready {
    /// The call's one record.
    pub record: CallRecord,
    /// Its journal entry, if it has one.
    pub journal: Option<JournalId>,
    /// Why it was written now.
    pub why: ReadyWhy,
}

/// Why a record was written when it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyWhy {
    /// Final status and no open stream.
    Complete,
    /// No final status within [`FINAL_STATUS_WAIT`] of the media's end, and
    /// no status callback was ever seen.
    NoStatusCallback,
    /// [`MAX_AGE`] passed.
    Aged,
    /// The table was full.
    Evicted,
    /// The Twilio-side recording's final status did not come within
    /// [`RECORDING_STATUS_WAIT`] of the media's end.
    NoRecordingStatus,
}

/// What is known of a call's Twilio-side recording: the answer to the
/// request that started it, or a status callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingInput<'a> {
    /// `CallSid`.
    pub call_sid: &'a str,
    /// `RecordingSid`.
    pub sid: Option<&'a str>,
    /// `RecordingStatus`, or `failed` for a request that failed.
    pub status: &'a str,
    /// `RecordingUrl`.
    pub url: Option<&'a str>,
    /// `RecordingDuration`.
    pub duration_s: Option<u32>,
    /// `RecordingChannels`.
    pub channels: Option<u8>,
    /// What went wrong.
    pub error: Option<&'a str>,
    /// Whether nothing more comes about this recording.
    pub is_final: bool,
}

/// What the SIP listener knows about a call a PBX placed: written into
/// the call's record as it changes (the latest facts win).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SipInput {
    /// The INVITE's `Call-ID`.
    pub call_id: String,
    /// `sip_to_twilio`.
    pub direction: &'static str,
    /// The final status answered, once there is one.
    pub status: Option<u16>,
    /// Who ended the call, once it has ended.
    pub hung_up_by: Option<&'static str>,
}

/// What happened to an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new call: the proxy journals its record ([`Ledger::record_of`]) and
    /// hands the id back ([`Ledger::set_journal`]).
    New,
    /// A call already tracked.
    Known,
    /// The call's record was already written: dropped, counted.
    Late,
    /// The table is full of calls with open streams: dropped, counted.
    Full,
}

/// The table; see the [module docs](self).
#[derive(Debug)]
pub struct Ledger {
    /// [`MAX_CALLS`]; smaller in tests.
    max_calls: usize,
    /// Boxed: an entry holds a whole record (about 1 KB), and the table has
    /// up to twice as many slots as entries; boxed, the empty slots cost a
    /// pointer each rather than an entry (0.8 KB less memory per call).
    calls: HashMap<String, Box<Entry>>,
    ready: VecDeque<Ready>,
    tombstones: VecDeque<(Instant, String)>,
    tombstone_set: std::collections::HashSet<String>,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::new()
    }
}

impl Ledger {
    /// An empty table.
    #[must_use]
    pub fn new() -> Ledger {
        Ledger::with_max_calls(MAX_CALLS)
    }

    /// An empty table holding at most `max_calls` calls (and as many
    /// tombstones).
    #[must_use]
    pub fn with_max_calls(max_calls: usize) -> Ledger {
        Ledger {
            max_calls,
            calls: HashMap::new(),
            ready: VecDeque::new(),
            tombstones: VecDeque::new(),
            tombstone_set: std::collections::HashSet::new(),
        }
    }

    /// Calls tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// A call whose record is already written (recovered from the journal
    /// at start): later callbacks for it are late, not a new call.
    pub fn remember_written(&mut self, now: Instant, call_sid: &str) {
        if !call_sid.is_empty() && !self.tombstone_set.contains(call_sid) {
            self.tombstone(now, call_sid);
        }
    }

    /// The voice webhook answered a call on `route`.
    pub fn handle_voice(
        &mut self,
        now: Instant,
        wall: &str,
        status: &StatusInput<'_>,
        route: &str,
    ) -> Outcome {
        let outcome = self.track(now, wall, status);
        if let Some(entry) = self.calls.get_mut(status.call_sid) {
            entry.record.route = Some(route.to_owned());
            push_status(&mut entry.record, status.status, wall);
            entry.final_seen |= status.is_final;
        }
        outcome
    }

    /// A call status callback.
    pub fn handle_status(&mut self, now: Instant, wall: &str, status: &StatusInput<'_>) -> Outcome {
        let outcome = self.track(now, wall, status);
        if let Some(entry) = self.calls.get_mut(status.call_sid) {
            entry.callbacks_seen = true;
            entry.final_seen |= status.is_final;
            push_status(&mut entry.record, status.status, wall);
        }
        self.check(now, status.call_sid);
        outcome
    }

    /// The SIP listener's facts about a call a PBX placed (the call is
    /// tracked from here on if nothing else announced it yet).
    pub fn handle_sip(
        &mut self,
        now: Instant,
        wall: &str,
        status: &StatusInput<'_>,
        sip: &SipInput,
    ) -> Outcome {
        let outcome = self.track(now, wall, status);
        if let Some(entry) = self.calls.get_mut(status.call_sid) {
            apply_sip(&mut entry.record, sip);
        }
        outcome
    }

    /// The forward's outcome (`dial_status`) and what voxproxy did about it
    /// (`missed_action`); `ends_call` when the answer hangs up.
    pub fn handle_dial(
        &mut self,
        now: Instant,
        call_sid: &str,
        dial_status: Option<&str>,
        missed_action: Option<&str>,
        ends_call: bool,
    ) {
        let Some(entry) = self.calls.get_mut(call_sid) else { return };
        if let Some(dial) = dial_status {
            entry.record.dial_status = Some(dial.to_owned());
        }
        if let Some(action) = missed_action {
            entry.record.missed_action = Some(action.to_owned());
        }
        if ends_call && entry.streams_open == 0 {
            entry.media_ended = Some(now);
        }
    }

    /// A stream of the call started; `record` is what its record holds so
    /// far. Returns how the call is known; with [`Outcome::New`] or a call
    /// without a journal entry yet, the proxy journals
    /// [`Ledger::record_of`].
    pub fn handle_stream_started(&mut self, now: Instant, record: &CallRecord) -> Outcome {
        let status = StatusInput {
            call_sid: &record.call_sid,
            account_sid: &record.account_sid,
            from: record.from.as_deref().unwrap_or(""),
            to: record.to.as_deref().unwrap_or(""),
            status: "",
            is_final: false,
        };
        let outcome = self.track(now, &record.started_at, &status);
        if let Some(entry) = self.calls.get_mut(&record.call_sid) {
            entry.streams_open += 1;
            entry.streams += 1;
            entry.media_ended = None;
            if entry.streams == 1 {
                // The stream's fields are the record's, as before routes.
                let kept = std::mem::take(&mut entry.record);
                entry.record = merge_call_fields(record.clone(), kept);
            }
        }
        outcome
    }

    /// A stream of the call ended with `record`. Returns the call's record
    /// as it now stands, for the journal (so a crash writes it whole).
    pub fn handle_stream_ended(
        &mut self,
        now: Instant,
        record: CallRecord,
    ) -> Option<(JournalId, CallRecord)> {
        let call_sid = record.call_sid.clone();
        let entry = self.calls.get_mut(&call_sid)?;
        entry.streams_open = entry.streams_open.saturating_sub(1);
        if entry.streams_open == 0 {
            entry.media_ended = Some(now);
        }
        if entry.record.stream_sid == record.stream_sid {
            let kept = std::mem::take(&mut entry.record);
            entry.record = merge_call_fields(record, kept);
        } else {
            // A later stream (the AI after a missed forward): the call ends
            // when it does.
            entry.record.ended_at = record.ended_at;
            entry.record.end_reason = record.end_reason;
        }
        entry.record.streams = entry.streams;
        let snapshot = entry.journal.map(|id| (id, entry.record.clone()));
        self.check(now, &call_sid);
        snapshot
    }

    /// A Twilio-side recording of the call is being requested: its record
    /// waits for the recording's final status (see the [module docs](self)).
    pub fn handle_recording_requested(&mut self, call_sid: &str) {
        if let Some(entry) = self.calls.get_mut(call_sid) {
            entry.recording_pending = true;
        }
    }

    /// News of the call's Twilio-side recording; [`Outcome::Late`] when the
    /// call's record was written already (or the call is unknown here).
    pub fn handle_recording(&mut self, now: Instant, input: &RecordingInput<'_>) -> Outcome {
        let Some(entry) = self.calls.get_mut(input.call_sid) else { return Outcome::Late };
        let recording = entry.record.twilio_recording.get_or_insert_with(Box::default);
        // The request's answer can come after the first callback: a status
        // never goes back from a final one.
        if !is_final_recording_status(&recording.status) || input.is_final {
            recording.status = input.status.to_owned();
        }
        let text = |v: Option<&str>| v.map(str::to_owned);
        recording.sid = text(input.sid).or(recording.sid.take());
        recording.url = text(input.url).or(recording.url.take());
        recording.duration_s = input.duration_s.or(recording.duration_s);
        recording.channels = input.channels.or(recording.channels);
        recording.error = text(input.error).or(recording.error.take());
        if input.is_final {
            entry.recording_pending = false;
        }
        self.check(now, input.call_sid);
        Outcome::Known
    }

    /// The proxy gave up on the call's backend leg (before closing its
    /// stream, so the `<Connect action>` that follows finds it).
    pub fn handle_leg_failed(&mut self, call_sid: &str) {
        if let Some(entry) = self.calls.get_mut(call_sid) {
            entry.leg_failed = true;
        }
    }

    /// Whether the call's backend leg failed.
    #[must_use]
    pub fn leg_failed(&self, call_sid: &str) -> bool {
        self.calls.get(call_sid).is_some_and(|e| e.leg_failed)
    }

    /// The journal id of a call the proxy just journaled.
    pub fn set_journal(&mut self, call_sid: &str, id: Option<JournalId>) {
        if let Some(entry) = self.calls.get_mut(call_sid) {
            entry.journal = id;
        }
    }

    /// The journal id of a call, if it has one.
    #[must_use]
    pub fn journal_of(&self, call_sid: &str) -> Option<JournalId> {
        self.calls.get(call_sid).and_then(|e| e.journal)
    }

    /// The call's record as it stands (for the journal).
    #[must_use]
    pub fn record_of(&self, call_sid: &str) -> Option<CallRecord> {
        self.calls.get(call_sid).map(|e| e.record.clone())
    }

    /// The next record to write, the timers up to `now` applied.
    #[must_use]
    pub fn poll_ready(&mut self, now: Instant) -> Option<Ready> {
        if self.ready.is_empty() {
            self.expire(now);
        }
        self.ready.pop_front()
    }

    /// Every call still tracked, ready or not, for a daemon that exits:
    /// written with what is known.
    pub fn drain_all(&mut self, now: Instant) -> Vec<Ready> {
        let sids: Vec<String> = self.calls.keys().cloned().collect();
        for sid in sids {
            self.finish(now, &sid, ReadyWhy::Aged);
        }
        self.ready.drain(..).collect()
    }

    /// When [`Ledger::poll_ready`] may next have something without any input.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter(|e| e.streams_open == 0)
            .map(|e| match e.media_ended {
                Some(ended) if e.recording_pending => ended + RECORDING_STATUS_WAIT,
                Some(ended) if !e.callbacks_seen => ended + FINAL_STATUS_WAIT,
                _ => e.first_seen + MAX_AGE,
            })
            .min()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.tombstones.front()
            && now.saturating_duration_since(*at) >= TOMBSTONE_AGE
        {
            if let Some((_, sid)) = self.tombstones.pop_front() {
                self.tombstone_set.remove(&sid);
            }
        }
        let due: Vec<(String, ReadyWhy)> = self
            .calls
            .iter()
            .filter(|(_, e)| e.streams_open == 0)
            .filter_map(|(sid, e)| {
                let quiet = e.media_ended.filter(|_| !e.callbacks_seen);
                if e.recording_pending {
                    let waited = e.media_ended.is_some_and(|ended| now >= ended + RECORDING_STATUS_WAIT);
                    let why = if waited { ReadyWhy::NoRecordingStatus } else { ReadyWhy::Aged };
                    (waited || now >= e.first_seen + MAX_AGE).then(|| (sid.clone(), why))
                } else if quiet.is_some_and(|ended| now >= ended + FINAL_STATUS_WAIT) {
                    Some((sid.clone(), ReadyWhy::NoStatusCallback))
                } else if now >= e.first_seen + MAX_AGE {
                    Some((sid.clone(), ReadyWhy::Aged))
                } else {
                    None
                }
            })
            .collect();
        for (sid, why) in due {
            self.finish(now, &sid, why);
        }
    }

    /// Writes the call now if it is complete.
    fn check(&mut self, now: Instant, call_sid: &str) {
        if self
            .calls
            .get(call_sid)
            .is_some_and(|e| e.final_seen && e.streams_open == 0 && !e.recording_pending)
        {
            self.finish(now, call_sid, ReadyWhy::Complete);
        }
    }

    fn finish(&mut self, now: Instant, call_sid: &str, why: ReadyWhy) {
        let Some(entry) = self.calls.remove(call_sid) else { return };
        let mut record = entry.record;
        record.streams = entry.streams;
        if record.end_reason.is_empty() {
            // No stream: the call's end is its last status.
            record.end_reason = "no_stream".to_owned();
            record.ended_at = record.status_events.last().map(|e| e.at.clone()).unwrap_or_default();
        }
        self.tombstone(now, call_sid);
        self.ready.push_back(Ready { record, journal: entry.journal, why });
    }

    fn tombstone(&mut self, now: Instant, call_sid: &str) {
        if self.tombstones.len() >= self.max_calls
            && let Some((_, old)) = self.tombstones.pop_front()
        {
            self.tombstone_set.remove(&old);
        }
        self.tombstones.push_back((now, call_sid.to_owned()));
        self.tombstone_set.insert(call_sid.to_owned());
    }

    /// Finds or makes the call's entry, making room if needed.
    fn track(&mut self, now: Instant, wall: &str, status: &StatusInput<'_>) -> Outcome {
        if self.calls.contains_key(status.call_sid) {
            return Outcome::Known;
        }
        if self.tombstone_set.contains(status.call_sid) {
            return Outcome::Late;
        }
        if self.calls.len() >= self.max_calls && !self.evict_oldest(now) {
            return Outcome::Full;
        }
        let record = CallRecord {
            call_sid: status.call_sid.to_owned(),
            account_sid: status.account_sid.to_owned(),
            from: Some(status.from.to_owned()).filter(|s| !s.is_empty()),
            to: Some(status.to.to_owned()).filter(|s| !s.is_empty()),
            started_at: wall.to_owned(),
            ..CallRecord::default()
        };
        let entry = Entry {
            first_seen: now,
            media_ended: None,
            callbacks_seen: false,
            final_seen: false,
            streams_open: 0,
            streams: 0,
            leg_failed: false,
            recording_pending: false,
            journal: None,
            record,
        };
        self.calls.insert(status.call_sid.to_owned(), Box::new(entry));
        Outcome::New
    }

    fn evict_oldest(&mut self, now: Instant) -> bool {
        let oldest = self
            .calls
            .iter()
            .filter(|(_, e)| e.streams_open == 0)
            .min_by_key(|(_, e)| e.first_seen)
            .map(|(sid, _)| sid.clone());
        match oldest {
            Some(sid) => {
                self.finish(now, &sid, ReadyWhy::Evicted);
                true
            }
            None => false,
        }
    }
}

fn push_status(record: &mut CallRecord, status: &str, wall: &str) {
    if status.is_empty() {
        return;
    }
    record.call_status = Some(status.to_owned());
    if record.status_events.len() < MAX_STATUS_EVENTS {
        // Exactly: a first push would make room for four, and most calls
        // in progress have one or two (the ledger holds them all).
        record.status_events.reserve_exact(1);
        record.status_events.push(StatusEvent { status: status.to_owned(), at: wall.to_owned() });
    }
}

/// The stream's record with the call's own fields (those the stream does
/// not know) carried over from what the ledger had.
fn merge_call_fields(mut stream: CallRecord, call: CallRecord) -> CallRecord {
    stream.route = stream.route.or(call.route);
    stream.call_status = call.call_status;
    stream.status_events = call.status_events;
    stream.dial_status = call.dial_status;
    stream.missed_action = call.missed_action;
    stream.from = stream.from.or(call.from);
    stream.to = stream.to.or(call.to);
    if stream.account_sid.is_empty() {
        stream.account_sid = call.account_sid;
    }
    stream.sip_call_id = stream.sip_call_id.or(call.sip_call_id);
    stream.sip_direction = stream.sip_direction.or(call.sip_direction);
    stream.sip_status = stream.sip_status.or(call.sip_status);
    stream.hung_up_by = stream.hung_up_by.or(call.hung_up_by);
    stream.twilio_recording = call.twilio_recording.or(stream.twilio_recording);
    stream
}

/// Whether a `RecordingStatus` is the recording's last.
fn is_final_recording_status(status: &str) -> bool {
    matches!(status, "completed" | "absent" | "failed")
}

fn apply_sip(record: &mut CallRecord, sip: &SipInput) {
    record.sip_call_id = Some(sip.call_id.clone());
    record.sip_direction = Some(sip.direction.to_owned());
    record.sip_status = sip.status.or(record.sip_status);
    record.hung_up_by = sip.hung_up_by.map(str::to_owned).or(record.hung_up_by.take());
}

#[cfg(test)]
mod tests;
