//! One call to a WebSocket bot (`ws://`/`wss://` backend): Twilio's media
//! WebSocket on one side, the bot's on the other, and the sans-IO
//! [`BotCall`] between them, all on one worker.
//!
//! The call is admitted, registered and recorded as an RTP call is
//! (`call.rs`), without an RTP port. The bot is dialled after Twilio's
//! `start` (TCP, TLS with the webpki roots for `wss://`, the WebSocket
//! handshake to the URL as configured, query string included), all within
//! `ws.connect_timeout`; a bot that cannot be reached is a failed leg: the
//! call is marked so the `<Connect action>` plays the route's fallback, and
//! the stream is closed with 1011.
//!
//! Then the loop of docs/ARCHITECTURE.md (*Legs*): wait for either
//! WebSocket, the state machine's deadline, a control command or shutdown;
//! hand it in; drain both outputs. Neither socket is waited on for
//! writing: towards Twilio frames are dropped and counted as on an RTP call,
//! and towards the bot a message leaves the leg only when the socket can
//! take it, so a slow bot fills the leg's own bounded queue (32 messages),
//! whose overflow the leg counts. Reads from the bot are bounded by the bot
//! module's message sizes.

use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use opentelemetry::trace::SpanKind;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use voxproxy_adapters::bot::{self, BotMessage, BotProtocol};
use voxproxy_adapters::bot_call::{BotCall, TwilioOutput};
use voxproxy_adapters::bridge::{CallBridge, EndReason};
use voxproxy_adapters::capture::{BotStart, LegKind};
use voxproxy_adapters::route::{Backend, ROUTE_PARAMETER, route_by_label};
use voxproxy_adapters::url::{Scheme, Url};

use super::WorkerContext;
use super::call::{
    Admission, CLOSE_TIMEOUT, CLOSE_TRY_AGAIN, COMMAND_QUEUE, CallFacts, STATS_INTERVAL, TwilioRead, Ws,
    admit, close_now, finish_call, on_event, refusal_text, register, twilio_read,
};
use super::directory::{CallCommand, CommandReceiver};
use super::media_ws::{Ready, Received, SocketError};
use super::taps::CallTaps;
use super::traces;
use crate::capture::Capture;
use crate::cdr::BotRecord;
use crate::config::Config;
use crate::metrics::{BotTotals, Direction, RefuseReason, WsErrorKind};

/// Bytes tungstenite may hold for a slow bot before the socket counts as
/// blocked: about 300 ms of 24 kHz L16.
const MAX_BOT_WRITE_BUFFER: usize = 16 * 1024;

/// The bot a call goes to, when its backend is a WebSocket: the route its
/// `start` names, else the global `rtp.backend`.
pub(super) fn bot_backend(config: &Config, bridge: &CallBridge) -> Option<Url> {
    let label = bridge.stream().and_then(|s| s.custom_parameter(ROUTE_PARAMETER));
    let backend = label
        .and_then(|label| route_by_label(&config.routes, &config.default_route, label))
        .map_or(&config.rtp.backend, |matched| &matched.route.backend);
    match backend {
        Backend::WebSocket(url) => Some(url.clone()),
        _ => None,
    }
}

/// Anything a bot's WebSocket can run over: TCP, or TLS over TCP.
trait BotIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> BotIo for T {}

type BotWs = WebSocketStream<Box<dyn BotIo>>;

/// Why the bot could not be reached.
#[derive(Debug)]
enum DialError {
    Timeout,
    Tcp(std::io::Error),
    Tls(std::io::Error),
    BadHost,
    Handshake(WsError),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Timeout => f.write_str("no answer within ws.connect_timeout"),
            DialError::Tcp(e) => write!(f, "TCP connection failed: {e}"),
            DialError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            DialError::BadHost => f.write_str("the host is not a valid TLS server name"),
            DialError::Handshake(e) => write!(f, "WebSocket handshake failed: {e}"),
        }
    }
}

/// The client TLS configuration of `wss://` bots (webpki roots, ring, TLS
/// 1.2 and 1.3), made once per process.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
        // ring supports the safe defaults; this cannot fail.
        Arc::new(config.unwrap_or_else(|e| unreachable!("ring provider refused the default versions: {e}")))
    });
    tokio_rustls::TlsConnector::from(Arc::clone(config))
}

