//! The UAS against a scripted PBX on virtual time.

use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::sdp::{Codec, Direction, Origin};

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
    let mut sent = Vec::new();
    while let Some(at) = server.poll_timeout() {
        now = at;
        server.handle_timeout(now);
        sent.extend(drain(&mut server).iter().filter_map(Message::method));
    }
    assert_eq!(server.poll_event(), Some(ServerEvent::TimedOut(id)));
    assert!(sent.contains(&Method::Bye), "§13.3.1.4: the session ends with BYE: {sent:?}");
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

/// An answered, acknowledged call from `invite`: its id and our 200.
fn answered(server: &mut SipServer, now: Instant, invite: &Message) -> (CallId, Message) {
    server.handle_datagram(now, pbx(), &invite.to_bytes());
    let id = incoming(server);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let ours =
        SessionDescription::new(Origin::new(1, 1, ip), ip, 30_000).with_codec(Codec::Pcmu).with_ptime(20);
    server.answer(now, id, &ours.with_telephone_event(101));
    let ok = drain(server).into_iter().find(|m| m.status() == Some(200)).expect("200");
    server.handle_datagram(now, pbx(), &in_dialog(invite, &ok, Method::Ack, 1, "z9hG4bKack1").to_bytes());
    assert_eq!(server.poll_event(), Some(ServerEvent::Confirmed(id)));
    (id, ok)
}

/// The PBX's offer: PCMU under `pt` at `port`, in `direction`.
fn offer(port: u16, pt: u8, direction: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 2 IN IP4 10.1.0.5\r\ns=pbx\r\nc=IN IP4 10.1.0.5\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )
    .into_bytes()
}

fn media_event(server: &mut SipServer) -> Media {
    match server.poll_event() {
        Some(ServerEvent::MediaChanged { media, .. }) => media,
        other => panic!("expected MediaChanged, got {other:?}"),
    }
}

#[test]
fn a_reinvite_holds_then_resumes_at_a_new_address() {
    let mut server = new_server();
    let mut now = Instant::ZERO;
    let first = invite(1);
    let (_, ok) = answered(&mut server, now, &first);

    // Hold: sendonly from the PBX is recvonly from us, and the event says hold.
    let mut hold = in_dialog(&first, &ok, Method::Invite, 2, "z9hG4bKhold");
    hold.push("Content-Type", "application/sdp");
    hold.body = offer(20_000, 0, "sendonly");
    server.handle_datagram(now, pbx(), &hold.to_bytes());
    let answer = drain(&mut server).remove(0);
    assert_eq!(answer.status(), Some(200));
    let sdp = SessionDescription::parse(&answer.body).unwrap();
    assert_eq!((sdp.direction, sdp.port, sdp.origin.session_version), (Direction::RecvOnly, 30_000, 2));
    assert_eq!(media_event(&mut server).direction, Direction::SendOnly);
    // The 2xx goes again until the ACK; a retransmitted re-INVITE is
    // absorbed (RFC 6026: the 2xx's own retransmissions answer it).
    now += Duration::from_millis(500);
    server.handle_timeout(now);
    assert_eq!(statuses(&mut server), vec![200], "2xx to the re-INVITE retransmitted until ACK");
    server.handle_datagram(now, pbx(), &hold.to_bytes());
    assert_eq!(statuses(&mut server), Vec::<u16>::new());
    server.handle_datagram(now, pbx(), &in_dialog(&first, &ok, Method::Ack, 2, "z9hG4bKack2").to_bytes());
    now += Duration::from_secs(5);
    server.handle_timeout(now);
    assert!(drain(&mut server).is_empty(), "acknowledged: no more retransmissions");
    assert_eq!(server.poll_event(), None, "the same re-INVITE is one change");

    // Resume at a new port and payload type number.
    let mut resume = in_dialog(&first, &ok, Method::Invite, 3, "z9hG4bKresume");
    resume.body = offer(20_100, 96, "sendrecv");
    server.handle_datagram(now, pbx(), &resume.to_bytes());
    let answer = drain(&mut server).remove(0);
    let sdp = SessionDescription::parse(&answer.body).unwrap();
    assert_eq!(
        (sdp.direction, sdp.payload_type_of(Codec::Pcmu), sdp.origin.session_version),
        (Direction::SendRecv, Some(96), 3)
    );
    let media = media_event(&mut server);
    assert_eq!(
        (media.address.port(), media.payload_type, media.direction),
        (20_100, 96, Direction::SendRecv)
    );
}

