//! The cgroup v1 driver: a directory in each controller's tree.

use std::path::PathBuf;

use super::{
    Error, Resources, Stats, Write, keyed, limit, read, sum_io,
    weight_to_shares,
};

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
    let text = |controller: &str, file: &str| {
        read(controller, file).unwrap_or_default()
    };
    let oom = text("memory", "memory.oom_control");
    let cpu = text("cpu", "cpu.stat");
    Stats {
        cpu_usec: number("cpuacct", "cpuacct.usage") / 1000,
        memory_peak: number("memory", "memory.max_usage_in_bytes"),
        memory_usage: number("memory", "memory.usage_in_bytes"),
        memory_inactive_file: keyed(
            &text("memory", "memory.stat"),
            "total_inactive_file",
        )
        .unwrap_or(0),
        memory_limit: limit(&text("memory", "memory.limit_in_bytes")),
        pids: number("pids", "pids.current"),
        pids_limit: limit(&text("pids", "pids.max")),
        io_bytes: io_bytes(&text(
            "blkio",
            "blkio.throttle.io_service_bytes_recursive",
        )),
        oom_kills: keyed(&oom, "oom_kill").unwrap_or(0),
        throttled_periods: keyed(&cpu, "nr_throttled").unwrap_or(0),
    }
}

/// Bytes read and written, summed over devices, from v1's
/// `blkio.throttle.io_service_bytes_recursive` (`8:0 Read 4096` lines).
fn io_bytes(text: &str) -> (u64, u64) {
    let counters = text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let _device = fields.next()?;
        Some((fields.next()?, fields.next()?))
    });
    sum_io(counters, "Read", "Write")
}

#[cfg(test)]
mod tests {
    #[test]
    fn io_bytes_sum_reads_and_writes_over_devices() {
        let text = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:16 Read 4\n\
                    8:16 Write 1\nTotal 4613\n";
        assert_eq!(super::io_bytes(text), (4100, 513));
        assert_eq!(super::io_bytes(""), (0, 0));
    }
}
