//! One call's task: the WebSocket from Twilio, the RTP socket towards the
//! voice stack, and the sans-IO [`CallBridge`] between them, all on one
//! worker for the call's whole life.
//!
//! A new WebSocket first holds nothing but its connection: it has
//! `start_timeout` to send a `start` that proves (with the stream token the
//! voice webhook issued) that it belongs to a call this deployment answered.
//! Only then does it take a place in `limits.max_calls`, an RTP port and an
//! entry in the session directory; a stream that never starts writes no
//! record, it is only counted (`voxproxy_calls_refused_total{reason}`).
//!
//! The call then runs the sans-IO loop of docs/ARCHITECTURE.md (*Threading
//! and I/O*): wait for a WebSocket message, a datagram, the bridge's
//! deadline, a control command or shutdown; hand it to the bridge; drain
//! every output into the sockets. It makes no telephony
//! decision of its own. One receive is always in flight on the RTP socket
//! (the io_uring backend needs the buffer to stay with the kernel), and the
//! WebSocket is never waited on for writing: when Twilio reads too slowly,
//! outbound frames are dropped and counted rather than queued without bound.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use futures_util::future::FusedFuture as _;
use hyper::upgrade::OnUpgrade;
use opentelemetry::trace::SpanKind;
use tracing::Instrument as _;
use voxproxy_adapters::bridge::{
    BridgeConfig, BridgeError, BridgeEvent, CallBridge, CallStats, EndReason, Output,
};
use voxproxy_adapters::capture::LegKind;
use voxproxy_adapters::route::{ROUTE_PARAMETER, route_by_label};
use voxproxy_adapters::websocket::FrameError;

use super::WorkerContext;
use super::directory::{CallCommand, CallEvent, CommandReceiver, CommandSender, Registration, SessionInfo};
use super::media_ws::{MediaSocket, Ready, Received, SocketError};
use super::ports::{PortError, PortLease};
use super::sip_client::{self, SipCall};
use super::taps::CallTaps;
use super::traces;
use crate::capture::Capture;
use crate::cdr::journal::JournalId;
use crate::cdr::{CallRecord, rfc3339_utc};
use crate::metrics::{Direction, RefuseReason, RtpErrorKind, WsErrorKind};
use crate::otel::CallTrace;
use crate::runtime::{RtpSocket as _, RtpUdp};

/// How long the upgraded connection may take to appear after the 101.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close frame may take to leave.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a call publishes its counters to metrics and the directory.
pub(super) const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Outbound bytes the media WebSocket may hold for a slow Twilio before
/// frames are dropped: about 0.4 s of media messages.
pub(super) const MAX_WS_WRITE_BUFFER: usize = 8 * 1024;
/// How long the socket's last operations may take to finish at the end.
const RELEASE_TIMEOUT: Duration = Duration::from_millis(500);
/// Commands a call may have waiting.
pub(super) const COMMAND_QUEUE: usize = 4;

/// A place in `limits.max_calls`; dropping it frees the place.
#[derive(Debug)]
pub struct CallSlot {
    ctx: Rc<WorkerContext>,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.ctx.shared.active_calls.fetch_sub(1, Ordering::AcqRel);
        self.ctx.local_calls.set(self.ctx.local_calls.get().saturating_sub(1));
        self.ctx.calls_changed.notify_waiters();
    }
}

/// What the capacity check decided for a new media WebSocket.
#[derive(Debug)]
pub enum Admission {
    /// The call has its place and its RTP port.
    Admitted {
        /// The place in `limits.max_calls`.
        slot: CallSlot,
        /// The call's RTP socket.
        socket: RtpUdp,
        /// The socket's port, returned when the lease drops.
        lease: PortLease,
    },
    /// The call is refused; the WebSocket is closed with this reason.
    Refused(RefuseReason),
}

/// Takes a place and an RTP port for a new call, or says why not.
pub fn admit(ctx: &Rc<WorkerContext>) -> Admission {
    let shared = &ctx.shared;
    let metrics = ctx.metrics();
    if shared.draining.load(Ordering::Acquire) {
        metrics.call_refused(RefuseReason::Draining);
        return Admission::Refused(RefuseReason::Draining);
    }
    let max = shared.live().config.limits.max_calls as usize;
    if shared.active_calls.fetch_add(1, Ordering::AcqRel) >= max {
        shared.active_calls.fetch_sub(1, Ordering::AcqRel);
        metrics.call_refused(RefuseReason::MaxCalls);
        return Admission::Refused(RefuseReason::MaxCalls);
    }
    ctx.local_calls.set(ctx.local_calls.get() + 1);
    let slot = CallSlot { ctx: Rc::clone(ctx) };
    match shared.ports.bind(ctx.backend) {
        Ok((socket, lease)) => Admission::Admitted { slot, socket, lease },
        Err(PortError::NoDescriptors(e)) => {
            shared.fds.exhausted(&shared.metrics, "RTP socket", &e);
            metrics.call_refused(RefuseReason::FdLimit);
            Admission::Refused(RefuseReason::FdLimit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "media stream refused");
            metrics.call_refused(RefuseReason::NoRtpPort);
            Admission::Refused(RefuseReason::NoRtpPort)
        }
    }
}

pub(super) fn refusal_text(reason: RefuseReason) -> &'static str {
    match reason {
        RefuseReason::Draining => "server draining",
        RefuseReason::MaxCalls => "call limit reached (limits.max_calls)",
        RefuseReason::NoRtpPort => "no free RTP port",
        RefuseReason::ConnectionLimit => "too many connections",
        RefuseReason::FdLimit => "out of file descriptors",
        RefuseReason::AddressConnectionLimit => "too many connections from this address",
        RefuseReason::NoStart => "no start message in time",
        RefuseReason::InvalidStart => "start not authorized for this call",
        RefuseReason::DuplicateStream => "streamSid already in use",
        RefuseReason::InvalidWebhook => "not a Twilio voice webhook",
        RefuseReason::CallerRate => "too many calls from this caller (limits.calls_per_caller_per_minute)",
    }
}

pub(super) type Ws = MediaSocket;

