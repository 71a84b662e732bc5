//! `berth-shim`: one per container, started by the daemon. Everything is
//! in the library ([`berth::shim`]); this parses the flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Hold one container: create it with the runtime, keep its stdio and
/// logs, reap it, serve the daemon on DIR/shim.sock.
#[derive(Debug, Parser)]
#[command(name = "berth-shim", version)]
struct Args {
    /// The container's id.
    #[arg(long)]
    id: String,
    /// Its OCI bundle.
    #[arg(long)]
    bundle: PathBuf,
    /// The shim's directory (socket, logs, exit record); it must exist.
    #[arg(long)]
    dir: PathBuf,
    /// The OCI runtime's executable.
    #[arg(long, default_value = "berth-runtime")]
    runtime: PathBuf,
    /// The runtime's --root.
    #[arg(long)]
    runtime_root: Option<PathBuf>,
    /// The container has a terminal (process.terminal in the bundle).
    #[arg(long)]
    tty: bool,
    /// Keep the container's stdin open for attached clients.
    #[arg(long)]
    stdin: bool,
    /// Where the json-file log goes (default: --dir).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Rotate the log at this size, in bytes.
    #[arg(long, default_value_t = 10 << 20)]
    log_max_size: u64,
    /// How many log files to keep, the current one included.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    log_max_files: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = berth::shim::Options {
        id: args.id,
        bundle: args.bundle,
        log_dir: args.log_dir.unwrap_or_else(|| args.dir.clone()),
        dir: args.dir,
        runtime: args.runtime,
        runtime_root: args.runtime_root,
        tty: args.tty,
        stdin: args.stdin,
        log: berth::shim::logs::Limits {
            max_size: args.log_max_size,
            max_files: args.log_max_files,
        },
    };
    match berth::shim::main(options) {
        Ok(ready) => {
            println!("{ready}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("berth-shim: {}", berth::child::error_chain(&error));
            ExitCode::from(1)
        }
    }
}
