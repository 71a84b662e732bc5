//! berth-runtime as a Kubernetes runtime handler: containerd's CRI plugin
//! with the guide's handlers (`deploy/kubernetes/containerd-berth.toml`),
//! driven by the calls kubelet makes, for the `berth` handler and for
//! `runc` side by side. What a pod shows must be the same under both.

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

use berth_tests::cri::{self, Node, remove_cgroup};
use berth_tests::kubelet::*;
use berth_tests::{privileged, step_binary, workspace_root};
use k8s_cri::v1::*;

/// Whether berth-runtime holds state for `id` (its directory under the
/// handler's Root).
fn berth_holds(node: &Node, id: &str) -> bool {
    node.berth_root().join(id).join("state.json").exists()
}

/// Whether berth-runtime created `id`: its trace (`BERTH_TRACE` in
/// containerd's environment reaches every runtime the shims run, and only
/// berth-runtime writes one) has the state directory of its `create`.
fn berth_created(node: &Node, id: &str) -> bool {
    node.containerd()
        .trace()
        .contains(&format!("/{id} (state)"))
}

/// Start a node with both handlers; berth's through the built binary.
fn node(name: &str) -> Node {
    let runtime = workspace_root().join(step_binary("berth-runtime"));
    Node::start(name, &runtime)
}

/// One pod's life on the node's network, as kubelet drives it; what a
/// user would see, one line each, to compare across handlers.
fn host_network_pod(node: &Node, kubelet: &Kubelet) -> Vec<String> {
    let mut seen = Vec::new();
    let pod = kubelet.run_pod(&format!("host-{}", kubelet.handler), true);
    let script = "trap 'echo got TERM; exit 0' TERM; echo started; \
                  while :; do sleep 0.1; done";
    let id = kubelet.start(&pod, container_config("web", script, |_| ()));
    let status = kubelet.status(&id);
    seen.push(format!("state {:?}", status.state()));
    assert_left(
        node,
        &["sandbox", "shim process", "shim socket", "cgroup", "mount"],
    );
    assert_eq!(
        berth_holds(node, &id),
        kubelet.handler == "berth",
        "berth-runtime's state for {id} under {}",
        kubelet.handler
    );
    let (code, out, err) = kubelet.exec(&id, "echo out; echo err >&2; exit 3");
    seen.push(format!("exec exit {code} stdout {out:?} stderr {err:?}"));
    let (code, out, _) = kubelet.exec(&id, "cat /proc/1/comm");
    seen.push(format!("exec exit {code} stdout {out:?}"));
    // The node's network: the host's hostname and interfaces.
    let (_, out, _) = kubelet.exec(&id, "hostname");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    seen.push(format!("hostname is the node's: {}", out == host));
    seen.push(format!(
        "network namespace is the node's: {}",
        kubelet.exec(&id, "readlink /proc/self/ns/net").1.trim()
            == fs::read_link("/proc/self/ns/net")
                .unwrap()
                .display()
                .to_string()
    ));

    // Stop: SIGTERM, which the trap answers.
    kubelet.stop(&id, 10);
    let status = kubelet.exited(&id);
    seen.push(format!(
        "stopped: exit {} reason {}",
        status.exit_code, status.reason
    ));
    let log = fs::read_to_string(&status.log_path).unwrap();
    seen.push(format!("log {:?}", log_messages(&log)));
    kubelet.remove(&id);
    kubelet.remove_pod(pod);
    seen
}

/// The messages of a CRI log (`TIME STREAM TAG MESSAGE` per line), after
/// checking each line's form.
fn log_messages(log: &str) -> Vec<String> {
    log.lines()
        .map(|line| {
            let mut fields = line.splitn(4, ' ');
            let time = fields.next().unwrap();
            let stream = fields.next().unwrap_or("");
            let tag = fields.next().unwrap_or("");
            assert!(
                time.len() > 20 && time.contains('T'),
                "not an RFC 3339 time: {line}"
            );
            assert!(matches!(stream, "stdout" | "stderr"), "{line}");
            assert!(matches!(tag, "F" | "P"), "{line}");
            format!("{stream} {tag} {}", fields.next().unwrap_or(""))
        })
        .collect()
}