/// Runs one media WebSocket from the upgrade to its written record (or,
/// for a stream that never properly starts, to its close and a counter).
pub async fn run(
    ctx: Rc<WorkerContext>,
    peer: SocketAddr,
    upgrade: OnUpgrade,
    place: Option<super::ConnectionPlace>,
) {
    let span = tracing::info_span!(
        "call",
        worker = ctx.index,
        %peer,
        call_sid = tracing::field::Empty,
        stream_sid = tracing::field::Empty,
        // With `otel.endpoint`: the call's trace and root span (traces.rs).
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    async move {
        let upgraded = match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(e)) => {
                ctx.metrics().websocket_error(WsErrorKind::Handshake);
                tracing::info!(error = %e, "WebSocket upgrade failed");
                return;
            }
            Err(_) => {
                ctx.metrics().websocket_error(WsErrorKind::Handshake);
                tracing::info!("WebSocket upgrade did not complete in time");
                return;
            }
        };
        // The call's configuration for its whole life: a SIGHUP reload
        // after this point changes new calls only.
        let live = ctx.shared.live_arc();
        let max_frame = live.config.limits.max_frame_bytes as usize;
        let mut ws = MediaSocket::new(upgraded, max_frame, MAX_WS_WRITE_BUFFER);
        let Some((mut bridge, mut capture)) = new_bridge(&ctx, &live.config) else { return };
        if !await_start(&ctx, &mut bridge, &mut ws, &mut capture).await {
            return;
        }
        // A WebSocket bot backend: its own loop (bot_call.rs).
        if let Some(bot) = super::bot_call::bot_backend(&live.config, &bridge) {
            // Boxed: a bot call's state lives on the heap only when there is one,
            // so an RTP call's task stays small (the_call_task_stays_small).
            Box::pin(super::bot_call::run(&ctx, ws, *bridge, bot, &live.config, capture)).await;
            drop(place);
            return;
        }
        let setup_started = SystemTime::now();
        let watch_leg = apply_route(&live.config, &mut bridge, &mut capture, ctx.shared.clock.now());
        let sip_key = super::sip_listener::link_stream(&ctx, &mut bridge, &mut capture);
        let (slot, socket, lease) = match admit(&ctx) {
            Admission::Admitted { slot, socket, lease } => (slot, socket, lease),
            Admission::Refused(reason) => {
                let text = refusal_text(reason);
                // Descriptor shortage has its own rate-limited line.
                if reason != RefuseReason::FdLimit {
                    tracing::warn!(reason = text, "media stream refused");
                }
                close_now(&mut ws, CLOSE_TRY_AGAIN, text).await;
                return;
            }
        };
        let (commands_tx, commands) = super::directory::command_channel(COMMAND_QUEUE);
        let sip_uri = sip_client::sip_backend(&live.config, &bridge);
        let leg = if sip_uri.is_some() { "sip" } else { "rtp" };
        let Some(mut facts) = register(&ctx, &bridge, lease.port(), leg, &commands_tx) else {
            ctx.metrics().call_refused(RefuseReason::DuplicateStream);
            tracing::warn!("a live call already has this streamSid; the second stream is refused");
            let (code, reason) = EndReason::DuplicateStream.close_frame();
            close_now(&mut ws, code, reason).await;
            return;
        };
        let keep = crate::capture::wanted(&live.config, &bridge).then(|| {
            let start = bridge.stream().map(|s| (s.call_sid.as_str(), s.stream_sid.as_str())).unwrap_or_default();
            let file = crate::capture::file_for(&live.config.capture.dir, start.0, start.1);
            (file, if sip_uri.is_some() { LegKind::Sip } else { LegKind::Rtp })
        });
        capture.decide(&ctx.shared.capturer, keep);
        // The RTP socket is brand new and Twilio's first frames are often
        // already buffered: let the reactor see the socket once (epoll
        // reports it writable only then), or the loop, always finding a
        // WebSocket frame ready, would queue sends until the queue overflows.
        tokio::task::yield_now().await;
        if let Some(uri) = sip_uri {
            let now = ctx.shared.clock.now();
            let invite = traces::begin(&ctx.shared, facts.trace, "sip.invite", SpanKind::Client, setup_started);
            match Box::pin(SipCall::start(&live.config, &uri, &mut bridge, lease.port(), now, &mut capture, invite)).await {
                Ok(sip) => facts.sip = Some(Box::new(sip)),
                Err(e) => {
                    tracing::warn!(error = %e, backend = %uri, "SIP call not placed; closing the stream so the caller hears the route's fallback");
                    if let Some(start) = bridge.stream() {
                        ctx.shared.calls.leg_failed(start.call_sid.as_str());
                    }
                    capture.with(|c| c.close(now, EndReason::BackendFailed));
                    bridge.handle_close(now, EndReason::BackendFailed);
                }
            }
        }
        // A listen-only backend (a fork) never answers: its silence is no
        // failure; a SIP leg says when it fails.
        if leg == "rtp" {
            let setup = traces::begin(&ctx.shared, facts.trace, "rtp.setup", SpanKind::Internal, setup_started)
                .map(|(span, _)| span.attr("rtp.local_port", i64::from(lease.port())));
            traces::end(&ctx.shared, setup);
        }
        if watch_leg && !bridge.is_one_way() && facts.sip.is_none() {
            facts.leg_watch = Some(LegWatch::new(bridge.config().backend_timeout, facts.started));
        }
        if let Some(key) = &sip_key {
            super::sip_listener::stream_started(&ctx, key, &bridge, lease.port());
        }
        *facts.taps = CallTaps::start(&ctx, &live.config, &mut bridge);
        facts.capture = capture;
        media_loop(&ctx, &mut ws, &mut bridge, &socket, lease.port(), &mut facts, commands).await;
        drop(ws);
        // The directory's handle on the inbox; its entry goes with `facts`.
        drop(commands_tx);
        if let Some(sip) = &mut facts.sip {
            Box::pin(end_sip(&ctx, &mut bridge, sip, &facts.registration, &mut facts.capture)).await;
        }
        if let Some(key) = sip_key {
            super::sip_listener::stream_ended(&ctx, key, &bridge);
        }
        // Boxed, as are the SIP set-up and hang-up: they run once, and
        // inline they were 800 bytes of every call's task for its whole
        // life (the_call_task_stays_small).
        Box::pin(finish_call(&ctx, &mut bridge, &mut facts)).await;
        // Resources go only now that the record is on disk.
        drop(socket);
        drop(lease);
        drop(slot);
        drop(place);
    }
    .instrument(span)
    .await;
}

/// The call's bridge, boxed, and its capture. Built outside the call's
/// async block so that the bridge's settings (368 bytes, moved into the
/// bridge) are not a field of the call task's future for the call's life.
/// Boxed: the bridge (about 11 KB) moves into the media loop's borrow and
/// out for the record, and every place it is held by value across an await
/// would be a copy of it in the task's state (80 KB with it inline,
/// measured by `the_call_task_stays_small`).
fn new_bridge(ctx: &WorkerContext, config: &crate::config::Config) -> Option<(Box<CallBridge>, Capture)> {
    let mut settings = bridge_config(config);
    settings.stream_token.clone_from(&ctx.shared.stream_token);
    let created = ctx.shared.clock.now();
    let capture = Capture::begin(config.captures_anything(), &settings, created, config.capture.max_bytes);
    match CallBridge::new(settings, created) {
        Ok(bridge) => Some((Box::new(bridge), capture)),
        Err(e) => {
            // The config was validated at start, so this is a bug; the
            // call is closed rather than the worker stopped.
            tracing::error!(error = %e, "call bridge refused the server's configuration");
            None
        }
    }
}

