//! Control groups: limits, accounting and freezing for the container's
//! processes, on cgroup v2 and v1.
//!
//! `cgroups(7)`: a cgroup is a directory in a special filesystem. Writing a
//! pid to its `cgroup.procs` moves the process in (and every child it forks
//! from then on); writing to its control files sets limits; reading them
//! gives accounting. Namespaces decide what a container *sees*; cgroups
//! decide how much it may *use*.
//!
//! # Two versions, three layouts
//!
//! ```text
//!  cgroup v1 (legacy): one tree per controller     cgroup v2 (unified): one tree
//!  /sys/fs/cgroup/                                 /sys/fs/cgroup/
//!  ├── memory/  berth/4242/memory.limit_in_bytes   ├── cgroup.subtree_control  "+memory +cpu +pids"
//!  ├── cpu/     berth/4242/cpu.cfs_quota_us        └── berth/
//!  ├── cpuacct/ berth/4242/cpuacct.usage               ├── cgroup.subtree_control
//!  ├── pids/    berth/4242/pids.max                    └── 4242/
//!  ├── freezer/ berth/4242/freezer.state                   ├── memory.max  cpu.max  pids.max
//!  └── unified/ (hybrid: an empty v2 tree beside)          ├── cgroup.freeze  cgroup.kill
//!                                                          └── cgroup.procs
//! ```
//!
//! - **v1**: each controller (or group of them) is mounted as a tree of its
//!   own; a container has a directory in each, and its pid is written to
//!   each `cgroup.procs`.
//! - **v2**: one tree; a parent enables controllers for its children in
//!   `cgroup.subtree_control`, and processes live only in leaves.
//! - **hybrid** (this book's CI machine, and systemd's old default): the v1
//!   trees hold the controllers and an empty v2 tree is mounted at
//!   `/sys/fs/cgroup/unified`. The v1 driver is the one that matters.
//!
//! [`detect`] reads `/proc/self/mountinfo` to tell them apart. [`Cgroup`]
//! is the small interface the rest of berth uses; [`v1`] and [`v2`] are its
//! two drivers.
//!
//! # Plan, then apply
//!
//! [`plan`] turns the limits into [`Write`]s — file, value — for a layout:
//! pure, snapshot-tested for both versions on any machine.
//! [`Cgroup::apply`] writes them.
//!
//! # The cgroup namespace
//!
//! `cgroup_namespaces(7)`: with `CLONE_NEWCGROUP`, the cgroup a process is
//! in when it unshares becomes the root of its view: `/proc/self/cgroup`
//! says `0::/`, and a cgroup filesystem mounted inside shows only the
//! container's subtree. The child unshares after sync 1, once the parent
//! has moved it into its cgroup ([`enter_namespace`]); [`mounts`] adds the
//! read-only cgroup mounts to the mount plan.

pub mod v1;
pub mod v2;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::unistd::Pid;

use crate::mount::{Mount, Op, TargetKind};

/// What can go wrong with cgroups.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No cgroup filesystem is mounted.
    #[error("no cgroup filesystem is mounted (looked in /proc/self/mountinfo)")]
    NoCgroupFs,
    /// A size, count or number option is malformed or out of range.
    #[error("invalid {option} {value:?}: {reason}")]
    InvalidValue {
        /// The option.
        option: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two options that say the same thing differently.
    #[error("{a} and {b} cannot be used together")]
    Conflict {
        /// One option.
        a: &'static str,
        /// The other.
        b: &'static str,
    },
    /// A limit needs a controller this machine does not have.
    #[error(
        "{what} needs the {controller} controller, which this machine does not have"
    )]
    NoController {
        /// What needs it.
        what: String,
        /// The controller.
        controller: &'static str,
    },
    /// Creating a cgroup directory failed.
    #[error("cannot create the cgroup {path:?}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The cgroup exists and is in use: another container's.
    #[error("the cgroup {path:?} already exists and is in use")]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// Writing a control file failed.
    #[error("cannot write {value:?} to {path:?}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading a control file failed.
    #[error("cannot read {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The cgroup did not reach the state asked for in time.
    #[error("the cgroup {path:?} did not become {state} within {waited:?}")]
    Timeout {
        /// The cgroup.
        path: PathBuf,
        /// The state waited for.
        state: &'static str,
        /// How long we waited.
        waited: Duration,
    },
    /// Removing a cgroup directory failed.
    #[error("cannot remove the cgroup {path:?}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `unshare(CLONE_NEWCGROUP)` failed.
    #[error("cannot create the cgroup namespace")]
    Namespace(#[source] Errno),
}

