//! Routes and the call's life: TwiML per called number, forwarding and
//! missed calls (SMS through a fake REST API, AI takeover), status callbacks
//! checked and counted, and exactly one call record per Twilio call.

use std::time::Duration;

use serde_json::Value;

use crate::audio::FRAME;
use crate::harness::{
    ACCOUNT_SID, ADMIN_TOKEN, Backend, FakeRest, FromProxy, HttpResponse, Io, Proxy, TwilioCall, WAIT,
    is_busy_reject, sid,
};

both_io!(
    routes_answer_per_called_number,
    forwards_missed_calls_and_records_each_call_once,
    backend_down_plays_the_fallback,
    calls_waiting_for_their_status_survive_a_crash_once,
    callers_are_limited_per_minute,
    fork_with_both_tracks_reaches_the_backend
);

const CALLER: &str = "+15550001111";
const CLINIC: &str = "+15550002222";
const FORK: &str = "+15550003333";
const OTHER: &str = "+15550007777";
const DESK: &str = "+15550009999";

/// Writes `text` as the config file of a proxy; the directory lives as long
/// as the returned guard.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("voxproxy.toml");
    std::fs::write(&path, text).expect("write config");
    let path = path.to_str().expect("UTF-8 path").to_owned();
    (dir, path)
}

fn params<'a>(call_sid: &'a str, to: &'a str, status: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", status),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("To", to),
    ]
}

async fn signed(proxy: &Proxy, path: &str, params: &[(&str, &str)]) -> HttpResponse {
    let signature = proxy.signer().sign_form(path, params).expect("sign");
    proxy.post_form(path, params, Some(&signature)).await
}

async fn voice(proxy: &Proxy, call_sid: &str, to: &str) -> HttpResponse {
    let response = signed(proxy, "/twilio/voice", &params(call_sid, to, "ringing")).await;
    assert_eq!(response.status, 200, "voice webhook: {}", response.text());
    response
}

async fn status(proxy: &Proxy, call_sid: &str, to: &str, status: &str) {
    let response = signed(proxy, "/twilio/status", &params(call_sid, to, status)).await;
    assert_eq!(response.status, 204, "status callback: {}", response.text());
}

async fn dial_status(proxy: &Proxy, call_sid: &str, to: &str, dial: &str) -> HttpResponse {
    let mut form = params(call_sid, to, "in-progress");
    form.push(("DialCallStatus", dial));
    let response = signed(proxy, "/twilio/dial-status", &form).await;
    assert_eq!(response.status, 200, "dial-status: {}", response.text());
    response
}

