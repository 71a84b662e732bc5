//! `push`: an image of the store to a registry, blobs first, manifest
//! last, byte for byte as stored (so a pull of it gets the same digest).
//!
//! ```text
//!   per blob (five at once):  HEAD  there already?        ─► "Layer already exists"
//!                             POST  ?mount=D&from=OTHER   ─► 201 "Mounted from OTHER"
//!                             POST  (202 + Location)
//!        small:               PUT   LOCATION?digest=D  + the bytes       (monolithic)
//!        large:               PATCH LOCATION, Content-Range: a-b  …      (chunked)
//!                             PUT   LOCATION?digest=D
//!   then:                     PUT   /v2/NAME/manifests/TAG
//! ```

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderName};
use hyper::{Method, StatusCode};
use oci_spec::image::ImageManifest;
use serde_json::json;

use super::client::{Body, Client, Session, empty, encode};
use super::progress::{Progress, short};
use super::pull::in_blocking;
use super::{Error, auth::Credentials, manifest};
use crate::image::digest::Digest;
use crate::image::reference::{Reference, Version};
use crate::image::store::{Store, our_digest};

/// How many blobs upload at once (Docker's default
/// `max-concurrent-uploads`).
pub const CONCURRENT_UPLOADS: usize = 5;

/// Blobs up to this size go in one PUT; larger ones in PATCHes of this
/// size each.
pub const CHUNK: u64 = 32 << 20;

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest, as the registry now serves it.
    pub digest: Digest,
    /// The manifest's size.
    pub size: usize,
}

