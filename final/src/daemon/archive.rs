//! `docker cp`: `HEAD`, `GET` and `PUT /containers/ID/archive?path=P`,
//! a path of a container's root filesystem as a tar, both ways.
//!
//! The root belongs to the container, which may run while we copy and may
//! swap any directory for a symlink to the host's `/` under us. So no
//! path inside it is ever resolved by the host's rules:
//!
//! - the path asked for is resolved with `openat2(RESOLVE_IN_ROOT)`
//!   (step 3's [`open_in_root`]): its symlinks stay inside the root;
//! - a tree is walked one name at a time, from directory descriptors, with
//!   `O_NOFOLLOW`: a symlink met is archived as a symlink, never
//!   followed; a file is opened as a path first (`O_PATH`, which opens
//!   nothing), and for reading only once it is seen to be a regular file
//!   (a device node swapped in is never opened on the host); a name gone
//!   meanwhile is skipped; a tree deeper than [`MAX_DEPTH`] is an error;
//! - a tar is unpacked by step 7's unpacker (every entry resolved inside
//!   the extraction directory, `O_EXCL`, no `..`), with `.wh.` names kept
//!   as files: this is a copy, not a layer.
//!
//! Simplifications: only the root filesystem is reached, not the
//! container's own mounts (`--tmpfs`); symlinks below the extraction point
//! of a `PUT` resolve against that directory rather than the container's
//! root (contained either way); ownership is kept as the tar says (Docker
//! gives the files to the container's root unless `docker cp -a`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use serde_json::json;

use super::containers::Error;
use crate::mount::{fd_path, open_in_root};

/// A container path, split as `docker cp` means it: the directory whose
/// symlinks are followed (inside the root), and the name in it that is
/// not followed (`None`: the directory itself, as with `/etc/.` or `/`).
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The directory, absolute, lexically cleaned.
    pub dir: PathBuf,
    /// The last name, if any.
    pub name: Option<PathBuf>,
}

/// Split a container path (absolute, or relative to the root); `..` is
/// cleaned lexically and cannot climb above the root.
pub fn target(path: &str) -> Target {
    let contents = path.ends_with("/.") || path == ".";
    let mut clean = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    match (contents, clean.file_name().map(PathBuf::from)) {
        (false, Some(name)) => Target {
            dir: clean.parent().unwrap_or(Path::new("/")).to_owned(),
            name: Some(name),
        },
        _ => Target {
            dir: clean,
            name: None,
        },
    }
}

/// `path` not found in container `container`, in Docker's words.
fn not_found(path: &str, container: &str) -> Error {
    Error::NotFound(format!(
        "Could not find the file {path} in container {container}"
    ))
}

/// An errno met at `path`, as the API's error.
fn failed<'a>(
    path: &'a str,
    container: &'a str,
) -> impl Fn(Errno) -> Error + 'a {
    move |errno| match errno {
        Errno::ENOENT => not_found(path, container),
        Errno::ENOTDIR => Error::BadRequest(format!(
            "{path}: a component of the path is not a directory"
        )),
        Errno::ELOOP => {
            Error::BadRequest(format!("{path}: too many levels of symlinks"))
        }
        Errno::EINVAL | Errno::ENAMETOOLONG => {
            Error::BadRequest(format!("{path}: not a valid path"))
        }
        other => Error::Internal(format!("{path}: {}", other.desc())),
    }
}

/// The open directory of `target` and its name: what is to be stat'ed
/// or archived is `name` in `dir` (`.` for the directory itself).
fn open(rootfs: &Path, target: &Target) -> Result<(OwnedFd, PathBuf), Errno> {
    let root = crate::overlay::unpack::open_root(rootfs)?;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let dir = open_in_root(root.as_fd(), &target.dir, flags, Mode::empty())?;
    Ok((dir, target.name.clone().unwrap_or_else(|| ".".into())))
}

/// Go's `os.FileMode` of a `stat(2)` mode, which Docker's path stat
/// carries: permission bits, and one high bit per kind.
fn go_mode(mode: u32) -> u32 {
    let mut out = mode & 0o777;
    let kind = SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits());
    out |= match kind {
        SFlag::S_IFDIR => 1 << 31,
        SFlag::S_IFLNK => 1 << 27,
        SFlag::S_IFBLK => 1 << 26,
        SFlag::S_IFIFO => 1 << 25,
        SFlag::S_IFSOCK => 1 << 24,
        SFlag::S_IFCHR => (1 << 26) | (1 << 21),
        _ => 0,
    };
    if mode & 0o4000 != 0 {
        out |= 1 << 23;
    }
    if mode & 0o2000 != 0 {
        out |= 1 << 22;
    }
    if mode & 0o1000 != 0 {
        out |= 1 << 20;
    }
    out
}