#[test]
fn offers_the_call_cannot_take_are_refused_and_change_nothing() {
    let mut server = new_server();
    let now = Instant::ZERO;
    let first = invite(1);
    let (_, ok) = answered(&mut server, now, &first);
    // PCMA only: the call carries PCMU, so 488 and the call goes on.
    let mut pcma = in_dialog(&first, &ok, Method::Invite, 2, "z9hG4bKpcma");
    pcma.body =
        b"v=0\r\no=- 1 2 IN IP4 10.1.0.5\r\ns=-\r\nc=IN IP4 10.1.0.5\r\nt=0 0\r\nm=audio 20000 RTP/AVP 8\r\n"
            .to_vec();
    server.handle_datagram(now, pbx(), &pcma.to_bytes());
    assert_eq!(statuses(&mut server), vec![488]);
    assert_eq!(server.poll_event(), None);
    // A second re-INVITE while our 2xx to the first awaits its ACK: 491.
    let mut hold = in_dialog(&first, &ok, Method::Invite, 3, "z9hG4bKh1");
    hold.body = offer(20_000, 0, "inactive");
    server.handle_datagram(now, pbx(), &hold.to_bytes());
    assert_eq!(statuses(&mut server), vec![200]);
    let mut again = in_dialog(&first, &ok, Method::Invite, 4, "z9hG4bKh2");
    again.body = offer(20_000, 0, "sendrecv");
    server.handle_datagram(now, pbx(), &again.to_bytes());
    assert_eq!(statuses(&mut server), vec![491]);
    // Not in any dialog: 481.
    let mut stray = in_dialog(&invite(9), &ok, Method::Invite, 5, "z9hG4bKstray");
    stray.body = offer(20_000, 0, "sendrecv");
    server.handle_datagram(now, pbx(), &stray.to_bytes());
    assert_eq!(statuses(&mut server), vec![481]);
}

#[test]
fn update_options_and_an_offerless_reinvite_in_the_dialog() {
    let mut server = new_server();
    let now = Instant::ZERO;
    let first = invite(1);
    let (_, ok) = answered(&mut server, now, &first);
    server.handle_datagram(now, pbx(), &in_dialog(&first, &ok, Method::Update, 2, "z9hG4bKu").to_bytes());
    let reply = drain(&mut server).remove(0);
    assert_eq!((reply.status(), reply.body.len()), (Some(200), 0), "an UPDATE without SDP changes nothing");
    let mut update = in_dialog(&first, &ok, Method::Update, 3, "z9hG4bKu2");
    update.body = offer(20_000, 0, "sendonly");
    server.handle_datagram(now, pbx(), &update.to_bytes());
    let reply = drain(&mut server).remove(0);
    assert_eq!(SessionDescription::parse(&reply.body).unwrap().direction, Direction::RecvOnly);
    assert_eq!(media_event(&mut server).direction, Direction::SendOnly);
    server.handle_datagram(now, pbx(), &in_dialog(&first, &ok, Method::Options, 4, "z9hG4bKo").to_bytes());
    let reply = drain(&mut server).remove(0);
    assert_eq!(reply.status(), Some(200));
    assert!(reply.header("Allow").is_some_and(|a| a.contains("UPDATE")), "{reply:?}");
    // No offer in the re-INVITE: ours (sendrecv) in the 200, theirs in the ACK.
    server.handle_datagram(now, pbx(), &in_dialog(&first, &ok, Method::Invite, 5, "z9hG4bKr").to_bytes());
    let reply = drain(&mut server).remove(0);
    assert_eq!(SessionDescription::parse(&reply.body).unwrap().direction, Direction::SendRecv);
    assert_eq!(server.poll_event(), None);
    let mut ack = in_dialog(&first, &ok, Method::Ack, 5, "z9hG4bKack5");
    ack.body = offer(20_200, 0, "sendrecv");
    server.handle_datagram(now, pbx(), &ack.to_bytes());
    assert_eq!(media_event(&mut server).address.port(), 20_200);
}

fn timed_invite(session_expires: &str) -> Message {
    invite(1).with("Session-Expires", session_expires).with("Supported", "timer")
}

