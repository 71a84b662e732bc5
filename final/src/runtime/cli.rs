//! runc's command line: the global flags containerd, dockerd (through
//! containerd) and podman (through conmon) pass, and one subcommand per
//! operation. Options may come before or after the container id.

use std::path::PathBuf;
use std::process::ExitCode;

use std::os::fd::AsFd;

use clap::{Parser, Subcommand};

use super::Error;
use super::exec::ExecOptions;
use super::lifecycle::{self, CreateOptions, ListFormat, Runtime};
use super::log::{Format, Log};
use super::resources::{self, Limits, PsFormat};

/// An OCI runtime with runc's command line (berth).
#[derive(Debug, Parser)]
#[command(name = "berth-runtime", disable_version_flag = true)]
pub struct Cli {
    /// Where containers' state is kept [default: /run/berth-runtime, or
    /// $XDG_RUNTIME_DIR/berth-runtime when not root]
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Write warnings and errors to FILE (default: stderr)
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The log's format
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: Format,
    /// Log progress too
    #[arg(long, global = true)]
    debug: bool,
    /// Manage cgroups through systemd (refused where systemd is absent)
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility: rootless is detected (before the
    /// command only, as in runc: `spec --rootless` is another flag)
    #[arg(long, value_name = "true|false|auto")]
    rootless: Option<String>,
    /// Print the version and the runtime spec's
    #[arg(long, short = 'v')]
    version: bool,
    /// Trace every kernel operation, naming the step of the book that
    /// teaches it (also BERTH_TRACE=text|json; BERTH_TRACE_FILE=PATH
    /// appends the trace to a file instead of stderr)
    #[arg(
        long,
        global = true,
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "text",
        value_name = "FORMAT"
    )]
    trace: Option<Format>,
    /// The command
    #[command(subcommand)]
    command: Option<Command>,
}

/// The options `create` and `run` share.
#[derive(Debug, clap::Args)]
struct Setup {
    /// The bundle directory (config.json and the rootfs)
    #[arg(long, short, value_name = "DIR", default_value = ".")]
    bundle: PathBuf,
    /// Write the container process's pid to FILE
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// A unix socket to send the pty's master to (process.terminal)
    #[arg(long, value_name = "SOCK")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (pivot_root is always used)
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for runc compatibility (no session keyring is made)
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass N more fds (3, 4, …) to the container process
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// The container id
    id: String,
}

/// `exec`'s options.
#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// The process as runtime-spec JSON (`-` for stdin); the command is
    /// then not given
    #[arg(long, short, value_name = "FILE")]
    process: Option<PathBuf>,
    /// Allocate a terminal (needs --console-socket)
    #[arg(long, short)]
    tty: bool,
    /// A unix socket to send the pty's master to
    #[arg(long, value_name = "SOCK")]
    console_socket: Option<PathBuf>,
    /// Return once the process runs
    #[arg(long, short)]
    detach: bool,
    /// Write the process's pid to FILE
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Set an environment variable
    #[arg(long, short, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The working directory in the container
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// The user, as UID[:GID]
    #[arg(long, short, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Add a capability
    #[arg(long, short, value_name = "CAP")]
    cap: Vec<String>,
    /// Set no_new_privs
    #[arg(long)]
    no_new_privs: bool,
    /// Pass N more fds (3, 4, …) to the process
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// The container id
    id: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

impl ExecArgs {
    fn options(self) -> (String, ExecOptions) {
        let options = ExecOptions {
            process: self.process,
            args: self.command,
            env: self.env,
            cwd: self.cwd,
            user: self.user,
            caps: self.cap,
            no_new_privs: self.no_new_privs,
            tty: self.tty,
            console_socket: self.console_socket,
            preserve_fds: self.preserve_fds,
            pid_file: self.pid_file,
            detach: self.detach,
        };
        (self.id, options)
    }
}

/// `update`'s options (runc's names).
#[derive(Debug, clap::Args)]
struct UpdateArgs {
    /// linux.resources as JSON (`-` for stdin); the flags are then ignored
    #[arg(long, short, value_name = "FILE")]
    resources: Option<String>,
    /// Memory limit (bytes, or 64m, 1g…)
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Memory + swap limit (-1: unlimited swap)
    #[arg(long, value_name = "SIZE")]
    memory_swap: Option<String>,
    /// CPU shares (relative weight)
    #[arg(long, value_name = "N")]
    cpu_shares: Option<u64>,
    /// CFS period in µs
    #[arg(long, value_name = "US")]
    cpu_period: Option<u64>,
    /// CFS quota in µs per period
    #[arg(long, value_name = "US", allow_negative_numbers = true)]
    cpu_quota: Option<i64>,
    /// Most processes
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// The container id
    id: String,
}

