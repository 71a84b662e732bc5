//! A container's state: what `create` records in its directory under the
//! runtime's root, and its status, *observed* from the kernel each time it
//! is asked for.
//!
//! ```text
//!   ROOT/                     0700: nobody else may reach inside
//!   └── ID/                   0711: the container process, with its own
//!       │                           uid, only opens exec.fifo in it
//!       ├── state.json        0600: Record (pid + start time, bundle, …)
//!       ├── config.json       0600: the spec as create read it (poststop
//!       │                           hooks and the cgroup, after the bundle
//!       │                           may be gone)
//!       └── exec.fifo         0622: present while the container is created
//! ```
//!
//! A stored status would lie the moment the process exits, or is killed
//! from outside, or its pid is reused: so none is stored. [`Container::status`]
//! asks instead: is a process with this pid *and this start time* alive
//! (the start time, field 22 of `/proc/PID/stat`, tells a reused pid
//! apart); is the exec FIFO still there; is the cgroup frozen.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use step08_oci::cgroup::{Cgroup, CgroupPath};
use step08_oci::oci::{self, exec_fifo, pidfd};

use crate::path_io::{self, PathIo};

/// The record's file.
pub const STATE_FILE: &str = "state.json";
/// The copy of the spec.
pub const CONFIG_FILE: &str = "config.json";

/// What can go wrong with a container's state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container has this id.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// A container with this id exists already.
    #[error("container {0} already exists")]
    Exists(String),
    /// The id is not a valid one.
    #[error(transparent)]
    Id(oci::Error),
    /// A file or directory of the state.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// A state file that is not what we wrote.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The per-container lock.
    #[error("cannot lock {path}")]
    Lock {
        /// The container's directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Errno,
    },
}

// ANCHOR: status
/// Where a container is in its life (runtime-spec `runtime.md`, "State";
/// `paused` is runc's addition, which containerd and docker use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is still setting it up.
    Creating,
    /// Set up; its process waits at the exec FIFO for `start`.
    Created,
    /// Its process runs the user's program.
    Running,
    /// Its cgroup is frozen (`pause`).
    Paused,
    /// Its process has exited (or never ran): only `delete` is left.
    Stopped,
}

impl Status {
    /// The name the spec gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }

    /// `start` runs the user's program of a created container only.
    pub fn can_start(self) -> bool {
        match self {
            Status::Created => true,
            Status::Creating
            | Status::Running
            | Status::Paused
            | Status::Stopped => false,
        }
    }

    /// `kill` needs a process to signal.
    pub fn can_kill(self) -> bool {
        match self {
            Status::Created | Status::Running | Status::Paused => true,
            Status::Creating | Status::Stopped => false,
        }
    }

    /// `delete` without `--force`: a stopped container, and (as runc
    /// does, and containerd relies on) a created one, whose process has
    /// not run anything of the user's yet.
    pub fn can_delete(self) -> bool {
        match self {
            Status::Created | Status::Stopped => true,
            Status::Creating | Status::Running | Status::Paused => false,
        }
    }

    /// `pause` freezes a running container.
    pub fn can_pause(self) -> bool {
        match self {
            Status::Running => true,
            Status::Creating
            | Status::Created
            | Status::Paused
            | Status::Stopped => false,
        }
    }

    /// `exec` needs the container's namespaces, alive and not frozen.
    pub fn can_exec(self) -> bool {
        match self {
            Status::Created | Status::Running => true,
            Status::Creating | Status::Paused | Status::Stopped => false,
        }
    }

    /// `resume` thaws a paused one.
    pub fn can_resume(self) -> bool {
        match self {
            Status::Paused => true,
            Status::Creating
            | Status::Created
            | Status::Running
            | Status::Stopped => false,
        }
    }
}
// ANCHOR_END: status

// ANCHOR: identity
/// A process, told apart from any later one with the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its pid, as the host sees it.
    pub pid: i32,
    /// When it started, in clock ticks after boot (`proc(5)`, field 22
    /// of `/proc/PID/stat`).
    pub start_time: u64,
}

/// Field 3 (the state letter) and field 22 (the start time) of
/// `/proc/PID/stat`. The second field, the command name in parentheses,
/// may hold spaces and parentheses itself: the fields that follow are
/// counted from the *last* `)`.
fn stat_fields(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

impl Identity {
    /// The process with pid `pid` now, if there is one.
    pub fn of(pid: Pid) -> Option<Identity> {
        let (_, start_time) = stat_fields(pid.as_raw())?;
        Some(Identity {
            pid: pid.as_raw(),
            start_time,
        })
    }

    /// Whether this very process is alive: a zombie (`Z`) or dead (`X`)
    /// one has exited; another start time is another process.
    pub fn is_alive(&self) -> bool {
        stat_fields(self.pid).is_some_and(|(state, start_time)| {
            start_time == self.start_time && !matches!(state, 'Z' | 'X')
        })
    }

    /// A pidfd of this process (`pidfd_open(2)`), checked *after* it was
    /// opened: the pidfd pins what it names, so a match now means every
    /// signal sent through it reaches this process and no other.
    pub fn pidfd(&self) -> Result<OwnedFd, Errno> {
        let fd = pidfd::open(Pid::from_raw(self.pid))?;
        if self.is_alive() {
            Ok(fd)
        } else {
            Err(Errno::ESRCH)
        }
    }
}
// ANCHOR_END: identity

/// What `create` records (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The container's id.
    pub id: String,
    /// Its bundle (absolute).
    pub bundle: PathBuf,
    /// Its root filesystem (absolute).
    pub rootfs: PathBuf,
    /// When `create` began (RFC 3339).
    pub created: String,
    /// Who created it: the effective uid (its name is looked up only when
    /// shown: a lookup goes through NSS, which costs a create time).
    pub owner: u32,
    /// The spec's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its cgroup, relative to each hierarchy's root.
    pub cgroup_path: PathBuf,
    /// Its process, once there is one.
    pub process: Option<Identity>,
}

