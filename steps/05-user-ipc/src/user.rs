//! The user namespace (root inside, nobody outside) and the IPC namespace.
//!
//! `user_namespaces(7)`: a user namespace gives a process a private view of
//! user and group ids. The parent writes `/proc/PID/uid_map` and `gid_map`,
//! lines of `CONTAINER-ID HOST-ID COUNT`: with `0 100000 65536`, uid 0 in
//! the container is uid 100000 on the host. The container's root has every
//! capability *over its own namespaces* (it may mount a `/proc`, set the
//! hostname, pivot) and none over the host: files it creates belong to
//! 100000, and a host file owned by root is owned by the unmapped `nobody`
//! (65534) inside.
//!
//! Because all the other namespaces are created in the same `clone(2)` as
//! the user namespace, they belong to it, and an **ordinary user** may
//! create them all: that is a rootless container. The kernel allows an
//! unprivileged process exactly one mapping — its own uid and gid to one id
//! inside — and, for the gid map, only after `setgroups` is set to `deny`
//! (else the container's root could drop a group that was denying it
//! access to a file). Wider ranges need the setuid helpers `newuidmap(1)`
//! and `/etc/subuid`; that is out of scope here.
//!
//! The maps are the parent's work between the two sync points of
//! [`crate::child`] (the child's namespace must exist, and the child must
//! not act before it has an identity). After sync 1 the child switches to
//! the container's root with `setresuid(2)` / `setresgid(2)`.
//!
//! # The IPC namespace
//!
//! `ipc_namespaces(7)`: System V shared memory, semaphores and message
//! queues (and POSIX message queues) are looked up by key in a table per
//! IPC namespace. One flag, `CLONE_NEWIPC`, gives the container an empty
//! table of its own. It is so small a feature that it lives here, beside
//! the namespace that makes it (like every other one) possible without
//! root. From this step on it is always on, as in `docker run`.

use std::fmt;
use std::fs;
use std::str::FromStr;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Pid, Uid, setgroups, setresgid, setresuid};

use crate::child::Channel;

/// The flag for the IPC namespace, always used from this step on.
pub const IPC_CLONE_FLAGS: CloneFlags = CloneFlags::CLONE_NEWIPC;

/// The default range for root: 65536 ids from 100000, the convention of
/// `/etc/subuid`.
pub const DEFAULT_RANGE: IdMapping = IdMapping {
    container: 0,
    host: 100_000,
    size: 65_536,
};

/// What can go wrong with the id maps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--uid-map`/`--gid-map` value is malformed.
    #[error("invalid id mapping {value:?}: {reason}")]
    InvalidMapping {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two mappings overlap (the kernel would refuse the map).
    #[error("{kind} mappings {a} and {b} overlap")]
    Overlap {
        /// `uid` or `gid`.
        kind: &'static str,
        /// One mapping.
        a: IdMapping,
        /// The other.
        b: IdMapping,
    },
    /// An ordinary user asked for more than the kernel allows.
    #[error(
        "as an ordinary user, the only {kind} mapping allowed is your own id to one id inside \
         (e.g. 0:{own}:1); wider ranges need newuidmap(1)"
    )]
    Unprivileged {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The user's own id.
        own: u32,
    },
    /// Writing a map file failed.
    #[error("cannot write {path}")]
    WriteMap {
        /// The file.
        path: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The parent-death signal could not be re-armed, or the parent died.
    #[error("after the switch of ids")]
    ParentDeath(#[source] crate::child::Error),
    /// Switching to the container's root failed.
    #[error("cannot become uid {uid} / gid {gid} in the user namespace")]
    SetIds {
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

/// One line of a uid or gid map: `size` ids from `container` inside are
/// `size` ids from `host` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    /// First id inside the namespace.
    pub container: u32,
    /// First id outside.
    pub host: u32,
    /// How many ids.
    pub size: u32,
}

impl IdMapping {
    fn overlaps(&self, other: &IdMapping) -> bool {
        let inside = |m: &IdMapping| {
            (
                u64::from(m.container),
                u64::from(m.container) + u64::from(m.size),
            )
        };
        let outside = |m: &IdMapping| {
            (u64::from(m.host), u64::from(m.host) + u64::from(m.size))
        };
        let cross =
            |(a0, a1): (u64, u64), (b0, b1): (u64, u64)| a0 < b1 && b0 < a1;
        cross(inside(self), inside(other))
            || cross(outside(self), outside(other))
    }
}

impl FromStr for IdMapping {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidMapping {
            value: value.to_owned(),
            reason,
        };
        let fields: Vec<&str> = value.split(':').collect();
        let [container, host, size] = fields[..] else {
            return Err(invalid(
                "expected CONTAINER:HOST:SIZE, as in 0:100000:65536",
            ));
        };
        let number = |field: &str| {
            field.parse::<u32>().map_err(|_| invalid("not a number"))
        };
        let mapping = IdMapping {
            container: number(container)?,
            host: number(host)?,
            size: number(size)?,
        };
        if mapping.size == 0 {
            return Err(invalid("the size must not be 0"));
        }
        let end = |start: u32| u64::from(start) + u64::from(mapping.size);
        if end(mapping.container) > u64::from(u32::MAX)
            || end(mapping.host) > u64::from(u32::MAX)
        {
            return Err(invalid("the range goes past 4294967295"));
        }
        Ok(mapping)
    }
}

impl fmt::Display for IdMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container, self.host, self.size)
    }
}

