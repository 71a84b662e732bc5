//! `step01-uts [--hostname NAME] -- COMMAND [ARG...]`
//!
//! Run COMMAND in a new UTS namespace with its own hostname.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use step01_uts::{child, uts};

/// Run COMMAND in a UTS namespace of its own (berth step 1).
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
    let flags = uts::CLONE_FLAGS;
    let container = child::spawn(flags, |_channel| {
        // In the child, inside the new UTS namespace.
        if let Some(name) = &cli.uts.hostname {
            uts::set_hostname(name)?;
        }
        match child::exec(&cli.command)? {}
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
