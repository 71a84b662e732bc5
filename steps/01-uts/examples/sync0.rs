//! `sync0`: a child made with `child::spawn_unsharing`, a new
//! network namespace made by the child itself; prints whether the
//! parent, right after `Child::unshared` (sync 0), sees the child's
//! network namespace as its own (`same`) or another (`new`). A runtime's
//! hooks come right after that point and must never see `same`. A test
//! program of its own: `clone(2)` wants a single-threaded process, which
//! a test harness is not (`tests/runtime_hardening.rs` runs it).
//!
//! ```sh
//! sudo target/debug/examples/sync0   # new
//! ```

use nix::sched::CloneFlags;

fn main() -> anyhow::Result<()> {
    // One CPU for both: the parent goes on after clone(2) while the child
    // waits for the CPU, so nothing but sync 0 makes the parent wait for
    // the child's unshare(2).
    let mut one = nix::sched::CpuSet::new();
    one.set(0)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one)?;
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    let mut child = step01_uts::child::spawn_unsharing(
        CloneFlags::empty(),
        CloneFlags::CLONE_NEWNET,
        &[],
        |_| Ok(0),
    )?;
    child.unshared()?;
    let theirs = std::fs::read_link(format!("/proc/{}/ns/net", child.pid()))?;
    println!("{}", if theirs == ours { "same" } else { "new" });
    child.wait()?;
    Ok(())
}
