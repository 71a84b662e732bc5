//! One container's life, from a bundle, in the runtime spec's operations
//! (`runtime.md`, "Lifecycle"): [`create`] sets everything up and leaves
//! the process waiting just before its `startContainer` hooks and
//! `execve`; [`Created::start`] lets it go; [`Running::wait`] waits for it
//! and tears down. `step08-oci run` calls the three in a row; a runtime
//! with separate `create` and `start` commands calls them from different
//! processes (Part II).
//!
//! ```text
//!   create                                  start          wait
//!   ├ load, check, plan (nothing exists)    ├ sync 3 ──▶   ├ exit code
//!   ├ cgroup, clone, maps, cgroup.add       │ seccomp,     ├ cgroup gone
//!   ├ prestart, createRuntime hooks         │ hooks, exec  └ poststop hooks
//!   └ sync 1 ──▶ mounts, createContainer    └ poststart
//!       hooks, pivot, ids, caps ◀── sync 2
//! ```
//!
//! The process waits at sync 3 of step 1's channel ([`Channel::ready`]),
//! so `create` and `start` are called by the same process — unless
//! [`Options::exec_fifo`] names a state directory: then
//! [`Created::detach`] lets the caller exit, and the process waits at the
//! exec FIFO ([`super::exec_fifo`]) until a runtime's `start` command opens it.
//!
//! [`Channel::ready`]: crate::child::Channel::ready

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{Pid, getegid, geteuid};
use oci_spec::runtime::{Hook, Hooks, LinuxSeccomp, Spec};

use super::exec_fifo::Gate;
use super::{Bundle, hooks, mounts, process};
use crate::{cgroup, child, mount, net, user};

