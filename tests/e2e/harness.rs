//! The pieces every end-to-end test uses: the real `voxproxy` binary started
//! as a child process ([`Proxy`]), a fake Twilio that signs its webhooks and
//! speaks Media Streams over a real WebSocket ([`TwilioCall`]), a fake voice
//! stack on a UDP socket ([`Backend`]), and small HTTP, metrics, SSE and
//! call-record readers.
//!
//! Every wait is bounded; a test that hangs fails instead.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, TcpListener, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use voxproxy_adapters::signature::SignatureValidator;
use voxproxy_adapters::twiml::{self, Verb};
use voxproxy_core::rtp::{RtpHeader, RtpPacket};

/// The auth token the proxy and the fake Twilio share.
pub const AUTH_TOKEN: &str = "e2e-twilio-auth-token-0123456789";
/// `VOXPROXY_ADMIN_TOKEN` where a test enables the control API.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-abcdef";
/// The Twilio account of every fake call.
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// How long any single network wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long the binary may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on one test (both the proxy and the fakes).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------

/// The I/O backend a proxy runs with (`--io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// io_uring.
    Uring,
    /// Plain epoll.
    Epoll,
}

impl Io {
    /// The `--io` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Io::Uring => "uring",
            Io::Epoll => "epoll",
        }
    }
}

/// Runs one test body for `io`, bounded by [`TEST_TIMEOUT`]. The uring
/// variant runs unless `VOXPROXY_E2E_SKIP_URING=1`; a kernel that refuses
/// io_uring then makes the proxy fail to start, so the test fails loudly.
pub async fn run<F, Fut>(io: Io, test: F)
where
    F: FnOnce(Io) -> Fut,
    Fut: Future<Output = ()>,
{
    if io == Io::Uring && std::env::var("VOXPROXY_E2E_SKIP_URING").is_ok_and(|v| v == "1") {
        eprintln!("skipped: VOXPROXY_E2E_SKIP_URING=1");
        return;
    }
    // The first test of a run builds the binary (a minute or more on a
    // loaded machine); that must not count against the test's own budget.
    binary();
    if tokio::time::timeout(TEST_TIMEOUT, test(io)).await.is_err() {
        panic!("test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// The `voxproxy` binary, built once per test process with the test's profile.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // …/target/<profile>/deps/e2e-xxxx → …/target/<profile>/voxproxy.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
        let target_dir = profile_dir.parent().expect("target/<profile>");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "-p", "voxproxy", "--bin", "voxproxy"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What cargo set for this test run must not leak into the nested
        // build: build scripts that watch these (ring watches
        // CARGO_MANIFEST_DIR) would rebuild, and the next `cargo test` again.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("CARGO_PKG_")
                || matches!(
                    key.as_str(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                )
            {
                cargo.env_remove(key);
            }
        }
        if cfg!(not(debug_assertions)) {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the voxproxy binary failed: {status}");
        let binary = profile_dir.join("voxproxy");
        assert!(binary.is_file(), "no binary at {}", binary.display());
        binary
    })
}

/// A loopback TCP port nobody listens on right now.
pub fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe address").port()
}

/// A loopback UDP port (and, with `pair`, the one after it) free right now.
pub fn free_udp_port(pair: bool) -> u16 {
    for _ in 0..100 {
        let probe = StdUdpSocket::bind("127.0.0.1:0").expect("bind a probe port");
        let port = probe.local_addr().expect("probe address").port();
        if !pair {
            return port;
        }
        if port.is_multiple_of(2) && port < 65_000 && StdUdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of UDP ports found");
}

/// A loopback port free for both UDP and TCP right now (SIP listens on
/// both; a port free for UDP may be some TCP connection's local port).
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let port = free_udp_port(false);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// Whether some socket has bound loopback UDP `port` (read from /proc, so
/// the check cannot steal the port).
pub fn udp_port_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let needle = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .any(|line| line.split_whitespace().nth(1).is_some_and(|local| local.ends_with(&needle)))
}

/// A number that differs between calls and test processes.
pub fn unique() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// An RTP port window of 20 ports somewhere in 61000-65499: above Linux's
/// default ephemeral range (32768-60999), so the fakes' kernel-chosen ports
/// and ffmpeg's do not land in it. Windows of tests running at once rarely
/// overlap, and the proxy skips a port someone else holds anyway.
fn rtp_window() -> String {
    let low = 61_000 + (unique() % 4_480) as u16;
    format!("{low}-{}", low + 19)
}