/// Waits for the one record of `call_sid`.
async fn wait_call_record(proxy: &Proxy, call_sid: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(record) = proxy.records().into_iter().find(|r| r["call_sid"] == call_sid) {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record of {call_sid} within {WAIT:?}: {:?}",
            proxy.records()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn statuses(record: &Value) -> Vec<String> {
    record["status_events"]
        .as_array()
        .expect("status_events")
        .iter()
        .map(|e| {
            assert!(e["at"].as_str().is_some_and(|t| t.ends_with('Z')), "each status has its time: {e}");
            e["status"].as_str().expect("status").to_owned()
        })
        .collect()
}

/// Follows a `<Connect><Stream>` answer, sends a frame, checks `backend`
/// gets it, and hangs up the stream as Twilio does (`stop`).
async fn stream_to(proxy: &Proxy, call_sid: &str, answer: &HttpResponse, backend: &mut Backend) -> String {
    let mut call = TwilioCall::follow(proxy, call_sid.to_owned(), &answer.twiml()).await;
    call.send_media(&[0x44; FRAME]).await;
    assert_eq!(backend.recv_audio(1, 0).await[0].payload, vec![0x44; FRAME], "the route's backend");
    call.send_stop().await;
    assert!(call.wait_closed(WAIT).await.is_some(), "the stream ends after stop");
    call.stream_sid.clone()
}

async fn routes_answer_per_called_number(io: Io) {
    let mut clinic_backend = Backend::bind().await;
    let mut default_backend = Backend::bind().await;
    let (_dir, path) = config_file(&format!(
        "[[routes]]\nto = \"{CLINIC}\"\nbackend = \"{}\"\ngreeting = \"Thanks for calling Acme Vets.\"\n\
         parameters = {{ tenant_id = \"clinic_123\" }}\n\n\
         [[routes]]\nto = \"{FORK}\"\nmode = \"fork\"\ntrack = \"both_tracks\"\nforward_to = \"{DESK}\"\n\
         forward_timeout = \"20s\"\non_missed = \"hangup\"\n",
        clinic_backend.arg()
    ));
    let proxy = Proxy::start(
        io,
        &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)],
        &["--config", &path, "--backend", &default_backend.arg()],
    );
    let base = proxy.public_url.clone();
    let mut events = proxy.events().await;

    // routes[0]: greeting, then the bidirectional stream with the route's parameters.
    let clinic_call = sid("CA");
    let answer = voice(&proxy, &clinic_call, CLINIC).await;
    // The number sends status callbacks: its record waits for the final one.
    status(&proxy, &clinic_call, CLINIC, "in-progress").await;
    let xml = answer.text();
    assert!(xml.contains("<Say>Thanks for calling Acme Vets.</Say><Connect"), "{xml}");
    assert!(xml.contains(&format!("action=\"{base}/twilio/stream-ended\"")), "{xml}");
    assert!(xml.contains(&format!("name=\"voxproxy_{clinic_call}_1\"")), "{xml}");
    assert!(xml.contains(&format!("statusCallback=\"{base}/twilio/stream-status\"")), "{xml}");
    for parameter in [
        "<Parameter name=\"tenant_id\" value=\"clinic_123\"/>".to_owned(),
        "<Parameter name=\"voxproxy_route\" value=\"routes[0]\"/>".to_owned(),
        format!("<Parameter name=\"To\" value=\"{CLINIC}\"/>"),
        "<Parameter name=\"voxproxy_stream_token\"".to_owned(),
    ] {
        assert!(xml.contains(&parameter), "{parameter} in {xml}");
    }
    let stream_sid = stream_to(&proxy, &clinic_call, &answer, &mut clinic_backend).await;

    // routes[1]: fork both tracks, then forward to the desk.
    let fork_call = sid("CA");
    let xml = voice(&proxy, &fork_call, FORK).await.text();
    assert!(xml.contains("<Start><Stream"), "{xml}");
    assert!(xml.contains("track=\"both_tracks\""), "{xml}");
    assert!(xml.contains("<Parameter name=\"voxproxy_route\" value=\"routes[1]\"/>"), "{xml}");
    assert!(
        xml.contains(&format!("</Start><Dial action=\"{base}/twilio/dial-status\" timeout=\"20\">")),
        "{xml}"
    );
    assert!(xml.contains(DESK), "{xml}");

    // Any other number: the global settings, to the global backend.
    let other_call = sid("CA");
    let answer = voice(&proxy, &other_call, OTHER).await;
    let xml = answer.text();
    assert!(!xml.contains("<Say>") && xml.contains("value=\"default\""), "{xml}");
    stream_to(&proxy, &other_call, &answer, &mut default_backend).await;

    // The call's life: status callbacks land in its record, on SSE and in metrics.
    status(&proxy, &clinic_call, CLINIC, "completed").await;
    let record = wait_call_record(&proxy, &clinic_call).await;
    assert_eq!(record["stream_sid"], stream_sid.as_str());
    assert_eq!(record["route"], "routes[0]");
    assert_eq!(record["call_status"], "completed");
    assert_eq!(statuses(&record), ["ringing", "in-progress", "completed"]);
    assert_eq!(record["custom_parameters"]["tenant_id"], "clinic_123");
    assert!(record["inbound_frames"].as_u64() >= Some(1), "{record}");
    let mut seen = Vec::new();
    while !seen.contains(&"completed".to_owned()) {
        let (name, event) = events.next(WAIT).await.expect("a call_status event");
        if name == "call_status" && event["call_sid"] == clinic_call.as_str() {
            seen.push(event["status"].as_str().expect("status").to_owned());
        }
    }
    assert_eq!(seen, ["in-progress", "completed"]);
    proxy
        .wait_metric("voxproxy_twilio_callbacks_total{kind=\"call_status\",status=\"completed\"}", 1.0)
        .await;
    let record = wait_call_record(&proxy, &other_call).await;
    assert_eq!(
        (record["route"].as_str(), record["call_status"].as_str()),
        (Some("default"), Some("ringing"))
    );
}

