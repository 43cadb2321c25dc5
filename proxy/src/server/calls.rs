//! The I/O shell of the table of calls in progress
//! ([`crate::cdr::ledger`]): the webhook handlers and call tasks feed it,
//! it journals each call once, and its own thread writes each call's one
//! record when the ledger says it is ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use voxproxy_adapters::webhook::CallDetails;

use crate::cdr::journal::JournalId;
use crate::cdr::ledger::{Ledger, Outcome, Ready, ReadyWhy, RecordingInput, SipInput, StatusInput};
use crate::cdr::{CallRecord, CdrService, rfc3339_utc};
use crate::metrics::Metrics;

/// Longest the writer thread sleeps between looks at the timers, so a
/// timer set while it sleeps is late by at most this.
const TICK: Duration = Duration::from_millis(100);

/// `voxproxy_call_ledger_total` slots (see `metrics::LEDGER_EVENTS`).
const SHUTDOWN: usize = 4;
const LATE: usize = 5;
const FULL: usize = 6;
const WRITE_FAILED: usize = 7;
const NO_RECORDING_STATUS: usize = 8;

/// The table, its journal and its writer.
#[derive(Debug)]
pub(crate) struct Calls {
    ledger: Mutex<Ledger>,
    /// Signalled when a record may be ready, so it is written at once.
    wake: Condvar,
    stop: AtomicBool,
    cdr: CdrService,
    metrics: Arc<Metrics>,
}

impl Calls {
    /// The table and its writer thread, which runs until [`Calls::stop`].
    pub(crate) fn spawn(cdr: CdrService, metrics: Arc<Metrics>) -> std::io::Result<Arc<Calls>> {
        let mut ledger = Ledger::new();
        let now = Instant::now();
        for call_sid in cdr.recovered_call_sids() {
            ledger.remember_written(now, call_sid);
        }
        let calls = Arc::new(Calls {
            ledger: Mutex::new(ledger),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            cdr,
            metrics,
        });
        // A weak handle: the thread ends with the server, not the other way round.
        let runner = Arc::downgrade(&calls);
        std::thread::Builder::new().name("voxproxy-calls".into()).spawn(move || {
            while let Some(calls) = runner.upgrade() {
                if !calls.run_once() {
                    break;
                }
            }
        })?;
        Ok(calls)
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The voice webhook answered `call` on `route`.
    pub(crate) fn voice(&self, call: &CallDetails, route: &str) {
        let wall = rfc3339_utc(SystemTime::now());
        let mut ledger = self.lock();
        let outcome = ledger.handle_voice(Instant::now(), &wall, &status_input(call), route);
        self.after(&mut ledger, outcome, &call.call_sid);
    }

    /// A call status callback.
    pub(crate) fn status(&self, call: &CallDetails) {
        let wall = rfc3339_utc(SystemTime::now());
        let mut ledger = self.lock();
        let outcome = ledger.handle_status(Instant::now(), &wall, &status_input(call));
        self.after(&mut ledger, outcome, &call.call_sid);
    }

    /// The SIP listener's facts about a call a PBX placed; `status` names
    /// the call (and fills its record if this is the first news of it).
    pub(crate) fn sip(&self, status: &StatusInput<'_>, sip: &SipInput) {
        let wall = rfc3339_utc(SystemTime::now());
        let mut ledger = self.lock();
        let outcome = ledger.handle_sip(Instant::now(), &wall, status, sip);
        self.after(&mut ledger, outcome, status.call_sid);
    }

    /// The forward's outcome, or what a `<Connect action>` decided.
    pub(crate) fn dial(&self, call_sid: &str, dial: Option<&str>, missed: Option<&str>, ends_call: bool) {
        self.lock().handle_dial(Instant::now(), call_sid, dial, missed, ends_call);
        self.wake.notify_one();
    }

    /// A stream started; `known` is its record so far. `Some` when the
    /// table tracks the call: its one journal entry (if journaling), and the
    /// stream's record goes to [`Calls::stream_ended`]. `None` when the
    /// table cannot take it (full, or the call's record is already
    /// written): the stream journals and writes its own record.
    pub(crate) fn stream_started(
        &self,
        known: &CallRecord,
        started: SystemTime,
    ) -> Option<Option<JournalId>> {
        let mut ledger = self.lock();
        let call_sid = known.call_sid.clone();
        match ledger.handle_stream_started(Instant::now(), known) {
            Outcome::Late => self.metrics.ledger(LATE),
            Outcome::Full => self.metrics.ledger(FULL),
            Outcome::New | Outcome::Known => {}
        }
        let record = ledger.record_of(&call_sid)?;
        match ledger.journal_of(&call_sid) {
            // First journaled by a webhook: the entry now holds the stream's record.
            Some(id) => self.cdr.journal_restart(id, record, started),
            None => {
                let id = self.cdr.journal_start(record, started);
                ledger.set_journal(&call_sid, id);
            }
        }
        Some(ledger.journal_of(&call_sid))
    }

    /// A stream ended with `record`: the call's record waits in the table
    /// (and, whole, in the journal) for the call's end.
    pub(crate) fn stream_ended(&self, record: CallRecord) {
        let mut ledger = self.lock();
        if let Some((id, snapshot)) = ledger.handle_stream_ended(Instant::now(), record) {
            self.cdr.journal_stash(id, snapshot);
        }
        drop(ledger);
        self.wake.notify_one();
    }

    /// A Twilio-side recording of the call is being requested; see
    /// [`Ledger::handle_recording_requested`].
    pub(crate) fn recording_requested(&self, call_sid: &str) {
        self.lock().handle_recording_requested(call_sid);
    }

    /// News of the call's Twilio-side recording (the request's answer or a
    /// status callback); `false` when the call's record is written already.
    pub(crate) fn recording(&self, input: &RecordingInput<'_>) -> bool {
        let mut ledger = self.lock();
        let outcome = ledger.handle_recording(Instant::now(), input);
        if outcome == Outcome::Late {
            self.metrics.ledger(LATE);
        }
        drop(ledger);
        self.wake.notify_one();
        outcome != Outcome::Late
    }

    /// The call's backend leg failed; see [`Ledger::handle_leg_failed`].
    pub(crate) fn leg_failed(&self, call_sid: &str) {
        self.lock().handle_leg_failed(call_sid);
    }

    /// Whether this instance gave up on the call's backend leg.
    pub(crate) fn leg_failed_of(&self, call_sid: &str) -> bool {
        self.lock().leg_failed(call_sid)
    }

    /// Counts what an input did and journals a new call.
    fn after(&self, ledger: &mut Ledger, outcome: Outcome, call_sid: &str) {
        match outcome {
            Outcome::New => {
                if let Some(record) = ledger.record_of(call_sid) {
                    let id = self.cdr.journal_start(record, SystemTime::now());
                    ledger.set_journal(call_sid, id);
                }
            }
            Outcome::Late => self.metrics.ledger(LATE),
            Outcome::Full => self.metrics.ledger(FULL),
            Outcome::Known => {}
        }
        self.wake.notify_one();
    }

    /// Stops the writer thread and writes every call still in the table
    /// with what is known (the daemon is exiting). Blocks until written.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_one();
        let ready = self.lock().drain_all(Instant::now());
        self.write(ready, Some(SHUTDOWN));
    }

