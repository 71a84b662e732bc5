//! Step 8: an OCI bundle drives everything. The main test is differential:
//! for each bundle — `runc spec`'s default config with the busybox rootfs,
//! and variants — the probe must print exactly the same under `runc run`
//! and under `step08-oci run`. Then: what a bad `config.json` gets, hooks,
//! and no leftovers.

mod oci;

use std::fs;
use std::process::Command;

use berth_tests::{
    host, host_fs_filter, layout_snapshot_settings, privileged, run,
    snapshot_settings, step_binary,
};
use oci::{assert_cgroup_removed, bundle, differential};
use serde_json::{Value, json};

/// One test per bundle, so that they run in parallel.
macro_rules! differential_test {
    // What the probe shows of the cgroup (its files, its mounts) differs
    // between v1 and v2, and so does runc's default spec (a cgroup
    // namespace on v2 only): one snapshot per layout.
    ($test:ident, $name:literal, $edit:expr) => {
        differential_test!($test, $name, $edit, layout_snapshot_settings());
    };
    // A probe that does not look at cgroups: one snapshot for all.
    ($test:ident, $name:literal, $edit:expr, any_layout) => {
        differential_test!($test, $name, $edit, snapshot_settings());
    };
    ($test:ident, $name:literal, $edit:expr, $settings:expr) => {
        #[test]
        fn $test() {
            if !privileged(concat!("step08_oci::", stringify!($test))) {
                return;
            }
            let dir = bundle($name, $edit);
            let shown = differential($name, &dir);
            let mut settings = $settings;
            // The rootfs, and the binds of its own directories.
            host_fs_filter(&mut settings, &["/", "/data", "/tmp"]);
            settings.bind(|| {
                insta::assert_snapshot!(
                    concat!("step08_diff_", $name),
                    shown.render()
                )
            });
        }
    };
}

differential_test!(runc_default_spec, "default", |_| {});

differential_test!(read_write_root_another_user_and_hostname, "user", |c| {
    c["root"]["readonly"] = json!(false);
    c["hostname"] = json!("box");
    c["process"]["user"] =
        json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]});
    c["process"]["cwd"] = json!("/tmp");
});

differential_test!(extra_mounts, "mounts", |c| {
    let mounts = c["mounts"].as_array_mut().unwrap();
    mounts.push(
        json!({"destination": "/data", "type": "bind", "source": "rootfs/etc",
                       "options": ["rbind", "ro", "nosuid", "nodev"]}),
    );
    mounts.push(
        json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "noexec", "size=1m", "mode=700"]}),
    );
});

differential_test!(user_namespace, "userns", |c| {
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    c["linux"]["uidMappings"] =
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c["linux"]["gidMappings"] =
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
});

differential_test!(limits, "limits", |c| {
    c["linux"]["resources"]["memory"] =
        json!({"limit": 67108864, "swap": 67108864});
    c["linux"]["resources"]["cpu"] =
        json!({"shares": 512, "quota": 50000, "period": 100000});
    c["linux"]["resources"]["pids"] = json!({"limit": 20});
    c["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    c["process"]["noNewPrivileges"] = json!(true);
});

differential_test!(masked_and_readonly_paths, "paths", |c| {
    c["root"]["readonly"] = json!(false);
    c["linux"]["maskedPaths"] =
        json!(["/etc/hostname", "/root", "/proc/timer_list"]);
    c["linux"]["readonlyPaths"] = json!(["/tmp", "/proc/sys"]);
});

/// A change to a bundle's config.json.
type Edit = Box<dyn FnOnce(&mut Value)>;

differential_test!(process_details_and_sysctls, "process", |c| {
    c["root"]["readonly"] = json!(false);
    c["process"]["args"] = json!([
        "sh",
        "-c",
        "probe ids caps; umask; pwd; echo $GREETING; cat /proc/self/oom_score_adj \
         /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni; probe mounts"
    ]);
    c["linux"]["rootfsPropagation"] = json!("private");
    let mounts = c["mounts"].as_array_mut().unwrap();
    mounts.push(
        json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                       "options": ["rprivate", "nodev"]}),
    );
    c["process"]["cwd"] = json!("/etc");
    c["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("GREETING=hello"));
    c["process"]["user"]["umask"] = json!(0o027);
    c["process"]["oomScoreAdj"] = json!(500);
    c["process"]["capabilities"]["effective"] = json!(["CAP_KILL"]);
    c["process"]["capabilities"]["inheritable"] = json!(["CAP_KILL"]);
    c["process"]["capabilities"]["ambient"] = json!(["CAP_KILL"]);
    c["linux"]["sysctl"] =
        json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "1024"});
});

