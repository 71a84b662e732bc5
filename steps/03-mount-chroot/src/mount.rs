//! The mount namespace: a root filesystem of the container's own.
//!
//! `mount_namespaces(7)`: a process created with `CLONE_NEWNS` gets a *copy*
//! of its parent's mount table. Mounts it makes afterwards are its own —
//! provided the copies are not *shared* mounts, which would propagate
//! events back to the host. So the first thing to do is make the whole tree
//! private (`MS_REC | MS_PRIVATE`).
//!
//! Then the container's root moves into the rootfs directory:
//!
//! 1. bind-mount the rootfs onto itself, because `pivot_root(2)` wants a
//!    mount point as the new root;
//! 2. mount what every Linux program expects: a `/proc` for the new PID
//!    namespace, a small `/dev` (a tmpfs with the harmless device nodes,
//!    `/dev/pts`, `/dev/shm` and the usual symlinks) and a read-only `/sys`;
//! 3. `pivot_root(".", ".")` (the trick `pivot_root(2)` itself documents)
//!    stacks the old root on top of the new one, and `umount2(MNT_DETACH)`
//!    takes it away. Nothing of the host's filesystem stays reachable.
//!
//! Why not `chroot(2)`? It only changes how `/` is resolved for one process;
//! the process keeps every mount of the host, and a root process can get
//! out again (`chroot` into a subdirectory while its working directory
//! stays outside, then climb `..`). The chapter shows the escape working
//! under `chroot` and failing after `pivot_root`.
//!
//! # Plan, then apply
//!
//! [`plan`] decides *what* to mount as a list of [`Op`]s: a pure function,
//! snapshot-tested without privileges. [`enter`] applies a plan with
//! syscalls. Step 8 computes the same kind of plan from `config.json`.
//!
//! # Mount targets are resolved inside the rootfs
//!
//! A rootfs is untrusted: its `proc` may be a symlink to `/etc`. Every target
//! is opened with `openat2(2)` and `RESOLVE_IN_ROOT`, which resolves `..`
//! and absolute symlinks as if the rootfs were `/`, and the mount is made on
//! `/proc/self/fd/N` of the opened file, so a path cannot be swapped between
//! the check and the mount.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag, mkdirat};
use nix::unistd::{chdir, fchdir, pivot_root, symlinkat};

/// The `clone(2)` flag this module needs.
pub const CLONE_FLAGS: CloneFlags = CloneFlags::CLONE_NEWNS;

