//! `voxproxy demo`: the proxy, an RTP echo backend and the Twilio simulator
//! in one process, on free loopback ports, and the latency table at the end.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use voxproxy::config::{Config, ServeArgs};
use voxproxy::server::Server;
use voxproxy_rig::echo::{EchoConfig, EchoServer};
use voxproxy_rig::sim::{self, SimConfig};

/// Flags of `voxproxy demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Concurrent simulated calls.
    #[arg(long, default_value_t = 50)]
    pub calls: u32,
    /// Seconds of audio each call sends.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Calls started per second while ramping up.
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// I/O backend of the proxy's workers.
    #[arg(long, default_value = "auto", value_parser = ["auto", "uring", "epoll"])]
    pub io: String,
    /// Where the JSON report goes (the latency plot goes beside it as .svg)
    /// [default: voxproxy-demo.json in the system's temporary directory].
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> ExitCode {
    match demo(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("voxproxy demo: {message}");
            ExitCode::FAILURE
        }
    }
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("no free loopback port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn random_token() -> String {
    let bytes: [u8; 16] = voxproxy::runtime::random_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn demo(args: &DemoArgs) -> Result<bool, String> {
    let dir = std::env::temp_dir().join(format!("voxproxy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let json = args.json.clone().unwrap_or_else(|| std::env::temp_dir().join("voxproxy-demo.json"));
    if json.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
        return Err(format!("--json {} would be overwritten by the plot; name it *.json", json.display()));
    }

    let echo = EchoServer::spawn(&EchoConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ..EchoConfig::default()
    })
    .map_err(|e| format!("cannot start the echo backend: {e}"))?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let token = random_token();
    let serve_args = ServeArgs {
        listen: Some(format!("127.0.0.1:{port}")),
        public_url: Some(url.clone()),
        backend: Some(echo.local_addr().to_string()),
        io: Some(args.io.clone()),
        ..ServeArgs::default()
    };
    let cdr = dir.join("cdr.jsonl");
    let env = [
        ("TWILIO_AUTH_TOKEN".to_owned(), token.clone()),
        ("VOXPROXY_CDR_PATH".to_owned(), cdr.display().to_string()),
        // One client address places every call here; barge-in would cut the
        // echo of the caller's own voice short.
        ("VOXPROXY_LIMITS_WEBHOOK_RATE_PER_IP".to_owned(), "0".to_owned()),
        ("VOXPROXY_VAD_BARGE_IN".to_owned(), "false".to_owned()),
        ("VOXPROXY_LIMITS_MAX_CALLS".to_owned(), args.calls.max(1).to_string()),
    ];
    let config = Config::from_sources(None, &serve_args, env).map_err(|e| e.to_string())?;
    // Only warnings: the table is the output. A second init (tests) is
    // harmless. Kept to the end: dropping it stops the log writer.
    let _log = voxproxy::logging::init(voxproxy::logging::LogFormat::Text, "warn").ok();
    let server = Server::start(config, &serve_args).map_err(|e| e.to_string())?;
    eprintln!(
        "voxproxy demo: proxy on {url} (io {}), echo backend on {}, {} calls × {} s",
        server.io_backend(),
        echo.local_addr(),
        args.calls,
        args.seconds
    );
    let media = Duration::try_from_secs_f64(args.seconds)
        .map_err(|_| "--seconds must be a non-negative number".to_owned())?;
    let sim = SimConfig {
        calls: args.calls,
        media,
        ramp: args.ramp,
        auth_token: Some(token),
        progress: true,
        proxy_cost: Some(super::cost::in_process(server.metrics())),
        ..SimConfig::new(url)
    };
    let report = sim::run_blocking(sim).map_err(|e| e.to_string());
    server.drain();
    let echo_stats = echo.shutdown();
    let report = report?;
    print!("{}", report.render_table());
    println!("echo backend: {} packets echoed", echo_stats.echoed);
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json, text).map_err(|e| format!("cannot write {}: {e}", json.display()))?;
    let svg = json.with_extension("svg");
    sim::write_svg(&report, &svg).map_err(|e| format!("cannot write {}: {e}", svg.display()))?;
    println!("report: {}  plot: {}  call records: {}", json.display(), svg.display(), cdr.display());
    Ok(report.calls.failed == 0 && report.frames.missing == 0)
}
