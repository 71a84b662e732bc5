//! `cgroupctl freeze|thaw|state|stats PATH`: the freezer and the accounting
//! of a running container's cgroup, from another terminal.
//!
//! ```sh
//! sudo target/debug/step06-cgroups --rootfs target/rootfs --cgroup demo -- sh
//! # elsewhere:
//! sudo target/debug/examples/cgroupctl freeze demo   # the shell stops answering
//! sudo target/debug/examples/cgroupctl thaw demo
//! ```
//!
//! The qemu lane (`scripts/qemu-cgroup-v2`) uses it to test the v2 driver.

use anyhow::{Context, bail};
use step06_cgroups::cgroup::{self, Cgroup, CgroupPath};

// ANCHOR: main
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [action, path] = &args[..] else {
        bail!("usage: cgroupctl freeze|thaw|state|stats PATH");
    };
    let path: CgroupPath = path.parse()?;
    let layout = cgroup::detect()?;
    let cgroup = Cgroup::open(&layout, &path);
    match action.as_str() {
        "freeze" => cgroup.freeze().context("cannot freeze")?,
        "thaw" => cgroup.thaw().context("cannot thaw")?,
        "state" => {
            let frozen = cgroup
                .is_frozen()
                .context("cannot read the freezer state")?;
            println!("{}", if frozen { "frozen" } else { "thawed" });
        }
        "stats" => {
            let stats = cgroup.stats();
            println!(
                "cpu_usec {}\nmemory_peak {}\npids {}\noom_kills {}\n\
                 throttled_periods {}",
                stats.cpu_usec,
                stats.memory_peak,
                stats.pids,
                stats.oom_kills,
                stats.throttled_periods
            );
        }
        other => {
            bail!("unknown action {other:?}: freeze, thaw, state or stats")
        }
    }
    Ok(())
}
// ANCHOR_END: main
