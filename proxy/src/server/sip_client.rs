//! The SIP signalling of a call whose backend is a `sip:` URI (Twilio →
//! PBX): one socket per call (UDP, or TCP with `;transport=tcp`), moved in
//! and out of the sans-IO [`SipBackend`], which decides everything about
//! the call (docs/ARCHITECTURE.md, *Legs*). What this file adds is I/O:
//! resolving the next hop, binding or connecting, bounded reads and
//! writes, reporting counters, and completing the Twilio call through the
//! REST API when the PBX hung up.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncRead as _;
use tokio::net::{TcpStream, UdpSocket};
use voxproxy_adapters::bridge::{CallBridge, LegOutcome, SipBackend};
use voxproxy_adapters::rest::UpdateCall;
use voxproxy_adapters::route::{ROUTE_PARAMETER, SipTransport, SipUri as BackendUri};
use voxproxy_adapters::sip::auth::Credentials;
use voxproxy_adapters::sip::{
    CallInfo, LegState, MAX_MESSAGE_BYTES, MediaOffer, SipCounters, SipLegConfig, SipUri, Timers, Transmit,
    Transport,
};
use voxproxy_core::Instant;

use super::WorkerContext;
use super::directory::LegView;
use crate::capture::Capture;
use crate::config::Config;
use crate::metrics::SipSide;
use crate::otel::SpanRecord;

/// How long resolving and reaching the next hop may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// In-dialog OPTIONS this often, as a health probe of the PBX (a candidate
/// for a config key).
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Bytes waiting for a slow TCP peer before the connection counts as broken.
const MAX_TCP_BACKLOG: usize = 64 * 1024;
/// How long a hung-up leg may take to finish its CANCEL or BYE.
pub(crate) const HANGUP_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the REST request completing the Twilio call may take.
const REST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest read: one message over the limit still fits, so it is refused
/// by the parser (and counted) rather than cut.
pub(crate) const RECV_BYTES: usize = MAX_MESSAGE_BYTES + 1;

/// The socket towards the next hop.
enum Link {
    /// Received through tokio; sent through a clone of the same socket,
    /// since tokio's `try_send_to` refuses (WouldBlock) until the reactor
    /// has seen the new socket once, which would lose the INVITE's first
    /// copy and delay every call by T1 (measured: 502 ms instead of 0).
    Udp {
        socket: UdpSocket,
        sender: std::net::UdpSocket,
    },
    Tcp {
        stream: TcpStream,
        backlog: Vec<u8>,
        open: bool,
    },
}

/// One call's SIP leg and its socket.
pub(crate) struct SipCall {
    backend: SipBackend,
    link: Link,
    next_hop: SocketAddr,
    reported: SipCounters,
    published: Option<LegView>,
    started: std::time::Instant,
    answer_logged: bool,
    hung_up: bool,
    /// The `sip.invite` span, until the INVITE's final response (its id is
    /// the `traceparent` the INVITE carried); `None` when not traced.
    invite_span: Option<SpanRecord>,
}

/// The SIP URI of the backend this call takes: the route's, else the
/// global `rtp.backend`; `None` for other legs.
pub(crate) fn sip_backend(config: &Config, bridge: &CallBridge) -> Option<BackendUri> {
    let label = bridge.stream().and_then(|s| s.custom_parameter(ROUTE_PARAMETER));
    let backend = label
        .and_then(|label| {
            voxproxy_adapters::route::route_by_label(&config.routes, &config.default_route, label)
        })
        .map_or(&config.rtp.backend, |matched| &matched.route.backend);
    match backend {
        voxproxy_adapters::route::Backend::Sip(uri) => Some(uri.clone()),
        _ => None,
    }
}

