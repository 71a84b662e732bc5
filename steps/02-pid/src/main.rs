//! `step02-pid [--hostname NAME] -- COMMAND [ARG...]`
//!
//! Run COMMAND in new UTS and PID namespaces, under a minimal init.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use step02_pid::{child, pid, uts};

/// Run COMMAND in UTS and PID namespaces of its own (berth step 2).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    uts: uts::Options,
    /// The command to run, and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

// ANCHOR: run
fn run(cli: &Cli) -> anyhow::Result<u8> {
    let flags = uts::CLONE_FLAGS | pid::CLONE_FLAGS;
    let container = child::spawn(flags, |channel| {
        // In the child: PID 1 of the new PID namespace.
        if let Some(name) = &cli.uts.hostname {
            uts::set_hostname(name)?;
        }
        pid::init(&cli.command, channel)
    })
    .context("cannot start the container")?;
    Ok(container.wait()?)
}
// ANCHOR_END: run

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{}: {error:#}", env!("CARGO_BIN_NAME"));
            ExitCode::from(child::exit_code_of(error.as_ref()))
        }
    }
}
