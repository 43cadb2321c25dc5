//! Fuzz entry points: rtp.

use core::time::Duration;

use voxproxy_core::rtcp::{self, RtcpError, RtcpPacket};
use voxproxy_core::rtp::{self, RtpPacket};
use voxproxy_core::telephone_event::{
    DtmfConfig, DtmfReceiver, DtmfReceiverConfig, DtmfSender, EventEnd, TelephoneEvent,
};
use voxproxy_core::time::Instant;

/// RTP parsing: whatever parses must rebuild, through both the one-shot and
/// the header-then-payload paths, into the same bytes (padding content
/// aside), and reparse into the same fields.
pub fn rtp_packet(data: &[u8]) {
    let demuxed_as_rtcp = rtp::is_probably_rtcp(data);
    let Ok(packet) = RtpPacket::parse(data) else { return };
    assert!(!(demuxed_as_rtcp && (200..=204).contains(&data[1])), "RTCP SR..APP parsed as RTP");
    let header = packet.header();
    let payload = packet.payload();
    assert_eq!(header.header_len() + payload.len() + usize::from(packet.padding_len()), data.len());

    let mut out = vec![0u8; data.len()];
    let len = header.write(payload, &mut out).expect("a parsed header rebuilds");
    assert_eq!(len, data.len());
    let padding = usize::from(packet.padding_len());
    assert_eq!(out[..len - padding], data[..len - padding], "rebuilt header or payload differs");
    if padding > 0 {
        assert_eq!(out[len - 1], data[len - 1], "padding count differs");
    }

    let mut in_place = vec![0u8; data.len()];
    let at = header.write_header(&mut in_place).expect("header fits");
    in_place[at..at + payload.len()].copy_from_slice(payload);
    assert_eq!(header.write_padding(&mut in_place, at + payload.len()), Ok(len));
    assert_eq!(in_place, out, "write and write_header + write_padding disagree");

    let again = RtpPacket::parse(&out).expect("a rebuilt packet parses");
    assert_eq!(again.header(), header);
    assert_eq!(again.payload(), payload);
    assert!(again.csrcs().eq(packet.csrcs()));
}

/// RTCP compound walking: every sub-packet that parses rebuilds with the
/// `write_*` functions and reparses equal. The one exception is the padded
/// last packet, whose unpadded body may not be whole words.
pub fn rtcp_packet(data: &[u8]) {
    let parsed: Vec<_> = rtcp::packets(data).collect();
    let all_ok = parsed.iter().all(Result::is_ok);
    let starts_with_report =
        matches!(parsed.first(), Some(Ok(RtcpPacket::SenderReport(_) | RtcpPacket::ReceiverReport(_))));
    assert_eq!(rtcp::validate_compound(data).is_ok(), all_ok && starts_with_report);

    // A rebuilt packet is at most 3 bytes longer (chunk or reason padding
    // the sender cut short at the end of its packet).
    let mut buf = vec![0u8; data.len() + 4];
    let last = parsed.len().saturating_sub(1);
    for (i, item) in parsed.iter().enumerate() {
        let packet = match item {
            Ok(packet) => packet,
            Err(_) => {
                assert_eq!(i, last, "the walk goes on after an error");
                break;
            }
        };
        let written = match *packet {
            RtcpPacket::SenderReport(sr) => {
                rtcp::write_sender_report(&mut buf, sr.ssrc, &sr.info, sr.reports, sr.profile_extension)
            }
            RtcpPacket::ReceiverReport(rr) => {
                rtcp::write_receiver_report(&mut buf, rr.ssrc, rr.reports, rr.profile_extension)
            }
            RtcpPacket::SourceDescription(sdes) => {
                rtcp::write_sdes(&mut buf, sdes.chunks().map(|chunk| (chunk.ssrc, chunk.items)))
            }
            RtcpPacket::Bye(bye) => rtcp::write_bye(&mut buf, bye.ssrcs(), bye.reason()),
            RtcpPacket::Unknown { packet_type, count, body } => {
                rtcp::write_packet(&mut buf, packet_type, count, body)
            }
        };
        match written {
            Ok(len) => {
                let mut again = rtcp::packets(&buf[..len]);
                assert_eq!(again.next(), Some(Ok(*packet)), "rebuilt packet reads differently");
                assert_eq!(again.next(), None);
            }
            Err(RtcpError::NotWordAligned { .. }) => assert_eq!(i, last, "misaligned body before the last"),
            Err(e) => panic!("a parsed RTCP packet does not rebuild: {e}"),
        }
    }
}

/// Telephone events, three ways over the same bytes: (1) a 4-byte payload
/// round-trips, reserved bit aside; (2) 9-byte records (timestamp, payload,
/// milliseconds to advance) drive a receiver, which must never report more
/// events than it was given packets; (3) the first 6 bytes configure a
/// sender, whose packets a receiver must fold into exactly one event of the
/// right duration.
pub fn telephone_event(data: &[u8]) {
    if let Ok(event) = TelephoneEvent::parse(data) {
        let bytes = event.to_bytes().expect("a parsed volume is at most 63");
        assert_eq!(bytes, [data[0], data[1] & !0x40, data[2], data[3]]);
        assert_eq!(TelephoneEvent::parse(&bytes), Ok(event));
    }

    let mut receiver = DtmfReceiver::new(DtmfReceiverConfig::default(), Instant::ZERO);
    let mut now = Instant::ZERO;
    let (mut packets, mut reports) = (0usize, 0usize);
    for record in data.chunks_exact(9) {
        now += Duration::from_millis(u64::from(record[8]));
        if receiver.poll_timeout().is_some_and(|deadline| now >= deadline) {
            receiver.handle_timeout(now);
        }
        let timestamp = u32::from_be_bytes([record[0], record[1], record[2], record[3]]);
        if receiver.handle_packet(now, timestamp, &record[4..8]).is_ok() {
            packets += 1;
        }
        reports += core::iter::from_fn(|| receiver.poll_event()).count();
        assert_eq!(receiver.poll_timeout().is_some(), receiver.current().is_some());
    }
    assert!(reports <= packets, "{reports} events reported from {packets} packets");

    if let [i0, i1, d0, d1, d2, d3, ..] = *data {
        let interval = u16::from_be_bytes([i0, i1]).max(1);
        // Bounded so that one input cannot mean millions of packets.
        let duration = u32::from_be_bytes([d0, d1, d2, d3]) % (u32::from(interval) * 2_000) + 1;
        let config = DtmfConfig { packet_interval: interval, ..DtmfConfig::default() };
        let mut sender =
            DtmfSender::new(&config, data[0], 1_000, duration, Instant::ZERO).expect("valid config");
        let mut receiver = DtmfReceiver::new(DtmfReceiverConfig::default(), Instant::ZERO);
        while let Some(deadline) = sender.poll_timeout() {
            sender.handle_timeout(deadline);
            while let Some(packet) = sender.poll_packet() {
                receiver.handle_packet(deadline, packet.timestamp, &packet.payload).expect("4-byte payload");
            }
        }
        let events: Vec<_> = core::iter::from_fn(|| receiver.poll_event()).collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].event, events[0].duration, events[0].ending),
            (data[0], duration, EventEnd::EndBit)
        );
    }
}
