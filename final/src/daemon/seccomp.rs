//! The seccomp profile of a container: berth's default, a file of the
//! user's (`--security-opt seccomp=FILE`, in Docker's profile format), or
//! none (`seccomp=unconfined`, `--privileged`).
//!
//! # The default
//!
//! An allow-list: a system call the list does not name fails with
//! `EPERM`, so a call newer than the list is refused until someone looks
//! at it. The list is every x86_64 system call step 8 knows by name,
//! minus those that reach what a namespace does not isolate:
//!
//! | refused                                  | why                                            | unless          |
//! |------------------------------------------|------------------------------------------------|-----------------|
//! | `mount`, `umount2`, `pivot_root`, the new mount API (`open_tree_attr` too), `unshare`, `setns`, `clone` with namespace flags, `clone3` (`ENOSYS`: libc falls back to `clone`, whose flags a filter can see) | new namespaces and mounts are where container escapes begin | `CAP_SYS_ADMIN` |
//! | `swapon`, `swapoff`, `quotactl`, `fanotify_init`, `name_to_handle_at`, `lookup_dcookie` | the host's devices and files by handle     | `CAP_SYS_ADMIN` |
//! | `bpf`, `perf_event_open`                 | kernel programs and counters, host-wide        | `CAP_SYS_ADMIN`, `CAP_BPF` / `CAP_PERFMON` |
//! | `init_module`, `finit_module`, `delete_module` | the kernel itself                        | `CAP_SYS_MODULE` |
//! | `reboot`, `kexec_load`, `kexec_file_load` | the machine                                   | `CAP_SYS_BOOT`  |
//! | `settimeofday`, `clock_settime`          | the clock is not namespaced (`adjtimex` and `clock_adjtime` stay: the kernel refuses their writes without the capability) | `CAP_SYS_TIME`  |
//! | `process_vm_readv`/`writev`, `kcmp`, `pidfd_getfd`, `userfaultfd` | other processes' memory and files | `CAP_SYS_PTRACE` |
//! | `iopl`, `ioperm`                         | raw I/O ports                                  | `CAP_SYS_RAWIO` |
//! | `acct`, `syslog`, `vhangup`              | host-wide accounting, the kernel log, ttys     | their capability |
//! | `mbind`, `set_mempolicy(_home_node)`, `get_mempolicy`, `move_pages`, `migrate_pages` | NUMA placement of the host's memory | `CAP_SYS_NICE`  |
//! | `open_by_handle_at`                      | any file by handle, around the mount namespace | `CAP_DAC_READ_SEARCH` |
//! | `add_key`, `request_key`, `keyctl`       | the keyring is not namespaced                  | never           |
//! | `io_uring_*`                             | a second path into the kernel a filter cannot see | never        |
//! | `uselib`, `ustat`, `sysfs`, `_sysctl`, `nfsservctl`, `vm86*`, `create_module`, `get_kernel_syms`, `query_module`, the unimplemented ones | obsolete | never |
//!
//! and two calls allowed only with harmless arguments: `personality`
//! (the few personas programs ask for, and the query), and `socket` for
//! any family but `AF_VSOCK` (a way to the hypervisor, outside every
//! namespace).
//!
//! Docker's own profile, which this follows in spirit but is not copied
//! from, names what it allows instead; `tests/engine_spec.rs` lists the
//! calls the two profiles treat differently (its snapshot is the list).
//! Against Debian's dockerd 20.10: berth allows the calls added to Linux
//! since that profile was written that need no privilege (`cachestat`,
//! `fchmodat2`, the `futex_*` calls, `listmount`/`statmount`, the
//! `*xattrat` calls, `mseal`, `map_shadow_stack`, the `lsm_*` calls, the
//! `pkey_*` calls, `process_madvise`, `uprobe`), and `sethostname` and
//! `setdomainname`, which change only the container's own UTS namespace
//! (and need `CAP_SYS_ADMIN` all the same); it refuses `io_uring_*`, as
//! Docker 25 does, and `socket(AF_VSOCK)`.
//!
//! # Profiles of the user
//!
//! Docker's format: `defaultAction`, `defaultErrnoRet`, `syscalls` of
//! `names` (or `name`), `action`, `args`, `errnoRet`, and conditions
//! `includes`/`excludes` on capabilities and architectures. They are
//! resolved here against the container's capabilities into the OCI
//! runtime spec's `linux.seccomp`. Simplification: `minKernel`
//! conditions are taken as met.

