//! The path of one `run` through the engine, captured for the book's
//! architecture chapter: the API calls the client makes (the daemon's
//! `--debug` lines), the shim the daemon launches, the runtime commands
//! the shim runs (a wrapper records them), and the processes that are
//! left running: the daemon, the shim, the container, and who is whose
//! parent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use berth_tests::daemons::{ArgvLog, Berth};
use berth_tests::fixture::rootfs;
use berth_tests::{privileged, snapshot_settings, step_binary, workspace_root};

/// Replace every 64-hex id in `text` with `ID`.
fn ids(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
            continue;
        }
        if run.len() == 64 {
            out.push_str("ID");
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// A process's parent pid and command line, from `/proc`.
fn process(pid: u32) -> (u32, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let ppid = after.split_whitespace().nth(1).unwrap().parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (ppid, argv.join(" "))
}

/// The name of a program's path (`/x/y/berth-shim` → `berth-shim`).
fn program(command: &str) -> String {
    let first = command.split_whitespace().next().unwrap_or("");
    first.rsplit('/').next().unwrap_or(first).to_owned()
}

#[test]
fn one_run_from_the_client_to_the_kernel() {
    if !privileged("engine_architecture::one_run") {
        return;
    }
    let runtime = workspace_root().join(step_binary("berth-runtime"));
    let argv = ArgvLog::new("architecture", &runtime);
    let traced = format!("traced={}", argv.runtime().display());
    let berth = Berth::start(
        "architecture",
        &[
            "--debug",
            "--runtime",
            &traced,
            "--default-runtime",
            "traced",
        ],
    );
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let before = berth.daemon_log().len();
    let (code, out, err) =
        berth.cli(&["run", "--rm", "berth-test", "echo", "hello"]);
    assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");
    let data = berth.data_root().display().to_string();
    let exec = berth.exec_root().display().to_string();
    let wrapper = argv.runtime().display().to_string();
    let normalize = |line: &str| {
        ids(line)
            .replace(&wrapper, "RUNTIME")
            .replace(&data, "DATA")
            .replace(&exec, "EXEC")
            .replace('"', "")
    };
    let mut report = String::from("berth run --rm berth-test echo hello\n\n");
    report.push_str(
        "client → daemon (HTTP on the unix socket) and daemon → shim:\n",
    );
    for line in berth.daemon_log()[before..].lines() {
        let Some(what) = line.strip_prefix("debug: ") else {
            continue;
        };
        let what = match what.strip_prefix("shim ") {
            // The shim's own path is the build's.
            Some(command) => format!(
                "launch berth-shim {}",
                command.split_once(' ').map_or("", |(_, args)| args)
            ),
            None => what.to_owned(),
        };
        report.push_str(&format!("  {}\n", normalize(&what)));
    }
    report.push_str("\nshim → runtime (each command line the runtime got):\n");
    let runs = argv.distinct(|line| normalize(line));
    for line in runs.lines() {
        report.push_str(&format!("  berth-runtime {line}\n"));
    }
    // What runs while a container does, and whose child it is.
    let (code, id, err) =
        berth.cli(&["run", "-d", "berth-test", "sleep", "1000"]);
    assert_eq!(code, 0, "{err}");
    let (_, pid, _) =
        berth.run(&["inspect", "-f", "{{.State.Pid}}", id.trim()]);
    let container: u32 = pid.trim().parse().unwrap();
    let (shim, container_cmd) = process(container);
    let (shim_parent, shim_cmd) = process(shim);
    let daemon = berth.daemon_pid();
    report.push_str(
        "\nprocesses while `berth run -d berth-test sleep 1000` runs:\n",
    );
    report.push_str(&format!(
        "  berth daemon                    parent: whoever started it\n  \
           {:<31} parent: {}\n  \
           └─ {:<28} parent: the shim\n",
        program(&shim_cmd),
        if shim_parent == daemon {
            "the daemon".to_owned()
        } else {
            "not the daemon (reparented when its launcher exited)".to_owned()
        },
        container_cmd,
    ));
    assert_eq!(program(&shim_cmd), "berth-shim");
    assert_ne!(
        shim_parent, daemon,
        "the shim must not be the daemon's child"
    );
    assert_eq!(container_cmd, "sleep 1000");
    berth.run(&["rm", "-f", id.trim()]);
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("engine_architecture_one_run", report)
    });
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}

/// `METHOD PATH` on the daemon's socket: (status, body).
fn api(berth: &Berth, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(berth.socket()).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

#[test]
fn a_wait_that_comes_after_the_removal_still_gets_the_exit_code() {
    if !privileged("engine_architecture::late_wait") {
        return;
    }
    let berth = Berth::start("late-wait", &[]);
    berth.load_rootfs(rootfs(), "berth-test:latest");
    let (status, body) = api(
        &berth,
        "POST",
        "/containers/create",
        r#"{"Image":"berth-test","Cmd":["sh","-c","exit 6"],"HostConfig":{"AutoRemove":true}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id: String = serde_json::from_str::<serde_json::Value>(&body).unwrap()
        ["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) =
        api(&berth, "POST", &format!("/containers/{id}/start"), "");
    assert_eq!(status, 204);
    // Gone: exited and removed.
    let start = std::time::Instant::now();
    while api(&berth, "GET", &format!("/containers/{id}/json"), "").0 != 404 {
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, body) = api(
        &berth,
        "POST",
        &format!("/containers/{id}/wait?condition=removed"),
        "",
    );
    assert_eq!(
        (status, body.trim()),
        (200, r#"{"Error":null,"StatusCode":6}"#)
    );
    // By name, or an id never seen: still Docker's 404.
    let (status, _) = api(&berth, "POST", "/containers/nosuch/wait", "");
    assert_eq!(status, 404);
    assert!(berth.leftovers().is_empty(), "{:?}", berth.leftovers());
}
