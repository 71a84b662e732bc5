//! `berth-shim`: one small process per container, between the daemon and
//! the container, so that the container does not depend on the daemon.
//!
//! The daemon could run `berth-runtime create` itself and keep the
//! container's stdio. But then the pipes would end in the daemon: a
//! daemon restarted for an upgrade, or killed, would take every
//! container's output (and, through `SIGPIPE`, often the containers)
//! with it, and nobody would be left to reap them and learn how they
//! ended. So each container gets a shim, which
//!
//! - detaches from whoever started it (a fork, a new session: its parent
//!   is init, not the daemon) and makes itself the *child subreaper*
//!   (`PR_SET_CHILD_SUBREAPER`, `prctl(2)`), so that the container's
//!   first process, orphaned when `runtime create` exits, becomes its
//!   child;
//! - calls the runtime's `create` (and later `start`, `kill`, `delete`),
//!   with pipes, or a pty from `--console-socket`, as the container's
//!   stdio;
//! - writes the output to a json-file log ([`logs`]) as it comes, and to
//!   every attached client;
//! - reaps the container and records its exit code and time atomically
//!   ([`EXIT_FILE`]), then waits until the daemon has collected it
//!   ([`protocol::Request::Delete`]).
//!
//! Its socket, [`SOCKET`] in its directory, is the only way in
//! ([`protocol`] has the messages, [`client`] a blocking client).
//!
//! ```text
//!  berth daemon ──spawn──▶ berth-shim (launcher) ──fork──▶ berth-shim
//!       ▲                    waits for "ready",            setsid, subreaper,
//!       │                    exits: the daemon is          socket, signalfd
//!       │                    no longer its parent              │
//!       │                                         runtime create ──▶ container
//!       └──── unix socket: state, start, kill, attach, ◀──────────  (reparented
//!             resize, wait, delete                                   to the shim)
//! ```
//!
//! Single-threaded, no async runtime: one `poll(2)` loop (`server`).

pub mod client;
pub mod logs;
pub mod protocol;
pub mod runtime;
mod server;
mod stdio;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::unistd::{ForkResult, fork};

use crate::path_io::PathIo;

/// The shim's socket, in its directory.
pub const SOCKET: &str = "shim.sock";
/// How the container's first process ended ([`protocol::Exit`]).
pub const EXIT_FILE: &str = "exit.json";
/// The shim's own pid and start time ([`crate::runtime::state::Identity`]),
/// for whoever must kill a shim that no longer answers.
pub const PID_FILE: &str = "shim.pid";
/// The shim's own warnings, after it has detached.
pub const SHIM_LOG: &str = "shim.log";
/// The runtime's JSON log.
pub const RUNTIME_LOG: &str = "runtime.log";

/// What one shim is told (`berth-shim`'s flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// The container's id, for the runtime.
    pub id: String,
    /// Its OCI bundle.
    pub bundle: PathBuf,
    /// The shim's directory: socket, logs, exit record. It exists.
    pub dir: PathBuf,
    /// The runtime's executable.
    pub runtime: PathBuf,
    /// The runtime's `--root`, if not its default.
    pub runtime_root: Option<PathBuf>,
    /// A pty as the container's stdio (`process.terminal` in the bundle).
    pub tty: bool,
    /// Keep the container's stdin open for attached clients (`-i`);
    /// otherwise it reads `/dev/null`.
    pub stdin: bool,
    /// Where the json-file log goes (the daemon keeps it with the
    /// container's data, which outlives a reboot; the socket's directory
    /// is under /run).
    pub log_dir: PathBuf,
    /// The log's size cap and rotation.
    pub log: logs::Limits,
}