/// Close code 1013, "try again later": a call refused for capacity.
pub(super) const CLOSE_TRY_AGAIN: u16 = 1013;

/// Captures a message from Twilio as the bridge will see it: a text frame
/// (after `handle_twilio_activity`), a binary one (an empty text frame),
/// or only activity. `payload` is the message's (unmasked) payload.
fn capture_message(capture: &mut Capture, now: voxproxy_core::Instant, received: &Received, payload: &[u8]) {
    capture.with(|c| match received {
        Received::Text => c.twilio_text(now, payload),
        Received::Binary => c.twilio_binary(now),
        _ => c.twilio_activity(now),
    });
}

/// The call that takes Twilio's side of the media WebSocket: the bridge
/// (RTP and SIP legs) or the bot call (WebSocket legs), which hands it on.
pub(super) trait TwilioSide {
    /// Any message from Twilio: the stream is alive.
    fn handle_twilio_activity(&mut self, now: voxproxy_core::Instant);
    /// A text frame, parsed in place.
    fn handle_twilio(&mut self, now: voxproxy_core::Instant, frame: &mut [u8]) -> Result<(), BridgeError>;
    /// Twilio's side is gone.
    fn handle_close(&mut self, now: voxproxy_core::Instant, reason: EndReason);
}

/// Implements [`TwilioSide`] for a call type through its own methods of the
/// same names.
macro_rules! twilio_side {
    ($call:ty) => {
        impl TwilioSide for $call {
            fn handle_twilio_activity(&mut self, now: voxproxy_core::Instant) {
                <$call>::handle_twilio_activity(self, now);
            }
            fn handle_twilio(
                &mut self,
                now: voxproxy_core::Instant,
                frame: &mut [u8],
            ) -> Result<(), BridgeError> {
                <$call>::handle_twilio(self, now, frame)
            }
            fn handle_close(&mut self, now: voxproxy_core::Instant, reason: EndReason) {
                <$call>::handle_close(self, now, reason);
            }
        }
    };
}
twilio_side!(CallBridge);
twilio_side!(voxproxy_adapters::bot_call::BotCall);

/// What a read of the media WebSocket leaves to the call's loop once
/// [`twilio_read`] has given it to the call.
pub(super) enum TwilioRead {
    /// A text frame: the call took it, or refused it for this reason.
    Text(Result<(), BridgeError>),
    /// The socket queued a pong to Twilio's ping: flush it.
    Ping,
    /// Twilio closed the stream: stop reading (the socket queued the reply).
    Closed,
    /// The read failed: stop reading; the close to send, or `None` when the
    /// socket cannot send any more (already counted and logged).
    Failed(Option<(u16, String)>),
    /// Nothing for the loop (a pong; a binary frame, counted as malformed).
    Done,
}

/// Gives one read of the media WebSocket to the call, the same way in every
/// call loop: the capture sees it, any message is activity, a text frame is
/// parsed where the socket holds it, a binary frame reaches the call as an
/// empty text frame (Media Streams is text only; the call counts it as
/// malformed), and Twilio's close or a failed read ends Twilio's side.
pub(super) fn twilio_read(
    ctx: &WorkerContext,
    call: &mut impl TwilioSide,
    capture: &mut Capture,
    ws: &mut Ws,
    now: voxproxy_core::Instant,
    read: Result<Received, SocketError>,
) -> TwilioRead {
    let received = match read {
        Ok(received) => received,
        Err(e) => {
            let close = ws_error_close(ctx, &e);
            capture.with(|c| c.close(now, EndReason::WebSocketClosed));
            call.handle_close(now, EndReason::WebSocketClosed);
            return TwilioRead::Failed(close);
        }
    };
    capture_message(capture, now, &received, ws.payload_mut());
    call.handle_twilio_activity(now);
    match received {
        Received::Text => TwilioRead::Text(call.handle_twilio(now, ws.payload_mut())),
        Received::Binary => {
            let _ = call.handle_twilio(now, &mut []);
            TwilioRead::Done
        }
        Received::Close(_) => {
            capture.with(|c| c.close(now, EndReason::WebSocketClosed));
            call.handle_close(now, EndReason::WebSocketClosed);
            TwilioRead::Closed
        }
        Received::Ping => TwilioRead::Ping,
        Received::Pong => TwilioRead::Done,
    }
}

/// Sends a close frame, bounded by [`CLOSE_TIMEOUT`].
pub(super) async fn close_now(ws: &mut Ws, code: u16, reason: &str) {
    ws.queue_close(code, reason);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
}

/// Puts a started call in the session directory; `None` when a live call
/// already has its `streamSid` (the control API would see only one of them).
pub(super) fn register(
    ctx: &WorkerContext,
    bridge: &CallBridge,
    rtp_port: u16,
    leg: &'static str,
    commands: &CommandSender,
) -> Option<CallFacts> {
    let start = bridge.stream()?;
    let started_wall = SystemTime::now();
    let info = SessionInfo {
        stream_sid: start.stream_sid.as_str().to_owned(),
        call_sid: start.call_sid.as_str().to_owned(),
        account_sid: start.account_sid.as_str().to_owned(),
        from: start.custom_parameter("From").map(str::to_owned),
        to: start.custom_parameter("To").map(str::to_owned),
        started_at: rfc3339_utc(started_wall),
        route: start.custom_parameter(ROUTE_PARAMETER).map(str::to_owned),
        worker: ctx.index,
        rtp_port,
        leg,
    };
    let registration = ctx.shared.directory.register(info, commands.clone())?;
    let trace = traces::call_trace(&ctx.shared, start.call_sid.as_str());
    traces::log_ids(trace);
    let mut facts = CallFacts {
        started_wall,
        started: std::time::Instant::now(),
        registration,
        journal: None,
        in_ledger: false,
        leg_watch: None,
        taps: Box::default(),
        capture: Capture::default(),
        leg,
        bot: None,
        sip: None,
        trace,
    };
    // What is known now goes to the journal of calls in progress, so a crash
    // before the record is written still leaves one at the next start.
    let mut known = call_record(ctx, bridge, &CallStats::default(), EndReason::WebSocketClosed, &facts);
    known.end_reason.clear();
    known.ended_at.clear();
    known.duration_ms = 0;
    match ctx.shared.calls.stream_started(&known, started_wall) {
        Some(journal) => (facts.journal, facts.in_ledger) = (journal, true),
        None => facts.journal = ctx.shared.cdr.journal_start(known, started_wall),
    }
    Some(facts)
}

/// What woke a stream that has not started yet.
enum PreStart {
    Twilio(Result<Received, SocketError>),
    Flushed(std::io::Result<()>),
    Deadline,
    Shutdown,
}

