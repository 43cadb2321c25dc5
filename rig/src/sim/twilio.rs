//! One simulated Twilio call against any Media Streams server, as Twilio
//! would place it:
//!
//! 1. `POST {url}/twilio/voice` with the voice webhook's form fields, signed
//!    with `X-Twilio-Signature` over that URL when an auth token is given;
//! 2. the TwiML answer is parsed and its `<Connect><Stream>` (or
//!    `<Start><Stream>`) followed — anything else fails the call;
//! 3. the WebSocket to the stream URL is opened with the handshake signed
//!    over that URL (`ws://` only: the simulator does not speak TLS);
//! 4. `connected` and `start` (with the TwiML's `<Parameter>`s as
//!    `customParameters`) are sent.
//!
//! [`TwilioCall::dial`] does all four; then `send_media`, `send_dtmf`,
//! `send_mark_echo`, `next_message` and `stop` drive the stream. Messages
//! are written exactly as Twilio writes them ([`TwilioFrames`]): the
//! `sequenceNumber` rises by one per message from `start` on, `media.chunk`
//! from 1, `media.timestamp` is milliseconds of audio sent so far.
//! [`TwilioCall::into_split`] gives separate sending and receiving halves,
//! for callers that read and write concurrently (the load generator).
//!
//! ```no_run
//! use std::time::Duration;
//! use voxproxy_rig::sim::twilio::{CallParams, ServerMessage, TwilioCall};
//!
//! # async fn demo() -> Result<(), voxproxy_rig::sim::SimError> {
//! let token = std::env::var("TWILIO_AUTH_TOKEN").ok();
//! let mut call = TwilioCall::dial("http://127.0.0.1:8080", token.as_deref(), CallParams::random()).await?;
//! call.send_media(&[0xff; 160]).await?;
//! if let Some(ServerMessage::Media(audio)) = call.next_message(Duration::from_secs(1)).await? {
//!     println!("{} bytes back", audio.len());
//! }
//! call.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::Uri;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use voxproxy_adapters::form::Form;
use voxproxy_adapters::media_stream::{
    self, AccountSid, CallSid, Connected, Dtmf, Media, MediaFormat, Outbound, Start, Stop, StreamSid, Track,
    Tracks,
};
use voxproxy_adapters::signature::{SIGNATURE_HEADER, SignatureValidator};
use voxproxy_adapters::twiml::{MediaNoun, Response, Stream, Verb};

use super::SimError;
use super::stamped::{Arrival, StampedTcp};

/// Path of the voice webhook under the server's URL.
pub const VOICE_PATH: &str = "/twilio/voice";

/// Longest TwiML answer read (Twilio's own limit is 64 KB).
pub const MAX_TWIML_BYTES: usize = 64 * 1024;

/// Longest WebSocket message accepted from the server.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How long the webhook may take (Twilio's default timeout is 15 s).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the WebSocket connection and handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`TwilioCall::stop`] waits for the server to close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// μ-law bytes per millisecond at 8 kHz.
const BYTES_PER_MS: u64 = 8;

/// The caller and call a simulated call claims to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallParams {
    /// `AccountSid`.
    pub account_sid: AccountSid,
    /// `CallSid`.
    pub call_sid: CallSid,
    /// The `streamSid` the stream will have.
    pub stream_sid: StreamSid,
    /// `From` (and `Caller`).
    pub from: String,
    /// `To` (and `Called`).
    pub to: String,
    /// Further form fields appended to the webhook body.
    pub extra: Vec<(String, String)>,
}

impl CallParams {
    /// Fresh random SIDs (32 random hex digits each, as Twilio's), from
    /// +14155550199 to +14155550100. The account SID is `TWILIO_ACCOUNT_SID`
    /// when that is set to a valid SID.
    #[must_use]
    pub fn random() -> Self {
        let account = std::env::var("TWILIO_ACCOUNT_SID")
            .ok()
            .and_then(|sid| AccountSid::new(&sid).ok())
            .unwrap_or_else(|| random_sid(AccountSid::new, AccountSid::PREFIX));
        CallParams {
            account_sid: account,
            call_sid: random_sid(CallSid::new, CallSid::PREFIX),
            stream_sid: random_sid(StreamSid::new, StreamSid::PREFIX),
            from: "+14155550199".to_owned(),
            to: "+14155550100".to_owned(),
            extra: Vec::new(),
        }
    }

