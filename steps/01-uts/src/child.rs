//! The container is a child process: create it, hear how its set-up went,
//! forward signals to it, and turn its end into an exit code.
//!
//! Namespaces are asked for at the moment a process is created: `clone(2)`
//! takes the same `CLONE_NEW*` flags as `unshare(2)`, and the new process is
//! born inside them. [`spawn`] calls it with whatever flags the step has
//! learned so far; the closure it is given runs in the child, sets the
//! container up and finally `exec`s `COMMAND`.
//!
//! # The sync channel
//!
//! Between `clone` and `exec`, each side has work the other must wait for.
//! From step 4 on, the parent sets up what only the host side can (a veth
//! pair, uid/gid maps, a cgroup) while the child waits; and the child can
//! fail (a bad hostname, a missing rootfs, a command that does not exist)
//! and must say so — it is another process, it cannot return an error. A
//! `socketpair(2)` of `SOCK_SEQPACKET` sockets (one message per packet)
//! carries [`Message`]s both ways:
//!
//! ```text
//!   parent                                   child (in the new namespaces)
//!   ──────                                   ─────
//!   socketpair(O_CLOEXEC), block signals
//!   clone(flags) ───────────────────────────▶ sync 1: wait for Proceed
//!   [spawn returns the Child]                        (end-of-file: the parent
//!   host-side set-up (step 4 on), using               died, so exit)
//!   Child::pid(); on failure the
//!   Child is dropped: SIGKILL, reaped
//!   Child::wait():
//!   sync 1: send Proceed ───────────────────▶ set-up closure runs
//!   sync 2: recv() … blocks                   │
//!     │ ◀──────── Failed { code, message } ───┤ failure: exit(code)
//!     │ ◀──────── end-of-file ─────────────── execvp(COMMAND): O_CLOEXEC
//!   end-of-file: COMMAND runs → supervise()     closes the last copy
//!   Failed: reap the child, Error::Setup
//! ```
//!
//! A successful `exec` closes the child's socket (it is `O_CLOEXEC`), so the
//! parent reading end-of-file *is* the news that `COMMAND` is running. Steps
//! 1–3 have no host-side work: their `main` calls [`Child::wait`] at once.

