//! `sip.listen`: a PBX places PSTN calls through Twilio (SIP → Twilio).
//!
//! One task, on worker 0, owns the UDP socket and the TCP listener (its
//! connections in `sip_tcp.rs`) and drives one sans-IO
//! [`SipServer`] per transport (`voxproxy_adapters::sip::server`), which makes every SIP
//! decision (who may call, which status when, retransmissions). This task
//! only connects the pieces:
//!
//! 1. An allowed INVITE becomes a Twilio call through the REST API (to the
//!    Request-URI's user, from `twilio.caller_id` or the INVITE's From
//!    user). Its `Url` is this proxy's voice webhook with `?sip=KEY`, and
//!    its status callback `/twilio/status?sip=KEY`: Twilio signs both URLs
//!    whole, so with signatures on nobody can name another SIP call.
//! 2. The voice webhook answers `<Connect><Stream>` carrying KEY back as a
//!    `<Parameter>` ([`SIP_CALL_PARAMETER`]); status callbacks come here
//!    ([`SipCalls::apply_status`]): `ringing` sends 180, a call that ends
//!    unanswered gets the status `status_for_twilio` maps it to.
//! 3. When the stream starts, the call task points its bridge's RTP leg at
//!    the PBX's offer ([`link_stream`]) and tells this task, which answers
//!    200 with our SDP (`c=` `rtp.bind`, the call's RTP port).
//! 4. CANCEL from the PBX cancels the Twilio call, BYE completes it (REST)
//!    and closes the stream; the stream ending (Twilio hung up) sends BYE.
//!
//! Everything is bounded: datagrams ([`MAX_MESSAGE_BYTES`], larger ones are
//! dropped), INVITEs per source address (`sip.invites_per_second`), calls
//! (`sip.max_calls`, `sip.max_calls_per_source`), TCP connections
//! (`sip.max_tcp_connections`), the queue from
//! webhooks and call tasks ([`QUEUE`]); every refusal is counted
//! (`voxproxy_sip_listener_refused_total`, `voxproxy_sip_*{side="uas"}`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use voxproxy_adapters::rest::{CallInstructions, CallProgressEvent, CreateCall, HttpMethod, UpdateCall};
use voxproxy_adapters::route::SIP_CALL_PARAMETER;
use voxproxy_adapters::sip::server::{
    AcceptedMedia, CallId, ServerEvent, SipServer, accept_offer, answer_sdp, status_for_twilio,
};
use voxproxy_adapters::sip::{MAX_MESSAGE_BYTES, SipCounters, Timers, Transport};

use super::WorkerContext;

#[path = "sip_tcp.rs"]
mod tcp;
use super::directory::CallCommand;
use crate::cdr::ledger::{SipInput, StatusInput};
use crate::metrics::{SipRefusal, SipSide};
use crate::ratelimit::WebhookRateLimiter;

/// Messages from webhooks and call tasks that may wait for the listener.
pub(crate) const QUEUE: usize = 1024;
/// Source addresses the INVITE rate bound tracks at once.
const TRACKED_ADDRESSES: usize = 4096;
/// How long a status callback waits for the listener to act on it before
/// it is recorded anyway.
const STATUS_APPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the listener's counters go to the metrics.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// `sip_direction` of these calls in records.
const DIRECTION: &str = "sip_to_twilio";
/// A call not answered this long after its INVITE is given up (408) and
/// its Twilio call cancelled: Twilio ends an unanswered call after 60 s and
/// reports it, so this only fires when that report never came (a lost
/// status callback); it keeps a silent call from holding its place.
const SETUP_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest Request-URI user (the number Twilio dials).
const MAX_NUMBER_DIGITS: usize = 20;

