//! Fuzz entry points: SIP.
//!
//! - `sip_parse`: arbitrary bytes as a datagram, as a TCP stream cut at
//!   arbitrary points, as a URI and as a digest challenge. Whatever parses
//!   must write back and parse to the same value.
//! - `sip_ua`: a [`SipLeg`] driven by arbitrary responses (built from what it
//!   sent, with arbitrary status, tag, SDP and damage), arbitrary requests in
//!   and out of its dialog, raw bytes, clock steps and hang-ups, with its
//!   invariants checked after every step.

use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use voxproxy_adapters::sdp::Codec;
use voxproxy_adapters::sip::auth::{Challenge, Credentials};
use voxproxy_adapters::sip::{
    CallInfo, LegEvent, LegState, MediaOffer, Message, Method, SipLeg, SipLegConfig, SipUri, StreamFramer,
    Timers, Transport,
};
use voxproxy_core::Instant;

/// Parses arbitrary bytes every way SIP text enters voxproxy.
pub fn sip_parse(data: &[u8]) {
    if let Ok(message) = Message::parse(data) {
        let bytes = message.to_bytes();
        match Message::parse(&bytes) {
            Ok(again) => assert_eq!(again, message, "write → parse changed the message"),
            Err(error) => {
                panic!("written message does not parse: {error}\n{}", String::from_utf8_lossy(&bytes))
            }
        }
    }
    let cut = data.first().map_or(1, |&b| usize::from(b) + 1);
    let mut framer = StreamFramer::default();
    'stream: for chunk in data.chunks(cut) {
        if framer.push(chunk).is_err() {
            break;
        }
        loop {
            match framer.next_message() {
                Ok(Some(message)) => assert_eq!(Message::parse(&message.to_bytes()).as_ref(), Ok(&message)),
                Ok(None) => break,
                Err(_) => break 'stream,
            }
        }
    }
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(uri) = SipUri::parse(text) {
            assert_eq!(SipUri::parse(&uri.to_string()).as_ref(), Ok(&uri), "URI round trip");
        }
        if let Ok(challenge) = Challenge::parse(text) {
            let creds = Credentials { username: "u\"x".into(), password: "p".into() };
            let answer = challenge.answer(&creds, "INVITE", "sip:a@h", "c", 1);
            assert!(!answer.contains(['\r', '\n']), "answer must stay on one header line");
        }
    }
}

const PBX: ([u8; 4], u16) = ([192, 0, 2, 9], 5060);

const SDPS: [&[u8]; 4] = [
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 17000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    b"v=0\r\no=- 1 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 17002 RTP/AVP 8\r\na=sendonly\r\n",
    b"v=0\r\no=- 1 3 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 17004 RTP/AVP 18\r\n",
    b"garbage",
];

#[derive(Arbitrary, Debug)]
enum Step {
    /// A response to the n-th message the leg sent.
    Respond {
        to: u8,
        status: u16,
        tag: u8,
        sdp: u8,
        expires: u8,
        damage: Option<(u16, u8)>,
    },
    /// A request from the PBX, in the dialog (if any) or not.
    Request {
        method: u8,
        cseq: u8,
        in_dialog: bool,
        sdp: u8,
        branch: u8,
    },
    Datagram(Vec<u8>),
    Stream(Vec<u8>),
    Advance {
        ms: u16,
    },
    Timeout,
    Hangup,
}

fn response_to(request: &Message, status: u16, tag: u8, sdp: u8, expires: u8) -> Message {
    let mut r = Message::response(status);
    for via in request.header_values("Via") {
        r.push("Via", via);
    }
    for name in ["From", "Call-ID", "CSeq"] {
        if let Some(value) = request.header(name) {
            r.push(name, value);
        }
    }
    let to = request.header("To").unwrap_or("<sip:x@192.0.2.9>");
    r.push(
        "To",
        if tag == 0 || to.contains("tag=") { to.to_owned() } else { format!("{to};tag=t{}", tag % 4) },
    );
    r.push(
        "Contact",
        if tag.is_multiple_of(3) { "<sip:pbx@192.0.2.9:5070>" } else { "<sip:pbx@pbx.example>" },
    );
    if expires % 4 == 1 {
        r.push(
            "Session-Expires",
            format!("{};refresher={}", 90 + u32::from(expires), ["uac", "uas"][usize::from(expires) % 2]),
        );
    }
    if matches!(status, 401 | 407) {
        let header = if status == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
        r.push(header, "Digest realm=\"r\", nonce=\"n\", qop=\"auth\"");
    }
    if let Some(body) = SDPS.get(usize::from(sdp)) {
        r.push("Content-Type", "application/sdp");
        r.body = body.to_vec();
    }
    r
}

fn pbx_request(sent: &[Message], method: u8, cseq: u8, in_dialog: bool, sdp: u8, branch: u8) -> Message {
    let methods = [
        Method::Invite,
        Method::Bye,
        Method::Options,
        Method::Update,
        Method::Info,
        Method::Cancel,
        Method::Ack,
        Method::Register,
    ];
    let method = methods[usize::from(method) % methods.len()].clone();
    let invite = sent.first();
    let (from, to, call_id) = match invite {
        Some(invite) if in_dialog => (
            format!("{};tag=t{}", invite.header("To").unwrap_or_default(), cseq % 4),
            invite.header("From").unwrap_or_default().to_owned(),
            invite.call_id().unwrap_or_default().to_owned(),
        ),
        _ => {
            ("<sip:x@192.0.2.66>;tag=z".to_owned(), "<sip:voxproxy@192.0.2.1>".to_owned(), "other".to_owned())
        }
    };
    let name = method.to_string();
    let mut m = Message::request(method, "sip:voxproxy@192.0.2.1:5060")
        .with("Via", format!("SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{branch}"))
        .with("From", from)
        .with("To", to)
        .with("Call-ID", call_id)
        .with("CSeq", format!("{cseq} {name}"));
    if let Some(body) = SDPS.get(usize::from(sdp)) {
        m.body = body.to_vec();
    }
    m
}

