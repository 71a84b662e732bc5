//! `berth cp`: files between a container and this machine, as `docker cp`
//! copies them. The daemon moves tars (`HEAD`/`GET`/`PUT
//! /containers/ID/archive`); the naming rules are the client's:
//!
//! | source             | destination            | result                                 |
//! |--------------------|------------------------|----------------------------------------|
//! | file or directory  | an existing directory  | copied into it, under its own name     |
//! | file               | an existing file       | replaces it                            |
//! | file or directory  | a new name             | copied as that name (its parent exists)|
//! | `DIR/.`            | a directory            | the directory's contents               |
//! | `-`                | a container directory  | stdin's tar unpacked there             |
//! | container path     | `-`                    | its tar on stdout                      |
//!
//! Both ways stream: the tar is written (or read) by a blocking thread
//! while the HTTP body carries it.

use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters as q;
use futures_util::StreamExt;

use super::{Failure, format};
use crate::channel_io::{ChannelReader, ChannelWriter};

/// Go's `os.ModeDir`, as the daemon's path stat carries it.
const MODE_DIR: u32 = 1 << 31;
/// Go's `os.ModeSymlink`.
const MODE_SYMLINK: u32 = 1 << 27;

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Side {
    /// A path of this machine (`-`: stdin or stdout).
    Local(PathBuf),
    /// A path in a container.
    Container(String, String),
}

/// `CONTAINER:PATH` or a local path, as docker reads it: a path that
/// starts with `/` or `.` is local, whatever colons follow.
pub fn side(arg: &str) -> Side {
    if arg.starts_with('/') || arg.starts_with('.') {
        return Side::Local(arg.into());
    }
    match arg.split_once(':') {
        Some((container, path)) if !container.is_empty() => {
            Side::Container(container.to_owned(), path.to_owned())
        }
        _ => Side::Local(arg.into()),
    }
}

/// The last name of `path` (`.` for `DIR/.`), as the tar names it.
fn base(path: &str) -> String {
    if path.ends_with("/.") || path == "." {
        return ".".into();
    }
    Path::new(path)
        .file_name()
        .map_or(".".into(), |n| n.to_string_lossy().into_owned())
}

fn io_failure(what: &str, path: &Path) -> impl Fn(std::io::Error) -> Failure {
    let text = format!("{what} {}", path.display());
    move |e| Failure::engine(format!("{text}: {e}"))
}

/// `berth cp SRC DST` (one of them `CONTAINER:PATH`); `follow`: a
/// symlink source is copied as what it points to (`-L`).
pub async fn cp(
    docker: &Docker,
    src: &str,
    dst: &str,
    follow: bool,
) -> Result<u8, Failure> {
    let copied = match (side(src), side(dst)) {
        (Side::Container(container, path), Side::Local(to)) => {
            from_container(docker, &container, &path, &to, follow).await?
        }
        (Side::Local(from), Side::Container(container, path)) => {
            to_container(docker, &from, &container, &path, follow).await?
        }
        (Side::Container(..), Side::Container(..)) => {
            return Err(Failure::engine(
                "copying between containers is not supported",
            ));
        }
        (Side::Local(_), Side::Local(_)) => {
            return Err(Failure::engine(
                "must specify at least one container source",
            ));
        }
    };
    use std::io::IsTerminal;
    if dst != "-" && std::io::stderr().is_terminal() {
        eprintln!("Successfully copied {} to {dst}", format::size(copied));
    }
    Ok(0)
}

/// Copy the container's `path` to `to`; the bytes of tar received.
async fn from_container(
    docker: &Docker,
    container: &str,
    path: &str,
    to: &Path,
    follow: bool,
) -> Result<i64, Failure> {
    let info = |path: String| async move {
        let options = q::ContainerArchiveInfoOptions { path: path.clone() };
        match docker
            .get_container_archive_info(container, Some(options))
            .await
        {
            // A HEAD answer has no body to carry the daemon's message.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }) => Err(Failure::engine(format!(
                "Error response from daemon: Could not find the file {path} in container {container}"
            ))),
            other => other.map_err(Failure::from),
        }
    };
    let mut path = path.to_owned();
    let mut stat = info(path.clone()).await?;
    if follow && stat.file_mode & MODE_SYMLINK != 0 {
        path = stat.link_target.clone();
        stat = info(path.clone()).await?;
    }
    let is_dir = stat.file_mode & MODE_DIR != 0;
    let options = q::DownloadFromContainerOptions { path: path.clone() };
    let mut stream = docker.download_from_container(container, Some(options));
    if to == Path::new("-") {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            total += chunk.len() as i64;
            out.write_all(&chunk).map_err(io_failure("write", to))?;
        }
        out.flush().map_err(io_failure("write", to))?;
        return Ok(total);
    }
    let name = base(&path);
    // Where the tar is unpacked, and what then becomes `to`.
    let (into, rename) = match std::fs::metadata(to) {
        Ok(meta) if meta.is_dir() => (to.to_owned(), None),
        Ok(_) if is_dir => {
            return Err(Failure::engine(format!(
                "cannot copy a directory to the file {}",
                to.display()
            )));
        }
        Ok(_) => (scratch_dir(to)?, Some(to.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if to.to_string_lossy().ends_with('/') && !is_dir {
                return Err(Failure::engine(format!(
                    "destination directory {} does not exist",
                    to.display()
                )));
            }
            (scratch_dir(to)?, Some(to.to_owned()))
        }
        Err(e) => return Err(io_failure("stat", to)(e)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let target = into.clone();
    let unpacker = tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(ChannelReader::new(rx));
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        // `unpack` keeps every entry inside `target` (no `..`, no
        // absolute names, no writing through a symlink it made).
        archive.unpack(&target)
    });
    let mut total = 0;
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                total += chunk.len() as i64;
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(Failure::from(e));
                break;
            }
        }
    }
    drop(tx);
    // No early return from here: the scratch directory goes below
    // whatever happened.
    let unpacked = unpacker.await;
    let finished = match (failure, unpacked) {
        (Some(failure), _) => Err(failure),
        (None, Err(e)) => Err(Failure::engine(format!("unpack: {e}"))),
        (None, Ok(Err(e))) => Err(io_failure("unpack into", &into)(e)),
        (None, Ok(Ok(()))) => Ok(total),
    };
    if let Some(to) = rename {
        let made = if name == "." {
            into.clone()
        } else {
            into.join(&name)
        };
        let moved = finished.and_then(|total| {
            std::fs::rename(&made, &to)
                .map_err(io_failure("rename into", &to))
                .map(|()| total)
        });
        let _ = std::fs::remove_dir_all(&into);
        return moved;
    }
    finished
}

