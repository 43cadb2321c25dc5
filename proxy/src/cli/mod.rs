//! Command-line subcommands. Errors reach the user as one sentence on stderr
//! and a non-zero exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod vad;

/// voxproxy: a low-latency media proxy between Twilio Media Streams and RTP voice stacks.
#[derive(Debug, Parser)]
#[command(name = "voxproxy", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect speech in an 8 kHz mono WAV file (PCM16 or μ-law): prints
    /// `start_ms end_ms` per speech segment, or with --frames one 0/1 per 20 ms frame.
    Vad(vad::VadArgs),
}

/// Runs a parsed command line and turns its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Vad(args) => vad::run(&args),
    }
}
