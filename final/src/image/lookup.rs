//! Images as users name them: by reference (`busybox`, `busybox:1.36`,
//! `docker.io/library/busybox:latest`), by ID (`sha256:` and the config's
//! digest, or a prefix of at least a few hex digits, as `docker images`
//! prints twelve), and the list of them.

use std::collections::BTreeMap;

use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::digest::Digest;
use super::reference::Reference;
use super::store::{Error, Store, our_digest};

/// The fewest hex digits an ID prefix may have.
const MIN_PREFIX: usize = 4;

/// One image of the store: a manifest, its config, its names.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's digest.
    pub manifest: Digest,
    /// The config's digest: the image ID.
    pub id: Digest,
    /// The config.
    pub config: ImageConfiguration,
    /// The layers' compressed sizes, summed.
    pub size: u64,
    /// Every name pointing at the manifest.
    pub names: Vec<Reference>,
    /// A build step's image, kept for the cache only (not listed).
    pub intermediate: bool,
}

/// Every image of `store`, once each, by ID.
pub fn list(store: &Store) -> Result<Vec<Image>, Error> {
    let mut by_manifest: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
    // Unnamed images too (Docker's `<none>`).
    for manifest in store.manifests()? {
        by_manifest.entry(manifest).or_default();
    }
    for (name, descriptor) in store.names()? {
        if let Some(digest) = our_digest(descriptor.digest()) {
            by_manifest.entry(digest).or_default().push(name);
        }
    }
    let index = store.index()?;
    // A build step's image: only ever kept for the cache.
    let listed: std::collections::HashSet<Digest> = index
        .manifests()
        .iter()
        .filter(|d| super::store::cache_key(d).is_none())
        .filter_map(|d| our_digest(d.digest()))
        .collect();
    let mut images = Vec::new();
    for (manifest, names) in by_manifest {
        let mut image = open(store, &manifest, names)?;
        image.intermediate = !listed.contains(&manifest);
        images.push(image);
    }
    Ok(images)
}

fn open(
    store: &Store,
    manifest: &Digest,
    names: Vec<Reference>,
) -> Result<Image, Error> {
    let parsed: ImageManifest = store.read_json(manifest)?;
    let id =
        our_digest(parsed.config().digest()).ok_or_else(|| Error::Index {
            path: store.blob_path(manifest),
            message: "the config's digest is not sha256".into(),
        })?;
    let config: ImageConfiguration = store.read_json(&id)?;
    let size = parsed.layers().iter().map(|l| l.size()).sum();
    Ok(Image {
        manifest: manifest.clone(),
        id,
        config,
        size,
        names,
        intermediate: false,
    })
}

/// The image `name` names: a reference, a full ID or an ID prefix (one
/// image only). `None` if there is none.
pub fn find(store: &Store, name: &str) -> Result<Option<Image>, Error> {
    let images = list(store)?;
    if let Ok(reference) = name.parse::<Reference>()
        && let Some(image) =
            images.iter().find(|i| i.names.contains(&reference))
    {
        return Ok(Some(image.clone()));
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() < MIN_PREFIX || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut matching =
        images.into_iter().filter(|i| i.id.hex().starts_with(hex));
    match (matching.next(), matching.next()) {
        (Some(image), None) => Ok(Some(image)),
        _ => Ok(None),
    }
}