/// TCP, TLS for `wss://`, then the WebSocket handshake to `url`, carrying
/// the call's W3C `traceparent` when the call is traced.
async fn dial(url: &Url, traceparent: Option<&str>) -> Result<BotWs, DialError> {
    let host = url.host().trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((host, url.port_or_default())).await.map_err(DialError::Tcp)?;
    // 20 ms frames must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn BotIo> = if url.scheme() == Scheme::Wss {
        let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|_| DialError::BadHost)?;
        Box::new(tls_connector().connect(name, tcp).await.map_err(DialError::Tls)?)
    } else {
        Box::new(tcp)
    };
    let mut request = url.as_str().into_client_request().map_err(DialError::Handshake)?;
    if let Some(value) = traceparent.and_then(|v| http::HeaderValue::from_str(v).ok()) {
        request.headers_mut().insert("traceparent", value);
    }
    let max = bot::MAX_BINARY_BYTES.max(bot::MAX_TEXT_BYTES);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_BOT_WRITE_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(config))
        .await
        .map_err(DialError::Handshake)?;
    Ok(ws)
}

/// The path of a bot URL, without its query.
fn bot_path(url: &Url) -> String {
    let path = url.path_and_query();
    path.split_once('?').map_or(path, |(path, _)| path).to_owned()
}

/// `twilio`, or `l16-<rate>`.
fn protocol_label(protocol: BotProtocol) -> String {
    match protocol {
        BotProtocol::Twilio => "twilio".to_owned(),
        BotProtocol::L16(rate) => format!("l16-{}", rate.hz()),
    }
}

/// Runs a started stream whose backend is the bot at `url`, to its record.
pub(super) async fn run(
    ctx: &Rc<WorkerContext>,
    mut ws: Ws,
    mut bridge: CallBridge,
    url: Url,
    config: &Config,
    mut capture: Capture,
) {
    // No RTP on this call: whatever the bridge would send is dropped unread.
    capture.with(|c| c.set_backend(ctx.shared.clock.now(), None));
    let _ = bridge.set_backend(None);
    let slot = match admit(ctx) {
        // A bot call needs no RTP port: give it back at once.
        Admission::Admitted { slot, socket, lease } => {
            drop(socket);
            drop(lease);
            slot
        }
        Admission::Refused(reason) => {
            let text = refusal_text(reason);
            if reason != RefuseReason::FdLimit {
                tracing::warn!(reason = text, "media stream refused");
            }
            close_now(&mut ws, CLOSE_TRY_AGAIN, text).await;
            return;
        }
    };
    let (commands_tx, commands) = super::directory::command_channel(COMMAND_QUEUE);
    let Some(mut facts) = register(ctx, &bridge, 0, "ws", &commands_tx) else {
        ctx.metrics().call_refused(RefuseReason::DuplicateStream);
        tracing::warn!("a live call already has this streamSid; the second stream is refused");
        let (code, reason) = EndReason::DuplicateStream.close_frame();
        close_now(&mut ws, code, reason).await;
        return;
    };
    // Recorded as an RTP call is: the caller as the bridge receives it, and
    // the bot's audio as it goes to Twilio.
    *facts.taps = CallTaps::start(ctx, config, &mut bridge);
    let keep = crate::capture::wanted(config, &bridge).then(|| {
        let start = bridge.stream().map(|s| (s.call_sid.as_str(), s.stream_sid.as_str())).unwrap_or_default();
        (crate::capture::file_for(&config.capture.dir, start.0, start.1), LegKind::Bot)
    });
    capture.decide(&ctx.shared.capturer, keep);
    let clock = ctx.shared.clock;
    let now = clock.now();
    let bot_start = BotStart { config: config.ws.bot_config(), barge_in: config.ws.barge_in };
    capture.with(|c| c.bot_start(now, &bot_start));
    facts.capture = capture;
    let call = match BotCall::new(bridge, bot_start.config, bot_start.barge_in, now) {
        Ok(call) => call,
        Err(e) => {
            // The config was validated at start: a bug, so the call is closed
            // rather than the worker stopped.
            tracing::error!(error = %e, "bot leg refused the server's configuration");
            close_now(&mut ws, 1011, "bot leg misconfigured").await;
            return;
        }
    };
    let mut record = BotRecord { protocol: protocol_label(config.ws.protocol), ..BotRecord::default() };
    let dialled = std::time::Instant::now();
    let span = traces::begin(&ctx.shared, facts.trace, "ws.connect", SpanKind::Client, SystemTime::now());
    let (span, traceparent) = span.unzip();
    let dial = tokio::time::timeout(config.ws.connect_timeout, dial(&url, traceparent.as_deref())).await;
    let error = match &dial {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(DialError::Timeout.to_string()),
    };
    // The bot's host and path, never its query (it may hold a token).
    let span = span.map(|s| s.attr("server.address", url.host().to_owned()).attr("url.path", bot_path(&url)));
    traces::end(&ctx.shared, span.map(|s| if let Some(e) = &error { s.failed(e.clone()) } else { s }));
    let bot = match (dial, error) {
        (Ok(Ok(bot)), _) => Some(bot),
        (_, error) => {
            let error = error.unwrap_or_default();
            tracing::warn!(bot = %url, %error, "bot leg failed; closing the stream so the caller hears the route's fallback");
            None
        }
    };
    let mut totals = BotTotals::default();
    ctx.metrics().call_started();
    let (call, reported_totals) = match bot {
        Some(bot) => {
            record.connect_ms = Some(u64::try_from(dialled.elapsed().as_millis()).unwrap_or(u64::MAX));
            tracing::info!(bot = %url, connect_ms = record.connect_ms, protocol = %record.protocol, "bot connected");
            bot_loop(ctx, ws, bot, call, &mut facts, &mut record, &mut totals, commands).await
        }
        None => {
            let mut call = call;
            totals.connect_failures = 1;
            if let Some(start) = call.bridge().stream() {
                ctx.shared.calls.leg_failed(start.call_sid.as_str());
            }
            let now = clock.now();
            facts.capture.with(|c| c.bot_failed(now));
            call.handle_bot_failed(now);
            goodbye_twilio(ctx, &mut ws, &mut call, &mut facts.capture).await;
            (call, BotTotals::default())
        }
    };
    fill_record(&mut record, &call, &mut totals);
    record.ended_by = ended_by(call.bridge().end_reason()).to_owned();
    ctx.shared.metrics.bot().add(&reported_totals, &totals);
    facts.bot = Some(Box::new(record));
    drop(commands_tx);
    let mut bridge = call.into_bridge();
    finish_call(ctx, &mut bridge, &mut facts).await;
    drop(slot);
}

