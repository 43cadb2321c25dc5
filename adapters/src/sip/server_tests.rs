//! The UAS against a scripted PBX on virtual time.

use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::sdp::{Codec, Origin};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.1.0.5\r\ns=pbx\r\nc=IN IP4 10.1.0.5\r\nt=0 0\r\n\
    m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn pbx() -> SocketAddr {
    "10.1.0.5:5060".parse().unwrap()
}

fn new_server() -> SipServer {
    let allow = parse_allow("10.1.0.0/16, 2001:db8::/32").unwrap();
    SipServer::new("10.0.0.1:5060".parse().unwrap(), Transport::Udp, allow, Timers::default(), 3)
}

fn invite(n: u32) -> Message {
    let mut m = Message::request(Method::Invite, "sip:+14155550100@10.0.0.1")
        .with("Via", format!("SIP/2.0/UDP 10.1.0.5:5060;branch=z9hG4bKinv{n}"))
        .with("From", "\"Desk\" <sip:1001@10.1.0.5>;tag=pbx")
        .with("To", "<sip:+14155550100@10.0.0.1>")
        .with("Call-ID", format!("call{n}"))
        .with("CSeq", "1 INVITE")
        .with("Contact", "<sip:1001@10.1.0.5:5060>");
    m.body = OFFER.as_bytes().to_vec();
    m
}

fn drain(server: &mut SipServer) -> Vec<Message> {
    core::iter::from_fn(|| server.poll_transmit()).map(|t| Message::parse(&t.bytes).unwrap()).collect()
}

fn statuses(server: &mut SipServer) -> Vec<u16> {
    drain(server).iter().filter_map(Message::status).collect()
}

fn incoming(server: &mut SipServer) -> CallId {
    match server.poll_event() {
        Some(ServerEvent::IncomingCall { id, .. }) => id,
        other => panic!("{other:?}"),
    }
}

fn in_dialog(invite: &Message, ok: &Message, method: Method, cseq: u32, branch: &str) -> Message {
    let name = method.to_string();
    Message::request(method, "sip:voxproxy@10.0.0.1:5060")
        .with("Via", format!("SIP/2.0/UDP 10.1.0.5:5060;branch={branch}"))
        .with("From", invite.header("From").unwrap())
        .with("To", ok.header("To").unwrap())
        .with("Call-ID", invite.call_id().unwrap())
        .with("CSeq", format!("{cseq} {name}"))
}

#[test]
fn cidrs_and_status_mapping() {
    let net = Cidr::parse("192.0.2.0/24").unwrap();
    assert!(net.contains("192.0.2.200".parse().unwrap()));
    assert!(!net.contains("192.0.3.1".parse().unwrap()));
    assert!(net.contains("::ffff:192.0.2.7".parse().unwrap()), "IPv4-mapped");
    assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
    assert!(Cidr::parse("10.0.0.1").unwrap().contains("10.0.0.1".parse().unwrap()));
    assert!(!Cidr::parse("10.0.0.1").unwrap().contains("10.0.0.2".parse().unwrap()));
    assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8:1::9".parse().unwrap()));
    for bad in ["10.0.0.0/33", "x", "10.0.0.0/-1", "::/129"] {
        assert!(Cidr::parse(bad).is_err(), "{bad}");
    }
    assert!(parse_allow(&vec!["10.0.0.1"; 65].join(",")).is_err());
    assert_eq!(parse_allow("").unwrap(), vec![]);
    let mapped: Vec<u16> = ["busy", "no-answer", "failed", "canceled", "?"].map(status_for_twilio).to_vec();
    assert_eq!(mapped, vec![486, 480, 503, 487, 503]);
}

#[test]
fn outside_allow_gets_403_and_no_call() {
    let mut server = new_server();
    let now = Instant::ZERO;
    server.handle_datagram(now, "192.0.2.66:5060".parse().unwrap(), &invite(1).to_bytes());
    assert_eq!(statuses(&mut server), vec![403]);
    assert_eq!(server.poll_event(), None);
    assert_eq!(server.rejected_source, 1);
}

