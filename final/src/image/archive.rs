//! `load`: images from a tar, in either of the two formats in use —
//! `docker save`'s (a `manifest.json` listing each image's config,
//! layers and tags) or an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/`, what `skopeo copy oci-archive:` and newer `docker save`
//! write).
//!
//! The tar is read once, as it streams: every file that is not a small
//! JSON document goes straight into the store as a blob, hashed on the
//! way (a file under `blobs/sha256/` must have the digest it is named
//! after). Then the manifests are read, checked against what arrived,
//! and only then are names pointed at them. A load that fails removes
//! the blobs it added: nothing of a bad archive stays.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};
use serde::Deserialize;

use super::compression::Compression;
use super::digest::Digest;
use super::reference::Reference;
use super::store::{self, MAX_JSON, Store, manifest_descriptor, our_digest};

/// What can go wrong in a load.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The tar itself.
    #[error("corrupt archive: cannot read the tar")]
    Tar(#[source] std::io::Error),
    /// Neither format.
    #[error(
        "not an image archive: no manifest.json and no index.json at its top"
    )]
    Format,
    /// An archive that names what it does not hold, or is inconsistent.
    #[error("invalid archive: {0}")]
    Invalid(String),
}

/// How much of an archive's top-level JSON (manifests, configs) a load
/// keeps in memory at most: an archive of a million small JSON files
/// would otherwise fill it.
pub const MAX_JSON_TOTAL: u64 = 64 << 20;

/// The biggest layer a load accepts.
pub const MAX_BLOB: u64 = 64 << 30;

/// An image a load brought in.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its manifest.
    pub manifest: Descriptor,
    /// Its config's digest: the image ID.
    pub id: Digest,
    /// The names it was given, if any.
    pub names: Vec<Reference>,
}

/// One entry of `docker save`'s `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Load every image of the tar `reader` into `store`, naming them as the
/// archive does. Holds the store's lock throughout.
pub fn load(store: &Store, reader: impl Read) -> Result<Vec<Loaded>, Error> {
    let _lock = store.lock()?;
    let mut added = Vec::new();
    let result = load_locked(store, reader, &mut added);
    // What this load added and no image leads to goes: everything after
    // a failure (but what a name given before it points at, in an
    // archive of several images), and after a success the files of the
    // archive no image uses (docker's legacy `repositories`, `VERSION`
    // and per-layer `json`).
    let keep = super::gc::referenced(store).unwrap_or_default();
    for digest in added.iter().filter(|d| !keep.contains(*d)) {
        let _ = store.remove(digest);
    }
    result
}