/// Feeds the bridge until Twilio's `start` is accepted (`true`). A stream
/// that ends first (no `start` by the deadline, a refused `start`, a closed
/// socket, a drain) is counted and closed here, and `false` is returned: it
/// never held a call place or a port, and it gets no record.
async fn await_start(
    ctx: &WorkerContext,
    bridge: &mut CallBridge,
    ws: &mut Ws,
    capture: &mut Capture,
) -> bool {
    let clock = ctx.shared.clock;
    let drain = ctx.drain.wait();
    tokio::pin!(drain);
    let mut ws_open = true;
    let mut close: Option<(u16, String)> = None;
    while !bridge.is_finished() {
        capture.with(|c| c.deadline(bridge.poll_timeout()));
        let deadline = bridge
            .poll_timeout()
            .map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600), |at| clock.to_tokio(at));
        let wake = tokio::select! {
            biased;
            () = &mut drain => PreStart::Shutdown,
            ready = ws.ready(true, ws_open) => match ready {
                Ready::Read(result) => PreStart::Twilio(result),
                Ready::Flushed(result) => PreStart::Flushed(result),
            },
            () = tokio::time::sleep_until(deadline) => PreStart::Deadline,
        };
        let now = clock.now();
        match wake {
            PreStart::Twilio(read) => match twilio_read(ctx, bridge, capture, ws, now, read) {
                TwilioRead::Text(Err(e)) => {
                    tracing::info!(error = %e, "frame before the stream started rejected")
                }
                TwilioRead::Closed => {
                    // The reply is queued; send it.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
                    ws_open = false;
                }
                TwilioRead::Ping => ws_open &= ws.try_flush().is_ok(),
                TwilioRead::Failed(reply) => {
                    ws_open &= reply.is_some();
                    close = reply;
                }
                TwilioRead::Text(Ok(())) | TwilioRead::Done => {}
            },
            PreStart::Flushed(result) => ws_open &= result.is_ok(),
            PreStart::Deadline => {
                capture.with(|c| c.timeout(now));
                bridge.handle_timeout(now);
            }
            PreStart::Shutdown => {
                capture.with(|c| c.close(now, EndReason::Drain));
                bridge.handle_close(now, EndReason::Drain);
            }
        }
        if bridge.stream().is_some() && !bridge.is_finished() {
            // The call's own loop drains what `start` produced.
            return true;
        }
        while let Some(output) = bridge.poll_output() {
            capture.with(|c| c.output(&output));
            match output {
                Output::Ping if ws_open => {
                    ws_open = ws.queue_ping() && ws.try_flush().is_ok();
                }
                Output::Close { code, reason } => {
                    close.get_or_insert((code, reason.to_owned()));
                }
                // Nothing else exists before `start`.
                Output::Ping | Output::Twilio(_) | Output::Rtp(_) | Output::Event(_) => {}
            }
        }
    }
    let end = bridge.end_reason().unwrap_or(EndReason::WebSocketClosed);
    let reason =
        if end == EndReason::Unauthorized { RefuseReason::InvalidStart } else { RefuseReason::NoStart };
    ctx.metrics().call_refused(reason);
    tracing::info!(reason = end.name(), "media stream ended before it started; no call record");
    if ws_open && let Some((code, text)) = close {
        close_now(ws, code, &text).await;
    }
    false
}

/// What a WebSocket read error means: the close frame to answer with, or
/// `None` when the connection is gone. Counted.
pub(super) fn ws_error_close(ctx: &WorkerContext, e: &SocketError) -> Option<(u16, String)> {
    let metrics = ctx.metrics();
    match e {
        SocketError::Frame(FrameError::TooBig { size, max }) => {
            metrics.websocket_error(WsErrorKind::Oversize);
            tracing::warn!(size, max, "WebSocket message over limits.max_frame_bytes; closing with 1009");
            Some((1009, "message too big".to_owned()))
        }
        SocketError::Io(e) => {
            metrics.websocket_error(WsErrorKind::Io);
            tracing::info!(error = %e, "WebSocket read failed");
            None
        }
        SocketError::Dropped => {
            // The TCP connection ended without a close frame: nobody is
            // left to say goodbye to.
            tracing::info!("WebSocket dropped without a close frame");
            None
        }
        SocketError::Frame(frame) => {
            metrics.websocket_error(WsErrorKind::Protocol);
            let code = frame.close_code();
            tracing::info!(error = %frame, code, "WebSocket protocol error; closing");
            let reason = if code == 1007 { "invalid UTF-8" } else { "protocol error" };
            Some((code, reason.to_owned()))
        }
    }
}

/// Fresh random SSRC, sequence and timestamp for a call (RFC 3550 §5.1).
fn random_rtp_origin() -> (u32, u16, u32) {
    let bytes: [u8; 10] = crate::runtime::random_bytes();
    let ssrc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let seq = u16::from_le_bytes([bytes[4], bytes[5]]);
    let ts = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    (ssrc, seq, ts)
}

/// Points the call at the RTP backend of the route its `start` names (the
/// [`ROUTE_PARAMETER`] the voice webhook added; the stream token, checked
/// before this, proves the parameters came from our answer). A stream
/// without one, or naming a route the config no longer has, keeps the
/// global backend.
///
/// Returns whether the route has a `fallback`: then a silent backend is a
/// failed leg ([`LegWatch`]).
fn apply_route(
    config: &crate::config::Config,
    bridge: &mut CallBridge,
    capture: &mut Capture,
    now: voxproxy_core::Instant,
) -> bool {
    let Some(label) = bridge.stream().and_then(|s| s.custom_parameter(ROUTE_PARAMETER)) else { return false };
    match route_by_label(&config.routes, &config.default_route, label) {
        Some(matched) => {
            if let Some(addr) = matched.route.backend.rtp() {
                capture.with(|c| c.set_backend(now, Some(addr)));
                let _ = bridge.set_backend(Some(addr));
            }
            matched.route.fallback.is_some()
        }
        None => {
            tracing::info!(
                route = label,
                "the stream names a route this config does not have; global backend"
            );
            false
        }
    }
}

/// When a plain RTP leg counts as failed (it has no signalling to say so):
/// its backend sent no RTP for `rtp.backend_timeout`, from the stream's
/// start or since its last packet. Watched only on routes with a
/// `fallback`, where closing the stream lets Twilio play it; elsewhere a
/// silent backend is only an outage, logged and counted.
#[derive(Debug)]
struct LegWatch {
    timeout: Duration,
    packets: u64,
    since: std::time::Instant,
}

impl LegWatch {
    fn new(timeout: Duration, now: std::time::Instant) -> LegWatch {
        LegWatch { timeout, packets: 0, since: now }
    }

    /// Whether the leg has failed by `now`, the backend having sent
    /// `packets` RTP packets so far.
    fn failed(&mut self, now: std::time::Instant, packets: u64) -> bool {
        if packets != self.packets {
            (self.packets, self.since) = (packets, now);
            return false;
        }
        now.saturating_duration_since(self.since) >= self.timeout
    }
}

