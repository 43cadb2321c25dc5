//! The capture format's round trip, its bounds, redaction, and replays of
//! calls captured the way the proxy captures them, on virtual time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use voxproxy_core::Instant;
use voxproxy_core::rtp::RtpHeader;
use voxproxy_core::time::earliest;

use super::*;
use crate::bridge::{BackendCodec, BridgeConfig, BridgeEvent, CallBridge, EndReason, SipBackend};
use crate::media_stream::{self, AccountSid, CallSid, Media, MediaFormat, Start, StreamSid, Track, Tracks};
use crate::sip::auth::Credentials;
use crate::sip::leg::target_uri;
use crate::sip::{CallInfo, MediaOffer, Message, Method, SipLegConfig, Timers, Transport};
use crate::stream_token::STREAM_TOKEN_PARAMETER;

const BACKEND: ([u8; 4], u16) = ([127, 0, 0, 1], 4000);
const PBX: ([u8; 4], u16) = ([192, 0, 2, 9], 5060);

fn header(leg: LegKind) -> CaptureHeader {
    CaptureHeader {
        voxproxy_version: "0.1.0 (test)".to_owned(),
        leg,
        created_at: Instant::from_millis(5),
        bridge: BridgeConfig {
            backend: Some(SocketAddr::from(BACKEND)),
            ssrc: 0x1234_5678,
            initial_sequence: 999,
            initial_timestamp: 77,
            ..BridgeConfig::default()
        },
    }
}

fn records(bytes: &[u8]) -> Vec<Record<'_>> {
    let (reader, _) = Reader::new(bytes).unwrap();
    reader.map(Result::unwrap).collect()
}

fn taken(encoder: &mut Encoder) -> Vec<u8> {
    let mut out = Vec::new();
    encoder.take_into(&mut out);
    out
}

#[test]
fn the_header_round_trips() {
    for leg in [LegKind::Rtp, LegKind::Sip] {
        let h = header(leg);
        let bytes = taken(&mut Encoder::new(&h, 1 << 20, 0));
        let (_, read) = Reader::new(&bytes).unwrap();
        assert_eq!(read, h);
    }
}