/// What webhooks and call tasks tell the listener.
#[derive(Debug)]
pub(crate) enum ToListener {
    /// A call status callback of a call placed for a SIP call; `done`
    /// fires once it is acted on (so the record has the SIP facts first).
    Status { key: String, status: String, done: oneshot::Sender<()> },
    /// The call's stream started on RTP port `rtp_port`: answer 200.
    StreamStarted { key: String, stream_sid: String, rtp_port: u16 },
    /// The call's stream ended; `by` says who ended it.
    StreamEnded { key: String, by: &'static str },
    /// The REST request creating the Twilio call finished: its `CallSid`,
    /// or why not.
    Created { key: String, result: Result<String, String> },
}

/// The table the listener shares with the webhooks and the call tasks:
/// the media of each SIP call in progress, by KEY. Only the listener adds
/// and removes entries, at most one per call its server holds.
#[derive(Debug)]
pub(crate) struct SipCalls {
    tx: mpsc::Sender<ToListener>,
    media: Mutex<HashMap<String, AcceptedMedia>>,
}

impl SipCalls {
    /// The table and the receiving end of the listener's queue.
    pub(crate) fn new() -> (Arc<SipCalls>, mpsc::Receiver<ToListener>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Arc::new(SipCalls { tx, media: Mutex::new(HashMap::new()) }), rx)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, AcceptedMedia>> {
        self.media.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The PBX's media of the SIP call `key`, while it is in progress.
    pub(crate) fn media(&self, key: &str) -> Option<AcceptedMedia> {
        self.table().get(key).copied()
    }

    /// Queues a message for the listener; `false` when the queue is full
    /// (the listener is far behind) or the listener has stopped.
    pub(crate) fn send(&self, message: ToListener) -> bool {
        self.tx.try_send(message).is_ok()
    }

    /// Hands a call status callback to the listener and waits (bounded)
    /// until it has acted on it.
    pub(crate) async fn apply_status(&self, key: &str, status: &str) {
        let (done, applied) = oneshot::channel();
        let message = ToListener::Status { key: key.to_owned(), status: status.to_owned(), done };
        if self.send(message) {
            let _ = tokio::time::timeout(STATUS_APPLY_TIMEOUT, applied).await;
        } else {
            tracing::warn!(status, "SIP listener queue full: call status not applied to its SIP call");
        }
    }
}

/// The `sip=KEY` of a webhook's query, when it has one of the shape this
/// listener issues (16 lower-case hex digits).
pub(crate) fn key_of_query(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("sip=")).filter(|key| {
        key.len() == 16 && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Points a started stream that belongs to a SIP call at the PBX's media:
/// the backend address and format of its offer. Returns the call's KEY, or
/// `None` for any other stream (and for a SIP call no longer in progress,
/// which then keeps the global backend and soon ends: its SIP side is gone).
pub(crate) fn link_stream(
    ctx: &WorkerContext,
    bridge: &mut voxproxy_adapters::bridge::CallBridge,
    capture: &mut crate::capture::Capture,
) -> Option<String> {
    let key = bridge.stream()?.custom_parameter(SIP_CALL_PARAMETER)?.to_owned();
    let sip = ctx.shared.sip.as_ref()?;
    let Some(media) = sip.media(&key) else {
        tracing::info!("the stream names a SIP call that is no longer in progress");
        return None;
    };
    let now = ctx.shared.clock.now();
    let dtmf = media.dtmf_payload_type.unwrap_or_else(|| unused_payload_type(media.payload_type));
    capture.with(|c| c.set_media(now, media.codec, media.payload_type, dtmf));
    if let Err(e) = bridge.set_media(now, media.codec, media.payload_type, dtmf) {
        tracing::warn!(error = %e, "the PBX's media cannot be bridged; keeping the configured format");
    }
    capture.with(|c| c.set_backend(now, Some(media.remote)));
    let _ = bridge.set_backend(Some(media.remote));
    Some(key)
}

/// Tells the listener the SIP call's stream started: it answers 200.
pub(crate) fn stream_started(
    ctx: &WorkerContext,
    key: &str,
    bridge: &voxproxy_adapters::bridge::CallBridge,
    rtp_port: u16,
) {
    let (Some(sip), Some(start)) = (&ctx.shared.sip, bridge.stream()) else { return };
    let stream_sid = start.stream_sid.as_str().to_owned();
    if !sip.send(ToListener::StreamStarted { key: key.to_owned(), stream_sid, rtp_port }) {
        tracing::error!("SIP listener queue full: the SIP call is not answered");
    }
}

/// Tells the listener the SIP call's stream ended: it sends BYE.
pub(crate) fn stream_ended(ctx: &WorkerContext, key: String, bridge: &voxproxy_adapters::bridge::CallBridge) {
    let Some(sip) = &ctx.shared.sip else { return };
    let by = ended_by(bridge.end_reason().unwrap_or(voxproxy_adapters::bridge::EndReason::WebSocketClosed));
    if !sip.send(ToListener::StreamEnded { key, by }) {
        tracing::error!("SIP listener queue full: no BYE for an ended SIP call");
    }
}

/// A DTMF payload type other than the audio's, for an offer without
/// telephone-event (nothing is sent on it: the PBX did not offer it).
fn unused_payload_type(audio: u8) -> u8 {
    if audio == 101 { 100 } else { 101 }
}

/// Who ended a stream, from how it ended, for the record's `hung_up_by`.
pub(crate) fn ended_by(end: voxproxy_adapters::bridge::EndReason) -> &'static str {
    use voxproxy_adapters::bridge::EndReason;
    match end {
        // Twilio's `stop` (the callee hung up) or its side of the socket closing.
        EndReason::TwilioStop | EndReason::WebSocketClosed => "twilio",
        _ => "voxproxy",
    }
}

/// One SIP call the listener carries.
#[derive(Debug)]
struct Leg {
    id: LegId,
    call_id: String,
    to: String,
    from: String,
    call_sid: Option<String>,
    stream_sid: Option<String>,
    /// The final status sent, once there is one.
    status: Option<u16>,
    hung_up_by: Option<&'static str>,
    /// The SIP side is over (the server forgot it or will).
    sip_done: bool,
    /// When the INVITE arrived, for [`SETUP_TIMEOUT`].
    invited: std::time::Instant,
}

/// A call of one of the two servers: `UDP` or `TCP` and the server's id.
type LegId = (usize, CallId);
/// Index of the UDP server in [`Listener::servers`].
const UDP: usize = 0;
/// Index of the TCP server.
const TCP: usize = 1;

/// The listener's state, owned by its task.
struct Listener {
    ctx: Rc<WorkerContext>,
    sip: Arc<SipCalls>,
    /// One sans-IO server per transport ([`UDP`], [`TCP`]).
    servers: [SipServer; 2],
    legs: HashMap<String, Leg>,
    by_id: HashMap<LegId, String>,
    limiter: WebhookRateLimiter,
    reported: [SipCounters; 2],
    rejected_source: [u64; 2],
}

/// The bound `sip.listen` sockets.
#[derive(Debug)]
pub(crate) struct Sockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

/// Binds `sip.listen` for UDP and TCP, so a taken address stops the start.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<Sockets> {
    let udp = std::net::UdpSocket::bind(addr)?;
    udp.set_nonblocking(true)?;
    // Port 0 (tests): TCP takes the port UDP got.
    let tcp = std::net::TcpListener::bind(udp.local_addr()?)?;
    tcp.set_nonblocking(true)?;
    Ok(Sockets { udp, tcp })
}

/// Runs the listener until the worker stops.
pub(crate) async fn run(ctx: Rc<WorkerContext>, sockets: Sockets, mut queue: mpsc::Receiver<ToListener>) {
    let Some(sip) = ctx.shared.sip.clone() else { return };
    let (socket, tcp) =
        match (UdpSocket::from_std(sockets.udp), tokio::net::TcpListener::from_std(sockets.tcp)) {
            (Ok(udp), Ok(tcp)) => (udp, tcp),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "the SIP listener cannot use its sockets; no SIP calls");
                return;
            }
        };
    let local = socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let settings = ctx.shared.live().config.sip.clone();
    let server = |transport| {
        let seed = u64::from_le_bytes(crate::runtime::random_bytes());
        SipServer::new(local, transport, settings.allow.clone(), Timers::default(), seed)
            .with_limits(settings.limits)
    };
    let mut listener = Listener {
        ctx: Rc::clone(&ctx),
        sip,
        servers: [server(Transport::Udp), server(Transport::Tcp)],
        legs: HashMap::new(),
        by_id: HashMap::new(),
        // More INVITEs a second from one address than `sip.invites_per_second`
        // are dropped unanswered and counted (`reason="rate"`): a PBX
        // retransmits an unanswered INVITE, so a legitimate burst only waits.
        limiter: WebhookRateLimiter::new(settings.invites_per_second, TRACKED_ADDRESSES),
        reported: [SipCounters::default(), SipCounters::default()],
        rejected_source: [0; 2],
    };
    tracing::info!(%local, "SIP listener ready (UDP and TCP)");
    let mut stop = ctx.shared.stop.subscribe();
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
    let mut report = tokio::time::interval(REPORT_EVERY);
    let mut connections = tcp::Connections::new(settings.max_tcp_connections);
    let clock = ctx.shared.clock;
    loop {
        let deadline =
            listener.servers.iter().filter_map(SipServer::poll_timeout).min().map(|at| clock.to_tokio(at));
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => listener.on_datagram(UDP, from, &buf[..len]),
                Err(e) => tracing::debug!(error = %e, "SIP receive failed"),
            },
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    if !connections.open(stream, peer) {
                        listener.ctx.shared.metrics.sip().refused(SipRefusal::Connections);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "SIP TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(input) = connections.recv() => match input {
                tcp::Input::Message(peer, bytes) => listener.on_datagram(TCP, peer, &bytes),
                tcp::Input::Closed(peer) => connections.closed(peer),
                tcp::Input::Unframed => listener.ctx.shared.metrics.sip().refused(SipRefusal::Framing),
            },
            Some(message) = queue.recv() => listener.on_message(message),
            () = sleep => {
                let now = clock.now();
                listener.servers.iter_mut().for_each(|s| s.handle_timeout(now));
            }
            _ = report.tick() => {
                listener.report();
                listener.expire();
            }
        }
        listener.on_events();
        while let Some(transmit) = listener.servers[UDP].poll_transmit() {
            if let Err(e) = socket.try_send_to(&transmit.bytes, transmit.dest) {
                tracing::debug!(error = %e, dest = %transmit.dest, "SIP send failed");
            }
        }
        while let Some(transmit) = listener.servers[TCP].poll_transmit() {
            connections.send(transmit.dest, transmit.bytes);
        }
    }
    listener.report();
}

