//! The OCI bundle: `config.json` and a rootfs, and every earlier step
//! driven by them.
//!
//! runtime-spec `bundle.md`: a bundle is a directory with `config.json`
//! and the root filesystem it names. This module reads it ([`load`]),
//! refuses what it cannot honour ([`check`]), and turns each part of the
//! spec into the plans the earlier steps already apply:
//!
//! | `config.json`                         | taught in | here                     |
//! |---------------------------------------|-----------|--------------------------|
//! | `hostname`, `domainname`              | step 1    | [`set_names`]            |
//! | `linux.namespaces` (new or `path`)    | steps 1–6 | [`namespaces`], [`join`] |
//! | `mounts`, `root`, `linux.devices`, `rootfsPropagation`, `maskedPaths`, `readonlyPaths`, `sysctl` | step 3 | [`mounts`] |
//! | `linux.uidMappings`, `gidMappings`    | step 5    | [`id_plan`]              |
//! | `linux.resources`, `cgroupsPath`      | step 6    | [`cgroup_plan`]          |
//! | `process` (args, env, cwd, user, umask, capabilities, rlimits, noNewPrivileges, oomScoreAdj) | step 8 | [`process`] |
//! | `linux.seccomp`                       | step 8    | [`seccomp`]              |
//! | `hooks`                               | step 8    | [`hooks`]                |
//!
//! The network namespace is created empty but for `lo`, which is brought up
//! (as runc does): connecting it is the engine's job, not the runtime's.
//!
//! # Layout
//!
//! - [`check`]: unknown and unsupported fields, sysctl keys;
//! - [`mounts`]: the mount plan and what follows the pivot;
//! - [`process`]: identity, capabilities, limits and `execve`;
//! - [`hooks`]: running hooks with the state on stdin;
//! - [`seccomp`]: the seccomp profile compiled to BPF;
//! - [`devices`]: device rules as an eBPF program, for cgroup v2;
//! - [`exe`]: the runtime's own binary out of the container's reach;
//! - [`lifecycle`]: all of it composed, as `create`, `start` and `wait`;
//! - [`console`]: `process.terminal`, a pty handed over a unix socket;
//! - [`pidfd`]: processes named by fd, never by a reusable pid;
//! - [`exec_fifo`]: where a created container waits when `create` and
//!   `start` are separate commands (a runtime's, Part II).

pub mod check;
pub mod console;
pub mod devices;
pub mod exe;
pub mod exec_fifo;
pub mod hooks;
pub mod lifecycle;
pub mod mounts;
pub mod pidfd;
pub mod process;
pub mod seccomp;

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroup::{self, CgroupPath, Hierarchy, Layout, Resources};
use crate::user;