//! # Signals and exit codes
//!
//! The parent blocks the signals it forwards (and `SIGCHLD`) before `clone`,
//! then [`supervise`] waits for them with `sigwait(3)`: no handlers, no
//! races between a handler and `waitpid`. `COMMAND` gets an empty signal
//! mask back in [`exec`]. The step exits with `COMMAND`'s exit code, or
//! `128 + N` when it was killed by signal `N`, as a shell reports it.
//!
//! # What crosses into the container, and what must not
//!
//! A child starts as a copy of its parent, and some of what it copies
//! would let the container reach back out:
//!
//! - **file descriptors**: an fd the caller left open (say fd 7 on the
//!   host's `/`) is a way out of any root filesystem —
//!   `cat /proc/self/fd/7/etc/shadow`. The child closes every fd but stdio
//!   and its sync socket first thing ([`close_inherited_fds`]), and
//!   [`exec`] marks any fd opened since close-on-exec;
//! - **signal dispositions**: a signal *ignored* by the parent stays
//!   ignored across `execve(2)` (`signal(7)`), and Rust's runtime ignores
//!   `SIGPIPE`. [`exec`] resets every disposition and empties the mask;
//! - **the parent-death signal**: `PR_SET_PDEATHSIG` is cleared by any
//!   change of the effective uid or gid (`prctl(2)`), so a step that
//!   switches ids re-arms it with [`Channel::keep_parent_death_signal`],
//!   else a `kill -9` of the step would orphan the container.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, socketpair,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, execvp};

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
    /// `socketpair(2)` failed (out of file descriptors, most likely).
    #[error("cannot create the sync socket pair")]
    SocketPair(#[source] Errno),
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
    /// Sending or receiving on the sync socket failed.
    #[error("sync with the container failed")]
    Sync(#[source] Errno),
    /// The child sent something that is not a [`Message`].
    #[error("the container sent a malformed sync message ({len} bytes)")]
    Malformed {
        /// Its length.
        len: usize,
    },
    /// The child sent a message where it must not (`Ready` to a one-part
    /// start, `Proceed` at all).
    #[error("the container sent a sync message out of order")]
    OutOfOrder,
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
    /// `sigwait(3)` failed.
    #[error("sigwait(3) failed")]
    SigWait(#[source] Errno),
    /// `prctl(PR_SET_PDEATHSIG)` failed.
    #[error("prctl(PR_SET_PDEATHSIG) failed")]
    DeathSignal(#[source] Errno),
    /// A forwarded signal arrived before `COMMAND` ran: set-up is
    /// abandoned (the step exits `128 + N`, as if the signal had killed it).
    #[error("interrupted by {signal} during set-up")]
    Interrupted {
        /// The signal.
        signal: Signal,
    },
    /// The parent died while the child was being set up.
    #[error("the parent process went away during set-up")]
    ParentGone,
    /// Closing the inherited file descriptors failed.
    #[error("cannot close the inherited file descriptors")]
    CloseFds(#[source] Errno),
    /// The child, set up, could not wait for its start ([`Channel::ready`]).
    #[error("waiting to be started: {0}")]
    NotStarted(String),
    /// The child ended (or ran `COMMAND`) without saying it was set up:
    /// [`Child::create`] on a child whose set-up never calls
    /// [`Channel::ready`].
    #[error("the container process ended before it was set up")]
    NotReady,
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
    /// Restoring the signal mask or dispositions before `exec` failed.
    #[error("cannot restore the signal mask")]
    SignalMask(#[source] Errno),
    /// Marking the file descriptors close-on-exec failed.
    #[error("cannot mark the file descriptors close-on-exec")]
    Fds(#[source] Errno),
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
            | ExecError::Fds(_)
            | ExecError::Exec { .. } => EXIT_SETUP_FAILED,
        }
    }
}

// ANCHOR: message
/// What travels on the sync socket. One message is one `SOCK_SEQPACKET`
/// packet: a tag byte, then the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Parent → child, sync 1: the host side is ready; go on.
    Proceed,
    /// Child → parent, sync 2 of a start in two parts (step 8's `create`
    /// and `start`): set-up is done, and the child waits for sync 3, a
    /// second [`Message::Proceed`], before it runs `COMMAND`.
    Ready,
    /// Child → parent, sync 2 (or 4): set-up failed before `COMMAND` ran.
    Failed {
        /// The exit code the child chose (see [`exit_code_of`]).
        code: u8,
        /// The error with its causes, joined by `": "`.
        message: String,
    },
}
// ANCHOR_END: message

impl Message {
    const PROCEED: u8 = 1;
    const FAILED: u8 = 2;
    const READY: u8 = 3;

    /// The packet for this message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Proceed => vec![Self::PROCEED],
            Message::Ready => vec![Self::READY],
            Message::Failed { code, message } => {
                let mut bytes = vec![Self::FAILED, *code];
                bytes.extend_from_slice(message.as_bytes());
                bytes
            }
        }
    }

    /// The message in `packet`, or `None` if it is not one.
    pub fn decode(packet: &[u8]) -> Option<Message> {
        match packet {
            [Self::PROCEED] => Some(Message::Proceed),
            [Self::READY] => Some(Message::Ready),
            [Self::FAILED, code, message @ ..] => Some(Message::Failed {
                code: *code,
                message: String::from_utf8_lossy(message).into_owned(),
            }),
            _ => None,
        }
    }
}

/// Largest packet we read: a failure message is one line of text.
const MAX_MESSAGE: usize = 64 * 1024;

/// Send `message` as one packet on `fd`.
fn send(fd: &OwnedFd, message: &Message) -> Result<(), Errno> {
    let bytes = message.encode();
    loop {
        match nix::sys::socket::send(
            fd.as_raw_fd(),
            &bytes,
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
            Ok(_) => return Ok(()),
        }
    }
}

/// Receive one packet on `fd`: `Ok(None)` at end-of-file.
fn recv(fd: &OwnedFd) -> Result<Option<Vec<u8>>, Errno> {
    // Not zeroed first: the kernel writes what it received, and the rest
    // of the 64 KiB is never touched (16 page faults saved per packet).
    let mut buf = Vec::<u8>::with_capacity(MAX_MESSAGE);
    loop {
        let spare = buf.spare_capacity_mut();
        // SAFETY: recv(2) writes at most `spare.len()` bytes into the
        // buffer's spare capacity, which `spare` borrows.
        let received = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                0,
            )
        };
        match Errno::result(received) {
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
            Ok(0) => return Ok(None),
            Ok(len) => {
                // SAFETY: the kernel initialised the first `len` bytes.
                unsafe { buf.set_len(len as usize) };
                return Ok(Some(buf));
            }
        }
    }
}

