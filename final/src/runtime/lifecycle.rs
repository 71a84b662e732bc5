//! The runtime spec's operations (`runtime.md`, "Operations") and runc's
//! extras, each one command: [`create`], [`start`], [`state`](fn@state), [`kill`],
//! [`delete`], and [`run`], [`list`], [`pause`], [`resume`].
//!
//! Every kernel operation is step 8's ([`step08_oci::oci::lifecycle`]);
//! what is added here is what makes separate commands possible: the state
//! directory ([`super::state`]), the exec FIFO between `create` and
//! `start`, and the per-container lock that serialises commands.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use step08_oci::oci::lifecycle::{self as oci_lifecycle, Created};
use step08_oci::oci::{self, exec_fifo, hooks, pidfd};

use super::Error;
use super::log::Log;
use super::state::{self, Container, Identity, Record, Status};
use crate::time::rfc3339;

/// What every command knows: the global flags.
#[derive(Debug)]
pub struct Runtime {
    /// `--root`: where containers' state directories are.
    pub root: PathBuf,
    /// Where warnings and errors go.
    pub log: Log,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
}

/// The options of `create` (and `run`).
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    /// `--bundle`.
    pub bundle: PathBuf,
    /// `--pid-file`: the container process's pid is written there.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: where the master of its terminal goes.
    pub console_socket: Option<PathBuf>,
    /// `--preserve-fds`: fds 3, 4, … the process gets.
    pub preserve_fds: u32,
}

/// A trace event of the runtime itself (the book's chapter 9).
fn trace<D: std::fmt::Display>(what: impl FnOnce() -> D) {
    step08_oci::trace::event(9, what);
}

/// Removes a new container's directory unless [`Removal::disarm`]ed: a
/// `create` that fails leaves no state behind.
struct Removal(Option<PathBuf>);

