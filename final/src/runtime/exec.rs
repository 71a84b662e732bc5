//! `exec`: one more process in a running container — how `docker exec`,
//! `ctr task exec` and `podman exec` get there.
//!
//! The process is either the JSON of `--process FILE` (a runtime-spec
//! `process` object, what containerd and conmon write), or the container's
//! own `process` with the command line's changes: the arguments, `-e`,
//! `--cwd`, `-u`, `--cap`, `--no-new-privs`, `-t`. Step 8 does the rest
//! ([`step08_oci::oci::lifecycle::exec`]): the namespaces joined through a
//! pidfd, the cgroup, seccomp, capabilities, limits.

use std::os::fd::AsFd;
use std::path::PathBuf;

use oci_spec::runtime::{Capability, Process, User, UserBuilder};
use step08_oci::oci::lifecycle as oci_lifecycle;

use super::Error;
use super::lifecycle::Runtime;
use super::state::Container;

/// What the command line says about the process (`exec`'s flags).
#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    /// `--process FILE` (`-` is stdin).
    pub process: Option<PathBuf>,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `-e KEY=VALUE`, each replacing the container's value of `KEY`.
    pub env: Vec<String>,
    /// `--cwd`.
    pub cwd: Option<PathBuf>,
    /// `-u UID[:GID]`.
    pub user: Option<String>,
    /// `--cap`: capabilities added to the bounding, effective and
    /// permitted sets.
    pub caps: Vec<String>,
    /// `--no-new-privs`.
    pub no_new_privs: bool,
    /// `-t`: a terminal (needs `--console-socket`).
    pub tty: bool,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--preserve-fds`.
    pub preserve_fds: u32,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--detach`: return once the process runs.
    pub detach: bool,
}

/// A bad `exec` option.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// `--process` unreadable or not a process.
    #[error("--process {path}: {message}")]
    Process {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No command and no `--process`.
    #[error("exec needs a command, or --process FILE")]
    NoCommand,
    /// `-u` that is not `UID[:GID]`.
    #[error("-u {0:?}: expected UID or UID:GID (numbers)")]
    User(String),
    /// `-e` without `=`.
    #[error("-e {0:?}: expected KEY=VALUE")]
    Env(String),
    /// `--cap` with a name the spec does not know.
    #[error("--cap {0:?}: unknown capability")]
    Cap(String),
}

/// `-u UID[:GID]` over `base`.
fn user(text: &str, base: &User) -> Result<User, OptionError> {
    let bad = || OptionError::User(text.to_owned());
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    let uid: u32 = uid.parse().map_err(|_| bad())?;
    let gid: u32 = match gid {
        Some(gid) => gid.parse().map_err(|_| bad())?,
        None => base.gid(),
    };
    UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .build()
        .map_err(|_| bad())
}

/// The process to run, from `--process` or from the container's own.
fn process(
    base: Option<&Process>,
    options: &ExecOptions,
) -> Result<Process, OptionError> {
    if let Some(path) = &options.process {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(|e| OptionError::Process {
            path: path.clone(),
            message: e.to_string(),
        })?;
        return serde_json::from_str(&text).map_err(|e| OptionError::Process {
            path: path.clone(),
            message: e.to_string(),
        });
    }
    if options.args.is_empty() {
        return Err(OptionError::NoCommand);
    }
    let mut process = base.cloned().unwrap_or_default();
    process.set_args(Some(options.args.clone()));
    process.set_terminal(Some(options.tty));
    process.set_console_size(None);
    let mut env = process.env().clone().unwrap_or_default();
    for pair in &options.env {
        let (key, _) = pair
            .split_once('=')
            .ok_or_else(|| OptionError::Env(pair.clone()))?;
        env.retain(|old| old.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(pair.clone());
    }
    process.set_env(Some(env));
    if let Some(cwd) = &options.cwd {
        process.set_cwd(cwd.clone());
    }
    if let Some(text) = &options.user {
        process.set_user(user(text, process.user())?);
    }
    if !options.caps.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &options.caps {
            let upper = name.to_ascii_uppercase();
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            let cap: Capability =
                serde_json::from_value(serde_json::Value::String(full))
                    .map_err(|_| OptionError::Cap(name.clone()))?;
            let add = |set: &Option<std::collections::HashSet<Capability>>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
        }
        process.set_capabilities(Some(caps));
    }
    if options.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    Ok(process)
}

// ANCHOR: exec
/// `exec`: run a process in container `id`; its exit code, or 0 once it
/// runs with `--detach`.
pub fn exec(
    runtime: &mut Runtime,
    id: &str,
    options: &ExecOptions,
) -> Result<u8, Error> {
    let container = Container::load_locked(&runtime.root, id)?;
    let status = container.status();
    if !status.can_exec() {
        return Err(Error::Status {
            id: id.to_owned(),
            operation: "exec in",
            status,
        });
    }
    let spec = container.spec()?;
    let process = process(spec.process().as_ref(), options)?;
    let target = container.record.process.ok_or(Error::NoProcess)?;
    let pidfd = target.pidfd().map_err(|_| Error::NoProcess)?;
    let cgroup = container.cgroup()?;
    let cgroup = cgroup.dirs().all(|d| d.is_dir()).then_some(&cgroup);
    let step8 = oci_lifecycle::Options {
        exec_fifo: None,
        console_socket: options.console_socket.clone(),
        preserve_fds: options.preserve_fds,
    };
    let log = &mut runtime.log;
    let started = oci_lifecycle::exec(
        &spec,
        pidfd.as_fd(),
        cgroup,
        &process,
        &step8,
        options.detach,
        &mut |warning| log.warn(&warning),
    )?;
    if let Some(path) = &options.pid_file {
        super::lifecycle::write_pid_file(path, started.pid())?;
    }
    if options.detach {
        started.detach()?;
        return Ok(0);
    }
    // The container's lock is not held while the process runs: a kill or
    // a delete --force must not wait for it.
    drop(container);
    Ok(started.wait()?)
}
// ANCHOR_END: exec