    /// The voice webhook's form, as Twilio fills it for an inbound call.
    #[must_use]
    pub fn webhook_form(&self) -> Form {
        let mut form = Form::new();
        let place = [("City", "SAN FRANCISCO"), ("State", "CA"), ("Zip", "94105"), ("Country", "US")];
        form.push("AccountSid", self.account_sid.as_str());
        form.push("ApiVersion", "2010-04-01");
        form.push("CallSid", self.call_sid.as_str());
        form.push("CallStatus", "ringing");
        form.push("Called", self.to.as_str());
        for (field, value) in place {
            form.push(format!("Called{field}"), value);
        }
        form.push("Caller", self.from.as_str());
        for (field, value) in place {
            form.push(format!("Caller{field}"), value);
        }
        form.push("Direction", "inbound");
        form.push("From", self.from.as_str());
        for (field, value) in place {
            form.push(format!("From{field}"), value);
        }
        form.push("To", self.to.as_str());
        for (field, value) in place {
            form.push(format!("To{field}"), value);
        }
        for (name, value) in &self.extra {
            form.push(name.as_str(), value.as_str());
        }
        form
    }
}

/// A prefix and 32 random lower-case hex digits.
fn random_sid<T, E>(make: impl Fn(&str) -> Result<T, E>, prefix: &str) -> T {
    let mut bytes = [0u8; 16];
    // Without OS randomness, fall back to the clock: SIDs need to be
    // unique within a run, not secret.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    let mut text = String::with_capacity(34);
    text.push_str(prefix);
    for b in bytes {
        text.push_str(&format!("{b:02x}"));
    }
    match make(&text) {
        Ok(sid) => sid,
        // A prefix and hex digits always make a valid SID.
        Err(_) => unreachable!("{text} is a valid SID"),
    }
}

/// Writes the messages Twilio sends on one stream, each into one reused
/// buffer, keeping Twilio's counters.
#[derive(Clone, Debug)]
pub struct TwilioFrames {
    stream_sid: StreamSid,
    account_sid: AccountSid,
    call_sid: CallSid,
    next_sequence: u64,
    next_chunk: u64,
    out: Vec<u8>,
}

impl TwilioFrames {
    /// A writer for the stream `params` describe.
    #[must_use]
    pub fn new(params: &CallParams) -> Self {
        TwilioFrames {
            stream_sid: params.stream_sid,
            account_sid: params.account_sid,
            call_sid: params.call_sid,
            next_sequence: 1,
            next_chunk: 1,
            out: Vec::with_capacity(512),
        }
    }

    /// The stream's SID.
    #[must_use]
    pub fn stream_sid(&self) -> &StreamSid {
        &self.stream_sid
    }

    fn sequence(&mut self) -> u64 {
        let n = self.next_sequence;
        self.next_sequence += 1;
        n
    }

    /// `connected` (no sequence number, as Twilio sends it).
    pub fn connected(&mut self) -> &[u8] {
        media_stream::write_connected(
            &mut self.out,
            &Connected { protocol: Some("Call"), version: Some("1.0.0") },
        );
        &self.out
    }

    /// `start`, inbound track only, μ-law 8 kHz mono, with `custom_parameters`.
    pub fn start(&mut self, custom_parameters: Vec<(String, String)>) -> &[u8] {
        let start = Start {
            sequence_number: self.sequence(),
            stream_sid: self.stream_sid,
            account_sid: self.account_sid,
            call_sid: self.call_sid,
            tracks: Tracks { inbound: true, outbound: false },
            media_format: MediaFormat::mulaw_8k_mono(),
            custom_parameters,
        };
        media_stream::write_start(&mut self.out, &start);
        &self.out
    }

    /// `media` of the inbound track carrying `payload` (raw μ-law),
    /// `timestamp_ms` after the stream started.
    pub fn media(&mut self, timestamp_ms: u64, payload: &[u8]) -> &[u8] {
        let media = Media {
            sequence_number: self.sequence(),
            stream_sid: self.stream_sid,
            track: Track::Inbound,
            chunk: self.next_chunk,
            timestamp_ms,
            payload_len: payload.len(),
        };
        self.next_chunk += 1;
        media_stream::write_inbound_media(&mut self.out, &media, payload);
        &self.out
    }

