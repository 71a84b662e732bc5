//! # berth step 6: cgroups — limits, accounting, freezing
//!
//! The container's processes are placed in a cgroup of their own before
//! `COMMAND` runs: memory over its limit brings the OOM killer, a fork bomb
//! stops at the pids limit, a CPU quota throttles. The same small interface
//! drives cgroup v2 and v1, whichever the machine has; the freezer and the
//! accounting are library functions the runtime (Part II) uses for
//! `pause`, `resume` and `events`. The container also gets a cgroup
//! namespace, so it sees its own cgroup as `/`.
//!
//! # Layout
//!
//! - everything from steps 1–5 ([`child`], [`uts`], [`pid`], [`mount`],
//!   [`net`], [`user`]), re-exported;
//! - [`cgroup`]: layout detection, the limits [`cgroup::plan`], the
//!   [`cgroup::Cgroup`] handle (create, apply, add, freeze, stats,
//!   destroy) with its [`cgroup::v1`] and [`cgroup::v2`] drivers, and the
//!   cgroup namespace.

pub use step05_user_ipc::*;

pub mod cgroup;
