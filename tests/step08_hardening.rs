//! Step 8 against a hostile config, a hostile rootfs and `kill -9`: each
//! test is an attack (or an accident) and what it gets. Where runc decides
//! the same way, the test is differential: both must print the same.

mod oci;

use std::fs;
use std::process::{Command, Stdio};

use berth_tests::{
    host, privileged, run, snapshot_settings, step_binary, test_command,
};
use oci::{assert_cgroup_removed, bundle, differential};
use serde_json::{Value, json};

/// `runc spec`'s process capabilities, but for the ambient set that the
/// kernel cannot grant (it prints a warning per capability otherwise).
fn quiet_ambient(c: &mut Value) {
    c["process"]["capabilities"]["ambient"] = json!([]);
}

#[test]
fn absent_capability_sets_are_empty_sets() {
    if !privileged("step08_hardening::absent_capability_sets_are_empty_sets") {
        return;
    }
    // No `capabilities` at all, then one without `bounding`: a root
    // process would regain every capability in the bounding set at its
    // next execve, if an absent set meant "all".
    let none = bundle("no-caps", |c| {
        c["process"]["args"] = json!(["sh", "-c", "probe caps"]);
        c["process"]["capabilities"] = Value::Null;
    });
    let no_bounding = bundle("no-bounding", |c| {
        c["process"]["args"] = json!(["sh", "-c", "probe caps"]);
        let caps = c["process"]["capabilities"].as_object_mut().unwrap();
        caps.remove("bounding");
        caps.insert("ambient".to_owned(), json!([]));
    });
    let shown = [
        differential("no-caps", &none),
        differential("no-bounding", &no_bounding),
    ];
    for transcript in &shown {
        assert!(
            transcript.stdout.contains("CapBnd: 0000000000000000\n"),
            "{}",
            transcript.render()
        );
    }
    let text: String = shown.iter().map(|t| t.render() + "\n").collect();
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step08_absent_caps", text));
}

#[test]
fn start_container_hooks_run_as_restricted_as_the_process() {
    if !privileged(
        "step08_hardening::start_container_hooks_run_as_restricted_as_the_process",
    ) {
        return;
    }
    let step = step_binary("step08-oci");
    // The hook tries to read the runtime's binary through /proc/1/exe: PID 1
    // is still the runtime when startContainer hooks run.
    let hook = "probe ids caps limits signals fds > /tmp/hook; \
                if (cat /proc/1/exe > /dev/null) 2>> /tmp/hook; \
                then echo 'read /proc/1/exe' >> /tmp/hook; fi";
    let dir = bundle("start-hook", |c| {
        quiet_ambient(c);
        c["root"]["readonly"] = json!(false);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["noNewPrivileges"] = json!(true);
        c["process"]["args"] =
            json!(["probe", "ids", "caps", "limits", "signals", "fds"]);
        c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]});
        c["hooks"] = json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
    });
    let shown = run(&step, &["run", "--bundle", &dir, "start-hook"]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    let hook_saw =
        fs::read_to_string(format!("{dir}/rootfs/tmp/hook")).unwrap();
    // Same user, capabilities, no_new_privs, seccomp as the process.
    let (process_saw, hook_extra) = hook_saw.split_at(shown.stdout.len());
    assert_eq!(
        process_saw, shown.stdout,
        "the hook ran with other privileges"
    );
    assert!(
        hook_extra.contains("Permission denied")
            && !hook_extra.contains("read /proc/1/exe"),
        "{hook_extra}"
    );
    let text = format!(
        "{}\nthe startContainer hook saw:\n{hook_saw}",
        shown.render()
    );
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step08_start_hook", text));
}

