//! `voxproxy serve`: load the config, start the server, drain on SIGTERM or
//! SIGINT, exit 0. SIGHUP never stops it: it reopens the call-record file
//! and reloads the configuration for new calls (see [`Server::reload`]).
//! Under systemd (`Type=notify`) it says `READY=1` once every listener is
//! bound and `STOPPING=1` when the drain begins ([`voxproxy::notify`]).
//! `serve --check-config FILE` loads and checks the configuration only.

use std::path::Path;
use std::process::ExitCode;

use voxproxy::config::{Config, ServeArgs};
use voxproxy::notify::Notifier;
use voxproxy::server::Server;

/// What `--check-config` finds in a configuration, one sentence each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Why `serve` would refuse to start; empty when it would start. The
    /// loader stops at its first problem, so a file with several bad keys
    /// shows them one run at a time.
    pub problems: Vec<String>,
    /// Settings that start but are probably not meant ([`Config::warnings`]
    /// and a port range smaller than `limits.max_calls`).
    pub warnings: Vec<String>,
}

/// Checks `file` as `serve --config FILE` would load it, with the
/// environment `env` and the other flags of `args`, without starting.
pub fn check_config<I, K, V>(file: &Path, args: &ServeArgs, env: I) -> CheckReport
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<std::ffi::OsString>,
    V: Into<std::ffi::OsString>,
{
    let args = ServeArgs { config: Some(file.to_owned()), check_config: None, ..args.clone() };
    let config = match Config::load(&args, env) {
        Ok(config) => config,
        Err(e) => return CheckReport { problems: vec![e.to_string()], warnings: Vec::new() },
    };
    let mut problems = Vec::new();
    let mut warnings = config.warnings();
    problems.extend(config.not_runnable_yet());
    let skip_signatures = args.insecure_skip_signature || !config.twilio.validate_signatures;
    if config.secrets.twilio_auth_token.is_none() && !skip_signatures {
        problems.push(voxproxy::server::ServeError::NoAuthToken.to_string());
    }
    if let Some(tls) = &config.server.tls
        && let Err(e) = voxproxy::tls::load_server_config(&tls.cert, &tls.key)
    {
        problems.push(format!("server.tls: {e}"));
    }
    let cdr_dir = config.cdr.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !cdr_dir.is_dir() {
        // A warning: systemd's StateDirectory= creates it when the unit starts.
        warnings.push(format!(
            "cdr.path = {:?}: the directory {} does not exist (yet); serve cannot start until it does \
             (systemd's StateDirectory= creates it, else create it writable by voxproxy's user)",
            config.cdr.path.display().to_string(),
            cdr_dir.display()
        ));
    }
    if config.rtp.ports.len() < config.limits.max_calls {
        warnings.push(format!(
            "rtp.ports = \"{}\" holds {} ports but limits.max_calls is {}: each call needs a port of its own; \
             calls beyond the free ports are answered busy",
            config.rtp.ports,
            config.rtp.ports.len(),
            config.limits.max_calls
        ));
    }
    CheckReport { problems, warnings }
}

fn run_check(file: &Path, args: &ServeArgs) -> ExitCode {
    let report = check_config(file, args, std::env::vars_os());
    for warning in &report.warnings {
        eprintln!("voxproxy serve --check-config: warning: {warning}");
    }
    if report.problems.is_empty() {
        println!("{}: ok", file.display());
        return ExitCode::SUCCESS;
    }
    for problem in &report.problems {
        eprintln!("voxproxy serve --check-config: {problem}");
    }
    ExitCode::from(2)
}

/// Runs the daemon until SIGTERM or SIGINT, then drains; SIGHUP reopens
/// the call-record file and reloads the configuration.
pub fn run(args: &ServeArgs) -> ExitCode {
    if let Some(file) = &args.check_config {
        return run_check(file, args);
    }
    let config = match Config::load(args, std::env::vars_os()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("voxproxy serve: {e}");
            return ExitCode::from(2);
        }
    };
    // Kept to the end: dropping it flushes the queued lines and stops the writer.
    let log = match voxproxy::logging::init(config.log.format, &config.log.level) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("voxproxy serve: {e}");
            return ExitCode::from(2);
        }
    };
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
    server.metrics().watch_log_dropped_lines(log.dropped_lines_reader());
    println!("voxproxy listening on {} (io {})", server.local_addr(), server.io_backend());
    if let Some(admin) = server.admin_addr() {
        println!("voxproxy admin listening on {admin}");
    }
    let notifier = notifier();
    notify(notifier.as_ref(), "READY=1\nSTATUS=serving");
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
    notify(notifier.as_ref(), "STOPPING=1\nSTATUS=draining");
    server.drain();
    drop(log);
    ExitCode::SUCCESS
}

/// The systemd notifier, if `NOTIFY_SOCKET` names one; a bad value is
/// logged and leaves notifications off (systemd then times the start out,
/// which says more than refusing to run).
fn notifier() -> Option<Notifier> {
    Notifier::from_env().unwrap_or_else(|e| {
        tracing::error!(error = %e, "NOTIFY_SOCKET is set but unusable; systemd is not told voxproxy is ready");
        None
    })
}

fn notify(notifier: Option<&Notifier>, state: &str) {
    if let Some(notifier) = notifier
        && let Err(e) = notifier.notify(state)
    {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}