impl Removal {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Write `pid` to `path` as runc does (a temporary file renamed).
pub(crate) fn write_pid_file(path: &Path, pid: Pid) -> Result<(), Error> {
    let path = std::path::absolute(path).map_err(|source| Error::PidFile {
        path: path.to_owned(),
        source,
    })?;
    state::write_atomic(&path, pid.to_string().as_bytes()).map_err(Error::State)
}

// ANCHOR: create
/// Set up container `id` as far as step 8's create goes, its state
/// recorded under the root before anything exists (so that a `create`
/// killed at any moment leaves something `delete` can clean). With
/// `fifo`, the process will wait at the exec FIFO; without, at sync 3.
fn set_up(
    runtime: &mut Runtime,
    id: &str,
    options: &CreateOptions,
    fifo: bool,
) -> Result<(Container, Created, Removal), Error> {
    if runtime.systemd_cgroup {
        // Never ignored silently: without systemd it cannot be done, with
        // it this runtime does not do it (it writes cgroupfs itself).
        return Err(if Path::new("/run/systemd/system").is_dir() {
            Error::SystemdNotImplemented
        } else {
            Error::NoSystemd
        });
    }
    runtime.log.debug(&format!(
        "create {id}: bundle {}, exec fifo: {fifo}",
        options.bundle.display()
    ));
    let (dir, lock) = Container::make_dir(&runtime.root, id)?;
    trace(|| format!("mkdir {} (state), flock", dir.display()));
    let removal = Removal(Some(dir.clone()));
    let bundle = oci::load(&options.bundle, id)?;
    let config = serde_json::to_vec(&bundle.spec).map_err(|e| {
        Error::State(state::Error::Corrupt {
            path: dir.join(state::CONFIG_FILE),
            message: e.to_string(),
        })
    })?;
    state::write_atomic(&dir.join(state::CONFIG_FILE), &config)?;
    let record = Record {
        id: id.to_owned(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: rfc3339(SystemTime::now()),
        owner: nix::unistd::geteuid().as_raw(),
        annotations: bundle
            .spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        cgroup_path: oci::cgroup_path(&bundle.spec, id)?.as_path().to_owned(),
        process: None,
    };
    let mut container = Container::new(dir.clone(), record, lock)?;
    if fifo {
        trace(|| format!("mkfifo {}/exec.fifo", dir.display()));
        exec_fifo::make(&dir)?;
    }
    let options_of_step8 = oci_lifecycle::Options {
        exec_fifo: fifo.then(|| dir.clone()),
        console_socket: options.console_socket.clone(),
        preserve_fds: options.preserve_fds,
    };
    let log = &mut runtime.log;
    let created =
        oci_lifecycle::create(bundle, &options_of_step8, &mut |warning| {
            log.warn(&warning)
        })?;
    container.record.process = Identity::of(created.pid());
    container.save()?;
    if let Some(path) = &options.pid_file {
        write_pid_file(path, created.pid())?;
    }
    Ok((container, created, removal))
}

/// `create`: set the container up; its process waits at the exec FIFO
/// until `start`. Returns once the container is `created`.
pub fn create(
    runtime: &mut Runtime,
    id: &str,
    options: &CreateOptions,
) -> Result<(), Error> {
    let (_container, created, removal) = set_up(runtime, id, options, true)?;
    created.detach()?;
    removal.disarm();
    Ok(())
}
// ANCHOR_END: create

/// The state the hooks of `container` get on stdin.
fn hook_state(container: &Container, status: &str, pid: i32) -> String {
    hooks::state(
        oci_spec::runtime::VERSION,
        &container.record.id,
        status,
        pid,
        &container.record.bundle,
    )
}

/// One error for a command that the status does not allow.
fn refuse(
    container: &Container,
    operation: &'static str,
    status: Status,
) -> Error {
    Error::Status {
        id: container.record.id.clone(),
        operation,
        status,
    }
}

// ANCHOR: start
/// `start`: let a created container's process go, then run the
/// `poststart` hooks (their failures are warnings).
pub fn start(runtime: &mut Runtime, id: &str) -> Result<(), Error> {
    let container = Container::load_locked(&runtime.root, id)?;
    let status = container.status();
    if !status.can_start() {
        return Err(refuse(&container, "start", status));
    }
    let process = container.record.process.ok_or(Error::NoProcess)?;
    runtime
        .log
        .debug(&format!("start {id}: pid {}", process.pid));
    let pidfd = process.pidfd().map_err(|_| Error::NoProcess)?;
    trace(|| "open exec.fifo, read: the process goes on to execve");
    exec_fifo::release(&container.dir, pidfd.as_fd())?;
    let spec = container.spec()?;
    let poststart = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.poststart().clone())
        .unwrap_or_default();
    let running = hook_state(&container, "running", process.pid);
    for failure in hooks::run_all("poststart", &poststart, &running) {
        runtime.log.warn(&step08_oci::child::error_chain(&failure));
    }
    Ok(())
}
// ANCHOR_END: start

/// `state`: the container's state as JSON, its status observed now.
pub fn state(runtime: &Runtime, id: &str) -> Result<String, Error> {
    let container = Container::load(&runtime.root, id)?;
    let status = container.status();
    Ok(pretty(&container.printed(status)))
}

/// `value` as runc prints JSON: indented by two spaces.
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A signal by name (`KILL`, `SIGKILL`, any case) or number.
pub fn parse_signal(text: &str) -> Result<Signal, Error> {
    let unknown = || Error::Signal(text.to_owned());
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| unknown());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map_err(|_| unknown())
}

