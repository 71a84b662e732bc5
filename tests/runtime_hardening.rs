//! berth-runtime against a hostile container: what runc's escapes of
//! 2019 and 2024 tried, tried here, through the runtime's own commands.

mod oci;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use berth_tests::{privileged, step_binary};
use oci::{bundle, fresh_root, runtime_with as runtime};
use serde_json::json;

#[test]
fn a_working_directory_through_a_host_fd_is_refused() {
    if !privileged("runtime_hardening::cwd_through_a_host_fd") {
        return;
    }
    // CVE-2024-21626: a directory fd of the host reached the container,
    // and process.cwd named it through /proc/self/fd: the process started
    // in the host's filesystem. Here the caller passes fd 3 on purpose
    // (--preserve-fds 1), the most a runtime can be handed.
    let root = fresh_root("cwd-escape");
    let dir = bundle("runtime-cwd-escape", |c| {
        c["process"]["cwd"] = json!("/proc/self/fd/3");
        c["process"]["args"] = json!(["sh", "-c", "pwd; cat hostname"]);
    });
    let host_dir = fs::File::open("/tmp").unwrap();
    let fd = host_dir.as_raw_fd();
    let (code, out, err) = runtime(
        &root,
        &["run", "--preserve-fds", "1", "--bundle", &dir, "w1"],
        |command| {
            // SAFETY: dup2 between fork and exec: async-signal-safe.
            unsafe {
                command.pre_exec(move || oci::pass_fd(fd, 3));
            }
        },
    );
    assert_ne!(code, 0, "the container ran in the host's /tmp: {out}");
    assert_eq!(out, "", "the container ran: {out}");
    assert!(
        err.contains("\"/proc/self/fd/3\" leads outside the container's root"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn a_working_directory_through_the_runtimes_own_fds_is_refused() {
    if !privileged("runtime_hardening::cwd_through_own_fds") {
        return;
    }
    // Nothing passed in: the fds the container process itself holds
    // before its execve (the state directory for the exec FIFO, the sync
    // socket) are ours, and a cwd through one would start the container
    // in the host's filesystem.
    for fd in 3..=6 {
        let root = fresh_root(&format!("cwd-own-{fd}"));
        let dir = bundle(&format!("runtime-cwd-own-{fd}"), |c| {
            c["process"]["cwd"] = json!(format!("/proc/self/fd/{fd}"));
            c["process"]["args"] = json!(["pwd"]);
        });
        let (code, out, err) =
            runtime(&root, &["create", "--bundle", &dir, "o1"], |_| {});
        assert_ne!(code, 0, "fd {fd}: created, cwd {out}");
        assert!(
            err.contains("leads outside the container's root")
                || err.contains("change to process.cwd"),
            "fd {fd}: {err}"
        );
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "fd {fd}");
    }
}

#[test]
fn a_created_containers_process_is_out_of_reach_through_proc_exe() {
    if !privileged("runtime_hardening::proc_exe") {
        return;
    }
    // CVE-2019-5736: a process of the container opened /proc/PID/exe of
    // the runtime's process in its PID namespace and wrote to the host's
    // binary. A created container's PID 1 *is* the runtime's code, waiting
    // at the exec FIFO: the widest window there is. An exec'd process looks
    // at it, once as the container's root, once with CAP_SYS_PTRACE.
    let root = fresh_root("proc-exe");
    let dir = bundle("runtime-proc-exe", |c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
        // The attacker reports through the rootfs's /tmp.
        c["root"]["readonly"] = json!(false);
    });
    let binary =
        berth_tests::workspace_root().join(step_binary("berth-runtime"));
    let before = fs::read(&binary).unwrap();
    let (code, _, err) =
        runtime(&root, &["create", "--bundle", &dir, "e1"], |_| {});
    assert_eq!(code, 0, "{err}");
    // The shell's own error line says why the open or the write failed.
    let attack = "readlink /proc/1/exe || echo no link; \
                  (echo evil >>/proc/1/exe) 2>&1 && echo WROTE || echo refused";
    let (code, out, err) =
        runtime(&root, &["exec", "e1", "sh", "-c", attack], |_| {});
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("no link\n"), "undumpable: {out}");
    assert!(out.contains("Permission denied\nrefused\n"), "{out}");
    // With ptrace rights the link opens, and the open for writing fails
    // with "Text file busy" while a process runs the binary. That is no
    // defence: the 2019 attack keeps the file open and writes once no
    // runtime process runs it any more. Here: keep fd 3 on PID 1's exe,
    // let `start` turn PID 1 into `sleep`, and retry through fd 3 while
    // the binary is busy (other tests run it too).
    let steal = "exec 3</proc/1/exe || { echo cannot open >/tmp/attack; exit; }; \
                 echo opened >/tmp/attack; \
                 for i in $(seq 1 300); do \
                   err=$( (echo evil >>/proc/self/fd/3) 2>&1 ) \
                     && { echo WROTE >>/tmp/attack; exit; }; \
                   case $err in *busy*) sleep 0.05;; \
                   *) echo \"$err\" >>/tmp/attack; exit;; esac; \
                 done; echo still busy >>/tmp/attack";
    let exec = [
        "exec",
        "--detach",
        "--cap",
        "CAP_SYS_PTRACE",
        "e1",
        "sh",
        "-c",
        steal,
    ];
    let (code, _, err) = runtime(&root, &exec, |_| {});
    assert_eq!(code, 0, "{err}");
    let report = format!("{dir}/rootfs/tmp/attack");
    let read = || fs::read_to_string(&report).unwrap_or_default();
    let start = std::time::Instant::now();
    while !read().starts_with("opened") {
        assert!(start.elapsed().as_secs() < 10, "{}", read());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, _, err) = runtime(&root, &["start", "e1"], |_| {});
    assert_eq!(code, 0, "{err}");
    while read().lines().count() < 2 {
        assert!(start.elapsed().as_secs() < 30, "{}", read());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A read-only clone of the binary's mount refuses the open for
    // writing (EROFS); the sealed copy (the fallback where no such mount
    // can be made) refuses the write (EPERM).
    let out = read();
    assert!(
        out.contains("Read-only file system")
            || out.contains("Operation not permitted"),
        "{out}"
    );
    let (code, _, err) = runtime(&root, &["delete", "--force", "e1"], |_| {});
    assert_eq!(code, 0, "{err}");
    assert!(fs::read(&binary).unwrap() == before, "the runtime changed");
}

#[test]
fn the_parent_never_sees_the_hosts_network_as_the_childs() {
    if !privileged("runtime_hardening::sync0") {
        return;
    }
    // The child makes its network namespace itself, while the parent
    // goes on; the parent's prestart and createRuntime hooks may enter
    // /proc/PID/ns/net, and must not find the host's network there. Sync
    // 0 is what they wait for: right after it, the namespace is the new
    // one, every time. The program pins itself to one CPU: without the
    // wait, the parent reads the link before the child has even run
    // (checked: `same`, 6 times out of 6).
    let program = berth_tests::workspace_root()
        .join(berth_tests::example_binary("sync0"));
    for round in 0..20 {
        let out = std::process::Command::new(&program).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text, "new\n", "round {round}");
    }
}