async fn forwards_missed_calls_and_records_each_call_once(io: Io) {
    let mut backend = Backend::bind().await;
    let api = fake_messages_api().await;
    let api_base = api.base();
    let (_dir, path) = config_file(&format!(
        "[[routes]]\nto = \"{CLINIC}\"\nforward_to = \"{DESK}\"\non_missed = \"sms\"\n\
         sms_text = \"Sorry we missed you, we will call back shortly.\"\n\n\
         [[routes]]\nto = \"{FORK}\"\nforward_to = \"{DESK}\"\nforward_timeout = \"15s\"\non_missed = \"stream\"\n"
    ));
    let proxy = Proxy::start(
        io,
        &[("TWILIO_ACCOUNT_SID", ACCOUNT_SID), ("VOXPROXY_TWILIO_API_BASE", &api_base)],
        &["--config", &path, "--backend", &backend.arg()],
    );

    // Forward answered: the call ends after the conversation.
    let answered = sid("CA");
    assert!(voice(&proxy, &answered, CLINIC).await.text().contains("<Dial"));
    let xml = dial_status(&proxy, &answered, CLINIC, "completed").await.text();
    assert!(xml.ends_with("<Response><Hangup/></Response>"), "{xml}");
    status(&proxy, &answered, CLINIC, "completed").await;

    // Forward missed: an SMS to the caller, then hang up.
    let missed = sid("CA");
    voice(&proxy, &missed, CLINIC).await;
    let xml = dial_status(&proxy, &missed, CLINIC, "no-answer").await.text();
    assert!(xml.ends_with("<Response><Hangup/></Response>"), "{xml}");
    {
        let sent = api.requests();
        assert_eq!(sent.len(), 1, "one SMS: {sent:?}");
        let (path, body) = (&sent[0].path, &sent[0].body);
        assert_eq!(path, &format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"));
        assert!(body.contains("To=%2B15550001111") && body.contains("From=%2B15550002222"), "{body}");
        assert!(body.contains("Body=Sorry+we+missed+you"), "{body}");
    }
    status(&proxy, &missed, CLINIC, "completed").await;

    // Forward busy on the other route: the AI takes the call over.
    let takeover = sid("CA");
    assert!(voice(&proxy, &takeover, FORK).await.text().contains("timeout=\"15\""));
    let answer = dial_status(&proxy, &takeover, FORK, "busy").await;
    let xml = answer.text();
    assert!(xml.contains(&format!("name=\"voxproxy_{takeover}_2\"")), "{xml}");
    assert!(xml.contains("voxproxy_stream_token"), "{xml}");
    let stream_sid = stream_to(&proxy, &takeover, &answer, &mut backend).await;
    status(&proxy, &takeover, FORK, "completed").await;

    // Bad callback bodies: 400 naming the problem, counted.
    let response =
        signed(&proxy, "/twilio/status", &[("AccountSid", ACCOUNT_SID), ("CallStatus", "completed")]).await;
    assert_eq!(response.status, 400);
    assert!(response.text().contains("call status callback"), "{}", response.text());
    let response = signed(&proxy, "/twilio/dial-status", &params(&sid("CA"), CLINIC, "in-progress")).await;
    assert_eq!(response.status, 400);
    assert!(response.text().contains("DialCallStatus"), "{}", response.text());
    let unsigned = proxy.post_form("/twilio/status", &params(&missed, CLINIC, "completed"), None).await;
    assert_eq!(unsigned.status, 403, "unsigned callbacks are refused");
    proxy.wait_metric("voxproxy_twilio_callbacks_refused_total{kind=\"call_status\"}", 1.0).await;
    proxy.wait_metric("voxproxy_twilio_callbacks_refused_total{kind=\"dial_status\"}", 1.0).await;
    proxy
        .wait_metric("voxproxy_twilio_callbacks_total{kind=\"dial_status\",status=\"no-answer\"}", 1.0)
        .await;

    let record = wait_call_record(&proxy, &answered).await;
    assert_eq!((record["dial_status"].as_str(), record["missed_action"].as_str()), (Some("completed"), None));
    assert_eq!((record["streams"].as_u64(), record["stream_sid"].as_str()), (Some(0), Some("")));
    assert_eq!(statuses(&record), ["ringing", "completed"]);
    let record = wait_call_record(&proxy, &missed).await;
    assert_eq!(
        (record["dial_status"].as_str(), record["missed_action"].as_str()),
        (Some("no-answer"), Some("sms"))
    );
    assert_eq!(record["route"], "routes[0]");
    let record = wait_call_record(&proxy, &takeover).await;
    assert_eq!(
        (record["dial_status"].as_str(), record["missed_action"].as_str()),
        (Some("busy"), Some("stream"))
    );
    assert_eq!(
        (record["stream_sid"].as_str(), record["streams"].as_u64()),
        (Some(stream_sid.as_str()), Some(1))
    );
    assert_eq!(record["route"], "routes[1]");

    // A late duplicate of a final status changes nothing: one line per call.
    status(&proxy, &missed, CLINIC, "completed").await;
    proxy.wait_metric("voxproxy_call_ledger_total{event=\"late_callback\"}", 1.0).await;
    let records = proxy.records();
    assert_eq!(records.len(), 3, "{records:?}");
    for call in [&answered, &missed, &takeover] {
        assert_eq!(records.iter().filter(|r| r["call_sid"] == call.as_str()).count(), 1, "{call}");
    }
}

/// A fake Twilio REST API that accepts every message.
async fn fake_messages_api() -> FakeRest {
    FakeRest::start(|_| {
        let message = serde_json::json!({
            "sid": "SMfeedfacefeedfacefeedfacefeedface",
            "status": "queued",
            "to": "+15550001111",
            "from": "+15550002222",
        });
        (201, message)
    })
    .await
}

async fn backend_down_plays_the_fallback(io: Io) {
    // Bound but silent: a voice stack that is down (plain RTP has no
    // signalling, so silence for rtp.backend_timeout is how it shows).
    let down = Backend::bind().await;
    let api = fake_messages_api().await;
    let api_base = api.base();
    let (_dir, path) = config_file(&format!(
        "[[routes]]\nto = \"{CLINIC}\"\nbackend = \"{}\"\non_missed = \"sms\"\nsms_text = \"We will call you back.\"\n\
         fallback = \"Sorry, nobody can take your call right now.\"\n",
        down.arg()
    ));
    let proxy = Proxy::start(
        io,
        &[("TWILIO_ACCOUNT_SID", ACCOUNT_SID), ("VOXPROXY_TWILIO_API_BASE", &api_base)],
        &["--config", &path],
    );
    let call_sid = sid("CA");
    let answer = voice(&proxy, &call_sid, CLINIC).await;
    status(&proxy, &call_sid, CLINIC, "in-progress").await;
    let mut call = TwilioCall::follow(&proxy, call_sid.clone(), &answer.twiml()).await;
    call.send_media(&[0x55; FRAME]).await;
    // rtp.backend_timeout is 5 s; the check runs every second.
    assert_eq!(call.wait_closed(Duration::from_secs(9)).await, Some(1011), "voxproxy gives up on the leg");

    // Twilio goes on with the <Connect action>: the fallback, the SMS, the end.
    let response = signed(&proxy, "/twilio/stream-ended", &params(&call_sid, CLINIC, "in-progress")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let xml = response.text();
    assert!(
        xml.ends_with("<Say>Sorry, nobody can take your call right now.</Say><Hangup/></Response>"),
        "{xml}"
    );
    assert_eq!(api.requests().len(), 1, "the route's on_missed SMS");
    status(&proxy, &call_sid, CLINIC, "completed").await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(record["end_reason"], "backend_failed");
    assert_eq!(record["missed_action"], "sms");
    assert_eq!(record["call_status"], "completed");

    // A stream that ends normally ends the call: no fallback.
    let normal = sid("CA");
    voice(&proxy, &normal, CLINIC).await;
    let response = signed(&proxy, "/twilio/stream-ended", &params(&normal, CLINIC, "in-progress")).await;
    assert!(response.text().ends_with("<Response><Hangup/></Response>"), "{}", response.text());
}

async fn calls_waiting_for_their_status_survive_a_crash_once(io: Io) {
    let mut backend = Backend::bind().await;
    let (_dir, path) =
        config_file(&format!("[[routes]]\nto = \"{CLINIC}\"\nbackend = \"{}\"\n", backend.arg()));
    let first = Proxy::start(io, &[], &["--config", &path]);
    let cdr = first.cdr_path.to_string_lossy().into_owned();
    // A streamed call whose number sends status callbacks: after its stream
    // it waits for the final status.
    let streamed = sid("CA");
    let answer = voice(&first, &streamed, CLINIC).await;
    status(&first, &streamed, CLINIC, "in-progress").await;
    let stream_sid = stream_to(&first, &streamed, &answer, &mut backend).await;
    // A call still ringing: it never streamed.
    let ringing = sid("CA");
    status(&first, &ringing, OTHER, "ringing").await;
    let journal = first.cdr_path.with_file_name(".cdr.jsonl.journal");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        if text.contains("\"op\":\"unwritten\"") && text.contains(&stream_sid) && text.contains(&ringing) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "journal: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut first = first;
    first.signal("KILL");
    first.wait_exit(WAIT).await;
    assert!(first.records().is_empty(), "both calls were waiting: {:?}", first.records());

    let second = Proxy::start(io, &[("VOXPROXY_CDR_PATH", cdr.as_str())], &["--config", &path]);
    // (Its records go to the first one's file: `cdr.path` named by env.)
    let records = first.records();
    assert_eq!(records.len(), 2, "{records:#?}");
    let record = records.iter().find(|r| r["call_sid"] == streamed.as_str()).expect("the streamed call");
    assert_eq!(record["end_reason"], "twilio_stop", "the stream's own record, counters and all");
    assert!(record["inbound_frames"].as_u64() >= Some(1), "{record}");
    assert_eq!(
        (record["route"].as_str(), record["stream_sid"].as_str()),
        (Some("routes[0]"), Some(stream_sid.as_str()))
    );
    assert_eq!(statuses(record), ["ringing", "in-progress"]);
    let record = records.iter().find(|r| r["call_sid"] == ringing.as_str()).expect("the ringing call");
    assert_eq!(record["end_reason"], "crash");
    // Their final statuses reach the new process: counted, never a second line.
    status(&second, &streamed, CLINIC, "completed").await;
    status(&second, &ringing, OTHER, "completed").await;
    second.wait_metric("voxproxy_call_ledger_total{event=\"late_callback\"}", 2.0).await;
    assert_eq!(first.records().len(), 2);
}

async fn callers_are_limited_per_minute(io: Io) {
    let proxy = Proxy::start(io, &[("VOXPROXY_LIMITS_CALLS_PER_CALLER_PER_MINUTE", "2")], &[]);
    let calls: Vec<String> = (0..3).map(|_| sid("CA")).collect();
    let mut answers = Vec::new();
    for call in &calls {
        answers.push(voice(&proxy, call, OTHER).await.twiml());
    }
    assert!(!is_busy_reject(&answers[0]) && !is_busy_reject(&answers[1]), "{answers:?}");
    assert!(is_busy_reject(&answers[2]), "the third call in a minute is answered busy: {:?}", answers[2]);
    let mut other = params(&calls[0], OTHER, "ringing");
    let another = sid("CA");
    other[2] = ("CallSid", &another);
    other[5] = ("From", "+15550008888");
    let response = signed(&proxy, "/twilio/voice", &other).await;
    assert!(!is_busy_reject(&response.twiml()), "another caller is not limited");
    assert_eq!(proxy.metrics().await.get("voxproxy_calls_refused_total{reason=\"caller_rate\"}"), 1.0);
    // The refused call still gets its one record, with Twilio's final status.
    status(&proxy, &calls[2], OTHER, "busy").await;
    let record = wait_call_record(&proxy, &calls[2]).await;
    assert_eq!((record["call_status"].as_str(), record["streams"].as_u64()), (Some("busy"), Some(0)));
}

/// A fork with `track = "both_tracks"`: the caller's audio and what the
/// caller hears reach the RTP backend as two streams with their own SSRCs,
/// bit-exact in PCMU, and nothing the backend sends goes back to Twilio.
async fn fork_with_both_tracks_reaches_the_backend(io: Io) {
    let mut backend = Backend::bind().await;
    let (_dir, path) = config_file(&format!(
        "[[routes]]\nto = \"{FORK}\"\nmode = \"fork\"\ntrack = \"both_tracks\"\nforward_to = \"{DESK}\"\n"
    ));
    let proxy = Proxy::start(io, &[], &["--config", &path, "--backend", &backend.arg()]);
    let call_sid = sid("CA");
    let answer = voice(&proxy, &call_sid, FORK).await;
    let mut call = TwilioCall::follow_fork(&proxy, call_sid.clone(), &answer.twiml()).await;
    let frames: u8 = 5;
    let caller = |i: u8| vec![0x10 + i; FRAME];
    // 0x7F does not survive a μ-law decode/encode round trip: passthrough must be exact.
    let callee = |i: u8| [vec![0x7F], vec![0x90 + i; FRAME - 1]].concat();
    for i in 0..frames {
        call.send_both_tracks(&caller(i), &callee(i)).await;
    }
    let packets = backend.recv_audio(2 * usize::from(frames), 0).await;
    let mut ssrcs: Vec<u32> = packets.iter().map(|p| p.ssrc).collect();
    ssrcs.dedup();
    ssrcs.sort_unstable();
    ssrcs.dedup();
    assert_eq!(ssrcs.len(), 2, "two RTP streams: {ssrcs:x?}");
    let inbound_ssrc = packets.iter().find(|p| p.payload == caller(0)).expect("the caller's audio").ssrc;
    for (ssrc, expected) in [
        (inbound_ssrc, &caller as &dyn Fn(u8) -> Vec<u8>),
        (ssrcs.iter().copied().find(|&s| s != inbound_ssrc).expect("second SSRC"), &callee),
    ] {
        let stream: Vec<_> = packets.iter().filter(|p| p.ssrc == ssrc).collect();
        assert_eq!(stream.len(), usize::from(frames), "each track's packets on its SSRC");
        for (i, p) in stream.iter().enumerate() {
            assert_eq!(p.payload, expected(i as u8), "packet {i} of {ssrc:x} bit-exact");
            assert_eq!(p.sequence, stream[0].sequence.wrapping_add(i as u16), "sequence continuous");
            assert_eq!(p.timestamp, stream[0].timestamp.wrapping_add(160 * i as u32), "timestamp");
        }
    }
    // The backend answers anyway: a fork is one-way, Twilio gets nothing.
    for _ in 0..5 {
        backend.send_audio(0, &[0x55; FRAME], 160, false).await;
    }
    match call.next(Duration::from_millis(300)).await {
        None => {}
        Some(FromProxy::Media(_) | FromProxy::Mark(_) | FromProxy::Clear) => {
            panic!("the proxy sent audio back on a fork")
        }
        Some(FromProxy::Closed(code)) => panic!("the proxy closed the fork: {code:?}"),
    }
    call.send_stop().await;
    assert!(call.wait_closed(WAIT).await.is_some(), "the stream ends after stop");
    status(&proxy, &call_sid, FORK, "completed").await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(record["route"], "routes[0]");
    assert_eq!(record["inbound_frames"], u64::from(frames), "{record}");
    assert_eq!(record["outbound_track_frames"], u64::from(frames), "{record}");
    assert_eq!(record["outbound_track_rtp_packets"], u64::from(frames), "{record}");
    assert_eq!(record["outbound_frames"], 0, "{record}");
    assert_eq!(record["rtp_ssrc"], inbound_ssrc, "{record}");
    let outbound_ssrc = ssrcs.iter().copied().find(|&s| s != inbound_ssrc);
    assert_eq!(record["outbound_track_ssrc"].as_u64(), outbound_ssrc.map(u64::from), "{record}");
    proxy.wait_metric("voxproxy_rtp_rejected_total{reason=\"one_way\"}", 5.0).await;
}