// ANCHOR: kill
/// `kill`: send `signal` to the container's process through a pidfd (so
/// never to a process that reused its pid), or with `all` to every
/// process in its cgroup.
pub fn kill(
    runtime: &Runtime,
    id: &str,
    signal: Signal,
    all: bool,
) -> Result<(), Error> {
    let container = Container::load_locked(&runtime.root, id)?;
    let status = container.status();
    if !status.can_kill() {
        return Err(Error::NotRunning(id.to_owned()));
    }
    let process = container.record.process.ok_or(Error::NoProcess)?;
    let failed = |source| Error::Kill {
        id: id.to_owned(),
        signal,
        source,
    };
    if all {
        let cgroup = container.cgroup()?;
        let path = &container.record.cgroup_path;
        for pid in cgroup.pids().unwrap_or_default() {
            // A pid read from cgroup.procs may be gone and reused by the
            // time we signal: pin the process with a pidfd first, then
            // make sure it is (still) one of the container's.
            let Ok(pidfd) = pidfd::open(pid) else {
                continue;
            };
            if !in_cgroup(pid, path) {
                continue;
            }
            match pidfd::signal(pidfd.as_fd(), signal as i32) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => return Err(failed(errno)),
            }
        }
    }
    trace(|| format!("pidfd_send_signal(pidfd of {}, {signal})", process.pid));
    match process.pidfd() {
        Ok(pidfd) => pidfd::signal(pidfd.as_fd(), signal as i32)
            .or_else(|e| if all { Ok(()) } else { Err(e) })
            .map_err(failed)?,
        Err(_) if all => {}
        Err(_) => return Err(Error::NotRunning(id.to_owned())),
    }
    // A frozen process cannot die: thaw what was killed.
    if status == Status::Paused && signal == Signal::SIGKILL {
        container.cgroup()?.thaw()?;
    }
    Ok(())
}
// ANCHOR_END: kill

/// Whether process `pid` is in the cgroup `path` (relative to each
/// hierarchy's root), by its `/proc/PID/cgroup`. With a pidfd held on it,
/// `/proc/PID` is that very process while it lives.
fn in_cgroup(pid: Pid, path: &Path) -> bool {
    let own = Path::new("/").join(path);
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
        text.lines().any(|line| {
            line.splitn(3, ':')
                .nth(2)
                .is_some_and(|p| Path::new(p) == own)
        })
    })
}

/// How long `delete` waits for a killed process to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Whether `ROOT/ID` is what a `create` killed before it wrote any state
/// leaves: a directory without `state.json` whose lock nobody holds.
fn half_created(root: &Path, id: &str) -> bool {
    let Ok(dir) = state::dir_of(root, id) else {
        return false;
    };
    dir.is_dir()
        && !dir.join(state::STATE_FILE).exists()
        && matches!(state::Lock::try_exclusive(&dir), Ok(Some(_)))
}

/// Wait until `process` has exited (its pidfd polls readable).
fn wait_gone(id: &str, process: &Identity) -> Result<(), Error> {
    let Ok(pidfd) = process.pidfd() else {
        return Ok(());
    };
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let timeout = nix::poll::PollTimeout::try_from(KILL_WAIT)
        .unwrap_or(nix::poll::PollTimeout::MAX);
    match nix::poll::poll(&mut fds, timeout) {
        Ok(0) => Err(Error::Stuck(id.to_owned())),
        _ => Ok(()),
    }
}

// ANCHOR: delete
/// `delete`: remove every trace of a stopped container (with `force`, of
/// one in any state, killed first): its process, its cgroup, then the
/// `poststop` hooks, then its state directory.
pub fn delete(
    runtime: &mut Runtime,
    id: &str,
    force: bool,
) -> Result<(), Error> {
    let container = match Container::load_locked(&runtime.root, id) {
        // Nothing to delete is what --force asks for (containerd's shim
        // deletes again when it cleans up). A directory without a state
        // file is what a runtime killed before writing it leaves.
        Err(state::Error::NotFound(_))
            if force || half_created(&runtime.root, id) =>
        {
            let dir = state::dir_of(&runtime.root, id)?;
            return match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(
                    Error::State(crate::path_io::at("remove", &dir)(e).into()),
                ),
                _ => Ok(()),
            };
        }
        other => other?,
    };
    let status = container.status();
    runtime.log.debug(&format!(
        "delete {id}: {} (force: {force})",
        status.as_str()
    ));
    if !status.can_delete() && !force {
        return Err(refuse(&container, "delete", status));
    }
    let cgroup = container.cgroup()?;
    if let Some(process) = &container.record.process
        && status != Status::Stopped
    {
        if let Ok(pidfd) = process.pidfd() {
            let _ = pidfd::signal(pidfd.as_fd(), libc::SIGKILL);
        }
        if status == Status::Paused {
            let _ = cgroup.thaw();
        }
        wait_gone(id, process)?;
    }
    // Kills whatever else is left in it, and removes it.
    cgroup.destroy()?;
    // poststop: runtime.md says after the container is deleted, with its
    // last state; failures are warnings.
    if let Ok(spec) = container.spec() {
        let poststop = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.poststop().clone())
            .unwrap_or_default();
        let stopped = hook_state(&container, "stopped", 0);
        for failure in hooks::run_all("poststop", &poststop, &stopped) {
            runtime.log.warn(&step08_oci::child::error_chain(&failure));
        }
    }
    trace(|| format!("rm -r {}", container.dir.display()));
    container.remove()?;
    Ok(())
}
// ANCHOR_END: delete

