//! `config.json`'s mounts, devices and paths, as a step-3 mount plan plus
//! what is done after the pivot.
//!
//! Before the pivot, everything is an [`Op`] of [`crate::mount`]: the
//! `mounts` array (options parsed the way `mount(8)` spells them), the
//! default devices every container gets (runtime-spec `config-linux.md`),
//! `linux.devices`, and the `/dev` symlinks. After the pivot, with plain
//! paths inside the container ([`after_pivot`]): mount propagation,
//! `linux.sysctl`, `linux.readonlyPaths`, `linux.maskedPaths`, and a
//! read-only root last.

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sys::stat::SFlag;
use nix::sys::statvfs::{FsFlags, statvfs};
use oci_spec::runtime::{LinuxDeviceType, Spec};

use crate::mount::{DEV_SYMLINKS, Device, Mount, Op, TargetKind};

/// What can go wrong with mounts and paths.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bind mount's source does not exist.
    #[error("mount {destination:?}: its source {source_path:?} does not exist")]
    NoSource {
        /// The mount's destination.
        destination: PathBuf,
        /// Its source.
        source_path: PathBuf,
    },
    /// A mount destination is not absolute.
    #[error("mount destination {0:?} is not absolute")]
    Relative(PathBuf),
    /// An unknown `rootfsPropagation`.
    #[error(
        "linux.rootfsPropagation {0:?} is not one of shared, slave, private, unbindable (r-prefixed too)"
    )]
    Propagation(String),
    /// A device of an unknown type.
    #[error("linux.devices {path:?}: type {typ:?} is not c, b, u or p")]
    DeviceType {
        /// The device path.
        path: PathBuf,
        /// Its type.
        typ: String,
    },
    /// Reading the cgroup layout for a `cgroup` mount failed.
    #[error("cannot set up the cgroup mount")]
    Cgroup(#[source] crate::cgroup::Error),
    /// A syscall after the pivot failed.
    #[error("cannot {what} {path:?}")]
    After {
        /// What we were doing.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

/// A mount's options, split into what `mount(2)` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `MS_*` flags.
    pub flags: MsFlags,
    /// Propagation to apply afterwards (`MS_SHARED`, … with `MS_REC`).
    pub propagation: Option<MsFlags>,
    /// Filesystem-specific options (`mode=755,size=65536k`).
    pub data: Vec<String>,
}

/// Propagation flags for a `mount(8)` word.
fn propagation(word: &str) -> Option<MsFlags> {
    Some(match word {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

// ANCHOR: parse_options
/// Split `mount(8)`-style words into flags, propagation and data.
pub fn parse_options(words: &[String]) -> Options {
    let mut options = Options {
        flags: MsFlags::empty(),
        propagation: None,
        data: Vec::new(),
    };
    for word in words {
        let set = match word.as_str() {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "sync" => MsFlags::MS_SYNCHRONOUS,
            "dirsync" => MsFlags::MS_DIRSYNC,
            "mand" => MsFlags::MS_MANDLOCK,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            "bind" => MsFlags::MS_BIND,
            "rbind" => MsFlags::MS_BIND | MsFlags::MS_REC,
            // The defaults, or their negations: nothing to set.
            "rw" | "suid" | "dev" | "exec" | "async" | "atime" | "diratime"
            | "norelatime" | "nostrictatime" | "defaults" => MsFlags::empty(),
            other => {
                match propagation(other) {
                    Some(flags) => options.propagation = Some(flags),
                    None => options.data.push(other.to_owned()),
                }
                continue;
            }
        };
        options.flags |= set;
    }
    options
}
// ANCHOR_END: parse_options

/// The ops of a `cgroup` mount: cgroup2 itself, or (v1) a tmpfs with every
/// hierarchy below it — mounted fresh when the container has a cgroup
/// namespace, else the container's own cgroup directory bind-mounted from
/// the host (`cgroup` is that directory, relative to each hierarchy).
fn cgroup_mount(
    destination: &Path,
    options: &Options,
    layout: &crate::cgroup::Layout,
    cgroup: Option<&Path>,
) -> Vec<Op> {
    let mount = |source: PathBuf,
                 target: PathBuf,
                 fstype: Option<&str>,
                 flags,
                 data| {
        Op::Mount(Mount {
            source,
            target,
            fstype: fstype.map(str::to_owned),
            flags,
            data,
            kind: TargetKind::Dir,
        })
    };
    if let crate::cgroup::Layout::Unified { mount: host } = layout {
        return match cgroup {
            None => vec![mount(
                "cgroup2".into(),
                destination.into(),
                Some("cgroup2"),
                options.flags,
                None,
            )],
            Some(path) => vec![mount(
                host.join(path),
                destination.into(),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC | options.flags,
                None,
            )],
        };
    }
    // The tmpfs is writable (to make the mount points), like runc's.
    let tmpfs_flags = options.flags - MsFlags::MS_RDONLY;
    let mut ops = vec![mount(
        "tmpfs".into(),
        destination.into(),
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755".to_owned()),
    )];
    let crate::cgroup::Layout::Legacy { hierarchies } = layout else {
        return ops;
    };
    // Every v1 hierarchy, named ones too (`name=systemd`), as the host
    // mounts them; not the v2 tree a hybrid host has beside them.
    let v1 = hierarchies
        .iter()
        .filter(|h| h.controllers != [super::UNIFIED]);
    for hierarchy in v1 {
        let host = &hierarchy.mount;
        let Some(name) = host.file_name() else {
            continue;
        };
        let controllers = hierarchy.controllers.join(",");
        let target = destination.join(name);
        ops.push(match cgroup {
            None => mount(
                "cgroup".into(),
                target,
                Some("cgroup"),
                options.flags,
                Some(controllers),
            ),
            Some(path) => mount(
                host.join(path),
                target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC | options.flags,
                None,
            ),
        });
    }
    ops
}

/// The devices every container has (runtime-spec "Default Devices"), in
/// runc's order: in a user namespace they are bind mounts, and the order
/// shows in the mount table.
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/random", 1, 8),
    ("/dev/full", 1, 7),
    ("/dev/tty", 5, 0),
    ("/dev/zero", 1, 5),
    ("/dev/urandom", 1, 9),
];

/// Where the container's cgroup is, for bind-mounting it (no cgroup
/// namespace), relative to each hierarchy's root.
pub struct CgroupView<'a> {
    /// The host's layout: every hierarchy ([`super::full_layout`]).
    pub layout: &'a crate::cgroup::Layout,
    /// The container's cgroup path, or `None` with a cgroup namespace.
    pub bind: Option<&'a Path>,
}

// ANCHOR: plan
/// The step-3 mount plan for `spec`: mounts, devices, symlinks, pivot.
pub fn plan(
    spec: &Spec,
    bundle: &Path,
    cgroup: &CgroupView,
) -> Result<Vec<Op>, Error> {
    let mut ops = vec![Op::MakePrivate, Op::BindRootfs];
    for spec_mount in spec.mounts().as_deref().unwrap_or_default() {
        let destination = spec_mount.destination().clone();
        if !destination.is_absolute() {
            return Err(Error::Relative(destination));
        }
        let options =
            parse_options(spec_mount.options().as_deref().unwrap_or_default());
        let typ = spec_mount
            .typ()
            .clone()
            .unwrap_or_else(|| "none".to_owned());
        if typ == "cgroup" || typ == "cgroup2" {
            ops.extend(cgroup_mount(
                &destination,
                &options,
                cgroup.layout,
                cgroup.bind,
            ));
            continue;
        }
        let bind = typ == "bind" || options.flags.contains(MsFlags::MS_BIND);
        let source = spec_mount
            .source()
            .clone()
            .unwrap_or_else(|| PathBuf::from(&typ));
        let (source, kind) = if bind {
            // A relative source is relative to the bundle.
            let source = bundle.join(&source);
            let meta = fs::metadata(&source).map_err(|_| Error::NoSource {
                destination: destination.clone(),
                source_path: source.clone(),
            })?;
            let kind = if meta.is_dir() {
                TargetKind::Dir
            } else {
                TargetKind::File
            };
            (source, kind)
        } else {
            (source, TargetKind::Dir)
        };
        ops.push(Op::Mount(Mount {
            source,
            target: destination,
            fstype: (!bind).then_some(typ),
            flags: options.flags
                | if bind {
                    MsFlags::MS_BIND
                } else {
                    MsFlags::empty()
                },
            data: (!options.data.is_empty()).then(|| options.data.join(",")),
            kind,
        }));
    }
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for (path, major, minor) in DEFAULT_DEVICES {
        if !devices.iter().any(|d| d.path() == Path::new(path)) {
            ops.push(Op::Device(Device {
                path: PathBuf::from(path),
                kind: SFlag::S_IFCHR,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            }));
        }
    }
    for device in &devices {
        // `/dev/ptmx` is the container's devpts instance's (the symlink
        // below): a host ptmx node there (dockerd lists every host device
        // for `--privileged`) would open the host's ptys. runc drops it too.
        if device.path() == Path::new("/dev/ptmx") {
            continue;
        }
        let kind = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::DeviceType {
                    path: device.path().clone(),
                    typ: "a".to_owned(),
                });
            }
        };
        ops.push(Op::Device(Device {
            path: device.path().clone(),
            kind,
            major: device.major() as u64,
            minor: device.minor() as u64,
            mode: device.file_mode().unwrap_or(0o666),
            uid: device.uid().unwrap_or(0),
            gid: device.gid().unwrap_or(0),
        }));
    }
    for (link, target) in DEV_SYMLINKS {
        // A device the config asks for at one of these paths wins.
        if link != "/dev/ptmx"
            && devices.iter().any(|d| d.path() == Path::new(link))
        {
            continue;
        }
        ops.push(Op::Symlink {
            link: PathBuf::from(link),
            target: PathBuf::from(target),
        });
    }
    ops.push(Op::PivotRoot);
    Ok(ops)
}
// ANCHOR_END: plan

