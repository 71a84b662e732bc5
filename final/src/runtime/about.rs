//! What the runtime says about itself and writes for others: `spec` (a
//! starting `config.json`) and `features` (runtime-spec `features.md`:
//! what this runtime implements, asked of the code itself wherever it
//! can be, so that it cannot claim what it does not do).

use std::path::Path;

use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompFilterFlag, Spec};
use serde_json::{Value, json};
use step08_oci::oci::{check, mounts, seccomp};

use super::Error;

/// `spec` could not write `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A `config.json` is there already (runc's refusal too).
    #[error("{0} exists; remove it first")]
    Exists(String),
}

// ANCHOR: spec
/// `spec`: write a starting `config.json` into `bundle` — a root
/// container running `sh` with a terminal (runc's defaults), or with
/// `rootless`, one whose user namespace maps the caller's ids to root.
pub fn spec(bundle: &Path, rootless: bool) -> Result<(), Error> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(SpecError::Exists(path.display().to_string()).into());
    }
    let mut spec = if rootless {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        Spec::rootless(uid, gid)
    } else {
        Spec::default()
    };
    spec.set_hostname(Some("berth".to_owned()));
    if let Some(process) = spec.process_mut() {
        // runc's default: an interactive shell.
        process.set_terminal(Some(true));
    }
    let mut value = serde_json::to_value(&spec).unwrap_or_default();
    // The capability sets are hash sets: sorted, the file is the same
    // from one run to the next.
    if let Some(sets) = value.pointer_mut("/process/capabilities")
        && let Some(sets) = sets.as_object_mut()
    {
        for set in sets.values_mut() {
            if let Some(names) = set.as_array_mut() {
                names
                    .sort_by_key(|n| n.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    std::fs::write(&path, text + "\n")
        .map_err(crate::path_io::at("write", &path))
        .map_err(|e| Error::State(e.into()))
}
// ANCHOR_END: spec

/// The mount options runc's `features` knows of: ours are those that
/// step 8 turns into `mount(2)` flags or propagation rather than passing
/// them to the filesystem as data.
const CANDIDATE_OPTIONS: [&str; 36] = [
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rro",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "tmpcopyup",
    "unbindable",
    "rrw",
];

/// Every seccomp action of the spec.
const ACTIONS: [LinuxSeccompAction; 9] = [
    LinuxSeccompAction::ScmpActKill,
    LinuxSeccompAction::ScmpActKillProcess,
    LinuxSeccompAction::ScmpActKillThread,
    LinuxSeccompAction::ScmpActTrap,
    LinuxSeccompAction::ScmpActErrno,
    LinuxSeccompAction::ScmpActTrace,
    LinuxSeccompAction::ScmpActAllow,
    LinuxSeccompAction::ScmpActLog,
    LinuxSeccompAction::ScmpActNotify,
];

/// Every seccomp filter flag of the spec.
const FLAGS: [LinuxSeccompFilterFlag; 4] = [
    LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    LinuxSeccompFilterFlag::SeccompFilterFlagLog,
    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
    LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
];

/// The spec's name of an enum value (its JSON string).
fn name(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

// ANCHOR: features
/// `features`: runtime-spec `features.md`, as JSON.
pub fn features() -> String {
    let options: Vec<&str> = CANDIDATE_OPTIONS
        .into_iter()
        .filter(|word| {
            mounts::parse_options(&[(*word).to_owned()]).data.is_empty()
        })
        .collect();
    let actions: Vec<Value> = ACTIONS
        .into_iter()
        .filter(|a| seccomp::supports_action(*a))
        .map(name)
        .collect();
    let flags: Vec<Value> = FLAGS
        .into_iter()
        .filter(|flag| {
            let profile = oci_spec::runtime::LinuxSeccompBuilder::default()
                .default_action(LinuxSeccompAction::ScmpActAllow)
                .flags(vec![*flag])
                .build();
            profile.is_ok_and(|p| seccomp::flags(&p).is_ok())
        })
        .map(name)
        .collect();
    let capabilities: Vec<String> = caps::all()
        .into_iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let unsupported: Vec<&str> =
        check::UNSUPPORTED.iter().map(|(field, _)| *field).collect();
    let features = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer",
                  "startContainer", "poststart", "poststop"],
        "mountOptions": options,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid",
                           "user", "uts"],
            "capabilities": capabilities,
            "cgroup": {"v1": true, "v2": true, "systemd": false,
                       "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": actions,
                "operators": ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",
                              "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
                              "SCMP_CMP_MASKED_EQ"],
                "archs": ["SCMP_ARCH_X86_64"],
                "knownFlags": FLAGS.map(name),
                "supportedFlags": flags,
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}},
        },
        "annotations": {
            "org.berth.runtime.refused": unsupported.join(","),
            "org.berth.runtime.deviations":
                "delete of a created container kills it and deletes it, \
                 as runc does (containerd relies on it); runtime.md says \
                 it must fail",
        },
    });
    serde_json::to_string_pretty(&features).unwrap_or_default() + "\n"
}
// ANCHOR_END: features