/// `run`: create and start; without `detach`, stay in the foreground as
/// `step08-oci run` does (signals forwarded, the exit code returned), then
/// delete the container.
pub fn run(
    runtime: &mut Runtime,
    id: &str,
    options: &CreateOptions,
    detach: bool,
) -> Result<u8, Error> {
    if detach {
        create(runtime, id, options)?;
        start(runtime, id)?;
        return Ok(0);
    }
    let (container, created, removal) = set_up(runtime, id, options, false)?;
    let log = &mut runtime.log;
    let mut warn = |warning: String| log.warn(&warning);
    let running = created.start(&mut warn)?;
    let exit = running.wait(&mut warn)?;
    if let Some(why) = exit.explanation {
        log.warn(&why);
    }
    drop(container);
    drop(removal);
    Ok(exit.code)
}

/// `pause`: freeze every process of a running container.
pub fn pause(runtime: &Runtime, id: &str) -> Result<(), Error> {
    let container = Container::load_locked(&runtime.root, id)?;
    let status = container.status();
    if !status.can_pause() {
        return Err(refuse(&container, "pause", status));
    }
    Ok(container.cgroup()?.freeze()?)
}

/// `resume`: thaw a paused container.
pub fn resume(runtime: &Runtime, id: &str) -> Result<(), Error> {
    let container = Container::load_locked(&runtime.root, id)?;
    let status = container.status();
    if !status.can_resume() {
        return Err(refuse(&container, "resume", status));
    }
    Ok(container.cgroup()?.thaw()?)
}

/// `list`'s output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Aligned columns, as runc's `list`.
    Table,
    /// A JSON array of states.
    Json,
}

/// `list`: every container, as a table, JSON, or (`quiet`) ids only.
pub fn list(
    runtime: &Runtime,
    format: ListFormat,
    quiet: bool,
) -> Result<String, Error> {
    let containers = Container::list(&runtime.root)?;
    if quiet {
        return Ok(containers
            .iter()
            .map(|c| format!("{}\n", c.record.id))
            .collect());
    }
    let printed: Vec<_> =
        containers.iter().map(|c| c.printed(c.status())).collect();
    if format == ListFormat::Json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string(&printed).unwrap_or_default()
        ));
    }
    let mut rows = vec![[
        "ID".to_owned(),
        "PID".to_owned(),
        "STATUS".to_owned(),
        "BUNDLE".to_owned(),
        "CREATED".to_owned(),
        "OWNER".to_owned(),
    ]];
    for p in &printed {
        rows.push([
            p.id.to_owned(),
            p.pid.to_string(),
            p.status.as_str().to_owned(),
            p.bundle.display().to_string(),
            p.created.to_owned(),
            p.owner.clone(),
        ]);
    }
    Ok(table(&rows))
}

/// `rows` in columns as runc prints them (Go's `tabwriter` with a minimum
/// width of 12 and a padding of 3): each column as wide as its widest
/// cell plus 3, at least 12; the last one unpadded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [12usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count() + 3);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}