/// The command-line options this module adds.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "user-options")]
pub struct Options {
    /// Run in a new user namespace (automatic when not run as root)
    #[arg(long)]
    pub userns: bool,
    /// Uid mapping CONTAINER:HOST:SIZE, repeatable; implies --userns
    /// [default: 0:100000:65536 as root, 0:YOUR-UID:1 otherwise]
    #[arg(long = "uid-map", value_name = "C:H:SIZE")]
    pub uid_maps: Vec<IdMapping>,
    /// Gid mapping CONTAINER:HOST:SIZE, repeatable; implies --userns
    /// [default: like the uid mapping, with your gid]
    #[arg(long = "gid-map", value_name = "C:H:SIZE")]
    pub gid_maps: Vec<IdMapping>,
}

/// The user namespace to create, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Lines of `/proc/PID/uid_map`.
    pub uid_map: Vec<IdMapping>,
    /// Lines of `/proc/PID/gid_map`.
    pub gid_map: Vec<IdMapping>,
    /// Write `deny` to `/proc/PID/setgroups` first (required without root).
    pub deny_setgroups: bool,
}

// ANCHOR: check
/// Check one map: no overlaps; without root, only the one mapping allowed.
fn check(
    kind: &'static str,
    map: &[IdMapping],
    rootless: bool,
    own: u32,
) -> Result<(), Error> {
    for (i, a) in map.iter().enumerate() {
        if let Some(b) = map[i + 1..].iter().find(|b| a.overlaps(b)) {
            return Err(Error::Overlap { kind, a: *a, b: *b });
        }
    }
    if rootless && !matches!(map, [m] if m.host == own && m.size == 1) {
        return Err(Error::Unprivileged { kind, own });
    }
    Ok(())
}
// ANCHOR_END: check

// ANCHOR: plan
/// The user namespace for `options`, run by `uid`/`gid` (the step's
/// effective ids): `None` if no user namespace is wanted. An ordinary user
/// always gets one — that is what makes the container rootless.
pub fn plan(
    options: &Options,
    uid: Uid,
    gid: Gid,
) -> Result<Option<Plan>, Error> {
    let rootless = !uid.is_root();
    let wanted = options.userns
        || rootless
        || !options.uid_maps.is_empty()
        || !options.gid_maps.is_empty();
    if !wanted {
        return Ok(None);
    }
    let default = |own: u32| {
        if rootless {
            vec![IdMapping {
                container: 0,
                host: own,
                size: 1,
            }]
        } else {
            vec![DEFAULT_RANGE]
        }
    };
    let pick = |given: &[IdMapping], own| {
        if given.is_empty() {
            default(own)
        } else {
            given.to_vec()
        }
    };
    let uid_map = pick(&options.uid_maps, uid.as_raw());
    let gid_map = pick(&options.gid_maps, gid.as_raw());
    check("uid", &uid_map, rootless, uid.as_raw())?;
    check("gid", &gid_map, rootless, gid.as_raw())?;
    Ok(Some(Plan {
        uid_map,
        gid_map,
        deny_setgroups: rootless,
    }))
}
// ANCHOR_END: plan

// ANCHOR: clone_flags
/// The `clone(2)` flags for `plan`: `CLONE_NEWIPC`, and `CLONE_NEWUSER`
/// when there is a user namespace.
pub fn clone_flags(plan: Option<&Plan>) -> CloneFlags {
    match plan {
        Some(_) => IPC_CLONE_FLAGS | CloneFlags::CLONE_NEWUSER,
        None => IPC_CLONE_FLAGS,
    }
}
// ANCHOR_END: clone_flags

