//! # berth step 3: a mount namespace and a root filesystem
//!
//! The container gets a root filesystem of its own: a directory on the host
//! becomes `/` through `pivot_root(2)`, with a fresh `/proc` for its PID
//! namespace, a minimal `/dev` and a read-only `/sys`. Nothing is left
//! mounted on the host when it exits: every mount lives in its private
//! mount namespace, which dies with its last process.
//!
//! # Layout
//!
//! - everything from steps 1–2 ([`child`], [`uts`], [`pid`]), re-exported;
//! - [`mount`]: `CLONE_NEWNS`, the mount [`mount::plan`] (a pure list of
//!   [`mount::Op`]s) and [`mount::enter`], which applies it and pivots.

pub use step02_pid::*;

pub mod mount;
