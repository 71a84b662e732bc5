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

/// `USER[:GROUP]` of `--chown`, numeric.
pub fn chown(spec: &str) -> Result<(u32, u32), Error> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, spec));
    match (user.parse(), group.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(Error::BadRequest(format!(
            "--chown={spec}: only numeric ids are supported"
        ))),
    }
}

/// Write to `out` the layer tar of `sources` (paths of the tree at
/// `root`) copied to `dest` (absolute): a file to `dest`, or into it if
/// it ends with `/` or there are several sources; a directory's
/// contents into `dest`. The directories above `dest` are made (mode
/// 0755, root's), and every entry belongs to `owner` if given. What
/// `ignore` excludes inside a source directory is left out too.
pub fn copy_layer(
    root: &Path,
    sources: &[String],
    dest: &str,
    owner: Option<(u32, u32)>,
    ignore: &Ignore,
    extract: bool,
    out: impl Write,
) -> Result<(), Error> {
    let into = dest.ends_with('/') || dest.ends_with("/.");
    let dest = ignore::clean(dest).join("/");
    let into = into || dest.is_empty() || sources.len() > 1;
    let into = into || !sources.is_empty() && dest_is_dir(sources, root);
    let internal = |e: std::io::Error| Error::Internal(format!("COPY: {e}"));
    let mut tar = tar::Builder::new(out);
    // The directories down to the destination (its own too, for
    // `into`), as Docker makes them.
    let parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty()).collect();
    let made = if into {
        parts.len()
    } else {
        parts.len().saturating_sub(1)
    };
    for n in 1..=made {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        let (uid, gid) = owner.filter(|_| n == made && into).unwrap_or((0, 0));
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        tar.append_data(
            &mut header,
            format!("{}/", parts[..n].join("/")),
            std::io::empty(),
        )
        .map_err(internal)?;
    }
    for source in sources {
        let stat =
            archive::stat(root, source, "the build context").map_err(|e| {
                match e {
                    Error::NotFound(_) => not_found(source),
                    e => e,
                }
            })?;
        let is_dir = stat["mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0);
        let mut bytes = Vec::new();
        let asked = if is_dir {
            format!("{source}/.")
        } else {
            source.clone()
        };
        archive::get(root, &asked, "the build context", &mut bytes)?;
        // ADD of a local archive (tar, plain, gzip or zstd): its files
        // go into the destination, not the archive itself.
        if extract
            && !is_dir
            && let Some(unpacked) = as_archive(&bytes)
        {
            add_archive(&mut tar, &unpacked, &dest).map_err(internal)?;
            continue;
        }
        let mut entries = tar::Archive::new(&bytes[..]);
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
            let mut header = entry.header().clone();
            if let Some((uid, gid)) = owner {
                header.set_uid(uid.into());
                header.set_gid(gid.into());
            }
            if header.entry_type().is_hard_link()
                && let Ok(Some(link)) = entry.link_name()
            {
                let link = link.to_string_lossy().into_owned();
                let rel = link.trim_start_matches("./");
                header.set_link_name(join(&dest, rel)).map_err(internal)?;
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(internal)?;
            tar.append_data(&mut header, &target, &data[..])
                .map_err(internal)?;
        }
    }
    tar.into_inner().map_err(internal)?;
    Ok(())
}

/// The uncompressed tar in the single file that `bytes` (a tar of one
/// file, as `archive::get` makes it) holds, if that file is a tar.
fn as_archive(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut outer = tar::Archive::new(bytes);
    let mut entry = outer.entries().ok()?.next()?.ok()?;
    let mut file = Vec::new();
    entry.read_to_end(&mut file).ok()?;
    let compression = crate::image::compression::Compression::detect(&file[..]);
    let limit = crate::image::snapshot::max_expansion(file.len() as u64);
    let mut tar = Vec::new();
    compression
        .decoder(&file[..])
        .take(limit)
        .read_to_end(&mut tar)
        .ok()?;
    // A tar's first header has a valid checksum; text does not.
    let header = tar.get(..512)?;
    let header = tar::Header::from_byte_slice(header);
    (header.cksum().ok()? == checksum(header.as_bytes())).then_some(tar)
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

/// Every entry of `archive` into the layer under `dest`; names that
/// climb (`..`) are left out.
fn add_archive(
    layer: &mut tar::Builder<impl Write>,
    archive: &[u8],
    dest: &str,
) -> std::io::Result<()> {
    for entry in tar::Archive::new(archive).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if path.split('/').any(|part| part == "..") {
            continue;
        }
        let rel = ignore::clean(&path).join("/");
        if rel.is_empty() {
            continue;
        }
        let mut header = entry.header().clone();
        if header.entry_type().is_hard_link()
            && let Some(link) = entry.link_name()?
        {
            let link = ignore::clean(&link.to_string_lossy()).join("/");
            header.set_link_name(join(dest, &link))?;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        layer.append_data(&mut header, join(dest, &rel), &data[..])?;
    }
    Ok(())
}

/// Whether a single source goes *into* the destination: a directory
/// source always copies its contents there.
fn dest_is_dir(sources: &[String], root: &Path) -> bool {
    sources.len() == 1
        && archive::stat(root, &sources[0], "the build context")
            .ok()
            .and_then(|s| s["mode"].as_u64())
            .is_some_and(|m| m & (1 << 31) != 0)
}

fn join(dest: &str, rel: &str) -> String {
    if dest.is_empty() {
        rel.to_owned()
    } else {
        format!("{dest}/{rel}")
    }
}