/// Push image `manifest` of `store` as `target` (a tag), as
/// `credentials`, uploading in chunks of `chunk` bytes past that size.
pub async fn push(
    client: &Arc<Client>,
    store: &Store,
    manifest: &Digest,
    target: &Reference,
    credentials: Credentials,
    chunk: u64,
    progress: &Progress,
) -> Result<Pushed, Error> {
    let chunk = chunk.max(1);
    let Version::Tag(tag) = &target.version else {
        return Err(Error::Manifest {
            reference: target.to_string(),
            why: "cannot push a digest reference: give a tag".into(),
        });
    };
    let repo = &target.path;
    let bytes = {
        let (store, manifest) = (store.clone(), manifest.clone());
        in_blocking(move || Ok(store.read(&manifest, manifest::MAX_MANIFEST)?))
            .await?
    };
    let parsed: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
            reference: target.to_string(),
            why: format!("the stored manifest cannot be read: {e}"),
        })?;
    let mut blobs = Vec::new();
    for descriptor in parsed.layers().iter().rev().chain([parsed.config()]) {
        let digest =
            our_digest(descriptor.digest()).ok_or_else(|| Error::Manifest {
                reference: target.to_string(),
                why: "a blob's digest is not sha256".into(),
            })?;
        blobs.push(digest);
    }
    let layers = parsed.layers().len();
    // Mount sources on the same registry earn a pull scope each.
    let prefix = format!("{}/", target.domain);
    let mut scopes = vec![format!("repository:{repo}:pull,push")];
    for digest in &blobs {
        for source in store.sources(digest) {
            if let Some(path) = source.strip_prefix(&prefix) {
                let scope = format!("repository:{path}:pull");
                if path != repo && !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
    }
    let session = client.session(&target.domain, scopes, credentials);
    progress.status(format!(
        "The push refers to repository [{}/{}]",
        target.domain, repo
    ));
    for digest in &blobs[..layers] {
        progress.step(&short(digest), "Preparing");
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_UPLOADS));
    let uploads = blobs.iter().enumerate().map(|(i, digest)| {
        let semaphore = semaphore.clone();
        let session = &session;
        let shown = i < layers;
        async move {
            let _permit = semaphore.acquire().await;
            upload_blob(
                session,
                store,
                repo,
                digest,
                chunk,
                shown.then_some(progress),
            )
            .await
        }
    });
    let mut pending: futures_util::stream::FuturesUnordered<_> =
        uploads.collect();
    use futures_util::StreamExt;
    while let Some(result) = pending.next().await {
        result?;
    }
    drop(pending);

    let url = session.url(&format!("{repo}/manifests/{tag}"));
    let media_type = manifest::media_type_of(&bytes);
    let body = Bytes::from(bytes.clone());
    let response = session
        .send(
            Method::PUT,
            &url,
            &[(header::CONTENT_TYPE, media_type)],
            &|| super::client::full(body.clone()),
        )
        .await?;
    let response = session.check(response, || format!("PUT {url}")).await?;
    let claimed = response
        .headers()
        .get(HeaderName::from_static("docker-content-digest"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    if let Some(claimed) = claimed.filter(|c| c != manifest) {
        return Err(Error::Digest {
            what: format!("manifest {target}"),
            expected: manifest.clone(),
            actual: claimed,
        });
    }
    let source = format!("{}/{}", target.domain, repo);
    let recorded = store.clone();
    in_blocking(move || {
        for digest in &blobs {
            recorded.add_source(digest, &source)?;
        }
        Ok(())
    })
    .await?;
    progress.status(format!("{tag}: digest: {manifest} size: {}", bytes.len()));
    progress.aux(json!({ "Tag": tag, "Digest": manifest.to_string(), "Size": bytes.len() }));
    Ok(Pushed {
        digest: manifest.clone(),
        size: bytes.len(),
    })
}

/// Upload one blob unless the registry has it or can mount it.
async fn upload_blob(
    session: &Session,
    store: &Store,
    repo: &str,
    digest: &Digest,
    chunk: u64,
    progress: Option<&Progress>,
) -> Result<(), Error> {
    let id = short(digest);
    let report = |status: &str| {
        if let Some(progress) = progress {
            progress.step(&id, status);
        }
    };
    let url = session.url(&format!("{repo}/blobs/{digest}"));
    let response = session.get(Method::HEAD, &url, &[]).await?;
    match response.status() {
        StatusCode::OK => {
            report("Layer already exists");
            return Ok(());
        }
        StatusCode::NOT_FOUND => {}
        _ => {
            session.check(response, || format!("HEAD {url}")).await?;
        }
    }
    let size = store.size(digest)?;
    let prefix = format!("{}/", session.domain);
    let mount_from = store
        .sources(digest)
        .into_iter()
        .filter_map(|s| s.strip_prefix(&prefix).map(str::to_owned))
        .find(|path| path != repo);
    let start = session.url(&format!("{repo}/blobs/uploads/"));
    let start = match &mount_from {
        Some(from) => format!("{start}?mount={digest}&from={}", encode(from)),
        None => start,
    };
    let response = session.send(Method::POST, &start, &[], &empty).await?;
    if let Some(from) = &mount_from
        && response.status() == StatusCode::CREATED
    {
        report(&format!("Mounted from {from}"));
        return Ok(());
    }
    let response = session.check(response, || format!("POST {start}")).await?;
    let mut location = location(session, &response, &start)?;
    if size > chunk {
        let mut offset = 0;
        while offset < size {
            let length = chunk.min(size - offset);
            let end = offset + length - 1;
            let headers = [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, length.to_string()),
                (header::CONTENT_RANGE, format!("{offset}-{end}")),
            ];
            let body = || {
                file_body(store, digest, offset, length, size, progress, &id)
            };
            let response = session
                .send(Method::PATCH, &location, &headers, &body)
                .await?;
            let response = session
                .check(response, || format!("PATCH {location}"))
                .await?;
            let range = response
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if range.trim_start_matches("bytes=") != format!("0-{end}") {
                return Err(Error::Protocol {
                    url: location,
                    why: format!(
                        "after bytes 0-{end} the registry has {range:?}"
                    ),
                });
            }
            location = self::location(session, &response, &location)?;
            offset += length;
        }
        let put = with_digest(&location, digest);
        let response = session.send(Method::PUT, &put, &[], &empty).await?;
        session.check(response, || format!("PUT {put}")).await?;
    } else {
        let put = with_digest(&location, digest);
        let headers = [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ];
        let body = || file_body(store, digest, 0, size, size, progress, &id);
        let response = session.send(Method::PUT, &put, &headers, &body).await?;
        session.check(response, || format!("PUT {put}")).await?;
    }
    report("Pushed");
    Ok(())
}

/// The upload's `Location`, resolved against the request's `url` with
/// the rules of a redirect (no downgrade to plain HTTP, no turn to
/// loopback): a registry must not send the blob somewhere else.
fn location(
    session: &Session,
    response: &hyper::Response<hyper::body::Incoming>,
    url: &str,
) -> Result<String, Error> {
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Protocol {
            url: url.to_owned(),
            why: "an upload answer without a Location".into(),
        })?;
    session.resolve(url, location)
}

/// `location` with `digest=D` added to its query.
fn with_digest(location: &str, digest: &Digest) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!(
        "{location}{separator}digest={}",
        encode(&digest.to_string())
    )
}

/// `length` bytes of blob `digest` from `offset`, read on a blocking
/// thread as the connection takes them; progress reported as they go.
fn file_body(
    store: &Store,
    digest: &Digest,
    offset: u64,
    length: u64,
    total: u64,
    progress: Option<&Progress>,
    id: &str,
) -> Body {
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let path = store.blob_path(digest);
    let progress = progress.cloned();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        let opened = std::fs::File::open(&path).and_then(|mut file| {
            file.seek(SeekFrom::Start(offset))?;
            Ok(file.take(length))
        });
        let mut file = match opened {
            Ok(file) => file,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut sent = offset;
        let mut reported = Instant::now();
        loop {
            let mut buffer = vec![0u8; 1 << 20];
            match file.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    buffer.truncate(n);
                    sent += n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                        return;
                    }
                    if let Some(progress) = &progress
                        && (reported.elapsed() > Duration::from_millis(100)
                            || sent == total)
                    {
                        progress.bytes(&id, "Pushing", sent, total);
                        reported = Instant::now();
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
    });
    StreamBody::new(stream).boxed()
}