/// What can go wrong while entering the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rootfs given does not exist or is not a directory.
    #[error("rootfs {path:?} is not usable")]
    Rootfs {
        /// The path as given.
        path: PathBuf,
        /// Why not.
        #[source]
        source: io::Error,
    },
    /// Making the mount tree private failed.
    #[error("cannot make the mount tree private")]
    MakePrivate(#[source] Errno),
    /// Bind-mounting the rootfs onto itself failed.
    #[error("cannot bind-mount the rootfs {path:?} onto itself")]
    BindRootfs {
        /// The rootfs.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Opening the rootfs failed.
    #[error("cannot open the rootfs {path:?}")]
    OpenRootfs {
        /// The rootfs.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// A mount target could not be created or opened inside the rootfs.
    #[error("cannot create the mount point {target:?} in the rootfs")]
    Target {
        /// The target, as seen from inside the container.
        target: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// A mount failed.
    #[error("cannot mount {source_name} on {target:?}")]
    Mount {
        /// What was mounted (a path for a bind mount, else the source name).
        source_name: String,
        /// The target, as seen from inside the container.
        target: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// A symlink could not be created.
    #[error("cannot create the symlink {link:?} -> {target:?}")]
    Symlink {
        /// The link, as seen from inside the container.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// `pivot_root(2)` failed.
    #[error("pivot_root into {path:?} failed")]
    PivotRoot {
        /// The rootfs.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Detaching the old root failed.
    #[error("cannot detach the old root")]
    DetachOldRoot(#[source] Errno),
}

/// The command-line options this module adds: `--rootfs DIR`.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "mount-options")]
pub struct Options {
    /// Directory to use as the container's root filesystem
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
}

// ANCHOR: check_rootfs
/// Check that `path` is a directory and return its absolute, symlink-free
/// form; called before any process is created, so bad input costs nothing.
pub fn check_rootfs(path: &Path) -> Result<PathBuf, Error> {
    let rootfs_error = |source| Error::Rootfs {
        path: path.to_owned(),
        source,
    };
    let canonical = path.canonicalize().map_err(rootfs_error)?;
    if !canonical.is_dir() {
        return Err(rootfs_error(io::Error::from(
            io::ErrorKind::NotADirectory,
        )));
    }
    Ok(canonical)
}
// ANCHOR_END: check_rootfs

/// What a mount target is: mount points must match what is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A directory (filesystems, directory bind mounts).
    Dir,
    /// A regular file (bind mounts of a file or device node).
    File,
}

/// One `mount(2)` call of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// For a bind mount, the host path; otherwise the source name the
    /// filesystem shows in `/proc/mounts` (`proc`, `tmpfs`, …).
    pub source: PathBuf,
    /// Where, as seen from inside the container (absolute).
    pub target: PathBuf,
    /// Filesystem type; `None` for a bind mount.
    pub fstype: Option<String>,
    /// `MS_*` flags. With `MS_BIND`, flags other than `MS_REC` are applied
    /// by a second, remounting call: the kernel ignores them on the first.
    pub flags: MsFlags,
    /// Filesystem-specific options (`mode=755,size=65536k`).
    pub data: Option<String>,
    /// Whether the target is a directory or a file.
    pub kind: TargetKind,
}

/// One step of entering the rootfs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE)`: no mount event
    /// propagates between the host and the container from now on.
    MakePrivate,
    /// Bind the rootfs onto itself, so that it is a mount point.
    BindRootfs,
    /// A mount inside the rootfs.
    Mount(Mount),
    /// A symlink inside the rootfs (`/dev/fd -> /proc/self/fd`).
    Symlink {
        /// The link, as seen from inside the container.
        link: PathBuf,
        /// Where it points (not resolved; it is only text).
        target: PathBuf,
    },
    /// A device node (`mknod(2)`); in a user namespace, where that is
    /// refused, the host's node at the same path is bind-mounted instead.
    /// Whatever already exists at the path is kept, never deleted: it may
    /// be a file of the rootfs on disk. Step 8 uses it for `config.json`'s
    /// devices.
    Device(Device),
    /// `pivot_root` into the rootfs and detach the old root.
    PivotRoot,
}

/// A device node to create inside the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Where, as seen from inside the container.
    pub path: PathBuf,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: SFlag,
    /// Major and minor numbers.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The device nodes a container gets from the host (`/dev/null` and its
/// friends): harmless ones only, nothing that reaches hardware.
pub const DEVICES: [&str; 6] =
    ["null", "zero", "full", "random", "urandom", "tty"];

/// The symlinks every `/dev` has.
pub const DEV_SYMLINKS: [(&str, &str); 6] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
    ("/dev/core", "/proc/kcore"),
];

/// A filesystem mounted from nothing (`proc`, `tmpfs`, `sysfs`, …) on a
/// directory.
fn filesystem(
    fstype: &str,
    target: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Op {
    Op::Mount(Mount {
        source: PathBuf::from(fstype),
        target: PathBuf::from(target),
        fstype: Some(fstype.to_owned()),
        flags,
        data: data.map(str::to_owned),
        kind: TargetKind::Dir,
    })
}

// ANCHOR: plan
/// The plan for a container root: private tree, rootfs, `/proc`, `/dev`,
/// `/sys`, pivot.
pub fn plan() -> Vec<Op> {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut ops = vec![
        Op::MakePrivate,
        Op::BindRootfs,
        filesystem("proc", "/proc", hardened, None),
        // A tmpfs, so the container sees only the nodes put here. Not
        // `nodev`: device nodes are what it is for.
        filesystem(
            "tmpfs",
            "/dev",
            MsFlags::MS_NOSUID,
            Some("mode=755,size=65536k"),
        ),
    ];
    for device in DEVICES {
        // Bind mounts of the host's nodes, not mknod(2): they also work in
        // a user namespace (step 5), where mknod is refused. runc makes the
        // nodes with mknod when it can.
        let path = Path::new("/dev").join(device);
        ops.push(Op::Mount(Mount {
            source: path.clone(),
            target: path,
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            kind: TargetKind::File,
        }));
    }
    ops.extend([
        // A new devpts instance: the container's ptys are its own.
        filesystem(
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        filesystem(
            "tmpfs",
            "/dev/shm",
            hardened,
            Some("mode=1777,size=65536k"),
        ),
    ]);
    for (link, target) in DEV_SYMLINKS {
        ops.push(Op::Symlink {
            link: PathBuf::from(link),
            target: PathBuf::from(target),
        });
    }
    ops.extend([
        filesystem("sysfs", "/sys", hardened | MsFlags::MS_RDONLY, None),
        Op::PivotRoot,
    ]);
    ops
}
// ANCHOR_END: plan

/// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE)`: from now on no mount
/// event propagates between this mount namespace and the host's. The first
/// op of every plan; also called by step 7 before its overlay mount.
pub fn make_private() -> Result<(), Error> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(Error::MakePrivate)
}

// ANCHOR: enter
/// Apply `plan` with `rootfs` (absolute, see [`check_rootfs`]) as the new
/// root. Call it in the child, after `clone(CLONE_NEWNS | CLONE_NEWPID)`.
pub fn enter(rootfs: &Path, plan: &[Op]) -> Result<(), Error> {
    let mut root: Option<OwnedFd> = None;
    for op in plan {
        crate::trace::event(3, || op);
        match op {
            Op::MakePrivate => make_private()?,
            Op::BindRootfs => {
                mount(
                    Some(rootfs),
                    rootfs,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|source| Error::BindRootfs {
                    path: rootfs.to_owned(),
                    source,
                })?;
                // Opened after the bind, so the fd is on the new mount.
                root = Some(open_rootfs(rootfs)?);
            }
            Op::Mount(spec) => apply_mount(root_fd(&root, rootfs)?, spec)?,
            Op::Symlink { link, target } => {
                make_symlink(root_fd(&root, rootfs)?, link, target)?;
            }
            Op::Device(device) => make_device(root_fd(&root, rootfs)?, device)?,
            Op::PivotRoot => pivot_into(root_fd(&root, rootfs)?, rootfs)?,
        }
    }
    Ok(())
}
// ANCHOR_END: enter

/// Pivot into `rootfs` on its own: for a caller that applied a plan
/// without its [`Op::PivotRoot`] and has work to do in between (step 8's
/// `createContainer` hooks).
pub fn pivot(rootfs: &Path) -> Result<(), Error> {
    crate::trace::event(3, || Op::PivotRoot);
    let root = open_rootfs(rootfs)?;
    pivot_into(root.as_fd(), rootfs)
}

/// The rootfs fd, opened by [`Op::BindRootfs`] or now.
fn root_fd<'a>(
    root: &'a Option<OwnedFd>,
    rootfs: &Path,
) -> Result<BorrowedFd<'a>, Error> {
    match root {
        Some(fd) => Ok(fd.as_fd()),
        // A plan without BindRootfs cannot pivot (no mount point) and has
        // no fd to resolve targets against: that is a bug in the plan.
        None => Err(Error::OpenRootfs {
            path: rootfs.to_owned(),
            source: Errno::EBADF,
        }),
    }
}

fn open_rootfs(rootfs: &Path) -> Result<OwnedFd, Error> {
    nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| Error::OpenRootfs {
        path: rootfs.to_owned(),
        source,
    })
}

/// `path` inside the container, relative to the rootfs (`/dev/null` →
/// `dev/null`); `.` for `/`.
fn relative(path: &Path) -> PathBuf {
    let relative: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if relative.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        relative
    }
}

