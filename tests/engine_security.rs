//! What the engine's containers may not do, and the init they may ask
//! for: the default seccomp profile (and the capability that opens what
//! it closes), a profile of the user's, `unconfined`; `--init`'s PID 1.

use std::time::{Duration, Instant};

mod oci;

use berth_tests::daemons::Berth;
use berth_tests::fixture::rootfs;
use berth_tests::privileged;

#[test]
fn the_default_seccomp_profile_closes_what_namespaces_leave_open() {
    if !privileged("engine_security::seccomp") {
        return;
    }
    let berth = Berth::start("seccomp", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    // A user namespace needs no capability: only the filter stops it.
    let unshare = "unshare -U true && echo unshared";
    let (code, out, err) =
        berth.run(&["run", "--rm", "berth-test", "sh", "-c", unshare]);
    assert_eq!(code, 1, "{out}{err}{}", berth.daemon_log());
    assert!(err.contains("Operation not permitted"), "{err}");
    // The same under runc: the profile is the engine's, not the runtime's.
    let (code, _, err) = berth.run(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "berth-test",
        "sh",
        "-c",
        unshare,
    ]);
    assert_eq!(code, 1, "runc: {err}");
    // Opened by its capability, or with no profile at all. (Not tried:
    // --privileged, which no runtime can grant on a machine whose bounding
    // set lacks a capability, as this one does; it loads no profile, a
    // unit test of daemon::seccomp says.)
    for flags in [
        &["--cap-add", "SYS_ADMIN"][..],
        &["--security-opt", "seccomp=unconfined"][..],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend(["berth-test", "sh", "-c", unshare]);
        let (code, out, err) = berth.run(&args);
        assert_eq!((code, out.as_str()), (0, "unshared\n"), "{flags:?}: {err}");
    }
    // The keyring is closed even to CAP_SYS_ADMIN. busybox has no keyctl:
    // the profile as written into the bundle says so.
    let (code, id, err) =
        berth.run(&["create", "--cap-add", "SYS_ADMIN", "berth-test", "true"]);
    assert_eq!(code, 0, "{err}");
    let berth_id = id.trim().to_owned();
    let (code, _, err) = berth.run(&["start", &berth_id]);
    assert_eq!(code, 0, "{err}");
    let spec = berth.bundle_config(&berth_id);
    let allowed: Vec<&str> = spec["linux"]["seccomp"]["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|r| r["names"].as_array().unwrap())
        .filter_map(|n| n.as_str())
        .collect();
    assert!(allowed.contains(&"mount") && !allowed.contains(&"keyctl"));
    berth.run(&["rm", "-f", &berth_id]);
    // A profile of the user's, from a file, through both clients:
    // mkdir fails with EACCES, everything else runs.
    let profile = berth.data_root().with_extension("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let args = [
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "berth-test",
        "sh",
        "-c",
        "mkdir /x; echo after",
    ];
    for (tool, (code, out, err)) in
        [("docker", berth.run(&args)), ("berth", berth.cli(&args))]
    {
        assert_eq!((code, out.as_str()), (0, "after\n"), "{tool}: {err}");
        assert!(err.contains("Permission denied"), "{tool}: {err}");
    }
    // Not a profile: one line, before anything is made.
    std::fs::write(&profile, r#"{"syscalls":[]}"#).unwrap();
    let (code, _, err) = berth.run(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "berth-test",
        "true",
    ]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("invalid seccomp profile: no defaultAction"),
        "{err}"
    );
    let (code, _, err) = berth.cli(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=/no/such.json",
        "berth-test",
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(
        err.starts_with(
            "berth: opening seccomp profile (/no/such.json) failed"
        ),
        "{err}"
    );
    let _ = std::fs::remove_file(&profile);
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn init_is_pid_1_forwards_signals_and_reaps() {
    if !privileged("engine_security::init") {
        return;
    }
    let berth = Berth::start("init", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    // PID 1 is the init; the command is its child, and gets its exit code.
    let (code, out, err) = berth.run(&[
        "run",
        "--rm",
        "--init",
        "berth-test",
        "sh",
        "-c",
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4",
    ]);
    assert_eq!(code, 4, "{err}{}", berth.daemon_log());
    assert_eq!(
        out,
        "2\n/sbin/docker-init -- sh -c echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4 \n"
    );
    // The init's mount point is not a change of the container's (the
    // init layer holds it, and the /etc files'): diff shows only what
    // the container did.
    let (code, _, err) = berth.run(&[
        "run",
        "--name",
        "changed",
        "--init",
        "berth-test",
        "touch",
        "/mine",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, diff, _) = berth.run(&["diff", "changed"]);
    assert_eq!(diff, "A /mine\n");
    berth.run(&["rm", "changed"]);
    // An orphan is reaped: no zombie is left once it has ended.
    let (code, out, err) = berth.cli(&[
        "run",
        "--rm",
        "--init",
        "berth-test",
        "sh",
        "-c",
        "(sleep 0.2 &); sleep 1; ps -o stat | grep -c Z",
    ]);
    assert_eq!((code, out.as_str()), (1, "0\n"), "{err}");
    // `docker stop` of a program that never expected to be PID 1: with
    // the init, SIGTERM reaches it (143) at once; without, it is
    // ignored, and the stop ends in SIGKILL (137) after the timeout.
    for (init, want) in [(true, 143), (false, 137)] {
        let mut args = vec!["run", "-d", "--name", "sleeper"];
        if init {
            args.push("--init");
        }
        args.extend(["berth-test", "sleep", "1000"]);
        let (code, _, err) = berth.run(&args);
        assert_eq!(code, 0, "{err}");
        let start = Instant::now();
        let (code, _, err) = berth.run(&["stop", "-t", "3", "sleeper"]);
        assert_eq!(code, 0, "{err}");
        let took = start.elapsed();
        let (_, status, _) =
            berth.run(&["inspect", "-f", "{{.State.ExitCode}}", "sleeper"]);
        assert_eq!(status.trim(), want.to_string(), "init: {init}");
        if init {
            assert!(took < Duration::from_secs(3), "{took:?}");
        } else {
            assert!(took >= Duration::from_secs(3), "{took:?}");
        }
        berth.run(&["rm", "sleeper"]);
    }
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn an_init_that_cannot_run_in_a_container_is_refused_at_create() {
    if !privileged("engine_security::dynamic_init") {
        return;
    }
    // The dynamically linked berth-init cargo builds by default.
    let dynamic = berth_tests::workspace_root()
        .join(berth_tests::step_binary("berth-init"))
        .display()
        .to_string();
    let berth = Berth::start("bad-init", &["--init-path", &dynamic]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (code, _, err) =
        berth.run(&["run", "--rm", "--init", "berth-test", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("is dynamically linked"), "{err}");
    let (code, _, err) =
        berth.cli(&["run", "--rm", "--init", "berth-test", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("is dynamically linked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (_, out, _) = berth.run(&["ps", "-aq"]);
    assert_eq!(out, "");
    // Without --init, containers run as before.
    let (code, out, _) =
        berth.run(&["run", "--rm", "berth-test", "echo", "fine"]);
    assert_eq!((code, out.as_str()), (0, "fine\n"));
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn runc_and_berth_runtime_enforce_the_default_profile_alike() {
    if !privileged("engine_security::seccomp_differential") {
        return;
    }
    let berth = Berth::start("seccomp-diff", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (code, id, err) = berth.run(&["create", "berth-test", "true"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&["start", id.trim()]);
    assert_eq!(code, 0, "{err}");
    let config = berth.bundle_config(id.trim());
    berth.run(&["rm", "-f", id.trim()]);
    // Every probed call, under runc (libseccomp) and under berth-runtime
    // (step 8's compiler): the same answers, or the helper fails.
    let verdicts = oci::seccomp_differential("berth-default", &config);
    for line in [
        "socket(AF_INET): passed to the kernel",
        "socket(AF_VSOCK): EPERM",
        "socket(AF_VSOCK, high bits set): EPERM",
        "unshare(CLONE_NEWUSER): EPERM",
        "clone(CLONE_NEWUSER): EPERM",
        "clone(plain): passed to the kernel",
        "keyctl: EPERM",
        "personality(0): passed to the kernel",
        "personality(0x4): EPERM",
    ] {
        assert!(
            verdicts.lines().any(|l| l == line),
            "{line:?} not in:\n{verdicts}"
        );
    }
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}