    /// `dtmf` for `digit`.
    pub fn dtmf(&mut self, digit: char) -> &[u8] {
        let dtmf = Dtmf {
            sequence_number: self.sequence(),
            stream_sid: self.stream_sid,
            track: Track::Inbound,
            digit,
        };
        media_stream::write_dtmf(&mut self.out, &dtmf);
        &self.out
    }

    /// `mark` named `name`: the server's mark has played.
    pub fn mark(&mut self, name: &str) -> &[u8] {
        let mark = media_stream::Mark { sequence_number: self.sequence(), stream_sid: self.stream_sid, name };
        media_stream::write_inbound_mark(&mut self.out, &mark);
        &self.out
    }

    /// `stop`.
    pub fn stop(&mut self) -> &[u8] {
        let stop = Stop {
            sequence_number: self.sequence(),
            stream_sid: self.stream_sid,
            account_sid: self.account_sid,
            call_sid: self.call_sid,
        };
        media_stream::write_stop(&mut self.out, &stop);
        &self.out
    }
}

/// The stream the TwiML answer asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAnswer {
    /// The `<Stream>`.
    pub stream: Stream,
    /// Whether it was inside `<Connect>` (bidirectional) rather than `<Start>`.
    pub bidirectional: bool,
}

/// The `<Connect><Stream>` of `twiml`, else its first `<Start><Stream>`.
///
/// # Errors
/// [`SimError::NoStream`] naming the verbs the document has instead.
pub fn find_stream(twiml: &Response) -> Result<StreamAnswer, SimError> {
    if let Some(stream) = twiml.bidirectional_stream() {
        return Ok(StreamAnswer { stream: stream.clone(), bidirectional: true });
    }
    let forked = twiml.verbs.iter().find_map(|verb| match verb {
        Verb::Start(start) => start.nouns.iter().find_map(|noun| match noun {
            MediaNoun::Stream(stream) => Some(stream.clone()),
            MediaNoun::Other(_) => None,
        }),
        _ => None,
    });
    if let Some(stream) = forked {
        return Ok(StreamAnswer { stream, bidirectional: false });
    }
    let names: Vec<String> = twiml.verbs.iter().take(8).map(|v| format!("<{}>", verb_name(v))).collect();
    let verbs = if names.is_empty() { "nothing".to_owned() } else { names.join(", ") };
    Err(SimError::NoStream { verbs })
}

fn verb_name(verb: &Verb) -> &str {
    match verb {
        Verb::Say(_) => "Say",
        Verb::Play(_) => "Play",
        Verb::Pause(_) => "Pause",
        Verb::Gather(_) => "Gather",
        Verb::Dial(_) => "Dial",
        Verb::Connect(_) => "Connect",
        Verb::Start(_) => "Start",
        Verb::Stop(_) => "Stop",
        Verb::Hangup(_) => "Hangup",
        Verb::Redirect(_) => "Redirect",
        Verb::Reject(_) => "Reject",
        Verb::Record(_) => "Record",
        Verb::Other(element) => &element.name,
    }
}

/// A URL split for connecting.
struct Target {
    /// `host:port` to connect to.
    authority: String,
    /// `scheme://host[:port]` exactly as given, for signing.
    origin: String,
    /// Path and query, at least `/`.
    path: String,
}

