//! The image endpoints of the Docker Engine API, over the image store:
//! list, inspect, load, tag, remove.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::containers::{Engine, Error, blocking, unix_seconds};
use crate::image::lookup::{self, Image};
use crate::image::reference::{Reference, Version};

/// The name `repo` (which may carry a tag) and `tag` of the API's query
/// strings (`tag`, `commit`, `import`) make, or Docker's 400.
pub fn reference_of(repo: &str, tag: &str) -> Result<Reference, Error> {
    let target = if tag.is_empty() {
        repo.to_owned()
    } else {
        format!("{repo}:{tag}")
    };
    target
        .parse()
        .map_err(|e: crate::image::reference::BadReference| {
            Error::BadRequest(e.to_string())
        })
}

/// Emit an image event: the image's id as its actor, `name` as its
/// attribute, as Docker reports them.
pub fn event(engine: &Engine, action: &str, id: &str, name: &str) {
    let attributes = [("name".to_owned(), name.to_owned())].into();
    engine.events.emit("image", action, id, attributes);
}

/// The image `name`, or Docker's 404.
pub async fn find(engine: &Arc<Engine>, name: &str) -> Result<Image, Error> {
    let engine = engine.clone();
    let owned = name.to_owned();
    blocking(move || lookup::find(&engine.store, &owned))
        .await??
        .ok_or_else(|| Error::NotFound(format!("No such image: {name}")))
}

fn tags(image: &Image) -> Vec<String> {
    image
        .names
        .iter()
        .filter(|n| matches!(n.version, Version::Tag(_)))
        .map(Reference::familiar)
        .collect()
}

/// `REPO@DIGEST` for each digest name (a pull gives one), as Docker's
/// `RepoDigests`.
fn digests(image: &Image) -> Vec<String> {
    image
        .names
        .iter()
        .filter_map(|n| match &n.version {
            Version::Digest(digest) => {
                Some(format!("{}@{digest}", n.familiar_repository()))
            }
            Version::Tag(_) => None,
        })
        .collect()
}

fn created(image: &Image) -> String {
    image.config.created().clone().unwrap_or_default()
}

/// `GET /images/json`.
pub async fn list(engine: &Arc<Engine>) -> Result<Value, Error> {
    let store_engine = engine.clone();
    let images = blocking(move || lookup::list(&store_engine.store)).await??;
    let mut out = Vec::new();
    for image in images.into_iter().filter(|i| !i.intermediate) {
        let id = image.id.to_string();
        let labels: HashMap<String, String> = image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.labels().clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        out.push(json!({
            "Id": id,
            "ParentId": "",
            "RepoTags": tags(&image),
            "RepoDigests": digests(&image),
            "Created": unix_seconds(&created(&image)),
            "Size": image.size,
            "SharedSize": -1,
            "Labels": labels,
            "Containers": engine.users_of(&id).len(),
        }));
    }
    Ok(Value::Array(out))
}

/// `GET /images/NAME/json`: Docker's shape, `RootFS.Layers` the diff
/// IDs, `Config` the image config's.
pub async fn inspect(engine: &Arc<Engine>, name: &str) -> Result<Value, Error> {
    let image = find(engine, name).await?;
    let config = &image.config;
    let diff_ids: Vec<String> = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    let inner = config.config().clone().map(|c| {
        json!({
            "User": c.user().clone().unwrap_or_default(),
            "Env": c.env().clone().unwrap_or_default(),
            "Cmd": c.cmd(),
            "Entrypoint": c.entrypoint(),
            "WorkingDir": c.working_dir().clone().unwrap_or_default(),
            "Labels": c.labels(),
            "StopSignal": c.stop_signal(),
            "ExposedPorts": c.exposed_ports().as_ref().map(|ports| {
                ports.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>()
            }),
            "Volumes": c.volumes().as_ref().map(|vols| {
                vols.iter().map(|v| (v.clone(), json!({}))).collect::<serde_json::Map<_, _>>()
            }),
        })
    });
    Ok(json!({
        "Id": image.id.to_string(),
        "RepoTags": tags(&image),
        "RepoDigests": digests(&image),
        "Parent": "",
        "Comment": "",
        "Created": created(&image),
        "DockerVersion": "",
        "Author": config.author().clone().unwrap_or_default(),
        "Config": inner,
        "Architecture": config.architecture().to_string(),
        "Os": config.os().to_string(),
        "Size": image.size,
        "GraphDriver": { "Name": "overlay", "Data": null },
        "RootFS": { "Type": "layers", "Layers": diff_ids },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    }))
}

/// `POST /images/NAME/tag?repo=R&tag=T`.
pub async fn tag(
    engine: &Arc<Engine>,
    name: &str,
    repo: &str,
    tag: &str,
) -> Result<(), Error> {
    let image = find(engine, name).await?;
    let reference = reference_of(repo, tag)?;
    let name = reference.familiar();
    let store_engine = engine.clone();
    let descriptor = crate::image::store::manifest_descriptor(
        &image.manifest,
        engine.store.size(&image.manifest)?,
    );
    blocking(move || {
        let _lock = store_engine.store.lock()?;
        store_engine.store.tag(Some(&reference), &descriptor)
    })
    .await??;
    event(engine, "tag", &image.id.to_string(), &name);
    Ok(())
}