/// The bridge's settings from the server's config.
pub fn bridge_config(config: &crate::config::Config) -> BridgeConfig {
    let (ssrc, initial_sequence, initial_timestamp) = random_rtp_origin();
    let (mut outbound_ssrc, outbound_initial_sequence, outbound_initial_timestamp) = random_rtp_origin();
    if outbound_ssrc == ssrc {
        // One chance in 2^32; the bridge refuses equal SSRCs.
        outbound_ssrc = ssrc.wrapping_add(1);
    }
    BridgeConfig {
        backend: config.rtp.backend.rtp(),
        codec: config.rtp.codec,
        payload_type: config.rtp.payload_type,
        ptime: Duration::from_millis(u64::from(config.rtp.ptime_ms)),
        dtmf_payload_type: config.rtp.dtmf_payload_type,
        jitter_max_delay: Duration::from_millis(u64::from(config.jitter.max_delay_ms)),
        vad_mode: config.vad.mode,
        barge_in: config.vad.barge_in,
        ping_interval: config.keepalive.ping_interval,
        idle_timeout: config.keepalive.idle_timeout,
        max_frame_bytes: config.limits.max_frame_bytes as usize,
        ssrc,
        initial_sequence,
        initial_timestamp,
        outbound_ssrc,
        outbound_initial_sequence,
        outbound_initial_timestamp,
        ..BridgeConfig::default()
    }
}

/// What woke the call up.
enum Wake {
    Sent(crate::runtime::SendResult),
    Sip(std::io::Result<(usize, SocketAddr)>),
    Twilio(Result<Received, SocketError>),
    /// A datagram may wait on the RTP socket (`Err`: waiting failed).
    Rtp(std::io::Result<()>),
    Deadline,
    Command(CallCommand),
    Shutdown,
    Writable(std::io::Result<()>),
    StatsTick,
    /// The first turn: drain what `start` produced.
    Started,
}

/// Datagrams waiting for the socket, with their buffers reused.
struct SendQueue {
    queued: std::collections::VecDeque<(Vec<u8>, SocketAddr)>,
    spare: Vec<Vec<u8>>,
}

impl SendQueue {
    /// Datagrams that may wait; more means the socket is stuck, and the
    /// newest are dropped (and counted by the caller).
    const DEPTH: usize = 16;

    fn new() -> Self {
        // Room for the usual one or two; it grows towards DEPTH only
        // while the socket is stuck (16 entries would be 896 bytes a call).
        SendQueue { queued: std::collections::VecDeque::with_capacity(2), spare: Vec::with_capacity(2) }
    }

    fn push(&mut self, datagram: &[u8], to: SocketAddr) -> bool {
        if self.queued.len() >= Self::DEPTH {
            return false;
        }
        // Sized to the datagram (172 bytes for 20 ms of G.711), not to the
        // largest one: up to three of these live as long as the call.
        let mut buf = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(datagram.len()));
        buf.clear();
        buf.extend_from_slice(datagram);
        self.queued.push_back((buf, to));
        true
    }

    fn next(&mut self) -> Option<(Vec<u8>, SocketAddr)> {
        self.queued.pop_front()
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 2 {
            self.spare.push(buf);
        }
    }
}

/// Facts about the call kept for its record.
pub(super) struct CallFacts {
    started_wall: SystemTime,
    started: std::time::Instant,
    /// The call's entry in the session directory. Its published counters
    /// are also what metrics have counted of the call so far.
    pub(super) registration: Registration,
    /// The call's entry in the journal of calls in progress.
    journal: Option<JournalId>,
    /// Whether the table of calls in progress takes the stream's record
    /// (merged into the call's one record), rather than the stream writing it.
    in_ledger: bool,
    /// Set on routes with a fallback: when the backend counts as failed.
    leg_watch: Option<LegWatch>,
    /// The call's recording and latency breakdown (`taps.rs`); boxed, as
    /// the facts live in several states of the call task's future.
    pub(super) taps: Box<CallTaps>,
    /// The call's capture for `voxproxy replay` (`crate::capture`), if any.
    pub(super) capture: Capture,
    /// `rtp` or `ws`, for the record.
    leg: &'static str,
    /// A `ws` leg's part of the record.
    pub(super) bot: Option<Box<crate::cdr::BotRecord>>,
    /// The SIP leg of a call to a `sip:` backend; boxed, as the facts live
    /// in several states of the call task's future.
    sip: Option<Box<SipCall>>,
    /// The call's trace (`otel.endpoint`), `None` when tracing is off.
    pub(super) trace: Option<CallTrace>,
}

