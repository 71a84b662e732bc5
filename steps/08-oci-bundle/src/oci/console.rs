//! `process.terminal`: the process gets a pseudo-terminal (`pty(7)`) as
//! its stdin, stdout and stderr, and whoever asked for it gets the other
//! end, the *master*, over a unix socket (runc's `--console-socket`).
//!
//! The pty is made *inside* the container, after the pivot, from the
//! container's own `/dev/ptmx` (its `devpts` instance, mounted with
//! `newinstance`): its slave is `/dev/pts/0` there and nowhere on the
//! host. The master travels as ancillary data (`SCM_RIGHTS`,
//! `unix(7)`): a copy of the file descriptor, not a path, so the caller
//! (containerd's shim, conmon) can read and write the terminal without
//! ever seeing the container's filesystem.
//!
//! ```text
//!   runtime (host)                 container process (after the pivot)
//!   connect(console socket) ──fd─▶ kept across clone (spawn_keeping)
//!                                  open /dev/ptmx → master; unlock
//!                                  TIOCGPTPEER → slave (no path lookup)
//!                                  TIOCSWINSZ (consoleSize)
//!   caller ◀── sendmsg(SCM_RIGHTS: master, "/dev/pts/N") ──
//!                                  close master; setsid; TIOCSCTTY;
//!                                  slave → fds 0, 1, 2
//! ```

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::stat::Mode;

/// What can go wrong with the terminal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `process.terminal` without a console socket to send it to.
    #[error("process.terminal is true, but no console socket was given")]
    NoSocket,
    /// A console socket for a process without a terminal.
    #[error("a console socket was given, but process.terminal is false")]
    NoTerminal,
    /// Connecting to the console socket, in the runtime.
    #[error("cannot connect to the console socket {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A step of making the pty or handing it over.
    #[error("terminal: {what}")]
    Pty {
        /// The step.
        what: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// Connect to the console socket at `path` (in the runtime, on the host,
/// before the container process exists).
pub fn connect(path: &Path) -> Result<OwnedFd, Error> {
    UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|source| Error::Connect {
            path: path.to_owned(),
            source,
        })
}

fn pty(what: &'static str) -> impl FnOnce(Errno) -> Error {
    move |source| Error::Pty { what, source }
}

/// `ioctl(2)` on `fd` with an integer argument.
fn ioctl(
    fd: RawFd,
    request: libc::Ioctl,
    arg: libc::c_ulong,
) -> Result<i32, Errno> {
    // SAFETY: the requests used here take an integer (or a pointer to an
    // int that outlives the call, see `unlock`) as their argument.
    Errno::result(unsafe { libc::ioctl(fd, request, arg) })
}

// ANCHOR: set_up
/// In the container process, after the pivot: make a pty of the
/// container's `/dev/ptmx`, send its master over `socket`, and make its
/// slave this process's controlling terminal and stdio. `size` is
/// `process.consoleSize` (height, width).
pub fn set_up(socket: &OwnedFd, size: Option<(u16, u16)>) -> Result<(), Error> {
    crate::trace::event(
        8,
        || "open /dev/ptmx; the master to the console socket",
    );
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = open("/dev/ptmx", flags, Mode::empty())
        .map_err(pty("open /dev/ptmx"))?;
    let unlocked: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int through the pointer, alive here.
    let rc =
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlocked) };
    Errno::result(rc).map_err(pty("unlock the pty"))?;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int through the pointer.
    let rc =
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) };
    Errno::result(rc).map_err(pty("number the pty"))?;
    // The slave from the master itself: no path that could be swapped.
    let slave = ioctl(
        master.as_raw_fd(),
        libc::TIOCGPTPEER,
        (libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) as libc::c_ulong,
    )
    .map_err(pty("open the pty's slave"))?;
    // SAFETY: TIOCGPTPEER returned a new fd that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some((rows, cols)) = size {
        let winsize = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize through the pointer.
        let rc = unsafe {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize)
        };
        Errno::result(rc).map_err(pty("set the console size"))?;
    }
    let name = format!("/dev/pts/{number}");
    let fds = [master.as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(pty("send the master over the console socket"))?;
    drop(master);
    nix::unistd::setsid().map_err(pty("setsid"))?;
    ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0)
        .map_err(pty("make the pty the controlling terminal"))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the stdio numbers; `slave` stays valid.
        let rc = unsafe { libc::dup2(slave.as_raw_fd(), target) };
        Errno::result(rc).map_err(pty("make the pty stdio"))?;
    }
    Ok(())
}
// ANCHOR_END: set_up
