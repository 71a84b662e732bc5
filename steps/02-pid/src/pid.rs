//! The PID namespace, and the init that runs as its PID 1.
//!
//! `pid_namespaces(7)`: the first process created with `CLONE_NEWPID` is
//! PID 1 of the new namespace, and PID 1 has two duties no other process has:
//!
//! 1. **Orphans become its children.** A process whose parent dies is
//!    re-parented to PID 1 of its namespace, which must `waitpid(2)` for it,
//!    or it stays a zombie and holds its pid.
//! 2. **It is protected from signals.** The kernel delivers to PID 1 only the
//!    signals it has installed a handler for (`SIGKILL` and `SIGSTOP` from an
//!    ancestor namespace aside). A program that never expected to be PID 1
//!    — `sleep`, most servers — therefore ignores `SIGTERM` and Ctrl-C.
//!
//! When PID 1 exits, the kernel kills every other process in the namespace
//! with `SIGKILL`: the container ends with its init.
//!
//! # Our choice: a minimal init
//!
//! Rather than making `COMMAND` PID 1, the process `clone(2)` creates stays
//! PID 1 and runs [`init`]: it forks `COMMAND` (PID 2), forwards the signals
//! its supervisor forwards to it, reaps every child, and exits with
//! `COMMAND`'s exit code. It is our own code, already in memory, so the
//! rootfs needs no init binary. This is what `docker run --init` adds (with
//! `tini`); the OCI runtime in Part II runs `config.json`'s process as PID 1
//! itself, as the runtime spec says and `runc` does, and leaves the choice
//! of an init to the image.

use std::ffi::OsString;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, fork};

use crate::child::{self, BoxError, Channel, Reap};

/// The `clone(2)` flag this module needs.
pub const CLONE_FLAGS: CloneFlags = CloneFlags::CLONE_NEWPID;

/// What can go wrong in the init.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `fork(2)` of `COMMAND` failed.
    #[error("init: cannot fork the command")]
    Fork(#[source] Errno),
    /// Waiting for `COMMAND` failed.
    #[error("init: cannot supervise the command")]
    Supervise(#[source] child::Error),
    /// Blocking the supervised signals failed (a program of its own).
    #[error("init: cannot block the signals it forwards")]
    Block(#[source] Errno),
}

// ANCHOR: init
/// Be PID 1: fork `command`, supervise it, reap orphans; return its exit code.
///
/// Call it in the child that `clone(CLONE_NEWPID)` created, with the
/// supervised signals still blocked (as [`child::spawn`] leaves them).
///
/// In the forked process it returns only an error (the `exec` failed),
/// which [`child::spawn`] reports to the parent through `channel`.
pub fn init(
    command: &[OsString],
    channel: &mut Channel,
) -> Result<u8, BoxError> {
    // SAFETY: the process is single-threaded (we are the child of clone(2),
    // which copies only the calling thread), so the forked copy cannot
    // inherit a lock held by another thread.
    match unsafe { fork() }.map_err(Error::Fork)? {
        ForkResult::Child => match child::exec(command)? {},
        ForkResult::Parent { child: command_pid } => {
            // The command holds its own copy of the sync socket, closed by
            // its exec; ours must go or the parent never sees end-of-file.
            channel.close();
            Ok(child::supervise(command_pid, Reap::All)
                .map_err(Error::Supervise)?)
        }
    }
}
// ANCHOR_END: init

/// [`init`] as a program of its own: `berth-init`, which the engine's
/// `docker run --init` bind-mounts into a container and runs as its PID 1
/// (Docker ships `tini` for this). Nobody has blocked the supervised
/// signals for it, so it blocks them first; it has no parent to tell.
pub fn init_program(command: &[OsString]) -> Result<u8, BoxError> {
    child::supervised_signals()
        .thread_block()
        .map_err(Error::Block)?;
    init(command, &mut Channel::default())
}