/// A container found under the runtime's root.
#[derive(Debug)]
pub struct Container {
    /// Its directory, `ROOT/ID`.
    pub dir: PathBuf,
    /// What `create` recorded.
    pub record: Record,
    /// The container's lock, when this command holds it.
    lock: Option<Lock>,
}

/// `ROOT/ID`, once the id is known to be safe as a file name.
pub fn dir_of(root: &Path, id: &str) -> Result<PathBuf, Error> {
    oci::check_id(id).map_err(Error::Id)?;
    Ok(root.join(id))
}

/// Write `bytes` to `path` atomically (a temporary file, then
/// `rename(2)`), mode 0600: a reader sees the old or the new, never half.
/// No `fsync`: the state lives under `/run` (a tmpfs), which a crash or a
/// reboot empties along with every container it describes; an fsync per
/// write would cost milliseconds per command for nothing. (The engine's
/// state, which must survive, is another matter: issue 9.)
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(path_io::at("create", &tmp))?;
    file.write_all(bytes).map_err(path_io::at("write", &tmp))?;
    fs::rename(&tmp, path).map_err(path_io::at("rename into", path))?;
    Ok(())
}

impl Container {
    /// Make `ROOT/ID` for a new container (`ROOT` 0700 if made now) and
    /// lock it; [`Error::Exists`] if the id is taken.
    pub fn make_dir(root: &Path, id: &str) -> Result<(PathBuf, Lock), Error> {
        let dir = dir_of(root, id)?;
        if !root.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(path_io::at("create the root", root))?;
        }
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.to_owned()));
            }
            other => other.map_err(path_io::at("create", &dir))?,
        }
        // The mode is 0711 whatever the umask.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
            .map_err(path_io::at("chmod", &dir))?;
        let lock = Lock::exclusive(&dir)?;
        Ok((dir, lock))
    }

    /// The container `id` under `root`, without its lock (for `state` and
    /// `list`, which only look).
    pub fn load(root: &Path, id: &str) -> Result<Container, Error> {
        let dir = dir_of(root, id)?;
        let path = dir.join(STATE_FILE);
        let text = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_owned()));
            }
            other => other.map_err(path_io::at("read", &path))?,
        };
        let record: Record =
            serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if record.id != id {
            return Err(Error::Corrupt {
                path,
                message: format!("it is the state of {:?}", record.id),
            });
        }
        Ok(Container {
            dir,
            record,
            lock: None,
        })
    }

    /// The container `id`, locked against every other command that
    /// changes it until this value is dropped (waits for the lock).
    pub fn load_locked(root: &Path, id: &str) -> Result<Container, Error> {
        let dir = dir_of(root, id)?;
        if !dir.is_dir() {
            return Err(Error::NotFound(id.to_owned()));
        }
        let lock = Lock::exclusive(&dir)?;
        let mut container = Container::load(root, id)?;
        container.lock = Some(lock);
        Ok(container)
    }

    /// A new container's record, saved, with the lock of `make_dir`.
    pub fn new(
        dir: PathBuf,
        record: Record,
        lock: Lock,
    ) -> Result<Self, Error> {
        let container = Container {
            dir,
            record,
            lock: Some(lock),
        };
        container.save()?;
        Ok(container)
    }

    /// Write the record (atomically).
    pub fn save(&self) -> Result<(), Error> {
        let bytes =
            serde_json::to_vec(&self.record).map_err(|e| Error::Corrupt {
                path: self.dir.join(STATE_FILE),
                message: e.to_string(),
            })?;
        write_atomic(&self.dir.join(STATE_FILE), &bytes)
    }

    /// The spec `create` read.
    pub fn spec(&self) -> Result<Spec, Error> {
        let path = self.dir.join(CONFIG_FILE);
        let text = fs::read(&path).map_err(path_io::at("read", &path))?;
        serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    /// The container's cgroup (which may not exist: a rootless container
    /// without limits has none). Dropping it leaves it in place.
    pub fn cgroup(&self) -> Result<Cgroup, oci::Error> {
        let layout = oci::full_layout()?;
        let path = CgroupPath::parse_field(
            &self.record.cgroup_path.to_string_lossy(),
            "cgroup path",
        )
        .map_err(oci::Error::CgroupsPath)?;
        Ok(Cgroup::open(&layout, &path))
    }

    // ANCHOR: observe
    /// The status, observed now (see the module docs).
    pub fn status(&self) -> Status {
        let Some(process) = self.record.process else {
            // No process yet: `create` is at work if it holds the lock; if
            // nobody does (or we do), it died halfway.
            if self.lock.is_some() {
                return Status::Stopped;
            }
            return match Lock::try_exclusive(&self.dir) {
                Ok(None) => Status::Creating,
                Ok(Some(_)) | Err(_) => Status::Stopped,
            };
        };
        if !process.is_alive() {
            return Status::Stopped;
        }
        if self.dir.join(exec_fifo::NAME).exists() {
            return Status::Created;
        }
        let frozen = self.cgroup().ok().and_then(|c| c.is_frozen().ok());
        if frozen == Some(true) {
            Status::Paused
        } else {
            Status::Running
        }
    }
    // ANCHOR_END: observe

    /// Every container under `root`, in id order; entries that are not
    /// containers (or vanish meanwhile) are skipped.
    pub fn list(root: &Path) -> Result<Vec<Container>, Error> {
        let entries = match fs::read_dir(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Vec::new());
            }
            other => other.map_err(path_io::at("read", root))?,
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids
            .iter()
            .filter_map(|id| Container::load(root, id).ok())
            .collect())
    }

    /// Remove the container's directory (its lock goes with it).
    pub fn remove(self) -> Result<(), Error> {
        fs::remove_dir_all(&self.dir)
            .map_err(path_io::at("remove", &self.dir))?;
        Ok(())
    }
}

