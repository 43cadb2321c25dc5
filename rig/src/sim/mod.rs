//! The Twilio simulator and load generator behind `voxproxy sim`.
//!
//! It behaves like Twilio for N concurrent calls against any Media Streams
//! server: each call posts the signed voice webhook, follows the TwiML to the
//! `<Stream>`, opens the signed WebSocket, sends `connected` and `start`,
//! then one `media` message every 20 ms on an absolute schedule (optional
//! `dtmf` spread over the call), and finally `stop` and a close. What the
//! server sends back is played out as Twilio does ([`playout`]): marks are
//! echoed once their audio has played, `clear` flushes the buffer and echoes
//! pending marks at once.
//!
//! Measurement: each frame's identity (call index, frame number) is written
//! into the first 16 μ-law bytes of its audio ([`identity`]), where it
//! survives PCMU passthrough and an RTP echo backend. Every frame that comes
//! back is matched with its send time ([`meter`]): round-trip latency,
//! missing, late, out-of-order, duplicate, unidentified and misrouted frames,
//! and second by second ([`timeline`]) when the tail happened.
//! After its media, a call waits (sending nothing) until every frame has come
//! back or [`SimConfig::grace`] has passed, then sends `stop`.
//!
//! ## Driving it
//!
//! - [`run`] runs the whole load on the caller's tokio runtime;
//! - [`run_blocking`] builds its own: one current-thread runtime per worker
//!   thread ([`SimConfig::workers`]), calls spread evenly across them, so
//!   nothing is shared between threads on the media path except one
//!   histogram lock per worker and the run's [`timeline`];
//! - [`twilio::TwilioCall`] is one call, for tests that script a call themselves.
//!
//! ```no_run
//! use std::time::Duration;
//! use voxproxy_rig::sim::{self, SimConfig};
//!
//! let mut config = SimConfig::new("http://127.0.0.1:8080");
//! config.calls = 100;
//! config.media = Duration::from_secs(30);
//! config.auth_token = std::env::var("TWILIO_AUTH_TOKEN").ok();
//! let report = sim::run_blocking(config)?;
//! println!("{}", report.render_table());
//! # Ok::<(), sim::SimError>(())
//! ```

pub mod audio;
mod call;
pub mod cost;
mod error;
pub mod identity;
pub mod meter;
pub mod playout;
pub mod report;
pub mod stamped;
pub mod timeline;
pub mod twilio;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

pub use error::SimError;
pub use report::{CallReport, Percentiles, SimReport, render_svg, write_svg};

use self::meter::MAX_LATENCY_US;
use self::report::RunSettings;
use self::timeline::Timeline;

/// Most calls in one run: a call's index must fit the frame identity.
pub const MAX_CALLS: u32 = identity::MAX_CALL + 1;

/// Longest media per call: the frame number must fit the frame identity.
pub const MAX_MEDIA: Duration = Duration::from_secs(5 * 3600);

/// Most DTMF digits per call.
pub const MAX_DTMF_DIGITS: usize = 64;

/// What a simulator run does.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The server's base URL (`http://host:port[/prefix]`); the webhook is
    /// `{url}/twilio/voice`, and it is also the URL that is signed.
    pub url: String,
    /// Concurrent calls, 1 to [`MAX_CALLS`].
    pub calls: u32,
    /// Media sent per call, up to [`MAX_MEDIA`].
    pub media: Duration,
    /// Calls started per second while ramping up; each call also starts up
    /// to one 20 ms frame later, spread evenly (see `start_offset`).
    pub ramp: f64,
    /// WAV file to send (8 or 16 kHz mono, PCM16 or μ-law); `None` for the
    /// built-in test signal.
    pub audio: Option<PathBuf>,
    /// DTMF digits each call sends, spread evenly over its media.
    pub dtmf: String,
    /// Twilio auth token to sign requests with; `None` sends them unsigned.
    pub auth_token: Option<String>,
    /// How long a call waits after its media for frames still in flight.
    pub grace: Duration,
    /// Worker threads for [`run_blocking`]; 0 for one per CPU.
    pub workers: usize,
    /// Print a progress line on stderr about once a second (only when
    /// stderr is a terminal).
    pub progress: bool,
    /// Whose cost to put in the report: a `voxproxy serve` process, or a
    /// proxy in this process (see [`cost`]).
    pub proxy_cost: Option<cost::CostTarget>,
}

