//! What `config.json` may say, and what this runtime refuses.
//!
//! Two ways a field can be ignored by accident, both turned into errors:
//!
//! - **unknown**: a typo (`"readOnly"` for `"readonly"`) or a field of a
//!   newer spec. serde skips fields it does not know, so the file is parsed
//!   twice — as plain JSON and as a typed `Spec` — and every key of the
//!   first that the second does not give back is reported;
//! - **known but not implemented** ([`UNSUPPORTED`]): AppArmor, SELinux,
//!   Intel RDT, … Ignoring one of them would run the
//!   container *less* isolated than its author asked, so it is an error
//!   naming the field, never a silent skip.
//!
//! Also checked here: `linux.sysctl` keys, which must be namespaced (else a
//! container could set a value for the whole host).

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde_json::Value;

// ANCHOR: unsupported
/// Fields this runtime knows but does not implement, with the reason.
/// `[]` walks every element of an array.
pub const UNSUPPORTED: [(&str, &str); 34] = [
    ("process.apparmorProfile", "AppArmor is not implemented"),
    ("process.selinuxLabel", "SELinux is not implemented"),
    ("process.ioPriority", "I/O priorities are not implemented"),
    (
        "process.scheduler",
        "scheduler policies are not implemented",
    ),
    ("process.execCPUAffinity", "CPU affinity is not implemented"),
    ("process.commandLine", "commandLine is for Windows"),
    (
        "linux.seccomp.listenerPath",
        "seccomp notifications are not implemented",
    ),
    (
        "linux.seccomp.listenerMetadata",
        "seccomp notifications are not implemented",
    ),
    ("linux.mountLabel", "SELinux is not implemented"),
    ("linux.intelRdt", "Intel RDT is not implemented"),
    ("linux.personality", "personality(2) is not implemented"),
    ("linux.timeOffsets", "the time namespace is not implemented"),
    ("linux.memoryPolicy", "memory policies are not implemented"),
    (
        "linux.netDevices",
        "moving network devices is not implemented",
    ),
    (
        "linux.resources.blockIO",
        "the blkio/io controller is not implemented",
    ),
    (
        "linux.resources.hugepageLimits",
        "the hugetlb controller is not implemented",
    ),
    (
        "linux.resources.network",
        "net_cls/net_prio are not implemented",
    ),
    (
        "linux.resources.rdma",
        "the rdma controller is not implemented",
    ),
    (
        "linux.resources.unified",
        "raw cgroup v2 files are not implemented",
    ),
    (
        "linux.resources.memory.reservation",
        "memory reservations are not implemented",
    ),
    (
        "linux.resources.memory.kernel",
        "kernel memory limits are not implemented",
    ),
    (
        "linux.resources.memory.kernelTCP",
        "kernel TCP memory limits are not implemented",
    ),
    (
        "linux.resources.memory.swappiness",
        "swappiness is not implemented",
    ),
    ("linux.resources.cpu.cpus", "cpusets are not implemented"),
    ("linux.resources.cpu.mems", "cpusets are not implemented"),
    (
        "mounts[].uidMappings",
        "id-mapped mounts are not implemented",
    ),
    (
        "mounts[].gidMappings",
        "id-mapped mounts are not implemented",
    ),
    (
        "linux.resources.memory.disableOOMKiller",
        "disabling the OOM killer is not implemented",
    ),
    (
        "linux.resources.memory.useHierarchy",
        "memory.use_hierarchy is not implemented",
    ),
    (
        "linux.resources.memory.checkBeforeUpdate",
        "checkBeforeUpdate is not implemented",
    ),
    (
        "linux.resources.cpu.realtimeRuntime",
        "real-time scheduling limits are not implemented",
    ),
    (
        "linux.resources.cpu.realtimePeriod",
        "real-time scheduling limits are not implemented",
    ),
    ("linux.resources.cpu.burst", "CPU burst is not implemented"),
    (
        "linux.resources.cpu.idle",
        "SCHED_IDLE cgroups are not implemented",
    ),
];
// ANCHOR_END: unsupported