/// A running `voxproxy serve`, killed when dropped.
pub struct Proxy {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `server.public_url`.
    pub public_url: String,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// The `TWILIO_AUTH_TOKEN` it got, if any.
    pub auth_token: Option<String>,
    /// `cdr.path`.
    pub cdr_path: PathBuf,
    /// The I/O backend it announced.
    pub io: String,
    /// Receive buffer of the test's connections to the proxy, when set: a
    /// small one (no autotuning) makes a Twilio that reads slowly.
    pub client_receive_buffer: Option<u32>,
    stderr: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

fn has_flag(args: &[&str], flag: &str) -> bool {
    args.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
}

/// Spawns `voxproxy serve` with a clean environment (no inherited
/// `VOXPROXY_*`/`TWILIO_*`), `env` on top; an empty value removes a variable.
/// With `nofile`, the child runs under that `RLIMIT_NOFILE`
/// (soft and hard), set by `sh`'s `ulimit -n` right before it execs the
/// binary, so the pid stays the binary's.
fn command_limited(env: &[(&str, &str)], args: &[&str], nofile: Option<u64>) -> Command {
    let mut cmd = match nofile {
        Some(n) => {
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(format!("ulimit -n {n} && exec \"$@\"")).arg("sh").arg(binary());
            sh
        }
        None => Command::new(binary()),
    };
    cmd.arg("serve").args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("VOXPROXY_") || key.starts_with("TWILIO_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        if value.is_empty() {
            cmd.env_remove(key);
        } else {
            cmd.env(key, value);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `voxproxy serve` expecting it to stop on its own (a start-up
/// error): its exit status and stderr.
pub fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
    run_to_exit_limited(env, args, None)
}

/// As [`run_to_exit`], under `RLIMIT_NOFILE` = `nofile` when given.
pub fn run_to_exit_limited(env: &[(&str, &str)], args: &[&str], nofile: Option<u64>) -> (ExitStatus, String) {
    let port = free_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    let mut full_args = vec!["--listen", &listen];
    full_args.extend_from_slice(args);
    // In an empty directory of its own: a refusal must not leave files
    // behind (a default relative `cdr.path` would land in the checkout).
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = command_limited(env, &full_args, nofile)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("voxproxy starts");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for voxproxy") {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read temp dir").flatten().collect();
            assert!(left.is_empty(), "voxproxy refused to start but left files behind: {left:?}\n{text}");
            return (status, text);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("voxproxy kept running although it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Proxy {
    /// Starts the binary: `--io`, `--listen` and `--public-url` on a free
    /// loopback port, a private `cdr.path`, a random 20-port RTP window
    /// (unless `args` has `--rtp-ports`), `TWILIO_AUTH_TOKEN` =
    /// [`AUTH_TOKEN`] (unless `env` sets it; `""` removes it). Returns once
    /// the binary printed its `voxproxy listening` line.
    pub fn start(io: Io, env: &[(&str, &str)], args: &[&str]) -> Proxy {
        Self::start_limited(io, env, args, None)
    }

    /// As [`Proxy::start`], under `RLIMIT_NOFILE` = `nofile` when given.
    pub fn start_limited(io: Io, env: &[(&str, &str)], args: &[&str], nofile: Option<u64>) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let cdr_path = dir.path().join("cdr.jsonl");
        let port = free_tcp_port();
        let tls = env.iter().any(|(k, v)| *k == "VOXPROXY_SERVER_TLS_CERT" && !v.is_empty());
        let public_url = format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" });
        let listen = format!("127.0.0.1:{port}");
        let window = rtp_window();
        let cdr = cdr_path.to_string_lossy().into_owned();
        let mut full_env: Vec<(&str, &str)> =
            vec![("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("VOXPROXY_CDR_PATH", cdr.as_str())];
        for (k, v) in env {
            full_env.retain(|(key, _)| key != k);
            full_env.push((k, v));
        }
        let auth_token = full_env
            .iter()
            .find(|(k, v)| *k == "TWILIO_AUTH_TOKEN" && !v.is_empty())
            .map(|(_, v)| (*v).to_owned());
        let mut full_args = vec!["--io", io.as_str(), "--listen", &listen];
        if !has_flag(args, "--public-url") {
            full_args.extend(["--public-url", &public_url]);
        }
        if !has_flag(args, "--rtp-ports") {
            full_args.extend(["--rtp-ports", &window]);
        }
        full_args.extend_from_slice(args);
        let mut child = command_limited(&full_env, &full_args, nofile)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("voxproxy starts");

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut child_stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = child_stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&buf[..n]);
            }
        });
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once nobody listens, keep draining so the child never blocks on stdout.
                let _ = lines_tx.send(line);
            }
        });

        let mut proxy = Proxy {
            child,
            addr: listen.parse().expect("listen address"),
            public_url: full_args
                .iter()
                .position(|a| *a == "--public-url")
                .map(|i| full_args[i + 1].trim_end_matches('/').to_owned())
                .expect("--public-url"),
            tls,
            auth_token,
            cdr_path,
            io: String::new(),
            client_receive_buffer: None,
            stderr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let Some(rest) = line.strip_prefix("voxproxy listening on ") else { continue };
                    let (addr, io_part) = rest.split_once(' ').expect("`ADDR (io X)`");
                    assert_eq!(addr.parse::<SocketAddr>().ok(), Some(proxy.addr), "announced address");
                    proxy.io =
                        io_part.trim_matches(|c| c == '(' || c == ')').trim_start_matches("io ").to_owned();
                    assert_eq!(proxy.io, io.as_str(), "the proxy runs the I/O backend asked for");
                    return proxy;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "voxproxy --io {} exited before listening: {:?}\n--- stderr ---\n{}",
                        io.as_str(),
                        proxy.child.try_wait(),
                        proxy.stderr_text()
                    );
                }
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "voxproxy --io {} exited ({status}) before listening\n--- stderr ---\n{}",
                    io.as_str(),
                    proxy.stderr_text()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "voxproxy did not say `voxproxy listening` within {START_TIMEOUT:?}\n--- stderr ---\n{}",
                proxy.stderr_text()
            );
        }
    }

    /// What the binary wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .into_owned()
    }

    /// Whether the process is still running.
    pub fn child_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for voxproxy") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "voxproxy did not exit within {timeout:?}\n--- stderr ---\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A signer for what the fake Twilio sends.
    pub fn signer(&self) -> SignatureValidator {
        let token = self.auth_token.as_deref().unwrap_or(AUTH_TOKEN);
        SignatureValidator::new(token, &self.public_url).expect("signer")
    }

    /// A plain TCP connection to the listener from `source` (another
    /// loopback address, so that it counts as another client).
    pub async fn connect_from(&self, source: std::net::IpAddr) -> std::io::Result<TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        match tokio::time::timeout(WAIT, socket.connect(self.addr)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    /// The signed voice webhook of `call_sid`, sent from `source`; `None`
    /// when the proxy closed the connection instead of answering.
    pub async fn webhook_from(&self, source: std::net::IpAddr, call_sid: &str) -> Option<HttpResponse> {
        assert!(!self.tls, "webhook_from speaks plain HTTP");
        let params = voice_params(call_sid);
        let signature = self.signer().sign_form("/twilio/voice", &params).expect("sign");
        let tcp = self.connect_from(source).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::builder()
            .method("POST")
            .uri("/twilio/voice")
            .header("host", self.addr.to_string())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(Full::new(Bytes::from(form_encode(&params))))
            .expect("request");
        let response = tokio::time::timeout(WAIT, sender.send_request(request)).await.ok()?.ok()?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(WAIT, body.collect()).await.ok()?.ok()?.to_bytes();
        Some(HttpResponse { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    /// A connection to the listener, TLS when the proxy speaks it.
    pub async fn connect(&self) -> Conn {
        let connect = async {
            match self.client_receive_buffer {
                None => TcpStream::connect(self.addr).await,
                Some(size) => {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.set_recv_buffer_size(size)?;
                    socket.connect(self.addr).await
                }
            }
        };
        let tcp = tokio::time::timeout(WAIT, connect)
            .await
            .expect("connect in time")
            .expect("connect to the proxy");
        tcp.set_nodelay(true).expect("nodelay");
        if self.tls {
            let name = rustls_pki_types::ServerName::IpAddress(self.addr.ip().into());
            let tls = tokio::time::timeout(WAIT, tls_connector().connect(name, tcp))
                .await
                .expect("TLS handshake in time")
                .expect("TLS handshake with the proxy's certificate");
            Box::new(tls)
        } else {
            Box::new(tcp)
        }
    }

    /// One HTTP/1.1 request on a fresh connection.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> HttpResponse {
        let response = self.http_stream(method, path, headers, body).await;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(WAIT, body.collect())
            .await
            .expect("response body in time")
            .expect("response body")
            .to_bytes();
        HttpResponse { status: parts.status.as_u16(), headers: parts.headers, body }
    }

    /// One request whose response body is left to the caller (SSE).
    pub async fn http_stream(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> http::Response<hyper::body::Incoming> {
        let conn = self.connect().await;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(conn)).await.expect("HTTP handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request =
            http::Request::builder().method(method).uri(path).header("host", self.addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .expect("response in time")
            .expect("response")
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.http("GET", path, &[], Vec::new()).await
    }

    /// A control API request with the admin token.
    pub async fn admin(&self, method: &str, path: &str, body: Vec<u8>) -> HttpResponse {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        self.http(method, path, &[("authorization", &auth), ("content-type", "application/json")], body).await
    }

    /// The voice webhook as Twilio sends it, signed.
    pub async fn webhook(&self, call_sid: &str) -> HttpResponse {
        let params = voice_params(call_sid);
        let signature = self.signer().sign_form("/twilio/voice", &params).expect("sign");
        self.post_form("/twilio/voice", &params, Some(&signature)).await
    }

    /// A form POST with an optional `X-Twilio-Signature`.
    pub async fn post_form(
        &self,
        path: &str,
        params: &[(&str, &str)],
        signature: Option<&str>,
    ) -> HttpResponse {
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(signature) = signature {
            headers.push(("x-twilio-signature", signature));
        }
        self.http("POST", path, &headers, form_encode(params).into_bytes()).await
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let response = self.get("/metrics").await;
        assert_eq!(response.status, 200, "GET /metrics");
        Metrics::parse(&response.text())
    }

    /// Polls `/metrics` until `series` reaches `at_least`; returns its value.
    pub async fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.metrics().await.get(series);
            if value >= at_least {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric {series} = {value}, expected at least {at_least} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every call record written so far.
    pub fn records(&self) -> Vec<Value> {
        let Ok(text) = std::fs::read_to_string(&self.cdr_path) else { return Vec::new() };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("call record is not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits for the record of `stream_sid`.
    pub async fn wait_record(&self, stream_sid: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(record) = self.records().into_iter().find(|r| r["stream_sid"] == stream_sid) {
                return record;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no call record for {stream_sid} within {WAIT:?}; records: {:?}",
                self.records()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Subscribes to `/v1/events`.
    pub async fn events(&self) -> Events {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let response = self.http_stream("GET", "/v1/events", &[("authorization", &auth)], Vec::new()).await;
        assert_eq!(response.status(), 200, "GET /v1/events");
        assert_eq!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let mut events = Events { body: response.into_body(), buffer: String::new() };
        // The first chunk is the comment that says the stream is live: after
        // it, every event published is ours.
        let deadline = tokio::time::Instant::now() + WAIT;
        while !events.buffer.contains("\n\n") {
            events.read_chunk(deadline).await.expect("the SSE greeting");
        }
        events
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- voxproxy stderr ({}) ---\n{}", self.io, self.stderr_text());
        }
    }
}

/// The voice webhook form of a fresh inbound call.
pub fn voice_params(call_sid: &str) -> Vec<(&str, &str)> {
    vec![
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+15550001111"),
        ("To", "+15550002222"),
    ]
}

/// `application/x-www-form-urlencoded`.
pub fn form_encode(params: &[(&str, &str)]) -> String {
    fn push(out: &mut String, s: &str) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push(&mut out, name);
        out.push('=');
        push(&mut out, value);
    }
    out
}

/// A fresh `CA…`/`MZ…` style id.
pub fn sid(prefix: &str) -> String {
    format!("{prefix}{:016x}{:016x}", unique(), unique())
}

/// A byte stream to the proxy, plain or TLS.
pub type Conn = Box<dyn AsyncStream>;

/// What [`Conn`] needs.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// The certificate the TLS test gives the proxy.
pub fn test_cert() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy/src/testdata/ec-cert.pem")
}

/// The key of [`test_cert`].
pub fn test_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy/src/testdata/ec-key-pkcs8.pem")
}

/// A TLS client that trusts [`test_cert`] only.
fn tls_connector() -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(test_cert()).expect("read the test certificate") {
        roots.add(cert.expect("PEM certificate")).expect("trust the test certificate");
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A response read to its end.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as TwiML.
    pub fn twiml(&self) -> twiml::Response {
        assert_eq!(self.status, 200, "webhook answer: {}", self.text());
        let content_type = self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("text/xml"), "TwiML content type, got {content_type:?}");
        twiml::Response::from_xml(&self.text()).unwrap_or_else(|e| panic!("not TwiML ({e}): {}", self.text()))
    }
}

/// Whether a TwiML answer is `<Reject reason="busy"/>`.
pub fn is_busy_reject(answer: &twiml::Response) -> bool {
    matches!(
        answer.verbs.as_slice(),
        [Verb::Reject(reject)] if reject.reason.as_ref().map(|r| r.as_str()) == Some("busy")
    )
}

/// A parsed Prometheus text exposition: `name{labels}` → value.
#[derive(Debug)]
pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut map = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("metrics line: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("metrics value: {line}"));
            map.insert(series.to_owned(), value);
        }
        Metrics(map)
    }

    /// The value of one series, e.g. `voxproxy_calls_refused_total{reason="draining"}`.
    pub fn get(&self, series: &str) -> f64 {
        *self.0.get(series).unwrap_or_else(|| panic!("no series {series} in /metrics"))
    }
}

/// A `/v1/events` subscription.
pub struct Events {
    body: hyper::body::Incoming,
    buffer: String,
}

impl Events {
    async fn read_chunk(&mut self, deadline: tokio::time::Instant) -> Option<()> {
        loop {
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await.ok()??.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
                return Some(());
            }
        }
    }

    /// The next event (name, JSON data), skipping comments; `None` on timeout.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if let Some(name) = name {
                    let value =
                        serde_json::from_str(&data).unwrap_or_else(|e| panic!("SSE data ({e}): {data}"));
                    return Some((name, value));
                }
            }
            self.read_chunk(deadline).await?;
        }
    }

    /// Waits for the event `name` of `stream_sid`, skipping others.
    pub async fn wait_for(&mut self, name: &str, stream_sid: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some((event, data)) if event == name && data["stream_sid"] == stream_sid => return data,
                Some((event, _)) => seen.push(event),
                None => panic!("no `{name}` event for {stream_sid} within {timeout:?}; saw {seen:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Fake Twilio
// ---------------------------------------------------------------------------

/// What the proxy sends on the media WebSocket.
#[derive(Debug, PartialEq)]
pub enum FromProxy {
    /// `media`: the decoded μ-law payload.
    Media(Vec<u8>),
    /// `mark` with its name.
    Mark(String),
    /// `clear`.
    Clear,
    /// A close frame (its code), or the connection ended without one (`None`).
    Closed(Option<u16>),
}

/// One Media Streams call as Twilio places it.
pub struct TwilioCall {
    ws: WebSocketStream<Conn>,
    /// `CA…`.
    pub call_sid: String,
    /// `MZ…`.
    pub stream_sid: String,
    /// The `<Parameter>`s of the TwiML.
    pub parameters: Vec<(String, String)>,
    sequence: u64,
    chunk: u64,
    /// `media.timestamp` of the next media frame, in ms.
    pub media_ms: u64,
}

/// Opens the media WebSocket of `proxy` with the given signature header.
pub async fn open_media_ws(
    proxy: &Proxy,
    path: &str,
    signature: Option<&str>,
) -> Result<WebSocketStream<Conn>, tungstenite::Error> {
    let scheme = if proxy.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}{path}", proxy.addr);
    let mut request = url.into_client_request().expect("WebSocket request");
    if let Some(signature) = signature {
        request.headers_mut().insert("x-twilio-signature", signature.parse().expect("header value"));
    }
    let conn = proxy.connect().await;
    // Big enough for the oversize test's frames.
    let config = WebSocketConfig::default().max_message_size(Some(1 << 20)).max_frame_size(Some(1 << 20));
    let (ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async_with_config(request, conn, Some(config)))
            .await
            .expect("WebSocket handshake in time")?;
    Ok(ws)
}

impl TwilioCall {
    /// Places a call: signed webhook, `<Connect><Stream>` followed, signed
    /// handshake, `connected` and `start` sent.
    pub async fn start(proxy: &Proxy) -> TwilioCall {
        Self::try_start(proxy).await.expect("the webhook answered <Reject reason=\"busy\"/>")
    }

    /// As [`TwilioCall::start`], or `None` when the webhook rejects the call as busy.
    pub async fn try_start(proxy: &Proxy) -> Option<TwilioCall> {
        let call_sid = sid("CA");
        let answer = proxy.webhook(&call_sid).await.twiml();
        if is_busy_reject(&answer) {
            return None;
        }
        Some(Self::follow(proxy, call_sid, &answer).await)
    }

    /// Follows a `<Connect><Stream>` answer for `call_sid` as Twilio does:
    /// signed handshake, then `connected` and `start` with the TwiML's
    /// `<Parameter>`s (the stream token among them) as custom parameters.
    pub async fn follow(proxy: &Proxy, call_sid: String, answer: &twiml::Response) -> TwilioCall {
        let stream = answer
            .bidirectional_stream()
            .unwrap_or_else(|| panic!("the webhook answer has no <Connect><Stream>: {answer:?}"));
        let url = stream.url.as_str().to_owned();
        let expected_scheme = if proxy.tls { "wss://" } else { "ws://" };
        assert_eq!(
            url,
            format!("{expected_scheme}{}/twilio/media", proxy.public_url.split_once("://").expect("url").1),
            "stream URL"
        );
        let parameters: Vec<(String, String)> =
            stream.parameters.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
        Self::open_stream(proxy, call_sid, sid("MZ"), parameters).await
    }

    /// Follows the `<Start><Stream>` (a fork) of an answer for `call_sid`
    /// as Twilio does, announcing both tracks in `start`.
    pub async fn follow_fork(proxy: &Proxy, call_sid: String, answer: &twiml::Response) -> TwilioCall {
        let stream = answer
            .verbs
            .iter()
            .find_map(|verb| match verb {
                Verb::Start(start) => start.nouns.iter().find_map(|noun| match noun {
                    twiml::MediaNoun::Stream(stream) => Some(stream),
                    twiml::MediaNoun::Other(_) => None,
                }),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the webhook answer has no <Start><Stream>: {answer:?}"));
        let parameters: Vec<(String, String)> =
            stream.parameters.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
        Self::open_stream_tracks(proxy, call_sid, sid("MZ"), parameters, &["inbound", "outbound"]).await
    }

    /// Opens a signed media WebSocket and sends `connected` and a `start`
    /// for `call_sid` and `stream_sid` with `parameters` as its custom
    /// parameters, whatever the webhook said (a forged or replayed stream).
    pub async fn open_stream(
        proxy: &Proxy,
        call_sid: String,
        stream_sid: String,
        parameters: Vec<(String, String)>,
    ) -> TwilioCall {
        Self::open_stream_tracks(proxy, call_sid, stream_sid, parameters, &["inbound"]).await
    }

    /// As [`TwilioCall::open_stream`], with `tracks` as `start.tracks`.
    pub async fn open_stream_tracks(
        proxy: &Proxy,
        call_sid: String,
        stream_sid: String,
        parameters: Vec<(String, String)>,
        tracks: &[&str],
    ) -> TwilioCall {
        let path = "/twilio/media";
        let signature = proxy.signer().sign_websocket(path).expect("sign");
        let ws = open_media_ws(proxy, path, Some(&signature)).await.expect("media WebSocket opens");
        let mut call =
            TwilioCall { ws, call_sid, stream_sid, parameters, sequence: 0, chunk: 0, media_ms: 0 };
        call.send_json(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})).await;
        let custom: serde_json::Map<String, Value> =
            call.parameters.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        call.sequence = 1;
        let start = json!({
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": call.stream_sid,
                "callSid": call.call_sid,
                "tracks": tracks,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": custom,
            },
            "streamSid": call.stream_sid,
        });
        call.send_json(start).await;
        call
    }

    /// Sends any text frame. If the proxy has closed the WebSocket, the
    /// failure says with which close code.
    pub async fn send_text(&mut self, text: String) {
        let sent =
            tokio::time::timeout(WAIT, self.ws.send(Message::Text(text.into()))).await.expect("send in time");
        if let Err(e) = sent {
            let close = self.next(Duration::from_millis(200)).await;
            panic!("sending on the media WebSocket failed ({e}); the proxy had sent {close:?}");
        }
    }

    async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// One `media` frame of μ-law; `media.timestamp` advances by its length.
    pub async fn send_media(&mut self, mulaw: &[u8]) {
        self.send_track_media("inbound", mulaw).await;
    }

    /// As a fork with both tracks sends them: a frame of the caller's audio
    /// (`inbound`) and one of what the caller hears (`outbound`) at the
    /// same `media.timestamp`, which then advances.
    pub async fn send_both_tracks(&mut self, inbound: &[u8], outbound: &[u8]) {
        let media_ms = self.media_ms;
        self.send_track_media("outbound", outbound).await;
        self.media_ms = media_ms;
        self.send_track_media("inbound", inbound).await;
    }

    /// One `media` frame of `track`; `media.timestamp` advances by its length.
    async fn send_track_media(&mut self, track: &str, mulaw: &[u8]) {
        self.chunk += 1;
        let message = json!({
            "event": "media",
            "sequenceNumber": self.next_sequence(),
            "media": {
                "track": track,
                "chunk": self.chunk.to_string(),
                "timestamp": self.media_ms.to_string(),
                "payload": BASE64.encode(mulaw),
            },
            "streamSid": self.stream_sid,
        });
        self.media_ms += mulaw.len() as u64 / 8;
        self.send_json(message).await;
    }

    /// A key press.
    pub async fn send_dtmf(&mut self, digit: char) {
        let message = json!({
            "event": "dtmf",
            "streamSid": self.stream_sid,
            "sequenceNumber": self.next_sequence(),
            "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
        });
        self.send_json(message).await;
    }

    /// Echoes a mark: its audio has played.
    pub async fn send_mark(&mut self, name: &str) {
        let message = json!({
            "event": "mark",
            "sequenceNumber": self.next_sequence(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        });
        self.send_json(message).await;
    }

    /// `stop`: the call is over.
    pub async fn send_stop(&mut self) {
        let message = json!({
            "event": "stop",
            "sequenceNumber": self.next_sequence(),
            "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        });
        self.send_json(message).await;
    }

    /// The next message from the proxy; `None` if nothing came in `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<FromProxy> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(FromProxy::Closed(None)),
                Ok(Some(Err(_))) => return Some(FromProxy::Closed(None)),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => return Some(self.parse(&text)),
                Message::Close(frame) => return Some(FromProxy::Closed(frame.map(|f| u16::from(f.code)))),
                Message::Binary(_) => panic!("the proxy sent a binary frame; Media Streams is text only"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    fn parse(&self, text: &str) -> FromProxy {
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        assert_eq!(value["streamSid"], self.stream_sid.as_str(), "streamSid of {text}");
        match value["event"].as_str() {
            Some("media") => {
                let payload =
                    value["media"]["payload"].as_str().unwrap_or_else(|| panic!("media payload: {text}"));
                FromProxy::Media(BASE64.decode(payload).unwrap_or_else(|e| panic!("base64 ({e}): {text}")))
            }
            Some("mark") => FromProxy::Mark(
                value["mark"]["name"].as_str().unwrap_or_else(|| panic!("mark name: {text}")).to_owned(),
            ),
            Some("clear") => FromProxy::Clear,
            _ => panic!("unexpected message from the proxy: {text}"),
        }
    }

    /// Collects `bytes` bytes of media (marks and clears skipped).
    pub async fn collect_media(&mut self, bytes: usize, timeout: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut audio = Vec::with_capacity(bytes);
        while audio.len() < bytes {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(FromProxy::Media(payload)) => audio.extend_from_slice(&payload),
                Some(FromProxy::Mark(_) | FromProxy::Clear) => {}
                Some(FromProxy::Closed(code)) => {
                    panic!("media WebSocket closed ({code:?}) after {} of {bytes} bytes", audio.len())
                }
                None => panic!("only {} of {bytes} bytes of media within {timeout:?}", audio.len()),
            }
        }
        audio
    }

    /// Waits for the close, skipping media and marks; the close code.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(FromProxy::Closed(code)) => return code,
                Some(_) => {}
                None => panic!("the proxy did not close the media WebSocket within {timeout:?}"),
            }
        }
    }

    /// Closes the TCP connection without a close frame or `stop`.
    pub fn drop_connection(self) {
        drop(self.ws);
    }
}

