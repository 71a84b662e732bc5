//! The container is a child process: create it, hear how its set-up went,
//! forward signals to it, and turn its end into an exit code.
//!
//! Namespaces are asked for at the moment a process is created: `clone(2)`
//! takes the same `CLONE_NEW*` flags as `unshare(2)`, and the new process is
//! born inside them. [`spawn`] calls it with whatever flags the step has
//! learned so far; the closure it is given runs in the child, sets the
//! container up and finally `exec`s `COMMAND`.
//!
//! # The report pipe
//!
//! Between `clone` and `exec`, the child can fail (a bad hostname, a missing
//! rootfs, a command that does not exist). The child cannot return an error
//! to the parent — it is another process — so it writes one to a pipe:
//!
//! ```text
//!   parent                                   child (in the new namespaces)
//!   ──────                                   ─────
//!   pipe2(O_CLOEXEC), block signals
//!   clone(flags) ───────────────────────────▶ set-up closure runs
//!   close its write end                       │
//!   read() … blocks                           ├─ failure: write [code][message],
//!     │                                       │           exit(code)
//!     │ ◀──────────── bytes ──────────────────┘
//!     │ ◀──────────── EOF ─────────────────── execvp(COMMAND): O_CLOEXEC closes
//!   EOF: COMMAND runs → supervise()             the last write end
//!   bytes: reap the child, Error::Setup
//! ```
//!
//! A successful `exec` closes the write end (it is `O_CLOEXEC`), so the
//! parent reading end-of-file *is* the news that `COMMAND` is running. This
//! is a one-way report, not yet a conversation; step 4 adds a two-way sync
//! channel when the parent has work to do between `clone` and `exec`.
//!
//! # Signals and exit codes
//!
//! The parent blocks the signals it forwards (and `SIGCHLD`) before `clone`,
//! then [`supervise`] waits for them with `sigwait(2)`: no handlers, no
//! races between a handler and `waitpid`. `COMMAND` gets an empty signal
//! mask back in [`exec`]. The step exits with `COMMAND`'s exit code, or
//! `128 + N` when it was killed by signal `N`, as a shell reports it.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, execvp, pipe2};

/// The error type a set-up closure returns: any library error converts into
/// it with `?`, and [`exit_code_of`] still finds an [`ExecError`] inside.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Exit code when the container could not be set up (`docker run` uses the
/// same number for its own failures).
pub const EXIT_SETUP_FAILED: u8 = 125;
/// Exit code when `COMMAND` exists but cannot be executed (as in `sh`).
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// Exit code when `COMMAND` is not found (as in `sh`).
pub const EXIT_NOT_FOUND: u8 = 127;

/// The child's stack. `clone(2)` without `CLONE_VM` gives the child a copy
/// of our memory, so this buffer is only ever used by the child's copy.
const STACK_SIZE: usize = 1024 * 1024;

