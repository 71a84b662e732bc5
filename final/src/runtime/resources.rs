//! What a running container holds and may hold, through its cgroup:
//! [`ps`] (its processes: `docker top` asks for them), [`update`] (new
//! limits on a live container: `docker update`), [`events`] (what it
//! uses, as runc's JSON events).

use std::process::Command;

use oci_spec::runtime::{LinuxResources, Spec};
use step08_oci::cgroup::{self, Bytes};
use step08_oci::oci;

use super::Error;
use super::lifecycle::Runtime;
use super::state::{self, Container, Status};

/// `ps`'s output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PsFormat {
    /// `ps(1)`'s own table, only the container's lines.
    Table,
    /// A JSON array of pids (what containerd's shim reads).
    Json,
}

/// What can go wrong in `ps` and `update` besides the state.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    /// `ps(1)` could not run or failed.
    #[error("ps {args}: {message}")]
    Ps {
        /// Its arguments.
        args: String,
        /// What happened.
        message: String,
    },
    /// `ps(1)`'s table has no PID column.
    #[error("ps {0}: no PID column in its output")]
    NoPidColumn(String),
    /// `--resources` unreadable or not `linux.resources`.
    #[error("--resources {path}: {message}")]
    Resources {
        /// The file (`-`: stdin).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A limit flag with a value that is not a size or a number.
    #[error("--{flag} {value:?}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// Why.
        message: String,
    },
    /// `update --resources` setting what cannot change on a live container.
    #[error(
        "update: linux.resources.{0} cannot be changed on a running \
         container (memory, cpu and pids can)"
    )]
    Unchangeable(String),
    /// A container without a cgroup (rootless, no limits) cannot change.
    #[error("container {0} has no cgroup to update")]
    NoCgroup(String),
}

/// The pids of container `id` (its cgroup's), after a status check.
fn pids(runtime: &Runtime, id: &str) -> Result<Vec<i32>, Error> {
    let container = Container::load(&runtime.root, id)?;
    let status = container.status();
    if !status.can_kill() {
        return Err(Error::Status {
            id: id.to_owned(),
            operation: "list the processes of",
            status,
        });
    }
    let cgroup = container.cgroup()?;
    let mut pids: Vec<i32> =
        cgroup.pids()?.into_iter().map(|p| p.as_raw()).collect();
    if pids.is_empty() {
        // No cgroup of its own (rootless): its first process at least.
        pids.extend(container.record.process.map(|p| p.pid));
    }
    Ok(pids)
}

// ANCHOR: ps
/// `ps`: the container's processes, as a JSON array of pids, or as the
/// lines of `ps ARGS` (default `-ef`) whose PID is one of them.
pub fn ps(
    runtime: &Runtime,
    id: &str,
    format: PsFormat,
    args: &[String],
) -> Result<String, Error> {
    let pids = pids(runtime, id)?;
    if format == PsFormat::Json {
        return Ok(format!("{}\n", serde_json::json!(pids)));
    }
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".to_owned()]
    } else {
        args.to_vec()
    };
    let joined = args.join(" ");
    let output = Command::new("ps").args(&args).output().map_err(|e| {
        ResourcesError::Ps {
            args: joined.clone(),
            message: e.to_string(),
        }
    })?;
    if !output.status.success() {
        return Err(ResourcesError::Ps {
            args: joined,
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }
        .into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| ResourcesError::NoPidColumn(joined.clone()))?;
    let mut shown = format!("{header}\n");
    for line in lines {
        let pid = line.split_whitespace().nth(column);
        if pid
            .and_then(|p| p.parse().ok())
            .is_some_and(|p| pids.contains(&p))
        {
            shown.push_str(line);
            shown.push('\n');
        }
    }
    Ok(shown)
}
// ANCHOR_END: ps