/// What `check` found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A field no version of the spec this runtime knows has.
    #[error(
        "unknown field {0} (a typo, or a newer spec than this runtime knows)"
    )]
    Unknown(String),
    /// A field this runtime does not implement.
    #[error("unsupported field {field}: {why}")]
    Unsupported {
        /// Where, as `process.apparmorProfile`.
        field: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A field that needs a namespace the spec does not create (it would
    /// change the host's).
    #[error(
        "{field} needs a new {namespace} namespace (it would change the host's)"
    )]
    NeedsNamespace {
        /// The field.
        field: &'static str,
        /// The namespace.
        namespace: &'static str,
    },
    /// A memory swap limit without a memory limit.
    #[error("linux.resources.memory.swap needs linux.resources.memory.limit")]
    SwapWithoutLimit,
    /// `root` is missing (the runtime spec requires it on Linux), or its
    /// path is empty.
    #[error(
        "root.path is required (the directory of the container's root filesystem)"
    )]
    NoRoot,
    /// A namespace type listed twice.
    #[error("linux.namespaces lists the {0} namespace more than once")]
    DuplicateNamespace(String),
    /// A new user namespace without id mappings.
    #[error(
        "a new user namespace needs linux.uidMappings and linux.gidMappings"
    )]
    NoMappings,
    /// A hook's environment entry without `=`.
    #[error("{field} entry {entry:?} is not KEY=value")]
    Env {
        /// Where (`hooks.prestart[0].env`).
        field: String,
        /// The entry.
        entry: String,
    },
    /// A hook timeout that is not above zero.
    #[error("{field} is {seconds}: it must be greater than zero")]
    HookTimeout {
        /// Where (`hooks.poststop[1].timeout`).
        field: String,
        /// The value.
        seconds: i64,
    },
    /// `cpu.shares` out of the kernel's range.
    #[error("linux.resources.cpu.shares {0} is out of range (2 to 262144)")]
    CpuShares(u64),
    /// A sysctl that is not namespaced, or whose namespace is not new.
    #[error("linux.sysctl {key:?}: {why}")]
    Sysctl {
        /// The key.
        key: String,
        /// Why it is refused.
        why: &'static str,
    },
}

// ANCHOR: unknown
/// Keys of `original` that the typed `round_trip` does not have.
fn unknown(
    original: &Value,
    round_trip: &Value,
    path: &str,
    found: &mut Vec<String>,
) {
    match (original, round_trip) {
        (Value::Object(original), Value::Object(typed)) => {
            for (key, value) in original {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match typed.get(key) {
                    Some(typed) => unknown(value, typed, &child, found),
                    // An explicit null is the same as an absent field; the
                    // typed spec just does not write it back.
                    None if value.is_null() => {}
                    None => found.push(child),
                }
            }
        }
        (Value::Array(original), Value::Array(typed)) => {
            for (i, (a, b)) in original.iter().zip(typed).enumerate() {
                unknown(a, b, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}
// ANCHOR_END: unknown

/// The values at dotted `path` (`[]` walks arrays), with their real paths.
fn lookup<'v>(
    value: &'v Value,
    path: &str,
    prefix: String,
    out: &mut Vec<(String, &'v Value)>,
) {
    let Some((head, rest)) =
        path.split_once('.').map_or(Some((path, "")), Some)
    else {
        return;
    };
    let (key, each) = match head.strip_suffix("[]") {
        Some(key) => (key, true),
        None => (head, false),
    };
    let Some(next) = value.get(key) else {
        return;
    };
    let here = if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    };
    let mut visit = |value: &'v Value, here: String| {
        if rest.is_empty() {
            out.push((here, value));
        } else {
            lookup(value, rest, here, out);
        }
    };
    if each {
        if let Value::Array(items) = next {
            for (i, item) in items.iter().enumerate() {
                visit(item, format!("{here}[{i}]"));
            }
        }
    } else {
        visit(next, here);
    }
}

/// Whether a value says anything: not null, false, empty or zero-length,
/// nor an object of such values (dockerd writes `"blockIO": {"weight":
/// 0}` and `"disableOOMKiller": false` for containers that ask for
/// neither). A weight of 0 is "no weight", as in runc: the kernel's
/// smallest is 1 (v2) or 10 (v1).
pub fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => fields.iter().any(|(key, value)| {
            let no_weight = key.to_ascii_lowercase().ends_with("weight")
                && value.as_u64() == Some(0);
            !no_weight && is_set(value)
        }),
        Value::String(text) => !text.is_empty(),
        _ => true,
    }
}

// ANCHOR: sysctl_namespace
/// The namespace a sysctl key belongs to, if it is namespaced at all
/// (`sysctl(8)`, and the kernel's per-namespace sysctl tables).
fn sysctl_namespace(key: &str) -> Option<&'static str> {
    const IPC: [&str; 7] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
    ];
    if key.starts_with("net.") {
        Some("network")
    } else if IPC.contains(&key)
        || key == "kernel.shm_rmid_forced"
        || key.starts_with("fs.mqueue.")
    {
        Some("ipc")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some("uts")
    } else {
        None
    }
}
// ANCHOR_END: sysctl_namespace

