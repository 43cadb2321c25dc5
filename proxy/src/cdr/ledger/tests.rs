use super::*;

const SID: &str = "CA0123456789abcdef0123456789abcdef";

fn status<'a>(sid: &'a str, status: &'static str, is_final: bool) -> StatusInput<'a> {
    StatusInput {
        call_sid: sid,
        account_sid: "AC1",
        from: "+15550001111",
        to: "+15550002222",
        status,
        is_final,
    }
}

fn stream_record(sid: &str, stream: &str) -> CallRecord {
    CallRecord {
        call_sid: sid.into(),
        stream_sid: stream.into(),
        started_at: "2026-01-01T00:00:01.000Z".into(),
        ..CallRecord::default()
    }
}

fn ended(mut record: CallRecord, reason: &str) -> CallRecord {
    record.ended_at = "2026-01-01T00:00:09.000Z".into();
    record.end_reason = reason.into();
    record.inbound_frames = 400;
    record
}

#[test]
fn a_streamed_call_is_written_once_when_its_final_status_arrives() {
    let t = Instant::now();
    let mut l = Ledger::new();
    assert_eq!(l.handle_voice(t, "w0", &status(SID, "ringing", false), "routes[1]"), Outcome::New);
    assert_eq!(l.handle_status(t, "w1", &status(SID, "in-progress", false)), Outcome::Known);
    l.handle_stream_started(t, &stream_record(SID, "MZ1"));
    let _ = l.handle_stream_ended(t, ended(stream_record(SID, "MZ1"), "twilio_stop"));
    assert_eq!(l.poll_ready(t + MAX_AGE / 2), None, "callbacks were seen: wait for the final one");
    assert_eq!(l.handle_status(t, "w2", &status(SID, "completed", true)), Outcome::Known);
    let ready = l.poll_ready(t).expect("complete");
    assert_eq!(ready.why, ReadyWhy::Complete);
    let r = &ready.record;
    assert_eq!((r.stream_sid.as_str(), r.end_reason.as_str(), r.inbound_frames), ("MZ1", "twilio_stop", 400));
    assert_eq!(r.route.as_deref(), Some("routes[1]"));
    assert_eq!(r.call_status.as_deref(), Some("completed"));
    let events: Vec<_> = r.status_events.iter().map(|e| (e.status.as_str(), e.at.as_str())).collect();
    assert_eq!(events, [("ringing", "w0"), ("in-progress", "w1"), ("completed", "w2")]);
    assert_eq!(r.streams, 1);
    assert!(l.is_empty());
    assert_eq!(l.handle_status(t, "w3", &status(SID, "completed", true)), Outcome::Late, "never twice");
    assert_eq!(l.poll_ready(t + MAX_AGE * 2), None);
}

#[test]
fn the_final_status_waits_for_the_open_stream() {
    let t = Instant::now();
    let mut l = Ledger::new();
    l.handle_stream_started(t, &stream_record(SID, "MZ1"));
    l.handle_status(t, "w1", &status(SID, "completed", true));
    assert_eq!(l.poll_ready(t + MAX_AGE * 2), None, "a stream is open");
    let _ = l.handle_stream_ended(t, ended(stream_record(SID, "MZ1"), "websocket_closed"));
    let ready = l.poll_ready(t).expect("complete once the stream ended");
    assert_eq!(ready.record.end_reason, "websocket_closed");
    assert_eq!(ready.record.call_status.as_deref(), Some("completed"));
}

#[test]
fn without_status_callbacks_the_record_is_written_after_the_wait() {
    let t = Instant::now();
    let mut l = Ledger::new();
    l.handle_voice(t, "w0", &status(SID, "ringing", false), "default");
    l.handle_stream_started(t, &stream_record(SID, "MZ1"));
    let end = t + Duration::from_secs(30);
    let _ = l.handle_stream_ended(end, ended(stream_record(SID, "MZ1"), "twilio_stop"));
    assert_eq!(l.poll_timeout(), Some(end + FINAL_STATUS_WAIT));
    assert_eq!(l.poll_ready(end + FINAL_STATUS_WAIT - Duration::from_millis(1)), None);
    let ready = l.poll_ready(end + FINAL_STATUS_WAIT).expect("written after the wait");
    assert_eq!(ready.why, ReadyWhy::NoStatusCallback);
    assert_eq!(ready.record.call_status.as_deref(), Some("ringing"));
}

#[test]
fn a_call_that_never_streamed_gets_a_record_with_its_forward() {
    let t = Instant::now();
    let mut l = Ledger::new();
    l.handle_voice(t, "w0", &status(SID, "ringing", false), "routes[0]");
    l.handle_dial(t, SID, Some("no-answer"), Some("sms"), true);
    // No status callback configured: the hang-up ends it after the wait.
    let ready = l.poll_ready(t + FINAL_STATUS_WAIT).expect("written");
    let r = &ready.record;
    assert_eq!((r.dial_status.as_deref(), r.missed_action.as_deref()), (Some("no-answer"), Some("sms")));
    assert_eq!((r.streams, r.end_reason.as_str(), r.ended_at.as_str()), (0, "no_stream", "w0"));
    assert_eq!(r.stream_sid, "");
}

