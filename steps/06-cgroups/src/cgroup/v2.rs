//! The cgroup v2 driver: one tree, controllers enabled from the top down.

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    Error, Resources, Stats, Write, keyed, limit, read, shares_to_weight,
    sum_io, write,
};

/// The controllers berth enables for its cgroups, where available.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

// ANCHOR: writes
/// The writes for `resources`, in order.
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
        push("memory", "memory.max", memory.to_string());
        match resources.memory_swap {
            // v2 limits swap alone; v1 (and --memory-swap) mean the total.
            Some(Some(total)) => {
                push("memory", "memory.swap.max", (total - memory).to_string())
            }
            Some(None) => push("memory", "memory.swap.max", "max".to_owned()),
            None => {}
        }
    }
    if let Some(period) = resources.cpu_period {
        let quota = resources
            .cpu_quota
            .map_or_else(|| "max".to_owned(), |q| q.to_string());
        push("cpu", "cpu.max", format!("{quota} {period}"));
    }
    let weight = resources
        .cpu_weight
        .or(resources.cpu_shares.map(shares_to_weight));
    if let Some(weight) = weight {
        push("cpu", "cpu.weight", weight.to_string());
    }
    if let Some(pids) = resources.pids {
        push("pids", "pids.max", pids.to_string());
    }
    writes
}
// ANCHOR_END: writes

// ANCHOR: create
/// Create `path` below `mount`, enabling the available controllers in
/// every ancestor's `cgroup.subtree_control` on the way down: a cgroup can
/// only use the controllers its parent hands down.
pub(super) fn create(mount: &Path, path: &Path) -> Result<PathBuf, Error> {
    let available = read(&mount.join("cgroup.controllers"))?;
    let enable: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    let mut dir = mount.to_owned();
    for component in path.components() {
        if !enable.is_empty() {
            write(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
        }
        dir.push(component);
        if dir == mount.join(path) {
            super::make_leaf(&dir)?;
        } else {
            if let Err(source) = super::create_dir(&dir) {
                return Err(Error::Create { path: dir, source });
            }
        }
    }
    Ok(dir)
}
// ANCHOR_END: create

/// Whether `cgroup.events` says `frozen 1`.
pub(super) fn is_frozen(events: PathBuf) -> Result<bool, Error> {
    Ok(keyed(&read(&events)?, "frozen") == Some(1))
}

// ANCHOR: stats
/// What the kernel accounted in cgroup `dir`.
pub(super) fn stats(dir: &Path) -> Stats {
    let text =
        |file: &str| fs::read_to_string(dir.join(file)).unwrap_or_default();
    let number = |file: &str| text(file).trim().parse().unwrap_or(0);
    let cpu = text("cpu.stat");
    // memory.peak exists from Linux 5.19; before, the current use.
    let peak = match number("memory.peak") {
        0 => number("memory.current"),
        peak => peak,
    };
    Stats {
        cpu_usec: keyed(&cpu, "usage_usec").unwrap_or(0),
        memory_peak: peak,
        memory_usage: number("memory.current"),
        memory_inactive_file: keyed(&text("memory.stat"), "inactive_file")
            .unwrap_or(0),
        memory_limit: limit(&text("memory.max")),
        pids: number("pids.current"),
        pids_limit: limit(&text("pids.max")),
        io_bytes: io_bytes(&text("io.stat")),
        oom_kills: keyed(&text("memory.events"), "oom_kill").unwrap_or(0),
        throttled_periods: keyed(&cpu, "nr_throttled").unwrap_or(0),
    }
}
// ANCHOR_END: stats

/// Bytes read and written, summed over devices, from `io.stat`
/// (`8:0 rbytes=4096 wbytes=0 rios=1 …` lines).
fn io_bytes(text: &str) -> (u64, u64) {
    let counters = text.split_whitespace().filter_map(|f| f.split_once('='));
    sum_io(counters, "rbytes", "wbytes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn io_bytes_sum_reads_and_writes_over_devices() {
        let text = "8:0 rbytes=4096 wbytes=512 rios=1 wios=1\n\
                    8:16 rbytes=4 wbytes=1 rios=1 wios=1 dbytes=9\n";
        assert_eq!(super::io_bytes(text), (4100, 513));
        assert_eq!(super::io_bytes(""), (0, 0));
    }
}