/// A new empty directory beside `to`, for unpacking before the rename.
fn scratch_dir(to: &Path) -> Result<PathBuf, Failure> {
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut bytes = [0u8; 6];
    crate::daemon::containers::random_id()
        .map(|id| bytes.copy_from_slice(&id.as_bytes()[..6]))
        .map_err(|e| Failure::engine(e.to_string()))?;
    let dir =
        parent.join(format!(".berth-cp-{}", String::from_utf8_lossy(&bytes)));
    std::fs::create_dir(&dir).map_err(io_failure("create", &dir))?;
    Ok(dir)
}

/// Copy `from` into the container's `path`; the bytes of tar sent.
async fn to_container(
    docker: &Docker,
    from: &Path,
    container: &str,
    path: &str,
    follow: bool,
) -> Result<i64, Failure> {
    let stdin = from == Path::new("-");
    let meta = if stdin {
        None
    } else if follow {
        Some(std::fs::metadata(from).map_err(io_failure("stat", from))?)
    } else {
        Some(
            std::fs::symlink_metadata(from)
                .map_err(io_failure("lstat", from))?,
        )
    };
    let src_is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
    let options = q::ContainerArchiveInfoOptions {
        path: path.to_owned(),
    };
    let stat = match docker
        .get_container_archive_info(container, Some(options))
        .await
    {
        Ok(stat) => Some(stat),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }) => None,
        Err(e) => return Err(e.into()),
    };
    // The directory the tar is unpacked in, and the name of its top entry.
    let (dir, name) = match &stat {
        Some(s) if s.file_mode & MODE_DIR != 0 => {
            (path.to_owned(), base(&from.to_string_lossy()))
        }
        _ if stdin => {
            return Err(Failure::engine(format!(
                "destination \"{container}:{path}\" must be a directory"
            )));
        }
        Some(_) if src_is_dir => {
            return Err(Failure::engine(format!(
                "cannot copy a directory to the file {container}:{path}"
            )));
        }
        None if path.ends_with('/') => {
            return Err(Failure::engine(format!(
                "destination directory {container}:{path} does not exist"
            )));
        }
        _ => {
            let target = Path::new(path);
            let parent = target
                .parent()
                .map_or("/".into(), |p| p.to_string_lossy().into_owned());
            let parent = if parent.is_empty() {
                "/".into()
            } else {
                parent
            };
            (parent, base(path))
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let source = from.to_owned();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut out = ChannelWriter { tx };
        if stdin {
            std::io::copy(&mut std::io::stdin().lock(), &mut out)?;
            return Ok(());
        }
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(follow);
        if src_is_dir {
            builder.append_dir_all(&name, &source)?;
        } else {
            builder.append_path_with_name(&source, &name)?;
        }
        builder.into_inner().map(drop)
    });
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let counter = sent.clone();
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| {
            chunk.map(|c: bytes::Bytes| {
                counter.fetch_add(
                    c.len() as i64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                Ok::<_, std::io::Error>(c)
            })
        })
    });
    let options = q::UploadToContainerOptions {
        path: dir,
        ..Default::default()
    };
    let uploaded = docker
        .upload_to_container(
            container,
            Some(options),
            bollard::body_try_stream(body),
        )
        .await;
    let written = writer
        .await
        .map_err(|e| Failure::engine(format!("archive: {e}")))?;
    uploaded?;
    written.map_err(io_failure("archive", from))?;
    Ok(sent.load(std::sync::atomic::Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_read_as_docker_reads_them() {
        assert_eq!(
            side("web:/etc/hosts"),
            Side::Container("web".into(), "/etc/hosts".into())
        );
        assert_eq!(side("./a:b"), Side::Local("./a:b".into()));
        assert_eq!(side("/tmp/a:b"), Side::Local("/tmp/a:b".into()));
        assert_eq!(side("file"), Side::Local("file".into()));
        assert_eq!(side("-"), Side::Local("-".into()));
        assert_eq!(base("/etc/."), ".");
        assert_eq!(base("/etc/"), "etc");
        assert_eq!(base("hosts"), "hosts");
    }
}