#[test]
fn a_missed_forward_taken_over_by_the_stream_waits_for_that_stream() {
    let t = Instant::now();
    let mut l = Ledger::new();
    l.handle_voice(t, "w0", &status(SID, "ringing", false), "routes[0]");
    l.handle_dial(t, SID, Some("busy"), Some("stream"), false);
    assert_eq!(l.poll_ready(t + FINAL_STATUS_WAIT * 10), None, "the AI stream is on its way");
    l.handle_stream_started(t, &stream_record(SID, "MZ2"));
    let _ = l.handle_stream_ended(t, ended(stream_record(SID, "MZ2"), "twilio_stop"));
    l.handle_status(t, "w9", &status(SID, "completed", true));
    let r = l.poll_ready(t).expect("complete").record;
    assert_eq!((r.stream_sid.as_str(), r.dial_status.as_deref()), ("MZ2", Some("busy")));
    assert_eq!(r.missed_action.as_deref(), Some("stream"));
}

#[test]
fn a_second_stream_extends_the_first_streams_record() {
    let t = Instant::now();
    let mut l = Ledger::new();
    l.handle_stream_started(t, &stream_record(SID, "MZ1"));
    let _ = l.handle_stream_ended(t, ended(stream_record(SID, "MZ1"), "twilio_stop"));
    l.handle_stream_started(t, &stream_record(SID, "MZ2"));
    let mut second = ended(stream_record(SID, "MZ2"), "hangup");
    second.ended_at = "later".into();
    let _ = l.handle_stream_ended(t, second);
    let r = l.poll_ready(t + FINAL_STATUS_WAIT).expect("written").record;
    assert_eq!(
        (r.stream_sid.as_str(), r.end_reason.as_str(), r.ended_at.as_str()),
        ("MZ1", "hangup", "later")
    );
    assert_eq!(r.streams, 2);
}

#[test]
fn calls_age_out_and_a_full_table_writes_its_oldest_call_early() {
    const CAPACITY: usize = 64;
    let t = Instant::now();
    let mut l = Ledger::with_max_calls(CAPACITY);
    l.handle_voice(t, "w0", &status(SID, "ringing", false), "default");
    assert_eq!(l.poll_timeout(), Some(t + MAX_AGE));
    assert_eq!(l.poll_ready(t + MAX_AGE).map(|r| r.why), Some(ReadyWhy::Aged));

    let sids: Vec<String> = (0..=CAPACITY).map(|i| format!("CA{i:032x}")).collect();
    for (i, sid) in sids.iter().enumerate() {
        let at = t + Duration::from_millis(i as u64);
        l.handle_voice(at, "w", &status(sid, "ringing", false), "default");
    }
    assert_eq!(l.len(), CAPACITY, "bounded");
    let evicted = l.poll_ready(t).expect("the oldest was written");
    assert_eq!((evicted.why, evicted.record.call_sid.as_str()), (ReadyWhy::Evicted, sids[0].as_str()));
}

#[test]
fn a_table_full_of_open_streams_refuses_new_calls() {
    let t = Instant::now();
    let mut l = Ledger::with_max_calls(64);
    for i in 0..64 {
        l.handle_stream_started(t, &stream_record(&format!("CA{i:032x}"), "MZ"));
    }
    assert_eq!(l.handle_voice(t, "w", &status(SID, "ringing", false), "default"), Outcome::Full);
    assert_eq!(l.poll_ready(t + MAX_AGE * 2), None, "open streams never age out");
}

#[test]
fn status_events_are_bounded() {
    let t = Instant::now();
    let mut l = Ledger::new();
    for _ in 0..MAX_STATUS_EVENTS * 2 {
        l.handle_status(t, "w", &status(SID, "ringing", false));
    }
    let r = l.drain_all(t).pop().expect("one").record;
    assert_eq!(r.status_events.len(), MAX_STATUS_EVENTS);
}

