//! Image layers and overlayfs: a root filesystem assembled from read-only
//! layers plus a writable directory of the container's own.
//!
//! An image is a stack of layers, each a tar of the files it adds, changes
//! or deletes relative to the ones below (image-spec `layer.md`). overlayfs
//! (`filesystems/overlayfs.rst`) shows such a stack as one directory tree:
//!
//! ```text
//!   merged/  (the container's /)          what the container sees
//!     ▲
//!   upperdir   store/containers/c4242/upper   its writes (copy-up on change)
//!   lowerdir   store/layers/sha256/9f2c…      layer 2 (read-only, shared)
//!   lowerdir   store/layers/sha256/41ab…      layer 1 (read-only, shared)
//! ```
//!
//! Each layer is unpacked once, into a directory named after the SHA-256
//! of the tarball ([`Store::layer`]): two containers of the same image
//! share the lower directories and never see each other's writes, which
//! go to their own upper directory. A deleted lower file is a *whiteout* in
//! the upper directory; [`unpack`] and [`commit`] translate between the
//! image spec's whiteout files and overlayfs's.
//!
//! # Where the overlay is mounted
//!
//! In the child, in its private mount namespace, after
//! [`crate::mount::make_private`] and before [`crate::mount::enter`]: like
//! every other mount of the container it is gone with the namespace, and
//! nothing is left mounted on the host.
//!
//! # Simplifications
//!
//! - The layer digest is the SHA-256 of the tarball as given (checked
//!   against an expected one when the caller has it); an image store
//!   (Part II) also keeps the uncompressed digest (`diff_id`) apart.
//!
//! # Rootless
//!
//! Without root, layers are unpacked as the user (no ownership, no device
//! nodes, `user.overlay.opaque` for opaque directories) into a store of
//! the user's (`$XDG_DATA_HOME/berth`), and the overlay is mounted in the
//! container's user namespace with `userxattr` (Linux 5.11+), which makes
//! overlayfs read `user.*` instead of `trusted.*` xattrs.

pub mod commit;
pub mod unpack;

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use sha2::{Digest, Sha256};

/// What can go wrong with layers and overlays.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `--rootfs` nor `--image` was given.
    #[error(
        "give the root filesystem: --rootfs DIR, or --image LAYER (repeated, bottom first)"
    )]
    NoRoot,
    /// No store directory for an ordinary user.
    #[error("no store for layers: set --store, or HOME or XDG_DATA_HOME")]
    NoStore,
    /// A layer file cannot be read.
    #[error("cannot read the layer {path:?}")]
    ReadLayer {
        /// The tarball.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A layer could not be unpacked.
    #[error("cannot unpack the layer {path:?}")]
    Unpack {
        /// The tarball.
        path: PathBuf,
        /// Why.
        #[source]
        source: unpack::Error,
    },
    /// The layer's digest is not the one it was expected to have.
    #[error(
        "the layer {path:?} has digest sha256:{actual}, not the expected {expected}"
    )]
    Digest {
        /// The tarball.
        path: PathBuf,
        /// The digest it should have had.
        expected: String,
        /// The one it has.
        actual: String,
    },
    /// The file goes on after the end of the tar archive.
    #[error(
        "the layer {path:?} goes on for more than {limit} bytes after the end of its tar archive"
    )]
    Trailing {
        /// The tarball.
        path: PathBuf,
        /// How much is tolerated.
        limit: u64,
    },
    /// A container's directories are in use by a running container.
    #[error(
        "the container directory {path:?} is in use by a running container"
    )]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// A directory of the store could not be made, opened or removed.
    #[error("cannot {what} {path:?}")]
    Store {
        /// What we were doing.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The overlay mount failed.
    #[error("cannot mount the overlay on {merged:?}")]
    Mount {
        /// The mount point.
        merged: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// `lowerdir=` would be longer than a page, which the kernel refuses.
    #[error(
        "{layers} layers make the overlay options {len} bytes long (the kernel takes 4096)"
    )]
    TooManyLayers {
        /// How many layers.
        layers: usize,
        /// The options' length.
        len: usize,
    },
    /// Exporting the changes failed.
    #[error("cannot write the changes to {path:?}")]
    Commit {
        /// The output file.
        path: PathBuf,
        /// Why.
        #[source]
        source: commit::Error,
    },
}

