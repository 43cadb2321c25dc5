//! `voxproxy sim --url http://HOST:PORT`: simulated Twilio calls against a
//! Media Streams server, with a latency and loss report (see
//! [`voxproxy_rig::sim`]).
//!
//! Requests are signed with `TWILIO_AUTH_TOKEN` from the environment; when
//! it is unset they go unsigned, with one warning on stderr. The report is
//! a table on stdout, or with `--json FILE` JSON in FILE and the latency
//! plot in FILE with the extension `.svg`. The exit code is 0 when every
//! call completed, 1 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use voxproxy_rig::sim::{self, SimConfig, SimReport};

/// Arguments of `voxproxy sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Base URL of the server: the voice webhook is {url}/twilio/voice, and
    /// that URL is what the signature covers.
    #[arg(long)]
    pub url: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 1)]
    pub calls: u32,
    /// Seconds of media each call sends.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Calls started per second while ramping up. Each call also starts up
    /// to one 20 ms frame later, spread evenly, so that the calls' frame
    /// clocks tick out of step, as real calls' do.
    #[arg(long, default_value_t = 50.0)]
    pub ramp: f64,
    /// WAV file the callers speak (8 or 16 kHz mono, PCM16 or μ-law);
    /// default: a built-in speech-like test signal.
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Write the full report as JSON to FILE, and the latency plot beside it
    /// (FILE with the extension .svg).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// DTMF digits each call sends, spread over its media (0-9, *, #, A-D).
    #[arg(long, default_value = "")]
    pub dtmf: String,
    /// Seconds a call waits after its media for frames still in flight.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
    /// Worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Process ID of the `voxproxy serve` under test: its CPU time per
    /// bridged frame and memory per active call go in the report (from /proc).
    #[arg(long, value_name = "PID")]
    pub proxy_pid: Option<u32>,
}

/// Runs `voxproxy sim`.
pub fn run(args: &SimArgs) -> ExitCode {
    match simulate(args) {
        Ok(report) if report.calls.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("voxproxy sim: {message}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{name} must be a non-negative number of seconds, not {value}"))
}

fn simulate(args: &SimArgs) -> Result<SimReport, String> {
    let auth_token = std::env::var("TWILIO_AUTH_TOKEN").ok().filter(|t| !t.is_empty());
    let config = SimConfig {
        url: args.url.clone(),
        calls: args.calls,
        media: seconds("seconds", args.seconds)?,
        ramp: args.ramp,
        audio: args.audio.clone(),
        dtmf: args.dtmf.clone(),
        auth_token,
        grace: seconds("grace", args.grace)?,
        workers: args.workers,
        progress: true,
        proxy_cost: args.proxy_pid.map(super::cost::process),
    };
    config.validate().map_err(|e| e.to_string())?;
    if config.auth_token.is_none() {
        eprintln!("voxproxy sim: warning: TWILIO_AUTH_TOKEN is not set; requests are sent unsigned");
    }
    let report = sim::run_blocking(config).map_err(|e| e.to_string())?;
    match &args.json {
        Some(path) => write_json(&report, path)?,
        None => print!("{}", report.render_table()),
    }
    Ok(report)
}

fn write_json(report: &SimReport, path: &Path) -> Result<(), String> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
        return Err(format!(
            "--json {} would be overwritten by the plot; name the report *.json",
            path.display()
        ));
    }
    let json = serde_json::to_string_pretty(report).map_err(|e| format!("cannot encode the report: {e}"))?;
    std::fs::write(path, json + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let svg = path.with_extension("svg");
    sim::write_svg(report, &svg).map_err(|e| format!("cannot write {}: {e}", svg.display()))?;
    eprintln!("voxproxy sim: report in {}, latency plot in {}", path.display(), svg.display());
    Ok(())
}