/// One v1 hierarchy: where it is mounted and which controllers it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its mount point (`/sys/fs/cgroup/memory`).
    pub mount: PathBuf,
    /// Its controllers (`["cpu", "cpuacct"]`).
    pub controllers: Vec<String>,
}

/// Which cgroup version drives the limits, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2: one tree, mounted at `mount`.
    Unified {
        /// The mount point (`/sys/fs/cgroup`).
        mount: PathBuf,
    },
    /// cgroup v1 (pure, or hybrid with an empty v2 tree beside it).
    Legacy {
        /// The hierarchies with a controller berth uses.
        hierarchies: Vec<Hierarchy>,
    },
}

/// The v1 controllers berth uses.
pub const V1_CONTROLLERS: [&str; 5] =
    ["memory", "cpu", "cpuacct", "pids", "freezer"];

// ANCHOR: detect
/// A cgroup filesystem, as one line of `/proc/self/mountinfo` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMount<'a> {
    /// The mount point (the fifth field).
    pub mount: &'a str,
    /// `cgroup2`, or else a v1 `cgroup` hierarchy.
    pub v2: bool,
    /// The superblock options (`rw,cpu,cpuacct`, `rw,name=systemd`): a
    /// v1 hierarchy lists its controllers there.
    pub options: &'a str,
}

/// Every cgroup filesystem in the text of `/proc/self/mountinfo`, in
/// order. After the `-` separator come the type, the source and the
/// superblock options (`proc(5)`).
pub fn cgroup_mounts(mountinfo: &str) -> impl Iterator<Item = CgroupMount<'_>> {
    mountinfo.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let v2 = match *fields.get(dash + 1)? {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        Some(CgroupMount {
            mount: fields.get(4)?,
            v2,
            options: fields.get(dash + 3).copied().unwrap_or(""),
        })
    })
}

/// Tell the layout from the text of `/proc/self/mountinfo`:
/// v2 if `/sys/fs/cgroup` itself is `cgroup2`; else v1 if a v1 hierarchy
/// has a controller we use (hybrid included); else v2 wherever it is.
pub fn detect_from(mountinfo: &str) -> Result<Layout, Error> {
    let mut unified = None;
    let mut hierarchies = Vec::new();
    for found in cgroup_mounts(mountinfo) {
        if found.v2 {
            if found.mount == "/sys/fs/cgroup" || unified.is_none() {
                unified = Some(PathBuf::from(found.mount));
            }
            continue;
        }
        let controllers: Vec<String> = (found.options.split(','))
            .filter(|o| V1_CONTROLLERS.contains(o))
            .map(str::to_owned)
            .collect();
        if !controllers.is_empty() {
            hierarchies.push(Hierarchy {
                mount: PathBuf::from(found.mount),
                controllers,
            });
        }
    }
    match unified {
        Some(mount) if mount == Path::new("/sys/fs/cgroup") => {
            Ok(Layout::Unified { mount })
        }
        _ if !hierarchies.is_empty() => Ok(Layout::Legacy { hierarchies }),
        Some(mount) => Ok(Layout::Unified { mount }),
        None => Err(Error::NoCgroupFs),
    }
}
// ANCHOR_END: detect

/// The layout of this machine.
pub fn detect() -> Result<Layout, Error> {
    detect_from(&mountinfo()?)
}

/// The text of `/proc/self/mountinfo`, for [`detect_from`] and for a
/// caller that reads more of it (step 8's `full_layout`).
pub fn mountinfo() -> Result<String, Error> {
    let path = PathBuf::from("/proc/self/mountinfo");
    fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
}

/// A byte size: `67108864`, `64m`, `512k`, `1g` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl FromStr for Bytes {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidValue {
            option: "size",
            value: value.to_owned(),
            reason,
        };
        let lower = value.to_ascii_lowercase();
        let (digits, unit) =
            match lower.trim_end_matches('b').char_indices().last() {
                Some((i, c @ ('k' | 'm' | 'g'))) => (&lower[..i], c),
                _ => (lower.trim_end_matches('b'), ' '),
            };
        let number: u64 = digits.parse().map_err(|_| {
            invalid("expected bytes, or a number with k, m or g")
        })?;
        let shift = match unit {
            'k' => 10,
            'm' => 20,
            'g' => 30,
            _ => 0,
        };
        let bytes = number
            .checked_mul(1 << shift)
            .ok_or_else(|| invalid("too large"))?;
        if bytes == 0 {
            return Err(invalid("must be more than 0"));
        }
        Ok(Bytes(bytes))
    }
}

