//! The cgroup v1 driver: a directory in each controller's tree.

use std::path::PathBuf;

use super::{Error, Resources, Stats, Write, keyed, read, weight_to_shares};

// ANCHOR: writes
/// The writes for `resources`, in order: the memory limit before the
/// memory+swap limit, which may never be below it.
pub(super) fn writes(resources: &Resources) -> Vec<Write> {
    let mut writes = Vec::new();
    let mut push = |controller, file, value: String| {
        writes.push(Write {
            controller,
            file,
            value,
        })
    };
    if let Some(memory) = resources.memory {
        push("memory", "memory.limit_in_bytes", memory.to_string());
        match resources.memory_swap {
            Some(Some(total)) => {
                push("memory", "memory.memsw.limit_in_bytes", total.to_string())
            }
            Some(None) => {
                push("memory", "memory.memsw.limit_in_bytes", "-1".to_owned())
            }
            None => {}
        }
    }
    if let Some(period) = resources.cpu_period {
        push("cpu", "cpu.cfs_period_us", period.to_string());
        let quota = resources.cpu_quota.map_or(-1, |q| q as i64);
        push("cpu", "cpu.cfs_quota_us", quota.to_string());
    }
    let shares = resources
        .cpu_shares
        .or(resources.cpu_weight.map(weight_to_shares));
    if let Some(shares) = shares {
        push("cpu", "cpu.shares", shares.to_string());
    }
    if let Some(pids) = resources.pids {
        push("pids", "pids.max", pids.to_string());
    }
    writes
}
// ANCHOR_END: writes

/// Whether `freezer.state` says `FROZEN` (not `FREEZING`, not `THAWED`).
pub(super) fn is_frozen(state: PathBuf) -> Result<bool, Error> {
    Ok(read(&state)?.trim() == "FROZEN")
}

/// What the kernel accounted, read through `read(controller, file)`.
pub(super) fn stats(read: impl Fn(&str, &str) -> Option<String>) -> Stats {
    let number = |controller: &str, file: &str| {
        read(controller, file)
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    let oom = read("memory", "memory.oom_control").unwrap_or_default();
    let cpu = read("cpu", "cpu.stat").unwrap_or_default();
    Stats {
        cpu_usec: number("cpuacct", "cpuacct.usage") / 1000,
        memory_peak: number("memory", "memory.max_usage_in_bytes"),
        pids: number("pids", "pids.current"),
        oom_kills: keyed(&oom, "oom_kill").unwrap_or(0),
        throttled_periods: keyed(&cpu, "nr_throttled").unwrap_or(0),
    }
}
