//! berth-runtime's other commands, each as a client uses it: exec (with
//! every flag, and `--process`), a terminal through `--console-socket`,
//! `--preserve-fds`, ps, update, events, spec and features.

mod oci;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use berth_tests::{privileged, snapshot_settings};
use oci::{bundle, fresh_root, runtime, runtime_with};
use serde_json::{Value, json};

/// A detached container `id` of a bundle that sleeps, running.
fn running(root: &str, name: &str, id: &str, edit: impl FnOnce(&mut Value)) {
    let dir = bundle(name, |c| {
        c["process"]["args"] = json!(["sh", "-c", "sleep 1000"]);
        edit(c)
    });
    let (code, _, err) = runtime(root, &["run", "-d", "--bundle", &dir, id]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn exec_runs_in_the_containers_namespaces_with_its_flags() {
    if !privileged("runtime_commands::exec") {
        return;
    }
    let root = fresh_root("exec");
    running(&root, "runtime-exec", "x1", |c| {
        c["hostname"] = json!("inside");
        c["process"]["env"] = json!(["PATH=/bin", "MOOD=calm"]);
    });
    // The container's view: its hostname, PID 1, its environment.
    let (code, out, err) = runtime(
        &root,
        &[
            "exec",
            "x1",
            "sh",
            "-c",
            "hostname; cat /proc/1/comm; echo $MOOD",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "inside\nsleep\ncalm\n"), "{err}");
    // Flags after the id belong to the command; before it, to exec.
    let (code, out, err) = runtime(
        &root,
        &[
            "exec",
            "-e",
            "MOOD=merry",
            "--cwd",
            "/etc",
            "-u",
            "1000:1000",
            "x1",
            "sh",
            "-c",
            "echo $MOOD; pwd; id -u; id -g; exit 9",
        ],
    );
    assert_eq!(
        (code, out.as_str()),
        (9, "merry\n/etc\n1000\n1000\n"),
        "{err}"
    );
    // --cap adds to the sets the container's process has.
    let caps = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend(["x1", "grep", "CapEff", "/proc/self/status"]);
        runtime(&root, &args).1
    };
    assert_ne!(caps(&[]), caps(&["--cap", "CAP_SYS_ADMIN"]));
    // --process: a runtime-spec process object, as containerd writes it.
    let process = format!("{root}.process.json");
    fs::write(
        &process,
        json!({"args": ["sh", "-c", "echo from $WHO"], "cwd": "/",
               "env": ["WHO=a file"], "user": {"uid": 0, "gid": 0}})
        .to_string(),
    )
    .unwrap();
    let (code, out, err) =
        runtime(&root, &["exec", "--process", &process, "x1"]);
    assert_eq!((code, out.as_str()), (0, "from a file\n"), "{err}");
    // --detach returns at once; the pid file names the process.
    let pid_file = format!("{root}.exec.pid");
    let (code, _, err) = runtime(
        &root,
        &["exec", "-d", "--pid-file", &pid_file, "x1", "sleep", "1000"],
    );
    assert_eq!(code, 0, "{err}");
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let (_, listed, _) = runtime(&root, &["ps", "--format", "json", "x1"]);
    let pids: Vec<i32> = serde_json::from_str(&listed).unwrap();
    assert!(pids.contains(&pid), "{pid} not in {pids:?}");
    // A program that is not there: 127, as a shell says.
    let (code, _, err) = runtime(&root, &["exec", "x1", "no-such-program"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("no-such-program"), "{err}");
    let (code, _, _) = runtime(&root, &["delete", "--force", "x1"]);
    assert_eq!(code, 0);
    let (code, _, err) = runtime(&root, &["exec", "x1", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
}

/// Receive one fd over `stream` (SCM_RIGHTS), as containerd's console
/// socket does.
fn receive_fd(stream: &std::os::unix::net::UnixStream) -> OwnedFd {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut name = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    for cmsg in message.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel installed this fd for us just now.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received");
}

#[test]
fn a_terminal_goes_to_the_console_socket_and_is_the_process_stdio() {
    if !privileged("runtime_commands::console_socket") {
        return;
    }
    let root = fresh_root("console");
    let dir = bundle("runtime-console", |c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["consoleSize"] = json!({"height": 33, "width": 101});
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "tty; stty size; test -t 1 && echo out is a tty"
        ]);
    });
    let socket = fs::canonicalize("target")
        .unwrap()
        .join("test-runtime/console.sock");
    fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        receive_fd(&stream)
    });
    let sock = socket.to_str().unwrap();
    let (code, _, err) = runtime(
        &root,
        &["create", "--console-socket", sock, "--bundle", &dir, "t1"],
    );
    assert_eq!(code, 0, "{err}");
    let master = receiver.join().unwrap();
    let (code, _, err) = runtime(&root, &["start", "t1"]);
    assert_eq!(code, 0, "{err}");
    let mut master = fs::File::from(master);
    let mut shown = Vec::new();
    // Until the slave's last holder exits: EIO on a pty master.
    let _ = master.read_to_end(&mut shown);
    let shown = String::from_utf8_lossy(&shown).replace('\r', "");
    assert_eq!(shown, "/dev/pts/0\n33 101\nout is a tty\n");
    let (code, _, err) = runtime(&root, &["delete", "--force", "t1"]);
    assert_eq!(code, 0, "{err}");
    // A terminal without a socket, and a socket without a terminal.
    let (code, _, err) = runtime(&root, &["create", "--bundle", &dir, "t2"]);
    assert_eq!(code, 1);
    assert!(err.contains("no console socket was given"), "{err}");
    assert!(!Path::new(&root).join("t2").exists());
}