#[test]
fn ring_answer_ack_bye() {
    let mut server = new_server();
    let mut now = Instant::ZERO;
    let invite = invite(1);
    server.handle_datagram(now, pbx(), &invite.to_bytes());
    assert_eq!(statuses(&mut server), vec![100]);
    let Some(ServerEvent::IncomingCall { id, user, from_user, offer, source, call_id }) = server.poll_event()
    else {
        panic!()
    };
    assert_eq!(
        (user.as_str(), from_user.as_str(), source, call_id.as_str()),
        ("+14155550100", "1001", pbx(), "call1")
    );
    assert_eq!(offer.first_codec(), Some((Codec::Pcmu, 0)));
    server.handle_datagram(now, pbx(), &invite.to_bytes());
    assert_eq!(statuses(&mut server), vec![100], "retransmitted INVITE: 100 again, no second call");
    assert_eq!(server.poll_event(), None);
    server.ringing(now, id);
    let ringing = drain(&mut server);
    assert_eq!(ringing[0].status(), Some(180));
    let tag = param(ringing[0].header("To").unwrap(), "tag").unwrap().to_owned();
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    server.answer(
        now,
        id,
        &SessionDescription::new(Origin::new(1, 1, ip), ip, 30_000).with_codec(Codec::Pcmu),
    );
    let ok = drain(&mut server).remove(0);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(param(ok.header("To").unwrap(), "tag"), Some(tag.as_str()), "same tag as the 180");
    assert_eq!(SessionDescription::parse(&ok.body).unwrap().port, 30_000);
    now += Duration::from_millis(500);
    server.handle_timeout(now);
    assert_eq!(statuses(&mut server), vec![200], "2xx retransmitted until ACK");
    server.handle_datagram(now, pbx(), &in_dialog(&invite, &ok, Method::Ack, 1, "z9hG4bKack").to_bytes());
    assert_eq!(server.poll_event(), Some(ServerEvent::Confirmed(id)));
    now += Duration::from_secs(10);
    server.handle_timeout(now);
    assert!(drain(&mut server).is_empty());
    server.handle_datagram(now, pbx(), &in_dialog(&invite, &ok, Method::Bye, 2, "z9hG4bKbye").to_bytes());
    assert_eq!(statuses(&mut server), vec![200]);
    assert_eq!(server.poll_event(), Some(ServerEvent::Ended { id, by_remote: true }));
    server.handle_datagram(now, pbx(), &in_dialog(&invite, &ok, Method::Bye, 3, "z9hG4bKbye2").to_bytes());
    assert_eq!(statuses(&mut server), vec![481]);
}

#[test]
fn cancel_gets_200_and_487() {
    let mut server = new_server();
    let now = Instant::ZERO;
    let invite = invite(1);
    server.handle_datagram(now, pbx(), &invite.to_bytes());
    let id = incoming(&mut server);
    let _ = drain(&mut server);
    let mut cancel = invite;
    cancel.start = StartLine::Request { method: Method::Cancel, uri: "sip:+14155550100@10.0.0.1".into() };
    cancel.remove("CSeq");
    cancel.push("CSeq", "1 CANCEL");
    cancel.body.clear();
    server.handle_datagram(now, pbx(), &cancel.to_bytes());
    let mut got = statuses(&mut server);
    got.sort_unstable();
    assert_eq!(got, vec![200, 487]);
    assert_eq!(server.poll_event(), Some(ServerEvent::Cancelled(id)));
    server.answer(
        now,
        id,
        &SessionDescription::new(Origin::new(1, 1, pbx().ip()), pbx().ip(), 1).with_codec(Codec::Pcmu),
    );
    assert!(drain(&mut server).is_empty(), "a cancelled call cannot be answered");
}

#[test]
fn reject_maps_twilio_outcomes_and_hangup_sends_bye() {
    let mut server = new_server();
    let now = Instant::ZERO;
    server.handle_datagram(now, pbx(), &invite(1).to_bytes());
    let id = incoming(&mut server);
    let _ = drain(&mut server);
    server.reject(now, id, status_for_twilio("busy"));
    assert_eq!(statuses(&mut server), vec![486]);

    server.handle_datagram(now, pbx(), &invite(2).to_bytes());
    let id = incoming(&mut server);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    server.answer(
        now,
        id,
        &SessionDescription::new(Origin::new(1, 1, ip), ip, 30_000).with_codec(Codec::Pcmu),
    );
    let _ = drain(&mut server);
    server.hangup(now, id);
    let bye = drain(&mut server);
    assert_eq!(bye[0].method(), Some(Method::Bye));
    let StartLine::Request { uri, .. } = &bye[0].start else { panic!() };
    assert_eq!(uri, "sip:1001@10.1.0.5:5060", "to the PBX's Contact");
    assert_eq!(server.poll_event(), Some(ServerEvent::Ended { id, by_remote: false }));
}

#[test]
fn floods_from_one_source_are_bounded_and_bad_invites_refused() {
    let mut server = new_server();
    let now = Instant::ZERO;
    for n in 0..20 {
        server.handle_datagram(now, pbx(), &invite(n).to_bytes());
    }
    let got = statuses(&mut server);
    assert_eq!(got.iter().filter(|&&s| s == 100).count(), MAX_CALLS_PER_SOURCE);
    assert_eq!(got.iter().filter(|&&s| s == 503).count(), 20 - MAX_CALLS_PER_SOURCE);
    assert_eq!(server.counters().rejected_overload, (20 - MAX_CALLS_PER_SOURCE) as u64);
    let mut no_sdp = invite(99);
    no_sdp.body.clear();
    let mut other = new_server();
    other.handle_datagram(now, pbx(), &no_sdp.to_bytes());
    assert_eq!(statuses(&mut other), vec![488]);
    other.handle_datagram(now, pbx(), b"garbage");
    assert_eq!(other.counters().parse_errors, 1);
    assert_eq!(other.poll_event(), None);
}

