//! SIP → Twilio: a PBX places a PSTN call through `sip.listen`. The PBX
//! is a scripted UAC on loopback (UDP, SIP and RTP sockets of its own); the
//! fake Twilio REST API records the call the proxy creates, and the test
//! plays the rest of Twilio: signed status callbacks to the URL the proxy
//! gave, the voice webhook, and the Media Stream its TwiML names.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UdpSocket;
use voxproxy_adapters::sip::{Message, Method, StreamFramer};
use voxproxy_core::rtp::{RtpHeader, RtpPacket};

use crate::audio::{self, FRAME};
use crate::harness::{
    ACCOUNT_SID, ADMIN_TOKEN, FakeRest, FromProxy, Io, Proxy, RestRequest, TwilioCall, WAIT, free_udp_port,
    free_udp_tcp_port, sid, unique,
};

both_io!(
    pbx_call_answered_with_audio_both_ways_then_pbx_hangs_up,
    pbx_call_ended_by_twilio,
    pbx_reinvite_holds_then_moves_the_media,
    pbx_call_busy_and_cancelled,
    pbx_call_over_tcp,
    baresip_busy_and_refused,
    hostile_sip_never_places_a_call,
    configured_bounds_limit_calls_per_source
);

/// The number the PBX dials, and the caller id the proxy is given.
const CALLEE: &str = "+15550003333";
const CALLER_ID: &str = "+15550009999";

/// A fake Twilio REST API: a create answers a fresh queued call, an update
/// the call with the status it asked for.
async fn twilio_api() -> FakeRest {
    FakeRest::start(|request| {
        if request.path.ends_with("/Calls.json") {
            (201, serde_json::json!({"sid": sid("CA"), "status": "queued", "to": CALLEE}))
        } else {
            let sid =
                request.path.rsplit('/').next().unwrap_or_default().trim_end_matches(".json").to_owned();
            let status = request.form("Status").unwrap_or_else(|| "completed".to_owned());
            (200, serde_json::json!({"sid": sid, "status": status}))
        }
    })
    .await
}

/// The proxy with `sip.listen` on a fresh loopback port allowing 127.0.0.1 only.
/// Other tests bind ports meanwhile: a port taken between the probe and
/// voxproxy's bind is retried with a fresh one.
fn start_proxy(io: Io, api: &FakeRest) -> (Proxy, SocketAddr) {
    start_proxy_with(io, api, &[])
}

/// [`start_proxy`] with more environment.
fn start_proxy_with(io: Io, api: &FakeRest, extra: &[(&str, &str)]) -> (Proxy, SocketAddr) {
    for attempt in 1..=4 {
        let sip: SocketAddr = format!("127.0.0.1:{}", free_udp_tcp_port()).parse().expect("address");
        let (listen, base) = (sip.to_string(), api.base());
        let env = [
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("VOXPROXY_TWILIO_API_BASE", base.as_str()),
            ("VOXPROXY_SIP_LISTEN", listen.as_str()),
            ("VOXPROXY_SIP_ALLOW", "127.0.0.1/32"),
            ("VOXPROXY_TWILIO_CALLER_ID", CALLER_ID),
        ];
        let env: Vec<(&str, &str)> = env.iter().chain(extra).copied().collect();
        match std::panic::catch_unwind(|| Proxy::start(io, &env, &[])) {
            Ok(proxy) => return (proxy, sip),
            Err(panic) => {
                let text = panic.downcast_ref::<String>().map_or("", String::as_str);
                assert!(
                    text.contains("Address already in use") && attempt < 4,
                    "voxproxy did not start: {text}"
                );
            }
        }
    }
    unreachable!("the loop returns or fails");
}

/// The PBX: a scripted UAC with its own SIP and RTP sockets.
struct Pbx {
    sip: UdpSocket,
    rtp: UdpSocket,
    proxy: SocketAddr,
    call_id: String,
    tag: String,
    branch: String,
    /// The proxy's RTP address, from its 200's SDP.
    proxy_rtp: Option<SocketAddr>,
    /// The To header of the proxy's responses (with its tag).
    to: Option<String>,
    rtp_sequence: u16,
    /// SIP over TCP instead of UDP, with its framer.
    tcp: Option<(tokio::net::TcpStream, StreamFramer)>,
}

