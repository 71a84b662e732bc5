//! The content-addressed store, in the OCI image layout (image-spec
//! `image-layout.md`): every blob under its digest, and `index.json`
//! naming the images.
//!
//! ```text
//!   DIR/oci-layout              {"imageLayoutVersion": "1.0.0"}
//!   DIR/index.json              one manifest descriptor per name, the name in
//!                               the annotation org.opencontainers.image.ref.name,
//!                               and one without it per unnamed image
//!   DIR/blobs/sha256/<hex>      content, never rewritten (mode 0644)
//!   DIR/tmp/                    blobs being written, each locked by its
//!                               writer; a dead writer's swept on open
//!   DIR/lock                    flock(2) while index.json changes
//!   DIR/sources/<hex>           the repositories a blob was pulled from
//!                               or pushed to (a push mounts from them)
//! ```
//!
//! A blob is hashed as it is written, into a temporary file that is
//! synced and renamed into place only if its digest is the one expected:
//! a reader never sees half a blob, and a `kill -9` at any moment leaves
//! at most a file in `tmp/` (and whole blobs no image names yet, which
//! the next garbage collection removes: [`super::gc`]). Reads check the digest again
//! ([`super::digest::Verified`]): a blob changed on disk is an error, not
//! an image. `index.json` is replaced whole, by the same write-sync-rename.
//!
//! Unlike the image layout of the spec, a name here is always a full
//! reference (`docker.io/library/busybox:latest`), one per descriptor;
//! an image without one (docker's `<none>`) has a descriptor without the
//! annotation.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use super::digest::{Digest, Verified};
use super::reference::Reference;
use crate::overlay::{remove_stale, try_lock};
use crate::path_io::{self, PathIo};

/// The annotation that names an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// A blob's bytes are not those of the digest it was given under.
    #[error("blob {expected}: the content has digest {actual}")]
    Mismatch {
        /// The digest it should have.
        expected: Digest,
        /// The one it has.
        actual: Digest,
    },
    /// A blob larger than its reader allows.
    #[error("blob {what}: larger than {limit} bytes")]
    TooBig {
        /// Which blob.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// No blob of that digest.
    #[error("no blob {0} in the store")]
    Missing(Digest),
    /// `index.json` cannot be read as an image index.
    #[error("image store: {path} is not an image index: {message}")]
    Index {
        /// Its path.
        path: PathBuf,
        /// The parser's complaint.
        message: String,
    },
}

/// The biggest JSON document (manifest, config, index) the store reads
/// into memory.
pub const MAX_JSON: u64 = 4 << 20;

/// How many repositories a blob's sources remember.
pub const MAX_SOURCES: usize = 8;

