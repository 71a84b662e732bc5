//! `berth`: the engine's command line. `berth daemon` runs the daemon;
//! every other command is a client of its API ([`berth::cli`]).
//! Everything is in the library; this parses the flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// berth: a mini container engine.
#[derive(Debug, Parser)]
#[command(name = "berth", version)]
struct Cli {
    /// The daemon's socket, unix://PATH (for the daemon: where it
    /// listens; default: EXEC_ROOT/berth.sock, and for the client
    /// $DOCKER_HOST or /run/berth/berth.sock).
    #[arg(short = 'H', long = "host", global = true)]
    host: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: the Docker Engine API on a unix socket.
    Daemon {
        /// Persistent state: images, snapshots, containers.
        #[arg(long, default_value = "/var/lib/berth")]
        data_root: PathBuf,
        /// Runtime state: shims, the runtime's root.
        #[arg(long, default_value = "/run/berth")]
        exec_root: PathBuf,
        /// An OCI runtime, NAME=PATH (berth-runtime, runc and crun are
        /// known by default where installed).
        #[arg(long = "runtime", value_name = "NAME=PATH")]
        runtimes: Vec<String>,
        /// The runtime of containers that name none.
        #[arg(long, default_value = "berth-runtime")]
        default_runtime: String,
        /// The init of `run --init` containers, a static executable
        /// (scripts/build-init; default: berth-init beside this program).
        #[arg(long)]
        init_path: Option<PathBuf>,
        /// A line on stderr for each API request, each shim launched and
        /// each registry request.
        #[arg(short = 'D', long)]
        debug: bool,
        /// A registry (HOST[:PORT]) to speak plain HTTP to; loopback ones
        /// always are.
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
        insecure_registries: Vec<String>,
    },
    #[command(flatten)]
    Client(Box<berth::cli::Command>),
}

/// `name` beside this executable if it is there, else `name` (for PATH).
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// `name` on PATH, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let host = cli.host;
    match cli.command {
        Command::Client(command) => client(host.as_deref(), *command),
        Command::Daemon {
            data_root,
            exec_root,
            runtimes,
            default_runtime,
            init_path,
            debug,
            insecure_registries,
        } => {
            let socket = match host.as_deref() {
                None => exec_root.join("berth.sock"),
                Some(h) => match h.strip_prefix("unix://") {
                    Some(path) => PathBuf::from(path),
                    None => {
                        eprintln!(
                            "berth: -H {h}: only unix://PATH is supported"
                        );
                        return ExitCode::from(1);
                    }
                },
            };
            let mut known = BTreeMap::new();
            known.insert("berth-runtime".to_owned(), sibling("berth-runtime"));
            for name in ["runc", "crun"] {
                if let Some(path) = on_path(name) {
                    known.insert(name.to_owned(), path);
                }
            }
            for runtime in runtimes {
                let Some((name, path)) = runtime.split_once('=') else {
                    eprintln!("berth: --runtime {runtime}: expected NAME=PATH");
                    return ExitCode::from(1);
                };
                known.insert(name.to_owned(), PathBuf::from(path));
            }
            if !known.contains_key(&default_runtime) {
                eprintln!(
                    "berth: --default-runtime {default_runtime}: no such runtime"
                );
                return ExitCode::from(1);
            }
            let config = berth::daemon::Config {
                data_root,
                exec_root,
                socket,
                runtimes: known,
                default_runtime,
                shim: sibling("berth-shim"),
                init: init_path.unwrap_or_else(|| sibling("berth-init")),
                debug,
                insecure_registries,
            };
            match berth::daemon::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("berth daemon: {error}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// A client command, on a single-threaded tokio runtime: its exit code.
fn client(host: Option<&str>, command: berth::cli::Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berth: cannot start tokio: {e}");
            return ExitCode::from(berth::cli::EXIT_ENGINE);
        }
    };
    let result = runtime.block_on(async {
        let socket = berth::cli::socket(host)?;
        let docker = berth::cli::connect(&socket)?;
        berth::cli::run(&docker, &socket, command).await
    });
    // Not a drop: that would wait for tokio's thread still blocked in a
    // read of this terminal (`-i`), which ends only with input that may
    // never come once the container is gone.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("berth: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
