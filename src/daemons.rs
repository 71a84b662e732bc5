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
fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// An OCI image layout, as a tar, of the directory `rootfs` as one
/// uncompressed layer, with `Cmd ["sh"]`: what `ctr images import`,
/// `docker load` and `podman load` take.
pub fn oci_archive(rootfs: &Path) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer
        .append_dir_all(".", rootfs)
        .expect("cannot tar the rootfs");
    let layer = layer.into_inner().unwrap();
    let layer_digest = digest(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string()
    .into_bytes();
    let config_digest = digest(&config);
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
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        out.append_data(&mut header, name, bytes).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for (d, bytes) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        let hex = d.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hex}"), bytes);
    }
    out.into_inner().unwrap()
}

/// containerd, started for one test on sockets and directories of its
/// own under `/tmp/berth-ctrd-NAME` (a unix socket path must stay short),
/// its CRI plugin off. Stopped, and its directories removed, when dropped.
pub struct Containerd {
    dir: PathBuf,
    child: Child,
    /// The namespace the test's containers live in.
    pub namespace: String,
}

impl Containerd {
    /// Start it and wait until it answers.
    pub fn start(name: &str) -> Containerd {
        let dir = PathBuf::from(format!("/tmp/berth-ctrd-{name}"));
        cleanup(&dir);
        fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n\
             [ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
             [debug]\n  address = \"{d}/debug.sock\"\n",
            d = dir.display()
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("containerd is needed (scripts/setup installs it)");
        let containerd = Containerd {
            dir,
            child,
            namespace: format!("berth-{name}"),
        };
        let start = Instant::now();
        while !containerd
            .ctr(&["version"])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "containerd did not start: {}",
                fs::read_to_string(containerd.dir.join("containerd.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
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

    /// The runtime root containerd's runc shim gives the runtime for this
    /// namespace (`--root`).
    pub fn runtime_root(&self) -> PathBuf {
        Path::new("/run/containerd/runc").join(&self.namespace)
    }

    /// Import the test rootfs as image `berth.test/busybox:latest`.
    pub fn import_rootfs(&self, rootfs: &Path) -> &'static str {
        let mut import = self
            .ctr(&[
                "images",
                "import",
                "--base-name",
                "berth.test/busybox",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let archive = oci_archive(rootfs);
        import.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(import.wait().unwrap().success(), "ctr images import failed");
        "berth.test/busybox:latest"
    }
}

/// Remove what a containerd left in `dir`: unmount its snapshots first.
fn cleanup(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
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
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none()
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup(&self.dir);
        let _ = fs::remove_dir_all(self.runtime_root());
        // The namespace's parent cgroup, in every hierarchy (empty now).
        let hierarchies = fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_else(|_| Vec::new());
        for dir in hierarchies
            .iter()
            .chain(std::iter::once(&PathBuf::from("/sys/fs/cgroup")))
        {
            let _ = fs::remove_dir(dir.join(&self.namespace));
        }
    }
}