/// Receive one packet on `fd` (as [`recv`]), unless a forwarded signal
/// arrives first: `Ok(Err(signal))`. The signals are blocked, so they wait
/// as *pending*; `poll(2)` wakes up every few milliseconds to look.
fn recv_unless_interrupted(
    fd: &OwnedFd,
) -> Result<Result<Option<Vec<u8>>, Signal>, Errno> {
    loop {
        if let Some(signal) = interrupted() {
            return Ok(Err(signal));
        }
        let mut poll = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut poll, nix::poll::PollTimeout::from(20u8)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return recv(fd).map(Ok),
            Err(errno) => return Err(errno),
        }
    }
}

// ANCHOR: interrupted
/// The first forwarded signal that is pending (blocked, not yet taken), if
/// any: a supervisor asks this during set-up, before there is a `COMMAND`
/// to forward it to, and gives up instead of going on. The signal stays
/// pending.
pub fn interrupted() -> Option<Signal> {
    let mut pending = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending(2) fills the set it is given.
    let rc = unsafe { libc::sigpending(pending.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: sigpending succeeded, so the set is initialised.
    let pending = unsafe { pending.assume_init() };
    FORWARDED_SIGNALS.into_iter().find(|signal| {
        // SAFETY: `pending` is a valid set; sigismember only reads it.
        unsafe { libc::sigismember(&pending, *signal as libc::c_int) == 1 }
    })
}
// ANCHOR_END: interrupted

/// The child's end of the sync socket.
///
/// The set-up closure gets it so that a process which stays behind after
/// forking `COMMAND` (step 2's init) can [`Channel::close`] its copy: the
/// parent sees end-of-file only when every copy is closed.
#[derive(Debug)]
pub struct Channel {
    fd: Option<OwnedFd>,
}

impl Default for Channel {
    /// A channel to no parent: for an init that runs as a program of its
    /// own (step 2's `init_program`), with nobody to tell.
    fn default() -> Channel {
        Channel { fd: None }
    }
}

impl Channel {
    /// Close this process's copy of the child's end.
    pub fn close(&mut self) {
        self.fd = None;
    }

    // ANCHOR: keep_parent_death_signal
    /// Arm `PR_SET_PDEATHSIG` again, after a change of the effective uid or
    /// gid cleared it (`prctl(2)`), then make sure the parent did not die
    /// before that: its end of the sync socket is closed everywhere when it
    /// has, which `poll(2)` reports as a hang-up (or end-of-file) on ours.
    /// Without this, `kill -9` of a step whose container switched ids would
    /// leave the container running, orphaned.
    pub fn keep_parent_death_signal(&self) -> Result<(), Error> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(Error::DeathSignal)?;
        let Some(fd) = &self.fd else {
            // Closed (step 2's init after the fork): nothing to ask.
            return Ok(());
        };
        let mut poll = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        // Between sync 1 and the child's Ready (or exec) the parent sends
        // nothing: anything readable is the end-of-file of a dead parent.
        // (Step 8 calls this before Channel::ready, as it must.)
        match nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Error::ParentGone),
            Err(errno) => Err(Error::Sync(errno)),
        }
    }
    // ANCHOR_END: keep_parent_death_signal

    /// The fd of the child's end, while it is open.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Sync 1 (or 3), child side: wait for [`Message::Proceed`].
    fn wait_for_proceed(&mut self, sync: u8) -> Result<(), String> {
        let Some(fd) = &self.fd else {
            return Err("the sync socket is closed".to_owned());
        };
        match recv(fd) {
            Ok(Some(packet))
                if Message::decode(&packet) == Some(Message::Proceed) =>
            {
                Ok(())
            }
            Ok(Some(packet)) => {
                Err(format!("unexpected sync message {packet:?}"))
            }
            Ok(None) => Err(format!("the parent went away before sync {sync}")),
            Err(errno) => Err(format!("sync {sync}: recv: {errno}")),
        }
    }

    // ANCHOR: ready
    /// Syncs 2 and 3 of a start in two parts, child side: say that set-up
    /// is done ([`Message::Ready`]), then wait until the parent says go
    /// (a second [`Message::Proceed`]). The parent's side is
    /// [`Child::create`], then [`Child::start`]. Step 8 calls this where
    /// the runtime spec's `create` ends and `start` begins.
    pub fn ready(&mut self) -> Result<(), Error> {
        let Some(fd) = &self.fd else {
            return Err(Error::Sync(Errno::EBADF));
        };
        /* sync 2: set up. */
        send(fd, &Message::Ready).map_err(Error::Sync)?;
        /* sync 3: wait for the go. */
        self.wait_for_proceed(3).map_err(Error::NotStarted)
    }
    // ANCHOR_END: ready

    /// Sync 2, child side: send a failure; `false` if there is no socket.
    fn send_failure(&mut self, code: u8, message: &str) -> bool {
        let Some(fd) = self.fd.take() else {
            return false;
        };
        let message = Message::Failed {
            code,
            message: message.to_owned(),
        };
        send(&fd, &message).is_ok()
    }
}

