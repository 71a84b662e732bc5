//! A Kubernetes node without kubelet: containerd with its CRI plugin,
//! started by the test on private sockets and directories, and a CRI
//! client that makes kubelet's calls.
//!
//! The runtime handlers are the file the guide tells operators to use,
//! `deploy/kubernetes/containerd-berth.toml`, with two values made the
//! test's own: `BinaryName` (the berth-runtime just built) and `Root` (a
//! state directory under the test's). What else a test node needs is
//! [`TEST_SETTINGS`]: the images are imported (no network), pods on the
//! pod network get a bridge with no address on the host and leases from a
//! private subnet, and nothing listens beyond loopback.
//!
//! [`Node::leftovers`] lists what a pod could leave behind on the host
//! (sandboxes, shims, cgroups, mounts, network namespaces, veths, CNI
//! leases); dropping a [`Node`] removes all of it.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, RemovePodSandboxRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::daemons::Containerd;
use crate::fixture;
use crate::kubelet::Kubelet;

/// The guide's runtime handlers: the `berth` handler beside `runc`.
pub const HANDLERS: &str =
    include_str!("../deploy/kubernetes/containerd-berth.toml");

/// The guide's RuntimeClass.
pub const RUNTIME_CLASS: &str =
    include_str!("../deploy/kubernetes/runtimeclass.yaml");

/// The `BinaryName` and `Root` of the guide's `berth` handler, which a
/// test node replaces with its own.
const GUIDE_BINARY: &str = "\"/usr/local/bin/berth-runtime\"";
const GUIDE_ROOT: &str = "\"/run/berth-runtime/cri\"";

/// What a test node adds to the handlers: a sandbox (pause) image of the
/// test rootfs, imported rather than pulled; an OOM score the sandbox may
/// set without `CAP_SYS_RESOURCE` (which this machine's bounding set
/// lacks); the streaming server on loopback; CNI's plugins from Debian's
/// `containernetworking-plugins` and a configuration of the test's own.
/// `{dir}` is the daemon's directory.
pub const TEST_SETTINGS: &str = r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "berth.test/pause:latest"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{dir}/net.d"
  max_conf_num = 1
"#;

/// The pod network: a bridge on the host with no address of its own
/// (nothing of the host's routing changes), veths into each pod's
/// network namespace, addresses leased by host-local from a private
/// subnet into `{dir}/leases`.
pub const POD_NETWORK: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "berth-pods",
  "plugins": [{
    "type": "bridge",
    "bridge": "{bridge}",
    "isGateway": false,
    "ipMasq": false,
    "hairpinMode": false,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "10.213.77.0/24"}]],
      "dataDir": "{dir}/leases"
    }
  }]
}
"#;

/// The prefix of the pod addresses [`POD_NETWORK`] leases.
pub const POD_SUBNET_PREFIX: &str = "10.213.77.";

/// containerd with the CRI plugin, and a client of it. Dropping it
/// removes every pod, then stops containerd and cleans what is left.
pub struct Node {
    name: String,
    /// The gRPC client; calls run to their end on a runtime of its own.
    client: Client,
    containerd: Containerd,
    /// The named network namespaces there were before the node started.
    netns_before: Vec<String>,
}

/// A blocking CRI client: each call runs on a single-threaded tokio
/// runtime, as a test is not async.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

impl Node {
    /// Start containerd with the guide's handlers (`berth` running
    /// `berth_runtime`), import the busybox and pause images, and connect.
    pub fn start(name: &str, berth_runtime: &Path) -> Node {
        let dir = format!("/tmp/berth-ctrd-{name}");
        let netns_before = named_network_namespaces();
        // The shim runs it from the bundle's directory: a relative path
        // would not be found.
        let berth_runtime = fs::canonicalize(berth_runtime)
            .unwrap_or_else(|e| panic!("{}: {e}", berth_runtime.display()));
        let handlers = HANDLERS
            .replace(
                GUIDE_BINARY,
                &format!("{:?}", berth_runtime.display().to_string()),
            )
            .replace(GUIDE_ROOT, &format!("\"{dir}/berth-root\""));
        assert!(
            handlers != HANDLERS,
            "the guide's handlers lost their BinaryName or Root"
        );
        let containerd = Containerd::start_cri(
            name,
            &format!("{TEST_SETTINGS}\n{handlers}"),
        );
        let net = containerd.dir().join("net.d");
        fs::create_dir_all(&net).unwrap();
        let network = POD_NETWORK
            .replace("{dir}", &dir)
            .replace("{bridge}", &bridge_name(name));
        fs::write(net.join("10-berth-pods.conflist"), network).unwrap();
        containerd.import(fixture::rootfs(), "berth.test/busybox", &[]);
        containerd.import(
            fixture::rootfs(),
            "berth.test/pause",
            &["/bin/sleep", "infinity"],
        );
        let client = Client::connect(&containerd.address());
        Node {
            name: name.to_owned(),
            client,
            containerd,
            netns_before,
        }
    }

