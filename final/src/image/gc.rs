//! Garbage collection: what no image and no container leads to goes.
//!
//! Kept: every blob an image of `index.json` leads to, named or not
//! (its manifest, config and layers), the same for each manifest a
//! container was made from (an image removed with `rmi -f` under a
//! container lives on as long as the container), and the snapshots on
//! those images' layer chains. Removed: every other blob and snapshot.
//!
//! It runs under the store's lock, which every writer of names holds
//! from its first blob to its last name (`load`, `import`, `commit`): no
//! blob written for a name still to come is collected.

use std::collections::HashSet;

use oci_spec::image::ImageManifest;

use super::digest::Digest;
use super::snapshot::{self, Snapshots};
use super::store::{self, Store, our_digest};

/// What a collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Blobs.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Snapshots.
    pub snapshots: usize,
}

/// The digests `manifest` leads to: itself, its config, its layers.
fn closure(
    store: &Store,
    manifest: &Digest,
) -> Result<Vec<Digest>, store::Error> {
    let parsed: ImageManifest = store.read_json(manifest)?;
    let mut out = vec![manifest.clone()];
    out.extend(our_digest(parsed.config().digest()));
    out.extend(
        parsed
            .layers()
            .iter()
            .filter_map(|l| our_digest(l.digest())),
    );
    Ok(out)
}

/// Every digest an image of the store (named or not) leads to.
pub fn referenced(store: &Store) -> Result<HashSet<Digest>, store::Error> {
    let mut keep = HashSet::new();
    for manifest in store.manifests()? {
        keep.extend(closure(store, &manifest)?);
    }
    Ok(keep)
}

// ANCHOR: collect
/// Collect what neither the store's images nor `in_use` (the manifests
/// containers were made from, asked once the store's lock is held) lead
/// to. The caller keeps containers from being created meanwhile.
pub fn collect(
    store: &Store,
    snapshots: &Snapshots,
    in_use: impl FnOnce() -> Vec<Digest>,
) -> Result<Collected, snapshot::Error> {
    let _lock = store.lock()?;
    let mut manifests: HashSet<Digest> =
        store.manifests()?.into_iter().collect();
    manifests.extend(in_use());
    let mut blobs = HashSet::new();
    let mut chains = HashSet::new();
    for manifest in &manifests {
        // A container's manifest that is gone already has nothing left
        // to keep.
        if !store.has(manifest) {
            continue;
        }
        blobs.extend(closure(store, manifest)?);
        chains.extend(
            snapshot::layers(store, manifest)?
                .into_iter()
                .map(|l| l.chain),
        );
    }
    let mut collected = Collected::default();
    for digest in store.blobs()? {
        if !blobs.contains(&digest) {
            collected.bytes += store.size(&digest).unwrap_or(0);
            store.remove(&digest)?;
            collected.blobs += 1;
        }
    }
    for chain in snapshots.list()? {
        if !chains.contains(&chain) {
            snapshots.remove(&chain);
            collected.snapshots += 1;
        }
    }
    Ok(collected)
}
// ANCHOR_END: collect
