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
//! - The layer digest is the SHA-256 of the tarball as given; an image
//!   store (Part II) also checks it against the manifest, and keeps the
//!   uncompressed digest (`diff_id`) apart.
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
    #[error("give the root filesystem: --rootfs DIR, or --image LAYER (repeated, bottom first)")]
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
    #[error("{layers} layers make the overlay options {len} bytes long (the kernel takes 4096)")]
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

fn store_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
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
///   STORE/layers/sha256/<hex>/        one unpacked layer, shared
///   STORE/layers/tmp/<hex>.<pid>/     a layer being unpacked
///   STORE/containers/<id>/{upper,work,merged}
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Whether `bytes` start like gzip.
fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// SHA-256 of the file at `path`, as hex.
fn sha256_file(path: &Path) -> Result<String, Error> {
    let read_error = |source| Error::ReadLayer {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl Store {
    /// Open (creating) the store at `dir`.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        for sub in ["layers/sha256", "layers/tmp", "containers"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(store_error("create", &path))?;
        }
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    // ANCHOR: layer
    /// The layer in tarball `path`, unpacked into the store unless it
    /// already is. A failed unpack leaves nothing behind.
    pub fn layer(&self, path: &Path) -> Result<Layer, Error> {
        let hex = sha256_file(path)?;
        let dir = self.dir.join("layers/sha256").join(&hex);
        let layer = Layer {
            digest: format!("sha256:{hex}"),
            dir: dir.clone(),
        };
        if dir.is_dir() {
            return Ok(layer);
        }
        let tmp = self
            .dir
            .join("layers/tmp")
            .join(format!("{hex}.{}", std::process::id()));
        fs::create_dir(&tmp).map_err(store_error("create", &tmp))?;
        let unpacked = self.unpack_into(path, &tmp);
        let result = unpacked.and_then(|_| {
            // rename(2) is atomic: a concurrent unpack of the same layer
            // either wins or finds ours in place.
            match fs::rename(&tmp, &dir) {
                Ok(()) => Ok(()),
                Err(_) if dir.is_dir() => Ok(()),
                Err(source) => Err(store_error("rename into place", &dir)(source)),
            }
        });
        if tmp.exists() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|()| layer)
    }
    // ANCHOR_END: layer

    fn unpack_into(&self, path: &Path, dir: &Path) -> Result<unpack::Summary, Error> {
        let read_error = |source| Error::ReadLayer {
            path: path.to_owned(),
            source,
        };
        let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(read_error)?);
        let head = io::BufRead::fill_buf(&mut file).map_err(read_error)?;
        let gzip = is_gzip(head);
        let root = unpack::open_root(dir).map_err(|e| store_error("open", dir)(e.into()))?;
        let privileged = nix::unistd::geteuid().is_root();
        let unpack_error = |source| Error::Unpack {
            path: path.to_owned(),
            source,
        };
        let root = std::os::fd::AsFd::as_fd(&root);
        if gzip {
            unpack::unpack(GzDecoder::new(file), root, privileged).map_err(unpack_error)
        } else {
            unpack::unpack(file, root, privileged).map_err(unpack_error)
        }
    }

    // ANCHOR: container
    /// The writable directories for container `id` on top of `layers`
    /// (bottom first). Removed when the returned [`Container`] is dropped.
    pub fn container(&self, id: &str, layers: &[Layer]) -> Result<Container, Error> {
        let dir = self.dir.join("containers").join(id);
        let container = Container {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            lower: layers.iter().rev().map(|l| l.dir.clone()).collect(),
            rootless: !nix::unistd::geteuid().is_root(),
            dir,
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
    // ANCHOR: options
    /// The overlay mount options.
    pub fn options(&self) -> Result<String, Error> {
        let lower: Vec<String> = self.lower.iter().map(|p| p.display().to_string()).collect();
        let mut options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.upper.display(),
            self.work.display()
        );
        if self.rootless {
            options.push_str(",userxattr");
        }
        if options.len() >= 4096 {
            return Err(Error::TooManyLayers {
                layers: self.lower.len(),
                len: options.len(),
            });
        }
        Ok(options)
    }
    // ANCHOR_END: options

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
            let (encoder, summary) =
                commit::commit(&self.upper, GzEncoder::new(file, Compression::fast()), ids)
                    .map_err(failed)?;
            encoder.finish().map_err(io_failed)?;
            summary
        } else {
            let (mut file, summary) = commit::commit(&self.upper, file, ids).map_err(failed)?;
            file.flush().map_err(io_failed)?;
            summary
        };
        Ok(summary)
    }
}

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
fn remove_tree(dir: &Path) {
    if fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    fn open_up(dir: &Path) {
        let _ = fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
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