#[test]
fn the_runtime_binary_cannot_be_reached_through_proc_exe() {
    if !privileged(
        "step08_hardening::the_runtime_binary_cannot_be_reached_through_proc_exe",
    ) {
        return;
    }
    let step = step_binary("step08-oci");
    let before = fs::read(&step).unwrap();
    // A container given CAP_SYS_PTRACE may open /proc/1/exe of the
    // undumpable runtime: what it finds there is the sealed copy.
    let hook = "readlink /proc/1/exe > /tmp/hook; \
                (echo overwritten >> /proc/1/exe) 2>> /tmp/hook; \
                (echo overwritten > /proc/1/exe) 2>> /tmp/hook; echo \"exit $?\" >> /tmp/hook";
    let dir = bundle("exe", |c| {
        quiet_ambient(c);
        c["root"]["readonly"] = json!(false);
        c["process"]["args"] = json!(["true"]);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SYS_PTRACE"));
        }
        c["hooks"] = json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
    });
    let shown = run(&step, &["run", "--bundle", &dir, "exe"]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    let hook_saw =
        fs::read_to_string(format!("{dir}/rootfs/tmp/hook")).unwrap();
    assert!(
        hook_saw.starts_with("/memfd:step08-oci (deleted)\n"),
        "{hook_saw}"
    );
    assert!(hook_saw.ends_with("exit 1\n"), "{hook_saw}");
    assert_eq!(fs::read(&step).unwrap(), before, "the binary changed");
    let text = format!(
        "{}\nthe startContainer hook saw:\n{hook_saw}",
        shown.render()
    );
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step08_sealed_exe", text));
}

#[test]
fn without_device_rules_devices_are_denied_and_rootfs_files_kept() {
    if !privileged(
        "step08_hardening::without_device_rules_devices_are_denied_and_rootfs_files_kept",
    ) {
        return;
    }
    let dir = bundle("no-device-rules", |c| {
        quiet_ambient(c);
        c["root"]["readonly"] = json!(false);
        c["linux"]["resources"]
            .as_object_mut()
            .unwrap()
            .remove("devices");
        // A device whose path is a file of the rootfs, on disk.
        c["linux"]["devices"] =
            json!([{"path": "/keepme", "type": "c", "major": 1, "minor": 3}]);
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "if (exec 3>/kmsg) 2>/dev/null; then echo 'opened /kmsg'; else echo 'denied /kmsg'; fi; \
             cat /keepme"
        ]);
    });
    // Planted in the image: the kernel log, which root may open for
    // writing without any capability.
    let status = Command::new("mknod")
        .args([&format!("{dir}/rootfs/kmsg"), "c", "1", "11"])
        .status()
        .unwrap();
    assert!(status.success());
    fs::write(format!("{dir}/rootfs/keepme"), "rootfs file\n").unwrap();
    let shown = differential("no-device-rules", &dir);
    assert_eq!(shown.stdout, "denied /kmsg\nrootfs file\n");
    assert_eq!(
        fs::read_to_string(format!("{dir}/rootfs/keepme")).unwrap(),
        "rootfs file\n",
        "the rootfs file was replaced"
    );
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("step08_no_device_rules", shown.render())
    });
}

#[test]
fn a_long_seccomp_rule_does_not_skip_the_rules_after_it() {
    if !privileged(
        "step08_hardening::a_long_seccomp_rule_does_not_skip_the_rules_after_it",
    ) {
        return;
    }
    // 70 conditions that never all hold: the rule never matches, and its
    // first check must jump ~280 instructions, past an 8-bit offset.
    let conditions: Vec<Value> = (0..70)
        .map(|i| json!({"index": 1, "value": 1000 + i, "op": "SCMP_CMP_EQ"}))
        .collect();
    let dir = bundle("seccomp-long", |c| {
        quiet_ambient(c);
        c["root"]["readonly"] = json!(false);
        c["process"]["noNewPrivileges"] = json!(true);
        c["process"]["args"] =
            json!(["sh", "-c", "mkdir /tmp/denied; echo \"mkdir: $?\""]);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": conditions},
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        });
    });
    let shown = differential("seccomp-long", &dir);
    assert!(shown.stdout.ends_with("mkdir: 1\n"), "{}", shown.render());
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("step08_seccomp_long", shown.render())
    });
}

