//! Images on the engine's side: a content-addressed store in the OCI
//! image layout, loading of `docker save` and OCI archives, and the
//! snapshots containers are made of.
//!
//! ```text
//!   DATA_ROOT/image/          store::Store (blobs, index.json)
//!   DATA_ROOT/snapshots/      snapshot::Snapshots (one dir per chain ID)
//! ```
//!
//! - [`reference`](mod@reference): `busybox` → `docker.io/library/busybox:latest`.
//! - [`digest`]: digests, chain IDs, and readers that hash or verify.
//! - [`store`]: blobs written and read with their digests checked, names.
//! - [`archive`]: `load` of a tar in either format.
//! - [`snapshot`]: layers unpacked once, with step 7's unpacker, their
//!   diff IDs checked; [`compression`]: plain, gzip or zstd, by magic.
//! - [`gc`]: blobs and snapshots nothing leads to any more, removed.
//! - [`draft`]: an image being made (a commit, a build step): layers
//!   added, config edited, then written.

pub mod archive;
pub mod compression;
pub mod digest;
pub mod draft;
pub mod export;
pub mod gc;
pub mod lookup;
pub mod reference;
pub mod snapshot;
pub mod store;

/// A name for a temporary file or directory of this process, unique
/// within it: `<pid>-<n>`. A writer that dies leaves it for the next
/// `open` of the store or the snapshots to sweep.
fn tmp_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
