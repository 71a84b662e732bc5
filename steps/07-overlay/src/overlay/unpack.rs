//! Unpacking one layer tar into a directory, safely.
//!
//! A layer is untrusted input: it may name `/etc/passwd`, climb with `..`,
//! plant a symlink to `/` and then write through it, or hard-link a host
//! file. Every path is therefore resolved with `openat2(2)` and
//! `RESOLVE_IN_ROOT` below the layer directory ([`mount::open_in_root`]),
//! and every file is created relative to a directory fd with `O_NOFOLLOW`
//! and `O_EXCL`, so nothing can be written outside the layer:
//!
//! | in the tar                          | what happens                          |
//! |-------------------------------------|---------------------------------------|
//! | absolute path `/etc/x`              | contained: `etc/x` in the layer       |
//! | `..` anywhere in a path             | refused: the layer is corrupt         |
//! | symlink `s -> /`, then `s/x`        | contained: `x` lands in the layer root|
//! | hard link to `/etc/shadow`          | refused: must be a file of the layer  |
//! | device node, not root               | skipped and counted                   |
//!
//! Whiteouts are converted on the way in (`image-spec` `layer.md` →
//! `overlayfs.rst`): `.wh.NAME` becomes a character device 0/0 named
//! `NAME`, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its
//! directory. Mode, ownership (as root), xattrs, mtimes and hard links are
//! kept; directory mtimes are set last, since creating their entries
//! changes them.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    Mode, SFlag, UtimensatFlags, fchmodat, makedev, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat,
};
use tar::EntryType;

use crate::mount::{ensure_dir, fd_path, open_in_root};

/// What can go wrong while unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tar (or its compression) is malformed.
    #[error("corrupt layer: cannot read the tar")]
    Read(#[source] io::Error),
    /// An entry climbs out with `..`.
    #[error("corrupt layer: entry {path:?} contains '..'")]
    Traversal {
        /// The entry's path as written in the tar.
        path: PathBuf,
    },
    /// A hard link points to something that is not in the layer.
    #[error(
        "corrupt layer: hard link {path:?} points to {target:?}, which is not in the layer"
    )]
    LinkTarget {
        /// The link.
        path: PathBuf,
        /// Its target as written in the tar.
        target: PathBuf,
    },
    /// An entry of a type layers do not have.
    #[error("unsupported entry {path:?} of type {kind}")]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// Its tar type.
        kind: String,
    },
    /// A filesystem operation on an entry failed.
    #[error("cannot {what} {path:?}")]
    Entry {
        /// What we were doing.
        what: &'static str,
        /// The entry.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

/// What an unpack did, beyond the files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Entries unpacked.
    pub entries: u64,
    /// Whiteouts converted to overlay whiteouts.
    pub whiteouts: u64,
    /// Device nodes skipped because we are not root.
    pub skipped_devices: u64,
}

/// The xattr overlayfs reads to make a directory opaque, as root.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same for an overlay mounted in a user namespace with `userxattr`
/// (Linux 5.11+): `trusted.*` needs root on the host, `user.*` does not.
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
/// The prefix of a whiteout file in a layer tar.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of an opaque-directory marker in a layer tar.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

// ANCHOR: clean
/// A tar path made relative and checked: leading `/` and `./` dropped,
/// `..` refused. `None` for the archive's root (`./`).
pub fn clean(path: &Path) -> Result<Option<PathBuf>, Error> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(Error::Traversal {
                    path: path.to_owned(),
                });
            }
        }
    }
    Ok((!clean.as_os_str().is_empty()).then_some(clean))
}
// ANCHOR_END: clean

/// Set an xattr on what `fd` names.
fn set_xattr(fd: &OwnedFd, name: &str, value: &[u8]) -> Result<(), Errno> {
    let path = CString::new(fd_path(fd).as_os_str().as_bytes())
        .map_err(|_| Errno::EINVAL)?;
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: both strings are NUL-terminated and `value` is valid for its
    // length; setxattr(2) only reads them.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// Remove whatever is at `name` in `dir` (not a directory: a directory
/// entry in a later position of the same tar merges instead).
fn remove_existing(dir: BorrowedFd, name: &OsStr) -> Result<(), Errno> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => unlinkat(dir, name, UnlinkatFlags::RemoveDir),
        Err(errno) => Err(errno),
    }
}

