//! The OCI runtime spec of a container, as dockerd would write it for
//! the same `docker run` flags: Docker's default capabilities, mounts,
//! masked and read-only paths and device rules, then what the image
//! config and the request ask for. A pure function of its input
//! ([`Input`]), so that it is tested without a container.
//!
//! `tests/engine_spec.rs` compares the result with the `config.json`
//! dockerd (Debian's docker.io) writes for the same flags, field by
//! field; its snapshot lists what differs, and why is here:
//!
//! - the default seccomp profile is berth's own ([`super::seccomp`]):
//!   the snapshot lists the system calls it treats otherwise than
//!   Docker's;
//! - `/sys/devices/virtual/powercap` is masked, as Docker 25 on masks it
//!   (the packaged dockerd is older);
//! - with `--network host` there is no network namespace at all, where
//!   dockerd names the host's by a path of its own (the same namespace);
//! - not compared, because they are paths or names of each daemon's: the
//!   cgroup parent (`/berth`), mount sources, the container's id; no
//!   AppArmor or SELinux labels either (the runtime is LSM-free).
//!
//! The network is a new namespace with only loopback unless `--network
//! host`: bridge networking comes in a later issue.

use std::collections::BTreeMap;
use std::path::Path;

use bollard::models::{ContainerConfig, HostConfig};
use serde_json::{Value, json};

/// Docker's default capabilities (`docker run` without `--cap-add`).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `/proc` and `/sys` entries hidden from an unprivileged container.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// `/proc` entries made read-only in an unprivileged container.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Why a spec cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Neither the request nor the image names a program.
    #[error("no command specified")]
    NoCommand,
    /// `--cap-add`/`--cap-drop` of something that is not a capability.
    #[error("unknown capability: {0:?}")]
    Capability(String),
    /// `--ulimit` of an unknown resource.
    #[error("invalid ulimit type: {0}")]
    Ulimit(String),
    /// `--network` other than `none`, `host` or the default.
    #[error("network mode {0:?} is not supported (none and host are)")]
    Network(String),
    /// A `--tmpfs` destination that is not absolute.
    #[error("invalid tmpfs mount point {0:?}: not an absolute path")]
    Tmpfs(String),
    /// `--security-opt seccomp=…` that is not a profile.
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::Error),
}

/// What a container's spec is made of.
#[derive(Debug)]
pub struct Input<'a> {
    /// The container's id (its hostname is the first 12 characters).
    pub id: &'a str,
    /// The merged config: the image's, overridden by the request's.
    pub config: &'a ContainerConfig,
    /// The request's host config.
    pub host: &'a HostConfig,
    /// The user, resolved: uid, gid, additional gids.
    pub user: (u32, u32, Vec<u32>),
    /// The files bind-mounted over `/etc/hostname`, `/etc/hosts` and
    /// `/etc/resolv.conf` (each may be absent).
    pub etc: [(&'static str, Option<&'a Path>); 3],
    /// The host's cgroups are v2 only: a cgroup namespace of its own, as
    /// Docker gives one there (on v1 and hybrid hosts it shares the
    /// host's).
    pub cgroup_v2: bool,
    /// The host's name: the container's with `--network host`.
    pub host_name: &'a str,
    /// The init binary bind-mounted for `--init`.
    pub init: &'a Path,
}

/// Where `--init`'s binary is mounted in the container (Docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The program and its arguments: the entrypoint, then the command.
pub fn args(config: &ContainerConfig) -> Result<Vec<String>, Error> {
    let mut args: Vec<String> = config.entrypoint.clone().unwrap_or_default();
    args.extend(config.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        return Err(Error::NoCommand);
    }
    Ok(args)
}

/// `NAME` or `CAP_NAME`, any case, as `CAP_NAME`; `ALL` as itself.
fn capability(name: &str) -> Result<String, Error> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<caps::Capability>()
        .map(|_| full.clone())
        .map_err(|_| Error::Capability(name.to_owned()))
}

/// Every capability the kernel headers name (`--privileged`).
pub fn all_caps() -> Vec<String> {
    let mut all: Vec<String> =
        caps::all().iter().map(|c| c.to_string()).collect();
    all.sort();
    all
}