#[test]
fn a_seccomp_kill_is_named() {
    if !privileged("step08_hardening::a_seccomp_kill_is_named") {
        return;
    }
    let dir = bundle("seccomp-kill", |c| {
        quiet_ambient(c);
        c["root"]["readonly"] = json!(false);
        c["process"]["args"] = json!(["mkdir", "/tmp/killed"]);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]
        });
    });
    let shown = run(
        &step_binary("step08-oci"),
        &["run", "--bundle", &dir, "seccomp-kill"],
    );
    assert_eq!(shown.code, 128 + libc::SIGSYS, "{}", shown.render());
    assert!(
        shown.stderr.contains("SCMP_ACT_KILL_PROCESS"),
        "{}",
        shown.render()
    );
    assert_cgroup_removed("seccomp-kill");
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("step08_seccomp_kill", shown.render())
    });
}

#[test]
fn only_stdio_crosses_into_the_container() {
    if !privileged("step08_hardening::only_stdio_crosses_into_the_container") {
        return;
    }
    let step = step_binary("step08-oci");
    let dir = bundle("fds", |c| {
        quiet_ambient(c);
        c["process"]["args"] =
            json!(["sh", "-c", "probe fds signals; ls /proc/self/fd/7/etc"]);
    });
    // The caller leaves fd 7 open on the host's /, and ignores SIGPIPE.
    let line =
        format!("trap \"\" PIPE; exec {step} run --bundle {dir} fds 7</");
    let shown = run("sh", &["-c", &line]);
    assert_eq!(shown.code, 1, "{}", shown.render());
    assert!(
        shown.stdout.starts_with(
            "fds: 0 1 2\nSigBlk: 0000000000000000\nSigIgn: 0000000000000000\n"
        ),
        "{}",
        shown.render()
    );
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step08_fds", shown.render()));
}