#[test]
fn sip_facts_survive_the_stream_record_and_the_latest_win() {
    let t = Instant::now();
    let mut l = Ledger::new();
    let mut sip =
        SipInput { call_id: "abc@pbx".into(), direction: "sip_to_twilio", status: None, hung_up_by: None };
    // First news of the call: it is tracked from here.
    assert_eq!(l.handle_sip(t, "w0", &status(SID, "", false), &sip), Outcome::New);
    l.handle_stream_started(t, &stream_record(SID, "MZ1"));
    sip.status = Some(200);
    assert_eq!(l.handle_sip(t, "w1", &status(SID, "", false), &sip), Outcome::Known);
    let _ = l.handle_stream_ended(t, ended(stream_record(SID, "MZ1"), "hangup"));
    sip.hung_up_by = Some("backend");
    let _ = l.handle_sip(t, "w2", &status(SID, "", false), &sip);
    let _ = l.handle_status(t, "w3", &status(SID, "completed", true));
    let r = l.poll_ready(t).expect("complete").record;
    assert_eq!(r.sip_call_id.as_deref(), Some("abc@pbx"));
    assert_eq!(r.sip_direction.as_deref(), Some("sip_to_twilio"));
    assert_eq!((r.sip_status, r.hung_up_by.as_deref()), (Some(200), Some("backend")));
    assert_eq!((r.stream_sid.as_str(), r.end_reason.as_str()), ("MZ1", "hangup"));
    let events: Vec<_> = r.status_events.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(events, ["completed"], "SIP facts add no call status");
}

fn recording<'a>(status: &'a str, is_final: bool) -> RecordingInput<'a> {
    RecordingInput {
        call_sid: SID,
        sid: Some("RE0123456789abcdef0123456789abcdef"),
        status,
        url: is_final.then_some("https://api.twilio.com/x/Recordings/RE1"),
        duration_s: is_final.then_some(9),
        channels: Some(2),
        error: None,
        is_final,
    }
}

#[test]
fn a_recorded_call_waits_for_the_recording_status_after_its_final_status() {
    let t = Instant::now();
    let mut l = Ledger::new();
    l.handle_voice(t, "w0", &status(SID, "ringing", false), "routes[1]");
    l.handle_stream_started(t, &stream_record(SID, "MZ1"));
    l.handle_recording_requested(SID);
    assert_eq!(l.handle_recording(t, &recording("in-progress", false)), Outcome::Known);
    let _ = l.handle_stream_ended(t, ended(stream_record(SID, "MZ1"), "twilio_stop"));
    l.handle_status(t, "w1", &status(SID, "completed", true));
    assert_eq!(l.poll_ready(t + FINAL_STATUS_WAIT * 2), None, "the recording's final status is awaited");
    assert_eq!(l.poll_timeout(), Some(t + RECORDING_STATUS_WAIT));
    // The answer to the request comes after the callback: it does not undo it.
    l.handle_recording(t, &recording("completed", true));
    let ready = l.poll_ready(t).expect("written once the recording completed");
    assert_eq!(ready.why, ReadyWhy::Complete);
    let rec = ready.record.twilio_recording.expect("in the record");
    assert_eq!(rec.status, "completed");
    assert_eq!(rec.sid.as_deref(), Some("RE0123456789abcdef0123456789abcdef"));
    assert_eq!((rec.duration_s, rec.channels), (Some(9), Some(2)));
    assert_eq!(rec.url.as_deref(), Some("https://api.twilio.com/x/Recordings/RE1"));
    assert_eq!(l.handle_recording(t, &recording("completed", true)), Outcome::Late, "never twice");
}

#[test]
fn a_recording_status_that_never_comes_holds_the_record_a_bounded_time() {
    let t = Instant::now();
    let mut l = Ledger::new();
    l.handle_stream_started(t, &stream_record(SID, "MZ1"));
    l.handle_recording_requested(SID);
    let _ = l.handle_stream_ended(t, ended(stream_record(SID, "MZ1"), "twilio_stop"));
    l.handle_status(t, "w1", &status(SID, "completed", true));
    assert_eq!(l.poll_ready(t + RECORDING_STATUS_WAIT - Duration::from_millis(1)), None);
    let ready = l.poll_ready(t + RECORDING_STATUS_WAIT).expect("written after the wait");
    assert_eq!(ready.why, ReadyWhy::NoRecordingStatus);
    assert_eq!(ready.record.twilio_recording, None, "nothing was heard of it");
}

#[test]
fn a_failed_recording_request_is_in_the_record_and_holds_nothing() {
    let t = Instant::now();
    let mut l = Ledger::new();
    l.handle_stream_started(t, &stream_record(SID, "MZ1"));
    l.handle_recording_requested(SID);
    let failed = RecordingInput {
        sid: None,
        url: None,
        channels: None,
        duration_s: None,
        error: Some("Twilio answered 404: not found"),
        ..recording("failed", true)
    };
    l.handle_recording(t, &failed);
    let _ = l.handle_stream_ended(t, ended(stream_record(SID, "MZ1"), "twilio_stop"));
    l.handle_status(t, "w1", &status(SID, "completed", true));
    let ready = l.poll_ready(t).expect("written at once");
    let rec = ready.record.twilio_recording.expect("the failure is recorded");
    assert_eq!(
        (rec.status.as_str(), rec.error.as_deref()),
        ("failed", Some("Twilio answered 404: not found"))
    );
}