use serde_json::{Value, json};

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not JSON, or not a profile.
    #[error("invalid seccomp profile: {0}")]
    Invalid(String),
}

/// `clone(2)` flags that make namespaces.
const NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// `AF_VSOCK`.
const AF_VSOCK: u64 = 40;
/// The last address family Linux knows (`AF_MCTP`; `AF_MAX` is 46).
const AF_LAST: u64 = 45;
/// The `personality(2)` values allowed: Linux, with `UNAME26`, with
/// `ADDR_LIMIT_32BIT`… as 32-bit programs and old builds ask; and the
/// query (`0xffffffff`).
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Calls refused unless the container holds one of the capabilities.
const GATED: [(&[&str], &[&str]); 13] = [
    (
        &["CAP_SYS_ADMIN"],
        &[
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "open_tree_attr",
            "unshare",
            "setns",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "fanotify_init",
            "name_to_handle_at",
            "lookup_dcookie",
        ],
    ),
    (&["CAP_SYS_ADMIN", "CAP_BPF"], &["bpf"]),
    (&["CAP_SYS_ADMIN", "CAP_PERFMON"], &["perf_event_open"]),
    (
        &["CAP_SYS_MODULE"],
        &["init_module", "finit_module", "delete_module"],
    ),
    (
        &["CAP_SYS_BOOT"],
        &["reboot", "kexec_load", "kexec_file_load"],
    ),
    (&["CAP_SYS_TIME"], &["settimeofday", "clock_settime"]),
    (
        &["CAP_SYS_PTRACE"],
        &[
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
            "userfaultfd",
        ],
    ),
    (&["CAP_SYS_RAWIO"], &["iopl", "ioperm"]),
    (&["CAP_SYS_PACCT"], &["acct"]),
    (&["CAP_SYSLOG"], &["syslog"]),
    (&["CAP_SYS_TTY_CONFIG"], &["vhangup"]),
    (
        &["CAP_SYS_NICE"],
        &[
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "get_mempolicy",
            "move_pages",
            "migrate_pages",
        ],
    ),
    (&["CAP_DAC_READ_SEARCH"], &["open_by_handle_at"]),
];

/// Calls refused whatever the capabilities.
const NEVER: [&str; 22] = [
    "add_key",
    "request_key",
    "keyctl",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    "vm86",
    "vm86old",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "afs_syscall",
    "tuxcall",
    "security",
    "vserver",
    "getpmsg",
    "putpmsg",
];

/// Calls with a rule of their own below.
const SPECIAL: [&str; 4] = ["clone", "clone3", "personality", "socket"];

