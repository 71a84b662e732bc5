//! The runtime's log: warnings, errors and (with `--debug`) progress, in
//! runc's two formats, to `--log FILE` or to stderr.
//!
//! containerd's shim passes `--log FILE --log-format json` and, when a
//! command fails, shows the last `"level":"error"` record of that file to
//! the user; podman passes no log at all and shows stderr. So an error
//! goes to the log *and*, as one readable line, to stderr. Nothing of ours is ever written to stdout, which belongs to the
//! command's output (`state`, `list`) or to the container.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::time::rfc3339;

/// The format of log records (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `time="…" level=warning msg="…"`, as logrus writes text.
    Text,
    /// One JSON object per line: `{"level":…,"msg":…,"time":…}`.
    Json,
}

/// How serious a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Progress, shown with `--debug` only.
    Debug,
    /// Something asked for that cannot be granted; the command goes on.
    Warning,
    /// The command failed.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// The log file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the log file {path}")]
pub struct Error {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Where records go.
#[derive(Debug)]
pub struct Log {
    format: Format,
    /// `--log FILE`, opened for appending; `None`: stderr.
    file: Option<File>,
    debug: bool,
}

/// The name errors and warnings on stderr begin with.
pub const PROGRAM: &str = "berth-runtime";

impl Log {
    /// Open the log of `--log`, `--log-format` and `--debug`.
    pub fn open(
        path: Option<&Path>,
        format: Format,
        debug: bool,
    ) -> Result<Log, Error> {
        let file = match path {
            None => None,
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error {
                        path: path.to_owned(),
                        source,
                    })?,
            ),
        };
        Ok(Log {
            format,
            file,
            debug,
        })
    }

    /// A log to stderr in text form (before the flags are known).
    pub fn stderr() -> Log {
        Log {
            format: Format::Text,
            file: None,
            debug: false,
        }
    }

    /// Record `message` at `level`.
    pub fn record(&mut self, level: Level, message: &str) {
        if level == Level::Debug && !self.debug {
            return;
        }
        let line = match (&self.file, self.format) {
            // stderr, read by a person: one plain line.
            (None, Format::Text) => match level {
                Level::Error => format!("{PROGRAM}: {message}\n"),
                _ => format!("{PROGRAM}: {}: {message}\n", level.as_str()),
            },
            (_, Format::Text) => format!(
                "time=\"{}\" level={} msg={}\n",
                rfc3339(SystemTime::now()),
                level.as_str(),
                quote(message)
            ),
            (_, Format::Json) => format!(
                "{}\n",
                serde_json::json!({
                    "level": level.as_str(),
                    "msg": message,
                    "time": rfc3339(SystemTime::now()),
                })
            ),
        };
        // A log that cannot be written has nowhere to say so.
        match &mut self.file {
            Some(file) => {
                let _ = file.write_all(line.as_bytes());
                if level == Level::Error {
                    let _ = writeln!(std::io::stderr(), "{PROGRAM}: {message}");
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    /// Record a warning.
    pub fn warn(&mut self, message: &str) {
        self.record(Level::Warning, message);
    }

    /// Record an error.
    pub fn error(&mut self, message: &str) {
        self.record(Level::Error, message);
    }

    /// Record progress (with `--debug`).
    pub fn debug(&mut self, message: &str) {
        self.record(Level::Debug, message);
    }
}

/// `text` as a double-quoted string with `"` and `\` escaped (logrus).
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_records_quote_like_logrus() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
    }
}
