//! # berth: an OCI runtime and a mini container engine
//!
//! The last crate of the chain. It depends on the latest step and adds only
//! what is not a kernel feature: every namespace, mount and (later) cgroup
//! it uses is the step code the book explains.
//!
//! Nothing is implemented here yet; this map says what comes, issue by
//! issue, so that the step modules are shaped for it.
//!
//! # Layout (planned)
//!
//! - **`berth-runtime`**, a drop-in for `runc` (OCI runtime-spec):
//!   - the container state machine (`creating`, `created`, `running`,
//!     `stopped`, `paused`) as an enum whose status is *observed* — pid
//!     alive with the same start time, exec fifo present, freezer state —
//!     not only read back from a file;
//!   - the operations `create`, `start`, `state`, `kill`, `delete`, plus
//!     `run`, `exec`, `ps`, `list`, `pause`, `resume`, `spec`, `features`,
//!     `events`, `update`, with runc's global flags (`--root`, `--log`,
//!     `--log-format json`, `--systemd-cgroup` accepted) so that containerd
//!     and dockerd can call it unchanged;
//!   - unlike the steps (a minimal init as PID 1, see step 2), the
//!     runtime runs `config.json`'s process as PID 1 itself.
//! - **`berth`**, the engine, and **`berth daemon`**:
//!   - a subset of the Docker Engine REST API on a unix socket, so that the
//!     real `docker` CLI works against it;
//!   - images stored content-addressed (OCI image layout), pulled from
//!     registries (distribution spec, token auth), unpacked into overlay
//!     snapshots (step 7's code);
//!   - a small `berth-shim` per container that holds its stdio, writes its
//!     logs and records its exit status, so containers outlive a daemon
//!     restart;
//!   - networking on step 4's bridge, plus outbound NAT and port
//!     publishing.

pub mod runtime;

pub use step08_oci::*;