fn parse_target(url: &str, schemes: &[&str]) -> Result<Target, SimError> {
    let invalid = |reason| SimError::InvalidUrl { url: url.to_owned(), reason };
    let uri: Uri = url.parse().map_err(|_| invalid("it is not a valid URL"))?;
    let scheme = uri.scheme_str().ok_or_else(|| invalid("it has no scheme"))?.to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(invalid(if schemes.contains(&"http") {
            "only http:// is supported"
        } else {
            "only ws:// is supported"
        }));
    }
    let authority = uri.authority().ok_or_else(|| invalid("it has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("credentials in the URL are not supported"));
    }
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(80);
    let connect_host = host.trim_start_matches('[').trim_end_matches(']');
    let connect = if connect_host.contains(':') {
        format!("[{connect_host}]:{port}")
    } else {
        format!("{connect_host}:{port}")
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok(Target { authority: connect, origin: format!("{scheme}://{authority}"), path })
}

async fn connect(what: &'static str, authority: &str) -> Result<TcpStream, SimError> {
    let tcp = TcpStream::connect(authority).await.map_err(|source| SimError::Connect {
        what,
        authority: authority.to_owned(),
        source,
    })?;
    // Media frames are small and latency-sensitive.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

fn signer(auth_token: &str, origin: &str) -> Result<SignatureValidator, SimError> {
    SignatureValidator::new(auth_token, origin).map_err(|e| SimError::InvalidConfig { what: e.to_string() })
}

/// Posts the voice webhook for `params` to `{base_url}/twilio/voice` and
/// parses the TwiML answer.
///
/// # Errors
/// [`SimError::InvalidUrl`], [`SimError::Connect`], [`SimError::Http`],
/// [`SimError::WebhookStatus`], [`SimError::Twiml`] or [`SimError::Timeout`].
pub async fn post_voice_webhook(
    base_url: &str,
    auth_token: Option<&str>,
    params: &CallParams,
) -> Result<Response, SimError> {
    let base = base_url.trim_end_matches('/');
    let url = format!("{base}{VOICE_PATH}");
    let target = parse_target(&url, &["http"])?;
    let form = params.webhook_form();
    let mut request = http::Request::post(target.path.as_str())
        .header(http::header::HOST, target.origin.split_once("://").map_or("", |(_, a)| a))
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(http::header::USER_AGENT, "TwilioProxy/1.1")
        .header(http::header::ACCEPT, "*/*");
    if let Some(token) = auth_token {
        // Twilio signs the URL it requests, which is the one configured for the number.
        let signature = signer(token, base)?
            .sign_form(VOICE_PATH, form.pairs())
            .map_err(|e| SimError::InvalidConfig { what: e.to_string() })?;
        request = request.header(SIGNATURE_HEADER, signature);
    }
    let request = request
        .body(Full::new(Bytes::from(form.encode())))
        .map_err(|e| SimError::Http { reason: e.to_string() })?;
    let exchange = async {
        let tcp = connect("voice webhook", &target.authority).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| SimError::Http { reason: e.to_string() })?;
        tokio::spawn(connection);
        let response =
            sender.send_request(request).await.map_err(|e| SimError::Http { reason: e.to_string() })?;
        let status = response.status();
        if !status.is_success() {
            return Err(SimError::WebhookStatus { status: status.as_u16() });
        }
        let body = Limited::new(response.into_body(), MAX_TWIML_BYTES)
            .collect()
            .await
            .map_err(|e| SimError::Http { reason: format!("reading the answer: {e}") })?
            .to_bytes();
        let text = std::str::from_utf8(&body)
            .map_err(|_| SimError::Http { reason: "the answer is not UTF-8".into() })?;
        Ok(Response::from_xml(text)?)
    };
    tokio::time::timeout(WEBHOOK_TIMEOUT, exchange)
        .await
        .map_err(|_| SimError::Timeout { what: "the voice webhook" })?
}

type Ws = WebSocketStream<StampedTcp>;

/// Opens the media WebSocket to `url` with the handshake signed as Twilio signs it.
///
/// # Errors
/// [`SimError::SecureWebSocket`] for `wss://`, [`SimError::InvalidUrl`],
/// [`SimError::Connect`], [`SimError::Handshake`] or [`SimError::Timeout`].
pub async fn open_stream(url: &str, auth_token: Option<&str>) -> Result<Ws, SimError> {
    if url.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("wss://")) {
        return Err(SimError::SecureWebSocket { url: url.to_owned() });
    }
    let target = parse_target(url, &["ws"])?;
    let mut request = url.into_client_request().map_err(|e| SimError::Handshake { reason: e.to_string() })?;
    if let Some(token) = auth_token {
        let signature = signer(token, &target.origin)?
            .sign_websocket(&target.path)
            .map_err(|e| SimError::InvalidConfig { what: e.to_string() })?;
        let value = http::HeaderValue::from_str(&signature)
            .map_err(|e| SimError::Handshake { reason: e.to_string() })?;
        request.headers_mut().insert(SIGNATURE_HEADER, value);
    }
    // Small buffers: messages are a few hundred bytes, and thousands of
    // calls each hold a pair (tungstenite's defaults are 128 KiB).
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let handshake = async {
        let tcp = connect("media stream", &target.authority).await?;
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, StampedTcp::new(tcp), Some(config))
                .await
                .map_err(|e| SimError::Handshake {
                    reason: match e {
                        tungstenite::Error::Http(response) => {
                            format!("the server answered HTTP {}", response.status())
                        }
                        other => other.to_string(),
                    },
                })?;
        Ok(ws)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| SimError::Timeout { what: "the WebSocket handshake" })?
}