/// The container process, seen from the parent.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    /// Whether both sync points have passed ([`Child::start`]).
    started: bool,
    /// Whether the child makes namespaces itself and has not said yet
    /// that they exist ([`Child::unshared`]).
    unsharing: bool,
    /// The parent's end of the sync socket; `None` once waited for.
    sync: Option<OwnedFd>,
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
/// asks for, and run `setup` in it once the parent says so.
///
/// `setup` runs in the child after sync 1 ([`Child::wait`] sends it). It
/// returns the child's exit code (step 2's init returns `COMMAND`'s) or,
/// normally, never returns because it `exec`s. On error, its message
/// travels back over the sync socket and [`Child::wait`] returns it as
/// [`Error::Setup`].
pub fn spawn<F>(flags: CloneFlags, setup: F) -> Result<Child, Error>
where
    F: FnOnce(&mut Channel) -> Result<u8, BoxError>,
{
    spawn_keeping(flags, &[], setup)
}

/// [`spawn`], with the fds in `keep` left open in the child (every other
/// fd from 3 on is closed): a runtime's `--preserve-fds`, or its console
/// socket.
pub fn spawn_keeping<F>(
    flags: CloneFlags,
    keep: &[RawFd],
    setup: F,
) -> Result<Child, Error>
where
    F: FnOnce(&mut Channel) -> Result<u8, BoxError>,
{
    spawn_unsharing(flags, CloneFlags::empty(), keep, setup)
}