/// berth's default profile, in Docker's format (resolved per container
/// by [`resolve`]).
pub fn default_profile() -> Value {
    let refused: Vec<&str> = GATED
        .iter()
        .flat_map(|(_, names)| names.iter().copied())
        .chain(NEVER)
        .chain(SPECIAL)
        .collect();
    let mut allowed: Vec<String> = syscalls::Sysno::iter()
        .map(|s| s.name().to_owned())
        .filter(|n| !refused.contains(&n.as_str()))
        .collect();
    allowed.sort();
    let mut rules =
        vec![json!({ "names": allowed, "action": "SCMP_ACT_ALLOW" })];
    for (caps, names) in GATED {
        // One rule per capability: any of them opens the calls.
        for cap in caps {
            rules.push(json!({
                "names": names,
                "action": "SCMP_ACT_ALLOW",
                "includes": { "caps": [cap] },
            }));
        }
    }
    rules.extend([
        json!({
            "names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }],
            "excludes": { "caps": ["CAP_SYS_ADMIN"] },
        }),
        json!({
            "names": ["clone", "clone3"], "action": "SCMP_ACT_ALLOW",
            "includes": { "caps": ["CAP_SYS_ADMIN"] },
        }),
        json!({
            "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS,
            "excludes": { "caps": ["CAP_SYS_ADMIN"] },
        }),
    ]);
    // socket(2) for every family but AF_VSOCK. Not `arg0 != 40`: the
    // filter sees all 64 bits of the register, the kernel only the low 32
    // (`int family`), so 0x1_0000_0028 would pass a `!=` and still be
    // AF_VSOCK. Exact values below and above it instead, which a
    // register with high bits set matches in neither case (and which
    // libseccomp, under runc, reads as this does: no rule overrides
    // another).
    rules.push(json!({
        "names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{ "index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_LT" }],
    }));
    for family in AF_VSOCK + 1..=AF_LAST {
        rules.push(json!({
            "names": ["socket"], "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": family, "op": "SCMP_CMP_EQ" }],
        }));
    }
    for persona in PERSONAS {
        rules.push(json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": persona, "op": "SCMP_CMP_EQ" }],
        }));
    }
    // SCMP_ACT_ERRNO without errnoRet is EPERM.
    json!({ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules })
}

/// The architectures a profile's filter takes, as Docker lists them for
/// x86_64 hosts (step 8's filter knows the native one; calls of the
/// others get the default action).
const ARCHITECTURES: [&str; 3] =
    ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

/// Whether a rule's `includes`/`excludes` hold for a container with
/// `caps` on x86_64.
fn applies(rule: &Value, caps: &[String]) -> bool {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let arch =
        |a: &String| a == "amd64" || a == "x86_64" || a == "SCMP_ARCH_X86_64";
    let includes = &rule["includes"];
    let excludes = &rule["excludes"];
    let needs = list(&includes["caps"]);
    let arches = list(&includes["arches"]);
    if !needs.iter().all(|c| caps.contains(c)) {
        return false;
    }
    if !arches.is_empty() && !arches.iter().any(arch) {
        return false;
    }
    if list(&excludes["caps"]).iter().any(|c| caps.contains(c)) {
        return false;
    }
    !list(&excludes["arches"]).iter().any(arch)
}

/// Resolve a profile in Docker's format for a container whose bounding
/// set is `caps`: the runtime spec's `linux.seccomp`.
pub fn resolve(profile: &Value, caps: &[String]) -> Result<Value, Error> {
    let invalid = |what: &str| Error::Invalid(what.to_owned());
    let default = profile["defaultAction"]
        .as_str()
        .ok_or_else(|| invalid("no defaultAction"))?;
    let mut syscalls = Vec::new();
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        if !applies(rule, caps) {
            continue;
        }
        let mut names: Vec<Value> =
            rule["names"].as_array().cloned().unwrap_or_default();
        if let Some(name) = rule["name"].as_str() {
            names.push(json!(name));
        }
        if names.is_empty() || !names.iter().all(Value::is_string) {
            return Err(invalid("a rule names no system call"));
        }
        let action = rule["action"]
            .as_str()
            .ok_or_else(|| invalid("a rule has no action"))?;
        let mut out = json!({ "names": names, "action": action });
        if let Some(args) = rule["args"].as_array().filter(|a| !a.is_empty()) {
            out["args"] = json!(args);
        }
        if let Some(errno) = rule["errnoRet"].as_u64() {
            out["errnoRet"] = json!(errno);
        }
        syscalls.push(out);
    }
    let mut seccomp = json!({
        "defaultAction": default,
        "architectures": ARCHITECTURES,
        "syscalls": syscalls,
    });
    if let Some(errno) = profile["defaultErrnoRet"].as_u64() {
        seccomp["defaultErrnoRet"] = json!(errno);
    }
    Ok(seccomp)
}