/// What can go wrong with a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container id has characters runc would refuse.
    #[error(
        "invalid container id {0:?}: use 1 to 255 letters, digits, '_', \
         '-' and '.' (no leading '.')"
    )]
    Id(String),
    /// The bundle or its `config.json` cannot be read.
    #[error("cannot read {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON, or not a valid spec.
    #[error("{path:?}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message, with line and column.
        message: String,
    },
    /// `config.json` says things this runtime refuses (see [`check`]).
    #[error("{path:?}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused {
        /// The file.
        path: PathBuf,
        /// Everything wrong with it.
        problems: Vec<check::Problem>,
    },
    /// `root.path` is missing or unusable.
    #[error("root.path")]
    Root(#[source] crate::mount::Error),
    /// A spec without a mount namespace (a root of its own needs one).
    #[error("linux.namespaces must include a new mount namespace")]
    NoMountNamespace,
    /// A namespace this runtime cannot join by path.
    #[error(
        "linux.namespaces: joining a {0} namespace by path is not supported"
    )]
    CannotJoin(String),
    /// A new time namespace (needs offsets written before the first
    /// process; not implemented).
    #[error("linux.namespaces: a new time namespace is not supported")]
    NewTime,
    /// Opening or joining a namespace by path failed.
    #[error("cannot join the namespace {path:?}")]
    Join {
        /// The namespace file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Joining a running container's namespaces through its pidfd.
    #[error("cannot join the container's namespaces")]
    JoinTarget {
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Bad id mappings.
    #[error("linux.uidMappings/gidMappings")]
    Ids(#[source] user::Error),
    /// A `linux.cgroupsPath` that is not a plain relative path.
    #[error(transparent)]
    CgroupsPath(cgroup::Error),
    /// Bad resources, or a cgroup that cannot be made.
    #[error("linux.resources")]
    Cgroup(#[source] cgroup::Error),
    /// A device rule that cannot be applied.
    #[error("linux.resources.devices")]
    Devices(#[source] devices::Error),
    /// Setting the host or domain name failed.
    #[error("cannot set the {what}")]
    Name {
        /// `hostname` or `domainname`.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

/// A bundle, read and checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The container's id.
    pub id: String,
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    /// Its `config.json`.
    pub spec: Spec,
    /// The root filesystem (absolute).
    pub rootfs: PathBuf,
}

/// Refuse an id that is empty, too long for a file name (255 bytes), has
/// anything but letters, digits, `_`, `-` and `.`, or starts with `.`: a
/// runtime makes a directory of it, so `..` or `a/b` must never pass.
pub fn check_id(id: &str) -> Result<(), Error> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    let fits = !id.is_empty() && id.len() <= 255;
    if !fits || !id.chars().all(valid) || id.starts_with('.') {
        return Err(Error::Id(id.to_owned()));
    }
    Ok(())
}

// ANCHOR: load
/// Read bundle `dir` for container `id`: parse `config.json` twice (JSON,
/// then typed) to [`check`] it, and find the rootfs.
pub fn load(dir: &Path, id: &str) -> Result<Bundle, Error> {
    check_id(id)?;
    let dir = dir.canonicalize().map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join("config.json");
    let text = fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    let parse_error = |e: serde_json::Error| Error::Parse {
        path: path.clone(),
        message: e.to_string(),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(parse_error)?;
    let spec: Spec = serde_json::from_str(&text).map_err(parse_error)?;
    let problems = check::check(&value, &spec);
    if !problems.is_empty() {
        return Err(Error::Refused { path, problems });
    }
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let rootfs =
        crate::mount::check_rootfs(&dir.join(root)).map_err(Error::Root)?;
    Ok(Bundle {
        id: id.to_owned(),
        dir,
        spec,
        rootfs,
    })
}
// ANCHOR_END: load

/// The namespaces of a spec.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// Flags for `clone(2)`: the new namespaces (not the cgroup one).
    pub clone: CloneFlags,
    /// Namespaces the child joins, user first: `(type, path)`.
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// A PID namespace to join: the parent's doing, see [`PidNamespace`].
    pub join_pid: Option<PathBuf>,
    /// A new user namespace.
    pub new_user: bool,
    /// A new cgroup namespace (entered after sync 1, see step 6).
    pub new_cgroup: bool,
    /// A new network namespace (`lo` is brought up).
    pub new_net: bool,
    /// A new UTS namespace (`hostname` may be set).
    pub new_uts: bool,
}

/// The `clone(2)` flag of a namespace type.
pub fn flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => {
            CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)
        }
    }
}

// ANCHOR: namespaces
/// Which namespaces to create and which to join.
pub fn namespaces(spec: &Spec) -> Result<Namespaces, Error> {
    let mut ns = Namespaces {
        clone: CloneFlags::empty(),
        join: Vec::new(),
        join_pid: None,
        new_user: false,
        new_cgroup: false,
        new_net: false,
        new_uts: false,
    };
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for entry in &list {
        let typ = entry.typ();
        match entry.path() {
            // Joining a mount or time namespace would make no sense with a
            // rootfs of our own.
            Some(_)
                if matches!(
                    typ,
                    LinuxNamespaceType::Mount | LinuxNamespaceType::Time
                ) =>
            {
                return Err(Error::CannotJoin(typ.to_string()));
            }
            Some(path) if typ == LinuxNamespaceType::Pid => {
                ns.join_pid = Some(path.clone())
            }
            Some(path) => ns.join.push((flag(typ), path.clone())),
            None => match typ {
                LinuxNamespaceType::Cgroup => ns.new_cgroup = true,
                LinuxNamespaceType::Time => return Err(Error::NewTime),
                other => {
                    ns.clone |= flag(other);
                    ns.new_user |= other == LinuxNamespaceType::User;
                    ns.new_net |= other == LinuxNamespaceType::Network;
                    ns.new_uts |= other == LinuxNamespaceType::Uts;
                }
            },
        }
    }
    if !ns.clone.contains(CloneFlags::CLONE_NEWNS) {
        return Err(Error::NoMountNamespace);
    }
    // The user namespace first: joining the others needs its capabilities.
    ns.join
        .sort_by_key(|(flag, _)| *flag != CloneFlags::CLONE_NEWUSER);
    Ok(ns)
}
// ANCHOR_END: namespaces

// ANCHOR: join
/// The parent in another PID namespace *for its children*
/// (`pid_namespaces(7)`: `setns(CLONE_NEWPID)` moves only the children a
/// process creates afterwards), and back to its own when dropped.
#[derive(Debug)]
pub struct PidNamespace {
    own: Option<fs::File>,
}

impl PidNamespace {
    /// Our own PID namespace for children, to come back to.
    fn own() -> Result<fs::File, Error> {
        let path = "/proc/self/ns/pid_for_children";
        fs::File::open(path).map_err(|e| Error::Join {
            path: path.into(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })
    }

    /// Join `path` for the next child, if given.
    pub fn enter(path: Option<&Path>) -> Result<PidNamespace, Error> {
        let Some(path) = path else {
            return Ok(PidNamespace { own: None });
        };
        let own = Self::own()?;
        join(&[(CloneFlags::CLONE_NEWPID, path.to_owned())])?;
        Ok(PidNamespace { own: Some(own) })
    }
}

impl PidNamespace {
    /// Join the PID namespace of the process `pidfd` names for the next
    /// child, if `flags` lists one (an `exec` into a running container).
    pub fn enter_of(
        pidfd: std::os::fd::BorrowedFd<'_>,
        flags: CloneFlags,
    ) -> Result<PidNamespace, Error> {
        if !flags.contains(CloneFlags::CLONE_NEWPID) {
            return Ok(PidNamespace { own: None });
        }
        let own = Self::own()?;
        setns(pidfd, CloneFlags::CLONE_NEWPID)
            .map_err(|source| Error::JoinTarget { source })?;
        Ok(PidNamespace { own: Some(own) })
    }
}

impl Drop for PidNamespace {
    fn drop(&mut self) {
        if let Some(own) = self.own.take() {
            // Back home: hooks and later children are the host's again.
            let _ = setns(own, CloneFlags::CLONE_NEWPID);
        }
    }
}

/// In the child, first of all: join the namespaces given by path.
pub fn join(namespaces: &[(CloneFlags, PathBuf)]) -> Result<(), Error> {
    for (flag, path) in namespaces {
        let failed = |source| Error::Join {
            path: path.clone(),
            source,
        };
        let file = fs::File::open(path).map_err(|e| {
            failed(Errno::from_raw(e.raw_os_error().unwrap_or(0)))
        })?;
        crate::trace::event(8, || {
            format!(
                "setns({}, {})",
                path.display(),
                crate::child::flag_names(*flag)
            )
        });
        setns(file, *flag).map_err(failed)?;
    }
    Ok(())
}
// ANCHOR_END: join

/// The user namespace's maps, through step 5's checks (`None` without a
/// new user namespace).
pub fn id_plan(
    spec: &Spec,
    ns: &Namespaces,
    uid: Uid,
    gid: Gid,
) -> Result<Option<user::Plan>, Error> {
    if !ns.new_user {
        return Ok(None);
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let convert = |maps: Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        (maps.unwrap_or_default().iter())
            .map(|m| user::IdMapping {
                container: m.container_id(),
                host: m.host_id(),
                size: m.size(),
            })
            .collect::<Vec<_>>()
    };
    let options = user::Options {
        userns: true,
        uid_maps: convert(linux.uid_mappings().clone()),
        gid_maps: convert(linux.gid_mappings().clone()),
    };
    user::plan(&options, uid, gid).map_err(Error::Ids)
}

/// The pseudo-controller of the v2 tree that a hybrid host mounts beside
/// its v1 hierarchies, in [`full_layout`].
pub const UNIFIED: &str = "unified";

/// Every v1 hierarchy of the host (named ones too), or cgroup v2: a
/// container joins all of them, as runc does.
pub fn full_layout() -> Result<Layout, Error> {
    let text = cgroup::mountinfo().map_err(Error::Cgroup)?;
    match cgroup::detect_from(&text).map_err(Error::Cgroup)? {
        Layout::Legacy { .. } => {
            // Hybrid: the v2 tree beside the v1 ones is joined too, under a
            // pseudo-controller name (it has none of its own here).
            let hierarchies = cgroup::cgroup_mounts(&text)
                .map(|found| Hierarchy {
                    mount: PathBuf::from(found.mount),
                    controllers: match found.v2 {
                        true => vec![UNIFIED.to_owned()],
                        false => (found.options.split(','))
                            .filter(|o| *o != "rw" && *o != "ro")
                            .map(str::to_owned)
                            .collect(),
                    },
                })
                .collect();
            Ok(Layout::Legacy { hierarchies })
        }
        unified => Ok(unified),
    }
}

/// The cgroup of a spec: where, and with which limits.
#[derive(Debug, Clone)]
pub struct CgroupPlan {
    /// The host's layout (every hierarchy).
    pub layout: Layout,
    /// `linux.cgroupsPath` (relative to each hierarchy's root), or the id.
    pub path: CgroupPath,
    /// Memory, CPU and pids limits, in step 6's terms.
    pub resources: Resources,
    /// Device rules in order, as v1 `devices.allow`/`devices.deny` lines
    /// (`true`: allow); v2 compiles them into an eBPF program. Always
    /// starts with a rule that denies everything.
    pub device_rules: Vec<(bool, String)>,
    /// Whether the spec itself has device rules (without root, a cgroup is
    /// made only when the spec asks for something; see step 6).
    pub spec_device_rules: bool,
}

/// Devices every container may use, allowed after the spec's rules (the
/// runtime-spec's default devices, plus the pty multiplexer and the ptys).
const ALLOWED_DEVICES: [&str; 10] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The container's cgroup, relative to each hierarchy's root:
/// `linux.cgroupsPath`, or the id.
pub fn cgroup_path(spec: &Spec, id: &str) -> Result<CgroupPath, Error> {
    let linux = spec.linux().as_ref();
    let path_text = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.display().to_string().trim_start_matches('/').to_owned())
        .unwrap_or_else(|| id.to_owned());
    CgroupPath::parse_field(&path_text, "linux.cgroupsPath")
        .map_err(Error::CgroupsPath)
}

/// `linux.resources`' memory, CPU and pids limits in step 6's terms; a
/// zero asks for nothing (as dockerd writes `"shares": 0`).
pub fn resources_of(spec: &oci_spec::runtime::LinuxResources) -> Resources {
    let mut resources = Resources::default();
    if let Some(memory) = spec.memory() {
        resources.memory = memory.limit().filter(|l| *l > 0).map(|l| l as u64);
        if resources.memory.is_some() {
            resources.memory_swap =
                memory.swap().map(|s| (s > 0).then_some(s as u64));
        }
    }
    if let Some(cpu) = spec.cpu() {
        resources.cpu_quota = cpu.quota().filter(|q| *q > 0).map(|q| q as u64);
        resources.cpu_period = cpu
            .period()
            .filter(|p| *p > 0)
            .or(resources.cpu_quota.map(|_| cgroup::DEFAULT_CPU_PERIOD));
        resources.cpu_shares = cpu.shares().filter(|s| *s != 0);
    }
    if let Some(pids) = spec.pids() {
        resources.pids = (pids.limit() > 0).then_some(pids.limit() as u64);
    }
    resources
}

// ANCHOR: cgroup_plan
/// `linux.resources` and `linux.cgroupsPath` in step 6's terms.
pub fn cgroup_plan(spec: &Spec, id: &str) -> Result<CgroupPlan, Error> {
    let layout = full_layout()?;
    let linux = spec.linux().clone().unwrap_or_default();
    let path = cgroup_path(spec, id)?;
    let resources_spec = linux.resources().clone().unwrap_or_default();
    let resources = resources_of(&resources_spec);
    // ANCHOR: default_deny
    // Deny every device first, whatever the spec says: a spec without
    // rules must not mean "every device", or a device node planted in the
    // rootfs (or made with CAP_MKNOD) opens the host's disk. Then the
    // spec's rules in order, then the standard set every container needs.
    let mut device_rules = vec![(false, "a".to_owned())];
    let rules = resources_spec.devices().clone().unwrap_or_default();
    // ANCHOR_END: default_deny
    {
        for rule in &rules {
            let typ = match rule.typ() {
                Some(oci_spec::runtime::LinuxDeviceType::B) => "b",
                Some(
                    oci_spec::runtime::LinuxDeviceType::C
                    | oci_spec::runtime::LinuxDeviceType::U,
                ) => "c",
                Some(oci_spec::runtime::LinuxDeviceType::P) => "p",
                Some(oci_spec::runtime::LinuxDeviceType::A) | None => "a",
            };
            let number =
                |n: Option<i64>| n.map_or("*".to_owned(), |n| n.to_string());
            let access =
                rule.access().clone().unwrap_or_else(|| "rwm".to_owned());
            let line = if typ == "a" {
                "a".to_owned()
            } else {
                format!(
                    "{typ} {}:{} {access}",
                    number(rule.major()),
                    number(rule.minor())
                )
            };
            // Checked now, in the parent, for both versions.
            devices::Rule::parse(rule.allow(), &line)
                .map_err(Error::Devices)?;
            device_rules.push((rule.allow(), line));
        }
        device_rules.extend(ALLOWED_DEVICES.map(|d| (true, d.to_owned())));
    }
    Ok(CgroupPlan {
        layout,
        path,
        resources,
        device_rules,
        spec_device_rules: !rules.is_empty(),
    })
}
// ANCHOR_END: cgroup_plan

/// Create the cgroup of `plan`, with its limits and device rules.
pub fn create_cgroup(plan: &CgroupPlan) -> Result<cgroup::Cgroup, Error> {
    let created = cgroup::Cgroup::create(&plan.layout, &plan.path)
        .map_err(Error::Cgroup)?;
    // v1 cpuset: a new cgroup has no CPUs and no memory nodes, and cannot
    // take a process until it is given its parent's.
    for dir in created.dirs() {
        let cpus = dir.join("cpuset.cpus");
        if cpus.exists() {
            fill_cpuset(dir).map_err(Error::Cgroup)?;
        }
    }
    let writes = cgroup::plan(&plan.resources, &plan.layout);
    created.apply(&writes).map_err(Error::Cgroup)?;
    match &plan.layout {
        Layout::Unified { .. } => {
            let rules = (plan.device_rules.iter())
                .map(|(allow, line)| devices::Rule::parse(*allow, line))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Error::Devices)?;
            for dir in created.dirs() {
                devices::attach(dir, &rules).map_err(Error::Devices)?;
            }
        }
        Layout::Legacy { .. } => {
            for (allow, line) in &plan.device_rules {
                let file = if *allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                let write = cgroup::Write {
                    controller: "devices",
                    file,
                    value: line.clone(),
                };
                created.apply(&[write]).map_err(Error::Cgroup)?;
            }
        }
    }
    Ok(created)
}

