//! Step 3: a mount namespace and a root filesystem of its own. The mount
//! plan is snapshotted without privileges; the container's view of its
//! mounts and processes with them; nothing stays mounted on the host.

use berth_tests::fixture::rootfs_arg;
use berth_tests::{
    host, host_fs_filter, privileged, run, snapshot_settings, step_binary,
};
use step08_oci::mount;

#[test]
fn mount_plan() {
    let plan: String =
        mount::plan().iter().map(|op| format!("{op}\n")).collect();
    snapshot_settings().bind(|| insta::assert_snapshot!("step03_plan", plan));
}

#[test]
fn the_container_sees_its_own_root_proc_and_dev() {
    if !privileged("step03_mount::the_container_sees_its_own_root_proc_and_dev")
    {
        return;
    }
    let (step, rootfs) = (step_binary("step03-mount"), rootfs_arg());
    let before = host::State::now();
    let shown = run(
        &step,
        &[
            "--rootfs",
            &rootfs,
            "--hostname",
            "box",
            "--",
            "probe",
            "hostname",
            "pid",
            "pids",
            "ns",
            "mounts",
        ],
    );
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    // A /proc of its own: the probe's pid agrees with /proc/self, and only
    // the init and the probe are listed.
    assert!(
        shown
            .stdout
            .contains("pid: 2\nppid: 1\n/proc/self: 2\npids: 1 2\n")
    );
    assert!(shown.stdout.contains(" mnt=new"), "{}", shown.render());
    assert!(
        shown.stdout.contains("  /sys sysfs ro,"),
        "{}",
        shown.render()
    );
    let mut settings = snapshot_settings();
    // The rootfs is a bind mount of a host directory: its type is the host's.
    host_fs_filter(&mut settings, &["/"]);
    settings
        .bind(|| insta::assert_snapshot!("step03_container", shown.render()));
}

#[test]
fn chroot_is_escapable_and_pivot_root_is_not() {
    if !privileged("step03_mount::chroot_is_escapable_and_pivot_root_is_not") {
        return;
    }
    let (step, rootfs) = (step_binary("step03-mount"), rootfs_arg());
    let before = host::State::now();
    let chroot = run("chroot", &[&rootfs, "probe", "chroot-escape"]);
    let pivot = run(
        &step,
        &["--rootfs", &rootfs, "--", "probe", "chroot-escape"],
    );
    before.assert_unchanged();
    assert!(chroot.stdout.contains("ESCAPED"), "{}", chroot.render());
    assert!(pivot.stdout.contains("stayed inside"), "{}", pivot.render());
    let text = format!("{}\n{}", chroot.render(), pivot.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step03_chroot_escape", text));
}

#[test]
fn init_reaps_orphans() {
    if !privileged("step03_mount::init_reaps_orphans") {
        return;
    }
    let (step, rootfs) = (step_binary("step03-mount"), rootfs_arg());
    // The inner shell exits at once, orphaning `sleep 0.1`; its parent is
    // now PID 1. After it ends, only a PID 1 that reaps keeps it out of
    // /proc (a zombie keeps its pid listed). busybox sh execs its last
    // command, so the probe is PID 2.
    let script = "sh -c 'sleep 0.1 &'; sleep 1; probe pids";
    let shown = run(&step, &["--rootfs", &rootfs, "--", "sh", "-c", script]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    let pids = shown.stdout.trim_end().trim_start_matches("pids: ");
    assert_eq!(pids, "1 2", "only init and probe: {}", shown.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step03_reaping", shown.render()));
}

#[test]
fn bad_input_is_refused_and_leaves_nothing_behind() {
    if !privileged(
        "step03_mount::bad_input_is_refused_and_leaves_nothing_behind",
    ) {
        return;
    }
    let (step, rootfs) = (step_binary("step03-mount"), rootfs_arg());
    let before = host::State::now();
    let runs = [
        run(&step, &["--rootfs", "/no/such/dir", "--", "sh"]),
        run(&step, &["--rootfs", "/etc/passwd", "--", "sh"]),
        run(&step, &["--rootfs", &rootfs, "--", "no-such-command"]),
        run(&step, &["--rootfs", &rootfs, "--", "sh", "-c", "exit 7"]),
    ];
    before.assert_unchanged();
    let codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    assert_eq!(codes, [125, 125, 127, 7]);
    let text: String = runs.iter().map(|r| r.render() + "\n").collect();
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step03_bad_input", text));
}

/// The escape a root filesystem cannot stop by itself: a file descriptor
/// the caller left open on a host directory (fd 7 on `/` here) reaches the
/// host through `/proc/self/fd/7`. The child closes every inherited fd
/// first thing, the init included (`/proc/1/fd`).
#[test]
fn an_inherited_fd_is_no_way_out() {
    if !privileged("step03_mount::an_inherited_fd_is_no_way_out") {
        return;
    }
    let (step, rootfs) = (step_binary("step03-mount"), rootfs_arg());
    let inside = "cat /proc/self/fd/7/etc/hostname; ls /proc/1/fd";
    let line = format!("exec {step} --rootfs {rootfs} -- sh -c '{inside}' 7</");
    let shown = run("sh", &["-c", &line]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, "0\n1\n2\n", "{}", shown.render());
    assert!(
        shown.stderr.contains("No such file or directory"),
        "{}",
        shown.render()
    );
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("step03_inherited_fd", shown.render())
    });
}
