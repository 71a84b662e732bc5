//! The build context: the directory the client sent (a tar, unpacked by
//! step 7's unpacker), less what `.dockerignore` excludes, and the
//! layers `COPY` and `ADD` make of it.
//!
//! Every file is read from the context (or from an earlier stage's root)
//! by the same code as `docker cp` ([`crate::daemon::archive`]): paths
//! resolved inside the root with `openat2(RESOLVE_IN_ROOT)`, trees
//! walked with `O_NOFOLLOW`. A context's symlink to `/etc` copies the
//! symlink, never the host's `/etc`.

use std::io::{Read, Write};
use std::path::Path;

use super::ignore::{self, Ignore};
use crate::daemon::archive;
use crate::daemon::containers::Error;

/// The context's paths (relative, `/`-separated) that `pattern`
/// names: itself, or for a pattern with `*`, `?` or `[`, every path of
/// the same depth that matches; none excluded by `ignore`.
pub fn expand(
    root: &Path,
    pattern: &str,
    ignore: &Ignore,
) -> Result<Vec<String>, Error> {
    let parts = ignore::clean(pattern);
    let wild = pattern.contains(['*', '?', '[']);
    let not_found = || not_found(pattern);
    if !wild {
        let path = parts.join("/");
        if !path.is_empty() && ignore.excludes(&path) {
            return Err(not_found());
        }
        return Ok(vec![if path.is_empty() { ".".into() } else { path }]);
    }
    let mut found = Vec::new();
    walk(root, "", parts.len(), &mut found);
    let mut out: Vec<String> = found
        .into_iter()
        .filter(|path| {
            let components: Vec<String> =
                path.split('/').map(str::to_owned).collect();
            ignore::matches(&parts, &components) && !ignore.excludes(path)
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(not_found());
    }
    Ok(out)
}

/// Docker's words for a source that is not there (or is ignored).
fn not_found(source: &str) -> Error {
    Error::BadRequest(format!(
        "COPY failed: file not found in build context or excluded by .dockerignore: stat {source}: file does not exist"
    ))
}

/// The paths under `dir` (relative to the root, as `prefix`) down to
/// `depth` components, without following symlinks.
fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if depth > 1 && entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&entry.path(), &path, depth - 1, out);
        }
        out.push(path);
    }
}

/// `USER[:GROUP]` of `--chown`: numbers, or names found in the image's
/// `passwd` and `groups` files (their text, if the image has them). A
/// user alone gives its number as the group too, as in Docker.
pub fn chown(
    spec: &str,
    passwd: Option<&str>,
    groups: Option<&str>,
) -> Result<(u32, u32), Error> {
    let unknown = || {
        Error::BadRequest(format!(
            "unable to convert uid/gid chown string to host mapping: {spec}: no such user or group in the image"
        ))
    };
    // `name:x:ID:…` lines: the ID of `name`.
    let find = |file: Option<&str>, name: &str| -> Option<u32> {
        file?.lines().find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != name {
                return None;
            }
            fields.nth(1)?.parse().ok()
        })
    };
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let uid = match user.parse() {
        Ok(uid) => uid,
        Err(_) => find(passwd, user).ok_or_else(unknown)?,
    };
    let gid = match group {
        None => uid,
        Some(group) => match group.parse() {
            Ok(gid) => gid,
            Err(_) => find(groups, group).ok_or_else(unknown)?,
        },
    };
    Ok((uid, gid))
}

/// Whether `--chown`'s `spec` is numbers only (nothing to look up).
pub fn numeric(spec: &str) -> bool {
    spec.split(':').all(|part| part.parse::<u32>().is_ok())
}