/// What can go wrong in a container's life, before its process runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The forwarded signals could not be blocked for the set-up.
    #[error("cannot block the forwarded signals")]
    Signals(#[source] Errno),
    /// The bundle or its plans (see [`super::Error`]).
    #[error(transparent)]
    Config(#[from] super::Error),
    /// `process` (see [`process::Error`]).
    #[error(transparent)]
    Process(#[from] process::Error),
    /// The mount plan (see [`mounts::Error`]).
    #[error(transparent)]
    Mounts(#[from] mounts::Error),
    /// The loopback plan.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// `clone(2)` and what comes with it.
    #[error("cannot start the container")]
    Spawn(#[source] child::Error),
    /// Writing the uid and gid maps.
    #[error("cannot map the container's ids")]
    Maps(#[source] user::Error),
    /// The container's cgroup.
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    /// A hook that must succeed failed.
    #[error(transparent)]
    Hook(#[from] hooks::Error),
    /// `process.terminal` and the console socket.
    #[error(transparent)]
    Console(#[from] super::console::Error),
    /// The container process failed, or a sync with it did.
    #[error(transparent)]
    Child(#[from] child::Error),
}

impl Error {
    /// The exit code to report for this error ([`child::exit_code_of`]):
    /// `128 + N` for a signal during set-up, `126`/`127` for a process that
    /// cannot be executed or found, else `125`. A transparent variant is
    /// looked into directly: its `source()` is its inner error's.
    pub fn exit_code(&self) -> u8 {
        let inner: &(dyn std::error::Error + 'static) = match self {
            Error::Config(e) => e,
            Error::Process(e) => e,
            Error::Mounts(e) => e,
            Error::Net(e) => e,
            Error::Cgroup(e) => e,
            Error::Hook(e) => e,
            Error::Child(e) => e,
            Error::Console(e) => e,
            Error::Signals(_) | Error::Spawn(_) | Error::Maps(_) => self,
        };
        child::exit_code_of(inner)
    }
}

/// What differs between callers of [`create`].
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The container's state directory, holding an exec FIFO made by
    /// [`super::exec_fifo::make`]: the process waits there for its start, and the
    /// container can be [`Created::detach`]ed. `None`: it waits for
    /// [`Created::start`] in this process.
    pub exec_fifo: Option<PathBuf>,
    /// A unix socket to send the master of the process's terminal to
    /// (`process.terminal`, see [`super::console`]).
    pub console_socket: Option<PathBuf>,
    /// How many fds from 3 on the process gets (runc's `--preserve-fds`);
    /// every other one is closed.
    pub preserve_fds: u32,
}

/// A container set up and waiting for its start.
#[derive(Debug)]
pub struct Created {
    /// Its process (killed and reaped if dropped before [`Created::start`]).
    child: child::Child,
    /// Its cgroup, if it has one (removed if dropped).
    cgroup: Option<cgroup::Cgroup>,
    /// Its bundle.
    bundle: Bundle,
    /// The hooks still to run.
    hooks: Hooks,
}

/// A container whose process runs: what it was when created, started.
#[derive(Debug)]
pub struct Running(Created);

/// How a container ended.
#[derive(Debug)]
pub struct Exit {
    /// Its exit code (`128 + N` when killed by signal `N`).
    pub code: u8,
    /// Why, when its seccomp profile may have killed it (`SIGSYS`).
    pub explanation: Option<String>,
}

/// The console socket, connected, if `process.terminal` asks for one; a
/// terminal without a socket, or a socket without a terminal, is refused.
fn terminal(
    process: &oci_spec::runtime::Process,
    options: &Options,
) -> Result<Option<OwnedFd>, super::console::Error> {
    match (process.terminal().unwrap_or(false), &options.console_socket) {
        (true, Some(path)) => super::console::connect(path).map(Some),
        (false, None) => Ok(None),
        (true, None) => Err(super::console::Error::NoSocket),
        (false, Some(_)) => Err(super::console::Error::NoTerminal),
    }
}

/// `process.consoleSize` as (rows, columns).
fn console_size(process: &oci_spec::runtime::Process) -> Option<(u16, u16)> {
    process.console_size().as_ref().map(|size| {
        let clamp = |n: u64| n.min(u64::from(u16::MAX)) as u16;
        (clamp(size.height()), clamp(size.width()))
    })
}

/// The fds the container process keeps: `3..3 + preserve_fds` and the
/// console socket.
fn kept_fds(options: &Options, console: Option<&OwnedFd>) -> Vec<RawFd> {
    let preserved = 3..3 + options.preserve_fds.min(65_536) as RawFd;
    preserved.chain(console.map(AsRawFd::as_raw_fd)).collect()
}

/// In the child, last of all: [`process::start`], whose error carries
/// the exit code it calls for (127: not found, ...) back to the parent.
fn become_process(
    prepared: &process::Prepared,
    setgroups: bool,
    channel: &mut child::Channel,
    gate: Gate,
    last: impl FnOnce() -> Result<(), hooks::Error>,
) -> Result<u8, child::BoxError> {
    match process::start(prepared, setgroups, channel, gate, last) {
        Ok(never) => match never {},
        Err(error) => Err(Box::new(child::WithExitCode {
            code: error.exit_code(),
            error: error.into(),
        })),
    }
}

/// The `poststop` hooks of `bundle`, with the `stopped` state; their
/// failures are only warnings (runtime.md).
fn poststop(bundle: &Bundle, all: &Hooks, warn: &mut dyn FnMut(String)) {
    let stopped = state(bundle, "stopped", 0);
    for failure in hooks::run_all("poststop", &list(all.poststop()), &stopped) {
        warn(failure.to_string());
    }
}

/// The hooks of a stage, `[]` when absent.
fn list(hooks: &Option<Vec<Hook>>) -> Vec<Hook> {
    hooks.clone().unwrap_or_default()
}

/// The state the hooks of `bundle` get on stdin.
fn state(bundle: &Bundle, status: &str, pid: i32) -> String {
    hooks::state(bundle.spec.version(), &bundle.id, status, pid, &bundle.dir)
}

// ANCHOR: create
/// Set up the container of `bundle` ([`super::load`]), up to the moment
/// its process would run the `startContainer` hooks and `execve`; it waits
/// there (see [`Options`]). `warn` gets what the config asks that cannot
/// be granted, before anything exists.
pub fn create(
    bundle: Bundle,
    options: &Options,
    warn: &mut dyn FnMut(String),
) -> Result<Created, Error> {
    // A signal during set-up waits, pending, until it can be handled with
    // everything undone (see child::interrupted).
    child::supervised_signals()
        .thread_block()
        .map_err(Error::Signals)?;
    let id = bundle.id.as_str();
    let spec = &bundle.spec;
    let process = spec.process().as_ref().ok_or(process::Error::NoArgs)?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let mut prepared = process::prepare(process, seccomp)?;
    prepared.preserve_fds = options.preserve_fds;
    let console = terminal(process, options)?;
    let size = console_size(process);
    let namespaces = super::namespaces(spec)?;
    let ids = super::id_plan(spec, &namespaces, geteuid(), getegid())?;
    let cgroup_plan = super::cgroup_plan(spec, id)?;
    // Without root, a cgroup only where limits are asked (see step 6).
    let asked = cgroup_plan.resources.any() || cgroup_plan.spec_device_rules;
    let with_cgroup = geteuid().is_root() || asked;
    let view = mounts::CgroupView {
        layout: &cgroup_plan.layout,
        bind: (!namespaces.new_cgroup && with_cgroup)
            .then(|| cgroup_plan.path.as_path()),
    };
    let plan = mounts::plan(spec, &bundle.dir, &view)?;
    let all_hooks = spec.hooks().clone().unwrap_or_default();
    // The config is valid: what it asks that cannot be granted.
    for warning in &prepared.warnings {
        warn(warning.clone());
    }
    // Joining a PID namespace is the parent's doing: it decides where its
    // *next* child is born, and the child cannot change its own.
    let joined_pid =
        super::PidNamespace::enter(namespaces.join_pid.as_deref())?;
    let keep = kept_fds(options, console.as_ref());
    // PID (and time) namespaces are only for children: clone(2) makes
    // them, and the user namespace the others belong to. The child makes
    // the others itself (a network namespace is slow to make), while we
    // make its cgroup: two CPUs at work instead of one.
    let by_clone = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    let (clone, unshare) =
        (namespaces.clone & by_clone, namespaces.clone - by_clone);
    // Declared first, so that on an error it is dropped last, after the
    // child is killed: the cgroup is then empty when it is removed.
    let cgroup: Option<cgroup::Cgroup>;
    let mut child = child::spawn_unsharing(clone, unshare, &keep, |channel| {
        // In the child: PID 1 of the new PID namespace, if there is one.
        // Until its execve, its /proc/1/exe is ours: hidden (oci::exe).
        super::exe::undumpable()?;
        // The state directory, while our credentials are still the host's.
        let gate = Gate::open(options.exec_fifo.as_deref())?;
        super::join(&namespaces.join)?;
        if let Some(ids) = &ids {
            user::become_root(ids, channel)?;
        }
        if namespaces.new_cgroup {
            cgroup::enter_namespace()?;
        }
        super::set_names(spec)?;
        if namespaces.new_net {
            net::loopback_up()?;
        }
        // Our pid as the host sees it: /proc is still the host's here.
        let pid = super::host_pid();
        // Every mount but the pivot, then the createContainer hooks: in the
        // container's namespaces, their paths still resolved in the host's.
        let mounts =
            plan.strip_suffix(&[mount::Op::PivotRoot]).unwrap_or(&plan);
        mount::enter(&bundle.rootfs, mounts)?;
        hooks::run(
            "createContainer",
            &list(all_hooks.create_container()),
            &state(&bundle, "creating", pid),
        )?;
        mount::pivot(&bundle.rootfs)?;
        super::mounts::after_pivot(spec)?;
        if let Some(socket) = &console {
            super::console::set_up(socket, size)?;
        }
        let setgroups = !ids.as_ref().is_some_and(|ids| ids.deny_setgroups);
        // process::start waits for the start once the process is set up;
        // startContainer runs after that, with the process's own user,
        // capabilities, no_new_privs and seccomp.
        let start_hooks = list(all_hooks.start_container());
        let start_state = state(&bundle, "created", pid);
        let last = || hooks::run("startContainer", &start_hooks, &start_state);
        become_process(&prepared, setgroups, channel, gate, last)
    })
    .map_err(Error::Spawn)?;
    drop(joined_pid);
    // In the parent, while the child makes its namespaces and waits at
    // sync 1.
    cgroup = match with_cgroup {
        true => Some(super::create_cgroup(&cgroup_plan)?),
        false => None,
    };
    let pid = child.pid().as_raw();
    if let Some(ids) = &ids
        && let Err(error) = user::write_maps(ids, child.pid())
    {
        // A child whose unshare failed is gone: its message says why.
        child.unshared()?;
        return Err(Error::Maps(error));
    }
    // The namespaces must exist before the hooks, which may enter them;
    // and before the child moves into its cgroup: a move waits for an RCU
    // grace period, which a CPU busy making namespaces in the kernel
    // holds up (half a millisecond, in half of the runs measured).
    child.unshared()?;
    if let Some(cgroup) = &cgroup {
        cgroup.add(child.pid())?;
    }
    // runtime.md's order: the deprecated prestart hooks, then createRuntime.
    let creating = state(&bundle, "creating", pid);
    let hooks_ran = [
        ("prestart", all_hooks.prestart()),
        ("createRuntime", all_hooks.create_runtime()),
    ]
    .into_iter()
    .try_for_each(|(stage, hooks)| hooks::run(stage, &list(hooks), &creating));
    // Syncs 1 and 2: the child sets itself up (createContainer), waits.
    let set_up = hooks_ran
        .map_err(Error::from)
        .and_then(|()| child.create().map_err(Error::from));
    if let Err(error) = set_up {
        // runtime.md: a hook that fails stops the container, and the
        // lifecycle goes on at its end, the poststop hooks (what the
        // hooks before set up, they may tear down).
        poststop(&bundle, &all_hooks, warn);
        return Err(error);
    }
    Ok(Created {
        child,
        cgroup,
        bundle,
        hooks: all_hooks,
    })
}
// ANCHOR_END: create

impl Created {
    /// The container process, as the host sees it.
    pub fn pid(&self) -> Pid {
        self.child.pid()
    }

    /// Its bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    // ANCHOR: detach
    /// Let this process exit with the container created and waiting at its
    /// exec FIFO ([`Options::exec_fifo`]), its cgroup kept: from here a
    /// runtime's commands find it through its state directory. Returns its
    /// pid.
    pub fn detach(self) -> Result<Pid, Error> {
        let pid = self.child.detach()?;
        if let Some(cgroup) = self.cgroup {
            cgroup.keep();
        }
        Ok(pid)
    }
    // ANCHOR_END: detach

    // ANCHOR: start
    /// Let the process go (sync 3): seccomp, `startContainer` hooks,
    /// `execve`. Then the `poststart` hooks, whose failures are only
    /// warnings (`warn`): the process runs.
    pub fn start(
        mut self,
        warn: &mut dyn FnMut(String),
    ) -> Result<Running, Error> {
        if let Err(error) = self.child.start() {
            // A startContainer hook failed, or the execve: as in create.
            poststop(&self.bundle, &self.hooks, warn);
            return Err(error.into());
        }
        let pid = self.child.pid().as_raw();
        let poststart = list(self.hooks.poststart());
        let running = state(&self.bundle, "running", pid);
        for failure in hooks::run_all("poststart", &poststart, &running) {
            warn(failure.to_string());
        }
        Ok(Running(self))
    }
    // ANCHOR_END: start
}

impl Running {
    // ANCHOR: wait
    /// Supervise the process until it ends (signals forwarded, orphans
    /// reaped), remove the cgroup, run the `poststop` hooks (failures are
    /// warnings).
    pub fn wait(self, warn: &mut dyn FnMut(String)) -> Result<Exit, Error> {
        let Running(container) = self;
        let code = container.child.wait()?;
        let seccomp = container
            .bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref());
        let explanation = seccomp.and_then(|profile: &LinuxSeccomp| {
            super::seccomp::explain_exit(profile, code)
        });
        if let Some(cgroup) = container.cgroup {
            cgroup.destroy()?;
        }
        poststop(&container.bundle, &container.hooks, warn);
        Ok(Exit { code, explanation })
    }
    // ANCHOR_END: wait
}

/// A process started in a running container ([`exec`]), until it runs.
#[derive(Debug)]
pub struct Exec {
    child: child::Child,
}

/// The namespaces of the container `spec` describes, as `setns(2)` flags
/// for a pidfd of its process: every type it lists, new or joined.
fn namespace_flags(spec: &Spec) -> CloneFlags {
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    list.iter()
        .map(|ns| super::flag(ns.typ()))
        .fold(CloneFlags::empty(), |all, flag| all | flag)
}

/// Whether `setgroups(2)` is allowed in the user namespace of the process
/// `pidfd` names: not where its `setgroups` file says `deny` (step 5).
/// Read from the host's `/proc`, never the container's, which the
/// container controls: a forged `deny` would make us skip dropping the
/// runtime's own supplementary groups.
fn setgroups_allowed(pidfd: BorrowedFd<'_>) -> bool {
    let fdinfo = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let pid = std::fs::read_to_string(fdinfo).ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .map(|p| p.trim().to_owned())
    });
    let setting = pid.and_then(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/setgroups")).ok()
    });
    setting.is_none_or(|text| text.trim() != "deny")
}

// ANCHOR: exec
/// Start `process` inside the running container `spec` describes, whose
/// first process `target` is a pidfd of: the same namespaces (joined in
/// one `setns(2)` call on the pidfd, so a pid reused meanwhile cannot
/// redirect it), the same cgroup, the same seccomp profile, and the
/// process's own identity, capabilities and limits (`process::start`).
/// Returns once the process waits at sync 3; `detached`: it will not die
/// with us once started.
pub fn exec(
    spec: &Spec,
    target: BorrowedFd<'_>,
    cgroup: Option<&cgroup::Cgroup>,
    process: &oci_spec::runtime::Process,
    options: &Options,
    detached: bool,
    warn: &mut dyn FnMut(String),
) -> Result<Exec, Error> {
    child::supervised_signals()
        .thread_block()
        .map_err(Error::Signals)?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let mut prepared = process::prepare(process, seccomp)?;
    prepared.preserve_fds = options.preserve_fds;
    let console = terminal(process, options)?;
    let size = console_size(process);
    for warning in &prepared.warnings {
        warn(warning.clone());
    }
    let flags = namespace_flags(spec);
    let setgroups = setgroups_allowed(target);
    // The next child is born in the container's PID namespace.
    let joined_pid = super::PidNamespace::enter_of(target, flags)?;
    let mut keep = kept_fds(options, console.as_ref());
    keep.push(target.as_raw_fd());
    let child = child::spawn_keeping(CloneFlags::empty(), &keep, |channel| {
        super::exe::undumpable()?;
        let gate = if detached {
            Gate::Detached
        } else {
            Gate::Channel
        };
        // Every namespace at once, user first as the kernel orders them.
        crate::trace::event(8, || {
            format!(
                "setns(pidfd, {})",
                child::flag_names(flags & !CloneFlags::CLONE_NEWPID)
            )
        });
        nix::sched::setns(target, flags & !CloneFlags::CLONE_NEWPID)
            .map_err(|source| super::Error::JoinTarget { source })?;
        if let Some(socket) = &console {
            super::console::set_up(socket, size)?;
        }
        become_process(&prepared, setgroups, channel, gate, || Ok(()))
    })
    .map_err(Error::Spawn)?;
    drop(joined_pid);
    let mut exec = Exec { child };
    if let Some(cgroup) = cgroup {
        cgroup.add(exec.child.pid())?;
    }
    /* syncs 1 and 2 */
    exec.child.create()?;
    Ok(exec)
}
// ANCHOR_END: exec

impl Exec {
    /// The process, as the host sees it.
    pub fn pid(&self) -> Pid {
        self.child.pid()
    }

    /// Let it run and leave it (`exec --detach`); returns once it runs.
    pub fn detach(self) -> Result<Pid, Error> {
        Ok(self.child.detach()?)
    }

    /// Let it run, and supervise it to its end: its exit code.
    pub fn wait(self) -> Result<u8, Error> {
        Ok(self.child.wait()?)
    }
}