#[test]
fn preserve_fds_passes_exactly_the_fds_asked_for() {
    if !privileged("runtime_commands::preserve_fds") {
        return;
    }
    let root = fresh_root("preserve");
    let dir = bundle("runtime-preserve", |c| {
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "echo through fd 3 >&3; ls /proc/self/fd | sort -n | tr '\\n' ' '"
        ]);
    });
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let (_, spare) = nix::unistd::pipe().unwrap();
    let (w, s) = (write_end.as_raw_fd(), spare.as_raw_fd());
    let (code, out, err) = runtime_with(
        &root,
        &["run", "--preserve-fds", "1", "--bundle", &dir, "p1"],
        |command| {
            // SAFETY: dup2 between fork and exec: async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    // fd 3: the pipe, passed on; fd 4: a spare one, not.
                    // Through high numbers first: w or s may be 3 or 4.
                    oci::pass_fd(w, 200)?;
                    oci::pass_fd(s, 201)?;
                    oci::pass_fd(200, 3)?;
                    oci::pass_fd(201, 4)
                });
            }
        },
    );
    drop(write_end);
    assert_eq!(code, 0, "{err}");
    // 0-2, 3, and the fd ls opened /proc/self/fd with: nothing else.
    assert_eq!(out, "0 1 2 3 4 ");
    let mut through = String::new();
    fs::File::from(read_end)
        .read_to_string(&mut through)
        .unwrap();
    assert_eq!(through, "through fd 3\n");
    // A gap in the range: the first file we open would fill it and be
    // passed on in its place. Refused before anything is opened.
    let (code, out, err) = runtime_with(
        &root,
        &["run", "--preserve-fds", "2", "--bundle", &dir, "p2"],
        |command| {
            // SAFETY: close between fork and exec: async-signal-safe.
            unsafe {
                command.pre_exec(|| {
                    libc::close(3);
                    libc::close(4);
                    Ok(())
                });
            }
        },
    );
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("--preserve-fds 2: fd 3 is not open"), "{err}");
}