/// [`spawn_keeping`], where the child makes the namespaces in `unshare`
/// itself (`unshare(2)`), first thing, before sync 1: the kernel builds
/// them on the child's CPU while the parent goes on with its part. Only
/// namespaces that the calling process itself enters can be unshared
/// (not PID or time: those are for children), and they are made in the
/// user namespace of `flags`, as `clone(2)` would make them.
pub fn spawn_unsharing<F>(
    flags: CloneFlags,
    unshare: CloneFlags,
    keep: &[RawFd],
    setup: F,
) -> Result<Child, Error>
where
    F: FnOnce(&mut Channel) -> Result<u8, BoxError>,
{
    let old_mask = supervised_signals()
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(Error::BlockSignals)?;
    let restore = |error: Error| {
        // Best effort: the error we return matters more than this one.
        let _ = old_mask.thread_set_mask();
        error
    };
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| restore(Error::SocketPair(e)))?;
    let mut channel = Channel {
        fd: Some(child_end),
    };
    let mut setup = Some(setup);
    let mut stack = vec![0u8; STACK_SIZE];
    let parent_fd = parent_end.as_raw_fd();
    let callback = Box::new(|| {
        child_main(setup.take(), &mut channel, parent_fd, keep, unshare)
    });
    crate::trace::event(1, || match unshare.is_empty() {
        true => format!("clone({})", flag_names(flags)),
        false => format!(
            "clone({}), the child unshare({})",
            flag_names(flags),
            flag_names(unshare)
        ),
    });
    // SAFETY: no CLONE_VM, so the child runs on its own copy of `stack` and
    // of every other page; it is fork(2) with namespace flags. We are
    // single-threaded here (no other thread holds a lock the child could
    // inherit), and `child_main` needs far less than STACK_SIZE of stack.
    let pid = unsafe {
        nix::sched::clone(callback, &mut stack, flags, Some(libc::SIGCHLD))
    };
    // The parent's copy of the child's end must go, or it never reads EOF.
    drop(channel);
    let pid = pid.map_err(|source| restore(Error::Clone { flags, source }))?;
    Ok(Child {
        pid,
        started: false,
        unsharing: !unshare.is_empty(),
        sync: Some(parent_end),
        old_mask,
    })
}
// ANCHOR_END: spawn

// ANCHOR: child_main
/// The child's side: make the namespaces in `unshare`, wait for sync 1,
/// run `setup`, report its error.
fn child_main<F>(
    setup: Option<F>,
    channel: &mut Channel,
    parent_end: RawFd,
    keep: &[RawFd],
    unshare: CloneFlags,
) -> isize
where
    F: FnOnce(&mut Channel) -> Result<u8, BoxError>,
{
    // Our copy of the parent's end: closed, so that we see end-of-file if
    // the parent dies. It is only a number in this process's fd table.
    let _ = nix::unistd::close(parent_end);
    let Some(setup) = setup else {
        return EXIT_SETUP_FAILED.into();
    };
    // Nothing the caller left open may reach the container: an fd on a
    // host directory is a way out of any rootfs (see the module docs).
    let mut kept: Vec<RawFd> = keep.to_vec();
    kept.extend(channel.fd());
    kept.extend(crate::trace::fd());
    if let Err(error) = close_inherited_fds(&kept) {
        channel.send_failure(EXIT_SETUP_FAILED, &error_chain(&error));
        return EXIT_SETUP_FAILED.into();
    }
    // If the parent dies, so does the container: it is the parent that
    // forwards signals and cleans up. (The parent could die before this line;
    // the window is a few instructions wide, and sync 1 below notices a
    // parent that is gone by then.)
    if let Err(errno) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        channel.send_failure(
            EXIT_SETUP_FAILED,
            &format!("prctl(PR_SET_PDEATHSIG): {errno}"),
        );
        return EXIT_SETUP_FAILED.into();
    }
    let unshared = match unshare.is_empty() {
        true => Ok(()),
        false => nix::sched::unshare(unshare),
    };
    if let Err(errno) = unshared {
        let flags = flag_names(unshare);
        channel.send_failure(
            EXIT_SETUP_FAILED,
            &format!("unshare({flags}): {errno}"),
        );
        return EXIT_SETUP_FAILED.into();
    }
    /* sync 0 (with `unshare` only): they exist. */
    if let (false, Some(fd)) = (unshare.is_empty(), &channel.fd)
        && send(fd, &Message::Ready).is_err()
    {
        return EXIT_SETUP_FAILED.into();
    }
    /* sync 1: wait until the parent has done its part. */
    if let Err(problem) = channel.wait_for_proceed(1) {
        channel.send_failure(EXIT_SETUP_FAILED, &problem);
        return EXIT_SETUP_FAILED.into();
    }
    match setup(channel) {
        Ok(code) => code.into(),
        Err(error) => {
            let code = exit_code_of(error.as_ref());
            let message = error_chain(error.as_ref());
            /* sync 2: the failure, instead of the end-of-file of exec. */
            if !channel.send_failure(code, &message) {
                // No parent is listening any more (the init already closed
                // its socket); stderr is the only place left to say it.
                eprintln!("{message}");
            }
            code.into()
        }
    }
}
// ANCHOR_END: child_main

