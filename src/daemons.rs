//! Real clients of the runtime, started by the tests themselves: an OCI
//! image of the test rootfs (no network), and containerd on its own
//! sockets and directories, stopped and cleaned after.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// `sha256:HEX` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The blobs of an image of the directory `rootfs` as one uncompressed
/// layer, with `entrypoint` (or busybox's `Cmd ["sh"]` when it is empty):
/// (layer, its digest, config, its digest).
fn image_blobs(
    rootfs: &Path,
    entrypoint: &[&str],
) -> (Vec<u8>, String, Vec<u8>, String) {
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer
        .append_dir_all(".", rootfs)
        .expect("cannot tar the rootfs");
    let layer = layer.into_inner().unwrap();
    let layer_digest = digest(&layer);
    let config = config_of(std::slice::from_ref(&layer_digest), entrypoint);
    let config_digest = digest(&config);
    (layer, layer_digest, config, config_digest)
}

/// The image config of the test images: busybox's `sh` (or `entrypoint`
/// when it is not empty), over layers whose uncompressed digests are
/// `diff_ids`.
fn config_of(diff_ids: &[String], entrypoint: &[&str]) -> Vec<u8> {
    let mut config = serde_json::json!({
        "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
        "Cmd": ["sh"],
    });
    if !entrypoint.is_empty() {
        config["Entrypoint"] = serde_json::json!(entrypoint);
        config["Cmd"] = serde_json::Value::Null;
    }
    serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string()
    .into_bytes()
}

/// The test rootfs as a layer tar (uncompressed) and its digest.
pub fn rootfs_layer(rootfs: &Path) -> (Vec<u8>, String) {
    let (layer, layer_digest, _, _) = image_blobs(rootfs, &[]);
    (layer, layer_digest)
}

/// A docker-archive of the image whose layers are `layers`: each blob as
/// it is stored (plain, gzip or zstd) and the digest of its uncompressed
/// tar (its diff ID).
pub fn docker_archive_of(tag: &str, layers: &[(Vec<u8>, String)]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    let config = config_of(&diff_ids, &[]);
    let config_name =
        format!("{}.json", digest(&config).trim_start_matches("sha256:"));
    let mut files: Vec<(String, &[u8])> = Vec::new();
    let mut names = Vec::new();
    for (blob, _) in layers {
        let name =
            format!("{}/layer.tar", digest(blob).trim_start_matches("sha256:"));
        names.push(name.clone());
        files.push((name, blob));
    }
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": names,
    }])
    .to_string()
    .into_bytes();
    files.push((config_name, &config));
    files.push(("manifest.json".to_owned(), &manifest));
    tar_of(&files)
}

/// A layer tar of text files (path, content).
pub fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let files: Vec<(String, &[u8])> = files
        .iter()
        .map(|(name, text)| ((*name).to_owned(), text.as_bytes()))
        .collect();
    tar_of(&files)
}

/// `bytes`, gzip'd.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, bytes).unwrap();
    encoder.finish().unwrap()
}

/// Two layers to stack on the rootfs, each as stored and with its diff
/// ID: a zstd one adding `/etc/from-zstd` and `/etc/hidden-later`, then
/// a gzip one adding `/etc/from-gzip` and whiting out `hidden-later`.
/// In a container of them, `cat /etc/from-zstd /etc/from-gzip` prints
/// `z` and `g`, and `/etc/hidden-later` is gone.
pub fn stacked_layers() -> [(Vec<u8>, String); 2] {
    let zstd_tar =
        layer(&[("etc/from-zstd", "z\n"), ("etc/hidden-later", "h\n")]);
    let zstd = ruzstd::encoding::compress_to_vec(
        zstd_tar.as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let gzip_tar =
        layer(&[("etc/from-gzip", "g\n"), ("etc/.wh.hidden-later", "")]);
    [
        (zstd, digest(&zstd_tar)),
        (gzip(&gzip_tar), digest(&gzip_tar)),
    ]
}

/// A tar of `files` (name, content).
pub fn tar_of(files: &[(String, &[u8])]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        out.append_data(&mut header, name, *bytes).unwrap();
    }
    out.into_inner().unwrap()
}