/// Who ended a stream that ended for `reason`.
fn ended_by(reason: Option<EndReason>) -> &'static str {
    match reason {
        Some(EndReason::TwilioStop | EndReason::WebSocketClosed) | None => "twilio",
        Some(EndReason::BackendHangup) => "bot",
        Some(_) => "voxproxy",
    }
}

/// Drains what is left for Twilio before the bot loop (the close of a
/// failed leg) and sends the close, bounded.
async fn goodbye_twilio(ctx: &WorkerContext, ws: &mut Ws, call: &mut BotCall, capture: &mut Capture) {
    let mut close = None;
    while let Some(output) = call.poll_twilio() {
        capture.with(|c| c.twilio_output(&output));
        match output {
            TwilioOutput::Close { code, reason } => close = Some((code, reason)),
            TwilioOutput::Event(event) => on_event(ctx, call_bridge_of(call), event, 0),
            TwilioOutput::Text(_) | TwilioOutput::Ping => {}
        }
    }
    let (code, reason) = close.unwrap_or((1011, "backend failed"));
    close_now(ws, code, reason).await;
}

/// The bridge of `call`, for [`on_event`] (a separate borrow from the poll).
fn call_bridge_of(call: &BotCall) -> &CallBridge {
    call.bridge()
}

/// The leg's and the routing's counters into the record and the totals.
fn fill_record(record: &mut BotRecord, call: &BotCall, totals: &mut BotTotals) {
    let s = call.bot_stats();
    record.messages_in = totals.messages_in;
    record.messages_out = totals.messages_out;
    record.bad_messages = s.bad_messages;
    record.frames_to_bot_dropped = s.frames_to_bot_dropped;
    record.events_to_bot_dropped = s.events_to_bot_dropped;
    record.bot_audio_bytes = s.bot_audio_bytes;
    record.bot_audio_dropped_bytes = s.bot_audio_dropped_bytes;
    record.marks_played = s.marks_played;
    record.marks_cleared = s.marks_cleared;
    record.bot_clears = s.bot_clears;
    totals.bad_messages = s.bad_messages;
    totals.caller_frames_dropped = s.frames_to_bot_dropped;
    totals.events_dropped = s.events_to_bot_dropped;
    totals.bot_audio_dropped_bytes = s.bot_audio_dropped_bytes;
    totals.barge_ins = call.stats().barge_ins;
}

