//! # berth step 4: a network namespace, a veth pair and a bridge
//!
//! The container gets a network stack of its own: with `--net none` only a
//! loopback interface; with `--net bridge` an `eth0` whose other end is
//! plugged into a bridge on the host, an address, and a default route.
//! Two containers on the same bridge reach each other. All of it is done
//! with netlink requests from Rust.
//!
//! This is the first step where the parent has work to do between `clone`
//! and the child's set-up: it creates the veth pair once the child (and so
//! its network namespace) exists, then lets it proceed (sync 1 of
//! [`child`]).
//!
//! # Layout
//!
//! - everything from steps 1–3 ([`child`], [`uts`], [`pid`], [`mount`]),
//!   re-exported;
//! - [`net`]: `CLONE_NEWNET`, the network [`net::plan`], [`net::attach`]
//!   (the parent's side) and [`net::configure`] (the child's side).

pub use step03_mount::*;

pub mod net;
