#![allow(dead_code)] // each test file uses what it needs
//! What the step 8 tests share: bundles made from `runc spec`, and the
//! differential run under runc and step08-oci.

use std::fs;
use std::path::Path;
use std::process::Command;

use berth_tests::fixture::rootfs;
use berth_tests::{host, run, step_binary};
use serde_json::{Value, json};

/// What the probe prints in every bundle.
pub const PROBE: [&str; 10] = [
    "probe", "hostname", "pid", "ids", "ns", "caps", "limits", "mounts",
    "network", "cgroup",
];

/// A bundle in `target/test-step08/NAME`: the fixture rootfs, and
/// `runc spec`'s config.json with `terminal` off, the probe as process, a
/// cgroup path of its own, and `edit` applied.
pub fn bundle(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let dir = format!("target/test-step08/{name}");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let copied = Command::new("cp")
        .args(["-a", rootfs().to_str().unwrap(), &format!("{dir}/rootfs")])
        .status()
        .unwrap();
    assert!(copied.success());
    let spec = Command::new("runc")
        .args(["spec", "--bundle", &dir])
        .status()
        .expect("runc is needed for the differential tests (scripts/setup installs it)");
    assert!(spec.success());
    let path = format!("{dir}/config.json");
    let mut config: Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(PROBE);
    let env = config["process"]["env"].as_array_mut().unwrap();
    env.push(json!(format!("PROBE_HOST_NS={}", host::namespace_inodes())));
    config["linux"]["cgroupsPath"] = json!(format!("/berth-diff/{name}"));
    edit(&mut config);
    fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    dir
}

/// Run `bundle` under runc and under step08-oci; assert the probe printed
/// the same, and return step08-oci's transcript.
pub fn differential(name: &str, bundle: &str) -> berth_tests::Transcript {
    let state = format!("target/test-step08/runc-state-{name}");
    let under_runc =
        run("runc", &["--root", &state, "run", "--bundle", bundle, name]);
    let step = step_binary("step08-oci");
    let before = host::State::now();
    let under_berth = run(&step, &["run", "--bundle", bundle, name]);
    before.assert_unchanged();
    assert_eq!(under_runc.code, 0, "runc failed: {}", under_runc.render());
    assert_eq!(under_berth.code, 0, "{}", under_berth.render());
    assert_eq!(
        under_runc.stdout, under_berth.stdout,
        "runc and step08-oci differ for {name}"
    );
    assert_cgroup_removed(name);
    // And under berth-runtime, Part II's runtime on the same code.
    let root = format!("target/test-step08/berth-runtime-{name}");
    let runtime = step_binary("berth-runtime");
    let under_runtime = run(
        &runtime,
        &["--root", &root, "run", "--bundle", bundle, name],
    );
    assert_eq!(under_runtime.code, 0, "{}", under_runtime.render());
    assert_eq!(
        under_runc.stdout, under_runtime.stdout,
        "runc and berth-runtime differ for {name}"
    );
    assert_cgroup_removed(name);
    under_berth
}