/// What woke the bot call.
enum Wake {
    Twilio(Result<Received, SocketError>),
    Bot(Option<Result<Message, WsError>>),
    Deadline,
    Command(CallCommand),
    Shutdown,
    TwilioWritable(std::io::Result<()>),
    BotWritable(Result<(), WsError>),
    StatsTick,
    /// The first turn: send the bot its opening messages.
    Started,
}

/// The state of the two sockets.
struct Sockets {
    twilio_open: bool,
    twilio_reading: bool,
    twilio_peer_closed: bool,
    bot_open: bool,
    bot_reading: bool,
    bot_blocked: bool,
    bot_peer_closed: bool,
    close: Option<(u16, String)>,
}

/// Runs the call until it is over; returns it and the bot's totals last
/// added to the metrics (the bridge's counters last added are the ones
/// published in the call's registration).
#[allow(clippy::too_many_arguments, clippy::too_many_lines)] // one loop over the call's state
async fn bot_loop(
    ctx: &Rc<WorkerContext>,
    mut ws: Ws,
    bot: BotWs,
    mut call: BotCall,
    facts: &mut CallFacts,
    record: &mut BotRecord,
    totals: &mut BotTotals,
    mut commands: CommandReceiver,
) -> (BotCall, BotTotals) {
    let shared = &ctx.shared;
    let clock = shared.clock;
    let metrics = ctx.metrics();
    let (mut bot_sink, mut bot_stream) = bot.split();
    // Ready once: a drain that timed out while the bot was being dialled
    // closes the call at the first turn.
    let drain = ctx.drain.wait();
    tokio::pin!(drain);
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_totals = BotTotals::default();
    let mut s = Sockets {
        twilio_open: true,
        twilio_reading: true,
        twilio_peer_closed: false,
        bot_open: true,
        bot_reading: true,
        bot_blocked: false,
        bot_peer_closed: false,
        close: None,
    };
    // Bot text that tungstenite's buffer shares is copied here to be parsed.
    let mut frame = Vec::new();
    let mut dropped_frames = 0u64;
    let mut started = true;

    loop {
        facts.capture.with(|c| c.deadline(call.poll_timeout()));
        match call.poll_timeout() {
            Some(deadline) => sleep.as_mut().reset(clock.to_tokio(deadline)),
            None => sleep.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600)),
        }
        let wake = if std::mem::take(&mut started) {
            Wake::Started
        } else {
            tokio::select! {
                biased;
                () = &mut drain => Wake::Shutdown,
                command = commands.recv() => Wake::Command(command),
                ready = ws.ready(s.twilio_reading, s.twilio_open), if s.twilio_reading || (s.twilio_open && ws.is_blocked()) => match ready {
                    Ready::Read(result) => Wake::Twilio(result),
                    Ready::Flushed(result) => Wake::TwilioWritable(result),
                },
                message = bot_stream.next(), if s.bot_reading => Wake::Bot(message),
                () = &mut sleep => Wake::Deadline,
                ready = futures_util::future::poll_fn(|cx| bot_sink.poll_ready_unpin(cx)), if s.bot_blocked && s.bot_open => Wake::BotWritable(ready),
                _ = stats_tick.tick() => Wake::StatsTick,
            }
        };
        let woke = std::time::Instant::now();
        let now = clock.to_core(woke);
        let mut direction = None;
        let mut flush_twilio = false;
        let mut flush_bot = false;
        match wake {
            Wake::Started | Wake::Deadline => {
                facts.capture.with(|c| c.timeout(now));
                call.handle_timeout(now);
            }
            Wake::Twilio(read) => match twilio_read(ctx, &mut call, &mut facts.capture, &mut ws, now, read) {
                TwilioRead::Text(result) => {
                    direction = Some(Direction::Inbound);
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "frame from Twilio rejected");
                    }
                }
                TwilioRead::Ping => flush_twilio = true,
                TwilioRead::Closed => {
                    s.twilio_reading = false;
                    s.twilio_peer_closed = true;
                }
                TwilioRead::Failed(reply) => {
                    s.twilio_reading = false;
                    s.twilio_open &= reply.is_some();
                    s.close = reply;
                }
                TwilioRead::Done => {}
            },
            Wake::Bot(Some(Ok(message))) => {
                totals.messages_in += 1;
                if let Message::Text(_) | Message::Binary(_) = message {
                    direction = Some(Direction::Outbound);
                }
                let result = match message {
                    Message::Text(text) => {
                        let bytes = bytes::Bytes::from(text);
                        facts.capture.with(|c| c.bot_text(now, &bytes));
                        match bytes.try_into_mut() {
                            Ok(mut owned) => call.handle_bot_text(now, &mut owned),
                            Err(shared_bytes) => {
                                frame.clear();
                                frame.extend_from_slice(&shared_bytes);
                                call.handle_bot_text(now, &mut frame)
                            }
                        }
                    }
                    Message::Binary(data) => {
                        facts.capture.with(|c| c.bot_binary(now, &data));
                        call.handle_bot_binary(now, &data)
                    }
                    Message::Close(_) => {
                        tracing::info!("the bot closed its WebSocket; ending the call");
                        s.bot_reading = false;
                        s.bot_peer_closed = true;
                        facts.capture.with(|c| c.bot_closed(now));
                        call.handle_bot_closed(now);
                        Ok(())
                    }
                    Message::Ping(_) => {
                        flush_bot = true;
                        Ok(())
                    }
                    Message::Pong(_) | Message::Frame(_) => Ok(()),
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "bot message refused");
                }
            }
            Wake::Bot(Some(Err(e))) => {
                tracing::info!(error = %e, "the bot's WebSocket failed; ending the call");
                s.bot_reading = false;
                s.bot_open = false;
                facts.capture.with(|c| c.bot_closed(now));
                call.handle_bot_closed(now);
            }
            Wake::Bot(None) => {
                tracing::info!("the bot's connection ended; ending the call");
                s.bot_reading = false;
                s.bot_open = false;
                facts.capture.with(|c| c.bot_closed(now));
                call.handle_bot_closed(now);
            }
            Wake::Command(CallCommand::Hangup) => {
                tracing::info!("ended through the control API");
                facts.capture.with(|c| c.close(now, EndReason::Hangup));
                call.handle_close(now, EndReason::Hangup);
            }
            // Only SIP calls change their media.
            Wake::Command(CallCommand::Media(_)) => {}
            Wake::Shutdown => {
                tracing::info!("drain timeout: closing the call");
                facts.capture.with(|c| c.close(now, EndReason::Drain));
                call.handle_close(now, EndReason::Drain);
            }
            Wake::TwilioWritable(result) => {
                if result.is_err() {
                    s.twilio_open = false;
                    facts.capture.with(|c| c.close(now, EndReason::WebSocketClosed));
                    call.handle_close(now, EndReason::WebSocketClosed);
                }
            }
            Wake::BotWritable(result) => {
                s.bot_blocked = false;
                if result.is_err() {
                    s.bot_open = false;
                    facts.capture.with(|c| c.bot_closed(now));
                    call.handle_bot_closed(now);
                }
            }
            Wake::StatsTick => {
                let stats = call.bridge().stats();
                metrics.add_call_stats(&facts.registration.publish(&stats), &stats);
                fill_record(record, &call, totals);
                shared.metrics.bot().add(&reported_totals, totals);
                reported_totals = *totals;
                facts.registration.publish_bot(record);
            }
        }

        // Towards Twilio: as an RTP call does, never waiting.
        let mut wrote_twilio = false;
        while let Some(output) = call.poll_twilio() {
            facts.capture.with(|c| c.twilio_output(&output));
            match output {
                TwilioOutput::Text(bytes) => {
                    let Ok(text) = std::str::from_utf8(bytes) else { continue };
                    if s.twilio_open && ws.queue_text(text) {
                        wrote_twilio = true;
                    } else {
                        dropped_frames += 1;
                    }
                }
                TwilioOutput::Ping => {
                    if s.twilio_open {
                        wrote_twilio |= ws.queue_ping();
                    }
                }
                TwilioOutput::Event(event) => on_event(ctx, call.bridge(), event, 0),
                TwilioOutput::Close { code, reason } => {
                    s.close.get_or_insert((code, reason.to_owned()));
                }
            }
        }
        if dropped_frames > 0 {
            metrics.websocket_frames_dropped(std::mem::take(&mut dropped_frames));
        }
        if s.twilio_open
            && (wrote_twilio || flush_twilio || ws.is_blocked())
            && let Err(e) = ws.try_flush()
        {
            tracing::info!(error = %e, "WebSocket write failed");
            metrics.websocket_error(WsErrorKind::Io);
            s.twilio_open = false;
        }

        // Towards the bot: a message leaves the leg only when the socket
        // can take it; otherwise it waits in the leg's bounded queue.
        if !call.is_finished() {
            flush_bot |= feed_bot(&mut bot_sink, &mut call, &mut s, totals, &mut facts.capture);
            if s.bot_open && (flush_bot || s.bot_blocked) {
                match bot_sink.flush().now_or_never() {
                    Some(Ok(())) => s.bot_blocked = false,
                    Some(Err(_)) => s.bot_open = false,
                    None => s.bot_blocked = true,
                }
            }
        }
        if let Some(recording) = facts.taps.recording_mut() {
            while let Some(block) = call.poll_recording(now) {
                recording.push(block);
            }
        }
        if let Some(direction) = direction {
            // From the message in hand to its consequences handed to the
            // sockets, as on an RTP call (bot audio paced for Twilio leaves later).
            let nanos = u64::try_from(woke.elapsed().as_nanos()).unwrap_or(u64::MAX);
            metrics.observe_frame_processing(direction, nanos);
        }
        facts.capture.flush();
        if call.is_finished() {
            break;
        }
    }

    // Say goodbye on both sockets, bounded.
    if s.twilio_peer_closed {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
    } else if s.twilio_open {
        let (code, reason) = s.close.take().unwrap_or((1000, "call ended".to_owned()));
        close_now(&mut ws, code, &reason).await;
    }
    drop(ws);
    if s.bot_peer_closed {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, bot_sink.flush()).await;
    } else if s.bot_open {
        let goodbye = bot_goodbye(&mut bot_sink, &mut call, totals, &mut facts.capture);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await;
    }
    (call, reported_totals)
}

