//! The container's output, kept in Docker's `json-file` format: one JSON
//! object per line of output,
//!
//! ```text
//! {"log":"hello\n","stream":"stdout","time":"2026-12-04T14:05:06.123456789Z"}
//! ```
//!
//! so that `docker logs` semantics (tail, since, timestamps, follow) are a
//! matter of reading lines back. A line longer than [`MAX_LINE`] is cut
//! into records without the final newline, as Docker cuts it; output that
//! ends without a newline is a last record without one.
//!
//! The file is capped: when a record would take it past `max_size`, it is
//! renamed to `json.log.1` (the older ones shifted up, the oldest beyond
//! `max_files` dropped) and a new one begun — Docker's `max-size` and
//! `max-file` options.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::protocol::Stream;
use crate::path_io::{self, PathIo};

/// The log file's name in the shim's directory.
pub const FILE: &str = "json.log";

/// The longest piece of a line one record holds (Docker's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// One record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The output, its newline included if it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the shim read it (RFC 3339, UTC, nanoseconds).
    pub time: String,
}

/// How big the log may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The size at which the file is rotated (bytes; at least one record
    /// is always written to a fresh file, however long).
    pub max_size: u64,
    /// How many files are kept, the current one included (at least 1:
    /// with 1 the file is emptied when full).
    pub max_files: u32,
}

/// Appends records to `DIR/json.log`, rotating it.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    limits: Limits,
    /// What was read of each stream but not yet ended by a newline.
    partial: [Vec<u8>; 2],
}

fn open(path: &Path) -> Result<File, PathIo> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(path_io::at("open", path))
}

impl Writer {
    /// Open (or go on with) the log in `dir`.
    pub fn open(dir: &Path, limits: Limits) -> Result<Writer, PathIo> {
        let path = dir.join(FILE);
        let file = open(&path)?;
        let size = file.metadata().map_err(path_io::at("stat", &path))?.len();
        Ok(Writer {
            path,
            file,
            size,
            limits: Limits {
                max_files: limits.max_files.max(1),
                ..limits
            },
            partial: [Vec::new(), Vec::new()],
        })
    }

    // ANCHOR: write
    /// Add `bytes` read from `stream` at `time`: every complete line
    /// becomes a record, the rest waits for more (or for [`Writer::end`]).
    pub fn write(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        time: SystemTime,
    ) -> Result<(), PathIo> {
        let slot = usize::from(stream == Stream::Stderr);
        let mut pending = std::mem::take(&mut self.partial[slot]);
        pending.extend_from_slice(bytes);
        let mut rest = &pending[..];
        let result = loop {
            let cut = match rest.iter().position(|&b| b == b'\n') {
                Some(newline) if newline < MAX_LINE => newline + 1,
                _ if rest.len() >= MAX_LINE => MAX_LINE,
                _ => break Ok(()),
            };
            if let Err(e) = self.record(stream, &rest[..cut], time) {
                break Err(e);
            }
            rest = &rest[cut..];
        };
        self.partial[slot] = rest.to_vec();
        result
    }
    // ANCHOR_END: write

    /// The stream has ended: what is left of its last line becomes a
    /// record of its own.
    pub fn end(
        &mut self,
        stream: Stream,
        time: SystemTime,
    ) -> Result<(), PathIo> {
        let slot = usize::from(stream == Stream::Stderr);
        let rest = std::mem::take(&mut self.partial[slot]);
        if rest.is_empty() {
            return Ok(());
        }
        self.record(stream, &rest, time)
    }