fn ws_error(e: &tungstenite::Error) -> SimError {
    SimError::WebSocket { reason: e.to_string() }
}

/// The sending half of a call: writes Twilio's messages.
#[derive(Debug)]
pub struct TwilioSender {
    sink: SplitSink<Ws, Message>,
    frames: TwilioFrames,
    /// Staging for outgoing text: once the previous message has been
    /// written and dropped, its allocation is reclaimed, so steady-state
    /// sending does not allocate.
    staging: BytesMut,
    /// Milliseconds of audio sent by [`TwilioSender::send_media`].
    media_ms: u64,
    media_bytes: u64,
}

impl TwilioSender {
    /// The stream's SID.
    #[must_use]
    pub fn stream_sid(&self) -> &StreamSid {
        self.frames.stream_sid()
    }

    async fn send_text(
        sink: &mut SplitSink<Ws, Message>,
        staging: &mut BytesMut,
        text: &[u8],
    ) -> Result<(), SimError> {
        staging.reserve(text.len());
        staging.extend_from_slice(text);
        let text = Utf8Bytes::try_from(staging.split())
            .map_err(|_| SimError::Protocol { reason: "an outgoing message is not UTF-8".into() })?;
        sink.send(Message::Text(text)).await.map_err(|e| ws_error(&e))
    }

    /// Sends `media` with `payload`, `timestamp_ms` after the stream started
    /// (a paced sender derives it from its schedule).
    ///
    /// # Errors
    /// [`SimError::WebSocket`].
    pub async fn send_media_at(&mut self, timestamp_ms: u64, payload: &[u8]) -> Result<(), SimError> {
        let text = self.frames.media(timestamp_ms, payload);
        Self::send_text(&mut self.sink, &mut self.staging, text).await
    }

    /// Sends `media` with `payload`, timestamped by the audio sent so far.
    ///
    /// # Errors
    /// [`SimError::WebSocket`].
    pub async fn send_media(&mut self, payload: &[u8]) -> Result<(), SimError> {
        let at = self.media_ms;
        self.media_bytes = self.media_bytes.saturating_add(payload.len() as u64);
        self.media_ms = self.media_bytes / BYTES_PER_MS;
        self.send_media_at(at, payload).await
    }

    /// Sends `dtmf` for `digit`.
    ///
    /// # Errors
    /// [`SimError::WebSocket`].
    pub async fn send_dtmf(&mut self, digit: char) -> Result<(), SimError> {
        let text = self.frames.dtmf(digit);
        Self::send_text(&mut self.sink, &mut self.staging, text).await
    }

    /// Sends `mark` named `name`, as Twilio does once a mark has played.
    ///
    /// # Errors
    /// [`SimError::WebSocket`].
    pub async fn send_mark_echo(&mut self, name: &str) -> Result<(), SimError> {
        let text = self.frames.mark(name);
        Self::send_text(&mut self.sink, &mut self.staging, text).await
    }

    /// Sends `stop` and a WebSocket close.
    ///
    /// # Errors
    /// [`SimError::WebSocket`].
    pub async fn send_stop_and_close(&mut self) -> Result<(), SimError> {
        let text = self.frames.stop();
        Self::send_text(&mut self.sink, &mut self.staging, text).await?;
        self.sink.close().await.map_err(|e| ws_error(&e))
    }
}

/// A message from the server, borrowed from the receiver's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    /// Audio to play (raw μ-law).
    Media(&'a [u8]),
    /// A mark to echo once the audio before it has played.
    Mark(&'a str),
    /// Drop queued audio and echo pending marks.
    Clear,
    /// An event the simulator does not know.
    Unknown(&'a str),
}

/// A message from the server, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// Audio to play (raw μ-law).
    Media(Vec<u8>),
    /// A mark to echo once the audio before it has played.
    Mark(String),
    /// Drop queued audio and echo pending marks.
    Clear,
    /// An event the simulator does not know.
    Unknown(String),
    /// The server closed the WebSocket.
    Closed,
}

impl From<ServerFrame<'_>> for ServerMessage {
    fn from(frame: ServerFrame<'_>) -> Self {
        match frame {
            ServerFrame::Media(audio) => ServerMessage::Media(audio.to_vec()),
            ServerFrame::Mark(name) => ServerMessage::Mark(name.to_owned()),
            ServerFrame::Clear => ServerMessage::Clear,
            ServerFrame::Unknown(event) => ServerMessage::Unknown(event.to_owned()),
        }
    }
}

