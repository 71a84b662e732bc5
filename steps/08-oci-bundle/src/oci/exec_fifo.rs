//! The exec FIFO: where a created container waits for its start when the
//! `create` that set it up has already exited.
//!
//! `step08-oci run` creates and starts in one process: the container waits
//! at sync 3 of step 1's channel ([`Gate::Channel`]). A runtime with
//! separate `create` and `start` *commands* cannot: `create` exits, and
//! with it its end of the channel. The gate must outlive it, and be
//! something `start` — a new process, knowing only the state directory —
//! can open. A named pipe, `fifo(7)`, is exactly that: opening one for
//! writing blocks until someone opens it for reading.
//!
//! ```text
//!   runtime create           container process             runtime start
//!   ──────────────           ─────────────────             ─────────────
//!   make(): mkfifo
//!     DIR/exec.fifo 0622
//!   lifecycle::create ─────▶ open DIR (O_PATH), before
//!                              the uid switch; set up
//!     ◀── sync 2: Ready ──── (caps, ids: all done)
//!   write state.json
//!   detach: sync 3 ────────▶ no parent-death signal,
//!     ◀── end-of-file ────── close the channel
//!   exit 0                   sync 4: openat(DIR,
//!                              "exec.fifo", O_WRONLY)
//!                              … blocks                    release():
//!                                                          open O_RDONLY
//!                            … returns; write "0" ───────▶ read "0"
//!                            seccomp, startContainer       unlink the fifo
//!                              hooks, execve               poststart hooks
//! ```
//!
//! `start` opens the FIFO without blocking and `poll(2)`s it together with
//! a pidfd of the process (`pidfd_open(2)`), so a container that died
//! while created is an error, not a hang. The FIFO's presence is also how
//! a runtime *observes* that a container is `created` rather than
//! `running`.
//!
//! Why 0622: at sync 4 the process already has the container's uid and
//! capabilities (typically no `CAP_DAC_OVERRIDE`), and in a user namespace
//! that uid is not the host's root. Only a process holding the directory
//! (the container's own, opened before the switch) gets this far: the
//! runtime's root directory above it is 0700.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::{Mode, fchmodat};

use crate::child::Channel;

/// The FIFO's name in the container's state directory.
pub const NAME: &str = "exec.fifo";