// ANCHOR: must
/// What the runtime spec says a runtime MUST refuse, which a typed parse
/// lets through: a missing `root`, a namespace listed twice, a new user
/// namespace without mappings, hook environment entries without `=`, and
/// `cpu.shares` the kernel would clamp. (`process.env` and `process.cwd` are
/// checked with the rest of the process, see [`super::process::prepare`].)
fn must(spec: &Spec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if spec
        .root()
        .as_ref()
        .is_none_or(|r| r.path().as_os_str().is_empty())
    {
        problems.push(Problem::NoRoot);
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut seen = Vec::new();
    for namespace in &namespaces {
        if seen.contains(&namespace.typ()) {
            problems
                .push(Problem::DuplicateNamespace(namespace.typ().to_string()));
        }
        seen.push(namespace.typ());
    }
    let new_user = (namespaces.iter())
        .any(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_none());
    let empty = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.as_ref().is_none_or(|m| m.is_empty())
    };
    if new_user && (empty(linux.uid_mappings()) || empty(linux.gid_mappings()))
    {
        problems.push(Problem::NoMappings);
    }
    let hooks = spec.hooks().clone().unwrap_or_default();
    for (stage, list) in [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ] {
        for (i, hook) in list.iter().flatten().enumerate() {
            // config.md: "timeout ... MUST be greater than zero".
            if let Some(seconds) = hook.timeout().filter(|s| *s <= 0) {
                problems.push(Problem::HookTimeout {
                    field: format!("hooks.{stage}[{i}].timeout"),
                    seconds,
                });
            }
            for entry in hook.env().iter().flatten() {
                if !entry.contains('=') {
                    problems.push(Problem::Env {
                        field: format!("hooks.{stage}[{i}].env"),
                        entry: entry.clone(),
                    });
                }
            }
        }
    }
    let shares = (linux.resources().as_ref())
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| c.shares());
    // 0 is "not set" to runc and the kernel's range starts at 2.
    if let Some(shares) =
        shares.filter(|s| *s != 0 && !(2..=262_144).contains(s))
    {
        problems.push(Problem::CpuShares(shares));
    }
    problems
}
// ANCHOR_END: must

// ANCHOR: check
/// Everything wrong with `original` (the JSON text, parsed) that `spec`
/// (the same text, typed) would hide.
pub fn check(original: &Value, spec: &Spec) -> Vec<Problem> {
    let mut problems = Vec::new();
    let round_trip = serde_json::to_value(spec).unwrap_or(Value::Null);
    let mut unknowns = Vec::new();
    unknown(original, &round_trip, "", &mut unknowns);
    problems.extend(unknowns.into_iter().map(Problem::Unknown));
    for (field, why) in UNSUPPORTED {
        let mut found = Vec::new();
        lookup(original, field, String::new(), &mut found);
        for (field, _) in found.into_iter().filter(|(_, v)| is_set(v)) {
            problems.push(Problem::Unsupported { field, why });
        }
    }
    problems.extend(must(spec));
    let new_namespaces: Vec<LinuxNamespaceType> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .filter(|ns| ns.path().is_none())
        .map(|ns| ns.typ())
        .collect();
    let new = |typ| new_namespaces.contains(&typ);
    for (field, set) in [
        ("hostname", spec.hostname().is_some()),
        ("domainname", spec.domainname().is_some()),
    ] {
        if set && !new(LinuxNamespaceType::Uts) {
            problems.push(Problem::NeedsNamespace {
                field,
                namespace: "uts",
            });
        }
    }
    let memory = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref());
    if memory.is_some_and(|m| m.swap().is_some() && m.limit().is_none()) {
        problems.push(Problem::SwapWithoutLimit);
    }
    let sysctls = spec.linux().as_ref().and_then(|l| l.sysctl().clone());
    let mut keys: Vec<String> =
        sysctls.unwrap_or_default().into_keys().collect();
    keys.sort();
    for key in keys {
        let why = match sysctl_namespace(&key) {
            None => Some("not namespaced: it would change the host"),
            Some("network") if !new(LinuxNamespaceType::Network) => {
                Some("needs a new network namespace")
            }
            Some("ipc") if !new(LinuxNamespaceType::Ipc) => {
                Some("needs a new ipc namespace")
            }
            Some("uts") if !new(LinuxNamespaceType::Uts) => {
                Some("needs a new uts namespace")
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            problems.push(Problem::Sysctl { key, why });
        }
    }
    problems
}
// ANCHOR_END: check
