//! `pull`: an image from a registry into the store, its layers unpacked
//! as they arrive.
//!
//! ```text
//!   manifest (by tag) ─► index? ─► the platform's manifest (by digest)
//!   config blob ─► diff IDs ─► chain IDs
//!   layers, three at once:  network ─► channel ─► blocking thread:
//!        tee ─► BlobWriter (hashed, then renamed into blobs/)
//!         └──► decompress ─► hash (diff ID) ─► step 7's unpacker ─► tmp/
//!   only when every blob and snapshot is in place: the name
//! ```
//!
//! Every byte is counted against its descriptor's size as it arrives (a
//! registry that sends more is cut off, one that sends less is caught at
//! the end), every digest checked before anything is renamed into
//! place, and the name is written last: a pull that fails or is killed
//! leaves no image, only temporary files the next start sweeps (and
//! whole blobs it already had, which a garbage collection removes).

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use hyper::header::{self, HeaderName};
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};

use super::client::{Client, Session, read_bounded};
use super::manifest::{self, Kind, Platform};
use super::progress::{Progress, short};
use super::{Error, auth::Credentials};
use crate::channel_io::ChannelReader;
use crate::image::digest::Digest;
use crate::image::reference::{Reference, Version};
use crate::image::snapshot::{self, Layer, Snapshots};
use crate::image::store::{self, Store, our_digest};

/// The most layers an image may have (Docker's layer store stops at 125
/// too; overlayfs could not stack many more).
pub const MAX_LAYERS: usize = 125;

/// How many platforms an error lists.
const MAX_LISTED: usize = 10;

/// How long a registry may send nothing, mid-answer, before the pull
/// gives up on it.
pub const IDLE: Duration = Duration::from_secs(60);

/// How many layers download at once (Docker's default
/// `max-concurrent-downloads`).
pub const CONCURRENT_DOWNLOADS: usize = 3;

/// What a pull brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The platform's manifest, now named.
    pub manifest: Digest,
    /// Its config's digest: the image ID.
    pub id: Digest,
    /// The digest the registry knows the image by (the index's, for a
    /// multi-platform image): `REPO@DIGEST` names it too.
    pub repo_digest: Digest,
    /// Whether the name moved (Docker's "Downloaded newer image").
    pub newer: bool,
}

/// A manifest or index as fetched: its bytes, kind, digest.
struct Fetched {
    bytes: Bytes,
    kind: Kind,
    digest: Digest,
}

