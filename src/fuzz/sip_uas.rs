//! Fuzz entry point `sip_uas`: the [`SipServer`] of `sip.listen` driven by
//! arbitrary INVITEs (with and without session timers), in-dialog requests
//! built from what it answered (re-INVITE, UPDATE, OPTIONS, BYE, ACK,
//! CANCEL, with arbitrary SDP), responses to its BYEs and refreshes, the
//! proxy's calls (ringing, answer, reject, hangup), raw bytes and clock
//! steps, with its invariants checked after every step.

use core::time::Duration;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use voxproxy_adapters::sdp::{Codec, Origin, SessionDescription};
use voxproxy_adapters::sip::server::{CallId, ServerEvent, ServerLimits, SipServer, parse_allow};
use voxproxy_adapters::sip::{Message, Method, Timers, Transport};
use voxproxy_core::Instant;

const PBX: ([u8; 4], u16) = ([10, 1, 0, 5], 5060);

const SDPS: [&[u8]; 5] = [
    b"v=0\r\no=- 1 1 IN IP4 10.1.0.5\r\ns=-\r\nc=IN IP4 10.1.0.5\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    b"v=0\r\no=- 1 2 IN IP4 10.1.0.5\r\ns=-\r\nc=IN IP4 10.1.0.5\r\nt=0 0\r\nm=audio 20002 RTP/AVP 96\r\na=rtpmap:96 PCMU/8000\r\na=sendonly\r\n",
    b"v=0\r\no=- 1 3 IN IP4 10.1.0.5\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 20004 RTP/AVP 0\r\na=inactive\r\n",
    b"v=0\r\no=- 1 4 IN IP4 10.1.0.5\r\ns=-\r\nc=IN IP4 10.1.0.5\r\nt=0 0\r\nm=audio 20006 RTP/AVP 8\r\n",
    b"garbage",
];

#[derive(Arbitrary, Debug)]
enum Step {
    /// A new INVITE (call `n`), maybe asking for a session timer.
    Invite {
        n: u8,
        sdp: u8,
        expires: u8,
    },
    /// A request in call `n`'s dialog (with our tag once we answered).
    InDialog {
        n: u8,
        method: u8,
        cseq: u8,
        sdp: u8,
        branch: u8,
    },
    /// A response to the `to`-th request the server sent.
    Respond {
        to: u8,
        status: u16,
    },
    /// What the proxy does with the `call`-th call it heard of.
    Ring {
        call: u8,
    },
    Answer {
        call: u8,
    },
    Reject {
        call: u8,
        status: u16,
    },
    Hangup {
        call: u8,
    },
    Datagram(Vec<u8>),
    Advance {
        ms: u16,
    },
    Timeout,
}

/// The fuzz state: the server, what it sent, what it reported.
struct Harness {
    server: SipServer,
    now: Instant,
    /// Requests the server sent (BYE, UPDATE), the last 32.
    requests: Vec<Message>,
    /// The To header (with our tag) of each call's responses, by Call-ID.
    tags: HashMap<String, String>,
    calls: Vec<CallId>,
    /// Calls reported over (Ended, TimedOut, Cancelled).
    over: Vec<CallId>,
}

/// Drives a UAS through the steps decoded from `data`.
pub fn sip_uas(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let reliable: bool = u.arbitrary().unwrap_or(false);
    let transport = if reliable { Transport::Tcp } else { Transport::Udp };
    let allow = parse_allow("10.1.0.0/16").expect("valid");
    let limits = ServerLimits { max_calls: 8, max_calls_per_source: 6 };
    let server =
        SipServer::new(SocketAddr::from(([10, 0, 0, 1], 5060)), transport, allow, Timers::default(), 5)
            .with_limits(limits);
    let mut h = Harness {
        server,
        now: Instant::ZERO,
        requests: Vec::new(),
        tags: HashMap::new(),
        calls: Vec::new(),
        over: Vec::new(),
    };
    for _ in 0..256 {
        let Ok(step) = u.arbitrary::<Step>() else { break };
        h.step(step);
        h.drain();
    }
    // Hung up and left alone, every call's transactions finish.
    for id in h.calls.clone() {
        h.server.hangup(h.now, id);
    }
    h.drain();
    let end = h.now + Duration::from_secs(3600);
    while let Some(deadline) = h.server.poll_timeout().filter(|&d| d <= end) {
        h.now = h.now.max(deadline);
        h.server.handle_timeout(h.now);
        h.drain();
    }
    assert!(h.server.poll_timeout().is_none(), "a timer outlived every call");
}