impl SipCall {
    /// Reaches the next hop and sends the INVITE; the bridge waits for the
    /// media the answer names.
    pub(crate) async fn start(
        config: &Config,
        uri: &BackendUri,
        bridge: &mut CallBridge,
        rtp_port: u16,
        now: Instant,
        capture: &mut Capture,
        invite_span: Option<(SpanRecord, String)>,
    ) -> Result<SipCall, String> {
        let (invite_span, traceparent) = invite_span.unzip();
        let Some(start) = bridge.stream() else { return Err("the stream has not started".to_owned()) };
        let from = start.custom_parameter("From").unwrap_or_default().to_owned();
        let to = start.custom_parameter("To").unwrap_or_default().to_owned();
        let info = CallInfo {
            call_sid: start.call_sid.as_str().to_owned(),
            stream_sid: start.stream_sid.as_str().to_owned(),
            from: from.clone(),
            to: to.clone(),
            // CallSid, From and To travel as X-Twilio-*; the route label is ours.
            params: start
                .custom_parameters
                .iter()
                .filter(|(name, _)| !matches!(name.as_str(), "CallSid" | "From" | "To" | ROUTE_PARAMETER))
                .cloned()
                .collect(),
            traceparent,
        };
        let target = SipUri::parse(&uri.request_uri(&to, &from)).map_err(|e| e.to_string())?;
        let port = uri.port.unwrap_or(5060);
        let next_hop = resolve(&uri.host, port, config.rtp.bind).await?;
        let (link, transport, local) = connect(uri.transport, config.rtp.bind, next_hop).await?;
        let advertised = match config.rtp.media_address() {
            ip if ip.is_unspecified() => local.ip(),
            ip => ip,
        };
        let credentials = match (&config.sip.username, &config.secrets.sip_password) {
            (Some(username), Some(password)) => {
                Some(Credentials { username: username.clone(), password: password.expose().to_owned() })
            }
            _ => None,
        };
        let leg = SipLegConfig {
            target,
            next_hop,
            transport,
            local: SocketAddr::new(advertised, local.port()),
            media: MediaOffer {
                address: advertised,
                port: rtp_port,
                codec: config.rtp.codec,
                telephone_event: config.rtp.dtmf_payload_type,
            },
            credentials,
            timers: Timers::default(),
            keepalive: Some(KEEPALIVE),
            ring_timeout: Some(config.sip.ring_timeout),
            seed: u64::from_le_bytes(crate::runtime::random_bytes()),
        };
        // Captured before the leg exists: a leg that cannot start fails
        // the same way in a replay.
        capture.with(|c| c.sip_start(now, &leg, &info));
        let backend = SipBackend::new(leg, &info, now, bridge).map_err(|e| e.to_string())?;
        Ok(SipCall {
            backend,
            link,
            next_hop,
            reported: SipCounters::default(),
            published: None,
            started: std::time::Instant::now(),
            answer_logged: false,
            hung_up: false,
            invite_span,
        })
    }

    /// The sans-IO leg.
    pub(crate) fn backend(&self) -> &SipBackend {
        &self.backend
    }

