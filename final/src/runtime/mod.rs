//! `berth-runtime`: an OCI runtime with runc's command line, so that
//! containerd, dockerd and podman can use it in runc's place.
//!
//! # Layout
//!
//! - [`cli`]: the command line (runc's flags and commands) and `main`;
//! - [`early`]: the binary's entry point, which re-executes before the C
//!   library starts;
//! - [`lifecycle`]: the operations, one function per command;
//! - [`exec`]: a process more in a running container;
//! - [`resources`]: its processes (`ps`) and live limits (`update`);
//! - [`state`]: the state directory, the observed [`state::Status`], the
//!   per-container lock;
//! - [`about`]: `spec` and `features`;
//! - [`log`]: warnings and errors in runc's text and JSON formats.
//!
//! Single-threaded, no async runtime: the runtime `clone(2)`s, and a
//! process that forks must not have other threads holding locks.

pub mod about;
pub mod cli;
pub mod early;
pub mod exec;
pub mod lifecycle;
pub mod log;
pub mod resources;
pub mod state;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use step08_oci::cgroup;
use step08_oci::oci::{self, exec_fifo, lifecycle as oci_lifecycle};

use state::Status;

/// What can make a runtime command fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory (see [`state::Error`]).
    #[error(transparent)]
    State(#[from] state::Error),
    /// The bundle (see [`oci::Error`]).
    #[error(transparent)]
    Bundle(#[from] oci::Error),
    /// Setting the container up or running it (step 8).
    #[error(transparent)]
    Lifecycle(#[from] oci_lifecycle::Error),
    /// The exec FIFO, at `start`.
    #[error(transparent)]
    Gate(#[from] exec_fifo::Error),
    /// The container's cgroup.
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    /// The command is not one for a container in this status.
    #[error("cannot {operation} container {id}: it is {}", status.as_str())]
    Status {
        /// The container.
        id: String,
        /// The command.
        operation: &'static str,
        /// Its status.
        status: Status,
    },
    /// `kill` of a container without a process (containerd looks for
    /// the words "container not running").
    #[error("cannot kill container {0}: container not running")]
    NotRunning(String),
    /// The recorded process is gone although the status needs one.
    #[error("the container's process is gone")]
    NoProcess,
    /// A signal name or number that does not exist.
    #[error("unknown signal {0:?}")]
    Signal(String),
    /// `kill(2)` or `pidfd_send_signal(2)` failed.
    #[error("cannot send {signal} to container {id}")]
    Kill {
        /// The container.
        id: String,
        /// The signal.
        signal: Signal,
        /// Why.
        #[source]
        source: Errno,
    },
    /// A process that outlived `SIGKILL` (a process stuck in the kernel).
    #[error("container {0}'s process did not exit after SIGKILL")]
    Stuck(String),
    /// `--pid-file`.
    #[error("cannot write the pid file {path}")]
    PidFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--systemd-cgroup` where there is no systemd.
    #[error(
        "--systemd-cgroup: systemd is not running on this host \
         (no /run/systemd/system); drop the flag to use cgroupfs"
    )]
    NoSystemd,
    /// `--systemd-cgroup` where there is systemd: not implemented.
    #[error(
        "--systemd-cgroup: cgroups through systemd are not implemented; \
         configure the caller for cgroupfs (SystemdCgroup = false)"
    )]
    SystemdNotImplemented,
    /// The log file.
    #[error(transparent)]
    Log(#[from] log::Error),
    /// `spec`.
    #[error(transparent)]
    Spec(#[from] about::SpecError),
    /// `ps` or `update`.
    #[error(transparent)]
    Resources(#[from] resources::ResourcesError),
    /// `--trace` or `BERTH_TRACE`.
    #[error(transparent)]
    Trace(#[from] cli::TraceError),
    /// A bad `exec` option.
    #[error(transparent)]
    ExecOption(#[from] exec::OptionError),
}

impl Error {
    /// The exit code of a failed command: the container's own for a
    /// foreground `run` that could not start it (126, 127, 128 + N), else
    /// 1, as runc.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Lifecycle(e) => match e.exit_code() {
                step08_oci::child::EXIT_SETUP_FAILED => 1,
                code => code,
            },
            _ => 1,
        }
    }
}