/// An OCI image layout, as a tar, of the directory `rootfs` as one
/// uncompressed layer: what `ctr images import` takes.
pub fn oci_archive(rootfs: &Path) -> Vec<u8> {
    oci_archive_with(rootfs, &[])
}

/// [`oci_archive`], with `entrypoint` in the image's config.
pub fn oci_archive_with(rootfs: &Path, entrypoint: &[&str]) -> Vec<u8> {
    let (layer, layer_digest, config, config_digest) =
        image_blobs(rootfs, entrypoint);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = digest(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    })
    .to_string()
    .into_bytes();
    let blob =
        |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    tar_of(&[
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        ),
        ("index.json".to_owned(), &index),
        (blob(&layer_digest), &layer),
        (blob(&config_digest), &config),
        (blob(&manifest_digest), &manifest),
    ])
}

/// A docker-archive (`docker save`'s format) of the directory `rootfs`,
/// tagged `tag`: what `docker load` (before Docker 25) and `podman load`
/// take.
pub fn docker_archive(rootfs: &Path, tag: &str) -> Vec<u8> {
    docker_archive_of(tag, &[rootfs_layer(rootfs)])
}

/// containerd, started for one test on sockets and directories of its
/// own under `/tmp/berth-ctrd-NAME` (a unix socket path must stay short).
/// Stopped, and its directories removed, when dropped.
pub struct Containerd {
    dir: PathBuf,
    child: Child,
    /// The namespace the test's containers live in.
    pub namespace: String,
}