/// Write to `out` a tar of `sources` (paths of the tree at `root`),
/// every name relative to `/`, to be unpacked into a root where `dest`
/// (absolute) is a directory if `into`: each file to `dest/NAME`, each
/// directory's contents into `dest`; else the one file to `dest`
/// itself. Every entry belongs to `owner` (root by default, as in
/// Docker); what `ignore` excludes inside a source directory is left
/// out; with `extract` (ADD), a local archive's files go instead of it,
/// read from `scratch` (a file of the build's own).
#[allow(clippy::too_many_arguments)]
pub fn sources_tar(
    root: &Path,
    sources: &[String],
    dest: &str,
    into: bool,
    owner: (u32, u32),
    ignore: &Ignore,
    extract: bool,
    scratch: &Path,
    out: impl Write,
) -> Result<(), Error> {
    let dest = ignore::clean(dest).join("/");
    let internal = |e: std::io::Error| Error::Internal(format!("COPY: {e}"));
    let mut tar = tar::Builder::new(out);
    for source in sources {
        let stat =
            archive::stat(root, source, "the build context").map_err(|e| {
                match e {
                    Error::NotFound(_) => not_found(source),
                    e => e,
                }
            })?;
        let is_dir = stat["mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0);
        let asked = if is_dir {
            format!("{source}/.")
        } else {
            source.clone()
        };
        // The source as a tar, streamed from a thread through a pipe.
        let (reader, writer) = std::io::pipe().map_err(internal)?;
        let walked_root = root.to_owned();
        let walker = std::thread::spawn(move || {
            archive::get(&walked_root, &asked, "the build context", writer)
        });
        let mut entries = tar::Archive::new(reader);
        let mut copied: Vec<String> = Vec::new();
        let result = (|| -> Result<(), Error> {
            for entry in entries.entries().map_err(internal)? {
                let mut entry = entry.map_err(internal)?;
                let name = entry
                    .path()
                    .map_err(internal)?
                    .to_string_lossy()
                    .into_owned();
                let rel = name.trim_start_matches("./").trim_end_matches('/');
                let target = if is_dir {
                    if rel.is_empty() || rel == "." {
                        continue;
                    }
                    if ignore.excludes(&join(source, rel)) {
                        continue;
                    }
                    join(&dest, rel)
                } else if into {
                    join(&dest, rel)
                } else {
                    dest.clone()
                };
                if extract && !is_dir && entry.header().entry_type().is_file() {
                    spill(&mut entry, scratch).map_err(internal)?;
                    let added = add_archive(&mut tar, scratch, &dest, owner)
                        .map_err(internal)?;
                    if !added {
                        let size =
                            std::fs::metadata(scratch).map_err(internal)?.len();
                        let mut header = fresh(entry.header(), owner, size);
                        let file =
                            std::fs::File::open(scratch).map_err(internal)?;
                        tar.append_data(&mut header, &target, file)
                            .map_err(internal)?;
                    }
                    let _ = std::fs::remove_file(scratch);
                    continue;
                }
                copy_entry(&mut tar, &mut entry, &target, owner, |link| {
                    let link = link.trim_start_matches("./");
                    let linked = join(&dest, link);
                    copied.contains(&linked).then_some(linked)
                })
                .map_err(internal)?;
                copied.push(target);
            }
            Ok(())
        })();
        // The walker ends when its reader is gone.
        drop(entries);
        let walked = walker
            .join()
            .map_err(|_| Error::Internal("COPY: the walker failed".into()))?;
        result?;
        walked?;
    }
    tar.into_inner().map_err(internal)?;
    Ok(())
}

/// A header made anew from `old` (a hostile one's size or extensions
/// never reach the layer): its kind, mode and time, `owner`'s ids, and
/// `size`.
fn fresh(old: &tar::Header, owner: (u32, u32), size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(old.entry_type());
    header.set_mode(old.mode().unwrap_or(0o644) & 0o7777);
    header.set_mtime(old.mtime().unwrap_or(0));
    header.set_uid(owner.0.into());
    header.set_gid(owner.1.into());
    header.set_size(size);
    header
}

/// Copy one entry as `target`: regular files streamed, directories,
/// symlinks, and hard links whose first name `linked` finds among what
/// was copied; anything else (devices, sparse files) left out.
fn copy_entry(
    tar: &mut tar::Builder<impl Write>,
    entry: &mut tar::Entry<impl Read>,
    target: &str,
    owner: (u32, u32),
    linked: impl Fn(&str) -> Option<String>,
) -> std::io::Result<()> {
    let kind = entry.header().entry_type();
    if kind == tar::EntryType::Regular || kind == tar::EntryType::Continuous {
        let mut header = fresh(entry.header(), owner, entry.size());
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, target, entry)
    } else if kind.is_dir() {
        let mut header = fresh(entry.header(), owner, 0);
        tar.append_data(&mut header, format!("{target}/"), std::io::empty())
    } else if kind.is_symlink() {
        let Some(link) = entry.link_name()? else {
            return Ok(());
        };
        let mut header = fresh(entry.header(), owner, 0);
        tar.append_link(&mut header, target, link)
    } else if kind.is_hard_link() {
        let Some(link) = entry.link_name()? else {
            return Ok(());
        };
        match linked(&link.to_string_lossy()) {
            Some(first) => {
                let mut header = fresh(entry.header(), owner, 0);
                tar.append_link(&mut header, target, first)
            }
            None => Ok(()),
        }
    } else {
        Ok(())
    }
}

/// Write the entry's data to `path`.
fn spill(entry: &mut impl Read, path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    std::io::copy(entry, &mut file)?;
    Ok(())
}

/// If `file` is a tar (plain, gzip or zstd: its first block has a valid
/// checksum once decompressed), copy its entries under `dest` (names
/// that climb left out) and say so.
fn add_archive(
    layer: &mut tar::Builder<impl Write>,
    file: &Path,
    dest: &str,
    owner: (u32, u32),
) -> std::io::Result<bool> {
    let open = || -> std::io::Result<Box<dyn Read>> {
        let mut reader = std::io::BufReader::new(std::fs::File::open(file)?);
        let compression = crate::image::compression::Compression::detect(
            std::io::BufRead::fill_buf(&mut reader)?,
        );
        let size = std::fs::metadata(file)?.len();
        Ok(Box::new(
            compression
                .decoder(reader)
                .take(crate::image::snapshot::max_expansion(size)),
        ))
    };
    let mut head = [0u8; 512];
    if open()?.read_exact(&mut head).is_err() {
        return Ok(false);
    }
    let header = tar::Header::from_byte_slice(&head);
    if header.cksum().ok() != Some(checksum(&head)) {
        return Ok(false);
    }
    let mut added: Vec<String> = Vec::new();
    for entry in tar::Archive::new(open()?).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if path.split('/').any(|part| part == "..") {
            continue;
        }
        let rel = ignore::clean(&path).join("/");
        if rel.is_empty() {
            continue;
        }
        let target = join(dest, &rel);
        copy_entry(layer, &mut entry, &target, owner, |link| {
            let link = ignore::clean(link).join("/");
            let linked = join(dest, &link);
            added.contains(&linked).then_some(linked)
        })?;
        added.push(target);
    }
    Ok(true)
}

/// The ustar checksum of a header block (its checksum field as spaces).
fn checksum(block: &[u8; 512]) -> u32 {
    block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum()
}

fn join(dest: &str, rel: &str) -> String {
    if dest.is_empty() {
        rel.to_owned()
    } else {
        format!("{dest}/{rel}")
    }
}
