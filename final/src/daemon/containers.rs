//! Containers on the daemon's side: a record per container on disk
//! (`container.json`, replaced durably at every change), its bundle and
//! overlay, and the shim that runs it.
//!
//! Docker's lifecycle, mapped onto the shim:
//!
//! ```text
//!   create   record written (status created); nothing runs yet
//!   attach   ┐ the shim is launched if there is none ("prepare"): overlay
//!   start    ┘ mounted, config.json written, runtime create; start: runtime start
//!   (exit)   the monitor's wait returns: record exited + code; the shim is
//!            told to delete (runtime delete) and exits
//!   start    again: a new shim, a new runtime container, same rootfs
//!   rm       shim deleted if any, overlay unmounted, directories removed
//! ```
//!
//! Every operation on one container holds its operation lock, so that
//! `start` and `rm` of the same container do not interleave; the map of
//! containers is locked only briefly.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerConfig, HostConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Config;
use super::spec;
use crate::image::digest::Digest;
use crate::image::lookup;
use crate::image::snapshot::Snapshots;
use crate::image::store::Store;
use crate::path_io;
use crate::shim::client::Client;
use crate::shim::protocol::{Failure, Status as ShimStatus};

/// A container's status, as Docker names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started (or prepared and not started).
    #[default]
    Created,
    /// Its first process runs.
    Running,
    /// Frozen.
    Paused,
    /// Its first process has exited.
    Exited,
    /// Its shim died: what happened to it is unknown; `rm -f` cleans up.
    Dead,
}

impl Status {
    /// Docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether it runs (and must be stopped before it is removed).
    pub fn is_running(self) -> bool {
        match self {
            Status::Running | Status::Paused => true,
            Status::Created | Status::Exited | Status::Dead => false,
        }
    }
}

/// What a container is doing, kept in its record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Docker's status.
    pub status: Status,
    /// The first process's pid while it runs, else 0.
    pub pid: i64,
    /// Its last exit code.
    pub exit_code: i64,
    /// Why it is dead, or why it could not start.
    pub error: String,
    /// When it last started (RFC 3339; Docker's zero time if never).
    pub started_at: String,
    /// When it last exited.
    pub finished_at: String,
}

/// The zero time Docker prints for "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A container's record (`container.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The image as the request named it.
    pub image: String,
    /// The image's ID (`sha256:` + its config's digest).
    pub image_id: String,
    /// The image's manifest, whose layers make the rootfs.
    pub manifest: String,
    /// The request's config merged with the image's.
    pub config: ContainerConfig,
    /// The request's host config.
    pub host_config: HostConfig,
    /// The runtime's name.
    pub runtime: String,
    /// What it is doing.
    pub state: State,
}

/// A change of a container, for waiters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// How many times it has exited.
    pub exits: u64,
    /// Its last exit code.
    pub code: i64,
    /// It runs.
    pub running: bool,
    /// It is gone.
    pub removed: bool,
}

/// A container in memory.
#[derive(Debug)]
struct Entry {
    record: Record,
    changes: watch::Sender<Change>,
    op: Arc<tokio::sync::Mutex<()>>,
    /// How many shims have been launched for it (one per run).
    run: u64,
    /// The run whose exit was recorded last: a `start` that learns of its
    /// run's exit after the fact must not mark it running.
    exited_run: u64,
}

impl Entry {
    fn new(record: Record, change: Change) -> Entry {
        Entry {
            record,
            changes: watch::channel(change).0,
            op: Arc::new(tokio::sync::Mutex::new(())),
            run: 0,
            exited_run: 0,
        }
    }
}

/// What can go wrong, with the HTTP status Docker would answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such container or image (404).
    #[error("{0}")]
    NotFound(String),
    /// A conflict with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// Not allowed, such as writing a read-only root (403).
    #[error("{0}")]
    Forbidden(String),
    /// Credentials a registry refused (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Nothing to do (304).
    #[error("{0}")]
    NotModified(String),
    /// The engine failed (500).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Docker's 409 for a container that does not run.
    pub fn not_running(id: &str) -> Error {
        let short: String = id.chars().take(12).collect();
        Error::Conflict(format!("Container {short} is not running"))
    }

    fn internal(error: &(dyn std::error::Error + 'static)) -> Error {
        Error::Internal(crate::child::error_chain(error))
    }
}

impl From<crate::shim::Error> for Error {
    fn from(error: crate::shim::Error) -> Error {
        match &error {
            crate::shim::Error::Refused {
                failure: Failure::Conflict,
                message,
            } => Error::Conflict(message.clone()),
            crate::shim::Error::Refused {
                failure: Failure::BadRequest,
                message,
            } => Error::BadRequest(message.clone()),
            crate::shim::Error::Refused {
                failure: Failure::NotFound,
                message,
            } => Error::NotFound(message.clone()),
            _ => Error::internal(&error),
        }
    }
}

impl From<path_io::PathIo> for Error {
    fn from(error: path_io::PathIo) -> Error {
        Error::internal(&error)
    }
}

impl From<crate::image::store::Error> for Error {
    fn from(error: crate::image::store::Error) -> Error {
        Error::internal(&error)
    }
}

/// The engine: images and containers.
#[derive(Debug)]
pub struct Engine {
    /// The daemon's settings.
    pub config: Config,
    /// The image store.
    pub store: Store,
    /// The unpacked layers.
    pub snapshots: Snapshots,
    /// The exec sessions.
    pub execs: super::exec::Sessions,
    /// What happened, for `GET /events`.
    pub events: super::events::Events,
    /// The exit codes of the containers removed last (at most
    /// [`RECENTLY_REMOVED`]): a `wait` that reaches the daemon just after
    /// its container's removal (a client that sent it alongside `start`,
    /// for a container that ended at once with `--rm`) still learns the
    /// exit code.
    pub removed: Mutex<std::collections::VecDeque<(String, i64)>>,
    /// Read-held by `create` from its image's lookup to its record's
    /// insertion, write-held by a garbage collection: the one sees the
    /// other's container, or the other runs first. (Not the store's
    /// lock, which a load holds while its archive arrives.)
    pub collecting: std::sync::RwLock<()>,
    /// Held by a commit: one at a time (each pauses and resumes its
    /// container; two at once would resume it under the other).
    pub commits: tokio::sync::Mutex<()>,
    /// Read-held by each pull from its first blob to its name: a garbage
    /// collection meanwhile would take its blobs for leftovers, so it
    /// waits for the next one instead ([`Engine::collect_garbage`]).
    pub transfers: tokio::sync::RwLock<()>,
    /// A collection was skipped for a transfer, or a pull failed: the
    /// last transfer to end collects ([`Engine::after_transfer`]).
    pub gc_pending: std::sync::atomic::AtomicBool,
    /// The registries' client (its connections pooled).
    pub registry: std::sync::Arc<crate::registry::client::Client>,
    containers: Mutex<BTreeMap<String, Entry>>,
}

