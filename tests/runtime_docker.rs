//! berth-runtime under dockerd (`--add-runtime berth=PATH`, then
//! `docker run --runtime berth`), and under podman (`--runtime PATH`,
//! through conmon): the two engines most people type at, each started by
//! the test with storage of its own, an image of the test rootfs loaded
//! (no network), nothing of the host's network touched.

use std::borrow::BorrowMut;
use std::process::{Command, Output, Stdio};

mod oci;

use berth_tests::daemons::{ArgvLog, Dockerd, Podman};
use berth_tests::fixture::rootfs;
use berth_tests::{privileged, step_binary, workspace_root};

/// Exit code, stdout and stderr of a finished command.
fn ran(mut command: impl BorrowMut<Command>) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .borrow_mut()
        .output()
        .expect("cannot run the client");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `line` run by script(1), which gives it the terminal `-it` needs.
fn in_a_terminal(line: &str) -> (i32, String, String) {
    ran(Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .stdin(Stdio::null()))
}

/// The absolute path of the built berth-runtime.
fn runtime() -> std::path::PathBuf {
    workspace_root().join(step_binary("berth-runtime"))
}

/// A container that stops on SIGTERM: PID 1 of a namespace gets only the
/// signals it has a handler for.
const STOPPABLE: [&str; 3] = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 0.1; done",
];