/// No directory of `/berth-diff/NAME` is left in any hierarchy.
fn assert_removed_in(mount: &Path, name: &str) {
    let dir = mount.join("berth-diff").join(name);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

pub fn assert_cgroup_removed(name: &str) {
    let layout = step08_oci::oci::full_layout().unwrap();
    match layout {
        step08_oci::cgroup::Layout::Unified { mount } => {
            assert_removed_in(&mount, name)
        }
        step08_oci::cgroup::Layout::Legacy { hierarchies } => {
            for hierarchy in hierarchies {
                assert_removed_in(&hierarchy.mount, name);
            }
        }
    }
}

/// Run `probe syscalls` under runc and under berth-runtime in a bundle
/// with `config`'s seccomp profile and capabilities (a daemon's default
/// profile, captured from the config.json it wrote); assert both say the
/// same of every system call, and return what they said.
pub fn seccomp_differential(name: &str, config: &Value) -> String {
    let dir = bundle(name, |c| {
        c["process"]["args"] = json!(["probe", "syscalls"]);
        c["process"]["capabilities"] =
            config["process"]["capabilities"].clone();
        c["linux"]["seccomp"] = config["linux"]["seccomp"].clone();
    });
    let runc_root = format!("target/test-step08/runc-state-{name}");
    let under_runc = run(
        "runc",
        &["--root", &runc_root, "run", "--bundle", &dir, name],
    );
    let root = format!("target/test-runtime/seccomp-{name}");
    let runtime = step_binary("berth-runtime");
    let under_berth =
        run(&runtime, &["--root", &root, "run", "--bundle", &dir, name]);
    assert_eq!(under_runc.code, 0, "{}", under_runc.render());
    assert_eq!(under_berth.code, 0, "{}", under_berth.render());
    assert!(
        under_berth.stdout.contains("mount: "),
        "{}",
        under_berth.render()
    );
    assert_eq!(
        under_runc.stdout, under_berth.stdout,
        "runc and berth-runtime differ under {name}'s seccomp profile"
    );
    // For the snapshot, only what the profile decides: EPERM (its
    // answer, or the kernel's for a missing capability), or through to
    // the kernel, whose own answer (ok, EFAULT, EAFNOSUPPORT for a family
    // this kernel lacks…) depends on how it was built.
    under_berth
        .stdout
        .lines()
        .map(|line| match line.rsplit_once(": ") {
            Some((call, "EPERM")) => format!("{call}: EPERM\n"),
            Some((call, _)) => format!("{call}: passed to the kernel\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// `berth-runtime --root ROOT args...` to its end, `edit` applied, its
/// stdout and stderr in files (the container inherits them):
/// (exit code, stdout, stderr).
pub fn runtime_with(
    root: &str,
    args: &[&str],
    edit: impl FnOnce(&mut Command),
) -> (i32, String, String) {
    let mut full = vec!["--root", root];
    full.extend_from_slice(args);
    let out_dir = std::path::PathBuf::from(format!("{root}.out"));
    let program = step_binary("berth-runtime");
    let done = berth_tests::run_to_files(&program, &full, &out_dir, edit);
    (done.code, done.stdout, done.stderr)
}

/// In a child between fork and exec: make `from` the fd `to`, open across
/// `execve`. `dup2(2)` alone does nothing when the two are the same
/// number, and leaves the close-on-exec flag Rust set on the original.
pub fn pass_fd(from: i32, to: i32) -> std::io::Result<()> {
    // SAFETY: dup2 and fcntl(F_SETFD) are async-signal-safe and only
    // change this process's fd table.
    unsafe {
        if from != to && libc::dup2(from, to) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::fcntl(to, libc::F_SETFD, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The state `berth-runtime state` prints for `id` under `root`, parsed.
pub fn state(root: &str, id: &str) -> Value {
    let (code, out, err) = runtime_with(root, &["state", id], |_| {});
    assert_eq!(code, 0, "state {id}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Wait (up to 10 s) until `id` under `root` reads `status`.
pub fn wait_for(root: &str, id: &str, status: &str) {
    let start = std::time::Instant::now();
    while state(root, id)["status"] != status {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{id} never became {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Wait (up to 5 s) until process `pid` is gone, or a zombie its new
/// parent has not reaped yet; `what` names it in the failure.
pub fn wait_gone(pid: &str, what: &str) {
    let alive = || {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"));
        stat.is_ok_and(|stat| {
            !stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    };
    let start = std::time::Instant::now();
    while alive() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{what} ({pid}) is still alive"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A runtime root of its own for one test, `target/test-runtime/NAME`,
/// emptied first: a container that an earlier, failed run of the test
/// left behind (with its processes and cgroup) is deleted, so a rerun
/// does not trip over it.
pub fn fresh_root(name: &str) -> String {
    let dir = format!("target/test-runtime/{name}");
    if fs::metadata(&dir).is_ok() {
        let (_, ids, _) = runtime(&dir, &["list", "-q"]);
        for id in ids.lines() {
            runtime(&dir, &["delete", "--force", id]);
        }
    }
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// [`runtime_with`] with nothing to change in the command.
pub fn runtime(root: &str, args: &[&str]) -> (i32, String, String) {
    runtime_with(root, args, |_| {})
}
