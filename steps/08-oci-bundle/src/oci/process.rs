//! `config.json`'s `process`: who runs what, with which privileges.
//!
//! [`prepare`] checks and converts everything in the parent, before any
//! process exists (a bad capability name costs nothing). [`start`] applies
//! it in the child, last of all, and `execve`s — the process becomes PID 1
//! of the container itself, as the runtime spec says (step 2's init is not
//! used here).
//!
//! The order in [`start`] matters (`capabilities(7)`, `prctl(2)`):
//!
//! 1. resource limits and `oom_score_adj`, while we are still root;
//! 2. the capability *bounding* set shrinks (needs `CAP_SETPCAP`);
//! 3. `PR_SET_KEEPCAPS`, so that switching to a non-root uid does not empty
//!    the permitted set; then groups, gid, uid — and the parent-death
//!    signal armed again, since the switch cleared it;
//! 4. inheritable, effective, permitted, then ambient capabilities; the
//!    working directory and the program looked up in `PATH`, so that a
//!    wrong `cwd` or a missing program fails `create`; then the wait for
//!    the start ([`super::exec_fifo::Gate`]): `create` ends here;
//! 5. `PR_SET_NO_NEW_PRIVS`: from here no `execve` can gain privileges;
//!    then the seccomp filter (without `no_new_privs`, it is loaded first
//!    of all, while `CAP_SYS_ADMIN` is still there);
//! 6. the `startContainer` hooks, as restricted as the process; only
//!    stdio kept open, default signal dispositions; and `execve` with the
//!    spec's environment.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid, chdir, execve, setgroups, setresgid, setresuid};
use oci_spec::runtime::Process;

use crate::child::Channel;

/// What can go wrong with the process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `process` is missing or has no `args`.
    #[error("process.args is missing or empty")]
    NoArgs,
    /// A string with a NUL byte.
    #[error("process.{field} contains a NUL byte")]
    Nul {
        /// Which field.
        field: &'static str,
    },
    /// A capability this runtime does not know.
    #[error("process.capabilities: unknown capability {0:?}")]
    Capability(String),
    /// An rlimit this runtime does not know.
    #[error("process.rlimits: unknown rlimit {0:?}")]
    Rlimit(String),
    /// An rlimit whose soft value is above its hard one.
    #[error("process.rlimits: {name} soft {soft} is above hard {hard}")]
    RlimitOrder {
        /// The `RLIMIT_*` name.
        name: String,
        /// The soft value.
        soft: u64,
        /// The hard value.
        hard: u64,
    },
    /// Setting an rlimit failed (raising a hard limit needs
    /// `CAP_SYS_RESOURCE`).
    #[error("cannot set {name} to soft {soft}, hard {hard}")]
    SetRlimit {
        /// The `RLIMIT_*` name.
        name: String,
        /// The soft value.
        soft: u64,
        /// The hard value.
        hard: u64,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// A uid or gid that cannot be set: `(uid_t) -1` means "leave it
    /// unchanged" to `setresuid(2)`, so the process would stay root.
    #[error(
        "process.user.{field} {value} is not a valid id (4294967295 means \"unchanged\" to the kernel)"
    )]
    Id {
        /// `uid`, `gid` or `additionalGids`.
        field: &'static str,
        /// The value.
        value: u32,
    },
    /// An environment entry without `=`.
    #[error("process.env entry {0:?} is not KEY=value")]
    Env(String),
    /// `cwd` is not absolute.
    #[error("process.cwd {0:?} is not an absolute path")]
    Cwd(PathBuf),
    /// The parent-death signal could not be re-armed after the id switch.
    #[error("after the switch to the container's user")]
    ParentDeath(#[source] crate::child::Error),
    /// Set up, the process could not wait for its start.
    #[error("set up, but the start never came")]
    Gate(#[source] super::exec_fifo::Error),
    /// Preparing the `execve` failed (fds, signals).
    #[error(transparent)]
    Exec(#[from] crate::child::ExecError),
    /// A `startContainer` hook failed: the process does not start.
    #[error(transparent)]
    Hook(#[from] super::hooks::Error),
    /// The working directory is outside the container's root: reached
    /// through an fd of the host (`/proc/self/fd/N`), the 2024 class.
    #[error("process.cwd {0:?} leads outside the container's root")]
    CwdOutside(PathBuf),
    /// The program is not found on the container's `PATH`.
    #[error(
        "exec: {program:?}: executable file not found in $PATH (PATH={path})"
    )]
    NotFound {
        /// The program.
        program: String,
        /// The `PATH` searched.
        path: String,
    },
    /// A syscall failed.
    #[error("cannot {what}")]
    Syscall {
        /// What we were doing.
        what: String,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// The seccomp profile cannot be compiled or loaded.
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::Error),
    /// Setting a capability set failed.
    #[error("cannot set the {set} capabilities")]
    Caps {
        /// Which set.
        set: &'static str,
        /// Why.
        #[source]
        source: caps::errors::CapsError,
    },
}

/// The capability sets. A set the spec leaves out is *empty* (runc does
/// the same): absent must never mean "everything".
#[derive(Debug, Clone, Default)]
struct Sets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    inheritable: CapsHashSet,
    permitted: CapsHashSet,
    ambient: CapsHashSet,
}