/// The `X-Docker-Container-Path-Stat` header's JSON (before base64):
/// name, size, Go file mode, mtime, and a symlink's target made absolute.
pub fn stat(
    rootfs: &Path,
    path: &str,
    container: &str,
) -> Result<serde_json::Value, Error> {
    let target = target(path);
    let (dir, name) = open(rootfs, &target).map_err(failed(path, container))?;
    let st = fstatat(&dir, &name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(failed(path, container))?;
    let is_link = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits();
    let link_target = if is_link {
        let text = nix::fcntl::readlinkat(&dir, &name)
            .map_err(failed(path, container))?;
        target.dir.join(text).to_string_lossy().into_owned()
    } else {
        String::new()
    };
    let shown = match &target.name {
        Some(name) => name.to_string_lossy().into_owned(),
        None => target
            .dir
            .file_name()
            .map_or("/".into(), |n| n.to_string_lossy().into_owned()),
    };
    Ok(json!({
        "name": shown,
        "size": st.st_size,
        "mode": go_mode(st.st_mode),
        "mtime": crate::time::rfc3339(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(st.st_mtime.max(0) as u64)
        ),
        "linkTarget": link_target,
    }))
}

/// Write the tar of `path` (a file, or a directory and everything in it)
/// to `out`, its top entry named after the path's last name (`.` for a
/// directory's contents).
pub fn get(
    rootfs: &Path,
    path: &str,
    container: &str,
    out: impl Write,
) -> Result<(), Error> {
    let target = target(path);
    let (dir, name) = open(rootfs, &target).map_err(failed(path, container))?;
    let mut walker = Walker {
        builder: tar::Builder::new(out),
        links: HashMap::new(),
    };
    walker.builder.follow_symlinks(false);
    walker
        .add(dir.as_fd(), &name, &name, 0)
        .map_err(|e| Error::Internal(format!("archive {path}: {e}")))?;
    walker
        .builder
        .into_inner()
        .map_err(|e| Error::Internal(format!("archive {path}: {e}")))?;
    Ok(())
}

/// Unpack the tar `reader` into the directory `path` of the root.
pub fn put(
    rootfs: &Path,
    path: &str,
    container: &str,
    reader: impl Read,
) -> Result<(), Error> {
    let root = crate::overlay::unpack::open_root(rootfs)
        .map_err(failed(path, container))?;
    let flags = OFlag::O_PATH;
    let at = open_in_root(
        root.as_fd(),
        &target(path).dir_or_self(),
        flags,
        Mode::empty(),
    )
    .map_err(failed(path, container))?;
    if !fstat(&at).is_ok_and(|st| {
        st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
    }) {
        return Err(Error::BadRequest(
            "extraction point is not a directory".into(),
        ));
    }
    crate::overlay::unpack::unpack_files(reader, at.as_fd(), true)
        .map_err(|e| Error::BadRequest(crate::child::error_chain(&e)))?;
    Ok(())
}

impl Target {
    /// The whole path, its last name followed too.
    fn dir_or_self(&self) -> PathBuf {
        match &self.name {
            Some(name) => self.dir.join(name),
            None => self.dir.clone(),
        }
    }
}

/// How deep a copied tree may go (one open directory per level).
pub const MAX_DEPTH: usize = 256;

/// Walks a tree from directory descriptors into a tar.
struct Walker<W: Write> {
    builder: tar::Builder<W>,
    /// Files with several links already archived: their first name.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Walker<W> {
    /// Archive `name` in `dir` (not followed if a symlink) as `as_path`.
    fn add(
        &mut self,
        dir: BorrowedFd,
        name: &Path,
        as_path: &Path,
        depth: usize,
    ) -> io::Result<()> {
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed since its directory was read (the container runs):
            // not there to copy, as if read a moment later.
            Err(Errno::ENOENT) if depth > 0 => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let kind = st.st_mode & SFlag::S_IFMT.bits();
        let mut header = header_of(&st);
        if kind == SFlag::S_IFDIR.bits() {
            if depth >= MAX_DEPTH {
                return Err(io::Error::other(format!(
                    "{}: more than {MAX_DEPTH} directories deep",
                    as_path.display()
                )));
            }
            let flags = OFlag::O_RDONLY
                | OFlag::O_DIRECTORY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let child =
                match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
                    Ok(child) => child,
                    Err(Errno::ENOENT) if depth > 0 => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            self.append(header, as_path, None, io::empty())?;
            let mut names: Vec<_> = std::fs::read_dir(fd_path(&child))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            for entry in names {
                self.add(
                    child.as_fd(),
                    Path::new(&entry),
                    &as_path.join(&entry),
                    depth + 1,
                )?;
            }
            return Ok(());
        }
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1
            && kind != SFlag::S_IFLNK.bits()
            && let Some(first) = self.links.get(&key)
        {
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            let first = first.clone();
            return self.append(
                header,
                as_path,
                Some(first.as_os_str().as_bytes()),
                io::empty(),
            );
        }
        let written = match SFlag::from_bits_truncate(kind) {
            SFlag::S_IFREG => {
                let Some(file) = open_regular(dir, name)? else {
                    // Swapped for something else since the stat: left out.
                    return Ok(());
                };
                let size = file.metadata()?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                let exact = Exact {
                    inner: file.take(size),
                    left: size,
                };
                self.append(header, as_path, None, exact)
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(dir, name)?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                self.append(
                    header,
                    as_path,
                    Some(target.as_bytes()),
                    io::empty(),
                )
            }
            flag @ (SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO) => {
                header.set_entry_type(match flag {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                header.set_size(0);
                let rdev = st.st_rdev;
                header.set_device_major(nix::sys::stat::major(rdev) as u32)?;
                header.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
                self.append(header, as_path, None, io::empty())
            }
            // Sockets have no place in a tar.
            _ => return Ok(()),
        };
        // Its later names link to this one, now that it is written.
        if written.is_ok() && st.st_nlink > 1 && kind != SFlag::S_IFLNK.bits() {
            self.links.insert(key, as_path.to_owned());
        }
        written
    }
}

/// `name` in `dir` opened for reading if it is a regular file, `None` if
/// it is not (any more). Opened first as a path only (`O_PATH`, which
/// opens nothing: a device node the container swapped in is not opened
/// on the host), checked, then reopened through `/proc/self/fd` for
/// reading, `O_NOCTTY` all the same.
fn open_regular(dir: BorrowedFd, name: &Path) -> io::Result<Option<File>> {
    let path_only = match nix::fcntl::openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&path_only)?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        return Ok(None);
    }
    let fd = nix::fcntl::open(
        &fd_path(&path_only),
        OFlag::O_RDONLY
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(Some(File::from(fd)))
}

impl<W: Write> Walker<W> {
    /// Append `header` named `path` (and linking to `link`) with `data`.
    /// Names are written as they are (`./x` stays so: the docker CLI
    /// rebases a directory's contents by that prefix), in the header
    /// when they fit, else in a GNU long-name entry before it.
    fn append(
        &mut self,
        mut header: tar::Header,
        path: &Path,
        link: Option<&[u8]>,
        data: impl Read,
    ) -> io::Result<()> {
        let name = path.as_os_str().as_bytes();
        for (bytes, kind) in [(Some(name), b'L'), (link, b'K')] {
            let Some(bytes) = bytes else { continue };
            let field = if kind == b'L' {
                &mut header.as_old_mut().name
            } else {
                &mut header.as_old_mut().linkname
            };
            field.fill(0);
            let fits = bytes.len() <= field.len();
            let shown = bytes.len().min(field.len());
            field[..shown].copy_from_slice(&bytes[..shown]);
            if !fits {
                let mut long = tar::Header::new_gnu();
                long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
                long.set_mode(0o644);
                long.set_entry_type(tar::EntryType::new(kind));
                long.set_size(bytes.len() as u64 + 1);
                long.set_cksum();
                self.builder.append(&long, bytes.chain(&[0u8][..]))?;
            }
        }
        header.set_cksum();
        self.builder.append(&header, data)
    }
}

/// A tar header with `st`'s mode, owner and mtime.
fn header_of(st: &FileStat) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(u64::from(st.st_uid));
    header.set_gid(u64::from(st.st_gid));
    header.set_mtime(st.st_mtime.max(0) as u64);
    header
}

/// Exactly `left` bytes of `inner`, zeros after its end: a file that
/// shrinks while it is read cannot break the tar's framing.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            buf[..max].fill(0);
            n = max;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_as_docker_cp_means_them() {
        let t = |dir: &str, name: Option<&str>| Target {
            dir: dir.into(),
            name: name.map(PathBuf::from),
        };
        assert_eq!(target("/etc/hosts"), t("/etc", Some("hosts")));
        assert_eq!(target("etc/hosts"), t("/etc", Some("hosts")));
        assert_eq!(target("/etc/"), t("/", Some("etc")));
        assert_eq!(target("/etc/."), t("/etc", None));
        assert_eq!(target("/"), t("/", None));
        assert_eq!(target("/../../etc/x"), t("/etc", Some("x")));
    }

    #[test]
    fn go_modes_carry_the_kind_in_high_bits() {
        assert_eq!(go_mode(0o040755), (1 << 31) | 0o755);
        assert_eq!(go_mode(0o100644), 0o644);
        assert_eq!(go_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_mode(0o104755), (1 << 23) | 0o755);
    }

    #[test]
    fn a_shrunken_file_reads_as_its_size_in_zeros() {
        let mut exact = Exact {
            inner: &b"ab"[..],
            left: 4,
        };
        let mut out = Vec::new();
        exact.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab\0\0");
    }
}