impl Harness {
    fn step(&mut self, step: Step) {
        let pbx = SocketAddr::from(PBX);
        let now = self.now;
        match step {
            Step::Invite { n, sdp, expires } => {
                let invite = invite(n, sdp, expires);
                self.server.handle_datagram(now, pbx, &invite.to_bytes());
            }
            Step::InDialog { n, method, cseq, sdp, branch } => {
                let request = self.in_dialog(n, method, cseq, sdp, branch);
                self.server.handle_datagram(now, pbx, &request.to_bytes());
            }
            Step::Respond { to, status } => {
                let Some(request) = self.requests.get(usize::from(to) % self.requests.len().max(1)) else {
                    return;
                };
                let response = response_to(request, 100 + status % 600);
                self.server.handle_datagram(now, pbx, &response.to_bytes());
            }
            Step::Ring { call } => {
                if let Some(&id) = self.pick(call) {
                    self.server.ringing(now, id);
                }
            }
            Step::Answer { call } => {
                if let Some(&id) = self.pick(call) {
                    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
                    let sdp = SessionDescription::new(Origin::new(1, 1, ip), ip, 30_000)
                        .with_codec(Codec::Pcmu)
                        .with_telephone_event(101);
                    self.server.answer(now, id, &sdp);
                }
            }
            Step::Reject { call, status } => {
                if let Some(&id) = self.pick(call) {
                    self.server.reject(now, id, status);
                }
            }
            Step::Hangup { call } => {
                if let Some(&id) = self.pick(call) {
                    self.server.hangup(now, id);
                }
            }
            Step::Datagram(bytes) => self.server.handle_datagram(now, pbx, &bytes),
            Step::Advance { ms } => self.now += Duration::from_millis(u64::from(ms) * 16),
            Step::Timeout => {
                if let Some(deadline) = self.server.poll_timeout() {
                    self.now = self.now.max(deadline);
                    self.server.handle_timeout(self.now);
                    assert!(
                        self.server.poll_timeout().is_none_or(|next| next > self.now),
                        "timer did not advance"
                    );
                }
            }
        }
    }

    fn pick(&self, call: u8) -> Option<&CallId> {
        self.calls.get(usize::from(call) % self.calls.len().max(1))
    }

    /// A request in call `n`'s dialog, To-tagged as our responses were.
    fn in_dialog(&self, n: u8, method: u8, cseq: u8, sdp: u8, branch: u8) -> Message {
        let methods =
            [Method::Invite, Method::Update, Method::Options, Method::Bye, Method::Ack, Method::Cancel];
        let method = methods[usize::from(method) % methods.len()].clone();
        let call_id = format!("call{}", n % 8);
        let to = self.tags.get(&call_id).cloned().unwrap_or_else(|| "<sip:+14155550100@10.0.0.1>".to_owned());
        let name = method.to_string();
        let mut m = Message::request(method, "sip:voxproxy@10.0.0.1:5060")
            .with("Via", format!("SIP/2.0/UDP 10.1.0.5:5060;branch=z9hG4bK{branch}"))
            .with("From", "<sip:1001@10.1.0.5>;tag=pbx")
            .with("To", to)
            .with("Call-ID", call_id)
            .with("CSeq", format!("{cseq} {name}"))
            .with("Contact", "<sip:1001@10.1.0.5:5060>");
        if cseq.is_multiple_of(3) {
            m.push("Session-Expires", format!("{};refresher=uac", 60 + u32::from(cseq)));
        }
        if let Some(body) = SDPS.get(usize::from(sdp)) {
            m.body = body.to_vec();
        }
        m
    }

    /// Takes everything the server sends and reports, checking each.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            let Some(transmit) = self.server.poll_transmit() else { break };
            let message = Message::parse(&transmit.bytes).expect("the server sends valid SIP");
            if message.status().is_some() {
                if let (Some(call_id), Some(to)) = (message.call_id(), message.header("To"))
                    && to.contains("tag=")
                    && self.tags.len() < 64
                {
                    self.tags.entry(call_id.to_owned()).or_insert_with(|| to.to_owned());
                }
            } else {
                if self.requests.len() >= 32 {
                    self.requests.remove(0);
                }
                self.requests.push(message);
            }
        }
        assert!(self.server.poll_transmit().is_none(), "the server kept producing messages");
        while let Some(event) = self.server.poll_event() {
            self.check(&event);
        }
    }

    fn check(&mut self, event: &ServerEvent) {
        match *event {
            ServerEvent::IncomingCall { id, .. } => {
                assert!(!self.calls.contains(&id), "a call id was reused");
                if self.calls.len() < 64 {
                    self.calls.push(id);
                }
            }
            ServerEvent::Confirmed(id) | ServerEvent::MediaChanged { id, .. } => {
                assert!(!self.over.contains(&id), "{event:?} after the call ended");
            }
            ServerEvent::Cancelled(id) | ServerEvent::Ended { id, .. } | ServerEvent::TimedOut(id) => {
                assert!(!self.over.contains(&id), "a call ended twice: {event:?}");
                self.over.push(id);
            }
        }
    }
}

fn invite(n: u8, sdp: u8, expires: u8) -> Message {
    let mut m = Message::request(Method::Invite, "sip:+14155550100@10.0.0.1")
        .with("Via", format!("SIP/2.0/UDP 10.1.0.5:5060;branch=z9hG4bKinv{n}"))
        .with("From", "<sip:1001@10.1.0.5>;tag=pbx")
        .with("To", "<sip:+14155550100@10.0.0.1>")
        .with("Call-ID", format!("call{}", n % 8))
        .with("CSeq", "1 INVITE")
        .with("Contact", "<sip:1001@10.1.0.5:5060>");
    match expires % 4 {
        1 => m.push("Session-Expires", format!("{};refresher=uac", 80 + u32::from(expires))),
        2 => m.push("Session-Expires", format!("{};refresher=uas", 80 + u32::from(expires))),
        3 => m.push("Session-Expires", (80 + u32::from(expires)).to_string()),
        _ => {}
    }
    if expires % 8 < 4 {
        m.push("Supported", "timer");
    }
    if let Some(body) = SDPS.get(usize::from(sdp)) {
        m.body = body.to_vec();
    }
    m
}

fn response_to(request: &Message, status: u16) -> Message {
    let mut r = Message::response(status);
    for via in request.header_values("Via") {
        r.push("Via", via);
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(value) = request.header(name) {
            r.push(name, value);
        }
    }
    r
}