    fn record(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        time: SystemTime,
    ) -> Result<(), PathIo> {
        let entry = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: stream.name().to_owned(),
            time: crate::time::rfc3339(time),
        };
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.limits.max_size
        {
            self.rotate()?;
        }
        self.file
            .write_all(&line)
            .map_err(path_io::at("write", &self.path))?;
        self.size += len;
        Ok(())
    }

    /// `json.log.N-1` → `json.log.N`, …, `json.log` → `json.log.1`, and a
    /// new, empty `json.log`.
    fn rotate(&mut self) -> Result<(), PathIo> {
        let kept = self.limits.max_files - 1;
        let numbered = |n: u32| self.path.with_extension(format!("log.{n}"));
        if kept == 0 {
            self.file
                .set_len(0)
                .map_err(path_io::at("truncate", &self.path))?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..kept).rev() {
            let from = numbered(n);
            if from.exists() {
                let to = numbered(n + 1);
                fs::rename(&from, &to).map_err(path_io::at("rename", &from))?;
            }
        }
        fs::rename(&self.path, numbered(1))
            .map_err(path_io::at("rename", &self.path))?;
        self.file = open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The log files of `dir`, oldest first: `json.log.N` … `json.log.1`,
/// `json.log`.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let current = dir.join(FILE);
    let mut numbered: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix(FILE)?.strip_prefix('.')?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> =
        numbered.into_iter().map(|(_, p)| p).collect();
    files.push(current);
    files
}

/// Every record kept in `dir`, oldest first. A line that is not a record
/// (a torn last line after a crash) is skipped.
pub fn read(dir: &Path) -> Result<Vec<Entry>, PathIo> {
    Follower::open(dir).map(|(_, backlog)| backlog)
}

/// Reads a container's log as it grows, across rotations (`docker logs
/// --follow`): the current file is kept open and read on from where it
/// was; when `json.log` is another file than the one open (the shim
/// rotated it), the old one is read to its end and the new one opened.
///
/// Simplification: a rotation between [`Follower::open`]'s listing of
/// the rotated files and its opening of the current one loses the
/// records of the file rotated away meanwhile (Docker's follower has the
/// same window).
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64)>,
    partial: Vec<u8>,
}

fn inode(file: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map_or(0, |m| m.ino())
}

fn parse_lines(partial: &mut Vec<u8>, bytes: &[u8], out: &mut Vec<Entry>) {
    partial.extend_from_slice(bytes);
    let Some(last) = partial.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    let rest = partial.split_off(last + 1);
    for line in partial.split(|&b| b == b'\n') {
        if let Ok(entry) = serde_json::from_slice(line) {
            out.push(entry);
        }
    }
    *partial = rest;
}

impl Follower {
    /// Start following `dir`'s log: every record kept so far (the
    /// backlog), and the follower for what comes next.
    pub fn open(dir: &Path) -> Result<(Follower, Vec<Entry>), PathIo> {
        let path = dir.join(FILE);
        let mut backlog = Vec::new();
        for rotated in files(dir).iter().filter(|f| **f != path) {
            match fs::read(rotated) {
                Ok(bytes) => parse_lines(&mut Vec::new(), &bytes, &mut backlog),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(path_io::at("read", rotated)(e)),
            }
        }
        let mut follower = Follower {
            path,
            file: None,
            partial: Vec::new(),
        };
        backlog.extend(follower.poll()?);
        Ok((follower, backlog))
    }