impl Containerd {
    /// Start it, its CRI plugin off, and wait until it answers. Its
    /// environment carries `BERTH_TRACE=text` and `BERTH_TRACE_FILE`
    /// ([`Containerd::trace`]): what reaches containerd reaches its shims
    /// and the runtime they run.
    pub fn start(name: &str) -> Containerd {
        Containerd::launch(
            name,
            &format!("berth-{name}"),
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
    }

    /// Start it with its CRI plugin configured by `cri`, a TOML text in
    /// which `{dir}` stands for the daemon's directory. Its containers
    /// live in the CRI's namespace, `k8s.io`.
    pub fn start_cri(name: &str, cri: &str) -> Containerd {
        let dir = format!("/tmp/berth-ctrd-{name}");
        Containerd::launch(name, "k8s.io", &cri.replace("{dir}", &dir))
    }

    /// Write the config (the private directories and sockets, then
    /// `extra`), start containerd and wait until it answers.
    fn launch(name: &str, namespace: &str, extra: &str) -> Containerd {
        let dir = PathBuf::from(format!("/tmp/berth-ctrd-{name}"));
        cleanup(&dir);
        fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             [grpc]\n  address = \"{d}/c.sock\"\n\
             [ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
             [debug]\n  address = \"{d}/debug.sock\"\n",
            d = dir.display()
        );
        // Top-level keys must come before the first table.
        let (top, tables) = if extra.starts_with('[') {
            ("", extra)
        } else {
            match extra.find("\n[") {
                Some(at) => extra.split_at(at + 1),
                None => (extra, ""),
            }
        };
        fs::write(dir.join("config.toml"), format!("{top}{config}{tables}"))
            .unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .env("BERTH_TRACE", "text")
            .env("BERTH_TRACE_FILE", dir.join("trace.log"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("containerd is needed (scripts/setup installs it)");
        let containerd = Containerd {
            dir,
            child,
            namespace: namespace.to_owned(),
        };
        let start = Instant::now();
        while !containerd
            .ctr(&["version"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "containerd did not start: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    /// Its directory: root, state, sockets, config and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What containerd logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// What berth-runtime traced under this containerd.
    pub fn trace(&self) -> String {
        fs::read_to_string(self.dir.join("trace.log")).unwrap_or_default()
    }

    /// Its gRPC socket.
    pub fn address(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// `ctr` against this containerd, in the test's namespace.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.address())
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The config.json containerd wrote for the task `id`.
    pub fn bundle_config(&self, id: &str) -> serde_json::Value {
        let path = self
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
            .join("config.json");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// The runtime root containerd's runc shim gives the runtime for this
    /// namespace (`--root`).
    pub fn runtime_root(&self) -> PathBuf {
        Path::new("/run/containerd/runc").join(&self.namespace)
    }

    /// Import the test rootfs as image `berth.test/busybox:latest`.
    pub fn import_rootfs(&self, rootfs: &Path) -> &'static str {
        self.import(rootfs, "berth.test/busybox", &[]);
        "berth.test/busybox:latest"
    }

    /// Import the directory `rootfs` as image `BASE:latest`, with
    /// `entrypoint` in its config (busybox's `sh` when empty).
    pub fn import(&self, rootfs: &Path, base: &str, entrypoint: &[&str]) {
        let mut import = self
            .ctr(&["images", "import", "--base-name", base, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let archive = oci_archive_with(rootfs, entrypoint);
        import.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(import.wait().unwrap().success(), "ctr images import failed");
    }
}

/// Stop a daemon: `SIGTERM`, up to `patience` to exit, then `SIGKILL`.
fn stop(child: &mut Child, patience: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    crate::wait_at_most(child, patience);
}

/// Remove what a containerd left in `dir`: unmount its snapshots first.
fn cleanup(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
    let _ = fs::remove_dir_all(dir);
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A test that failed halfway leaves tasks: their shims would
        // outlive containerd.
        let listed = self.ctr(&["task", "ls", "-q"]).output();
        let tasks =
            listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        for task in tasks.unwrap_or_default().lines() {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", task]).status();
            let _ = self.ctr(&["task", "rm", "-f", task]).status();
        }
        let listed = self.ctr(&["container", "ls", "-q"]).output();
        let containers =
            listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        for container in containers.unwrap_or_default().lines() {
            let _ = self.ctr(&["container", "rm", container]).status();
        }
        stop(&mut self.child, Duration::from_secs(10));
        cleanup(&self.dir);
        // The runtime root and the cgroup parent of a namespace of the
        // test's own; never the CRI's `k8s.io`, which a real node's
        // containerd shares (the CRI node keeps its state elsewhere).
        if self.namespace.starts_with("berth-") {
            let _ = fs::remove_dir_all(self.runtime_root());
            remove_parent_cgroup(&self.namespace);
        }
    }
}

/// Remove the (empty) cgroup `name` at the top of every hierarchy: the
/// parent a daemon puts its containers under.
fn remove_parent_cgroup(name: &str) {
    let hierarchies: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    for dir in hierarchies
        .iter()
        .chain(std::iter::once(&PathBuf::from("/sys/fs/cgroup")))
    {
        remove_empty_tree(&dir.join(name));
    }
}

/// `rmdir` every directory of `dir`'s tree, deepest first (a cgroup
/// directory goes only when it has no process and no child).
pub fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Wait until `ready` says yes (20 s at most), else panic with `log`.
fn wait_ready(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not start: {}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// dockerd (with the containerd it starts itself), for one test: data,
/// exec root and socket under `/tmp/berth-dockerd-NAME`, no bridge and no
/// iptables rules (nothing of the host's network is touched), and
/// berth-runtime added as runtime `berth`. Stopped and cleaned when
/// dropped.
pub struct Dockerd {
    dir: PathBuf,
    child: Child,
}

impl Dockerd {
    /// Start it with `runtime` as runtime `berth`, and wait until it
    /// answers.
    pub fn start(name: &str, runtime: &Path) -> Dockerd {
        let dir = PathBuf::from(format!("/tmp/berth-dockerd-{name}"));
        cleanup(&dir);
        fs::create_dir_all(&dir).unwrap();
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("d.sock").display()))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .arg("--add-runtime")
            .arg(format!("berth={}", runtime.display()))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("dockerd is needed (scripts/setup installs docker.io)");
        let dockerd = Dockerd { dir, child };
        let log = dockerd.dir.join("dockerd.log");
        wait_ready("dockerd", &log, || {
            dockerd
                .docker(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        dockerd
    }

    /// `docker` against this dockerd.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.join("d.sock").display()),
            )
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The same `docker` as one shell command line (for script(1)).
    pub fn docker_line(&self) -> String {
        format!(
            "env DOCKER_HOST=unix://{} DOCKER_CONFIG={} docker",
            self.dir.join("d.sock").display(),
            self.dir.join("client").display()
        )
    }

    /// The config.json dockerd wrote for the running container `name`.
    pub fn bundle_config(&self, name: &str) -> serde_json::Value {
        let inspect = self
            .docker(&["inspect", "-f", "{{.Id}}", name])
            .output()
            .unwrap();
        let id = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
        let path = self
            .dir
            .join("exec/containerd/daemon/io.containerd.runtime.v2.task/moby")
            .join(&id)
            .join("config.json");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Load the test rootfs as image `berth.test/busybox:latest`.
    pub fn load_rootfs(&self, rootfs: &Path) -> &'static str {
        let tag = "berth.test/busybox:latest";
        let mut load = self
            .docker(&["load"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        load.stdin
            .take()
            .unwrap()
            .write_all(&docker_archive(rootfs, tag))
            .unwrap();
        assert!(load.wait().unwrap().success(), "docker load failed");
        tag
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let listed = self.docker(&["ps", "-aq"]).output();
        let ids =
            listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        for id in ids.unwrap_or_default().lines() {
            let _ = self.docker(&["rm", "-f", id]).output();
        }
        stop(&mut self.child, Duration::from_secs(15));
        cleanup(&self.dir);
        remove_parent_cgroup("docker");
    }
}

/// podman, with storage of its own under `/tmp/berth-podman-NAME`,
/// cgroupfs, events in a file, berth-runtime as its OCI runtime. Its
/// containers and storage are removed when dropped.
pub struct Podman {
    dir: PathBuf,
    runtime: PathBuf,
}

impl Podman {
    /// Podman's storage for one test, with `runtime` as its OCI runtime.
    pub fn new(name: &str, runtime: &Path) -> Podman {
        let dir = PathBuf::from(format!("/tmp/berth-podman-{name}"));
        cleanup(&dir);
        fs::create_dir_all(&dir).unwrap();
        Podman {
            dir,
            runtime: runtime.to_owned(),
        }
    }

    /// The global flags.
    fn globals(&self) -> Vec<String> {
        vec![
            format!("--root={}", self.dir.join("root").display()),
            format!("--runroot={}", self.dir.join("run").display()),
            "--cgroup-manager=cgroupfs".to_owned(),
            "--events-backend=file".to_owned(),
            "--storage-driver=overlay".to_owned(),
            format!("--runtime={}", self.runtime.display()),
        ]
    }

    /// `podman` with the test's storage and runtime.
    pub fn podman(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command.args(self.globals()).args(args).stdin(Stdio::null());
        command
    }

    /// The same `podman` as one shell command line (for script(1)).
    pub fn podman_line(&self) -> String {
        format!("podman {}", self.globals().join(" "))
    }

    /// Load the test rootfs as image `berth.test/busybox:latest`.
    pub fn load_rootfs(&self, rootfs: &Path) -> &'static str {
        let tag = "berth.test/busybox:latest";
        let archive = self.dir.join("image.tar");
        fs::write(&archive, docker_archive(rootfs, tag)).unwrap();
        let loaded = self
            .podman(&["load", "-q", "-i", archive.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(loaded.status.success(), "podman load failed: {loaded:?}");
        tag
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-fa"]).output();
        cleanup(&self.dir);
        remove_parent_cgroup("libpod_parent");
    }
}

/// A wrapper around the runtime that records every command line a client
/// runs it with (one line each, appended), then runs it: how the book
/// shows what containerd, dockerd and podman really pass.
pub struct ArgvLog {
    dir: PathBuf,
}

impl ArgvLog {
    /// A wrapper of `runtime` under `/tmp/berth-argv-NAME`.
    pub fn new(name: &str, runtime: &Path) -> ArgvLog {
        use std::os::unix::fs::PermissionsExt;
        let dir = PathBuf::from(format!("/tmp/berth-argv-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>{}/argv.log\nexec {} \"$@\"\n",
            dir.display(),
            runtime.display()
        );
        let wrapper = dir.join("berth-runtime");
        fs::write(&wrapper, script).unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
            .unwrap();
        ArgvLog { dir }
    }

    /// The wrapper, to give the client as its runtime.
    pub fn runtime(&self) -> PathBuf {
        self.dir.join("berth-runtime")
    }

    /// The command lines recorded, each made the same from run to run by
    /// `normalize`, in the order each first appeared (a client polls
    /// `state` as often as it likes: only the first of a kind counts).
    pub fn distinct(&self, normalize: impl Fn(&str) -> String) -> String {
        let log =
            fs::read_to_string(self.dir.join("argv.log")).unwrap_or_default();
        let mut seen: Vec<String> = Vec::new();
        for line in log.lines() {
            let line = normalize(line);
            if !seen.contains(&line) {
                seen.push(line);
            }
        }
        seen.join("\n") + "\n"
    }
}

impl Drop for ArgvLog {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `berth daemon`, started for one test with directories and a socket of
/// its own (`target/test-engine/NAME`, `/run/berth-test/NAME`), and the
/// docker CLI pointed at it. Dropped: every container removed, the
/// daemon stopped, its directories removed.
pub struct Berth {
    data: PathBuf,
    exec: PathBuf,
    child: Option<Child>,
    docker_config: PathBuf,
}

impl Berth {
    /// Start the daemon (`extra` flags added) and wait for its socket.
    pub fn start(name: &str, extra: &[&str]) -> Berth {
        let data = crate::workspace_root()
            .join("target/test-engine")
            .join(name);
        let exec = PathBuf::from("/run/berth-test").join(name);
        let docker_config = data.with_extension("docker");
        let mut berth = Berth {
            data,
            exec,
            child: None,
            docker_config,
        };
        // What an earlier, failed run left: its containers, its mounts.
        berth.clean_leftovers();
        fs::create_dir_all(&berth.docker_config).unwrap();
        berth.restart(extra);
        berth
    }

    /// Start the daemon again on the same directories.
    pub fn restart(&mut self, extra: &[&str]) {
        let bin = crate::workspace_root().join(crate::step_binary("berth"));
        let log = fs::File::create(self.data.with_extension("log")).unwrap();
        let child = Command::new(bin)
            .arg("daemon")
            .arg("--data-root")
            .arg(&self.data)
            .arg("--exec-root")
            .arg(&self.exec)
            .args(if extra.contains(&"--init-path") {
                Vec::new()
            } else {
                vec!["--init-path".into(), crate::static_init()]
            })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start berth daemon");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(Ok(Some(status))) =
                self.child.as_mut().map(Child::try_wait)
            {
                panic!("berth daemon exited ({status}): {}", self.daemon_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "berth daemon did not listen: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `config.json` the daemon wrote for container `id` (its bundle
    /// is written when the container is first prepared: attached or
    /// started).
    pub fn bundle_config(&self, id: &str) -> serde_json::Value {
        let path = self.data.join("containers").join(id).join("config.json");
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap()
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the daemon wrote.
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.exec.join("berth.sock")
    }

    /// Its data root.
    pub fn data_root(&self) -> &Path {
        &self.data
    }

    /// Its exec root.
    pub fn exec_root(&self) -> &Path {
        &self.exec
    }

    /// Kill the daemon with SIGKILL, as a crash would.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the daemon with SIGTERM and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) takes integers only.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// The docker CLI on PATH against this daemon, negotiating the API
    /// version itself (`DOCKER_API_VERSION` unset), with a config
    /// directory of its own.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", &self.docker_config)
            .stdin(Stdio::null());
        command
    }

    /// The same `docker` as one shell command line (for
    /// [`crate::in_a_terminal`]).
    pub fn docker_line(&self) -> String {
        format!(
            "env DOCKER_HOST=unix://{} DOCKER_CONFIG={} docker",
            self.socket().display(),
            self.docker_config.display()
        )
    }

    /// Run `docker args`: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        outcome(self.docker(args))
    }

    /// `berth -H unix://SOCK args`: berth's own client against this
    /// daemon.
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut command = Command::new(
            crate::workspace_root().join(crate::step_binary("berth")),
        );
        command
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .stdin(Stdio::null());
        command
    }

    /// The client configuration directory the docker CLI and `berth`
    /// share here (`DOCKER_CONFIG`: `config.json`'s logins).
    pub fn docker_config(&self) -> &Path {
        &self.docker_config
    }

    /// Run `berth args` against this daemon: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        outcome(self.berth(args))
    }

    /// `docker load` the test rootfs as `tag`.
    pub fn load_rootfs(&self, rootfs: &Path, tag: &str) {
        let archive = self.data.with_extension("tar");
        fs::write(&archive, docker_archive(rootfs, tag)).unwrap();
        let (code, out, err) =
            self.run(&["load", "-i", archive.to_str().unwrap()]);
        assert_eq!(code, 0, "docker load: {out}{err}\n{}", self.daemon_log());
    }

    fn clean_leftovers(&mut self) {
        let containers = self.data.join("containers");
        if let Ok(entries) = fs::read_dir(&containers) {
            for entry in entries.flatten() {
                let shim = self.exec.join(entry.file_name()).join("shim.pid");
                if let Ok(text) = fs::read_to_string(&shim) {
                    let pid: serde_json::Value =
                        serde_json::from_str(&text).unwrap_or_default();
                    if let Some(pid) = pid["pid"].as_i64() {
                        // SAFETY: kill(2) takes integers only.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
                let rootfs = entry.path().join("rootfs");
                if let Ok(path) = std::ffi::CString::new(
                    rootfs.as_os_str().as_encoded_bytes(),
                ) {
                    // SAFETY: umount2(2) reads a NUL-terminated path that
                    // lives across the call.
                    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        let runtime_root = self.exec.join("runtime");
        if runtime_root.exists() {
            let runtime = crate::workspace_root()
                .join(crate::step_binary("berth-runtime"));
            let listed = Command::new(&runtime)
                .arg("--root")
                .arg(&runtime_root)
                .args(["list", "-q"])
                .output();
            if let Ok(listed) = listed {
                for id in String::from_utf8_lossy(&listed.stdout).lines() {
                    let _ = Command::new(&runtime)
                        .arg("--root")
                        .arg(&runtime_root)
                        .args(["delete", "--force", id])
                        .status();
                }
            }
        }
        let _ = fs::remove_dir_all(&self.data);
        let _ = fs::remove_dir_all(&self.exec);
        let _ = fs::remove_dir_all(&self.docker_config);
    }

    /// What is left of containers on the host: shims, mounts under the
    /// data root, runtime state, cgroups named after the test's
    /// containers. Empty when all is clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let data = self.data.display().to_string();
        let mounts =
            fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        left.extend(
            mounts
                .lines()
                .filter(|l| l.contains(&data))
                .map(str::to_owned),
        );
        if let Ok(entries) = fs::read_dir(self.data.join("containers")) {
            left.extend(
                entries
                    .flatten()
                    .map(|e| format!("container dir {:?}", e.file_name())),
            );
        }
        if let Ok(entries) = fs::read_dir(self.exec.join("runtime")) {
            left.extend(
                entries
                    .flatten()
                    .map(|e| format!("runtime state {:?}", e.file_name())),
            );
        }
        let shims = Command::new("pgrep")
            .args(["-f", &format!("berth-shim.*{}", self.exec.display())])
            .output();
        if let Ok(shims) = shims {
            left.extend(
                String::from_utf8_lossy(&shims.stdout)
                    .lines()
                    .map(|p| format!("shim pid {p}")),
            );
        }
        left
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if self.child.is_some() {
            let (_, ids, _) = self.run(&["ps", "-aq"]);
            for id in ids.lines() {
                let _ = self.run(&["rm", "-f", id]);
            }
            self.stop();
        }
        self.clean_leftovers();
    }
}

/// A multiplexed attach stream (the Docker Engine API's frames) as the
/// book prints it: each 8-byte header in hex, its payload quoted.
pub fn render_frames(bytes: &[u8]) -> String {
    let mut text = String::new();
    let mut rest = bytes;
    while rest.len() >= 8 {
        let len =
            u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let header: Vec<String> =
            rest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let payload =
            String::from_utf8_lossy(&rest[8..8 + len.min(rest.len() - 8)]);
        text.push_str(&format!("{}  {payload:?}\n", header.join(" ")));
        rest = &rest[(8 + len).min(rest.len())..];
    }
    text
}

/// Run `command`: (exit code, stdout, stderr).
fn outcome(mut command: Command) -> (i32, String, String) {
    let output = command.output().expect("cannot run the command");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
