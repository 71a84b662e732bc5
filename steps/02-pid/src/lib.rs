//! # berth step 2: a PID namespace, and an init to run in it
//!
//! The container's processes get their own numbers: the first one is PID 1,
//! and nothing outside the namespace is visible to `kill(2)` or `waitpid(2)`.
//! `/proc` is still the host's until step 3 mounts a new one, so `ps` still
//! lists the host's processes — the chapter shows this surprise.
//!
//! # Layout
//!
//! - everything from step 1 ([`child`], [`uts`]), re-exported;
//! - [`pid`]: `CLONE_NEWPID` and [`pid::init`], a minimal PID 1 that forks
//!   `COMMAND`, forwards signals to it, reaps orphans and exits with
//!   `COMMAND`'s exit code.

pub use step01_uts::*;

pub mod pid;