/// Signals a supervisor passes on to the process it supervises. `SIGKILL`
/// and `SIGSTOP` cannot be caught and so cannot be forwarded.
pub const FORWARDED_SIGNALS: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// What can go wrong while creating, or waiting for, the container process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `sigprocmask(2)` refused to block the forwarded signals.
    #[error("cannot block signals before clone(2)")]
    BlockSignals(#[source] Errno),
    /// `pipe2(2)` failed (out of file descriptors, most likely).
    #[error("cannot create the report pipe")]
    ReportPipe(#[source] Errno),
    /// `clone(2)` failed: `EPERM` without the capability a flag needs,
    /// `EINVAL` for a flag this kernel does not know.
    #[error("clone(2) with {} failed", flag_names(*.flags))]
    Clone {
        /// The namespace flags asked for.
        flags: CloneFlags,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Reading the report pipe failed.
    #[error("cannot read the container's report")]
    ReadReport(#[source] std::io::Error),
    /// The child reported a failure before `COMMAND` could run.
    #[error("{message}")]
    Setup {
        /// The exit code the child chose (see [`exit_code_of`]).
        code: u8,
        /// The child's error, with its causes joined by `": "`.
        message: String,
    },
    /// `waitpid(2)` failed.
    #[error("waitpid({pid}) failed")]
    Wait {
        /// The pid waited for (`-1`: any child).
        pid: Pid,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// `sigwait(2)` failed.
    #[error("sigwait(2) failed")]
    SigWait(#[source] Errno),
}

/// `CLONE_NEWUTS | CLONE_NEWPID`: flags as they are spelled in `clone(2)`.
pub fn flag_names(flags: CloneFlags) -> String {
    let names: Vec<&str> = flags.iter_names().map(|(name, _)| name).collect();
    if names.is_empty() {
        "no flags".to_owned()
    } else {
        names.join(" | ")
    }
}

/// Why `COMMAND` could not be executed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No command was given.
    #[error("no command to run")]
    Empty,
    /// An argument cannot be passed to `execve(2)`.
    #[error("argument {index} of the command contains a NUL byte")]
    Nul {
        /// Which argument (0 is the program).
        index: usize,
    },
    /// Restoring the signal mask before `exec` failed.
    #[error("cannot restore the signal mask")]
    SignalMask(#[source] Errno),
    /// `execvp(3)` failed.
    #[error("cannot execute {program:?}")]
    Exec {
        /// The program as given.
        program: String,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

impl ExecError {
    /// The exit code a shell would use for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Exec {
                source: Errno::ENOENT,
                ..
            } => EXIT_NOT_FOUND,
            ExecError::Exec {
                source: Errno::EACCES | Errno::ENOEXEC | Errno::EISDIR,
                ..
            } => EXIT_NOT_EXECUTABLE,
            ExecError::Empty
            | ExecError::Nul { .. }
            | ExecError::SignalMask(_)
            | ExecError::Exec { .. } => EXIT_SETUP_FAILED,
        }
    }
}

/// The child's end of the report pipe.
///
/// The set-up closure gets it so that a process which stays behind after
/// forking `COMMAND` (step 2's init) can [`Report::close`] its copy: the
/// parent sees end-of-file only when every copy is closed.
#[derive(Debug)]
pub struct Report {
    fd: Option<OwnedFd>,
}

impl Report {
    /// Close this process's copy of the write end.
    pub fn close(&mut self) {
        self.fd = None;
    }

    /// Send a failure to the parent; `false` if there is no pipe to send it on.
    fn send(&mut self, code: u8, message: &str) -> bool {
        let Some(fd) = self.fd.take() else {
            return false;
        };
        let mut pipe = File::from(fd);
        let mut bytes = vec![code];
        bytes.extend_from_slice(message.as_bytes());
        pipe.write_all(&bytes).is_ok()
    }
}

/// The container process, seen from the parent.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    report: File,
    /// The parent's signal mask before [`spawn`] blocked the forwarded
    /// signals; restored when the child has been waited for.
    old_mask: SigSet,
}

/// The signals a supervisor waits for: the forwarded ones and `SIGCHLD`.
pub fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        set.add(signal);
    }
    set.add(Signal::SIGCHLD);
    set
}

// ANCHOR: spawn
/// Create the container process with `clone(2)` in the namespaces `flags`
/// asks for, and run `setup` in it.
///
/// `setup` runs in the child. It returns the child's exit code (step 2's init
/// returns `COMMAND`'s) or, normally, never returns because it `exec`s. On
/// error, its message travels back through the report pipe and
/// [`Child::wait`] returns it as [`Error::Setup`].
pub fn spawn<F>(flags: CloneFlags, setup: F) -> Result<Child, Error>
where
    F: FnOnce(&mut Report) -> Result<u8, BoxError>,
{
    let old_mask = supervised_signals()
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(Error::BlockSignals)?;
    let restore = |error: Error| {
        // Best effort: the error we return matters more than this one.
        let _ = old_mask.thread_set_mask();
        error
    };
    let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| restore(Error::ReportPipe(e)))?;
    let mut report = Report { fd: Some(write) };
    let mut setup = Some(setup);
    let mut stack = vec![0u8; STACK_SIZE];
    let callback = Box::new(|| child_main(setup.take(), &mut report));
    // SAFETY: no CLONE_VM, so the child runs on its own copy of `stack` and
    // of every other page; it is fork(2) with namespace flags. We are
    // single-threaded here (no other thread holds a lock the child could
    // inherit), and `child_main` needs far less than STACK_SIZE of stack.
    let pid = unsafe { nix::sched::clone(callback, &mut stack, flags, Some(libc::SIGCHLD)) };
    // The parent's copy of the write end must go, or it never reads EOF.
    drop(report);
    let pid = pid.map_err(|source| restore(Error::Clone { flags, source }))?;
    Ok(Child {
        pid,
        report: File::from(read),
        old_mask,
    })
}
// ANCHOR_END: spawn

/// The child's side: run `setup`, and report its error if it fails.
fn child_main<F>(setup: Option<F>, report: &mut Report) -> isize
where
    F: FnOnce(&mut Report) -> Result<u8, BoxError>,
{
    let Some(setup) = setup else {
        return EXIT_SETUP_FAILED.into();
    };
    // If the parent dies, so does the container: it is the parent that
    // forwards signals and cleans up. (The parent could die before this line;
    // the window is a few instructions wide and real runtimes close it by
    // checking getppid() afterwards.)
    if let Err(errno) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        report.send(
            EXIT_SETUP_FAILED,
            &format!("prctl(PR_SET_PDEATHSIG): {errno}"),
        );
        return EXIT_SETUP_FAILED.into();
    }
    match setup(report) {
        Ok(code) => code.into(),
        Err(error) => {
            let code = exit_code_of(error.as_ref());
            let message = error_chain(error.as_ref());
            if !report.send(code, &message) {
                // No parent is listening any more (the init already closed
                // its pipe); stderr is the only place left to say it.
                eprintln!("{message}");
            }
            code.into()
        }
    }
}