/// What to do. Each command's arguments are only built when it is the
/// one given (`defer`): a run of the runtime parses one command line, and
/// building all of them would cost it page faults on every start.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Set a container up; its process waits for `start`
    Create(Setup),
    /// Run a created container's process
    Start {
        /// The container id
        id: String,
    },
    /// Print a container's state as JSON
    State {
        /// The container id
        id: String,
    },
    /// Send a signal to a container's process
    Kill {
        /// Send it to every process of the container
        #[arg(long, short)]
        all: bool,
        /// The container id
        id: String,
        /// A name (KILL, SIGKILL) or a number
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a stopped container (--force: any container)
    Delete {
        /// Kill it first if it runs
        #[arg(long, short)]
        force: bool,
        /// The container id
        id: String,
    },
    /// Create and start a container (in the foreground unless --detach)
    Run {
        /// Return once it runs
        #[arg(long, short)]
        detach: bool,
        #[command(flatten)]
        setup: Setup,
    },
    /// List the containers
    List {
        /// table or json
        #[arg(long, short, value_enum, default_value = "table")]
        format: ListFormat,
        /// Print the ids only
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run a process in a running container
    Exec(ExecArgs),
    /// List a container's processes
    Ps {
        /// table (ps's own) or json (pids)
        #[arg(long, short, value_enum, default_value = "table")]
        format: PsFormat,
        /// The container id
        id: String,
        /// Options for ps(1) (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Change a running container's limits
    Update(UpdateArgs),
    /// Print a container's resource use as JSON events
    Events {
        /// Print one stats event and exit
        #[arg(long)]
        stats: bool,
        /// Time between stats events (5s, 500ms, 1m)
        #[arg(long, default_value = "5s")]
        interval: String,
        /// The container id
        id: String,
    },
    /// Write a starting config.json
    Spec {
        /// Where to write it
        #[arg(long, short, value_name = "DIR", default_value = ".")]
        bundle: PathBuf,
        /// A config for a container run by an ordinary user
        #[arg(long)]
        rootless: bool,
    },
    /// Print what this runtime implements (runtime-spec features.md)
    Features,
    /// Freeze every process of a container
    Pause {
        /// The container id
        id: String,
    },
    /// Thaw a paused container
    Resume {
        /// The container id
        id: String,
    },
}

/// What `--version` prints (runc's form).
pub fn version() -> String {
    format!(
        "berth-runtime version {}\nspec: {}\n",
        env!("CARGO_PKG_VERSION"),
        oci_spec::runtime::VERSION
    )
}

/// `--root`'s default for the user running us.
fn default_root() -> PathBuf {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return PathBuf::from("/run/berth-runtime");
    }
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{euid}")));
    runtime_dir.join("berth-runtime")
}

impl Setup {
    /// The options of step 8's create.
    fn options(&self) -> CreateOptions {
        CreateOptions {
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            preserve_fds: self.preserve_fds,
        }
    }
}

/// Run the command; its output to stdout, the exit code returned.
fn dispatch(runtime: &mut Runtime, command: Command) -> Result<u8, Error> {
    let print = |text: String| {
        print!("{text}");
        0
    };
    match command {
        Command::Create(setup) => {
            lifecycle::create(runtime, &setup.id, &setup.options()).map(|()| 0)
        }
        Command::Start { id } => lifecycle::start(runtime, &id).map(|()| 0),
        Command::State { id } => {
            lifecycle::state(runtime, &id).map(|s| print(format!("{s}\n")))
        }
        Command::Kill { all, id, signal } => {
            let signal = lifecycle::parse_signal(&signal)?;
            lifecycle::kill(runtime, &id, signal, all).map(|()| 0)
        }
        Command::Delete { force, id } => {
            lifecycle::delete(runtime, &id, force).map(|()| 0)
        }
        Command::Run { detach, setup } => {
            lifecycle::run(runtime, &setup.id, &setup.options(), detach)
        }
        Command::List { format, quiet } => {
            lifecycle::list(runtime, format, quiet).map(print)
        }
        Command::Exec(args) => {
            let (id, options) = args.options();
            super::exec::exec(runtime, &id, &options)
        }
        Command::Ps {
            format,
            id,
            ps_args,
        } => resources::ps(runtime, &id, format, &ps_args).map(print),
        Command::Update(args) => {
            let given = args
                .resources
                .as_deref()
                .map(resources::read_resources)
                .transpose()?;
            let limits = Limits {
                memory: args.memory,
                memory_swap: args.memory_swap,
                cpu_shares: args.cpu_shares,
                cpu_period: args.cpu_period,
                cpu_quota: args.cpu_quota,
                pids_limit: args.pids_limit,
            };
            resources::update(runtime, &args.id, given, &limits).map(|()| 0)
        }
        Command::Spec { bundle, rootless } => {
            super::about::spec(&bundle, rootless).map(|()| 0)
        }
        Command::Features => Ok(print(super::about::features())),
        Command::Events {
            stats,
            interval,
            id,
        } => {
            let interval = resources::parse_interval(&interval)?;
            resources::events(runtime, &id, stats, interval).map(|()| 0)
        }
        Command::Pause { id } => lifecycle::pause(runtime, &id).map(|()| 0),
        Command::Resume { id } => lifecycle::resume(runtime, &id).map(|()| 0),
    }
}

/// The trace could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// `BERTH_TRACE` is not a format.
    #[error("BERTH_TRACE={0:?}: expected text, json or 1")]
    Format(String),
    /// `BERTH_TRACE_FILE` cannot be opened.
    #[error("BERTH_TRACE_FILE={path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

// ANCHOR: trace
/// Turn the trace on if `--trace` or `BERTH_TRACE` asks: to
/// `BERTH_TRACE_FILE` (appended) if set, else to stderr.
fn start_trace(flag: Option<Format>) -> Result<(), TraceError> {
    let format = match (flag, std::env::var("BERTH_TRACE")) {
        (Some(format), _) => format,
        (None, Err(_)) => return Ok(()),
        (None, Ok(value)) => match value.as_str() {
            "" | "0" => return Ok(()),
            "1" | "text" => Format::Text,
            "json" => Format::Json,
            _ => return Err(TraceError::Format(value)),
        },
    };
    let sink: std::os::fd::OwnedFd = match std::env::var_os("BERTH_TRACE_FILE")
    {
        Some(path) => {
            let path = PathBuf::from(path);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| TraceError::File { path, source })?
                .into()
        }
        // A close-on-exec copy of stderr: written to by our code only, the
        // container's process loses it at its execve.
        None => std::io::stderr().as_fd().try_clone_to_owned().map_err(
            |source| TraceError::File {
                path: PathBuf::from("/dev/stderr"),
                source,
            },
        )?,
    };
    step08_oci::trace::enable(sink, format == Format::Json);
    Ok(())
}
// ANCHOR_END: trace