    /// Make a call of the runtime service, as kubelet would.
    pub fn runtime<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.client.runtime(call)
    }

    /// The CRI client of this node.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// kubelet, asking for `handler`.
    pub fn kubelet<'a>(&'a self, handler: &'a str) -> Kubelet<'a> {
        Kubelet::for_node(&self.client, handler, self.containerd.dir())
    }

    /// The containerd under this node.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// berth-runtime's `--root` for the CRI's containers: the handler's
    /// `Root`, and the namespace below it.
    pub fn berth_root(&self) -> PathBuf {
        self.containerd.dir().join("berth-root/k8s.io")
    }

    /// The config.json containerd wrote for the container or sandbox `id`.
    pub fn bundle_config(&self, id: &str) -> serde_json::Value {
        self.containerd.bundle_config(id)
    }

    /// The directory that holds one file per address host-local leased.
    pub fn leases(&self) -> PathBuf {
        self.containerd.dir().join("leases/berth-pods")
    }

    /// What this node's pods left on the host, one line each: sandboxes
    /// the CRI still lists, shims of this containerd, cgroups under the
    /// node's parent, mounts of its rootfs snapshots or network
    /// namespaces, veths on its bridge, leases, berth-runtime state.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let sandboxes = self
            .runtime(|mut c| async move {
                c.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                    .await
            })
            .map(|r| r.items)
            .unwrap_or_default();
        for sandbox in sandboxes {
            left.push(format!("sandbox {}", sandbox.id));
        }
        for pid in self.shims() {
            left.push(format!("shim process {pid}"));
        }
        for hierarchy in cgroup_mounts() {
            let parent = hierarchy.join(format!("berth-cri-{}", self.name));
            for dir in subdirectories(&parent) {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        let dir = self.containerd.dir().display().to_string();
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for point in mountinfo.lines().filter_map(|l| l.split(' ').nth(4)) {
            if point.starts_with(&dir)
                && !point.ends_with("/io.containerd.snapshotter.v1.overlayfs")
            {
                left.push(format!("mount {point}"));
            }
        }
        for netns in self.network_namespaces() {
            left.push(format!("network namespace {netns}"));
        }
        let bridge = bridge_name(&self.name);
        let links = Command::new("ip")
            .args(["-o", "link", "show", "master", &bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for link in links.lines() {
            let name = link.split(':').nth(1).unwrap_or(link).trim();
            left.push(format!("veth {name}"));
        }
        for lease in fs::read_dir(self.leases()).into_iter().flatten() {
            let name = lease.unwrap().file_name();
            let name = name.to_string_lossy();
            if name.starts_with(POD_SUBNET_PREFIX) {
                left.push(format!("lease {name}"));
            }
        }
        for socket in self.shim_sockets() {
            left.push(format!("shim socket {}", socket.display()));
        }
        for state in fs::read_dir(self.berth_root()).into_iter().flatten() {
            let state = state.unwrap().file_name();
            left.push(format!(
                "berth-runtime state {}",
                state.to_string_lossy()
            ));
        }
        left
    }

    /// The sockets of this node's shims that are still there. They are not
    /// under the node's directories: containerd 1.6 puts every shim's
    /// socket in `/run/containerd/s`, named by the sha256 of its own
    /// address, the namespace and the shim's id (the pod's sandbox id; one
    /// shim serves a pod). The sandbox ids are in containerd's log.
    pub fn shim_sockets(&self) -> Vec<PathBuf> {
        let log = self.containerd.log();
        let returned =
            regex::Regex::new(r#"returns sandbox id \\?"([0-9a-f]{64})"#)
                .unwrap();
        let address = self.containerd.address();
        let mut sockets: Vec<PathBuf> = returned
            .captures_iter(&log)
            .map(|c| {
                let key = format!("{}/k8s.io/{}", address.display(), &c[1]);
                let hex = crate::daemons::digest(key.as_bytes());
                Path::new("/run/containerd/s")
                    .join(hex.trim_start_matches("sha256:"))
            })
            .filter(|p| p.exists())
            .collect();
        sockets.sort();
        sockets.dedup();
        sockets
    }

    /// Remove what [`Node::shim_sockets`] finds: containerd leaves the
    /// socket of a shim that was killed.
    pub fn remove_shim_sockets(&self) {
        for socket in self.shim_sockets() {
            let _ = fs::remove_file(socket);
        }
    }

    /// The pids of the shims this containerd started (their command line
    /// names its socket).
    pub fn shims(&self) -> Vec<u32> {
        let address = self.containerd.address().display().to_string();
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten() {
            let entry = entry.unwrap();
            let Ok(pid) = entry.file_name().to_string_lossy().parse() else {
                continue;
            };
            let cmdline =
                fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args
                .first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && args.contains(&address.as_bytes())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// The network namespaces made since the node started: the pods'
    /// (containerd names them in `/var/run/netns`).
    fn network_namespaces(&self) -> Vec<String> {
        named_network_namespaces()
            .into_iter()
            .filter(|n| !self.netns_before.contains(n))
            .collect()
    }
}

/// The names in `/var/run/netns`.
fn named_network_namespaces() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl Client {
    /// Connect to the CRI's gRPC socket.
    pub fn connect(socket: &Path) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = socket.to_owned();
        // The URI is a placeholder: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://cri.invalid")
            .timeout(Duration::from_secs(60));
        let channel = runtime
            .block_on(endpoint.connect_with_connector(tower::service_fn(
                move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        let stream =
                            tokio::net::UnixStream::connect(socket).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                },
            )))
            .expect("cannot connect to containerd's CRI socket");
        Client { runtime, channel }
    }

    /// Make a call of the runtime service, as kubelet would.
    pub fn runtime<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = RuntimeServiceClient::new(self.channel.clone());
        self.runtime
            .block_on(call(client))
            .map(tonic::Response::into_inner)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // kubelet's way out: every pod stopped, then removed (which stops
        // and removes its containers, tears down its network and frees
        // its lease).
        let sandboxes = self
            .runtime(|mut c| async move {
                c.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                    .await
            })
            .map(|r| r.items)
            .unwrap_or_default();
        for sandbox in sandboxes {
            let id = sandbox.id;
            let stop = id.clone();
            let _ = self.runtime(|mut c| async move {
                c.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: stop,
                })
                .await
            });
            let _ = self.runtime(|mut c| async move {
                c.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id,
                })
                .await
            });
        }
        // Shims whose containers containerd lost: their sockets are in
        // /run/containerd/s, named by a hash of (address, namespace, id).
        for pid in self.shims() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        self.remove_shim_sockets();
        for netns in self.network_namespaces() {
            let _ = Command::new("ip")
                .args(["netns", "delete", &netns])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &bridge_name(&self.name)])
            .stderr(std::process::Stdio::null())
            .status();
        for hierarchy in cgroup_mounts() {
            crate::daemons::remove_empty_tree(
                &hierarchy.join(format!("berth-cri-{}", self.name)),
            );
        }
    }
}

/// Remove the cgroup `path` (`/A/B`) from every hierarchy, as kubelet
/// removes a pod's once its sandbox is removed (kubelet makes and removes
/// pod cgroups; the runtime only the containers' below them). An error
/// names a hierarchy where it is not empty.
pub fn remove_cgroup(path: &str) -> Result<(), String> {
    for hierarchy in cgroup_mounts() {
        let dir = hierarchy.join(path.trim_start_matches('/'));
        match fs::remove_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", dir.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The bridge of node `name`'s pod network (an interface name is at most
/// 15 bytes).
fn bridge_name(name: &str) -> String {
    let mut bridge = format!("bcri-{name}");
    bridge.truncate(15);
    bridge
}

/// Every cgroup hierarchy's mount: the v2 one, or each v1 controller's.
fn cgroup_mounts() -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    mounts.push(PathBuf::from("/sys/fs/cgroup"));
    mounts.retain(|m| m.join("cgroup.procs").exists());
    mounts
}

/// The directories below `dir`, at any depth.
fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let entry = entry.unwrap();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.push(entry.path());
            found.extend(subdirectories(&entry.path()));
        }
    }
    found
}