/// `--memory-swap`: a total of memory and swap, or `-1` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapLimit {
    /// Memory plus swap may use this much.
    Total(Bytes),
    /// No limit on swap.
    Unlimited,
}

impl FromStr for SwapLimit {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        if value == "-1" {
            return Ok(SwapLimit::Unlimited);
        }
        value.parse().map(SwapLimit::Total)
    }
}

/// The command-line options this module adds (the `docker run` names).
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "cgroup-options")]
pub struct Options {
    /// Memory limit, e.g. 64m; over it, the OOM killer kills
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<Bytes>,
    /// Memory plus swap limit (-1: unlimited swap) [default: the kernel's]
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub memory_swap: Option<SwapLimit>,
    /// CPUs the container may use, e.g. 0.5 (a quota over a 100ms period)
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// CPU CFS quota in microseconds per period
    #[arg(long, value_name = "USEC")]
    pub cpu_quota: Option<u64>,
    /// CPU CFS period in microseconds [default: 100000]
    #[arg(long, value_name = "USEC")]
    pub cpu_period: Option<u64>,
    /// Relative CPU weight, cgroup v1 style (2 to 262144; 1024 is the default)
    #[arg(long, value_name = "SHARES")]
    pub cpu_shares: Option<u64>,
    /// Relative CPU weight, cgroup v2 style (1 to 10000; 100 is the default)
    #[arg(long, value_name = "WEIGHT")]
    pub cpu_weight: Option<u64>,
    /// Most processes (and threads) the container may have
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Print what the container used (CPU, memory peak, OOM kills) at exit
    #[arg(long)]
    pub stats: bool,
    /// Cgroup path below each hierarchy's root [default: berth/STEP-PID]
    #[arg(long = "cgroup", value_name = "PATH")]
    pub path: Option<CgroupPath>,
}

/// A relative cgroup path (`berth/4242`): no `..`, not absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPath(PathBuf);

impl CgroupPath {
    /// The default for a step process: `berth/PID`.
    pub fn for_step(step_pid: u32) -> CgroupPath {
        CgroupPath(PathBuf::from(format!("berth/{step_pid}")))
    }

    /// The path, relative to a hierarchy's root.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl CgroupPath {
    /// Parse `value`, naming `field` (`--cgroup`, `linux.cgroupsPath`) in
    /// the error: the message says where the bad value came from.
    pub fn parse_field(
        value: &str,
        field: &'static str,
    ) -> Result<CgroupPath, Error> {
        let path = PathBuf::from(value);
        let plain =
            path.components().all(|c| matches!(c, Component::Normal(_)));
        if value.is_empty() || !plain {
            return Err(Error::InvalidValue {
                option: field,
                value: value.to_owned(),
                reason: "expected a relative path without '.' or '..', as in berth/web",
            });
        }
        Ok(CgroupPath(path))
    }
}

impl FromStr for CgroupPath {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        CgroupPath::parse_field(value, "--cgroup")
    }
}

/// The limits, checked and in one unit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Memory + swap limit in bytes; `Some(None)`: unlimited swap.
    pub memory_swap: Option<Option<u64>>,
    /// CFS quota (µs per period).
    pub cpu_quota: Option<u64>,
    /// CFS period (µs).
    pub cpu_period: Option<u64>,
    /// v1 `cpu.shares` (2–262144), as given; v2 converts it.
    pub cpu_shares: Option<u64>,
    /// v2 `cpu.weight` (1–10000), as given; v1 converts it.
    pub cpu_weight: Option<u64>,
    /// Most processes.
    pub pids: Option<u64>,
}

/// The default CFS period: 100 ms.
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;

impl Resources {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        *self != Resources::default()
    }
}

// ANCHOR: convert
/// v1 `cpu.shares` to v2 `cpu.weight`: the range 2–262144 mapped linearly
/// onto 1–10000 (1024, the v1 default, becomes 39; v2's default is 100).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// v2 `cpu.weight` to v1 `cpu.shares`: the inverse of [`shares_to_weight`].
pub fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.clamp(1, 10_000) - 1) * 262_142 / 9999
}
// ANCHOR_END: convert