impl Child {
    /// The container process's pid, as the parent sees it.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    // ANCHOR: wait
    /// Let the child proceed (sync 1) and wait until `COMMAND` runs or the
    /// set-up fails (sync 2). [`Child::wait`] does it if not done yet; the
    /// OCI runtime (step 8) calls it first, to run its `poststart` hooks
    /// between the start and the end.
    pub fn start(&mut self) -> Result<(), Error> {
        if self.started {
            return Ok(());
        }
        /* sync 1 (3 after create), then sync 2 (4) */
        match self.proceed()? {
            // End-of-file: exec closed the child's end; COMMAND runs.
            None => {
                self.started = true;
                Ok(())
            }
            Some(Message::Ready | Message::Proceed) => {
                Err(self.abandon(Error::OutOfOrder))
            }
            Some(Message::Failed { code, message }) => {
                Err(self.abandon(Error::Setup { code, message }))
            }
        }
    }

    /// Sync 0, parent side, for a child that makes namespaces itself
    /// ([`spawn_unsharing`]): wait until they exist. A hook that enters
    /// `/proc/PID/ns/net` must not find the host's network there. The
    /// first sync waits for it if the caller has not.
    pub fn unshared(&mut self) -> Result<(), Error> {
        if !std::mem::take(&mut self.unsharing) {
            return Ok(());
        }
        /* sync 0 */
        let answer = self.answer()?;
        self.expect_ready(answer)
    }

    /// Send [`Message::Proceed`] and return the child's answer: a message,
    /// or `None` for end-of-file. A failure to sync, a malformed answer or
    /// a forwarded signal abandons the child.
    fn proceed(&mut self) -> Result<Option<Message>, Error> {
        self.unshared()?;
        let Some(sync) = &self.sync else {
            return Err(Error::Sync(Errno::EBADF));
        };
        if let Err(errno) = send(sync, &Message::Proceed) {
            return Err(self.abandon(Error::Sync(errno)));
        }
        self.answer()
    }

    /// The child's next message, or `None` for end-of-file. A failure to
    /// receive, a malformed message or a forwarded signal abandons the
    /// child.
    fn answer(&mut self) -> Result<Option<Message>, Error> {
        let Some(sync) = &self.sync else {
            return Err(Error::Sync(Errno::EBADF));
        };
        let failed = match recv_unless_interrupted(sync) {
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some(packet))) => match Message::decode(&packet) {
                Some(message) => return Ok(Some(message)),
                None => Error::Malformed { len: packet.len() },
            },
            Ok(Err(signal)) => Error::Interrupted { signal },
            Err(errno) => Error::Sync(errno),
        };
        Err(self.abandon(failed))
    }

    /// After a failed sync: the child exits right after a failure; make
    /// sure of it, and reap it so that no half-set-up container is left
    /// behind. Returns `failed`.
    fn abandon(&mut self, failed: Error) -> Error {
        self.sync = None;
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = supervise(self.pid, Reap::Main);
        let _ = self.old_mask.thread_set_mask();
        failed
    }

    /// [`Child::start`] if not done yet, then supervise the child until it
    /// ends, and return its exit code.
    pub fn wait(mut self) -> Result<u8, Error> {
        self.start()?;
        self.sync = None;
        let result = supervise(self.pid, Reap::Main);
        let _ = self.old_mask.thread_set_mask();
        result
    }
    // ANCHOR_END: wait

    // ANCHOR: create
    /// Syncs 1 and 2 of a start in two parts, parent side: let the child
    /// set itself up, and return once it waits for its start
    /// ([`Channel::ready`]). [`Child::start`] then sends sync 3 and waits,
    /// as always, for the end-of-file of `exec` (or a failure). On a
    /// failure here the child is gone, as with `start`.
    pub fn create(&mut self) -> Result<(), Error> {
        /* sync 1, then sync 2 */
        let answer = self.proceed()?;
        self.expect_ready(answer)
    }

    /// `Ok` if `answer` is [`Message::Ready`] (set up, it waits for us);
    /// anything else abandons the child.
    fn expect_ready(&mut self, answer: Option<Message>) -> Result<(), Error> {
        let failed = match answer {
            Some(Message::Ready) => return Ok(()),
            Some(Message::Failed { code, message }) => {
                Error::Setup { code, message }
            }
            Some(Message::Proceed) => Error::OutOfOrder,
            None => Error::NotReady,
        };
        Err(self.abandon(failed))
    }
    // ANCHOR_END: create

    /// Sync 3 of a start in two parts when the process will be started by
    /// someone else (the runtime's `start` command, through step 8's exec
    /// FIFO): tell it to stop depending on us, wait until it has closed
    /// its end of the channel, and let it go — it is not killed when this
    /// value is dropped, and not reaped by us. Returns its pid.
    pub fn detach(mut self) -> Result<Pid, Error> {
        /* sync 3, then the end-of-file of the detached child */
        match self.proceed()? {
            None => {
                self.sync = None;
                let _ = self.old_mask.thread_set_mask();
                Ok(self.pid)
            }
            Some(Message::Failed { code, message }) => {
                Err(self.abandon(Error::Setup { code, message }))
            }
            Some(Message::Ready | Message::Proceed) => {
                Err(self.abandon(Error::OutOfOrder))
            }
        }
    }
}