/// The `linux.seccomp` of a container: `None` for none (privileged, or
/// `seccomp=unconfined`), else the profile of `seccomp=JSON` (the docker
/// CLI sends a file's contents) or the default, resolved for `caps`.
pub fn for_container(
    security_opt: &[String],
    privileged: bool,
    caps: &[String],
) -> Result<Option<Value>, Error> {
    let chosen = security_opt.iter().rev().find_map(|o| {
        o.strip_prefix("seccomp=")
            .or_else(|| o.strip_prefix("seccomp:"))
    });
    let profile = match chosen {
        Some("unconfined") => return Ok(None),
        None if privileged => return Ok(None),
        None | Some("builtin") => default_profile(),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Error::Invalid(e.to_string()))?,
    };
    resolve(&profile, caps).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|c| (*c).to_owned()).collect()
    }

    /// Every name the resolved profile lets through unconditionally.
    fn allowed(seccomp: &Value) -> Vec<String> {
        seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none()
            })
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_default_refuses_what_namespaces_do_not_isolate() {
        let plain = resolve(&default_profile(), &caps(&["CAP_CHOWN"])).unwrap();
        let names = allowed(&plain);
        for call in [
            "read",
            "write",
            "openat",
            "execve",
            "chroot",
            "ptrace",
            "sethostname",
        ] {
            assert!(names.iter().any(|n| n == call), "{call}");
        }
        for call in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "bpf",
            "init_module",
            "io_uring_setup",
            "clone3",
            "clone",
        ] {
            assert!(!names.iter().any(|n| n == call), "{call}");
        }
        assert_eq!(plain["defaultAction"], "SCMP_ACT_ERRNO");
        // socket: by exact family, never by `!=` (see default_profile).
        let socket_rules: Vec<&Value> = plain["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["names"].as_array().unwrap().iter().any(|n| n == "socket")
            })
            .collect();
        assert!(socket_rules.iter().all(|r| {
            let op = &r["args"][0]["op"];
            op == "SCMP_CMP_LT" || op == "SCMP_CMP_EQ"
        }));
        // The capability opens its calls, and clone without conditions.
        let admin =
            resolve(&default_profile(), &caps(&["CAP_SYS_ADMIN"])).unwrap();
        let names = allowed(&admin);
        for call in ["mount", "unshare", "setns", "bpf", "clone", "clone3"] {
            assert!(names.iter().any(|n| n == call), "{call}");
        }
        assert!(!names.iter().any(|n| n == "keyctl"));
        // The filter fits the kernel's limit.
        let spec: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(admin).unwrap();
        assert!(crate::oci::seccomp::compile(&spec).is_ok());
    }

    #[test]
    fn unconfined_privileged_and_the_users_file() {
        assert_eq!(
            for_container(&["seccomp=unconfined".into()], false, &[]),
            Ok(None)
        );
        assert_eq!(for_container(&[], true, &[]), Ok(None));
        let mine = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"name":"mkdir","action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["chmod"],"action":"SCMP_ACT_ERRNO","includes":{"arches":["arm64"]}},
            {"names":["chown"],"action":"SCMP_ACT_ERRNO","excludes":{"caps":["CAP_CHOWN"]}}]}"#;
        let resolved = for_container(
            &[format!("seccomp={mine}")],
            true,
            &caps(&["CAP_CHOWN"]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            resolved["syscalls"],
            json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}])
        );
        assert!(for_container(&["seccomp={".into()], false, &[]).is_err());
        assert!(
            for_container(&[r#"seccomp={"syscalls":[]}"#.into()], false, &[])
                .is_err()
        );
    }
}
