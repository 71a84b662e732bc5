//! berth-runtime under containerd, as `ctr --runc-binary` drives it: the
//! runc shim (io.containerd.runc.v2) calls our create, start, kill,
//! delete, exec, pause and resume with runc's flags (never state: it keeps
//! its own) and reads our JSON log. containerd is started by the test on its own sockets, and an
//! image of the test rootfs is imported (no network).

use std::fs;
use std::process::Output;
use std::time::{Duration, Instant};

mod oci;

use berth_tests::daemons::{ArgvLog, Containerd};
use berth_tests::fixture::rootfs;
use berth_tests::{privileged, step_binary, workspace_root};

/// Run a command to its end; panic with its output if `expect` differs.
fn ran(output: std::io::Result<Output>) -> (i32, String, String) {
    let output = output.expect("cannot run ctr");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The task's status as `ctr task ls` shows it.
fn task_status(containerd: &Containerd, id: &str) -> String {
    let (_, out, _) = ran(containerd.ctr(&["task", "ls"]).output());
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_owned()
}

/// Wait until the task reads `status`.
fn wait_for(containerd: &Containerd, id: &str, status: &str) {
    let start = Instant::now();
    while task_status(containerd, id) != status {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{id} never became {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No cgroup of `/NAMESPACE/ID` is left in any hierarchy.
fn assert_no_cgroup(namespace: &str, id: &str) {
    let layout = step08_oci::oci::full_layout().unwrap();
    let mounts: Vec<_> = match layout {
        step08_oci::cgroup::Layout::Unified { mount } => vec![mount],
        step08_oci::cgroup::Layout::Legacy { hierarchies } => {
            hierarchies.into_iter().map(|h| h.mount).collect()
        }
    };
    for mount in mounts {
        let dir = mount.join(namespace).join(id);
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}

#[test]
fn containerd_runs_tasks_through_berth_runtime() {
    if !privileged("runtime_containerd::containerd_runs_tasks") {
        return;
    }
    let built = workspace_root().join(step_binary("berth-runtime"));
    let argv = ArgvLog::new("containerd", &built);
    let runtime = argv.runtime();
    let runtime = runtime.to_str().unwrap();
    let containerd = Containerd::start("tasks");
    let image = containerd.import_rootfs(rootfs());
    let ns = containerd.namespace.clone();

    // ctr run --rm: create, start, wait, delete.
    let (code, out, err) = ran(containerd
        .ctr(&["run", "--rm", "--runc-binary", runtime, image, "t1"])
        .args(["sh", "-c", "echo hello from the container; exit 3"])
        .output());
    assert_eq!(
        (code, out.as_str()),
        (3, "hello from the container\n"),
        "{err}"
    );

    // BERTH_TRACE in containerd's environment reached the runtime through
    // the shim: the trace of t1's create is there.
    let trace = containerd.trace();
    assert!(
        trace.contains("[step 3 · 03-mount.md] pivot_root")
            && trace.contains("[step 9 · 09-runtime.md] mkdir"),
        "no trace from under containerd: {trace}"
    );
    // A long-running task: our state directory proves who runs it.
    let (code, _, err) = ran(containerd
        .ctr(&["run", "-d", "--runc-binary", runtime, image, "t2"])
        .args([
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ])
        .output());
    assert_eq!(code, 0, "{err}");
    let state = containerd.runtime_root().join("t2/state.json");
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
    assert!(
        record["process"]["start_time"].is_u64(),
        "not berth-runtime's state: {record}"
    );
    assert_eq!(task_status(&containerd, "t2"), "RUNNING");

    // exec: output and exit codes, in the container's namespaces.
    let (code, out, err) = ran(containerd
        .ctr(&["task", "exec", "--exec-id", "e1", "t2"])
        .args(["sh", "-c", "echo in exec; cat /proc/1/comm; exit 7"])
        .output());
    assert_eq!((code, out.as_str()), (7, "in exec\nsh\n"), "{err}");

    // ctr task metrics: containerd's shim reads the cgroup berth made.
    let (code, out, err) =
        ran(containerd.ctr(&["task", "metrics", "t2"]).output());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pids") || out.contains("memory"), "{out}");
    // pause and resume: the freezer.
    for (verb, status) in [("pause", "PAUSED"), ("resume", "RUNNING")] {
        let (code, _, err) =
            ran(containerd.ctr(&["task", verb, "t2"]).output());
        assert_eq!(code, 0, "{verb}: {err}");
        assert_eq!(task_status(&containerd, "t2"), status);
    }

    // kill (SIGTERM, which the shell traps: PID 1 of a namespace gets
    // only the signals it handles), then the task and container removed.
    let (code, _, err) = ran(containerd.ctr(&["task", "kill", "t2"]).output());
    assert_eq!(code, 0, "{err}");
    wait_for(&containerd, "t2", "STOPPED");
    let (code, _, err) = ran(containerd.ctr(&["task", "rm", "t2"]).output());
    assert_eq!(code, 0, "{err}");
    let (code, _, err) =
        ran(containerd.ctr(&["container", "rm", "t2"]).output());
    assert_eq!(code, 0, "{err}");
    assert!(!state.exists(), "state of t2 left behind");
    assert_no_cgroup(&ns, "t2");

    // A memory limit: the OOM killer's SIGKILL is exit 137.
    let (code, _, err) = ran(containerd
        .ctr(&["run", "--rm", "--runc-binary", runtime])
        .args(["--memory-limit", "20000000", image, "t3"])
        .args(["sh", "-c", "x=a; while true; do x=$x$x; done"])
        .output());
    assert_eq!(code, 137, "{err}");
    assert_no_cgroup(&ns, "t3");

    // containerd's default seccomp profile (ctr run --seccomp), captured
    // from the config.json of a task, then checked against runc below.
    let (code, _, err) = ran(containerd
        .ctr(&["run", "-d", "--seccomp", "--runc-binary", runtime, image])
        .args(["t6", "sleep", "1000"])
        .output());
    assert_eq!(code, 0, "{err}");
    let config = containerd.bundle_config("t6");
    for args in [
        &["task", "kill", "-s", "KILL", "t6"][..],
        &["task", "rm", "-f", "t6"],
        &["container", "rm", "t6"],
    ] {
        let _ = ran(containerd.ctr(args).output());
    }
    // containerd's default seccomp profile is loaded (filter mode, 2).
    let (code, out, err) = ran(containerd
        .ctr(&["run", "--rm", "--seccomp", "--runc-binary", runtime, image])
        .args(["t4", "grep", "^Seccomp:", "/proc/self/status"])
        .output());
    assert_eq!((code, out.as_str()), (0, "Seccomp:\t2\n"), "{err}");

    // A terminal (ctr run -t: the console socket), under script(1),
    // which gives ctr the terminal it insists on.
    let address = containerd.address().display().to_string();
    let command = format!(
        "ctr --address {address} --namespace {ns} run --rm -t \
         --runc-binary {runtime} {image} t5 sh -c 'tty; test -t 0 && echo stdin is a tty'"
    );
    let (code, out, err) = ran(std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("stdin is a tty"), "{out}");

    assert!(
        fs::read_dir(containerd.runtime_root())
            .map_or(true, |mut d| d.next().is_none()),
        "state left under {}",
        containerd.runtime_root().display()
    );
    let calls = argv.distinct(|line| normalize(line, &containerd));
    drop(containerd);
    let verdicts = oci::seccomp_differential("containerd-default", &config);
    berth_tests::snapshot_settings().bind(|| {
        insta::assert_snapshot!("runtime_seccomp_containerd", verdicts)
    });
    berth_tests::snapshot_settings()
        .bind(|| insta::assert_snapshot!("runtime_argv_containerd", calls));
}

/// A command line containerd's shim ran, with what varies from run to
/// run replaced: its directories, exec ids, pids, temporary files.
fn normalize(line: &str, containerd: &Containerd) -> String {
    let state = containerd.address();
    let dir = state.parent().unwrap().display().to_string();
    let line = line.replace(&dir, "[CONTAINERD]");
    let bundle = format!(
        "[CONTAINERD]/state/io.containerd.runtime.v2.task/{}/",
        containerd.namespace
    );
    let line = line.replace(&bundle, "[TASKS]/");
    let ids = regex::Regex::new(r"\bt\d\b").unwrap();
    let line = ids.replace_all(&line, "ID");
    let line = line.replace("e1.pid", "EXEC.pid");
    let temporary = regex::Regex::new(r"/tmp/[A-Za-z0-9_.-]+/").unwrap();
    let line = temporary.replace_all(&line, "[TMP]/");
    let numbered = regex::Regex::new(r"(runc-process|pty)\d+").unwrap();
    numbered.replace_all(&line, "$1[N]").into_owned()
}