impl Drop for Child {
    /// A child never waited for (host-side set-up failed) is killed and
    /// reaped: an error path must not leave a container behind.
    fn drop(&mut self) {
        if self.sync.take().is_some() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
            let _ = self.old_mask.thread_set_mask();
        }
    }
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
/// so that they queue up for `sigwait(3)` instead of running handlers.
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

// ANCHOR: reap_children
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
// ANCHOR_END: reap_children

// ANCHOR: exit_code
/// The exit code a shell would show for `status`: the code itself, or
/// `128 + N` for a death by signal `N`; `None` if the process has not ended.
pub fn exit_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, signal, _) => {
            Some(128u8.wrapping_add(signal as u8))
        }
        _ => None,
    }
}
// ANCHOR_END: exit_code

// ANCHOR: exec
/// Replace this process with `command`, searching `PATH` like a shell.
///
/// Only returns on failure. First every fd but stdio is marked
/// close-on-exec, and every signal gets its default disposition and is
/// unblocked: the container starts as a fresh process would, whatever its
/// supervisor blocked or ignored ([`prepare_exec`]).
pub fn exec(command: &[OsString]) -> Result<Infallible, ExecError> {
    let argv = command
        .iter()
        .enumerate()
        .map(|(index, arg)| {
            CString::new(arg.as_bytes()).map_err(|_| ExecError::Nul { index })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let program = argv.first().ok_or(ExecError::Empty)?;
    prepare_exec(3)?;
    execvp(program, &argv).map_err(|source| ExecError::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    })
}
// ANCHOR_END: exec

// ANCHOR: prepare_exec
/// What every `execve(2)` into a container needs first: fds from
/// `first_kept_closed` on marked close-on-exec (3: only stdio crosses;
/// the runtime's `--preserve-fds N` passes `3 + N`), every signal back to
/// its default disposition (an ignored signal stays ignored across
/// `execve`, and Rust's runtime ignores `SIGPIPE`), and an empty mask.
pub fn prepare_exec(first_kept_closed: RawFd) -> Result<(), ExecError> {
    close_range(
        first_kept_closed,
        RawFd::MAX,
        libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
    )
    .map_err(ExecError::Fds)?;
    reset_signal_dispositions().map_err(ExecError::SignalMask)?;
    SigSet::empty()
        .thread_set_mask()
        .map_err(ExecError::SignalMask)
}
// ANCHOR_END: prepare_exec

/// `close_range(2)` from `first` to `last`, with `flags` (`0`: close;
/// `CLOSE_RANGE_CLOEXEC`: only mark). Before Linux 5.9/5.11 there is no
/// such call, and the fds in `/proc/self/fd` are handled one by one.
fn close_range(
    first: RawFd,
    last: RawFd,
    flags: libc::c_int,
) -> Result<(), Errno> {
    if first < 0 || last < first {
        return Ok(());
    }
    // SAFETY: close_range(2) takes integers only; closing fds this process
    // does not use any more is what the caller asks for.
    let rc = unsafe {
        libc::syscall(libc::SYS_close_range, first as u32, last as u32, flags)
    };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        Err(Errno::ENOSYS | Errno::EINVAL) => {
            let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
                .map_err(|e| {
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
                })?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| (first..=last).contains(fd))
                .collect();
            for fd in fds {
                if flags == 0 {
                    let _ = nix::unistd::close(fd);
                } else {
                    // SAFETY: F_SETFD on an fd number only changes its flag.
                    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                }
            }
            Ok(())
        }
        Err(errno) => Err(errno),
    }
}