/// A pod on the pod network: two containers that share its localhost, its
/// IPC namespace and its address; stats; a log reopened after rotation; a
/// container that ignores SIGTERM stopped by SIGKILL.
fn pod_network_pod(node: &Node, kubelet: &Kubelet) -> Vec<String> {
    let mut seen = Vec::new();
    let pod = kubelet.run_pod(&format!("net-{}", kubelet.handler), false);
    let address = kubelet
        .pod_status(&pod)
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    seen.push(format!(
        "pod address in the pod subnet: {}",
        address.starts_with(cri::POD_SUBNET_PREFIX)
    ));
    let server = kubelet.start(
        &pod,
        container_config(
            "server",
            "i=0; while :; do echo hi over localhost | nc -l -p 7777; \
             i=$((i+1)); echo served $i; done",
            |_| (),
        ),
    );
    let client = kubelet.start(
        &pod,
        container_config(
            "client",
            "trap '' TERM; while :; do sleep 0.1; done",
            |_| (),
        ),
    );
    if kubelet.handler == "berth" {
        let summary = [
            ("the sandbox (pause)", &pod.id),
            ("the server container", &server),
        ]
        .map(|(what, id)| {
            let config = node.bundle_config(id);
            format!("# {what}\n{}", config_summary(&config))
        })
        .join("\n");
        let summary = normalize(
            &summary,
            node,
            &[
                (&pod.id, "<sandbox-id>"),
                (&server, "<server-id>"),
                (&client, "<client-id>"),
            ],
        );
        insta::assert_snapshot!("kubernetes_cri_config_json", summary);
        // berth-runtime's trace of the server's create (BERTH_TRACE in
        // containerd's environment reaches it through the shim): how it
        // joins the sandbox's namespaces.
        let trace = node.containerd().trace();
        let create = format!("{server} (state)");
        let joins: Vec<&str> = trace
            .lines()
            .skip_while(|l| !l.contains(&create))
            .skip(1)
            .take_while(|l| !l.contains(" (state)"))
            .filter(|l| {
                ["clone(", "setns(", "sethostname", "execve"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        assert!(
            !joins.is_empty(),
            "no trace of the server's create: {trace}"
        );
        let joins =
            normalize(&joins.join("\n"), node, &[(&server, "<server-id>")]);
        insta::assert_snapshot!("kubernetes_cri_server_trace", joins);
    }
    let connect = "for i in $(seq 100); do \
                   nc 127.0.0.1 7777 </dev/null && exit 0; sleep 0.1; done; exit 1";
    let (code, out, err) = kubelet.exec(&client, connect);
    seen.push(format!(
        "client to server over localhost: {code} {out:?} {err:?}"
    ));
    for ns in ["net", "ipc", "uts"] {
        let link = format!("readlink /proc/self/ns/{ns}");
        let (a, b) = (
            kubelet.exec(&server, &link).1,
            kubelet.exec(&client, &link).1,
        );
        let host = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        seen.push(format!(
            "{ns} namespace shared by the pod: {}, the node's: {}",
            a == b && !a.is_empty(),
            a.trim() == host.display().to_string()
        ));
    }
    let (_, out, _) = kubelet.exec(&client, "ip -o -4 addr show eth0");
    seen.push(format!(
        "eth0 has the pod's address: {}",
        !address.is_empty() && out.contains(&format!(" {address}/24 "))
    ));
    let (_, out, _) = kubelet.exec(&client, "hostname");
    seen.push(format!(
        "hostname is the pod's name: {}",
        out.trim() == format!("net-{}", kubelet.handler)
    ));
    assert_left(
        node,
        &[
            "sandbox",
            "shim",
            "cgroup",
            "mount",
            "network namespace",
            "veth",
            "lease",
            "CNI cache",
            &format!("{} state", kubelet.handler),
        ],
    );
    let (_, a, _) = kubelet.exec(&server, "readlink /proc/self/ns/pid");
    let (_, b, _) = kubelet.exec(&client, "readlink /proc/self/ns/pid");
    seen.push(format!("pid namespace per container: {}", a != b));

    // Stats, from the container's cgroup.
    let request = ContainerStatsRequest {
        container_id: client.clone(),
    };
    let stats = kubelet
        .client
        .runtime(|mut c| async move { c.container_stats(request).await })
        .unwrap()
        .stats
        .unwrap();
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map_or(0, |v| v.value);
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map_or(0, |v| v.value);
    seen.push(format!(
        "stats: working set > 0: {}, cpu time > 0: {}",
        memory > 0,
        cpu > 0
    ));
    let request = ListContainerStatsRequest {
        filter: Some(ContainerStatsFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        }),
    };
    let listed = kubelet
        .client
        .runtime(|mut c| async move { c.list_container_stats(request).await })
        .unwrap()
        .stats;
    let mut names: Vec<_> = listed
        .iter()
        .filter_map(|s| s.attributes.as_ref()?.metadata.as_ref())
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    seen.push(format!("listed stats: {names:?}"));

    // UpdateContainerResources on a running container (kubelet's in-place
    // resize, its CPU manager): the shim runs the runtime's `update`.
    let request = UpdateContainerResourcesRequest {
        container_id: client.clone(),
        linux: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 30_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        ..Default::default()
    };
    kubelet
        .client
        .runtime(
            |mut c| async move { c.update_container_resources(request).await },
        )
        .unwrap_or_else(|e| {
            panic!("UpdateContainerResources ({}): {e}", kubelet.handler)
        });
    let (code, out, err) = kubelet.exec(&client, &limits_script());
    seen.push(format!("updated: {code} {out:?} {err:?}"));

    // Log rotation as kubelet does it: rename, then ReopenContainerLog.
    let log = kubelet.status(&server).log_path;
    fs::rename(&log, format!("{log}.1")).unwrap();
    let request = ReopenContainerLogRequest {
        container_id: server.clone(),
    };
    kubelet
        .client
        .runtime(|mut c| async move { c.reopen_container_log(request).await })
        .unwrap();
    kubelet.exec(&client, connect);
    wait_for_file(&log, "served 2");
    seen.push(format!(
        "rotated log {:?}",
        log_messages(&fs::read_to_string(format!("{log}.1")).unwrap())
    ));
    seen.push(format!(
        "reopened log {:?}",
        log_messages(&fs::read_to_string(&log).unwrap())
    ));

    // SIGTERM ignored: SIGKILL after the grace period.
    let start = Instant::now();
    kubelet.stop(&client, 1);
    let status = kubelet.exited(&client);
    seen.push(format!(
        "TERM ignored: exit {} reason {}, after the grace period: {}",
        status.exit_code,
        status.reason,
        start.elapsed() >= Duration::from_secs(1)
    ));
    kubelet.stop(&server, 10);
    kubelet.remove(&client);
    kubelet.remove(&server);
    kubelet.remove_pod(pod);
    seen
}

/// Assert that the node's leftovers, while pods run, show each of `kinds`:
/// the check that they are gone at the end can see them.
fn assert_left(node: &Node, kinds: &[&str]) {
    let left = node.leftovers();
    for kind in kinds {
        assert!(
            left.iter().any(|l| l.starts_with(kind)),
            "no {kind} among what a running pod leaves: {left:#?}"
        );
    }
}

/// What containerd put in a config.json that makes it a pod's: the
/// process, hostname, namespaces, cgroup, mounts and the CRI's
/// annotations, one line each.
fn config_summary(config: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let mut lines = vec![
        format!("process.args: {}", config["process"]["args"]),
        format!("hostname: {}", text(&config["hostname"])),
        format!("cgroupsPath: {}", text(&config["linux"]["cgroupsPath"])),
        "namespaces:".to_owned(),
    ];
    // containerd adds a cgroup namespace where cgroups are v2 only: left
    // out, so that this reads the same on every machine.
    for ns in config["linux"]["namespaces"].as_array().unwrap() {
        if ns["type"] == "cgroup" {
            continue;
        }
        let path = ns["path"]
            .as_str()
            .map(|p| format!(" -> {p}"))
            .unwrap_or_default();
        lines.push(format!("  {}{path}", text(&ns["type"])));
    }
    lines.push("mounts:".to_owned());
    for mount in config["mounts"].as_array().unwrap() {
        let options: Vec<String> = mount["options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        lines.push(format!(
            "  {} <- {} {} ({})",
            text(&mount["destination"]),
            text(&mount["type"]),
            text(&mount["source"]),
            options.join(",")
        ));
    }
    lines.push("annotations:".to_owned());
    let annotations = config["annotations"].as_object().unwrap();
    let mut keys: Vec<_> = annotations.keys().collect();
    keys.sort();
    for key in keys {
        lines.push(format!("  {key}: {}", text(&annotations[key])));
    }
    lines.join("\n") + "\n"
}

/// `text` with what differs from run to run and host to host named:
/// `ids`, pids, the daemon's directory, network namespace names.
fn normalize(text: &str, node: &Node, ids: &[(&str, &str)]) -> String {
    let mut text = text.replace(
        &node.containerd().dir().display().to_string(),
        "<containerd>",
    );
    for (id, name) in ids {
        text = text.replace(id, name);
    }
    let pid = regex::Regex::new(r"/proc/[0-9]+/").unwrap();
    let text = pid.replace_all(&text, "/proc/<sandbox-pid>/");
    let netns = regex::Regex::new(r"cni-[0-9a-f-]{36}").unwrap();
    // The cgroup namespace containerd asks for on a v2-only machine.
    netns
        .replace_all(&text, "cni-<uuid>")
        .replace(" | CLONE_NEWCGROUP", "")
}

/// Wait until the file at `path` holds `text`.
fn wait_for_file(path: &str, text: &str) {
    let start = Instant::now();
    while !fs::read_to_string(path).is_ok_and(|t| t.contains(text)) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path} never said {text:?}: {:?}",
            fs::read_to_string(path)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A script that prints the container's memory limit and CPU quota, and
/// whether its CPU request is 512 shares, from its own cgroup: cgroup v1
/// and v2 name them differently (`cpu.max` is "QUOTA PERIOD"; 512
/// shares are `cpu.weight` 20 under v2).
fn limits_script() -> String {
    let cgroup_file = |v1: &str, v2: &str| {
        format!(
            "cat /sys/fs/cgroup/{v1} 2>/dev/null || cat /sys/fs/cgroup/{v2}"
        )
    };
    format!(
        "m=$({}); set -- $({}); echo memory $m cpu quota $1; \
         case $({}) in 512|20) echo cpu request honoured;; esac",
        cgroup_file("memory/memory.limit_in_bytes", "memory.max"),
        cgroup_file("cpu/cpu.cfs_quota_us", "cpu.max"),
        cgroup_file("cpu/cpu.shares", "cpu.weight"),
    )
}

/// Resources and security contexts: one container each in a pod, run to
/// its end; what it printed, how it ended.
fn limits_and_security(kubelet: &Kubelet) -> Vec<String> {
    let mut seen = Vec::new();
    let pod = kubelet.run_pod(&format!("sec-{}", kubelet.handler), true);
    let limits = limits_script();
    type Edit = fn(&mut LinuxContainerConfig);
    let cases: Vec<(&str, String, Edit)> = vec![
        ("oom", "x=a; while :; do x=$x$x; done".to_owned(), |l| {
            l.resources.as_mut().unwrap().memory_limit_in_bytes = 20 << 20
        }),
        ("limits", limits, |l| {
            let resources = l.resources.as_mut().unwrap();
            resources.memory_limit_in_bytes = 64 << 20;
            resources.cpu_quota = 50_000;
            resources.cpu_shares = 512;
        }),
        (
            "read-only-root",
            "touch /x 2>&1; echo rc=$?; touch /tmp/x 2>&1; echo rc=$?"
                .to_owned(),
            |l| security(l).readonly_rootfs = true,
        ),
        (
            "capabilities",
            // Bits 0 (CAP_CHOWN) and 12 (CAP_NET_ADMIN) of CapEff.
            "touch /tmp/f; chown 1 /tmp/f 2>&1; echo chown rc=$?; \
             set -- $(grep CapEff /proc/self/status); e=0x$2; \
             echo chown $((e & 1)) net_admin $(((e >> 12) & 1))"
                .to_owned(),
            |l| {
                security(l).capabilities = Some(Capability {
                    add_capabilities: vec!["NET_ADMIN".to_owned()],
                    drop_capabilities: vec!["CHOWN".to_owned()],
                    ..Default::default()
                })
            },
        ),
        ("user", "id".to_owned(), |l| {
            security(l).run_as_user = Some(Int64Value { value: 1000 });
            security(l).run_as_group = Some(Int64Value { value: 1000 });
        }),
        (
            "no-new-privs",
            "grep NoNewPrivs /proc/self/status".to_owned(),
            |l| security(l).no_new_privs = true,
        ),
        (
            "seccomp-default",
            "grep Seccomp: /proc/self/status".to_owned(),
            |l| {
                security(l).seccomp = Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::RuntimeDefault
                        as i32,
                    localhost_ref: String::new(),
                })
            },
        ),
        (
            "seccomp-unconfined",
            "grep Seccomp: /proc/self/status".to_owned(),
            |_| (),
        ),
        (
            "masked",
            "wc -c </proc/timer_list; ls /sys/firmware | wc -l; \
             (echo 1 >/proc/sys/vm/drop_caches) 2>&1; echo rc=$?"
                .to_owned(),
            |_| (),
        ),
    ];
    for (name, script, edit) in cases {
        let id = kubelet.start(&pod, container_config(name, &script, edit));
        let status = kubelet.exited(&id);
        let log = fs::read_to_string(&status.log_path).unwrap();
        seen.push(format!(
            "{name}: exit {} reason {} {:?}",
            status.exit_code,
            status.reason,
            log_messages(&log)
        ));
        kubelet.remove(&id);
    }
    kubelet.remove_pod(pod);

    // A privileged pod: every capability of the bounding set, nothing
    // masked, /sys writable.
    let mut pod =
        kubelet.run_pod_with(&format!("priv-{}", kubelet.handler), true, |c| {
            let security =
                c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
            security.privileged = true;
        });
    let script = "set -- $(grep CapEff /proc/self/status) $(grep CapBnd /proc/self/status); \
                  [ $2 = $4 ] && echo all capabilities; \
                  [ $(head -c 9 /proc/timer_list | wc -c) = 9 ] && echo timer_list unmasked; \
                  grep -q ' /sys sysfs rw' /proc/mounts && echo sys writable";
    let id = kubelet.start(
        &pod,
        container_config("privileged", script, |l| {
            let security = security(l);
            security.privileged = true;
            security.masked_paths.clear();
            security.readonly_paths.clear();
        }),
    );
    let status = kubelet.exited(&id);
    let log = fs::read_to_string(&status.log_path).unwrap();
    seen.push(format!(
        "privileged: exit {} {:?}",
        status.exit_code,
        log_messages(&log)
    ));
    kubelet.remove(&id);
    pod.config.hostname.clear();
    kubelet.remove_pod(pod);
    seen
}