// ANCHOR: resources
/// Check `options` and bring them to one unit each.
pub fn resources(options: &Options) -> Result<Resources, Error> {
    let invalid = |option, value: String, reason| Error::InvalidValue {
        option,
        value,
        reason,
    };
    let mut resources = Resources {
        memory: options.memory.map(|b| b.0),
        ..Resources::default()
    };
    match (options.memory_swap, resources.memory) {
        (None, _) => {}
        (Some(_), None) => {
            return Err(invalid("--memory-swap", "".into(), "needs --memory"));
        }
        (Some(SwapLimit::Unlimited), Some(_)) => {
            resources.memory_swap = Some(None)
        }
        (Some(SwapLimit::Total(total)), Some(memory)) => {
            if total.0 < memory {
                return Err(invalid(
                    "--memory-swap",
                    total.0.to_string(),
                    "must be at least --memory (it is memory plus swap)",
                ));
            }
            resources.memory_swap = Some(Some(total.0));
        }
    }
    if options.cpus.is_some() && options.cpu_quota.is_some() {
        return Err(Error::Conflict {
            a: "--cpus",
            b: "--cpu-quota",
        });
    }
    let period = options.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
    if !(1_000..=1_000_000).contains(&period) {
        return Err(invalid(
            "--cpu-period",
            period.to_string(),
            "must be 1000 to 1000000",
        ));
    }
    if let Some(cpus) = options.cpus {
        if !(cpus > 0.0 && cpus <= 1024.0) {
            return Err(invalid(
                "--cpus",
                cpus.to_string(),
                "must be more than 0",
            ));
        }
        resources.cpu_quota =
            Some(((cpus * period as f64).round() as u64).max(1_000));
    }
    if let Some(quota) = options.cpu_quota {
        if quota < 1_000 {
            return Err(invalid(
                "--cpu-quota",
                quota.to_string(),
                "must be at least 1000",
            ));
        }
        resources.cpu_quota = Some(quota);
    }
    if options.cpu_period.is_some() || resources.cpu_quota.is_some() {
        resources.cpu_period = Some(period);
    }
    // Kept as given: each driver converts the other one, so that neither
    // loses precision to a round trip (512 shares -> weight 20 -> 500).
    match (options.cpu_shares, options.cpu_weight) {
        (Some(_), Some(_)) => {
            return Err(Error::Conflict {
                a: "--cpu-shares",
                b: "--cpu-weight",
            });
        }
        (Some(shares), None) if (2..=262_144).contains(&shares) => {
            resources.cpu_shares = Some(shares);
        }
        (Some(shares), None) => {
            return Err(invalid(
                "--cpu-shares",
                shares.to_string(),
                "must be 2 to 262144",
            ));
        }
        (None, Some(weight)) if (1..=10_000).contains(&weight) => {
            resources.cpu_weight = Some(weight);
        }
        (None, Some(weight)) => {
            return Err(invalid(
                "--cpu-weight",
                weight.to_string(),
                "must be 1 to 10000",
            ));
        }
        (None, None) => {}
    }
    if let Some(pids) = options.pids {
        if pids == 0 {
            return Err(invalid("--pids", "0".into(), "must be at least 1"));
        }
        resources.pids = Some(pids);
    }
    Ok(resources)
}
// ANCHOR_END: resources

/// One control-file write of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The controller whose tree holds the file (v1), or which must be
    /// enabled for it (v2).
    pub controller: &'static str,
    /// The file, in the container's cgroup directory.
    pub file: &'static str,
    /// What to write.
    pub value: String,
}

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {} = {}", self.controller, self.file, self.value)
    }
}

// ANCHOR: plan
/// The control-file writes that set `resources` on `layout`.
pub fn plan(resources: &Resources, layout: &Layout) -> Vec<Write> {
    match layout {
        Layout::Unified { .. } => v2::writes(resources),
        Layout::Legacy { .. } => v1::writes(resources),
    }
}
// ANCHOR_END: plan