/// `DELETE /images/NAME?force=`: a name is untagged; an ID (or the last
/// name) removes the image, refused while a container uses it unless
/// `force`, and collects what nothing else leads to.
pub async fn remove(
    engine: &Arc<Engine>,
    name: &str,
    force: bool,
) -> Result<Value, Error> {
    let image = find(engine, name).await?;
    let id = image.id.to_string();
    let by_name = name
        .parse::<Reference>()
        .ok()
        .filter(|r| image.names.contains(r));
    let users = engine.users_of(&id);
    let tags = image
        .names
        .iter()
        .filter(|n| matches!(n.version, Version::Tag(_)))
        .count();
    // The last tag takes the digest names (`REPO@DIGEST`, a pull's) with
    // it, as in Docker; a digest name alone goes alone.
    let removes_image = match &by_name {
        None => true,
        Some(r) if matches!(r.version, Version::Tag(_)) => tags == 1,
        Some(_) => image.names.len() == 1,
    };
    if removes_image && !users.is_empty() && !force {
        let short: String = users[0].chars().take(12).collect();
        return Err(Error::Conflict(format!(
            "conflict: unable to remove repository reference \"{name}\" (must force) - container {short} is using its referenced image {}",
            &image.id.hex()[..12]
        )));
    }
    if by_name.is_none() && tags > 1 && !force {
        return Err(Error::Conflict(format!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            &image.id.hex()[..12]
        )));
    }
    let targets: Vec<Reference> = match by_name {
        Some(reference) if removes_image => {
            let mut all = vec![reference.clone()];
            all.extend(
                image.names.iter().filter(|n| **n != reference).cloned(),
            );
            all
        }
        Some(reference) => vec![reference],
        None => image.names.clone(),
    };
    let mut out = Vec::new();
    for reference in targets {
        let store_engine = engine.clone();
        let untag = reference.clone();
        blocking(move || {
            let _lock = store_engine.store.lock()?;
            store_engine.store.untag(&untag)
        })
        .await??;
        event(engine, "untag", &id, &reference.familiar());
        out.push(json!({ "Untagged": reference.familiar() }));
    }
    if removes_image {
        let forgetting = engine.clone();
        let manifest = image.manifest.clone();
        blocking(move || {
            let _lock = forgetting.store.lock()?;
            forgetting.store.forget(&manifest)
        })
        .await??;
        event(engine, "delete", &id, &id);
        out.push(json!({ "Deleted": id }));
        // Its blobs and snapshots, unless another image or a container
        // (`-f` under one) still leads to them.
        let collecting = engine.clone();
        blocking(move || collecting.collect_garbage()).await??;
    }
    Ok(Value::Array(out))
}

/// The tar's chunks, and the failure that cut it short if one did.
pub type Saving = (
    tokio::sync::mpsc::Receiver<bytes::Bytes>,
    tokio::sync::oneshot::Receiver<String>,
);

/// `GET /images/get?names=…` (and `GET /images/NAME/get`): the images as
/// one tar, written by a blocking thread as the client reads it.
pub async fn save(
    engine: &Arc<Engine>,
    names: &[String],
) -> Result<Saving, Error> {
    let mut images = Vec::new();
    for name in names {
        images.push(find(engine, name).await?);
    }
    for (image, name) in images.iter().zip(names) {
        event(engine, "save", &image.id.to_string(), name);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let (failed, failure) = tokio::sync::oneshot::channel();
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || {
        let writer = crate::channel_io::ChannelWriter { tx: tx.clone() };
        // A failure midway is told before the stream ends, which makes
        // the response fail: a tar cut at an entry's end would look
        // whole to its reader.
        if let Err(e) =
            crate::image::export::save(&engine.store, &images, writer)
        {
            let _ = failed.send(e.to_string());
        }
        drop(tx);
    });
    Ok((rx, failure))
}

/// `POST /images/create?fromSrc=-&repo=R&tag=T`: the body, a root
/// filesystem tar, as a one-layer image named `R:T` (or unnamed, listed
/// as `<none>`, without `repo`).
pub async fn import(
    engine: &Arc<Engine>,
    mut reader: impl std::io::Read + Send + 'static,
    repo: &str,
    tag: &str,
) -> Result<String, Error> {
    let reference = (!repo.is_empty())
        .then(|| reference_of(repo, tag))
        .transpose();
    let name = reference
        .as_ref()
        .ok()
        .and_then(|r| r.as_ref().map(Reference::familiar));
    let store_engine = engine.clone();
    let id = blocking(move || {
        let imported = reference.and_then(|reference| {
            crate::image::export::import(
                &store_engine.store,
                &mut reader,
                reference.as_ref(),
            )
            .map_err(|e| Error::BadRequest(crate::child::error_chain(&e)))
        });
        super::http::drain(&mut reader);
        imported
    })
    .await??
    .to_string();
    event(engine, "import", &id, name.as_deref().unwrap_or(&id));
    Ok(id)
}