impl SimConfig {
    /// One 10-second call to `url`, ramp 50 calls/s, test signal, unsigned,
    /// 2 s grace, one worker per CPU, no progress line.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        SimConfig {
            url: url.into(),
            calls: 1,
            media: Duration::from_secs(10),
            ramp: 50.0,
            audio: None,
            dtmf: String::new(),
            auth_token: None,
            grace: Duration::from_secs(2),
            workers: 0,
            progress: false,
            proxy_cost: None,
        }
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] or [`SimError::InvalidUrl`] naming the setting.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |what: String| Err(SimError::InvalidConfig { what });
        if !self.url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
            return Err(SimError::InvalidUrl {
                url: self.url.clone(),
                reason: "the server URL must start with http:// (the simulator does not speak TLS)",
            });
        }
        if self.calls == 0 || self.calls > MAX_CALLS {
            return invalid(format!("calls must be from 1 to {MAX_CALLS}, not {}", self.calls));
        }
        if self.media < Duration::from_millis(20) || self.media > MAX_MEDIA {
            return invalid(format!(
                "seconds must be from 0.02 to {}, not {}",
                MAX_MEDIA.as_secs(),
                self.media.as_secs_f64()
            ));
        }
        if !(self.ramp.is_finite() && self.ramp > 0.0) {
            return invalid(format!("ramp must be a positive number of calls per second, not {}", self.ramp));
        }
        if self.dtmf.chars().count() > MAX_DTMF_DIGITS {
            return invalid(format!("dtmf takes at most {MAX_DTMF_DIGITS} digits"));
        }
        if let Some(bad) = self.dtmf.chars().find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')) {
            return invalid(format!("dtmf digit {bad:?} is not one of 0-9, *, #, A-D"));
        }
        if self.grace > Duration::from_secs(600) {
            return invalid(format!("grace must be at most 600 s, not {} s", self.grace.as_secs_f64()));
        }
        Ok(())
    }

    fn settings(&self) -> RunSettings {
        RunSettings {
            url: self.url.clone(),
            calls: self.calls,
            seconds: self.media.as_secs_f64(),
            ramp_per_second: self.ramp,
            audio: self
                .audio
                .as_ref()
                .map_or_else(|| "built-in test signal".to_owned(), |p| p.display().to_string()),
            dtmf: self.dtmf.clone(),
            signed: self.auth_token.is_some(),
        }
    }
}

/// Live counters, read by the progress line.
#[derive(Debug, Default)]
struct Progress {
    calls_up: Arc<AtomicU64>,
    calls_failed: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
}

/// What every call of a run shares.
#[derive(Debug)]
struct RunContext {
    config: SimConfig,
    audio: Vec<u8>,
    /// Origin of the run's `voxproxy_core::time::Instant`s.
    epoch: std::time::Instant,
    progress: Progress,
    /// One latency histogram per worker (3 significant figures, µs).
    latency: Vec<Mutex<Histogram<u64>>>,
    /// One histogram per worker of how late each media frame left against
    /// its schedule (µs): the simulator's own pacing, which the round trip
    /// (timed from the actual send) leaves out but the proxy sees as
    /// Twilio's lateness.
    send_lateness: Vec<Mutex<Histogram<u64>>>,
    /// One histogram per worker of the round trip less the simulator's
    /// own wait to read the frame (µs): what the proxy, the backend and the
    /// kernel took, without the rig's receive queue.
    latency_at_kernel: Vec<Mutex<Histogram<u64>>>,
    /// One histogram per worker of that wait (µs).
    receive_wait: Vec<Mutex<Histogram<u64>>>,
    /// The run second by second, all workers together.
    timeline: Mutex<Timeline>,
}

