//! Command-line subcommands. Errors reach the user as one sentence on stderr
//! and a non-zero exit code.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

pub mod codec;
mod cost;
pub mod demo;
pub mod docs;
pub mod echo;
pub mod replay;
pub mod serve;
pub mod sim;
pub mod vad;

/// voxproxy: a low-latency media proxy between Twilio Media Streams and RTP voice stacks.
#[derive(Debug, Parser)]
#[command(name = "voxproxy", version = voxproxy::build::VERSION_LINE, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert standard input to standard output between raw little-endian
    /// 16-bit PCM and G.711 (μ-law or A-law) bytes.
    Codec(codec::CodecArgs),
    /// Detect speech in an 8 kHz mono WAV file (PCM16 or μ-law): prints
    /// `start_ms end_ms` per speech segment, or with --frames one 0/1 per 20 ms frame.
    Vad(vad::VadArgs),
    /// Run the proxy: answer Twilio's webhooks, accept media streams and
    /// bridge each call to the voice stack (RTP, SIP or a WebSocket bot),
    /// until SIGTERM or SIGINT.
    Serve(voxproxy::config::ServeArgs),
    /// Start the proxy, an RTP echo backend and the Twilio simulator in one
    /// process on free loopback ports, and print the latency table.
    Demo(demo::DemoArgs),
    /// Simulate Twilio: place N concurrent calls against a Media Streams
    /// server (webhook, TwiML, signed WebSocket, paced media) and measure
    /// round-trip latency and loss of the audio it sends back.
    Sim(sim::SimArgs),
    /// RTP echo backend: send every RTP packet back to where it came from,
    /// optionally with delay, jitter and loss.
    Echo(echo::EchoArgs),
    /// Print the completion script of a shell (bash, zsh, fish, elvish,
    /// powershell) to standard output.
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff) to standard output: `voxproxy man > voxproxy.1`.
    Man,
    /// Replay a call capture (`capture.enabled`) on a fresh bridge and check
    /// every output bit for bit; `--report` also prints the call's timeline.
    /// Exit code 1 at the first difference, 2 for an unreadable file.
    Replay(replay::ReplayArgs),
}

impl Cli {
    /// The command line's definition, with every configuration key listed
    /// after `serve --help` (rendered from the one key declaration, so the
    /// help, the man page and the completions never miss a key).
    #[must_use]
    pub fn definition() -> clap::Command {
        Cli::command().mut_subcommand("serve", |serve| serve.after_long_help(voxproxy::config::key_help()))
    }

    /// Parses the process's arguments against [`Cli::definition`]; exits
    /// with clap's message on a bad command line.
    #[must_use]
    pub fn parse_args() -> Cli {
        let matches = Cli::definition().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// Runs a parsed command line and turns its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Codec(args) => codec::run(&args),
        Command::Vad(args) => vad::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Echo(args) => echo::run(&args),
        Command::Completions(args) => docs::completions(&args),
        Command::Man => docs::man(),
        Command::Replay(args) => replay::run(&args),
    }
}
