//! Step 6: cgroups. Limits visible inside (through the cgroup namespace),
//! enforced (OOM kill, pids limit, CPU throttling), the freezer and the
//! accounting on a running container, and no cgroup left behind on any
//! path. This machine's layout is hybrid, so these run the v1 driver; the
//! v2 driver runs for real in the qemu lane (`scripts/qemu-cgroup-v2`).

use std::time::Duration;

use berth_tests::fixture::rootfs_arg;
use berth_tests::{
    CgroupLayout, layout_snapshot_settings, privileged, run, snapshot_settings,
    step_binary, test_command,
};
use step08_oci::cgroup::{self, Cgroup, CgroupPath, Layout};

/// Sample `/proc/self/mountinfo` lines (only the cgroup ones matter).
const PURE_V2: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate";
const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
const PURE_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids";

#[test]
fn layouts_and_plans_for_both_versions() {
    let options = cgroup::Options {
        memory: Some("64m".parse().unwrap()),
        memory_swap: Some("96m".parse().unwrap()),
        cpus: Some(0.5),
        cpu_shares: Some(512),
        pids: Some(20),
        ..cgroup::Options::default()
    };
    let limits = cgroup::resources(&options).unwrap();
    let mut text = String::from(
        "--memory 64m --memory-swap 96m --cpus 0.5 --cpu-shares 512 --pids 20\n",
    );
    for (name, mountinfo) in [
        ("pure v2", PURE_V2),
        ("hybrid", HYBRID),
        ("pure v1", PURE_V1),
    ] {
        let layout = cgroup::detect_from(mountinfo).unwrap();
        text.push_str(&format!("\n{name}: {layout:?}\n"));
        for write in cgroup::plan(&limits, &layout) {
            text.push_str(&format!("  write {write}\n"));
        }
        for op in cgroup::mounts(&layout) {
            text.push_str(&format!("  {op}\n"));
        }
    }
    snapshot_settings().bind(|| insta::assert_snapshot!("step06_plans", text));
}

/// Where a container sees `controller`'s files of its own cgroup: its
/// controller's tree on v1, the one tree on v2.
fn controller_dir(controller: &str) -> String {
    match CgroupLayout::of_this_machine() {
        CgroupLayout::V1 => format!("/sys/fs/cgroup/{controller}"),
        CgroupLayout::V2 => "/sys/fs/cgroup".to_owned(),
    }
}