#[test]
fn ps_update_and_events_see_the_containers_cgroup() {
    if !privileged("runtime_commands::ps_update_events") {
        return;
    }
    let root = fresh_root("cgroup-commands");
    running(&root, "runtime-cgroup-commands", "c1", |_| {});
    let (code, out, err) = runtime(&root, &["ps", "c1"]);
    assert_eq!(code, 0, "{err}");
    // Whatever ps(1) this is (procps, busybox): its header and one line.
    let header = out.lines().next().unwrap_or_default();
    assert!(header.split_whitespace().any(|c| c == "PID"), "{out}");
    assert!(out.contains("sleep 1000"), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, err) = runtime(&root, &["ps", "c1", "-o", "pid,comm"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("sleep\n"), "{out}");
    // update, with flags and with --resources on stdin.
    let (code, _, err) =
        runtime(&root, &["update", "--pids-limit", "42", "c1"]);
    assert_eq!(code, 0, "{err}");
    let pids_max = |root: &str| {
        let script = "cat /sys/fs/cgroup/pids.max 2>/dev/null \
                      || cat /sys/fs/cgroup/pids/pids.max";
        runtime(root, &["exec", "c1", "sh", "-c", script]).1
    };
    assert_eq!(pids_max(&root), "42\n");
    let resources = json!({"pids": {"limit": 43}}).to_string();
    let (code, _, err) =
        runtime_with(&root, &["update", "--resources", "-", "c1"], |c| {
            c.stdin(Stdio::from(file_with(&resources)));
        });
    assert_eq!(code, 0, "{err}");
    assert_eq!(pids_max(&root), "43\n");
    // What cannot change on a live container is refused, not ignored.
    let refused = json!({"blockIO": {"weight": 500}}).to_string();
    let (code, _, err) =
        runtime_with(&root, &["update", "--resources", "-", "c1"], |c| {
            c.stdin(Stdio::from(file_with(&refused)));
        });
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("blockIO cannot be changed"), "{err}");
    // containerd's CRI sends the whole of linux.resources, device rules
    // included: given as they are, they are no change, and the limit
    // beside them applies; a device rule of its own is refused.
    let recorded: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(Path::new(&root).join("c1/config.json")).unwrap(),
    )
    .unwrap();
    let mut whole = recorded["linux"]["resources"].clone();
    assert!(whole["devices"].as_array().is_some_and(|d| !d.is_empty()));
    whole["pids"] = json!({"limit": 44});
    let (code, _, err) =
        runtime_with(&root, &["update", "--resources", "-", "c1"], |c| {
            c.stdin(Stdio::from(file_with(&whole.to_string())));
        });
    assert_eq!(code, 0, "{err}");
    assert_eq!(pids_max(&root), "44\n");
    whole["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"allow": true, "access": "rwm"}));
    let (code, _, err) =
        runtime_with(&root, &["update", "--resources", "-", "c1"], |c| {
            c.stdin(Stdio::from(file_with(&whole.to_string())));
        });
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("devices cannot be changed"), "{err}");
    let (code, _, err) = runtime(&root, &["update", "--memory", "lots", "c1"]);
    assert_eq!(code, 1);
    assert!(err.contains("--memory \"lots\""), "{err}");
    // events --stats: one JSON line in runc's shape.
    let (code, out, err) = runtime(&root, &["events", "--stats", "c1"]);
    assert_eq!(code, 0, "{err}");
    let event: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(event["type"], "stats");
    assert_eq!(event["id"], "c1");
    assert_eq!(event["data"]["pids"]["current"], 1);
    assert!(event["data"]["cpu"]["usage"]["total"].as_u64().unwrap() > 0);
    // Memory in use now (v1 and v2 read it from different files).
    let usage = event["data"]["memory"]["usage"]["usage"].as_u64().unwrap();
    assert!(usage > 0, "{event}");
    let (code, _, _) = runtime(&root, &["delete", "--force", "c1"]);
    assert_eq!(code, 0);
    let (code, _, err) = runtime(&root, &["ps", "c1"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
}

/// A file holding `text`, opened for reading (its path unlinked).
fn file_with(text: &str) -> fs::File {
    let path = format!("target/test-runtime/stdin-{}", std::process::id());
    fs::create_dir_all("target/test-runtime").unwrap();
    fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let file = fs::File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    file
}

#[test]
fn spec_writes_a_config_that_runs_and_never_overwrites_one() {
    if !privileged("runtime_commands::spec") {
        return;
    }
    let root = fresh_root("spec");
    let dir = bundle("runtime-spec", |_| {});
    fs::remove_file(format!("{dir}/config.json")).unwrap();
    let (code, _, err) = runtime(&root, &["spec", "--bundle", &dir]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = runtime(&root, &["spec", "--bundle", &dir]);
    assert_eq!(code, 1);
    assert!(err.contains("exists; remove it first"), "{err}");
    let path = format!("{dir}/config.json");
    let mut config: Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(config["process"]["terminal"], true);
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["hostname"]);
    fs::write(&path, config.to_string()).unwrap();
    let (code, out, err) = runtime(&root, &["run", "--bundle", &dir, "s1"]);
    // No warning either: what it asks, berth-runtime grants.
    assert_eq!((code, out.as_str(), err.as_str()), (0, "berth\n", ""));
}

#[test]
fn features_say_what_the_code_does() {
    let (code, out, err) = runtime(&fresh_root("features"), &["features"]);
    assert_eq!(code, 0, "{err}");
    let features: Value = serde_json::from_str(&out).unwrap();
    // Every mount option claimed is one step 8 turns into a flag.
    for option in features["mountOptions"].as_array().unwrap() {
        let words = vec![option.as_str().unwrap().to_owned()];
        let parsed = step08_oci::oci::mounts::parse_options(&words);
        assert!(parsed.data.is_empty(), "{option} is passed as data");
    }
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("runtime_features", out));
}

