//! Exporting a container's changes — its overlay upper directory — as a
//! new layer tar: the reverse of [`super::unpack`].
//!
//! The upper directory holds exactly what the container changed, in
//! overlayfs's own words: new and modified files as they are, a deleted
//! file as a character device 0/0, a directory whose lower contents were
//! replaced as `trusted.overlay.opaque=y`. The image spec's words for the
//! last two are `.wh.NAME` and `.wh..wh..opq`. Hard links inside the upper
//! directory stay hard links. Entries are written in name order, so the
//! same changes give the same tar.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::unpack::{
    OPAQUE_MARKER, OPAQUE_XATTR, USER_OPAQUE_XATTR, WHITEOUT_PREFIX,
};

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the upper directory or writing the tar failed.
    #[error("cannot export {path:?}")]
    Io {
        /// The file being exported.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Files, directories, links and deletions (`.wh.NAME`) written; opaque
    /// markers are counted in `whiteouts` only.
    pub entries: u64,
    /// Deletions (`.wh.NAME`) and opaque markers written.
    pub whiteouts: u64,
}

/// Whether `path` carries `trusted.overlay.opaque=y` (or, rootless,
/// `user.overlay.opaque=y`).
fn is_opaque(path: &Path) -> bool {
    [OPAQUE_XATTR, USER_OPAQUE_XATTR]
        .iter()
        .any(|name| has_opaque_xattr(path, name))
}

fn has_opaque_xattr(path: &Path, name: &str) -> bool {
    let (Ok(path), Ok(name)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new(name),
    ) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: NUL-terminated strings; `value` is valid for its length.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    len == 1 && value[0] == b'y'
}

/// An empty regular file entry named `name` (a whiteout or opaque marker).
fn marker<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &Path,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    builder.append_data(&mut header, name, io::empty())
}

/// Host ids to record as other ids in the layer: a rootless container's
/// files belong, on the host, to the user who ran it; in the layer they
/// must belong to the container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The host uid (and what it becomes).
    pub uid: (u32, u32),
    /// The host gid (and what it becomes).
    pub gid: (u32, u32),
}

struct Exporter<W: Write> {
    builder: tar::Builder<W>,
    summary: Summary,
    /// (device, inode) of files with several links → their first path.
    links: HashMap<(u64, u64), PathBuf>,
    ids: Option<IdMap>,
}

impl<W: Write> Exporter<W> {
    /// A header for `meta`, with its owner mapped.
    fn header(&self, meta: &fs::Metadata) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        if let Some(ids) = self.ids {
            if meta.uid() == ids.uid.0 {
                header.set_uid(u64::from(ids.uid.1));
            }
            if meta.gid() == ids.gid.0 {
                header.set_gid(u64::from(ids.gid.1));
            }
        }
        header
    }

    /// One file, directory, symlink or node, with its metadata.
    fn append(
        &mut self,
        full: &Path,
        rel: &Path,
        meta: &fs::Metadata,
    ) -> io::Result<()> {
        let mut header = self.header(meta);
        let kind = meta.file_type();
        if kind.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            let target = fs::read_link(full)?;
            self.builder.append_link(&mut header, rel, target)
        } else if kind.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = fs::File::open(full)?;
            self.builder.append_data(&mut header, rel, file)
        } else {
            if kind.is_dir() {
                header.set_entry_type(tar::EntryType::Directory);
            } else if kind.is_char_device() || kind.is_block_device() {
                let rdev = meta.rdev();
                header.set_device_major(libc::major(rdev))?;
                header.set_device_minor(libc::minor(rdev))?;
            }
            header.set_size(0);
            self.builder.append_data(&mut header, rel, io::empty())
        }
    }

    // ANCHOR: visit
    fn visit(&mut self, upper: &Path, relative: &Path) -> Result<(), Error> {
        let dir = upper.join(relative);
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(failed(&dir))?
            .collect::<Result<_, _>>()
            .map_err(failed(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let full = entry.path();
            let rel = relative.join(&name);
            let meta = fs::symlink_metadata(&full).map_err(failed(&full))?;
            let kind = meta.file_type();
            if kind.is_char_device() && meta.rdev() == 0 {
                let mut hidden = WHITEOUT_PREFIX.as_bytes().to_vec();
                hidden.extend_from_slice(name.as_bytes());
                let whiteout =
                    relative.join(std::ffi::OsStr::from_bytes(&hidden));
                marker(&mut self.builder, &whiteout).map_err(failed(&full))?;
                self.summary.whiteouts += 1;
            } else if kind.is_file() && meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key).cloned() {
                    let mut header = self.header(&meta);
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    self.builder
                        .append_link(&mut header, &rel, first)
                        .map_err(failed(&full))?;
                } else {
                    self.links.insert(key, rel.clone());
                    self.append(&full, &rel, &meta).map_err(failed(&full))?;
                }
            } else {
                self.append(&full, &rel, &meta).map_err(failed(&full))?;
            }
            self.summary.entries += 1;
            if kind.is_dir() {
                if is_opaque(&full) {
                    marker(&mut self.builder, &rel.join(OPAQUE_MARKER))
                        .map_err(failed(&full))?;
                    self.summary.whiteouts += 1;
                }
                self.visit(upper, &rel)?;
            }
        }
        Ok(())
    }
    // ANCHOR_END: visit
}

// ANCHOR: commit
/// Write the changes in the overlay upper directory `upper` to `out` as a
/// layer tar (plain; the caller compresses if it wants), owners mapped by
/// `ids` (rootless).
pub fn commit<W: Write>(
    upper: &Path,
    out: W,
    ids: Option<IdMap>,
) -> Result<(W, Summary), Error> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let mut exporter = Exporter {
        builder,
        summary: Summary::default(),
        links: HashMap::new(),
        ids,
    };
    exporter.visit(upper, Path::new(""))?;
    let out = exporter.builder.into_inner().map_err(|source| Error::Io {
        path: upper.to_owned(),
        source,
    })?;
    Ok((out, exporter.summary))
}
// ANCHOR_END: commit
