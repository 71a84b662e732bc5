//! kubelet's side of the CRI, as much of it as the tests and the benchmark
//! need: the configs kubelet makes for a pod and its containers, and the
//! calls of its pod workers (RunPodSandbox, CreateContainer, ExecSync,
//! StopContainer, ...) for one runtime handler.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::*;

use crate::cri::{Client, cgroup_root, create_cgroup, remove_cgroup};

/// The paths kubelet masks and makes read-only in every unprivileged
/// container (its defaults; containerd masks nothing it is not told).
pub const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
pub const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The CRI's namespace modes.
pub const POD: i32 = NamespaceMode::Pod as i32;
pub const CONTAINER: i32 = NamespaceMode::Container as i32;
pub const NODE: i32 = NamespaceMode::Node as i32;

/// A pod: its sandbox's id and the config it was made with (which every
/// CreateContainer repeats).
pub struct Pod {
    /// The sandbox's id.
    pub id: String,
    /// What RunPodSandbox was given.
    pub config: PodSandboxConfig,
}

// ANCHOR: pod_config
/// A sandbox config as kubelet makes one: the pod's cgroup parent, its
/// namespaces (network on the node or the pod's own; IPC shared by the
/// pod; PID per container), its log directory.
pub fn pod_config(
    kubelet: &Kubelet,
    name: &str,
    host_network: bool,
) -> PodSandboxConfig {
    let uid = format!("uid-{name}");
    let logs = kubelet.logs.join(&uid);
    fs::create_dir_all(&logs).unwrap();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: uid.clone(),
            namespace: "default".to_owned(),
            attempt: 0,
        }),
        // A pod on the node's network has the node's hostname: kubelet
        // leaves it empty (containerd refuses to set it there).
        hostname: if host_network {
            String::new()
        } else {
            name.to_owned()
        },
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: kubelet.cgroup_parent(&uid),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: if host_network { NODE } else { POD },
                    pid: CONTAINER,
                    ipc: POD,
                    ..Default::default()
                }),
                seccomp: Some(unconfined()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ANCHOR_END: pod_config

/// kubelet's default seccomp profile: none.
pub fn unconfined() -> SecurityProfile {
    SecurityProfile {
        profile_type: security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    }
}

/// A container config as kubelet makes one for `sh -c SCRIPT` in the
/// busybox image, with kubelet's masked and read-only paths and
/// `security` edited by the caller.
pub fn container_config(
    name: &str,
    script: &str,
    edit: impl FnOnce(&mut LinuxContainerConfig),
) -> ContainerConfig {
    let mut linux = LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_shares: 2,
            ..Default::default()
        }),
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: POD,
                pid: CONTAINER,
                ipc: POD,
                ..Default::default()
            }),
            masked_paths: MASKED.iter().map(|s| s.to_string()).collect(),
            readonly_paths: READONLY.iter().map(|s| s.to_string()).collect(),
            seccomp: Some(unconfined()),
            ..Default::default()
        }),
    };
    edit(&mut linux);
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "berth.test/busybox:latest".to_owned(),
            ..Default::default()
        }),
        command: vec!["sh".to_owned()],
        args: vec!["-c".to_owned(), script.to_owned()],
        log_path: format!("{name}.log"),
        linux: Some(linux),
        ..Default::default()
    }
}

/// The security context of a container config being edited.
pub fn security(
    linux: &mut LinuxContainerConfig,
) -> &mut LinuxContainerSecurityContext {
    linux.security_context.as_mut().unwrap()
}

/// The calls of kubelet's pod workers, for one runtime handler.
pub struct Kubelet<'a> {
    /// The CRI client.
    pub client: &'a Client,
    /// The RuntimeClass handler every pod asks for.
    pub handler: &'a str,
    /// Where pods' log directories go.
    pub logs: PathBuf,
    /// The cgroup every pod's cgroup goes under (kubelet's `/kubepods`).
    pub cgroup_root: String,
    /// The ids of the sandboxes and containers this kubelet made.
    made: RefCell<Vec<String>>,
}

