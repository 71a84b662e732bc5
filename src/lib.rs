//! The test harness of berth: what every per-stage snapshot test needs.
//!
//! The tests in `tests/` run the real step binaries as subprocesses (never
//! `clone` inside the multi-threaded test harness) and snapshot what the
//! static `probe` program prints from inside the container.
//!
//! # Layout
//!
//! - [`fixture`]: the busybox + probe root filesystem, built under
//!   `target/rootfs` (also used by the demo, through `berth-fixture`);
//! - [`privileged`]: SKIPPED when not root, a failure instead when
//!   `BERTH_REQUIRE_PRIVILEGED=1` (CI);
//! - [`Transcript`] and [`run`]: run a command the way a reader would
//!   type it, and render what they would see;
//! - [`registry`]: registries on loopback for the registry tests (a
//!   real one, a token server, a fake one that lies);
//! - [`daemons`]: the real clients of the runtime and the engine
//!   (containerd, dockerd, podman, berth daemon), each started for one
//!   test on private sockets and directories, and the test images;
//! - [`cri`]: a Kubernetes node without kubelet (containerd with its CRI
//!   plugin and the guide's `berth` and `runc` handlers, a CNI bridge)
//!   and what its pods may leave behind;
//! - [`kubelet`]: kubelet's half of the CRI, the configs and calls of a
//!   pod's life, for the tests and `berth-cri` (the benchmark);
//! - [`host`]: the host-side facts a test asserts are unchanged (hostname,
//!   mounts) and the namespace inodes `probe ns` compares with.

use std::env;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub mod cri;
pub mod daemons;
pub mod fixture;
pub mod host;
pub mod kubelet;
pub mod registry;

/// The workspace root: the directory the tests run in, and the one the
/// relative paths in transcripts (`target/debug/step01-uts`) start from.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The cargo that runs us (tests get it in `$CARGO`).
pub fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Whether a privileged test can run: `true` as root. Otherwise it says
/// `SKIPPED` on the terminal (past the harness's output capture) and returns
/// `false` — or panics when `BERTH_REQUIRE_PRIVILEGED=1`, so CI cannot pass
/// by skipping.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if env::var("BERTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!(
            "{test} needs root, and BERTH_REQUIRE_PRIVILEGED=1 forbids skipping it"
        );
    }
    // Written to the real stderr, not through eprintln!, which the test
    // harness would capture and hide for a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test} needs root (run the suite with sudo to run it)"
    );
    false
}

/// Whether the binaries and the rootfs were built beforehand
/// (`BERTH_PREBUILT=1`): the cgroup v2 lane runs the test executables in a
/// qemu guest that has no cargo, with static builds put where
/// [`step_binary`] and [`fixture::rootfs`] look.
pub fn prebuilt() -> bool {
    env::var("BERTH_PREBUILT").as_deref() == Ok("1")
}

/// Build the workspace's binaries once per test process, and return its path
/// relative to the workspace root (`target/debug/step01-uts`), as a reader
/// would type it.
pub fn step_binary(bin: &str) -> String {
    static BUILT: OnceLock<()> = OnceLock::new();
    built(&BUILT, "--bins", &target_dir().join("debug").join(bin))
}

/// [`step_binary`] for the workspace's examples
/// (`target/debug/examples/bare_uts`).
pub fn example_binary(name: &str) -> String {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = target_dir().join("debug/examples").join(name);
    built(&BUILT, "--examples", &path)
}