/// Pull `reference` for `platform` into `store` and `snapshots`, as
/// `credentials`, reporting to `progress`. A failure leaves no name, and
/// no temporary file; the whole blobs and snapshots it brought are the
/// next garbage collection's (the caller's, once no other transfer
/// runs: another pull may be counting on the same blobs).
pub async fn pull(
    client: &Arc<Client>,
    store: &Store,
    snapshots: &Snapshots,
    reference: &Reference,
    platform: &Platform,
    credentials: Credentials,
    progress: &Progress,
) -> Result<Pulled, Error> {
    let repo = &reference.path;
    let session = client.session(
        &reference.domain,
        vec![format!("repository:{repo}:pull")],
        credentials,
    );
    let (version, expected) = match &reference.version {
        Version::Tag(tag) => (tag.clone(), None),
        Version::Digest(digest) => (digest.to_string(), Some(digest.clone())),
    };
    let top = fetch_manifest(&session, reference, &version, expected.as_ref())
        .await?;
    let malformed = |why: String| Error::Manifest {
        reference: reference.to_string(),
        why,
    };
    let chosen = match top.kind {
        Kind::Manifest => None,
        Kind::Index => {
            let index: ImageIndex = serde_json::from_slice(&top.bytes)
                .map_err(|e| {
                    malformed(format!("the index cannot be read: {e}"))
                })?;
            let entry = manifest::choose(&index, platform).map_err(|found| {
                let mut listed: Vec<String> =
                    found.iter().take(MAX_LISTED).cloned().collect();
                if found.len() > MAX_LISTED {
                    listed.push(format!("{} more", found.len() - MAX_LISTED));
                }
                malformed(format!(
                    "no matching manifest for {platform} in the manifest list entries (it has: {})",
                    if listed.is_empty() { "none".into() } else { listed.join(", ") }
                ))
            })?;
            let digest = our_digest(entry.digest()).ok_or_else(|| {
                malformed(
                    "the index names a manifest that is not sha256".into(),
                )
            })?;
            let fetched = fetch_manifest(
                &session,
                reference,
                &digest.to_string(),
                Some(&digest),
            )
            .await?;
            if fetched.bytes.len() as u64 != entry.size() {
                return Err(Error::Size {
                    what: format!("manifest {digest}"),
                    expected: entry.size(),
                    got: fetched.bytes.len() as u64,
                });
            }
            if fetched.kind != Kind::Manifest {
                return Err(malformed(
                    "the index leads to another index".into(),
                ));
            }
            Some(fetched)
        }
    };
    let repo_digest = top.digest.clone();
    let chosen = chosen.unwrap_or(top);
    let parsed: ImageManifest = serde_json::from_slice(&chosen.bytes)
        .map_err(|e| malformed(format!("the manifest cannot be read: {e}")))?;
    let tag_id = match &reference.version {
        Version::Tag(tag) => tag.clone(),
        Version::Digest(digest) => digest.to_string(),
    };
    progress.headline(&tag_id, &format!("Pulling from {repo}"));

    let config_digest = our_digest(parsed.config().digest())
        .ok_or_else(|| malformed("the config's digest is not sha256".into()))?;
    let config_bytes = config(
        &session,
        store,
        repo,
        &config_digest,
        parsed.config().size(),
    )
    .await?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| {
            malformed(format!("the image config cannot be read: {e}"))
        })?;
    if parsed.layers().len() > MAX_LAYERS {
        return Err(malformed(format!(
            "{} layers: more than the {MAX_LAYERS} an image may have",
            parsed.layers().len()
        )));
    }
    let layers = snapshot::layers_of(&chosen.digest, &parsed, &config)?;
    for layer in parsed.layers() {
        check_layer_type(layer).map_err(malformed)?;
    }

    fetch_layers(&session, store, snapshots, repo, layers.clone(), progress)
        .await?;

    let named = {
        let (store, reference, repo_digest) =
            (store.clone(), reference.clone(), repo_digest.clone());
        let blobs: Vec<Digest> = layers
            .iter()
            .map(|l| l.blob.clone())
            .chain([config_digest.clone()])
            .collect();
        tokio::task::spawn_blocking(move || {
            name(&store, &reference, &chosen, &repo_digest, &blobs)
        })
    };
    let (digest, newer) = named.await.map_err(|e| Error::Protocol {
        url: reference.to_string(),
        why: format!("naming the image failed: {e}"),
    })??;
    progress.status(format!("Digest: {repo_digest}"));
    progress.status(format!(
        "Status: {} for {}",
        if newer {
            "Downloaded newer image"
        } else {
            "Image is up to date"
        },
        reference.familiar()
    ));
    Ok(Pulled {
        manifest: digest,
        id: config_digest,
        repo_digest,
        newer,
    })
}