#[test]
fn dockerd_runs_containers_through_berth_runtime() {
    if !privileged("runtime_docker::dockerd_runs_containers") {
        return;
    }
    let argv = ArgvLog::new("dockerd", &runtime());
    let dockerd = Dockerd::start("runtime", &argv.runtime());
    let image = dockerd.load_rootfs(rootfs());

    let (code, out, err) = ran(dockerd
        .docker(&["run", "--runtime", "berth", "--rm", image])
        .args(["echo", "hello from docker"]));
    assert_eq!((code, out.as_str()), (0, "hello from docker\n"), "{err}");

    let (code, _, err) = ran(dockerd
        .docker(&["run", "--runtime", "berth", "-d", "--name", "d1", image])
        .args(STOPPABLE));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = ran(dockerd.docker(&[
        "exec",
        "d1",
        "sh",
        "-c",
        "cat /proc/1/comm; exit 4",
    ]));
    assert_eq!((code, out.as_str()), (4, "sh\n"), "{err}");
    // dockerd's default seccomp profile and capabilities, from the
    // config.json it wrote for d1 (checked against runc below).
    let config = dockerd.bundle_config("d1");
    // docker top: containerd's shim asks `ps --format json`.
    let (code, out, err) = ran(dockerd.docker(&["top", "d1"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("trap 'exit 0' TERM"), "{out}");
    // pause / unpause: the freezer.
    let (code, _, err) = ran(dockerd.docker(&["pause", "d1"]));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) =
        ran(dockerd.docker(&["inspect", "-f", "{{.State.Status}}", "d1"]));
    assert_eq!(out, "paused\n");
    let (code, _, err) = ran(dockerd.docker(&["unpause", "d1"]));
    assert_eq!(code, 0, "{err}");
    // docker update: `update --resources -` on a live container.
    let (code, _, err) = ran(dockerd
        .docker(&["update", "--memory", "64m", "--memory-swap", "64m"])
        .args(["--pids-limit", "50", "d1"]));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ran(dockerd.docker(&[
        "exec",
        "d1",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids.max 2>/dev/null \
         || cat /sys/fs/cgroup/pids/pids.max",
    ]));
    assert_eq!(out, "50\n");
    // docker stop: SIGTERM, trapped, exit 0.
    let (code, _, err) = ran(dockerd.docker(&["stop", "d1"]));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) =
        ran(dockerd.docker(&["inspect", "-f", "{{.State.ExitCode}}", "d1"]));
    assert_eq!(out, "0\n");
    let (code, _, err) = ran(dockerd.docker(&["rm", "d1"]));
    assert_eq!(code, 0, "{err}");

    // A memory limit: the OOM killer's SIGKILL is exit 137.
    let (code, _, err) = ran(dockerd
        .docker(&["run", "--runtime", "berth", "--rm", "-m", "50m", image])
        .args(["sh", "-c", "x=a; while :; do x=$x$x; done"]));
    assert_eq!(code, 137, "{err}");

    // -it: a terminal through the console socket.
    let (code, out, err) = in_a_terminal(&format!(
        "{} run --runtime berth --rm -it {image} sh -c 'tty; test -t 0 && echo tty in'",
        dockerd.docker_line()
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("/dev/pts/0") && out.contains("tty in"),
        "{out}"
    );
    drop(dockerd);
    // dockerd's default profile, under runc and under berth-runtime.
    let verdicts = oci::seccomp_differential("docker-default", &config);
    berth_tests::snapshot_settings()
        .bind(|| insta::assert_snapshot!("runtime_seccomp_docker", verdicts));
    let calls =
        argv.distinct(|line| normalize(line, "/tmp/berth-dockerd-runtime"));
    berth_tests::snapshot_settings()
        .bind(|| insta::assert_snapshot!("runtime_argv_dockerd", calls));
}

/// A command line a client ran, with what varies from run to run
/// replaced: the daemon's directory, container and exec ids (hex),
/// temporary files.
fn normalize(line: &str, dir: &str) -> String {
    let line = line.replace(dir, "[DAEMON]");
    let hex = regex::Regex::new(r"[0-9a-f]{64}").unwrap();
    let line = hex.replace_all(&line, "ID");
    let temporary = regex::Regex::new(r"/tmp/[A-Za-z0-9_.-]+/").unwrap();
    let line = temporary.replace_all(&line, "[TMP]/");
    let numbered =
        regex::Regex::new(r"(runc-process|exec-process-)\d+").unwrap();
    let line = numbered.replace_all(&line, "${1}[N]");
    let socket = regex::Regex::new(r"/tmp/conmon-term\.\w+").unwrap();
    socket.replace_all(&line, "[TMP]/conmon-term").into_owned()
}

/// podman's flags for this machine: its default rlimits exceed the hard
/// limits here, and raising one needs CAP_SYS_RESOURCE (absent).
const PODMAN_LIMITS: [&str; 5] = [
    "--network=none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

#[test]
fn podman_runs_containers_through_berth_runtime() {
    if !privileged("runtime_docker::podman_runs_containers") {
        return;
    }
    let argv = ArgvLog::new("podman", &runtime());
    let podman = Podman::new("runtime", &argv.runtime());
    let image = podman.load_rootfs(rootfs());

    let (code, out, err) = ran(podman
        .podman(&["run", "--rm"])
        .args(PODMAN_LIMITS)
        .args([image, "echo", "hello from podman"]));
    assert_eq!((code, out.as_str()), (0, "hello from podman\n"), "{err}");

    let (code, _, err) = ran(podman
        .podman(&["run", "-d", "--name", "p1"])
        .args(PODMAN_LIMITS)
        .arg(image)
        .args(STOPPABLE));
    assert_eq!(code, 0, "{err}");
    // conmon: exec --process FILE --detach.
    let (code, out, err) = ran(podman.podman(&[
        "exec",
        "p1",
        "sh",
        "-c",
        "cat /proc/1/comm; exit 5",
    ]));
    assert_eq!((code, out.as_str()), (5, "sh\n"), "{err}");
    let (code, out, err) = in_a_terminal(&format!(
        "{} exec -it p1 sh -c 'tty; test -t 0 && echo tty in'",
        podman.podman_line()
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tty in"), "{out}");
    let (code, _, err) = ran(podman.podman(&["stop", "p1"]));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) =
        ran(podman.podman(&["inspect", "-f", "{{.State.ExitCode}}", "p1"]));
    assert_eq!(out, "0\n");
    let (code, _, err) = ran(podman.podman(&["rm", "p1"]));
    assert_eq!(code, 0, "{err}");

    // -it on run: conmon makes the console socket for `create`. The
    // program waits a moment before it writes: podman attaches to the
    // terminal only after the start, and loses what a program that ends
    // at once wrote before (2 runs in 10 printed nothing, under runc as
    // under berth-runtime).
    let (code, out, err) = in_a_terminal(&format!(
        "{} run --rm -it {} {image} sh -c 'sleep 0.5; tty; test -t 0 && echo tty in'",
        podman.podman_line(),
        PODMAN_LIMITS.join(" ")
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("/dev/pts/0") && out.contains("tty in"),
        "{out}"
    );
    drop(podman);
    let calls =
        argv.distinct(|line| normalize(line, "/tmp/berth-podman-runtime"));
    berth_tests::snapshot_settings()
        .bind(|| insta::assert_snapshot!("runtime_argv_podman", calls));
}