/// The map file's content: one `CONTAINER HOST SIZE` line per mapping.
fn map_text(map: &[IdMapping]) -> String {
    map.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}

/// Write `text` to `path` in one `write(2)`, as the kernel requires.
fn write_file(path: String, text: &str) -> Result<(), Error> {
    fs::write(&path, text).map_err(|source| Error::WriteMap { path, source })
}

// ANCHOR: write_maps
/// Write the child's uid and gid maps. Call it in the parent, between
/// [`crate::child::spawn`] and [`crate::child::Child::wait`].
pub fn write_maps(plan: &Plan, child: Pid) -> Result<(), Error> {
    crate::trace::event(5, || {
        format!(
            "write /proc/{child}/uid_map {:?}, gid_map {:?}",
            map_text(&plan.uid_map).trim(),
            map_text(&plan.gid_map).trim()
        )
    });
    if plan.deny_setgroups {
        write_file(format!("/proc/{child}/setgroups"), "deny")?;
    }
    write_file(format!("/proc/{child}/uid_map"), &map_text(&plan.uid_map))?;
    write_file(format!("/proc/{child}/gid_map"), &map_text(&plan.gid_map))
}
// ANCHOR_END: write_maps

// ANCHOR: become_root
/// In the child, after sync 1: take the container's root identity (or its
/// lowest mapped id if 0 is not mapped). The child's ids are still the
/// host ids it was cloned with; they must become ids of the namespace.
pub fn become_root(plan: &Plan, channel: &Channel) -> Result<(), Error> {
    let lowest =
        |map: &[IdMapping]| map.iter().map(|m| m.container).min().unwrap_or(0);
    let (uid, gid) = (lowest(&plan.uid_map), lowest(&plan.gid_map));
    let failed = |source| Error::SetIds { uid, gid, source };
    if !plan.deny_setgroups {
        // No supplementary groups from the host come along.
        setgroups(&[]).map_err(failed)?;
    }
    let (gid, uid) = (Gid::from_raw(gid), Uid::from_raw(uid));
    crate::trace::event(5, || format!("setresgid({gid}), setresuid({uid})"));
    setresgid(gid, gid, gid).map_err(failed)?;
    setresuid(uid, uid, uid).map_err(failed)?;
    // The switch cleared the parent-death signal (prctl(2)): without it, a
    // `kill -9` of the step would leave this container running.
    channel
        .keep_parent_death_signal()
        .map_err(Error::ParentDeath)
}
// ANCHOR_END: become_root

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.deny_setgroups {
            writeln!(f, "/proc/CHILD/setgroups: deny")?;
        }
        write!(f, "/proc/CHILD/uid_map:\n{}", map_text(&self.uid_map))?;
        write!(f, "/proc/CHILD/gid_map:\n{}", map_text(&self.gid_map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(uid_maps: &[&str]) -> Options {
        Options {
            userns: false,
            uid_maps: uid_maps.iter().map(|m| m.parse().unwrap()).collect(),
            gid_maps: vec![],
        }
    }

    #[test]
    fn root_without_options_gets_no_user_namespace() {
        let plan =
            plan(&options(&[]), Uid::from_raw(0), Gid::from_raw(0)).unwrap();
        assert_eq!(plan, None);
    }

    #[test]
    fn an_ordinary_user_always_gets_one_mapping_of_their_own_ids() {
        let plan = plan(&options(&[]), Uid::from_raw(1000), Gid::from_raw(100))
            .unwrap()
            .unwrap();
        assert_eq!(plan.uid_map, ["0:1000:1".parse().unwrap()]);
        assert_eq!(plan.gid_map, ["0:100:1".parse().unwrap()]);
        assert!(plan.deny_setgroups);
        let wide = plan_error(&["0:1000:2"], 1000);
        assert!(matches!(
            wide,
            Error::Unprivileged {
                kind: "uid",
                own: 1000
            }
        ));
    }

    fn plan_error(uid_maps: &[&str], uid: u32) -> Error {
        plan(&options(uid_maps), Uid::from_raw(uid), Gid::from_raw(uid))
            .unwrap_err()
    }

    #[test]
    fn overlapping_and_malformed_mappings_are_refused() {
        assert!(matches!(
            plan_error(&["0:100000:10", "5:200000:10"], 0),
            Error::Overlap { kind: "uid", .. }
        ));
        for bad in ["0:1", "a:1:1", "0:1:0", "0:4294967295:2"] {
            assert!(bad.parse::<IdMapping>().is_err(), "{bad}");
        }
    }
}