fn store_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Store {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The command-line options this module adds. `--rootfs` (step 3) moves
/// here: the root is now a directory *or* a stack of layers.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "root-options")]
pub struct Options {
    /// Directory to use as the container's root filesystem
    #[arg(long, value_name = "DIR", conflicts_with = "layers")]
    pub rootfs: Option<PathBuf>,
    /// A layer tarball (gzip or plain); repeat it, bottom layer first
    #[arg(long = "image", value_name = "LAYER")]
    pub layers: Vec<PathBuf>,
    /// Where layers and containers' upper dirs are kept [default: /var/lib/berth
    /// as root, $XDG_DATA_HOME/berth otherwise]
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// After exit, write the container's changes as a layer tar (.gz: gzip)
    #[arg(long, value_name = "FILE", requires = "layers")]
    pub commit: Option<PathBuf>,
}

/// The default store, as root.
pub const DEFAULT_STORE: &str = "/var/lib/berth";

/// A layer unpacked in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:` and the hex digest of the tarball.
    pub digest: String,
    /// Its directory.
    pub dir: PathBuf,
}

/// Layers and containers' writable directories, content-addressed.
///
/// ```text
///   STORE/layers/                     mode 0700
///   STORE/layers/sha256/<hex>/        one unpacked layer, shared
///   STORE/layers/tmp/<pid>-<n>/       a layer being unpacked (locked)
///   STORE/containers/                 mode 0700
///   STORE/containers/<id>/{upper,work,merged}   (locked while it runs)
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Numbers the temporary directories of one process.
static TMP_COUNTER: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Whether `bytes` start like gzip.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

// ANCHOR: hashing
/// A reader that hashes what passes through it: the layer is hashed
/// and unpacked from the same bytes, read once. Hashing a file and then
/// unpacking it from a second `open` would let the two reads see different
/// bytes (a pipe gives its bytes only once; a file can change in between),
/// and the store would keep content under a digest it does not have.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}
// ANCHOR_END: hashing