/// How many removed containers' exit codes are kept for a late `wait`.
pub const RECENTLY_REMOVED: usize = 256;

/// Run blocking `f` off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))
}

/// Fill `bytes` from the kernel's random source.
fn random(bytes: &mut [u8]) -> Result<(), Error> {
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .map_err(|e| Error::Internal(format!("cannot read /dev/urandom: {e}")))
}

/// 32 random bytes as hex.
pub fn random_id() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    random(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2
        && bytes.len() <= 255
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

/// `name` (Docker's `/` prefix dropped) if it is valid and no container
/// but `except` has it: Docker's 400 or 409 otherwise.
fn free_name(
    containers: &BTreeMap<String, Entry>,
    name: &str,
    except: Option<&str>,
) -> Result<String, Error> {
    let name = name.strip_prefix('/').unwrap_or(name);
    if !valid_name(name) {
        return Err(Error::BadRequest(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if let Some(other) = containers
        .values()
        .find(|e| e.record.name == name && Some(e.record.id.as_str()) != except)
    {
        return Err(Error::Conflict(format!(
            "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
            other.record.id
        )));
    }
    Ok(name.to_owned())
}

/// A name for a container that asked for none: `adjective_noun`.
fn random_name(taken: impl Fn(&str) -> bool) -> Result<String, Error> {
    const LEFT: [&str; 16] = [
        "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen",
        "lucid", "merry", "nimble", "proud", "quiet", "sharp", "tender",
        "witty",
    ];
    const RIGHT: [&str; 16] = [
        "anchor", "barge", "buoy", "cove", "dock", "ferry", "harbor", "jetty",
        "keel", "mast", "pier", "quay", "rudder", "sail", "tide", "wharf",
    ];
    for _ in 0..64 {
        let mut pick = [0u8; 3];
        random(&mut pick)?;
        let name = format!(
            "{}_{}",
            LEFT[usize::from(pick[0] % 16)],
            RIGHT[usize::from(pick[1] % 16)]
        );
        let name = if taken(&name) {
            format!("{name}{}", pick[2])
        } else {
            name
        };
        if !taken(&name) {
            return Ok(name);
        }
    }
    Err(Error::Internal("cannot find a free container name".into()))
}

/// Seconds since the epoch of an RFC 3339 time (0 if unreadable).
pub fn unix_seconds(time: &str) -> i64 {
    crate::time::parse_rfc3339(time)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

impl Engine {
    /// Open the engine's state under `config`'s directories.
    pub fn open(config: Config) -> Result<Engine, Error> {
        for dir in [&config.data_root, &config.exec_root] {
            fs::create_dir_all(dir).map_err(path_io::at("create", dir))?;
            set_mode(dir, 0o700)?;
        }
        let containers = config.data_root.join("containers");
        fs::create_dir_all(&containers)
            .map_err(path_io::at("create", &containers))?;
        let store = Store::open(&config.data_root.join("image"))?;
        let snapshots = Snapshots::open(&config.data_root.join("snapshots"))
            .map_err(|e| Error::internal(&e))?;
        let trace: Option<crate::registry::client::Trace> =
            config.debug.then(|| {
                std::sync::Arc::new(|line: &str| {
                    eprintln!("debug: registry: {line}")
                }) as crate::registry::client::Trace
            });
        let registry =
            std::sync::Arc::new(crate::registry::client::Client::new(
                config.insecure_registries.clone(),
                trace,
            ));
        Ok(Engine {
            config,
            store,
            snapshots,
            execs: super::exec::Sessions::default(),
            events: super::events::Events::default(),
            removed: Mutex::new(std::collections::VecDeque::new()),
            collecting: std::sync::RwLock::new(()),
            commits: tokio::sync::Mutex::new(()),
            transfers: tokio::sync::RwLock::new(()),
            gc_pending: std::sync::atomic::AtomicBool::new(false),
            registry,
            containers: Mutex::new(BTreeMap::new()),
        })
    }

    /// Remove the blobs and snapshots that neither an image name nor a
    /// container leads to any more ([`crate::image::gc`]). Skipped while
    /// a pull runs (the next collection after it does the work).
    pub fn collect_garbage(
        &self,
    ) -> Result<crate::image::gc::Collected, Error> {
        let Ok(_no_pull) = self.transfers.try_write() else {
            self.gc_pending
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Ok(crate::image::gc::Collected::default());
        };
        let _alone = self.collecting.write().unwrap_or_else(|e| e.into_inner());
        let in_use = || -> Vec<Digest> {
            self.records()
                .iter()
                .filter_map(|r| r.manifest.parse().ok())
                .collect()
        };
        crate::image::gc::collect(&self.store, &self.snapshots, in_use)
            .map_err(|e| Error::internal(&e))
    }

    /// At the end of a transfer: the collection it held back, if any.
    pub fn after_transfer(&self) {
        if self
            .gc_pending
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = self.collect_garbage();
        }
    }

    /// Emit a container event for `record`, with its image, name and
    /// labels as Docker attaches them, and `extra`.
    pub fn container_event(
        &self,
        action: &str,
        record: &Record,
        extra: &[(&str, String)],
    ) {
        let mut attributes: BTreeMap<String, String> = record
            .config
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        attributes.insert("image".into(), record.image.clone());
        attributes.insert("name".into(), record.name.clone());
        for (key, value) in extra {
            attributes.insert((*key).to_owned(), value.clone());
        }
        self.events
            .emit("container", action, &record.id, attributes);
    }

    /// The exit code of container `id` (its full id) if it was removed
    /// lately.
    pub fn removed_exit(&self, id: &str) -> Option<i64> {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        removed
            .iter()
            .rev()
            .find(|(r, _)| r == id)
            .map(|(_, code)| *code)
    }

    /// Emit a container event for `id` if it is still known.
    pub fn event_of(&self, action: &str, id: &str, extra: &[(&str, String)]) {
        if let Ok(record) = self.record(id) {
            self.container_event(action, &record, extra);
        }
    }

    /// Container `id`'s directory (record, bundle, overlay, log).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir(id)
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.config.data_root.join("containers").join(id)
    }

    /// Container `id`'s shim directory (its socket).
    pub fn shim_dir(&self, id: &str) -> PathBuf {
        self.config.exec_root.join(id)
    }

    fn runtime_root(&self) -> PathBuf {
        self.config.exec_root.join("runtime")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.containers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The id of the container `name` names: its id, a unique prefix of
    /// it, or its name (with or without the `/`).
    pub fn resolve(&self, name: &str) -> Result<String, Error> {
        let containers = self.lock();
        let bare = name.strip_prefix('/').unwrap_or(name);
        if containers.contains_key(name) {
            return Ok(name.to_owned());
        }
        if let Some((id, _)) =
            containers.iter().find(|(_, e)| e.record.name == bare)
        {
            return Ok(id.clone());
        }
        let mut prefixed = containers
            .keys()
            .filter(|id| !name.is_empty() && id.starts_with(name));
        match (prefixed.next(), prefixed.next()) {
            (Some(id), None) => Ok(id.clone()),
            (Some(_), Some(_)) => Err(Error::NotFound(format!(
                "multiple IDs found with provided prefix: {name}"
            ))),
            _ => Err(Error::NotFound(format!("No such container: {name}"))),
        }
    }

    /// A copy of the record of container `id`.
    pub fn record(&self, id: &str) -> Result<Record, Error> {
        self.lock()
            .get(id)
            .map(|e| e.record.clone())
            .ok_or_else(|| Error::NotFound(format!("No such container: {id}")))
    }

    /// Every record.
    pub fn records(&self) -> Vec<Record> {
        self.lock().values().map(|e| e.record.clone()).collect()
    }

    /// How many containers use image `id` (`sha256:…`).
    pub fn users_of(&self, image_id: &str) -> Vec<String> {
        self.lock()
            .values()
            .filter(|e| e.record.image_id == image_id)
            .map(|e| e.record.id.clone())
            .collect()
    }

    fn op_lock(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<()>>, Error> {
        self.lock()
            .get(id)
            .map(|e| e.op.clone())
            .ok_or_else(|| Error::NotFound(format!("No such container: {id}")))
    }

    /// Change the record of `id` with `edit`, write it durably, tell the
    /// waiters. Blocking (an fsync): from async code, through
    /// [`Engine::update_async`].
    fn update(
        &self,
        id: &str,
        edit: impl FnOnce(&mut Record),
    ) -> Result<Record, Error> {
        self.update_entry(id, |entry| {
            edit(&mut entry.record);
            false
        })
    }

    /// [`Engine::update`] off the async threads.
    async fn update_async(
        self: &Arc<Self>,
        id: &str,
        edit: impl FnOnce(&mut Record) + Send + 'static,
    ) -> Result<Record, Error> {
        let engine = self.clone();
        let id = id.to_owned();
        blocking(move || engine.update(&id, edit)).await?
    }

    /// Change the entry of `id` with `edit`, which says whether the
    /// change is an exit (waiters for the next exit wake up); write the
    /// record durably; tell the waiters. The map stays locked throughout,
    /// so that two changes are written in the order they were made.
    fn update_entry(
        &self,
        id: &str,
        edit: impl FnOnce(&mut Entry) -> bool,
    ) -> Result<Record, Error> {
        let mut containers = self.lock();
        self.update_locked(&mut containers, id, edit)
    }

    /// [`Engine::update_entry`] with the map already locked.
    fn update_locked(
        &self,
        containers: &mut BTreeMap<String, Entry>,
        id: &str,
        edit: impl FnOnce(&mut Entry) -> bool,
    ) -> Result<Record, Error> {
        let entry = containers.get_mut(id).ok_or_else(|| {
            Error::NotFound(format!("No such container: {id}"))
        })?;
        let exited = edit(entry);
        let bytes =
            serde_json::to_vec_pretty(&entry.record).unwrap_or_default();
        path_io::replace_durably(
            &self.dir(id).join("container.json"),
            &bytes,
            0o600,
        )?;
        let state = &entry.record.state;
        let running = state.status.is_running();
        let code = state.exit_code;
        entry.changes.send_modify(|c| {
            if exited {
                c.exits += 1;
            }
            c.running = running;
            c.code = code;
        });
        Ok(entry.record.clone())
    }

    /// Subscribe to the changes of `id`.
    pub fn watch(&self, id: &str) -> Result<watch::Receiver<Change>, Error> {
        self.lock()
            .get(id)
            .map(|e| e.changes.subscribe())
            .ok_or_else(|| Error::NotFound(format!("No such container: {id}")))
    }

    /// `POST /containers/create`: merge the image's config into the
    /// request's, check what can be checked now, write the record.
    pub fn create(
        &self,
        name: Option<&str>,
        mut config: ContainerConfig,
        host: HostConfig,
    ) -> Result<Record, Error> {
        let image_name = config.image.clone().unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::BadRequest("no image specified".into()));
        }
        // From the image's lookup to the record's insertion: a garbage
        // collection (after an rmi) either sees this container or runs
        // before its image is looked up.
        let _no_collection =
            self.collecting.read().unwrap_or_else(|e| e.into_inner());
        let image =
            lookup::find(&self.store, &image_name)?.ok_or_else(|| {
                Error::NotFound(format!("No such image: {image_name}"))
            })?;
        merge_image_config(&mut config, &image);
        // What would fail at start fails now, with the request's fault.
        spec::args(&config).map_err(|e| Error::BadRequest(e.to_string()))?;
        let probe = spec::Input {
            id: "0",
            config: &config,
            host: &host,
            user: (0, 0, vec![]),
            etc: [
                ("/etc/hostname", None),
                ("/etc/hosts", None),
                ("/etc/resolv.conf", None),
            ],
            cgroup_v2: false,
            host_name: "",
            init: &self.config.init,
        };
        spec::build(&probe).map_err(|e| Error::BadRequest(e.to_string()))?;
        if host.init == Some(true) {
            check_init(&self.config.init)?;
        }
        let runtime = host
            .runtime
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| self.config.default_runtime.clone());
        if !self.config.runtimes.contains_key(&runtime) {
            return Err(Error::BadRequest(format!(
                "unknown or invalid runtime name: {runtime}"
            )));
        }
        let id = random_id()?;
        let mut containers = self.lock();
        let taken = |n: &str| containers.values().any(|e| e.record.name == n);
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => free_name(&containers, name, None)?,
            None => random_name(taken)?,
        };
        let record = Record {
            id: id.clone(),
            name,
            created: crate::time::rfc3339(SystemTime::now()),
            image: image_name,
            image_id: image.id.to_string(),
            manifest: image.manifest.to_string(),
            config,
            host_config: host,
            runtime,
            state: State {
                started_at: ZERO_TIME.into(),
                finished_at: ZERO_TIME.into(),
                ..State::default()
            },
        };
        let dir = self.dir(&id);
        fs::create_dir(&dir).map_err(path_io::at("create", &dir))?;
        let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        if let Err(e) =
            path_io::replace_durably(&dir.join("container.json"), &bytes, 0o600)
        {
            let _ = fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        containers.insert(id, Entry::new(record.clone(), Change::default()));
        drop(containers);
        self.container_event("create", &record, &[]);
        Ok(record)
    }

    /// Mount the root of `record`'s container (its image's snapshots
    /// under its upper dir) unless it is; its path.
    pub fn mount_rootfs(&self, record: &Record) -> Result<PathBuf, Error> {
        let rootfs = self.dir(&record.id).join("rootfs");
        // Mounted already (a running container, a second cp): nothing to
        // read or make.
        if is_mountpoint(&rootfs) {
            return Ok(rootfs);
        }
        let manifest =
            record.manifest.parse().map_err(|e| Error::internal(&e))?;
        let lower = self
            .snapshots
            .prepare(&self.store, &manifest)
            .map_err(|e| Error::internal(&e))?;
        let dir = self.dir(&record.id);
        let rootfs = dir.join("rootfs");
        for sub in ["rootfs", "upper", "work"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(path_io::at("create", &path))?;
        }
        if !is_mountpoint(&rootfs) {
            let mut lower = lower;
            lower.push(write_init_layer(&dir, &record.host_config)?);
            mount_overlay(&lower, &dir)?;
        }
        Ok(rootfs)
    }

    /// The root of container `id`, mounted, for `docker cp`: under the
    /// container's operation lock, so that a copy neither mounts it twice
    /// (two copies, or a copy and a start) nor brings back a container
    /// being removed.
    pub async fn archive_root(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<(Record, PathBuf), Error> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let record = self.record(id)?;
        let engine = self.clone();
        let mounting = record.clone();
        let rootfs = blocking(move || engine.mount_rootfs(&mounting)).await??;
        Ok((record, rootfs))
    }

    /// The shim of `id`, if one answers.
    fn shim(&self, id: &str) -> Option<(Client, ShimStatus)> {
        let client = Client::new(&self.shim_dir(id));
        let (_, status, _) = client.state().ok()?;
        Some((client, status))
    }

    /// Make sure a shim holds a created (not started) runtime container
    /// for `id`: mount the overlay, write the bundle, launch the shim.
    async fn prepare(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<(Client, u64), Error> {
        let engine = self.clone();
        let id = id.to_owned();
        blocking(move || engine.prepare_blocking(&id)).await?
    }

    fn prepare_blocking(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<(Client, u64), Error> {
        if let Some((client, status)) = self.shim(id) {
            match status {
                ShimStatus::Created => {
                    let run = self.lock().get(id).map_or(0, |e| e.run);
                    return Ok((client, run));
                }
                ShimStatus::Running => {
                    return Err(Error::Conflict(format!(
                        "container {id} is already running"
                    )));
                }
                // An old shim that was never collected.
                ShimStatus::Stopped => client.delete()?,
            }
        }
        let record = self.record(id)?;
        let rootfs = self.mount_rootfs(&record)?;
        let dir = self.dir(id);
        let user =
            resolve_user(&rootfs, record.config.user.as_deref().unwrap_or(""))?;
        let host_name = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hostname =
            spec::hostname(&record.config, &record.host_config, id, &host_name);
        let files = write_etc(&dir, &hostname)?;
        let input = spec::Input {
            id,
            config: &record.config,
            host: &record.host_config,
            user,
            etc: [
                ("/etc/hostname", Some(&files[0])),
                ("/etc/hosts", Some(&files[1])),
                ("/etc/resolv.conf", files.get(2).map(PathBuf::as_path)),
            ],
            cgroup_v2: matches!(
                crate::cgroup::detect(),
                Ok(crate::cgroup::Layout::Unified { .. })
            ),
            host_name: &host_name,
            init: &self.config.init,
        };
        let spec = spec::build(&input)
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let bytes = serde_json::to_vec_pretty(&spec).unwrap_or_default();
        path_io::replace_durably(&dir.join("config.json"), &bytes, 0o600)?;
        let shim_dir = self.shim_dir(id);
        let _ = fs::remove_dir_all(&shim_dir);
        fs::create_dir_all(&shim_dir)
            .map_err(path_io::at("create", &shim_dir))?;
        let runtime = self
            .config
            .runtimes
            .get(&record.runtime)
            .cloned()
            .ok_or_else(|| {
                Error::BadRequest(format!("unknown runtime {}", record.runtime))
            })?;
        // ANCHOR: launch_shim
        let mut command = std::process::Command::new(&self.config.shim);
        command
            .args(["--id", id])
            .arg("--bundle")
            .arg(&dir)
            .arg("--dir")
            .arg(&shim_dir)
            .arg("--log-dir")
            .arg(&dir)
            .arg("--runtime")
            .arg(&runtime)
            .arg("--runtime-root")
            .arg(self.runtime_root())
            .stdin(std::process::Stdio::null());
        if record.config.tty == Some(true) {
            command.arg("--tty");
        }
        if record.config.open_stdin == Some(true) {
            command.arg("--stdin");
        }
        super::debug(&self.config, format_args!("shim {command:?}"));
        let output = command
            .output()
            .map_err(path_io::at("run", &self.config.shim))?;
        if !output.status.success() {
            let message =
                String::from_utf8_lossy(&output.stderr).trim().to_owned();
            let message = message
                .strip_prefix("berth-shim: ")
                .unwrap_or(&message)
                .to_owned();
            let _ = self.update(id, |r| r.state.error = message.clone());
            return Err(Error::Internal(message));
        }
        let client = Client::new(&shim_dir);
        let run = {
            let mut containers = self.lock();
            let entry = containers.get_mut(id).ok_or_else(|| {
                Error::NotFound(format!("No such container: {id}"))
            })?;
            entry.run += 1;
            entry.run
        };
        self.monitor(id, client.clone(), run);
        Ok((client, run))
        // ANCHOR_END: launch_shim
    }

    // ANCHOR: monitor
    /// Watch the shim of `id` (launched for run `run`) until its
    /// container exits: collect the shim (so that whoever sees the exit
    /// never meets it again), record the exit, remove the container if it
    /// asked for that. A shim that vanishes instead marks the container
    /// dead.
    fn monitor(self: &Arc<Self>, id: &str, client: Client, run: u64) {
        let engine = self.clone();
        let id = id.to_owned();
        tokio::runtime::Handle::current().spawn(async move {
            let waited = blocking({
                let client = client.clone();
                move || client.wait()
            })
            .await;
            let exit = match waited {
                Ok(Ok(exit)) => exit,
                Ok(Err(error)) => {
                    // The shim went away: deleted by rm, or killed.
                    let gone = {
                        let engine = engine.clone();
                        let id = id.clone();
                        blocking(move || engine.shim(&id).is_none()).await
                    };
                    if engine.record(&id).is_ok() && gone.unwrap_or(false) {
                        let reason = format!(
                            "its shim died ({})",
                            crate::child::error_chain(&error)
                        );
                        let engine2 = engine.clone();
                        let _ = blocking(move || {
                            engine2.update_entry(&id, |entry| {
                                let state = &mut entry.record.state;
                                if !state.status.is_running() {
                                    return false;
                                }
                                state.status = Status::Dead;
                                state.error = reason;
                                state.pid = 0;
                                true
                            })
                        })
                        .await;
                    }
                    return;
                }
                Err(_) => return,
            };
            let _ = blocking(move || client.delete()).await;
            let recorded = {
                let engine = engine.clone();
                let id = id.clone();
                blocking(move || {
                    // Whether its start was recorded yet: if not, `start`
                    // tells of this exit, after its own event.
                    let mut started = false;
                    engine
                        .update_entry(&id, |entry| {
                            entry.exited_run = run;
                            let state = &mut entry.record.state;
                            started = state.status.is_running();
                            state.status = Status::Exited;
                            state.exit_code = i64::from(exit.code);
                            state.finished_at = exit.at.clone();
                            state.pid = 0;
                            true
                        })
                        .map(|record| (record, started))
                })
                .await
            };
            if let Ok(Ok((record, true))) = &recorded {
                engine.container_event(
                    "die",
                    record,
                    &[("exitCode", exit.code.to_string())],
                );
            }
            let auto_remove = match &recorded {
                Ok(Ok((record, _))) => {
                    record.host_config.auto_remove == Some(true)
                }
                _ => false,
            };
            if auto_remove {
                let _ = engine.remove(&id, true).await;
            }
        });
    }
    // ANCHOR_END: monitor

    /// `POST /containers/ID/attach`: the shim's attach stream.
    pub async fn attach(
        self: &Arc<Self>,
        id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<std::os::unix::net::UnixStream, Error> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let record = self.record(id)?;
        let client = match record.state.status {
            Status::Running | Status::Paused => Client::new(&self.shim_dir(id)),
            Status::Created | Status::Exited => match self.prepare(id).await {
                Ok((client, _)) => client,
                // As with dockerd, whose attach never reaches the runtime:
                // the stream ends at once, and `start`, which meets the
                // same failure, reports it.
                Err(Error::Internal(_)) => {
                    let (ours, _) = std::os::unix::net::UnixStream::pair()
                        .map_err(|e| {
                            Error::Internal(format!("socketpair: {e}"))
                        })?;
                    return Ok(ours);
                }
                Err(e) => return Err(e),
            },
            Status::Dead => {
                return Err(Error::Conflict(format!("container {id} is dead")));
            }
        };
        let close_stdin = record.config.stdin_once == Some(true);
        let stdin = stdin && record.config.open_stdin == Some(true);
        Ok(
            blocking(move || client.attach(stdin, stdout, stderr, close_stdin))
                .await??,
        )
    }

    /// `POST /containers/ID/start`. A container that asked to be
    /// removed when it ends (`--rm`) is removed when it cannot start, as
    /// dockerd does (the docker CLI waits for that).
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let started = self.start_locked(id).await;
        if matches!(started, Err(Error::Internal(_)))
            && self
                .record(id)
                .is_ok_and(|r| r.host_config.auto_remove == Some(true))
        {
            let _ = self.remove(id, true).await;
        }
        started
    }

    async fn start_locked(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let record = self.record(id)?;
        match record.state.status {
            Status::Running | Status::Paused => {
                return Err(Error::NotModified(
                    "container already started".into(),
                ));
            }
            Status::Dead => {
                return Err(Error::Conflict(format!(
                    "container {id} is dead: remove it"
                )));
            }
            Status::Created | Status::Exited => {}
        }
        let (client, run) = self.prepare(id).await?;
        let started = blocking({
            let client = client.clone();
            // The pid first: a process that ends at once may have had
            // its shim collected by the monitor before a later question.
            move || {
                let state = client.state()?;
                client.start().map(|()| state)
            }
        })
        .await?;
        match started {
            Ok((pid, _, _)) => {
                let engine = self.clone();
                let id = id.to_owned();
                let now = crate::time::rfc3339(SystemTime::now());
                let (record, exited) = blocking(move || {
                    let mut exited = false;
                    engine
                        .update_entry(&id, |entry| {
                            let state = &mut entry.record.state;
                            state.error.clear();
                            state.started_at = now;
                            // Its exit may have been recorded already (a
                            // process that ends at once): then it stays so.
                            exited = entry.exited_run == run;
                            if !exited {
                                state.status = Status::Running;
                                state.pid = i64::from(pid);
                                state.finished_at = ZERO_TIME.into();
                            }
                            false
                        })
                        .map(|record| (record, exited))
                })
                .await??;
                self.container_event("start", &record, &[]);
                if exited {
                    let code = record.state.exit_code.to_string();
                    self.container_event("die", &record, &[("exitCode", code)]);
                }
                Ok(())
            }
            Err(error) => {
                let message = crate::child::error_chain(&error);
                let _ = blocking(move || client.delete()).await;
                let recorded = message.clone();
                let _ = self
                    .update_async(id, move |r| r.state.error = recorded)
                    .await;
                Err(Error::Internal(message))
            }
        }
    }

    /// `POST /containers/ID/kill`.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), Error> {
        let record = self.record(id)?;
        if !record.state.status.is_running() {
            return Err(Error::not_running(id));
        }
        let client = Client::new(&self.shim_dir(id));
        match blocking(move || client.kill(signal, false)).await? {
            Ok(()) => {
                self.container_event(
                    "kill",
                    &record,
                    &[("signal", signal.to_string())],
                );
                Ok(())
            }
            // It exited, and its shim was collected, just now.
            Err(crate::shim::Error::Client { .. }) => {
                Err(Error::not_running(id))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Wait until `id` no longer runs, at most `timeout` (`None`: for
    /// ever); whether it stopped.
    async fn wait_stopped(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<bool, Error> {
        let mut changes = self.watch(id)?;
        let stopped = changes.wait_for(|c| !c.running || c.removed);
        match timeout {
            Some(t) => Ok(tokio::time::timeout(t, stopped).await.is_ok()),
            None => Ok(stopped.await.is_ok()),
        }
    }

    /// `POST /containers/ID/stop`: the stop signal, then SIGKILL after
    /// `timeout` seconds.
    pub async fn stop(
        self: &Arc<Self>,
        id: &str,
        timeout: Option<i64>,
    ) -> Result<(), Error> {
        let record = self.record(id)?;
        if !record.state.status.is_running() {
            return Err(Error::NotModified("container already stopped".into()));
        }
        let signal = stop_signal(&record)?;
        let seconds = timeout.or(record.config.stop_timeout).unwrap_or(10);
        // A frozen process cannot act on its signal: thaw it first, as
        // Docker does.
        if record.state.status == Status::Paused {
            self.pause(id, false).await?;
        }
        match self.kill(id, signal).await {
            Ok(()) | Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let wait = u64::try_from(seconds).ok().map(Duration::from_secs);
        if !self.wait_stopped(id, wait).await? {
            match self.kill(id, libc::SIGKILL).await {
                Ok(()) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            self.wait_stopped(id, None).await?;
        }
        self.event_of("stop", id, &[]);
        Ok(())
    }

    /// `POST /containers/ID/pause` (`pause`) and `/unpause`: the
    /// runtime freezes or thaws every process of the container.
    pub async fn pause(
        self: &Arc<Self>,
        id: &str,
        pause: bool,
    ) -> Result<(), Error> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let record = self.record(id)?;
        let short: String = id.chars().take(12).collect();
        match (record.state.status, pause) {
            (Status::Running, true) | (Status::Paused, false) => {}
            (Status::Paused, true) => {
                return Err(Error::Conflict(format!(
                    "Container {short} is already paused"
                )));
            }
            (Status::Running, false) => {
                return Err(Error::Conflict(format!(
                    "Container {short} is not paused"
                )));
            }
            (Status::Created | Status::Exited | Status::Dead, _) => {
                return Err(Error::not_running(id));
            }
        }
        let client = Client::new(&self.shim_dir(id));
        blocking(move || {
            if pause {
                client.pause()
            } else {
                client.resume()
            }
        })
        .await??;
        let status = if pause {
            Status::Paused
        } else {
            Status::Running
        };
        self.update_async(id, move |r| {
            // Unless it exited meanwhile.
            if r.state.status.is_running() {
                r.state.status = status;
            }
        })
        .await?;
        self.container_event(
            if pause { "pause" } else { "unpause" },
            &record,
            &[],
        );
        Ok(())
    }

    /// `POST /containers/ID/rename?name=NEW`.
    pub fn rename(&self, id: &str, name: &str) -> Result<(), Error> {
        // Checked and taken under one lock: two renames to one name
        // cannot both succeed.
        let mut containers = self.lock();
        let name = free_name(&containers, name, Some(id))?;
        let mut old = String::new();
        let record = self.update_locked(&mut containers, id, |entry| {
            old = std::mem::replace(&mut entry.record.name, name);
            false
        })?;
        drop(containers);
        self.container_event(
            "rename",
            &record,
            &[("oldName", format!("/{old}"))],
        );
        Ok(())
    }

    /// `DELETE /containers/ID`: refused while it runs unless `force`
    /// (then killed first).
    pub async fn remove(
        self: &Arc<Self>,
        id: &str,
        force: bool,
    ) -> Result<(), Error> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let record = self.record(id)?;
        if record.state.status.is_running() {
            if !force {
                return Err(Error::Conflict(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    record.name
                )));
            }
            if record.state.status == Status::Paused {
                let client = Client::new(&self.shim_dir(id));
                let _ = blocking(move || client.resume()).await;
            }
            let engine = self.clone();
            let id_owned = id.to_owned();
            if blocking(move || engine.shim(&id_owned).is_some()).await? {
                let _ = self.kill(id, libc::SIGKILL).await;
                self.wait_stopped(id, Some(Duration::from_secs(10))).await?;
            }
        }
        let engine = self.clone();
        let id_owned = id.to_owned();
        blocking(move || engine.remove_blocking(&id_owned)).await??;
        self.container_event("destroy", &record, &[]);
        self.execs.forget(id);
        {
            let mut containers = self.lock();
            if let Some(entry) = containers.remove(id) {
                let mut removed =
                    self.removed.lock().unwrap_or_else(|e| e.into_inner());
                if removed.len() == RECENTLY_REMOVED {
                    removed.pop_front();
                }
                removed
                    .push_back((id.to_owned(), entry.record.state.exit_code));
                entry.changes.send_modify(|c| {
                    c.removed = true;
                    c.running = false;
                });
            }
        }
        // The last user of an image removed under it (`rmi -f`): what
        // only it kept goes now.
        let engine = self.clone();
        let manifest = record.manifest.clone();
        let _ = blocking(move || {
            // Another container of the image keeps it anyway (no store
            // read); else whether the store still holds it.
            if !engine.users_of(&record.image_id).is_empty() {
                return;
            }
            let manifest: Option<Digest> = manifest.parse().ok();
            let kept = engine.store.manifests().is_ok_and(|manifests| {
                manifest.is_some_and(|m| manifests.contains(&m))
            });
            if !kept {
                let _ = engine.collect_garbage();
            }
        })
        .await;
        Ok(())
    }

    fn remove_blocking(&self, id: &str) -> Result<(), Error> {
        let deleted = match self.shim(id) {
            // The monitor may collect the same shim meanwhile: a shim
            // gone by the end is as good as deleted.
            Some((client, _)) => {
                client.delete().is_ok() || self.shim(id).is_none()
            }
            None => false,
        };
        if !deleted && self.runtime_root().join(id).exists() {
            // No shim (never prepared, or killed), and the runtime still
            // holds a container (runc, crun and berth-runtime keep one
            // directory per container under their root).
            self.runtime_delete(id);
        }
        let dir = self.dir(id);
        let rootfs = dir.join("rootfs");
        if is_mountpoint(&rootfs) {
            nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| {
                    Error::Internal(format!(
                        "cannot unmount {}: {e}",
                        rootfs.display()
                    ))
                })?;
        }
        let _ = fs::remove_dir_all(self.shim_dir(id));
        crate::overlay::remove_tree(&dir);
        Ok(())
    }

    /// `runtime delete --force ID`, best effort.
    fn runtime_delete(&self, id: &str) {
        let runtime = self
            .record(id)
            .ok()
            .and_then(|r| self.config.runtimes.get(&r.runtime).cloned());
        if let Some(runtime) = runtime {
            let _ = std::process::Command::new(runtime)
                .arg("--root")
                .arg(self.runtime_root())
                .args(["delete", "--force", id])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    // ANCHOR: restore
    /// After a restart: read every record back and reconcile it with
    /// what is really there. A container whose shim answers goes on (its
    /// monitor restarts); one whose shim is gone exited (its exit record
    /// says how) or is dead; a directory without a readable record was
    /// half made and is removed.
    pub fn restore(self: &Arc<Self>) -> Result<(), Error> {
        let root = self.config.data_root.join("containers");
        let entries =
            fs::read_dir(&root).map_err(path_io::at("list", &root))?;
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let record: Option<Record> = fs::read(dir.join("container.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(mut record) = record.filter(|r| r.id == id) else {
                let rootfs = dir.join("rootfs");
                if is_mountpoint(&rootfs) {
                    let _ = nix::mount::umount2(
                        &rootfs,
                        nix::mount::MntFlags::MNT_DETACH,
                    );
                }
                crate::overlay::remove_tree(&dir);
                continue;
            };
            let shim = self.shim(&id);
            let exit_file = self.shim_dir(&id).join(crate::shim::EXIT_FILE);
            let exit: Option<crate::shim::protocol::Exit> =
                fs::read(&exit_file)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
            match (&shim, record.state.status) {
                (Some((_, ShimStatus::Running)), Status::Paused) => {}
                (Some((_, ShimStatus::Running)), _) => {
                    record.state.status = Status::Running;
                }
                (Some((_, ShimStatus::Stopped)), _) | (None, _)
                    if exit.is_some() && record.state.status.is_running() =>
                {
                    let exit = exit.clone().unwrap_or_else(|| unreachable!());
                    record.state.status = Status::Exited;
                    record.state.exit_code = i64::from(exit.code);
                    record.state.finished_at = exit.at;
                    record.state.pid = 0;
                }
                (None, status) if status.is_running() => {
                    record.state.status = Status::Dead;
                    record.state.error =
                        "its shim died while the daemon was down".into();
                    record.state.pid = 0;
                }
                _ => {}
            }
            let running = record.state.status.is_running();
            let code = record.state.exit_code;
            let change = Change {
                running,
                code,
                ..Change::default()
            };
            self.lock().insert(id.clone(), Entry::new(record, change));
            let _ = self.update(&id, |_| {});
            if let Some((client, _)) = shim {
                let run = {
                    let mut containers = self.lock();
                    containers.get_mut(&id).map_or(0, |e| {
                        e.run += 1;
                        e.run
                    })
                };
                self.monitor(&id, client, run);
            }
        }
        Ok(())
    }
    // ANCHOR_END: restore
}

/// The signal that stops `record`'s container (its StopSignal, SIGTERM
/// by default), as a number.
fn stop_signal(record: &Record) -> Result<i32, Error> {
    let name = record.config.stop_signal.clone().unwrap_or_default();
    if name.is_empty() {
        return Ok(libc::SIGTERM);
    }
    parse_signal(&name)
        .ok_or_else(|| Error::BadRequest(format!("invalid signal: {name}")))
}

/// `TERM`, `SIGTERM`, `15` as 15.
pub fn parse_signal(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// Docker's merge: the request's Cmd/Entrypoint/Env/WorkingDir/User/
/// Labels/StopSignal over the image's; a request's Entrypoint drops the
/// image's Cmd.
fn merge_image_config(config: &mut ContainerConfig, image: &lookup::Image) {
    let Some(from) = image.config.config() else {
        return;
    };
    let entrypoint_given = config.entrypoint.is_some();
    if !entrypoint_given {
        config.entrypoint = from.entrypoint().clone();
    }
    if config.cmd.as_ref().is_none_or(|c| c.is_empty()) && !entrypoint_given {
        config.cmd = from.cmd().clone();
    }
    // Empty strings in an Entrypoint mean "none" (`--entrypoint ""`).
    if config
        .entrypoint
        .as_ref()
        .is_some_and(|e| e.iter().all(String::is_empty))
    {
        config.entrypoint = None;
    }
    let mut env: Vec<String> = from.env().clone().unwrap_or_default();
    for pair in config.env.take().unwrap_or_default() {
        let key = pair.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(pair);
    }
    config.env = Some(env);
    if config.working_dir.as_ref().is_none_or(String::is_empty) {
        config.working_dir = from.working_dir().clone();
    }
    if config.user.as_ref().is_none_or(String::is_empty) {
        config.user = from.user().clone();
    }
    if config.stop_signal.as_ref().is_none_or(String::is_empty) {
        config.stop_signal = from.stop_signal().clone();
    }
    let mut labels: std::collections::HashMap<String, String> = from
        .labels()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(config.labels.take().unwrap_or_default());
    config.labels = Some(labels);
    let mut ports: Vec<String> =
        from.exposed_ports().clone().unwrap_or_default();
    for port in config.exposed_ports.take().unwrap_or_default() {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    config.exposed_ports = (!ports.is_empty()).then_some(ports);
}

/// The init binary must be there and static: a container's root need
/// not have the loader a dynamically linked program asks for (an ELF
/// program header of type `PT_INTERP` names it).
fn check_init(path: &Path) -> Result<(), Error> {
    let unusable = |why: &str| {
        Error::Internal(format!(
            "the init binary {} {why} (build it with scripts/build-init and give its path to berth daemon --init-path)",
            path.display()
        ))
    };
    // The ELF header and the program headers sit in its first pages.
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(f, 64 << 10),
                &mut bytes,
            )
        })
        .map_err(|e| unusable(&format!("cannot be read: {e}")))?;
    if !bytes.starts_with(b"\x7fELF") || bytes.get(4) != Some(&2) {
        return Err(unusable("is not a 64-bit ELF executable"));
    }
    let word = |at: usize, len: usize| -> Option<u64> {
        let mut value = 0u64;
        for i in (0..len).rev() {
            value = value << 8 | u64::from(*bytes.get(at + i)?);
        }
        Some(value)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (word(0x20, 8), word(0x36, 2), word(0x38, 2))
    else {
        return Err(unusable("is not a 64-bit ELF executable"));
    };
    const PT_INTERP: u64 = 3;
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .and_then(|o| usize::try_from(o).ok())
            .unwrap_or(usize::MAX);
        match word(at, 4) {
            Some(PT_INTERP) => return Err(unusable("is dynamically linked")),
            Some(_) => {}
            None => return Err(unusable("is a truncated ELF executable")),
        }
    }
    Ok(())
}

/// Whether `path` is a mount point (another device than its parent's).
fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (fs::metadata(path), fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Mount the container's overlay: `lower` (bottom first) under its own
/// `upper` and `work`, on `DIR/rootfs`.
fn mount_overlay(lower: &[PathBuf], dir: &Path) -> Result<(), Error> {
    let top_first: Vec<PathBuf> = lower.iter().rev().cloned().collect();
    let options = crate::overlay::options(
        &top_first,
        &dir.join("upper"),
        &dir.join("work"),
        false,
    )
    .map_err(|e| Error::internal(&e))?;
    let rootfs = dir.join("rootfs");
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| {
        Error::Internal(format!(
            "cannot mount the overlay on {}: {e}",
            rootfs.display()
        ))
    })
}

/// The container's *init layer* (Docker's name), `DIR/init/`: the top
/// lower layer of its root, holding empty files and directories where
/// the runtime will mount something (`/etc/hostname`, `/etc/hosts`,
/// `/etc/resolv.conf`, `/sbin/docker-init`, `/dev`, `/proc`, `/sys`, the
/// `--tmpfs` points). The runtime finds its mount targets there instead
/// of making them in the upper directory, so that `docker diff` and
/// `docker commit` show only what the container itself changed.
fn write_init_layer(dir: &Path, host: &HostConfig) -> Result<PathBuf, Error> {
    let init = dir.join("init");
    let mut dirs = vec![
        "etc".to_owned(),
        "dev/pts".to_owned(),
        "dev/shm".to_owned(),
        "dev/mqueue".to_owned(),
        "proc".to_owned(),
        "sys".to_owned(),
    ];
    let mut files = vec!["etc/hostname", "etc/hosts", "etc/resolv.conf"];
    if host.init == Some(true) {
        dirs.push("sbin".to_owned());
        files.push("sbin/docker-init");
    }
    for destination in host.tmpfs.iter().flatten().map(|(d, _)| d) {
        // Plain paths only: anything else is left to the runtime, which
        // resolves it inside the root.
        let relative = destination.trim_start_matches('/');
        if Path::new(relative)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
            && !relative.is_empty()
        {
            dirs.push(relative.to_owned());
        }
    }
    for sub in &dirs {
        let path = init.join(sub);
        fs::create_dir_all(&path).map_err(path_io::at("create", &path))?;
    }
    for file in files {
        let path = init.join(file);
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(path_io::at("create", &path))?;
    }
    Ok(init)
}

/// `/etc/hostname`, `/etc/hosts`, and the host's `/etc/resolv.conf` if
/// it has one, in the container's directory.
fn write_etc(dir: &Path, hostname: &str) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for (name, content) in
        [("hostname", format!("{hostname}\n")), ("hosts", hosts)]
    {
        let path = dir.join(name);
        fs::write(&path, content).map_err(path_io::at("write", &path))?;
        files.push(path);
    }
    if let Ok(resolv) = fs::read("/etc/resolv.conf") {
        let path = dir.join("resolv.conf");
        fs::write(&path, resolv).map_err(path_io::at("write", &path))?;
        files.push(path);
    }
    Ok(files)
}

/// Docker's `User`: `uid`, `uid:gid`, `name`, `name:group`, resolved
/// through the image's `/etc/passwd` and `/etc/group`, read inside the
/// rootfs (`openat2(2)` with `RESOLVE_IN_ROOT`: a symlinked
/// `/etc/passwd` cannot point at the host's).
pub fn resolve_user(
    rootfs: &Path,
    user: &str,
) -> Result<(u32, u32, Vec<u32>), Error> {
    let (who, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let read = |path: &str| read_in_root(rootfs, path).unwrap_or_default();
    let passwd = read("/etc/passwd");
    let groups = read("/etc/group");
    let (uid, mut gid, name) = if who.is_empty() {
        (0, 0, "root".to_owned())
    } else if let Ok(uid) = who.parse::<u32>() {
        let entry = passwd.lines().find(|l| l.split(':').nth(2) == Some(who));
        let gid = entry
            .and_then(|l| l.split(':').nth(3)?.parse().ok())
            .unwrap_or(0);
        let name = entry
            .and_then(|l| l.split(':').next())
            .unwrap_or("")
            .to_owned();
        (uid, gid, name)
    } else {
        let entry = passwd
            .lines()
            .find(|l| l.split(':').next() == Some(who))
            .ok_or_else(|| {
            Error::BadRequest(format!(
                "unable to find user {who}: no matching entries in passwd file"
            ))
        })?;
        let field = |n: usize| {
            entry.split(':').nth(n).and_then(|f| f.parse::<u32>().ok())
        };
        (field(2).unwrap_or(0), field(3).unwrap_or(0), who.to_owned())
    };
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .lines()
                .find(|l| l.split(':').next() == Some(group))
                .and_then(|l| l.split(':').nth(2)?.parse().ok())
                .ok_or_else(|| Error::BadRequest(format!("unable to find group {group}: no matching entries in group file")))?,
        };
    }
    let additional = groups
        .lines()
        .filter(|l| {
            !name.is_empty()
                && l.split(':')
                    .nth(3)
                    .is_some_and(|m| m.split(',').any(|m| m == name))
        })
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .filter(|g| *g != gid)
        .collect();
    Ok((uid, gid, additional))
}

/// A small regular file of the rootfs, looked up inside it; at most
/// 1 MiB. The image (or an earlier run of the container) owns what is
/// there: the path is first opened `O_PATH`, which opens no device and
/// waits on no FIFO, and only a regular file is then opened for reading
/// (through the `O_PATH` fd, so it is the very file checked).
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    use nix::fcntl::OFlag;
    use std::io::Read;
    use std::os::fd::{AsFd, AsRawFd};
    let root = fs::File::open(rootfs).ok()?;
    let handle = crate::mount::open_in_root(
        root.as_fd(),
        Path::new(path),
        OFlag::O_PATH,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let stat = nix::sys::stat::fstat(&handle).ok()?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .ok()?;
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(path_io::at("chmod", path))
        .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(valid_name("web-1.b_c"));
        for bad in ["", "a", "-x", "a/b", "a b", "ä1"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_init_must_be_a_static_executable() {
        let dynamic = std::env::current_exe().unwrap();
        let error = check_init(&dynamic).unwrap_err().to_string();
        assert!(error.contains("is dynamically linked"), "{error}");
        let error = check_init(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot be read"), "{error}");
        let error = check_init(Path::new("/etc/hostname"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a 64-bit ELF"), "{error}");
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("sigkill"), Some(9));
        assert_eq!(parse_signal("2"), Some(2));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("NOPE"), None);
    }
}