impl Child {
    /// The container process's pid, as the parent sees it.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    // ANCHOR: wait
    /// Wait until `COMMAND` runs or the set-up fails, then supervise the
    /// child until it ends, and return its exit code.
    pub fn wait(mut self) -> Result<u8, Error> {
        let mut bytes = Vec::new();
        let read = self.report.read_to_end(&mut bytes);
        let result = match (read, bytes.split_first()) {
            (Err(error), _) => {
                // Do not leave a half-set-up container behind.
                let _ = kill(self.pid, Signal::SIGKILL);
                let _ = supervise(self.pid, Reap::Main);
                Err(Error::ReadReport(error))
            }
            (Ok(_), Some((&code, message))) => {
                // The child exits right after its report; reap it.
                let _ = supervise(self.pid, Reap::Main);
                Err(Error::Setup {
                    code,
                    message: String::from_utf8_lossy(message).into_owned(),
                })
            }
            (Ok(_), None) => supervise(self.pid, Reap::Main),
        };
        let _ = self.old_mask.thread_set_mask();
        result
    }
    // ANCHOR_END: wait
}

/// Which children [`supervise`] reaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// Only the supervised process (the parent outside the container).
    Main,
    /// Every child, including orphans re-parented to us (PID 1's duty).
    All,
}

// ANCHOR: supervise
/// Forward signals to `main` and wait for it to end; return its exit code.
///
/// The caller must have blocked [`supervised_signals`] (as [`spawn`] does),
/// so that they queue up for `sigwait(2)` instead of running handlers.
pub fn supervise(main: Pid, reap: Reap) -> Result<u8, Error> {
    let signals = supervised_signals();
    loop {
        if let Some(code) = reap_children(main, reap)? {
            return Ok(code);
        }
        let signal = signals.wait().map_err(Error::SigWait)?;
        if signal != Signal::SIGCHLD {
            // ESRCH means `main` is already gone and its SIGCHLD is queued.
            let _ = kill(main, signal);
        }
    }
}
// ANCHOR_END: supervise

/// Reap what has ended without blocking; `Some(code)` once `main` has.
fn reap_children(main: Pid, reap: Reap) -> Result<Option<u8>, Error> {
    let target = match reap {
        Reap::Main => main,
        Reap::All => Pid::from_raw(-1),
    };
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(status) if status.pid() == Some(main) => {
                if let Some(code) = exit_code(status) {
                    return Ok(Some(code));
                }
            }
            // An orphan that PID 1 adopted: reaped, nothing more to do.
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(source) => {
                return Err(Error::Wait {
                    pid: target,
                    source,
                });
            }
        }
    }
}

/// The exit code a shell would show for `status`: the code itself, or
/// `128 + N` for a death by signal `N`; `None` if the process has not ended.
pub fn exit_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, signal, _) => Some(128u8.wrapping_add(signal as u8)),
        _ => None,
    }
}

// ANCHOR: exec
/// Replace this process with `command`, searching `PATH` like a shell.
///
/// Only returns on failure. The signal mask is emptied first: the container
/// starts with every signal deliverable, whatever its supervisor blocked.
pub fn exec(command: &[OsString]) -> Result<Infallible, ExecError> {
    let argv = command
        .iter()
        .enumerate()
        .map(|(index, arg)| CString::new(arg.as_bytes()).map_err(|_| ExecError::Nul { index }))
        .collect::<Result<Vec<_>, _>>()?;
    let program = argv.first().ok_or(ExecError::Empty)?;
    SigSet::empty()
        .thread_set_mask()
        .map_err(ExecError::SignalMask)?;
    execvp(program, &argv).map_err(|source| ExecError::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    })
}
// ANCHOR_END: exec

/// The exit code for an error: the one an [`ExecError`] or a child's
/// [`Error::Setup`] carries, anywhere in its chain of causes, else
/// [`EXIT_SETUP_FAILED`].
pub fn exit_code_of(error: &(dyn StdError + 'static)) -> u8 {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(exec) = error.downcast_ref::<ExecError>() {
            return exec.exit_code();
        }
        if let Some(Error::Setup { code, .. }) = error.downcast_ref::<Error>() {
            return *code;
        }
        cause = error.source();
    }
    EXIT_SETUP_FAILED
}

/// An error and its causes on one line, joined by `": "`.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        line.push_str(": ");
        line.push_str(&error.to_string());
        cause = error.source();
    }
    line
}