// ANCHOR: open_in_root
/// `openat2(2)` with `path` resolved as if `root` were `/`: `..` stops at
/// `root`, and absolute symlinks start from it. Step 7's layer unpacker
/// resolves every path of an untrusted layer with it too.
pub fn open_in_root(
    root: BorrowedFd,
    path: &Path,
    flags: OFlag,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    loop {
        // EAGAIN: a rename raced with the lookup; the kernel asks to retry.
        match openat2(root, &relative(path), how) {
            Err(Errno::EAGAIN) => continue,
            result => return result,
        }
    }
}
// ANCHOR_END: open_in_root

/// Open directory `path` inside the rootfs, creating it and its parents
/// (mode 0755); an `O_PATH` fd, usable as the dirfd of `*at` calls.
pub fn ensure_dir(root: BorrowedFd, path: &Path) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    match open_in_root(root, path, flags, Mode::empty()) {
        Err(Errno::ENOENT) => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name())
            else {
                return Err(Errno::ENOENT);
            };
            let parent = ensure_dir(root, parent)?;
            match mkdirat(&parent, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(errno),
            }
            open_in_root(root, path, flags, Mode::empty())
        }
        result => result,
    }
}

/// Open file `path` inside the rootfs, creating it (empty) if missing.
fn ensure_file(root: BorrowedFd, path: &Path) -> Result<OwnedFd, Errno> {
    match open_in_root(root, path, OFlag::O_PATH, Mode::empty()) {
        Err(Errno::ENOENT) => {
            if let Some(parent) = path.parent() {
                ensure_dir(root, parent)?;
            }
            // O_EXCL: created by us, so it is a plain file and not a FIFO
            // that would block the open.
            let created = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY;
            match open_in_root(
                root,
                path,
                created,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(_) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(errno),
            }
            open_in_root(root, path, OFlag::O_PATH, Mode::empty())
        }
        result => result,
    }
}