#[test]
fn only_stdio_reaches_an_execd_process() {
    if !privileged("runtime_hardening::exec_fds") {
        return;
    }
    let root = fresh_root("exec-fds");
    let dir = bundle("runtime-exec-fds", |c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    let (code, _, err) =
        runtime(&root, &["run", "-d", "--bundle", &dir, "f1"], |_| {});
    assert_eq!(code, 0, "{err}");
    // An fd of the host left open by the caller of exec (fd 5 on /tmp).
    let host_dir = fs::File::open("/tmp").unwrap();
    let fd = host_dir.as_raw_fd();
    let (code, out, err) = runtime(
        &root,
        &[
            "exec",
            "f1",
            "sh",
            "-c",
            "ls /proc/self/fd | sort -n | tr '\\n' ' '",
        ],
        |command| {
            // SAFETY: dup2 between fork and exec: async-signal-safe.
            unsafe {
                command.pre_exec(move || oci::pass_fd(fd, 5));
            }
        },
    );
    assert_eq!(code, 0, "{err}");
    // 0-2, and the directory fd ls itself opened.
    assert_eq!(out, "0 1 2 3 ");
    let (code, _, _) = runtime(&root, &["delete", "--force", "f1"], |_| {});
    assert_eq!(code, 0);
}

#[test]
fn a_forged_proc_in_the_container_cannot_keep_the_runtimes_groups() {
    if !privileged("runtime_hardening::forged_setgroups") {
        return;
    }
    // exec must drop the runtime's supplementary groups (root's) unless
    // the container's user namespace forbids setgroups(2). The answer is
    // read from the host's /proc: a container that may mount covers its
    // own /proc with a tmpfs saying "deny" everywhere, hoping to be
    // believed and keep our groups in the next exec.
    let root = fresh_root("forged-setgroups");
    let forge = "mount -t tmpfs forged /proc && for d in self 1 2 3 4 5 6 7; \
                 do mkdir -p /proc/$d && echo deny > /proc/$d/setgroups; \
                 done && echo forged && exec sleep 1000";
    let dir = bundle("runtime-forged-setgroups", |c| {
        c["process"]["args"] = json!(["sh", "-c", forge]);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SYS_ADMIN"));
        }
        c["root"]["readonly"] = json!(false);
    });
    let (code, _, err) =
        runtime(&root, &["run", "-d", "--bundle", &dir, "g1"], |_| {});
    assert_eq!(code, 0, "{err}");
    let stdout = format!("{root}.out/stdout");
    let start = std::time::Instant::now();
    while !fs::read_to_string(&stdout)
        .unwrap_or_default()
        .contains("forged")
    {
        assert!(start.elapsed().as_secs() < 10, "the container never forged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The runtime runs with a supplementary group of its own, 4242: the
    // exec'd process must not keep it.
    let (code, out, err) = runtime(
        &root,
        &["exec", "-u", "1000:1000", "g1", "id", "-G"],
        |command| {
            // SAFETY: setgroups(2) between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    let groups = [4242 as libc::gid_t];
                    if libc::setgroups(1, groups.as_ptr()) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1000\n", "the exec kept groups it should have dropped");
    let (code, _, _) = runtime(&root, &["delete", "--force", "g1"], |_| {});
    assert_eq!(code, 0);
}

#[test]
fn an_exec_whose_runtime_is_killed_dies_with_it() {
    if !privileged("runtime_hardening::exec_kill_9") {
        return;
    }
    // A foreground exec is supervised by its runtime: kill -9 the runtime
    // and the process must not stay behind in the container, unwatched.
    // As another user: the switch of ids clears the parent-death signal,
    // which must be armed again.
    let root = fresh_root("exec-kill-9");
    let dir = bundle("runtime-exec-kill-9", |c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    let (code, _, err) =
        runtime(&root, &["run", "-d", "--bundle", &dir, "k1"], |_| {});
    assert_eq!(code, 0, "{err}");
    let program =
        berth_tests::workspace_root().join(step_binary("berth-runtime"));
    let mut exec = std::process::Command::new(program)
        .args(["--root", &root, "exec", "-u", "1000:1000", "k1"])
        .args(["sh", "-c", "echo $$; exec sleep 999"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(exec.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    // The pid the process printed is in the container's PID namespace:
    // find it on the host among the container's processes.
    let (_, listed, _) = runtime(&root, &["ps", "-f", "json", "k1"], |_| {});
    let pids: Vec<i32> = serde_json::from_str(&listed).unwrap();
    assert_eq!(pids.len(), 2, "{line} {listed}");
    exec.kill().unwrap();
    exec.wait().unwrap();
    let init = oci::state(&root, "k1")["pid"].as_i64().unwrap() as i32;
    for pid in pids.into_iter().filter(|p| *p != init) {
        oci::wait_gone(&pid.to_string(), "the exec'd process");
    }
    let (code, _, _) = runtime(&root, &["delete", "--force", "k1"], |_| {});
    assert_eq!(code, 0);
}