/// The manifest into the store, then the names: `reference` and, for a
/// tag, `REPO@DIGEST` (Docker's repo digest); the blobs' source
/// recorded. The manifest's digest, and whether the name moved.
fn name(
    store: &Store,
    reference: &Reference,
    chosen: &Fetched,
    repo_digest: &Digest,
    blobs: &[Digest],
) -> Result<(Digest, bool), Error> {
    let (digest, _, _) = store.put(
        &chosen.bytes[..],
        Some(&chosen.digest),
        manifest::MAX_MANIFEST,
    )?;
    let descriptor = Descriptor::new(
        MediaType::from(manifest::media_type_of(&chosen.bytes).as_str()),
        chosen.bytes.len() as u64,
        store::oci_digest(&digest),
    );
    let newer = {
        let _lock = store.lock()?;
        // A blob found in the store at the start may have been a failed
        // load's, removed since: better no image than half of one.
        if let Some(gone) = blobs.iter().find(|b| !store.has(b)) {
            return Err(Error::Manifest {
                reference: reference.to_string(),
                why: format!(
                    "blob {gone} vanished during the pull (pull again)"
                ),
            });
        }
        let before = store
            .names()?
            .into_iter()
            .find(|(name, _)| name == reference)
            .and_then(|(_, d)| our_digest(d.digest()));
        store.tag(Some(reference), &descriptor)?;
        if let Version::Tag(_) = reference.version {
            let pinned = Reference {
                version: Version::Digest(repo_digest.clone()),
                ..reference.clone()
            };
            store.tag(Some(&pinned), &descriptor)?;
        }
        before.as_ref() != Some(&digest)
    };
    let source = format!("{}/{}", reference.domain, reference.path);
    for blob in blobs {
        store.add_source(blob, &source)?;
    }
    Ok((digest, newer))
}

/// A layer type berth unpacks: a tar, plain, gzip or zstd, in OCI's or
/// Docker's name (what the bytes are is told from their first bytes).
fn check_layer_type(layer: &Descriptor) -> Result<(), String> {
    let kind = layer.media_type().to_string();
    let known = kind.starts_with("application/vnd.oci.image.layer.v1.tar")
        || kind == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        || kind == "application/vnd.docker.image.rootfs.diff.tar";
    if known {
        Ok(())
    } else {
        Err(format!("unsupported layer media type {kind}"))
    }
}

/// GET a manifest or index (`version`: a tag or a digest), bounded,
/// its digest checked against `expected` and against what the registry
/// says in `Docker-Content-Digest`.
async fn fetch_manifest(
    session: &Session,
    reference: &Reference,
    version: &str,
    expected: Option<&Digest>,
) -> Result<Fetched, Error> {
    let url = session.url(&format!("{}/manifests/{version}", reference.path));
    let accept = [(header::ACCEPT, manifest::ACCEPT.to_owned())];
    let response = session.get(Method::GET, &url, &accept).await?;
    let status = response.status().as_u16();
    let response = session
        .check(response, || match status {
            404 => format!("manifest for {reference} not found"),
            401 | 403 => format!(
                "pull access denied for {}/{}, repository does not exist or may require 'docker login'",
                reference.domain, reference.path
            ),
            _ => format!("GET {url}"),
        })
        .await?;
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let claimed = response
        .headers()
        .get(HeaderName::from_static("docker-content-digest"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let bytes = read_bounded(response, manifest::MAX_MANIFEST, &url).await?;
    let digest = Digest::of(&bytes);
    for wanted in expected.into_iter().chain(claimed.as_ref()) {
        if *wanted != digest {
            return Err(Error::Digest {
                what: format!("manifest {reference}"),
                expected: wanted.clone(),
                actual: digest,
            });
        }
    }
    let kind =
        manifest::kind(content_type.as_deref(), &bytes).map_err(|why| {
            Error::Manifest {
                reference: reference.to_string(),
                why,
            }
        })?;
    Ok(Fetched {
        bytes,
        kind,
        digest,
    })
}

/// The config blob: from the store, or fetched (bounded, checked) and
/// stored.
async fn config(
    session: &Session,
    store: &Store,
    repo: &str,
    digest: &Digest,
    size: u64,
) -> Result<Vec<u8>, Error> {
    if store.has(digest) {
        let (store, digest) = (store.clone(), digest.clone());
        return in_blocking(move || Ok(store.read(&digest, store::MAX_JSON)?))
            .await;
    }
    if size > store::MAX_JSON {
        return Err(Error::Size {
            what: format!("config {digest}"),
            expected: store::MAX_JSON,
            got: size,
        });
    }
    let url = session.url(&format!("{repo}/blobs/{digest}"));
    let response = session.get(Method::GET, &url, &[]).await?;
    let response = session
        .check(response, || format!("config {digest}"))
        .await?;
    let bytes = read_bounded(response, store::MAX_JSON, &url).await?;
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(Error::Digest {
            what: format!("config {digest}"),
            expected: digest.clone(),
            actual,
        });
    }
    // The digest matched: a size that differs is the descriptor's lie.
    if bytes.len() as u64 != size {
        return Err(Error::Size {
            what: format!("config {digest}"),
            expected: size,
            got: bytes.len() as u64,
        });
    }
    let (store, owned) = (store.clone(), digest.clone());
    in_blocking(move || {
        store.put(&bytes[..], Some(&owned), store::MAX_JSON)?;
        Ok(bytes.to_vec())
    })
    .await
}

/// Run store work off the async threads (a store's lock may be held by a
/// long load).
pub async fn in_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Protocol {
            url: String::new(),
            why: format!("a blocking task failed: {e}"),
        })?
}