/// The capability set: Docker's default, `--cap-drop` taken away (ALL:
/// everything), `--cap-add` added (ALL: everything); `--privileged`: all.
fn capabilities(host: &HostConfig) -> Result<Vec<String>, Error> {
    if host.privileged == Some(true) {
        return Ok(all_caps());
    }
    let adds = host
        .cap_add
        .iter()
        .flatten()
        .map(|c| capability(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drops = host
        .cap_drop
        .iter()
        .flatten()
        .map(|c| capability(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut set: Vec<String> = if drops.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drops.contains(c))
            .collect()
    };
    if adds.iter().any(|a| a == "ALL") {
        set = all_caps();
    } else {
        for add in adds {
            if !set.contains(&add) {
                set.push(add);
            }
        }
    }
    Ok(set)
}

/// The resource limits of `--memory`, `--memory-swap`, `--cpus`,
/// `--cpu-shares`, `--pids-limit`.
fn resources(host: &HostConfig) -> Value {
    let mut resources = json!({
        "devices": devices(host.privileged == Some(true)),
    });
    let memory = host.memory.filter(|m| *m > 0);
    if let Some(limit) = memory {
        // Docker: no --memory-swap means as much swap as memory again;
        // -1 means unlimited.
        let swap = match host.memory_swap {
            Some(-1) => -1,
            Some(swap) if swap > 0 => swap,
            _ => limit.saturating_mul(2),
        };
        resources["memory"] = json!({ "limit": limit, "swap": swap });
    }
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = host.cpu_shares.filter(|s| *s > 0) {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(nano) = host.nano_cpus.filter(|n| *n > 0) {
        const PERIOD: i64 = 100_000;
        cpu.insert("period".into(), json!(PERIOD));
        cpu.insert(
            "quota".into(),
            json!(nano.saturating_mul(PERIOD) / 1_000_000_000),
        );
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = host.pids_limit.filter(|l| *l > 0) {
        resources["pids"] = json!({ "limit": limit });
    }
    resources
}

/// Docker's device rules: everything denied but `/dev/null`, `zero`,
/// `full`, `random`, `urandom`, `tty` and `console`, and `/dev/fuse`
/// denied explicitly; `--privileged`: everything allowed. (The runtime
/// adds its own rules for the pty devices, as runc does.)
fn devices(privileged: bool) -> Value {
    if privileged {
        return json!([{ "allow": true, "access": "rwm" }]);
    }
    let rule = |allow: bool, major: i64, minor: i64| json!({ "allow": allow, "type": "c", "major": major, "minor": minor, "access": "rwm" });
    json!([
        { "allow": false, "access": "rwm" },
        rule(true, 1, 5),
        rule(true, 1, 3),
        rule(true, 1, 9),
        rule(true, 1, 8),
        rule(true, 5, 0),
        rule(true, 5, 1),
        rule(false, 10, 229),
    ])
}

/// `--ulimit NAME=SOFT:HARD` as `process.rlimits`.
fn rlimits(host: &HostConfig) -> Result<Value, Error> {
    let mut out = Vec::new();
    for limit in host.ulimits.iter().flatten() {
        let name = limit.name.clone().unwrap_or_default();
        const KNOWN: [&str; 16] = [
            "as",
            "core",
            "cpu",
            "data",
            "fsize",
            "locks",
            "memlock",
            "msgqueue",
            "nice",
            "nofile",
            "nproc",
            "rss",
            "rtprio",
            "rttime",
            "sigpending",
            "stack",
        ];
        if !KNOWN.contains(&name.as_str()) {
            return Err(Error::Ulimit(name));
        }
        out.push(json!({
            "type": format!("RLIMIT_{}", name.to_ascii_uppercase()),
            "soft": limit.soft.unwrap_or(0).max(0),
            "hard": limit.hard.unwrap_or(0).max(0),
        }));
    }
    Ok(Value::Array(out))
}

/// Docker's mounts, then `--tmpfs`, then the `/etc` files.
fn mounts(input: &Input<'_>) -> Result<Vec<Value>, Error> {
    let host = input.host;
    let privileged = host.privileged == Some(true);
    let sys_options = if privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    let tmpfs: BTreeMap<_, _> =
        host.tmpfs.clone().unwrap_or_default().into_iter().collect();
    for (destination, options) in tmpfs {
        if !destination.starts_with('/') {
            return Err(Error::Tmpfs(destination));
        }
        let mut all = vec![
            "nosuid".to_owned(),
            "nodev".to_owned(),
            "noexec".to_owned(),
            "rprivate".to_owned(),
        ];
        all.extend(
            options
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_owned),
        );
        mounts.push(json!({"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": all}));
    }
    // Read-only too when the root is (Docker's choice: a read-only
    // container cannot rewrite its name or its resolver either).
    let etc_options = if host.readonly_rootfs == Some(true) {
        json!(["rbind", "rprivate", "ro"])
    } else {
        json!(["rbind", "rprivate"])
    };
    if host.init == Some(true) {
        mounts.push(json!({
            "destination": INIT_PATH,
            "type": "bind",
            "source": input.init,
            "options": ["bind", "ro"],
        }));
    }
    for (destination, source) in input.etc {
        if let Some(source) = source {
            mounts.push(json!({
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": etc_options,
            }));
        }
    }
    Ok(mounts)
}

/// The container's hostname: `--hostname`, else the host's with the
/// host's network (as Docker does, in a UTS namespace of its own all the
/// same), else the first 12 digits of its id.
pub fn hostname(
    config: &ContainerConfig,
    host: &HostConfig,
    id: &str,
    host_name: &str,
) -> String {
    match config.hostname.clone().filter(|h| !h.is_empty()) {
        Some(name) => name,
        None if host.network_mode.as_deref() == Some("host") => {
            host_name.to_owned()
        }
        None => id.chars().take(12).collect(),
    }
}

/// The spec.
pub fn build(input: &Input<'_>) -> Result<Value, Error> {
    let config = input.config;
    let host = input.host;
    let privileged = host.privileged == Some(true);
    let caps = capabilities(host)?;
    let tty = config.tty == Some(true);
    let mut env: Vec<String> = config.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                .into(),
        );
    }
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let network = host.network_mode.clone().unwrap_or_default();
    let host_network = network == "host";
    let hostname = hostname(config, host, input.id, input.host_name);
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    let mut namespaces = vec![
        json!({"type": "mount"}),
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
    ];
    if input.cgroup_v2 {
        namespaces.push(json!({"type": "cgroup"}));
    }
    match network.as_str() {
        "host" => {}
        "" | "default" | "none" | "bridge" => {
            namespaces.push(json!({"type": "network"}))
        }
        other => return Err(Error::Network(other.to_owned())),
    }
    let (uid, gid, supplementary) = &input.user;
    // Docker lists the primary group among the additional ones.
    let mut additional = vec![*gid];
    additional.extend(supplementary.iter().filter(|g| **g != *gid));
    // A user other than root starts with no effective or permitted
    // capabilities (Docker 23 on; the bounding set still applies to what
    // it may gain by exec'ing a program with file capabilities).
    let (effective, permitted) = if *uid == 0 {
        (caps.clone(), caps.clone())
    } else {
        (Vec::new(), Vec::new())
    };
    let mut linux = json!({
        "resources": resources(host),
        "cgroupsPath": format!("/berth/{}", input.id),
        "namespaces": namespaces,
    });
    if !host_network {
        // In a network namespace of its own, any port and ping are the
        // container's to use without privileges (Docker 20.10 on).
        linux["sysctl"] = json!({
            "net.ipv4.ip_unprivileged_port_start": "0",
            "net.ipv4.ping_group_range": "0 2147483647",
        });
    }
    if !privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    let security_opt = host.security_opt.clone().unwrap_or_default();
    if let Some(seccomp) =
        super::seccomp::for_container(&security_opt, privileged, &caps)?
    {
        linux["seccomp"] = seccomp;
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": tty,
            "user": { "uid": uid, "gid": gid, "additionalGids": additional },
            "oomScoreAdj": 0,
            "args": if host.init == Some(true) {
                let mut with_init = vec![INIT_PATH.to_owned(), "--".to_owned()];
                with_init.extend(args(config)?);
                with_init
            } else {
                args(config)?
            },
            "env": env,
            "cwd": config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
            "capabilities": {
                "bounding": caps, "effective": effective, "permitted": permitted,
            },
            "noNewPrivileges": host.security_opt.iter().flatten().any(|o| o == "no-new-privileges" || o == "no-new-privileges:true"),
            "rlimits": rlimits(host)?,
        },
        "root": { "path": "rootfs", "readonly": host.readonly_rootfs == Some(true) },
        "mounts": mounts(input)?,
        "linux": linux,
    });
    if let Some((height, width)) =
        console_size(host.console_size.as_deref()).filter(|_| tty)
    {
        spec["process"]["consoleSize"] =
            json!({ "height": height, "width": width });
    }
    spec["hostname"] = json!(hostname);
    Ok(spec)
}