/// Assert that no directory of cgroup `path` is left.
fn assert_removed(path: &str) {
    let layout = cgroup::detect().unwrap();
    let cgroup = Cgroup::open(&layout, &path.parse().unwrap());
    for dir in cgroup.dirs() {
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}

#[test]
fn limits_are_visible_inside_through_the_cgroup_namespace() {
    if !privileged(
        "step06_cgroups::limits_are_visible_inside_through_the_cgroup_namespace",
    ) {
        return;
    }
    let (step, rootfs) = (step_binary("step06-cgroups"), rootfs_arg());
    let shown = run(
        &step,
        &[
            "--rootfs",
            &rootfs,
            "--cgroup",
            "berth-test/limits",
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--pids",
            "20",
            "--",
            "probe",
            "ns",
            "cgroup",
        ],
    );
    assert_removed("berth-test/limits");
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert!(shown.stdout.contains(" cgroup=new"), "{}", shown.render());
    layout_snapshot_settings()
        .bind(|| insta::assert_snapshot!("step06_limits", shown.render()));
}

#[test]
fn over_the_memory_limit_the_oom_killer_strikes_and_the_step_says_so() {
    if !privileged(
        "step06_cgroups::over_the_memory_limit_the_oom_killer_strikes",
    ) {
        return;
    }
    let (step, rootfs) = (step_binary("step06-cgroups"), rootfs_arg());
    let shown = run(
        &step,
        &[
            "--rootfs",
            &rootfs,
            "--cgroup",
            "berth-test/oom",
            "--memory",
            "32m",
            "--memory-swap",
            "32m",
            "--",
            "probe",
            "alloc",
            "64",
        ],
    );
    assert_removed("berth-test/oom");
    assert_eq!(shown.code, 137, "{}", shown.render());
    assert!(shown.stderr.contains("OOM killer"), "{}", shown.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step06_oom", shown.render()));
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    if !privileged("step06_cgroups::a_fork_bomb_stops_at_the_pids_limit") {
        return;
    }
    let (step, rootfs) = (step_binary("step06-cgroups"), rootfs_arg());
    // Only shell builtins after the bomb (a fork may fail at any time),
    // polling until the kernel has refused a fork.
    let pids = controller_dir("pids");
    let script = format!(
        "bomb() {{ bomb | bomb & }}; (bomb) 2>/dev/null & i=0; \
         while read key n < {pids}/pids.events && [ \"$n\" = 0 ] \
         && [ $i -lt 100000 ]; do i=$((i + 1)); done; \
         echo \"pids.events $key $n\"; \
         read max < {pids}/pids.max; echo \"pids.max $max\""
    );
    let shown = run(
        &step,
        &[
            "--rootfs",
            &rootfs,
            "--cgroup",
            "berth-test/bomb",
            "--pids",
            "10",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_removed("berth-test/bomb");
    assert_eq!(shown.code, 0, "{}", shown.render());
    let refused: u64 = shown
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("pids.events max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "no fork was refused: {}", shown.render());
    let mut settings = layout_snapshot_settings();
    settings
        .add_filter(r"pids.events max \d+", "pids.events max [FORKS REFUSED]");
    settings
        .bind(|| insta::assert_snapshot!("step06_fork_bomb", shown.render()));
}

#[test]
fn a_cpu_quota_throttles() {
    if !privileged("step06_cgroups::a_cpu_quota_throttles") {
        return;
    }
    let (step, rootfs) = (step_binary("step06-cgroups"), rootfs_arg());
    let script = format!(
        "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; \
         grep -E '^nr_(periods|throttled) ' {}/cpu.stat",
        controller_dir("cpu")
    );
    let shown = run(
        &step,
        &[
            "--rootfs",
            &rootfs,
            "--cgroup",
            "berth-test/cpu",
            "--cpus",
            "0.2",
            "--stats",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_removed("berth-test/cpu");
    assert_eq!(shown.code, 0, "{}", shown.render());
    let throttled: u64 = shown
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(throttled > 0, "never throttled: {}", shown.render());
    let mut settings = layout_snapshot_settings();
    settings.add_filter(r"nr_(periods|throttled) \d+", "nr_$1 [N]");
    settings.add_filter(
        r"used cpu \d+ us, memory peak \d+ bytes, throttled \d+",
        "used cpu [N] us, memory peak [N] bytes, throttled [N]",
    );
    settings.bind(|| insta::assert_snapshot!("step06_cpu", shown.render()));
}

#[test]
fn freezer_and_accounting_on_a_running_container() {
    if !privileged(
        "step06_cgroups::freezer_and_accounting_on_a_running_container",
    ) {
        return;
    }
    let (step, rootfs) = (step_binary("step06-cgroups"), rootfs_arg());
    let path: CgroupPath = "berth-test/freezer".parse().unwrap();
    let script =
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 60";
    let mut child = test_command(
        &step,
        &[
            "--rootfs",
            &rootfs,
            "--cgroup",
            "berth-test/freezer",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .spawn()
    .expect("cannot start step06-cgroups");
    let layout = cgroup::detect().unwrap();
    let cgroup = Cgroup::open(&layout, &path);
    // The init and `sleep` (after the loop, `sh` became `sleep`).
    let mut settled = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let comm = |pid: &nix::unistd::Pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
        };
        let pids = cgroup.pids().unwrap_or_default();
        if pids.len() == 2 && pids.iter().any(|p| comm(p).trim() == "sleep") {
            settled = true;
            break;
        }
    }
    let outcome = std::panic::catch_unwind(|| {
        assert!(settled, "the container did not start");
        cgroup.freeze().unwrap();
        assert!(cgroup.is_frozen().unwrap());
        cgroup.thaw().unwrap();
        assert!(!cgroup.is_frozen().unwrap());
        let stats = cgroup.stats();
        assert!(stats.cpu_usec > 0, "{stats:?}");
        assert!(stats.memory_peak > 0, "{stats:?}");
        assert_eq!(stats.pids, 2, "{stats:?}");
        assert_eq!(stats.oom_kills, 0, "{stats:?}");
    });
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("cannot wait for step06-cgroups");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(status.code(), Some(143));
    assert_removed("berth-test/freezer");
    assert!(matches!(
        layout,
        Layout::Legacy { .. } | Layout::Unified { .. }
    ));
}

#[test]
fn bad_input_and_failed_starts_leave_no_cgroup() {
    if !privileged(
        "step06_cgroups::bad_input_and_failed_starts_leave_no_cgroup",
    ) {
        return;
    }
    let (step, rootfs) = (step_binary("step06-cgroups"), rootfs_arg());
    let runs = [
        run(
            &step,
            &[
                "--rootfs",
                &rootfs,
                "--cgroup",
                "berth-test/fail",
                "--memory",
                "64m",
                "--",
                "no-such-command",
            ],
        ),
        run(
            &step,
            &[
                "--rootfs",
                &rootfs,
                "--cpus",
                "1",
                "--cpu-quota",
                "50000",
                "--",
                "true",
            ],
        ),
        run(
            &step,
            &[
                "--rootfs",
                &rootfs,
                "--memory",
                "64m",
                "--memory-swap",
                "32m",
                "--",
                "true",
            ],
        ),
        run(
            &step,
            &["--rootfs", &rootfs, "--cgroup", "../escape", "--", "true"],
        ),
        run(
            &step,
            &["--rootfs", &rootfs, "--memory", "lots", "--", "true"],
        ),
    ];
    assert_removed("berth-test/fail");
    let codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    assert_eq!(codes, [127, 125, 125, 2, 2]);
    let text: String = runs.iter().map(|r| r.render() + "\n").collect();
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step06_bad_input", text));
}

#[test]
fn cgroups_are_0755_whatever_the_umask() {
    if !privileged("step06_cgroups::cgroups_are_0755_whatever_the_umask") {
        return;
    }
    let (step, rootfs) = (step_binary("step06-cgroups"), rootfs_arg());
    let layout = cgroup::detect().unwrap();
    let parent = Cgroup::open(&layout, &"berth-umask".parse().unwrap());
    for dir in parent.dirs() {
        let _ = std::fs::remove_dir(dir);
    }
    // Under umask 077 a plain mkdir(2) makes 0700 cgroups: a container
    // root of another uid could not look into (or mount) its own cgroup.
    let script = format!(
        "umask 077; exec {step} --rootfs {rootfs} --cgroup berth-umask/leaf \
         --pids 10 -- stat -c %a {}",
        controller_dir("pids")
    );
    let shown = run("sh", &["-c", &script]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, "755\n", "the container's own cgroup");
    assert_removed("berth-umask/leaf");
    for dir in parent.dirs() {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o755, "{}", dir.display());
        std::fs::remove_dir(dir).unwrap();
    }
}