impl<'a> Kubelet<'a> {
    /// kubelet of the test node whose directory is `dir`
    /// (`/tmp/berth-ctrd-NAME`), asking for `handler`: its pods' cgroups
    /// go under `/berth-cri-NAME`, their logs under `dir/pods`.
    pub fn for_node(
        client: &'a Client,
        handler: &'a str,
        dir: &Path,
    ) -> Kubelet<'a> {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let name = name.strip_prefix("berth-ctrd-").unwrap_or(&name);
        Kubelet {
            client,
            handler,
            logs: dir.join("pods"),
            cgroup_root: format!("/{}", cgroup_root(name)),
            made: RefCell::new(Vec::new()),
        }
    }

    /// The cgroup parent of pod `uid`: `CGROUP_ROOT/pod-UID`.
    pub fn cgroup_parent(&self, uid: &str) -> String {
        format!("{}/pod-{uid}", self.cgroup_root)
    }

    /// RunPodSandbox with this handler.
    pub fn run_pod(&self, name: &str, host_network: bool) -> Pod {
        self.run_pod_with(name, host_network, |_| ())
    }

    /// RunPodSandbox with this handler, the config edited by `edit`.
    pub fn run_pod_with(
        &self,
        name: &str,
        host_network: bool,
        edit: impl FnOnce(&mut PodSandboxConfig),
    ) -> Pod {
        let mut config = pod_config(self, name, host_network);
        edit(&mut config);
        // kubelet makes the pod's cgroup; the runtime makes the leaves.
        let parent = &config.linux.as_ref().unwrap().cgroup_parent;
        create_cgroup(parent)
            .unwrap_or_else(|e| panic!("cgroup {parent}: {e}"));
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: self.handler.to_owned(),
        };
        let id = self
            .client
            .runtime(|mut c| async move { c.run_pod_sandbox(request).await })
            .unwrap_or_else(|e| {
                panic!("RunPodSandbox {name} ({}): {e}", self.handler)
            })
            .pod_sandbox_id;
        self.made.borrow_mut().push(id.clone());
        Pod { id, config }
    }

    /// The ids of the sandboxes and containers this kubelet made.
    pub fn made(&self) -> Vec<String> {
        self.made.borrow().clone()
    }

    /// CreateContainer then StartContainer; the container's id.
    pub fn start(&self, pod: &Pod, config: ContainerConfig) -> String {
        let id = self.create(pod, config).unwrap();
        let start = id.clone();
        self.client
            .runtime(|mut c| async move {
                c.start_container(StartContainerRequest {
                    container_id: start,
                })
                .await
            })
            .unwrap_or_else(|e| {
                panic!("StartContainer ({}): {e}", self.handler)
            });
        id
    }

    /// CreateContainer.
    pub fn create(
        &self,
        pod: &Pod,
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self
            .client
            .runtime(|mut c| async move { c.create_container(request).await })
            .map(|r| r.container_id)?;
        self.made.borrow_mut().push(id.clone());
        Ok(id)
    }

    /// ContainerStatus.
    pub fn status(&self, id: &str) -> ContainerStatus {
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.client
            .runtime(|mut c| async move { c.container_status(request).await })
            .unwrap()
            .status
            .unwrap()
    }

    /// Wait until the container has exited; its status then.
    pub fn exited(&self, id: &str) -> ContainerStatus {
        let start = Instant::now();
        loop {
            let status = self.status(id);
            if status.state == ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{id} ({}) never exited",
                self.handler
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// ExecSync of `sh -c SCRIPT`: (exit code, stdout, stderr).
    pub fn exec(&self, id: &str, script: &str) -> (i32, String, String) {
        let request = ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
            timeout: 20,
        };
        let answer = self
            .client
            .runtime(|mut c| async move { c.exec_sync(request).await })
            .unwrap_or_else(|e| {
                panic!("ExecSync {script:?} ({}): {e}", self.handler)
            });
        (
            answer.exit_code,
            String::from_utf8_lossy(&answer.stdout).into_owned(),
            String::from_utf8_lossy(&answer.stderr).into_owned(),
        )
    }

    /// StopContainer with a grace period of `timeout` seconds.
    pub fn stop(&self, id: &str, timeout: i64) {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout,
        };
        self.client
            .runtime(|mut c| async move { c.stop_container(request).await })
            .unwrap_or_else(|e| {
                panic!("StopContainer ({}): {e}", self.handler)
            });
    }

    /// RemoveContainer.
    pub fn remove(&self, id: &str) {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.client
            .runtime(|mut c| async move { c.remove_container(request).await })
            .unwrap_or_else(|e| {
                panic!("RemoveContainer ({}): {e}", self.handler)
            });
    }

    /// StopPodSandbox then RemovePodSandbox; then the pod's cgroup, which
    /// kubelet removes (and which is not empty if a container's is left).
    pub fn remove_pod(&self, pod: Pod) {
        self.remove_sandbox(&pod);
        let uid = &pod.config.metadata.as_ref().unwrap().uid;
        if let Err(e) = remove_cgroup(&self.cgroup_parent(uid)) {
            panic!("a container's cgroup was left ({}): {e}", self.handler);
        }
    }

    /// StopPodSandbox then RemovePodSandbox.
    pub fn remove_sandbox(&self, pod: &Pod) {
        let id = pod.id.clone();
        self.client
            .runtime(|mut c| async move {
                c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                    .await
            })
            .unwrap_or_else(|e| {
                panic!("StopPodSandbox ({}): {e}", self.handler)
            });
        let id = pod.id.clone();
        self.client
            .runtime(|mut c| async move {
                c.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id,
                })
                .await
            })
            .unwrap_or_else(|e| {
                panic!("RemovePodSandbox ({}): {e}", self.handler)
            });
    }

    /// PodSandboxStatus.
    pub fn pod_status(&self, pod: &Pod) -> PodSandboxStatus {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: false,
        };
        self.client
            .runtime(|mut c| async move { c.pod_sandbox_status(request).await })
            .unwrap()
            .status
            .unwrap()
    }
}