/// What can go wrong in a shim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation.
    #[error(transparent)]
    File(#[from] PathIo),
    /// The socket's path does not fit a `sockaddr_un`.
    #[error("the shim's socket path {0} is longer than 107 bytes")]
    SocketPath(PathBuf),
    /// The runtime could not be run at all.
    #[error("cannot run the runtime {runtime} ({op})")]
    Spawn {
        /// The runtime's path.
        runtime: PathBuf,
        /// The command.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime ran and failed.
    #[error("runtime {op} failed: {message}")]
    Runtime {
        /// The command.
        op: &'static str,
        /// Its message.
        message: String,
    },
    /// The forked shim failed before it was ready: the error it met,
    /// already worded by it (not wrapped again).
    #[error("{0}")]
    NotReady(String),
    /// A system call of the shim's own.
    #[error("shim: cannot {what}")]
    Sys {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The pid file the runtime wrote is not a pid.
    #[error("the runtime's pid file {0} holds no pid")]
    PidFile(PathBuf),
    /// Talking to a shim (the client side).
    #[error("shim at {path}: {what}")]
    Client {
        /// Its socket.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shim answered with an error.
    #[error("{message}")]
    Refused {
        /// Why, in kind.
        failure: protocol::Failure,
        /// Its message.
        message: String,
    },
    /// The shim answered something the request does not expect.
    #[error("shim at {0}: unexpected reply")]
    Unexpected(PathBuf),
}

/// For `map_err` on a nix call of the shim's own.
fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |source| Error::Sys { what, source }
}

// ANCHOR: launch
/// `berth-shim`'s whole life. In the calling process: fork, wait for the
/// shim to say that the container is created (or why not), print
/// `{"pid":N,"shim_pid":M}` and return. In the forked shim: detach, serve
/// until the container is deleted, and exit there.
///
/// The caller (the daemon) gets its answer when this returns, and the
/// shim is no longer its child: nothing ties the container to the daemon.
pub fn main(mut options: Options) -> Result<String, Error> {
    // Nothing the daemon left open reaches the runtime or the container.
    crate::child::close_inherited_fds(&[]).map_err(|_| Error::Sys {
        what: "close inherited fds",
        source: nix::Error::EBADF,
    })?;
    // The shim leaves the caller's working directory (it must not keep a
    // mount busy): every path becomes absolute first.
    for path in [&mut options.bundle, &mut options.dir, &mut options.log_dir] {
        *path = absolute(path)?;
    }
    if let Some(root) = &mut options.runtime_root {
        *root = absolute(root)?;
    }
    if options.runtime.components().count() > 1 {
        options.runtime = absolute(&options.runtime)?;
    }
    let socket = options.dir.join(SOCKET);
    if socket.as_os_str().len() > 107 {
        return Err(Error::SocketPath(socket));
    }
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(sys("pipe"))?;
    // SAFETY: the process is single-threaded here (a binary's main, no
    // thread started), so the child may run any code after fork.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut answer = String::new();
            let _ = std::fs::File::from(read_end)
                .take(64 * 1024)
                .read_to_string(&mut answer);
            match answer.strip_prefix("ok ") {
                Some(ready) => Ok(ready.trim_end().to_owned()),
                None if answer.is_empty() => Err(Error::Runtime {
                    op: "create",
                    message: "the shim died before it was ready".to_owned(),
                }),
                None => Err(Error::NotReady(answer.trim_end().to_owned())),
            }
        }
        ForkResult::Child => {
            drop(read_end);
            let code = detached(options, write_end);
            std::process::exit(code)
        }
    }
}
// ANCHOR_END: launch

/// The forked shim: detach, set up, tell the launcher through `ready`,
/// serve. Returns the shim's exit code.
fn detached(options: Options, ready: OwnedFd) -> i32 {
    let mut ready = std::fs::File::from(ready);
    let shim = detach().and_then(|()| server::Shim::create(options));
    match shim {
        Ok(mut shim) => {
            let line = format!("ok {}\n", shim.ready_line());
            let _ = ready.write_all(line.as_bytes());
            drop(ready);
            shim.serve()
        }
        Err(error) => {
            let _ = ready.write_all(
                format!("{}\n", crate::child::error_chain(&error)).as_bytes(),
            );
            1
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path)
        .map_err(crate::path_io::at("resolve", path))
        .map_err(Error::from)
}

// ANCHOR: detach
/// A new session (no terminal, no process group of the daemon's),
/// subreaper of what the runtime leaves behind, stdio on `/dev/null`.
fn detach() -> Result<(), Error> {
    nix::unistd::setsid().map_err(sys("setsid"))?;
    nix::unistd::chdir("/").map_err(sys("chdir to /"))?;
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    nix::errno::Errno::result(rc).map_err(sys("become a subreaper"))?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(crate::path_io::at("open", Path::new("/dev/null")))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard fds, which this process owns.
        let rc = unsafe {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null.as_fd()), fd)
        };
        nix::errno::Errno::result(rc).map_err(sys("redirect stdio"))?;
    }
    Ok(())
}
// ANCHOR_END: detach