/// The path through which the kernel reaches what `fd` refers to
/// (`/proc/self/fd/N`): mount on it, or link it, without a path that could
/// be swapped meanwhile.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

// ANCHOR: apply_mount
fn apply_mount(root: BorrowedFd, spec: &Mount) -> Result<(), Error> {
    let open_target = || {
        match spec.kind {
            TargetKind::Dir => ensure_dir(root, &spec.target),
            TargetKind::File => ensure_file(root, &spec.target),
        }
        .map_err(|source| Error::Target {
            target: spec.target.clone(),
            source,
        })
    };
    let mount_error = |source| Error::Mount {
        source_name: spec.source.display().to_string(),
        target: spec.target.clone(),
        source,
    };
    let target = open_target()?;
    let bind = spec.flags.contains(MsFlags::MS_BIND);
    let first_flags = if bind {
        spec.flags & (MsFlags::MS_BIND | MsFlags::MS_REC)
    } else {
        spec.flags
    };
    mount(
        Some(&spec.source),
        &fd_path(&target),
        spec.fstype.as_deref(),
        first_flags,
        spec.data.as_deref(),
    )
    .map_err(mount_error)?;
    let remount_flags = spec.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    if bind && !remount_flags.is_empty() {
        // Reopen: the old fd names the directory *under* the new mount.
        let target = open_target()?;
        mount(
            None::<&str>,
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | remount_flags,
            None::<&str>,
        )
        .map_err(mount_error)?;
    }
    Ok(())
}
// ANCHOR_END: apply_mount

