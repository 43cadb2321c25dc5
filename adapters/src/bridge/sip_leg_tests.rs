//! The SIP leg driving a bridge, against a scripted PBX on virtual time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use voxproxy_core::Instant;
use voxproxy_core::rtp::{RtpHeader, RtpPacket};

use super::{HungUpBy, LegOutcome, SipBackend};
use crate::bridge::{BridgeConfig, CallBridge, EndReason, Output};
use crate::media_stream::{
    self, AccountSid, CallSid, Dtmf, Media, MediaFormat, Start, StreamSid, Track, Tracks,
};
use crate::sdp::Codec;
use crate::sip::leg::target_uri;
use crate::sip::{CallInfo, LegState, MediaOffer, Message, Method, SipLegConfig, Timers, Transport};

const PBX: ([u8; 4], u16) = ([192, 0, 2, 9], 5060);
const PBX_RTP: ([u8; 4], u16) = ([192, 0, 2, 9], 17_000);

fn sdp(port: u16, pt: u8, name: &str, direction: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=pbx\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pt} 96\r\na=rtpmap:{pt} {name}/8000\r\n\
         a=rtpmap:96 telephone-event/8000\r\na={direction}\r\n"
    )
}

fn sid() -> StreamSid {
    StreamSid::new("MZ00000000000000000000000000000001").unwrap()
}

struct Call {
    bridge: CallBridge,
    sip: SipBackend,
    invite: Message,
    now: Instant,
}

fn call() -> Call {
    call_with(None)
}

fn call_with(ring_timeout: Option<core::time::Duration>) -> Call {
    call_configured(ring_timeout, None)
}

