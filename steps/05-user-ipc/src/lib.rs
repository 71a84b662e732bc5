//! # berth step 5: user namespaces (rootless) and the IPC namespace
//!
//! The container's root is not the host's root: with a user namespace,
//! uid 0 inside maps to an unprivileged uid outside, and an ordinary user
//! can run the whole container built so far — UTS, PID, mount, network and
//! IPC namespaces, `pivot_root` — without any privilege (with `--net none`:
//! a bridge and a veth on the host still need root). The IPC namespace
//! gives the container System V IPC objects of its own.
//!
//! # Layout
//!
//! - everything from steps 1–4 ([`child`], [`uts`], [`pid`], [`mount`],
//!   [`net`]), re-exported;
//! - [`user`]: `CLONE_NEWUSER` and `CLONE_NEWIPC`, the id-map
//!   [`user::plan`], [`user::write_maps`] (the parent's side) and
//!   [`user::become_root`] (the child's side).

pub use step04_net::*;

pub mod user;