/// The receiving half of a call: parses the server's messages.
#[derive(Debug)]
pub struct TwilioReceiver {
    stream: SplitStream<Ws>,
    /// When the kernel received the latest bytes read.
    arrival: Arrival,
    stream_sid: StreamSid,
    frame: Vec<u8>,
    audio: Vec<u8>,
}

impl TwilioReceiver {
    /// When the kernel received the latest bytes read, for
    /// [`Arrival::wait`]: how long a frame waited for the simulator.
    #[must_use]
    pub fn arrival(&self) -> Arrival {
        self.arrival.clone()
    }

    /// The next message from the server; `None` once the WebSocket is
    /// closed. Cancel-safe: dropping the future loses no message.
    ///
    /// # Errors
    /// [`SimError::WebSocket`] on a broken connection; [`SimError::Protocol`]
    /// for a binary frame, a message that does not parse, or one for
    /// another stream.
    pub async fn next_frame(&mut self) -> Result<Option<ServerFrame<'_>>, SimError> {
        let text = loop {
            match self.stream.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                    return Ok(None);
                }
                Some(Err(e)) => return Err(ws_error(&e)),
                Some(Ok(Message::Text(text))) => break text,
                Some(Ok(Message::Binary(_))) => {
                    return Err(SimError::Protocol {
                        reason: "a binary frame (Media Streams uses text)".into(),
                    });
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        };
        self.frame.clear();
        self.frame.extend_from_slice(text.as_bytes());
        // A payload never decodes to more than ¾ of the frame.
        let need = self.frame.len() / 4 * 3 + 3;
        if self.audio.len() < need {
            self.audio.resize(need, 0);
        }
        let message = media_stream::parse_outbound(&mut self.frame, &mut self.audio)
            .map_err(|e| SimError::Protocol { reason: e.to_string() })?;
        let sid = match &message {
            Outbound::Media { stream_sid, .. }
            | Outbound::Mark { stream_sid, .. }
            | Outbound::Clear { stream_sid } => Some(*stream_sid),
            Outbound::Unknown { .. } => None,
        };
        if let Some(sid) = sid
            && sid != self.stream_sid
        {
            return Err(SimError::Protocol {
                reason: format!(
                    "a message for stream {} on stream {}",
                    sid.as_str(),
                    self.stream_sid.as_str()
                ),
            });
        }
        Ok(Some(match message {
            Outbound::Media { payload_len, .. } => {
                ServerFrame::Media(self.audio.get(..payload_len).unwrap_or_default())
            }
            Outbound::Mark { name, .. } => ServerFrame::Mark(name),
            Outbound::Clear { .. } => ServerFrame::Clear,
            Outbound::Unknown { event } => ServerFrame::Unknown(event),
        }))
    }
}

/// One simulated call with its media stream open. See the [module docs](self).
#[derive(Debug)]
pub struct TwilioCall {
    sender: TwilioSender,
    receiver: TwilioReceiver,
    params: CallParams,
    answer: StreamAnswer,
    setup: Duration,
}

impl TwilioCall {
    /// Places a call: webhook, TwiML, signed WebSocket, `connected`, `start`.
    /// `auth_token` signs the webhook and handshake; `None` sends them unsigned.
    ///
    /// # Errors
    /// Any [`SimError`] of [`post_voice_webhook`], [`find_stream`] and
    /// [`open_stream`], or [`SimError::WebSocket`] sending the first messages.
    pub async fn dial(
        base_url: &str,
        auth_token: Option<&str>,
        params: CallParams,
    ) -> Result<TwilioCall, SimError> {
        let began = std::time::Instant::now();
        let twiml = post_voice_webhook(base_url, auth_token, &params).await?;
        let answer = find_stream(&twiml)?;
        let ws = open_stream(answer.stream.url.as_str(), auth_token).await?;
        let arrival = ws.get_ref().arrival();
        let (sink, stream) = ws.split();
        let mut sender = TwilioSender {
            sink,
            frames: TwilioFrames::new(&params),
            staging: BytesMut::with_capacity(1024),
            media_ms: 0,
            media_bytes: 0,
        };
        let connected = sender.frames.connected();
        TwilioSender::send_text(&mut sender.sink, &mut sender.staging, connected).await?;
        let custom = answer.stream.parameters.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
        let start = sender.frames.start(custom);
        TwilioSender::send_text(&mut sender.sink, &mut sender.staging, start).await?;
        let receiver = TwilioReceiver {
            stream,
            arrival,
            stream_sid: params.stream_sid,
            frame: Vec::new(),
            audio: Vec::new(),
        };
        Ok(TwilioCall { sender, receiver, params, answer, setup: began.elapsed() })
    }

