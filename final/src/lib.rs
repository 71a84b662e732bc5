//! # berth: an OCI runtime and a mini container engine
//!
//! The last crate of the chain. It depends on the latest step and adds only
//! what is not a kernel feature: every namespace, mount and cgroup it uses
//! is the step code the book explains.
//!
//! # Layout
//!
//! - [`runtime`] — **`berth-runtime`**, a drop-in for `runc`: runc's
//!   command line (`cli`), the state directory and the observed status
//!   (`state`), the lifecycle (`lifecycle`), `exec`, `ps`/`update`/`events`
//!   (`resources`), `spec`/`features` (`about`), runc's log formats
//!   (`log`). Single-threaded, no async runtime.
//! - [`image`] — the engine's images: the content-addressed store in the
//!   OCI image layout (`store`), references (`reference`), digests and
//!   chain IDs (`digest`), `load` of `docker save` and OCI archives
//!   (`archive`), snapshots by chain ID unpacked with step 7's unpacker
//!   (`snapshot`).
//! - [`shim`] — **`berth-shim`**, one per container: it detaches, calls
//!   the runtime, holds the stdio (pipes or a pty, `stdio`) of the
//!   container's first process and of its exec sessions, writes the
//!   json-file log (`logs`), reaps them and records the exit, and serves
//!   the daemon on a unix socket (`protocol`, `client`; the loop is
//!   `server`, the runtime's command line `runtime`). Single-threaded.
//! - [`daemon`] — **`berth daemon`**: the Docker Engine API on a unix
//!   socket (`http`), containers' records, lifecycle and restore after a
//!   crash (`containers`), exec sessions (`exec`), images (`images`),
//!   top/diff/commit (`changes`), `docker cp`'s archives (`archive`),
//!   pull/push/login (`distribution`),
//!   events (`events`), stats from the cgroup (`stats`), the OCI spec
//!   Docker would write (`spec`). tokio lives here and in `cli` only.
//! - [`registry`] — the distribution-spec client: HTTP and the token
//!   flow (`client`), credentials and Docker's `config.json` (`auth`),
//!   indexes and platforms (`manifest`), `pull` (layers unpacked as they
//!   arrive), `push` (mount, monolithic or chunked), Docker's progress
//!   messages (`progress`). The daemon's `distribution` serves it.
//! - [`build`] — Dockerfiles: the parser (`dockerfile`), `.dockerignore`
//!   (`ignore`); the builder is still to come.
//! - [`cli`] — **`berth`**'s client commands: docker's command line and
//!   output formats (`format`), events and stats (`monitor`), `cp`
//!   (`copy`), `pull`/`push`/`login` (`registry`); a client of the API
//!   through bollard (and plain hyper where bollard falls short).
//! - [`time`] — RFC 3339 timestamps; [`path_io`] — the error of a file
//!   operation, and durable replacement of a file; [`channel_io`] —
//!   blocking reads and writes over a channel of chunks (async bodies to
//!   tar readers and writers).
//!
//! Still to come: the builder (issue 10), then networking.

pub mod build;
pub mod channel_io;
pub mod cli;
pub mod daemon;
pub mod image;
pub mod path_io;
pub mod registry;
pub mod runtime;
pub mod shim;
pub mod time;

pub use step08_oci::*;