/// A lock on one container's directory (`flock(2)`): commands that change
/// a container run one at a time. It is released when dropped, or when
/// the process holding it dies, however it dies.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] Flock<OwnedFd>);

impl Lock {
    fn open(dir: &Path) -> Result<OwnedFd, Error> {
        let flags = nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC;
        nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty()).map_err(
            |source| Error::Lock {
                path: dir.to_owned(),
                source,
            },
        )
    }

    /// Wait for the lock of `dir`.
    pub fn exclusive(dir: &Path) -> Result<Lock, Error> {
        let fd = Lock::open(dir)?;
        Flock::lock(fd, FlockArg::LockExclusive).map(Lock).map_err(
            |(_, source)| Error::Lock {
                path: dir.to_owned(),
                source,
            },
        )
    }

    /// The lock of `dir` if it is free now, `None` if it is held.
    pub fn try_exclusive(dir: &Path) -> Result<Option<Lock>, Error> {
        let fd = Lock::open(dir)?;
        match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(Lock(lock))),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, source)) => Err(Error::Lock {
                path: dir.to_owned(),
                source,
            }),
        }
    }
}

/// The name of the user `uid`, from `/etc/passwd`, else the number.
///
/// Read by hand rather than through libc's `getpwuid(3)`: that goes
/// through NSS, which a statically linked runtime (`scripts/build-release`)
/// cannot load. runc reads the file itself too.
fn owner_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| user_of(&passwd, uid))
        .unwrap_or_else(|| uid.to_string())
}

/// The name `passwd` (the format of `passwd(5)`) gives to `uid`.
fn user_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The state a runtime prints (`state`, `list --format json`): the
/// runtime spec's fields, plus `rootfs`, `created` and `owner` as runc
/// prints them, in runc's order.
#[derive(Debug, Serialize)]
pub struct Printed<'a> {
    /// The version of the runtime spec the state follows.
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    /// The id.
    pub id: &'a str,
    /// The process's pid; 0 when stopped.
    pub pid: i32,
    /// The observed status.
    pub status: Status,
    /// The bundle.
    pub bundle: &'a Path,
    /// The root filesystem.
    pub rootfs: &'a Path,
    /// When it was created.
    pub created: &'a str,
    /// The spec's annotations, omitted when there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
    /// Who created it: a user name, or the uid as a number.
    pub owner: String,
}

impl Container {
    /// What `state` prints for the container in `status`.
    pub fn printed(&self, status: Status) -> Printed<'_> {
        let pid = match status {
            Status::Stopped | Status::Creating => 0,
            Status::Created | Status::Running | Status::Paused => {
                self.record.process.map_or(0, |p| p.pid)
            }
        };
        Printed {
            oci_version: oci_spec::runtime::VERSION,
            id: &self.record.id,
            pid,
            status,
            bundle: &self.record.bundle,
            rootfs: &self.record.rootfs,
            created: &self.record.created,
            annotations: &self.record.annotations,
            owner: owner_name(self.record.owner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_named_from_passwd_lines() {
        let passwd = "# a comment\nroot:x:0:0:root:/root:/bin/sh\n\
                      broken\nme:x:1000:1000::/home/me:/bin/sh\n";
        assert_eq!(user_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_of(passwd, 1000).as_deref(), Some("me"));
        assert_eq!(user_of(passwd, 7), None);
    }
}
