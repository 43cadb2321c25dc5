//! The WebSocket leg: `voxproxy serve --backend ws://…` in front of a bot
//! server in the test, on both of the bot's protocols (`twilio` and `l16`
//! at 8, 16 and 24 kHz): audio both ways, marks and notifies echoed after
//! playout, the bot's `clear`, DTMF, who ends the call, the bot down at
//! call start, a bot sending ten times faster than real time, a recorded
//! bot call, and the drain timeout ending a bot call.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use voxproxy_core::g711;

use crate::audio::{FRAME, all_codes_frames};
use crate::harness::{ADMIN_TOKEN, FromProxy, Io, Proxy, TwilioCall, WAIT, free_tcp_port, sid};

both_io!(
    twilio_bot_gets_the_call_and_audio_both_ways_bit_exact,
    l16_bot_hears_and_speaks_at_each_rate,
    the_bot_closing_ends_the_call,
    the_bot_down_at_call_start_gives_the_fallback,
    a_bot_sending_ten_times_real_time_stays_bounded,
    a_recorded_bot_call_holds_the_caller_and_the_bot_as_heard,
    the_drain_timeout_ends_a_bot_call
);

/// A bot server on loopback; each accepted WebSocket arrives on `calls`
/// with the request's path and query.
pub(crate) struct BotServer {
    addr: SocketAddr,
    calls: mpsc::UnboundedReceiver<(String, BotConn)>,
}

impl BotServer {
    pub(crate) async fn bind() -> BotServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the bot");
        let addr = listener.local_addr().expect("bot address");
        let (tx, calls) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut path = String::new();
                    // tungstenite's callback type: its error is an HTTP response.
                    #[allow(clippy::result_large_err)]
                    let callback = |request: &Request, response: Response| {
                        path = request.uri().to_string();
                        Ok(response)
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await {
                        let _ = tx.send((path, BotConn { ws }));
                    }
                });
            }
        });
        BotServer { addr, calls }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub(crate) async fn accept(&mut self) -> (String, BotConn) {
        tokio::time::timeout(WAIT, self.calls.recv())
            .await
            .expect("the proxy dials the bot")
            .expect("bot server")
    }
}

/// One call as the bot sees it.
pub(crate) struct BotConn {
    ws: WebSocketStream<TcpStream>,
}

/// What the bot got.
#[derive(Debug)]
pub(crate) enum Got {
    Text(Value),
    Binary(Vec<u8>),
    Closed,
}

impl BotConn {
    pub(crate) async fn next(&mut self) -> Got {
        loop {
            let message =
                tokio::time::timeout(WAIT, self.ws.next()).await.expect("a message for the bot in time");
            match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Got::Closed,
                Some(Ok(Message::Text(text))) => {
                    return Got::Text(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")));
                }
                Some(Ok(Message::Binary(data))) => return Got::Binary(data.to_vec()),
                Some(Ok(_)) => {}
            }
        }
    }

