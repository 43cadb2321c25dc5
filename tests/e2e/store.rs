//! Two instances, one PostgreSQL (`store.url`): calls on both, sessions
//! listed from either, a hang-up and a session lookup sent to the other
//! instance, events of one instance on the other's `/v1/events`, and one
//! record per call in the table although the database restarts mid-run.
//!
//! The test starts its own throwaway PostgreSQL server (Debian's
//! `postgresql` package, which `.ci/run` installs): `initdb` in a temp
//! dir, a free loopback port, the unix socket in the temp dir. PostgreSQL
//! refuses to run as root, so as root the server runs as the `postgres`
//! user the package creates (or `nobody`) through `runuser`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::audio::FRAME;
use crate::harness::{ADMIN_TOKEN, Backend, Io, Proxy, TwilioCall, WAIT, free_tcp_port};

/// How long the whole test may take (two PostgreSQL starts included).
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
const PASSWORD: &str = "e2e-pg-password-7f3a";

/// A PostgreSQL server in a temp dir, stopped when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    user: Option<String>,
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/N/bin` holding `initdb`.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (`id -u`).
fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// `None` (after saying why) when PostgreSQL is not installed.
    fn start() -> Option<Postgres> {
        let Some(bin) = postgres_bin() else {
            eprintln!("skipped: PostgreSQL is not installed (apt-get install postgresql, as .ci/run does)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let user = is_root().then(|| {
            let known = |name: &str| {
                Command::new("id").arg("-u").arg(name).output().is_ok_and(|o| o.status.success())
            };
            if known("postgres") { "postgres".to_owned() } else { "nobody".to_owned() }
        });
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("password file");
        if let Some(user) = &user {
            // The server's user must own its directory and read the password file.
            let status = Command::new("chown").arg("-R").arg(user).arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown {user}");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let pg = Postgres { bin, data, port: free_tcp_port(), user, _dir: dir };
        let initdb = pg.bin.join("initdb");
        pg.run(
            &initdb,
            &[
                "-D",
                pg.data.to_str().expect("utf-8"),
                "-U",
                "voxproxy",
                "--auth=scram-sha-256",
                "--pwfile",
                pwfile.to_str().expect("utf-8"),
                "--no-sync",
            ],
        );
        pg.up();
        Some(pg)
    }

    fn run(&self, program: &Path, args: &[&str]) {
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        };
        let output = command.args(args).stdin(Stdio::null()).output().expect("runs");
        assert!(
            output.status.success(),
            "{} {args:?}: {}\n{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data.to_str().expect("utf-8");
        let mut all = vec!["-D", data, "-w", "-t", "30"];
        all.extend_from_slice(args);
        self.run(&self.bin.join("pg_ctl"), &all);
    }

    /// Starts (or restarts) the server on its port.
    fn up(&self) {
        let socket_dir = self.data.parent().expect("temp dir").to_str().expect("utf-8").to_owned();
        let log = format!("{socket_dir}/log");
        let options = format!("-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off", self.port);
        self.pg_ctl(&["-l", &log, "-o", &options, "start"]);
    }

    /// Stops the server (fast: open connections are cut).
    fn down(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    fn url(&self, with_password: bool) -> String {
        if with_password {
            format!("postgres://voxproxy:{PASSWORD}@127.0.0.1:{}/postgres", self.port)
        } else {
            format!("postgres://voxproxy@127.0.0.1:{}/postgres", self.port)
        }
    }

    /// One SQL query through `psql`: its rows, `|`-separated.
    fn query(&self, sql: &str) -> Vec<String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "voxproxy", "-d", "postgres"])
            .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap_or_default().to_owned();
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(self.bin.join("pg_ctl"));
                c
            }
            None => Command::new(self.bin.join("pg_ctl")),
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn two_instances_share_one_store() {
    let Some(pg) = Postgres::start() else { return };
    crate::harness::binary();
    if tokio::time::timeout(TEST_TIMEOUT, two_instances(&pg)).await.is_err() {
        panic!("test did not finish within {TEST_TIMEOUT:?}");
    }
}

fn instance(io: Io, backend: &Backend, id: &str, url: &str, password_env: bool) -> Proxy {
    let mut env = vec![
        ("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("VOXPROXY_STORE_URL", url),
        ("VOXPROXY_STORE_INSTANCE_ID", id),
        ("VOXPROXY_STORE_QUERY_TIMEOUT", "2s"),
    ];
    if password_env {
        env.push(("PGPASSWORD", PASSWORD));
    }
    Proxy::start(io, &env, &["--backend", &backend.arg()])
}

/// `GET /v1/sessions` on `proxy`: each session's stream SID and instance.
async fn listed(proxy: &Proxy) -> Vec<(String, String)> {
    let response = proxy.admin("GET", "/v1/sessions", Vec::new()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let mut sessions: Vec<(String, String)> = response.json()["sessions"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["stream_sid"].as_str().unwrap_or("").to_owned(),
                s["instance"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    sessions.sort();
    sessions
}

/// Polls until `proxy` lists exactly `expected` (sorted).
async fn wait_listed(proxy: &Proxy, mut expected: Vec<(String, String)>) {
    expected.sort();
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let now = listed(proxy).await;
        if now == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "sessions {now:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the table until it holds `calls` (call SIDs), once each.
async fn wait_rows(pg: &Pg<'_>, calls: &[&str]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut expected: Vec<String> = calls.iter().map(|c| (*c).to_owned()).collect();
    expected.sort();
    loop {
        let rows = pg.0.query("SELECT call_sid FROM voxproxy_call_records ORDER BY call_sid");
        if rows == expected {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "rows {rows:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Pg<'a>(&'a Postgres);

async fn two_instances(pg: &Postgres) {
    let uring = std::env::var("VOXPROXY_E2E_SKIP_URING").map_or(true, |v| v != "1");
    let io_a = if uring { Io::Uring } else { Io::Epoll };
    let mut backend_a = Backend::bind().await;
    let mut backend_b = Backend::bind().await;
    // A has the password in its URL, B from PGPASSWORD.
    let a = instance(io_a, &backend_a, "a", &pg.url(true), false);
    let b = instance(Io::Epoll, &backend_b, "b", &pg.url(false), true);

    let mut a1 = TwilioCall::start(&a).await;
    let mut b1 = TwilioCall::start(&b).await;
    let mut b2 = TwilioCall::start(&b).await;
    for call in [&mut a1, &mut b1, &mut b2] {
        call.send_media(&[0x31; FRAME]).await;
    }
    backend_a.recv_audio(1, 0).await;
    backend_b.recv_audio(1, 0).await;

    // Sessions listed from either instance, each with the instance carrying it.
    let all = vec![
        (a1.stream_sid.clone(), "a".to_owned()),
        (b1.stream_sid.clone(), "b".to_owned()),
        (b2.stream_sid.clone(), "b".to_owned()),
    ];
    wait_listed(&a, all.clone()).await;
    wait_listed(&b, all).await;

    // A session of B, looked up on A: B's own view, counters included.
    let one = a.admin("GET", &format!("/v1/sessions/{}", b2.stream_sid), Vec::new()).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["call_sid"], b2.call_sid.as_str());
    assert!(one.json()["stats"]["inbound_frames"].is_u64(), "{}", one.text());
    assert_eq!(a.admin("GET", "/v1/sessions/MZnowhere", Vec::new()).await.status, 404);

    // B's events reach a subscriber of A.
    let mut events = a.events().await;

    // Hang-up across instances: DELETE on A ends B's call.
    let hangup = a.admin("DELETE", &format!("/v1/sessions/{}", b1.stream_sid), Vec::new()).await;
    assert_eq!(hangup.status, 202, "DELETE through A: {}", hangup.text());
    assert_eq!(b1.wait_closed(WAIT).await, Some(1000), "B closed the hung-up call");
    assert_eq!(b.wait_record(&b1.stream_sid).await["end_reason"], "hangup");
    let ended = events.wait_for("call_ended", &b1.stream_sid, WAIT * 2).await;
    assert_eq!(ended["instance"], "b", "{ended}");
    wait_listed(&a, vec![(a1.stream_sid.clone(), "a".to_owned()), (b2.stream_sid.clone(), "b".to_owned())])
        .await;
    wait_rows(&Pg(pg), &[&b1.call_sid]).await;

    // The database goes away mid-run: calls end and start regardless, and
    // their records wait in each instance's spool.
    pg.down();
    a1.send_stop().await;
    b2.send_stop().await;
    a.wait_record(&a1.stream_sid).await;
    b.wait_record(&b2.stream_sid).await;
    let mut a2 = TwilioCall::start(&a).await;
    a2.send_media(&[0x31; FRAME]).await;
    a2.send_stop().await;
    a.wait_record(&a2.stream_sid).await;
    // A's own sessions are still listed, with the store's trouble said.
    let listing = a.admin("GET", "/v1/sessions", Vec::new()).await;
    assert_eq!(listing.status, 200);
    assert!(listing.json()["store_error"].is_string(), "{}", listing.text());

    // Health says so: degraded (calls go on), not unhealthy.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let health = a.admin("GET", "/v1/health", Vec::new()).await;
        let json = health.json();
        let store = json["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "store")).cloned();
        if store.as_ref().is_some_and(|c| c["status"] == "degraded") {
            assert_eq!(health.status, 200, "{json}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no degraded store check: {json}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pg.up();
    let calls = [a1.call_sid.as_str(), a2.call_sid.as_str(), b1.call_sid.as_str(), b2.call_sid.as_str()];
    wait_rows(&Pg(pg), &calls).await;
    let rows = pg.query(
        "SELECT call_sid, instance_id, stream_sid, end_reason, record->>'call_sid', started_at IS NOT NULL
         FROM voxproxy_call_records ORDER BY call_sid",
    );
    for row in &rows {
        let fields: Vec<&str> = row.split('|').collect();
        assert_eq!(fields[0], fields[4], "the jsonb record is the call's: {row}");
        assert_eq!(fields[5], "t", "{row}");
        let by = if fields[0] == b1.call_sid || fields[0] == b2.call_sid { "b" } else { "a" };
        assert_eq!(fields[1], by, "{row}");
    }
    // The file records and the table agree: one per call, none twice.
    let mut from_files: Vec<String> = a
        .records()
        .into_iter()
        .chain(b.records())
        .filter_map(|r: Value| r["call_sid"].as_str().map(str::to_owned))
        .collect();
    from_files.sort();
    assert_eq!(from_files, wait_rows(&Pg(pg), &calls).await);
    assert_eq!(pg.query("SELECT max(version) FROM voxproxy_schema_version"), ["1"]);
    // Back on line, every instance is listed again, with no session left.
    wait_listed(&a, Vec::new()).await;
    assert!(a.metrics().await.get("voxproxy_store_records_written_total") >= 2.0);
    for proxy in [&a, &b] {
        assert!(!proxy.stderr_text().contains(PASSWORD), "the password was logged");
    }
}

/// `cdr.path` is the spool of a store: a path that is no regular file
/// (`/dev/null` discards records) is refused at start, naming both keys.
#[test]
fn a_store_needs_a_call_record_file_to_spool_in() {
    let (status, stderr) = crate::harness::run_to_exit(
        &[
            ("TWILIO_AUTH_TOKEN", crate::harness::AUTH_TOKEN),
            ("VOXPROXY_STORE_URL", "postgres://voxproxy@127.0.0.1:1/voxproxy"),
            ("VOXPROXY_CDR_PATH", "/dev/null"),
        ],
        &["--io", "epoll"],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("store.url needs cdr.path to be a regular file"), "{stderr}");
    assert!(stderr.contains("/dev/null"), "{stderr}");
}