fn config(u: &mut Unstructured<'_>) -> SipLegConfig {
    let reliable: bool = u.arbitrary().unwrap_or(false);
    SipLegConfig {
        target: SipUri::parse("sip:bob@192.0.2.9").expect("valid"),
        next_hop: SocketAddr::from(PBX),
        transport: if reliable { Transport::Tcp } else { Transport::Udp },
        local: SocketAddr::from(([192, 0, 2, 1], 5060)),
        media: MediaOffer {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 40_000,
            codec: Codec::ALL[usize::from(u.arbitrary::<u8>().unwrap_or(0)) % 4],
            telephone_event: 101,
        },
        credentials: u
            .arbitrary::<bool>()
            .unwrap_or(false)
            .then(|| Credentials { username: "u".into(), password: "p".into() }),
        timers: Timers::default(),
        keepalive: u.arbitrary::<bool>().unwrap_or(false).then(|| Duration::from_secs(30)),
        ring_timeout: u.arbitrary::<bool>().unwrap_or(false).then(|| Duration::from_secs(20)),
        seed: u.arbitrary().unwrap_or(1),
    }
}

/// Drains the leg, checking each transmit parses and each event is allowed
/// in order (nothing after the leg ended, at most one final outcome).
fn drain(leg: &mut SipLeg, sent: &mut Vec<Message>, outcomes: &mut u32) {
    for _ in 0..1_000 {
        let Some(transmit) = leg.poll_transmit() else { break };
        let message = Message::parse(&transmit.bytes).expect("the leg sends valid SIP");
        if sent.len() < 64 {
            sent.push(message);
        }
    }
    assert!(leg.poll_transmit().is_none(), "the leg kept producing messages");
    while let Some(event) = leg.poll_event() {
        match event {
            LegEvent::Failed { status, .. } => {
                assert!((300..=699).contains(&status), "Failed with status {status}");
                *outcomes += 1;
            }
            LegEvent::Ended { .. } => *outcomes += 1,
            LegEvent::Answered(_)
            | LegEvent::MediaChanged(_)
            | LegEvent::EarlyMedia(_)
            | LegEvent::Ringing => {
                assert_eq!(*outcomes, 0, "{event:?} after the leg ended");
            }
        }
        assert!(*outcomes <= 1, "more than one final outcome");
    }
}

/// Drives a UAC leg through the steps decoded from `data`.
pub fn sip_ua(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = config(&mut u);
    let info = CallInfo {
        call_sid: "CA1".into(),
        stream_sid: "MZ1".into(),
        from: "+1".into(),
        to: "+2".into(),
        params: vec![],
        traceparent: None,
    };
    let mut now = Instant::ZERO;
    let mut leg = SipLeg::new(config, &info, now).expect("valid config");
    let (mut sent, mut outcomes) = (Vec::new(), 0);
    let pbx = SocketAddr::from(PBX);
    drain(&mut leg, &mut sent, &mut outcomes);
    for _ in 0..256 {
        let Ok(step) = u.arbitrary::<Step>() else { break };
        match step {
            Step::Respond { to, status, tag, sdp, expires, damage } => {
                let Some(request) = sent.get(usize::from(to) % sent.len().max(1)) else { continue };
                if request.status().is_some() {
                    continue;
                }
                let mut bytes = response_to(request, 100 + status % 600, tag, sdp, expires).to_bytes();
                if let Some((at, byte)) = damage {
                    let at = usize::from(at) % bytes.len();
                    bytes[at] = byte;
                }
                leg.handle_datagram(now, pbx, &bytes);
            }
            Step::Request { method, cseq, in_dialog, sdp, branch } => {
                let request = pbx_request(&sent, method, cseq, in_dialog, sdp, branch);
                leg.handle_datagram(now, pbx, &request.to_bytes());
            }
            Step::Datagram(bytes) => leg.handle_datagram(now, pbx, &bytes),
            Step::Stream(bytes) => {
                let _ = leg.handle_stream(now, &bytes);
            }
            Step::Advance { ms } => now += Duration::from_millis(u64::from(ms) * 8),
            Step::Timeout => {
                if let Some(deadline) = leg.poll_timeout() {
                    now = now.max(deadline);
                    leg.handle_timeout(now);
                    assert!(leg.poll_timeout().is_none_or(|next| next > now), "timer did not advance");
                }
            }
            Step::Hangup => leg.hangup(now),
        }
        drain(&mut leg, &mut sent, &mut outcomes);
        if leg.state() == LegState::Ended {
            assert_eq!(outcomes, 1, "an ended leg reported exactly one outcome");
        }
    }
    // Left alone, every leg finishes within a few minutes of virtual time.
    if outcomes == 0 {
        leg.hangup(now);
    }
    let end = now + Duration::from_secs(3600);
    while let Some(deadline) = leg.poll_timeout().filter(|&d| d <= end) {
        now = now.max(deadline);
        leg.handle_timeout(now);
        drain(&mut leg, &mut sent, &mut outcomes);
        if leg.is_finished() {
            break;
        }
    }
}