differential_test!(
    seccomp_deny_list,
    "seccomp-deny",
    |c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "probe limits; mkdir /tmp/denied; echo \"mkdir: $?\"; \
        unshare -n true; echo \"unshare: $?\"; ls /tmp; echo \"ls: $?\""
        ]);
        c["process"]["noNewPrivileges"] = json!(true);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["unshare"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 0x40000000, "valueTwo": 0x40000000, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        });
    },
    any_layout
);

differential_test!(
    seccomp_allow_list_without_no_new_privs,
    "seccomp-allow",
    |c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "probe limits; mkdir /tmp/denied; echo \"mkdir: $?\""
        ]);
        c["process"]["noNewPrivileges"] = json!(false);
        // Every x86_64 syscall but mkdir and mkdirat: a long program.
        let allowed: Vec<String> = syscalls::Sysno::iter()
            .map(|s| s.name().to_owned())
            .filter(|n| n != "mkdir" && n != "mkdirat")
            .collect();
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
        });
    },
    any_layout
);

/// The bundle the qemu lane runs on cgroup v2 (an eBPF program there), run
/// here on v1 (`devices.allow`/`devices.deny`): the same verdicts.
#[test]
fn device_rules_deny_what_they_do_not_allow() {
    if !privileged("step08_oci::device_rules_deny_what_they_do_not_allow") {
        return;
    }
    let dir = bundle("devices", |c| {
        let text =
            fs::read_to_string("scripts/qemu/devices-config.json").unwrap();
        *c = serde_json::from_str(&text).unwrap();
        c["linux"]["cgroupsPath"] = json!("/berth-diff/devices");
    });
    let step = step_binary("step08-oci");
    let shown = run(&step, &["run", "--bundle", &dir, "devices"]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, "null: 0\nkmsg: 1\n", "{}", shown.render());
    assert_cgroup_removed("devices");
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step08_devices", shown.render()));
}

/// A network namespace held by a sleeping process (not `ip netns add`,
/// whose bind mounts would show in the host's mount table that other tests
/// watch); killed when dropped.
struct HeldNetns(std::process::Child);