#[test]
fn unacked_answer_ends_the_call() {
    let mut server = new_server();
    let mut now = Instant::ZERO;
    server.handle_datagram(now, pbx(), &invite(1).to_bytes());
    let id = incoming(&mut server);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    server.answer(
        now,
        id,
        &SessionDescription::new(Origin::new(1, 1, ip), ip, 30_000).with_codec(Codec::Pcmu),
    );
    while let Some(at) = server.poll_timeout() {
        now = at;
        server.handle_timeout(now);
        let _ = drain(&mut server);
    }
    assert_eq!(server.poll_event(), Some(ServerEvent::Ended { id, by_remote: true }));
}

#[test]
fn an_offer_is_accepted_in_its_own_order_at_the_configured_clock_rate() {
    let offer = SessionDescription::parse(
        b"v=0\r\no=- 1 1 IN IP4 10.1.0.5\r\ns=pbx\r\nc=IN IP4 10.1.0.5\r\nt=0 0\r\n\
          m=audio 20000 RTP/AVP 9 97 8 0 100\r\na=rtpmap:97 L16/16000\r\na=rtpmap:100 telephone-event/8000\r\n",
    )
    .unwrap();
    let media = accept_offer(&offer, 8000).unwrap();
    assert_eq!(media.codec, Codec::Pcma, "G.722 is skipped, L16/16000 has another clock rate");
    assert_eq!((media.payload_type, media.dtmf_payload_type), (8, Some(100)));
    assert_eq!(media.remote, "10.1.0.5:20000".parse().unwrap());
    let wide = accept_offer(&offer, 16_000).unwrap();
    assert_eq!((wide.codec, wide.payload_type, wide.dtmf_payload_type), (Codec::L16Wideband, 97, None));

    let answer = answer_sdp(&media, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40_002, 7, 20).build().unwrap();
    assert!(answer.contains("c=IN IP4 192.0.2.1\r\n"), "{answer}");
    assert!(answer.contains("m=audio 40002 RTP/AVP 8 100\r\n"), "{answer}");
    assert!(answer.contains("a=rtpmap:100 telephone-event/8000\r\n"), "{answer}");

    let g722_only = SessionDescription::parse(
        b"v=0\r\no=- 1 1 IN IP4 10.1.0.5\r\ns=pbx\r\nc=IN IP4 10.1.0.5\r\nt=0 0\r\nm=audio 20000 RTP/AVP 9\r\n",
    )
    .unwrap();
    assert_eq!(accept_offer(&g722_only, 8000), None);
}

#[test]
fn allow_entries_display_as_written_networks() {
    let allow = parse_allow("10.1.0.0/16,192.0.2.7, 2001:db8::/32").unwrap();
    let shown: Vec<String> = allow.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.1.0.0/16", "192.0.2.7/32", "2001:db8::/32"]);
}

/// An answered call whose BYE the network loses: sent again (Timer E) until
/// the PBX answers, then no more; one never answered gives up at Timer F.
#[test]
fn a_lost_bye_is_sent_again_until_the_pbx_answers() {
    let mut server = new_server();
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let answer = SessionDescription::new(Origin::new(1, 1, ip), ip, 30_000).with_codec(Codec::Pcmu);
    let mut now = Instant::ZERO;
    let mut ids = Vec::new();
    for n in [1, 2] {
        server.handle_datagram(now, pbx(), &invite(n).to_bytes());
        let id = incoming(&mut server);
        server.answer(now, id, &answer);
        ids.push(id);
    }
    let _ = drain(&mut server);
    for id in ids {
        server.hangup(now, id);
        assert_eq!(server.poll_event(), Some(ServerEvent::Ended { id, by_remote: false }));
    }
    let byes = drain(&mut server);
    assert_eq!(byes.len(), 2, "one BYE per call");
    // Both are lost; T1 later both go again.
    now += Duration::from_millis(500);
    server.handle_timeout(now);
    let again = drain(&mut server);
    assert_eq!(again.iter().filter(|m| m.method() == Some(Method::Bye)).count(), 2);
    // The PBX answers the first; only the second keeps being sent.
    let mut ok = Message::response(200);
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        ok.push(name, byes[0].header(name).unwrap());
    }
    server.handle_datagram(now, pbx(), &ok.to_bytes());
    assert_eq!(server.counters().responses_received[1], 1);
    let mut sent = 0;
    while let Some(at) = server.poll_timeout() {
        now = at;
        server.handle_timeout(now);
        // (The unacknowledged 200s are sent again too: only BYEs count here.)
        for bye in drain(&mut server).into_iter().filter(|m| m.method() == Some(Method::Bye)) {
            assert_eq!(bye.call_id(), byes[1].call_id(), "the answered BYE is not sent again");
            sent += 1;
        }
        assert!(now < Instant::ZERO + Duration::from_secs(40), "Timer F ends it");
    }
    assert!(sent >= 5, "retransmitted until Timer F: {sent}");
    assert_eq!(server.counters().timeouts, 1, "the unanswered BYE timed out");
}