/// The first of fds `3..3 + count` that is not open, if any.
fn first_closed_fd(count: u32) -> Option<i32> {
    (3..3 + count.min(65_536) as i32).find(|fd| {
        // SAFETY: F_GETFD on a number only asks whether it is an open fd.
        let flags = unsafe { libc::fcntl(*fd, libc::F_GETFD) };
        flags < 0
    })
}

/// `berth-runtime`'s `main`.
pub fn main() -> ExitCode {
    // A command that makes a container process runs from a read-only
    // clone of this binary, out of the container's reach (step 8,
    // oci::exe). Done before anything else, so that the first process
    // spends nothing that the re-executed one does again (argument parsing
    // alone faults in a third of the binary): any argument that names such
    // a command is enough, an id of that name only costs a needless
    // re-execution. An error is reported below, where the log is known.
    let makes_a_process = |arg: &std::ffi::OsString| {
        super::early::MAKES_A_PROCESS.iter().any(|name| arg == name)
    };
    let early = std::env::args_os()
        .skip(1)
        .any(|arg| makes_a_process(&arg))
        .then(step08_oci::oci::exe::reexec_read_only);
    let cli = Cli::parse();
    if cli.version {
        print!("{}", version());
        return ExitCode::SUCCESS;
    }
    // Before we open anything: every fd --preserve-fds passes on must be
    // open, or the first file we open (the log, a socket) would take the
    // gap's number and be passed on to the container in its place.
    let preserved = match &cli.command {
        Some(Command::Create(setup) | Command::Run { setup, .. }) => {
            setup.preserve_fds
        }
        Some(Command::Exec(args)) => args.preserve_fds,
        _ => 0,
    };
    if let Some(fd) = first_closed_fd(preserved) {
        Log::stderr()
            .error(&format!("--preserve-fds {preserved}: fd {fd} is not open"));
        return ExitCode::from(1);
    }
    let mut log = match Log::open(cli.log.as_deref(), cli.log_format, cli.debug)
    {
        Ok(log) => log,
        Err(error) => {
            let mut stderr = Log::stderr();
            stderr.error(&step08_oci::child::error_chain(&error));
            return ExitCode::from(1);
        }
    };
    let Some(command) = cli.command else {
        log.error("no command given (try --help)");
        return ExitCode::from(1);
    };
    // Now that the command is known: what the early re-execution said, or
    // (the command named without its name among the arguments, which
    // clap does not allow today) the re-execution itself.
    if matches!(
        command,
        Command::Create(_) | Command::Run { .. } | Command::Exec(_)
    ) && let Err(error) =
        early.unwrap_or_else(step08_oci::oci::exe::reexec_read_only)
    {
        log.error(&step08_oci::child::error_chain(&error));
        return ExitCode::from(1);
    }
    if let Err(error) = start_trace(cli.trace) {
        log.error(&step08_oci::child::error_chain(&error));
        return ExitCode::from(1);
    }
    let mut runtime = Runtime {
        root: cli.root.unwrap_or_else(default_root),
        log,
        systemd_cgroup: cli.systemd_cgroup,
    };
    match dispatch(&mut runtime, command) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            runtime.log.error(&step08_oci::child::error_chain(&error));
            ExitCode::from(error.exit_code())
        }
    }
}
