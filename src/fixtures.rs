//! Fixtures shared by the benches and the allocation tests: states that
//! take a page to reach and that both measure from.

use std::net::SocketAddr;
use std::time::Duration;

use voxproxy_adapters::bridge::{BackendCodec, CallBridge, LegOutcome, SipBackend};
use voxproxy_adapters::sip::{CallInfo, MediaOffer, Message, SipLegConfig, SipUri, Timers, Transport};
use voxproxy_core::Instant;

/// Where the answered call's PBX signals from.
const PBX: &str = "127.0.0.1:5060";

/// A PCMU SIP leg for a started `bridge`, answered at time zero by a PBX
/// whose RTP is at `backend` (the INVITE, the PBX's 200 OK with its SDP,
/// the ACK, all drained). Returns the leg and what its first
/// [`SipBackend::drive`] said.
///
/// # Panics
/// If the leg cannot be built or answered: a fixture, not input handling.
#[must_use]
pub fn answered_sip_leg(
    bridge: &mut CallBridge,
    backend: SocketAddr,
    seed: u64,
) -> (SipBackend, Option<LegOutcome>) {
    let pbx: SocketAddr = PBX.parse().expect("addr");
    let config = SipLegConfig {
        target: SipUri::parse("sip:agent@127.0.0.1:5060").expect("uri"),
        next_hop: pbx,
        transport: Transport::Udp,
        local: "127.0.0.1:5062".parse().expect("addr"),
        media: MediaOffer {
            address: backend.ip(),
            port: 40_002,
            codec: BackendCodec::Pcmu,
            telephone_event: 101,
        },
        credentials: None,
        timers: Timers::default(),
        keepalive: Some(Duration::from_secs(30)),
        ring_timeout: None,
        seed,
    };
    let mut sip = SipBackend::new(config, &CallInfo::default(), Instant::ZERO, bridge).expect("leg");
    let invite = Message::parse(&sip.poll_transmit().expect("INVITE").bytes).expect("INVITE parses");
    let mut ok = Message::response(200);
    for via in invite.header_values("Via") {
        ok.push("Via", via);
    }
    for name in ["From", "Call-ID", "CSeq"] {
        ok.push(name, invite.header(name).expect("header"));
    }
    ok.push("To", format!("{};tag=pbx", invite.header("To").expect("To")));
    ok.push("Contact", "<sip:agent@127.0.0.1:5060>");
    ok.push("Content-Type", "application/sdp");
    ok.body = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {}\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        backend.ip(),
        backend.port()
    )
    .into_bytes();
    sip.handle_datagram(Instant::ZERO, pbx, &ok.to_bytes());
    let outcome = sip.drive(Instant::ZERO, bridge);
    while sip.poll_transmit().is_some() {}
    while bridge.poll_output().is_some() {}
    (sip, outcome)
}