impl Listener {
    fn on_datagram(&mut self, transport: usize, from: SocketAddr, bytes: &[u8]) {
        let metrics = &self.ctx.shared.metrics;
        if bytes.len() > MAX_MESSAGE_BYTES {
            metrics.sip().refused(SipRefusal::Oversize);
            return;
        }
        if bytes.starts_with(b"INVITE ") && !self.limiter.check(from.ip(), std::time::Instant::now()) {
            metrics.sip().refused(SipRefusal::Rate);
            return;
        }
        let server = &mut self.servers[transport];
        server.handle_datagram(self.ctx.shared.clock.now(), from, bytes);
        if server.rejected_source > self.rejected_source[transport] {
            self.rejected_source[transport] = server.rejected_source;
            metrics.sip().refused(SipRefusal::Source);
            tracing::info!(%from, "SIP request from outside sip.allow answered 403");
        }
    }

    /// Gives up on calls that have waited [`SETUP_TIMEOUT`] for an answer.
    fn expire(&mut self) {
        let now = self.ctx.shared.clock.now();
        let stale: Vec<String> = self
            .legs
            .iter()
            .filter(|(_, leg)| {
                leg.status.is_none() && !leg.sip_done && leg.invited.elapsed() >= SETUP_TIMEOUT
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            let Some(leg) = self.legs.get_mut(&key) else { continue };
            tracing::warn!(sip_call_id = %leg.call_id, "no answer and no final status from Twilio in time; 408");
            (leg.status, leg.sip_done) = (Some(408), true);
            leg.hung_up_by.get_or_insert("voxproxy");
            self.servers[leg.id.0].reject(now, leg.id.1, 408);
            if let Some(call_sid) = leg.call_sid.clone() {
                self.update(&call_sid, UpdateCall::Cancel);
            }
            self.record(&key);
            self.forget_if_done(&key);
        }
    }

    fn report(&mut self) {
        for (server, reported) in self.servers.iter().zip(&mut self.reported) {
            let now = server.counters().clone();
            self.ctx.shared.metrics.sip().add(SipSide::Server, reported, &now);
            *reported = now;
        }
    }

    fn on_events(&mut self) {
        for transport in [UDP, TCP] {
            while let Some(event) = self.servers[transport].poll_event() {
                match event {
                    ServerEvent::IncomingCall { id, user, from_user, offer, source, call_id } => {
                        self.incoming((transport, id), &user, &from_user, &offer, source, call_id);
                    }
                    ServerEvent::Cancelled(id) => self.cancelled((transport, id)),
                    ServerEvent::Confirmed(id) => tracing::debug!(id = id.0, "SIP call confirmed (ACK)"),
                    ServerEvent::Ended { id, by_remote } => {
                        self.ended((transport, id), by_remote.then_some("backend"));
                    }
                    ServerEvent::TimedOut(id) => self.ended((transport, id), Some("voxproxy")),
                    ServerEvent::MediaChanged { id, media } => self.media_changed((transport, id), media),
                }
            }
        }
    }

    fn refuse(&mut self, id: LegId, status: u16, reason: SipRefusal) {
        self.ctx.shared.metrics.sip().refused(reason);
        self.servers[id.0].reject(self.ctx.shared.clock.now(), id.1, status);
    }

    fn incoming(
        &mut self,
        id: LegId,
        user: &str,
        from_user: &str,
        offer: &voxproxy_adapters::sdp::SessionDescription,
        source: SocketAddr,
        call_id: String,
    ) {
        let ctx = Rc::clone(&self.ctx);
        let shared = &ctx.shared;
        let live = shared.live_arc();
        let config = &live.config;
        if shared.draining.load(std::sync::atomic::Ordering::Acquire)
            || shared.active_calls.load(std::sync::atomic::Ordering::Acquire)
                >= config.limits.max_calls as usize
        {
            return self.refuse(id, 503, SipRefusal::Capacity);
        }
        if !is_dialable(user) {
            tracing::info!(%source, "INVITE to a Request-URI user that is not a number; 404");
            return self.refuse(id, 404, SipRefusal::Number);
        }
        let Some(media) = accept_offer(offer, config.rtp.codec.clock_rate()) else {
            tracing::info!(%source, "INVITE offers no codec voxproxy carries at rtp.codec's clock rate; 488");
            return self.refuse(id, 488, SipRefusal::Codec);
        };
        let client = match ctx.rest_client() {
            Ok(client) => client,
            Err(problem) => {
                tracing::warn!(%problem, "SIP call refused: no REST client");
                return self.refuse(id, 503, SipRefusal::Twilio);
            }
        };
        let key = hex_key();
        let from = config.twilio.caller_id.clone().unwrap_or_else(|| from_user.to_owned());
        let public = &config.server.public_url;
        let mut create = CreateCall::new(
            user,
            from.clone(),
            CallInstructions::Url(format!("{public}/twilio/voice?sip={key}")),
        );
        create.status_callback = Some(format!("{public}/twilio/status?sip={key}"));
        create.status_callback_method = Some(HttpMethod::Post);
        create.status_callback_events = vec![
            CallProgressEvent::Initiated,
            CallProgressEvent::Ringing,
            CallProgressEvent::Answered,
            CallProgressEvent::Completed,
        ];
        self.sip.table().insert(key.clone(), media);
        tracing::info!(%source, sip_call_id = %call_id, to = user, %from, "SIP call: placing the Twilio call");
        self.by_id.insert(id, key.clone());
        self.legs.insert(
            key.clone(),
            Leg {
                id,
                call_id,
                to: user.to_owned(),
                from,
                call_sid: None,
                stream_sid: None,
                status: None,
                hung_up_by: None,
                sip_done: false,
                invited: std::time::Instant::now(),
            },
        );
        let sip = Arc::clone(&self.sip);
        let ctx = Rc::clone(&self.ctx);
        tokio::task::spawn_local(async move {
            let started = std::time::SystemTime::now();
            let result = client.create_call(&create).await.map(|call| call.sid).map_err(|e| e.to_string());
            let call_sid = result.as_deref().ok();
            super::traces::rest(&ctx.shared, "twilio.call.create", call_sid, started, &result);
            if !sip.send(ToListener::Created { key, result }) {
                tracing::error!("SIP listener queue full: a created Twilio call is not tracked");
            }
        });
    }

    fn on_message(&mut self, message: ToListener) {
        let now = self.ctx.shared.clock.now();
        match message {
            ToListener::Created { key, result } => self.created(&key, result),
            ToListener::Status { key, status, done } => {
                self.status(&key, &status);
                let _ = done.send(());
            }
            ToListener::StreamStarted { key, stream_sid, rtp_port } => {
                let Some(leg) = self.legs.get_mut(&key) else {
                    // The SIP side ended while Twilio answered: end the stream too.
                    let _ = self.ctx.shared.directory.command(&stream_sid, CallCommand::Hangup);
                    return;
                };
                leg.stream_sid = Some(stream_sid.clone());
                if leg.sip_done {
                    let _ = self.ctx.shared.directory.command(&stream_sid, CallCommand::Hangup);
                    return;
                }
                let Some(media) = self.sip.media(&key) else { return };
                let live = self.ctx.shared.live();
                let bind = live.config.rtp.bind;
                let ptime = u16::from(live.config.rtp.ptime_ms);
                let session = u64::from_le_bytes(crate::runtime::random_bytes()) >> 1;
                let sdp = answer_sdp(&media, bind, rtp_port, session, ptime);
                self.servers[leg.id.0].answer(now, leg.id.1, &sdp);
                leg.status = Some(200);
                tracing::info!(sip_call_id = %leg.call_id, rtp_port, "SIP call answered (200 OK)");
                self.record(&key);
            }
            ToListener::StreamEnded { key, by } => {
                let Some(leg) = self.legs.get_mut(&key) else { return };
                leg.hung_up_by.get_or_insert(by);
                let id = leg.id;
                self.servers[id.0].hangup(now, id.1);
                self.record(&key);
            }
        }
    }

    fn created(&mut self, key: &str, result: Result<String, String>) {
        let Some(leg) = self.legs.get_mut(key) else { return };
        match result {
            Ok(call_sid) => {
                tracing::info!(sip_call_id = %leg.call_id, call_sid, "Twilio call placed for the SIP call");
                leg.call_sid = Some(call_sid.clone());
                if leg.sip_done {
                    // The PBX cancelled while the request was in flight.
                    self.update(&call_sid, UpdateCall::Cancel);
                }
                self.record(key);
                self.forget_if_done(key);
            }
            Err(problem) => {
                tracing::warn!(sip_call_id = %leg.call_id, %problem, "Twilio refused the call; 503 to the PBX");
                let id = leg.id;
                self.refuse(id, 503, SipRefusal::Twilio);
                self.forget(key);
            }
        }
    }

    fn status(&mut self, key: &str, status: &str) {
        let now = self.ctx.shared.clock.now();
        let Some(leg) = self.legs.get_mut(key) else { return };
        match status {
            "ringing" => self.servers[leg.id.0].ringing(now, leg.id.1),
            "completed" | "busy" | "no-answer" | "failed" | "canceled" => {
                if leg.status.is_none() {
                    let code = status_for_twilio(status);
                    leg.status = Some(code);
                    leg.hung_up_by.get_or_insert("twilio");
                    self.servers[leg.id.0].reject(now, leg.id.1, code);
                } else if !leg.sip_done {
                    leg.hung_up_by.get_or_insert("twilio");
                    self.servers[leg.id.0].hangup(now, leg.id.1);
                }
                leg.sip_done = true;
                self.record(key);
                self.forget(key);
            }
            _ => {}
        }
    }

    fn cancelled(&mut self, id: LegId) {
        let Some(key) = self.by_id.get(&id).cloned() else { return };
        let Some(leg) = self.legs.get_mut(&key) else { return };
        tracing::info!(sip_call_id = %leg.call_id, "the PBX cancelled the call (487)");
        leg.status = Some(487);
        leg.hung_up_by.get_or_insert("backend");
        leg.sip_done = true;
        if let Some(call_sid) = leg.call_sid.clone() {
            self.update(&call_sid, UpdateCall::Cancel);
        }
        self.record(&key);
        self.forget_if_done(&key);
    }

    /// The SIP side ended; `ender` is who ended it when it was not the
    /// Twilio side (which already said so): then the Twilio call ends too.
    fn ended(&mut self, id: LegId, ender: Option<&'static str>) {
        let Some(key) = self.by_id.get(&id).cloned() else { return };
        let Some(leg) = self.legs.get_mut(&key) else { return };
        leg.sip_done = true;
        if let Some(ender) = ender {
            leg.hung_up_by.get_or_insert(ender);
            if ender == "backend" {
                tracing::info!(sip_call_id = %leg.call_id, "the PBX hung up (BYE)");
            } else {
                tracing::warn!(sip_call_id = %leg.call_id, "the PBX went silent (session not refreshed or re-INVITE not acknowledged); BYE");
            }
            if let Some(stream_sid) = &leg.stream_sid {
                let _ = self.ctx.shared.directory.command(stream_sid, CallCommand::Hangup);
            }
            if let Some(call_sid) = leg.call_sid.clone() {
                self.update(&call_sid, UpdateCall::Complete);
            }
        }
        self.record(&key);
        self.forget_if_done(&key);
    }

    /// The PBX held, resumed or moved the media: the call task applies it
    /// to its bridge (sendonly/inactive stops the audio to the caller).
    fn media_changed(&mut self, id: LegId, media: voxproxy_adapters::sip::Media) {
        let Some(leg) = self.by_id.get(&id).and_then(|key| self.legs.get(key)) else { return };
        tracing::info!(sip_call_id = %leg.call_id, remote = %media.address, direction = ?media.direction, "the PBX changed the media (re-INVITE/UPDATE)");
        let Some(stream_sid) = &leg.stream_sid else { return };
        if !self.ctx.shared.directory.command(stream_sid, CallCommand::Media(media)) {
            tracing::warn!(sip_call_id = %leg.call_id, "the call did not take the PBX's new media (command queue full or call over)");
        }
    }

    /// Ends the Twilio call through the REST API, in the background.
    fn update(&self, call_sid: &str, update: UpdateCall) {
        let Ok(client) = self.ctx.rest_client() else { return };
        let call_sid = call_sid.to_owned();
        let ctx = Rc::clone(&self.ctx);
        tokio::task::spawn_local(async move {
            let started = std::time::SystemTime::now();
            let result = client.update_call(&call_sid, &update).await;
            super::traces::rest(&ctx.shared, "twilio.call.update", Some(&call_sid), started, &result);
            if let Err(e) = result {
                tracing::info!(call_sid, error = %e, "Twilio did not take the SIP call's end");
            }
        });
    }

    /// Writes what is known into the call's record (once the call has a SID).
    fn record(&self, key: &str) {
        let Some(leg) = self.legs.get(key) else { return };
        let Some(call_sid) = &leg.call_sid else { return };
        let live = self.ctx.shared.live();
        let status = StatusInput {
            call_sid,
            account_sid: live.config.twilio.account_sid.as_deref().unwrap_or_default(),
            from: &leg.from,
            to: &leg.to,
            status: "",
            is_final: false,
        };
        let facts = SipInput {
            call_id: leg.call_id.clone(),
            direction: DIRECTION,
            status: leg.status,
            hung_up_by: leg.hung_up_by,
        };
        self.ctx.shared.calls.sip(&status, &facts);
    }

    /// Forgets a call whose SIP side is over and whose Twilio call is known
    /// (or never came): nothing more can arrive that it must act on.
    fn forget_if_done(&mut self, key: &str) {
        if self.legs.get(key).is_some_and(|leg| leg.sip_done && leg.call_sid.is_some()) {
            self.forget(key);
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some(leg) = self.legs.remove(key) {
            self.by_id.remove(&leg.id);
        }
        self.sip.table().remove(key);
    }
}

/// Whether a Request-URI user is a number Twilio can dial: `+` and digits,
/// or digits alone.
fn is_dialable(user: &str) -> bool {
    let digits = user.strip_prefix('+').unwrap_or(user);
    (1..=MAX_NUMBER_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A fresh unguessable KEY naming one SIP call (64 random bits).
fn hex_key() -> String {
    format!("{:016x}", u64::from_le_bytes(crate::runtime::random_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_of_our_shape_are_taken_from_a_query() {
        assert_eq!(key_of_query(Some("sip=0123456789abcdef")), Some("0123456789abcdef"));
        assert_eq!(key_of_query(Some("a=b&sip=0123456789abcdef")), Some("0123456789abcdef"));
        assert_eq!(key_of_query(Some("sip=0123456789ABCDEF")), None, "upper case is not ours");
        assert_eq!(key_of_query(Some("sip=0123")), None);
        assert_eq!(key_of_query(Some("sip=0123456789abcdef0")), None);
        assert_eq!(key_of_query(None), None);
        assert_eq!(hex_key().len(), 16);
        assert!(key_of_query(Some(&format!("sip={}", hex_key()))).is_some());
    }

    #[test]
    fn only_numbers_are_dialled() {
        assert!(is_dialable("+14155550100"));
        assert!(is_dialable("0044207946000"));
        assert!(!is_dialable("alice"));
        assert!(!is_dialable("+"));
        assert!(!is_dialable("+1415555010012345678901"));
    }
}