/// `process`, checked and converted, ready for [`start`].
#[derive(Debug, Clone)]
pub struct Prepared {
    argv: Vec<CString>,
    env: Vec<CString>,
    path: String,
    cwd: PathBuf,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    umask: Option<u32>,
    caps: Sets,
    rlimits: Vec<(String, libc::__rlimit_resource_t, u64, u64)>,
    no_new_privileges: bool,
    oom_score_adj: Option<i32>,
    /// The compiled filter and its `seccomp(2)` flags.
    seccomp: Option<(Vec<super::seccomp::Instruction>, u32)>,
    /// What the runtime should warn about (it cannot grant everything
    /// asked); printed by the caller, in the parent.
    pub warnings: Vec<String>,
    /// How many fds from 3 on cross `execve` (runc's `--preserve-fds`).
    pub preserve_fds: u32,
}

/// A capability set as the kernel names it, sorted, for the trace.
fn names(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    names.sort();
    if names.is_empty() {
        "[]".to_owned()
    } else {
        names.join(",")
    }
}

/// `PATH` when the spec's environment has none.
const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstrings(
    items: &[String],
    field: &'static str,
) -> Result<Vec<CString>, Error> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| Error::Nul { field }))
        .collect()
}

/// The kernel's resource number for an `RLIMIT_*` name.
fn rlimit(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// A capability set of the spec, by name; empty if absent.
fn set(
    names: Option<&oci_spec::runtime::Capabilities>,
) -> Result<CapsHashSet, Error> {
    let Some(names) = names else {
        return Ok(CapsHashSet::new());
    };
    let mut set = CapsHashSet::new();
    for cap in names {
        // The spec's own enum serializes to the kernel's name, CAP_KILL.
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        set.insert(
            Capability::from_str(&name).map_err(|_| Error::Capability(name))?,
        );
    }
    Ok(set)
}

// ANCHOR: prepare
/// Check and convert `process` (and compile `seccomp`), in the parent.
pub fn prepare(
    process: &Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<Prepared, Error> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::NoArgs);
    }
    let env = process.env().clone().unwrap_or_default();
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_owned();
    // ANCHOR: absent_caps
    // No `capabilities`, or a set left out: no capability, not all of them.
    let caps = match process.capabilities() {
        None => Sets::default(),
        Some(c) => Sets {
            bounding: set(c.bounding().as_ref())?,
            effective: set(c.effective().as_ref())?,
            inheritable: set(c.inheritable().as_ref())?,
            permitted: set(c.permitted().as_ref())?,
            ambient: set(c.ambient().as_ref())?,
        },
    };
    // ANCHOR_END: absent_caps
    // capabilities(7): a capability can only be ambient if it is also
    // permitted and inheritable. The runtime spec asks to warn, not fail,
    // for what cannot be granted; granting less is never less isolated.
    let mut warnings = Vec::new();
    let mut caps = caps;
    let mut refused: Vec<Capability> = (caps.ambient.iter())
        .filter(|cap| {
            !(caps.permitted.contains(cap) && caps.inheritable.contains(cap))
        })
        .copied()
        .collect();
    refused.sort_by_key(|cap| cap.to_string());
    for cap in refused {
        caps.ambient.remove(&cap);
        warnings.push(format!(
            "process.capabilities.ambient: {cap} is not also permitted \
             and inheritable; not raised"
        ));
    }
    let mut rlimits = Vec::new();
    for limit in process.rlimits().as_deref().unwrap_or_default() {
        let name = limit.typ().to_string();
        let resource =
            rlimit(&name).ok_or_else(|| Error::Rlimit(name.clone()))?;
        let (soft, hard) = (limit.soft(), limit.hard());
        if soft > hard {
            return Err(Error::RlimitOrder { name, soft, hard });
        }
        rlimits.push((name, resource, soft, hard));
    }
    if let Some(entry) = env.iter().find(|e| !e.contains('=')) {
        return Err(Error::Env(entry.clone()));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::Cwd(process.cwd().clone()));
    }
    let user = process.user();
    // ANCHOR: unchanged_id
    let id = |field, value: u32| {
        if value == u32::MAX {
            Err(Error::Id { field, value })
        } else {
            Ok(value)
        }
    };
    id("uid", user.uid())?;
    id("gid", user.gid())?;
    for gid in user.additional_gids().as_deref().unwrap_or_default() {
        id("additionalGids", *gid)?;
    }
    // ANCHOR_END: unchanged_id
    Ok(Prepared {
        argv: cstrings(&args, "args")?,
        env: cstrings(&env, "env")?,
        path,
        cwd: process.cwd().clone(),
        uid: Uid::from_raw(user.uid()),
        gid: Gid::from_raw(user.gid()),
        groups: (user
            .additional_gids()
            .clone()
            .unwrap_or_default()
            .into_iter())
        .map(Gid::from_raw)
        .collect(),
        umask: user.umask(),
        caps,
        rlimits,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        warnings,
        preserve_fds: 0,
        oom_score_adj: process.oom_score_adj(),
        seccomp: match seccomp {
            Some(profile) => Some((
                super::seccomp::compile(profile)?,
                super::seccomp::flags(profile)?,
            )),
            None => None,
        },
    })
}
// ANCHOR_END: prepare

