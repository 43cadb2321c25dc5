//! Running voxproxy as a deployed daemon: the admin listener splits the
//! routes, systemd hears `READY=1` and `STOPPING=1`, `--check-config`
//! checks without starting, a start whose `limits.max_calls` cannot fit
//! in the open-file limit is refused, the unit file passes
//! `systemd-analyze verify`, and the Grafana dashboard queries only
//! metrics that `/metrics` renders.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{self, ADMIN_TOKEN, AUTH_TOKEN, Io, Proxy, WAIT};

both_io!(admin_listener_takes_metrics_and_the_control_api, systemd_hears_ready_then_stopping);

/// One plain HTTP/1.1 request to `addr` (`Connection: close`): status and body.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("content-length: 0\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.expect("receive");
        String::from_utf8_lossy(&response).into_owned()
    };
    let response = tokio::time::timeout(WAIT, exchange).await.expect("answer in time");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// With `server.admin_listen`, `/metrics` and `/v1/*` answer there and 404
/// on the public listener; Twilio's routes answer only on the public one;
/// both answer the health probes.
async fn admin_listener_takes_metrics_and_the_control_api(io: Io) {
    let admin: SocketAddr = format!("127.0.0.1:{}", harness::free_tcp_port()).parse().expect("address");
    let admin_env = admin.to_string();
    let proxy = Proxy::start(
        io,
        &[("VOXPROXY_SERVER_ADMIN_LISTEN", &admin_env), ("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)],
        &[],
    );
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    // The public listener.
    assert_eq!(proxy.get("/metrics").await.status, 404, "no metrics on the public listener");
    assert_eq!(proxy.admin("GET", "/v1/config", Vec::new()).await.status, 404, "no control API there");
    assert_eq!(proxy.get("/healthz").await.status, 200);
    assert_eq!(proxy.get("/readyz").await.status, 200);
    assert_eq!(proxy.webhook(&harness::sid("CA")).await.status, 200, "Twilio's webhook is served");
    // The admin listener.
    let (status, metrics) = request(admin, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("voxproxy_build_info{version=\""), "{metrics}");
    assert!(metrics.contains("voxproxy_max_calls 2000\n"), "{metrics}");
    assert!(
        metrics.contains("voxproxy_http_requests_total{route=\"not_found\",code=\"404\"} 2\n"),
        "the public listener's refusals are counted: {metrics}"
    );
    let (status, config) = request(admin, "GET", "/v1/config", &auth).await;
    assert_eq!(status, 200, "{config}");
    assert!(config.contains(&format!("\"server.admin_listen\":\"{admin}\"")), "{config}");
    assert_eq!(request(admin, "GET", "/v1/config", &[]).await.0, 401, "the token is still required");
    assert_eq!(request(admin, "POST", "/twilio/voice", &[]).await.0, 404, "no Twilio routes there");
    assert_eq!(request(admin, "GET", "/healthz", &[]).await.0, 200);
    assert_eq!(request(admin, "GET", "/readyz", &[]).await.0, 200);
    assert_eq!(request(admin, "GET", "/v1/health", &auth).await.0, 200);
    dashboard_queries_only_rendered_metrics(&metrics, io);
}

/// Every metric name a query of `packaging/grafana/voxproxy.json` names is
/// one this `/metrics` text renders (histograms by their `_bucket`); the
/// io_uring rings' families only where the proxy runs on io_uring.
fn dashboard_queries_only_rendered_metrics(metrics: &str, io: Io) {
    let rendered: BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/grafana/voxproxy.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read the dashboard")).expect("JSON");
    let mut queries: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("variables") {
        if let Some(query) = variable["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    let mut names = 0;
    for query in &queries {
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("voxproxy_uring_") && io == Io::Epoll {
                assert!(!rendered.contains(word), "{word} rendered on epoll");
                continue;
            }
            if word.starts_with("voxproxy_") || word.starts_with("process_") {
                assert!(
                    rendered.contains(word),
                    "the dashboard queries {word}, which /metrics does not render"
                );
                names += 1;
            }
        }
    }
    assert!(names >= 30, "the dashboard's queries were read ({names} metric names)");
}

/// Under `NOTIFY_SOCKET`, the binary says `READY=1` once it listens and
/// `STOPPING=1` when SIGTERM starts the drain, in that order.
async fn systemd_hears_ready_then_stopping(io: Io) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    let path_env = path.to_string_lossy().into_owned();
    let mut proxy = Proxy::start(io, &[("NOTIFY_SOCKET", &path_env)], &[]);
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification after start");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // The listener answers by the time READY=1 was sent.
    assert_eq!(proxy.get("/healthz").await.status, 200);
    proxy.signal("TERM");
    let n = socket.recv(&mut buf).expect("a notification on SIGTERM");
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    // Generous: the machine running the suite may be busy compiling.
    assert!(proxy.wait_exit(4 * WAIT).await.success());
}

fn check_config(file: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(harness::binary());
    cmd.arg("serve").arg("--check-config").arg(file);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("VOXPROXY_") || key.starts_with("TWILIO_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("voxproxy runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `serve --check-config FILE` exits 0 on the example (its call-record
/// directory pointed somewhere that exists) and 2 with one line per
/// problem otherwise, without binding anything.
#[test]
fn check_config_validates_without_starting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/voxproxy.toml");
    let cdr = dir.path().join("cdr.jsonl");
    let cdr = cdr.to_string_lossy();
    let (code, stdout, stderr) =
        check_config(&example, &[("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("VOXPROXY_CDR_PATH", &cdr)]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.ends_with(": ok\n"), "{stdout}");
    assert!(!Path::new(&*cdr).exists(), "checking opens no call-record file");

    // As it ships, without the secrets: the missing token is a problem,
    // the state directory that does not exist here a warning.
    let (code, _, stderr) = check_config(&example, &[]);
    assert_eq!(code, 2, "{stderr}");
    let (warnings, problems): (Vec<&str>, Vec<&str>) = stderr.lines().partition(|l| l.contains("warning:"));
    assert_eq!(problems.len(), 1, "{stderr}");
    assert!(problems[0].contains("TWILIO_AUTH_TOKEN is not set"), "{stderr}");
    assert!(warnings.iter().any(|w| w.contains("cdr.path = \"/var/lib/voxproxy/cdr.jsonl\"")), "{stderr}");
    // With TLS files that are readable but no certificate as well: two
    // problems, one line each.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let junk = junk.to_string_lossy();
    let (code, _, stderr) =
        check_config(&example, &[("VOXPROXY_SERVER_TLS_CERT", &junk), ("VOXPROXY_SERVER_TLS_KEY", &junk)]);
    assert_eq!(code, 2, "{stderr}");
    let problems: Vec<&str> = stderr.lines().filter(|l| !l.contains("warning:")).collect();
    assert_eq!(problems.len(), 2, "{stderr}");
    assert!(problems[0].contains("TWILIO_AUTH_TOKEN is not set"), "{stderr}");
    assert!(problems[1].contains("server.tls: "), "{stderr}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_calls = \"many\"\n").expect("write");
    let (code, _, stderr) = check_config(&bad, &[("TWILIO_AUTH_TOKEN", AUTH_TOKEN)]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("limits.max_calls = \"many\""), "{stderr}");
}

/// Under `ulimit -n 64` (soft and hard), `limits.max_calls = 2000` cannot
/// fit: the start is refused with one sentence saying how many fit.
#[test]
fn a_start_whose_max_calls_cannot_fit_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cdr = dir.path().join("cdr.jsonl");
    let cdr = cdr.to_string_lossy();
    let (status, stderr) = harness::run_to_exit_limited(
        &[("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("VOXPROXY_CDR_PATH", &cdr)],
        &["--io", "epoll", "--workers", "1"],
        Some(64),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("limits.max_calls = 2000 needs about"), "{stderr}");
    assert!(stderr.contains("or lower limits.max_calls to"), "{stderr}");
    assert!(!Path::new(&*cdr).exists(), "nothing was opened before the refusal");
}

/// `systemd-analyze verify` accepts the unit (with `ExecStart` pointed at
/// the binary under test, which must exist for it); skipped where
/// systemd-analyze is not installed.
#[test]
fn the_systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/voxproxy.service"))
            .expect("read the unit");
    assert!(unit.contains("\nType=notify\n") && unit.contains("\nLimitNOFILE="), "{unit}");
    let binary = harness::binary().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("voxproxy.service");
    std::fs::write(&path, unit.replace("/usr/bin/voxproxy", &binary)).expect("write the unit");
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify: {text}");
    assert!(!text.contains("voxproxy.service:"), "no complaint about the unit: {text}");
}
