//! Processes by pidfd (`pidfd_open(2)`, Linux 5.3): an fd that names
//! one process, not a pid that the kernel may hand to another once it
//! exits. A runtime signals, polls and joins the containers it did not
//! fork (its `create` has long exited) only through one.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// A pidfd of `pid` (`pidfd_open(2)`, Linux 5.3): it names *this* process
/// even if the pid is reused later, and polls readable when it ends.
pub fn open(pid: nix::unistd::Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(fd)?;
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) })
}

/// Send `signal` to the process of `pidfd` (`pidfd_send_signal(2)`): never
/// to another process that reused its pid.
pub fn signal(pidfd: BorrowedFd<'_>, signal: i32) -> Result<(), Errno> {
    // SAFETY: pidfd_send_signal takes an fd, a signal number, a null info
    // and flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}
