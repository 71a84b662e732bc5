//! What the engine reports and copies: `events` (past and live, filtered),
//! `stats` (the cgroup's accounting as docker shows it) and `cp` (both
//! ways, and never outside the container), through the docker CLI and
//! through berth's own.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_tests::daemons::Berth;
use berth_tests::fixture::rootfs;
use berth_tests::privileged;

fn now() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

#[test]
fn events_are_reported_as_docker_reports_them() {
    if !privileged("engine_monitor::events") {
        return;
    }
    let berth = Berth::start("events", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    // A live stream, filtered to one container, started first. It asks
    // for the events since now, so that one that happens before the
    // daemon has the stream's subscription is replayed, not lost.
    let since = now();
    let mut live = berth
        .docker(&[
            "events",
            "--since",
            &since,
            "--filter",
            "container=watched",
            "--format",
            "{{.Action}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let run = |args: &[&str]| {
        let (code, out, err) = berth.run(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}{}", berth.daemon_log());
    };
    run(&[
        "create",
        "--name",
        "watched",
        "-l",
        "tier=front",
        "berth-test",
        "sleep",
        "1000",
    ]);
    run(&["start", "watched"]);
    run(&["pause", "watched"]);
    run(&["unpause", "watched"]);
    run(&["rename", "watched", "seen"]);
    run(&["rename", "seen", "watched"]);
    run(&["kill", "watched"]);
    run(&["wait", "watched"]);
    run(&["rm", "watched"]);
    let (code, _, _) = berth.run(&[
        "run",
        "--rm",
        "--name",
        "brief",
        "berth-test",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(code, 3);
    run(&["tag", "berth-test", "other:v1"]);
    run(&["rmi", "other:v1"]);
    let until = now();
    let format = "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}";
    let (code, out, err) = berth.run(&[
        "events", "--since", &since, "--until", &until, "--format", format,
    ]);
    assert_eq!(code, 0, "{err}");
    let want = "container create watched\n\
        container start watched\n\
        container pause watched\n\
        container unpause watched\n\
        container rename seen\n\
        container rename watched\n\
        container kill watched\n\
        container die watched\n\
        container destroy watched\n\
        container create brief\n\
        container attach brief\n\
        container start brief\n\
        container die brief\n\
        container destroy brief\n\
        image tag other:v1\n\
        image untag other:v1\n";
    assert_eq!(out, want);
    // Attributes as docker prints them; berth's events print the same.
    let (_, theirs, _) = berth.run(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "event=die",
    ]);
    let (code, ours, err) = berth.cli(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "event=die",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ours, theirs);
    let lines: Vec<&str> = ours.lines().collect();
    assert_eq!(lines.len(), 2, "{ours}");
    assert!(
        lines[0].ends_with(
            "(exitCode=137, image=berth-test, name=watched, tier=front)"
        ),
        "{ours}"
    );
    assert!(
        lines[1].ends_with("(exitCode=3, image=berth-test, name=brief)"),
        "{ours}"
    );
    let (_, out, _) = berth.run(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=image",
        "--filter",
        "event=untag",
        "--format",
        "{{.Actor.ID}}",
    ]);
    assert!(
        out.starts_with("sha256:") && out.lines().count() == 1,
        "{out}"
    );
    // The live stream saw the watched container's life, in order (not
    // its rename to "seen": the filter matches names as they are then).
    let mut actions = Vec::new();
    let mut reader = BufReader::new(live.stdout.take().unwrap());
    while actions.last().map(String::as_str) != Some("destroy") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{actions:?}");
        actions.push(line.trim().to_owned());
    }
    let _ = live.kill();
    let _ = live.wait();
    assert_eq!(
        actions,
        [
            "create", "start", "pause", "unpause", "rename", "kill", "die",
            "destroy"
        ]
    );
    // A filter the engine does not know: one line, 400.
    let (code, _, err) =
        berth.run(&["events", "--filter", "colour=red", "--until", "0s"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "Error response from daemon: invalid filter 'colour'"
    );
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

/// `docker stats --no-stream --format FORMAT NAME`'s line.
fn stats_line(berth: &Berth, format: &str, name: &str) -> String {
    let (code, out, err) =
        berth.run(&["stats", "--no-stream", "--format", format, name]);
    assert_eq!(code, 0, "{err}{}", berth.daemon_log());
    out.trim().to_owned()
}

/// A size as docker prints it (`20.5MiB`), in bytes.
fn bytes_of(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other}"),
    };
    number.parse::<f64>().unwrap() * scale
}

#[test]
fn stats_show_the_cgroups_accounting() {
    if !privileged("engine_monitor::stats") {
        return;
    }
    let berth = Berth::start("stats", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    // 24 MiB in /dev/shm (a tmpfs: memory charged to the container, not
    // reclaimable cache), four processes, a memory limit.
    let script = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; \
                  sleep 1000 & sleep 1000 & sleep 1000 & wait";
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "holder",
        "--memory",
        "96m",
        "berth-test",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(code, 0, "{err}{}", berth.daemon_log());
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "spinner",
        "berth-test",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    assert_eq!(code, 0, "{err}");
    let start = Instant::now();
    let usage = loop {
        let line = stats_line(&berth, "{{.MemUsage}}|{{.PIDs}}", "holder");
        let (memory, pids) = line.split_once('|').unwrap();
        let (used, limit) = memory.split_once(" / ").unwrap();
        assert_eq!(limit, "96MiB", "{line}");
        if pids == "4" && bytes_of(used) >= 24.0 * 1024.0 * 1024.0 {
            break bytes_of(used);
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{line}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(usage < 90.0 * 1024.0 * 1024.0, "{usage}");
    // The spinner uses a CPU; the sleepers next to nothing.
    let cpu = |name: &str| -> f64 {
        let line = stats_line(&berth, "{{.CPUPerc}}", name);
        line.trim_end_matches('%').parse().unwrap()
    };
    assert!(cpu("spinner") > 20.0, "spinner");
    assert!(cpu("holder") < 20.0, "holder");
    // berth's table has docker's columns, one row per running container.
    let (code, ours, err) = berth.cli(&["stats", "--no-stream"]);
    assert_eq!(code, 0, "{err}");
    let (_, theirs, _) = berth.run(&["stats", "--no-stream"]);
    let header = |text: &str| text.lines().next().unwrap_or("").to_owned();
    assert_eq!(header(&ours), header(&theirs));
    let names = |text: &str| {
        let mut names: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&ours), ["holder", "spinner"]);
    assert_eq!(names(&theirs), ["holder", "spinner"]);
    // A stopped container has only zeros.
    let (code, _, _) = berth.run(&["rm", "-f", "spinner"]);
    assert_eq!(code, 0);
    berth.run(&["create", "--name", "idle", "berth-test", "true"]);
    assert_eq!(
        stats_line(&berth, "{{.MemUsage}} {{.PIDs}}", "idle"),
        "0B / 0B 0"
    );
    let (code, _, _) = berth.run(&["rm", "-f", "holder", "idle"]);
    assert_eq!(code, 0);
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

/// Every path under `dir`, relative, sorted, with a symlink's target.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    fs::read_link(&path).unwrap().display()
                ));
            } else if meta.is_dir() {
                out.push(format!("{rel}/"));
                stack.push(path);
            } else {
                out.push(format!(
                    "{rel} = {}",
                    fs::read_to_string(&path).unwrap().trim()
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn cp_copies_both_ways_and_never_outside_the_container() {
    if !privileged("engine_monitor::cp") {
        return;
    }
    let berth = Berth::start("cp", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let work = berth.data_root().with_extension("cp");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("src/dir/sub")).unwrap();
    fs::write(work.join("src/dir/a"), "alpha").unwrap();
    fs::write(work.join("src/dir/sub/b"), "beta").unwrap();
    std::os::unix::fs::symlink("a", work.join("src/dir/link")).unwrap();
    fs::write(work.join("src/file"), "one file").unwrap();
    // A probe name nothing else uses: if a copy ever escaped to the
    // host's /etc, it would be found there.
    let probe = format!("berth-cp-probe-{}", std::process::id());
    fs::write(work.join(&probe), "escaped?").unwrap();
    let setup = "mkdir -p /data && echo inside > /etc/only-in-container && \
                 ln -s /etc /tmp/etclink && ln -s /etc/only-in-container /tmp/pointer && \
                 exec sleep 1000";
    let (code, _, err) = berth.run(&[
        "run",
        "-d",
        "--name",
        "box",
        "berth-test",
        "sh",
        "-c",
        setup,
    ]);
    assert_eq!(code, 0, "{err}{}", berth.daemon_log());
    let exec = |script: &str| berth.run(&["exec", "box", "sh", "-c", script]).1;
    let start = Instant::now();
    while exec("test -L /tmp/pointer && echo ready").trim() != "ready" {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    let src = |name: &str| work.join("src").join(name).display().to_string();
    // Into the container, with docker's cp and with berth's: into a
    // directory, as a new name, over a file, a directory's contents.
    for (tool, dir) in [("docker", "/data/d"), ("berth", "/data/b")] {
        let cp = |from: &str, to: &str| {
            let args = ["cp", from, to];
            let (code, out, err) = if tool == "docker" {
                berth.run(&args)
            } else {
                berth.cli(&args)
            };
            assert_eq!(code, 0, "{tool} cp {from} {to}: {out}{err}");
        };
        exec(&format!("mkdir -p {dir} && echo old > {dir}/file"));
        cp(&src("dir"), &format!("box:{dir}"));
        cp(&src("dir"), &format!("box:{dir}/renamed"));
        cp(&src("file"), &format!("box:{dir}/file"));
        cp(&format!("{}/.", src("dir")), &format!("box:{dir}/contents"));
        let listing = exec(&format!(
            "cd {dir} && find . | sort && echo $(cat file) && readlink dir/link"
        ));
        assert_eq!(
            listing,
            ".\n./contents\n./contents/a\n./contents/link\n./contents/sub\n./contents/sub/b\n\
             ./dir\n./dir/a\n./dir/link\n./dir/sub\n./dir/sub/b\n./file\n\
             ./renamed\n./renamed/a\n./renamed/link\n./renamed/sub\n./renamed/sub/b\n\
             one file\na\n",
            "{tool}"
        );
    }
    // Out of the container: a directory, a file under a new name, a
    // directory's contents; the same with both tools.
    for tool in ["docker", "berth"] {
        let out = work.join(format!("out-{tool}"));
        fs::create_dir_all(&out).unwrap();
        let cp = |from: &str, to: &Path| {
            let to = to.display().to_string();
            let args = ["cp", from, &to];
            let (code, o, err) = if tool == "docker" {
                berth.run(&args)
            } else {
                berth.cli(&args)
            };
            assert_eq!(code, 0, "{tool} cp {from} {to}: {o}{err}");
        };
        cp("box:/data/d/dir", &out);
        cp("box:/data/d/file", &out.join("copied"));
        cp("box:/data/d/dir/.", &out.join("contents"));
        // A symlink is copied as a symlink, never as what it points to
        // on this machine.
        cp("box:/tmp/pointer", &out);
        // Symlinks on the way resolve inside the container: its /etc.
        cp("box:/tmp/etclink/.", &out.join("etc"));
        let listing = tree(&out);
        for want in [
            "contents/",
            "contents/a = alpha",
            "contents/link -> a",
            "contents/sub/b = beta",
            "copied = one file",
            "dir/a = alpha",
            "dir/link -> a",
            "dir/sub/b = beta",
            "pointer -> /etc/only-in-container",
            "etc/only-in-container = inside",
        ] {
            assert!(
                listing.iter().any(|l| l == want),
                "{tool}: {want:?} not in {listing:#?}"
            );
        }
    }
    // Into a path whose symlink points at /etc: the container's /etc,
    // not this machine's.
    let (code, _, err) = berth.run(&[
        "cp",
        &work.join(&probe).display().to_string(),
        "box:/tmp/etclink/",
    ]);
    assert_eq!(code, 0, "{err}");
    let escaped = Path::new("/etc").join(&probe);
    let leaked = escaped.exists();
    let _ = fs::remove_file(&escaped);
    assert!(!leaked, "cp wrote {} on the host", escaped.display());
    assert_eq!(exec(&format!("cat /etc/{probe}")), "escaped?");
    // A tar on stdout; a tar from stdin.
    let tar = berth
        .docker(&["cp", "box:/data/d/file", "-"])
        .output()
        .unwrap();
    let mut archive = tar::Archive::new(tar.stdout.as_slice());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["file"]);
    let mut put = berth
        .berth(&["cp", "-", "box:/data"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), &tar.stdout)
        .unwrap();
    assert!(put.wait().unwrap().success());
    assert_eq!(exec("cat /data/file"), "one file");
    // A tree too deep to walk: an error the client sees (the response
    // fails; it does not end like a whole tar), and the daemon goes on.
    exec(
        "mkdir -p /deep && cd /deep && i=0; while [ $i -lt 300 ]; do mkdir d && cd d; i=$((i+1)); done",
    );
    let deep = work.join("deep-out");
    let (code, _, err) =
        berth.cli(&["cp", "box:/deep", &deep.display().to_string()]);
    assert_ne!(code, 0, "a cut tree reported as copied: {err}");
    let _ = fs::remove_dir_all(&deep);
    assert_eq!(exec("echo alive"), "alive\n");
    // Errors: one line each, and nothing copied.
    let (code, _, err) =
        berth.run(&["cp", "box:/no/such", &work.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Could not find the file /no/such in container box"),
        "{err}"
    );
    let (code, _, err) =
        berth.cli(&["cp", "box:/no/such", &work.display().to_string()]);
    assert_eq!(code, 125);
    assert_eq!(
        err.trim(),
        "berth: Error response from daemon: Could not find the file /no/such in container box"
    );
    let (code, _, err) = berth.run(&["cp", &src("file"), "box:/data/d/file/x"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = berth.run(&[
        "create",
        "--name",
        "sealed",
        "--read-only",
        "berth-test",
        "true",
    ]);
    assert_eq!(code, 0);
    // A file big enough that the daemon answers before the client has
    // sent it: the client must still read the answer (the daemon reads
    // the rest first), not meet a broken pipe.
    fs::write(work.join("src/big"), vec![7u8; 16 << 20]).unwrap();
    let (code, _, err) = berth.run(&["cp", &src("big"), "sealed:/tmp"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("container rootfs is marked read-only"),
        "{err}"
    );
    // A container never started: its root is there to copy into.
    let (code, _, _) = berth.run(&[
        "create",
        "--name",
        "fresh",
        "berth-test",
        "cat",
        "/copied",
    ]);
    assert_eq!(code, 0);
    let (code, _, err) = berth.run(&["cp", &src("file"), "fresh:/copied"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = berth.run(&["start", "-a", "fresh"]);
    assert_eq!((code, out.as_str()), (0, "one file"), "{err}");
    let (code, _, _) = berth.run(&["rm", "-f", "box", "sealed", "fresh"]);
    assert_eq!(code, 0);
    let _ = fs::remove_dir_all(&work);
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}