    async fn text(&mut self) -> Value {
        match self.next().await {
            Got::Text(value) => value,
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// The next text whose `event` is `event`, skipping media.
    pub(crate) async fn event(&mut self, event: &str) -> Value {
        loop {
            match self.next().await {
                Got::Text(value) if value["event"] == event => return value,
                Got::Text(_) | Got::Binary(_) => {}
                Got::Closed => panic!("the bot's WebSocket closed before `{event}`"),
            }
        }
    }

    async fn send(&mut self, message: Message) {
        tokio::time::timeout(WAIT, self.ws.send(message)).await.expect("bot send in time").expect("bot send");
    }

    pub(crate) async fn send_json(&mut self, value: Value) {
        self.send(Message::Text(value.to_string().into())).await;
    }

    pub(crate) async fn send_media(&mut self, stream_sid: &str, mulaw: &[u8]) {
        self.send_json(
            json!({"event": "media", "streamSid": stream_sid, "media": {"payload": BASE64.encode(mulaw)}}),
        )
        .await;
    }
}

fn start_proxy(io: Io, bot_url: &str, env: &[(&str, &str)]) -> Proxy {
    let mut all = vec![("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)];
    all.extend_from_slice(env);
    Proxy::start(io, &all, &["--backend", bot_url])
}

/// Caller frames at the real rate (the proxy's VAD and timers see a real call).
async fn send_frames(call: &mut TwilioCall, frames: &[Vec<u8>]) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for frame in frames {
        tick.tick().await;
        call.send_media(frame).await;
    }
}

async fn twilio_bot_gets_the_call_and_audio_both_ways_bit_exact(io: Io) {
    let mut bot = BotServer::bind().await;
    let proxy = start_proxy(io, &bot.url("/agent?tenant=acme"), &[("VOXPROXY_WS_BARGE_IN", "false")]);
    let mut call = TwilioCall::start(&proxy).await;
    let (path, mut conn) = bot.accept().await;
    assert_eq!(path, "/agent?tenant=acme", "the URL's query reaches the bot");
    assert_eq!(conn.text().await["event"], "connected");
    let start = conn.text().await;
    assert_eq!(start["event"], "start");
    assert_eq!(start["start"]["callSid"], call.call_sid.as_str());
    assert_eq!(start["start"]["streamSid"], call.stream_sid.as_str());
    assert_eq!(start["start"]["customParameters"]["From"], "+15550001111", "{start}");
    assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
    let stream_sid = call.stream_sid.clone();

    // Caller → bot, bit-exact, with Twilio's counters.
    let frames = all_codes_frames(25);
    send_frames(&mut call, &frames).await;
    let mut heard = Vec::new();
    for n in 0..frames.len() {
        let media = conn.event("media").await;
        assert_eq!(media["media"]["chunk"], (n + 1).to_string(), "{media}");
        assert_eq!(media["media"]["timestamp"], (n * 20).to_string(), "{media}");
        heard.extend(BASE64.decode(media["media"]["payload"].as_str().expect("payload")).expect("base64"));
    }
    assert_eq!(heard, frames.concat(), "caller audio reaches the bot bit-exact");

    // Bot → caller, bit-exact, then its mark once Twilio has played it.
    let answer = all_codes_frames(40).concat();
    for chunk in answer.chunks(800) {
        conn.send_media(&stream_sid, chunk).await;
    }
    conn.send_json(json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": "greeting"}})).await;
    let played = call.collect_media(answer.len(), WAIT).await;
    assert_eq!(played, answer, "bot audio reaches Twilio bit-exact");
    let mark = match call.next(WAIT).await {
        Some(FromProxy::Mark(name)) => name,
        other => panic!("expected the bot's mark, got {other:?}"),
    };
    assert!(mark.starts_with("vb-"), "{mark}");
    call.send_mark(&mark).await;
    let echo = conn.event("mark").await;
    assert_eq!(echo["mark"]["name"], "greeting", "{echo}");

    // DTMF.
    call.send_dtmf('7').await;
    assert_eq!(conn.event("dtmf").await["dtmf"]["digit"], "7");

    // The bot's clear reaches Twilio and the rest of its queue is dropped.
    for chunk in all_codes_frames(100).concat().chunks(1600) {
        conn.send_media(&stream_sid, chunk).await;
    }
    conn.send_json(json!({"event": "clear", "streamSid": stream_sid})).await;
    let mut before_clear = 0;
    loop {
        match call.next(WAIT).await {
            Some(FromProxy::Media(payload)) => before_clear += payload.len(),
            Some(FromProxy::Clear) => break,
            other => panic!("expected media then clear, got {other:?}"),
        }
    }
    assert!(before_clear < 100 * FRAME, "{before_clear} bytes before the clear: the queue was cleared");
    assert!(call.next(Duration::from_millis(300)).await.is_none(), "nothing plays after the clear");

    // The session shows the leg while the call is up.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let session = proxy.admin("GET", &format!("/v1/sessions/{stream_sid}"), Vec::new()).await.json();
        if session["leg"]["kind"] == "ws" && session["bot"]["messages_in"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(session["bot"]["protocol"], "twilio", "{session}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "session: {session}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Twilio's stop reaches the bot, then the bot's socket closes.
    call.send_stop().await;
    assert_eq!(conn.event("stop").await["stop"]["callSid"], call.call_sid.as_str());
    assert!(matches!(conn.next().await, Got::Closed));
    let record = proxy.wait_record(&stream_sid).await;
    assert_eq!(record["leg"], "ws", "{record}");
    assert_eq!(record["end_reason"], "twilio_stop", "{record}");
    assert_eq!(record["bot"]["ended_by"], "twilio", "{record}");
    assert_eq!(record["bot"]["protocol"], "twilio", "{record}");
    assert_eq!(record["bot"]["bot_clears"], 1, "{record}");
    assert_eq!(record["bot"]["marks_played"], 1, "{record}");
    assert_eq!(record["bot"]["bad_messages"], 0, "{record}");
    let metrics = proxy.metrics().await;
    assert!(metrics.get("voxproxy_bot_messages_total{direction=\"in\"}") >= 10.0);
    assert!(metrics.get("voxproxy_bot_messages_total{direction=\"out\"}") >= 27.0);
}

fn tone(hz: f64, rate: f64, n: usize, amplitude: f64) -> Vec<f64> {
    (0..n).map(|i| amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / rate).sin()).collect()
}

/// Best normalised cross-correlation of `got` against `want` over lags 0..max_lag.
fn best_correlation(want: &[f64], got: &[f64], max_lag: usize) -> f64 {
    (0..max_lag)
        .map(|lag| {
            let n = want.len().min(got.len().saturating_sub(lag));
            let (a, b) = (&want[..n], &got[lag..lag + n]);
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
            dot / (na * nb).max(f64::MIN_POSITIVE)
        })
        .fold(f64::MIN, f64::max)
}

async fn l16_bot_hears_and_speaks_at_each_rate(io: Io) {
    for rate in [8000u32, 16000, 24000] {
        let hz = f64::from(rate);
        let mut bot = BotServer::bind().await;
        let rate_text = rate.to_string();
        let proxy = start_proxy(
            io,
            &bot.url("/l16"),
            &[("VOXPROXY_WS_PROTOCOL", "l16"), ("VOXPROXY_WS_SAMPLE_RATE", &rate_text)],
        );
        let mut call = TwilioCall::start(&proxy).await;
        let (_, mut conn) = bot.accept().await;
        let connected = conn.text().await;
        assert_eq!(connected["event"], "websocket:connected", "{connected}");
        assert_eq!(connected["content-type"], format!("audio/l16;rate={rate}"), "{connected}");

        // Caller → bot: a 1 kHz tone for 1 s, as 20 ms binary frames at the rate.
        let caller: Vec<u8> =
            tone(1000.0, 8000.0, 8000, 8000.0).iter().map(|&s| g711::ulaw_encode(s as i16)).collect();
        let frames: Vec<Vec<u8>> = caller.chunks(FRAME).map(<[u8]>::to_vec).collect();
        send_frames(&mut call, &frames).await;
        let frame_bytes = rate as usize / 50 * 2;
        let mut pcm = Vec::new();
        while pcm.len() < (frames.len() - 1) * frame_bytes / 2 {
            match conn.next().await {
                Got::Binary(data) => {
                    assert_eq!(data.len(), frame_bytes, "20 ms frames at {rate} Hz");
                    pcm.extend(data.chunks_exact(2).map(|b| f64::from(i16::from_le_bytes([b[0], b[1]]))));
                }
                Got::Text(value) => panic!("unexpected text {value}"),
                Got::Closed => panic!("closed"),
            }
        }
        let want = tone(1000.0, hz, pcm.len() - 200, 1.0);
        let c = best_correlation(&want, &pcm, 100);
        eprintln!("{rate} Hz: caller → bot correlation {c:.5}");
        assert!(c >= 0.99, "{rate} Hz: caller → bot correlation {c}");

        // DTMF.
        call.send_dtmf('5').await;
        assert_eq!(conn.event("websocket:dtmf").await["digit"], "5");

        // Bot → caller: 1 s of a 700 Hz tone in odd-sized messages, then a notify.
        let answer: Vec<u8> =
            tone(700.0, hz, rate as usize, 8000.0).iter().flat_map(|&s| (s as i16).to_le_bytes()).collect();
        for part in answer.chunks(1234) {
            conn.send(Message::Binary(part.to_vec().into())).await;
        }
        conn.send_json(json!({"action": "notify", "payload": {"said": "hello"}})).await;
        let played = call.collect_media(7800, WAIT).await;
        let played: Vec<f64> = played.iter().map(|&b| f64::from(g711::ulaw_decode(b))).collect();
        let c = best_correlation(&tone(700.0, 8000.0, 7600, 1.0), &played, 100);
        eprintln!("{rate} Hz: bot → caller correlation {c:.5}");
        assert!(c >= 0.99, "{rate} Hz: bot → caller correlation {c}");
        let mark = loop {
            match call.next(WAIT).await {
                Some(FromProxy::Mark(name)) => break name,
                Some(FromProxy::Media(_)) => {}
                other => panic!("expected the notify's mark, got {other:?}"),
            }
        };
        call.send_mark(&mark).await;
        let notify = conn.event("websocket:notify").await;
        assert_eq!(notify["payload"]["said"], "hello", "{notify}");

        // The bot's clear: answered, and Twilio cleared.
        for part in answer.chunks(4000) {
            conn.send(Message::Binary(part.to_vec().into())).await;
        }
        conn.send_json(json!({"action": "clear"})).await;
        conn.event("websocket:cleared").await;
        loop {
            match call.next(WAIT).await {
                Some(FromProxy::Clear) => break,
                Some(FromProxy::Media(_)) => {}
                other => panic!("expected a clear, got {other:?}"),
            }
        }
        call.send_stop().await;
        let record = proxy.wait_record(&call.stream_sid).await;
        assert_eq!(record["bot"]["protocol"], format!("l16-{rate}"), "{record}");
        assert_eq!(record["bot"]["bad_messages"], 0, "{record}");
    }
}

async fn the_bot_closing_ends_the_call(io: Io) {
    let mut bot = BotServer::bind().await;
    let proxy = start_proxy(io, &bot.url("/bye"), &[]);
    let mut call = TwilioCall::start(&proxy).await;
    let (_, mut conn) = bot.accept().await;
    conn.event("start").await;
    conn.ws.close(None).await.expect("bot closes");
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "backend_hangup", "{record}");
    assert_eq!(record["bot"]["ended_by"], "bot", "{record}");
    proxy.wait_metric("voxproxy_calls_ended_total{reason=\"backend_hangup\"}", 1.0).await;
}

async fn the_drain_timeout_ends_a_bot_call(io: Io) {
    let mut bot = BotServer::bind().await;
    let mut proxy = start_proxy(io, &bot.url("/drain"), &[("VOXPROXY_DRAIN_TIMEOUT", "1s")]);
    let mut call = TwilioCall::start(&proxy).await;
    let (_, mut conn) = bot.accept().await;
    conn.event("start").await;
    proxy.signal("TERM");
    assert_eq!(
        call.wait_closed(Duration::from_secs(8)).await,
        Some(1001),
        "drain.timeout ends the call with 1001"
    );
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "drain", "{record}");
    let status = proxy.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "voxproxy exits 0 after draining, got {status}");
    drop(conn);
}

async fn the_bot_down_at_call_start_gives_the_fallback(io: Io) {
    // Nothing listens there.
    let down = format!("ws://127.0.0.1:{}/agent", free_tcp_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("voxproxy.toml");
    std::fs::write(
        &path,
        format!("[[routes]]\nto = \"*\"\nbackend = \"{down}\"\nfallback = \"Sorry, the assistant is unavailable.\"\n"),
    )
    .expect("config");
    let proxy = Proxy::start(io, &[], &["--config", path.to_str().expect("UTF-8")]);
    let call_sid = sid("CA");
    let answer = proxy.webhook(&call_sid).await.twiml();
    // Twilio reports the call in progress (the route asks for status callbacks).
    post_signed(&proxy, "/twilio/status", &call_sid, "in-progress", 204).await;
    let mut call = TwilioCall::follow(&proxy, call_sid.clone(), &answer).await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1011), "a failed leg");
    assert_eq!(proxy.wait_metric("voxproxy_bot_connect_failures_total", 1.0).await, 1.0);
    // Twilio goes on with the <Connect action>: the route's fallback.
    let response = post_signed(&proxy, "/twilio/stream-ended", &call_sid, "in-progress", 200).await;
    assert!(response.contains("<Say>Sorry, the assistant is unavailable.</Say>"), "{response}");
    post_signed(&proxy, "/twilio/status", &call_sid, "completed", 204).await;
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "backend_failed", "{record}");
    assert_eq!(record["leg"], "ws", "{record}");
    assert_eq!(record["bot"]["connect_ms"], Value::Null, "{record}");
}