impl Pbx {
    async fn bind(ip: &str, proxy: SocketAddr) -> Pbx {
        let sip = UdpSocket::bind(format!("{ip}:0")).await.expect("bind the PBX's SIP socket");
        let rtp = UdpSocket::bind(format!("{ip}:0")).await.expect("bind the PBX's RTP socket");
        let n = unique();
        Pbx {
            sip,
            rtp,
            proxy,
            call_id: format!("pbx-call-{n}@test"),
            tag: format!("pbx{n}"),
            branch: format!("z9hG4bKpbx{n}"),
            proxy_rtp: None,
            to: None,
            rtp_sequence: 500,
            tcp: None,
        }
    }

    /// A PBX that speaks SIP to the proxy over one TCP connection.
    async fn connect_tcp(proxy: SocketAddr) -> Pbx {
        let mut pbx = Pbx::bind("127.0.0.1", proxy).await;
        let stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(proxy))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect to sip.listen");
        pbx.tcp = Some((stream, StreamFramer::default()));
        pbx
    }

    fn local(&self) -> SocketAddr {
        match &self.tcp {
            Some((stream, _)) => stream.local_addr().expect("address"),
            None => self.sip.local_addr().expect("address"),
        }
    }

    fn transport(&self) -> &'static str {
        if self.tcp.is_some() { "TCP" } else { "UDP" }
    }

    fn offer(&self) -> String {
        self.offer_version(1, "sendrecv")
    }

    /// The offer at SDP version `version`, in `direction`.
    fn offer_version(&self, version: u32, direction: &str) -> String {
        let rtp = self.rtp.local_addr().expect("address");
        format!(
            "v=0\r\no=- 1 {version} IN IP4 {ip}\r\ns=pbx\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n",
            ip = rtp.ip(),
            port = rtp.port()
        )
    }

    /// A re-INVITE (CSeq `cseq`) offering our RTP socket in `direction`,
    /// up to the proxy's 200 and our ACK; the 200.
    async fn reinvite(&mut self, cseq: u32, direction: &str) -> Message {
        let to = self.to.clone().expect("To with tag");
        let branch = format!("{}-re{cseq}", self.branch);
        let mut invite = self.request(&Method::Invite, &branch, cseq, &to);
        invite.push("Content-Type", "application/sdp");
        invite.body = self.offer_version(cseq, direction).into_bytes();
        self.send(&invite).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let ok = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.recv(left).await.expect("an answer to the re-INVITE");
            if message.cseq() == Some((cseq, Method::Invite)) && message.status().is_some_and(|s| s >= 200) {
                break message;
            }
        };
        assert_eq!(ok.status(), Some(200), "{ok:?}");
        let ack = self.request(&Method::Ack, &format!("{branch}-ack"), cseq, &to);
        self.send(&ack).await;
        ok
    }

    /// RTP payloads that reach the PBX within `wait` (none expected on hold).
    async fn rtp_within(&self, wait: Duration) -> usize {
        let mut buf = vec![0u8; 2048];
        let mut count = 0;
        while let Ok(Ok(_)) = tokio::time::timeout(wait, self.rtp.recv_from(&mut buf)).await {
            count += 1;
        }
        count
    }

    fn request(&self, method: &Method, branch: &str, cseq: u32, to: &str) -> Message {
        let local = self.local();
        Message::request(method.clone(), format!("sip:{CALLEE}@{}", self.proxy))
            .with("Via", format!("SIP/2.0/{} {local};branch={branch}", self.transport()))
            .with("Max-Forwards", "70")
            .with("From", format!("<sip:1001@{}>;tag={}", local.ip(), self.tag))
            .with("To", to)
            .with("Call-ID", self.call_id.clone())
            .with("CSeq", format!("{cseq} {}", method_name(method)))
            .with("Contact", format!("<sip:1001@{local}>"))
    }

    fn invite(&self) -> Message {
        let mut invite =
            self.request(&Method::Invite, &self.branch, 1, &format!("<sip:{CALLEE}@{}>", self.proxy));
        invite.push("Content-Type", "application/sdp");
        invite.body = self.offer().into_bytes();
        invite
    }

    async fn send(&mut self, message: &Message) {
        match &mut self.tcp {
            Some((stream, _)) => stream.write_all(&message.to_bytes()).await.expect("send SIP over TCP"),
            None => {
                self.sip.send_to(&message.to_bytes(), self.proxy).await.expect("send SIP");
            }
        }
    }

    async fn send_raw(&self, bytes: &[u8]) {
        self.sip.send_to(bytes, self.proxy).await.expect("send SIP");
    }

    /// The next SIP message; `None` after `timeout`.
    async fn recv(&mut self, timeout: Duration) -> Option<Message> {
        let mut buf = vec![0u8; 65_536];
        if let Some((stream, framer)) = &mut self.tcp {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                if let Some(message) = framer.next_message().expect("the proxy's TCP stream frames") {
                    return Some(message);
                }
                let n = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await.ok()?.ok()?;
                assert!(n > 0, "the proxy closed the SIP connection");
                framer.push(&buf[..n]).expect("a bounded message");
            }
        }
        let (n, _) = tokio::time::timeout(timeout, self.sip.recv_from(&mut buf)).await.ok()?.ok()?;
        Some(Message::parse(&buf[..n]).unwrap_or_else(|e| panic!("the proxy sent bad SIP ({e:?})")))
    }

    /// Waits for a response with `status` to `method`, skipping 100 Trying and retransmissions.
    async fn expect_status(&mut self, status: u16, method: Method) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.recv(left).await.unwrap_or_else(|| panic!("no {status} within {WAIT:?}"));
            let method_matches = message.cseq().is_some_and(|(_, m)| m == method);
            match message.status() {
                Some(got) if got == status && method_matches => {
                    self.to = message.header("To").map(str::to_owned);
                    return message;
                }
                Some(got) if got < 200 || got == 200 && method == Method::Invite && !method_matches => {}
                Some(got) if method_matches => panic!("expected {status}, got {got}: {message:?}"),
                _ => {}
            }
        }
    }

    /// ACK for the INVITE's final response (`branch`: the INVITE's for a
    /// non-2xx, a new one for a 2xx).
    async fn ack(&mut self, branch: &str) {
        let to = self.to.clone().expect("a response with To");
        self.send(&self.request(&Method::Ack, branch, 1, &to)).await;
    }

    /// Sends RTP (PCMU) to the proxy's port from the offer's RTP socket.
    async fn send_rtp(&mut self, payload: &[u8]) {
        let to = self.proxy_rtp.expect("the proxy's SDP answer");
        let header = RtpHeader::new(0, self.rtp_sequence, u32::from(self.rtp_sequence) * 160, 0x0b0b_0b0b);
        self.rtp_sequence = self.rtp_sequence.wrapping_add(1);
        let mut buf = vec![0u8; 12 + payload.len()];
        let n = header.write(payload, &mut buf).expect("RTP fits");
        self.rtp.send_to(&buf[..n], to).await.expect("send RTP");
    }

    /// The next PCMU payload the proxy sends (comfort noise skipped).
    async fn recv_rtp(&self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut buf = vec![0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (n, _) = tokio::time::timeout(left, self.rtp.recv_from(&mut buf))
                .await
                .expect("RTP from the proxy in time")
                .expect("RTP receive");
            let packet = RtpPacket::parse(&buf[..n]).expect("the proxy's RTP parses");
            if packet.payload_type() == 0 {
                return packet.payload().to_vec();
            }
        }
    }
}

fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Invite => "INVITE",
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        _ => "OPTIONS",
    }
}

/// The `c=` address and `m=` port of an SDP body.
fn sdp_address(body: &[u8]) -> SocketAddr {
    let text = std::str::from_utf8(body).expect("SDP is text");
    let ip = text.lines().find_map(|l| l.strip_prefix("c=IN IP4 ")).expect("c= line").trim();
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .expect("m= line");
    format!("{ip}:{port}").parse().expect("SDP address")
}

/// The path and query of a URL the proxy gave Twilio.
fn target<'a>(proxy: &Proxy, url: &'a str) -> &'a str {
    url.strip_prefix(proxy.public_url.as_str()).unwrap_or_else(|| panic!("{url} is not on this proxy"))
}

/// Waits for the proxy's `n`th create-call request (from 0), checks it,
/// and returns it with the `CallSid` the fake API gave the call.
async fn created_call(api: &FakeRest, n: usize) -> (RestRequest, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let create = loop {
        let creates: Vec<RestRequest> = api
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json"))
            .collect();
        if let Some(create) = creates.into_iter().nth(n) {
            break create;
        }
        assert!(tokio::time::Instant::now() < deadline, "no create-call request #{n}: {:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(create.form("To").as_deref(), Some(CALLEE), "{create:?}");
    assert_eq!(create.form("From").as_deref(), Some(CALLER_ID), "twilio.caller_id: {create:?}");
    let call_sid = create.response["sid"].as_str().expect("the fake's CallSid").to_owned();
    (create, call_sid)
}

/// Posts a signed call status callback as Twilio does.
async fn status(proxy: &Proxy, create: &RestRequest, call_sid: &str, status: &str) {
    let url = create.form("StatusCallback").expect("a StatusCallback");
    let path = target(proxy, &url);
    let params = call_params(call_sid, status);
    let signature = proxy.signer().sign_form(path, &params).expect("sign");
    let response = proxy.post_form(path, &params, Some(&signature)).await;
    assert_eq!(response.status, 204, "status callback {status}: {}", response.text());
}

fn call_params<'a>(call_sid: &'a str, status: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", status),
        ("Direction", "outbound-api"),
        ("From", CALLER_ID),
        ("To", CALLEE),
    ]
}