// ---------------------------------------------------------------------------
// Fake backend
// ---------------------------------------------------------------------------

/// One RTP packet as received.
#[derive(Clone, Debug)]
pub struct Rtp {
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

/// RTP payload type of comfort noise, which the proxy sends as keep-alive.
pub const COMFORT_NOISE: u8 = 13;

/// The voice stack: a UDP socket at `rtp.backend`.
pub struct Backend {
    /// The socket.
    pub socket: UdpSocket,
    /// Its address, given to the proxy as `--backend`.
    pub addr: SocketAddr,
    /// Where the proxy's RTP came from (the call's RTP port).
    pub proxy: Option<SocketAddr>,
    sequence: u16,
    timestamp: u32,
}

impl Backend {
    /// Binds a loopback socket.
    pub async fn bind() -> Backend {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind the backend");
        let addr = socket.local_addr().expect("backend address");
        Backend { socket, addr, proxy: None, sequence: 1000, timestamp: 160_000 }
    }

    /// `rtp.backend` for `--backend`.
    pub fn arg(&self) -> String {
        self.addr.to_string()
    }

    /// The next datagram, from anywhere; `None` on timeout.
    pub async fn recv_datagram(&mut self, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 4096];
        let (n, from) = tokio::time::timeout(timeout, self.socket.recv_from(&mut buf)).await.ok()?.ok()?;
        buf.truncate(n);
        Some((buf, from))
    }