fn syscall(what: &str) -> impl FnOnce(Errno) -> Error + '_ {
    move |source| Error::Syscall {
        what: what.to_owned(),
        source,
    }
}

/// `prctl(2)` with one argument.
fn prctl(
    option: libc::c_int,
    arg: libc::c_ulong,
    what: &str,
) -> Result<(), Error> {
    // SAFETY: these prctl options take integer arguments only.
    let rc = unsafe { libc::prctl(option, arg, 0, 0, 0) };
    Errno::result(rc).map(drop).map_err(syscall(what))
}

/// The program to execute: `argv[0]` itself if it has a `/`, else the
/// first executable file of that name on the container's `PATH`.
fn resolve(prepared: &Prepared) -> Result<CString, Error> {
    let program = prepared.argv[0].to_string_lossy().into_owned();
    if program.contains('/') {
        return Ok(prepared.argv[0].clone());
    }
    for dir in prepared.path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(&program);
        let executable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable {
            return CString::new(candidate.as_os_str().as_bytes())
                .map_err(|_| Error::Nul { field: "args" });
        }
    }
    Err(Error::NotFound {
        program,
        path: prepared.path.clone(),
    })
}

// ANCHOR: start
impl Error {
    /// The exit code a shell would use: 127 for a program not found, 126
    /// for one that cannot be executed, `128 + N` for a signal during the
    /// `startContainer` hooks, else 125 ([`crate::child::exit_code_of`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotFound { .. } => crate::child::EXIT_NOT_FOUND,
            Error::Exec(exec) => exec.exit_code(),
            _ => crate::child::exit_code_of(self),
        }
    }
}