/// The callee answers: the signed voice webhook, then the stream its
/// TwiML names, `start` sent.
async fn answer(proxy: &Proxy, create: &RestRequest, call_sid: &str) -> TwilioCall {
    let url = create.form("Url").expect("a Url");
    let path = target(proxy, &url);
    assert!(path.starts_with("/twilio/voice?sip="), "the voice webhook names the SIP call: {url}");
    let params = call_params(call_sid, "in-progress");
    let signature = proxy.signer().sign_form(path, &params).expect("sign");
    let response = proxy.post_form(path, &params, Some(&signature)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    TwilioCall::follow(proxy, call_sid.to_owned(), &response.twiml()).await
}

/// Places a call from `pbx` up to the 200 and its ACK: (create request,
/// CallSid, stream, INVITE → 180, stream start → 200).
async fn connected_call(
    proxy: &Proxy,
    api: &FakeRest,
    pbx: &mut Pbx,
) -> (RestRequest, String, TwilioCall, Duration, Duration) {
    let invited = Instant::now();
    pbx.send(&pbx.invite()).await;
    let (create, call_sid) = created_call(api, 0).await;
    status(proxy, &create, &call_sid, "initiated").await;
    status(proxy, &create, &call_sid, "ringing").await;
    pbx.expect_status(180, Method::Invite).await;
    let ringing = invited.elapsed();
    status(proxy, &create, &call_sid, "in-progress").await;
    let call = answer(proxy, &create, &call_sid).await;
    let started = Instant::now();
    let ok = pbx.expect_status(200, Method::Invite).await;
    let answered = started.elapsed();
    assert_eq!(ok.header("Content-Type"), Some("application/sdp"));
    let rtp = sdp_address(&ok.body);
    assert_eq!(rtp.ip().to_string(), "127.0.0.1", "c= is rtp.bind");
    pbx.proxy_rtp = Some(rtp);
    pbx.ack(&format!("{}-ack", pbx.branch)).await;
    eprintln!("SIP call setup: INVITE -> 180 {ringing:?}, stream start -> 200 OK {answered:?}");
    (create, call_sid, call, ringing, answered)
}

async fn wait_call_record(proxy: &Proxy, call_sid: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(record) = proxy.records().into_iter().find(|r| r["call_sid"] == call_sid) {
            return record;
        }
        assert!(tokio::time::Instant::now() < deadline, "no record of {call_sid}: {:?}", proxy.records());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pbx_call_answered_with_audio_both_ways_then_pbx_hangs_up(io: Io) {
    let api = twilio_api().await;
    let (proxy, sip) = start_proxy(io, &api);
    let mut pbx = Pbx::bind("127.0.0.1", sip).await;
    let (create, call_sid, mut call, _, _) = connected_call(&proxy, &api, &mut pbx).await;
    assert!(
        create.form("StatusCallback").is_some_and(|u| u.contains("/twilio/status?sip=")),
        "status callbacks name the SIP call: {create:?}"
    );

    // Caller (Twilio) → PBX, PCMU bit-exact.
    let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0x20 + i * 7; FRAME]).collect();
    for frame in &frames {
        call.send_media(frame).await;
    }
    for frame in &frames {
        assert_eq!(&pbx.recv_rtp().await, frame, "Twilio's audio reaches the PBX unchanged");
    }
    // PBX → Twilio, PCMU bit-exact.
    let reply: Vec<u8> = (0..FRAME).map(|i| (i % 200) as u8 + 20).collect();
    for _ in 0..6 {
        pbx.send_rtp(&reply).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let heard = call.collect_media(FRAME * 2, WAIT).await;
    assert!(heard.windows(FRAME).any(|w| w == reply.as_slice()), "the PBX's audio reaches Twilio unchanged");

    // The PBX hangs up: 200 to its BYE, the Twilio call completed through REST, the stream closed.
    let to = pbx.to.clone().expect("To with tag");
    pbx.send(&pbx.request(&Method::Bye, &format!("{}-bye", pbx.branch), 2, &to)).await;
    pbx.expect_status(200, Method::Bye).await;
    let update = api.wait_for(|r| r.path.ends_with(&format!("/Calls/{call_sid}.json"))).await;
    assert_eq!(update.form("Status").as_deref(), Some("completed"), "{update:?}");
    loop {
        match call.next(WAIT).await {
            Some(FromProxy::Closed(_)) => break,
            Some(_) => {}
            None => panic!("the stream was not closed after the PBX's BYE"),
        }
    }
    status(&proxy, &create, &call_sid, "completed").await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(record["sip_call_id"], pbx.call_id.as_str(), "{record}");
    assert_eq!(record["sip_direction"], "sip_to_twilio", "{record}");
    assert_eq!(record["sip_status"], 200, "{record}");
    assert_eq!(record["hung_up_by"], "backend", "{record}");
    assert_eq!(record["route"], "sip", "{record}");
    assert_eq!(record["call_status"], "completed", "{record}");
    assert!(record["inbound_frames"].as_u64().is_some_and(|n| n >= 5), "{record}");
    assert_eq!(proxy.records().iter().filter(|r| r["call_sid"] == call_sid.as_str()).count(), 1);
}

/// The PBX holds the call with a re-INVITE (sendonly), then resumes it at
/// a new RTP port: audio stops both ways while held, then flows again to
/// and from the new port.
async fn pbx_reinvite_holds_then_moves_the_media(io: Io) {
    let api = twilio_api().await;
    let (proxy, sip) = start_proxy(io, &api);
    let mut pbx = Pbx::bind("127.0.0.1", sip).await;
    let (create, call_sid, mut call, _, _) = connected_call(&proxy, &api, &mut pbx).await;
    let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0x30 + i * 5; FRAME]).collect();
    let reply: Vec<u8> = (0..FRAME).map(|i| (i % 180) as u8 + 30).collect();
    call.send_media(&frames[0]).await;
    assert_eq!(pbx.recv_rtp().await, frames[0], "audio flows before the hold");

    let ok = pbx.reinvite(2, "sendonly").await;
    let answer = String::from_utf8(ok.body.clone()).expect("SDP");
    assert!(answer.contains("a=recvonly"), "sendonly is answered recvonly:\n{answer}");
    assert_eq!(sdp_address(&ok.body), pbx.proxy_rtp.expect("the first answer"), "our media address stays");
    // Held: the caller's audio does not reach the PBX, nor the PBX's the caller.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = pbx.rtp_within(Duration::from_millis(100)).await;
    for frame in &frames {
        call.send_media(frame).await;
        pbx.send_rtp(&reply).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pbx.rtp_within(Duration::from_millis(300)).await, 0, "no audio to a held PBX");
    let mut heard = Vec::new();
    while let Some(message) = call.next(Duration::from_millis(300)).await {
        if let FromProxy::Media(payload) = message {
            heard.push(payload);
        }
    }
    assert!(!heard.contains(&reply), "no PBX audio reaches the caller on hold");

    // Resume at a new RTP port.
    pbx.rtp = UdpSocket::bind("127.0.0.1:0").await.expect("a second RTP socket");
    let ok = pbx.reinvite(3, "sendrecv").await;
    assert!(String::from_utf8_lossy(&ok.body).contains("a=sendrecv"), "{ok:?}");
    for frame in &frames {
        call.send_media(frame).await;
    }
    for frame in &frames {
        assert_eq!(&pbx.recv_rtp().await, frame, "the caller's audio goes to the new port");
    }
    for _ in 0..6 {
        pbx.send_rtp(&reply).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let heard = call.collect_media(FRAME * 2, WAIT).await;
    assert!(heard.windows(FRAME).any(|w| w == reply.as_slice()), "the new port's audio reaches the caller");

    // OPTIONS in the dialog: 200 naming UPDATE among the methods.
    let to = pbx.to.clone().expect("To with tag");
    pbx.send(&pbx.request(&Method::Options, &format!("{}-opt", pbx.branch), 4, &to)).await;
    let options = pbx.expect_status(200, Method::Options).await;
    assert!(options.header("Allow").is_some_and(|a| a.contains("UPDATE")), "{options:?}");

    pbx.send(&pbx.request(&Method::Bye, &format!("{}-bye", pbx.branch), 5, &to)).await;
    pbx.expect_status(200, Method::Bye).await;
    status(&proxy, &create, &call_sid, "completed").await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(record["hung_up_by"], "backend", "{record}");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.get(r#"voxproxy_rtp_rejected_total{reason="on_hold"}"#) >= 1.0,
        "held packets are counted"
    );
}