/// The unpacking of one layer into `root`.
struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    privileged: bool,
    /// A layer: `.wh.` names are whiteouts (else files like any other).
    layer: bool,
    summary: Summary,
    /// Directories and their mtimes, set after everything else.
    dir_times: Vec<(PathBuf, i64)>,
}

// ANCHOR: unpack
/// Unpack the tar read from `reader` into the directory `root`.
/// `privileged`: we are root, so ownership is kept and device nodes made;
/// without, opaque directories get the `user.*` xattr (rootless overlay).
/// Whiteouts (0/0 character devices) need no privilege since Linux 5.8.
pub fn unpack(
    reader: impl Read,
    root: BorrowedFd,
    privileged: bool,
) -> Result<Summary, Error> {
    unpack_tar(reader, root, privileged, true)
}

/// Unpack a tar of plain files (not a layer: `.wh.` names are files like
/// any other) into the directory `root`, as safely: what `docker cp`
/// copies into a container.
pub fn unpack_files(
    reader: impl Read,
    root: BorrowedFd,
    privileged: bool,
) -> Result<Summary, Error> {
    unpack_tar(reader, root, privileged, false)
}

fn unpack_tar(
    reader: impl Read,
    root: BorrowedFd,
    privileged: bool,
    layer: bool,
) -> Result<Summary, Error> {
    let mut archive = tar::Archive::new(reader);
    let mut unpacker = Unpacker {
        root,
        privileged,
        layer,
        summary: Summary::default(),
        dir_times: Vec::new(),
    };
    for entry in archive.entries().map_err(Error::Read)? {
        let mut entry = entry.map_err(Error::Read)?;
        let raw = entry.path().map_err(Error::Read)?.into_owned();
        let Some(path) = clean(&raw)? else {
            continue;
        };
        unpacker.entry(&mut entry, &path)?;
        unpacker.summary.entries += 1;
    }
    // Deepest first does not matter for mtimes; the order of the tar does.
    for (path, mtime) in unpacker.dir_times.iter().rev() {
        let time = TimeSpec::new(*mtime, 0);
        let _ = utimensat(
            root,
            path,
            &time,
            &time,
            UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(unpacker.summary)
}
// ANCHOR_END: unpack

impl Unpacker<'_> {
    fn failed<'p>(
        &self,
        what: &'static str,
        path: &'p Path,
    ) -> impl FnOnce(Errno) -> Error + 'p {
        move |source| Error::Entry {
            what,
            path: path.to_owned(),
            source,
        }
    }

    /// The parent directory of `path` (created if missing) and its name.
    fn parent<'p>(
        &self,
        path: &'p Path,
    ) -> Result<(OwnedFd, &'p OsStr), Error> {
        let parent = path.parent().unwrap_or(Path::new(""));
        let name = path.file_name().ok_or_else(|| Error::Traversal {
            path: path.to_owned(),
        })?;
        let dir = ensure_dir(self.root, &Path::new("/").join(parent))
            .map_err(self.failed("create the directory of", path))?;
        Ok((dir, name))
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        path: &Path,
    ) -> Result<(), Error> {
        let name = path.file_name().map(OsStr::as_bytes).unwrap_or_default();
        // ANCHOR: whiteouts
        if self.layer && name == OPAQUE_MARKER.as_bytes() {
            let parent = path.parent().unwrap_or(Path::new(""));
            let dir = ensure_dir(self.root, &Path::new("/").join(parent))
                .map_err(self.failed("create the opaque directory", path))?;
            let xattr = if self.privileged {
                OPAQUE_XATTR
            } else {
                USER_OPAQUE_XATTR
            };
            set_xattr(&dir, xattr, b"y")
                .map_err(self.failed("mark opaque", path))?;
            self.summary.whiteouts += 1;
            return Ok(());
        }
        if let Some(hidden) = name
            .strip_prefix(WHITEOUT_PREFIX.as_bytes())
            .filter(|_| self.layer)
        {
            let (dir, _) = self.parent(path)?;
            let hidden = OsStr::from_bytes(hidden);
            remove_existing(dir.as_fd(), hidden)
                .map_err(self.failed("replace", path))?;
            // overlayfs(5): a whiteout is a character device 0/0.
            mknodat(&dir, hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(self.failed("create the whiteout for", path))?;
            self.summary.whiteouts += 1;
            return Ok(());
        }
        // ANCHOR_END: whiteouts
        let header = entry.header().clone();
        let mode =
            Mode::from_bits_truncate(header.mode().unwrap_or(0o644) & 0o7777);
        let kind = header.entry_type();
        let created = match kind {
            EntryType::Directory => {
                let dir = ensure_dir(self.root, &Path::new("/").join(path))
                    .map_err(self.failed("create the directory", path))?;
                self.dir_times.push((
                    path.to_owned(),
                    header.mtime().unwrap_or(0) as i64,
                ));
                Some(dir)
            }
            EntryType::Regular | EntryType::Continuous => {
                Some(self.file(entry, path)?)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(Error::Read)?
                    .unwrap_or_default()
                    .into_owned();
                let (dir, name) = self.parent(path)?;
                remove_existing(dir.as_fd(), name)
                    .map_err(self.failed("replace", path))?;
                // The target is only text; it is resolved inside the
                // container, against the container's root.
                symlinkat(&target, &dir, name)
                    .map_err(self.failed("create the symlink", path))?;
                self.finish_link(&dir, name, &header);
                return Ok(());
            }
            EntryType::Link => {
                self.hard_link(entry, path)?;
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !self.privileged && kind != EntryType::Fifo {
                    self.summary.skipped_devices += 1;
                    return Ok(());
                }
                let (dir, name) = self.parent(path)?;
                remove_existing(dir.as_fd(), name)
                    .map_err(self.failed("replace", path))?;
                let (sflag, dev) = match kind {
                    EntryType::Char => (SFlag::S_IFCHR, device(&header)),
                    EntryType::Block => (SFlag::S_IFBLK, device(&header)),
                    _ => (SFlag::S_IFIFO, 0),
                };
                mknodat(&dir, name, sflag, mode, dev)
                    .map_err(self.failed("create the node", path))?;
                open_in_root(
                    self.root,
                    &Path::new("/").join(path),
                    OFlag::O_PATH | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )
                .ok()
            }
            EntryType::XGlobalHeader | EntryType::XHeader => None,
            other => {
                return Err(Error::Unsupported {
                    path: path.to_owned(),
                    kind: format!("{other:?}"),
                });
            }
        };
        if let Some(fd) = created {
            self.finish(&fd, path, &header, mode, entry)?;
        }
        Ok(())
    }

    // ANCHOR: file
    /// Create a regular file and copy the entry's content into it.
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        path: &Path,
    ) -> Result<OwnedFd, Error> {
        let (dir, name) = self.parent(path)?;
        remove_existing(dir.as_fd(), name)
            .map_err(self.failed("replace", path))?;
        let flags = OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_WRONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(
            &dir,
            name,
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(self.failed("create", path))?;
        let mut file = File::from(fd);
        // Not io::copy: a failed read is a corrupt layer, a failed write
        // (ENOSPC, EDQUOT) is this machine's problem, and says so.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Read(e)),
            };
            file.write_all(&buf[..n]).map_err(|e| {
                self.failed("write", path)(Errno::from_raw(
                    e.raw_os_error().unwrap_or(libc::EIO),
                ))
            })?;
        }
        Ok(OwnedFd::from(file))
    }
    // ANCHOR_END: file

    // ANCHOR: hard_link
    /// A hard link to a file already unpacked in this layer.
    fn hard_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        path: &Path,
    ) -> Result<(), Error> {
        let raw = entry
            .link_name()
            .map_err(Error::Read)?
            .unwrap_or_default()
            .into_owned();
        let not_in_layer = || Error::LinkTarget {
            path: path.to_owned(),
            target: raw.clone(),
        };
        let target = clean(&raw)?.ok_or_else(not_in_layer)?;
        let source = open_in_root(
            self.root,
            &Path::new("/").join(&target),
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|_| not_in_layer())?;
        let (dir, name) = self.parent(path)?;
        remove_existing(dir.as_fd(), name)
            .map_err(self.failed("replace", path))?;
        // linkat(2) through /proc/self/fd/N with AT_SYMLINK_FOLLOW links the
        // very inode we resolved inside the layer.
        linkat(
            nix::fcntl::AT_FDCWD,
            &fd_path(&source),
            &dir,
            name,
            AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(self.failed("hard-link", path))
    }
    // ANCHOR_END: hard_link

    /// Ownership and mtime of a symlink (never followed).
    fn finish_link(&self, dir: &OwnedFd, name: &OsStr, header: &tar::Header) {
        if self.privileged {
            let (uid, gid) = ids(header);
            let _ = fchownat(
                dir,
                name,
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
        let time = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
        let _ =
            utimensat(dir, name, &time, &time, UtimensatFlags::NoFollowSymlink);
    }

    // ANCHOR: finish
    /// Ownership, mode, xattrs and mtime of a created file or directory.
    fn finish<R: Read>(
        &self,
        fd: &OwnedFd,
        path: &Path,
        header: &tar::Header,
        mode: Mode,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), Error> {
        let proc_path = fd_path(fd);
        if self.privileged {
            let (uid, gid) = ids(header);
            fchownat(
                nix::fcntl::AT_FDCWD,
                &proc_path,
                Some(uid),
                Some(gid),
                AtFlags::empty(),
            )
            .map_err(self.failed("chown", path))?;
        }
        // After chown, which clears set-user-ID and set-group-ID bits.
        fchmodat(
            nix::fcntl::AT_FDCWD,
            &proc_path,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(self.failed("chmod", path))?;
        if let Ok(Some(extensions)) = entry.pax_extensions() {
            for extension in extensions.flatten() {
                let Ok(key) = extension.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    // trusted.* needs root; user.* works for everyone.
                    if self.privileged || name.starts_with("user.") {
                        set_xattr(fd, name, extension.value_bytes())
                            .map_err(self.failed("set an xattr on", path))?;
                    }
                }
            }
        }
        if header.entry_type() != EntryType::Directory {
            let time = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
            utimensat(
                nix::fcntl::AT_FDCWD,
                &proc_path,
                &time,
                &time,
                UtimensatFlags::FollowSymlink,
            )
            .map_err(self.failed("set the mtime of", path))?;
        }
        Ok(())
    }
    // ANCHOR_END: finish
}

/// The owner recorded in `header`.
fn ids(header: &tar::Header) -> (Uid, Gid) {
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    (Uid::from_raw(uid), Gid::from_raw(gid))
}

/// The device number recorded in `header`.
fn device(header: &tar::Header) -> u64 {
    let major = header.device_major().ok().flatten().unwrap_or(0);
    let minor = header.device_minor().ok().flatten().unwrap_or(0);
    makedev(u64::from(major), u64::from(minor))
}

/// Open `dir` as the root of an unpack.
pub fn open_root(dir: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_and_dotdot_is_refused() {
        assert_eq!(
            clean(Path::new("/etc/passwd")).unwrap(),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(
            clean(Path::new("./bin/sh")).unwrap(),
            Some(PathBuf::from("bin/sh"))
        );
        assert_eq!(clean(Path::new("./")).unwrap(), None);
        assert!(clean(Path::new("a/../../etc")).is_err());
    }
}