impl RunContext {
    fn new(config: SimConfig, shards: usize) -> Result<Arc<RunContext>, SimError> {
        config.validate()?;
        let audio = match &config.audio {
            Some(path) => audio::load_wav(path)?,
            None => audio::test_signal(),
        };
        let latency = (0..shards).map(|_| Mutex::new(run_histogram())).collect();
        let send_lateness = (0..shards).map(|_| Mutex::new(run_histogram())).collect();
        let latency_at_kernel = (0..shards).map(|_| Mutex::new(run_histogram())).collect();
        let receive_wait = (0..shards).map(|_| Mutex::new(run_histogram())).collect();
        Ok(Arc::new(RunContext {
            config,
            audio,
            epoch: std::time::Instant::now(),
            progress: Progress::default(),
            latency,
            send_lateness,
            latency_at_kernel,
            receive_wait,
            timeline: Mutex::default(),
        }))
    }

    /// A media frame of worker `shard` left at `sent_at`, `late` after its
    /// scheduled time.
    fn record_send_lateness(&self, shard: usize, sent_at: std::time::Instant, late: Duration) {
        let micros = meter::latency_micros(late);
        if let Some(histogram) = self.send_lateness.get(shard) {
            histogram.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(micros);
        }
        self.timeline().record_send_lateness(sent_at.saturating_duration_since(self.epoch), micros);
    }

    fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn merged_latency(&self) -> Histogram<u64> {
        merged(&self.latency)
    }

    fn report(&self, per_call: Vec<CallReport>, cost: Option<cost::CostMeter>) -> SimReport {
        let duration = self.epoch.elapsed().as_secs_f64();
        let mut report =
            SimReport::assemble(self.config.settings(), duration, per_call, &self.merged_latency());
        report.send_lateness_us = Percentiles::of(&merged(&self.send_lateness));
        report.latency_at_kernel_us = Percentiles::of(&merged(&self.latency_at_kernel));
        report.receive_wait_us = Percentiles::of(&merged(&self.receive_wait));
        report.timeline = std::mem::take(&mut *self.timeline()).finish();
        report.proxy_cost = cost.map(|meter| meter.finish(report.frames.sent + report.frames.received));
        report
    }

    fn cost_meter(self: &Arc<Self>) -> Option<cost::CostMeter> {
        let target = self.config.proxy_cost.clone()?;
        let ctx = Arc::clone(self);
        Some(cost::CostMeter::start(target, move || {
            let p = &ctx.progress;
            cost::Live {
                calls: p.calls_up.load(Ordering::Relaxed),
                frames: p.frames_sent.load(Ordering::Relaxed) + p.frames_received.load(Ordering::Relaxed),
            }
        }))
    }
}

/// The sum of per-worker histograms.
fn merged(shards: &[Mutex<Histogram<u64>>]) -> Histogram<u64> {
    let mut merged = run_histogram();
    for shard in shards {
        let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        // Same bounds, so adding cannot fail.
        let _ = merged.add(&*shard);
    }
    merged
}

fn run_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// When call `index` starts, after the run's epoch: `ramp` calls a second,
/// each moved later by part of a 20 ms frame.
///
/// Real calls arrive at any moment, so their frame clocks tick out of step.
/// Calls started at round intervals would not: at 100 calls a second every
/// call starts a multiple of 10 ms after the first, and all of them would
/// send within the same two moments of each frame, a burst no gateway sees
/// from Twilio. The part of a frame follows the golden-ratio sequence,
/// which spreads any number of calls evenly over the frame and gives every
/// run the same schedule.
fn start_offset(index: u32, ramp: f64) -> Duration {
    const GOLDEN_FRACTION: f64 = 0.618_033_988_749_894_9;
    let phase = (f64::from(index) * GOLDEN_FRACTION).fract();
    Duration::from_secs_f64(f64::from(index) / ramp) + call::FRAME.mul_f64(phase)
}

