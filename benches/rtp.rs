//! RTP/RTCP hot paths: parsing and building one 20 ms PCMU packet, walking a
//! typical compound RTCP packet, and one reception-statistics update.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voxproxy_core::rtcp::{self, CompoundBuilder, NtpTimestamp, ReportBlock, RtcpPacket, SenderInfo};
use voxproxy_core::rtp::{ReceptionStats, RtpHeader, RtpPacket};
use voxproxy_core::time::Instant;

/// 12-byte header + 160 bytes of μ-law: one 20 ms PCMU packet.
fn pcmu_packet() -> Vec<u8> {
    let mut out = vec![0u8; 172];
    let header = RtpHeader { marker: true, ..RtpHeader::new(0, 4_711, 160_000, 0xcafe_f00d) };
    header.write(&[0xd5; 160], &mut out).expect("fits");
    out
}

fn rtp(c: &mut Criterion) {
    let packet = pcmu_packet();
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Bytes(packet.len() as u64));
    group.bench_function("parse_pcmu_172", |b| {
        b.iter(|| {
            let p = RtpPacket::parse(black_box(&packet)).expect("valid");
            black_box((p.sequence_number(), p.timestamp(), p.ssrc(), p.payload().len()))
        })
    });
    let payload = [0xd5u8; 160];
    let mut out = [0u8; 1500];
    let mut seq = 0u16;
    group.bench_function("build_pcmu_172", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let header = RtpHeader::new(0, seq, u32::from(seq) * 160, 0xcafe_f00d);
            black_box(header.write(black_box(&payload), &mut out).expect("fits"))
        })
    });
    group.finish();
}

fn rtcp(c: &mut Criterion) {
    let info = SenderInfo {
        ntp: NtpTimestamp::from_bits(0xe94f_2c80_4000_0000),
        rtp_timestamp: 160_000,
        packet_count: 1_000,
        octet_count: 160_000,
    };
    let block =
        ReportBlock { ssrc: 0x0102_0304, jitter: 80, extended_highest_seq: 70_000, ..Default::default() };
    let mut buf = [0u8; 256];
    let mut builder =
        CompoundBuilder::new_sender_report(&mut buf, 0xcafe_f00d, &info, [block]).expect("fits");
    builder.sdes_cname(0xcafe_f00d, b"voxproxy@10.0.0.1").expect("fits");
    let len = builder.finish();
    let compound = buf[..len].to_vec();

    let mut group = c.benchmark_group("rtcp");
    group.throughput(Throughput::Bytes(compound.len() as u64));
    group.bench_function("parse_sr_sdes_compound", |b| {
        b.iter(|| {
            let mut jitter = 0u32;
            for packet in rtcp::packets(black_box(&compound)) {
                match packet.expect("valid") {
                    RtcpPacket::SenderReport(sr) => jitter += sr.reports.map(|r| r.jitter).sum::<u32>(),
                    RtcpPacket::SourceDescription(sdes) => {
                        jitter += sdes.cname(0xcafe_f00d).map_or(0, |c| c.len() as u32)
                    }
                    _ => {}
                }
            }
            black_box(jitter)
        })
    });
    group.finish();
}

fn reception(c: &mut Criterion) {
    let mut stats = ReceptionStats::new(8_000);
    let mut i = 0u64;
    c.bench_function("reception_stats_update", |b| {
        b.iter(|| {
            i += 1;
            let now = Instant::from_nanos(i * 20_000_000);
            black_box(stats.handle_packet(
                now,
                0xcafe_f00d,
                black_box(i as u16),
                (i as u32).wrapping_mul(160),
            ))
        })
    });
}

criterion_group!(benches, rtp, rtcp, reception);
criterion_main!(benches);