#[test]
fn pods_run_on_berth_runtime_as_on_runc() {
    if !privileged("kubernetes_cri::pods_run_on_berth_runtime_as_on_runc") {
        return;
    }
    // Snapshots as the book includes them (no expression in the header).
    let _settings = berth_tests::snapshot_settings().bind_to_scope();
    let node = node("pods");
    let version = node
        .runtime(|mut c| async move {
            c.version(VersionRequest {
                version: "v1".to_owned(),
            })
            .await
        })
        .unwrap();
    assert_eq!(
        (
            version.runtime_name.as_str(),
            version.runtime_api_version.as_str()
        ),
        ("containerd", "v1")
    );
    let status = node
        .runtime(|mut c| async move {
            c.status(StatusRequest { verbose: false }).await
        })
        .unwrap()
        .status
        .unwrap();
    let ready: HashMap<_, _> = status
        .conditions
        .iter()
        .map(|c| (c.r#type.as_str(), c.status))
        .collect();
    assert_eq!(ready.get("RuntimeReady"), Some(&true), "{status:?}");
    assert_eq!(ready.get("NetworkReady"), Some(&true), "{status:?}");

    let mut seen = HashMap::new();
    for handler in ["berth", "runc"] {
        let kubelet = node.kubelet(handler);
        let mut lines = host_network_pod(&node, &kubelet);
        lines.extend(pod_network_pod(&node, &kubelet));
        lines.extend(limits_and_security(&kubelet));
        lines.extend(shim_killed(&node, &kubelet));
        // Every sandbox and container of this handler was created by
        // berth-runtime under `berth`, and by another runtime under `runc`.
        for id in kubelet.made() {
            assert_eq!(
                berth_created(&node, &id),
                handler == "berth",
                "who created {id} under the {handler} handler"
            );
        }
        seen.insert(handler, lines);
    }
    assert_eq!(seen["berth"], seen["runc"]);
    insta::assert_snapshot!(
        "kubernetes_cri_pod_tour",
        seen["berth"].join("\n")
    );
    assert_eq!(node.leftovers(), Vec::<String>::new());
}

/// A pod whose shim is killed (SIGKILL) while its container runs: kubelet
/// then stops and removes it as usual, and nothing may be left.
fn shim_killed(node: &Node, kubelet: &Kubelet) -> Vec<String> {
    let mut seen = Vec::new();
    let pod = kubelet.run_pod(&format!("kill-{}", kubelet.handler), true);
    let id =
        kubelet.start(&pod, container_config("app", "exec sleep 1000", |_| ()));
    let shims = node.shims();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // containerd reports the exit as it can: 255 when the shim took the
    // real status with it, or the status its clean-up found.
    let status = kubelet.exited(&id);
    seen.push(format!(
        "shim killed: the container is reported exited: {}",
        status.state == ContainerState::ContainerExited as i32
    ));
    kubelet.stop(&id, 0);
    kubelet.remove(&id);
    kubelet.remove_sandbox(&pod);
    // containerd cleans up after a dead shim in the background (the shim
    // binary's `delete`, which runs the runtime's `delete --force`): give
    // it time, then nothing may be left, but the dead shim's socket,
    // which containerd 1.6 leaves (its leak, not the runtime's) and a
    // node's operator removes.
    let uid = &pod.config.metadata.as_ref().unwrap().uid;
    let start = Instant::now();
    let left = loop {
        node.remove_shim_sockets();
        let removed = remove_cgroup(&kubelet.cgroup_parent(uid));
        let left = node.leftovers();
        if (removed.is_ok() && left.is_empty())
            || start.elapsed() > Duration::from_secs(30)
        {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    seen.push(format!("after the shim's death, left: {left:?}"));
    if kubelet.handler == "berth" {
        // berth-runtime's delete of the container: its cgroup killed and
        // removed.
        let trace = node.containerd().trace();
        assert!(
            trace
                .lines()
                .any(|l| l.contains("kill and rmdir") && l.contains(&id)),
            "no delete of {id} by berth-runtime after its shim died"
        );
    }
    seen
}

#[test]
fn the_guides_runtime_class_names_the_handler_the_node_declares() {
    // The RuntimeClass sends pods to the handler named in its `handler:`;
    // containerd knows it only if the config declares that runtime.
    let handlers: Vec<&str> = cri::RUNTIME_CLASS
        .lines()
        .filter_map(|l| l.strip_prefix("handler: "))
        .collect();
    assert_eq!(handlers, ["berth"]);
    let table = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{}]",
        handlers[0]
    );
    assert!(cri::HANDLERS.contains(&table), "{table} is not declared");
    assert!(cri::RUNTIME_CLASS.contains("runtimeClassName: berth"));
}