/// What the kernel accounted for a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used, in microseconds.
    pub cpu_usec: u64,
    /// Highest memory use, in bytes (current use where the kernel keeps no
    /// peak).
    pub memory_peak: u64,
    /// Memory use now, in bytes (page cache included).
    pub memory_usage: u64,
    /// Of which page cache not used lately (`inactive_file`), which the
    /// kernel reclaims first: `docker stats` leaves it out.
    pub memory_inactive_file: u64,
    /// The memory limit, `None` for none.
    pub memory_limit: Option<u64>,
    /// Processes in the cgroup now.
    pub pids: u64,
    /// The limit on processes, `None` for none.
    pub pids_limit: Option<u64>,
    /// Bytes read from and written to block devices (where the kernel
    /// accounts them: v1's blkio, v2's io controller).
    pub io_bytes: (u64, u64),
    /// Times the OOM killer killed a process of the cgroup.
    pub oom_kills: u64,
    /// Periods in which the CPU quota throttled the cgroup.
    pub throttled_periods: u64,
}

// ANCHOR: report
impl Stats {
    /// What a step says at exit: the OOM killer's work always (an exit code
    /// of 137 alone does not tell), the accounting when `verbose`.
    pub fn report(
        &self,
        memory_limit: Option<u64>,
        verbose: bool,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        if self.oom_kills > 0 {
            lines.push(format!(
                "the OOM killer killed {} process(es) of the container \
                 (memory limit {} bytes)",
                self.oom_kills,
                memory_limit.unwrap_or(0)
            ));
        }
        if verbose {
            lines.push(format!(
                "used cpu {} us, memory peak {} bytes, throttled {} periods",
                self.cpu_usec, self.memory_peak, self.throttled_periods
            ));
        }
        lines
    }
}
// ANCHOR_END: report

// ANCHOR: for_step
/// The cgroup of a step's container, made from its options, and its
/// read-only mounts added to `plan` (before the pivot). Without root, a
/// cgroup can only be made in a subtree delegated to the user: then one is
/// made only if limits are asked for (and it may fail), else `None`.
pub fn for_step(
    options: &Options,
    plan: &mut Vec<Op>,
) -> Result<Option<Cgroup>, Error> {
    let limits = resources(options)?;
    if !nix::unistd::geteuid().is_root() && !limits.any() {
        return Ok(None);
    }
    let layout = detect()?;
    let path = (options.path.clone())
        .unwrap_or_else(|| CgroupPath::for_step(std::process::id()));
    let cgroup = Cgroup::create(&layout, &path)?;
    cgroup.apply(&self::plan(&limits, &layout))?;
    let pivot = plan.len().saturating_sub(1);
    plan.splice(pivot..pivot, mounts(&layout));
    Ok(Some(cgroup))
}
// ANCHOR_END: for_step

/// A container's cgroup: one directory (v2) or one per hierarchy (v1).
///
/// Dropping it kills what is left in it and removes it, so that no error
/// path leaves a cgroup behind; [`Cgroup::destroy`] does the same and
/// reports failures.
#[derive(Debug)]
pub struct Cgroup {
    layout: Layout,
    /// The directories, v1: paired with their hierarchy's controllers.
    dirs: Vec<(PathBuf, Vec<String>)>,
    destroyed: bool,
}