fn call_configured(
    ring_timeout: Option<core::time::Duration>,
    keepalive: Option<core::time::Duration>,
) -> Call {
    let now = Instant::ZERO;
    let mut bridge = CallBridge::new(
        BridgeConfig { backend: Some(SocketAddr::from(([127, 0, 0, 1], 4000))), ..BridgeConfig::default() },
        now,
    )
    .unwrap();
    let start = Start {
        sequence_number: 1,
        stream_sid: sid(),
        account_sid: AccountSid::new("AC00000000000000000000000000000001").unwrap(),
        call_sid: CallSid::new("CA00000000000000000000000000000001").unwrap(),
        tracks: Tracks { inbound: true, outbound: false },
        media_format: MediaFormat::mulaw_8k_mono(),
        custom_parameters: Vec::new(),
    };
    let mut frame = Vec::new();
    media_stream::write_start(&mut frame, &start);
    bridge.handle_twilio(now, &mut frame).unwrap();
    let config = SipLegConfig {
        target: target_uri("sip:agent@192.0.2.9:5060", "", "").unwrap(),
        next_hop: SocketAddr::from(PBX),
        transport: Transport::Udp,
        local: "192.0.2.1:5062".parse().unwrap(),
        media: MediaOffer {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 40_000,
            codec: Codec::Pcmu,
            telephone_event: 101,
        },
        credentials: None,
        timers: Timers::default(),
        keepalive,
        ring_timeout,
        seed: 1,
    };
    let mut sip = SipBackend::new(config, &CallInfo::default(), now, &mut bridge).unwrap();
    let invite = Message::parse(&sip.poll_transmit().unwrap().bytes).unwrap();
    Call { bridge, sip, invite, now }
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

fn in_dialog(c: &Call, method: Method, cseq: u32, body: Option<&str>) -> Message {
    let name = method.to_string();
    let mut m = Message::request(method, "sip:voxproxy@192.0.2.1:5062")
        .with("Via", format!("SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKpbx{cseq}"))
        .with("From", format!("{};tag=pbx", c.invite.header("To").unwrap()))
        .with("To", c.invite.header("From").unwrap())
        .with("Call-ID", c.invite.call_id().unwrap())
        .with("CSeq", format!("{cseq} {name}"));
    if let Some(body) = body {
        m.push("Content-Type", "application/sdp");
        m.body = body.as_bytes().to_vec();
    }
    m
}

impl Call {
    fn feed(&mut self, message: &Message) -> Option<LegOutcome> {
        self.sip.handle_datagram(self.now, SocketAddr::from(PBX), &message.to_bytes());
        self.sip.drive(self.now, &mut self.bridge)
    }

    fn sent_sip(&mut self) -> Vec<Message> {
        core::iter::from_fn(|| self.sip.poll_transmit()).map(|t| Message::parse(&t.bytes).unwrap()).collect()
    }

    /// One 20 ms frame from the caller; returns the RTP (payload type, payload) that left.
    fn caller_frame(&mut self, i: u64) -> Vec<(u8, Vec<u8>)> {
        let mulaw: Vec<u8> = (0..160).map(|k| ((k + i) % 256) as u8).collect();
        let media = Media {
            sequence_number: i + 2,
            stream_sid: sid(),
            track: Track::Inbound,
            chunk: i + 1,
            timestamp_ms: i * 20,
            payload_len: 160,
        };
        let mut frame = Vec::new();
        media_stream::write_inbound_media(&mut frame, &media, &mulaw);
        self.now = Instant::from_millis(i * 20);
        self.bridge.handle_twilio(self.now, &mut frame).unwrap();
        self.rtp_out()
    }

    fn rtp_out(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(o) = self.bridge.poll_output() {
            if let Output::Rtp(d) = o {
                let p = RtpPacket::parse(d).unwrap();
                out.push((p.payload_type(), p.payload().to_vec()));
            }
        }
        out
    }

    /// Backend RTP from `from`; returns the media frames that went to Twilio.
    fn backend_rtp(&mut self, from: SocketAddr, pt: u8, seq: u16) -> usize {
        let mut buf = [0u8; 12 + 160];
        RtpHeader::new(pt, seq, u32::from(seq) * 160, 9).write(&[0x55; 160], &mut buf).unwrap();
        self.bridge.handle_rtp(self.now, from, &buf);
        let mut frames = 0;
        while let Some(o) = self.bridge.poll_output() {
            frames += usize::from(matches!(o, Output::Twilio(t) if t.starts_with(br#"{"event":"media""#)));
        }
        frames
    }
}

#[test]
fn the_answer_sets_address_codec_and_dtmf_type_of_the_rtp() {
    let mut c = call();
    assert!(c.caller_frame(0).is_empty(), "nothing is sent before the SDP answer");
    assert_eq!(c.backend_rtp(SocketAddr::from(PBX_RTP), 8, 1), 0, "nor accepted");
    assert_eq!(c.feed(&reply(&c.invite.clone(), 180, None)), None);
    let ok = reply(&c.invite.clone(), 200, Some(&sdp(17_000, 8, "PCMA", "sendrecv")));
    assert_eq!(c.feed(&ok), None);
    assert_eq!(c.sip.state(), LegState::Confirmed);
    assert_eq!(c.sip.final_status(), Some(200));
    let ack = c.sent_sip();
    assert_eq!(ack[0].method(), Some(Method::Ack));
    assert_eq!(c.bridge.backend_peer(), Some(SocketAddr::from(PBX_RTP)));
    let out = c.caller_frame(1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 8, "PCMA's payload type from the answer");
    let mulaw: Vec<u8> = (0..160).map(|k| ((k + 1) % 256) as u8).collect();
    let mut alaw = vec![0; 160];
    voxproxy_core::g711::transcode(
        voxproxy_core::g711::Law::Mu,
        voxproxy_core::g711::Law::A,
        &mulaw,
        &mut alaw,
    )
    .unwrap();
    assert_eq!(out[0].1, alaw);
    assert_eq!(c.backend_rtp(SocketAddr::from(PBX_RTP), 8, 1), 1, "PBX audio reaches the caller");
    assert_eq!(c.backend_rtp(SocketAddr::from(([192, 0, 2, 66], 17_000)), 8, 2), 0, "others' does not");
    let mut frame = Vec::new();
    media_stream::write_dtmf(
        &mut frame,
        &Dtmf { sequence_number: 9, stream_sid: sid(), track: Track::Inbound, digit: '5' },
    );
    c.bridge.handle_twilio(c.now, &mut frame).unwrap();
    let mut dtmf = c.rtp_out();
    for _ in 0..3 {
        let at = c.bridge.poll_timeout().unwrap();
        c.bridge.handle_timeout(at);
        dtmf.extend(c.rtp_out());
    }
    assert!(
        !dtmf.is_empty() && dtmf.iter().all(|(pt, _)| *pt == 96),
        "RFC 4733 on the answer's type: {dtmf:?}"
    );
}

#[test]
fn early_media_plays_to_the_caller_before_the_answer() {
    let mut c = call();
    let ringing = reply(&c.invite.clone(), 183, Some(&sdp(17_000, 0, "PCMU", "sendrecv")));
    assert_eq!(c.feed(&ringing), None);
    assert_eq!(c.sip.state(), LegState::Early);
    assert_eq!(c.backend_rtp(SocketAddr::from(PBX_RTP), 0, 1), 1);
}

#[test]
fn a_busy_pbx_fails_the_leg_so_the_fallback_plays() {
    let mut c = call();
    let busy = reply(&c.invite.clone(), 486, None);
    assert!(matches!(c.feed(&busy), Some(LegOutcome::Failed { status: 486, .. })));
    assert_eq!(c.bridge.end_reason(), Some(EndReason::BackendFailed));
    assert_eq!(c.sip.final_status(), Some(486));
    assert_eq!(c.sent_sip()[0].method(), Some(Method::Ack), "the 486 is ACKed");
    // The proxy hangs up every leg when its stream closes: the PBX's
    // rejection still says who ended the call.
    c.sip.hangup(c.now);
    assert_eq!(c.sip.hung_up_by(), Some(HungUpBy::Backend));
}

/// Runs the leg's timers until it is finished; returns its outcome.
fn run_timers(c: &mut Call) -> Option<LegOutcome> {
    let mut outcome = None;
    while let Some(at) = c.sip.poll_timeout() {
        c.now = at;
        c.sip.handle_timeout(at);
        let _ = c.sent_sip();
        outcome = outcome.or(c.sip.drive(at, &mut c.bridge));
        if outcome.is_some() {
            // As the proxy does once the stream closes.
            c.sip.hangup(at);
        }
        if c.sip.is_finished() {
            break;
        }
    }
    outcome
}

#[test]
fn a_pbx_gone_silent_is_voxproxy_hanging_up() {
    let mut c = call_configured(None, Some(core::time::Duration::from_secs(30)));
    c.feed(&reply(&c.invite.clone(), 200, Some(&sdp(17_000, 0, "PCMU", "sendrecv"))));
    let _ = c.sent_sip();
    // Nothing answers the keep-alive OPTIONS: the leg ends the call.
    let outcome = run_timers(&mut c);
    assert_eq!(outcome, Some(LegOutcome::RemoteHangup), "the caller is hung up too");
    assert_eq!(c.sip.hung_up_by(), Some(HungUpBy::Voxproxy), "voxproxy's keep-alive gave up");
}

#[test]
fn a_ring_timeout_is_voxproxy_hanging_up() {
    let mut c = call_with(Some(core::time::Duration::from_secs(30)));
    c.feed(&reply(&c.invite.clone(), 180, None));
    let outcome = run_timers(&mut c);
    assert!(matches!(outcome, Some(LegOutcome::Failed { status: 480, .. })), "{outcome:?}");
    assert_eq!(c.sip.hung_up_by(), Some(HungUpBy::Voxproxy));
}

#[test]
fn no_answer_fails_the_leg_after_timer_b() {
    let mut c = call();
    let outcome = run_timers(&mut c);
    assert!(matches!(outcome, Some(LegOutcome::Failed { status: 408, .. })), "{outcome:?}");
    assert_eq!(c.now, Instant::ZERO + Timers::default().timeout());
    assert_eq!(c.bridge.end_reason(), Some(EndReason::BackendFailed));
    assert_eq!(c.sip.hung_up_by(), Some(HungUpBy::Voxproxy), "voxproxy's Timer B gave up");
}

#[test]
fn a_bye_from_the_pbx_ends_the_call() {
    let mut c = call();
    let ok = reply(&c.invite.clone(), 200, Some(&sdp(17_000, 0, "PCMU", "sendrecv")));
    c.feed(&ok);
    let _ = c.sent_sip();
    let bye = in_dialog(&c, Method::Bye, 2, None);
    assert_eq!(c.feed(&bye), Some(LegOutcome::RemoteHangup));
    assert_eq!(c.bridge.end_reason(), Some(EndReason::BackendHangup));
    assert_eq!(c.sip.hung_up_by(), Some(HungUpBy::Backend));
    assert_eq!(c.sent_sip()[0].status(), Some(200));
}

#[test]
fn the_caller_hanging_up_while_it_rings_cancels() {
    let mut c = call();
    c.feed(&reply(&c.invite.clone(), 180, None));
    c.bridge.handle_close(c.now, EndReason::TwilioStop);
    c.sip.hangup(c.now);
    let cancel = c.sent_sip();
    assert_eq!(cancel[0].method(), Some(Method::Cancel));
    c.feed(&reply(&cancel[0], 200, None));
    assert_eq!(c.feed(&reply(&c.invite.clone(), 487, None)), None);
    assert_eq!(c.sip.final_status(), Some(487));
    assert_eq!(c.sip.hung_up_by(), Some(HungUpBy::Twilio));
    assert_eq!(c.bridge.end_reason(), Some(EndReason::TwilioStop), "a cancel is no failure");
}

#[test]
fn a_reinvite_to_sendonly_holds_and_a_new_address_resumes() {
    let mut c = call();
    c.feed(&reply(&c.invite.clone(), 200, Some(&sdp(17_000, 0, "PCMU", "sendrecv"))));
    let _ = c.sent_sip();
    assert_eq!(c.caller_frame(1).len(), 1);
    let hold = in_dialog(&c, Method::Invite, 2, Some(&sdp(17_000, 0, "PCMU", "sendonly")));
    assert_eq!(c.feed(&hold), None);
    let answer = c.sent_sip();
    assert_eq!(answer[0].status(), Some(200));
    assert!(String::from_utf8_lossy(&answer[0].body).contains("a=recvonly"));
    assert!(c.bridge.is_held());
    assert!(c.caller_frame(2).is_empty(), "no audio to a held PBX");
    assert_eq!(c.backend_rtp(SocketAddr::from(PBX_RTP), 0, 5), 0, "no music on hold to the caller");
    let resume = in_dialog(&c, Method::Invite, 3, Some(&sdp(17_002, 0, "PCMU", "sendrecv")));
    c.feed(&resume);
    assert!(!c.bridge.is_held());
    assert_eq!(c.bridge.backend_peer(), Some(SocketAddr::from(([192, 0, 2, 9], 17_002))));
    assert_eq!(c.caller_frame(3).len(), 1);
    assert_eq!(c.bridge.stats().rtp_dropped_on_hold, 2);
}

#[test]
fn keepalives_to_a_sip_peer_are_silence_in_its_codec_not_unoffered_comfort_noise() {
    for (pt, name, silence) in [(0u8, "PCMU", 0xFFu8), (8, "PCMA", 0xD5)] {
        let mut c = call();
        let ok = reply(&c.invite.clone(), 200, Some(&sdp(17_000, pt, name, "sendrecv")));
        assert_eq!(c.feed(&ok), None);
        let _ = c.sent_sip();
        assert_eq!(c.caller_frame(0).len(), 1);
        // The caller goes quiet: after the keep-alive interval the bridge
        // keeps the PBX's media path open on its own.
        let mut keepalives = Vec::new();
        while keepalives.len() < 2 {
            let at = c.bridge.poll_timeout().expect("a keep-alive is due");
            assert!(at <= Instant::from_millis(10_000), "no keep-alive within 10 s");
            c.now = at;
            c.bridge.handle_timeout(at);
            keepalives.extend(c.rtp_out());
        }
        for (got_pt, payload) in &keepalives {
            assert_eq!(
                *got_pt, pt,
                "{name}: the answer's payload type, never CN (13), which was not offered"
            );
            assert_eq!(payload, &vec![silence; 160], "{name}: one 20 ms packet of silence");
        }
        assert_eq!(c.bridge.stats().rtp_keepalives_sent, 2);
    }
}