    /// The next RTP packet other than a comfort-noise keep-alive.
    pub async fn recv_rtp(&mut self, timeout: Duration) -> Option<Rtp> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (datagram, from) = self.recv_datagram(left).await?;
            if let Some(proxy) = self.proxy {
                assert_eq!(from, proxy, "the call's RTP comes from one port");
            }
            self.proxy = Some(from);
            let packet =
                RtpPacket::parse(&datagram).unwrap_or_else(|e| panic!("the proxy sent bad RTP: {e:?}"));
            if packet.payload_type() == COMFORT_NOISE {
                continue;
            }
            return Some(Rtp {
                payload_type: packet.payload_type(),
                marker: packet.marker(),
                sequence: packet.sequence_number(),
                timestamp: packet.timestamp(),
                ssrc: packet.ssrc(),
                payload: packet.payload().to_vec(),
            });
        }
    }

    /// Receives `count` audio packets (payload type `pt`), failing otherwise.
    pub async fn recv_audio(&mut self, count: usize, pt: u8) -> Vec<Rtp> {
        let mut packets = Vec::with_capacity(count);
        while packets.len() < count {
            let packet = self
                .recv_rtp(WAIT)
                .await
                .unwrap_or_else(|| panic!("only {} of {count} RTP packets arrived", packets.len()));
            assert_eq!(packet.payload_type, pt, "payload type of the proxy's RTP");
            packets.push(packet);
        }
        packets
    }

    /// Sends one RTP packet of `pt` to the call; sequence and timestamp
    /// advance (timestamp by `samples`).
    pub async fn send_audio(&mut self, pt: u8, payload: &[u8], samples: u32, marker: bool) {
        let to = self.proxy.expect("the proxy's RTP port is known once it sent something");
        let mut header = RtpHeader::new(pt, self.sequence, self.timestamp, 0x0bac_4e2d);
        header.marker = marker;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        let mut buf = vec![0u8; 12 + payload.len()];
        let n = header.write(payload, &mut buf).expect("RTP fits");
        self.socket.send_to(&buf[..n], to).await.expect("send RTP");
    }

    /// Echoes a packet back as the backend's own stream.
    pub async fn echo(&mut self, packet: &Rtp, samples: u32) {
        self.send_audio(packet.payload_type, &packet.payload, samples, false).await;
    }
}

