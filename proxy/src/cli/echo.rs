//! `voxproxy echo --listen ADDR`: an RTP echo backend (see [`voxproxy_rig::echo`]).
//!
//! Every RTP datagram goes back to its sender with the echo's own SSRC and
//! sequence numbers, payload and timestamps unchanged; `--delay-ms`,
//! `--jitter-ms` and `--loss` add network impairments, repeatable with
//! `--seed`. It runs until interrupted (Ctrl-C or SIGTERM), then prints one
//! line of counters on stderr; `--verbose` also prints them every second.
//!
//! `--ws` makes it a WebSocket bot instead (Twilio's Media Streams protocol,
//! as `ws.protocol = "twilio"` speaks it) on the TCP address `--listen`:
//! every caller `media` comes straight back as a bot `media` with the same
//! payload, so `voxproxy sim` measures the round trip through the WebSocket
//! leg as it does through the RTP one. Impairments are RTP-only.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use voxproxy_rig::echo::{EchoConfig, EchoServer, EchoStats};
use voxproxy_rig::ws_echo::WsEcho;

/// Arguments of `voxproxy echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// UDP address to listen on, e.g. 127.0.0.1:40000 (port 0: any free port).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Delay added to every echoed packet, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Each packet's delay varies uniformly by ± this many milliseconds
    /// (never below zero); more than half the packet interval reorders packets.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Percentage of packets dropped at random, 0 to 100.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Seed for SSRCs, loss and jitter, so that a run can be repeated.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the counters on stderr every second.
    #[arg(long)]
    pub verbose: bool,
    /// Be a WebSocket bot echo (Twilio protocol) on the TCP address `--listen`.
    #[arg(long, conflicts_with_all = ["delay_ms", "jitter_ms", "loss"])]
    pub ws: bool,
}

/// Runs `voxproxy echo`.
pub fn run(args: &EchoArgs) -> ExitCode {
    if args.ws {
        return match serve_ws(args) {
            Ok(echoed) => {
                eprintln!("voxproxy echo: echoed {echoed} media messages");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("voxproxy echo: {message}");
                ExitCode::FAILURE
            }
        };
    }
    match serve(args) {
        Ok(stats) => {
            eprintln!("voxproxy echo: {}", summary(&stats));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("voxproxy echo: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &EchoArgs) -> Result<EchoStats, String> {
    let config = EchoConfig {
        listen: args.listen,
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        loss_percent: args.loss,
        seed: args.seed,
        ..EchoConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal handler: {e}"))?;
    let echo = EchoServer::spawn(&config).map_err(|e| e.to_string())?;
    eprintln!("voxproxy echo: echoing RTP on {}", echo.local_addr());
    runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let interrupted = tokio::signal::ctrl_c();
        let terminated = terminated();
        tokio::pin!(interrupted, terminated);
        loop {
            tokio::select! {
                _ = &mut interrupted => break,
                () = &mut terminated => break,
                _ = tick.tick() => {
                    if args.verbose {
                        eprintln!("voxproxy echo: {}", summary(&echo.stats()));
                    }
                }
            }
        }
    });
    Ok(echo.shutdown())
}

/// Resolves on SIGTERM (never, where there is no such signal).
async fn terminated() {
    #[cfg(unix)]
    if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        signal.recv().await;
        return;
    }
    std::future::pending::<()>().await;
}

fn summary(s: &EchoStats) -> String {
    let [p50, p99, max] = s.read_wait_us;
    format!(
        "received {}, echoed {}, dropped: {} by loss, {} not RTP, {} queue full; {} send errors; \
         read wait p50 {p50} µs, p99 {p99} µs, max {max} µs",
        s.received, s.echoed, s.dropped_loss, s.dropped_invalid, s.dropped_queue_full, s.send_errors
    )
}

/// `--ws`: accepts bot WebSockets until interrupted ([`voxproxy_rig::ws_echo`]);
/// how many media messages were echoed.
fn serve_ws(args: &EchoArgs) -> Result<u64, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let echo =
            WsEcho::bind(args.listen).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = echo.local_addr().map_err(|e| e.to_string())?;
        eprintln!("voxproxy echo: echoing WebSocket media on ws://{addr}/");
        let stop = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminated() => {}
            }
        };
        Ok(echo.run_until(stop).await)
    })
}
