//! The `voxproxy` command line. Each subcommand lives in `voxproxy::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    voxproxy::cli::run(voxproxy::cli::Cli::parse())
}