// ANCHOR: make_device
fn make_device(root: BorrowedFd, device: &Device) -> Result<(), Error> {
    let failed = |source| Error::Target {
        target: device.path.clone(),
        source,
    };
    let (Some(parent), Some(name)) =
        (device.path.parent(), device.path.file_name())
    else {
        return Err(failed(Errno::EINVAL));
    };
    let dir = ensure_dir(root, parent).map_err(failed)?;
    let mode = Mode::from_bits_truncate(device.mode & 0o7777);
    let dev = nix::sys::stat::makedev(device.major, device.minor);
    match nix::sys::stat::mknodat(&dir, name, device.kind, mode, dev) {
        // Something is there already. Outside the container's own /dev
        // tmpfs that is a file of the bundle's rootfs, on disk: it is never
        // removed or replaced for a device (runc keeps it too).
        Err(Errno::EEXIST) => Ok(()),
        Ok(()) => {
            let (uid, gid) = (
                Some(nix::unistd::Uid::from_raw(device.uid)),
                Some(nix::unistd::Gid::from_raw(device.gid)),
            );
            nix::unistd::fchownat(
                &dir,
                name,
                uid,
                gid,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(failed)?;
            // mknod(2) applies the umask (0666 would become 0644, and only
            // root could write /dev/null); the mode asked for is exact.
            // The node is ours and new: nothing can have swapped it yet.
            nix::sys::stat::fchmodat(
                &dir,
                name,
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(failed)
        }
        // In a user namespace: the host's node, if it has one.
        Err(Errno::EPERM) => apply_mount(
            root,
            &Mount {
                source: device.path.clone(),
                target: device.path.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None,
                kind: TargetKind::File,
            },
        ),
        Err(errno) => Err(failed(errno)),
    }
}
// ANCHOR_END: make_device

fn make_symlink(
    root: BorrowedFd,
    link: &Path,
    target: &Path,
) -> Result<(), Error> {
    let symlink_error = |source| Error::Symlink {
        link: link.to_owned(),
        target: target.to_owned(),
        source,
    };
    let (Some(parent), Some(name)) = (link.parent(), link.file_name()) else {
        return Err(symlink_error(Errno::EINVAL));
    };
    let parent = ensure_dir(root, parent).map_err(symlink_error)?;
    symlinkat(target, &parent, name).map_err(symlink_error)
}

// ANCHOR: pivot
/// Make the rootfs `/` and detach the host's root from this namespace.
fn pivot_into(root: BorrowedFd, rootfs: &Path) -> Result<(), Error> {
    let pivot_error = |source| Error::PivotRoot {
        path: rootfs.to_owned(),
        source,
    };
    fchdir(root).map_err(pivot_error)?;
    // pivot_root(2): with new_root and put_old both ".", the old root ends
    // up mounted on top of the new one, at "/"; no directory is needed
    // for it inside the rootfs.
    pivot_root(".", ".").map_err(pivot_error)?;
    // Detach it (lazily: nothing may still use it, we are the only process).
    umount2(".", MntFlags::MNT_DETACH).map_err(Error::DetachOldRoot)?;
    chdir("/").map_err(pivot_error)
}
// ANCHOR_END: pivot

/// The `MS_*` flags in `mount(8)` spelling, in a fixed order.
fn flag_names(flags: MsFlags) -> Vec<&'static str> {
    let names = [
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_REC, "rec"),
    ];
    names
        .iter()
        .filter(|(flag, _)| flags.contains(*flag))
        .map(|(_, name)| *name)
        .collect()
}

impl fmt::Display for Op {
    /// One line per op, as the plan snapshot and the book show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::MakePrivate => write!(f, "make-private / (recursive)"),
            Op::BindRootfs => {
                write!(f, "bind         ROOTFS on ROOTFS (recursive)")
            }
            Op::Mount(m) => {
                let source = display(m.source.as_os_str());
                let target = display(m.target.as_os_str());
                match &m.fstype {
                    Some(fstype) => write!(
                        f,
                        "mount        {source} on {target} type {fstype}"
                    )?,
                    None => write!(f, "bind         {source} on {target}")?,
                }
                let mut options: Vec<String> = flag_names(m.flags)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                options.extend(m.data.iter().cloned());
                if !options.is_empty() {
                    write!(f, " ({})", options.join(","))?;
                }
                Ok(())
            }
            Op::Symlink { link, target } => write!(
                f,
                "symlink      {} -> {}",
                display(link.as_os_str()),
                display(target.as_os_str())
            ),
            Op::Device(d) => {
                let kind = match d.kind {
                    k if k == nix::sys::stat::SFlag::S_IFCHR => "c",
                    k if k == nix::sys::stat::SFlag::S_IFBLK => "b",
                    k if k == nix::sys::stat::SFlag::S_IFIFO => "p",
                    _ => "?",
                };
                write!(
                    f,
                    "mknod        {} {kind} {}:{} {:o}",
                    display(d.path.as_os_str()),
                    d.major,
                    d.minor,
                    d.mode
                )
            }
            Op::PivotRoot => {
                write!(f, "pivot_root   into ROOTFS, detach the old root")
            }
        }
    }
}

fn display(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_below_the_root() {
        assert_eq!(relative(Path::new("/dev/null")), PathBuf::from("dev/null"));
        assert_eq!(relative(Path::new("/")), PathBuf::from("."));
        assert_eq!(relative(Path::new("./proc")), PathBuf::from("proc"));
    }

    #[test]
    fn plan_mounts_proc_before_pivoting_and_pivots_last() {
        let ops = plan();
        assert_eq!(ops.first(), Some(&Op::MakePrivate));
        assert_eq!(ops.last(), Some(&Op::PivotRoot));
        let proc = ops.iter().position(
            |op| matches!(op, Op::Mount(m) if m.target == Path::new("/proc")),
        );
        assert!(proc.is_some());
    }
}