// ANCHOR: close_inherited_fds
/// Close every fd from 3 on except those in `keep` (the sync socket, and
/// what a runtime passes on deliberately): what the caller of the step
/// left open must not reach the container. Called first thing in the
/// child, so that no process of the container, not even one that stays
/// our code (step 2's init), holds an inherited fd.
pub fn close_inherited_fds(keep: &[RawFd]) -> Result<(), Error> {
    let mut keep: Vec<RawFd> =
        keep.iter().copied().filter(|fd| *fd >= 3).collect();
    keep.sort_unstable();
    let mut first = 3;
    for fd in keep {
        // The gap below each kept fd, then everything above the last.
        close_range(first, fd - 1, 0).map_err(Error::CloseFds)?;
        first = first.max(fd + 1);
    }
    close_range(first, RawFd::MAX, 0).map_err(Error::CloseFds)
}
// ANCHOR_END: close_inherited_fds

/// Every signal back to `SIG_DFL`. `SIGKILL` and `SIGSTOP` cannot be
/// changed. The system call is made directly: glibc's `sigaction(3)`
/// refuses the two real-time signals it keeps for itself (32 and 33), and
/// an ignored one of those would cross `execve(2)` like any other.
pub fn reset_signal_dispositions() -> Result<(), Errno> {
    /// The kernel's `struct sigaction` (handler, flags, restorer, mask):
    /// all zero is `SIG_DFL`, no flags, an empty mask.
    const DEFAULT: [u64; 4] = [0; 4];
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction(2) reads a kernel sigaction from a valid
        // pointer; the old action is not asked for; 8 is sizeof(sigset_t)
        // for the kernel. No handler of ours can run: we only remove them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                DEFAULT.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8,
            )
        };
        Errno::result(rc)?;
    }
    Ok(())
}

/// An error that says which exit code it stands for, and reads exactly as
/// the error it wraps (its message, then that error's causes).
///
/// [`exit_code_of`] walks an error's causes, but a `#[error(transparent)]`
/// variant of an enum hands over its inner error's *causes*, never the
/// inner error itself: an [`ExecError`] inside one is not seen. A caller
/// that knows the code (step 8's `process::Error::exit_code`) says it with
/// this wrapper instead.
#[derive(Debug)]
pub struct WithExitCode {
    /// The exit code: 126, 127, `128 + N`, or 125.
    pub code: u8,
    /// The error.
    pub error: BoxError,
}

impl std::fmt::Display for WithExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl StdError for WithExitCode {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error.source()
    }
}

/// The exit code for an error: the one a [`WithExitCode`], an
/// [`ExecError`] or a child's [`Error::Setup`] carries, anywhere in its
/// chain of causes, else [`EXIT_SETUP_FAILED`].
pub fn exit_code_of(error: &(dyn StdError + 'static)) -> u8 {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(coded) = error.downcast_ref::<WithExitCode>() {
            return coded.code;
        }
        if let Some(exec) = error.downcast_ref::<ExecError>() {
            return exec.exit_code();
        }
        match error.downcast_ref::<Error>() {
            Some(Error::Setup { code, .. }) => return *code,
            Some(Error::Interrupted { signal }) => {
                return 128u8.wrapping_add(*signal as u8);
            }
            _ => {}
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
