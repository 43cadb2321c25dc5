//! One RTP packet through the rig's echo backend and back:
//! `cargo run -p voxproxy-rig --example echo_roundtrip`.

use std::net::UdpSocket;
use std::time::Duration;

use voxproxy_core::rtp::{RtpHeader, RtpPacket};
use voxproxy_rig::echo::{EchoConfig, EchoServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let echo = EchoServer::spawn(&EchoConfig::default())?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;

    let mut datagram = [0u8; 172];
    let len = RtpHeader::new(0, 1, 160, 0x1234).write(&[0xff; 160], &mut datagram)?;
    client.send_to(&datagram[..len], echo.local_addr())?;
    let mut back = [0u8; 1500];
    let (n, from) = client.recv_from(&mut back)?;
    let packet = RtpPacket::parse(&back[..n])?;
    println!(
        "{n} bytes back from {from}: seq {}, timestamp {}, ssrc {:#x}",
        packet.sequence_number(),
        packet.timestamp(),
        packet.ssrc()
    );
    let stats = echo.shutdown();
    println!("echo: received {}, echoed {}", stats.received, stats.echoed);
    Ok(())
}
