//! # berth step 8: the OCI bundle drives it all
//!
//! `step08-oci run --bundle DIR ID` reads the bundle's `config.json` (the
//! OCI runtime spec) and runs its process the way every earlier step taught
//! — namespaces, mounts, ids, cgroups — with what a real runtime adds on
//! top: capabilities, resource limits, `no_new_privs`, masked and read-only
//! paths, sysctls, devices, hooks. The process is PID 1 of its container,
//! as the spec says. Fields it cannot honour are errors, never skipped.
//!
//! # Layout
//!
//! - everything from steps 1–7 ([`child`], [`uts`], [`pid`], [`mount`],
//!   [`net`], [`user`], [`cgroup`], [`overlay`]), re-exported;
//! - [`oci`]: reading and checking the bundle, and turning each part of
//!   the spec into the earlier steps' plans ([`oci::check`],
//!   [`oci::mounts`], [`oci::process`], [`oci::hooks`]).

pub use step07_overlay::*;

pub mod oci;