/// Copy `cpuset.cpus` and `cpuset.mems` down from the nearest ancestor
/// that has them, into every empty one on the way to `dir`.
fn fill_cpuset(dir: &Path) -> Result<(), cgroup::Error> {
    let mut chain: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| d.join("cpuset.cpus").exists())
        .collect();
    chain.reverse();
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut value = String::new();
        for level in &chain {
            let path = level.join(file);
            let current = fs::read_to_string(&path).unwrap_or_default();
            if current.trim().is_empty() {
                fs::write(&path, &value).map_err(|source| {
                    cgroup::Error::Write {
                        path: path.clone(),
                        value: value.clone(),
                        source,
                    }
                })?;
            } else {
                value = current.trim().to_owned();
            }
        }
    }
    Ok(())
}

/// The calling process's pid as the host sees it, read from `/proc/self`
/// while `/proc` is still the host's (before the container's is mounted);
/// `getpid()` in a new PID namespace says 1. For the hooks' state.
pub fn host_pid() -> i32 {
    fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or_else(|| std::process::id() as i32)
}

/// In the child: `hostname` (through step 1's checks) and `domainname`.
pub fn set_names(
    spec: &Spec,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if let Some(name) = spec.hostname() {
        crate::uts::set_hostname(&name.parse()?)?;
    }
    if let Some(domain) = spec.domainname() {
        // SAFETY: the pointer and length describe `domain`'s bytes.
        let rc = unsafe {
            libc::setdomainname(domain.as_ptr().cast(), domain.len())
        };
        Errno::result(rc).map_err(|source| Error::Name {
            what: "domainname",
            source,
        })?;
    }
    Ok(())
}