/// An image store in a directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Open the store at `dir`, creating it if need be (mode 0700: an
    /// image's config may hold secrets in its environment, as docker's
    /// store does), and remove what a killed writer left in `tmp/`.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        for sub in ["blobs/sha256", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(path_io::at("create", &path))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(path_io::at("make private", dir))?;
        let store = Store {
            dir: dir.to_owned(),
        };
        let _lock = store.lock()?;
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            write_synced(
                &store,
                &layout,
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        // A writer locks its temporary file until it is renamed: the
        // unlocked ones are a dead writer's.
        let tmp = dir.join("tmp");
        remove_stale(&tmp).map_err(path_io::at("list", &tmp))?;
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// The digests of every blob there is.
    pub fn blobs(&self) -> Result<Vec<Digest>, Error> {
        let dir = self.dir.join("blobs/sha256");
        Ok(super::digest::digests_in(&dir)
            .map_err(path_io::at("list", &dir))?)
    }

    /// The repositories (`domain/path`) blob `digest` is known to be in:
    /// where a push may mount it from instead of uploading it.
    pub fn sources(&self, digest: &Digest) -> Vec<String> {
        fs::read_to_string(self.dir.join("sources").join(digest.hex()))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Record that blob `digest` is in `repository` (after a pull or a
    /// push): at most [`MAX_SOURCES`] kept, the latest first.
    pub fn add_source(
        &self,
        digest: &Digest,
        repository: &str,
    ) -> Result<(), Error> {
        let dir = self.dir.join("sources");
        fs::create_dir_all(&dir).map_err(path_io::at("create", &dir))?;
        let _lock = self.lock()?;
        let mut sources = self.sources(digest);
        sources.retain(|s| s != repository);
        sources.insert(0, repository.to_owned());
        sources.truncate(MAX_SOURCES);
        let text: String = sources.iter().map(|s| format!("{s}\n")).collect();
        write_synced(self, &dir.join(digest.hex()), text.as_bytes())
    }

    /// Remove blob `digest` (garbage collection: nothing may lead to it).
    pub fn remove(&self, digest: &Digest) -> Result<(), Error> {
        let _ = fs::remove_file(self.dir.join("sources").join(digest.hex()));
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(path_io::at("remove", &path)(e).into())
            }
            _ => Ok(()),
        }
    }

    /// Whether blob `digest` is present.
    pub fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Take the store's lock (until the file is dropped): one writer of
    /// `index.json` at a time.
    pub fn lock(&self) -> Result<File, Error> {
        let path = self.dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(path_io::at("open", &path))?;
        // SAFETY: flock(2) on an fd we own; it changes no memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(
                path_io::at("lock", &path)(io::Error::last_os_error()).into()
            );
        }
        Ok(file)
    }

    /// Write what `reader` gives as a blob, at most `limit` bytes: its
    /// digest, which must be `expected` if given, its size, and whether it
    /// is new (present already: the new copy is dropped).
    pub fn put(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        limit: u64,
    ) -> Result<(Digest, u64, bool), Error> {
        let mut writer = self.writer()?;
        let tmp = writer.tmp.clone();
        io::copy(&mut reader.take(limit.saturating_add(1)), &mut writer)
            .map_err(path_io::at("write", &tmp))?;
        writer.commit(expected, limit)
    }

    /// A blob written piece by piece (a download, teed to its unpacker):
    /// nothing is in the store until [`BlobWriter::commit`] has checked
    /// it; dropped before that, it leaves nothing.
    pub fn writer(&self) -> Result<BlobWriter, Error> {
        let tmp = self.dir.join("tmp").join(super::tmp_name());
        let file = create_locked(&tmp, 0o644)?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            file: Some(file),
            hasher: sha2::Sha256::default(),
            len: 0,
        })
    }

    /// Blob `digest`, read as it streams and checked at its end.
    pub fn open_blob(&self, digest: &Digest) -> Result<Verified<File>, Error> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::Missing(digest.clone()),
            _ => path_io::at("open", &path)(e).into(),
        })?;
        Ok(Verified::new(file, digest.clone()))
    }

    /// The size of blob `digest`.
    pub fn size(&self, digest: &Digest) -> Result<u64, Error> {
        let path = self.blob_path(digest);
        Ok(fs::metadata(&path)
            .map_err(path_io::at("stat", &path))?
            .len())
    }

    /// The first `n` bytes of blob `digest` (fewer if it is shorter), not
    /// checked: a peek at its format.
    pub fn head(&self, digest: &Digest, n: u64) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest);
        let mut head = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(n).read_to_end(&mut head))
            .map_err(path_io::at("read", &path))?;
        Ok(head)
    }

    /// Blob `digest` in memory, checked, at most `limit` bytes.
    pub fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
        let mut bytes = Vec::new();
        let path = self.blob_path(digest);
        self.open_blob(digest)?
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(path_io::at("read", &path))?;
        if bytes.len() as u64 > limit {
            return Err(Error::TooBig {
                what: digest.to_string(),
                limit,
            });
        }
        Ok(bytes)
    }

    /// A JSON blob (manifest, config), parsed.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
    ) -> Result<T, Error> {
        let bytes = self.read(digest, MAX_JSON)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Index {
            path: self.blob_path(digest),
            message: e.to_string(),
        })
    }

    /// Write `bytes` as a blob (a JSON document made here): its digest
    /// and whether it is new.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(Digest, bool), Error> {
        self.put(bytes, None, bytes.len() as u64)
            .map(|(digest, _, new)| (digest, new))
    }

    /// `index.json`, parsed (empty if absent).
    pub fn index(&self) -> Result<ImageIndex, Error> {
        let path = self.dir.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| Error::Index {
                    path,
                    message: e.to_string(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(ImageIndex::default())
            }
            Err(e) => Err(path_io::at("read", &path)(e).into()),
        }
    }

    /// Every name and the manifest it points at.
    pub fn names(&self) -> Result<Vec<(Reference, Descriptor)>, Error> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .filter_map(|d| {
                let name = d.annotations().as_ref()?.get(REF_NAME)?;
                Some((name.parse().ok()?, d.clone()))
            })
            .collect())
    }

    /// Every manifest the index holds, named or not, once each.
    pub fn manifests(&self) -> Result<Vec<Digest>, Error> {
        let mut out: Vec<Digest> = Vec::new();
        for descriptor in self.index()?.manifests() {
            if let Some(digest) = our_digest(descriptor.digest())
                && !out.contains(&digest)
            {
                out.push(digest);
            }
        }
        Ok(out)
    }

    /// Point `name` at the manifest `descriptor` (replacing where it
    /// pointed before). An image that loses its last name this way stays,
    /// unnamed (Docker's `<none>`: a dangling image), as does a new image
    /// given no name (`descriptor` without `name`). Call with the lock
    /// held.
    pub fn tag(
        &self,
        name: Option<&Reference>,
        manifest: &Descriptor,
    ) -> Result<(), Error> {
        let mut index = self.index()?;
        let mut manifests: Vec<Descriptor> = index.manifests().clone();
        let mut descriptor = manifest.clone();
        descriptor.set_annotations(None);
        if let Some(name) = name {
            let full = name.to_string();
            // The image that had the name keeps its place, unnamed, if
            // that was its last one.
            let before: Option<Descriptor> =
                manifests.iter().find(|d| names(d, &full)).cloned();
            manifests.retain(|d| !names(d, &full));
            if let Some(mut old) = before
                && !manifests.iter().any(|d| d.digest() == old.digest())
                && old.digest() != manifest.digest()
            {
                old.set_annotations(None);
                manifests.push(old);
            }
            // A name replaces the unnamed entry of its image.
            manifests.retain(|d| {
                d.digest() != manifest.digest() || d.annotations().is_some()
            });
            let mut annotations = HashMap::new();
            annotations.insert(REF_NAME.to_owned(), full);
            descriptor.set_annotations(Some(annotations));
        } else if manifests
            .iter()
            .any(|d| d.digest() == manifest.digest() && cache_key(d).is_none())
        {
            return Ok(());
        }
        manifests.push(descriptor);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Remove every entry of image `manifest`, named or not: the image is
    /// gone (its blobs await a garbage collection). Call with the lock
    /// held.
    pub fn forget(&self, manifest: &Digest) -> Result<(), Error> {
        let mut index = self.index()?;
        let before = index.manifests().len();
        let kept: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| our_digest(d.digest()).as_ref() != Some(manifest))
            .cloned()
            .collect();
        if kept.len() != before {
            index.set_manifests(kept);
            self.write_index(&index)?;
        }
        Ok(())
    }

    /// Keep image `manifest` as the build step whose cache key is `key`
    /// (an unnamed entry, annotated [`BUILD_CACHE`]: garbage collection
    /// keeps it, `images` does not list it). Call with the lock held.
    pub fn keep(&self, key: &str, manifest: &Descriptor) -> Result<(), Error> {
        let mut index = self.index()?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| cache_key(d) != Some(key))
            .cloned()
            .collect();
        let mut descriptor = manifest.clone();
        descriptor.set_annotations(Some(
            [(BUILD_CACHE.to_owned(), key.to_owned())].into(),
        ));
        manifests.push(descriptor);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// The image a build step of cache key `key` made, if it was kept.
    pub fn cached(&self, key: &str) -> Result<Option<Digest>, Error> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .find(|d| cache_key(d) == Some(key))
            .and_then(|d| our_digest(d.digest())))
    }

    /// Remove `name`; whether it was there. Call with the lock held.
    pub fn untag(&self, name: &Reference) -> Result<bool, Error> {
        let mut index = self.index()?;
        let full = name.to_string();
        let before = index.manifests().len();
        let kept: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| !names(d, &full))
            .cloned()
            .collect();
        let removed = kept.len() != before;
        index.set_manifests(kept);
        if removed {
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), Error> {
        let path = self.dir.join("index.json");
        let bytes =
            serde_json::to_vec_pretty(index).map_err(|e| Error::Index {
                path: path.clone(),
                message: e.to_string(),
            })?;
        write_synced(self, &path, &bytes)
    }
}

