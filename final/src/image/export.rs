//! Images out of the store and rootfs tars in: `save` writes a tar in
//! both formats at once (an OCI image layout and `docker save`'s
//! `manifest.json` over the same `blobs/`, as Docker 25 does), so that
//! either kind of loader takes it; `import` makes a one-layer image of a
//! root filesystem tar (`docker import`).

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::time::SystemTime;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use serde_json::json;

use super::archive::MAX_BLOB;
use super::digest::{Digest, Hashing};
use super::lookup::Image;
use super::reference::{Reference, Version};
use super::store::{self, Store, manifest_descriptor, oci_digest, our_digest};

/// What can go wrong in a save or an import.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Writing the tar (the client went away, a disk filled).
    #[error("cannot write the archive")]
    Write(#[source] io::Error),
    /// An import that is not a tar (plain, gzip'd or zstd'd).
    #[error("invalid rootfs tar: {0}")]
    NotATar(#[source] io::Error),
    /// Building a manifest or config (a value oci-spec refuses).
    #[error("cannot build the image: {0}")]
    Build(String),
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), Error> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
        .map_err(Error::Write)
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Write `images` (with the names they have) to `writer` as one tar.
/// Every blob is read back through its digest check: a blob changed on
/// disk fails the save rather than leaving the store.
pub fn save(
    store: &Store,
    images: &[Image],
    writer: impl Write,
) -> Result<(), Error> {
    let mut tar = tar::Builder::new(writer);
    let mut written = BTreeSet::new();
    let mut docker = Vec::new();
    let mut index = Vec::new();
    for image in images {
        let manifest: oci_spec::image::ImageManifest =
            store.read_json(&image.manifest)?;
        let mut layers = Vec::new();
        let blobs = std::iter::once(image.manifest.clone())
            .chain(std::iter::once(image.id.clone()))
            .chain(
                manifest
                    .layers()
                    .iter()
                    .filter_map(|l| our_digest(l.digest())),
            );
        for digest in blobs {
            if digest != image.manifest && digest != image.id {
                layers.push(blob_name(&digest));
            }
            if written.insert(digest.clone()) {
                let size = store.size(&digest)?;
                append(
                    &mut tar,
                    &blob_name(&digest),
                    size,
                    store.open_blob(&digest)?,
                )?;
            }
        }
        let tags: Vec<&Reference> = image
            .names
            .iter()
            .filter(|n| matches!(n.version, Version::Tag(_)))
            .collect();
        docker.push(json!({
            "Config": blob_name(&image.id),
            "RepoTags": tags.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
            "Layers": layers,
        }));
        let size = store.size(&image.manifest)?;
        if tags.is_empty() {
            index.push(manifest_descriptor(&image.manifest, size));
        }
        for name in tags {
            let mut descriptor = manifest_descriptor(&image.manifest, size);
            descriptor.set_annotations(Some(
                [
                    (
                        "org.opencontainers.image.ref.name".to_owned(),
                        name.to_string(),
                    ),
                    ("io.containerd.image.name".to_owned(), name.to_string()),
                ]
                .into(),
            ));
            index.push(descriptor);
        }
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(index)
        .build()
        .map_err(|e| Error::Build(e.to_string()))?;
    let files = [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json", serde_json::to_vec(&index).unwrap_or_default()),
        (
            "manifest.json",
            serde_json::to_vec(&docker).unwrap_or_default(),
        ),
    ];
    for (name, bytes) in files {
        append(&mut tar, name, bytes.len() as u64, &bytes[..])?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(Error::Write)
}

/// Read `reader` to its end, as a tar: an error if it is not one. What
/// follows the end-of-archive blocks is read too (it counts for the
/// digest, as a layer's every byte does).
fn read_tar(reader: impl Read) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        io::copy(&mut entry, &mut io::sink())?;
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    Ok(())
}

/// `docker import`: the root filesystem tar `reader` (plain, gzip'd or
/// zstd'd) as a one-layer image for this machine's platform, named
/// `name` if given (else unnamed). The image ID.
pub fn import(
    store: &Store,
    reader: impl Read,
    name: Option<&Reference>,
) -> Result<Digest, Error> {
    let _lock = store.lock()?;
    let (layer, size, new) = store.put(reader, None, MAX_BLOB)?;
    let compression = super::compression::Compression::detect(
        &store.head(&layer, super::compression::Compression::MAGIC_LEN)?,
    );
    let blob = std::io::BufReader::new(store.open_blob(&layer)?);
    let mut hashing = Hashing::new(compression.decoder(blob));
    if let Err(e) = read_tar(&mut hashing) {
        // Only a blob this import wrote: the same bytes may be another
        // image's (a config, say), which must stay.
        if new {
            let _ = store.remove(&layer);
        }
        return Err(Error::NotATar(e));
    }
    let diff_id = Digest::of_read(hashing);
    let (os, arch) = (
        Os::Linux,
        match std::env::consts::ARCH {
            "aarch64" => Arch::ARM64,
            _ => Arch::Amd64,
        },
    );
    let build = |e: oci_spec::OciSpecError| Error::Build(e.to_string());
    let config = ImageConfigurationBuilder::default()
        .created(crate::time::rfc3339(SystemTime::now()))
        .architecture(arch)
        .os(os)
        .config(ConfigBuilder::default().build().map_err(build)?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .map_err(build)?,
        )
        .build()
        .map_err(build)?;
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let (id, _) = store.put_bytes(&config_bytes)?;
    let media = compression.media_type();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            oci_digest(&id),
        ))
        .layers(vec![Descriptor::new(media, size, oci_digest(&layer))])
        .build()
        .map_err(build)?;
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let (manifest_digest, _) = store.put_bytes(&manifest_bytes)?;
    store.tag(
        name,
        &manifest_descriptor(&manifest_digest, manifest_bytes.len() as u64),
    )?;
    Ok(id)
}
