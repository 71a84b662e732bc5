//! One error for "an operation on this file failed": what was done, where,
//! and the OS error. Every module of the crate that touches files names
//! its failures this way, so the messages read alike:
//! `cannot create /var/lib/berth/image/tmp: Permission denied`.

use std::io;
use std::path::{Path, PathBuf};

/// A file operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {path}")]
pub struct PathIo {
    /// What was being done (`create`, `rename into place`, …).
    pub what: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// For `map_err`: the OS error of `what` on `path` (`?` then turns it
/// into the caller's error, which holds a [`PathIo`]).
pub fn at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PathIo {
    let path = path.to_owned();
    move |source| PathIo { what, path, source }
}

/// fsync(2) the directory `dir`, so that a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), PathIo> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at("sync", dir))
}

/// Replace `path` with `bytes` so that a reader, or a process killed at
/// any moment, sees the old content or the new and never half of it: a
/// temporary file beside it (mode `mode`, named after this process so two
/// writers never share one), synced, renamed over `path`, the directory
/// synced. On failure the temporary file is removed.
pub fn replace_durably(
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), PathIo> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A dead process of the same pid may have left one (or anyone a
    // symlink): a file of our own, created now, with our mode.
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(at("write", &tmp))
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(at("replace", path))
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_replaced_file_has_its_mode_whatever_was_left_behind() {
        let dir = std::env::temp_dir()
            .join(format!("berth-path-io-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        // A leftover temporary file, world-readable, and a symlink
        // where the next one would go.
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(dir.join("elsewhere"), &tmp).unwrap();
        replace_durably(&path, b"secret", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join("elsewhere").exists());
        std::fs::write(&tmp, b"old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        replace_durably(&path, b"again", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
