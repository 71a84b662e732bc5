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
