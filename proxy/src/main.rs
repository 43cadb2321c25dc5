//! The `voxproxy` command line. Each subcommand lives in [`cli`]: the daemon
//! (`serve`) from the `voxproxy` library, the rig (`sim`, `echo`, `demo`)
//! from `voxproxy-rig`, which only the binary depends on.
#![forbid(unsafe_code)]

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse_args())
}
