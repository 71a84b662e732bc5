//! `berth daemon`: the engine's server. It speaks a subset of the Docker
//! Engine API on a unix socket ([`http`]), keeps containers' records and
//! images on disk ([`containers`], [`crate::image`]), and runs every
//! container through a `berth-shim` ([`crate::shim`]): it never forks a
//! container itself, so it can be restarted (or killed) under running
//! containers and find them again ([`containers::Engine::restore`]).
//!
//! ```text
//!   DATA_ROOT/image/                    the image store (OCI layout)
//!   DATA_ROOT/snapshots/                layers, unpacked, by chain ID
//!   DATA_ROOT/containers/ID/            container.json (the record),
//!                                       config.json + rootfs (the bundle),
//!                                       upper/ work/ (its overlay), json.log
//!   EXEC_ROOT/ID/                       the shim: shim.sock, exit.json
//!   EXEC_ROOT/runtime/                  the runtime's --root
//!   EXEC_ROOT/berth.sock                the API (mode 0660, root: access
//!                                       to it is root on the host)
//! ```
//!
//! tokio lives here and in the CLI only; the shims and the runtime are
//! separate single-threaded processes.

pub mod archive;
pub mod build;
pub mod changes;
pub mod containers;
pub mod distribution;
pub mod events;
pub mod exec;
pub mod http;
pub mod images;
pub mod seccomp;
pub mod spec;
pub mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The daemon's settings (`berth daemon`'s flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Persistent state: images, snapshots, containers.
    pub data_root: PathBuf,
    /// State that lives as long as the machine runs: shims, the runtime's
    /// root, the socket.
    pub exec_root: PathBuf,
    /// The API's unix socket.
    pub socket: PathBuf,
    /// The OCI runtimes by name (`berth-runtime`, `runc`, `crun`).
    pub runtimes: BTreeMap<String, PathBuf>,
    /// The runtime of a container that names none.
    pub default_runtime: String,
    /// The shim's executable.
    pub shim: PathBuf,
    /// The init of `run --init` containers: a static executable,
    /// bind-mounted into them (`berth-init`).
    pub init: PathBuf,
    /// `--debug`: a line on stderr for each API request, each shim
    /// launched and each registry request (what the book's architecture
    /// and registry chapters show).
    pub debug: bool,
    /// `--insecure-registry`: registries (`host[:port]`) spoken to in
    /// plain HTTP, besides loopback ones.
    pub insecure_registries: Vec<String>,
}

/// With `--debug`, one line on stderr: `debug: WHAT`.
pub fn debug(config: &Config, what: std::fmt::Arguments<'_>) {
    if config.debug {
        eprintln!("debug: {what}");
    }
}

/// The API version this daemon speaks, and the oldest it accepts.
pub const API_VERSION: &str = "1.45";
/// The oldest API version accepted.
pub const MIN_API_VERSION: &str = "1.24";

/// Run the daemon until SIGTERM or SIGINT: open the engine, restore its
/// containers, serve the API on the socket (refusing to start if another
/// daemon answers there).
pub fn run(config: Config) -> Result<(), containers::Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            containers::Error::Internal(format!("cannot start tokio: {e}"))
        })?;
    runtime.block_on(async move {
        let socket = config.socket.clone();
        // One daemon per data root, and per socket: a second one would
        // restore (rewrite, collect) the containers the first one runs.
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(containers::Error::Conflict(format!(
                "another daemon is listening on {}",
                socket.display()
            )));
        }
        let _data_lock = lock_data_root(&config.data_root)?;
        let engine = std::sync::Arc::new(containers::Engine::open(config)?);
        engine.restore()?;
        // What a build killed with the daemon left: its containers, its
        // directories.
        build::sweep(&engine).await;
        // What a daemon killed in the middle of a pull, load or commit
        // wrote and no image names yet (its temporary files are swept by
        // the store's open).
        engine.collect_garbage()?;
        let _ = std::fs::remove_file(&socket);
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent).map_err(crate::path_io::at("create", parent))?;
        }
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(crate::path_io::at("listen on", &socket))?;
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o660))
            .map_err(crate::path_io::at("chmod", &socket))?;
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        http::serve(engine, listener, shutdown).await;
        let _ = std::fs::remove_file(&socket);
        Ok(())
    })
}

/// Take the data root's lock (`DATA_ROOT/berth.lock`, `flock(2)`), held
/// while the returned file is open; refused if another daemon holds it.
fn lock_data_root(
    data_root: &std::path::Path,
) -> Result<std::fs::File, containers::Error> {
    std::fs::create_dir_all(data_root)
        .map_err(crate::path_io::at("create", data_root))?;
    let path = data_root.join("berth.lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(crate::path_io::at("open", &path))?;
    match crate::overlay::try_lock(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(containers::Error::Conflict(format!(
            "another daemon is using {}",
            data_root.display()
        ))),
        Err(e) => Err(crate::path_io::at("lock", &path)(e).into()),
    }
}