async fn pbx_call_ended_by_twilio(io: Io) {
    let api = twilio_api().await;
    let (proxy, sip) = start_proxy(io, &api);
    let mut pbx = Pbx::bind("127.0.0.1", sip).await;
    let (create, call_sid, mut call, ringing, answered) = connected_call(&proxy, &api, &mut pbx).await;
    assert!(ringing < WAIT && answered < WAIT);
    call.send_media(&[0x55; FRAME]).await;
    assert_eq!(pbx.recv_rtp().await, vec![0x55; FRAME]);

    // The callee hangs up: Twilio stops the stream, the PBX gets BYE.
    call.send_stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let bye = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = pbx.recv(left).await.expect("a BYE after Twilio hung up");
        if message.method() == Some(Method::Bye) {
            break message;
        }
    };
    assert_eq!(bye.call_id(), Some(pbx.call_id.as_str()));
    let mut ok = Message::response(200);
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        ok.push(name, bye.header(name).expect("header of the BYE"));
    }
    pbx.send(&ok).await;
    status(&proxy, &create, &call_sid, "completed").await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(
        (&record["sip_status"], &record["hung_up_by"]),
        (&Value::from(200), &Value::from("twilio")),
        "{record}"
    );
    assert!(
        !api.requests().iter().any(|r| r.path.contains(&call_sid)),
        "nothing to end through REST: Twilio ended the call"
    );
}