/// The trace with what varies from host to host made the same: pids, the
/// cgroup hierarchies a v1 host mounts (one line stands for all, as the
/// same operation repeats for each), and the checkout's path.
fn normalized_trace(trace: &str) -> String {
    let here = fs::canonicalize(".").unwrap().display().to_string();
    let pid = regex::Regex::new(r"write \d+ > ").unwrap();
    let hierarchy = regex::Regex::new(
        r"/sys/fs/cgroup/[a-z_,=]+/(berth-diff)|(cgroup on /sys/fs/cgroup/)[a-z_,=]+( type cgroup \(ro,nosuid,nodev,noexec),[a-z_,=]+\)",
    )
    .unwrap();
    let bind_target =
        regex::Regex::new(r" on /sys/fs/cgroup/[a-z_,=]+ \(").unwrap();
    let mut lines: Vec<String> = Vec::new();
    for line in trace.lines() {
        let line = line.replace(&here, "[CHECKOUT]");
        let line =
            bind_target.replace_all(&line, " on /sys/fs/cgroup/[HIERARCHY] (");
        let line = pid.replace_all(&line, "write [PID] > ");
        let line = hierarchy.replace_all(&line, |c: &regex::Captures| match c
            .get(1)
        {
            Some(_) => "/sys/fs/cgroup/[HIERARCHY]/berth-diff".to_owned(),
            None => format!("{}[HIERARCHY]{},[CONTROLLERS])", &c[2], &c[3]),
        });
        if lines.last().map(String::as_str) != Some(line.as_ref()) {
            lines.push(line.into_owned());
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn the_trace_names_every_kernel_operation_and_its_chapter() {
    if !privileged("runtime_commands::trace") {
        return;
    }
    let root = fresh_root("trace");
    let dir = bundle("runtime-trace", |c| {
        c["process"]["args"] = json!(["true"]);
    });
    let trace_file = fs::canonicalize("target")
        .unwrap()
        .join("test-runtime/trace.log");
    let _ = fs::remove_file(&trace_file);
    let (code, _, err) =
        runtime_with(&root, &["run", "--bundle", &dir, "t1"], |c| {
            c.env("BERTH_TRACE", "text")
                .env("BERTH_TRACE_FILE", &trace_file);
        });
    assert_eq!(code, 0, "{err}");
    let trace = normalized_trace(&fs::read_to_string(&trace_file).unwrap());
    // The same run traced as JSON: one object per line, the same events.
    let _ = fs::remove_file(&trace_file);
    let (code, _, err) = runtime_with(
        &root,
        &["--trace=json", "run", "--bundle", &dir, "t1"],
        |c| {
            c.env("BERTH_TRACE_FILE", &trace_file);
        },
    );
    assert_eq!(code, 0, "{err}");
    let json = fs::read_to_string(&trace_file).unwrap();
    // Each JSON line, written back as a text line: the same trace.
    let mut as_text = String::new();
    for line in json.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        as_text.push_str(&format!(
            "[step {} · {}] {}\n",
            event["step"].as_u64().expect("step"),
            event["chapter"].as_str().expect("chapter"),
            event["event"].as_str().expect("event"),
        ));
    }
    assert_eq!(normalized_trace(&as_text), trace, "JSON and text differ");
    berth_tests::layout_snapshot_settings()
        .bind(|| insta::assert_snapshot!("runtime_trace", trace));
}

#[test]
fn an_ordinary_user_runs_a_rootless_container() {
    if !privileged("runtime_commands::rootless") {
        return;
    }
    use berth_tests::{ThrowawayUser, world_executable, world_readable_rootfs};
    let runtime = world_executable("berth-runtime");
    let user = ThrowawayUser::create("berth-rootless-rt");
    // The user's own directories: its runtime dir (XDG_RUNTIME_DIR, where
    // the state goes) and a bundle whose rootfs it can read.
    let home = std::path::PathBuf::from("/tmp/berth-rootless-runtime");
    let _ = fs::remove_dir_all(&home);
    let (xdg, dir) = (home.join("xdg"), home.join("bundle"));
    fs::create_dir_all(&xdg).unwrap();
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(world_readable_rootfs(), dir.join("rootfs"))
        .unwrap();
    for path in [&home, &xdg, &dir] {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    }
    let as_user = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(user.setpriv())
            .arg("env")
            .arg(format!("XDG_RUNTIME_DIR={}", xdg.display()))
            .arg(&runtime)
            .args(args)
            .current_dir(&home)
            .stdin(Stdio::null());
        let output = command.output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let bundle = dir.to_str().unwrap();
    let (code, _, err) = as_user(&["spec", "--rootless", "--bundle", bundle]);
    assert_eq!(code, 0, "{err}");
    let path = dir.join("config.json");
    let mut config: Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] =
        json!(["sh", "-c", "id -u; cat /proc/self/uid_map; hostname"]);
    config["root"]["path"] = json!("rootfs");
    fs::write(&path, config.to_string()).unwrap();
    let (code, out, err) = as_user(&["run", "--bundle", bundle, "r1"]);
    assert_eq!(code, 0, "{err}");
    let expected =
        format!("0\n         0 {:>10}          1\nberth\n", user.uid);
    assert_eq!(out, expected, "{err}");
    // The state went to the user's runtime directory, and is gone.
    let state = xdg.join("berth-runtime");
    assert!(state.is_dir(), "no state under {}", xdg.display());
    assert_eq!(fs::read_dir(&state).unwrap().count(), 0);
    // Limits need a cgroup the user may not make: one clear line.
    config["linux"]["resources"] = json!({"pids": {"limit": 10}});
    fs::write(&path, config.to_string()).unwrap();
    let (code, _, err) = as_user(&["run", "--bundle", bundle, "r2"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cgroup"), "{err}");
    let _ = fs::remove_dir_all(&home);
}

#[test]
fn devices_at_dev_symlink_paths_do_not_break_the_container() {
    if !privileged("runtime_commands::dev_ptmx") {
        return;
    }
    // dockerd's spec for --privileged lists every host device, /dev/ptmx
    // among them: the container's ptmx stays its devpts instance's (a
    // host node there would open the host's ptys), and the rest is made.
    let root = fresh_root("dev-ptmx");
    let dir = bundle("runtime-dev-ptmx", |c| {
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "readlink /dev/ptmx; ls -l /dev/kmsg | cut -c1"
        ]);
        c["linux"]["devices"] = json!([
            {"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2, "fileMode": 438, "uid": 0, "gid": 0},
            {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 420, "uid": 0, "gid": 0},
        ]);
    });
    let (code, out, err) = runtime(&root, &["run", "--bundle", &dir, "ptmx1"]);
    assert_eq!((code, out.as_str()), (0, "pts/ptmx\nc\n"), "{err}");
}
