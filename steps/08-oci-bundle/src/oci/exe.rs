//! The runtime's own binary, out of the container's reach.
//!
//! Between `clone(2)` and `execve(2)`, the container's first process is
//! still *this program*: `/proc/1/exe` inside the container is a link to the
//! runtime's binary on the host. In 2019 that was enough to take over hosts
//! running runc (CVE-2019-5736): a process in the container opened
//! `/proc/PID/exe` of the runtime while it was in the container's PID
//! namespace, waited for it to exit, and wrote its own code into the host's
//! binary, which root ran next time. Two defences, both here:
//!
//! 1. [`reexec_sealed`]: before anything else, the runtime copies itself
//!    into a `memfd_create(2)` file, seals it against writes
//!    (`F_SEAL_WRITE`, `F_SEAL_GROW`, `F_SEAL_SHRINK`, then `F_SEAL_SEAL`,
//!    `fcntl(2)`), and re-executes itself from that copy with `fexecve(3)`.
//!    From then on `/proc/*/exe` of every runtime process names the sealed
//!    copy: nothing can be written through it, not even by root, and the
//!    host's file is never reachable that way.
//! 2. [`undumpable`]: in the container's first process, `PR_SET_DUMPABLE`
//!    is cleared until it `execve`s the container's program
//!    (`prctl(2)`); `/proc/1/exe`, `/proc/1/mem`, `/proc/1/environ` and
//!    friends are then only open to a process with `CAP_SYS_PTRACE` over
//!    the runtime, which the container's processes do not get by default.
//!
//! runc did the same copy (`cloned_binary.c`) before moving to cheaper ways
//! of getting an unwritable `/proc/self/exe`; crun and youki make the copy
//! too. Its cost is a copy of the binary per run: `copy_file_range(2)` in the
//! kernel, about 2 ms for a release build on the bench's machine. Part
//! II's runtime calls [`reexec_read_only`] instead, which gets the same
//! result with no copy (a read-only, detached mount of the binary) and
//! falls back to the copy where it cannot make that mount.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use nix::errno::Errno;

