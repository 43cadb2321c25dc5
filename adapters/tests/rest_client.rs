//! The REST client against a scripted HTTP/1.1 server on loopback: what goes
//! on the wire, and how responses, throttling and failures are handled.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use voxproxy_adapters::rest::{
    AuthToken, CallInstructions, CallProgressEvent, CallStatus, CreateCall, HttpMethod, MessageStatus,
    RestConfig, RestError, RetryPolicy, SendSms, StartStream, StreamStatus, StreamTrack, TwilioClient,
    UpdateCall,
};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "tok3n";
/// base64("AC0123456789abcdef0123456789abcdef:tok3n"), computed independently
/// with `printf '%s' … | base64`.
const AUTHORIZATION: &str = "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0b2szbg==";
/// Every wait in these tests ends by this.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

/// What the server does with one request.
#[derive(Clone)]
enum Reply {
    /// Status, extra headers, body.
    With(u16, &'static [(&'static str, &'static str)], &'static str),
    /// Read the request, then never answer.
    Silence,
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `replies` in order, one per connection; after the script ends,
    /// every request gets a 418 so an unexpected extra attempt is visible.
    async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut replies = replies.into_iter();
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let reply = replies.next().unwrap_or(Reply::With(418, &[], "unexpected extra request"));
                let log = Arc::clone(&log);
                tokio::spawn(async move { handle(socket, reply, log).await });
            }
        });
        Self { addr, seen, task }
    }

    fn client(&self, retry: RetryPolicy) -> TwilioClient {
        let mut config = RestConfig::new(SID, AuthToken::new(TOKEN));
        config.base_url = format!("http://{}", self.addr);
        config.connect_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_secs(5);
        config.retry = retry;
        config.jitter_seed = Some(1);
        TwilioClient::new(config).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Tiny retries so the tests stay quick: the backoff itself is unit-tested.
fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(10),
        max_retry_after: Duration::from_millis(50),
    }
}

async fn handle(mut socket: TcpStream, reply: Reply, log: Arc<Mutex<Vec<Seen>>>) {
    let Some(seen) = read_request(&mut socket).await else { return };
    log.lock().unwrap().push(seen);
    match reply {
        Reply::With(status, headers, body) => {
            let mut response = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(body);
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Reply::Silence => tokio::time::sleep(TEST_DEADLINE).await,
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { method, path, headers, body: String::from_utf8(body).ok()? })
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, future).await.expect("test deadline passed")
}

const CALL_JSON: &str = r#"{"sid":"CA11","account_sid":"AC0123456789abcdef0123456789abcdef","status":"queued","to":"+15558675310","from":"+15017122661","direction":"outbound-api","price":null}"#;

#[tokio::test]
async fn create_call_sends_method_path_auth_and_exact_form() {
    let server = Server::start(vec![Reply::With(201, &[], CALL_JSON)]).await;
    let client = server.client(fast_retries(3));
    let mut call = CreateCall::new(
        "+15558675310",
        "+15017122661",
        CallInstructions::Twiml("<Response><Say>Ahoy & welcome</Say></Response>".into()),
    );
    call.status_callback = Some("https://p.example.com/twilio/status".into());
    call.status_callback_method = Some(HttpMethod::Post);
    call.status_callback_events = vec![CallProgressEvent::Initiated, CallProgressEvent::Answered];
    call.timeout_secs = Some(30);

    let placed = bounded(client.create_call(&call)).await.unwrap();
    assert_eq!(placed.sid, "CA11");
    assert_eq!(placed.status, CallStatus::Queued);
    assert_eq!(placed.direction.as_deref(), Some("outbound-api"));

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{SID}/Calls.json"));
    assert_eq!(request.header("authorization"), Some(AUTHORIZATION));
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(
        request.body,
        "To=%2B15558675310&From=%2B15017122661\
         &Twiml=%3CResponse%3E%3CSay%3EAhoy+%26+welcome%3C%2FSay%3E%3C%2FResponse%3E\
         &StatusCallback=https%3A%2F%2Fp.example.com%2Ftwilio%2Fstatus&StatusCallbackMethod=POST\
         &StatusCallbackEvent=initiated&StatusCallbackEvent=answered&Timeout=30"
    );
    assert_eq!(request.body.matches("StatusCallbackEvent=").count(), 2);
    assert!(!request.body.contains("%2C"), "events must not be comma-joined");
}