fn load_locked(
    store: &Store,
    reader: impl Read,
    added: &mut Vec<Digest>,
) -> Result<Vec<Loaded>, Error> {
    let mut json: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let mut blobs: HashMap<PathBuf, Digest> = HashMap::new();
    let mut links: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut json_bytes = 0u64;
    let mut archive = tar::Archive::new(reader);
    // ANCHOR: entries
    for entry in archive.entries().map_err(Error::Tar)? {
        let mut entry = entry.map_err(Error::Tar)?;
        let path = normalise(&entry.path().map_err(Error::Tar)?)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(Error::Tar)? {
                let base = if kind.is_symlink() {
                    path.parent().unwrap_or(Path::new("")).join(target)
                } else {
                    target.into_owned()
                };
                links.insert(path, normalise(&base)?);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let top_json = (path.components().count() == 1
            && path.extension().is_some_and(|e| e == "json"))
            || path == Path::new("oci-layout");
        if top_json && entry.size() <= MAX_JSON {
            json_bytes += entry.size();
            if json_bytes > MAX_JSON_TOTAL {
                return Err(Error::Invalid(format!(
                    "more than {MAX_JSON_TOTAL} bytes of JSON documents"
                )));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(Error::Tar)?;
            json.insert(path, bytes);
            continue;
        }
        let expected = named_digest(&path);
        let (digest, _, new) =
            store.put(&mut entry, expected.as_ref(), MAX_BLOB)?;
        if new {
            added.push(digest.clone());
        }
        blobs.insert(path, digest);
    }
    // ANCHOR_END: entries
    let find = |path: &str| -> Result<Digest, Error> {
        let mut path = normalise(Path::new(path))?;
        for _ in 0..16 {
            if let Some(d) = blobs.get(&path) {
                return Ok(d.clone());
            }
            if let Some(d) = json.get(&path) {
                return Ok(Digest::of(d));
            }
            match links.get(&path) {
                Some(next) => path = next.clone(),
                None => break,
            }
        }
        Err(Error::Invalid(format!(
            "{} is not in the archive",
            path.display()
        )))
    };
    if let Some(manifest) = json.get(Path::new("manifest.json")) {
        let entries: Vec<DockerEntry> = serde_json::from_slice(manifest)
            .map_err(|e| Error::Invalid(format!("manifest.json: {e}")))?;
        let mut loaded = Vec::new();
        for entry in entries {
            let config_path = normalise(Path::new(&entry.config))?;
            // The config: a blob already, or a JSON file kept in memory.
            let config = match json.get(&config_path) {
                Some(bytes) => {
                    let (digest, new) = store.put_bytes(bytes)?;
                    if new {
                        added.push(digest.clone());
                    }
                    digest
                }
                None => find(&entry.config)?,
            };
            let layers = entry
                .layers
                .iter()
                .map(|l| find(l))
                .collect::<Result<Vec<_>, _>>()?;
            let image = docker_image(store, &config, &layers, added)?;
            let names = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    t.parse::<Reference>()
                        .map_err(|e| Error::Invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            loaded.push(Loaded { names, ..image });
        }
        return name_all(store, loaded);
    }
    let Some(index) = json.get(Path::new("index.json")) else {
        return Err(Error::Format);
    };
    let index: ImageIndex = serde_json::from_slice(index)
        .map_err(|e| Error::Invalid(format!("index.json: {e}")))?;
    let mut loaded = Vec::new();
    for descriptor in index.manifests() {
        let manifest = platform_manifest(store, descriptor, 0)?;
        let digest = our_digest(manifest.digest()).ok_or_else(|| {
            Error::Invalid("a manifest digest is not sha256".into())
        })?;
        let parsed: ImageManifest = store.read_json(&digest)?;
        let id = check_manifest(store, &parsed)?;
        let annotations = descriptor.annotations().clone().unwrap_or_default();
        let names = annotations
            .get("io.containerd.image.name")
            .or_else(|| {
                annotations
                    .get(store::REF_NAME)
                    .filter(|n| n.contains(['/', ':']))
            })
            .and_then(|n| n.parse::<Reference>().ok())
            .into_iter()
            .collect();
        loaded.push(Loaded {
            manifest: manifest_descriptor(&digest, manifest.size()),
            id,
            names,
        });
    }
    name_all(store, loaded)
}

/// Point every loaded image's names at it.
fn name_all(store: &Store, loaded: Vec<Loaded>) -> Result<Vec<Loaded>, Error> {
    for image in &loaded {
        for name in &image.names {
            store.tag(Some(name), &image.manifest)?;
        }
        // An image the archive names not at all is kept all the same,
        // unnamed, as docker load keeps it.
        if image.names.is_empty() {
            store.tag(None, &image.manifest)?;
        }
    }
    Ok(loaded)
}

/// An image of `docker save`'s format as an OCI manifest in the store.
fn docker_image(
    store: &Store,
    config: &Digest,
    layers: &[Digest],
    added: &mut Vec<Digest>,
) -> Result<Loaded, Error> {
    let parsed: ImageConfiguration = store.read_json(config)?;
    let diff_ids = parsed.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(Error::Invalid(format!(
            "image {config}: {} layers, {} diff_ids in its config",
            layers.len(),
            diff_ids.len()
        )));
    }
    let mut descriptors = Vec::new();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let size = store.size(layer)?;
        let compression =
            Compression::detect(&store.head(layer, Compression::MAGIC_LEN)?);
        // An uncompressed layer's digest *is* its diff ID: check it now.
        if compression == Compression::Plain && layer.to_string() != *diff_id {
            return Err(Error::Invalid(format!(
                "layer {layer} does not match the config's diff_id {diff_id}"
            )));
        }
        let media = compression.media_type();
        descriptors.push(serde_json::json!({
            "mediaType": media.to_string(),
            "digest": layer.to_string(),
            "size": size,
        }));
    }
    let config_size = store.size(config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::ImageManifest.to_string(),
        "config": {
            "mediaType": MediaType::ImageConfig.to_string(),
            "digest": config.to_string(),
            "size": config_size,
        },
        "layers": descriptors,
    });
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let (digest, new) = store.put_bytes(&bytes)?;
    if new {
        added.push(digest.clone());
    }
    Ok(Loaded {
        manifest: manifest_descriptor(&digest, bytes.len() as u64),
        id: config.clone(),
        names: Vec::new(),
    })
}

/// The manifest `descriptor` leads to: itself, or the linux/amd64 (host)
/// one of the index it names.
fn platform_manifest(
    store: &Store,
    descriptor: &Descriptor,
    depth: u8,
) -> Result<Descriptor, Error> {
    if !matches!(descriptor.media_type(), MediaType::ImageIndex) {
        return Ok(descriptor.clone());
    }
    if depth > 4 {
        return Err(Error::Invalid("image indexes nested too deep".into()));
    }
    let digest = our_digest(descriptor.digest()).ok_or_else(|| {
        Error::Invalid("an index digest is not sha256".into())
    })?;
    let index: ImageIndex = store.read_json(&digest)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let chosen = index
        .manifests()
        .iter()
        .find(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux"
                    && p.architecture().to_string() == arch
            })
        })
        .ok_or_else(|| {
            Error::Invalid(format!("no linux/{arch} image in index {digest}"))
        })?;
    platform_manifest(store, chosen, depth + 1)
}

/// Check that a manifest's config and layers arrived; the image ID.
fn check_manifest(
    store: &Store,
    manifest: &ImageManifest,
) -> Result<Digest, Error> {
    let config = our_digest(manifest.config().digest()).ok_or_else(|| {
        Error::Invalid("a config digest is not sha256".into())
    })?;
    let parsed: ImageConfiguration = store.read_json(&config)?;
    if parsed.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(Error::Invalid(format!(
            "image {config}: {} layers, {} diff_ids in its config",
            manifest.layers().len(),
            parsed.rootfs().diff_ids().len()
        )));
    }
    for layer in manifest.layers() {
        let digest = our_digest(layer.digest()).ok_or_else(|| {
            Error::Invalid("a layer digest is not sha256".into())
        })?;
        if !store.has(&digest) {
            return Err(Error::Invalid(format!(
                "layer {digest} is not in the archive"
            )));
        }
    }
    Ok(config)
}

/// The digest a path names (`blobs/sha256/<hex>`), if it names one.
fn named_digest(path: &Path) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/sha256").ok()?;
    format!("sha256:{}", rest.to_str()?).parse().ok()
}

// ANCHOR: normalise
/// A path of the archive (an entry, a link's target, a name in a
/// manifest) with `.` dropped and `..` applied; refused if it climbs out
/// of the archive or is absolute.
fn normalise(path: &Path) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir if out.pop() => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "entry {} leaves the archive",
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}
// ANCHOR_END: normalise