/// Runs the call until the bridge is finished. Borrows the socket, the
/// bridge and the facts rather than taking them: an async fn keeps both its
/// arguments and their moved copies in its state, so each taken by value
/// was two more copies in every call's task.
#[allow(clippy::too_many_lines)] // one loop; splitting it would scatter the call's state
async fn media_loop(
    ctx: &Rc<WorkerContext>,
    ws: &mut Ws,
    bridge: &mut CallBridge,
    socket: &RtpUdp,
    rtp_port: u16,
    facts: &mut CallFacts,
    mut commands: CommandReceiver,
) {
    let shared = &ctx.shared;
    let clock = shared.clock;
    let metrics = ctx.metrics();
    metrics.call_started();
    // One wait for the call's life, ready once: a drain that timed out
    // while this call was still being set up closes it at the first turn.
    let drain = ctx.drain.wait();
    tokio::pin!(drain);
    // One send in flight on the socket at a time (the io_uring backend owns
    // its buffer until the kernel is done); the call never waits for it.
    let mut sends = SendQueue::new();
    let send = futures_util::future::Fuse::terminated();
    tokio::pin!(send);
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `start` has been handled already: its outputs are drained first.
    let mut started = true;
    let mut close: Option<(u16, String)> = None;
    // Writing and reading end separately: after an oversize or malformed
    // message nothing more is read, but the close frame saying why is sent.
    let mut ws_open = true;
    let mut reading = true;
    let mut peer_closed = false;
    let mut dropped_frames = 0u64;
    let mut sip_buf = vec![0u8; if facts.sip.is_some() { sip_client::RECV_BYTES } else { 0 }];
    // The deadline the timer is set to: re-armed only when the bridge's
    // changes (most frames leave it where it was), sparing the timer wheel
    // a removal and an insertion per frame.
    let mut armed = None;

    loop {
        let sip_due = facts.sip.as_deref().and_then(SipCall::poll_timeout);
        let due = voxproxy_core::time::earliest(bridge.poll_timeout(), sip_due);
        facts.capture.with(|c| c.deadline(due));
        if due != armed || (due.is_none() && sleep.is_elapsed()) {
            armed = due;
            match due {
                Some(deadline) => sleep.as_mut().reset(clock.to_tokio(deadline)),
                None => sleep.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600)),
            }
        }
        let wake = if std::mem::take(&mut started) {
            Wake::Started
        } else {
            tokio::select! {
            biased;
            () = &mut drain => Wake::Shutdown,
            command = commands.recv() => Wake::Command(command),
            ready = std::future::poll_fn(|cx| socket.poll_recv_ready(cx)) => Wake::Rtp(ready),
            result = &mut send => Wake::Sent(result),
            result = sip_recv(&mut facts.sip, &mut sip_buf) => Wake::Sip(result),
            ready = ws.ready(reading, ws_open), if reading || (ws_open && ws.is_blocked()) => match ready {
                Ready::Read(result) => Wake::Twilio(result),
                Ready::Flushed(result) => Wake::Writable(result),
            },
            () = &mut sleep => Wake::Deadline,
            _ = stats_tick.tick() => Wake::StatsTick,
            }
        };
        let woke = std::time::Instant::now();
        let now = clock.to_core(woke);
        let mut direction = None;
        let mut flush_pong = false;
        match wake {
            Wake::Twilio(read) => match twilio_read(ctx, bridge, &mut facts.capture, ws, now, read) {
                TwilioRead::Text(result) => {
                    direction = Some(Direction::Inbound);
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "frame from Twilio rejected");
                    }
                }
                // The flush below sends the pong.
                TwilioRead::Ping => flush_pong = true,
                TwilioRead::Closed => {
                    // The goodbye flushes the queued reply.
                    reading = false;
                    peer_closed = true;
                }
                TwilioRead::Failed(reply) => {
                    reading = false;
                    ws_open &= reply.is_some();
                    close = reply;
                }
                TwilioRead::Done => {}
            },
            Wake::Rtp(ready) => {
                // The datagram is read where the socket holds it: the
                // ring's buffer on io_uring, the worker's on epoll.
                let received = ready.map_or_else(
                    |e| Some(Err(e)),
                    |()| {
                        socket.try_recv_with(|datagram, from| {
                            facts.capture.with(|c| c.rtp(now, from, datagram));
                            bridge.handle_rtp(now, from, datagram);
                        })
                    },
                );
                match received {
                    Some(Ok(())) => direction = Some(Direction::Outbound),
                    Some(Err(e)) => {
                        // ICMP port unreachable from a backend that is down
                        // shows up here on Linux: count and keep receiving.
                        metrics.rtp_error(RtpErrorKind::Recv);
                        tracing::debug!(error = %e, "RTP receive failed");
                    }
                    // Readiness without a datagram: wait again.
                    None => {}
                }
            }
            Wake::Sent((result, buf)) => {
                if let Err(e) = result {
                    metrics.rtp_error(RtpErrorKind::Send);
                    tracing::debug!(error = %e, "RTP send failed");
                }
                sends.recycle(buf);
            }
            Wake::Deadline => {
                facts.capture.with(|c| c.timeout(now));
                bridge.handle_timeout(now);
                if let Some(sip) = &mut facts.sip {
                    sip.handle_timeout(now, &mut facts.capture);
                }
            }
            Wake::Sip(result) => {
                if let Some(sip) = &mut facts.sip {
                    sip.received(now, result, &sip_buf, &mut facts.capture);
                }
            }
            Wake::Started => {}
            Wake::Command(CallCommand::Hangup) => {
                tracing::info!("ended through the control API");
                facts.capture.with(|c| c.close(now, EndReason::Hangup));
                bridge.handle_close(now, EndReason::Hangup);
            }
            Wake::Command(CallCommand::Media(media)) => {
                if let Err(e) = bridge.apply_media(now, &media) {
                    tracing::warn!(error = %e, "the PBX's new media cannot be bridged; keeping the old");
                }
            }
            Wake::Shutdown => {
                tracing::info!("drain timeout: closing the call");
                facts.capture.with(|c| c.close(now, EndReason::Drain));
                bridge.handle_close(now, EndReason::Drain);
            }
            Wake::Writable(result) => {
                if result.is_err() {
                    ws_open = false;
                    facts.capture.with(|c| c.close(now, EndReason::WebSocketClosed));
                    bridge.handle_close(now, EndReason::WebSocketClosed);
                }
            }
            Wake::StatsTick => {
                let stats = bridge.stats();
                let reported = facts.registration.publish(&stats);
                metrics.add_call_stats(&reported, &stats);
                metrics.observe_jitter_us(stats.jitter_us);
                facts.taps.report(ctx, bridge);
                facts.registration.publish_latency((&bridge.latency_summary()).into());
                if let Some(sip) = &mut facts.sip {
                    sip.publish(ctx, &facts.registration);
                }
                if let Some(watch) = &mut facts.leg_watch
                    && watch.failed(woke, stats.rtp_packets_in)
                    && !bridge.is_finished()
                {
                    leg_failed(ctx, bridge, now, &mut facts.capture);
                }
            }
        }

        if let Some(sip) = &mut facts.sip {
            if bridge.is_finished() {
                // The Twilio side ended (or the leg did, and this is a no-op).
                sip.hangup(now, &mut facts.capture);
            }
            sip.pump(ctx, bridge, now, &mut facts.capture);
        }
        // Drain every output into the sockets.
        let mut wrote_ws = false;
        let backend_peer = bridge.backend_peer();
        while let Some(output) = bridge.poll_output() {
            facts.capture.with(|c| c.output(&output));
            match output {
                Output::Twilio(bytes) => {
                    let Ok(text) = std::str::from_utf8(bytes) else { continue };
                    // Queued up to the bound while Twilio reads slowly; past
                    // it, dropped and counted rather than waited for.
                    if ws_open && ws.queue_text(text) {
                        wrote_ws = true;
                    } else {
                        dropped_frames += 1;
                    }
                }
                Output::Ping => {
                    if ws_open {
                        wrote_ws |= ws.queue_ping();
                    }
                }
                Output::Rtp(datagram) => {
                    // The bridge emits RTP only once it knows where it goes.
                    if let Some(backend) = backend_peer
                        && !sends.push(datagram, backend)
                    {
                        metrics.rtp_error(RtpErrorKind::Send);
                    }
                }
                Output::Event(event) => on_event(ctx, bridge, event, rtp_port),
                Output::Close { code, reason } => {
                    if close.is_none() {
                        close = Some((code, reason.to_owned()));
                    }
                }
            }
        }
        if send.is_terminated()
            && let Some((buf, to)) = sends.next()
        {
            send.set(socket.send_to(buf, to).fuse());
            // Poll once now: the epoll backend sends right here, and the
            // io_uring backend queues the operation on the ring at once.
            if let Some((result, buf)) = send.as_mut().now_or_never() {
                if let Err(e) = result {
                    metrics.rtp_error(RtpErrorKind::Send);
                    tracing::debug!(error = %e, "RTP send failed");
                }
                sends.recycle(buf);
                // Anything else queued goes on the next turn of the loop.
            }
        }
        if dropped_frames > 0 {
            metrics.websocket_frames_dropped(std::mem::take(&mut dropped_frames));
        }
        // One write for the turn's messages (and pongs), never waiting:
        // what the connection does not take now waits in the socket.
        if ws_open
            && (wrote_ws || flush_pong || ws.is_blocked())
            && let Err(e) = ws.try_flush()
        {
            tracing::info!(error = %e, "WebSocket write failed");
            metrics.websocket_error(WsErrorKind::Io);
            ws_open = false;
        }
        facts.taps.drain(bridge, now);
        facts.capture.flush();
        if let Some(direction) = direction {
            let spent = woke.elapsed();
            let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
            metrics.observe_frame_processing(direction, nanos);
            bridge.record_processing(direction == Direction::Inbound, spent);
        }
        if bridge.is_finished() {
            break;
        }
    }

    // Say goodbye on the WebSocket, bounded.
    if peer_closed {
        // Twilio closed first: send the socket's queued reply.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
    } else if ws_open {
        let (code, reason) = close.unwrap_or((1000, "call ended".to_owned()));
        close_now(ws, code, &reason).await;
    }
    // A send still waiting (epoll, on a full socket buffer) owns its
    // buffer: let it finish, bounded. No receive is in flight: the
    // io_uring ring cancels the socket's own when the socket goes.
    if !send.is_terminated() {
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, &mut send).await;
    }
}

