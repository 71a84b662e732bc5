//! berth daemon driven by the real docker CLI: images loaded, listed,
//! inspected, tagged and removed; containers run attached and detached,
//! listed, logged, stopped, killed, waited for and removed; errors as
//! docker prints them; nothing left behind.

use berth_tests::daemons::Berth;
use berth_tests::fixture::rootfs;
use berth_tests::{in_a_terminal, privileged};

#[test]
fn docker_runs_containers_through_berth() {
    if !privileged("engine_daemon::docker_runs_containers") {
        return;
    }
    let berth = Berth::start("docker-cli", &[]);
    let (code, out, err) =
        berth.run(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!((code, out.trim()), (0, "1.45"), "{err}");
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (code, out, err) =
        berth.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!((code, out.as_str()), (0, "berth-test:latest\n"), "{err}");
    let (code, out, err) =
        berth.run(&["run", "--rm", "berth-test", "echo", "hi"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "hi\n", ""),
        "{}",
        berth.daemon_log()
    );
    let (code, out, err) = berth.run(&[
        "run",
        "--rm",
        "berth-test",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn detached_containers_are_listed_logged_stopped_and_removed() {
    if !privileged("engine_daemon::detached") {
        return;
    }
    let berth = Berth::start("detached", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let script = "trap 'echo bye; exit 0' TERM; echo started; while true; do sleep 0.1; done";
    let (code, id, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        "berth-test",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(code, 0, "{err}{}", berth.daemon_log());
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    // The name is taken: 409, one line.
    let (code, _, err) =
        berth.run(&["run", "-d", "--name", "web", "berth-test", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("is already in use by container"), "{err}");
    let (_, out, _) =
        berth.run(&["ps", "--format", "{{.Names}} {{.Image}} {{.Status}}"]);
    assert!(out.starts_with("web berth-test Up "), "{out}");
    let (_, out, _) = berth.run(&["ps", "-q", "--filter", "label=tier=front"]);
    assert_eq!(out.trim(), &id[..12]);
    let (_, out, _) = berth.run(&["ps", "-q", "--filter", "label=tier=back"]);
    assert_eq!(out, "");
    let wait_for_log = |want: &str| {
        let start = std::time::Instant::now();
        loop {
            let (_, out, _) = berth.run(&["logs", "web"]);
            if out.contains(want) {
                return out;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "no {want:?} in {out:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for_log("started\n");
    let (code, out, _) = berth.run(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.Name}} {{.Config.Labels.tier}}",
        "web",
    ]);
    assert_eq!((code, out.as_str()), (0, "running /web front\n"));
    // Removing a running container needs -f.
    let (code, _, err) = berth.run(&["rm", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("container is running"), "{err}");
    let (code, _, err) = berth.run(&["stop", "-t", "5", "web"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = berth.run(&["logs", "web"]);
    assert_eq!(out, "started\nbye\n");
    let (_, out, _) = berth.run(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "web",
    ]);
    assert_eq!(out, "exited 0\n");
    let (_, out, _) = berth.run(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(out.starts_with("Exited (0) "), "{out}");
    let (code, out, _) = berth.run(&["wait", "web"]);
    assert_eq!((code, out.as_str()), (0, "0\n"));
    // Started again: same container, new process.
    let (code, _, err) = berth.run(&["start", "web"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&["kill", "web"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = berth.run(&["wait", "web"]);
    assert_eq!((code, out.as_str()), (0, "137\n"));
    let (code, _, err) = berth.run(&["kill", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not running"), "{err}");
    let (code, _, err) = berth.run(&["rm", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn errors_are_one_line_with_dockers_codes() {
    if !privileged("engine_daemon::errors") {
        return;
    }
    let berth = Berth::start("errors", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (code, _, err) = berth.run(&["inspect", "--type", "container", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such container: nope"), "{err}");
    let (code, _, err) = berth.run(&["rm", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such container: nope"), "{err}");
    let (code, _, err) = berth.run(&["image", "inspect", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such image: nope"), "{err}");
    let (code, _, err) =
        berth.run(&["run", "--rm", "berth-test", "no-such-program"]);
    assert_eq!(code, 127, "{err}");
    let (code, _, err) =
        berth.run(&["run", "--rm", "--cap-add", "FLY", "berth-test", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("unknown capability"), "{err}");
    // A corrupt archive: refused, and nothing new in the store.
    let bad = berth.data_root().with_extension("bad.tar");
    std::fs::write(&bad, b"this is not a tar").unwrap();
    let (code, _, err) = berth.run(&["load", "-i", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (_, out, _) = berth.run(&["images", "-q"]);
    assert_eq!(out.lines().count(), 1);
    // Raw API abuse: a malformed body, a huge body, a too new version.
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/stderr",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(berth.socket())
            .args(args)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{not json",
        "http://d/containers/create",
    ]);
    assert_eq!(status, "400", "{body}");
    assert!(body.starts_with("{\"message\":\"invalid JSON"), "{body}");
    let big = berth.data_root().with_extension("big.json");
    std::fs::write(&big, vec![b' '; 100 << 20]).unwrap();
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", big.display()),
        "http://d/containers/create",
    ]);
    assert_eq!(status, "400", "{body}");
    assert!(body.contains("larger than"), "{body}");
    let _ = std::fs::remove_file(&big);
    let (status, body) = curl(&["http://d/v1.99/version"]);
    assert_eq!(status, "400", "{body}");
    assert!(body.contains("is too new"), "{body}");
    let (_, out, _) = berth.run(&["ps", "-aq"]);
    assert_eq!(out, "");
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn images_are_tagged_inspected_and_removed() {
    if !privileged("engine_daemon::images") {
        return;
    }
    let berth = Berth::start("images", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (code, _, err) =
        berth.run(&["tag", "berth-test", "example.com/team/app:v1"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) =
        berth.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    assert_eq!(names, ["berth-test:latest", "example.com/team/app:v1"]);
    let (_, out, _) = berth.run(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}} {{.Config.Cmd}} {{.Os}}",
        "example.com/team/app:v1",
    ]);
    assert_eq!(out, "1 [sh] linux\n");
    // An image in use: removing its last name needs -f.
    let (code, _, err) =
        berth.run(&["create", "--name", "user", "berth-test", "true"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = berth.run(&["rmi", "example.com/team/app:v1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "Untagged: example.com/team/app:v1\n");
    let (code, _, err) = berth.run(&["rmi", "berth-test"]);
    assert_eq!(code, 1);
    assert!(err.contains("must force"), "{err}");
    berth.run(&["rm", "user"]);
    let (code, out, err) = berth.run(&["rmi", "berth-test"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("Untagged: berth-test:latest\nDeleted: sha256:"),
        "{out}"
    );
    let (_, out, _) = berth.run(&["images", "-q"]);
    assert_eq!(out, "");
}

/// Wait (up to 10 s) until `check` holds, naming `what` if it never does.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "never: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn containers_outlive_a_killed_daemon() {
    if !privileged("engine_daemon::daemon_kill_9") {
        return;
    }
    let mut berth = Berth::start("kill-9", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    // One that keeps running and logging, one that will exit meanwhile.
    let ticker =
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "berth-test",
        "sh",
        "-c",
        ticker,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "leaver",
        "berth-test",
        "sleep",
        "1000",
    ]);
    assert_eq!(code, 0, "{err}");
    eventually("ticker logs", || {
        berth.run(&["logs", "ticker"]).1.contains("tick 3\n")
    });
    berth.kill_9();
    // The daemon is gone; the containers are not. One exits meanwhile.
    let (_, pid, _) = {
        let record =
            std::fs::read_dir(berth.data_root().join("containers")).unwrap();
        let mut leaver_pid = String::new();
        for entry in record.flatten() {
            let text =
                std::fs::read_to_string(entry.path().join("container.json"))
                    .unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if value["name"] == "leaver" {
                leaver_pid = value["state"]["pid"].to_string();
            }
        }
        (0, leaver_pid, 0)
    };
    let pid: i32 = pid.parse().unwrap();
    assert!(pid > 0, "leaver's pid {pid}");
    // SAFETY: kill(2) takes integers only.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(500));
    berth.restart(&[]);
    let (_, out, _) =
        berth.run(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["leaver exited", "ticker running"],
        "{}",
        berth.daemon_log()
    );
    let (_, out, _) =
        berth.run(&["inspect", "--format", "{{.State.ExitCode}}", "leaver"]);
    assert_eq!(out, "137\n");
    // The log has no gap: every tick, in order, across the restart.
    let last_tick = || -> u32 {
        let (_, out, _) = berth.run(&["logs", "--tail", "1", "ticker"]);
        out.trim().trim_start_matches("tick ").parse().unwrap_or(0)
    };
    let before = last_tick();
    eventually("more ticks after the restart", || last_tick() > before + 3);
    let (_, logs, _) = berth.run(&["logs", "ticker"]);
    for (n, line) in logs.lines().enumerate() {
        assert_eq!(line, format!("tick {n}"), "{logs}");
    }
    // And the restarted daemon drives it as before.
    let (code, _, err) = berth.run(&["stop", "-t", "1", "ticker"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = berth.run(&["wait", "ticker"]);
    assert_eq!(out, "137\n");
    for name in ["ticker", "leaver"] {
        let (code, _, err) = berth.run(&["rm", name]);
        assert_eq!(code, 0, "{err}");
    }
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn a_killed_shim_marks_its_container_dead_and_rm_cleans_it() {
    if !privileged("engine_daemon::shim_kill_9") {
        return;
    }
    let berth = Berth::start("shim-kill", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (code, id, err) =
        berth.run(&["run", "-d", "berth-test", "sleep", "1000"]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim();
    let shim: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(berth.exec_root().join(id).join("shim.pid"))
            .unwrap(),
    )
    .unwrap();
    // SAFETY: kill(2) takes integers only.
    unsafe { libc::kill(shim["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    eventually("dead", || {
        berth
            .run(&["inspect", "--format", "{{.State.Status}}", id])
            .1
            == "dead\n"
    });
    let (_, out, _) =
        berth.run(&["inspect", "--format", "{{.State.Error}}", id]);
    assert!(out.contains("shim died"), "{out}");
    let pid =
        std::fs::read_to_string(berth.exec_root().join(id).join("init.pid"))
            .unwrap();
    let (code, _, err) = berth.run(&["rm", "-f", id]);
    assert_eq!(code, 0, "{err}");
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
    // The orphaned container went with it.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
    assert!(
        stat.map_or(true, |s| s.contains(") Z ")),
        "the container still runs"
    );
}

#[test]
fn a_terminal_logs_follow_and_many_at_once() {
    if !privileged("engine_daemon::tty_follow_concurrent") {
        return;
    }
    let berth = Berth::start("tty", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    // -it under script(1), which gives the docker CLI a terminal.
    let (code, text) = in_a_terminal(&format!(
        "{} run --rm -it berth-test sh -c 'tty; exit 3'",
        berth.docker_line()
    ));
    assert_eq!(code, Some(3), "{text}{}", berth.daemon_log());
    assert!(text.contains("/dev/pts/0\r\n"), "{text:?}");
    // logs -f follows a running container to its end.
    let script = "for i in 1 2 3; do echo line $i; sleep 0.2; done";
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "slow",
        "berth-test",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = berth.run(&["logs", "-f", "slow"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "line 1\nline 2\nline 3\n"),
        "{err}"
    );
    let (_, out, _) = berth.run(&["logs", "--tail", "1", "-t", "slow"]);
    assert!(
        out.ends_with("Z line 3\n") && out.starts_with("20"),
        "{out}"
    );
    berth.run(&["rm", "slow"]);
    // Twenty at once: all succeed, each with its own output.
    let runs: Vec<_> = (0..20)
        .map(|n| {
            let mut command = berth.docker(&[
                "run",
                "--rm",
                "berth-test",
                "sh",
                "-c",
                &format!("echo run {n}"),
            ]);
            std::thread::spawn(move || command.output().unwrap())
        })
        .collect();
    for (n, run) in runs.into_iter().enumerate() {
        let out = run.join().unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned()
            ),
            (Some(0), format!("run {n}\n")),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eventually("all removed", || berth.run(&["ps", "-aq"]).1.is_empty());
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn a_daemon_killed_in_the_middle_of_create_and_rm_leaves_a_consistent_store() {
    if !privileged("engine_daemon::kill_9_loop") {
        return;
    }
    let mut berth = Berth::start("kill-9-loop", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    for round in 0..8u64 {
        let mut run =
            berth.docker(&["run", "-d", "berth-test", "sleep", "1000"]);
        // The container of the round before, if any, removed meanwhile.
        let (_, ids, _) = berth.run(&["ps", "-aq"]);
        let mut rm =
            berth.docker(&["rm", "-f", ids.lines().next().unwrap_or("none")]);
        let a = std::thread::spawn(move || run.output());
        let b = std::thread::spawn(move || rm.output());
        std::thread::sleep(std::time::Duration::from_millis(15 * (round % 6)));
        berth.kill_9();
        let _ = (a.join(), b.join());
        berth.restart(&[]);
        // Whatever was caught halfway, the daemon answers and every
        // container it lists is whole enough to inspect.
        let (code, ids, err) = berth.run(&["ps", "-aq"]);
        assert_eq!(code, 0, "{err}");
        for id in ids.lines() {
            let (code, _, err) = berth.run(&["inspect", id]);
            assert_eq!(code, 0, "round {round}: {err}");
        }
    }
    let (_, ids, _) = berth.run(&["ps", "-aq"]);
    for id in ids.lines() {
        let (code, _, err) = berth.run(&["rm", "-f", id]);
        assert_eq!(code, 0, "{err}{}", berth.daemon_log());
    }
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn hostile_containers_fast_exits_and_a_second_daemon() {
    if !privileged("engine_daemon::hostile") {
        return;
    }
    let berth = Berth::start("hostile", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    // A container that leaves a FIFO where the daemon reads the image's
    // users: the next start must neither hang nor read it.
    let (code, _, err) = berth.run(&[
        "run",
        "--name",
        "fifo",
        "berth-test",
        "sh",
        "-c",
        "rm /etc/passwd && mkfifo /etc/passwd",
    ]);
    assert_eq!(code, 0, "{err}");
    let started = std::process::Command::new("timeout")
        .arg("20")
        .args([
            "env",
            &format!("DOCKER_HOST=unix://{}", berth.socket().display()),
        ])
        .args(["docker", "start", "-a", "fifo"])
        .env("DOCKER_CONFIG", berth.data_root().with_extension("docker"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // The FIFO stays (the command fails on it the second time): what
    // matters is that start answered.
    assert_ne!(started.status.code(), Some(124), "start hung on the FIFO");
    // Processes that end at once are recorded as exited, never running.
    for _ in 0..10 {
        let (code, _, err) = berth.run(&["run", "-d", "berth-test", "true"]);
        assert_eq!(code, 0, "{err}");
    }
    eventually("every quick container exited", || {
        let (_, out, _) = berth.run(&["ps", "-a", "--format", "{{.Status}}"]);
        out.lines().count() == 11
            && out.lines().all(|l| l.starts_with("Exited ("))
    });
    // The end of a big output reaches the attached client in full.
    let (code, out, err) = berth.run(&[
        "run",
        "--rm",
        "berth-test",
        "sh",
        "-c",
        "head -c 3000000 /dev/zero | tr '\\0' x; echo",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.len(), 3_000_001);
    // A second daemon on the same data root is refused before it
    // touches anything.
    let mut second = std::process::Command::new(
        berth_tests::workspace_root().join(berth_tests::step_binary("berth")),
    )
    .arg("daemon")
    .arg("--data-root")
    .arg(berth.data_root())
    .args(["--exec-root", "/run/berth-test/hostile-second"])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let status = berth_tests::wait_at_most(
        &mut second,
        std::time::Duration::from_secs(10),
    )
    .expect("a second daemon ran on the same data root");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("another daemon is using"), "{err}");
    let _ = std::fs::remove_dir_all("/run/berth-test/hostile-second");
    let (_, ids, _) = berth.run(&["ps", "-aq"]);
    assert_eq!(ids.lines().count(), 11);
}

#[test]
fn an_attach_stream_byte_by_byte() {
    if !privileged("engine_daemon::attach_bytes") {
        return;
    }
    use std::io::{Read, Write};
    let berth = Berth::start("api-bytes", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let script = "echo hello; sleep 0.1; echo oops >&2";
    let (code, _, err) = berth.run(&[
        "create",
        "--name",
        "talker",
        "berth-test",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(code, 0, "{err}");
    let request = "POST /v1.45/containers/talker/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\n\
                   Host: berth\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n";
    let mut stream =
        std::os::unix::net::UnixStream::connect(berth.socket()).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    // The response's head, up to its empty line; then the stream is ours.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let (code, _, err) = berth.run(&["start", "talker"]);
    assert_eq!(code, 0, "{err}");
    let mut frames = Vec::new();
    stream.read_to_end(&mut frames).unwrap();
    let text = format!(
        "# the request\n{}\n# the response's head\n{}\n# docker start talker; then the frames\n{}",
        request.replace("\r\n", "\\r\\n\n"),
        String::from_utf8_lossy(&head).replace("\r\n", "\\r\\n\n"),
        berth_tests::daemons::render_frames(&frames),
    );
    berth.run(&["rm", "talker"]);
    let mut settings = berth_tests::snapshot_settings();
    settings.add_filter(r"(?m)^date: .*$", "date: [DATE]\\r\\n");
    settings.bind(|| insta::assert_snapshot!("engine_api_attach", text));
}

#[test]
fn pause_unpause_restart_and_rename() {
    if !privileged("engine_daemon::pause") {
        return;
    }
    let berth = Berth::start("pause", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let counter = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done";
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "pa",
        "berth-test",
        "sh",
        "-c",
        counter,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines = || berth.run(&["logs", "pa"]).1.lines().count();
    eventually("output", || lines() > 2);
    let (code, _, err) = berth.run(&["pause", "pa"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = berth.run(&["ps", "--format", "{{.Status}}"]);
    assert!(out.trim_end().ends_with("(Paused)"), "{out}");
    // Frozen: not a line more.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let frozen = lines();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(lines(), frozen);
    let (code, _, err) = berth.run(&["pause", "pa"]);
    assert_eq!(code, 1);
    assert!(err.contains("is already paused"), "{err}");
    let (code, _, err) = berth.run(&["unpause", "pa"]);
    assert_eq!(code, 0, "{err}");
    eventually("output again", || lines() > frozen + 2);
    // A name in use cannot be taken by a rename either.
    let (code, _, err) =
        berth.run(&["create", "--name", "taken", "berth-test", "true"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&["rename", "pa", "taken"]);
    assert_eq!(code, 1);
    assert!(err.contains("is already in use"), "{err}");
    berth.run(&["rm", "taken"]);
    let (code, _, err) = berth.run(&["rename", "pa", "qa"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = berth.run(&["inspect", "--type", "container", "pa"]);
    assert_eq!(code, 1);
    let inspect =
        |what: &str| berth.run(&["inspect", "--format", what, "qa"]).1;
    let started = inspect("{{.State.StartedAt}}");
    let (code, _, err) = berth.run(&["restart", "-t", "1", "qa"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(inspect("{{.State.Status}}"), "running\n");
    assert_ne!(inspect("{{.State.StartedAt}}"), started);
    // A paused container is stopped and removed too.
    let (code, _, err) = berth.run(&["pause", "qa"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&["rm", "-f", "qa"]);
    assert_eq!(code, 0, "{err}");
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn docker_exec_runs_in_the_container() {
    if !privileged("engine_daemon::exec") {
        return;
    }
    let berth = Berth::start("exec", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "host",
        "-e",
        "FROM=image",
        "berth-test",
        "sleep",
        "1000",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = berth.run(&["exec", "host", "echo", "hi"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hi\n"),
        "{err}{}",
        berth.daemon_log()
    );
    let (code, _, _) = berth.run(&["exec", "host", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3);
    let (_, out, _) = berth.run(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/tmp",
        "host",
        "sh",
        "-c",
        "echo $X $FROM $(pwd)",
    ]);
    assert_eq!(out, "1 image /tmp\n");
    let (_, out, _) = berth.run(&["exec", "-u", "nobody", "host", "id", "-u"]);
    assert_eq!(out, "65534\n");
    // Detached: it runs on after the command returns.
    let (code, _, err) = berth.run(&[
        "exec",
        "-d",
        "host",
        "sh",
        "-c",
        "sleep 0.3; touch /tmp/done",
    ]);
    assert_eq!(code, 0, "{err}");
    eventually("the detached exec ran", || {
        berth.run(&["exec", "host", "test", "-f", "/tmp/done"]).0 == 0
    });
    // stdin, and its end.
    let mut cat = berth.docker(&["exec", "-i", "host", "cat"]);
    cat.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cat.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"typed in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"typed in\n"[..])
    );
    // A terminal of its own.
    let (code, text) = in_a_terminal(&format!(
        "{} exec -it host sh -c 'tty; exit 4'",
        berth.docker_line()
    ));
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    // What cannot run says why (on the stream, as dockerd does), and
    // exits as a shell would.
    let (code, out, err) = berth.run(&["exec", "host", "no-such-program"]);
    assert_eq!(code, 127, "{out}{err}");
    assert!(out.contains("executable file not found"), "{out}{err}");
    berth.run(&["stop", "-t", "0", "host"]);
    let (code, _, err) = berth.run(&["exec", "host", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not running"), "{err}");
    let (code, _, err) = berth.run(&["rm", "host"]);
    assert_eq!(code, 0, "{err}");
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn save_load_and_import_round_trip() {
    if !privileged("engine_daemon::save_import") {
        return;
    }
    let berth = Berth::start("save", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (_, id, _) =
        berth.run(&["image", "inspect", "--format", "{{.Id}}", "berth-test"]);
    let saved = berth.data_root().with_extension("saved.tar");
    let (code, _, err) =
        berth.run(&["save", "-o", saved.to_str().unwrap(), "berth-test"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&["rmi", "berth-test"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = berth.run(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Loaded image: berth-test:latest\n"),
        "{err}"
    );
    let (_, again, _) =
        berth.run(&["image", "inspect", "--format", "{{.Id}}", "berth-test"]);
    assert_eq!(again, id, "the same image after save and load");
    // The saved tar is also an OCI layout, as Docker 25 writes it.
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&saved)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listed.stdout);
    for name in ["oci-layout", "index.json", "manifest.json"] {
        assert!(names.lines().any(|l| l == name), "{name} not in {names}");
    }
    // import: a rootfs tar becomes a one-layer image that runs.
    let rootfs_tar = berth.data_root().with_extension("rootfs.tar.gz");
    let made = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&rootfs_tar)
        .arg("-C")
        .arg(rootfs())
        .arg(".")
        .status()
        .unwrap();
    assert!(made.success());
    let (code, out, err) =
        berth.run(&["import", rootfs_tar.to_str().unwrap(), "imported:v1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("sha256:"), "{out}");
    let (code, out, err) = berth.run(&[
        "run",
        "--rm",
        "imported:v1",
        "/bin/echo",
        "from an import",
    ]);
    assert_eq!((code, out.as_str()), (0, "from an import\n"), "{err}");
    // Not a tar: refused, and nothing is left of it.
    let (_, before, _) = berth.run(&["images", "-q"]);
    let junk = berth.data_root().with_extension("junk");
    std::fs::write(&junk, vec![b'j'; 4096]).unwrap();
    let (code, _, err) =
        berth.run(&["import", junk.to_str().unwrap(), "junk:v1"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid rootfs tar"), "{err}");
    let (_, after, _) = berth.run(&["images", "-q"]);
    assert_eq!(before, after);
    for file in [saved, rootfs_tar, junk] {
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn top_diff_and_commit() {
    if !privileged("engine_daemon::top_diff_commit") {
        return;
    }
    let berth = Berth::start("commit", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let script = "rm /etc/hostname.orig 2>/dev/null; mkdir /data && echo kept > /data/file && rm /bin/vi && touch /tmp/marker && exec sleep 1000";
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "worker",
        "-e",
        "MODE=saved",
        "berth-test",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(code, 0, "{err}");
    eventually("the changes", || {
        berth.run(&["diff", "worker"]).1.contains("A /tmp/marker")
    });
    let (code, out, err) = berth.run(&["diff", "worker"]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "C /bin",
        "D /bin/vi",
        "A /data",
        "A /data/file",
        "C /tmp",
        "A /tmp/marker",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} not in:\n{out}");
    }
    // top: the host's ps, the container's processes only.
    let (code, out, err) = berth.run(&["top", "worker"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("UID"), "{out}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(rows[0].ends_with("sleep 1000"), "{out}");
    // commit: the changes as a layer, the config with them.
    let (code, image, err) =
        berth.run(&["commit", "-m", "with data", "worker", "committed:v1"]);
    assert_eq!(code, 0, "{err}{}", berth.daemon_log());
    assert!(image.starts_with("sha256:"), "{image}");
    let (_, layers, _) = berth.run(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        "committed:v1",
    ]);
    assert_eq!(layers, "2\n");
    let (code, out, err) = berth.run(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        "committed:v1",
        "-c",
        "cat /data/file; echo $MODE; test -e /bin/vi || echo no vi",
    ]);
    assert_eq!((code, out.as_str()), (0, "kept\nsaved\nno vi\n"), "{err}");
    // Two commits of one container at once: each gets a whole layer.
    let commits: Vec<_> = ["twin:a", "twin:b"]
        .into_iter()
        .map(|name| {
            let mut command = berth.docker(&["commit", "worker", name]);
            std::thread::spawn(move || command.output().unwrap())
        })
        .collect();
    for commit in commits {
        let out = commit.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for name in ["twin:a", "twin:b"] {
        let (code, out, err) = berth.run(&[
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            name,
            "/data/file",
        ]);
        assert_eq!((code, out.as_str()), (0, "kept\n"), "{name}: {err}");
    }
    // The container went on running through the commits (paused, then
    // resumed).
    let (_, status, _) =
        berth.run(&["inspect", "--format", "{{.State.Status}}", "worker"]);
    assert_eq!(status, "running\n");
    // Unnamed images (docker's <none>): a commit without a name, and an
    // image whose name moved to another; both listed, run by ID, removed.
    let (code, unnamed, err) = berth.run(&["commit", "worker"]);
    assert_eq!(code, 0, "{err}");
    let unnamed: String = unnamed
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    let (code, _, err) = berth.run(&["tag", "twin:b", "twin:a"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) =
        berth.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut listed: Vec<&str> = out.lines().collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "<none>:<none>",
            "<none>:<none>",
            "berth-test:latest",
            "committed:v1",
            "twin:a",
            "twin:b"
        ]
    );
    let (code, out, err) = berth.run(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        &unnamed,
        "/data/file",
    ]);
    assert_eq!((code, out.as_str()), (0, "kept\n"), "{err}");
    let (code, out, err) = berth.run(&["rmi", &unnamed]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Deleted: sha256:"), "{out}");
    let (_, out, _) = berth.run(&["images", "--format", "{{.Repository}}"]);
    assert_eq!(out.lines().filter(|l| *l == "<none>").count(), 1, "{out}");
    berth.run(&["rm", "-f", "worker"]);
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn zstd_and_gzip_layers_load_and_stack_with_whiteouts() {
    if !privileged("engine_daemon::compressed_layers") {
        return;
    }
    use berth_tests::daemons::{
        digest, docker_archive_of, layer, rootfs_layer,
    };
    let berth = Berth::start("layers", &[]);
    // rootfs (plain), then a zstd layer adding two files, then a gzip
    // layer adding one and whiting out one of the zstd layer's.
    let [zstd, gzip] = berth_tests::daemons::stacked_layers();
    let archive =
        docker_archive_of("layered:v1", &[rootfs_layer(rootfs()), zstd, gzip]);
    let path = berth.data_root().with_extension("layered.tar");
    std::fs::write(&path, archive).unwrap();
    let (code, out, err) = berth.run(&["load", "-i", path.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Loaded image: layered:v1\n"),
        "{err}"
    );
    let (_, layers, _) = berth.run(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        "layered:v1",
    ]);
    assert_eq!(layers, "3\n");
    let (code, out, err) = berth.run(&[
        "run", "--rm", "layered:v1", "sh", "-c",
        "cat /etc/from-zstd /etc/from-gzip; test -e /etc/hidden-later || echo whited-out",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "z\ng\nwhited-out\n"),
        "{err}{}",
        berth.daemon_log()
    );
    // A zstd layer whose content is not what the config says: refused
    // when it is unpacked, one line, and nothing of it kept.
    let other = ruzstd::encoding::compress_to_vec(
        layer(&[("etc/x", "x\n")]).as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    // (A diff ID whose snapshot exists already would not be unpacked
    // again at all: its content is known good.)
    let claimed = digest(&layer(&[("etc/y", "y\n")]));
    let lying = docker_archive_of(
        "lying:v1",
        &[rootfs_layer(rootfs()), (other, claimed)],
    );
    std::fs::write(&path, lying).unwrap();
    let (code, _, err) = berth.run(&["load", "-i", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&["run", "--rm", "lying:v1", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("diff_id") || err.contains("diff ID"), "{err}");
    let _ = std::fs::remove_file(&path);
    // Garbage collection: an image removed under a running container
    // keeps its blobs and snapshots until the container goes.
    let entries = |dir: &str| {
        std::fs::read_dir(berth.data_root().join(dir))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "user",
        "layered:v1",
        "sleep",
        "1000",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&["rmi", "lying:v1"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth.run(&["rmi", "-f", "layered:v1"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = berth.run(&["exec", "user", "cat", "/etc/from-gzip"]);
    assert_eq!((code, out.as_str()), (0, "g\n"));
    assert_eq!(entries("snapshots/sha256"), 3);
    assert_eq!(
        entries("image/blobs/sha256"),
        5,
        "3 layers, a config, a manifest"
    );
    let (code, _, _) = berth.run(&["rm", "-f", "user"]);
    assert_eq!(code, 0);
    assert_eq!(entries("snapshots/sha256"), 0);
    assert_eq!(entries("image/blobs/sha256"), 0);
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

#[test]
fn load_and_import_keep_only_what_images_use() {
    if !privileged("engine_daemon::load_keeps") {
        return;
    }
    use berth_tests::daemons::{
        digest, docker_archive_of, rootfs_layer, tar_of,
    };
    let berth = Berth::start("load-keeps", &[]);
    let blobs = || {
        std::fs::read_dir(berth.data_root().join("image/blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // docker save's legacy files beside the image: not kept as blobs.
    let archive = docker_archive_of("kept:v1", &[rootfs_layer(rootfs())]);
    let mut entries = Vec::new();
    let mut tar = tar::Archive::new(archive.as_slice());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        entries.push((name, bytes));
    }
    entries.push(("repositories".into(), br#"{"kept":{"v1":"x"}}"#.to_vec()));
    entries.push(("VERSION".into(), b"1.0".to_vec()));
    let files: Vec<(String, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.clone(), b.as_slice()))
        .collect();
    let path = berth.data_root().with_extension("legacy.tar");
    std::fs::write(&path, tar_of(&files)).unwrap();
    let (code, out, err) = berth.run(&["load", "-i", path.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Loaded image: kept:v1\n"),
        "{err}"
    );
    assert_eq!(blobs(), 3, "a layer, a config, a manifest");
    // An import of bytes that are another image's blob (its config) but
    // not a tar: refused, and the image it belongs to keeps its blob.
    let (_, id, _) =
        berth.run(&["image", "inspect", "-f", "{{.Id}}", "kept:v1"]);
    let config = berth
        .data_root()
        .join("image/blobs/sha256")
        .join(id.trim().trim_start_matches("sha256:"));
    assert_eq!(digest(&std::fs::read(&config).unwrap()), id.trim());
    let (code, _, err) =
        berth.run(&["import", config.to_str().unwrap(), "bogus:v1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("invalid rootfs tar"), "{err}");
    assert!(config.exists(), "the import removed another image's blob");
    let (code, out, err) =
        berth.run(&["run", "--rm", "kept:v1", "echo", "intact"]);
    assert_eq!((code, out.as_str()), (0, "intact\n"), "{err}");
    let _ = std::fs::remove_file(&path);
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}
