//! A Kubernetes node without kubelet: containerd with its CRI plugin,
//! started by the test on private sockets and directories, and a CRI
//! client that makes kubelet's calls.
//!
//! The runtime handlers are the file the guide tells operators to use,
//! `deploy/kubernetes/containerd-berth.toml`, with three values made the
//! test's own: berth's `BinaryName` (the berth-runtime just built) and
//! both handlers' `Root` (state directories under the test's, never the
//! host's). What else a test node needs is [`TEST_SETTINGS`]: the images
//! are imported (no network), pods on the pod network get a bridge with
//! no IPv4 address on the host and leases from a private subnet, their
//! network namespaces are mounted under the node's directory, and
//! nothing listens beyond loopback.
//!
//! [`Node::leftovers`] lists what a pod could leave behind on the host
//! (sandboxes, shims and their sockets, cgroups, mounts, network
//! namespaces, veths, CNI leases and cache, runtime state); dropping a
//! [`Node`] removes all of it, and so does starting a node of the same
//! name after a run that was killed.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, ListPodSandboxRequest,
    RemovePodSandboxRequest, StopPodSandboxRequest,
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

/// The values of the guide's handlers that a test node replaces with its
/// own: berth's `BinaryName`, berth's `Root`, runc's `Root`.
const GUIDE_BINARY: &str = "BinaryName = \"/usr/local/bin/berth-runtime\"";
const GUIDE_BERTH_ROOT: &str = "Root = \"/run/berth-runtime/cri\"";
const GUIDE_RUNC_ROOT: &str = "Root = \"/run/containerd/runc\"";

/// The images a test node imports: busybox for the containers, and the
/// sandbox (pause) image, the same rootfs sleeping forever.
const BUSYBOX: &str = "berth.test/busybox:latest";
const PAUSE: &str = "berth.test/pause:latest";

// ANCHOR: test_settings
/// What a test node adds to the handlers, `{dir}` being the daemon's
/// directory:
///
/// - a sandbox (pause) image of the test rootfs, imported, not pulled;
/// - an OOM score the sandbox may set without `CAP_SYS_RESOURCE` (which
///   this machine's bounding set lacks);
/// - no AppArmor profile: on a host with AppArmor, containerd would load
///   its own into the kernel for every container, and berth-runtime
///   refuses `apparmorProfile` (it does not implement AppArmor);
/// - the pods' network namespaces under the node's state, not the host's
///   `/var/run/netns`;
/// - the streaming server on loopback;
/// - CNI's plugins from Debian's `containernetworking-plugins` and a
///   configuration of the node's own.
pub const TEST_SETTINGS: &str = r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "berth.test/pause:latest"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{dir}/net.d"
  max_conf_num = 1
"#;
// ANCHOR_END: test_settings

/// The pod network: a bridge on the host with no IPv4 address of its own
/// (no route of the host changes), veths into each pod's network
/// namespace, addresses leased by host-local from a private subnet into
/// `{dir}/leases`.
pub const POD_NETWORK: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "{network}",
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

/// Where containerd 1.6 puts every shim's socket, whatever its other
/// directories.
const SHIM_SOCKETS: &str = "/run/containerd/s";

/// Where libcni caches each attachment's result (containerd 1.6 has no
/// setting to move it).
const CNI_CACHE: &str = "/var/lib/cni/results";

