//! The OCI runtime as the shim calls it: runc's command line, with the
//! runtime's own log in JSON (`--log FILE --log-format json`), from which
//! a failure's message is read, as containerd's shim reads it. The
//! runtime is `berth-runtime`, `runc` or `crun`: all three take these
//! flags.

use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use super::Error;

/// How to call the runtime for one container.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The runtime's executable.
    pub path: PathBuf,
    /// Its `--root`, if not its default.
    pub root: Option<PathBuf>,
    /// Its `--log`, in the shim's directory.
    pub log: PathBuf,
}

impl Runtime {
    /// `RUNTIME [--root R] --log L --log-format json ARGS…`, with no stdio.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.path);
        if let Some(root) = &self.root {
            command.arg("--root").arg(root);
        }
        command
            .arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Start `command` (made by [`Runtime::command`]) for `op`.
    pub fn spawn(
        &self,
        op: &'static str,
        command: &mut Command,
    ) -> Result<Child, Error> {
        command.spawn().map_err(|source| Error::Spawn {
            runtime: self.path.clone(),
            op,
            source,
        })
    }

    /// Run `ARGS…` to its end; a failure carries the runtime's message
    /// (from its log, else from its stderr).
    pub fn run(&self, op: &'static str, args: &[&str]) -> Result<(), Error> {
        self.execute(op, args, false).map(drop)
    }

    /// Run `ARGS…` to its end and return what it printed on stdout (at
    /// most 1 MiB); a failure carries the runtime's message.
    pub fn query(
        &self,
        op: &'static str,
        args: &[&str],
    ) -> Result<Vec<u8>, Error> {
        self.execute(op, args, true)
    }

    /// Run the runtime with its stdout piped (`want_stdout`) or else its
    /// stderr, the other dropped: what came on the pipe, at most 1 MiB,
    /// the rest read and dropped so that the runtime never blocks on a
    /// full pipe while we wait for it.
    fn execute(
        &self,
        op: &'static str,
        args: &[&str],
        want_stdout: bool,
    ) -> Result<Vec<u8>, Error> {
        let mark = log_size(&self.log);
        let mut command = self.command(args);
        if want_stdout {
            command.stdout(Stdio::piped());
        } else {
            command.stderr(Stdio::piped());
        }
        let mut child = self.spawn(op, &mut command)?;
        let pipe: Option<Box<dyn Read>> = if want_stdout {
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>)
        } else {
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>)
        };
        let mut captured = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.by_ref().take(1 << 20).read_to_end(&mut captured);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        }
        let status = child.wait().map_err(|source| Error::Spawn {
            runtime: self.path.clone(),
            op,
            source,
        })?;
        let stderr = if want_stdout {
            String::new()
        } else {
            String::from_utf8_lossy(&captured).into_owned()
        };
        self.check(op, status, mark, &stderr)?;
        Ok(captured)
    }

    /// `Ok` if `status` is success; otherwise the runtime's last error
    /// record logged after byte `mark` of its log, or its stderr's last
    /// line, or the status itself.
    pub fn check(
        &self,
        op: &'static str,
        status: ExitStatus,
        mark: u64,
        stderr: &str,
    ) -> Result<(), Error> {
        if status.success() {
            return Ok(());
        }
        let message = last_error(&self.log, mark)
            .or_else(|| {
                stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (_, Some(signal)) => format!("killed by signal {signal}"),
                _ => "failed".to_owned(),
            });
        Err(Error::Runtime { op, message })
    }
}

/// How long the runtime's log is now: what it writes next comes after.
pub fn log_size(log: &Path) -> u64 {
    fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// The `msg` of the last `"level":"error"` record after byte `mark` of
/// the JSON log `log`.
fn last_error(log: &Path, mark: u64) -> Option<String> {
    let bytes = fs::read(log).ok()?;
    let tail = bytes.get(usize::try_from(mark).ok()?..)?;
    tail.split(|&b| b == b'\n').rev().find_map(|line| {
        let record: serde_json::Value = serde_json::from_slice(line).ok()?;
        if record["level"] == "error" {
            record["msg"].as_str().map(str::to_owned)
        } else {
            None
        }
    })
}