impl Drop for HeldNetns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn joining_a_network_namespace_by_path() {
    if !privileged("step08_oci::joining_a_network_namespace_by_path") {
        return;
    }
    let holder = Command::new("unshare")
        .args(["--net", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    let holder = HeldNetns(holder);
    let path = format!("/proc/{}/ns/net", holder.0.id());
    // unshare has to have unshared before the path means the new namespace.
    let host_net = fs::read_link("/proc/self/ns/net").unwrap();
    for _ in 0..100 {
        if fs::read_link(&path).is_ok_and(|ns| ns != host_net) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let dir = bundle("join", |c| {
        c["process"]["args"] = json!(["probe", "ns", "network"]);
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = json!(path);
            }
        }
    });
    let shown = differential("join", &dir);
    layout_snapshot_settings()
        .bind(|| insta::assert_snapshot!("step08_diff_join", shown.render()));
}

#[test]
fn joining_a_pid_namespace_by_path() {
    if !privileged("step08_oci::joining_a_pid_namespace_by_path") {
        return;
    }
    // `unshare --pid --fork` keeps the new namespace as the one its
    // children are born in: /proc/PID/ns/pid_for_children names it.
    let holder = Command::new("unshare")
        .args(["--pid", "--fork", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    let holder = HeldNetns(holder);
    let path = format!("/proc/{}/ns/pid_for_children", holder.0.id());
    let host_pid = fs::read_link("/proc/self/ns/pid").unwrap();
    for _ in 0..100 {
        if fs::read_link(&path).is_ok_and(|ns| ns != host_pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let dir = bundle("join-pid", |c| {
        // Not `pid`: the holder's `sleep` is PID 1 there, and each run
        // takes the next number.
        c["process"]["args"] =
            json!(["sh", "-c", "probe ns; cat /proc/1/comm"]);
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "pid" {
                ns["path"] = json!(path);
            }
        }
    });
    let shown = differential("join-pid", &dir);
    assert!(
        shown.stdout.ends_with("\nsleep\n"),
        "PID 1 is the holder's sleep: {}",
        shown.render()
    );
    layout_snapshot_settings().bind(|| {
        insta::assert_snapshot!("step08_diff_join_pid", shown.render())
    });
}

#[test]
fn a_bad_config_is_refused_with_the_field_named_and_leaves_nothing() {
    if !privileged("step08_oci::a_bad_config_is_refused_with_the_field_named") {
        return;
    }
    let step = step_binary("step08-oci");
    let cases: Vec<(&str, Edit)> = vec![
        ("typo", Box::new(|c| c["root"]["readOnly"] = json!(true))),
        (
            "apparmor",
            Box::new(|c| {
                c["process"]["apparmorProfile"] = json!("docker-default")
            }),
        ),
        (
            "seccomp-notify",
            Box::new(|c| {
                c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
                                               "listenerPath": "/run/notify.sock"})
            }),
        ),
        (
            "sysctl",
            Box::new(|c| {
                c["linux"]["sysctl"] =
                    json!({"kernel.panic": "1", "net.ipv4.ip_forward": "1"})
            }),
        ),
        (
            "capability",
            Box::new(|c| {
                c["process"]["capabilities"]["bounding"] = json!(["CAP_FLY"])
            }),
        ),
        (
            "hostname-without-uts",
            Box::new(|c| {
                let namespaces =
                    c["linux"]["namespaces"].as_array_mut().unwrap();
                namespaces.retain(|ns| ns["type"] != "uts");
            }),
        ),
        (
            "swap-without-limit",
            Box::new(|c| {
                c["linux"]["resources"]["memory"] = json!({"swap": 1048576})
            }),
        ),
        (
            "oom-killer-off",
            Box::new(|c| {
                c["linux"]["resources"]["memory"] =
                    json!({"limit": 67108864, "disableOOMKiller": true})
            }),
        ),
        (
            "time-namespace",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "time"}))
            }),
        ),
        (
            "no-rootfs",
            Box::new(|c| c["root"]["path"] = json!("missing")),
        ),
        (
            "no-mount-ns",
            Box::new(|c| {
                // With a UTS namespace, so that the hostname passes and
                // the missing mount namespace is what is refused.
                c["linux"]["namespaces"] =
                    json!([{"type": "pid"}, {"type": "uts"}]);
            }),
        ),
        // What the runtime spec says a runtime MUST refuse.
        (
            "no-root",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("root");
            }),
        ),
        (
            "namespace-twice",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "pid"}))
            }),
        ),
        (
            "userns-without-mappings",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user"}))
            }),
        ),
        (
            "env-without-equals",
            Box::new(|c| {
                c["process"]["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("JUST_A_NAME"))
            }),
        ),
        (
            "hook-env-without-equals",
            Box::new(
                |c| c["hooks"] = json!({"prestart": [{"path": "/bin/true", "env": ["A=1", "B"]}]}),
            ),
        ),
        (
            "hook-timeout-zero",
            Box::new(|c| {
                c["hooks"] =
                    json!({"poststop": [{"path": "/bin/true", "timeout": 0}]})
            }),
        ),
        (
            "relative-cwd",
            Box::new(|c| c["process"]["cwd"] = json!("tmp")),
        ),
        (
            "cpu-shares-out-of-range",
            Box::new(|c| c["linux"]["resources"]["cpu"] = json!({"shares": 1})),
        ),
        // (uid_t) -1 is "leave unchanged" to setresuid(2): root would stay.
        (
            "uid-minus-one",
            Box::new(|c| {
                c["process"]["user"] = json!({"uid": 4294967295u32, "gid": 0})
            }),
        ),
        (
            "gid-minus-one",
            Box::new(|c| {
                c["process"]["user"] =
                    json!({"uid": 1000, "gid": 4294967295u32})
            }),
        ),
        (
            "cgroups-path",
            Box::new(|c| c["linux"]["cgroupsPath"] = json!("/berth/../escape")),
        ),
        // Fails in the container, at setrlimit(2): above fs.nr_open, which
        // no capability allows.
        (
            "rlimit",
            Box::new(
                |c| c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1u64 << 40, "hard": 1u64 << 40}]),
            ),
        ),
    ];
    let before = host::State::now();
    let mut text = String::new();
    for (name, edit) in cases {
        let dir = bundle(&format!("bad-{name}"), edit);
        let shown =
            run(&step, &["run", "--bundle", &dir, &format!("bad-{name}")]);
        assert_eq!(shown.code, 125, "{}", shown.render());
        assert_cgroup_removed(&format!("bad-{name}"));
        text.push_str(&shown.render());
        text.push('\n');
    }
    // Not JSON at all, and an id runc would refuse.
    let dir = bundle("bad-json", |_| {});
    fs::write(
        format!("{dir}/config.json"),
        "{\"ociVersion\": \"1.0.2\",\n  \"process\": {",
    )
    .unwrap();
    for shown in [
        run(&step, &["run", "--bundle", &dir, "bad-json"]),
        run(&step, &["run", "--bundle", &dir, "../escape"]),
    ] {
        assert_eq!(shown.code, 125, "{}", shown.render());
        text.push_str(&shown.render());
        text.push('\n');
    }
    before.assert_unchanged();
    let mut settings = snapshot_settings();
    settings.add_filter(
        r#""/[^"]*/target/test-step08/"#,
        "\"[WORKSPACE]/target/test-step08/",
    );
    // Where the bad capability sits in runc's spec depends on the layout
    // (runc adds a cgroup namespace on v2 only).
    settings.add_filter(
        r"(CAP_FLY \(converted to FLY\)) at line \d+ column \d+",
        "$1 at line [LINE] column [COLUMN]",
    );
    settings.bind(|| insta::assert_snapshot!("step08_bad_config", text));
}

