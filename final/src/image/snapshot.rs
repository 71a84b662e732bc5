//! Snapshots: each layer unpacked once, into a directory named after its
//! chain ID, the stack of layers up to and including it (image-spec
//! `config.md`). Two images that share their bottom layers share those
//! snapshots; a layer on top of different parents is two snapshots. With
//! overlayfs the two directories would hold the same files (the stack is
//! made at mount time), so this costs some space; it keeps the name the
//! specs and containerd use, which says exactly which stack a snapshot
//! was made for, and which a snapshotter that copies its parent needs.
//!
//! ```text
//!   DIR/sha256/<chain hex>/     a finished snapshot (read-only lower dir)
//!   DIR/tmp/<pid>-<n>/          one being unpacked (locked by its writer)
//! ```
//!
//! The blob is read once: its digest checked at its end (the store's
//! [`Verified`](super::digest::Verified) reader), decompressed (gzip,
//! zstd or plain, told from the first bytes:
//! [`Compression`](super::compression::Compression)), the *uncompressed* stream hashed
//! against the config's `diff_id` while step 7's unpacker writes it out.
//! Only a snapshot whose every byte matched is renamed into place.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::compression::Compression;
use super::digest::{Digest, Hashing};
use super::store::{self, Store, our_digest};
use crate::overlay::{lock_dir, remove_stale, remove_tree, unpack};
use crate::path_io::{self, PathIo};

/// What can go wrong while preparing snapshots.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store (a blob missing, changed, unreadable).
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A file or directory.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// The manifest and its config disagree, or name what is not sha256.
    #[error("image {manifest}: {why}")]
    Malformed {
        /// The manifest's digest.
        manifest: Digest,
        /// What is wrong.
        why: String,
    },
    /// The layer's tar is unsafe or corrupt.
    #[error("layer {layer}")]
    Unpack {
        /// The layer's blob.
        layer: Digest,
        /// Why.
        #[source]
        source: unpack::Error,
    },
    /// The layer's uncompressed content is not the one the config names.
    #[error(
        "layer {layer}: its content has diff_id {actual}, the image config says {expected}"
    )]
    DiffId {
        /// The layer's blob.
        layer: Digest,
        /// The config's `diff_id`.
        expected: Digest,
        /// What it hashed to.
        actual: Digest,
    },
    /// Reading or decompressing the layer.
    #[error("layer {layer}: cannot read it")]
    Read {
        /// The layer's blob.
        layer: Digest,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How far a layer's stream may go on past its tar's end (padding).
const MAX_TRAILING: u64 = 1 << 20;

/// A layer may unpack to this many bytes whatever its size.
pub const EXPANSION_FLOOR: u64 = 1 << 30;

/// Beyond [`EXPANSION_FLOOR`], how many times its stored size a layer may
/// grow when decompressed.
pub const EXPANSION_RATIO: u64 = 100;

/// The most a layer of `size` bytes may decompress to. gzip reaches
/// about 1000:1 on zeros and zstd more: a layer of a few megabytes could
/// fill the disk. Docker and containerd set no bound (the disk is the
/// bound); berth refuses a layer that passes 1 GiB and 100 times its
/// size, which no layer made by a build does unless it holds a large
/// file of zeros.
pub fn max_expansion(size: u64) -> u64 {
    EXPANSION_FLOOR.max(size.saturating_mul(EXPANSION_RATIO))
}

/// A reader that fails once more than its bound has come through: a
/// decompression bomb stops there.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Capped<R> {
    fn new(inner: R, limit: u64) -> Capped<R> {
        Capped {
            inner,
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "it decompresses to more than {} bytes \
                     (a decompression bomb?)",
                    self.limit
                ),
            )
        })?;
        Ok(n)
    }
}