    /// Waits for signalling from the next hop (cancel-safe); pends forever
    /// once a TCP connection is gone.
    ///
    /// Polled rather than awaiting tokio's `recv_from`/`read` futures: the
    /// call loop builds this future every turn, and its size (272 bytes
    /// with tokio's) is part of every call's task, SIP or not (issue 13).
    pub(crate) async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let next_hop = self.next_hop;
        std::future::poll_fn(|cx| {
            let mut read = tokio::io::ReadBuf::new(buf);
            let from = match &mut self.link {
                Link::Udp { socket, .. } => std::task::ready!(socket.poll_recv_from(cx, &mut read))?,
                Link::Tcp { stream, open: true, .. } => {
                    std::task::ready!(std::pin::Pin::new(stream).poll_read(cx, &mut read))?;
                    next_hop
                }
                Link::Tcp { open: false, .. } => return std::task::Poll::Pending,
            };
            std::task::Poll::Ready(Ok((read.filled().len(), from)))
        })
        .await
    }

    /// Hands what [`SipCall::recv`] returned to the leg.
    pub(crate) fn received(
        &mut self,
        now: Instant,
        result: io::Result<(usize, SocketAddr)>,
        buf: &[u8],
        capture: &mut Capture,
    ) {
        let bytes = match result {
            Ok((n, from)) if n > 0 || matches!(self.link, Link::Udp { .. }) => {
                (&buf[..n.min(buf.len())], from)
            }
            Ok(_) => {
                tracing::info!("the SIP TCP connection was closed by the peer");
                self.close_tcp();
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "SIP receive failed");
                if matches!(self.link, Link::Tcp { .. }) {
                    self.close_tcp();
                }
                return;
            }
        };
        match self.link {
            Link::Udp { .. } => {
                capture.with(|c| c.sip_datagram(now, bytes.1, bytes.0));
                self.backend.handle_datagram(now, bytes.1, bytes.0);
            }
            Link::Tcp { .. } => {
                capture.with(|c| c.sip_stream(now, bytes.0));
                if let Err(e) = self.backend.handle_stream(now, bytes.0) {
                    tracing::warn!(error = %e, "unreadable SIP over TCP; closing the connection");
                    self.close_tcp();
                }
            }
        }
    }

    fn close_tcp(&mut self) {
        if let Link::Tcp { open, backlog, .. } = &mut self.link {
            *open = false;
            backlog.clear();
        }
    }

    /// Timers of the leg that are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant, capture: &mut Capture) {
        if self.backend.poll_timeout().is_some_and(|at| at <= now) {
            capture.with(|c| c.sip_timeout(now));
            self.backend.handle_timeout(now);
        }
    }

    /// When the leg next needs [`SipCall::handle_timeout`].
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.backend.poll_timeout()
    }

    /// The caller's side ended: CANCEL or BYE.
    pub(crate) fn hangup(&mut self, now: Instant, capture: &mut Capture) {
        if !std::mem::replace(&mut self.hung_up, true) {
            capture.with(|c| c.sip_hangup(now));
            self.backend.hangup(now);
        }
    }

    /// Whether a hung-up leg has nothing left to wait for: its dialog is
    /// over (the transactions' absorbing timers need not run out).
    pub(crate) fn is_done(&self) -> bool {
        self.backend.state() == LegState::Ended
    }

    /// After every input: the leg's events into the bridge, what that means
    /// for the Twilio call, the leg's messages onto the socket.
    pub(crate) fn pump(
        &mut self,
        ctx: &Rc<WorkerContext>,
        bridge: &mut CallBridge,
        now: Instant,
        capture: &mut Capture,
    ) {
        if self.backend.leg().has_events() {
            capture.with(|c| c.sip_drive(now));
        }
        match self.backend.drive(now, bridge) {
            Some(LegOutcome::Failed { status, reason }) => {
                self.end_invite_span(ctx, Some(status));
                tracing::warn!(
                    status,
                    reason,
                    call_id = self.backend.call_id(),
                    "SIP call failed; closing the stream so the caller hears the route's fallback"
                );
                if let Some(start) = bridge.stream() {
                    ctx.shared.calls.leg_failed(start.call_sid.as_str());
                }
            }
            Some(LegOutcome::RemoteHangup) => {
                tracing::info!(call_id = self.backend.call_id(), "the PBX hung up");
                if let Some(start) = bridge.stream() {
                    complete_twilio_call(ctx, start.call_sid.as_str());
                }
            }
            None => {}
        }
        if self.backend.answered_at().is_some() && !std::mem::replace(&mut self.answer_logged, true) {
            // Stream start to 200 OK: the call-setup time the README quotes.
            let setup_ms = self.started.elapsed().as_millis() as u64;
            tracing::info!(setup_ms, call_id = self.backend.call_id(), "SIP call answered");
            self.end_invite_span(ctx, self.backend.final_status());
        }
        while let Some(transmit) = self.backend.poll_transmit() {
            capture.with(|c| c.sip_output(&transmit));
            self.send(&transmit);
        }
        self.flush_tcp();
    }

    /// Ends the `sip.invite` span once, with the INVITE's final status
    /// (`None`: the call ended before one came).
    pub(crate) fn end_invite_span(&mut self, ctx: &WorkerContext, status: Option<u16>) {
        let Some(mut span) = self.invite_span.take() else { return };
        span = span.attr("sip.call_id", self.backend.call_id().to_owned());
        match status {
            Some(status) => {
                span = span.attr("sip.status_code", i64::from(status));
                if status >= 300 {
                    span = span.failed(format!("SIP {status}"));
                }
            }
            None => span = span.failed("no final response before the call ended"),
        }
        super::traces::end(&ctx.shared, Some(span));
    }

    fn send(&mut self, transmit: &Transmit) {
        match &mut self.link {
            Link::Udp { sender, .. } => {
                // SIP over UDP retransmits by itself: a full buffer loses
                // one copy, not the message.
                if let Err(e) = sender.send_to(&transmit.bytes, transmit.dest) {
                    tracing::debug!(error = %e, dest = %transmit.dest, "SIP send failed");
                }
            }
            Link::Tcp { backlog, open, .. } => {
                if !*open {
                    return;
                }
                if backlog.len() + transmit.bytes.len() > MAX_TCP_BACKLOG {
                    tracing::warn!("the SIP TCP peer reads too slowly; closing the connection");
                    self.close_tcp();
                    return;
                }
                backlog.extend_from_slice(&transmit.bytes);
            }
        }
    }

    /// Writes what the TCP connection can take now; the rest waits for the
    /// next turn of the call's loop (at least every 20 ms while audio flows).
    fn flush_tcp(&mut self) {
        let Link::Tcp { stream, backlog, open } = &mut self.link else { return };
        while *open && !backlog.is_empty() {
            match stream.try_write(backlog) {
                Ok(0) => *open = false,
                Ok(n) => {
                    backlog.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::info!(error = %e, "SIP TCP write failed");
                    *open = false;
                }
            }
        }
    }

    /// Reports counters to `voxproxy_sip_*` and the leg to the directory.
    pub(crate) fn publish(&mut self, ctx: &WorkerContext, registration: &super::directory::Registration) {
        let now = self.backend.counters().clone();
        ctx.shared.metrics.sip().add(SipSide::Client, &self.reported, &now);
        self.reported = now;
        let view = self.view();
        if self.published.as_ref() != Some(&view) {
            registration.publish_leg(view.clone());
            self.published = Some(view);
        }
    }

    fn view(&self) -> LegView {
        LegView {
            kind: "sip",
            state: Some(state_name(self.backend.state())),
            call_id: Some(self.backend.call_id().to_owned()),
            final_status: self.backend.final_status(),
        }
    }
}