type BotSink = futures_util::stream::SplitSink<BotWs, Message>;

/// Moves messages from the leg to the bot's socket while it takes them
/// without waiting; whether any was written.
fn feed_bot(
    sink: &mut BotSink,
    call: &mut BotCall,
    s: &mut Sockets,
    totals: &mut BotTotals,
    capture: &mut Capture,
) -> bool {
    let mut wrote = false;
    while s.bot_open && !s.bot_blocked {
        match futures_util::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never() {
            None => s.bot_blocked = true,
            Some(Err(_)) => s.bot_open = false,
            Some(Ok(())) => {
                let Some(message) = call.poll_bot() else { break };
                capture.with(|c| c.bot_output(&message));
                let Some(message) = to_message(message) else { continue };
                totals.messages_out += 1;
                if sink.start_send_unpin(message).is_err() {
                    s.bot_open = false;
                }
                wrote = true;
            }
        }
    }
    wrote
}

/// The WebSocket message for a leg's message (`Close` ends the stream:
/// sent by [`bot_goodbye`]).
fn to_message(message: BotMessage<'_>) -> Option<Message> {
    match message {
        // The leg writes JSON it built itself: always UTF-8.
        BotMessage::Text(text) => std::str::from_utf8(text).ok().map(|t| Message::Text(t.into())),
        BotMessage::Binary(data) => Some(Message::Binary(bytes::Bytes::copy_from_slice(data))),
        BotMessage::Close => {
            Some(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "call ended".into() })))
        }
    }
}

/// Sends the bot what the leg has left (Twilio's `stop`, the close), waiting
/// for the socket this time: the caller bounds it.
async fn bot_goodbye(sink: &mut BotSink, call: &mut BotCall, totals: &mut BotTotals, capture: &mut Capture) {
    let mut closed = false;
    while let Some(message) = call.poll_bot() {
        capture.with(|c| c.bot_output(&message));
        closed |= message == BotMessage::Close;
        let Some(message) = to_message(message) else { continue };
        totals.messages_out += 1;
        if sink.send(message).await.is_err() {
            return;
        }
    }
    if !closed {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "call ended".into() };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
}