/// A signed Twilio callback for `call_sid` with `CallStatus`; its body.
async fn post_signed(proxy: &Proxy, path: &str, call_sid: &str, status: &str, expect: u16) -> String {
    let mut form = crate::harness::voice_params(call_sid);
    form.retain(|(k, _)| *k != "CallStatus");
    form.push(("CallStatus", status));
    let signature = proxy.signer().sign_form(path, &form).expect("sign");
    let response = proxy.post_form(path, &form, Some(&signature)).await;
    assert_eq!(response.status, expect, "{path}: {}", response.text());
    response.text()
}

async fn a_bot_sending_ten_times_real_time_stays_bounded(io: Io) {
    let mut bot = BotServer::bind().await;
    let proxy = start_proxy(io, &bot.url("/burst"), &[("VOXPROXY_WS_MAX_QUEUED_MS", "1000")]);
    let mut call = TwilioCall::start(&proxy).await;
    let (_, mut conn) = bot.accept().await;
    conn.event("start").await;
    // 4 s of audio in 0.4 s, 20 ms per message.
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for frame in all_codes_frames(200) {
        tick.tick().await;
        conn.send_media(&call.stream_sid, &frame).await;
    }
    let sent_in = started.elapsed();
    // Twilio gets what the queue held plus what played meanwhile; the rest
    // was dropped and counted.
    let mut received = 0;
    while let Some(FromProxy::Media(payload)) = call.next(Duration::from_millis(500)).await {
        received += payload.len();
    }
    let elapsed_ms = started.elapsed().as_millis() as usize;
    assert!(
        received <= (1000 + 200 + elapsed_ms) * 8,
        "{received} bytes in {elapsed_ms} ms (sent in {sent_in:?})"
    );
    let dropped = proxy.wait_metric("voxproxy_bot_audio_dropped_bytes_total", 1.0).await;
    assert!(dropped >= 16_000.0, "only {dropped} bytes dropped of 4 s sent in {sent_in:?}");
    assert_eq!(received + dropped as usize, 200 * FRAME, "every byte played or counted");
    call.send_stop().await;
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["bot"]["bot_audio_dropped_bytes"].as_f64(), Some(dropped), "{record}");
}