/// Docker's `ConsoleSize` (`[height, width]`, the client's terminal) as
/// the pty's initial size, so that the container's first program sees
/// the right one (a resize after the start would come too late for it).
/// Nothing for a zero or a missing size; each side at most 65535.
pub fn console_size(size: Option<&[usize]>) -> Option<(u16, u16)> {
    match size? {
        [height, width] if *height > 0 && *width > 0 => Some((
            u16::try_from(*height).unwrap_or(u16::MAX),
            u16::try_from(*width).unwrap_or(u16::MAX),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::ResourcesUlimits;

    use super::*;

    fn input<'a>(
        config: &'a ContainerConfig,
        host: &'a HostConfig,
    ) -> Input<'a> {
        Input {
            id: "0123456789abcdef0123",
            config,
            host,
            user: (0, 0, vec![]),
            etc: [
                ("/etc/hostname", None),
                ("/etc/hosts", None),
                ("/etc/resolv.conf", None),
            ],
            cgroup_v2: true,
            host_name: "the-host",
            init: Path::new("/usr/libexec/berth-init"),
        }
    }

    #[test]
    fn console_sizes_are_taken_only_whole_and_clamped() {
        assert_eq!(console_size(Some(&[24, 80])), Some((24, 80)));
        assert_eq!(console_size(Some(&[70_000, 80])), Some((65535, 80)));
        assert_eq!(
            console_size(Some(&[usize::MAX, usize::MAX])),
            Some((65535, 65535))
        );
        assert_eq!(console_size(Some(&[0, 80])), None);
        assert_eq!(console_size(Some(&[24])), None);
        assert_eq!(console_size(Some(&[24, 80, 1])), None);
        assert_eq!(console_size(None), None);
    }

    #[test]
    fn the_defaults_are_dockers() {
        let config = ContainerConfig {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let host = HostConfig::default();
        let spec = build(&input(&config, &host)).unwrap();
        assert_eq!(spec["hostname"], "0123456789ab");
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            json!(DEFAULT_CAPS)
        );
        assert_eq!(spec["linux"]["maskedPaths"], json!(MASKED_PATHS));
        assert_eq!(spec["process"]["cwd"], "/");
        assert!(
            spec["process"]["env"][0]
                .as_str()
                .unwrap()
                .starts_with("PATH=")
        );
        let types: Vec<&str> = spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["mount", "pid", "ipc", "uts", "cgroup", "network"]);
    }

    #[test]
    fn flags_change_what_they_name() {
        let config = ContainerConfig {
            cmd: Some(vec!["sh".into()]),
            tty: Some(true),
            ..Default::default()
        };
        let host = HostConfig {
            cap_add: Some(vec!["net_admin".into()]),
            cap_drop: Some(vec!["CAP_CHOWN".into(), "kill".into()]),
            memory: Some(64 << 20),
            nano_cpus: Some(1_500_000_000),
            pids_limit: Some(100),
            readonly_rootfs: Some(true),
            network_mode: Some("host".into()),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(1024),
                hard: Some(1024),
            }]),
            tmpfs: Some([("/run".to_owned(), "size=1m".to_owned())].into()),
            ..Default::default()
        };
        let spec = build(&input(&config, &host)).unwrap();
        let caps = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&json!("CAP_NET_ADMIN")));
        assert!(
            !caps.contains(&json!("CAP_CHOWN"))
                && !caps.contains(&json!("CAP_KILL"))
        );
        assert_eq!(
            spec["linux"]["resources"]["memory"],
            json!({"limit": 64 << 20, "swap": 128 << 20})
        );
        assert_eq!(
            spec["linux"]["resources"]["cpu"],
            json!({"period": 100000, "quota": 150000})
        );
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 100);
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["hostname"], "the-host");
        assert_eq!(spec["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(spec["process"]["terminal"], true);
        assert!(
            spec["process"]["env"]
                .as_array()
                .unwrap()
                .contains(&json!("TERM=xterm"))
        );
        let tmpfs = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/run")
            .unwrap();
        assert_eq!(
            tmpfs["options"],
            json!(["nosuid", "nodev", "noexec", "rprivate", "size=1m"])
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let none = ContainerConfig::default();
        let host = HostConfig::default();
        assert_eq!(build(&input(&none, &host)).unwrap_err(), Error::NoCommand);
        let config = ContainerConfig {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let bad_cap = HostConfig {
            cap_add: Some(vec!["FLY".into()]),
            ..Default::default()
        };
        assert_eq!(
            build(&input(&config, &bad_cap)).unwrap_err(),
            Error::Capability("FLY".into())
        );
        let bad_net = HostConfig {
            network_mode: Some("container:x".into()),
            ..Default::default()
        };
        assert!(matches!(
            build(&input(&config, &bad_net)),
            Err(Error::Network(_))
        ));
    }
}