/// The flags a remount must keep: in a user namespace, `nosuid`, `nodev`
/// and `noexec` of a mount made outside are locked, and a remount that
/// drops them fails with `EPERM`.
fn kept_flags(path: &Path) -> MsFlags {
    let Ok(stat) = statvfs(path) else {
        return MsFlags::empty();
    };
    let flags = stat.flags();
    let mut kept = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
    ] {
        if flags.contains(fs_flag) {
            kept |= ms_flag;
        }
    }
    kept
}

fn after_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(Errno) -> Error + 'a {
    move |source| Error::After {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Make `path` read-only: bind it onto itself, remount read-only.
fn read_only(path: &Path) -> Result<(), Error> {
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(after_error("bind", path))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | kept_flags(path);
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(after_error("remount read-only", path))
}

// ANCHOR: after_pivot
/// What is done inside the new root, in this order: propagation, sysctls
/// (before `/proc/sys` turns read-only), read-only paths, masked paths
/// (runc's order, so that the mount tables compare equal), and a read-only
/// root last.
pub fn after_pivot(spec: &Spec) -> Result<(), Error> {
    crate::trace::event(
        8,
        || "after the pivot: sysctls, maskedPaths, readonlyPaths, rootfs ro",
    );
    for spec_mount in spec.mounts().as_deref().unwrap_or_default() {
        let options =
            parse_options(spec_mount.options().as_deref().unwrap_or_default());
        if let Some(flags) = options.propagation {
            let path = spec_mount.destination();
            mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
                .map_err(after_error("set the propagation of", path))?;
        }
    }
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(word) = linux.rootfs_propagation() {
        let flags = propagation(word)
            .ok_or_else(|| Error::Propagation(word.clone()))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            flags | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(after_error("set the propagation of", Path::new("/")))?;
    }
    let mut sysctls: Vec<_> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctls.sort();
    for (key, value) in sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value).map_err(|e| {
            after_error("write the sysctl", &path)(Errno::from_raw(
                e.raw_os_error().unwrap_or(0),
            ))
        })?;
    }
    for readonly in linux.readonly_paths().clone().unwrap_or_default() {
        let path = Path::new(&readonly);
        if fs::symlink_metadata(path).is_ok() {
            read_only(path)?;
        }
    }
    for masked in linux.masked_paths().clone().unwrap_or_default() {
        let path = Path::new(&masked);
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue; // Nothing there to hide.
        };
        if meta.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(after_error("mask", path))?;
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(after_error("mask", path))?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | kept_flags(Path::new("/"));
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(after_error("remount read-only", Path::new("/")))?;
    }
    Ok(())
}
// ANCHOR_END: after_pivot

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let words: Vec<String> = [
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rslave",
            "ro",
        ]
        .map(String::from)
        .to_vec();
        let options = parse_options(&words);
        assert_eq!(
            options.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | MsFlags::MS_RDONLY
        );
        assert_eq!(
            options.propagation,
            Some(MsFlags::MS_SLAVE | MsFlags::MS_REC)
        );
        assert_eq!(options.data, ["mode=755", "size=65536k"]);
    }
}
