//! SIP: parsing a typical INVITE (with SDP) and the 200 OK a PBX answers,
//! and writing the INVITE, once each per call setup.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voxproxy_adapters::sip::Message;

const SDP: &str = "v=0\r\no=- 1702469400 1702469402 IN IP4 203.0.113.5\r\ns=Asterisk\r\nc=IN IP4 203.0.113.5\r\n\
t=0 0\r\nm=audio 18346 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

fn invite() -> String {
    format!(
        "INVITE sip:+14155550100@203.0.113.5:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1f2e3d4c5b6a7980;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"+14155550199\" <sip:+14155550199@192.0.2.1:5060>;tag=0123456789abcdef\r\n\
         To: <sip:+14155550100@203.0.113.5:5060>\r\n\
         Call-ID: fedcba9876543210@voxproxy\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:voxproxy@192.0.2.1:5060>\r\n\
         Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO\r\n\
         Supported: timer\r\n\
         Session-Expires: 1800\r\n\
         User-Agent: voxproxy\r\n\
         Content-Type: application/sdp\r\n\
         X-Twilio-CallSid: CA0123456789abcdef0123456789abcdef\r\n\
         X-Twilio-StreamSid: MZ0123456789abcdef0123456789abcdef\r\n\
         X-Twilio-From: +14155550199\r\n\
         X-Twilio-To: +14155550100\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn ok() -> String {
    format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1f2e3d4c5b6a7980;rport=5060;received=192.0.2.1\r\n\
         Record-Route: <sip:203.0.113.50;lr>\r\n\
         From: \"+14155550199\" <sip:+14155550199@192.0.2.1:5060>;tag=0123456789abcdef\r\n\
         To: <sip:+14155550100@203.0.113.5:5060>;tag=as5f2a1b7c\r\n\
         Call-ID: fedcba9876543210@voxproxy\r\n\
         CSeq: 1 INVITE\r\n\
         Server: Asterisk PBX 20.5.0\r\n\
         Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
         Supported: replaces, timer\r\n\
         Session-Expires: 1800;refresher=uac\r\n\
         Contact: <sip:+14155550100@203.0.113.5:5060>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn sip(c: &mut Criterion) {
    let invite = invite();
    let ok = ok();
    let parsed = Message::parse(invite.as_bytes()).expect("valid INVITE");
    let mut group = c.benchmark_group("sip");
    group.throughput(Throughput::Bytes(invite.len() as u64));
    group.bench_function("parse_invite", |b| b.iter(|| Message::parse(black_box(invite.as_bytes()))));
    group.throughput(Throughput::Bytes(ok.len() as u64));
    group.bench_function("parse_200_ok", |b| b.iter(|| Message::parse(black_box(ok.as_bytes()))));
    let mut out = Vec::with_capacity(2048);
    group.throughput(Throughput::Bytes(invite.len() as u64));
    group.bench_function("write_invite", |b| {
        b.iter(|| {
            out.clear();
            black_box(&parsed).write_to(&mut out);
        })
    });
    group.finish();
}

criterion_group!(benches, sip);
criterion_main!(benches);