fn state_name(state: LegState) -> &'static str {
    match state {
        LegState::Calling => "calling",
        LegState::Early => "early",
        LegState::Confirmed => "confirmed",
        LegState::Cancelling => "cancelling",
        LegState::Terminating => "terminating",
        LegState::Ended => "ended",
    }
}

/// The next hop's address: an IP literal, or a name looked up (bounded),
/// preferring the family of `rtp.bind`.
async fn resolve(host: &str, port: u16, bind: IpAddr) -> Result<SocketAddr, String> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let found = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| format!("looking up {host} took longer than {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot look up {host}: {e}"))?
        .collect::<Vec<_>>();
    found
        .iter()
        .find(|a| a.is_ipv4() == bind.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("{host} has no address"))
}

/// Binds (UDP) or connects (TCP) towards `next_hop`; returns the link, its
/// transport and the local address.
async fn connect(
    transport: SipTransport,
    bind: IpAddr,
    next_hop: SocketAddr,
) -> Result<(Link, Transport, SocketAddr), String> {
    match transport {
        SipTransport::Udp => {
            let bound = std::net::UdpSocket::bind(SocketAddr::new(bind, 0))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|e| format!("cannot bind a SIP socket on {bind}: {e}"))?;
            let sender = bound.try_clone().map_err(|e| format!("cannot clone the SIP socket: {e}"))?;
            let socket = UdpSocket::from_std(bound).map_err(|e| e.to_string())?;
            let mut local = socket.local_addr().map_err(|e| e.to_string())?;
            if local.ip().is_unspecified() {
                local.set_ip(route_source(next_hop).unwrap_or(local.ip()));
            }
            Ok((Link::Udp { socket, sender }, Transport::Udp, local))
        }
        SipTransport::Tcp => {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(next_hop))
                .await
                .map_err(|_| {
                    format!("connecting to {next_hop} over TCP took longer than {CONNECT_TIMEOUT:?}")
                })?
                .map_err(|e| format!("cannot connect to {next_hop} over TCP: {e}"))?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().map_err(|e| e.to_string())?;
            Ok((Link::Tcp { stream, backlog: Vec::new(), open: true }, Transport::Tcp, local))
        }
        SipTransport::Tls => Err("SIP over TLS is not supported".to_owned()),
    }
}

/// The local address the kernel would send to `dest` from.
fn route_source(dest: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if dest.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(dest).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

/// The PBX ended the call: with REST credentials, complete the Twilio call
/// too (closing the stream alone would leave the caller on the TwiML after
/// `</Connect>`). Runs beside the call, bounded.
fn complete_twilio_call(ctx: &Rc<WorkerContext>, call_sid: &str) {
    let live = ctx.shared.live();
    if live.config.twilio.account_sid.is_none() || live.config.secrets.twilio_auth_token.is_none() {
        return;
    }
    let client = match ctx.rest_client() {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "cannot end the Twilio call after the PBX hung up");
            return;
        }
    };
    let call_sid = call_sid.to_owned();
    let ctx = Rc::clone(ctx);
    tokio::task::spawn_local(async move {
        let started = std::time::SystemTime::now();
        let result =
            tokio::time::timeout(REST_TIMEOUT, client.update_call(&call_sid, &UpdateCall::Complete)).await;
        let traced =
            result.as_ref().map_err(|_| "no answer in time").and_then(|r| r.as_ref().map_err(|_| "refused"));
        super::traces::rest(&ctx.shared, "twilio.call.update", Some(&call_sid), started, &traced);
        match result {
            Ok(Ok(_)) => tracing::info!(call_sid, "Twilio call completed after the PBX hung up"),
            Ok(Err(e)) => {
                tracing::warn!(call_sid, error = %e, "Twilio did not end the call after the PBX hung up")
            }
            Err(_) => tracing::warn!(
                call_sid,
                "Twilio did not answer in time ending the call after the PBX hung up"
            ),
        }
    });
}