    /// The call's SIDs and numbers.
    #[must_use]
    pub fn params(&self) -> &CallParams {
        &self.params
    }

    /// The `<Stream>` followed, and whether it is bidirectional.
    #[must_use]
    pub fn answer(&self) -> &StreamAnswer {
        &self.answer
    }

    /// From the webhook POST to `start` sent.
    #[must_use]
    pub fn setup_time(&self) -> Duration {
        self.setup
    }

    /// Sends `media` with `payload` (raw μ-law), timestamped by the audio sent so far.
    ///
    /// # Errors
    /// [`SimError::WebSocket`].
    pub async fn send_media(&mut self, payload: &[u8]) -> Result<(), SimError> {
        self.sender.send_media(payload).await
    }

    /// Sends `dtmf` for `digit`.
    ///
    /// # Errors
    /// [`SimError::WebSocket`].
    pub async fn send_dtmf(&mut self, digit: char) -> Result<(), SimError> {
        self.sender.send_dtmf(digit).await
    }

    /// Sends `mark` named `name`, as Twilio does when a mark has played.
    ///
    /// # Errors
    /// [`SimError::WebSocket`].
    pub async fn send_mark_echo(&mut self, name: &str) -> Result<(), SimError> {
        self.sender.send_mark_echo(name).await
    }

    /// The next message from the server, or `Ok(None)` if none came within `timeout`.
    ///
    /// # Errors
    /// As [`TwilioReceiver::next_frame`].
    pub async fn next_message(&mut self, timeout: Duration) -> Result<Option<ServerMessage>, SimError> {
        match tokio::time::timeout(timeout, self.receiver.next_frame()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(frame))) => Ok(Some(frame.into())),
            Ok(Ok(None)) => Ok(Some(ServerMessage::Closed)),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Ends the call: `stop`, a WebSocket close, and a bounded wait for
    /// the server's close (messages arriving meanwhile are discarded).
    ///
    /// # Errors
    /// [`SimError::WebSocket`] sending, [`SimError::Timeout`] if the server
    /// does not close within [`CLOSE_TIMEOUT`].
    pub async fn stop(mut self) -> Result<(), SimError> {
        self.sender.send_stop_and_close().await?;
        let drain = async { while let Ok(Some(_)) = self.receiver.next_frame().await {} };
        tokio::time::timeout(CLOSE_TIMEOUT, drain)
            .await
            .map_err(|_| SimError::Timeout { what: "the server to close" })
    }

