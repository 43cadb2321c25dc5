//! The UAC leg against a scripted PBX on virtual time.

use super::*;
use crate::sip::message::param;
use std::net::Ipv4Addr;

const PBX: &str = "192.0.2.9:5060";
const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=pbx\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
    m=audio 17000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n";

fn pbx() -> SocketAddr {
    PBX.parse().unwrap()
}

fn config() -> SipLegConfig {
    SipLegConfig {
        target: target_uri("sip:{to}@192.0.2.9:5060", "+1 415 555 0100", "+14155550199").unwrap(),
        next_hop: pbx(),
        transport: Transport::Udp,
        local: "192.0.2.1:5060".parse().unwrap(),
        media: MediaOffer {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 40_000,
            codec: Codec::Pcmu,
            telephone_event: 101,
        },
        credentials: None,
        timers: Timers::default(),
        keepalive: None,
        ring_timeout: None,
        seed: 7,
    }
}

fn info() -> CallInfo {
    CallInfo {
        call_sid: "CA123".into(),
        stream_sid: "MZ456".into(),
        from: "+14155550199".into(),
        to: "+14155550100".into(),
        params: vec![
            ("tenant".into(), "acme\r\nInjected: yes".into()),
            ("bad name!".into(), "x".into()),
            ("Twilio-CallSid".into(), "spoof".into()),
            ("traceparent".into(), "00-spoof".into()),
        ],
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}

fn start(config: SipLegConfig) -> (SipLeg, Instant, Message) {
    let now = Instant::ZERO;
    let mut leg = SipLeg::new(config, &info(), now).unwrap();
    let sent = drain(&mut leg);
    assert_eq!(sent.len(), 1);
    (leg, now, sent.into_iter().next().unwrap())
}

fn drain(leg: &mut SipLeg) -> Vec<Message> {
    core::iter::from_fn(|| leg.poll_transmit()).map(|t| Message::parse(&t.bytes).unwrap()).collect()
}

fn events(leg: &mut SipLeg) -> Vec<LegEvent> {
    core::iter::from_fn(|| leg.poll_event()).collect()
}

fn reply(request: &Message, status: u16, tag: Option<&str>, body: Option<&str>) -> Message {
    let mut r = Message::response(status);
    for via in request.header_values("Via") {
        r.push("Via", via);
    }
    for name in ["From", "Call-ID", "CSeq"] {
        r.push(name, request.header(name).unwrap());
    }
    let to = request.header("To").unwrap();
    r.push("To", tag.map_or_else(|| to.to_owned(), |t| format!("{to};tag={t}")));
    if status < 300 && status > 100 {
        r.push("Contact", "<sip:pbx@192.0.2.9:5060>");
    }
    if let Some(body) = body {
        r.push("Content-Type", "application/sdp");
        r.body = body.as_bytes().to_vec();
    }
    r
}

fn feed(leg: &mut SipLeg, now: Instant, message: &Message) {
    leg.handle_datagram(now, pbx(), &message.to_bytes());
}

/// Runs timers up to `until`, returning what was sent.
fn run(leg: &mut SipLeg, now: &mut Instant, until: Instant) -> Vec<Message> {
    let mut sent = drain(leg);
    while let Some(at) = leg.poll_timeout().filter(|&at| at <= until) {
        *now = at.max(*now);
        leg.handle_timeout(*now);
        sent.extend(drain(leg));
    }
    *now = until;
    sent
}

/// A request from the PBX inside the dialog the leg made.
fn pbx_request(invite: &Message, ok: &Message, method: Method, cseq: u32, branch: &str) -> Message {
    let name = method.to_string();
    Message::request(method, "sip:voxproxy@192.0.2.1:5060")
        .with("Via", format!("SIP/2.0/UDP 192.0.2.9:5060;branch={branch}"))
        .with("From", ok.header("To").unwrap())
        .with("To", invite.header("From").unwrap())
        .with("Call-ID", invite.call_id().unwrap())
        .with("CSeq", format!("{cseq} {name}"))
}

fn answered(leg: &mut SipLeg, now: Instant, invite: &Message) -> Message {
    let ok = reply(invite, 200, Some("pbx1"), Some(ANSWER));
    feed(leg, now, &ok);
    ok
}

#[test]
fn invite_carries_the_call_and_the_offer() {
    let (_, _, invite) = start(config());
    let StartLine::Request { uri, .. } = &invite.start else { panic!() };
    assert_eq!(uri, "sip:+14155550100@192.0.2.9:5060");
    assert!(
        invite.header("From").unwrap().starts_with("\"+14155550199\" <sip:+14155550199@192.0.2.1:5060>;tag=")
    );
    assert_eq!(invite.header("X-Twilio-CallSid"), Some("CA123"));
    assert_eq!(invite.header("X-Twilio-StreamSid"), Some("MZ456"));
    assert_eq!(invite.header("X-Twilio-From"), Some("+14155550199"));
    assert_eq!(invite.header("X-Twilio-To"), Some("+14155550100"));
    assert_eq!(invite.header("X-tenant"), Some("acmeInjected: yes"), "no header injection");
    assert_eq!(invite.header("X-badname"), Some("x"));
    assert_eq!(invite.header_values("X-Twilio-CallSid").count(), 1, "parameters cannot spoof X-Twilio-*");
    assert_eq!(invite.header("Supported"), Some("timer"));
    // The call's trace continues at the PBX (W3C Trace Context over SIP).
    assert_eq!(invite.header("traceparent"), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    assert_eq!(
        invite.header_values("traceparent").count(),
        1,
        "a parameter is X-traceparent, not a second one"
    );
    let offer = SessionDescription::parse(&invite.body).unwrap();
    let numbers: Vec<u8> = offer.payload_types.iter().map(|pt| pt.number).collect();
    assert_eq!(numbers, vec![0, 8, 101]);
    assert_eq!(offer.port, 40_000);

    let mut l16 = config();
    l16.media.codec = Codec::L16Wideband;
    let (_, _, invite) = start(l16);
    let offer = SessionDescription::parse(&invite.body).unwrap();
    assert_eq!(offer.first_codec(), Some((Codec::L16Wideband, Codec::L16Wideband.default_payload_type())));
    assert_eq!(offer.payload_types.len(), 4);
}

#[test]
fn ringing_answer_ack_and_remote_bye() {
    let (mut leg, now, invite) = start(config());
    feed(&mut leg, now, &reply(&invite, 100, None, None));
    feed(&mut leg, now, &reply(&invite, 180, Some("pbx1"), None));
    assert_eq!(events(&mut leg), vec![LegEvent::Ringing]);
    assert_eq!(leg.state(), LegState::Early);
    let ok = answered(&mut leg, now, &invite);
    let media = Media {
        address: "192.0.2.9:17000".parse().unwrap(),
        codec: Codec::Pcma,
        payload_type: 8,
        telephone_event: Some(101),
        direction: Direction::SendRecv,
        ptime: Some(20),
    };
    assert_eq!(events(&mut leg), vec![LegEvent::Answered(media)]);
    let sent = drain(&mut leg);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method(), Some(Method::Ack));
    assert_eq!(sent[0].cseq(), Some((1, Method::Ack)));
    assert_eq!(sent[0].header("To"), ok.header("To"));
    let StartLine::Request { uri, .. } = &sent[0].start else { panic!() };
    assert_eq!(uri, "sip:pbx@192.0.2.9:5060", "ACK goes to the remote target");
    assert_ne!(sent[0].top_branch(), invite.top_branch(), "the 2xx ACK is a new transaction");

    let bye = pbx_request(&invite, &ok, Method::Bye, 1, "z9hG4bKbye");
    feed(&mut leg, now, &bye);
    assert_eq!(events(&mut leg), vec![LegEvent::Ended { by_remote: true, reason: EndReason::RemoteBye }]);
    let sent = drain(&mut leg);
    assert_eq!(sent[0].status(), Some(200));
    assert_eq!(sent[0].header("To"), bye.header("To"));
    feed(&mut leg, now, &bye);
    assert_eq!(drain(&mut leg)[0].status(), Some(200), "retransmitted BYE answered from the transaction");
    let mut now = now;
    let later = now + Duration::from_secs(40);
    let _ = run(&mut leg, &mut now, later);
    assert!(leg.is_finished());
    assert_eq!(leg.counters().requests_received[2], 2);
}

/// A deterministic lossy link: drops the messages whose index is listed.
struct Lossy {
    drops: Vec<usize>,
    seen: usize,
}

impl Lossy {
    fn pass(&mut self) -> bool {
        self.seen += 1;
        !self.drops.contains(&(self.seen - 1))
    }
}

#[test]
fn lossy_network_retransmits_invite_and_reacks_2xx() {
    let (mut leg, mut now, invite) = start(config());
    let mut uplink = Lossy { drops: vec![0, 1], seen: 1 };
    // The INVITE (index 0) was lost; the retransmission at 0.5 s too; the one at 1.5 s arrives.
    let mut arrived = None;
    while arrived.is_none() {
        let next = leg.poll_timeout().unwrap();
        for message in run(&mut leg, &mut now, next) {
            if uplink.pass() {
                arrived = Some((now, message));
            }
        }
    }
    let (_, got) = arrived.unwrap();
    assert_eq!(got, invite, "retransmissions are byte-identical");
    assert_eq!(leg.invite.retransmissions(), 2);
    // The PBX answers; the first ACK is lost, so the PBX retransmits its 2xx.
    let ok = answered(&mut leg, now, &invite);
    let first_ack = drain(&mut leg);
    assert_eq!(first_ack.len(), 1);
    for _ in 0..3 {
        feed(&mut leg, now, &ok);
        assert_eq!(drain(&mut leg), first_ack, "each 2xx retransmission is re-ACKed");
    }
    assert_eq!(events(&mut leg).len(), 1, "answered once");
}

#[test]
fn no_answer_fails_with_timer_b() {
    let (mut leg, mut now, _) = start(config());
    let begin = now;
    let sent = run(&mut leg, &mut now, begin + Duration::from_secs(40));
    assert_eq!(sent.len(), 6, "Timer A retransmissions");
    assert_eq!(
        events(&mut leg),
        vec![LegEvent::Failed {
            status: 408,
            reason: "no final response to INVITE (Timer B)".into(),
            by_remote: false
        }]
    );
    assert_eq!(leg.counters().timeouts, 1);
}

/// A PBX that rings and rings: at the ring timeout the INVITE is
/// cancelled and the leg fails once (480), its 487 reported no more; the
/// same timer never fires for an answered call.
#[test]
fn ringing_past_the_ring_timeout_cancels_and_fails_once() {
    let ring = Duration::from_secs(20);
    let (mut leg, mut now, invite) = start(SipLegConfig { ring_timeout: Some(ring), ..config() });
    feed(&mut leg, now, &reply(&invite, 180, Some("r"), None));
    assert_eq!(events(&mut leg), vec![LegEvent::Ringing]);
    let begin = now;
    let sent = run(&mut leg, &mut now, begin + ring - Duration::from_millis(1));
    assert!(sent.iter().all(|m| m.method() != Some(Method::Cancel)), "still ringing");
    let sent = run(&mut leg, &mut now, begin + ring);
    let cancel =
        sent.iter().find(|m| m.method() == Some(Method::Cancel)).expect("CANCEL at the ring timeout");
    assert_eq!(
        events(&mut leg),
        vec![LegEvent::Failed { status: 480, reason: "no answer (ring timeout)".into(), by_remote: false }]
    );
    feed(&mut leg, now, &reply(cancel, 200, Some("r"), None));
    feed(&mut leg, now, &reply(&invite, 487, Some("r"), None));
    let _ = run(&mut leg, &mut now, begin + Duration::from_secs(60));
    assert_eq!(events(&mut leg), vec![], "one final outcome");
    assert_eq!(leg.state(), LegState::Ended);

    let (mut leg, mut now, invite) = start(SipLegConfig { ring_timeout: Some(ring), ..config() });
    let _ok = answered(&mut leg, now, &invite);
    let _ = events(&mut leg);
    let begin = now;
    let sent = run(&mut leg, &mut now, begin + ring * 2);
    assert!(sent.iter().all(|m| m.method() != Some(Method::Cancel) && m.method() != Some(Method::Bye)));
    assert_eq!(events(&mut leg), vec![], "an answered call does not time out");
}

#[test]
fn busy_is_acked_and_fails() {
    let (mut leg, now, invite) = start(config());
    feed(&mut leg, now, &reply(&invite, 486, Some("x"), None));
    let sent = drain(&mut leg);
    assert_eq!(sent[0].method(), Some(Method::Ack));
    assert_eq!(sent[0].top_branch(), invite.top_branch(), "non-2xx ACK shares the INVITE's branch");
    assert_eq!(
        events(&mut leg),
        vec![LegEvent::Failed { status: 486, reason: "Busy Here".into(), by_remote: true }]
    );
}

#[test]
fn forked_answers_keep_the_first_and_bye_the_others() {
    let (mut leg, now, invite) = start(config());
    feed(&mut leg, now, &reply(&invite, 180, Some("a"), None));
    feed(&mut leg, now, &reply(&invite, 183, Some("b"), Some(ANSWER)));
    let early = events(&mut leg);
    assert_eq!(early[0], LegEvent::Ringing);
    assert!(matches!(early[1], LegEvent::EarlyMedia(m) if m.codec == Codec::Pcma));
    feed(&mut leg, now, &reply(&invite, 200, Some("a"), Some(ANSWER)));
    feed(&mut leg, now, &reply(&invite, 200, Some("b"), Some(ANSWER)));
    assert!(matches!(events(&mut leg)[..], [LegEvent::Answered(_)]));
    let sent = drain(&mut leg);
    let summary: Vec<_> = sent
        .iter()
        .map(|m| (m.method().unwrap(), param(m.header("To").unwrap(), "tag").unwrap().to_owned()))
        .collect();
    assert_eq!(
        summary,
        vec![(Method::Ack, "a".into()), (Method::Ack, "b".into()), (Method::Bye, "b".into())],
        "{sent:#?}"
    );
    assert_eq!(leg.state(), LegState::Confirmed);
}

#[test]
fn out_of_order_provisional_after_2xx_is_ignored() {
    let (mut leg, now, invite) = start(config());
    answered(&mut leg, now, &invite);
    feed(&mut leg, now, &reply(&invite, 180, Some("pbx1"), None));
    feed(&mut leg, now, &reply(&invite, 183, Some("pbx1"), Some(ANSWER)));
    assert!(matches!(events(&mut leg)[..], [LegEvent::Answered(_)]));
    assert_eq!(leg.state(), LegState::Confirmed);
}

#[test]
fn hangup_before_any_response_cancels_on_the_first_provisional() {
    let (mut leg, now, invite) = start(config());
    leg.hangup(now);
    assert!(drain(&mut leg).is_empty(), "no CANCEL before a provisional response");
    feed(&mut leg, now, &reply(&invite, 100, None, None));
    let cancel = drain(&mut leg);
    assert_eq!(cancel.len(), 1);
    assert_eq!(cancel[0].method(), Some(Method::Cancel));
    assert_eq!(cancel[0].top_branch(), invite.top_branch());
    assert_eq!(cancel[0].cseq(), Some((1, Method::Cancel)));
    feed(&mut leg, now, &reply(&cancel[0], 200, Some("t"), None));
    feed(&mut leg, now, &reply(&invite, 487, Some("t"), None));
    assert_eq!(drain(&mut leg)[0].method(), Some(Method::Ack));
    assert_eq!(events(&mut leg), vec![LegEvent::Ended { by_remote: false, reason: EndReason::LocalHangup }]);
}

#[test]
fn answer_crossing_cancel_is_acked_and_byed() {
    let (mut leg, now, invite) = start(config());
    feed(&mut leg, now, &reply(&invite, 180, Some("pbx1"), None));
    leg.hangup(now);
    assert_eq!(drain(&mut leg)[0].method(), Some(Method::Cancel));
    let ok = answered(&mut leg, now, &invite);
    let sent: Vec<_> = drain(&mut leg).iter().map(|m| m.method().unwrap()).collect();
    assert_eq!(sent, vec![Method::Ack, Method::Bye]);
    let bye = Message::parse(&leg.clients[0].request().to_bytes()).unwrap();
    feed(&mut leg, now, &reply(&bye, 200, None, None));
    let got = events(&mut leg);
    assert_eq!(
        got,
        vec![LegEvent::Ringing, LegEvent::Ended { by_remote: false, reason: EndReason::LocalHangup }]
    );
    assert_eq!(ok.status(), Some(200));
}

#[test]
fn cancel_without_final_response_gives_up() {
    let (mut leg, mut now, invite) = start(config());
    feed(&mut leg, now, &reply(&invite, 180, Some("pbx1"), None));
    leg.hangup(now);
    let begin = now;
    let _ = run(&mut leg, &mut now, begin + Duration::from_secs(33));
    assert_eq!(
        events(&mut leg).last(),
        Some(&LegEvent::Ended { by_remote: false, reason: EndReason::LocalHangup })
    );
}

#[test]
fn digest_challenge_is_answered_once() {
    let mut config = config();
    config.credentials = Some(Credentials { username: "alice".into(), password: "secret".into() });
    let (mut leg, now, invite) = start(config);
    let challenge = reply(&invite, 407, Some("p"), None)
        .with("Proxy-Authenticate", "Digest realm=\"pbx\", nonce=\"abc\", qop=\"auth\", algorithm=SHA-256");
    feed(&mut leg, now, &challenge);
    let sent = drain(&mut leg);
    assert_eq!(
        sent.iter().map(|m| m.method().unwrap()).collect::<Vec<_>>(),
        vec![Method::Ack, Method::Invite]
    );
    let retry = &sent[1];
    assert_eq!(retry.cseq(), Some((2, Method::Invite)));
    assert_eq!(retry.call_id(), invite.call_id());
    assert_eq!(retry.header("From"), invite.header("From"));
    assert_ne!(retry.top_branch(), invite.top_branch());
    let auth = retry.header("Proxy-Authorization").unwrap();
    assert!(auth.contains("algorithm=SHA-256") && auth.contains("username=\"alice\""), "{auth}");
    assert!(events(&mut leg).is_empty());
    feed(
        &mut leg,
        now,
        &reply(retry, 407, Some("p"), None).with("Proxy-Authenticate", "Digest realm=\"pbx\", nonce=\"def\""),
    );
    assert_eq!(
        events(&mut leg),
        vec![LegEvent::Failed {
            status: 407,
            reason: "Proxy Authentication Required".into(),
            by_remote: true
        }]
    );
}

#[test]
fn challenge_without_credentials_fails() {
    let (mut leg, now, invite) = start(config());
    feed(
        &mut leg,
        now,
        &reply(&invite, 401, Some("p"), None).with("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\""),
    );
    assert!(matches!(events(&mut leg)[..], [LegEvent::Failed { status: 401, .. }]));
}

#[test]
fn one_redirect_is_followed() {
    let (mut leg, now, invite) = start(config());
    feed(&mut leg, now, &reply(&invite, 302, Some("r"), None).with("Contact", "<sip:agent@192.0.2.77:5070>"));
    let sent = drain(&mut leg);
    assert_eq!(sent[0].method(), Some(Method::Ack));
    let StartLine::Request { uri, .. } = &sent[1].start else { panic!() };
    assert_eq!(uri, "sip:agent@192.0.2.77:5070");
    let again = sent[1].clone();
    feed(&mut leg, now, &reply(&again, 302, Some("r"), None).with("Contact", "<sip:x@192.0.2.78>"));
    assert!(matches!(events(&mut leg)[..], [LegEvent::Failed { status: 302, .. }]));
}

#[test]
fn reinvite_hold_is_answered_and_its_2xx_retransmitted_until_ack() {
    let (mut leg, mut now, invite) = start(config());
    let ok = answered(&mut leg, now, &invite);
    let _ = (events(&mut leg), drain(&mut leg));
    let mut reinvite = pbx_request(&invite, &ok, Method::Invite, 2, "z9hG4bKre");
    reinvite.push("Content-Type", "application/sdp");
    reinvite.body = ANSWER.replace("a=ptime:20", "a=sendonly").replace("17000", "17002").into_bytes();
    feed(&mut leg, now, &reinvite);
    let changed = events(&mut leg);
    let [LegEvent::MediaChanged(media)] = changed[..] else { panic!("{changed:?}") };
    assert_eq!((media.direction, media.address.port()), (Direction::SendOnly, 17_002));
    let sent = drain(&mut leg);
    assert_eq!(sent[0].status(), Some(200));
    let answer = SessionDescription::parse(&sent[0].body).unwrap();
    assert_eq!(answer.direction, Direction::RecvOnly);
    assert_eq!(answer.origin.session_version, 2);
    assert_eq!(answer.payload_types.iter().map(|p| p.number).collect::<Vec<_>>(), vec![8, 101]);
    let begin = now;
    let resent = run(&mut leg, &mut now, begin + Duration::from_secs(2));
    assert_eq!(resent.len(), 2, "2xx resent at 0.5 s and 1.5 s");
    let ack = pbx_request(&invite, &ok, Method::Ack, 2, "z9hG4bKack");
    feed(&mut leg, now, &ack);
    assert!(run(&mut leg, &mut now, begin + Duration::from_secs(20)).is_empty(), "ACK stops the 2xx");
    assert_eq!(leg.state(), LegState::Confirmed);

    // A stale CSeq is refused; an unparseable offer gets 488.
    feed(&mut leg, now, &pbx_request(&invite, &ok, Method::Update, 2, "z9hG4bKold"));
    assert_eq!(drain(&mut leg)[0].status(), Some(500));
    let mut bad = pbx_request(&invite, &ok, Method::Update, 3, "z9hG4bKbad");
    bad.body = b"nonsense".to_vec();
    feed(&mut leg, now, &bad);
    assert_eq!(drain(&mut leg)[0].status(), Some(488));
}

#[test]
fn unacked_reinvite_2xx_ends_the_call() {
    let (mut leg, mut now, invite) = start(config());
    let ok = answered(&mut leg, now, &invite);
    let _ = events(&mut leg);
    feed(&mut leg, now, &pbx_request(&invite, &ok, Method::Invite, 2, "z9hG4bKre"));
    let begin = now;
    let sent = run(&mut leg, &mut now, begin + Duration::from_secs(33));
    assert!(sent.iter().any(|m| m.method() == Some(Method::Bye)));
    assert_eq!(events(&mut leg), vec![LegEvent::Ended { by_remote: true, reason: EndReason::PeerGone }]);
}

#[test]
fn options_answered_and_sent_as_keepalive() {
    let mut config = config();
    config.keepalive = Some(Duration::from_secs(30));
    let (mut leg, mut now, invite) = start(config);
    let options = Message::request(Method::Options, "sip:voxproxy@192.0.2.1")
        .with("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKopt")
        .with("From", "<sip:monitor@192.0.2.9>;tag=m")
        .with("To", "<sip:voxproxy@192.0.2.1>")
        .with("Call-ID", "probe")
        .with("CSeq", "1 OPTIONS");
    feed(&mut leg, now, &options);
    let sent = drain(&mut leg);
    assert_eq!(sent[0].status(), Some(200));
    assert!(sent[0].header("Allow").unwrap().contains("INVITE"));
    let ok = answered(&mut leg, now, &invite);
    let _ = (events(&mut leg), drain(&mut leg));
    let begin = now;
    let sent = run(&mut leg, &mut now, begin + Duration::from_secs(30));
    let probe = sent.iter().find(|m| m.method() == Some(Method::Options)).expect("keep-alive OPTIONS");
    assert_eq!(probe.header("To"), ok.header("To"));
    feed(&mut leg, now, &reply(probe, 481, None, None));
    assert_eq!(events(&mut leg), vec![LegEvent::Ended { by_remote: true, reason: EndReason::PeerGone }]);
    assert!(drain(&mut leg).iter().any(|m| m.method() == Some(Method::Bye)));
}

#[test]
fn session_timer_refreshes_when_we_are_refresher_and_expires_otherwise() {
    let (mut leg, mut now, invite) = start(config());
    let ok = reply(&invite, 200, Some("pbx1"), Some(ANSWER)).with("Session-Expires", "120;refresher=uac");
    feed(&mut leg, now, &ok);
    let begin = now;
    let sent = run(&mut leg, &mut now, begin + Duration::from_secs(61));
    let update = sent.iter().find(|m| m.method() == Some(Method::Update)).expect("refresh at 60 s");
    assert_eq!(update.header("Session-Expires"), Some("120;refresher=uac"));
    feed(&mut leg, now, &reply(update, 200, None, Some(ANSWER)).with("Session-Expires", "120;refresher=uac"));
    assert_eq!(leg.state(), LegState::Confirmed);

    let (mut leg, mut now, invite) = start(config());
    feed(
        &mut leg,
        now,
        &reply(&invite, 200, Some("pbx1"), Some(ANSWER)).with("Session-Expires", "120;refresher=uas"),
    );
    let begin = now;
    let sent = run(&mut leg, &mut now, begin + Duration::from_secs(87));
    assert!(!sent.iter().any(|m| m.method() == Some(Method::Bye)), "not before 120 − 32 s");
    let sent = run(&mut leg, &mut now, begin + Duration::from_secs(88));
    assert!(sent.iter().any(|m| m.method() == Some(Method::Bye)), "expired at 120 − 32 s");
    assert!(events(&mut leg).contains(&LegEvent::Ended { by_remote: true, reason: EndReason::PeerGone }));
}

#[test]
fn interval_too_small_is_retried_once_with_min_se() {
    let (mut leg, now, invite) = start(config());
    feed(&mut leg, now, &reply(&invite, 422, Some("p"), None).with("Min-SE", "3600"));
    let sent = drain(&mut leg);
    assert_eq!(
        sent.iter().map(|m| m.method().unwrap()).collect::<Vec<_>>(),
        vec![Method::Ack, Method::Invite]
    );
    assert_eq!(sent[1].header("Session-Expires"), Some("3600"));
    assert_eq!(sent[1].header_values("Session-Expires").count(), 1);
    feed(&mut leg, now, &reply(&sent[1], 422, Some("p"), None).with("Min-SE", "7200"));
    assert!(matches!(events(&mut leg)[..], [LegEvent::Failed { status: 422, .. }]));
}

#[test]
fn local_hangup_sends_bye() {
    let (mut leg, now, invite) = start(config());
    answered(&mut leg, now, &invite);
    let _ = (events(&mut leg), drain(&mut leg));
    leg.hangup(now);
    let bye = drain(&mut leg);
    assert_eq!(bye[0].method(), Some(Method::Bye));
    assert_eq!(bye[0].cseq(), Some((2, Method::Bye)));
    feed(&mut leg, now, &reply(&bye[0], 200, None, None));
    assert_eq!(events(&mut leg), vec![LegEvent::Ended { by_remote: false, reason: EndReason::LocalHangup }]);
}

#[test]
fn tcp_stream_is_framed_and_not_retransmitted() {
    let mut config = config();
    config.transport = Transport::Tcp;
    config.target = SipUri::parse("sip:bob@192.0.2.9;transport=tcp").unwrap();
    let (mut leg, mut now, invite) = start(config);
    assert!(invite.top_branch().is_some() && invite.header("Via").unwrap().starts_with("SIP/2.0/TCP"));
    let mut bytes = reply(&invite, 180, Some("t"), None).to_bytes();
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(&reply(&invite, 200, Some("t"), Some(ANSWER)).to_bytes());
    for chunk in bytes.chunks(13) {
        leg.handle_stream(now, chunk).unwrap();
    }
    assert!(matches!(events(&mut leg)[..], [LegEvent::Ringing, LegEvent::Answered(_)]));
    let begin = now;
    let sent = run(&mut leg, &mut now, begin + Duration::from_secs(5));
    assert_eq!(sent.len(), 1, "just the ACK: {sent:?}");
    assert!(leg.handle_stream(now, b"garbage without end\r\n\r\n").is_err());
}

#[test]
fn hostile_input_is_counted_and_bounded() {
    let (mut leg, now, invite) = start(config());
    leg.handle_datagram(now, pbx(), b"\x00\xffnot sip");
    leg.handle_datagram(now, pbx(), &vec![b'a'; 70_000]);
    assert_eq!(leg.counters().parse_errors, 2);
    let stranger = reply(&invite, 200, Some("x"), None);
    let mut stranger = stranger;
    stranger.remove("Via");
    stranger.push("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKother");
    feed(&mut leg, now, &stranger);
    assert_eq!(leg.counters().unmatched, 1);
    for i in 0..100 {
        let flood = Message::request(Method::Invite, "sip:voxproxy@192.0.2.1")
            .with("Via", format!("SIP/2.0/UDP 192.0.2.66;branch=z9hG4bK{i}"))
            .with("From", "<sip:x@192.0.2.66>;tag=f")
            .with("To", "<sip:voxproxy@192.0.2.1>")
            .with("Call-ID", format!("flood{i}"))
            .with("CSeq", "1 INVITE");
        feed(&mut leg, now, &flood);
    }
    let answers = drain(&mut leg);
    assert_eq!(answers.len(), MAX_SERVER_TRANSACTIONS);
    assert!(answers.iter().all(|m| m.status() == Some(481)));
    assert_eq!(leg.counters().rejected_overload, 100 - MAX_SERVER_TRANSACTIONS as u64);
    assert!(events(&mut leg).is_empty());
}

#[test]
fn bad_targets_and_media_are_refused() {
    assert!(target_uri("sip:{to}@", "1", "2").is_err());
    assert_eq!(target_uri("sip:{to}@10.0.0.1", "+1 (415)", "x").unwrap().user.as_deref(), Some("+1415"));
    let (mut leg, now, invite) = start(config());
    feed(&mut leg, now, &reply(&invite, 200, Some("p"), Some("v=0\r\n")));
    let sent: Vec<_> = drain(&mut leg).iter().map(|m| m.method().unwrap()).collect();
    assert_eq!(sent, vec![Method::Ack, Method::Bye]);
    assert!(matches!(events(&mut leg)[..], [LegEvent::Failed { status: 488, by_remote: false, .. }]));
}

/// Messages captured from baresip 1.0.0 (Debian `baresip-core`, auto-answer,
/// on loopback) answering this leg's INVITE (seed 7), replayed: the leg must
/// understand a real peer's 180, 200 + SDP and the 200 to its BYE.
#[test]
fn replays_a_real_baresip_call() {
    let mut config = config();
    config.target = SipUri::parse("sip:bob@127.0.0.1:5099").unwrap();
    config.next_hop = "127.0.0.1:5099".parse().unwrap();
    config.local = "127.0.0.1:5098".parse().unwrap();
    config.media.address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut info = info();
    info.params = vec![("tenant".into(), "acme".into())];
    let now = Instant::ZERO;
    let mut leg = SipLeg::new(config, &info, now).unwrap();
    let invite = drain(&mut leg).remove(0);
    assert_eq!(invite.call_id(), Some("044c3cd7f43c661c@voxproxy"), "same seed, same INVITE as captured");
    let peer: SocketAddr = "127.0.0.1:5099".parse().unwrap();
    leg.handle_datagram(now, peer, include_bytes!("testdata/baresip_180.sip"));
    leg.handle_datagram(now, peer, include_bytes!("testdata/baresip_200_invite.sip"));
    let got = events(&mut leg);
    let media = Media {
        address: "192.0.2.2:41064".parse().unwrap(),
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
        direction: Direction::SendRecv,
        ptime: Some(20),
    };
    assert_eq!(got, vec![LegEvent::Ringing, LegEvent::Answered(media)]);
    let ack = drain(&mut leg).remove(0);
    let StartLine::Request { uri, .. } = &ack.start else { panic!() };
    assert_eq!(uri, "sip:bob-0x55de46c2e0d0@127.0.0.1:5099");
    leg.hangup(now);
    let bye = drain(&mut leg).remove(0);
    assert_eq!(bye.top_branch(), Some("z9hG4bK3fdabe86cbbeaa11"));
    leg.handle_datagram(now, peer, include_bytes!("testdata/baresip_200_bye.sip"));
    assert_eq!(events(&mut leg), vec![LegEvent::Ended { by_remote: false, reason: EndReason::LocalHangup }]);
    assert_eq!(leg.counters().parse_errors + leg.counters().unmatched, 0);
}