/// Runs the calls of worker `shard` of `shards` on the current runtime.
async fn run_shard(ctx: Arc<RunContext>, shard: usize, shards: usize) -> Vec<CallReport> {
    let calls = ctx.config.calls as usize;
    let ramp = ctx.config.ramp;
    let mut tasks = Vec::with_capacity(calls / shards + 1);
    for index in (shard..calls).step_by(shards.max(1)) {
        let ctx = Arc::clone(&ctx);
        let start_at = ctx.epoch + start_offset(index as u32, ramp);
        tasks.push((
            index,
            tokio::spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(start_at)).await;
                call::run_call(&ctx, index as u32, shard).await
            }),
        ));
    }
    let mut reports = Vec::with_capacity(tasks.len());
    for (index, task) in tasks {
        reports.push(task.await.unwrap_or_else(|e| CallReport {
            index: index as u32,
            failure: Some("internal error".into()),
            failure_detail: Some(format!("the call's task failed: {e}")),
            ..CallReport::default()
        }));
    }
    reports
}

/// Runs the simulation on the caller's tokio runtime (any flavour) and
/// returns its report. Failed calls are in the report, not errors.
///
/// # Errors
/// The configuration is invalid or the audio file cannot be used.
pub async fn run(config: SimConfig) -> Result<SimReport, SimError> {
    let ctx = RunContext::new(config, 1)?;
    let cost = ctx.cost_meter();
    let printer = ctx.config.progress && std::io::stderr().is_terminal();
    let progress = printer.then(|| {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let mut line = ProgressLine::new();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                line.print(&ctx);
            }
        })
    });
    let reports = run_shard(Arc::clone(&ctx), 0, 1).await;
    if let Some(task) = progress {
        task.abort();
        eprintln!();
    }
    Ok(ctx.report(reports, cost))
}

/// Runs the simulation on runtimes of its own, one current-thread runtime
/// per worker thread, and returns its report. Do not call it from inside
/// an async context.
///
/// # Errors
/// The configuration is invalid, the audio file cannot be used, or a
/// worker thread or runtime cannot be started.
pub fn run_blocking(config: SimConfig) -> Result<SimReport, SimError> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let wanted = if config.workers == 0 { cpus } else { config.workers };
    let shards = wanted.clamp(1, config.calls.max(1) as usize);
    let ctx = RunContext::new(config, shards)?;
    let cost = ctx.cost_meter();
    let mut workers = Vec::with_capacity(shards);
    for shard in 0..shards {
        let ctx = Arc::clone(&ctx);
        let worker = std::thread::Builder::new().name(format!("voxproxy-sim-{shard}")).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            Ok::<_, std::io::Error>(runtime.block_on(run_shard(ctx, shard, shards)))
        });
        workers.push(worker.map_err(SimError::Runtime)?);
    }
    let printer = ctx.config.progress && std::io::stderr().is_terminal();
    if printer {
        let mut line = ProgressLine::new();
        while !workers.iter().all(std::thread::JoinHandle::is_finished) {
            std::thread::sleep(Duration::from_millis(250));
            if line.due() {
                line.print(&ctx);
            }
        }
        eprintln!();
    }
    let mut reports = Vec::with_capacity(ctx.config.calls as usize);
    for worker in workers {
        match worker.join() {
            Ok(Ok(shard)) => reports.extend(shard),
            Ok(Err(e)) => return Err(SimError::Runtime(e)),
            Err(_) => return Err(SimError::Runtime(std::io::Error::other("a worker thread panicked"))),
        }
    }
    Ok(ctx.report(reports, cost))
}

/// The live progress line: calls up, frames per second, p99 so far.
struct ProgressLine {
    last: std::time::Instant,
    sent: u64,
    received: u64,
}

impl ProgressLine {
    fn new() -> Self {
        ProgressLine { last: std::time::Instant::now(), sent: 0, received: 0 }
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= Duration::from_secs(1)
    }