/// containerd with the CRI plugin, and a client of it. Dropping it
/// removes every pod, then stops containerd and cleans what is left.
pub struct Node {
    /// What the node's names derive from (`[a-z0-9-]`, at most 10).
    name: String,
    /// The berth-runtime the `berth` handler runs.
    berth_runtime: PathBuf,
    /// The gRPC client; calls run to their end on a runtime of its own.
    client: Client,
    containerd: Containerd,
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
    /// What a killed run of a node of the same name left is removed first.
    pub fn start(name: &str, berth_runtime: &Path) -> Node {
        assert!(
            (1..=10).contains(&name.len())
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
                }),
            "a node's name is 1 to 10 of [a-z0-9-]: {name:?}"
        );
        // The shim runs it from the bundle's directory: a relative path
        // would not be found.
        let berth_runtime = fs::canonicalize(berth_runtime)
            .unwrap_or_else(|e| panic!("{}: {e}", berth_runtime.display()));
        let dir = node_dir(name);
        sweep(name, &berth_runtime, true);
        let handlers = replace_once(
            HANDLERS,
            GUIDE_BINARY,
            &format!("BinaryName = {:?}", berth_runtime.display().to_string()),
        );
        let handlers = replace_once(
            &handlers,
            GUIDE_BERTH_ROOT,
            &format!("Root = \"{}/berth-root\"", dir.display()),
        );
        let handlers = replace_once(
            &handlers,
            GUIDE_RUNC_ROOT,
            &format!("Root = \"{}/runc-root\"", dir.display()),
        );
        let containerd = Containerd::start_cri(
            name,
            &format!("{TEST_SETTINGS}\n{handlers}"),
        );
        let net = containerd.dir().join("net.d");
        fs::create_dir_all(&net).unwrap();
        let network = POD_NETWORK
            .replace("{dir}", &dir.display().to_string())
            .replace("{network}", &network_name(name))
            .replace("{bridge}", &bridge_name(name));
        fs::write(net.join("10-berth-pods.conflist"), network).unwrap();
        containerd.import(fixture::rootfs(), "berth.test/busybox", &[]);
        containerd.import(
            fixture::rootfs(),
            "berth.test/pause",
            &["/bin/sleep", "infinity"],
        );
        let client = Client::connect(&containerd.address());
        let node = Node {
            name: name.to_owned(),
            berth_runtime,
            client,
            containerd,
        };
        // The CRI learns of imported images in the background: were a pod
        // to come first, containerd would try to pull them.
        for image in [BUSYBOX, PAUSE] {
            node.wait_for_image(image);
        }
        node
    }

    /// Wait until the CRI's ImageStatus knows `image`.
    fn wait_for_image(&self, image: &str) {
        let start = Instant::now();
        loop {
            let request = ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                verbose: false,
            };
            let client = ImageServiceClient::new(self.client.channel.clone());
            let known = self
                .client
                .runtime
                .block_on(async move {
                    let mut client = client;
                    client.image_status(request).await
                })
                .is_ok_and(|r| r.into_inner().image.is_some());
            if known {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the CRI never saw the imported {image}"
            );
            std::thread::sleep(Duration::from_millis(50));
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
        berth_root(&self.name)
    }

    /// The config.json containerd wrote for the container or sandbox `id`.
    pub fn bundle_config(&self, id: &str) -> serde_json::Value {
        self.containerd.bundle_config(id)
    }

    /// What this node's pods left on the host, one line each: sandboxes
    /// the CRI still lists, shims of this containerd and their sockets,
    /// cgroups under the node's parent, mounts under its directory (root
    /// filesystems, `/dev/shm`s, network namespaces), network namespaces,
    /// veths on its bridge, leases, CNI's cache, runtime state.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for sandbox in self.listed_sandboxes() {
            left.push(format!("sandbox {sandbox}"));
        }
        for pid in shims(&self.containerd.address()) {
            left.push(format!("shim process {pid}"));
        }
        for socket in shim_sockets(&self.name) {
            left.push(format!("shim socket {}", socket.display()));
        }
        for dir in subdirectories(&self.name) {
            left.push(format!("cgroup {}", dir.display()));
        }
        let dir = self.containerd.dir();
        let snapshots = dir.join("root/io.containerd.snapshotter.v1.overlayfs");
        for point in mounts_under(dir) {
            // The snapshotter's own bind mount stays while containerd runs.
            if Path::new(&point) != snapshots {
                left.push(format!("mount {point}"));
            }
        }
        for netns in network_namespaces(&self.name) {
            left.push(format!("network namespace {netns}"));
        }
        let links = Command::new("ip")
            .args(["-o", "link", "show", "master", &bridge_name(&self.name)])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for link in links.lines() {
            let name = link.split(':').nth(1).unwrap_or(link).trim();
            left.push(format!("veth {name}"));
        }
        let leases = dir.join("leases").join(network_name(&self.name));
        for lease in names_in(&leases) {
            if lease.starts_with(POD_SUBNET_PREFIX) {
                left.push(format!("lease {lease}"));
            }
        }
        for cached in cni_cache(&self.name) {
            left.push(format!("CNI cache {}", cached.display()));
        }
        for (handler, root) in runtime_roots(&self.name) {
            for state in names_in(&root) {
                left.push(format!("{handler} state {state}"));
            }
        }
        left
    }

    /// The ids of the sandboxes ListPodSandbox lists (none if containerd
    /// does not answer).
    fn listed_sandboxes(&self) -> Vec<String> {
        self.runtime(|mut c| async move {
            c.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await
        })
        .map(|r| r.items.into_iter().map(|s| s.id).collect())
        .unwrap_or_default()
    }

    /// Remove the sockets of this node's shims that are left: containerd
    /// leaves the socket of a shim that was killed.
    pub fn remove_shim_sockets(&self) {
        for socket in shim_sockets(&self.name) {
            let _ = fs::remove_file(socket);
        }
    }

    /// The pids of the shims this containerd started.
    pub fn shims(&self) -> Vec<u32> {
        shims(&self.containerd.address())
    }
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
        for id in self.listed_sandboxes() {
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
        // Whatever that could not remove (a test that failed halfway, a
        // containerd that died); containerd itself stops after this.
        sweep(&self.name, &self.berth_runtime, false);
    }
}