/// What can go wrong at the gate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `mkfifo(3)` or its `chmod`.
    #[error("cannot make the exec fifo {path}")]
    Make {
        /// The FIFO.
        path: PathBuf,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Opening the state directory, in the container process.
    #[error("cannot open the state directory {path}")]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Errno,
    },
    /// The sync with the parent (syncs 2 and 3).
    #[error(transparent)]
    Sync(#[from] crate::child::Error),
    /// Leaving the parent's care (parent-death signal, signal mask).
    #[error("cannot detach from the runtime's create")]
    Detach(#[source] Errno),
    /// Waiting at the FIFO or passing it, either side.
    #[error("exec fifo {path}: {what}")]
    Fifo {
        /// The FIFO.
        path: PathBuf,
        /// The operation.
        what: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
    /// The process ended while it was waiting to be started.
    #[error("the container process ended before it was started")]
    Ended,
    /// The FIFO was opened and closed without the byte that means "go".
    #[error("the container process left the exec fifo without a start")]
    NoStart,
}

/// Where a created process waits for its start.
#[derive(Debug)]
pub enum Gate {
    /// At sync 3 of the channel: the parent that created it starts it.
    Channel,
    /// At sync 3, after which it no longer dies with its parent: a
    /// runtime's `exec --detach`, which exits once the process runs.
    Detached,
    /// At the exec FIFO of this state directory (opened `O_PATH` before
    /// the process changed its ids): a later `start` command starts it.
    ExecFifo(OwnedFd),
}

// ANCHOR: make
/// Make `dir/exec.fifo`, mode 0622 whatever the umask.
pub fn make(dir: &Path) -> Result<(), Error> {
    let path = dir.join(NAME);
    let fail = |source| Error::Make {
        path: path.clone(),
        source,
    };
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o622))
        .map_err(fail)?;
    fchmodat(
        nix::fcntl::AT_FDCWD,
        &path,
        Mode::from_bits_truncate(0o622),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .map_err(fail)
}
// ANCHOR_END: make

impl Gate {
    /// The gate for a container whose state directory is `dir` (`Some`),
    /// or the channel's (`None`). In the container process, while its
    /// credentials are still those of the runtime.
    pub fn open(dir: Option<&Path>) -> Result<Gate, Error> {
        let Some(dir) = dir else {
            return Ok(Gate::Channel);
        };
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        open(dir, flags, Mode::empty())
            .map(Gate::ExecFifo)
            .map_err(|source| Error::OpenDir {
                path: dir.to_owned(),
                source,
            })
    }

    // ANCHOR: pass
    /// Child side: say that set-up is done (sync 2) and wait for the start.
    /// With [`Gate::ExecFifo`], sync 3 means "you are on your own": the
    /// process stops dying with its parent, closes the channel (the
    /// parent's `create` then returns), takes signals again as a fresh
    /// process would (a `kill` of a created container must work), and
    /// waits at the FIFO (sync 4).
    pub fn pass(self, channel: &mut Channel) -> Result<(), Error> {
        /* syncs 2 and 3 */
        channel.ready()?;
        let dir = match self {
            Gate::Channel => return Ok(()),
            Gate::Detached => {
                return nix::sys::prctl::set_pdeathsig(None)
                    .map_err(Error::Detach);
            }
            Gate::ExecFifo(dir) => dir,
        };
        nix::sys::prctl::set_pdeathsig(None).map_err(Error::Detach)?;
        channel.close();
        crate::child::reset_signal_dispositions().map_err(Error::Detach)?;
        nix::sys::signal::SigSet::empty()
            .thread_set_mask()
            .map_err(Error::Detach)?;
        let fail = |what| {
            move |source| Error::Fifo {
                path: PathBuf::from(NAME),
                what,
                source,
            }
        };
        /* sync 4: blocks until `start` opens the FIFO for reading. */
        crate::trace::event(8, || "created: waiting at exec.fifo for start");
        let flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let fifo = retry(|| openat(&dir, NAME, flags, Mode::empty()))
            .map_err(fail("open for writing"))?;
        retry(|| nix::unistd::write(&fifo, b"0")).map_err(fail("write"))?;
        Ok(())
    }
    // ANCHOR_END: pass
}

/// `operation`, again while it is interrupted by a signal.
fn retry<T>(
    mut operation: impl FnMut() -> Result<T, Errno>,
) -> Result<T, Errno> {
    loop {
        match operation() {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

// ANCHOR: release
/// Start side: let the process waiting at `dir/exec.fifo` go, and remove
/// the FIFO (the container then reads `running`). `process` is a pidfd of
/// the container process: if it ends first, [`Error::Ended`].
pub fn release(dir: &Path, process: BorrowedFd<'_>) -> Result<(), Error> {
    let path = dir.join(NAME);
    let fail = |what| {
        let path = path.clone();
        move |source| Error::Fifo { path, what, source }
    };
    // Non-blocking: we must not wait for a writer that may never come.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
        | OFlag::O_NOFOLLOW;
    let fifo =
        open(&path, flags, Mode::empty()).map_err(fail("open for reading"))?;
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(process, PollFlags::POLLIN),
        ];
        retry(|| poll(&mut fds, PollTimeout::NONE)).map_err(fail("poll"))?;
        let fifo_events = fds[0].revents().unwrap_or(PollFlags::empty());
        let ended = fds[1].revents().is_some_and(|r| !r.is_empty());
        let mut byte = [0u8; 1];
        match nix::unistd::read(&fifo, &mut byte) {
            Ok(1) => break,
            // No writer has come yet (a FIFO never written to does not
            // report a hang-up), or one came and is about to write.
            Ok(0) | Err(Errno::EAGAIN)
                if !fifo_events.contains(PollFlags::POLLHUP) && !ended => {}
            Ok(0) | Err(Errno::EAGAIN) if ended => return Err(Error::Ended),
            Ok(_) | Err(Errno::EAGAIN) => return Err(Error::NoStart),
            Err(errno) => return Err(fail("read")(errno)),
        }
    }
    std::fs::remove_file(&path).map_err(|e| {
        fail("remove")(Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    })
}
// ANCHOR_END: release