/// Run step08-oci on `dir` in the background until the container runs
/// `sleep SECONDS`, `kill -9` it, and say whether the container died too.
fn container_dies_with_the_runtime(dir: &str, id: &str, seconds: &str) -> bool {
    let step = step_binary("step08-oci");
    let mut runtime = test_command(&step, &["run", "--bundle", dir, id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleeping = || !host::processes(&["sleep", seconds]).is_empty();
    assert!(host::wait_for(60, sleeping), "the container never ran");
    runtime.kill().unwrap();
    runtime.wait().unwrap();
    let died = host::wait_for(60, || !sleeping());
    for pid in host::processes(&["sleep", seconds]) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    died
}

#[test]
fn kill_9_of_the_runtime_leaves_nothing_that_blocks_the_next_run() {
    if !privileged(
        "step08_hardening::kill_9_of_the_runtime_leaves_nothing_that_blocks_the_next_run",
    ) {
        return;
    }
    // Another user, then root in a user namespace: both switch ids, which
    // clears the parent-death signal the container dies by.
    let user = bundle("kill-user", |c| {
        quiet_ambient(c);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["args"] = json!(["sleep", "31338"]);
    });
    let userns = bundle("kill-userns", |c| {
        quiet_ambient(c);
        c["process"]["args"] = json!(["sleep", "31339"]);
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] =
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] =
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let step = step_binary("step08-oci");
    let mut text = String::new();
    for (dir, id, seconds) in [
        (&user, "kill-user", "31338"),
        (&userns, "kill-userns", "31339"),
    ] {
        assert!(
            container_dies_with_the_runtime(dir, id, seconds),
            "{id}: the container outlived kill -9 of its runtime"
        );
        // The same id again: the cgroup the killed run left is no obstacle.
        let mut config: Value = serde_json::from_str(
            &fs::read_to_string(format!("{dir}/config.json")).unwrap(),
        )
        .unwrap();
        config["process"]["args"] = json!(["echo", "the same id runs again"]);
        fs::write(format!("{dir}/config.json"), config.to_string()).unwrap();
        let again = run(&step, &["run", "--bundle", dir, id]);
        assert_eq!(again.code, 0, "{}", again.render());
        assert_cgroup_removed(id);
        text.push_str(&again.render());
        text.push('\n');
    }
    snapshot_settings().bind(|| insta::assert_snapshot!("step08_kill_9", text));
}

/// Start step08-oci on `dir`, wait for `marker` (written by a hook that
/// then hangs), send SIGTERM, and return what it said.
fn interrupt_during_set_up(
    dir: &str,
    id: &str,
    marker: &str,
) -> berth_tests::Transcript {
    let step = step_binary("step08-oci");
    let runtime = test_command(&step, &["run", "--bundle", dir, id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        host::wait_for(60, || fs::metadata(marker).is_ok()),
        "the hook never ran"
    );
    let pid = runtime.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let started = std::time::Instant::now();
    let output = runtime.wait_with_output().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "SIGTERM took {:?} to end the set-up",
        started.elapsed()
    );
    berth_tests::Transcript {
        command_line: format!(
            "{step} run --bundle {dir} {id} & sleep 1; kill -TERM $!"
        ),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code().unwrap_or(-1),
    }
}

#[test]
fn a_signal_during_set_up_undoes_it() {
    if !privileged("step08_hardening::a_signal_during_set_up_undoes_it") {
        return;
    }
    let out = fs::canonicalize("target")
        .unwrap()
        .join("test-step08/interrupt-out");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    let mark = |name: &str| out.join(name).display().to_string();
    let poststart = json!([{"path": "/bin/sh", "args": ["sh", "-c", format!("touch {}", mark("poststart"))]}]);
    // A prestart hook (in the runtime) that hangs, then a startContainer
    // hook (in the container) that hangs.
    let prestart_hang = format!("touch {}; exec sleep 31340", mark("prestart"));
    let in_parent = bundle("interrupt-prestart", |c| {
        quiet_ambient(c);
        c["hooks"] = json!({
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", prestart_hang]}],
            "poststart": poststart.clone(),
        });
    });
    let in_child = bundle("interrupt-start", |c| {
        quiet_ambient(c);
        c["root"]["readonly"] = json!(false);
        c["hooks"] = json!({
            "startContainer": [{"path": "/bin/sh",
                                "args": ["sh", "-c", "touch /tmp/started; exec sleep 31341"]}],
            "poststart": poststart.clone(),
        });
    });
    let shown = [
        interrupt_during_set_up(
            &in_parent,
            "interrupt-prestart",
            &mark("prestart"),
        ),
        interrupt_during_set_up(
            &in_child,
            "interrupt-start",
            &format!("{in_child}/rootfs/tmp/started"),
        ),
    ];
    let mut text = String::new();
    for (transcript, id) in
        shown.iter().zip(["interrupt-prestart", "interrupt-start"])
    {
        assert_eq!(transcript.code, 143, "{}", transcript.render());
        assert_eq!(
            transcript.stderr.lines().count(),
            1,
            "{}",
            transcript.render()
        );
        assert_cgroup_removed(id);
        text.push_str(&transcript.render());
        text.push('\n');
    }
    assert!(
        !out.join("poststart").exists(),
        "a poststart hook ran after an interrupted set-up"
    );
    for seconds in ["31340", "31341"] {
        assert!(
            host::wait_for(60, || host::processes(&["sleep", seconds])
                .is_empty()),
            "the hanging hook (sleep {seconds}) was left running"
        );
    }
    let mut settings = snapshot_settings();
    settings.add_filter(
        r#""/[^"]*/target/test-step08/"#,
        "\"[WORKSPACE]/target/test-step08/",
    );
    settings.bind(|| insta::assert_snapshot!("step08_interrupted", text));
}

#[test]
fn a_device_node_gets_its_exact_mode_whatever_the_umask() {
    if !privileged(
        "step08_hardening::a_device_node_gets_its_exact_mode_whatever_the_umask",
    ) {
        return;
    }
    let dir = bundle("device-mode", |c| {
        quiet_ambient(c);
        c["linux"]["devices"] = json!([
            {"path": "/dev/null2", "type": "c", "major": 1, "minor": 3,
             "fileMode": 0o666, "uid": 0, "gid": 0}
        ]);
        c["process"]["args"] = json!(["stat", "-c", "%a %n", "/dev/null2"]);
    });
    // mknod(2) applies the caller's umask: under 077 the node would come
    // out 0600, and only root in the container could use it.
    let step = step_binary("step08-oci");
    let script =
        format!("umask 077; exec {step} run --bundle {dir} device-mode");
    let shown = run("sh", &["-c", &script]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, "666 /dev/null2\n", "{}", shown.render());
    assert_cgroup_removed("device-mode");
}
