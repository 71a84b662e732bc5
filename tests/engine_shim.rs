//! berth-shim as the daemon uses it: launched, it detaches and holds one
//! container created by berth-runtime; through its socket the container
//! is started, attached to (frames without a terminal, raw bytes with
//! one), resized, signalled, waited for and deleted; its output is in a
//! json-file log and its exit in a record; hostile clients cannot stall
//! or break it.

mod oci;

use std::fs;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::shim::client::Client;
use berth::shim::protocol::{Failure, Status, Stream, read_frame};
use berth::shim::{Error, logs};
use berth_tests::{privileged, step_binary, workspace_root};
use oci::{bundle, fresh_root, runtime, wait_gone};
use serde_json::{Value, json};

/// One shim's world: a bundle, a runtime root, the shim's directory.
#[derive(Clone)]
struct Shim {
    name: String,
    root: PathBuf,
    dir: PathBuf,
    bundle: PathBuf,
}

impl Shim {
    /// A bundle running `args` (edited by `edit`), and empty directories.
    /// The shim's directory is under /run: its socket path must fit in a
    /// `sockaddr_un`, however deep the checkout is.
    fn new(name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> Shim {
        let root = workspace_root().join(fresh_root(&format!("shim-{name}")));
        let bundle =
            workspace_root().join(bundle(&format!("shim-{name}"), |c| {
                c["process"]["args"] = json!(args);
                edit(c)
            }));
        let dir = PathBuf::from(format!("/run/berth-test-shim/{name}"));
        if let Ok(pid) = fs::read_to_string(dir.join("shim.pid")) {
            // A shim an earlier, failed run left behind.
            let pid: Value = serde_json::from_str(&pid).unwrap_or_default();
            if let Some(pid) = pid["pid"].as_i64() {
                // SAFETY: kill(2) takes integers only.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Shim {
            name: name.to_owned(),
            root,
            dir,
            bundle,
        }
    }

    /// `berth-shim` with `extra` flags, to its end (the launcher returns
    /// once the container is created).
    fn launch(&self, extra: &[&str]) -> std::process::Output {
        self.launch_with(extra, |_| {})
    }

    fn launch_with(
        &self,
        extra: &[&str],
        edit: impl FnOnce(&mut Command),
    ) -> std::process::Output {
        let mut command =
            Command::new(workspace_root().join(step_binary("berth-shim")));
        command
            .args(["--id", &self.name])
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--runtime")
            .arg(workspace_root().join(step_binary("berth-runtime")))
            .arg("--runtime-root")
            .arg(&self.root)
            .args(extra)
            .stdin(Stdio::null());
        edit(&mut command);
        command.output().unwrap()
    }

    /// Launch and expect success; the ready line, parsed.
    fn created(&self, extra: &[&str]) -> Value {
        let out = self.launch(extra);
        assert!(
            out.status.success(),
            "berth-shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn client(&self) -> Client {
        Client::new(&self.dir)
    }

    fn root_arg(&self) -> String {
        self.root.display().to_string()
    }
}

/// Field `n` (1-based, after the command name) of /proc/PID/stat.
fn stat_field(pid: i64, n: usize) -> i64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, after) = stat.rsplit_once(')').unwrap();
    after
        .split_whitespace()
        .nth(n - 3)
        .unwrap()
        .parse()
        .unwrap()
}

/// Every frame of an attach stream, to its end: (stdout, stderr).
fn frames(mut stream: UnixStream) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some((which, bytes)) = read_frame(&mut stream).unwrap() {
        match which {
            Stream::Stdout => out.extend(bytes),
            Stream::Stderr => err.extend(bytes),
            Stream::Stdin => panic!("a stdin frame from the shim"),
        }
    }
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn a_shim_holds_a_container_logs_it_records_its_exit_and_deletes_it() {
    if !privileged("engine_shim::lifecycle") {
        return;
    }
    let shim = Shim::new(
        "lifecycle",
        &["sh", "-c", "echo out; echo err >&2; echo more; exit 3"],
        |_| {},
    );
    let ready = shim.created(&[]);
    let shim_pid = ready["shim_pid"].as_i64().unwrap();
    let pid = ready["pid"].as_i64().unwrap();
    // Detached: a session of its own, and not our child.
    assert_eq!(stat_field(shim_pid, 6), shim_pid, "session id");
    assert_ne!(stat_field(shim_pid, 4), i64::from(std::process::id()));
    // The container's first process is the shim's child (its subreaper).
    assert_eq!(stat_field(pid, 4), shim_pid);
    let client = shim.client();
    let (state_pid, status, exit) = client.state().unwrap();
    assert_eq!(
        (i64::from(state_pid), status, exit),
        (pid, Status::Created, None)
    );
    let attached = client.attach(false, true, true, false).unwrap();
    client.start().unwrap();
    let (out, err) = frames(attached);
    assert_eq!((out.as_str(), err.as_str()), ("out\nmore\n", "err\n"));
    let exit = client.wait().unwrap();
    assert_eq!(
        (exit.code, exit.signal, i64::from(exit.pid)),
        (3, None, pid)
    );
    // The record is on disk, for a daemon that was not there.
    let record: Value = serde_json::from_str(
        &fs::read_to_string(shim.dir.join("exit.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["code"], 3);
    let logged: Vec<(String, String)> = logs::read(&shim.dir)
        .unwrap()
        .into_iter()
        .map(|e| (e.stream, e.log))
        .collect();
    let mut want = vec![
        ("stdout".to_owned(), "out\n".to_owned()),
        ("stderr".to_owned(), "err\n".to_owned()),
        ("stdout".to_owned(), "more\n".to_owned()),
    ];
    // stdout and stderr are two pipes: their relative order is the
    // order the shim read them in.
    let mut sorted = logged.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "{logged:?}");
    // Without a terminal there is nothing to resize.
    match client.resize(24, 80, None) {
        Err(Error::Refused { failure, .. }) => {
            assert_eq!(failure, Failure::BadRequest)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A stopped container: no second start, no kill, a clear conflict.
    for refused in [client.start(), client.kill(15, false)] {
        match refused {
            Err(Error::Refused { failure, .. }) => {
                assert_eq!(failure, Failure::Conflict)
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    client.delete().unwrap();
    wait_gone(&shim_pid.to_string(), "the shim");
    assert!(!shim.dir.join("shim.sock").exists());
    let (_, listed, _) = runtime(&shim.root_arg(), &["list", "-q"]);
    assert_eq!(listed, "", "the runtime still knows the container");
}

#[test]
fn stdin_goes_in_and_its_end_closes_it_without_a_terminal() {
    if !privileged("engine_shim::stdin") {
        return;
    }
    let shim = Shim::new("stdin", &["sh", "-c", "cat; echo done"], |_| {});
    shim.created(&["--stdin"]);
    let client = shim.client();
    let mut attached = client.attach(true, true, true, true).unwrap();
    client.start().unwrap();
    attached.write_all(b"line one\nline two").unwrap();
    attached.shutdown(Shutdown::Write).unwrap();
    let (out, err) = frames(attached);
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("line one\nline twodone\n", "")
    );
    assert_eq!(client.wait().unwrap().code, 0);
    client.delete().unwrap();
}

#[test]
fn a_terminal_is_a_pty_that_is_resized_and_read_raw() {
    if !privileged("engine_shim::tty") {
        return;
    }
    let shim = Shim::new("tty", &["sh"], |c| {
        c["process"]["terminal"] = json!(true);
    });
    shim.created(&["--tty", "--stdin"]);
    let client = shim.client();
    let mut attached = client.attach(true, true, true, true).unwrap();
    client.start().unwrap();
    client.resize(31, 101, None).unwrap();
    attached.write_all(b"stty size; tty; exit 5\n").unwrap();
    let mut raw = String::new();
    attached.read_to_string(&mut raw).unwrap();
    // Raw pty output: the echo of what was typed, CR LF line ends.
    assert!(raw.contains("31 101\r\n"), "{raw:?}");
    assert!(raw.contains("/dev/pts/0\r\n"), "{raw:?}");
    assert_eq!(client.wait().unwrap().code, 5);
    let logged: String = logs::read(&shim.dir)
        .unwrap()
        .into_iter()
        .map(|e| e.log)
        .collect();
    assert!(logged.contains("31 101"), "{logged:?}");
    client.delete().unwrap();
}

#[test]
fn the_log_is_capped_and_rotated() {
    if !privileged("engine_shim::rotation") {
        return;
    }
    let shim = Shim::new(
        "rotation",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); done",
        ],
        |_| {},
    );
    shim.created(&["--log-max-size", "2000", "--log-max-files", "2"]);
    let client = shim.client();
    client.start().unwrap();
    assert_eq!(client.wait().unwrap().code, 0);
    let files = logs::files(&shim.dir);
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["json.log.1", "json.log"]);
    for file in &files {
        assert!(fs::metadata(file).unwrap().len() <= 2000);
    }
    let last = logs::read(&shim.dir).unwrap().pop().unwrap();
    assert_eq!(last.log, "line 399\n");
    client.delete().unwrap();
}

#[test]
fn a_failed_create_is_one_line_and_leaves_nothing() {
    if !privileged("engine_shim::failed_create") {
        return;
    }
    let shim = Shim::new("failed", &["sh"], |c| {
        c["process"]["cwd"] = json!("relative/cwd");
    });
    let out = shim.launch(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("berth-shim: runtime create failed: "),
        "{err}"
    );
    assert!(err.contains("cwd"), "{err}");
    assert!(!shim.dir.join("shim.sock").exists());
    let (_, listed, _) = runtime(&shim.root_arg(), &["list", "-q"]);
    assert_eq!(listed, "");
    // A socket path that cannot be bound is refused before anything.
    let mut long = shim.clone();
    long.dir =
        PathBuf::from(format!("/run/berth-test-shim/{}", "x".repeat(120)));
    let out = long.launch(&[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("longer than 107 bytes")
    );
}

#[test]
fn inherited_fds_do_not_reach_the_shim() {
    if !privileged("engine_shim::fds") {
        return;
    }
    let shim = Shim::new("fds", &["sleep", "1000"], |_| {});
    let secret = shim.dir.join("secret");
    fs::write(&secret, "the daemon's").unwrap();
    let file = fs::File::open(&secret).unwrap();
    let out = shim.launch_with(&[], |command| {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = file.as_raw_fd();
        // SAFETY: dup2 onto fd 7 in the child before exec, no allocation.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(fd, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready: Value = serde_json::from_slice(&out.stdout).unwrap();
    for pid in [&ready["shim_pid"], &ready["pid"]] {
        let pid = pid.as_i64().unwrap();
        for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
            let target = fs::read_link(fd.unwrap().path()).unwrap_or_default();
            assert_ne!(target, secret, "process {pid} holds the daemon's fd");
        }
    }
    let client = shim.client();
    client.kill(9, false).unwrap();
    assert_eq!(client.wait().unwrap().code, 137);
    client.delete().unwrap();
}

#[test]
fn hostile_clients_get_an_error_and_cannot_stall_the_container() {
    if !privileged("engine_shim::hostile") {
        return;
    }
    let shim = Shim::new(
        "hostile",
        // Printable bytes: a NUL takes six bytes of JSON in the log, and
        // the records after "end" would rotate it away.
        &[
            "sh",
            "-c",
            "head -c 60000000 /dev/zero | tr '\\0' x; echo end >&2",
        ],
        |_| {},
    );
    shim.created(&["--log-max-size", "200000", "--log-max-files", "2"]);
    let socket = shim.dir.join("shim.sock");
    let ask = |bytes: &[u8]| {
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream.write_all(bytes).unwrap();
        let _ = stream.shutdown(Shutdown::Write);
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply
    };
    let reply = ask(b"{\"op\":\"kill\",\"signal\":\"KILL\"}\n");
    assert!(reply.contains("\"failure\":\"bad_request\""), "{reply}");
    let reply = ask(&vec![b'x'; 100_000]);
    assert!(reply.contains("request too long"), "{reply}");
    // Connected and silent: the shim serves others meanwhile.
    let _silent = UnixStream::connect(&socket).unwrap();
    // A waiter that hangs up: the shim does not spin on it.
    let shim_pid = fs::read_to_string(shim.dir.join("shim.pid")).unwrap();
    let shim_pid = serde_json::from_str::<Value>(&shim_pid).unwrap()["pid"]
        .as_i64()
        .unwrap();
    UnixStream::connect(&socket)
        .unwrap()
        .write_all(b"{\"op\":\"wait\"}\n")
        .unwrap();
    let cpu = || stat_field(shim_pid, 14) + stat_field(shim_pid, 15);
    let before = cpu();
    std::thread::sleep(Duration::from_millis(500));
    let ticks = cpu() - before;
    assert!(ticks < 10, "the shim spun {ticks} ticks in 0.5 s");
    // Attached and never reading: cut off once 8 MiB pile up, while the
    // container writes 60 MB and ends; the shim never holds it all.
    let client = shim.client();
    let stuck = client.attach(false, true, true, false).unwrap();
    let (status_pid, _, _) = client.state().unwrap();
    assert!(status_pid > 0);
    client.start().unwrap();
    let start = Instant::now();
    let exit = client.wait().unwrap();
    assert_eq!(exit.code, 0);
    assert!(start.elapsed() < Duration::from_secs(60));
    drop(stuck);
    let shim_pid = fs::read_to_string(shim.dir.join("shim.pid")).unwrap();
    let shim_pid: Value = serde_json::from_str(&shim_pid).unwrap();
    let status =
        fs::read_to_string(format!("/proc/{}/status", shim_pid["pid"]))
            .unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 40_000, "the shim's peak RSS was {peak_kb} kB");
    // The log kept the end and stayed under its cap.
    let entries = logs::read(&shim.dir).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.stream == "stderr" && e.log == "end\n")
    );
    for file in logs::files(&shim.dir) {
        assert!(fs::metadata(file).unwrap().len() <= 200_000);
    }
    client.delete().unwrap();
}

#[test]
fn a_deleted_shim_still_sends_an_attacher_the_end_of_the_output() {
    if !privileged("engine_shim::flush") {
        return;
    }
    let shim =
        Shim::new("flush", &["sh", "-c", "head -c 2000000 /dev/zero"], |_| {});
    shim.created(&[]);
    let client = shim.client();
    // Attached, and not reading until the container is gone and the
    // shim deleted: most of the output waits in the shim.
    let attached = client.attach(false, true, true, false).unwrap();
    client.start().unwrap();
    assert_eq!(client.wait().unwrap().code, 0);
    let deleter = std::thread::spawn(move || client.delete());
    let (out, _) = frames(attached);
    assert_eq!(out.len(), 2_000_000);
    deleter.join().unwrap().unwrap();
}

#[test]
fn what_a_shim_keeps_and_sends_as_the_book_shows_it() {
    if !privileged("engine_shim::book") {
        return;
    }
    let shim = Shim::new(
        "book",
        &[
            "sh",
            "-c",
            "echo out; sleep 0.1; echo err >&2; sleep 0.1; echo more; exit 3",
        ],
        |_| {},
    );
    let ready = shim.created(&[]);
    let client = shim.client();
    let mut attached = client.attach(false, true, true, false).unwrap();
    client.start().unwrap();
    let mut stream = Vec::new();
    attached.read_to_end(&mut stream).unwrap();
    client.wait().unwrap();
    let mut files: Vec<String> = fs::read_dir(&shim.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let text = format!(
        "$ berth-shim --id book --bundle BUNDLE --dir DIR --runtime berth-runtime\n{ready}\n\
         \n$ ls DIR\n{}\n\
         \n# attach (stdout, stderr), start: the stream, frame by frame\n{}\
         \n$ cat DIR/json.log\n{}\
         \n$ cat DIR/exit.json\n{}\n",
        files.join("  "),
        berth_tests::daemons::render_frames(&stream),
        fs::read_to_string(shim.dir.join("json.log")).unwrap(),
        fs::read_to_string(shim.dir.join("exit.json")).unwrap(),
    );
    client.delete().unwrap();
    let mut settings = berth_tests::snapshot_settings();
    settings.add_filter(r#""(pid|shim_pid)":[0-9]+"#, r#""$1":[PID]"#);
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", "[TIME]");
    settings.bind(|| insta::assert_snapshot!("engine_shim_book", text));
}
