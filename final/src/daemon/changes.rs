//! What a container did: its processes (`docker top`), its filesystem
//! changes (`docker diff`, read from its overlay's upper directory) and
//! those changes kept as a new image (`docker commit`, step 7's exporter
//! writing the layer).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::containers::{Engine, Error, Status, blocking};
use crate::image::digest::Digest;
use crate::image::draft::Draft;
use crate::image::reference::Reference;
use crate::image::store::manifest_descriptor;
use crate::shim::client::Client;

/// `GET /containers/ID/top?ps_args=`: the host's `ps` (default `-ef`),
/// its lines kept for the container's processes, as Docker does.
pub async fn top(
    engine: &Arc<Engine>,
    id: &str,
    ps_args: &str,
) -> Result<Value, Error> {
    let record = engine.record(id)?;
    if !record.state.status.is_running() {
        return Err(Error::not_running(id));
    }
    let client = Client::new(&engine.shim_dir(id));
    let pids = blocking(move || client.pids()).await??;
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.split_whitespace().map(str::to_owned).collect()
    };
    let output = tokio::process::Command::new("ps")
        .args(&args)
        .output()
        .await
        .map_err(|e| Error::Internal(format!("cannot run ps: {e}")))?;
    if !output.status.success() {
        return Err(Error::Internal(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let pid_column =
        titles.iter().position(|t| t == "PID").ok_or_else(|| {
            Error::BadRequest("ps printed no PID column (check ps_args)".into())
        })?;
    let mut processes = Vec::new();
    for line in lines {
        // The last column (the command) may hold spaces.
        let mut words = line.split_whitespace();
        let mut fields: Vec<String> = (0..titles.len().saturating_sub(1))
            .filter_map(|_| words.next().map(str::to_owned))
            .collect();
        fields.push(words.collect::<Vec<_>>().join(" "));
        let pid = fields.get(pid_column).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            processes.push(fields);
        }
    }
    Ok(json!({ "Titles": titles, "Processes": processes }))
}

/// A deleted file in an upper directory: a character device 0/0.
fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// `GET /containers/ID/changes`: every path of the upper directory, as
/// added (`1`), changed (`0`: it is in a lower layer too, or it is a
/// directory a change was made in) or deleted (`2`: a whiteout).
pub async fn diff(engine: &Arc<Engine>, id: &str) -> Result<Value, Error> {
    let record = engine.record(id)?;
    let manifest: Digest = record
        .manifest
        .parse()
        .map_err(|_| Error::Internal("bad manifest".into()))?;
    let engine = engine.clone();
    let upper = engine.container_dir(id).join("upper");
    blocking(move || -> Result<Value, Error> {
        let lowers = engine
            .snapshots
            .prepare(&engine.store, &manifest)
            .map_err(|e| Error::Internal(crate::child::error_chain(&e)))?;
        let mut changes = Vec::new();
        walk(&upper, Path::new("/"), &lowers, &mut changes);
        changes.sort_by(|a: &(String, u8), b| a.0.cmp(&b.0));
        Ok(Value::Array(
            changes
                .into_iter()
                .map(|(path, kind)| json!({ "Path": path, "Kind": kind }))
                .collect(),
        ))
    })
    .await?
}

fn walk(
    dir: &Path,
    path: &Path,
    lowers: &[PathBuf],
    out: &mut Vec<(String, u8)>,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let inner = path.join(&name);
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let relative = inner.strip_prefix("/").unwrap_or(&inner);
        let in_lower = lowers
            .iter()
            .any(|l| l.join(relative).symlink_metadata().is_ok());
        let kind = if is_whiteout(&meta) {
            2
        } else if in_lower {
            0
        } else {
            1
        };
        out.push((inner.display().to_string(), kind));
        if meta.is_dir() && kind != 1 {
            walk(&entry.path(), &inner, lowers, out);
        } else if meta.is_dir() {
            // A new directory: everything in it is new too.
            walk(&entry.path(), &inner, &[], out);
        }
    }
}

/// `POST /commit?container=ID&repo=&tag=&comment=&author=`: the upper
/// directory as a new layer on the container's image, with the
/// container's config; named if `repo` is given. A running container is
/// paused meanwhile, as Docker does by default. The new image's ID.
pub async fn commit(
    engine: &Arc<Engine>,
    id: &str,
    name: Option<Reference>,
    comment: String,
    author: String,
) -> Result<String, Error> {
    let _one_at_a_time = engine.commits.lock().await;
    let record = engine.record(id)?;
    let paused = record.state.status == Status::Running;
    if paused {
        engine.pause(id, true).await?;
    }
    let engine2 = engine.clone();
    let upper = engine.container_dir(id).join("upper");
    let committed = blocking(move || {
        commit_blocking(
            &engine2,
            &record,
            &upper,
            name.as_ref(),
            &comment,
            &author,
        )
    })
    .await;
    if paused {
        let _ = engine.pause(id, false).await;
    }
    committed?
}

fn commit_blocking(
    engine: &Engine,
    record: &super::containers::Record,
    upper: &Path,
    name: Option<&Reference>,
    comment: &str,
    author: &str,
) -> Result<String, Error> {
    let store = &engine.store;
    let internal = |e: &dyn std::fmt::Display| Error::Internal(e.to_string());
    let manifest_digest: Digest =
        record.manifest.parse().map_err(|e| internal(&e))?;
    let mut draft = Draft::open(store, &manifest_digest)?;
    // The layer: step 7's exporter into a temporary file, then a blob.
    // A name of its own: two commits of one container may run at once.
    let tmp = engine
        .container_dir(&record.id)
        .join(format!("commit-{}.tar", super::containers::random_id()?));
    let file =
        fs::File::create(&tmp).map_err(crate::path_io::at("create", &tmp))?;
    let written = crate::overlay::commit::commit(upper, file, None)
        .map_err(|e| Error::Internal(crate::child::error_chain(&e)))
        .and_then(|(file, _)| file.sync_all().map_err(|e| internal(&e)));
    let now = crate::time::rfc3339(SystemTime::now());
    // The store's lock from the layer's blob to the image's name: a
    // garbage collection meanwhile would take the blob for unused.
    let locked = written.and_then(|()| Ok(store.lock()?));
    let added = locked.and_then(|lock| {
        let file =
            fs::File::open(&tmp).map_err(crate::path_io::at("open", &tmp))?;
        draft.add_layer(store, file, &now, "berth commit", comment)?;
        Ok(lock)
    });
    let _ = fs::remove_file(&tmp);
    let _lock = added?;
    // The container's config, in the image config's words.
    let container = serde_json::to_value(&record.config).unwrap_or_default();
    let settings = draft.settings();
    for key in [
        "Cmd",
        "Entrypoint",
        "Env",
        "WorkingDir",
        "User",
        "Labels",
        "ExposedPorts",
        "StopSignal",
        "Volumes",
    ] {
        match container.get(key) {
            Some(value) if !value.is_null() => {
                settings.insert(key.to_owned(), value.clone());
            }
            _ => {}
        }
    }
    if !author.is_empty() {
        draft.config()["author"] = json!(author);
    }
    let (new_manifest, size, config_digest) = draft.write(store)?;
    store.tag(name, &manifest_descriptor(&new_manifest, size))?;
    Ok(config_digest.to_string())
}
