//! `berth`'s client commands, against berth daemon: they do what the
//! docker CLI does, print what it prints (the tables compared line for
//! line with docker's, for the same daemon), and fail as it fails.

use berth_tests::daemons::Berth;
use berth_tests::fixture::rootfs;
use berth_tests::{in_a_terminal, privileged, step_binary, workspace_root};

/// `berth -H unix://SOCK args`: (exit code, stdout, stderr).
fn berth_cli(daemon: &Berth, args: &[&str]) -> (i32, String, String) {
    daemon.cli(args)
}

#[test]
fn berth_drives_the_engine_and_prints_what_docker_prints() {
    if !privileged("engine_cli::berth_cli") {
        return;
    }
    let daemon = Berth::start("cli", &[]);
    let archive = daemon.data_root().with_extension("image.tar");
    std::fs::write(
        &archive,
        berth_tests::daemons::docker_archive(rootfs(), "berth-test:latest"),
    )
    .unwrap();
    let (code, out, err) =
        berth_cli(&daemon, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Loaded image: berth-test:latest\n"),
        "{err}"
    );
    // docker's table, byte for byte: column widths and all.
    let (_, ours, _) = berth_cli(&daemon, &["images"]);
    let (_, theirs, _) = daemon.run(&["images"]);
    assert_eq!(ours, theirs);
    // run: the output, the exit code.
    let (code, out, err) = berth_cli(
        &daemon,
        &[
            "run",
            "--rm",
            "berth-test",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 5",
        ],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (5, "out\n", "err\n"));
    let (code, out, _) = berth_cli(
        &daemon,
        &[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "berth-test",
            "sh",
            "-c",
            "echo $A $(pwd) $(id -u)",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "1 /tmp 65534\n"));
    // stdin with -i.
    let mut cat = daemon.berth(&["run", "--rm", "-i", "berth-test", "cat"]);
    cat.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cat.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"piped in\n"[..])
    );
    // -i whose input never ends: the command ends with the container all
    // the same (its read of stdin must not hold the process).
    let mut open_stdin = daemon
        .berth(&["run", "--rm", "-i", "berth-test", "sh", "-c", "exit 9"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = berth_tests::wait_at_most(
        &mut open_stdin,
        std::time::Duration::from_secs(20),
    )
    .expect("berth run -i did not end with its container");
    assert_eq!(status.code(), Some(9));
    drop(open_stdin.stdin.take());
    // -t: a pty in the container, this terminal (script(1)'s) raw.
    let berth_bin = workspace_root().join(step_binary("berth"));
    let host = format!("unix://{}", daemon.socket().display());
    let (code, text) = in_a_terminal(&format!(
        "{} -H {host} run --rm -it berth-test sh -c 'tty; exit 3'",
        berth_bin.display()
    ));
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("/dev/pts/0\r\n"), "{text:?}");
    // Detached, listed, logged, exec'd, stopped, removed.
    let (code, id, err) = berth_cli(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-l",
            "tier=front",
            "berth-test",
            "sh",
            "-c",
            "echo up; trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    let (code, out, _) =
        berth_cli(&daemon, &["exec", "web", "cat", "/etc/hostname"]);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{}\n", &id[..12]).as_str())
    );
    let (code, _, _) =
        berth_cli(&daemon, &["exec", "web", "sh", "-c", "exit 4"]);
    assert_eq!(code, 4);
    let (code, text) = in_a_terminal(&format!(
        "{} -H {host} exec -it web sh -c 'tty; exit 6'",
        berth_bin.display()
    ));
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    let (_, logs, _) = berth_cli(&daemon, &["logs", "web"]);
    assert_eq!(logs, "up\n");
    // top, diff, commit: as docker prints them.
    // (top's second process, a `sleep 0.1`, is another one each time.)
    for args in [&["top", "web"][..], &["diff", "web"][..]] {
        let (code, ours, err) = berth_cli(&daemon, args);
        assert_eq!(code, 0, "{err}");
        let (_, theirs, _) = daemon.run(args);
        let first = |t: &str| t.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(first(&ours), first(&theirs), "berth {args:?}");
    }
    let (code, image, err) =
        berth_cli(&daemon, &["commit", "-m", "snap", "web", "snap:v1"]);
    assert_eq!(code, 0, "{err}");
    assert!(image.starts_with("sha256:"), "{image}");
    let (_, out, _) = berth_cli(
        &daemon,
        &[
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            "snap:v1",
            "/etc/hostname",
        ],
    );
    assert_eq!(out.len(), 13, "{out}");
    // The tables are docker's, for the same daemon (`images` byte for
    // byte above); durations tick between the two commands and read
    // alike here.
    for args in [
        &["ps", "-a"][..],
        &["images"][..],
        &["ps", "-q"][..],
        &["images", "-q"][..],
    ] {
        let (_, ours, _) = berth_cli(&daemon, args);
        let (_, theirs, _) = daemon.run(args);
        // Durations tick between the two commands: every "N seconds",
        // "Less than a second", "About a minute" reads the same.
        let strip = |text: &str| -> String {
            text.lines()
                .map(|l| {
                    l.replace("Less than a second", "1 second")
                        .replace("About a minute", "1 minute")
                        .split_whitespace()
                        .filter(|w| !w.chars().all(|c| c.is_ascii_digit()))
                        .map(|w| match w {
                            "second" | "seconds" | "minute" | "minutes" => {
                                "[DURATION]"
                            }
                            other => other,
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            strip(&ours),
            strip(&theirs),
            "berth {args:?}:\n{ours}\ndocker:\n{theirs}"
        );
    }
    let (_, out, _) =
        berth_cli(&daemon, &["ps", "-q", "--filter", "label=tier=front"]);
    assert_eq!(out.trim(), &id[..12]);
    let (_, inspect, _) = berth_cli(&daemon, &["inspect", "web"]);
    let parsed: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(parsed[0]["Name"], "/web");
    assert_eq!(parsed[0]["State"]["Status"], "running");
    let (code, out, err) = berth_cli(&daemon, &["stop", "-t", "5", "web"]);
    assert_eq!((code, out.as_str()), (0, "web\n"), "{err}");
    let (_, out, _) = berth_cli(&daemon, &["wait", "web"]);
    assert_eq!(out, "0\n");
    let (code, _, err) = berth_cli(&daemon, &["rm", "web"]);
    assert_eq!(code, 0, "{err}");
    // Errors: one line, docker's codes.
    let (code, _, err) =
        berth_cli(&daemon, &["run", "--rm", "no-such-image", "true"]);
    assert_eq!(code, 125);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("No such image: no-such-image"), "{err}");
    let (code, _, err) =
        berth_cli(&daemon, &["run", "--rm", "berth-test", "no-such-program"]);
    assert_eq!(code, 127, "{err}");
    let (code, _, err) = berth_cli(&daemon, &["rm", "nope"]);
    assert_eq!(code, 125);
    assert!(err.contains("No such container: nope"), "{err}");
    // Save, tag, rmi.
    let (code, _, err) = berth_cli(&daemon, &["tag", "berth-test", "again:v2"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = berth_cli(&daemon, &["rmi", "again:v2"]);
    assert_eq!((code, out.as_str()), (0, "Untagged: again:v2\n"));
    let saved = daemon.data_root().with_extension("saved.tar");
    let (code, _, err) = berth_cli(
        &daemon,
        &["save", "-o", saved.to_str().unwrap(), "berth-test"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::metadata(&saved).unwrap().len() > 1024);
    let _ = std::fs::remove_file(saved);
    let _ = std::fs::remove_file(archive);
    assert!(daemon.leftovers().is_empty(), "{:?}", daemon.leftovers());
}

/// Read from `master` until `want` has come; all that was read. Fails
/// after 20 seconds (the reads poll: a silent pty cannot hang the test).
fn read_until(master: &mut std::fs::File, want: &str) -> String {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    use std::os::fd::AsFd;
    let start = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(want) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no {want:?} in {:?}",
            String::from_utf8_lossy(&seen)
        );
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(200u16)).unwrap_or(0) == 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) | Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn a_resized_terminal_resizes_the_containers() {
    if !privileged("engine_cli::sigwinch") {
        return;
    }
    use nix::pty::{Winsize, openpty};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let daemon = Berth::start("winch", &[]);
    daemon.load_rootfs(rootfs(), "berth-test:latest");
    let size = |rows, cols| Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size(24, 80)), None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    // berth run -it in a session of its own whose terminal is the pty.
    let mut command = daemon.berth(&[
        "run",
        "--rm",
        "-it",
        "berth-test",
        "sh",
        "-c",
        "stty size; read line; stty size",
    ]);
    command
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(slave);
    // The pty starts at this terminal's size (ConsoleSize at create).
    read_until(&mut master, "24 80");
    // The terminal changes size: the kernel sends SIGWINCH to berth,
    // which must pass the new size on.
    let new = size(40, 100);
    // SAFETY: TIOCSWINSZ reads the Winsize it is given.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &new) };
    assert_eq!(rc, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::io::Write::write_all(&mut master, b"\n").unwrap();
    read_until(&mut master, "40 100");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(daemon.leftovers().is_empty(), "{:?}", daemon.leftovers());
}