/// Become the container's process, in the child, after every mount: limits,
/// identity, capabilities, the working directory and the program found;
/// then wait for the start at `gate` (here the runtime spec's `create`
/// ends); then `no_new_privs`, seccomp (as close to `execve` as it can
/// be, so that a profile need not allow what the set-up does), `last` (the
/// `startContainer` hooks, which so run with every restriction of the
/// process itself), and `execve`.
pub fn start(
    prepared: &Prepared,
    setgroups_allowed: bool,
    channel: &mut Channel,
    gate: super::exec_fifo::Gate,
    last: impl FnOnce() -> Result<(), super::hooks::Error>,
) -> Result<Infallible, Error> {
    for (name, resource, soft, hard) in &prepared.rlimits {
        let limit = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        crate::trace::event(8, || format!("setrlimit({name}, {soft}, {hard})"));
        // SAFETY: `limit` is a valid rlimit for setrlimit(2) to read.
        let rc = unsafe { libc::setrlimit(*resource, &limit) };
        Errno::result(rc).map_err(|source| Error::SetRlimit {
            name: name.clone(),
            soft: *soft,
            hard: *hard,
            source,
        })?;
    }
    if let Some(adj) = prepared.oom_score_adj {
        crate::trace::event(8, || {
            format!("write {adj} > /proc/self/oom_score_adj")
        });
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(
            |e| {
                syscall("write oom_score_adj")(Errno::from_raw(
                    e.raw_os_error().unwrap_or(0),
                ))
            },
        )?;
    }
    if let Some(mask) = prepared.umask {
        umask(Mode::from_bits_truncate(mask));
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
    // now, while we have it. With it, as late as possible (step 5 below).
    if let (Some((program, flags)), false) =
        (&prepared.seccomp, prepared.no_new_privileges)
    {
        super::seccomp::install(program, *flags)?;
    }
    crate::trace::event(8, || {
        format!(
            "prctl(PR_CAPBSET_DROP) all but {}",
            names(&prepared.caps.bounding)
        )
    });
    for cap in caps::all().difference(&prepared.caps.bounding) {
        match caps::drop(None, CapSet::Bounding, *cap) {
            // A capability this kernel does not have is not there to drop.
            Err(_) if !caps::runtime::thread_all_supported().contains(cap) => {}
            Err(source) => {
                return Err(Error::Caps {
                    set: "bounding",
                    source,
                });
            }
            Ok(()) => {}
        }
    }
    prctl(libc::PR_SET_KEEPCAPS, 1, "keep capabilities across setuid")?;
    if setgroups_allowed {
        setgroups(&prepared.groups)
            .map_err(syscall("set the additional groups"))?;
    }
    crate::trace::event(8, || {
        format!(
            "setgroups({:?}), setresgid({}), setresuid({})",
            prepared
                .groups
                .iter()
                .map(|g| g.as_raw())
                .collect::<Vec<_>>(),
            prepared.gid,
            prepared.uid
        )
    });
    setresgid(prepared.gid, prepared.gid, prepared.gid)
        .map_err(syscall("set the gid"))?;
    setresuid(prepared.uid, prepared.uid, prepared.uid)
        .map_err(syscall("set the uid"))?;
    // The id switch cleared the parent-death signal (prctl(2)).
    channel
        .keep_parent_death_signal()
        .map_err(Error::ParentDeath)?;
    prctl(libc::PR_SET_KEEPCAPS, 0, "clear keep-capabilities")?;
    // Inheritable first (within the permitted set we still have, which
    // capset(2) allows without CAP_SETPCAP); effective before permitted,
    // since effective must stay within permitted.
    let sets: [(CapSet, &CapsHashSet, &str); 3] = [
        (
            CapSet::Inheritable,
            &prepared.caps.inheritable,
            "inheritable",
        ),
        (CapSet::Effective, &prepared.caps.effective, "effective"),
        (CapSet::Permitted, &prepared.caps.permitted, "permitted"),
    ];
    for (set, value, name) in sets {
        crate::trace::event(8, || format!("capset {name} = {}", names(value)));
        caps::set(None, set, value)
            .map_err(|source| Error::Caps { set: name, source })?;
    }
    // Only the grantable ones: prepare() warned about the others.
    if !prepared.caps.ambient.is_empty() {
        crate::trace::event(8, || {
            format!("capset ambient += {}", names(&prepared.caps.ambient))
        });
    }
    for cap in &prepared.caps.ambient {
        caps::raise(None, CapSet::Ambient, *cap).map_err(|source| {
            Error::Caps {
                set: "ambient",
                source,
            }
        })?;
    }
    // What can fail in the container's view fails now, at create.
    chdir(&prepared.cwd).map_err(syscall("change to process.cwd"))?;
    // A cwd reached through a host fd (process.cwd = /proc/self/fd/N with
    // a directory fd the caller passed on) lies outside our root: the
    // kernel then has no path for it, and getcwd(3) fails (ENOENT).
    match std::env::current_dir() {
        Ok(here) if here.is_absolute() => {}
        _ => return Err(Error::CwdOutside(prepared.cwd.clone())),
    }
    let program = resolve(prepared)?;
    // Created: wait here until the start (syncs 2 and 3, or the FIFO).
    gate.pass(channel).map_err(Error::Gate)?;
    if prepared.no_new_privileges {
        crate::trace::event(8, || "prctl(PR_SET_NO_NEW_PRIVS, 1)");
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")?;
        if let Some((program, flags)) = &prepared.seccomp {
            super::seccomp::install(program, *flags)?;
        }
    }
    // startContainer: in the container, as restricted as the process.
    last()?;
    // Only stdio (and the preserved fds) cross; every signal as a fresh
    // process has it.
    let first_closed = 3 + prepared.preserve_fds.min(65_536) as i32;
    for fd in 3..first_closed {
        // SAFETY: F_SETFD on an fd number only changes its flags.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    crate::child::prepare_exec(first_closed)?;
    crate::trace::event(8, || {
        format!("execve({}, {:?})", program.to_string_lossy(), prepared.argv)
    });
    execve(&program, &prepared.argv, &prepared.env).map_err(|source| {
        Error::Exec(crate::child::ExecError::Exec {
            program: program.to_string_lossy().into_owned(),
            source,
        })
    })
}
// ANCHOR_END: start