/// Remove what node `name` may have left, without its containerd's help:
/// every container through its runtime's `delete --force`, any process
/// left in the node's cgroups, its shims and their sockets, CNI's cache
/// entries, its bridge and its cgroups. With `stale`, also a containerd
/// of an earlier run that was killed before it could stop its own.
fn sweep(name: &str, berth_runtime: &Path, stale: bool) {
    let dir = node_dir(name);
    if stale {
        let config = dir.join("config.toml");
        for pid in processes_with(&["containerd", "--config"], &config) {
            kill(pid);
        }
    }
    for (handler, root) in runtime_roots(name) {
        let binary = if handler == "berth" {
            berth_runtime.as_os_str()
        } else {
            "runc".as_ref()
        };
        for id in names_in(&root) {
            let _ = Command::new(binary)
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .stderr(Stdio::null())
                .status();
        }
    }
    // Processes that outlived their runtime's state.
    let start = Instant::now();
    loop {
        let mut cgroups = subdirectories(name);
        cgroups
            .extend(cgroup_mounts().iter().map(|m| m.join(cgroup_root(name))));
        let pids: Vec<u32> = cgroups
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|procs| {
                let pids: Vec<u32> =
                    procs.lines().filter_map(|p| p.parse().ok()).collect();
                pids
            })
            .collect();
        if pids.is_empty() || start.elapsed() > Duration::from_secs(10) {
            break;
        }
        pids.into_iter().for_each(kill);
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in shims(&dir.join("c.sock")) {
        kill(pid);
    }
    for socket in shim_sockets(name) {
        let _ = fs::remove_file(socket);
    }
    for cached in cni_cache(name) {
        let _ = fs::remove_file(cached);
    }
    let _ = Command::new("ip")
        .args(["link", "delete", &bridge_name(name)])
        .stderr(Stdio::null())
        .status();
    for hierarchy in cgroup_mounts() {
        crate::daemons::remove_empty_tree(&hierarchy.join(cgroup_root(name)));
    }
}

/// `text` with `from`, which must be there exactly once, replaced by
/// `to`: a guide file that lost a value it should have must not go
/// unnoticed (the test would run the host's runtime, or its state dir).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the guide's handlers should say {from} once"
    );
    text.replace(from, to)
}

/// The directory of node `name` (the harness's containerd's).
fn node_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/berth-ctrd-{name}"))
}

/// The cgroup every pod of node `name` goes under, without its leading
/// `/` (what the node's kubelet calls its `/kubepods`).
pub fn cgroup_root(name: &str) -> String {
    format!("berth-cri-{name}")
}

