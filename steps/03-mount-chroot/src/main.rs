//! `step03-mount --rootfs DIR [--hostname NAME] -- COMMAND [ARG...]`
//!
//! Run COMMAND in new UTS, PID and mount namespaces, with DIR as its root.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use step03_mount::{child, mount, pid, uts};

/// Run COMMAND with a root filesystem of its own (berth step 3).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    uts: uts::Options,
    #[command(flatten)]
    mount: mount::Options,
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
    let rootfs = mount::check_rootfs(&cli.mount.rootfs)?;
    let plan = mount::plan();
    let flags = uts::CLONE_FLAGS | pid::CLONE_FLAGS | mount::CLONE_FLAGS;
    let container = child::spawn(flags, |channel| {
        // In the child: PID 1 of the new PID namespace.
        if let Some(name) = &cli.uts.hostname {
            uts::set_hostname(name)?;
        }
        mount::enter(&rootfs, &plan)?;
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