/// Fetch the layers the store lacks, [`CONCURRENT_DOWNLOADS`] at once.
/// The first failure stops the others, and every one is awaited to its
/// end (its unpacking thread too): nothing of this pull is still
/// writing when it returns.
async fn fetch_layers(
    session: &Session,
    store: &Store,
    snapshots: &Snapshots,
    repo: &str,
    layers: Vec<Layer>,
    progress: &Progress,
) -> Result<(), Error> {
    let mut wanted = Vec::new();
    for layer in layers {
        let id = short(&layer.blob);
        if store.has(&layer.blob) {
            progress.step(&id, "Already exists");
        } else if !wanted.iter().any(|l: &Layer| l.blob == layer.blob) {
            progress.step(&id, "Pulling fs layer");
            wanted.push(layer);
        }
    }
    for layer in wanted.iter().skip(CONCURRENT_DOWNLOADS) {
        progress.step(&short(&layer.blob), "Waiting");
    }
    let stop = AtomicBool::new(false);
    let semaphore = tokio::sync::Semaphore::new(CONCURRENT_DOWNLOADS);
    let downloads = wanted.into_iter().map(|layer| {
        let (semaphore, stop) = (&semaphore, &stop);
        async move {
            let _permit = semaphore.acquire().await;
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let result = fetch_layer(
                session, store, snapshots, repo, layer, progress, stop,
            )
            .await;
            if result.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            result
        }
    });
    let mut pending: futures_util::stream::FuturesUnordered<_> =
        downloads.collect();
    use futures_util::StreamExt;
    let mut first = None;
    while let Some(result) = pending.next().await {
        if let Err(error) = result {
            first.get_or_insert(error);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Why the network side of a layer's download stopped early.
enum Pumped {
    /// The download failed (network, size, time, told to stop).
    Failed(Error),
    /// The unpacking thread stopped reading: its error says why.
    Unpacker,
}

/// Download one layer into the store, unpacking it into its snapshot as
/// it arrives; give up when `stop` is set.
async fn fetch_layer(
    session: &Session,
    store: &Store,
    snapshots: &Snapshots,
    repo: &str,
    layer: Layer,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let id = short(&layer.blob);
    let what = format!("layer {}", layer.blob);
    if layer.size > crate::image::archive::MAX_BLOB {
        return Err(Error::Size {
            what,
            expected: crate::image::archive::MAX_BLOB,
            got: layer.size,
        });
    }
    let url = session.url(&format!("{repo}/blobs/{}", layer.blob));
    let response = session.get(Method::GET, &url, &[]).await?;
    let response = session.check(response, || what.clone()).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    let (store, snapshots, unpacked) =
        (store.clone(), snapshots.clone(), layer.clone());
    let worker = tokio::task::spawn_blocking(move || {
        store_and_unpack(&store, &snapshots, &unpacked, rx)
    });
    let pumped =
        pump(response.into_body(), &tx, &layer, &url, &id, progress, stop)
            .await;
    // The end of the channel ends the thread: it is awaited, whatever
    // happened, so that it writes nothing after this returns.
    drop(tx);
    let worked = worker.await.map_err(|e| Error::Protocol {
        url: url.clone(),
        why: format!("the unpacking thread failed: {e}"),
    })?;
    match pumped {
        Err(Pumped::Failed(error)) => return Err(error),
        Err(Pumped::Unpacker) | Ok(()) => worked?,
    }
    progress.step(&id, "Pull complete");
    Ok(())
}

/// Copy the body into the channel, counting against the layer's size;
/// stop if the registry goes quiet for [`IDLE`], if `stop` is set, or if
/// no one follows the pull any more.
async fn pump(
    mut body: hyper::body::Incoming,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    layer: &Layer,
    url: &str,
    id: &str,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<(), Pumped> {
    let size_error = |got| {
        Pumped::Failed(Error::Size {
            what: format!("layer {}", layer.blob),
            expected: layer.size,
            got,
        })
    };
    let failed = |message: String| {
        Pumped::Failed(Error::Connect {
            method: "GET".into(),
            url: url.to_owned(),
            message,
        })
    };
    let mut got = 0u64;
    let mut reported = Instant::now();
    progress.bytes(id, "Downloading", 0, layer.size);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(failed("stopped: another layer failed".into()));
        }
        if progress.abandoned() {
            return Err(failed("stopped: the client went away".into()));
        }
        let frame = match tokio::time::timeout(IDLE, body.frame()).await {
            Err(_) => {
                return Err(failed(format!(
                    "the registry sent nothing for {} s",
                    IDLE.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(frame)) => {
                frame.map_err(|e| failed(crate::child::error_chain(&e)))?
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        got += data.len() as u64;
        if got > layer.size {
            return Err(size_error(got));
        }
        if tx.send(data).await.is_err() {
            return Err(Pumped::Unpacker);
        }
        if reported.elapsed() > Duration::from_millis(100) {
            progress.bytes(id, "Downloading", got, layer.size);
            reported = Instant::now();
        }
    }
    if got < layer.size {
        return Err(size_error(got));
    }
    progress.step(id, "Verifying Checksum");
    progress.step(id, "Download complete");
    Ok(())
}

/// Reads from the channel and writes each byte read to the blob.
struct Tee<'a> {
    inner: ChannelReader,
    copy: &'a mut store::BlobWriter,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

// ANCHOR: store_and_unpack
/// The blocking side of a layer's download: every byte into the blob
/// and through the unpacker (or, if the snapshot is there already, the
/// decompressor and the diff ID's hash only); the blob's digest checked,
/// then the blob and the snapshot renamed into place.
fn store_and_unpack(
    store: &Store,
    snapshots: &Snapshots,
    layer: &Layer,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Result<(), Error> {
    let mut blob = store.writer()?;
    let dir = snapshots.path(&layer.chain);
    let tee = Tee {
        inner: ChannelReader::new(rx),
        copy: &mut blob,
    };
    let source = BufReader::with_capacity(1 << 20, tee);
    let (diff_id, size) = (&layer.diff_id, layer.size);
    let unpacked = if dir.is_dir() {
        snapshot::check(source, size, &layer.blob, diff_id).map(|()| None)
    } else {
        snapshots
            .unpack(source, size, &layer.blob, diff_id)
            .map(Some)
    };
    let pending = match unpacked {
        Ok(pending) => pending,
        // Every byte arrived and the diff ID is wrong: if the blob's
        // digest is wrong too, that is the registry's lie to report.
        Err(snapshot::Error::DiffId { .. }) if blob.digest() != layer.blob => {
            return Err(mismatch(layer, blob.digest()));
        }
        Err(e) => return Err(e.into()),
    };
    blob.commit(Some(&layer.blob), size).map_err(|e| match e {
        store::Error::Mismatch { actual, .. } => mismatch(layer, actual),
        e => e.into(),
    })?;
    if let Some(pending) = pending {
        pending.commit(&dir)?;
    }
    Ok(())
}
// ANCHOR_END: store_and_unpack

fn mismatch(layer: &Layer, actual: Digest) -> Error {
    Error::Digest {
        what: format!("layer {}", layer.blob),
        expected: layer.blob.clone(),
        actual,
    }
}