    /// Writes what is ready, or waits for the next timer (at most
    /// [`TICK`]); `false` once stopped.
    fn run_once(&self) -> bool {
        if self.stop.load(Ordering::Acquire) {
            return false;
        }
        let mut ledger = self.lock();
        let now = Instant::now();
        let mut batch = Vec::new();
        while let Some(ready) = ledger.poll_ready(now) {
            batch.push(ready);
        }
        if batch.is_empty() {
            let wait = ledger.poll_timeout().map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
            drop(self.wake.wait_timeout(ledger, wait).unwrap_or_else(PoisonError::into_inner));
            return true;
        }
        drop(ledger);
        self.write(batch, None);
        true
    }

    /// Writes a batch under one `fsync`; `slot` overrides why each was
    /// written (shutdown).
    fn write(&self, batch: Vec<Ready>, slot: Option<usize>) {
        let mut records = Vec::with_capacity(batch.len());
        for Ready { record, journal, why } in batch {
            self.metrics.ledger(slot.unwrap_or(match why {
                ReadyWhy::Complete => 0,
                ReadyWhy::NoStatusCallback => 1,
                ReadyWhy::Aged => 2,
                ReadyWhy::Evicted => 3,
                ReadyWhy::NoRecordingStatus => NO_RECORDING_STATUS,
            }));
            records.push((record, journal));
        }
        // Kept for the log, should the writer refuse one.
        let copies: Vec<CallRecord> = records.iter().map(|(r, _)| r.clone()).collect();
        for (result, record) in self.cdr.write_all_blocking(records).into_iter().zip(copies) {
            if let Err(e) = result {
                self.metrics.ledger(WRITE_FAILED);
                let line = serde_json::to_string(&record).unwrap_or_default();
                tracing::error!(error = %e, record = %line, "call record not written");
            }
        }
    }
}

fn status_input(call: &CallDetails) -> StatusInput<'_> {
    StatusInput {
        call_sid: &call.call_sid,
        account_sid: &call.account_sid,
        from: &call.from,
        to: &call.to,
        status: call.call_status.as_str(),
        is_final: call.call_status.is_final(),
    }
}