async fn pbx_call_busy_and_cancelled(io: Io) {
    let api = twilio_api().await;
    let (proxy, sip) = start_proxy(io, &api);

    // Busy: Twilio says busy, the PBX gets 486.
    let mut pbx = Pbx::bind("127.0.0.1", sip).await;
    pbx.send(&pbx.invite()).await;
    let (create, call_sid) = created_call(&api, 0).await;
    status(&proxy, &create, &call_sid, "ringing").await;
    pbx.expect_status(180, Method::Invite).await;
    status(&proxy, &create, &call_sid, "busy").await;
    pbx.expect_status(486, Method::Invite).await;
    let branch = pbx.branch.clone();
    pbx.ack(&branch).await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(record["sip_status"], 486, "{record}");
    assert_eq!(record["hung_up_by"], "twilio", "{record}");
    assert_eq!(record["call_status"], "busy", "{record}");

    // CANCEL while it rings: 200 + 487 to the PBX, the Twilio call cancelled.
    let mut pbx = Pbx::bind("127.0.0.1", sip).await;
    pbx.send(&pbx.invite()).await;
    let (create, call_sid) = created_call(&api, 1).await;
    status(&proxy, &create, &call_sid, "ringing").await;
    pbx.expect_status(180, Method::Invite).await;
    let to = format!("<sip:{CALLEE}@{}>", pbx.proxy);
    pbx.send(&pbx.request(&Method::Cancel, &pbx.branch, 1, &to)).await;
    pbx.expect_status(200, Method::Cancel).await;
    pbx.expect_status(487, Method::Invite).await;
    let branch = pbx.branch.clone();
    pbx.ack(&branch).await;
    let cancel = api.wait_for(|r| r.path.ends_with(&format!("/Calls/{call_sid}.json"))).await;
    assert_eq!(cancel.form("Status").as_deref(), Some("canceled"), "{cancel:?}");
    status(&proxy, &create, &call_sid, "canceled").await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(record["sip_status"], 487, "{record}");
    assert_eq!(record["hung_up_by"], "backend", "{record}");
}