/// The `--root` of each handler's runtime, for the CRI's namespace.
fn runtime_roots(name: &str) -> [(&'static str, PathBuf); 2] {
    [
        ("berth", berth_root(name)),
        ("runc", node_dir(name).join("runc-root/k8s.io")),
    ]
}

/// berth-runtime's `--root` on node `name`.
fn berth_root(name: &str) -> PathBuf {
    node_dir(name).join("berth-root/k8s.io")
}

/// The CNI network of node `name`'s pods.
fn network_name(name: &str) -> String {
    format!("berth-pods-{name}")
}

/// The bridge of node `name`'s pod network (at most 15 bytes, which a
/// name of at most 10 keeps).
fn bridge_name(name: &str) -> String {
    format!("bcri-{name}")
}

/// The ids of every sandbox node `name`'s containerd made: from its log
/// (`RunPodSandbox … returns sandbox id`) and from its shims' task
/// directories (a sandbox whose RunPodSandbox failed is only there).
fn sandbox_ids(name: &str) -> Vec<String> {
    let dir = node_dir(name);
    let log =
        fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
    let returned =
        regex::Regex::new(r#"returns sandbox id \\?"([0-9a-f]{64})"#).unwrap();
    let mut ids: Vec<String> = returned
        .captures_iter(&log)
        .map(|c| c[1].to_owned())
        .collect();
    ids.extend(names_in(
        &dir.join("state/io.containerd.runtime.v2.task/k8s.io"),
    ));
    ids.sort();
    ids.dedup();
    ids
}

/// The sockets of node `name`'s shims that are there: containerd 1.6
/// names each by the sha256 of its own address, the namespace and the
/// shim's id (the pod's sandbox id: one shim serves a pod).
fn shim_sockets(name: &str) -> Vec<PathBuf> {
    let address = node_dir(name).join("c.sock");
    sandbox_ids(name)
        .iter()
        .map(|id| {
            let key = format!("{}/k8s.io/{id}", address.display());
            let hex = crate::daemons::digest(key.as_bytes());
            Path::new(SHIM_SOCKETS).join(hex.trim_start_matches("sha256:"))
        })
        .filter(|p| p.exists())
        .collect()
}

/// libcni's cached results for node `name`'s pods: its network's (named
/// for the node) and the loopback's (named for each sandbox).
fn cni_cache(name: &str) -> Vec<PathBuf> {
    let network = format!("{}-", network_name(name));
    let loopbacks: Vec<String> = sandbox_ids(name)
        .iter()
        .map(|id| format!("cni-loopback-{id}-"))
        .collect();
    names_in(Path::new(CNI_CACHE))
        .into_iter()
        .filter(|n| {
            n.starts_with(&network)
                || loopbacks.iter().any(|l| n.starts_with(l))
        })
        .map(|n| Path::new(CNI_CACHE).join(n))
        .collect()
}

/// The network namespaces containerd made for node `name`'s pods
/// (`netns_mounts_under_state_dir`: in its CRI state directory).
fn network_namespaces(name: &str) -> Vec<String> {
    names_in(&node_dir(name).join("state/io.containerd.grpc.v1.cri/netns"))
}

/// The pids of the shims of the containerd listening on `address` (their
/// command line names it).
fn shims(address: &Path) -> Vec<u32> {
    processes_with(&["containerd-shim-runc-v2", "-address"], address)
}

/// The pids of the processes whose command line has `words[0]` as its
/// program, then `words[1]` followed by `value`.
fn processes_with(words: &[&str; 2], value: &Path) -> Vec<u32> {
    let value = value.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse() else {
            continue;
        };
        let cmdline =
            fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let program = args.first().copied().unwrap_or_default();
        if program.ends_with(words[0].as_bytes())
            && args
                .windows(2)
                .any(|w| w[0] == words[1].as_bytes() && w[1] == value)
        {
            pids.push(pid);
        }
    }
    pids
}

/// `SIGKILL` to `pid`.
fn kill(pid: u32) {
    // SAFETY: kill(2) touches no memory of ours.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// The mount points under `dir` (the directory itself excluded).
fn mounts_under(dir: &Path) -> Vec<String> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir) && Path::new(p) != dir)
        .map(str::to_owned)
        .collect()
}

/// The names in `dir`, sorted (none if it cannot be read).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Make the cgroup `path` (`/A/B`) in every hierarchy, as kubelet makes
/// a pod's before its sandbox (the runtime makes only the containers'
/// below it, and enables cgroup v2's controllers on its way down).
pub fn create_cgroup(path: &str) -> std::io::Result<()> {
    for hierarchy in cgroup_mounts() {
        fs::create_dir_all(hierarchy.join(path.trim_start_matches('/')))?;
    }
    Ok(())
}

/// Remove the cgroup `path` (`/A/B`) from every hierarchy, as kubelet
/// removes a pod's once its sandbox is removed. An error names a
/// hierarchy where it is not empty.
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

/// Every cgroup hierarchy's mount: the v2 one, or each v1 controller's.
fn cgroup_mounts() -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    mounts.push(PathBuf::from("/sys/fs/cgroup"));
    mounts.retain(|m| m.join("cgroup.procs").exists());
    mounts
}

/// The cgroups below node `name`'s root, at any depth, in every
/// hierarchy.
fn subdirectories(name: &str) -> Vec<PathBuf> {
    fn below(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(entry.path());
                below(&entry.path(), found);
            }
        }
    }
    let mut found = Vec::new();
    for hierarchy in cgroup_mounts() {
        below(&hierarchy.join(cgroup_root(name)), &mut found);
    }
    found
}