    /// The records written since the last call.
    pub fn poll(&mut self) -> Result<Vec<Entry>, PathIo> {
        use std::io::Read;
        let mut out = Vec::new();
        loop {
            if self.file.is_none() {
                match File::open(&self.path) {
                    Ok(file) => {
                        let ino = inode(&file);
                        self.file = Some((file, ino));
                    }
                    // No output yet.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Ok(out);
                    }
                    Err(e) => return Err(path_io::at("open", &self.path)(e)),
                }
            }
            let Some((file, ino)) = &mut self.file else {
                return Ok(out);
            };
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(path_io::at("read", &self.path))?;
            parse_lines(&mut self.partial, &bytes, &mut out);
            let rotated = fs::metadata(&self.path).is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino() != *ino
            });
            if !rotated {
                return Ok(out);
            }
            // Read to its end above; now the new file, from its start.
            self.file = None;
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("berth-logs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    const BIG: Limits = Limits {
        max_size: u64::MAX,
        max_files: 1,
    };

    #[test]
    fn lines_become_records_split_across_reads_and_per_stream() {
        let dir = dir("lines");
        let mut log = Writer::open(&dir, BIG).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1);
        log.write(Stream::Stdout, b"hel", at).unwrap();
        log.write(Stream::Stderr, b"oops\n", at).unwrap();
        log.write(Stream::Stdout, b"lo\nwor", at).unwrap();
        log.end(Stream::Stdout, at).unwrap();
        log.end(Stream::Stderr, at).unwrap();
        let got: Vec<(String, String)> = read(&dir)
            .unwrap()
            .into_iter()
            .map(|e| (e.stream, e.log))
            .collect();
        let want = [
            ("stderr", "oops\n"),
            ("stdout", "hello\n"),
            ("stdout", "wor"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(s, l)| (s.to_string(), l.to_string()))
            .collect();
        assert_eq!(got, want);
        let text = fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(
            text.starts_with(
                r#"{"log":"oops\n","stream":"stderr","time":"1970-01-01T00:00:01.000000000Z"}"#
            ),
            "{text}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_long_line_is_cut_at_16_kib() {
        let dir = dir("long");
        let mut log = Writer::open(&dir, BIG).unwrap();
        let line = vec![b'x'; MAX_LINE * 2 + 5];
        log.write(Stream::Stdout, &line, SystemTime::now()).unwrap();
        log.write(Stream::Stdout, b"\n", SystemTime::now()).unwrap();
        let lens: Vec<usize> =
            read(&dir).unwrap().iter().map(|e| e.log.len()).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 6]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_file_rotates_and_keeps_max_files() {
        let dir = dir("rotate");
        let limits = Limits {
            max_size: 200,
            max_files: 3,
        };
        let mut log = Writer::open(&dir, limits).unwrap();
        for n in 0..20 {
            log.write(
                Stream::Stdout,
                format!("line {n}\n").as_bytes(),
                SystemTime::now(),
            )
            .unwrap();
        }
        let names: Vec<String> = files(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["json.log.2", "json.log.1", "json.log"]);
        for file in files(&dir) {
            assert!(fs::metadata(file).unwrap().len() <= 200);
        }
        // The newest lines survive, in order.
        let logs: Vec<String> =
            read(&dir).unwrap().into_iter().map(|e| e.log).collect();
        assert_eq!(logs.last().unwrap(), "line 19\n");
        let numbers: Vec<u32> = logs
            .iter()
            .map(|l| l.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        // With one file, a full log starts again.
        let mut one = Writer::open(
            &dir,
            Limits {
                max_size: 200,
                max_files: 1,
            },
        )
        .unwrap();
        for _ in 0..5 {
            one.write(Stream::Stdout, b"again\n", SystemTime::now())
                .unwrap();
        }
        assert!(fs::metadata(dir.join(FILE)).unwrap().len() <= 200);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_follower_reads_on_across_rotations() {
        let dir = dir("follow");
        let limits = Limits {
            max_size: 300,
            max_files: 3,
        };
        let mut log = Writer::open(&dir, limits).unwrap();
        log.write(Stream::Stdout, b"before\n", SystemTime::now())
            .unwrap();
        let (mut follower, backlog) = Follower::open(&dir).unwrap();
        assert_eq!(backlog.len(), 1);
        let mut seen = Vec::new();
        for n in 0..12 {
            log.write(
                Stream::Stdout,
                format!("line {n}\n").as_bytes(),
                SystemTime::now(),
            )
            .unwrap();
            seen.extend(follower.poll().unwrap().into_iter().map(|e| e.log));
        }
        let want: Vec<String> =
            (0..12).map(|n| format!("line {n}\n")).collect();
        assert_eq!(seen, want);
        assert!(files(&dir).len() > 1, "the log never rotated");
        fs::remove_dir_all(dir).unwrap();
    }
}