impl<R: Read> Hashing<R> {
    /// Hash what is read from `inner`.
    pub fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// How many bytes went by so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing went by yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The SHA-256 of everything read, in lowercase hex.
    pub fn hex(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// How much a layer file may go on past the end of its tar archive (tar
/// pads to 10 KiB records; gzip may add a few bytes): enough for any
/// honest writer, and an end for an endless input like `/dev/zero`.
pub const MAX_TRAILING: u64 = 1 << 20;

// ANCHOR: lock
/// Lock `file` for this process, without waiting; `false` if another
/// process holds it. The lock goes when the last copy of the fd closes, so
/// a killed process leaves nothing locked.
pub fn try_lock(file: &File) -> Result<bool, io::Error> {
    // SAFETY: flock(2) on an fd we own; it changes no memory.
    let rc =
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    match Errno::result(rc) {
        Ok(_) => Ok(true),
        Err(Errno::EWOULDBLOCK) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

/// Open directory (or file) `dir` and take its lock: `None` if a live
/// process holds it.
pub fn lock_dir(dir: &Path) -> Result<Option<File>, io::Error> {
    let file = File::open(dir)?;
    Ok(try_lock(&file)?.then_some(file))
}
// ANCHOR_END: lock

/// Remove every directory or file in `parent` whose lock no process
/// holds: what a killed writer left behind ([`lock_dir`]).
pub fn remove_stale(parent: &Path) -> Result<(), io::Error> {
    for entry in fs::read_dir(parent)?.flatten() {
        let path = entry.path();
        // Held: a live writer's. Gone meanwhile: nothing to do.
        if let Ok(Some(_lock)) = lock_dir(&path) {
            if path.is_dir() {
                remove_tree(&path);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

/// Create `path` with mode 0700 (whatever the umask), or make it 0700.
fn private_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(store_error("create", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(store_error("make private", path))
}

impl Store {
    // ANCHOR: open
    /// Open (creating) the store at `dir`, and remove what a killed run
    /// left behind: a half-unpacked layer in `layers/tmp`, a container's
    /// directories in `containers`, each no longer locked by a live
    /// process.
    ///
    /// `layers/` and `containers/` are mode 0700: a layer keeps its
    /// set-user-ID files and device nodes, and a store any user could walk
    /// into would hand them a setuid-root binary of any image. (`dir`
    /// itself is left as it is: `--store /tmp/x` must not change `/tmp`.)
    pub fn open(dir: &Path) -> Result<Store, Error> {
        for sub in ["layers", "containers"] {
            private_dir(&dir.join(sub))?;
        }
        for sub in ["layers/sha256", "layers/tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(store_error("create", &path))?;
        }
        let store = Store {
            dir: dir.to_owned(),
        };
        for sub in ["layers/tmp", "containers"] {
            let path = dir.join(sub);
            remove_stale(&path).map_err(store_error("list", &path))?;
        }
        Ok(store)
    }
    // ANCHOR_END: open

    // ANCHOR: layer
    /// The layer in tarball `path`, unpacked into the store unless it
    /// already is. `expected`, if given, is the digest it must have
    /// (`sha256:…`, from a manifest). The tarball is read once: hashed as it
    /// is unpacked into a directory of its own in `layers/tmp`, which is
    /// renamed into place only once the digest is known (and matched).
    /// A failed unpack leaves nothing behind.
    pub fn layer(
        &self,
        path: &Path,
        expected: Option<&str>,
    ) -> Result<Layer, Error> {
        let tmp = self.dir.join("layers/tmp").join(format!(
            "{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir(&tmp).map_err(store_error("create", &tmp))?;
        // Ours until we are done, or until we die: then Store::open of
        // the next run removes it.
        let lock = lock_dir(&tmp).map_err(store_error("lock", &tmp))?;
        let result = self.unpack_into(path, &tmp).and_then(|hex| {
            let digest = format!("sha256:{hex}");
            if let Some(expected) = expected.filter(|e| *e != digest) {
                return Err(Error::Digest {
                    path: path.to_owned(),
                    expected: expected.to_owned(),
                    actual: hex,
                });
            }
            let dir = self.dir.join("layers/sha256").join(&hex);
            // rename(2) is atomic: a concurrent unpack of the same layer
            // either wins or finds ours in place.
            if !dir.is_dir() {
                match fs::rename(&tmp, &dir) {
                    Ok(()) => {}
                    Err(_) if dir.is_dir() => {}
                    Err(source) => {
                        return Err(store_error("rename into place", &dir)(
                            source,
                        ));
                    }
                }
            }
            Ok(Layer { digest, dir })
        });
        drop(lock);
        if tmp.exists() {
            remove_tree(&tmp);
        }
        result
    }
    // ANCHOR_END: layer

    // ANCHOR: unpack_into
    /// Unpack `path` into `dir`, hashing it on the way; the hex digest.
    fn unpack_into(&self, path: &Path, dir: &Path) -> Result<String, Error> {
        let read_error = |source| Error::ReadLayer {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let gzip =
            is_gzip(io::BufRead::fill_buf(&mut reader).map_err(read_error)?);
        let mut hashing = Hashing::new(reader);
        let root = unpack::open_root(dir)
            .map_err(|e| store_error("open", dir)(e.into()))?;
        let privileged = nix::unistd::geteuid().is_root();
        let unpack_error = |source| Error::Unpack {
            path: path.to_owned(),
            source,
        };
        let root = std::os::fd::AsFd::as_fd(&root);
        if gzip {
            let mut decoder = GzDecoder::new(&mut hashing);
            unpack::unpack(&mut decoder, root, privileged)
                .map_err(unpack_error)?;
        } else {
            unpack::unpack(&mut hashing, root, privileged)
                .map_err(unpack_error)?;
        }
        // The rest of the file counts for the digest too; an endless one
        // (/dev/zero) is cut short.
        let end = hashing.len;
        let mut rest = (&mut hashing).take(MAX_TRAILING + 1);
        io::copy(&mut rest, &mut io::sink()).map_err(read_error)?;
        if hashing.len - end > MAX_TRAILING {
            return Err(Error::Trailing {
                path: path.to_owned(),
                limit: MAX_TRAILING,
            });
        }
        Ok(hashing.hex())
    }
    // ANCHOR_END: unpack_into

    // ANCHOR: container
    /// The writable directories for container `id` on top of `layers`
    /// (bottom first), locked while the returned [`Container`] lives, and
    /// removed when it is dropped. Directories left by a killed run with
    /// the same id are removed first; a live container's are refused.
    pub fn container(
        &self,
        id: &str,
        layers: &[Layer],
    ) -> Result<Container, Error> {
        let dir = self.dir.join("containers").join(id);
        if dir.exists() {
            match lock_dir(&dir) {
                Ok(Some(_stale)) => remove_tree(&dir),
                Ok(None) => return Err(Error::InUse { path: dir }),
                Err(source) => return Err(store_error("lock", &dir)(source)),
            }
        }
        fs::create_dir(&dir).map_err(store_error("create", &dir))?;
        let lock = match lock_dir(&dir) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Err(Error::InUse { path: dir }),
            Err(source) => return Err(store_error("lock", &dir)(source)),
        };
        let container = Container {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            lower: layers.iter().rev().map(|l| l.dir.clone()).collect(),
            rootless: !nix::unistd::geteuid().is_root(),
            dir,
            _lock: lock,
        };
        for path in [&container.upper, &container.work, &container.merged] {
            fs::create_dir_all(path).map_err(store_error("create", path))?;
        }
        container.options()?;
        Ok(container)
    }
    // ANCHOR_END: container
}

/// A container's overlay: its layers and its own writable directories.
#[derive(Debug)]
pub struct Container {
    dir: PathBuf,
    /// The lock on `dir`: held while the container lives.
    _lock: File,
    /// Where it writes.
    pub upper: PathBuf,
    /// overlayfs's scratch directory (same filesystem as `upper`).
    pub work: PathBuf,
    /// The mount point: the container's root.
    pub merged: PathBuf,
    /// The layers, top first (as `lowerdir=` lists them).
    pub lower: Vec<PathBuf>,
    /// Mounted in a user namespace: `userxattr`.
    pub rootless: bool,
}

impl Container {
    /// The overlay mount options ([`options`]).
    pub fn options(&self) -> Result<String, Error> {
        options(&self.lower, &self.upper, &self.work, self.rootless)
    }

    // ANCHOR: mount
    /// Mount the overlay on [`Container::merged`]. Call it in the child,
    /// after [`crate::mount::make_private`].
    pub fn mount(&self) -> Result<(), Error> {
        let options = self.options()?;
        mount(
            Some("overlay"),
            &self.merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|source| Error::Mount {
            merged: self.merged.clone(),
            source,
        })
    }
    // ANCHOR_END: mount

    /// Write the container's changes to `path` as a layer tar, gzip'd if
    /// the name ends in `.gz`.
    pub fn commit(&self, path: &Path) -> Result<commit::Summary, Error> {
        let failed = |source| Error::Commit {
            path: path.to_owned(),
            source,
        };
        let io_failed = |source| {
            failed(commit::Error::Io {
                path: path.to_owned(),
                source,
            })
        };
        let file = File::create(path).map_err(io_failed)?;
        let gzip = path.extension().is_some_and(|e| e == "gz");
        // Rootless: what the container's root made is ours on the host.
        let ids = self.rootless.then(|| commit::IdMap {
            uid: (nix::unistd::geteuid().as_raw(), 0),
            gid: (nix::unistd::getegid().as_raw(), 0),
        });
        let summary = if gzip {
            let (encoder, summary) = commit::commit(
                &self.upper,
                GzEncoder::new(file, Compression::fast()),
                ids,
            )
            .map_err(failed)?;
            encoder.finish().map_err(io_failed)?;
            summary
        } else {
            let (mut file, summary) =
                commit::commit(&self.upper, file, ids).map_err(failed)?;
            file.flush().map_err(io_failed)?;
            summary
        };
        Ok(summary)
    }
}

// ANCHOR: options
/// The overlay mount options for `lower` (top first), `upper` and
/// `work`; `userxattr` when mounted in a user namespace (`rootless`).
/// Refused when the list does not fit in one page, the limit of
/// `mount(2)`'s data.
pub fn options(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    rootless: bool,
) -> Result<String, Error> {
    let lower: Vec<String> =
        lower.iter().map(|p| p.display().to_string()).collect();
    let mut options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if rootless {
        options.push_str(",userxattr");
    }
    if options.len() >= 4096 {
        return Err(Error::TooManyLayers {
            layers: lower.len(),
            len: options.len(),
        });
    }
    Ok(options)
}
// ANCHOR_END: options

impl Drop for Container {
    /// The upper directory goes with the container (as `docker run --rm`);
    /// [`Container::commit`] first to keep the changes.
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// Remove `dir` and everything below it, best effort. overlayfs leaves a
/// `work/work` directory of mode 000; root removes it anyway, an ordinary
/// user (rootless) must first give itself permission to look inside.
pub fn remove_tree(dir: &Path) {
    if fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    fn open_up(dir: &Path) {
        let _ = fs::set_permissions(
            dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&entry.path());
                }
            }
        }
    }
    open_up(dir);
    let _ = fs::remove_dir_all(dir);
}

/// The store directory for `options`: `--store`, else the system's as root,
/// else the user's (`$XDG_DATA_HOME/berth`, `~/.local/share/berth`).
pub fn store_dir(options: &Options) -> Result<PathBuf, Error> {
    if let Some(dir) = &options.store {
        return Ok(dir.clone());
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from(DEFAULT_STORE));
    }
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_DATA_HOME")
        .or_else(|| env("HOME").map(|home| home.join(".local/share")))
        .map(|data| data.join("berth"))
        .ok_or(Error::NoStore)
}