/// Write `value` to `path`.
fn write(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(|source| Error::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Read `path` as text.
fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// The number after `key` in a `key value` file (`cpu.stat`, `memory.events`).
/// A limit file's value: a number, or `max` (v2) or a number near
/// 2^63 (v1's "unlimited") for none.
fn limit(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|n| *n < 1 << 62)
}

/// Bytes read and written, summed over `counters` (a kind and a number,
/// as v1's `blkio` and v2's `io.stat` name them: `read` and `write` are
/// the two kinds counted; others, and numbers that do not parse, are
/// left out).
fn sum_io<'a>(
    counters: impl Iterator<Item = (&'a str, &'a str)>,
    read: &str,
    write: &str,
) -> (u64, u64) {
    let mut total = (0u64, 0u64);
    for (kind, value) in counters {
        let value: u64 = value.parse().unwrap_or(0);
        if kind == read {
            total.0 = total.0.saturating_add(value);
        } else if kind == write {
            total.1 = total.1.saturating_add(value);
        }
    }
    total
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Create the cgroup directory `dir` (its parent exists) with mode 0755,
/// whatever the umask of whoever runs us: under `umask 077` it would be
/// 0700, and a container whose root is another uid (a user namespace)
/// could not even look into its own cgroup, or mount it. `Ok(false)` if it
/// was there already (and is left as it is).
pub(crate) fn create_dir(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    match fs::create_dir(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`create_dir`] for `dir` and every missing directory above it.
fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    create_dir(dir).map(drop)
}

// ANCHOR: make_leaf
/// Create the container's own cgroup directory `dir`. It must be new: an
/// existing one in use (another container's) would be killed and removed
/// at our exit. One that is *empty* — no process, no child cgroup — is
/// what a run killed with `SIGKILL` leaves behind, before it could remove
/// it; it is removed and made anew, so that the same id works again.
/// (Two runs with the same id at the same moment can still race here; the
/// runtime's state directory is what rules that out.)
pub(crate) fn make_leaf(dir: &Path) -> Result<(), Error> {
    let create_error = |source| Error::Create {
        path: dir.to_owned(),
        source,
    };
    match create_dir(dir) {
        Ok(false) => {
            let procs = read(&dir.join("cgroup.procs"))?;
            let children = fs::read_dir(dir)
                .map_err(create_error)?
                .filter_map(Result::ok)
                .any(|entry| entry.file_type().is_ok_and(|t| t.is_dir()));
            if !procs.trim().is_empty() || children {
                return Err(Error::InUse {
                    path: dir.to_owned(),
                });
            }
            fs::remove_dir(dir).map_err(|source| Error::Remove {
                path: dir.to_owned(),
                source,
            })?;
            create_dir(dir).map(drop).map_err(create_error)
        }
        other => other.map(drop).map_err(create_error),
    }
}
// ANCHOR_END: make_leaf

/// Poll `done` every 10 ms for up to `limit`.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long to wait for a freeze, or for a killed cgroup to empty.
const SETTLE: Duration = Duration::from_secs(5);

impl Cgroup {
    // ANCHOR: create
    /// Create the cgroup `path` (directories, and on v2 the controllers
    /// enabled down to it). Nothing is in it yet.
    pub fn create(layout: &Layout, path: &CgroupPath) -> Result<Cgroup, Error> {
        crate::trace::event(6, || {
            format!("mkdir cgroup {}", path.as_path().display())
        });
        let mut cgroup = Cgroup {
            layout: layout.clone(),
            dirs: Vec::new(),
            destroyed: false,
        };
        match layout {
            Layout::Unified { mount } => {
                let dir = v2::create(mount, path.as_path())?;
                cgroup.dirs.push((dir, Vec::new()));
            }
            Layout::Legacy { hierarchies } => {
                for hierarchy in hierarchies {
                    let dir = hierarchy.mount.join(path.as_path());
                    let create_error = |source| Error::Create {
                        path: dir.clone(),
                        source,
                    };
                    if let Some(parent) = dir.parent() {
                        create_dir_all(parent).map_err(create_error)?;
                    }
                    // On error, `cgroup` is dropped, which removes the
                    // directories made so far.
                    make_leaf(&dir)?;
                    cgroup.dirs.push((dir, hierarchy.controllers.clone()));
                }
            }
        }
        Ok(cgroup)
    }
    // ANCHOR_END: create

    /// Open an existing cgroup (the freezer and stats of a running
    /// container); dropping it does not remove it.
    pub fn open(layout: &Layout, path: &CgroupPath) -> Cgroup {
        let dirs = match layout {
            Layout::Unified { mount } => {
                vec![(mount.join(path.as_path()), Vec::new())]
            }
            Layout::Legacy { hierarchies } => hierarchies
                .iter()
                .map(|h| (h.mount.join(path.as_path()), h.controllers.clone()))
                .collect(),
        };
        Cgroup {
            layout: layout.clone(),
            dirs,
            destroyed: true,
        }
    }

    /// The directory holding `controller`'s files (v2: the one directory).
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(_, controllers)| {
                controllers.is_empty()
                    || controllers.iter().any(|c| c == controller)
            })
            .map(|(dir, _)| dir.as_path())
    }

    /// The path of `file` of `controller`, or an error naming what needs it.
    fn file(
        &self,
        controller: &'static str,
        file: &str,
    ) -> Result<PathBuf, Error> {
        self.dir(controller)
            .map(|dir| dir.join(file))
            .ok_or_else(|| Error::NoController {
                what: file.to_owned(),
                controller,
            })
    }

    /// Leave the cgroup in place: the container outlives this process (the
    /// runtime's `create`), and a later command removes it.
    pub fn keep(mut self) {
        self.destroyed = true;
    }

    /// Every directory of the cgroup.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(dir, _)| dir.as_path())
    }

    // ANCHOR: apply
    /// Write a plan's control files.
    pub fn apply(&self, writes: &[Write]) -> Result<(), Error> {
        for w in writes {
            crate::trace::event(6, || format!("write {w}"));
            write(&self.file(w.controller, w.file)?, &w.value)?;
        }
        Ok(())
    }

    /// Move process `pid` (and so its future children) into the cgroup.
    pub fn add(&self, pid: Pid) -> Result<(), Error> {
        for dir in self.dirs() {
            crate::trace::event(6, || {
                format!("write {pid} > {}/cgroup.procs", dir.display())
            });
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
    // ANCHOR_END: apply

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Result<Vec<Pid>, Error> {
        let Some(dir) = self.dirs().next() else {
            return Ok(Vec::new());
        };
        Ok(read(&dir.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok().map(Pid::from_raw))
            .collect())
    }

    // ANCHOR: freeze
    /// Freeze every process of the cgroup (the runtime's `pause`), and wait
    /// until the kernel says they all are.
    pub fn freeze(&self) -> Result<(), Error> {
        self.set_frozen(true)
    }

    /// Thaw the cgroup (the runtime's `resume`).
    pub fn thaw(&self) -> Result<(), Error> {
        self.set_frozen(false)
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool, Error> {
        match self.layout {
            Layout::Unified { .. } => {
                v2::is_frozen(self.file("freezer", "cgroup.events")?)
            }
            Layout::Legacy { .. } => {
                v1::is_frozen(self.file("freezer", "freezer.state")?)
            }
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), Error> {
        let (file, value, state) = match (&self.layout, frozen) {
            (Layout::Unified { .. }, true) => ("cgroup.freeze", "1", "frozen"),
            (Layout::Unified { .. }, false) => ("cgroup.freeze", "0", "thawed"),
            (Layout::Legacy { .. }, true) => {
                ("freezer.state", "FROZEN", "frozen")
            }
            (Layout::Legacy { .. }, false) => {
                ("freezer.state", "THAWED", "thawed")
            }
        };
        let path = self.file("freezer", file)?;
        write(&path, value)?;
        if wait_until(SETTLE, || self.is_frozen().ok() == Some(frozen)) {
            return Ok(());
        }
        Err(Error::Timeout {
            path,
            state,
            waited: SETTLE,
        })
    }
    // ANCHOR_END: freeze

    /// What the kernel accounted so far (zero where a controller is missing).
    pub fn stats(&self) -> Stats {
        match self.layout {
            Layout::Unified { .. } => {
                v2::stats(self.dir("").unwrap_or(Path::new("/nonexistent")))
            }
            Layout::Legacy { .. } => v1::stats(|controller, file| {
                self.dir(controller)
                    .and_then(|dir| fs::read_to_string(dir.join(file)).ok())
            }),
        }
    }

    // ANCHOR: destroy
    /// Kill every process left in the cgroup, wait until it is empty, and
    /// remove its directories.
    pub fn destroy(mut self) -> Result<(), Error> {
        self.destroyed = true;
        self.kill_and_remove()
    }

    fn kill_and_remove(&self) -> Result<(), Error> {
        if let Some(dir) = self.dirs().next() {
            crate::trace::event(6, || {
                format!("kill and rmdir {}", dir.display())
            });
        }
        let kill_file = self.dirs().next().map(|d| d.join("cgroup.kill"));
        let killed_at_once = matches!(self.layout, Layout::Unified { .. })
            && kill_file.is_some_and(|f| f.exists() && write(&f, "1").is_ok());
        let emptied = wait_until(SETTLE, || {
            let pids = self.pids().unwrap_or_default();
            if !killed_at_once {
                // No cgroup.kill (v1, or v2 before Linux 5.14): one by one,
                // again and again, in case one forked meanwhile.
                for pid in &pids {
                    let _ = nix::sys::signal::kill(
                        *pid,
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            pids.is_empty()
        });
        let first = self.dirs().next().map(Path::to_owned).unwrap_or_default();
        if !emptied {
            return Err(Error::Timeout {
                path: first,
                state: "empty",
                waited: SETTLE,
            });
        }
        for dir in self.dirs() {
            // EBUSY for a moment after the last process left is possible.
            let mut result = Ok(());
            wait_until(Duration::from_secs(1), || {
                result = match fs::remove_dir(dir) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                };
                result.is_ok()
            });
            result.map_err(|source| Error::Remove {
                path: dir.to_owned(),
                source,
            })?;
        }
        Ok(())
    }
    // ANCHOR_END: destroy
}

// ANCHOR: drop
impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.destroyed {
            // An error path: what failed is already being reported; this
            // cleanup is best effort on top.
            let _ = self.kill_and_remove();
        }
    }
}
// ANCHOR_END: drop

/// The `clone(2)` flag of the cgroup namespace (see [`enter_namespace`]:
/// it is not passed to `clone`).
pub const NAMESPACE_FLAG: CloneFlags = CloneFlags::CLONE_NEWCGROUP;

// ANCHOR: enter_namespace
/// In the child, after sync 1 (it is in its cgroup by then): make that
/// cgroup the root of its view. Not done by `clone(2)`, whose child would
/// have the *parent's* cgroup as its root.
pub fn enter_namespace() -> Result<(), Error> {
    crate::trace::event(6, || "unshare(CLONE_NEWCGROUP)");
    unshare(NAMESPACE_FLAG).map_err(Error::Namespace)
}
// ANCHOR_END: enter_namespace

// ANCHOR: mounts
/// The read-only cgroup mounts for the container's `/sys/fs/cgroup`, to go
/// into the mount plan before the pivot. Mounted after
/// [`enter_namespace`], each shows only the container's own cgroup.
pub fn mounts(layout: &Layout) -> Vec<Op> {
    let hardened = nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOEXEC;
    let readonly = hardened | nix::mount::MsFlags::MS_RDONLY;
    let mount = |source: &str,
                 target: PathBuf,
                 fstype: &str,
                 flags,
                 data: Option<String>| {
        Op::Mount(Mount {
            source: PathBuf::from(source),
            target,
            fstype: Some(fstype.to_owned()),
            flags,
            data,
            kind: TargetKind::Dir,
        })
    };
    let root = PathBuf::from("/sys/fs/cgroup");
    match layout {
        Layout::Unified { .. } => {
            vec![mount("cgroup2", root, "cgroup2", readonly, None)]
        }
        Layout::Legacy { hierarchies } => {
            let mut ops = vec![mount(
                "tmpfs",
                root.clone(),
                "tmpfs",
                hardened,
                Some("mode=755,size=64k".to_owned()),
            )];
            for hierarchy in hierarchies {
                let Some(name) = hierarchy.mount.file_name() else {
                    continue;
                };
                ops.push(mount(
                    "cgroup",
                    root.join(name),
                    "cgroup",
                    readonly,
                    Some(hierarchy.controllers.join(",")),
                ));
            }
            ops
        }
    }
}
// ANCHOR_END: mounts

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_none_for_unlimited() {
        assert_eq!(limit("1048576\n"), Some(1 << 20));
        assert_eq!(limit("max\n"), None);
        // v1's "unlimited": the largest page-aligned signed 64-bit value.
        assert_eq!(limit("9223372036854771712"), None);
        assert_eq!(limit(""), None);
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("512", 512),
            ("64m", 64 << 20),
            ("1G", 1 << 30),
            ("8kb", 8 << 10),
        ] {
            assert_eq!(text.parse::<Bytes>().unwrap(), Bytes(bytes), "{text}");
        }
        for bad in ["", "0", "m", "-5", "1t", "99999999999999999999"] {
            assert!(bad.parse::<Bytes>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_and_weights_convert_both_ways() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
    }

    #[test]
    fn conflicting_and_bad_options_are_refused() {
        let bad = [
            Options {
                cpus: Some(1.0),
                cpu_quota: Some(50_000),
                ..Options::default()
            },
            Options {
                memory_swap: Some(SwapLimit::Unlimited),
                ..Options::default()
            },
            Options {
                memory: Some(Bytes(64 << 20)),
                memory_swap: Some(SwapLimit::Total(Bytes(32 << 20))),
                ..Options::default()
            },
            Options {
                pids: Some(0),
                ..Options::default()
            },
            Options {
                cpus: Some(-1.0),
                ..Options::default()
            },
        ];
        for options in bad {
            assert!(resources(&options).is_err(), "{options:?}");
        }
    }

    #[test]
    fn cgroup_paths_stay_relative() {
        assert!("berth/web".parse::<CgroupPath>().is_ok());
        for bad in ["", "/abs", "../up", "a/../b", "./a"] {
            assert!(bad.parse::<CgroupPath>().is_err(), "{bad}");
        }
    }
}