async fn a_recorded_bot_call_holds_the_caller_and_the_bot_as_heard(io: Io) {
    let mut bot = BotServer::bind().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_text = dir.path().to_string_lossy().into_owned();
    let env = [
        ("VOXPROXY_WS_BARGE_IN", "false"),
        ("VOXPROXY_RECORDING_ENABLED", "true"),
        ("VOXPROXY_RECORDING_DIR", dir_text.as_str()),
    ];
    let proxy = start_proxy(io, &bot.url("/agent"), &env);
    let mut call = TwilioCall::start(&proxy).await;
    let (_, mut conn) = bot.accept().await;
    let _ = conn.event("start").await;
    let stream_sid = call.stream_sid.clone();

    // The bot greets (1 s of a two-tone prompt), the caller speaks for 2 s.
    let greeting = crate::audio::encode(&crate::audio::tones(&[440.0, 660.0], 6000.0, 8000.0, 8000));
    for chunk in greeting.chunks(800) {
        conn.send_media(&stream_sid, chunk).await;
    }
    let said = crate::audio::caller_speech(0.3, 2.0);
    let frames: Vec<Vec<u8>> = said.chunks(FRAME).map(<[u8]>::to_vec).collect();
    send_frames(&mut call, &frames).await;
    let heard = call.collect_media(greeting.len(), WAIT).await;
    assert_eq!(heard, greeting, "the greeting reached Twilio whole");
    call.send_stop().await;
    let record = proxy.wait_record(&stream_sid).await;
    assert_eq!(record["leg"], "ws", "{record}");
    let file = record["recording_file"].as_str().unwrap_or_else(|| panic!("no recording_file: {record}"));
    assert!(std::path::Path::new(file).starts_with(dir.path()), "{file} is in recording.dir");

    let bytes = std::fs::read(file).expect("the recording exists");
    let parsed = voxproxy_adapters::wav::parse(&bytes).expect("a WAV");
    assert_eq!(parsed.format.to_string(), "8000 Hz stereo PCM16");
    assert!(!parsed.truncated, "the header covers the whole file");
    let samples = parsed.decode().expect("PCM16");
    let caller: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let channel2: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    // Channel 1 holds the caller from its first frame on; the bot spoke
    // first, so the timeline starts before it: silence until then.
    // Where the caller starts: the best match of its first 0.2 s within
    // the timeline's first 0.2 s (the greeting went out just before the
    // caller's first frame, whose whole 20 ms were lost there before the
    // tap left room for it).
    let said_pcm = crate::audio::decode(&said);
    let offset = (0..1600usize)
        .max_by(|&a, &b| {
            let at = |lag| crate::audio::correlation(&said_pcm[..1600], &caller, lag as isize);
            at(a).total_cmp(&at(b))
        })
        .expect("lags");
    let corr = crate::audio::correlation(&said_pcm, &caller[offset..], 0);
    eprintln!("bot call, caller channel: correlation {corr:.5} from sample {offset}");
    assert!(corr >= 0.99, "channel 1 correlates {corr} with what the caller said, frames back to back");
    // Channel 2 is the greeting, when it played, silence elsewhere.
    let voiced: Vec<i16> = channel2.iter().copied().filter(|&s| s != 0).collect();
    let greeting_pcm: Vec<i16> = crate::audio::decode(&greeting).into_iter().filter(|&s| s != 0).collect();
    let (lag2, corr2) = crate::audio::align(&greeting_pcm, &voiced, 40);
    eprintln!("bot call, heard channel: correlation {corr2:.5} at lag {lag2}");
    assert!(corr2 >= 0.99, "channel 2 correlates {corr2} with the greeting Twilio received");
    assert!(voiced.len().abs_diff(greeting_pcm.len()) < FRAME, "{} vs {}", voiced.len(), greeting_pcm.len());
}
