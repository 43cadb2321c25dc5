//! `voxproxy serve`: load the config, start the server, drain on SIGTERM or
//! SIGINT, exit 0. SIGHUP never stops it: it reopens the call-record file
//! and reloads the configuration for new calls (see [`Server::reload`]).

use std::process::ExitCode;

use crate::config::{Config, ServeArgs};
use crate::server::Server;

/// Runs the daemon until SIGTERM or SIGINT, then drains; SIGHUP reopens
/// the call-record file and reloads the configuration.
pub fn run(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(args, std::env::vars_os()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("voxproxy serve: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::logging::init(config.log.format, &config.log.level) {
        eprintln!("voxproxy serve: {e}");
        return ExitCode::from(2);
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    // Signals are received by a small runtime on the main thread; install
    // the handlers before the workers start so an early SIGTERM still drains.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("voxproxy serve: cannot start the signal handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signals = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    });
    let (mut term, mut int, mut hup) = match signals {
        Ok(s) => s,
        Err(e) => {
            eprintln!("voxproxy serve: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config, args) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("voxproxy serve: {e}");
            return ExitCode::from(2);
        }
    };
    println!("voxproxy listening on {} (io {})", server.local_addr(), server.io_backend());
    let signal = runtime.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => server.reload().await,
            }
        }
    });
    tracing::info!(signal, "shutting down");
    server.drain();
    ExitCode::SUCCESS
}