async fn hostile_sip_never_places_a_call(io: Io) {
    let api = twilio_api().await;
    let (proxy, sip) = start_proxy(io, &api);

    // Outside sip.allow: 403, and no call is placed.
    let mut stranger = Pbx::bind("127.0.0.2", sip).await;
    stranger.send(&stranger.invite()).await;
    stranger.expect_status(403, Method::Invite).await;
    proxy.wait_metric("voxproxy_sip_listener_refused_total{reason=\"source\"}", 1.0).await;

    // Garbage and an oversize datagram: dropped and counted, no answer.
    let mut pbx = Pbx::bind("127.0.0.1", sip).await;
    pbx.send_raw(b"\x00\x01garbage that is not SIP\r\n\r\n").await;
    pbx.send_raw(&vec![b'A'; 20_000]).await;
    proxy.wait_metric("voxproxy_sip_messages_dropped_total{side=\"uas\",reason=\"parse_error\"}", 1.0).await;
    proxy.wait_metric("voxproxy_sip_listener_refused_total{reason=\"oversize\"}", 1.0).await;
    assert!(pbx.recv(Duration::from_millis(200)).await.is_none(), "nothing answers garbage");

    // A name, not a number: 404, no call.
    let mut named = Pbx::bind("127.0.0.1", sip).await;
    let mut invite = named.invite();
    invite.start = voxproxy_adapters::sip::StartLine::Request {
        method: Method::Invite,
        uri: format!("sip:alice@{sip}"),
    };
    named.send(&invite).await;
    named.expect_status(404, Method::Invite).await;
    assert!(api.requests().is_empty(), "no Twilio call for refused INVITEs: {:?}", api.requests());

    // A flood from one address: bounded by the per-address INVITE rate.
    let mut flood = Pbx::bind("127.0.0.1", sip).await;
    for n in 0..40 {
        let mut invite = flood.invite();
        invite.push("X-N", n.to_string());
        let call_id = format!("flood-{n}-{}", unique());
        invite = replace_header(&invite, "Call-ID", &call_id);
        invite =
            replace_header(&invite, "Via", &format!("SIP/2.0/UDP {};branch=z9hG4bKflood{n}", flood.local()));
        flood.send(&invite).await;
    }
    proxy.wait_metric("voxproxy_sip_listener_refused_total{reason=\"rate\"}", 1.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let creates = api.requests().iter().filter(|r| r.path.ends_with("/Calls.json")).count();
    assert!((1..=16).contains(&creates), "{creates} Twilio calls from a flood of 40 INVITEs");
}

/// `sip.max_calls_per_source` and `sip.invites_per_second` from the
/// environment: 10 INVITEs from one address at once, a rate that lets them
/// all in, and 3 calls per source: 3 Twilio calls, 7 answered 503.
async fn configured_bounds_limit_calls_per_source(io: Io) {
    let api = twilio_api().await;
    let extra = [
        ("VOXPROXY_SIP_MAX_CALLS_PER_SOURCE", "3"),
        ("VOXPROXY_SIP_INVITES_PER_SECOND", "100"),
        ("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let (proxy, sip) = start_proxy_with(io, &api, &extra);
    let mut pbx = Pbx::bind("127.0.0.1", sip).await;
    for n in 0..10 {
        let invite = replace_header(&pbx.invite(), "Call-ID", &format!("bounded-{n}-{}", unique()));
        let via = format!("SIP/2.0/UDP {};branch=z9hG4bKbounded{n}", pbx.local());
        pbx.send(&replace_header(&invite, "Via", &via)).await;
    }
    let mut busy = 0;
    while let Some(message) = pbx.recv(Duration::from_millis(500)).await {
        busy += usize::from(message.status() == Some(503));
    }
    assert_eq!(busy, 7, "INVITEs beyond sip.max_calls_per_source get 503");
    let creates = api.requests().iter().filter(|r| r.path.ends_with("/Calls.json")).count();
    assert_eq!(creates, 3, "one Twilio call per accepted INVITE");
    let config = proxy.admin("GET", "/v1/config", Vec::new()).await.json();
    assert_eq!(config["keys"]["sip.max_calls_per_source"], 3, "{config}");
}

/// `message` with header `name` set to `value` alone.
fn replace_header(message: &Message, name: &str, value: &str) -> Message {
    let mut out = Message { headers: Vec::new(), ..message.clone() };
    for header in &message.headers {
        if header.name.eq_ignore_ascii_case(name) {
            continue;
        }
        out.push(&header.name, header.value.clone());
    }
    out.push(name, value);
    out
}

async fn pbx_call_over_tcp(io: Io) {
    let api = twilio_api().await;
    let (proxy, sip) = start_proxy(io, &api);
    let mut pbx = Pbx::connect_tcp(sip).await;
    let (create, call_sid, mut call, _, _) = connected_call(&proxy, &api, &mut pbx).await;
    call.send_media(&[0x66; FRAME]).await;
    assert_eq!(pbx.recv_rtp().await, vec![0x66; FRAME], "media flows for a call signalled over TCP");
    let to = pbx.to.clone().expect("To with tag");
    let bye = pbx.request(&Method::Bye, &format!("{}-bye", pbx.branch), 2, &to);
    pbx.send(&bye).await;
    pbx.expect_status(200, Method::Bye).await;
    api.wait_for(|r| r.path.ends_with(&format!("/Calls/{call_sid}.json"))).await;
    status(&proxy, &create, &call_sid, "completed").await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(
        (&record["sip_status"], &record["hung_up_by"]),
        (&Value::from(200), &Value::from("backend")),
        "{record}"
    );
}

/// baresip (Debian's `baresip`) as the PBX, for what needs no media: its
/// own INVITE, ACK and retransmissions against the listener. baresip 1.0
/// puts its non-loopback interface address in its SDP (and refuses
/// `net_interface lo`), so calls with media use the scripted UAC above to
/// keep every packet on loopback.
struct Baresip {
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip on `ip` dialling the callee at `listener`; it quits after `seconds`.
    fn dial(ip: &str, listener: SocketAddr, seconds: u32) -> Baresip {
        let found = std::process::Command::new("baresip")
            .arg("-h")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "baresip is required by the SIP interop tests and is not on PATH; install it \
             (`apt-get install baresip`, as .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let say = dir.path().join("say.wav");
        audio::write_wav(&say, 8000, &audio::tones(&[440.0], 0.2, 8000.0, 8000));
        let config = format!(
            "sip_listen {ip}:{port}\nsip_trans_def udp\naudio_player aufile,{heard}\n\
             audio_source aufile,{say}\naudio_alert aufile,{say}\nmodule_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule aufile.so\nmodule_app account.so\nmodule_app menu.so\n",
            port = free_udp_port(false),
            heard = dir.path().join("heard.wav").display(),
            say = say.display(),
        );
        std::fs::write(dir.path().join("config"), config).expect("baresip config");
        std::fs::write(dir.path().join("accounts"), format!("<sip:1001@{ip}>;regint=0;audio_codecs=PCMU\n"))
            .expect("baresip accounts");
        let log = dir.path().join("baresip.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .arg("-e")
            .arg(format!("/dial sip:{CALLEE}@{listener}"))
            .arg("-t")
            .arg(seconds.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("baresip starts");
        Baresip { child, log, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until baresip's output contains `needle`.
    async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(tokio::time::Instant::now() < deadline, "baresip never said {needle:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn baresip_busy_and_refused(io: Io) {
    let api = twilio_api().await;
    let (proxy, sip) = start_proxy(io, &api);

    // Busy: the Twilio call is placed, Twilio says busy, baresip hears 486.
    let baresip = Baresip::dial("127.0.0.1", sip, 10);
    let (create, call_sid) = created_call(&api, 0).await;
    status(&proxy, &create, &call_sid, "ringing").await;
    status(&proxy, &create, &call_sid, "busy").await;
    baresip.wait_for("486 Busy Here").await;
    let record = wait_call_record(&proxy, &call_sid).await;
    assert_eq!(
        (&record["sip_status"], &record["hung_up_by"]),
        (&Value::from(486), &Value::from("twilio")),
        "{record}"
    );
    assert!(record["sip_call_id"].as_str().is_some_and(|id| !id.is_empty()), "baresip's Call-ID: {record}");
    drop(baresip);

    // From outside sip.allow: 403, and no second Twilio call.
    let stranger = Baresip::dial("127.0.0.2", sip, 10);
    stranger.wait_for("403 Forbidden").await;
    proxy.wait_metric("voxproxy_sip_listener_refused_total{reason=\"source\"}", 1.0).await;
    let creates = api.requests().iter().filter(|r| r.path.ends_with("/Calls.json")).count();
    assert_eq!(creates, 1, "the refused INVITE placed no call: {:?}", api.requests());
}

#[test]
fn sip_listen_without_twilio_credentials_refuses_to_start() {
    let listen = format!("127.0.0.1:{}", free_udp_port(false));
    let env = [("TWILIO_AUTH_TOKEN", crate::harness::AUTH_TOKEN), ("VOXPROXY_SIP_LISTEN", listen.as_str())];
    let (status, stderr) = crate::harness::run_to_exit(&env, &["--io", "epoll"]);
    assert!(!status.success(), "sip.listen without TWILIO_ACCOUNT_SID must refuse to start: {stderr}");
    assert!(
        stderr.contains(
            "sip.listen: placing Twilio calls for a PBX needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        ),
        "{stderr}"
    );
}
