//! `step08-oci run --bundle DIR ID`
//!
//! Run the container an OCI bundle describes, in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use step08_oci::child;
use step08_oci::oci::{self, lifecycle};

/// Run an OCI bundle (berth step 8).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
enum Command {
    /// Create and start the container, wait for it, delete it
    Run {
        /// The bundle directory (config.json and the rootfs)
        #[arg(long, short, value_name = "DIR", default_value = ".")]
        bundle: PathBuf,
        /// The container id
        id: String,
    },
}

// ANCHOR: run
fn run(bundle: &std::path::Path, id: &str) -> Result<u8, lifecycle::Error> {
    let mut warn = |warning: String| {
        eprintln!("{}: warning: {warning}", env!("CARGO_BIN_NAME"));
    };
    let bundle = oci::load(bundle, id)?;
    let options = lifecycle::Options::default();
    let created = lifecycle::create(bundle, &options, &mut warn)?;
    let running = created.start(&mut warn)?;
    let exit = running.wait(&mut warn)?;
    if let Some(why) = exit.explanation {
        eprintln!("{}: {why}", env!("CARGO_BIN_NAME"));
    }
    Ok(exit.code)
}
// ANCHOR_END: run

fn main() -> ExitCode {
    // Before anything else: run from a sealed copy of ourselves, so that
    // no container can reach this binary through /proc/*/exe.
    if let Err(error) = oci::exe::reexec_sealed() {
        eprintln!("{}: {}", env!("CARGO_BIN_NAME"), child::error_chain(&error));
        return ExitCode::from(child::EXIT_SETUP_FAILED);
    }
    let cli = Cli::parse();
    let Command::Run { bundle, id } = &cli.command;
    match run(bundle, id) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!(
                "{}: {}",
                env!("CARGO_BIN_NAME"),
                child::error_chain(&error)
            );
            ExitCode::from(error.exit_code())
        }
    }
}