#[test]
fn every_record_kind_round_trips() {
    let mut e = Encoder::new(&header(LegKind::Sip), 1 << 20, 0);
    let at = Instant::from_micros(1_234_567);
    let v6: SocketAddr = "[2001:db8::1]:5004".parse().unwrap();
    e.twilio_text(at, br#"{"event":"media"}"#);
    e.twilio_binary(at);
    e.twilio_activity(at);
    e.close(at, EndReason::BackendHangup);
    e.rtp(at, v6, &[0x80, 0, 1, 2]);
    e.timeout(at);
    e.set_backend(at, None);
    e.set_media(at, BackendCodec::L16Wideband, 97, 101);
    e.sip_datagram(at, SocketAddr::from(PBX), b"SIP/2.0 200 OK\r\n\r\n");
    e.sip_stream(at, b"OPTIONS");
    e.sip_timeout(at);
    e.sip_hangup(at);
    e.sip_drive(at);
    e.output(&crate::bridge::Output::Twilio(b"abc"));
    e.output(&crate::bridge::Output::Ping);
    e.output(&crate::bridge::Output::Rtp(b"rtp"));
    e.output(&crate::bridge::Output::Event(BridgeEvent::Dtmf { digit: '#' }));
    e.output(&crate::bridge::Output::Close { code: 1011, reason: "backend failed" });
    e.deadline(Some(at));
    e.deadline(Some(at));
    e.deadline(None);
    e.end(at);
    let bytes = taken(&mut e);
    let got = records(&bytes);
    let names: Vec<&str> = got.iter().map(Record::name).collect();
    assert_eq!(names.len(), 21, "{names:?}");
    assert!(matches!(got[0], Record::TwilioText { frame: br#"{"event":"media"}"#, .. }));
    assert!(matches!(got[3], Record::Close { reason: EndReason::BackendHangup, .. }));
    assert!(matches!(got[4], Record::Rtp { from, datagram: [0x80, 0, 1, 2], .. } if from == v6));
    assert!(matches!(got[6], Record::SetBackend { backend: None, .. }));
    assert!(matches!(
        got[7],
        Record::SetMedia { codec: BackendCodec::L16Wideband, payload_type: 97, dtmf_payload_type: 101, .. }
    ));
    assert!(
        matches!(got[13], Record::Output(OutputRecord::Twilio { len: 3, digest: d }) if d == digest(b"abc"))
    );
    assert!(matches!(got[16], Record::Output(OutputRecord::Event(BridgeEvent::Dtmf { digit: '#' }))));
    assert!(matches!(got[17], Record::Output(OutputRecord::Close { code: 1011, reason: "backend failed" })));
    assert!(matches!(got[18], Record::Output(OutputRecord::Deadline(Some(t))) if t == at));
    assert!(
        matches!(got[19], Record::Output(OutputRecord::Deadline(None))),
        "an unchanged deadline is not repeated"
    );
    assert!(matches!(got[20], Record::End { .. }));
    assert!(got.iter().take(13).all(|r| r.at() == Some(at)));
}

#[test]
fn the_sip_start_round_trips_without_the_password() {
    let config = sip_config(Some(Credentials { username: "alice".into(), password: "hunter2".into() }));
    let info = CallInfo {
        call_sid: "CA1".into(),
        stream_sid: "MZ1".into(),
        from: "+1415".into(),
        to: "+1650".into(),
        params: vec![("tenant".into(), "clinic".into()), ("b".into(), String::new())],
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    };
    let mut e = Encoder::new(&header(LegKind::Sip), 1 << 20, 0);
    e.sip_start(Instant::from_millis(9), &config, &info);
    let bytes = taken(&mut e);
    assert!(!bytes.windows(7).any(|w| w == b"hunter2"), "the password was captured");
    assert!(!bytes.windows(5).any(|w| w == b"alice"), "the user name was captured");
    let Record::SipStart { start, .. } = &records(&bytes)[0] else { panic!("not a SIP start") };
    assert_eq!(start.info, info);
    assert_eq!(start.config.target, config.target);
    assert_eq!(
        (start.config.next_hop, start.config.local, start.config.media, start.config.seed),
        (config.next_hop, config.local, config.media, config.seed)
    );
    assert_eq!((start.config.keepalive, start.config.ring_timeout), (config.keepalive, config.ring_timeout));
    assert_eq!(start.config.credentials.as_ref().map(|c| c.password.as_str()), Some("redacted"));
}

#[test]
fn the_budget_ends_the_capture_with_a_mark_and_is_never_passed() {
    let max = 600;
    let mut e = Encoder::new(&header(LegKind::Rtp), max, 0);
    for i in 0..100 {
        e.twilio_text(Instant::from_millis(i), &[b'a'; 40]);
    }
    assert!(e.is_stopped());
    let bytes = taken(&mut e);
    assert!(bytes.len() as u64 <= max, "{} > {max}", bytes.len());
    let got = records(&bytes);
    assert!(matches!(got.last(), Some(Record::Truncated(Truncation::SizeLimit))));
    assert!(got[..got.len() - 1].iter().all(|r| matches!(r, Record::TwilioText { .. })));
    // The end mark still fits, after the truncation mark.
    e.end(Instant::from_millis(100));
    let mut file = bytes;
    e.take_into(&mut file);
    assert!(file.len() as u64 <= max, "{} > {max}", file.len());
    assert!(matches!(records(&file).last(), Some(Record::End { .. })));
}

#[test]
fn a_lost_batch_stops_the_capture_after_what_was_written() {
    let mut e = Encoder::new(&header(LegKind::Rtp), 1 << 20, 0);
    e.timeout(Instant::ZERO);
    let mut file = taken(&mut e);
    e.timeout(Instant::ZERO);
    e.drop_pending_and_stop(Truncation::QueueFull);
    e.timeout(Instant::ZERO);
    e.take_into(&mut file);
    let got = records(&file);
    assert_eq!(got.len(), 2);
    assert!(matches!(got[1], Record::Truncated(Truncation::QueueFull)));
}

#[test]
fn bad_files_are_named_errors() {
    let good = {
        let mut e = Encoder::new(&header(LegKind::Rtp), 1 << 20, 0);
        e.twilio_text(Instant::ZERO, b"{}");
        e.end(Instant::ZERO);
        taken(&mut e)
    };
    assert_eq!(Reader::new(b"RIFF....").unwrap_err(), CaptureError::NotACapture);
    let mut v3 = good.clone();
    v3[8] = 3;
    assert_eq!(Reader::new(&v3).unwrap_err(), CaptureError::UnsupportedVersion { found: 3 });
    // Cut inside the last record.
    let cut = &good[..good.len() - 3];
    let (reader, _) = Reader::new(cut).unwrap();
    let last = reader.last().unwrap();
    assert!(matches!(last, Err(CaptureError::Truncated { .. })), "{last:?}");
    // A length past any record's.
    let mut long = good.clone();
    let first_record = header_end(&good);
    long[first_record + 1..first_record + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    let (mut reader, _) = Reader::new(&long).unwrap();
    assert!(matches!(reader.next(), Some(Err(CaptureError::RecordTooLong { .. }))));
    assert!(reader.next().is_none(), "the reader stops at the first error");
    let mut unknown = good;
    unknown[first_record] = 0x7f;
    let (mut reader, _) = Reader::new(&unknown).unwrap();
    let e = reader.next().unwrap().unwrap_err();
    assert!(matches!(e, CaptureError::UnknownKind { kind: 0x7f, .. }));
    assert!(e.to_string().contains("0x7f"), "{e}");
}

/// Offset of the first record after the header.
fn header_end(file: &[u8]) -> usize {
    let len = u32::from_le_bytes(file[11..15].try_into().unwrap()) as usize;
    10 + 5 + len
}

#[test]
fn the_stream_token_never_reaches_a_capture() {
    let frame = format!(
        r#"{{"event":"start","start":{{"customParameters":{{"a":"b", "{STREAM_TOKEN_PARAMETER}" : "c2VjcmV0\/dG9rZW4=","z":"{STREAM_TOKEN_PARAMETER}"}}}}}}"#
    );
    let mut e = Encoder::new(&header(LegKind::Rtp), 1 << 20, 0);
    e.twilio_text(Instant::ZERO, frame.as_bytes());
    let bytes = taken(&mut e);
    let Record::TwilioText { frame: kept, .. } = records(&bytes)[0] else { panic!() };
    let kept = std::str::from_utf8(kept).unwrap();
    assert_eq!(kept.len(), frame.len());
    assert!(!kept.contains("c2VjcmV0"), "{kept}");
    assert!(kept.contains(r#": "xxxxxxxxxxxxxxxxxx","#), "{kept}");
    assert!(
        kept.contains(&format!(r#""z":"{STREAM_TOKEN_PARAMETER}""#)),
        "a value equal to the name is not a token: {kept}"
    );
}

#[test]
fn sip_credentials_are_redacted_in_place() {
    let mut m = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nAuthorization: Digest username=\"alice\",\r\n response=\"0123abcd\"\r\nproxy-authorization :Digest response=\"feed\"\r\nWWW-Authenticate: Digest nonce=\"n\"\r\nContent-Length: 0\r\n\r\n".to_vec();
    let before = m.len();
    redact::sip_credentials(&mut m);
    let text = String::from_utf8(m).unwrap();
    assert_eq!(text.len(), before);
    for secret in ["alice", "0123abcd", "feed", "Digest username"] {
        assert!(!text.contains(secret), "{secret} left in {text}");
    }
    assert!(text.contains("WWW-Authenticate: Digest nonce=\"n\""), "a challenge is no secret: {text}");
    assert!(text.contains("Via: x\r\n") && text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
}

// ---- Replays of calls captured as the proxy captures them ----

/// A call driven like `proxy/src/server/call.rs` drives it, with every
/// input and polled output captured.
struct Driven {
    bridge: CallBridge,
    sip: Option<SipBackend>,
    capture: Encoder,
    now: Instant,
}

impl Driven {
    fn new(leg: LegKind) -> Driven {
        let h = header(leg);
        let bridge = CallBridge::new(h.bridge.clone(), h.created_at).unwrap();
        Driven { bridge, sip: None, capture: Encoder::new(&h, 16 << 20, 64 << 10), now: h.created_at }
    }

    fn twilio(&mut self, frame: &[u8]) {
        self.capture.twilio_text(self.now, frame);
        self.bridge.handle_twilio_activity(self.now);
        let _ = self.bridge.handle_twilio(self.now, &mut frame.to_vec());
        self.drain();
    }

    fn rtp(&mut self, from: SocketAddr, datagram: &[u8]) {
        self.capture.rtp(self.now, from, datagram);
        self.bridge.handle_rtp(self.now, from, datagram);
        self.drain();
    }

    fn tick(&mut self) {
        let due = earliest(self.bridge.poll_timeout(), self.sip.as_ref().and_then(SipBackend::poll_timeout));
        if due.is_some_and(|at| at <= self.now) {
            self.capture.timeout(self.now);
            self.bridge.handle_timeout(self.now);
            if let Some(sip) = &mut self.sip
                && sip.poll_timeout().is_some_and(|at| at <= self.now)
            {
                self.capture.sip_timeout(self.now);
                sip.handle_timeout(self.now);
            }
            self.drain();
        }
    }

    fn sip_in(&mut self, message: &Message) -> Vec<Vec<u8>> {
        let bytes = message.to_bytes();
        self.capture.sip_datagram(self.now, SocketAddr::from(PBX), &bytes);
        self.sip.as_mut().unwrap().handle_datagram(self.now, SocketAddr::from(PBX), &bytes);
        self.drain()
    }

    /// The proxy's turn after an input: the leg's events, its messages,
    /// the bridge's outputs, the next deadline.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        if let Some(sip) = &mut self.sip {
            if sip.leg().has_events() {
                self.capture.sip_drive(self.now);
            }
            let _ = sip.drive(self.now, &mut self.bridge);
            while let Some(t) = sip.poll_transmit() {
                self.capture.sip_output(&t);
                sent.push(t.bytes);
            }
        }
        while let Some(output) = self.bridge.poll_output() {
            self.capture.output(&output);
        }
        let sip_due = self.sip.as_ref().and_then(SipBackend::poll_timeout);
        self.capture.deadline(earliest(self.bridge.poll_timeout(), sip_due));
        sent
    }

    fn finish(mut self) -> Vec<u8> {
        self.capture.end(self.now);
        taken(&mut self.capture)
    }
}

fn start_frame() -> Vec<u8> {
    let start = Start {
        sequence_number: 1,
        stream_sid: StreamSid::new("MZ00000000000000000000000000000001").unwrap(),
        account_sid: AccountSid::new("AC00000000000000000000000000000001").unwrap(),
        call_sid: CallSid::new("CA00000000000000000000000000000001").unwrap(),
        tracks: Tracks { inbound: true, outbound: false },
        media_format: MediaFormat::mulaw_8k_mono(),
        custom_parameters: vec![("From".into(), "+14155550100".into())],
    };
    let mut frame = Vec::new();
    media_stream::write_start(&mut frame, &start);
    frame
}

fn media_frame(i: u64) -> Vec<u8> {
    // Loud enough on odd stretches for the VAD to hear speech.
    let mulaw: Vec<u8> =
        (0..160).map(|k| if (i / 25) % 2 == 1 { (k * 37 % 256) as u8 } else { 0xFF }).collect();
    let media = Media {
        sequence_number: i + 2,
        stream_sid: StreamSid::new("MZ00000000000000000000000000000001").unwrap(),
        track: Track::Inbound,
        chunk: i + 1,
        timestamp_ms: i * 20,
        payload_len: 160,
    };
    let mut frame = Vec::new();
    media_stream::write_inbound_media(&mut frame, &media, &mulaw);
    frame
}

fn rtp_packet(seq: u16, marker: bool) -> Vec<u8> {
    let mut header = RtpHeader::new(0, seq, u32::from(seq) * 160, 0xBAC0_0001);
    header.marker = marker;
    let payload: Vec<u8> = (0..160u16).map(|k| (k as u8).wrapping_mul(seq as u8 | 1)).collect();
    let mut out = vec![0u8; 12 + 160];
    let n = header.write(&payload, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A call with caller speech, backend audio lost and reordered, and a
/// Twilio `stop`: 3 s on virtual time.
fn rtp_call() -> Vec<u8> {
    let mut c = Driven::new(LegKind::Rtp);
    c.twilio(br#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);
    c.twilio(&start_frame());
    let backend = SocketAddr::from(BACKEND);
    // Backend packets 5 and 9 lost, 12 and 13 swapped.
    let order: Vec<u16> = (0..150)
        .filter(|s| *s != 5 && *s != 9)
        .map(|s| match s {
            12 => 13,
            13 => 12,
            s => s,
        })
        .collect();
    for i in 0..150u64 {
        c.now = Instant::from_millis(5 + i * 20);
        c.tick();
        c.twilio(&media_frame(i));
        if let Some(&seq) = order.get(i as usize) {
            c.now = Instant::from_millis(5 + i * 20 + 7);
            c.rtp(backend, &rtp_packet(seq, seq % 50 == 0));
        }
    }
    c.now = Instant::from_millis(3_100);
    c.tick();
    c.twilio(br#"{"event":"stop","sequenceNumber":"200","streamSid":"MZ00000000000000000000000000000001","stop":{"accountSid":"AC00000000000000000000000000000001","callSid":"CA00000000000000000000000000000001"}}"#);
    c.finish()
}

#[test]
fn a_captured_rtp_call_replays_identically() {
    let file = rtp_call();
    let report = replay(&file).unwrap();
    assert_eq!(report.difference, None);
    assert!(report.complete && report.truncated.is_none());
    assert!(
        report.inputs > 300 && report.outputs > 300,
        "{} inputs, {} outputs",
        report.inputs,
        report.outputs
    );
    assert!(
        report.stats.rtp_lost >= 2 && report.stats.rtp_late + report.stats.rtp_reordered >= 1,
        "{:?}",
        report.stats
    );
    let has = |what: &Timeline| report.timeline.iter().any(|e| &e.what == what);
    assert!(
        has(&Timeline::Event(BridgeEvent::StreamStarted)) && has(&Timeline::MarkSent),
        "{:?}",
        report.timeline
    );
    assert!(
        report.timeline.iter().any(|e| matches!(e.what, Timeline::Event(BridgeEvent::SpeechStarted { .. })))
    );
}

#[test]
fn a_changed_output_is_the_first_difference_named() {
    let mut file = rtp_call();
    // Flip the digest of the 40th backend datagram in the capture.
    let (reader, _) = Reader::new(&file).unwrap();
    let mut offset = reader.offset();
    let mut seen = 0;
    let mut target = None;
    for record in reader.clone() {
        let record = record.unwrap();
        if matches!(record, Record::Output(OutputRecord::Rtp { .. })) {
            seen += 1;
            if seen == 40 {
                target = Some(offset);
                break;
            }
        }
        offset = next_offset(&file, offset);
    }
    let at = target.unwrap();
    file[at + 5 + 4] ^= 1;
    let report = replay(&file).unwrap();
    let diff = report.difference.expect("the flipped digest is found");
    assert_eq!(diff.kind, "backend datagram");
    assert_ne!(diff.expected, diff.got);
    assert!(diff.at.is_some() && report.outputs == diff.output_index);
}

fn next_offset(file: &[u8], offset: usize) -> usize {
    offset + 5 + u32::from_le_bytes(file[offset + 1..offset + 5].try_into().unwrap()) as usize
}

#[test]
fn a_missing_output_and_an_extra_one_are_differences() {
    let file = rtp_call();
    // The file without its last output record (before the end mark):
    // the replay has one output more than the capture.
    let (reader, _) = Reader::new(&file).unwrap();
    let mut offset = reader.offset();
    let mut last_output = None;
    for record in reader {
        if matches!(record.unwrap(), Record::Output(OutputRecord::Twilio { .. } | OutputRecord::Close { .. }))
        {
            last_output = Some(offset);
        }
        offset = next_offset(&file, offset);
    }
    let at = last_output.unwrap();
    let mut cut = file[..at].to_vec();
    cut.extend_from_slice(&file[next_offset(&file, at)..]);
    let report = replay(&cut).unwrap();
    assert!(report.difference.is_some(), "a dropped output went unnoticed");
}

fn sip_config(credentials: Option<Credentials>) -> SipLegConfig {
    SipLegConfig {
        target: target_uri("sip:agent@192.0.2.9:5060", "", "").unwrap(),
        next_hop: SocketAddr::from(PBX),
        transport: Transport::Udp,
        local: "192.0.2.1:5062".parse().unwrap(),
        media: MediaOffer {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 40_000,
            codec: BackendCodec::Pcmu,
            telephone_event: 101,
        },
        credentials,
        timers: Timers::default(),
        keepalive: Some(core::time::Duration::from_secs(30)),
        ring_timeout: None,
        seed: 7,
    }
}

fn reply(request: &Message, status: u16, body: Option<&str>) -> Message {
    let mut r = Message::response(status);
    for via in request.header_values("Via") {
        r.push("Via", via);
    }
    for name in ["From", "Call-ID", "CSeq"] {
        r.push(name, request.header(name).unwrap());
    }
    let to = request.header("To").unwrap();
    r.push("To", if to.contains("tag=") { to.to_owned() } else { format!("{to};tag=pbx") });
    r.push("Contact", "<sip:agent@192.0.2.9:5060>");
    if let Some(body) = body {
        r.push("Content-Type", "application/sdp");
        r.body = body.as_bytes().to_vec();
    }
    r
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=pbx\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
     m=audio 17000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=sendrecv\r\n";

/// A SIP call: a 401 challenge answered with credentials, 200 OK, audio
/// both ways, then the PBX's BYE.
fn sip_call(password: &str) -> Vec<u8> {
    let mut c = Driven::new(LegKind::Sip);
    c.twilio(&start_frame());
    let config = sip_config(Some(Credentials { username: "alice".into(), password: password.into() }));
    let info = CallInfo { call_sid: "CA1".into(), ..CallInfo::default() };
    c.capture.sip_start(c.now, &config, &info);
    c.sip = Some(SipBackend::new(config, &info, c.now, &mut c.bridge).unwrap());
    let invite = Message::parse(&c.drain()[0]).unwrap();
    c.now = Instant::from_millis(40);
    let sent =
        c.sip_in(&reply(&invite, 401, None).with("WWW-Authenticate", "Digest realm=\"pbx\", nonce=\"abc\""));
    let authed = sent
        .iter()
        .map(|b| Message::parse(b).unwrap())
        .rfind(|m| m.method() == Some(Method::Invite))
        .expect("an INVITE with credentials");
    assert!(authed.header("Authorization").is_some());
    c.now = Instant::from_millis(80);
    c.sip_in(&reply(&authed, 200, Some(SDP)));
    let pbx_rtp = SocketAddr::from(([192, 0, 2, 9], 17_000));
    for i in 0..50u64 {
        c.now = Instant::from_millis(100 + i * 20);
        c.tick();
        c.twilio(&media_frame(i));
        c.rtp(pbx_rtp, &rtp_packet(i as u16, i == 0));
    }
    c.now = Instant::from_millis(1_200);
    let bye = Message::request(Method::Bye, "sip:voxproxy@192.0.2.1:5062")
        .with("Via", "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKpbxbye")
        .with("From", format!("{};tag=pbx", authed.header("To").unwrap()))
        .with("To", authed.header("From").unwrap())
        .with("Call-ID", authed.call_id().unwrap())
        .with("CSeq", "9 BYE");
    c.sip_in(&bye);
    c.finish()
}

#[test]
fn a_captured_sip_call_replays_identically_without_its_password() {
    let file = sip_call("s3cret-pw");
    assert!(!file.windows(9).any(|w| w == b"s3cret-pw"));
    assert!(!file.windows(5).any(|w| w == b"alice"), "the digest's user name is redacted");
    let report = replay(&file).unwrap();
    assert_eq!(report.difference, None, "{:?}", report.timeline);
    let has = |what: &Timeline| report.timeline.iter().any(|e| &e.what == what);
    assert!(has(&Timeline::SipAnswered), "{:?}", report.timeline);
    assert!(report.timeline.iter().any(|e| matches!(e.what, Timeline::SipInvite(_))));
    assert!(has(&Timeline::Closed { code: 1000, reason: "backend hung up" }), "{:?}", report.timeline);
    assert!(report.stats.rtp_packets_in >= 40, "{:?}", report.stats);
    // Another password gives another digest response, and still the same
    // capture: the response is redacted before its digest.
    assert_eq!(sip_call("other"), file);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever inputs and outputs are captured come back as they went in.
    #[test]
    fn records_round_trip(items in proptest::collection::vec((0u8..8, any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..40)) {
        let mut e = Encoder::new(&header(LegKind::Rtp), u64::MAX, 0);
        let from = SocketAddr::from(BACKEND);
        for (k, t, bytes) in &items {
            let at = Instant::from_nanos(*t);
            match k {
                0 => e.twilio_text(at, bytes),
                1 => e.rtp(at, from, bytes),
                2 => e.sip_stream(at, bytes),
                3 => e.timeout(at),
                4 => e.output(&crate::bridge::Output::Twilio(bytes)),
                5 => e.output(&crate::bridge::Output::Rtp(bytes)),
                6 => e.close(at, EndReason::Hangup),
                _ => e.set_backend(at, Some(from)),
            }
        }
        let file = taken(&mut e);
        let got = records(&file);
        prop_assert_eq!(got.len(), items.len());
        for ((k, t, bytes), record) in items.iter().zip(&got) {
            let at = Instant::from_nanos(*t);
            let ok = match (k, record) {
                (0, Record::TwilioText { at: a, frame }) => *a == at && *frame == bytes.as_slice(),
                (1, Record::Rtp { at: a, from: f, datagram }) => *a == at && *f == from && *datagram == bytes.as_slice(),
                // SIP bytes are redacted, never resized.
                (2, Record::SipStream { at: a, bytes: b }) => *a == at && b.len() == bytes.len(),
                (3, Record::Timeout { at: a }) => *a == at,
                (4, Record::Output(OutputRecord::Twilio { len, digest: d })) => *len as usize == bytes.len() && *d == digest(bytes),
                (5, Record::Output(OutputRecord::Rtp { len, digest: d })) => *len as usize == bytes.len() && *d == digest(bytes),
                (6, Record::Close { at: a, reason: EndReason::Hangup }) => *a == at,
                (7, Record::SetBackend { at: a, backend: Some(b) }) => *a == at && *b == from,
                _ => false,
            };
            prop_assert!(ok, "{:?} came back as {:?}", (k, t), record);
        }
    }

    /// Any damage to a capture is an error or a shorter read, never a panic.
    #[test]
    fn damaged_files_never_panic(cut in 0usize..4000, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let mut e = Encoder::new(&header(LegKind::Sip), u64::MAX, 0);
        e.twilio_text(Instant::ZERO, &start_frame());
        e.sip_start(Instant::ZERO, &sip_config(None), &CallInfo::default());
        e.rtp(Instant::ZERO, SocketAddr::from(BACKEND), &rtp_packet(1, true));
        e.output(&crate::bridge::Output::Close { code: 1000, reason: "call ended" });
        e.end(Instant::ZERO);
        let mut file = taken(&mut e);
        for (at, b) in flips {
            let n = file.len();
            file[at % n] ^= b;
        }
        file.truncate(cut.min(file.len()));
        let _ = replay(&file);
        if let Ok((reader, _)) = Reader::new(&file) {
            for record in reader {
                let _ = record;
            }
        }
    }
}

/// A bot call captured as proxy/src/server/bot_call.rs captures one.
struct BotDriven {
    enc: Encoder,
    call: crate::bot_call::BotCall,
    now: Instant,
}

impl BotDriven {
    fn new() -> BotDriven {
        let h = CaptureHeader {
            bridge: BridgeConfig { backend: None, ..header(LegKind::Bot).bridge },
            ..header(LegKind::Bot)
        };
        let mut enc = Encoder::new(&h, 1 << 24, 0);
        let mut bridge = CallBridge::new(h.bridge.clone(), h.created_at).unwrap();
        let now = h.created_at;
        let mut start = start_frame();
        enc.twilio_text(now, &start);
        bridge.handle_twilio_activity(now);
        bridge.handle_twilio(now, &mut start).unwrap();
        enc.set_backend(now, None);
        let _ = bridge.set_backend(None);
        let bot = BotStart { config: crate::bot::BotConfig::default(), barge_in: true };
        enc.bot_start(now, &bot);
        let call = crate::bot_call::BotCall::new(bridge, bot.config, bot.barge_in, now).unwrap();
        let mut d = BotDriven { enc, call, now };
        d.enc.timeout(now);
        d.call.handle_timeout(now);
        d.drain();
        d
    }

    fn drain(&mut self) {
        while let Some(output) = self.call.poll_twilio() {
            self.enc.twilio_output(&output);
        }
        while let Some(message) = self.call.poll_bot() {
            self.enc.bot_output(&message);
        }
        self.enc.deadline(self.call.poll_timeout());
    }

    fn twilio(&mut self, frame: &[u8]) {
        self.enc.twilio_text(self.now, frame);
        self.call.handle_twilio_activity(self.now);
        let _ = self.call.handle_twilio(self.now, &mut frame.to_vec());
        self.drain();
    }

    fn bot(&mut self, frame: &[u8]) {
        self.enc.bot_text(self.now, frame);
        let _ = self.call.handle_bot_text(self.now, &mut frame.to_vec());
        self.drain();
    }

    fn tick(&mut self) {
        if let Some(due) = self.call.poll_timeout().filter(|&due| due <= self.now) {
            self.enc.timeout(due);
            self.call.handle_timeout(due);
            self.drain();
        }
    }
}

fn bot_call() -> Vec<u8> {
    let mut d = BotDriven::new();
    let sid = "MZ00000000000000000000000000000001";
    for i in 0..150u64 {
        d.now = Instant::from_millis(5 + i * 20);
        d.tick();
        d.twilio(&media_frame(i));
        if i % 10 == 3 {
            let mut payload = Vec::new();
            media_stream::base64::encode_append(&[0x55; 160], &mut payload);
            let payload = String::from_utf8(payload).unwrap();
            d.bot(
                format!(r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"{payload}"}}}}"#)
                    .as_bytes(),
            );
            d.bot(format!(r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"m{i}"}}}}"#).as_bytes());
        }
        if i == 120 {
            d.enc.bot_binary(d.now, b"not for this protocol");
            let _ = d.call.handle_bot_binary(d.now, b"not for this protocol");
            d.drain();
        }
    }
    d.now = Instant::from_millis(3_100);
    d.enc.close(d.now, EndReason::WebSocketClosed);
    d.call.handle_close(d.now, EndReason::WebSocketClosed);
    d.drain();
    d.enc.end(d.now);
    taken(&mut d.enc)
}

#[test]
fn a_captured_bot_call_replays_identically() {
    let file = bot_call();
    let got = records(&file);
    let bot_out = got.iter().filter(|r| matches!(r, Record::Output(OutputRecord::Bot { .. }))).count();
    assert!(bot_out > 150, "caller audio and events went to the bot: {bot_out}");
    assert!(got.iter().any(|r| matches!(r, Record::Output(OutputRecord::BotClose))));
    assert!(got.iter().any(|r| matches!(r, Record::BotStart { start: BotStart { barge_in: true, .. }, .. })));
    let report = replay(&file).unwrap();
    assert_eq!(report.header.leg, LegKind::Bot);
    assert_eq!(report.difference, None);
    assert!(report.complete && report.outputs > 300, "{} outputs", report.outputs);
    assert!(report.timeline.iter().any(|e| e.what == Timeline::BotStarted));
    assert!(report.stats.twilio_frames_in >= 150, "the media frames reached the bridge inside the bot call");
}

#[test]
fn a_changed_output_of_a_bot_call_is_found() {
    let mut file = bot_call();
    let (reader, _) = Reader::new(&file).unwrap();
    let mut offset = reader.offset();
    let mut target = None;
    for record in reader.clone() {
        if matches!(record.unwrap(), Record::Output(OutputRecord::Bot { .. })) {
            target = Some(offset);
            break;
        }
        offset = next_offset(&file, offset);
    }
    file[target.unwrap() + 5 + 4] ^= 1;
    let diff = replay(&file).unwrap().difference.expect("the flipped digest is found");
    assert_eq!(diff.kind, "bot message");
    assert_ne!(diff.expected, diff.got);
}

#[test]
fn a_version_1_file_is_still_read_and_a_version_3_is_not() {
    let mut file = rtp_call();
    file[8..10].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(replay(&file).unwrap().difference, None);
    file[8..10].copy_from_slice(&3u16.to_le_bytes());
    assert_eq!(Reader::new(&file).err(), Some(CaptureError::UnsupportedVersion { found: 3 }));
}

#[test]
fn every_bot_record_kind_round_trips() {
    let mut e = Encoder::new(&header(LegKind::Bot), 1 << 20, 0);
    let at = Instant::from_millis(7);
    let config = crate::bot::BotConfig {
        protocol: crate::bot::BotProtocol::L16(crate::bot::L16Rate::Hz24000),
        max_queued_ms: 1_500,
    };
    e.bot_start(at, &BotStart { config, barge_in: false });
    e.bot_text(at, br#"{"event":"clear"}"#);
    e.bot_binary(at, &[1, 2, 3]);
    e.bot_closed(at);
    e.bot_failed(at);
    e.bot_output(&crate::bot::BotMessage::Text(b"hi"));
    e.bot_output(&crate::bot::BotMessage::Binary(b"pcm"));
    e.bot_output(&crate::bot::BotMessage::Close);
    e.twilio_output(&crate::bot_call::TwilioOutput::Close { code: 1011, reason: "backend failed" });
    let bytes = taken(&mut e);
    let got = records(&bytes);
    assert_eq!(got.len(), 9, "{:?}", got.iter().map(Record::name).collect::<Vec<_>>());
    assert!(
        matches!(got[0], Record::BotStart { start: BotStart { config: c, barge_in: false }, .. } if c == config)
    );
    assert!(matches!(got[1], Record::BotText { frame: br#"{"event":"clear"}"#, .. }));
    assert!(matches!(got[2], Record::BotBinary { data: [1, 2, 3], .. }));
    assert!(matches!(got[3], Record::BotClosed { .. }) && matches!(got[4], Record::BotFailed { .. }));
    assert!(
        matches!(got[5], Record::Output(OutputRecord::Bot { binary: false, len: 2, digest: d }) if d == digest(b"hi"))
    );
    assert!(matches!(got[6], Record::Output(OutputRecord::Bot { binary: true, len: 3, .. })));
    assert!(matches!(got[7], Record::Output(OutputRecord::BotClose)));
    assert!(matches!(got[8], Record::Output(OutputRecord::Close { code: 1011, .. })));
    assert!(got.iter().take(5).all(|r| r.at() == Some(at)));
}
