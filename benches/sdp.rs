//! SDP: building the offer voxproxy sends and parsing a typical Asterisk
//! answer, once per call each.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voxproxy_adapters::sdp::{Codec, Origin, SessionDescription};

const ASTERISK_ANSWER: &[u8] = b"v=0\r\n\
o=- 1702469400 1702469402 IN IP4 203.0.113.5\r\n\
s=Asterisk\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 18346 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n";

fn sdp(c: &mut Criterion) {
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let offer = SessionDescription::new(Origin::new(4242, 1, ip), ip, 40_000)
        .with_codec(Codec::Pcmu)
        .with_codec(Codec::Pcma)
        .with_telephone_event(101)
        .with_ptime(20);
    let mut group = c.benchmark_group("sdp");
    group.bench_function("build_offer", |b| b.iter(|| black_box(&offer).build()));
    group.throughput(Throughput::Bytes(ASTERISK_ANSWER.len() as u64));
    group.bench_function("parse_asterisk_answer", |b| {
        b.iter(|| SessionDescription::parse(black_box(ASTERISK_ANSWER)))
    });
    group.finish();
}

criterion_group!(benches, sdp);
criterion_main!(benches);