/// `path`, once `cargo build --workspace KIND` has run (once per test
/// process, in `once`; not at all with [`prebuilt`]), relative to the
/// workspace root.
fn built(once: &OnceLock<()>, kind: &str, path: &Path) -> String {
    once.get_or_init(|| {
        if prebuilt() {
            return;
        }
        // Everything of the kind at once: one cargo call, a no-op when up
        // to date.
        let status = cargo()
            .args(["build", "--quiet", "--workspace", kind])
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo");
        assert!(status.success(), "cargo build --workspace {kind} failed");
    });
    assert!(path.exists(), "{} was not built", path.display());
    match path.strip_prefix(workspace_root()) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// `berth-init`, built static by `scripts/build-init` (once per test
/// process; a no-op for cargo when up to date): the init of `run --init`
/// containers, which must run in any root.
pub fn static_init() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(workspace_root().join("scripts/build-init"))
                .stderr(Stdio::inherit())
                .output()
                .expect("cannot run scripts/build-init");
            assert!(out.status.success(), "scripts/build-init failed");
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// Wait for `child` at most `patience`: its exit status, or `None` if it
/// still runs (then it is killed and collected, so that no test leaves
/// it behind).
pub fn wait_at_most(
    child: &mut std::process::Child,
    patience: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() >= patience {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A copy of the built binary `bin` in `/tmp/berth-test-bins`, where any
/// user can execute it (the checkout may sit below a directory only root
/// may enter), for the tests that run a step as an ordinary user.
pub fn world_executable(bin: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let built = workspace_root().join(step_binary(bin));
    let dir = Path::new("/tmp/berth-test-bins");
    std::fs::create_dir_all(dir).expect("cannot create /tmp/berth-test-bins");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .expect("cannot chmod /tmp/berth-test-bins");
    let target = dir.join(bin);
    // Copy under a unique name, then rename: tests run in parallel.
    static COPIES: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = dir.join(format!("{bin}.{}.{n}", std::process::id()));
    // Copied by cp(1), not by us: a thread of ours forking while we held
    // the copy open for writing would lend its child that fd until the
    // child execs, and running the copy then fails with ETXTBSY.
    let copied = Command::new("cp")
        .arg(&built)
        .arg(&partial)
        .status()
        .expect("cannot run cp");
    assert!(copied.success(), "cp of {} failed", built.display());
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .expect("cannot chmod the binary");
    std::fs::rename(&partial, &target).expect("cannot rename the binary");
    target.display().to_string()
}

/// A copy of the test rootfs in `/tmp/berth-test-rootfs`, which any user
/// can read, for the tests that run a container as an ordinary user.
/// Copied once per test process (`cp -a`: links and modes kept).
pub fn world_readable_rootfs() -> &'static str {
    static COPIED: OnceLock<()> = OnceLock::new();
    const COPY: &str = "/tmp/berth-test-rootfs";
    COPIED.get_or_init(|| {
        let _ = std::fs::remove_dir_all(COPY);
        let status = Command::new("cp")
            .arg("-a")
            .arg(fixture::rootfs())
            .arg(COPY)
            .status()
            .expect("cannot run cp");
        assert!(status.success(), "cp -a of the rootfs to {COPY} failed");
    });
    COPY
}

/// A throw-away system user for rootless tests, deleted (with its group)
/// when dropped.
#[derive(Debug)]
pub struct ThrowawayUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
}

impl ThrowawayUser {
    /// Create user `name` (and a group of the same name); a leftover from
    /// an interrupted run is deleted first.
    pub fn create(name: &str) -> ThrowawayUser {
        let _ = Command::new("userdel").arg(name).output();
        let status = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", name])
            .status()
            .expect("cannot run useradd");
        assert!(status.success(), "useradd {name} failed");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, name])
                .output()
                .expect("cannot run id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("id printed no number")
        };
        ThrowawayUser {
            name: name.to_owned(),
            uid: id("-u"),
            gid: id("-g"),
        }
    }

    /// `setpriv` arguments that run what follows as this user.
    pub fn setpriv(&self) -> Vec<String> {
        vec![
            format!("--reuid={}", self.name),
            format!("--regid={}", self.name),
            "--clear-groups".to_owned(),
        ]
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A command as the reader types it, and what they see.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// The command line, shell-quoted where needed.
    pub command_line: String,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The exit code (`128 + N` for a death by signal `N`, as a shell says).
    pub code: i32,
}

impl Transcript {
    /// The transcript as the book shows it: `$ command`, its output, its
    /// standard error, and the exit code a shell would report.
    pub fn render(&self) -> String {
        let mut text = format!("$ {}\n{}", self.command_line, self.stdout);
        for line in self.stderr.lines() {
            text.push_str(&format!("(stderr) {line}\n"));
        }
        text.push_str(&format!("[exit code {}]\n", self.code));
        text
    }
}

/// Quote `arg` for a POSIX shell if it needs it.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The environment every container test runs with: a fixed `PATH` and the
/// host namespace inodes for `probe ns`. Nothing else leaks in from the
/// developer's shell, so transcripts are the same everywhere.
pub fn test_command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(workspace_root())
        .env_clear()
        .env("PATH", "/bin:/usr/bin:/sbin:/usr/sbin")
        .env("PROBE_HOST_NS", host::namespace_inodes())
        .stdin(Stdio::null());
    command
}

/// Run `program args...` (see [`test_command`]) to completion.
pub fn run(program: &str, args: &[&str]) -> Transcript {
    let output = test_command(program, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let code = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => unreachable!("a process ends by exit or by signal"),
    };
    let command_line = std::iter::once(program)
        .chain(args.iter().copied())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ");
    Transcript {
        command_line,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code,
    }
}