#[tokio::test]
async fn update_start_stop_and_sms_hit_their_resources() {
    let server = Server::start(vec![
        Reply::With(200, &[], r#"{"sid":"CA11","status":"completed"}"#),
        Reply::With(201, &[], r#"{"sid":"MZ22","call_sid":"CA11","name":"fork a","status":"in-progress"}"#),
        Reply::With(200, &[], r#"{"sid":"MZ22","call_sid":"CA11","name":"fork a","status":"stopped"}"#),
        Reply::With(201, &[], r#"{"sid":"SM33","status":"queued","to":"+15558675310","body":"hi"}"#),
    ])
    .await;
    let client = server.client(fast_retries(1));

    let call = bounded(client.update_call("CA11", &UpdateCall::Complete)).await.unwrap();
    assert_eq!(call.status, CallStatus::Completed);

    let mut stream = StartStream::new("wss://p.example.com/twilio/media");
    stream.name = Some("fork a".into());
    stream.track = Some(StreamTrack::Inbound);
    stream.status_callback = Some("https://p.example.com/twilio/stream-status".into());
    stream.parameters = vec![("CallerName".into(), "Jane Doe".into())];
    let started = bounded(client.start_stream("CA11", &stream)).await.unwrap();
    assert_eq!((started.sid.as_str(), &started.status), ("MZ22", &StreamStatus::InProgress));

    let stopped = bounded(client.stop_stream("CA11", "fork a")).await.unwrap();
    assert_eq!(stopped.status, StreamStatus::Stopped);

    let sms = bounded(client.send_sms(&SendSms::new("+15558675310", "+15017122661", "hi"))).await.unwrap();
    assert_eq!((sms.sid.as_str(), &sms.status), ("SM33", &MessageStatus::Queued));

    let seen = server.seen();
    let prefix = format!("/2010-04-01/Accounts/{SID}");
    let got: Vec<(&str, &str, &str)> =
        seen.iter().map(|s| (s.method.as_str(), s.path.as_str(), s.body.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("POST", &*format!("{prefix}/Calls/CA11.json"), "Status=completed"),
            (
                "POST",
                &*format!("{prefix}/Calls/CA11/Streams.json"),
                "Url=wss%3A%2F%2Fp.example.com%2Ftwilio%2Fmedia&Name=fork+a&Track=inbound_track\
                 &StatusCallback=https%3A%2F%2Fp.example.com%2Ftwilio%2Fstream-status\
                 &Parameter1.Name=CallerName&Parameter1.Value=Jane+Doe"
            ),
            ("POST", &*format!("{prefix}/Calls/CA11/Streams/fork%20a.json"), "Status=stopped"),
            ("POST", &*format!("{prefix}/Messages.json"), "To=%2B15558675310&From=%2B15017122661&Body=hi"),
        ]
    );
    assert!(seen.iter().all(|s| s.header("authorization") == Some(AUTHORIZATION)));
}

#[tokio::test]
async fn fetch_account_is_an_authenticated_get_and_a_wrong_token_is_401() {
    let server = Server::start(vec![
        Reply::With(200, &[], r#"{"sid":"AC0123456789abcdef0123456789abcdef","status":"active"}"#),
        Reply::With(401, &[], r#"{"code":20003,"message":"Authenticate","status":401}"#),
    ])
    .await;
    let client = server.client(fast_retries(3));
    let account = bounded(client.fetch_account()).await.unwrap();
    assert_eq!((account.sid.as_str(), account.status.as_deref()), (SID, Some("active")));
    let refused = bounded(client.fetch_account()).await.unwrap_err();
    assert!(matches!(refused, RestError::Api { status: 401, code: Some(20003), .. }), "{refused:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "a 401 is not retried: {seen:?}");
    for request in &seen {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", &*format!("/2010-04-01/Accounts/{SID}.json"))
        );
        assert_eq!(request.body, "", "a GET carries no body");
        assert_eq!(request.header("content-type"), None);
        assert_eq!(request.header("authorization"), Some(AUTHORIZATION));
    }
}

const THROTTLED: &str = r#"{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}"#;

#[tokio::test]
async fn throttled_request_is_retried_until_it_succeeds() {
    let server = Server::start(vec![
        Reply::With(429, &[("Retry-After", "0")], THROTTLED),
        Reply::With(429, &[], THROTTLED),
        Reply::With(201, &[], CALL_JSON),
    ])
    .await;
    let client = server.client(fast_retries(4));
    let call = CreateCall::new("+1555", "+1501", CallInstructions::Url("https://h/t".into()));
    let placed = bounded(client.create_call(&call)).await.unwrap();
    assert_eq!(placed.sid, "CA11");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.body == seen[0].body), "every attempt sends the same form");
}

#[tokio::test]
async fn server_errors_are_retried() {
    let server = Server::start(vec![
        Reply::With(503, &[], "<html>unavailable</html>"),
        Reply::With(500, &[], r#"{"code":20500,"message":"Internal Server Error","status":500}"#),
        Reply::With(200, &[], r#"{"sid":"CA11","status":"in-progress"}"#),
    ])
    .await;
    let client = server.client(fast_retries(3));
    let call = bounded(client.update_call("CA11", &UpdateCall::Url("https://h/next".into()))).await.unwrap();
    assert_eq!(call.status, CallStatus::InProgress);
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_map_to_api_error() {
    let body = r#"{"code":21211,"message":"The 'To' number +1555 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
    let server = Server::start(vec![Reply::With(400, &[], body), Reply::With(201, &[], CALL_JSON)]).await;
    let client = server.client(fast_retries(5));
    let call = CreateCall::new("+1555", "+1501", CallInstructions::Url("https://h/t".into()));
    let error = bounded(client.create_call(&call)).await.unwrap_err();
    assert_eq!(
        error,
        RestError::Api {
            status: 400,
            code: Some(21211),
            message: "The 'To' number +1555 is not a valid phone number.".into(),
            more_info: Some("https://www.twilio.com/docs/errors/21211".into()),
        }
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let server = Server::start(vec![Reply::With(429, &[("Retry-After", "1")], THROTTLED); 5]).await;
    let client = server.client(fast_retries(3));
    let error = bounded(client.send_sms(&SendSms::new("+1", "+2", "x"))).await.unwrap_err();
    let RestError::RetriesExhausted { attempts, last } = error else { panic!("got {error:?}") };
    assert_eq!(attempts, 3);
    assert!(matches!(*last, RestError::Api { status: 429, code: Some(20429), .. }), "{last:?}");
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn a_silent_server_times_out_without_retrying() {
    let server = Server::start(vec![Reply::Silence, Reply::With(201, &[], CALL_JSON)]).await;
    let mut config = RestConfig::new(SID, AuthToken::new(TOKEN));
    config.base_url = format!("http://{}", server.addr);
    config.request_timeout = Duration::from_millis(200);
    config.retry = fast_retries(3);
    let client = TwilioClient::new(config).unwrap();
    let call = CreateCall::new("+1", "+2", CallInstructions::Url("https://h/t".into()));
    let error = bounded(client.create_call(&call)).await.unwrap_err();
    assert!(
        matches!(error, RestError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{error:?}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    // Bind then drop to get a port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut config = RestConfig::new(SID, AuthToken::new(TOKEN));
    config.base_url = format!("http://{addr}");
    config.retry = fast_retries(3);
    let client = TwilioClient::new(config).unwrap();
    let error = bounded(client.stop_stream("CA1", "MZ1")).await.unwrap_err();
    assert!(
        matches!(error, RestError::Transport { ref url, .. } if url.contains(&addr.to_string())),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_success_with_a_foreign_body_is_a_decode_error() {
    let server = Server::start(vec![Reply::With(200, &[], "<Response/>")]).await;
    let client = server.client(fast_retries(1));
    let error = bounded(client.update_call("CA1", &UpdateCall::Cancel)).await.unwrap_err();
    assert!(matches!(error, RestError::Decode { status: 200, .. }), "{error:?}");
}

#[tokio::test]
async fn invalid_requests_never_reach_the_network() {
    let server = Server::start(vec![]).await;
    let client = server.client(fast_retries(1));
    let call = CreateCall::new("+1", "+2", CallInstructions::Twiml("x".repeat(4001)));
    let error = bounded(client.create_call(&call)).await.unwrap_err();
    assert!(matches!(error, RestError::InvalidRequest { field: "Twiml", .. }), "{error:?}");
    assert!(server.seen().is_empty());
}