    fn print(&mut self, ctx: &RunContext) {
        let p = &ctx.progress;
        let sent = p.frames_sent.load(Ordering::Relaxed);
        let received = p.frames_received.load(Ordering::Relaxed);
        let seconds = self.last.elapsed().as_secs_f64().max(1e-3);
        let p99 = {
            let merged = ctx.merged_latency();
            if merged.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2}", merged.value_at_quantile(0.99) as f64 / 1000.0)
            }
        };
        eprint!(
            "\r\x1b[K{:>6.0} s  calls up {}/{}  failed {}  frames/s out {:.0} in {:.0}  p99 {} ms",
            ctx.epoch.elapsed().as_secs_f64(),
            p.calls_up.load(Ordering::Relaxed),
            ctx.config.calls,
            p.calls_failed.load(Ordering::Relaxed),
            sent.saturating_sub(self.sent) as f64 / seconds,
            received.saturating_sub(self.received) as f64 / seconds,
            p99
        );
        let _ = std::io::stderr().flush();
        *self = ProgressLine { last: std::time::Instant::now(), sent, received };
    }
}

#[cfg(test)]
mod tests {
    use super::twilio::{CallParams, ServerMessage, TwilioCall};
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response as WsResponse};
    use voxproxy_adapters::form::Form;
    use voxproxy_adapters::media_stream::{self, Inbound, StreamSid};
    use voxproxy_adapters::signature::{SIGNATURE_HEADER, SignatureValidator};
    use voxproxy_adapters::twiml::{Reject, Response, Stream};

    const TOKEN: &str = "test-auth-token";

    /// What the fake server answers the webhook with.
    #[derive(Clone, Copy)]
    enum Answer {
        Stream,
        Reject,
        Forbidden,
    }

    /// What the fake Media Streams server saw.
    #[derive(Debug, Default)]
    struct Seen {
        webhook_signatures_ok: u32,
        ws_signatures_ok: u32,
        custom_parameter: Vec<String>,
        dtmf: Vec<char>,
        mark_echoes: Vec<String>,
        stops: u32,
    }

    /// A tiny Media Streams server: a raw HTTP responder for the webhook
    /// (checking its signature) and a WebSocket that checks the handshake
    /// signature, echoes every media frame and sends a mark after the 5th.
    async fn fake_server(answer: Answer) -> (String, Arc<Mutex<Seen>>) {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_base = format!("http://{}", http.local_addr().unwrap());
        let ws_base = format!("ws://{}", ws.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (base, ws_url) = (http_base.clone(), format!("{ws_base}/twilio/media"));
        let http_seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = http.accept().await {
                let (base, ws_url, seen) = (base.clone(), ws_url.clone(), Arc::clone(&http_seen));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let n = tcp.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "request cut short");
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            break (at + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let n = tcp.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let signature = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case(SIGNATURE_HEADER).then(|| value.trim().to_owned())
                    });
                    let form = Form::parse(&buf[head_end..head_end + length]).unwrap();
                    let validator = SignatureValidator::new(TOKEN, &base).unwrap();
                    if validator.validate_form("/twilio/voice", form.pairs(), signature.as_deref()).is_ok() {
                        seen.lock().unwrap().webhook_signatures_ok += 1;
                    }
                    let (status, body) = match answer {
                        Answer::Stream => (
                            "200 OK",
                            Response::new()
                                .connect_stream(
                                    Stream::new(ws_url).unwrap().parameter("From", form.get("From").unwrap()),
                                )
                                .to_xml()
                                .unwrap(),
                        ),
                        Answer::Reject => ("200 OK", Response::new().reject(Reject::new()).to_xml().unwrap()),
                        Answer::Forbidden => ("403 Forbidden", String::new()),
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    tcp.write_all(reply.as_bytes()).await.unwrap();
                    let _ = tcp.shutdown().await;
                });
            }
        });
        let ws_seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                let (ws_base, seen) = (ws_base.clone(), Arc::clone(&ws_seen));
                tokio::spawn(async move { echo_stream(tcp, &ws_base, &seen).await });
            }
        });
        (http_base, seen)
    }

    #[allow(clippy::result_large_err, reason = "the handshake callback's signature is tungstenite's")]
    async fn echo_stream(tcp: tokio::net::TcpStream, ws_base: &str, seen: &Mutex<Seen>) {
        let mut signature = None;
        let mut path = String::new();
        let ws = tokio_tungstenite::accept_hdr_async(tcp, |request: &Request, response: WsResponse| {
            signature =
                request.headers().get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            path = request.uri().path().to_owned();
            Ok(response)
        })
        .await
        .unwrap();
        let validator = SignatureValidator::new(TOKEN, ws_base).unwrap();
        if validator.validate_websocket(&path, signature.as_deref()).is_ok() {
            seen.lock().unwrap().ws_signatures_ok += 1;
        }
        let (mut sink, mut stream) = ws.split();
        let mut audio = [0u8; 1024];
        let mut out = Vec::new();
        let mut sid = None::<StreamSid>;
        let mut media = 0;
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else { continue };
            let mut frame = text.as_bytes().to_vec();
            match media_stream::parse_inbound(&mut frame, &mut audio).unwrap() {
                Inbound::Start(start) => {
                    seen.lock()
                        .unwrap()
                        .custom_parameter
                        .push(start.custom_parameter("From").unwrap().to_owned());
                    sid = Some(start.stream_sid);
                }
                Inbound::Media(m) => {
                    let sid = sid.expect("start before media");
                    media_stream::write_media(&mut out, &sid, &audio[..m.payload_len]);
                    sink.send(Message::text(String::from_utf8(out.clone()).unwrap())).await.unwrap();
                    media += 1;
                    if media == 5 {
                        media_stream::write_mark(&mut out, &sid, "after-5");
                        sink.send(Message::text(String::from_utf8(out.clone()).unwrap())).await.unwrap();
                    }
                }
                Inbound::Dtmf(d) => seen.lock().unwrap().dtmf.push(d.digit),
                Inbound::Mark(mark) => seen.lock().unwrap().mark_echoes.push(mark.name.to_owned()),
                Inbound::Stop(_) => seen.lock().unwrap().stops += 1,
                _ => {}
            }
        }
    }

    fn config(url: String, calls: u32) -> SimConfig {
        SimConfig {
            calls,
            media: Duration::from_secs(1),
            ramp: 100.0,
            dtmf: "1#".into(),
            auth_token: Some(TOKEN.into()),
            grace: Duration::from_secs(1),
            ..SimConfig::new(url)
        }
    }

    async fn bounded<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("test took over 10 s")
    }

    #[tokio::test]
    async fn two_calls_against_an_echoing_server_lose_nothing() {
        bounded(async {
            let (url, seen) = fake_server(Answer::Stream).await;
            let report = run(config(url, 2)).await.unwrap();
            assert_eq!((report.calls.completed, report.calls.failed), (2, 0), "{report:?}");
            // 1 s of media per call: 50 frames each, every one back once.
            assert_eq!(report.frames.sent, 100);
            assert_eq!(report.frames.received, 100);
            assert_eq!(report.frames.missing + report.frames.duplicates + report.frames.misrouted, 0);
            assert_eq!(report.frames.unidentified, 0);
            let latency = report.latency_us.unwrap();
            assert_eq!(latency.count, 100);
            assert!(latency.max < 10_000_000);
            // Every frame's pacing is recorded, and within the 10 s bound.
            let lateness = report.send_lateness_us.unwrap();
            assert_eq!(lateness.count, 100);
            assert!(lateness.max < 10_000_000);
            // The timeline accounts for every frame, second by second in order.
            let t = &report.timeline;
            assert!(t.windows(2).all(|w| w[1].second == w[0].second + 1), "{t:?}");
            assert_eq!(
                t.iter().map(|s| (s.sent, s.frames)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
                (100, 100)
            );
            assert!(t.iter().all(|s| s.max_us <= latency.max + latency.max / 50), "{t:?}");
            assert_eq!(report.playback.media_bytes, 100 * 160);
            assert_eq!(report.playback.marks_echoed, 2);
            assert_eq!(report.dtmf_sent, 4);
            assert_eq!(report.per_call.len(), 2);
            assert!(report.per_call.iter().all(|c| c.latency_us.is_some() && c.setup_us.is_some()));
            let seen = seen.lock().unwrap();
            assert_eq!((seen.webhook_signatures_ok, seen.ws_signatures_ok, seen.stops), (2, 2, 2));
            let mut from = seen.custom_parameter.clone();
            from.sort();
            assert_eq!(from, ["+14155550000", "+14155550001"]);
            assert_eq!(seen.dtmf, ['1', '1', '#', '#']);
            assert_eq!(seen.mark_echoes, ["after-5", "after-5"]);
        })
        .await;
    }

    #[tokio::test]
    async fn failed_calls_are_reported_by_reason() {
        bounded(async {
            let (url, _) = fake_server(Answer::Reject).await;
            let report = run(config(url, 1)).await.unwrap();
            assert_eq!(report.calls.failures.get("TwiML has no <Stream> (<Reject>)"), Some(&1), "{report:?}");
            assert_eq!(report.calls.connected, 0);

            let (url, _) = fake_server(Answer::Forbidden).await;
            let report = run(config(url, 1)).await.unwrap();
            assert_eq!(report.calls.failures.get("voice webhook answered HTTP 403"), Some(&1), "{report:?}");

            // Nothing listens on port 9 of loopback.
            let report = run(config("http://127.0.0.1:9".into(), 1)).await.unwrap();
            assert_eq!(report.calls.failed, 1);
            assert!(report.calls.failures.keys().all(|k| k.starts_with("cannot connect")), "{report:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_single_call_can_be_scripted() {
        bounded(async {
            let (url, seen) = fake_server(Answer::Stream).await;
            let mut call = TwilioCall::dial(&url, Some(TOKEN), CallParams::random()).await.unwrap();
            assert!(call.answer().bidirectional);
            assert!(call.answer().stream.parameter_value("From").is_some());
            call.send_media(&[0x12; 160]).await.unwrap();
            let back = call.next_message(Duration::from_secs(5)).await.unwrap();
            assert_eq!(back, Some(ServerMessage::Media(vec![0x12; 160])));
            call.send_mark_echo("scripted").await.unwrap();
            call.stop().await.unwrap();
            let seen = seen.lock().unwrap();
            assert_eq!(seen.mark_echoes, ["scripted"]);
            assert_eq!(seen.stops, 1);
        })
        .await;
    }

    #[test]
    fn invalid_settings_are_refused() {
        let ok = SimConfig::new("http://127.0.0.1:1");
        assert!(ok.validate().is_ok());
        for bad in [
            SimConfig { calls: 0, ..ok.clone() },
            SimConfig { calls: MAX_CALLS + 1, ..ok.clone() },
            SimConfig { media: Duration::ZERO, ..ok.clone() },
            SimConfig { ramp: 0.0, ..ok.clone() },
            SimConfig { ramp: f64::NAN, ..ok.clone() },
            SimConfig { dtmf: "12x".into(), ..ok.clone() },
            SimConfig { url: "https://example.com".into(), ..ok },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_blocking_runs_its_own_runtimes() {
        // Nothing listens: the call fails fast, and the report says why.
        let report =
            run_blocking(SimConfig { workers: 2, ..config("http://127.0.0.1:9".into(), 2) }).unwrap();
        assert_eq!((report.calls.attempted, report.calls.failed), (2, 2));
    }

    #[test]
    fn calls_started_at_round_intervals_send_out_of_step() {
        // 1,000 calls at 100 a second: without the offsets every call would
        // start 0 or 10 ms into a frame of the first one.
        let frame = call::FRAME.as_micros();
        let mut bins = [0u32; 20];
        for index in 0..1_000u32 {
            let offset = start_offset(index, 100.0);
            let plain = Duration::from_millis(10 * u64::from(index));
            assert!(offset >= plain && offset < plain + call::FRAME, "call {index} starts at {offset:?}");
            bins[(offset.as_micros() % frame * 20 / frame) as usize] += 1;
        }
        // Every millisecond of the frame holds its share, give or take 10 %.
        assert!(bins.iter().all(|&n| (45..=55).contains(&n)), "calls per millisecond of the frame: {bins:?}");
        assert_eq!(start_offset(0, 100.0), Duration::ZERO);
    }
}