/// Run `program args...` (see [`test_command`]) to its end, after `edit`,
/// with stdout and stderr going to files in `out_dir` rather than pipes: a
/// runtime's container inherits them, and a pipe would stay open as long
/// as the container runs.
pub fn run_to_files(
    program: &str,
    args: &[&str],
    out_dir: &Path,
    edit: impl FnOnce(&mut Command),
) -> Transcript {
    std::fs::create_dir_all(out_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_dir.display()));
    let (stdout, stderr) = (out_dir.join("stdout"), out_dir.join("stderr"));
    let file = |path: &Path| {
        std::fs::File::create(path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
    };
    let mut command = test_command(program, args);
    command
        .stdout(Stdio::from(file(&stdout)))
        .stderr(Stdio::from(file(&stderr)));
    edit(&mut command);
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => unreachable!("a process ends by exit or by signal"),
    };
    Transcript {
        command_line: std::iter::once(program)
            .chain(args.iter().copied())
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" "),
        stdout: std::fs::read_to_string(&stdout).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr).unwrap_or_default(),
        code,
    }
}

/// Snapshot settings shared by every stage: snapshots in `tests/snapshots`
/// without the expression in their header, so that the content starts on
/// line 4 — the book includes them as `{{#include FILE:4:}}`.
pub fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(workspace_root().join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    // RLIMIT_NPROC is inherited from whoever runs the suite wherever no
    // config sets it (runc's default spec does not), so its value is this
    // machine's. The differential tests still compare the real values
    // between runc and berth; the snapshot only says where it comes from.
    settings.add_filter(
        r"(?m)^Max processes: soft \S+ hard \S+$",
        "Max processes: soft [HOST LIMIT] hard [HOST LIMIT]",
    );
    // Masked and read-only paths of /proc that exist only when the kernel
    // was built with them (CONFIG_PROC_KCORE, CONFIG_MAGIC_SYSRQ, ...): a
    // mount there depends on the kernel, not on the container.
    settings.add_filter(
        r"(?m)^  /proc/(acpi|asound|kcore|latency_stats|sched_debug|scsi|sysrq-trigger|timer_stats) .*\n",
        "",
    );
    settings
}

/// A filter for `probe mounts` lines whose mount is a bind mount of a
/// directory of this checkout (the rootfs at `/`, and whatever else a test
/// binds at `mountpoints`): their filesystem type is the host's (`ext4`,
/// `xfs`, `tmpfs` for a checkout on tmpfs...), shown as `[HOST FS]`.
pub fn host_fs_filter(settings: &mut insta::Settings, mountpoints: &[&str]) {
    let alternatives: Vec<String> =
        mountpoints.iter().map(|m| regex::escape(m)).collect();
    settings.add_filter(
        &format!(r"(?m)^  ({}) \S+ ", alternatives.join("|")),
        "  $1 [HOST FS] ",
    );
}

/// The cgroup layout this machine runs, for snapshots whose content
/// honestly differs between them (the files a container's cgroup shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v1 controllers (pure v1, or hybrid with an empty v2 tree).
    V1,
    /// Only cgroup2 at `/sys/fs/cgroup`: what most machines run now.
    V2,
}

impl CgroupLayout {
    /// Which one `/sys/fs/cgroup` is.
    pub fn of_this_machine() -> CgroupLayout {
        let stat = statfs_type("/sys/fs/cgroup");
        const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
        if stat == Some(CGROUP2_SUPER_MAGIC) {
            CgroupLayout::V2
        } else {
            CgroupLayout::V1
        }
    }

    /// The snapshot suffix of this layout: `step06_limits@v2.snap`.
    pub fn suffix(self) -> &'static str {
        match self {
            CgroupLayout::V1 => "v1",
            CgroupLayout::V2 => "v2",
        }
    }
}

/// `statfs(2)`'s `f_type` of `path`, if it can be read.
fn statfs_type(path: &str) -> Option<i64> {
    let path = std::ffi::CString::new(path).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a valid C string and a buffer of the right type.
    let done = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    // SAFETY: statfs filled it in when it returned 0.
    (done == 0).then(|| unsafe { stat.assume_init() }.f_type)
}

/// [`snapshot_settings`] for a snapshot whose content depends on the
/// cgroup layout: one file per layout (`NAME@v1.snap`, `NAME@v2.snap`),
/// each checked by the lane that runs that layout (this machine's, or the
/// qemu guest's).
pub fn layout_snapshot_settings() -> insta::Settings {
    let mut settings = snapshot_settings();
    settings.set_snapshot_suffix(CgroupLayout::of_this_machine().suffix());
    settings
}

/// `line` run by script(1), which gives it a terminal (what `-it`
/// needs), with nothing on its input: its exit code and what the
/// terminal showed (CR LF line ends, as a pty writes them).
pub fn in_a_terminal(line: &str) -> (Option<i32>, String) {
    let out = Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .env_remove("DOCKER_API_VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("script(1) is needed (scripts/setup installs bsdutils)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