    /// Separate halves for concurrent reading and writing.
    #[must_use]
    pub fn into_split(self) -> (TwilioSender, TwilioReceiver) {
        (self.sender, self.receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> CallParams {
        CallParams {
            account_sid: AccountSid::new("AC00000000000000000000000000000001").unwrap(),
            call_sid: CallSid::new("CA00000000000000000000000000000002").unwrap(),
            stream_sid: StreamSid::new("MZ00000000000000000000000000000003").unwrap(),
            from: "+15550001111".into(),
            to: "+15550002222".into(),
            extra: vec![("StirVerstat".into(), "TN-Validation-Passed-A".into())],
        }
    }

    #[test]
    fn random_sids_have_twilio_shape_and_differ() {
        let a = CallParams::random();
        let b = CallParams::random();
        assert!(a.call_sid.is_twilio_format() && a.stream_sid.is_twilio_format());
        assert_ne!(a.call_sid, b.call_sid);
        assert_ne!(a.stream_sid, b.stream_sid);
    }

    #[test]
    fn webhook_form_is_a_valid_voice_webhook() {
        use voxproxy_adapters::webhook::{CallStatus, Direction, VoiceWebhook};
        let form = params().webhook_form();
        let parsed = VoiceWebhook::parse(form.encode().as_bytes()).unwrap();
        assert_eq!(parsed.call.call_sid, "CA00000000000000000000000000000002");
        assert_eq!(parsed.call.from, "+15550001111");
        assert_eq!(parsed.call.call_status, CallStatus::Ringing);
        assert_eq!(parsed.call.direction, Direction::Inbound);
        assert_eq!(form.get("Caller"), Some("+15550001111"));
        assert_eq!(form.get("StirVerstat"), Some("TN-Validation-Passed-A"));
    }

    #[test]
    fn frames_count_as_twilio_does() {
        let mut frames = TwilioFrames::new(&params());
        assert_eq!(frames.connected(), br#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);
        let start = String::from_utf8(frames.start(vec![("k".into(), "v".into())]).to_vec()).unwrap();
        assert!(start.starts_with(r#"{"event":"start","sequenceNumber":"1","#), "{start}");
        assert!(start.contains(r#""customParameters":{"k":"v"}"#), "{start}");
        let m1 = String::from_utf8(frames.media(0, &[0xff; 3]).to_vec()).unwrap();
        let m2 = String::from_utf8(frames.media(20, &[0xff; 3]).to_vec()).unwrap();
        assert!(
            m1.contains(r#""sequenceNumber":"2""#)
                && m1.contains(r#""chunk":"1""#)
                && m1.contains(r#""timestamp":"0""#)
        );
        assert!(
            m2.contains(r#""sequenceNumber":"3""#)
                && m2.contains(r#""chunk":"2""#)
                && m2.contains(r#""timestamp":"20""#)
        );
        assert!(m1.contains(r#""payload":"////""#), "{m1}");
        let mark = String::from_utf8(frames.mark("m1").to_vec()).unwrap();
        assert_eq!(
            mark,
            r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ00000000000000000000000000000003","mark":{"name":"m1"}}"#
        );
        let stop = String::from_utf8(frames.stop().to_vec()).unwrap();
        assert!(stop.starts_with(r#"{"event":"stop","sequenceNumber":"5","#), "{stop}");
    }

    #[test]
    fn frames_parse_back_as_twilio_messages() {
        use voxproxy_adapters::media_stream::{Inbound, parse_inbound};
        let mut frames = TwilioFrames::new(&params());
        let mut audio = [0u8; 256];
        let mut start = frames.start(vec![("From".into(), "+1555".into())]).to_vec();
        let Inbound::Start(start) = parse_inbound(&mut start, &mut audio).unwrap() else {
            panic!("not start")
        };
        assert_eq!(start.custom_parameter("From"), Some("+1555"));
        let mut dtmf = frames.dtmf('#').to_vec();
        let Inbound::Dtmf(dtmf) = parse_inbound(&mut dtmf, &mut audio).unwrap() else { panic!("not dtmf") };
        assert_eq!((dtmf.digit, dtmf.sequence_number), ('#', 2));
    }

    #[test]
    fn find_stream_prefers_connect_and_names_what_is_there_instead() {
        let connect = Response::new()
            .start_stream(Stream::new("ws://a/fork").unwrap())
            .connect_stream(Stream::new("ws://a/media").unwrap().parameter("x", "1"));
        let answer = find_stream(&connect).unwrap();
        assert!(answer.bidirectional);
        assert_eq!(answer.stream.url.as_str(), "ws://a/media");

        let fork = Response::new().start_stream(Stream::new("ws://a/fork").unwrap()).say("hi");
        assert!(!find_stream(&fork).unwrap().bidirectional);

        let rejected = Response::new().reject(voxproxy_adapters::twiml::Reject::new());
        let err = find_stream(&rejected).unwrap_err();
        assert_eq!(err.reason(), "TwiML has no <Stream> (<Reject>)");
        let empty = find_stream(&Response::new()).unwrap_err();
        assert_eq!(empty.reason(), "TwiML has no <Stream> (nothing)");
    }

    #[test]
    fn urls_are_checked() {
        let t = parse_target("http://127.0.0.1:8080/base/twilio/voice", &["http"]).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.origin.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "http://127.0.0.1:8080", "/base/twilio/voice")
        );
        let t = parse_target("ws://[::1]/twilio/media", &["ws"]).unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("[::1]:80", "/twilio/media"));
        assert!(matches!(parse_target("https://x/y", &["http"]), Err(SimError::InvalidUrl { .. })));
        assert!(matches!(parse_target("not a url", &["http"]), Err(SimError::InvalidUrl { .. })));
        assert!(matches!(parse_target("http://u:p@x/", &["http"]), Err(SimError::InvalidUrl { .. })));
    }
}