/// What can go wrong while sealing the runtime's binary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/proc/self/exe` cannot be opened (no `/proc`?).
    #[error("cannot open /proc/self/exe")]
    Open(#[source] io::Error),
    /// `memfd_create(2)` failed.
    #[error("cannot create a memfd for the sealed copy of the runtime")]
    Memfd(#[source] Errno),
    /// Copying the binary into the memfd failed.
    #[error("cannot copy the runtime into its memfd")]
    Copy(#[source] io::Error),
    /// Sealing failed.
    #[error("cannot seal the runtime's memfd")]
    Seal(#[source] Errno),
    /// An argument or variable holds a NUL byte.
    #[error("an argument or environment variable contains a NUL byte")]
    Nul,
    /// `fexecve(3)` failed.
    #[error("cannot re-execute the runtime from its sealed copy")]
    Exec(#[source] Errno),
    /// `prctl(PR_SET_DUMPABLE)` failed.
    #[error("cannot make the container process undumpable")]
    Dumpable(#[source] Errno),
}

/// The seals of a finished copy.
const SEALS: libc::c_int = libc::F_SEAL_SEAL
    | libc::F_SEAL_SHRINK
    | libc::F_SEAL_GROW
    | libc::F_SEAL_WRITE;

/// Whether `file` is a memfd sealed against writes.
fn is_sealed(file: &File) -> bool {
    // SAFETY: F_GET_SEALS only reads the fd's seals; a file that is not a
    // memfd answers EINVAL.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_WRITE != 0
}

/// Whether `file` is reached through a read-only mount (or lives on a
/// read-only filesystem): then no open for writing can go through it,
/// whoever tries (`EROFS`), and only a process that can remount that
/// mount — one in its mount namespace, with `CAP_SYS_ADMIN` — could
/// change that.
/// `None` if `fstatvfs(3)` fails.
fn is_on_read_only_mount(file: &File) -> Option<bool> {
    nix::sys::statvfs::fstatvfs(file)
        .ok()
        .map(|fs| fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

// ANCHOR: reexec_sealed
/// Make sure this process runs from a sealed in-memory copy of its binary:
/// return at once if it does, else make the copy and `fexecve(3)` it with
/// the same arguments and environment (so this returns only on error).
/// Call it first thing in `main`, single-threaded.
pub fn reexec_sealed() -> Result<(), Error> {
    let mut exe = File::open("/proc/self/exe").map_err(Error::Open)?;
    if is_sealed(&exe) {
        return Ok(());
    }
    // Named after the binary (`/memfd:berth-runtime (deleted)` in `ps`
    // and /proc/*/exe), not after the crate that holds this code.
    let binary = std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_os_string()))
        .unwrap_or_else(|| env!("CARGO_PKG_NAME").into());
    let name = CString::new(binary.into_vec()).map_err(|_| Error::Nul)?;
    // SAFETY: `name` is NUL-terminated; the flags are memfd_create(2)'s.
    let fd = unsafe {
        libc::memfd_create(
            name.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    let fd = Errno::result(fd).map_err(Error::Memfd)?;
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let mut copy = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    io::copy(&mut exe, &mut copy).map_err(Error::Copy)?;
    // SAFETY: F_ADD_SEALS takes an integer set of seals.
    let rc = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, SEALS) };
    Errno::result(rc).map_err(Error::Seal)?;
    let (args, env) = args_and_env()?;
    // An ELF binary runs from a close-on-exec fd; the fd is gone after.
    let error = nix::unistd::fexecve(&copy, &args, &env).map_err(Error::Exec);
    match error {
        Err(error) => Err(error),
        Ok(never) => match never {},
    }
}
// ANCHOR_END: reexec_sealed

// ANCHOR: reexec_read_only
/// The cheaper way to the same end as [`reexec_sealed`], with no copy:
/// re-execute this binary through a *read-only clone of its mount*.
///
/// `open_tree(2)` with `OPEN_TREE_CLONE` makes a private bind mount of
/// the file `/proc/self/exe` names — the file itself, not a path to it,
/// so nothing can be swapped in between — that is attached nowhere: no
/// mount namespace holds it, so no process can remount it, and it goes
/// away with the last process running from it. `mount_setattr(2)` makes
/// it read-only, and `execveat(2)` runs the binary from it. Every open of
/// `/proc/*/exe` for writing then fails with `EROFS`, root's included.
///
/// Making that mount needs `CAP_SYS_ADMIN` over our mount namespace and
/// a kernel of 5.12 or later; without them (a rootless runtime, an old
/// kernel) this falls back to [`reexec_sealed`]. Returns at once when the
/// binary is already out of reach — a sealed copy, or any read-only
/// mount. Call it first thing in `main`, single-threaded.
pub fn reexec_read_only() -> Result<(), Error> {
    let exe = File::open("/proc/self/exe").map_err(Error::Open)?;
    if is_sealed(&exe) {
        return Ok(());
    }
    // Where the mount cannot be told read-only or not (fstatfs refused by
    // a policy), neither could the clone's: the sealed copy's seal says
    // it, whatever the mount. (A second clone would fail anyway, since
    // open_tree(2) refuses a mount outside our namespace, and so end in
    // the sealed copy too, one execve later.)
    match is_on_read_only_mount(&exe) {
        Some(true) => return Ok(()),
        Some(false) => {}
        None => return reexec_sealed(),
    }
    let Some(clone) = read_only_clone(&exe) else {
        return reexec_sealed();
    };
    let (args, env) = args_and_env()?;
    let flags = nix::fcntl::AtFlags::AT_EMPTY_PATH;
    match nix::unistd::execveat(&clone, c"", &args, &env, flags) {
        Err(errno) => Err(Error::Exec(errno)),
        Ok(never) => match never {},
    }
}
// ANCHOR_END: reexec_read_only

/// A read-only, detached bind mount of `exe` (this process's binary,
/// open), as an `O_PATH` fd (close-on-exec), or `None` where the kernel or
/// our privileges do not allow one. The clone is made of the open file,
/// so no path is looked up twice.
fn read_only_clone(exe: &File) -> Option<OwnedFd> {
    // SAFETY: open_tree(2) on an open fd, with an empty NUL-terminated
    // path and AT_EMPTY_PATH.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            exe.as_raw_fd(),
            c"".as_ptr(),
            libc::OPEN_TREE_CLONE
                | libc::OPEN_TREE_CLOEXEC
                | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let clone = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    // SAFETY: mount_attr is plain data; zero is "change nothing".
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = libc::MOUNT_ATTR_RDONLY
        | libc::MOUNT_ATTR_NOSUID
        | libc::MOUNT_ATTR_NODEV;
    // SAFETY: the fd is the clone's; the path is empty with AT_EMPTY_PATH;
    // `attr` is a mount_attr of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            clone.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    (rc == 0).then_some(clone)
}

/// This process's arguments and environment as C strings.
fn args_and_env() -> Result<(Vec<CString>, Vec<CString>), Error> {
    let cstrings = |items: Vec<OsString>| {
        items
            .into_iter()
            .map(|item| CString::new(item.into_vec()).map_err(|_| Error::Nul))
            .collect::<Result<Vec<_>, _>>()
    };
    let args = cstrings(std::env::args_os().collect())?;
    let env = cstrings(
        std::env::vars_os()
            .map(|(key, value)| {
                let mut pair = key;
                pair.push("=");
                pair.push(value);
                pair
            })
            .collect(),
    )?;
    Ok((args, env))
}

// ANCHOR: undumpable
/// In the container's first process: not dumpable until its `execve`
/// (which makes it dumpable again), so that no other process of the
/// container can open its `/proc/PID/exe`, `mem` or `environ`.
pub fn undumpable() -> Result<(), Error> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument only.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    Errno::result(rc).map(drop).map_err(Error::Dumpable)
}
// ANCHOR_END: undumpable