/// The snapshots in a directory.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    /// Open the snapshots at `dir` (created mode 0700: layers keep their
    /// set-user-ID files), removing what a killed unpack left behind.
    pub fn open(dir: &Path) -> Result<Snapshots, Error> {
        for sub in ["sha256", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(path_io::at("create", &path))?;
        }
        fs::set_permissions(
            dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(path_io::at("make private", dir))?;
        let tmp = dir.join("tmp");
        remove_stale(&tmp).map_err(path_io::at("list", &tmp))?;
        Ok(Snapshots {
            dir: dir.to_owned(),
        })
    }

    /// The snapshot directory of chain ID `chain`.
    pub fn path(&self, chain: &Digest) -> PathBuf {
        self.dir.join("sha256").join(chain.hex())
    }

    // ANCHOR: prepare
    /// The snapshots of image `manifest`'s layers, bottom first, each
    /// unpacked unless it already is.
    pub fn prepare(
        &self,
        store: &Store,
        manifest: &Digest,
    ) -> Result<Vec<PathBuf>, Error> {
        let mut dirs = Vec::new();
        for layer in layers(store, manifest)? {
            let dir = self.path(&layer.chain);
            if !dir.is_dir() {
                self.unpack_stored(store, &layer.blob, &layer.diff_id, &dir)?;
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }
    // ANCHOR_END: prepare

    /// The chain IDs of the snapshots there are.
    pub fn list(&self) -> Result<Vec<Digest>, Error> {
        let dir = self.dir.join("sha256");
        Ok(super::digest::digests_in(&dir)
            .map_err(path_io::at("list", &dir))?)
    }

    /// Remove snapshot `chain` (no container may use it).
    pub fn remove(&self, chain: &Digest) {
        remove_tree(&self.path(chain));
    }

    /// Unpack blob `layer` from the store: [`Snapshots::unpack`], then
    /// into place at `dir`.
    fn unpack_stored(
        &self,
        store: &Store,
        layer: &Digest,
        diff_id: &Digest,
        dir: &Path,
    ) -> Result<(), Error> {
        let size = store.size(layer)?;
        let blob = BufReader::with_capacity(1 << 20, store.open_blob(layer)?);
        self.unpack(blob, size, layer, diff_id)?
            .commit(dir)
            .map(drop)
    }

    /// Unpack the layer `blob` streams (`size` bytes as stored, of digest
    /// `layer`: the stream checks it by its end) into a fresh directory
    /// of `tmp/`, checking its diff ID: a snapshot that
    /// [`Pending::commit`] puts in place, and dropping removes.
    pub fn unpack(
        &self,
        mut blob: impl BufRead,
        size: u64,
        layer: &Digest,
        diff_id: &Digest,
    ) -> Result<Pending, Error> {
        let tmp = self.dir.join("tmp").join(super::tmp_name());
        fs::create_dir(&tmp).map_err(path_io::at("create", &tmp))?;
        // Ours until renamed or removed; if we die, the next open sweeps it.
        let lock = lock_dir(&tmp).map_err(path_io::at("lock", &tmp))?;
        let pending = Pending { tmp, _lock: lock };
        unpack_layer(&mut blob, size, layer, diff_id, &pending.tmp)?;
        Ok(pending)
    }
}

/// A layer unpacked into `tmp/`, its diff ID checked, not yet a
/// snapshot.
pub struct Pending {
    tmp: PathBuf,
    _lock: Option<fs::File>,
}

impl Pending {
    /// Rename it to `dir` (the snapshot of its chain ID): whether it is
    /// this one that is there now.
    pub fn commit(self, dir: &Path) -> Result<bool, Error> {
        match fs::rename(&self.tmp, dir) {
            Ok(()) => Ok(true),
            // Another writer finished the same snapshot first.
            Err(_) if dir.is_dir() => Ok(false),
            Err(e) => Err(path_io::at("rename into place", dir)(e).into()),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.tmp.exists() {
            remove_tree(&self.tmp);
        }
    }
}

/// One layer of an image, as its snapshot needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob (as stored: compressed or not).
    pub blob: Digest,
    /// The blob's size, as the manifest gives it.
    pub size: u64,
    /// The digest of its uncompressed tar.
    pub diff_id: Digest,
    /// Its chain ID: the snapshot's name.
    pub chain: Digest,
}

/// The layers of image `manifest`, bottom first, from its manifest and
/// config in the store.
pub fn layers(store: &Store, manifest: &Digest) -> Result<Vec<Layer>, Error> {
    let parsed: ImageManifest = store.read_json(manifest)?;
    let config_digest =
        our_digest(parsed.config().digest()).ok_or_else(|| {
            Error::Malformed {
                manifest: manifest.clone(),
                why: "the config's digest is not sha256".into(),
            }
        })?;
    let config: ImageConfiguration = store.read_json(&config_digest)?;
    layers_of(manifest, &parsed, &config)
}

/// The layers of the image whose manifest (of digest `digest`) and
/// config are given: each manifest layer with the config's diff ID at
/// its place, and the chain IDs they make.
pub fn layers_of(
    digest: &Digest,
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<Vec<Layer>, Error> {
    let malformed = |why: String| Error::Malformed {
        manifest: digest.clone(),
        why,
    };
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(malformed(format!(
            "{} layers, but the config lists {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let mut chain: Option<Digest> = None;
    let mut out = Vec::new();
    for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let blob = our_digest(layer.digest()).ok_or_else(|| {
            malformed("a layer's digest is not sha256".into())
        })?;
        let diff_id: Digest = diff_id
            .parse()
            .map_err(|e: super::digest::BadDigest| malformed(e.to_string()))?;
        let id = Digest::chain(chain.as_ref(), &diff_id);
        out.push(Layer {
            blob,
            size: layer.size(),
            diff_id,
            chain: id.clone(),
        });
        chain = Some(id);
    }
    Ok(out)
}

/// The uncompressed stream of the layer `blob` streams (`size` bytes as
/// stored, compression told by its first bytes), hashed as it is read
/// and cut at [`max_expansion`].
fn uncompressed<'a, R: BufRead + 'a>(
    blob: R,
    size: u64,
) -> io::Result<Hashing<Capped<Box<dyn Read + 'a>>>> {
    let mut blob = blob;
    let compression = Compression::detect(blob.fill_buf()?);
    Ok(Hashing::new(Capped::new(
        compression.decoder(blob),
        max_expansion(size),
    )))
}

/// Read the layer `blob` streams (`size` bytes as stored) to its end
/// through the decompressor, and check it against `diff_id` (a layer
/// whose snapshot is there already: its blob must still be what the
/// config says).
pub fn check(
    mut blob: impl BufRead,
    size: u64,
    layer: &Digest,
    diff_id: &Digest,
) -> Result<(), Error> {
    let read_error = |source| Error::Read {
        layer: layer.clone(),
        source,
    };
    let mut hashing = uncompressed(&mut blob, size).map_err(read_error)?;
    io::copy(&mut hashing, &mut io::sink()).map_err(read_error)?;
    let actual = Digest::of_read(hashing);
    io::copy(&mut blob, &mut io::sink()).map_err(read_error)?;
    same_diff_id(layer, diff_id, actual)
}

/// `actual`, what layer `layer` hashed to uncompressed, must be the
/// config's `diff_id`.
fn same_diff_id(
    layer: &Digest,
    diff_id: &Digest,
    actual: Digest,
) -> Result<(), Error> {
    if actual != *diff_id {
        return Err(Error::DiffId {
            layer: layer.clone(),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(())
}

// ANCHOR: unpack_layer
/// Read blob `layer` (`size` bytes as stored) once: decompress, hash,
/// unpack into `dir`.
fn unpack_layer(
    blob: &mut impl BufRead,
    size: u64,
    layer: &Digest,
    diff_id: &Digest,
    dir: &Path,
) -> Result<(), Error> {
    let read_error = |source| Error::Read {
        layer: layer.clone(),
        source,
    };
    let mut hashing = uncompressed(&mut *blob, size).map_err(read_error)?;
    let root = unpack::open_root(dir)
        .map_err(|e| path_io::at("open", dir)(e.into()))?;
    let privileged = nix::unistd::geteuid().is_root();
    unpack::unpack(&mut hashing, std::os::fd::AsFd::as_fd(&root), privileged)
        .map_err(|source| Error::Unpack {
        layer: layer.clone(),
        source,
    })?;
    // The padding after the tar's end is part of the diff ID; an endless
    // stream is cut short.
    let end = hashing.len();
    io::copy(&mut (&mut hashing).take(MAX_TRAILING + 1), &mut io::sink())
        .map_err(read_error)?;
    if hashing.len() - end > MAX_TRAILING {
        return Err(read_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {MAX_TRAILING} bytes after the end of the tar"),
        )));
    }
    let actual = Digest::of_read(hashing);
    // The compressed blob to its end too: that is where its digest is
    // checked.
    io::copy(blob, &mut io::sink()).map_err(read_error)?;
    same_diff_id(layer, diff_id, actual)
}
// ANCHOR_END: unpack_layer