/// Signalling from the call's SIP leg; pends forever without one.
async fn sip_recv(sip: &mut Option<Box<SipCall>>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sip {
        Some(sip) => sip.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// After the stream: the leg's CANCEL or BYE gets its answer (bounded by
/// [`sip_client::HANGUP_TIMEOUT`]), so the record has the final status.
async fn end_sip(
    ctx: &Rc<WorkerContext>,
    bridge: &mut CallBridge,
    sip: &mut SipCall,
    registration: &Registration,
    capture: &mut Capture,
) {
    let clock = ctx.shared.clock;
    let give_up = tokio::time::Instant::now() + sip_client::HANGUP_TIMEOUT;
    let mut buf = vec![0u8; sip_client::RECV_BYTES];
    let now = clock.now();
    sip.hangup(now, capture);
    sip.pump(ctx, bridge, now, capture);
    while !sip.is_done() {
        capture
            .with(|c| c.deadline(voxproxy_core::time::earliest(bridge.poll_timeout(), sip.poll_timeout())));
        let wake_at = sip.poll_timeout().map_or(give_up, |at| clock.to_tokio(at).min(give_up));
        tokio::select! {
            result = sip.recv(&mut buf) => sip.received(clock.now(), result, &buf, capture),
            () = tokio::time::sleep_until(wake_at) => {
                if tokio::time::Instant::now() >= give_up {
                    tracing::info!(call_id = sip.backend().call_id(), "the SIP leg did not finish its hangup in time");
                    break;
                }
                sip.handle_timeout(clock.now(), capture);
            }
        }
        sip.pump(ctx, bridge, clock.now(), capture);
        capture.flush();
    }
    // An INVITE the call's end cancelled, or never answered in time.
    let status = sip.backend().final_status();
    sip.end_invite_span(ctx, status);
    sip.publish(ctx, registration);
}

/// Gives up on a failed backend leg: marked first, so the `<Connect
/// action>` Twilio posts once the stream closes finds it (and plays the
/// route's fallback), then the stream is closed.
fn leg_failed(
    ctx: &WorkerContext,
    bridge: &mut CallBridge,
    now: voxproxy_core::Instant,
    capture: &mut Capture,
) {
    let silent_ms = bridge.config().backend_timeout.as_millis() as u64;
    tracing::warn!(silent_ms, backend = ?bridge.backend_peer(), "backend leg failed: no RTP for rtp.backend_timeout; closing the stream so the caller hears the route's fallback");
    if let Some(start) = bridge.stream() {
        ctx.shared.calls.leg_failed(start.call_sid.as_str());
    }
    capture.with(|c| c.close(now, EndReason::BackendFailed));
    bridge.handle_close(now, EndReason::BackendFailed);
}

/// Counts the call's last numbers and writes its record.
pub(super) async fn finish_call(ctx: &WorkerContext, bridge: &mut CallBridge, facts: &mut CallFacts) {
    let shared = &ctx.shared;
    let ending = SystemTime::now();
    let metrics = ctx.metrics();
    let end = bridge.end_reason().unwrap_or(EndReason::WebSocketClosed);
    let stats = bridge.stats();
    metrics.add_call_stats(&facts.registration.publish(&stats), &stats);
    metrics.observe_jitter_us(stats.jitter_us);
    let mut record = call_record(ctx, bridge, &stats, end, facts);
    facts.taps.report(ctx, bridge);
    facts.taps.finish(bridge, shared.clock.now(), &mut record);
    facts.capture.finish(shared.clock.now());
    // The spans read the record before the ledger or the writer takes it.
    // Boxed: it waits across the record's write inside the call's task.
    let spans = facts.trace.map(|trace| Box::new((trace, record.clone())));
    if facts.in_ledger {
        // Durable already: the journal keeps it whole until the call's
        // record (this stream's merged with the call's status) is written.
        shared.calls.stream_ended(record);
    } else if let Err(e) = shared.cdr.write(record.clone(), facts.journal).await {
        metrics.cdr_write_error();
        // The log keeps the record when the file cannot.
        let line = serde_json::to_string(&record).unwrap_or_default();
        tracing::error!(error = %e, record = %line, "call record not written");
    }
    if let Some(spans) = spans {
        traces::call_ended(shared, Some(spans.0), ending, &spans.1);
    }
    metrics.call_ended(end);
    if let Some(start) = bridge.stream() {
        shared.events.publish(
            start.stream_sid.as_str(),
            start.call_sid.as_str(),
            &CallEvent::Ended { reason: end.name() },
        );
    }
    tracing::info!(
        reason = end.name(),
        inbound_frames = stats.twilio_frames_in,
        outbound_frames = stats.twilio_frames_out,
        rtp_lost = stats.rtp_lost,
        backend_outages = stats.backend_outages,
        backend_outage_ms = stats.backend_outage_ms,
        "call ended"
    );
}

pub(super) fn on_event(ctx: &WorkerContext, bridge: &CallBridge, event: BridgeEvent, rtp_port: u16) {
    let Some(start) = bridge.stream() else { return };
    let (stream_sid, call_sid) = (start.stream_sid.as_str(), start.call_sid.as_str());
    if let BridgeEvent::StreamStarted = event {
        let span = tracing::Span::current();
        span.record("call_sid", call_sid);
        span.record("stream_sid", stream_sid);
        tracing::info!(rtp_port, "stream started");
    } else {
        log_event(bridge, event);
    }
    ctx.shared.events.publish(stream_sid, call_sid, &CallEvent::Bridge(event));
}

/// Backend outages are an operator's business (the voice stack stopped
/// answering): one line when each starts and ends. Other events are debug.
fn log_event(bridge: &CallBridge, event: BridgeEvent) {
    match event {
        BridgeEvent::BackendTimeout => {
            let silent_ms = bridge.config().backend_timeout.as_millis() as u64;
            tracing::warn!(
                silent_ms,
                backend = ?bridge.backend_peer(),
                "backend outage: no RTP from the backend for rtp.backend_timeout; the caller hears nothing from it"
            );
        }
        BridgeEvent::BackendResumed { silent_ms } => {
            tracing::info!(silent_ms, "backend outage over: backend RTP resumed");
        }
        other => tracing::debug!(event = other.name(), "call event"),
    }
}

fn call_record(
    ctx: &WorkerContext,
    bridge: &CallBridge,
    stats: &CallStats,
    end: EndReason,
    facts: &CallFacts,
) -> CallRecord {
    let start = bridge.stream();
    let ended = SystemTime::now();
    CallRecord {
        call_sid: start.map(|s| s.call_sid.as_str().to_owned()).unwrap_or_default(),
        stream_sid: start.map(|s| s.stream_sid.as_str().to_owned()).unwrap_or_default(),
        account_sid: start.map(|s| s.account_sid.as_str().to_owned()).unwrap_or_default(),
        from: start.and_then(|s| s.custom_parameter("From")).map(str::to_owned),
        to: start.and_then(|s| s.custom_parameter("To")).map(str::to_owned),
        started_at: rfc3339_utc(facts.started_wall),
        ended_at: rfc3339_utc(ended),
        duration_ms: u64::try_from(facts.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        end_reason: end.name().to_owned(),
        io_backend: ctx.backend.name().to_owned(),
        worker: u32::try_from(ctx.index).unwrap_or(u32::MAX),
        inbound_frames: stats.twilio_frames_in,
        inbound_bytes: stats.twilio_audio_bytes_in,
        outbound_frames: stats.twilio_frames_out,
        outbound_bytes: stats.twilio_audio_bytes_out,
        rtp_lost: stats.rtp_lost,
        rtp_late: stats.rtp_late,
        rtp_duplicate: stats.rtp_duplicate,
        rtp_reordered: stats.rtp_reordered,
        concealed_frames: stats.concealed_frames,
        jitter_us: stats.jitter_us,
        max_jitter_us: stats.max_jitter_us,
        vad_segments: stats.vad_segments,
        barge_ins: stats.barge_ins,
        dtmf_digits: stats.dtmf_digits,
        marks_sent: stats.marks_sent,
        marks_played: stats.marks_played,
        marks_cleared: stats.marks_cleared,
        twilio_malformed: stats.twilio_malformed,
        rtp_malformed: stats.rtp_malformed,
        rtp_foreign_source: stats.rtp_foreign_source,
        backend_outages: stats.backend_outages,
        backend_outage_ms: stats.backend_outage_ms,
        custom_parameters: start.map(|s| s.custom_parameters.clone()).unwrap_or_default(),
        route: start.and_then(|s| s.custom_parameter(ROUTE_PARAMETER)).map(str::to_owned),
        outbound_track_frames: stats.twilio_outbound_track_frames_in,
        outbound_track_rtp_packets: stats.rtp_outbound_track_packets_out,
        rtp_ssrc: bridge.config().ssrc,
        outbound_track_ssrc: start.filter(|s| s.tracks.outbound).map(|_| bridge.config().outbound_ssrc),
        leg: Some(facts.leg.to_owned()),
        bot: facts.bot.clone(),
        sip_call_id: facts.sip.as_ref().map(|s| s.backend().call_id().to_owned()),
        sip_status: facts.sip.as_ref().and_then(|s| s.backend().final_status()),
        hung_up_by: facts.sip.as_ref().and_then(|s| s.backend().hung_up_by()).map(|h| h.name().to_owned()),
        ..CallRecord::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what an async fn returns, without calling it.
    fn future_size<F, A, B, C, D, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D) -> R,
    {
        size_of::<R>()
    }

    #[test]
    fn the_call_task_stays_small() {
        // Every call's task holds this future for the call's whole life,
        // so its size is memory per call. 80,136 bytes with the bridge held
        // inline (copies of it in several states); 7,096 with the SIP
        // set-up, the SIP hang-up and the record's write inline, 6,296 with
        // those three boxed (they run once, at the edges of the call). The
        // bound leaves room for the loop's own growth, not for a bridge by
        // value. 3,888 with the media loop borrowing the socket, the bridge
        // and the facts instead of taking them (each argument taken by value
        // was kept twice more) and the bridge's settings built outside the
        // task's state; 3,072 with the counters last reported kept only in
        // the call's registration and a bot's record boxed; 2,368 with the
        // epoll socket's waits polled instead of tokio's futures; 2,192
        // with the SIP leg's receive polled too.
        let size = future_size(run);
        eprintln!("call task future: {size} bytes");
        assert!(size <= 2_240, "the call future grew to {size} bytes: box what made it grow");
    }

    #[test]
    fn every_rtp_packet_the_bridge_takes_is_received_whole() {
        use voxproxy_adapters::bridge::{BackendCodec, MAX_G711_RTP_PAYLOAD, MAX_RTP_PAYLOAD};
        let bridge = |codec| {
            let config = BridgeConfig { codec, ..BridgeConfig::default() };
            CallBridge::new(config, voxproxy_core::Instant::from_millis(0)).unwrap()
        };
        assert_eq!(bridge(BackendCodec::Pcmu).max_rtp_payload(), MAX_G711_RTP_PAYLOAD);
        assert_eq!(bridge(BackendCodec::L16Wideband).max_rtp_payload(), MAX_RTP_PAYLOAD);
        // The fixed header, a full CSRC list (60 bytes) and 228 bytes of
        // RFC 8285 extensions (SIP peers add an audio level, 8 bytes)
        // before the longest payload: both backends receive that much
        // whole, so only a packet with a larger header than that, or a
        // payload the bridge rejects anyway, is cut.
        let longest = voxproxy_core::rtp::HEADER_LEN + 60 + 228 + MAX_RTP_PAYLOAD;
        assert!(longest <= crate::runtime::MAX_RECV_DATAGRAM, "{longest}");
    }

    #[test]
    fn a_leg_fails_after_the_timeout_without_rtp_from_the_start_or_the_last_packet() {
        let t = std::time::Instant::now();
        let timeout = Duration::from_secs(5);
        let mut watch = LegWatch::new(timeout, t);
        assert!(!watch.failed(t + Duration::from_secs(4), 0));
        assert!(watch.failed(t + timeout, 0), "never answered");

        let mut watch = LegWatch::new(timeout, t);
        assert!(!watch.failed(t + Duration::from_secs(4), 10), "audio flows");
        assert!(!watch.failed(t + Duration::from_secs(8), 10), "silent for 4 s only");
        assert!(watch.failed(t + Duration::from_secs(9), 10), "dropped mid-call");
    }
}