/// `update`'s limits given as flags (runc's names).
#[derive(Debug, Default, Clone)]
pub struct Limits {
    /// `--memory`: bytes, or a size such as `64m`.
    pub memory: Option<String>,
    /// `--memory-swap`: memory + swap; `-1` unlimited.
    pub memory_swap: Option<String>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpu-period` (µs).
    pub cpu_period: Option<u64>,
    /// `--cpu-quota` (µs per period).
    pub cpu_quota: Option<i64>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
}

/// A size flag's value in bytes; `-1` is unlimited (`None`).
fn size(flag: &'static str, value: &str) -> Result<Option<i64>, Error> {
    if value == "-1" {
        return Ok(None);
    }
    value
        .parse::<Bytes>()
        .map(|b| Some(b.0.min(i64::MAX as u64) as i64))
        .map_err(|e| {
            ResourcesError::Flag {
                flag,
                value: value.to_owned(),
                message: e.to_string(),
            }
            .into()
        })
}

impl Limits {
    /// The flags as `linux.resources` over `current`.
    fn apply_to(
        &self,
        mut current: LinuxResources,
    ) -> Result<LinuxResources, Error> {
        let mut memory = current.memory().unwrap_or_default();
        if let Some(value) = &self.memory {
            memory.set_limit(Some(size("memory", value)?.unwrap_or(-1)));
        }
        if let Some(value) = &self.memory_swap {
            memory.set_swap(Some(size("memory-swap", value)?.unwrap_or(-1)));
        }
        current.set_memory(Some(memory));
        let mut cpu = current.cpu().clone().unwrap_or_default();
        if let Some(shares) = self.cpu_shares {
            cpu.set_shares(Some(shares));
        }
        if let Some(period) = self.cpu_period {
            cpu.set_period(Some(period));
        }
        if let Some(quota) = self.cpu_quota {
            cpu.set_quota(Some(quota));
        }
        current.set_cpu(Some(cpu));
        if let Some(limit) = self.pids_limit {
            let mut pids = current.pids().unwrap_or_default();
            pids.set_limit(limit);
            current.set_pids(Some(pids));
        }
        Ok(current)
    }
}

/// `given` (from `--resources`) over `current`, as runc merges them:
/// memory, CPU and pids limits replace the recorded ones. Anything else
/// (block I/O, cpusets, devices…) may be given only as it already is:
/// containerd's CRI sends the container's whole `linux.resources`, device
/// rules included, when kubelet changes a limit. A change there is
/// refused rather than ignored.
fn merged(
    mut current: LinuxResources,
    given: LinuxResources,
) -> Result<LinuxResources, Error> {
    let given_json = serde_json::to_value(&given).unwrap_or_default();
    let current_json = serde_json::to_value(&current).unwrap_or_default();
    if let Some(fields) = given_json.as_object() {
        for (field, value) in fields {
            let changeable =
                matches!(field.as_str(), "memory" | "cpu" | "pids");
            let unchanged = current_json.get(field) == Some(value);
            if !changeable
                && !unchanged
                && step08_oci::oci::check::is_set(value)
            {
                return Err(ResourcesError::Unchangeable(field.clone()).into());
            }
        }
    }
    if given.memory().is_some() {
        current.set_memory(*given.memory());
    }
    if given.cpu().is_some() {
        current.set_cpu(given.cpu().clone());
    }
    if given.pids().is_some() {
        current.set_pids(*given.pids());
    }
    Ok(current)
}

/// Read `--resources FILE` (`-`: stdin) as `linux.resources`.
pub fn read_resources(path: &str) -> Result<LinuxResources, Error> {
    let fail = |message: String| ResourcesError::Resources {
        path: path.to_owned(),
        message,
    };
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| fail(e.to_string()))?;
    Ok(serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?)
}

// ANCHOR: update
/// `update`: new limits for container `id` — `resources` (from
/// `--resources`) or the container's own with `limits` applied — written
/// to its cgroup with step 6's plan, and kept in its recorded spec.
pub fn update(
    runtime: &Runtime,
    id: &str,
    resources: Option<LinuxResources>,
    limits: &Limits,
) -> Result<(), Error> {
    let container = Container::load_locked(&runtime.root, id)?;
    let status = container.status();
    if matches!(status, Status::Stopped | Status::Creating) {
        return Err(Error::Status {
            id: id.to_owned(),
            operation: "update",
            status,
        });
    }
    let mut spec: Spec = container.spec()?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let current = linux.resources().clone().unwrap_or_default();
    let wanted = match resources {
        Some(given) => merged(current, given)?,
        None => limits.apply_to(current)?,
    };
    let cgroup = container.cgroup()?;
    if !cgroup.dirs().all(|d| d.is_dir()) {
        return Err(ResourcesError::NoCgroup(id.to_owned()).into());
    }
    let writes =
        cgroup::plan(&oci::resources_of(&wanted), &oci::full_layout()?);
    // v1 refuses a memory limit above memory+swap, and the reverse: one
    // order works when limits grow, the other when they shrink.
    if cgroup.apply(&writes).is_err() {
        let reversed: Vec<_> = writes.iter().rev().cloned().collect();
        cgroup.apply(&reversed)?;
    }
    linux.set_resources(Some(wanted));
    spec.set_linux(Some(linux));
    let bytes = serde_json::to_vec(&spec).unwrap_or_default();
    state::write_atomic(&container.dir.join(state::CONFIG_FILE), &bytes)?;
    Ok(())
}
// ANCHOR_END: update

/// `--interval` as Go writes durations (`5s`, `500ms`, `1m`).
pub fn parse_interval(text: &str) -> Result<std::time::Duration, Error> {
    let bad = |message: &str| ResourcesError::Flag {
        flag: "interval",
        value: text.to_owned(),
        message: message.to_owned(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("a unit is needed: ms, s or m"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad("not a number"))?;
    let millis = match unit {
        "ms" => number,
        "s" => number.saturating_mul(1000),
        "m" => number.saturating_mul(60_000),
        _ => return Err(bad("a unit is needed: ms, s or m").into()),
    };
    if millis == 0 {
        return Err(bad("must be above zero").into());
    }
    Ok(std::time::Duration::from_millis(millis))
}

/// One `stats` event in runc's shape, from the cgroup's accounting: the
/// fields step 6 reads, in runc's units (CPU time in nanoseconds).
fn stats_event(id: &str, stats: &cgroup::Stats) -> serde_json::Value {
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {
                "usage": {"total": stats.cpu_usec.saturating_mul(1000)},
                "throttling": {"throttledPeriods": stats.throttled_periods},
            },
            "memory": {
                "usage": {
                    "usage": stats.memory_usage,
                    "max": stats.memory_peak,
                    "limit": stats.memory_limit.unwrap_or(u64::MAX),
                },
                "stats": {"inactive_file": stats.memory_inactive_file},
            },
            "pids": {"current": stats.pids, "limit": stats.pids_limit.unwrap_or(0)},
            "blkio": {
                "ioServiceBytesRecursive": [
                    {"op": "Read", "value": stats.io_bytes.0},
                    {"op": "Write", "value": stats.io_bytes.1},
                ],
            },
        },
    })
}

// ANCHOR: events
/// `events`: with `stats_once`, one `stats` event; else one every
/// `interval`, and an `oom` event whenever the OOM killer strikes, until
/// the container stops. Each event is a JSON line on stdout.
pub fn events(
    runtime: &Runtime,
    id: &str,
    stats_once: bool,
    interval: std::time::Duration,
) -> Result<(), Error> {
    use std::io::Write;
    let container = Container::load(&runtime.root, id)?;
    let cgroup = container.cgroup()?;
    let mut out = std::io::stdout().lock();
    let mut ooms = None;
    loop {
        let status = container.status();
        if !status.can_kill() {
            if ooms.is_some() {
                // It ran when the stream began: its end ends the stream.
                return Ok(());
            }
            return Err(Error::Status {
                id: id.to_owned(),
                operation: "report events of",
                status,
            });
        }
        let stats = cgroup.stats();
        let event = stats_event(id, &stats);
        if let Some(before) = ooms
            && stats.oom_kills > before
        {
            let oom = serde_json::json!({"type": "oom", "id": id});
            let _ = writeln!(out, "{oom}");
        }
        ooms = Some(stats.oom_kills);
        let _ = writeln!(out, "{event}");
        let _ = out.flush();
        if stats_once {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
// ANCHOR_END: events