/// A blob being written: hashed as it goes into a locked file of
/// `tmp/`, which [`commit`](BlobWriter::commit) renames into place if
/// its digest is the one expected, and dropping removes.
pub struct BlobWriter {
    store: Store,
    tmp: PathBuf,
    file: Option<File>,
    hasher: sha2::Sha256,
    len: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let n = file.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter {
    /// How many bytes were written.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256(self.hasher.clone())
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    // ANCHOR: put
    /// Check what was written (at most `limit` bytes, of digest
    /// `expected` if given), sync it and rename it into place: its
    /// digest, size, and whether it is new (present already: this copy
    /// is dropped).
    pub fn commit(
        mut self,
        expected: Option<&Digest>,
        limit: u64,
    ) -> Result<(Digest, u64, bool), Error> {
        let size = self.len;
        if size > limit {
            return Err(Error::TooBig {
                what: expected
                    .map_or_else(|| "being written".into(), Digest::to_string),
                limit,
            });
        }
        let hasher = std::mem::take(&mut self.hasher);
        let digest = Digest::from_sha256(hasher);
        if let Some(expected) = expected.filter(|e| **e != digest) {
            return Err(Error::Mismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let file = self.file.take().ok_or(Error::Missing(digest.clone()))?;
        file.sync_all().map_err(path_io::at("sync", &self.tmp))?;
        let path = self.store.blob_path(&digest);
        let new = !path.is_file();
        if new {
            fs::rename(&self.tmp, &path)
                .map_err(path_io::at("rename into place", &path))?;
            sync_dir(path.parent().unwrap_or(&self.store.dir))?;
        } else {
            fs::remove_file(&self.tmp)
                .map_err(path_io::at("remove", &self.tmp))?;
        }
        Ok((digest, size, new))
    }
    // ANCHOR_END: put
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Not committed, or failed: the temporary file goes (once
        // renamed into place there is nothing to remove).
        let _ = fs::remove_file(&self.tmp);
    }
}

/// The annotation of a build step's image: its cache key.
pub const BUILD_CACHE: &str = "io.berth.build.cache";

/// The build cache key descriptor `d` carries, if any.
pub fn cache_key(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(BUILD_CACHE))
        .map(String::as_str)
}

/// Whether descriptor `d` carries name `full`.
fn names(d: &Descriptor, full: &str) -> bool {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .is_some_and(|n| n == full)
}

/// A descriptor of an OCI manifest blob.
pub fn manifest_descriptor(digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(MediaType::ImageManifest, size, oci_digest(digest))
}

/// Our digest as oci-spec's.
pub fn oci_digest(digest: &Digest) -> oci_spec::image::Digest {
    digest
        .to_string()
        .parse()
        .unwrap_or_else(|_| unreachable!("a sha256 digest is a digest"))
}

/// oci-spec's digest as ours (`None`: not sha256).
pub fn our_digest(digest: &oci_spec::image::Digest) -> Option<Digest> {
    digest.to_string().parse().ok()
}

/// Replace `path` with `bytes`: a temporary file in `tmp/`, synced,
/// renamed over it, the directory synced.
fn write_synced(store: &Store, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = store.dir.join("tmp").join(super::tmp_name());
    let mut file = create_locked(&tmp, 0o644)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(path_io::at("write", &tmp)(e).into());
    }
    fs::rename(&tmp, path).map_err(path_io::at("replace", path))?;
    sync_dir(path.parent().unwrap_or(&store.dir))
}

/// Create the temporary file `path` (mode `mode`) and lock it, so that
/// no other process's [`Store::open`] sweeps it away while it is written.
fn create_locked(path: &Path, mode: u32) -> Result<File, Error> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(path_io::at("create", path))?;
    try_lock(&file).map_err(path_io::at("lock", path))?;
    Ok(file)
}

/// fsync(2) a directory, so that a rename in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    path_io::sync_dir(dir).map_err(Error::from)
}
