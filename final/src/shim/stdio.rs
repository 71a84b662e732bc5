//! The stdio of a process the shim holds (the container's first one, or
//! one started by `exec`): pipes, or a pty whose master the runtime sends
//! over a console socket during `create`/`exec`. The shim keeps its ends
//! non-blocking for its `poll(2)` loop; the runtime's child gets the
//! others.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ChildStdio};

use nix::errno::Errno;

use super::protocol::Stream;
use super::{Error, sys};
use crate::path_io;

/// The shim's ends of one process's stdio.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Readable ends still open: stdout and stderr pipes, or the pty
    /// master (as stdout).
    pub outputs: Vec<(Stream, OwnedFd)>,
    /// The writable end of stdin (a pipe, or the master again).
    pub stdin: Option<OwnedFd>,
    /// What clients sent that stdin has not taken yet.
    pub stdin_pending: Vec<u8>,
    /// Close stdin once `stdin_pending` is written.
    pub stdin_closing: bool,
    /// The pty master, for `TIOCSWINSZ`.
    pub master: Option<OwnedFd>,
}

/// How the runtime command gets the process's stdio, and what the shim
/// must collect once it has run.
#[derive(Debug)]
pub struct Plan {
    /// With a terminal: the console socket the master arrives on.
    console: Option<(UnixListener, PathBuf)>,
    /// Keep stdin open for clients.
    stdin: bool,
    /// The shim's ends so far (pipes).
    stdio: Stdio,
}

/// A pipe whose `keep` end (0 read, 1 write) is ours and non-blocking;
/// the other end is for the container.
fn pipe(keep: usize) -> Result<(OwnedFd, OwnedFd), Error> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(sys("pipe"))?;
    let (ours, theirs) = if keep == 0 {
        (read, write)
    } else {
        (write, read)
    };
    nonblocking(&ours)?;
    Ok((ours, theirs))
}

fn nonblocking(fd: &OwnedFd) -> Result<(), Error> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map(drop)
    .map_err(sys("make an fd non-blocking"))
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(path_io::at("chmod", path))
        .map_err(Error::from)
}

impl Plan {
    /// Prepare `command` (a runtime `create` or `exec` whose arguments
    /// end before the container's id) and `args` for the process's stdio:
    /// with `tty`, a console socket at `console` (its path added to
    /// `args`); otherwise pipes as the command's stdio (stdin a pipe if
    /// `stdin`, else `/dev/null`).
    pub fn new(
        tty: bool,
        stdin: bool,
        console: &Path,
        args: &mut Vec<String>,
    ) -> Result<(Plan, Option<[ChildStdio; 3]>), Error> {
        if tty {
            let _ = fs::remove_file(console);
            let listener = UnixListener::bind(console)
                .map_err(path_io::at("listen on", console))?;
            set_mode(console, 0o600)?;
            args.push("--console-socket".into());
            args.push(console.to_string_lossy().into_owned());
            let plan = Plan {
                console: Some((listener, console.to_owned())),
                stdin,
                stdio: Stdio::default(),
            };
            return Ok((plan, None));
        }
        let (stdout, theirs_out) = pipe(0)?;
        let (stderr, theirs_err) = pipe(0)?;
        let mut stdio = Stdio {
            outputs: vec![(Stream::Stdout, stdout), (Stream::Stderr, stderr)],
            ..Stdio::default()
        };
        let child_stdin = if stdin {
            let (ours, theirs) = pipe(1)?;
            stdio.stdin = Some(ours);
            ChildStdio::from(theirs)
        } else {
            ChildStdio::null()
        };
        let plan = Plan {
            console: None,
            stdin,
            stdio,
        };
        let child = [
            child_stdin,
            ChildStdio::from(theirs_out),
            ChildStdio::from(theirs_err),
        ];
        Ok((plan, Some(child)))
    }

    /// Give `command` the child's ends (pipes), if there are any.
    pub fn apply(command: &mut Command, child: Option<[ChildStdio; 3]>) {
        if let Some([stdin, stdout, stderr]) = child {
            command.stdin(stdin).stdout(stdout).stderr(stderr);
        }
    }

    /// After the runtime succeeded: with a terminal, take the master it
    /// sent. The shim's ends.
    pub fn finish(self) -> Result<Stdio, Error> {
        let mut stdio = self.stdio;
        if let Some((listener, path)) = self.console {
            let master = receive_master(&listener);
            let _ = fs::remove_file(&path);
            let master = master?;
            nonblocking(&master)?;
            let dup = |fd: &OwnedFd| {
                fd.try_clone().map_err(|e| Error::Sys {
                    what: "dup the pty master",
                    source: Errno::from_raw(
                        e.raw_os_error().unwrap_or(libc::EIO),
                    ),
                })
            };
            stdio.stdin = self.stdin.then(|| dup(&master)).transpose()?;
            stdio.master = Some(dup(&master)?);
            stdio.outputs = vec![(Stream::Stdout, master)];
        }
        Ok(stdio)
    }

    /// The runtime failed: remove the console socket.
    pub fn abandon(self) {
        if let Some((_, path)) = self.console {
            let _ = fs::remove_file(path);
        }
    }
}

/// The pty master the runtime sent on the console socket (the
/// connection waits in the listener's backlog).
fn receive_master(listener: &UnixListener) -> Result<OwnedFd, Error> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let io_error = |what: &'static str| {
        move |e: io::Error| Error::Sys {
            what,
            source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    };
    listener
        .set_nonblocking(true)
        .map_err(io_error("accept the console connection"))?;
    let (stream, _) = listener.accept().map_err(io_error(
        "accept the console connection (the runtime sent no terminal)",
    ))?;
    let mut name = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("receive the pty master"))?;
    let mut received = None;
    for cmsg in message.cmsgs().map_err(sys("receive the pty master"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel installed these fds for us just now;
                // each is owned once (extra ones are closed by the drop).
                let fd = unsafe {
                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                };
                received.get_or_insert(fd);
            }
        }
    }
    received.ok_or(Error::Sys {
        what: "receive the pty master (no fd came)",
        source: Errno::EBADMSG,
    })
}

/// `TIOCSWINSZ` on the pty master `fd`.
pub fn resize(fd: RawFd, rows: u16, cols: u16) -> Result<(), Error> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize through the pointer, alive here.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) };
    Errno::result(rc)
        .map(drop)
        .map_err(sys("resize the terminal"))
}