#[test]
fn a_session_the_pbx_stops_refreshing_ends_with_bye() {
    let mut server = new_server();
    let mut now = Instant::ZERO;
    let first = timed_invite("120;refresher=uac");
    let (id, ok) = answered(&mut server, now, &first);
    assert_eq!(ok.header("Session-Expires"), Some("120;refresher=uac"));
    assert_eq!(ok.header("Require"), Some("timer"));
    // A refresh at 60 s (UPDATE) restarts the timer: nothing at 88 s.
    now += Duration::from_secs(60);
    server.handle_timeout(now);
    let refresh =
        in_dialog(&first, &ok, Method::Update, 2, "z9hG4bKref").with("Session-Expires", "120;refresher=uac");
    server.handle_datagram(now, pbx(), &refresh.to_bytes());
    assert_eq!(drain(&mut server)[0].header("Session-Expires"), Some("120;refresher=uac"));
    now += Duration::from_secs(40);
    server.handle_timeout(now);
    assert!(drain(&mut server).is_empty());
    assert_eq!(server.poll_event(), None);
    // No further refresh: at 60 + 120 − 32 s the session ends with our BYE.
    assert_eq!(server.poll_timeout(), Some(Instant::ZERO + Duration::from_secs(60 + 88)));
    now = server.poll_timeout().unwrap();
    server.handle_timeout(now);
    let sent = drain(&mut server);
    assert_eq!(sent.iter().filter_map(Message::method).collect::<Vec<_>>(), vec![Method::Bye]);
    assert_eq!(server.poll_event(), Some(ServerEvent::TimedOut(id)));
}

#[test]
fn we_refresh_when_the_pbx_asks_us_to() {
    let mut server = new_server();
    let mut now = Instant::ZERO;
    let first = timed_invite("200;refresher=uas");
    let (id, ok) = answered(&mut server, now, &first);
    assert_eq!(ok.header("Session-Expires"), Some("200;refresher=uas"));
    now += Duration::from_secs(100);
    server.handle_timeout(now);
    let update = drain(&mut server).remove(0);
    assert_eq!(update.method(), Some(Method::Update));
    assert_eq!(update.header("Session-Expires"), Some("200;refresher=uas"));
    server.handle_datagram(now, pbx(), &reply_to(&update, 200).to_bytes());
    assert_eq!(server.poll_event(), None);
    now += Duration::from_secs(100);
    server.handle_timeout(now);
    let update = drain(&mut server).remove(0);
    assert_eq!(update.method(), Some(Method::Update), "the next refresh half an interval later");
    server.handle_datagram(now, pbx(), &reply_to(&update, 481).to_bytes());
    assert_eq!(drain(&mut server)[0].method(), Some(Method::Bye), "a refresh answered 481 ends the session");
    assert_eq!(server.poll_event(), Some(ServerEvent::TimedOut(id)));
}

#[test]
fn too_short_a_session_interval_gets_422() {
    let mut server = new_server();
    server.handle_datagram(Instant::ZERO, pbx(), &timed_invite("30").to_bytes());
    let reply = drain(&mut server).remove(0);
    assert_eq!((reply.status(), reply.header("Min-SE")), (Some(422), Some("90")));
    assert_eq!(server.poll_event(), None, "no call placed");
}

fn reply_to(request: &Message, status: u16) -> Message {
    let mut reply = Message::response(status);
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        reply.push(name, request.header(name).unwrap());
    }
    reply
}

#[test]
fn configured_limits_bound_calls_in_all_and_per_source() {
    let limits = ServerLimits { max_calls: 3, max_calls_per_source: 2 };
    let mut server = new_server().with_limits(limits);
    let now = Instant::ZERO;
    let other: SocketAddr = "10.1.0.6:5060".parse().unwrap();
    for n in 0..3 {
        server.handle_datagram(now, pbx(), &invite(n).to_bytes());
    }
    let sorted = |mut statuses: Vec<u16>| {
        statuses.sort_unstable();
        statuses
    };
    assert_eq!(sorted(statuses(&mut server)), vec![100, 100, 503], "2 from one source");
    server.handle_datagram(now, other, &invite(10).to_bytes());
    server.handle_datagram(now, other, &invite(11).to_bytes());
    assert_eq!(sorted(statuses(&mut server)), vec![100, 503], "3 in all");
    assert_eq!(server.counters().rejected_overload, 2);
    let zero = new_server().with_limits(ServerLimits { max_calls: 0, max_calls_per_source: 0 });
    assert_eq!(zero.limits, ServerLimits { max_calls: 1, max_calls_per_source: 1 }, "at least one call");
}