// ---------------------------------------------------------------------------
// Fake Twilio REST API
// ---------------------------------------------------------------------------

/// One request the fake Twilio REST API received.
#[derive(Debug, Clone)]
pub struct RestRequest {
    /// `POST`, `GET`.
    pub method: String,
    /// The path, `/2010-04-01/Accounts/AC…/Calls.json`.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The form body.
    pub body: String,
    /// What the fake answered (the JSON body).
    pub response: Value,
}

impl RestRequest {
    /// One decoded value of the form body.
    pub fn form(&self, name: &str) -> Option<String> {
        form_value(&self.body, name)
    }
}

/// How the fake REST API answers a request: HTTP status and JSON body.
pub type RestAnswer = Box<dyn Fn(&RestRequest) -> (u16, Value) + Send + Sync>;

/// A fake Twilio REST API on loopback: records every request and answers
/// it with the test's function. Runs until the test's runtime ends.
pub struct FakeRest {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<RestRequest>>>,
}

impl FakeRest {
    /// Starts the API; `answer` decides every response.
    pub async fn start(answer: impl Fn(&RestRequest) -> (u16, Value) + Send + Sync + 'static) -> FakeRest {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake REST API");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let answer: Arc<RestAnswer> = Arc::new(Box::new(answer));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (log, answer) = (Arc::clone(&log), Arc::clone(&answer));
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let (log, answer) = (Arc::clone(&log), Arc::clone(&answer));
                            async move {
                                let method = req.method().to_string();
                                let path = req.uri().path().to_owned();
                                let authorization = req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body =
                                    req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let mut request = RestRequest {
                                    method,
                                    path,
                                    authorization,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                    response: Value::Null,
                                };
                                let (status, json) = answer(&request);
                                request.response = json.clone();
                                log.lock().expect("log").push(request);
                                let mut response =
                                    http::Response::new(Full::new(Bytes::from(json.to_string())));
                                *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
                                response.headers_mut().insert(
                                    "content-type",
                                    http::HeaderValue::from_static("application/json"),
                                );
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        FakeRest { addr, seen }
    }

    /// `twilio.api_base` pointing here.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RestRequest> {
        self.seen.lock().expect("log").clone()
    }

    /// Waits for a request `matches` accepts; fails after [`WAIT`].
    pub async fn wait_for(&self, matches: impl Fn(&RestRequest) -> bool) -> RestRequest {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = self.requests().into_iter().find(|r| matches(r)) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such request to the fake REST API within {WAIT:?}; seen: {:?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Decodes one `application/x-www-form-urlencoded` value.
pub fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let bytes = v.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).expect("UTF-8")
        })
    })
}