/// An explicit `null` is an absent field, not an unknown one.
#[test]
fn explicit_nulls_are_absent_fields() {
    if !privileged("step08_oci::explicit_nulls_are_absent_fields") {
        return;
    }
    let dir = bundle("nulls", |c| {
        c["process"]["args"] = json!(["true"]);
        c["domainname"] = Value::Null;
        c["linux"]["seccomp"] = Value::Null;
    });
    let shown = run(
        &step_binary("step08-oci"),
        &["run", "--bundle", &dir, "nulls"],
    );
    assert_eq!(shown.code, 0, "{}", shown.render());
}

#[test]
fn hooks_run_at_their_stages_with_the_state_on_stdin() {
    if !privileged(
        "step08_oci::hooks_run_at_their_stages_with_the_state_on_stdin",
    ) {
        return;
    }
    let step = step_binary("step08-oci");
    let out = fs::canonicalize("target")
        .unwrap()
        .join("test-step08/hooks-out");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    // Every hook appends "STAGE STATE" to one log, in the order they ran;
    // the log's directory is bind-mounted into the container for the
    // startContainer hook, which runs there.
    let append = |stage: &str, log: &str| {
        let line = format!("printf '%s %s\\n' {stage} \"$(cat)\" >> {log}");
        json!({"path": "/bin/sh", "args": ["sh", "-c", line]})
    };
    let host_log = out.join("log");
    let record = |stage: &str| append(stage, &host_log.display().to_string());
    let dir = bundle("hooks", |c| {
        c["root"]["readonly"] = json!(false);
        // runc 1.1 ignores domainname, so it is checked here, not compared.
        c["domainname"] = json!("example.org");
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "echo started; cat /proc/sys/kernel/domainname"
        ]);
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/hooks-out",
            "type": "bind",
            "source": out,
            "options": ["rbind", "rw"],
        }));
        c["hooks"] = json!({
            "createRuntime": [record("createRuntime")],
            "createContainer": [record("createContainer")],
            "prestart": [record("prestart")],
            "poststart": [record("poststart")],
            // A failing poststop hook is a warning: the run still succeeds.
            "poststop": [record("poststop"), {"path": "/bin/false"}],
            // Runs inside the container: its path is the container's.
            "startContainer": [append("startContainer", "/hooks-out/log")],
        });
    });
    let shown = run(&step, &["run", "--bundle", &dir, "hooks"]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, "started\nexample.org\n", "{}", shown.render());
    let log = fs::read_to_string(&host_log).unwrap();
    let mut order = String::new();
    for line in log.lines() {
        let (stage, state) = line.split_once(' ').unwrap();
        let state: Value = serde_json::from_str(state).unwrap();
        assert_eq!(state["id"], "hooks", "{line}");
        assert!(
            state["bundle"]
                .as_str()
                .unwrap()
                .ends_with("target/test-step08/hooks"),
            "{line}"
        );
        order.push_str(&format!("{stage}: status {}\n", state["status"]));
    }
    // The order the runtime spec gives (runtime.md, "Lifecycle").
    let stages: Vec<&str> = order
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "hooks ran out of order:\n{log}"
    );
    let text = format!("{}\n{order}", shown.render());
    snapshot_settings().bind(|| insta::assert_snapshot!("step08_hooks", text));
}

#[test]
fn a_process_not_found_exits_127_and_one_not_executable_126() {
    if !privileged(
        "step08_oci::a_process_not_found_exits_127_and_one_not_executable_126",
    ) {
        return;
    }
    let step = step_binary("step08-oci");
    let mut text = String::new();
    for (id, args, code) in [
        ("exit-127", json!(["no-such-program"]), 127),
        ("exit-126", json!(["/etc/hostname"]), 126),
    ] {
        let dir = bundle(id, |c| {
            c["process"]["args"] = args;
            c["process"]["capabilities"]["ambient"] = json!([]);
        });
        let shown = run(&step, &["run", "--bundle", &dir, id]);
        assert_eq!(shown.code, code, "{}", shown.render());
        assert_eq!(shown.stderr.lines().count(), 1, "{}", shown.render());
        assert_cgroup_removed(id);
        text.push_str(&shown.render());
        text.push('\n');
    }
    snapshot_settings().bind(|| insta::assert_snapshot!("step08_exec", text));
}
